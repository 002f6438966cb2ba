//! The event loop on the async runtime: requests from the rings, named and routed, to the
//! exporters, until a signal stops the agent.

use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::collect::reader::Reader;
use crate::collect::syscalls::SyscallReader;
use crate::discover::HostProcess;
use crate::enrich::routes::RouteMatcher;
use crate::enrich::EnrichedRequest;
use crate::export::otlp::Otlp;
use crate::export::Exporter;
use crate::internal_events::{emit, EventsLost};
use crate::select::Selector;

use super::enrolments::Enrolments;
use super::identities::{fallback_identity, Identities};
use super::shutdown::Signals;
use super::syscall_tracer::{wait_loaded, wait_syscalls, ReaderArrival};

/// How often lost events are looked for (and reported).
const LOST_CHECK: Duration = Duration::from_secs(1);

/// What the event loop reads from and writes to.
pub(super) struct Collector {
    pub(super) reader: Reader,
    /// The syscall tracer's reader, once loaded (`sys_loading` brings it).
    pub(super) sys_reader: Option<SyscallReader>,
    pub(super) sys_loading: Option<ReaderArrival>,
    pub(super) enrolments: Enrolments,
    pub(super) selector: Selector,
    pub(super) identities: Arc<RwLock<Identities>>,
    pub(super) exporter: Arc<Exporter>,
    pub(super) otlp: Option<Arc<Otlp>>,
    pub(super) routes: RouteMatcher,
    pub(super) print_traces: bool,
    /// Enrolled processes, to discovery.
    pub(super) enrolled: Sender<HostProcess>,
}

impl Collector {
    /// Until SIGINT or SIGTERM.
    pub(super) async fn run(mut self, signals: &mut Signals) {
        // Per ring, so the log says which one overflowed.
        let (mut lost_uprobes, mut lost_syscalls) = (LostEvents::default(), LostEvents::default());
        let mut last_lost_check = Instant::now();
        loop {
            tokio::select! {
                _ = self.reader.wait() => {}
                _ = wait_syscalls(&mut self.sys_reader) => {}
                loaded = wait_loaded(&mut self.sys_loading) => {
                    self.sys_loading = None;
                    self.sys_reader = loaded;
                }
                _ = signals.recv() => break,
            }
            // Before the requests: a process's enrolment is reported before its first request.
            self.enrolments.drain(
                &self.selector,
                &self.identities,
                &self.exporter,
                &self.enrolled,
            );
            self.drain_requests();
            if last_lost_check.elapsed() >= LOST_CHECK {
                last_lost_check = Instant::now();
                if let Some(n) = lost_uprobes.newly_lost(self.reader.lost_total()) {
                    emit(EventsLost {
                        source: "uprobes",
                        n,
                    });
                }
                let sys_total = self.sys_reader.as_ref().map_or(0, |s| s.lost_total());
                if let Some(n) = lost_syscalls.newly_lost(sys_total) {
                    emit(EventsLost {
                        source: "syscalls",
                        n,
                    });
                }
            }
        }
    }

    fn drain_requests(&mut self) {
        let ids = self.identities.read().unwrap_or_else(|p| p.into_inner());
        let (routes, exporter, otlp, print_traces) =
            (&self.routes, &self.exporter, &self.otlp, self.print_traces);
        let mut handle = |request: crate::collect::Request| {
            let identity = ids
                .get(request.pid)
                .unwrap_or_else(|| fallback_identity(request.pid));
            let route = routes.route(&request.path);
            let enriched = EnrichedRequest {
                request,
                identity,
                route,
            };
            if print_traces {
                println!("{}", crate::export::print_trace_line(&enriched));
            }
            exporter.record(&enriched);
            if let Some(otlp) = otlp {
                otlp.record(&enriched);
            }
        };
        self.reader.drain(&mut handle);
        if let Some(sys) = &mut self.sys_reader {
            sys.drain(&mut handle);
        }
    }
}

/// Lost events counted so far, to report each loss once.
#[derive(Default)]
struct LostEvents {
    seen: u64,
}

impl LostEvents {
    /// Events lost since the last call, given the total lost now.
    fn newly_lost(&mut self, total: u64) -> Option<u64> {
        if total <= self.seen {
            return None;
        }
        let new = total - self.seen;
        self.seen = total;
        Some(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lost_event_is_reported_once() {
        let mut lost = LostEvents::default();
        assert_eq!(lost.newly_lost(0), None);
        assert_eq!(lost.newly_lost(5), Some(5));
        assert_eq!(lost.newly_lost(5), None, "said already");
        assert_eq!(lost.newly_lost(7), Some(2), "only the new ones");
    }
}
