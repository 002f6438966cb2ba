//! Selected processes discovery has not instrumented yet: attaches to retry, and non-Go
//! processes waiting for the syscall tracer to finish loading.

use std::collections::HashMap;

use crate::discover::HostProcess;
use crate::enrich::Identity;

/// A failed attach is retried on the next scans (a process caught mid-exec, a transient
/// perf_event_open error) before sonde gives up on that process.
pub(super) const ATTACH_ATTEMPTS: u32 = 3;

/// A selected process to instrument at this scan.
pub(super) struct Candidate {
    pub(super) process: HostProcess,
    pub(super) identity: Identity,
    /// Failed attaches so far.
    pub(super) attempts: u32,
}

/// What discovery carries from one scan to the next for processes it has not instrumented.
#[derive(Default)]
pub(super) struct Pending {
    /// Processes whose attach failed, with the attempts made so far.
    retry: HashMap<u32, Candidate>,
    /// Non-Go processes selected while the syscall tracer was still loading.
    awaiting: HashMap<u32, (HostProcess, Identity)>,
}

impl Pending {
    /// This scan's candidates: the newly selected processes, then the retries.
    pub(super) fn candidates(&mut self, added: Vec<(HostProcess, Identity)>) -> Vec<Candidate> {
        added
            .into_iter()
            .map(|(process, identity)| Candidate {
                process,
                identity,
                attempts: 0,
            })
            .chain(self.retry.drain().map(|(_, c)| c))
            .collect()
    }

    /// The process exited: nothing to retry or await for it.
    pub(super) fn exited(&mut self, pid: u32) {
        self.retry.remove(&pid);
        self.awaiting.remove(&pid);
    }

    /// Traced once the tracer is loaded: not by uprobes meanwhile, so no request is ever
    /// measured by both.
    pub(super) fn await_tracer(&mut self, process: HostProcess, identity: Identity) {
        self.awaiting.insert(process.pid, (process, identity));
    }

    /// The tracer arrived or failed to load: the processes waiting for it are decided again
    /// at this scan, as new ones (without a tracer a Go process gets its uprobes, any other
    /// is skipped, saying why).
    pub(super) fn tracer_settled(&mut self) {
        self.retry
            .extend(self.awaiting.drain().map(|(pid, (process, identity))| {
                (
                    pid,
                    Candidate {
                        process,
                        identity,
                        attempts: 0,
                    },
                )
            }));
    }

    /// An attach failed: `true` when it is tried again at the next scan, `false` when that
    /// was its last attempt.
    pub(super) fn attach_failed(&mut self, mut candidate: Candidate) -> bool {
        candidate.attempts += 1;
        if candidate.attempts >= ATTACH_ATTEMPTS {
            return false;
        }
        self.retry.insert(candidate.process.pid, candidate);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(pid: u32) -> (HostProcess, Identity) {
        let process = HostProcess {
            pid,
            exe: format!("/bin/p{pid}").into(),
            start_time: 1,
            listen_ports: Vec::new(),
            container_id: None,
        };
        (process, Identity::default())
    }

    fn pids(c: &[Candidate]) -> Vec<(u32, u32)> {
        let mut out: Vec<_> = c.iter().map(|c| (c.process.pid, c.attempts)).collect();
        out.sort();
        out
    }

    #[test]
    fn a_failed_attach_is_tried_three_times_in_all() {
        let mut pending = Pending::default();
        let mut scans = 1;
        let mut now = pending.candidates(vec![process(5)]);
        loop {
            let c = now.pop().unwrap();
            assert!(now.is_empty());
            if !pending.attach_failed(c) {
                break;
            }
            scans += 1;
            now = pending.candidates(Vec::new());
            assert_eq!(pids(&now), [(5, scans - 1)]);
        }
        assert_eq!(scans, ATTACH_ATTEMPTS);
        assert!(pending.candidates(Vec::new()).is_empty(), "given up");
    }

    #[test]
    fn an_exited_process_is_neither_retried_nor_awaited() {
        let mut pending = Pending::default();
        let mut now = pending.candidates(vec![process(5)]);
        assert!(pending.attach_failed(now.pop().unwrap()));
        let (p, i) = process(6);
        pending.await_tracer(p, i);
        pending.exited(5);
        pending.exited(6);
        pending.tracer_settled();
        assert!(pending.candidates(Vec::new()).is_empty());
    }

    #[test]
    fn processes_awaiting_the_tracer_come_back_when_it_settles() {
        let mut pending = Pending::default();
        let (p, i) = process(6);
        pending.await_tracer(p, i);
        assert!(
            pending.candidates(Vec::new()).is_empty(),
            "not decided while the tracer loads"
        );
        pending.tracer_settled();
        let now = pending.candidates(vec![process(7)]);
        assert_eq!(now[0].process.pid, 7, "new processes first");
        assert_eq!(pids(&now), [(6, 0), (7, 0)], "as new: no attempt counted");
    }
}
