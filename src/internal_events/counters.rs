//! The counters behind the event-driven `sonde_*` families, and the rate limiter of their log
//! lines. One process-wide store: events come from every thread and layer, and one agent runs
//! per process. Unit tests swap in a store of their own for their thread (`scoped`), so
//! parallel tests cannot see each other's counts.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::limit::Limiter;

/// A counted family. Its Prometheus name, HELP and labels live in `export::health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Counter {
    /// `sonde_attach_errors_total`
    AttachErrors,
    /// `sonde_events_lost_total`
    EventsLost,
    /// `sonde_skipped_binaries_total{reason}`
    SkippedBinaries,
    /// `sonde_otlp_export_errors_total{signal}`
    OtlpExportErrors,
    /// `sonde_otlp_dropped_total{signal}`
    OtlpDropped,
    /// `sonde_label_invalid_total{label}`
    LabelInvalid,
    /// `sonde_processes_instrumented_total{via}`
    ProcessesInstrumented,
    /// `sonde_engine_reconnects_total`
    EngineReconnects,
}

/// How long a repeating line (same kind and key) stays quiet after it was logged: a 250 ms
/// scan or a ≤ 10 s retry back-off gives one line per window, and a failure that persists is
/// still reported, with its count, twice a minute.
const WINDOW: Duration = Duration::from_secs(30);

pub(super) struct Store {
    counts: Mutex<BTreeMap<(Counter, &'static str), u64>>,
    limiter: Mutex<Limiter>,
}

impl Store {
    fn new(window: Duration) -> Store {
        Store {
            counts: Mutex::default(),
            limiter: Mutex::new(Limiter::new(window)),
        }
    }
}

static GLOBAL: LazyLock<Store> = LazyLock::new(|| Store::new(WINDOW));

#[cfg(test)]
thread_local! {
    static LOCAL: std::cell::RefCell<Option<std::sync::Arc<Store>>> = const {
        std::cell::RefCell::new(None)
    };
}

fn with<R>(f: impl FnOnce(&Store) -> R) -> R {
    #[cfg(test)]
    if let Some(local) = LOCAL.with(|l| l.borrow().clone()) {
        return f(&local);
    }
    f(&GLOBAL)
}

/// Counts `n` into one series. Private to `internal_events`: events count, nobody else.
pub(super) fn add(counter: Counter, label: &'static str, n: u64) {
    with(|s| {
        *s.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((counter, label))
            .or_default() += n;
    });
}

/// Whether a line of this kind and key may be logged now: `Some(lines suppressed since the
/// last one)`, or `None` to stay quiet.
pub(crate) fn admit(kind: &'static str, key: &str) -> Option<u64> {
    with(|s| {
        s.limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(kind, key, Instant::now())
    })
}

/// The next line of this kind and key is logged at once (the condition it reported ended).
pub(super) fn forget(kind: &'static str, key: &str) {
    with(|s| {
        s.limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(kind, key)
    });
}

/// One series' value (`""` for a family without labels).
pub(crate) fn read(counter: Counter, label: &str) -> u64 {
    with(|s| {
        s.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|((c, l), _)| *c == counter && *l == label)
            .map_or(0, |(_, n)| *n)
    })
}

/// Every series of a family counted so far, by label value.
pub(crate) fn read_by_label(counter: Counter) -> BTreeMap<&'static str, u64> {
    with(|s| {
        s.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((c, _), _)| *c == counter)
            .map(|((_, l), n)| (*l, *n))
            .collect()
    })
}

/// Until the guard drops, this thread's events count into (and rate-limit against) a store of
/// their own, with this rate-limit window.
#[cfg(test)]
pub(crate) fn scoped(window: Duration) -> Scope {
    let store = std::sync::Arc::new(Store::new(window));
    let before = LOCAL.with(|l| l.replace(Some(store)));
    Scope { before }
}

#[cfg(test)]
pub(crate) struct Scope {
    before: Option<std::sync::Arc<Store>>,
}

#[cfg(test)]
impl Drop for Scope {
    fn drop(&mut self) {
        let before = self.before.take();
        LOCAL.with(|l| *l.borrow_mut() = before);
    }
}
