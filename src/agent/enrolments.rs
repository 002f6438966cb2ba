//! Processes the kernel enrolled at an armed file's probe: named at once by the collector,
//! then handed to discovery, which owns their filter entries.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::RwLock;
use std::time::Instant;

use crate::discover::HostProcess;
use crate::export::Exporter;
use crate::internal_events::{emit, Attached, AttachedVia};
use crate::select::Selector;

use super::identities::{self, register, Identities};
use super::{lock, monotonic_ns, Shared};

/// The kernel's reports of processes it enrolled at an armed file's probe.
pub(super) struct Enrolments {
    pub(super) ring: aya::maps::RingBuf<aya::maps::MapData>,
    pub(super) slots: crate::attach::ArmedSlots,
}

impl Enrolments {
    /// Names each newly enrolled process (as a scan would have) and hands it to discovery.
    pub(super) fn drain(
        &mut self,
        selector: &Selector,
        identities: &RwLock<Identities>,
        exporter: &Exporter,
        discovery: &Sender<HostProcess>,
    ) {
        while let Some(item) = self.ring.next() {
            let Some(e) = crate::ebpf_abi::EnrolEvent::from_bytes(&item) else {
                continue;
            };
            drop(item);
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            let Some(exe) = slots.get(&e.slot).cloned() else {
                continue;
            };
            drop(slots);
            // It may have exited already: then it is named by its file alone.
            let process = HostProcess {
                pid: e.pid,
                exe,
                start_time: crate::discover::start_time(e.pid).unwrap_or(0),
                listen_ports: Vec::new(),
                container_id: crate::discover::cgroup::container_id_of(e.pid),
            };
            let identity = selector.identity(&process);
            emit(Attached {
                pid: e.pid,
                exe: &process.exe,
                service: &identity.service_name,
                via: AttachedVia::Enrolled {
                    ms_ago: monotonic_ns().saturating_sub(e.ktime_ns) as f64 / 1e6,
                },
            });
            register(identities, exporter, e.pid, identity);
            let _ = discovery.send(process);
        }
    }
}

/// What discovery does with an enrolled process.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Tracked like an instrumented one: its filter entry goes when it exits.
    Adopt,
    /// Gone already and not selected: its filter entry and live identity go now.
    Forget,
    /// Gone, but its PID is selected (a scan saw it, or a reused PID): the scans own it.
    Leave,
}

fn fate(alive: bool, selected: impl FnOnce() -> bool) -> Fate {
    if alive {
        Fate::Adopt
    } else if !selected() {
        Fate::Forget
    } else {
        Fate::Leave
    }
}

/// Takes over the processes the kernel enrolled: alive ones are tracked like instrumented
/// ones (their filter entries go when they exit); those gone already are forgotten now.
pub(super) fn adopt(
    shared: &Shared,
    enrolled: &Receiver<HostProcess>,
    identities: &RwLock<Identities>,
) {
    for p in enrolled.try_iter() {
        let mut guard = lock(shared);
        let alive = p.start_time != 0 && crate::discover::start_time(p.pid) == Some(p.start_time);
        match fate(alive, || guard.tracker.is_selected(p.pid)) {
            Fate::Adopt => {
                guard.attacher.adopt_enrolled(p.pid);
                guard.tracker.adopt(p.pid, p.start_time, p.exe);
            }
            Fate::Forget => {
                guard.attacher.detach_process(p.pid);
                identities::write(identities).exited(p.pid, Instant::now());
            }
            Fate::Leave => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enrolled_process_is_adopted_alive_and_forgotten_gone_unless_selected() {
        assert_eq!(fate(true, || false), Fate::Adopt);
        assert_eq!(fate(true, || true), Fate::Adopt);
        assert_eq!(fate(false, || false), Fate::Forget);
        assert_eq!(fate(false, || true), Fate::Leave);
    }
}
