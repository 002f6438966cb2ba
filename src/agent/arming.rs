//! Files armed as a whole (every process that runs them is enrolled at its first probe hit):
//! those `executable_name` names by path or sees running, and a selected process's own file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::config::GoSource;
use crate::discover::HostProcess;
use crate::inspect::cache::PlanCache;
use crate::internal_events::{emit, NotArmed};

use super::{lock, Instrumented, Shared};

/// An unchanged file that could not be armed is tried again after this long (the process
/// that had probes of its own on it may have exited).
const ARM_RETRY: Duration = Duration::from_secs(10);

/// Files seen running remembered at most (not to send one twice): a host running many
/// distinct matching programs forgets old ones.
const SENT_FILES: usize = 4096;

/// Why a named file could not be armed: its mtime then, when, and the reason.
struct Failure {
    mtime: Option<SystemTime>,
    at: Instant,
    why: String,
}

/// Named files that could not be armed, to say why once and not retry at every scan.
#[derive(Default)]
pub(super) struct ArmFailures(HashMap<PathBuf, Failure>);

impl ArmFailures {
    /// Whether to try arming the file now: not while it is the very file (same mtime) that
    /// failed less than `ARM_RETRY` ago.
    fn due(&self, file: &Path, mtime: Option<SystemTime>, now: Instant) -> bool {
        !self
            .0
            .get(file)
            .is_some_and(|f| f.mtime == mtime && now.saturating_duration_since(f.at) < ARM_RETRY)
    }

    /// Remembers why the file failed; `true` when that reason is news, to be said.
    fn failed(
        &mut self,
        file: &Path,
        mtime: Option<SystemTime>,
        now: Instant,
        why: String,
    ) -> bool {
        let news = self.0.get(file).is_none_or(|f| f.why != why);
        self.0.insert(
            file.to_path_buf(),
            Failure {
                mtime,
                at: now,
                why,
            },
        );
        news
    }

    fn armed(&mut self, file: &Path) {
        self.0.remove(file);
    }
}

/// Arms these files (named by `executable_name`'s path, or seen running) as a whole (see
/// `Attacher::arm_file`).
pub(super) fn arm_files(
    shared: &Shared,
    plans: &PlanCache,
    files: impl Iterator<Item = PathBuf>,
    failed: &mut ArmFailures,
    tracer_exists: bool,
) {
    for file in files {
        let mtime = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
        if !failed.due(&file, mtime, Instant::now()) {
            continue;
        }
        if lock(shared).attacher.armed_slot(&file).is_some() {
            continue;
        }
        let mut fail = |why: String, skipped: Option<&'static str>| {
            if failed.failed(&file, mtime, Instant::now(), why.clone()) {
                emit(NotArmed {
                    file: &file,
                    why: &why,
                    reason: skipped,
                });
            }
        };
        // Never inspect while holding `shared`.
        let plan = match plans.get_or_inspect(&file) {
            Ok((_, Ok(plan), _)) => plan,
            Ok((_, Err(e), _)) => {
                fail(e.to_string(), Some(e.reason()));
                continue;
            }
            Err(_) => continue,
        };
        let (setting, traces) = {
            let guard = lock(shared);
            let sel = guard.tracker.selector();
            (sel.host_go_source(), sel.traces())
        };
        let (source, why) = crate::inspect::source::choose(setting, &plan, traces, tracer_exists);
        if source == GoSource::Syscalls {
            // Its processes are the syscall tracer's: binary-wide uprobes would trap (and
            // count) every request of theirs as well.
            fail(format!("measured through syscalls ({why})"), None);
            continue;
        }
        let armed = lock(shared).attacher.arm_file(&file, &file, &plan);
        match armed {
            Ok((_, true)) => {
                failed.armed(&file);
                tracing::info!(
                    "armed {} (Go {}) as a whole: every process that runs it is measured from its first request",
                    file.display(),
                    plan.go_version
                );
            }
            Ok(_) => {}
            Err(e) => fail(e.to_string(), None),
        }
    }
}

/// Files sent to discovery already.
#[derive(Default)]
struct SentFiles(HashSet<PathBuf>);

impl SentFiles {
    /// `true` the first time a file is seen (again after the set was full and forgotten).
    fn first_time(&mut self, file: &Path) -> bool {
        if self.0.contains(file) {
            return false;
        }
        if self.0.len() >= SENT_FILES {
            self.0.clear();
        }
        self.0.insert(file.to_path_buf());
        true
    }
}

/// Watches executions when `executable_name` is set, sending each selected host file seen
/// running (once) to discovery, which arms it.
pub(super) fn watch_execs(
    object: Option<Result<aya::Ebpf, crate::attach::launch::LaunchError>>,
    executable_name: Option<regex::Regex>,
    seen: std::sync::mpsc::Sender<PathBuf>,
) -> Option<crate::attach::launch::ExecWatch> {
    let (object, re) = (object?, executable_name?);
    let mut sent = SentFiles::default();
    let started = object.and_then(|object| {
        crate::attach::launch::ExecWatch::start(object, move |_pid, path| {
            // The path given to exec: the file itself is what `/proc/<pid>/exe` will show.
            let Ok(real) = std::fs::canonicalize(&path) else {
                return;
            };
            if re.is_match(&real.to_string_lossy()) && sent.first_time(&real) {
                let _ = seen.send(real);
            }
        })
    });
    match started {
        Ok(w) => {
            tracing::info!("watching executions: files executable_name selects are armed when first seen running");
            Some(w)
        }
        Err(e) => {
            tracing::warn!(
                "{e}: short-lived processes are measured only when their file is named by path"
            );
            None
        }
    }
}

