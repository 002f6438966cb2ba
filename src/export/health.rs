//! Counters about sonde itself (`sonde_*`), rendered after the request families.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::internal_events::{read, read_by_label, Counter};
use crate::select::labels;

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

/// The labels `sonde_label_invalid_total` shows from the start (at 0).
const LABELS: &[&str] = &[labels::OPEN_PORTS, labels::EXE, labels::GO_SOURCE];

/// Gauges about sonde itself, set from the attacher's state; the counters of notable events
/// are `internal_events`' (the only way to move them is to emit an event, which also logs).
#[derive(Default)]
pub(crate) struct Health {
    instrumented: AtomicU64,
    links: AtomicU64,
    armed_links: AtomicU64,
    pub(super) events: AtomicU64,
}

impl Health {
    pub(crate) fn set_instrumented_processes(&self, n: u64) {
        self.instrumented.store(n, Ordering::Relaxed);
    }
    pub(crate) fn set_uprobe_links(&self, n: u64) {
        self.links.store(n, Ordering::Relaxed);
    }
    pub(crate) fn set_armed_uprobe_links(&self, n: u64) {
        self.armed_links.store(n, Ordering::Relaxed);
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
            format!(
                "sonde_attach_errors_total {}",
                read(Counter::AttachErrors, "")
            ),
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
            format!("sonde_events_lost_total {}", read(Counter::EventsLost, "")),
        );
        let by_signal = |name: &str, c: Counter| {
            ["metrics", "traces"]
                .iter()
                .map(|s| format!("{name}{{signal=\"{s}\"}} {}", read(c, s)))
                .collect::<Vec<_>>()
                .join("\n")
        };
        metric(
            "sonde_otlp_export_errors_total",
            "counter",
            "OTLP export attempts that failed (endpoint down, slow, or refusing).",
            by_signal("sonde_otlp_export_errors_total", Counter::OtlpExportErrors),
        );
        metric(
            "sonde_otlp_dropped_total",
            "counter",
            "OTLP data given up on: metric export requests, or spans.",
            by_signal("sonde_otlp_dropped_total", Counter::OtlpDropped),
        );
        // Every known reason from the start, at 0: `increase()` then sees the first skip, and
        // a dashboard panel on this family is never empty.
        let by_label = |name: &str, label: &str, c: Counter, known: &[&'static str]| {
            let mut counted = read_by_label(c);
            for k in known {
                counted.entry(*k).or_default();
            }
            let lines: Vec<String> = counted
                .iter()
                .map(|(v, n)| format!("{name}{{{label}=\"{v}\"}} {n}"))
                .collect();
            lines.join("\n")
        };
        metric(
            "sonde_skipped_binaries_total",
            "counter",
            "Selected processes not instrumented, by reason.",
            by_label(
                "sonde_skipped_binaries_total",
                "reason",
                Counter::SkippedBinaries,
                SKIP_REASONS,
            ),
        );
        metric(
            "sonde_processes_instrumented_total",
            "counter",
            "Processes instrumented since sonde started, by how: uprobes, syscalls, or armed (enrolled by an armed file).",
            by_label(
                "sonde_processes_instrumented_total",
                "via",
                Counter::ProcessesInstrumented,
                &["uprobes", "syscalls", "armed"],
            ),
        );
        metric(
            "sonde_label_invalid_total",
            "counter",
            "Container labels sonde could not parse, by label (logged with the container's name).",
            by_label(
                "sonde_label_invalid_total",
                "label",
                Counter::LabelInvalid,
                LABELS,
            ),
        );
        metric(
            "sonde_engine_reconnects_total",
            "counter",
            "Times a container engine's events connection ended or failed (each retry while it is down counts).",
            format!(
                "sonde_engine_reconnects_total {}",
                read(Counter::EngineReconnects, "")
            ),
        );
    }
}
