//! Counters about sonde itself (`sonde_*`), rendered after the request families.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::otlp;

/// The reasons `inspect` gives for not instrumenting a binary (`InspectError::reason`).
const SKIP_REASONS: &[&str] = &[
    "io",
    "too_large",
    "not_elf",
    "unsupported_arch",
    "not_go",
    "go_too_old",
    "malformed",
    "missing_function",
    "no_offsets",
    "timeout",
];

/// Counters about sonde itself, shared by every stage.
#[derive(Default)]
pub struct Health {
    instrumented: AtomicU64,
    links: AtomicU64,
    armed_links: AtomicU64,
    attach_errors: AtomicU64,
    pub(super) events: AtomicU64,
    lost: AtomicU64,
    skipped: Mutex<BTreeMap<&'static str, u64>>,
    /// OTLP export attempts that failed, and data dropped: [metrics, traces].
    otlp_errors: [AtomicU64; 2],
    otlp_dropped: [AtomicU64; 2],
}

impl Health {
    pub fn set_instrumented_processes(&self, n: u64) {
        self.instrumented.store(n, Ordering::Relaxed);
    }
    pub fn set_uprobe_links(&self, n: u64) {
        self.links.store(n, Ordering::Relaxed);
    }
    pub fn set_armed_uprobe_links(&self, n: u64) {
        self.armed_links.store(n, Ordering::Relaxed);
    }
    pub fn inc_attach_errors(&self) {
        self.attach_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add_events_lost(&self, n: u64) {
        self.lost.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc_skipped(&self, reason: &'static str) {
        *self
            .skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    pub fn inc_otlp_export_errors(&self, signal: otlp::Signal) {
        self.otlp_errors[signal as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn add_otlp_dropped(&self, signal: otlp::Signal, n: u64) {
        self.otlp_dropped[signal as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn render(&self, out: &mut String, openmetrics: bool) {
        let mut metric = |name: &str, kind: &str, help: &str, body: String| {
            // OpenMetrics names a counter's family without the `_total` of its samples.
            let family = match openmetrics {
                true => name.strip_suffix("_total").unwrap_or(name),
                false => name,
            };
            let _ = writeln!(
                out,
                "# HELP {family} {help}\n# TYPE {family} {kind}\n{body}"
            );
        };
        metric(
            "sonde_build_info",
            "gauge",
            "sonde's version.",
            format!(
                "sonde_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
        );
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric(
            "sonde_instrumented_processes",
            "gauge",
            "Processes with probes attached now.",
            format!("sonde_instrumented_processes {}", g(&self.instrumented)),
        );
        metric(
            "sonde_uprobe_links",
            "gauge",
            "Uprobe links held: attached, or detached and still being closed.",
            format!("sonde_uprobe_links {}", g(&self.links)),
        );
        metric(
            "sonde_armed_uprobe_links",
            "gauge",
            "Of those, the links of files armed as a whole (executable_name's files, container images' programs).",
            format!("sonde_armed_uprobe_links {}", g(&self.armed_links)),
        );
        metric(
            "sonde_attach_errors_total",
            "counter",
            "Processes sonde failed to attach probes to.",
            format!("sonde_attach_errors_total {}", g(&self.attach_errors)),
        );
        metric(
            "sonde_events_total",
            "counter",
            "Requests received from the kernel.",
            format!("sonde_events_total {}", g(&self.events)),
        );
        metric(
            "sonde_events_lost_total",
            "counter",
            "Requests the kernel dropped because the ring buffer was full.",
            format!("sonde_events_lost_total {}", g(&self.lost)),
        );
        let by_signal = |name: &str, a: &[AtomicU64; 2]| {
            [otlp::Signal::Metrics, otlp::Signal::Traces]
                .iter()
                .map(|s| format!("{name}{{signal=\"{}\"}} {}", s.name(), g(&a[*s as usize])))
                .collect::<Vec<_>>()
                .join("\n")
        };
        metric(
            "sonde_otlp_export_errors_total",
            "counter",
            "OTLP export attempts that failed (endpoint down, slow, or refusing).",
            by_signal("sonde_otlp_export_errors_total", &self.otlp_errors),
        );
        metric(
            "sonde_otlp_dropped_total",
            "counter",
            "OTLP data given up on: metric export requests, or spans.",
            by_signal("sonde_otlp_dropped_total", &self.otlp_dropped),
        );
        // Every known reason from the start, at 0: `increase()` then sees the first skip, and
        // a dashboard panel on this family is never empty.
        let mut skipped = self
            .skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for r in SKIP_REASONS {
            skipped.entry(r).or_default();
        }
        let body = skipped
            .iter()
            .map(|(r, n)| format!("sonde_skipped_binaries_total{{reason=\"{r}\"}} {n}"))
            .collect::<Vec<_>>()
            .join("\n");
        metric(
            "sonde_skipped_binaries_total",
            "counter",
            "Selected processes not instrumented, by reason.",
            body,
        );
    }
}
