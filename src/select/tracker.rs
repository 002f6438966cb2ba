//! The selected processes between scans: what each scan adds and removes, a process adopted
//! before its exec kept until it runs its program, a binary replaced on disk not taken for a
//! new process.

use std::collections::HashMap;

use super::{Identity, Selector};
use crate::discover::HostProcess;

/// Whether two readings of `/proc/<pid>/exe` name the same executable.
fn same_exe(now: &std::path::Path, before: &std::path::Path) -> bool {
    let strip = |p: &std::path::Path| {
        let s = p.as_os_str().as_encoded_bytes();
        s.strip_suffix(b" (deleted)".as_slice())
            .unwrap_or(s)
            .to_vec()
    };
    now == before || strip(now) == strip(before)
}

/// What changed since the previous scan.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub added: Vec<(HostProcess, Identity)>,
    pub removed: Vec<u32>,
}

/// How long a process instrumented before its exec may take to exec the predicted program.
const EXEC_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Remembers the selected processes between scans.
pub(crate) struct Tracker {
    selector: Selector,
    /// Selected PIDs with their start time (a reused PID has another) and executable (an
    /// exec replaces it: a container's init is the runtime's until it execs the app).
    selected: HashMap<u32, (u64, std::path::PathBuf)>,
    /// PIDs instrumented before their exec (see `adopt`), with when: until the exec they
    /// still run the runtime, so their executable is not the one remembered yet.
    pending_exec: HashMap<u32, std::time::Instant>,
}

impl Tracker {
    pub(crate) fn new(selector: Selector) -> Self {
        Tracker {
            selector,
            selected: HashMap::new(),
            pending_exec: HashMap::new(),
        }
    }

    pub(crate) fn selector(&self) -> &Selector {
        &self.selector
    }

    /// A process instrumented ahead of its exec of `exe` (a container's init waiting in
    /// runc): it counts as selected, and stays so until it runs `exe` or, if it never
    /// does (an entrypoint that runs something else), for [`EXEC_DEADLINE`].
    pub(crate) fn adopt(&mut self, pid: u32, start_time: u64, exe: std::path::PathBuf) {
        self.selected.insert(pid, (start_time, exe));
        self.pending_exec.insert(pid, std::time::Instant::now());
    }

    pub(crate) fn is_selected(&self, pid: u32) -> bool {
        self.selected.contains_key(&pid)
    }

    pub(crate) fn needs_listen_ports(&self) -> bool {
        self.selector.needs_listen_ports()
    }

    pub(crate) fn update(&mut self, scan: Vec<HostProcess>) -> Changes {
        let mut changes = Changes::default();
        let alive: HashMap<u32, (u64, &std::path::Path)> = scan
            .iter()
            .map(|p| (p.pid, (p.start_time, p.exe.as_path())))
            .collect();
        let pending = &mut self.pending_exec;
        self.selected.retain(|pid, (start, exe)| {
            let now = alive.get(pid);
            // A binary replaced on disk shows as `<path> (deleted)` in the processes still
            // running it: the same process, the same file, nothing to re-attach.
            if now.is_some_and(|(s, e)| s == start && same_exe(e, exe)) {
                pending.remove(pid);
                return true;
            }
            // Until its exec completes, the process shows runc's executable (and, in the
            // middle of the exec, sometimes "/"): not a reason to detach and re-attach,
            // which would lose the very first requests.
            // A scan taken just before the launch thread adopted it may not list it at all:
            // it is still there if /proc says so, with the same start time.
            let same_process = match now {
                Some((s, _)) => s == start,
                None => crate::discover::start_time(*pid) == Some(*start),
            };
            let waiting = same_process
                && pending
                    .get(pid)
                    .is_some_and(|since| since.elapsed() < EXEC_DEADLINE);
            if !waiting {
                pending.remove(pid);
                changes.removed.push(*pid);
            }
            waiting
        });
        for p in scan {
            if self.selected.contains_key(&p.pid) || !self.selector.matches(&p) {
                continue;
            }
            self.selected.insert(p.pid, (p.start_time, p.exe.clone()));
            let identity = self.selector.identity(&p);
            changes.added.push((p, identity));
        }
        changes
    }
}