/// How a selected process's file is armed before it is enrolled.
#[derive(Debug, PartialEq, Eq)]
enum Arming {
    /// Its file is armed already, at this slot.
    Armed(u32),
    /// A container's program: armed for its image's next containers (see `arm_image`).
    Image,
    /// `executable_name` selects it: armed so that its later executions, however short, are
    /// measured from their first request.
    File,
    /// Attached to the process alone.
    Alone,
}

fn arming(armed: Option<u32>, in_container: bool, by_executable: impl FnOnce() -> bool) -> Arming {
    match armed {
        Some(slot) => Arming::Armed(slot),
        None if in_container => Arming::Image,
        None if by_executable() => Arming::File,
        None => Arming::Alone,
    }
}

/// The armed file's slot a selected process runs, arming its file first when `arming` says
/// so. `None`: attach to the process alone.
pub(super) fn armed_slot_for(
    guard: &mut Instrumented,
    process: &HostProcess,
    plan: &crate::inspect::ProbePlan,
) -> Option<u32> {
    let exe = crate::discover::proc::exe_path(process.pid);
    let how = arming(
        guard.attacher.armed_slot(&exe),
        process.container_id.is_some(),
        || guard.tracker.selector().selects_by_executable(process),
    );
    match how {
        Arming::Armed(slot) => Some(slot),
        Arming::Image => match guard.attacher.arm_image(&exe, plan) {
            Ok((slot, _)) => Some(slot),
            Err(e) => {
                tracing::debug!("not arming {}: {e}", process.exe.display());
                None
            }
        },
        Arming::File => match guard.attacher.arm_file(&exe, &process.exe, plan) {
            Ok((slot, _)) => {
                tracing::info!(
                    "armed {} (Go {}) as a whole: its later runs are measured from their first request",
                    process.exe.display(),
                    plan.go_version
                );
                Some(slot)
            }
            Err(e) => {
                tracing::debug!("not arming {}: {e}", process.exe.display());
                None
            }
        },
        Arming::Alone => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_file_is_retried_when_changed_or_after_a_while_and_said_once() {
        let mut failures = ArmFailures::default();
        let file = Path::new("/opt/app/bin/cli");
        let (t0, m1, m2) = (
            Instant::now(),
            Some(SystemTime::UNIX_EPOCH),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1)),
        );
        assert!(failures.due(file, m1, t0), "never tried");
        assert!(
            failures.failed(file, m1, t0, "not Go".into()),
            "said the first time"
        );
        assert!(
            !failures.due(file, m1, t0 + ARM_RETRY / 2),
            "same file, too soon"
        );
        assert!(
            failures.due(file, m2, t0 + ARM_RETRY / 2),
            "replaced: at once"
        );
        assert!(
            failures.due(file, m1, t0 + ARM_RETRY),
            "unchanged, after a while"
        );
        assert!(failures.due(Path::new("/other"), m1, t0));
        assert!(
            !failures.failed(file, m1, t0 + ARM_RETRY, "not Go".into()),
            "the same reason is not said again"
        );
        assert!(
            !failures.due(file, m1, t0 + ARM_RETRY),
            "its retry waits again"
        );
        assert!(failures.failed(file, m1, t0 + ARM_RETRY, "busy".into()));
        failures.armed(file);
        assert!(failures.due(file, m1, t0 + ARM_RETRY));
        assert!(
            failures.failed(file, m1, t0, "busy".into()),
            "forgotten once armed"
        );
    }

    #[test]
    fn a_seen_file_is_sent_once_within_a_bounded_memory() {
        let mut sent = SentFiles::default();
        assert!(sent.first_time(Path::new("/bin/a")));
        assert!(!sent.first_time(Path::new("/bin/a")));
        for i in 1..SENT_FILES {
            assert!(sent.first_time(Path::new(&format!("/bin/{i}"))));
        }
        assert_eq!(sent.0.len(), SENT_FILES);
        assert!(
            !sent.first_time(Path::new("/bin/a")),
            "still known when full"
        );
        assert!(
            sent.first_time(Path::new("/bin/new")),
            "full: forgets, then sends"
        );
        assert_eq!(sent.0.len(), 1);
        assert!(sent.first_time(Path::new("/bin/a")), "forgotten");
    }

    #[test]
    fn an_armed_file_wins_then_a_container_image_then_executable_name() {
        let unused = || panic!("executable_name is not asked");
        assert_eq!(arming(Some(3), true, unused), Arming::Armed(3));
        assert_eq!(arming(Some(3), false, unused), Arming::Armed(3));
        assert_eq!(arming(None, true, unused), Arming::Image);
        assert_eq!(arming(None, false, || true), Arming::File);
        assert_eq!(arming(None, false, || false), Arming::Alone);
    }
}
