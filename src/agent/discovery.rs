//! The discovery thread: scans `/proc` (or wakes on a container event), arms the files
//! `executable_name` names, adopts what the kernel enrolled, and instruments the newly
//! selected processes — by uprobes, or through the syscall tracer for the others — and
//! detaches those that exited.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::attach::syscalls::SyscallTracer;
use crate::attach::Attacher;
use crate::config::GoSource;
use crate::discover::HostProcess;
use crate::export::Exporter;
use crate::inspect::cache::PlanCache;
use crate::internal_events::{emit, AttachFailed, Attached, AttachedVia, BinarySkipped, FailedVia};
use crate::select::Selector;

use super::arming::{self, ArmFailures};
use super::enrolments;
use super::identities::{self, register, Identities};
use super::pending::{Candidate, Pending, ATTACH_ATTEMPTS};
use super::shutdown;
use super::syscall_tracer::{self, TracerState};
use super::{lock, Shared};

/// How often /proc is scanned for processes to instrument (new ones are picked up within it).
const SCAN_INTERVAL: Duration = Duration::from_millis(250);

/// What measures a selected process, once inspected.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// Meant for the syscall tracer, still loading: neither by uprobes meanwhile, so no
    /// request is ever measured by both.
    AwaitTracer,
    /// The syscall tracer.
    Syscalls,
    /// Uprobes, when it is a Go program (a Go program meant for a tracer that is not there
    /// falls back to them).
    Uprobes,
}

/// `via_syscalls`: meant for the syscall tracer (a non-Go process, or `go_source` chose it).
fn route<T>(via_syscalls: bool, tracer: &TracerState<T>) -> Route {
    match tracer {
        TracerState::Loading(_) if via_syscalls => Route::AwaitTracer,
        TracerState::Ready(_) if via_syscalls => Route::Syscalls,
        _ => Route::Uprobes,
    }
}

/// The discovery thread's state and what it shares with the rest of the agent.
pub(super) struct Discovery {
    pub(super) shared: Shared,
    pub(super) selector: Selector,
    pub(super) tracer: TracerState<SyscallTracer>,
    pub(super) plans: Arc<PlanCache>,
    pub(super) identities: Arc<RwLock<Identities>>,
    pub(super) exporter: Arc<Exporter>,
    /// Docker events, container launches and the syscall tracer's arrival: scan now.
    pub(super) woken: Receiver<()>,
    pub(super) enrolled: Receiver<HostProcess>,
    /// Files of `executable_name` seen running, to arm for their later runs.
    pub(super) seen: Receiver<PathBuf>,
    /// How long a stopped container's series stay.
    pub(super) series_ttl: Duration,
}

