//! The events. Each `emit` logs (with the wording the log has always had, plus structured
//! fields) and counts; nothing else in sonde moves these counters.

use std::fmt::Display;
use std::path::Path;

use super::counters::{add, forget, Counter};
use super::{limited, InternalEvent};

/// A process measured from now on.
pub(crate) struct Attached<'a> {
    pub pid: u32,
    pub exe: &'a Path,
    pub service: &'a str,
    pub via: AttachedVia<'a>,
}

pub(crate) enum AttachedVia<'a> {
    /// Its own uprobes, or its armed file's. `why`: `go_source`'s choice, `" (…)"` or empty.
    Uprobes {
        go_version: &'a dyn Display,
        how: &'a str,
        why: &'a str,
    },
    /// The syscall tracer; `tls`: the OpenSSL uprobes, `", OpenSSL …"` or empty.
    Syscalls { why: &'a str, tls: &'a str },
    /// Enrolled by the kernel at its first probe hit in an armed file, `ms_ago`.
    Enrolled { ms_ago: f64 },
}

impl AttachedVia<'_> {
    fn name(&self) -> &'static str {
        match self {
            AttachedVia::Uprobes { .. } => "uprobes",
            AttachedVia::Syscalls { .. } => "syscalls",
            AttachedVia::Enrolled { .. } => "armed",
        }
    }
}

impl InternalEvent for Attached<'_> {
    fn emit(self) {
        const KIND: &str = "attached";
        let (pid, exe, service) = (self.pid, self.exe.display(), self.service);
        // A pid that execs another program (or is measured another way) is news again.
        let key = format!("{pid} {exe} {}", self.via.name());
        let via = self.via.name();
        match self.via {
            AttachedVia::Uprobes {
                go_version,
                how,
                why,
            } => {
                limited!(info, KIND, &key, pid, via = "uprobes",
                    "instrumented pid {pid} ({exe}, Go {go_version}) as service \"{service}\": {how}{why}");
            }
            AttachedVia::Syscalls { why, tls } => {
                limited!(info, KIND, &key, pid, via = "syscalls",
                    "tracing pid {pid} ({exe}, {why}) through syscalls{tls} as service \"{service}\"");
            }
            AttachedVia::Enrolled { ms_ago } => {
                // Every run of an armed file enrols: a debug line, as before.
                limited!(debug, KIND, &key, pid, via = "armed",
                    "pid {pid} ({exe}) enrolled at its first probe hit, {ms_ago:.1} ms ago, as service \"{service}\"");
            }
        }
        add(Counter::ProcessesInstrumented, via, 1);
    }
}

/// A selected process whose binary cannot be instrumented.
pub(crate) struct BinarySkipped<'a> {
    pub pid: u32,
    pub exe: &'a Path,
    /// `InspectError::reason`: the `reason` label.
    pub reason: &'static str,
    pub error: &'a dyn Display,
    /// The binary was inspected just now: one info line per binary, not per process running
    /// it; the later processes get a debug line.
    pub first: bool,
}

impl InternalEvent for BinarySkipped<'_> {
    fn emit(self) {
        const KIND: &str = "binary_skipped";
        let (pid, exe, reason, e) = (self.pid, self.exe.display(), self.reason, self.error);
        if self.first {
            limited!(
                info,
                KIND,
                &exe.to_string(),
                pid,
                reason,
                "skipping {exe} (pid {pid}): {e}"
            );
        } else {
            tracing::debug!(event = KIND, pid, reason, "skipping {exe} (pid {pid}): {e}");
        }
        add(Counter::SkippedBinaries, reason, 1);
    }
}

/// A file `executable_name` selects (or a container's program) that is not armed as a whole.
pub(crate) struct NotArmed<'a> {
    pub file: &'a Path,
    pub why: &'a str,
    /// The skip reason, when the file cannot be instrumented at all (counted as a skipped
    /// binary); `None` when it is measured another way (its processes then count elsewhere).
    pub reason: Option<&'static str>,
}

