//! Internal events, in the style of Vector's `internal_events`: one type per notable thing
//! that happens to sonde itself (a process instrumented, a binary skipped, an attach failed,
//! events lost, a label invalid, an OTLP export failed …). Each type has a single `emit` that
//! both logs it (structured fields, rate-limited per kind and key) and counts it in the
//! `sonde_*` self-metrics, so the log and `/metrics` cannot disagree.
//!
//! Counting is private to this module: the only way for the rest of sonde to move a
//! `sonde_*` counter is to emit an event, which also logs. `export::health` reads the counters
//! back to render them.
//!
//! A leaf: it imports nothing of sonde (checked by `layers.rs`), so every layer can emit.

mod counters;
mod events;
mod limit;

pub(crate) use counters::{read, read_by_label, Counter};
pub(crate) use events::*;

#[cfg(test)]
pub(crate) use counters::scoped;

/// Something notable that happened to sonde: logged and counted by one call.
pub(crate) trait InternalEvent: Sized {
    fn emit(self);
}

/// Emits an event (`emit(AttachFailed { … })` reads like Vector's `emit!`).
pub(crate) fn emit(event: impl InternalEvent) {
    event.emit();
}

/// Logs at `$level` when the rate limit lets `($kind, $key)` through, with the number of
/// lines suppressed since the last one (`suppressed=N`) when there were any.
macro_rules! limited {
    ($level:ident, $kind:expr, $key:expr, $($rest:tt)+) => {
        match $crate::internal_events::counters::admit($kind, $key) {
            Some(0) => tracing::$level!(event = $kind, $($rest)+),
            Some(suppressed) => tracing::$level!(event = $kind, suppressed, $($rest)+),
            None => {}
        }
    };
}
pub(crate) use limited;

#[cfg(test)]
mod events_tests;