impl Discovery {
    /// Scans until the agent stops (`stop`), then detaches everything.
    pub(super) fn run(mut self, stop: crate::worker::Stop) {
        let mut pending = Pending::default();
        let mut arm_failures = ArmFailures::default();
        while !stop.requested() {
            let started = Instant::now();
            self.scan(&mut pending, &mut arm_failures);
            // Sleep until the next scan, or until Docker reports a change.
            match self
                .woken
                .recv_timeout(SCAN_INTERVAL.saturating_sub(started.elapsed()))
            {
                Ok(()) => while self.woken.try_recv().is_ok() {},
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(SCAN_INTERVAL.saturating_sub(started.elapsed()))
                }
            }
        }
        shutdown::detach_all(&self.shared, &mut self.tracer);
    }

    fn scan(&mut self, pending: &mut Pending, arm_failures: &mut ArmFailures) {
        let shared = self.shared.clone();
        let named = lock(&shared).tracker.selector().named_files();
        arming::arm_files(
            &shared,
            &self.plans,
            named.into_iter().chain(self.seen.try_iter()),
            arm_failures,
            self.tracer.exists(),
        );
        enrolments::adopt(&shared, &self.enrolled, &self.identities);
        if self.tracer.settle() {
            // Traced below, with this scan's new processes.
            pending.tracer_settled();
        }
        let needs_ports = lock(&shared).tracker.needs_listen_ports();
        let scan = if needs_ports {
            crate::discover::scan()
        } else {
            crate::discover::scan_without_ports()
        };
        let mut guard = lock(&shared);
        let changes = guard.tracker.update(scan);
        if !changes.removed.is_empty() {
            self.forget_exited(&mut guard.attacher, changes.removed, pending);
        }
        drop(guard);
        for candidate in pending.candidates(changes.added) {
            self.instrument(candidate, pending);
        }
        identities::write(&self.identities).sweep(Instant::now());
        self.exporter.sweep(Instant::now());
        self.report_health();
    }

    /// Detaches the processes that exited; their identities stay a while, and their
    /// container's series retire with its last process.
    fn forget_exited(&mut self, attacher: &mut Attacher, removed: Vec<u32>, pending: &mut Pending) {
        let mut ids = identities::write(&self.identities);
        for pid in removed {
            pending.exited(pid);
            if attacher.is_attached(pid) {
                tracing::info!("pid {pid} exited: probes detached");
            }
            attacher.detach_process(pid);
            if let Some(t) = self.tracer.ready() {
                if t.is_traced(pid) {
                    tracing::info!("pid {pid} exited: syscall tracing stopped");
                }
                t.untrace_process(pid);
            }
            if let Some(container) = ids.exited(pid, Instant::now()) {
                self.exporter
                    .retire_container(&container, Instant::now() + self.series_ttl);
            }
        }
    }

    fn instrument(&mut self, candidate: Candidate, pending: &mut Pending) {
        let Candidate {
            process,
            identity,
            attempts,
        } = candidate;
        let pid = process.pid;
        // Inspection can take tens of milliseconds: never while holding `shared`.
        let inspected = self
            .plans
            .get_or_inspect(&crate::discover::proc::exe_path(pid));
        if matches!(inspected, Ok((_, _, true))) {
            // Inspection reads the whole binary and its DWARF (tens of MB, freed at once):
            // hand those pages back instead of keeping them resident.
            // SAFETY: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
        let tracer_exists = self.tracer.exists();
        // Why uprobes measure it, when `go_source` had a choice to make: for the log.
        let mut uprobes_why = None;
        let (plan, via_syscalls) = match inspected {
            Ok((_, Ok(plan), _)) => {
                let (source, why) = crate::inspect::source::choose(
                    self.selector.go_source(&process),
                    &plan,
                    self.selector.traces(),
                    tracer_exists,
                );
                let wanted = source == GoSource::Syscalls;
                if wanted && !tracer_exists {
                    tracing::warn!(
                        "pid {pid}: go_source is syscalls but there is no syscall tracer: measured by uprobes"
                    );
                }
                // The default says nothing new: logged only when a choice was made.
                let chosen = self.selector.go_source(&process) != GoSource::Uprobes;
                uprobes_why = (!wanted && chosen).then(|| format!(" ({why})"));
                (Some(plan), wanted.then(|| format!("Go, {why}")))
            }
            Ok((_, Err(crate::inspect::InspectError::NotGo), _)) if tracer_exists => {
                (None, Some("not Go".to_string()))
            }
            Ok((_, Err(e), inspected_now)) => {
                emit(BinarySkipped {
                    pid,
                    exe: &process.exe,
                    reason: e.reason(),
                    error: &e,
                    // One line per binary, not per process running it.
                    first: inspected_now,
                });
                return;
            }
            Err(e) => {
                tracing::debug!("pid {pid} vanished before inspection: {e}");
                return;
            }
        };
        match route(via_syscalls.is_some(), &self.tracer) {
            Route::AwaitTracer => {
                pending.await_tracer(process, identity);
                return;
            }
            Route::Syscalls => {
                if let (Some(t), Some(why)) = (self.tracer.ready(), via_syscalls) {
                    if lock(&self.shared).attacher.is_attached(pid) {
                        // Instrumented at its launch: uprobes measure it.
                        return;
                    }
                    syscall_tracer::trace(
                        t,
                        pid,
                        &why,
                        &process,
                        identity,
                        &self.identities,
                        &self.exporter,
                    );
                }
                return;
            }
            Route::Uprobes => {}
        }
        let Some(plan) = plan else { return };
        let mut guard = lock(&self.shared);
        if !guard.tracker.is_selected(pid) {
            // Exited, or replaced, since the scan.
            return;
        }
        if guard.attacher.is_attached(pid) {
            // Instrumented at its launch meanwhile.
            return;
        }
        let launch_path = if process.container_id.is_some() {
            " (launch_path=scan)"
        } else {
            ""
        };
        if let Some(slot) = arming::armed_slot_for(&mut guard, &process, &plan) {
            let enrolled = guard.attacher.enrol(pid, slot);
            guard
                .attacher
                .activity()
                .attached(process.container_id.as_deref());
            match enrolled {
                Ok(()) => {
                    let how = format!("its file is armed as a whole{launch_path}");
                    self.instrumented(&process, &plan, identity, &how, uprobes_why.as_deref());
                }
                Err(e) => emit(AttachFailed {
                    pid,
                    error: &e,
                    via: FailedVia::Uprobes,
                }),
            }
            return;
        }
        let attached = guard.attacher.attach_process(pid, &plan);
        guard
            .attacher
            .activity()
            .attached(process.container_id.as_deref());
        match attached {
            Ok(n) => {
                let grpc = plan
                    .grpc
                    .as_ref()
                    .map(|g| format!(", with grpc-go {}", g.version))
                    .unwrap_or_default();
                let how = format!("{n} uprobes{grpc}{launch_path}");
                self.instrumented(&process, &plan, identity, &how, uprobes_why.as_deref());
            }
            Err(e) => {
                let attempt = attempts + 1;
                let candidate = Candidate {
                    process,
                    identity,
                    attempts,
                };
                if pending.attach_failed(candidate) {
                    tracing::debug!("attach attempt {attempt} for pid {pid} failed: {e}");
                } else {
                    emit(AttachFailed {
                        pid,
                        error: &e,
                        via: FailedVia::UprobesAfter(ATTACH_ATTEMPTS),
                    });
                }
            }
        }
    }

    /// Says how a process was instrumented and gives it its identity.
    fn instrumented(
        &self,
        process: &HostProcess,
        plan: &crate::inspect::ProbePlan,
        identity: crate::select::Identity,
        how: &str,
        uprobes_why: Option<&str>,
    ) {
        let pid = process.pid;
        emit(Attached {
            pid,
            exe: &process.exe,
            service: &identity.service_name,
            via: AttachedVia::Uprobes {
                go_version: &plan.go_version,
                how,
                why: uprobes_why.unwrap_or_default(),
            },
        });
        register(&self.identities, &self.exporter, pid, identity);
    }

    fn report_health(&self) {
        let guard = lock(&self.shared);
        let tracer = self.tracer.ready_ref();
        let traced = tracer.map_or(0, |t| t.traced_count());
        let traced_links = tracer.map_or(0, |t| t.link_count());
        let health = self.exporter.health();
        health.set_instrumented_processes((guard.attacher.attached_count() + traced) as u64);
        health.set_uprobe_links((guard.attacher.link_count() + traced_links) as u64);
        health.set_armed_uprobe_links(guard.attacher.armed_link_count() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_for_the_tracer_waits_for_it_or_falls_back_to_uprobes() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let loading = TracerState::Loading(rx);
        let ready = TracerState::Ready(());
        let absent = TracerState::<()>::Absent;
        assert_eq!(route(true, &loading), Route::AwaitTracer);
        assert_eq!(route(true, &ready), Route::Syscalls);
        assert_eq!(
            route(true, &absent),
            Route::Uprobes,
            "go_source=syscalls without a tracer"
        );
        for tracer in [&loading, &ready, &absent] {
            assert_eq!(route(false, tracer), Route::Uprobes, "uprobes never wait");
        }
        drop(tx);
    }
}
