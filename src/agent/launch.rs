//! The launch path: containers instrumented before their program runs. A created
//! container's program is read (and armed) ahead from its image; its init is found at its
//! launch, by runc's rename or the engine's event log, and enrolled or attached before its
//! exec.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::attach::launch::LaunchWatch;
use crate::config::GoSource;
use crate::discover::docker::{Containers, ProgramHint};
use crate::discover::HostProcess;
use crate::export::Exporter;
use crate::inspect::cache::PlanCache;
use crate::select::Selector;

use super::identities::{register, Identities};
use super::{lock, monotonic_ns, Instrumented, Shared};

/// What instruments a container's init before its exec, from either trigger.
#[derive(Clone)]
pub(super) struct Launcher {
    pub(super) syscalls_wanted: bool,
    pub(super) shared: Shared,
    pub(super) plans: Arc<PlanCache>,
    pub(super) identities: Arc<RwLock<Identities>>,
    pub(super) exporter: Arc<Exporter>,
}

/// What told sonde of a container's init before its exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// runc renamed it `runc:[2:INIT]` (task_rename tracepoint).
    RuncInit,
    /// The engine logged the container's `init` (created, not started); its runtime's pid
    /// file names the process: any runtime, crun included.
    EngineInit,
}

impl Trigger {
    /// The `launch_path` the log names when the process gets uprobes of its own.
    fn attach_path(self) -> &'static str {
        match self {
            Trigger::RuncInit => "runc-init",
            Trigger::EngineInit => "engine-init",
        }
    }
}

/// Whether the launch path instruments a process before its exec; otherwise the scans do,
/// after it. Only processes the rules select without their ports (not known before they
/// listen), and not those the syscall tracer measures (no uprobes for them, ever).
/// `go_source` is asked only of a selected process (an invalid label is reported then).
fn instruments_before_exec(
    selects_before_exec: Option<bool>,
    go_source: impl FnOnce() -> GoSource,
    syscalls_wanted: bool,
) -> bool {
    selects_before_exec == Some(true) && !(go_source() == GoSource::Syscalls && syscalls_wanted)
}

