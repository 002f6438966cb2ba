//! Each event logs once and counts; the rate limit logs the first, counts every one, and
//! reports what it suppressed; nothing outside this module writes these lines itself.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use super::*;

/// One captured log line: its level, message and `name=value` fields.
#[derive(Debug, Clone)]
struct Line {
    level: Level,
    message: String,
    fields: Vec<(String, String)>,
}

impl Line {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Line>>>);

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct V<'a>(&'a mut Line);
        impl Visit for V<'_> {
            fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
                match f.name() {
                    "message" => self.0.message = format!("{v:?}"),
                    n => self.0.fields.push((n.to_string(), format!("{v:?}"))),
                }
            }
            fn record_str(&mut self, f: &Field, v: &str) {
                self.0.fields.push((f.name().to_string(), v.to_string()));
            }
        }
        let mut line = Line {
            level: *event.metadata().level(),
            message: String::new(),
            fields: Vec::new(),
        };
        event.record(&mut V(&mut line));
        self.0.lock().unwrap().push(line);
    }
}

/// Runs `f` with a counter store and a log of its own (rate-limit `window`); returns the lines.
fn captured(window: Duration, f: impl FnOnce()) -> Vec<Line> {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _own = scoped(window);
    tracing::subscriber::with_default(subscriber, f);
    let lines = capture.0.lock().unwrap().clone();
    lines
}

const LONG: Duration = Duration::from_secs(3600);

/// Emits `event` once; it must log exactly one line at `level` containing `text`, and move
/// `counter{label}` by `by`.
fn logs_once_and_counts(
    event: impl FnOnce(),
    level: Level,
    text: &str,
    counter: Counter,
    label: &str,
    by: u64,
) {
    let mut count = 0;
    let lines = captured(LONG, || {
        event();
        count = read(counter, label);
    });
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].level, level, "{lines:?}");
    assert!(lines[0].message.contains(text), "{lines:?}");
    assert!(lines[0].field("event").is_some(), "{lines:?}");
    assert_eq!(count, by, "{counter:?}{{{label}}}");
}

#[test]
fn each_event_logs_once_and_counts() {
    let exe = Path::new("/srv/app");
    logs_once_and_counts(
        || {
            emit(Attached {
                pid: 7,
                exe,
                service: "app",
                via: AttachedVia::Uprobes {
                    go_version: &"1.22.1",
                    how: "4 uprobes",
                    why: "",
                },
            })
        },
        Level::INFO,
        "instrumented pid 7 (/srv/app, Go 1.22.1) as service \"app\": 4 uprobes",
        Counter::ProcessesInstrumented,
        "uprobes",
        1,
    );
    logs_once_and_counts(
        || {
            emit(Attached {
                pid: 7,
                exe,
                service: "app",
                via: AttachedVia::Syscalls {
                    why: "not Go",
                    tls: "",
                },
            })
        },
        Level::INFO,
        "tracing pid 7 (/srv/app, not Go) through syscalls as service \"app\"",
        Counter::ProcessesInstrumented,
        "syscalls",
        1,
    );
    logs_once_and_counts(
        || {
            emit(BinarySkipped {
                pid: 7,
                exe,
                reason: "not_go",
                error: &"not a Go binary",
                first: true,
            })
        },
        Level::INFO,
        "skipping /srv/app (pid 7): not a Go binary",
        Counter::SkippedBinaries,
        "not_go",
        1,
    );
    logs_once_and_counts(
        || {
            emit(NotArmed {
                file: exe,
                why: "stripped",
                reason: Some("no_offsets"),
            })
        },
        Level::INFO,
        "not arming /srv/app: stripped",
        Counter::SkippedBinaries,
        "no_offsets",
        1,
    );
    for (via, text) in [
        (FailedVia::Uprobes, "cannot instrument pid 7: EPERM"),
        (
            FailedVia::UprobesAfter(3),
            "cannot instrument pid 7 after 3 attempts: EPERM",
        ),
        (
            FailedVia::Syscalls,
            "cannot trace pid 7 through syscalls: EPERM",
        ),
        (
            FailedVia::OpenSsl(std::path::Path::new("/usr/lib/libssl.so.3")),
            "pid 7: OpenSSL probes in /usr/lib/libssl.so.3 failed, HTTPS not measured: EPERM",
        ),
    ] {
        logs_once_and_counts(
            || {
                emit(AttachFailed {
                    pid: 7,
                    error: &"EPERM",
                    via,
                })
            },
            Level::WARN,
            text,
            Counter::AttachErrors,
            "",
            1,
        );
    }
    logs_once_and_counts(
        || {
            emit(EventsLost {
                source: "uprobes",
                n: 12,
            })
        },
        Level::WARN,
        "12 events lost: the ring buffer was full",
        Counter::EventsLost,
        "",
        12,
    );
    logs_once_and_counts(
        || {
            emit(LabelInvalid {
                container: "web-1",
                label: "sonde.open_ports",
                value: "80-x",
                fallback: None,
            })
        },
        Level::WARN,
        "container web-1: invalid sonde.open_ports label \"80-x\"",
        Counter::LabelInvalid,
        "sonde.open_ports",
        1,
    );
    for (kind, level, text) in [
        (OtlpFailure::Refused, Level::ERROR, "was refused: 401"),
        (
            OtlpFailure::Retrying,
            Level::WARN,
            "failed: 401; retrying with back-off",
        ),
        (OtlpFailure::Rejected, Level::ERROR, "rejected a batch: 401"),
    ] {
        logs_once_and_counts(
            || {
                emit(OtlpExportFailed {
                    signal: "traces",
                    endpoint: "http://o:4318/v1/traces",
                    error: &"401",
                    kind,
                })
            },
            level,
            text,
            Counter::OtlpExportErrors,
            "traces",
            1,
        );
    }
    logs_once_and_counts(
        || {
            emit(OtlpDropped {
                signal: "metrics",
                n: 2,
            })
        },
        Level::DEBUG,
        "OTLP metrics: 2 dropped",
        Counter::OtlpDropped,
        "metrics",
        2,
    );
    logs_once_and_counts(
        || {
            emit(EngineReconnect {
                socket: "/run/docker.sock",
                error: None,
                wait: Duration::from_secs(1),
                attempts: 0,
            })
        },
        Level::WARN,
        "/run/docker.sock: event stream ended; reconnecting",
        Counter::EngineReconnects,
        "",
        1,
    );
}