impl InternalEvent for NotArmed<'_> {
    fn emit(self) {
        const KIND: &str = "not_armed";
        let (file, why) = (self.file.display(), self.why);
        let reason = self.reason.unwrap_or_default();
        limited!(
            info,
            KIND,
            &file.to_string(),
            reason,
            "not arming {file}: {why}"
        );
        if let Some(reason) = self.reason {
            add(Counter::SkippedBinaries, reason, 1);
        }
    }
}

/// A selected process sonde failed to measure.
pub(crate) struct AttachFailed<'a> {
    pub pid: u32,
    pub error: &'a dyn Display,
    pub via: FailedVia<'a>,
}

pub(crate) enum FailedVia<'a> {
    /// Uprobes (or an armed file's enrolment), at once.
    Uprobes,
    /// Uprobes, given up after this many attempts.
    UprobesAfter(u32),
    Syscalls,
    /// The OpenSSL probes in this file (the process is still traced through syscalls, its
    /// HTTPS is not).
    OpenSsl(&'a std::path::Path),
}

impl InternalEvent for AttachFailed<'_> {
    fn emit(self) {
        const KIND: &str = "attach_failed";
        let (pid, e) = (self.pid, self.error);
        let key = pid.to_string();
        match self.via {
            FailedVia::Uprobes => {
                limited!(warn, KIND, &key, pid, "cannot instrument pid {pid}: {e}")
            }
            FailedVia::UprobesAfter(n) => limited!(
                warn,
                KIND,
                &key,
                pid,
                attempts = n,
                "cannot instrument pid {pid} after {n} attempts: {e}"
            ),
            FailedVia::Syscalls => limited!(
                warn,
                KIND,
                &key,
                pid,
                "cannot trace pid {pid} through syscalls: {e}"
            ),
            FailedVia::OpenSsl(file) => limited!(
                warn,
                KIND,
                &key,
                pid,
                file = %file.display(),
                "pid {pid}: OpenSSL probes in {} failed, HTTPS not measured: {e}",
                file.display()
            ),
        }
        add(Counter::AttachErrors, "", 1);
    }
}

/// Records the kernel dropped because a ring buffer was full.
pub(crate) struct EventsLost {
    /// Which ring: `"uprobes"` or `"syscalls"`.
    pub source: &'static str,
    pub n: u64,
}

impl InternalEvent for EventsLost {
    fn emit(self) {
        let (source, n) = (self.source, self.n);
        limited!(
            warn,
            "events_lost",
            source,
            source,
            lost = n,
            "{n} events lost: the ring buffer was full"
        );
        add(Counter::EventsLost, "", n);
    }
}

/// A container label sonde cannot parse.
pub(crate) struct LabelInvalid<'a> {
    pub container: &'a str,
    pub label: &'static str,
    pub value: &'a str,
    /// What the label may say and what is used instead, when the label is ignored rather than
    /// excluding the container.
    pub fallback: Option<(&'a str, &'a str)>,
}

impl InternalEvent for LabelInvalid<'_> {
    fn emit(self) {
        const KIND: &str = "label_invalid";
        let (container, label, v) = (self.container, self.label, self.value);
        let key = format!("{container}\0{label}");
        match self.fallback {
            None => limited!(
                warn,
                KIND,
                &key,
                container,
                label,
                "container {container}: invalid {label} label {v:?}"
            ),
            Some((allowed, using)) => limited!(
                warn,
                KIND,
                &key,
                container,
                label,
                "container {container}: invalid {label} label {v:?} ({allowed}): using {using}"
            ),
        }
        add(Counter::LabelInvalid, label, 1);
    }
}

/// One OTLP export attempt failed.
pub(crate) struct OtlpExportFailed<'a> {
    /// `"metrics"` or `"traces"`.
    pub signal: &'static str,
    pub endpoint: &'a str,
    pub error: &'a dyn Display,
    pub kind: OtlpFailure,
}