/// A variable of the launched process's environment (`KEY=` given): its first setting, when
/// not empty.
fn launch_env(env: &[String], key: &str) -> Option<String> {
    env.iter()
        .find_map(|e| e.strip_prefix(key))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// Follows the container engines' events: changes wake discovery, and each created
/// container that may be selected has its program read and armed ahead of its start.
pub(super) fn watch_containers(
    containers: Containers,
    wake: std::sync::mpsc::Sender<()>,
    activity: crate::attach::Activity,
    plans: Arc<PlanCache>,
    selector: Selector,
    shared: Shared,
) {
    let changed = move || {
        let _ = wake.send(());
    };
    let created = move |hint: ProgramHint| {
        // Its start will need attaches: closing old links now would hold them up.
        activity.touch();
        if selector.may_select_container(&hint.container) {
            activity.expect_launch(&hint.container.id);
            let (plans, selector, shared) = (plans.clone(), selector.clone(), shared.clone());
            tokio::task::spawn_blocking(move || {
                if let Some((file, exe, plan)) = read_ahead(&plans, &hint) {
                    arm_image(&shared, &selector, &hint, &file, &exe, &plan);
                }
            });
        }
    };
    let created = Arc::new(created);
    for socket in crate::discover::docker::socket_paths() {
        tracing::info!("watching containers at {socket}");
        let (changed, created) = (changed.clone(), created.clone());
        tokio::spawn(crate::discover::docker::watch(
            containers.clone(),
            socket,
            changed,
            move |hint| created(hint),
        ));
    }
}

/// Follows Podman's event log for created containers (any runtime: their init is found by
/// its pid file, not by its name), when Podman is installed.
pub(super) fn watch_engine_inits(
    launcher: Launcher,
) -> Option<crate::discover::runtime::InitWatch> {
    let log = crate::discover::bundle::on_host(crate::discover::docker::PODMAN_EVENTS_LOG);
    if !log.parent().is_some_and(Path::is_dir) {
        return None;
    }
    let started = crate::discover::runtime::InitWatch::start(log, move |id| {
        let at = monotonic_ns();
        match crate::discover::runtime::init_pid_on_host(&id) {
            Some(pid) => launcher.launch(pid, at, Trigger::EngineInit),
            None => tracing::debug!("container {id} created: no pid file names its init"),
        }
    });
    match started {
        Ok(w) => {
            tracing::info!("watching Podman's event log: a created container's init is found by its pid file, whatever its runtime");
            Some(w)
        }
        Err(e) => {
            tracing::warn!("{e}: Podman containers of runtimes other than runc are instrumented after they start");
            None
        }
    }
}

/// Reports container launches to discovery, when this kernel lets sonde see them; without
/// it, containers are instrumented after they start (their first requests can be missed).
pub(super) fn watch_launches(
    object: Result<aya::Ebpf, crate::attach::launch::LaunchError>,
    launcher: Launcher,
) -> Option<LaunchWatch> {
    // Tests turn runc's trigger off to run the engine's alone on runc.
    if std::env::var("SONDE_RUNC_RENAME").is_ok_and(|v| v == "false") {
        tracing::info!("SONDE_RUNC_RENAME=false: runc's init is not watched");
        return None;
    }
    let started = object.and_then(|object| {
        LaunchWatch::start(object, move |pid, at| {
            launcher.launch(pid, at, Trigger::RuncInit)
        })
    });
    match started {
        Ok(w) => {
            tracing::info!("watching container launches: containers are instrumented before their program runs");
            Some(w)
        }
        Err(e) => {
            tracing::warn!(
                "{e}: containers are instrumented shortly after they start, so their first requests can be missed"
            );
            None
        }
    }
}

/// Inspects a created container's program from its image layers, so that its plan is
/// cached when the container starts (inspection takes tens of milliseconds; runc's wait
/// before the exec is not much longer).
fn read_ahead(
    plans: &PlanCache,
    hint: &ProgramHint,
) -> Option<(PathBuf, PathBuf, Arc<crate::inspect::ProbePlan>)> {
    for layer in hint.layers.iter().map(crate::discover::bundle::on_host) {
        let layer = &layer;
        let Some(exe) =
            crate::discover::bundle::find_program(layer, &hint.program, &hint.path_env, &hint.cwd)
        else {
            continue;
        };
        let file = layer.join(exe.strip_prefix("/").unwrap_or(&exe));
        let t = Instant::now();
        match plans.get_or_inspect(&file) {
            Ok((_, plan, fresh)) => {
                if fresh {
                    // SAFETY: malloc_trim has no preconditions.
                    unsafe { libc::malloc_trim(0) };
                }
                match plan {
                    Ok(p) => {
                        tracing::debug!(
                            "read {} of container {} ahead: Go {} (plan {:?}{})",
                            exe.display(),
                            hint.container.name,
                            p.go_version,
                            t.elapsed(),
                            if fresh { "" } else { ", cached" }
                        );
                        return Some((file, exe, p));
                    }
                    Err(e) => tracing::debug!(
                        "container {}: {} cannot be instrumented: {e}",
                        hint.container.name,
                        exe.display()
                    ),
                }
            }
            Err(e) => tracing::debug!("reading {} ahead: {e}", file.display()),
        }
        return None;
    }
    None
}

/// Arms a created container's program in its image layer (see `Attacher::arm_image`), so
/// its launch only enrols the init: the uprobes are registered now, not in runc's or crun's
/// short wait before the exec. Not for containers measured from syscalls (they must not pay
/// uprobe traps) nor those selected by their ports (not known before they listen).
fn arm_image(
    shared: &Shared,
    selector: &Selector,
    hint: &ProgramHint,
    file: &Path,
    exe: &Path,
    plan: &crate::inspect::ProbePlan,
) {
    if !selector.arms_image(&hint.container, exe) {
        return;
    }
    let t = Instant::now();
    let armed = lock(shared).attacher.arm_image(file, plan);
    match armed {
        Ok((_, true)) => tracing::info!(
            "armed {} (Go {}) of image {} in {:?}: its containers' launches are enrolled, not attached",
            file.display(),
            plan.go_version,
            hint.container.image,
            t.elapsed()
        ),
        Ok((slot, false)) => tracing::debug!(
            "{} of image {} is armed already (slot {slot})",
            file.display(),
            hint.container.image
        ),
        Err(e) => tracing::debug!(
            "not arming {} of image {}: {e}",
            file.display(),
            hint.container.image
        ),
    }
}

impl Launcher {
    /// Instruments a container's init process before it execs its program, when the rules
    /// select it without needing its ports. Anything that does not fit is left to the scans.
    /// Its program armed in the image already: the process is only enrolled
    /// (`launch_path=armed`, two map writes); otherwise it gets uprobes of its own
    /// (`runc-init`, `engine-init`). The first trigger to report a process wins: the other
    /// finds it selected.
    fn launch(&self, pid: u32, launched_ns: u64, trigger: Trigger) {
        let syscalls_wanted = self.syscalls_wanted;
        let mut guard = lock(&self.shared);
        let Instrumented { attacher, tracker } = &mut *guard;
        if tracker.is_selected(pid) {
            return;
        }
        let received_ms = monotonic_ns().saturating_sub(launched_ns) as f64 / 1e6;
        let t0 = Instant::now();
        let Some(container_id) = crate::discover::cgroup::container_id_of(pid) else {
            return;
        };
        let Some(start_time) = crate::discover::start_time(pid) else {
            return;
        };
        if !tracker.selector().knows_container(&container_id) {
            // Podman's API service relays a creation only after the container started: its
            // own event log has it already.
            if let Some(info) = crate::discover::docker::podman_container_from_log(&container_id) {
                tracing::debug!(
                    "launch of pid {pid}: container {} known from Podman's event log",
                    info.name
                );
                tracker.selector().learn_container(info);
            }
        }
        let launch = match crate::discover::bundle::find_bundle(pid, &container_id)
            .and_then(|b| crate::discover::bundle::launch_of(&b))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!("launch of pid {pid}: {e}");
                return;
            }
        };
        let process = HostProcess {
            pid,
            exe: launch.exe.clone(),
            start_time,
            listen_ports: Vec::new(),
            container_id: Some(container_id),
        };
        if !instruments_before_exec(
            tracker.selector().selects_before_exec(&process),
            || tracker.selector().go_source(&process),
            syscalls_wanted,
        ) {
            return;
        }
        let identity = tracker.selector().identity_with_env(
            &process,
            (
                launch_env(&launch.env, "OTEL_SERVICE_NAME="),
                launch_env(&launch.env, "OTEL_SERVICE_NAMESPACE="),
            ),
        );
        let t1 = t0.elapsed();
        let (path, outcome, go_version) = match attacher.armed_slot(&launch.host_path) {
            Some(slot) => {
                let enrolled = attacher.enrol(pid, slot);
                // What link closing waits for (see reaper.rs), though nothing was attached.
                attacher
                    .activity()
                    .attached(process.container_id.as_deref());
                ("armed", enrolled.map(|()| "enrolled".to_string()), None)
            }
            None => {
                let plan = match self.plans.get_or_inspect(&launch.host_path) {
                    Ok((_, Ok(plan), _)) => plan,
                    // Not a Go program, or gone: the scan after its exec says why, once.
                    _ => return,
                };
                if syscalls_wanted && {
                    let sel = tracker.selector();
                    crate::inspect::source::choose(
                        sel.go_source(&process),
                        &plan,
                        sel.traces(),
                        true,
                    )
                    .0
                } == GoSource::Syscalls
                {
                    // go_source=auto found only plaintext HTTP/1.x: the scan after its exec
                    // hands it to the syscall tracer, and its image's file is not armed.
                    return;
                }
                // The first container of this image: arm its file now (the same registration
                // cost as attaching this process alone), so the next ones are only enrolled.
                let armed = attacher.arm_image(&launch.host_path, &plan);
                attacher
                    .activity()
                    .attached(process.container_id.as_deref());
                match armed {
                    Ok((slot, _)) => (
                        "armed",
                        attacher
                            .enrol(pid, slot)
                            .map(|()| "its image's file armed now, enrolled".to_string()),
                        Some(plan.go_version),
                    ),
                    Err(e) => {
                        tracing::debug!("not arming {}: {e}", launch.host_path.display());
                        let attached = attacher
                            .attach_process_to(pid, &plan, &launch.host_path)
                            .map(|n| format!("{n} uprobes"));
                        (trigger.attach_path(), attached, Some(plan.go_version))
                    }
                }
            }
        };
        let t2 = t0.elapsed();
        tracing::debug!(
            "launch of pid {pid} ({trigger:?}): received {received_ms:.1} ms after, bundle+selection {:?}, {path} {:?}",
            t1,
            t2 - t1,
        );
        match outcome {
            Ok(what) => {
                let after_ms = monotonic_ns().saturating_sub(launched_ns) as f64 / 1e6;
                let go = go_version.map(|v| format!(", Go {v}")).unwrap_or_default();
                if crate::discover::runtime::waits_before_exec(pid, &launch.exe) {
                    tracing::info!(
                        "instrumented pid {pid} ({}{go}) as service \"{}\" before its exec: launch_path={path}, {what}, {after_ms:.1} ms after its runtime reported it",
                        launch.exe.display(),
                        identity.service_name
                    );
                } else {
                    tracing::warn!(
                        "instrumented pid {pid} ({}{go}) as service \"{}\" only after its exec: launch_path={path}, {what}, {after_ms:.1} ms after its runtime reported it: requests before that are missed",
                        launch.exe.display(),
                        identity.service_name
                    );
                }
                tracker.adopt(pid, start_time, launch.exe);
                register(&self.identities, &self.exporter, pid, identity);
            }
            Err(e) => tracing::debug!("instrumenting pid {pid} before its exec ({path}): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_processes_selected_without_ports_and_not_for_syscalls_launch_early() {
        let source = |s: GoSource| move || s;
        let unused = || -> GoSource { panic!("go_source asked of a process not selected") };
        assert!(instruments_before_exec(
            Some(true),
            source(GoSource::Uprobes),
            true
        ));
        assert!(
            instruments_before_exec(Some(true), source(GoSource::Auto), true),
            "auto decides later, on the plan"
        );
        assert!(
            instruments_before_exec(Some(true), source(GoSource::Syscalls), false),
            "no tracer wanted: uprobes measure it"
        );
        assert!(
            !instruments_before_exec(Some(true), source(GoSource::Syscalls), true),
            "the tracer's"
        );
        assert!(
            !instruments_before_exec(Some(false), unused, true),
            "not selected"
        );
        assert!(
            !instruments_before_exec(None, unused, true),
            "needs its ports"
        );
    }

    #[test]
    fn the_launch_env_names_the_service_by_its_first_non_empty_setting() {
        let env: Vec<String> = [
            "PATH=/bin",
            "OTEL_SERVICE_NAME=api",
            "OTEL_SERVICE_NAME=other",
        ]
        .map(str::to_string)
        .to_vec();
        assert_eq!(
            launch_env(&env, "OTEL_SERVICE_NAME=").as_deref(),
            Some("api")
        );
        assert_eq!(launch_env(&env, "OTEL_SERVICE_NAMESPACE="), None);
        let empty = vec![
            "OTEL_SERVICE_NAME=".to_string(),
            "OTEL_SERVICE_NAME=late".into(),
        ];
        assert_eq!(
            launch_env(&empty, "OTEL_SERVICE_NAME="),
            None,
            "its first setting counts, even empty"
        );
        assert_eq!(
            launch_env(&["XOTEL_SERVICE_NAME=x".to_string()], "OTEL_SERVICE_NAME="),
            None
        );
    }

    #[test]
    fn each_trigger_names_its_own_launch_path() {
        assert_eq!(Trigger::RuncInit.attach_path(), "runc-init");
        assert_eq!(Trigger::EngineInit.attach_path(), "engine-init");
    }
}