fn fail(pid: u32) {
    emit(AttachFailed {
        pid,
        error: &"EPERM",
        via: FailedVia::Uprobes,
    });
}

#[test]
fn repeats_are_counted_every_time_and_logged_once_per_window() {
    let mut counted = 0;
    let lines = captured(LONG, || {
        for _ in 0..50 {
            fail(7);
        }
        // Another key is not held back by the first.
        fail(8);
        counted = read(Counter::AttachErrors, "");
    });
    assert_eq!(counted, 51);
    let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "cannot instrument pid 7: EPERM",
            "cannot instrument pid 8: EPERM"
        ]
    );
}

#[test]
fn the_next_line_after_a_window_says_how_many_were_suppressed() {
    let window = Duration::from_millis(100);
    let lines = captured(window, || {
        for _ in 0..4 {
            fail(7);
        }
        std::thread::sleep(window + Duration::from_millis(20));
        fail(7);
        fail(7);
    });
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].field("suppressed"), None, "{lines:?}");
    assert_eq!(lines[1].field("suppressed"), Some("3"), "{lines:?}");
}

#[test]
fn a_recovered_export_logs_its_next_failure_at_once() {
    let failed = || {
        emit(OtlpExportFailed {
            signal: "metrics",
            endpoint: "e",
            error: &"down",
            kind: OtlpFailure::Retrying,
        })
    };
    let lines = captured(LONG, || {
        failed();
        failed();
        emit(OtlpExportRecovered {
            signal: "metrics",
            endpoint: "e",
        });
        failed();
    });
    let messages: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "OTLP metrics export to e failed: down; retrying with back-off",
            "OTLP metrics export to e works again",
            "OTLP metrics export to e failed: down; retrying with back-off",
        ]
    );
}

/// The lines events write are written by events only: a call site logging one itself (and
/// counting, or not, on its own) would let the log and `/metrics` drift apart again.
#[test]
fn no_call_site_writes_an_event_line_itself() {
    let events_only = [
        "cannot instrument pid",
        "through syscalls{tls}",
        "cannot trace pid",
        "events lost",
        "skipping {",
        "not arming {}: {why}",
        "label {v:?}",
        "was refused",
        "retrying with back-off",
        "rejected a batch",
        "event stream ended",
        "HTTPS not measured",
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![root.clone()];
    let mut found = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("internal_events") {
                    stack.push(path);
                }
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for s in events_only {
                if text.contains(s) {
                    found.push(format!("{}: {s}", path.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "logged outside internal_events:\n{}",
        found.join("\n")
    );
}