pub(crate) enum OtlpFailure {
    /// Credentials refused (401/403): data dropped until the endpoint accepts them.
    Refused,
    /// Down or slow: retried with back-off.
    Retrying,
    /// The batch itself was rejected.
    Rejected,
}

/// An outage is one line (per window), whatever the attempts; a refusal, one of its own.
const OTLP_FAILING: &str = "otlp_export_failed";
const OTLP_REFUSED: &str = "otlp_export_refused";

impl InternalEvent for OtlpExportFailed<'_> {
    fn emit(self) {
        let (signal, endpoint, e) = (self.signal, self.endpoint, self.error);
        match self.kind {
            OtlpFailure::Refused => {
                limited!(error, OTLP_REFUSED, signal, signal,
                "OTLP {signal} export to {endpoint} was refused: {e}: check the credentials in \
                 OTEL_EXPORTER_OTLP_HEADERS; data is dropped until the endpoint accepts them")
            }
            OtlpFailure::Retrying => limited!(
                warn,
                OTLP_FAILING,
                signal,
                signal,
                "OTLP {signal} export to {endpoint} failed: {e}; retrying with back-off"
            ),
            OtlpFailure::Rejected => limited!(
                error,
                OTLP_FAILING,
                signal,
                signal,
                "OTLP {signal} export to {endpoint} rejected a batch: {e}"
            ),
        }
        add(Counter::OtlpExportErrors, signal, 1);
    }
}

/// OTLP exports work again after failures: the next failure is logged at once.
pub(crate) struct OtlpExportRecovered<'a> {
    pub signal: &'static str,
    pub endpoint: &'a str,
}

impl InternalEvent for OtlpExportRecovered<'_> {
    fn emit(self) {
        let (signal, endpoint) = (self.signal, self.endpoint);
        // Not rate-limited: it follows a failure line, which is.
        tracing::info!(
            event = "otlp_export_recovered",
            signal,
            "OTLP {signal} export to {endpoint} works again"
        );
        forget(OTLP_FAILING, signal);
        forget(OTLP_REFUSED, signal);
    }
}

/// OTLP data given up on: metric export requests, or spans.
pub(crate) struct OtlpDropped {
    pub signal: &'static str,
    pub n: u64,
}

impl InternalEvent for OtlpDropped {
    fn emit(self) {
        if self.n == 0 {
            return;
        }
        let (signal, n) = (self.signal, self.n);
        // The failure that caused it is a warning already.
        limited!(
            debug,
            "otlp_dropped",
            signal,
            signal,
            dropped = n,
            "OTLP {signal}: {n} dropped (export failed or the queue was full)"
        );
        add(Counter::OtlpDropped, signal, n);
    }
}

/// A container engine's event stream ended or failed: sonde reconnects.
pub(crate) struct EngineReconnect<'a> {
    pub socket: &'a str,
    /// `None`: the stream ended cleanly.
    pub error: Option<&'a dyn Display>,
    pub wait: std::time::Duration,
    /// Failed attempts since the engine last answered: the first is a warning, the retries
    /// while the engine is down are debug lines.
    pub attempts: u32,
}

impl InternalEvent for EngineReconnect<'_> {
    fn emit(self) {
        const KIND: &str = "engine_reconnect";
        let (socket, wait) = (self.socket, self.wait);
        match self.error {
            None => limited!(
                warn,
                "engine_stream_ended",
                socket,
                socket,
                "{socket}: event stream ended; reconnecting"
            ),
            Some(e) if self.attempts == 1 => limited!(
                warn,
                KIND,
                socket,
                socket,
                "{e}; retrying every {wait:?} at most"
            ),
            Some(e) => tracing::debug!(event = KIND, socket, "{e}; retrying in {wait:?}"),
        }
        add(Counter::EngineReconnects, "", 1);
    }
}
