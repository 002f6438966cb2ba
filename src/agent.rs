//! The running agent: discovery and attachment on one thread, event collection and export
//! on the async runtime.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::attach::launch::LaunchWatch;
use crate::attach::syscalls::SyscallTracer;
use crate::attach::{AttachError, Attacher};
use crate::collect::reader::Reader;
use crate::collect::syscalls::SyscallReader;
use crate::config::{Config, GoSource};
use crate::discover::docker::{Containers, ProgramHint};
use crate::discover::HostProcess;
use crate::enrich::routes::RouteMatcher;
use crate::enrich::{EnrichedRequest, Identity};
use crate::export::Exporter;
use crate::inspect::cache::PlanCache;
use crate::select::{Selector, Tracker};

/// How often /proc is scanned for processes to instrument (new ones are picked up within it).
const SCAN_INTERVAL: Duration = Duration::from_millis(250);
/// Events can still be in the ring buffer after their process exited; keep its identity
/// this long so they are attributed correctly.
const IDENTITY_GRACE: Duration = Duration::from_secs(10);
/// A failed attach is retried on the next scans (a process caught mid-exec, a transient
/// perf_event_open error) before sonde gives up on that process.
const ATTACH_ATTEMPTS: u32 = 3;

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(
        "nothing to instrument: set SONDE_OPEN_PORT (e.g. 8080) or SONDE_EXECUTABLE_NAME, \
         or run Docker (containers labelled sonde.enable=true are selected)"
    )]
    NoSelector,
    #[error("this machine cannot run sonde's probes: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("invalid routes_patterns: {0}")]
    Routes(String),
    #[error("cannot serve metrics: {0}")]
    Serve(String),
    #[error("cannot start OTLP export: {0}")]
    Otlp(#[from] crate::export::otlp::OtlpError),
    #[error("runtime: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Privileges(#[from] crate::privileges::PrivilegeError),
}

impl AgentError {
    fn exit_code(&self) -> i32 {
        match self {
            AgentError::NoSelector | AgentError::Routes(_) => crate::config::EXIT_CONFIG,
            _ => 1,
        }
    }
}

pub fn run(config: Config) -> i32 {
    // Threads that inspect binaries and close links would each get a malloc arena of their
    // own and keep its pages: two arenas bound sonde's resident memory.
    // SAFETY: mallopt has no preconditions; called before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    // Blocks of 256 KiB and more (the kernel's BTF read by each BPF loader, ELF sections of
    // inspected binaries) are mapped on their own and unmapped when freed. glibc's default
    // raises this threshold after the first such free, so the next BTF load came from the
    // heap and ~8 MB stayed resident whenever no malloc_trim ran after its free (a one-off
    // jump of RSS at a random moment in 200 container cycles).
    // SAFETY: as above.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sonde: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run_async(config)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sonde: {e}");
            e.exit_code()
        }
    }
}

/// The kernel objects and the selected processes, shared by the discovery thread and the
/// launch thread (which must attach within runc's wait before a container's exec, so it
/// never waits for a scan to finish: scans hold this only to apply what they found).
struct Instrumented {
    attacher: Attacher,
    tracker: Tracker,
}

type Shared = Arc<std::sync::Mutex<Instrumented>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Instrumented> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Identity of each instrumented PID, read by the collector for every request.
#[derive(Default)]
struct Identities {
    live: HashMap<u32, Arc<Identity>>,
    /// PIDs that exited, with when, so late events still find their identity.
    gone: HashMap<u32, (Arc<Identity>, Instant)>,
}

impl Identities {
    fn get(&self, pid: u32) -> Option<Arc<Identity>> {
        self.live
            .get(&pid)
            .or_else(|| self.gone.get(&pid).map(|(i, _)| i))
            .cloned()
    }
}

async fn run_async(config: Config) -> Result<(), AgentError> {
    if !config.has_selector() {
        return Err(AgentError::NoSelector);
    }
    if let Some(file) = &config.config_file {
        tracing::info!("configuration read from {}", file.display());
    }
    let routes = RouteMatcher::new(&config.routes_patterns, &config.routes_unmatched)
        .map_err(|e| AgentError::Routes(e.to_string()))?;
    let features = crate::kernel::detect(&crate::attach::syscalls::kprobe_functions());
    crate::kernel::can_run_go_probes(&features).map_err(AgentError::Unsupported)?;
    // Before anything is loaded: one clear refusal instead of an EPERM per probe later.
    crate::privileges::require()?;

    let started = Instant::now();
    let mut loader = crate::attach::loader();
    // Every loader now (see `attach::loader`): the launch and exec watches start later.
    let launch_loader = config.docker_enabled().then(crate::attach::loader);
    let exec_loader = config.executable_name.is_some().then(crate::attach::loader);
    let mut attacher = Attacher::load(&mut loader)?;
    attacher.set_goroutine_probes(config.otlp.traces.is_some());
    // Creating the loaders parsed the kernel's BTF (megabytes, freed at once): return those
    // pages.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    tracing::debug!("Go probes loaded in {:?}", started.elapsed());
    let mut reader = Reader::new(attacher.take_events()?, attacher.take_lost_counter()?)?;
    let mut enrolments = Enrolments {
        ring: attacher.take_enrolments()?,
        slots: attacher.armed_slots(),
    };
    // Docker events and container launches wake the discovery thread at once instead of at
    // its next scan; so does the syscall tracer once it is loaded.
    let (wake, woken) = std::sync::mpsc::channel::<()>();
    // The syscall tracer takes far longer to load than the Go probes (more and bigger
    // programs to verify): the metrics port and the Go probes do not wait for it.
    let (tracer, mut sys_loading) =
        load_syscall_tracer(&config, loader, attacher.activity(), wake.clone());
    let mut sys_reader: Option<SyscallReader> = None;
    let exporter = Arc::new(Exporter::new(&config));

    if let Some(port) = config.prometheus_port {
        let listener = crate::export::bind(port)
            .await
            .map_err(|e| AgentError::Serve(e.to_string()))?;
        tracing::info!(
            "serving Prometheus metrics on :{port}{}",
            config.prometheus_path
        );
        tokio::spawn(crate::export::serve(
            listener,
            exporter.clone(),
            config.prometheus_path.clone(),
        ));
    } else if !config.print_traces && !config.otlp.enabled() {
        tracing::warn!(
            "no SONDE_PROMETHEUS_PORT and no PRINT_TRACES: requests are measured but not shown"
        );
    }

    let otlp = if config.otlp.enabled() {
        Some(crate::export::otlp::Otlp::start(&config, exporter.clone())?)
    } else {
        None
    };

    let identities = Arc::new(RwLock::new(Identities::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let plans = Arc::new(PlanCache::new());
    // Processes the kernel enrolled at an armed file's probe, named at once by the collector
    // and handed to discovery, which owns their filter entries.
    let (enrolled_tx, enrolled) = std::sync::mpsc::channel::<(HostProcess, u32)>();
    // Files of `executable_name` seen running, to arm for their later runs.
    let (seen_tx, seen) = std::sync::mpsc::channel::<std::path::PathBuf>();
    // Loading the exec watcher's program takes tens of milliseconds (more under load): off the
    // way to the first scan. Its handle lives in the thread's result, kept until the agent
    // stops; files named by path are armed by the scans meanwhile.
    let _execs = {
        let re = config.executable_name.clone();
        std::thread::Builder::new()
            .name("sonde-execs".into())
            .spawn(move || watch_execs(exec_loader, re, seen_tx))?
    };
    let mut selector = Selector::new(&config);
    let containers = config.docker_enabled().then(Containers::default);
    if let Some(containers) = &containers {
        selector = selector.with_containers(containers.clone());
    }
    let activity = attacher.activity();
    let shared: Shared = Arc::new(std::sync::Mutex::new(Instrumented {
        attacher,
        tracker: Tracker::new(selector.clone()),
    }));
    let mut _launches = None;
    let mut _inits = None;
    if let Some(containers) = containers {
        let launcher = Launcher {
            syscalls_wanted: config.syscall_tracing,
            shared: shared.clone(),
            plans: plans.clone(),
            identities: identities.clone(),
            exporter: exporter.clone(),
        };
        _inits = watch_engine_inits(launcher.clone());
        if let Some(loader) = launch_loader {
            _launches = watch_launches(loader, launcher);
        }
        let changed = {
            let wake = wake.clone();
            move || {
                let _ = wake.send(());
            }
        };
        let created = {
            let (plans, selector, shared) = (plans.clone(), selector.clone(), shared.clone());
            move |hint: ProgramHint| {
                // Its start will need attaches: closing old links now would hold them up.
                activity.touch();
                if selector.may_select_container(&hint.container) {
                    activity.expect_launch(&hint.container.id);
                    let (plans, selector, shared) =
                        (plans.clone(), selector.clone(), shared.clone());
                    tokio::task::spawn_blocking(move || {
                        if let Some((file, exe, plan)) = read_ahead(&plans, &hint) {
                            arm_image(&shared, &selector, &hint, &file, &exe, &plan);
                        }
                    });
                }
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
    let discovery = {
        let selector = selector.clone();
        let identities = identities.clone();
        let exporter = exporter.clone();
        let stop = stop.clone();
        let ttl = config.container_series_ttl;
        std::thread::Builder::new()
            .name("sonde-discovery".into())
            .spawn(move || {
                discovery_loop(
                    shared, selector, tracer, plans, identities, exporter, stop, woken, enrolled,
                    seen, ttl,
                )
            })?
    };

    let mut lost_seen = 0;
    let mut last_lost_check = Instant::now();
    // Registered once, before the loop, so a signal between two polls is not missed.
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = reader.wait() => {}
            _ = wait_syscalls(&mut sys_reader) => {}
            loaded = wait_loaded(&mut sys_loading) => {
                sys_loading = None;
                sys_reader = loaded;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        // Before the requests: a process's enrolment is reported before its first request.
        enrolments.drain(&selector, &identities, &exporter, &enrolled_tx);
        {
            let ids = identities.read().unwrap_or_else(|p| p.into_inner());
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
                if config.print_traces {
                    println!("{}", crate::export::print_trace_line(&enriched));
                }
                exporter.record(&enriched);
                if let Some(otlp) = &otlp {
                    otlp.record(&enriched);
                }
            };
            reader.drain(&mut handle);
            if let Some(sys) = &mut sys_reader {
                sys.drain(&mut handle);
            }
        }
        if last_lost_check.elapsed() >= Duration::from_secs(1) {
            last_lost_check = Instant::now();
            let lost = reader.lost_total() + sys_reader.as_ref().map_or(0, |s| s.lost_total());
            if lost > lost_seen {
                tracing::warn!("{} events lost: the ring buffer was full", lost - lost_seen);
                exporter.health().add_events_lost(lost - lost_seen);
                lost_seen = lost;
            }
        }
    }
    tracing::info!("stopping: detaching every probe");
    stop.store(true, Ordering::Relaxed);
    let _ = discovery.join();
    Ok(())
}

/// What instruments a container's init before its exec, from either trigger.
#[derive(Clone)]
struct Launcher {
    syscalls_wanted: bool,
    shared: Shared,
    plans: Arc<PlanCache>,
    identities: Arc<RwLock<Identities>>,
    exporter: Arc<Exporter>,
}

impl Launcher {
    fn launch(&self, pid: u32, at: u64, trigger: Trigger) {
        instrument_launch(
            pid,
            at,
            trigger,
            self.syscalls_wanted,
            &self.shared,
            &self.plans,
            &self.identities,
            &self.exporter,
        )
    }
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

/// Follows Podman's event log for created containers (any runtime: their init is found by
/// its pid file, not by its name), when Podman is installed.
fn watch_engine_inits(launcher: Launcher) -> Option<crate::discover::runtime::InitWatch> {
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
fn watch_launches(loader: aya::EbpfLoader<'static>, launcher: Launcher) -> Option<LaunchWatch> {
    // Tests turn runc's trigger off to run the engine's alone on runc.
    if std::env::var("SONDE_RUNC_RENAME").is_ok_and(|v| v == "false") {
        tracing::info!("SONDE_RUNC_RENAME=false: runc's init is not watched");
        return None;
    }
    if let Err(e) = crate::kernel::ensure_tracefs() {
        tracing::warn!("{e}");
    }
    match LaunchWatch::start(loader, move |pid, at| {
        launcher.launch(pid, at, Trigger::RuncInit)
    }) {
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
) -> Option<(
    std::path::PathBuf,
    std::path::PathBuf,
    Arc<crate::inspect::ProbePlan>,
)> {
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

/// Instruments a container's init process before it execs its program, when the rules
/// select it without needing its ports. Anything that does not fit is left to the scans.
/// Its program armed in the image already: the process is only enrolled (`launch_path=armed`,
/// two map writes); otherwise it gets uprobes of its own (`runc-init`, `engine-init`).
#[allow(clippy::too_many_arguments)]
fn instrument_launch(
    pid: u32,
    launched_ns: u64,
    trigger: Trigger,
    syscalls_wanted: bool,
    shared: &Shared,
    plans: &PlanCache,
    identities: &RwLock<Identities>,
    exporter: &Exporter,
) {
    let mut guard = lock(shared);
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
        // Podman's API service relays a creation only after the container started: its own
        // event log has it already.
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
    if tracker.selector().selects_before_exec(&process) != Some(true) {
        return;
    }
    if tracker.selector().go_source(&process) == GoSource::Syscalls && syscalls_wanted {
        // The scan after its exec hands it to the syscall tracer: no uprobes, ever.
        return;
    }
    let env = |key: &str| {
        launch
            .env
            .iter()
            .find_map(|e| e.strip_prefix(key))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let identity = tracker.selector().identity_with_env(
        &process,
        (env("OTEL_SERVICE_NAME="), env("OTEL_SERVICE_NAMESPACE=")),
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
            let plan = match plans.get_or_inspect(&launch.host_path) {
                Ok((_, Ok(plan), _)) => plan,
                // Not a Go program, or gone: the scan after its exec says why, once.
                _ => return,
            };
            if syscalls_wanted && {
                let sel = tracker.selector();
                crate::inspect::source::choose(sel.go_source(&process), &plan, sel.traces(), true).0
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
            register(identities, exporter, pid, identity);
        }
        Err(e) => tracing::debug!("instrumenting pid {pid} before its exec ({path}): {e}"),
    }
}

/// The armed file's slot a selected process runs, arming its file first when it is a
/// container's program (for its image's next containers) or `executable_name` selects it (so
/// that its later executions, however short, are measured from their first request).
/// `None`: attach to the process alone.
fn armed_slot_for(
    guard: &mut Instrumented,
    process: &HostProcess,
    plan: &crate::inspect::ProbePlan,
) -> Option<u32> {
    let exe = crate::discover::proc::exe_path(process.pid);
    if let Some(slot) = guard.attacher.armed_slot(&exe) {
        return Some(slot);
    }
    if process.container_id.is_some() {
        // A container's program: armed for its image's next containers (see arm_image).
        return match guard.attacher.arm_image(&exe, plan) {
            Ok((slot, _)) => Some(slot),
            Err(e) => {
                tracing::debug!("not arming {}: {e}", process.exe.display());
                None
            }
        };
    }
    if !guard.tracker.selector().selects_by_executable(process) {
        return None;
    }
    match guard.attacher.arm_file(&exe, &process.exe, plan) {
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
    }
}

/// Names an instrumented process for the collector (and revives its container's series).
fn register(identities: &RwLock<Identities>, exporter: &Exporter, pid: u32, identity: Identity) {
    if let Some(name) = &identity.container_name {
        exporter.revive_container(name);
    }
    identities
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .live
        .insert(pid, Arc::new(identity));
}

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Starts measuring one process through the syscall tracer; `why`: for the log.
fn trace_syscalls(
    tracer: &mut SyscallTracer,
    pid: u32,
    why: &str,
    process: &HostProcess,
    identity: Identity,
    identities: &RwLock<Identities>,
    exporter: &Exporter,
) {
    match tracer.trace_process(pid) {
        Ok(traced) => {
            let tls = match &traced.openssl {
                Some(f) => format!(", OpenSSL {} ({} uprobes)", f.display(), traced.uprobes),
                None => String::new(),
            };
            tracing::info!(
                "tracing pid {pid} ({}, {why}) through syscalls{tls} as service \"{}\"",
                process.exe.display(),
                identity.service_name
            );
            register(identities, exporter, pid, identity);
        }
        Err(e) => {
            tracing::warn!("cannot trace pid {pid} through syscalls: {e}");
            exporter.health().inc_attach_errors();
        }
    }
}

/// The syscall tracer on its way: discovery receives it, the collector its reader.
type TracerArrival = std::sync::mpsc::Receiver<SyscallTracer>;
type ReaderArrival = tokio::sync::oneshot::Receiver<SyscallReader>;

/// Starts loading the syscall/OpenSSL tracer for non-Go processes in the background, unless
/// turned off. If it cannot load here, both receivers see their sender dropped, and the Go
/// probes run alone.
fn load_syscall_tracer(
    config: &Config,
    mut loader: aya::EbpfLoader<'static>,
    activity: crate::attach::Activity,
    wake: std::sync::mpsc::Sender<()>,
) -> (Option<TracerArrival>, Option<ReaderArrival>) {
    if !config.syscall_tracing {
        return (None, None);
    }
    let source = config.syscall_source;
    let (tracer_tx, tracer_rx) = std::sync::mpsc::channel();
    let (reader_tx, reader_rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name("sonde-sysload".into())
        .spawn(move || {
            let started = Instant::now();
            let loaded = SyscallTracer::load(&mut loader, activity, source).and_then(|mut t| {
                let ring = t.take_events()?;
                let lost = t.take_lost_counter()?;
                Ok((t, ring, lost))
            });
            drop(loader);
            // SAFETY: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
            let (tracer, ring, lost) = match loaded {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("non-Go processes will not be measured: {e}");
                    let _ = wake.send(());
                    return;
                }
            };
            // The reader registers with the runtime's reactor.
            let _entered = runtime.enter();
            match SyscallReader::new(ring, lost) {
                Ok(r) => {
                    tracing::info!(
                        "syscall tracer loaded in {:?} ({}): non-Go processes are measured",
                        started.elapsed(),
                        tracer.source()
                    );
                    // Reader first: the tracer's first records then always have a reader.
                    if reader_tx.send(r).is_ok() {
                        let _ = tracer_tx.send(tracer);
                    }
                }
                Err(e) => tracing::warn!("non-Go processes will not be measured: {e}"),
            }
            let _ = wake.send(());
        });
    match spawned {
        Ok(_) => (Some(tracer_rx), Some(reader_rx)),
        Err(e) => {
            tracing::warn!("non-Go processes will not be measured: cannot start a thread: {e}");
            (None, None)
        }
    }
}

/// The syscall reader once loaded; pending forever when there is none to wait for.
async fn wait_loaded(arrival: &mut Option<ReaderArrival>) -> Option<SyscallReader> {
    match arrival {
        Some(rx) => rx.await.ok(),
        None => std::future::pending().await,
    }
}

async fn wait_syscalls(reader: &mut Option<SyscallReader>) {
    match reader {
        Some(r) => r.wait().await,
        None => std::future::pending().await,
    }
}

/// An event from a PID we no longer know (should not happen): name it after its binary.
fn fallback_identity(pid: u32) -> Arc<Identity> {
    let name = crate::discover::proc::Proc::open(pid)
        .and_then(|p| p.exe())
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("pid-{pid}"));
    Arc::new(Identity {
        service_name: name,
        ..Identity::default()
    })
}

/// The kernel's reports of processes it enrolled at an armed file's probe.
struct Enrolments {
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    slots: crate::attach::ArmedSlots,
}

impl Enrolments {
    /// Names each newly enrolled process (as a scan would have) and hands it to discovery.
    fn drain(
        &mut self,
        selector: &crate::select::Selector,
        identities: &RwLock<Identities>,
        exporter: &Exporter,
        discovery: &std::sync::mpsc::Sender<(HostProcess, u32)>,
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
            tracing::debug!(
                "pid {} ({}) enrolled at its first probe hit, {:.1} ms ago, as service \"{}\"",
                e.pid,
                process.exe.display(),
                monotonic_ns().saturating_sub(e.ktime_ns) as f64 / 1e6,
                identity.service_name
            );
            register(identities, exporter, e.pid, identity);
            let _ = discovery.send((process, e.slot));
        }
    }
}

/// Why a named file could not be armed: its mtime then, when, and the reason.
type ArmFailures = HashMap<std::path::PathBuf, (Option<std::time::SystemTime>, Instant, String)>;

/// An unchanged file that could not be armed is tried again after this long (the process
/// that had probes of its own on it may have exited).
const ARM_RETRY: Duration = Duration::from_secs(10);

/// Watches executions when `executable_name` is set, sending each selected host file seen
/// running (once) to discovery, which arms it.
fn watch_execs(
    loader: Option<aya::EbpfLoader<'static>>,
    executable_name: Option<regex::Regex>,
    seen: std::sync::mpsc::Sender<std::path::PathBuf>,
) -> Option<crate::attach::launch::ExecWatch> {
    let (loader, re) = (loader?, executable_name?);
    let mut sent = std::collections::HashSet::new();
    let started = crate::attach::launch::ExecWatch::start(loader, move |_pid, path| {
        // The path given to exec: the file itself is what `/proc/<pid>/exe` will show.
        let Ok(real) = std::fs::canonicalize(&path) else {
            return;
        };
        // Bounded: a host running many distinct matching programs forgets old ones.
        if re.is_match(&real.to_string_lossy()) && !sent.contains(&real) {
            if sent.len() >= 4096 {
                sent.clear();
            }
            sent.insert(real.clone());
            let _ = seen.send(real);
        }
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

/// Arms these files (named by `executable_name`'s path, or seen running) as a whole (see
/// `Attacher::arm_file`). `failed` remembers why a file could not be, to say it once and not
/// retry at every scan.
fn arm_files(
    shared: &Shared,
    plans: &PlanCache,
    exporter: &Exporter,
    files: impl Iterator<Item = std::path::PathBuf>,
    failed: &mut ArmFailures,
    tracer_exists: bool,
) {
    for file in files {
        let mtime = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
        let known = failed.get(&file);
        if known.is_some_and(|(m, at, _)| *m == mtime && at.elapsed() < ARM_RETRY) {
            continue;
        }
        if lock(shared).attacher.armed_slot(&file).is_some() {
            continue;
        }
        let said = known.map(|(_, _, why)| why.clone());
        let mut fail = |why: String, skipped: Option<&'static str>| {
            if said.as_ref() != Some(&why) {
                tracing::info!("not arming {}: {why}", file.display());
                if let Some(reason) = skipped {
                    exporter.health().inc_skipped(reason);
                }
            }
            failed.insert(file.clone(), (mtime, Instant::now(), why));
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
                failed.remove(&file);
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

/// Takes over the processes the kernel enrolled: alive ones are tracked like instrumented
/// ones (their filter entries go when they exit); those gone already are forgotten now.
fn adopt_enrolled(
    shared: &Shared,
    enrolled: &std::sync::mpsc::Receiver<(HostProcess, u32)>,
    identities: &RwLock<Identities>,
) {
    for (p, slot) in enrolled.try_iter() {
        let mut guard = lock(shared);
        let alive = p.start_time != 0 && crate::discover::start_time(p.pid) == Some(p.start_time);
        if alive {
            guard.attacher.adopt_enrolled(p.pid, slot);
            guard.tracker.adopt(p.pid, p.start_time, p.exe);
        } else if !guard.tracker.is_selected(p.pid) {
            guard.attacher.detach_process(p.pid);
            let mut ids = identities.write().unwrap_or_else(|p| p.into_inner());
            if let Some(id) = ids.live.remove(&p.pid) {
                ids.gone.insert(p.pid, (id, Instant::now()));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn discovery_loop(
    shared: Shared,
    selector: Selector,
    mut arrival: Option<TracerArrival>,
    plans: Arc<PlanCache>,
    identities: Arc<RwLock<Identities>>,
    exporter: Arc<Exporter>,
    stop: Arc<AtomicBool>,
    woken: std::sync::mpsc::Receiver<()>,
    enrolled: std::sync::mpsc::Receiver<(HostProcess, u32)>,
    seen: std::sync::mpsc::Receiver<std::path::PathBuf>,
    series_ttl: Duration,
) {
    // Processes whose attach failed, with the attempts made so far.
    let mut retry: HashMap<u32, (HostProcess, Identity, u32)> = HashMap::new();
    let mut arm_failures = ArmFailures::new();
    let mut tracer: Option<SyscallTracer> = None;
    // Non-Go processes selected while the syscall tracer was still loading.
    let mut awaiting: HashMap<u32, (HostProcess, Identity)> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let named = lock(&shared).tracker.selector().named_files();
        arm_files(
            &shared,
            &plans,
            &exporter,
            named.into_iter().chain(seen.try_iter()),
            &mut arm_failures,
            arrival.is_some() || tracer.is_some(),
        );
        adopt_enrolled(&shared, &enrolled, &identities);
        if let Some(rx) = &arrival {
            match rx.try_recv() {
                Ok(t) => {
                    tracer = Some(t);
                    arrival = None;
                    // Traced below, with this scan's new processes.
                    retry.extend(awaiting.drain().map(|(pid, (p, i))| (pid, (p, i, 0))));
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    arrival = None;
                    // Decided again without a tracer: a Go process gets its uprobes, any
                    // other is skipped, saying why.
                    retry.extend(awaiting.drain().map(|(pid, (p, i))| (pid, (p, i, 0))));
                }
            }
        }
        let needs_ports = lock(&shared).tracker.needs_listen_ports();
        let scan = if needs_ports {
            crate::discover::scan()
        } else {
            crate::discover::scan_without_ports()
        };
        let mut guard = lock(&shared);
        let changes = guard.tracker.update(scan);
        let attacher = &mut guard.attacher;
        if !changes.removed.is_empty() {
            let mut ids = identities.write().unwrap_or_else(|p| p.into_inner());
            for pid in changes.removed {
                retry.remove(&pid);
                awaiting.remove(&pid);
                if attacher.is_attached(pid) {
                    tracing::info!("pid {pid} exited: probes detached");
                }
                attacher.detach_process(pid);
                if let Some(t) = &mut tracer {
                    if t.is_traced(pid) {
                        tracing::info!("pid {pid} exited: syscall tracing stopped");
                    }
                    t.untrace_process(pid);
                }
                if let Some(id) = ids.live.remove(&pid) {
                    if let Some(name) = &id.container_name {
                        let still_running = ids
                            .live
                            .values()
                            .any(|o| o.container_name.as_ref() == Some(name));
                        if !still_running {
                            exporter.retire_container(name, Instant::now() + series_ttl);
                        }
                    }
                    ids.gone.insert(pid, (id, Instant::now()));
                }
            }
        }
        drop(guard);
        let candidates: Vec<_> = changes
            .added
            .into_iter()
            .map(|(p, i)| (p, i, 0))
            .chain(retry.drain().map(|(_, v)| v))
            .collect();
        for (process, identity, attempts) in candidates {
            let pid = process.pid;
            // Inspection can take tens of milliseconds: never while holding `shared`.
            let inspected = plans.get_or_inspect(&crate::discover::proc::exe_path(pid));
            if matches!(inspected, Ok((_, _, true))) {
                // Inspection reads the whole binary and its DWARF (tens of MB, freed at once):
                // hand those pages back instead of keeping them resident.
                // SAFETY: malloc_trim has no preconditions.
                unsafe { libc::malloc_trim(0) };
            }
            // Why uprobes measure it, when `go_source` had a choice to make: for the log.
            let mut uprobes_why = None;
            let (plan, via_syscalls) = match inspected {
                Ok((_, Ok(plan), _)) => {
                    let tracer_exists = arrival.is_some() || tracer.is_some();
                    let (source, why) = crate::inspect::source::choose(
                        selector.go_source(&process),
                        &plan,
                        selector.traces(),
                        tracer_exists,
                    );
                    let wanted = source == GoSource::Syscalls;
                    if wanted && !tracer_exists {
                        tracing::warn!(
                            "pid {pid}: go_source is syscalls but there is no syscall tracer: measured by uprobes"
                        );
                    }
                    // The default says nothing new: logged only when a choice was made.
                    let chosen = selector.go_source(&process) != GoSource::Uprobes;
                    uprobes_why = (!wanted && chosen).then(|| format!(" ({why})"));
                    (Some(plan), wanted.then(|| format!("Go, {why}")))
                }
                Ok((_, Err(crate::inspect::InspectError::NotGo), _))
                    if arrival.is_some() || tracer.is_some() =>
                {
                    (None, Some("not Go".to_string()))
                }
                Ok((_, Err(e), inspected_now)) => {
                    // One line per binary, not per process running it.
                    if inspected_now {
                        tracing::info!("skipping {} (pid {pid}): {e}", process.exe.display());
                    } else {
                        tracing::debug!("skipping {} (pid {pid}): {e}", process.exe.display());
                    }
                    exporter.health().inc_skipped(e.reason());
                    continue;
                }
                Err(e) => {
                    tracing::debug!("pid {pid} vanished before inspection: {e}");
                    continue;
                }
            };
            if let Some(why) = via_syscalls {
                if arrival.is_some() {
                    // Traced once the tracer is loaded: not by uprobes meanwhile, so no
                    // request is ever measured by both.
                    awaiting.insert(pid, (process, identity));
                    continue;
                }
                if let Some(t) = &mut tracer {
                    if lock(&shared).attacher.is_attached(pid) {
                        // Instrumented at its launch: uprobes measure it.
                        continue;
                    }
                    trace_syscalls(t, pid, &why, &process, identity, &identities, &exporter);
                    continue;
                }
            }
            let Some(plan) = plan else { continue };
            let mut guard = lock(&shared);
            if !guard.tracker.is_selected(pid) {
                // Exited, or replaced, since the scan.
                continue;
            }
            if guard.attacher.is_attached(pid) {
                // Instrumented at its launch meanwhile.
                continue;
            }
            if let Some(slot) = armed_slot_for(&mut guard, &process, &plan) {
                let enrolled = guard.attacher.enrol(pid, slot);
                guard
                    .attacher
                    .activity()
                    .attached(process.container_id.as_deref());
                match enrolled {
                    Ok(()) => {
                        tracing::info!(
                            "instrumented pid {pid} ({}, Go {}) as service \"{}\": its file is armed as a whole{}{}",
                            process.exe.display(),
                            plan.go_version,
                            identity.service_name,
                            if process.container_id.is_some() { " (launch_path=scan)" } else { "" },
                            uprobes_why.as_deref().unwrap_or_default()
                        );
                        register(&identities, &exporter, pid, identity);
                    }
                    Err(e) => {
                        tracing::warn!("cannot instrument pid {pid}: {e}");
                        exporter.health().inc_attach_errors();
                    }
                }
                continue;
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
                    tracing::info!(
                        "instrumented pid {pid} ({}, Go {}) as service \"{}\": {n} uprobes{grpc}{}{}",
                        process.exe.display(),
                        plan.go_version,
                        identity.service_name,
                        if process.container_id.is_some() { " (launch_path=scan)" } else { "" },
                        uprobes_why.as_deref().unwrap_or_default()
                    );
                    register(&identities, &exporter, pid, identity);
                }
                Err(e) if attempts + 1 < ATTACH_ATTEMPTS => {
                    tracing::debug!("attach attempt {} for pid {pid} failed: {e}", attempts + 1);
                    retry.insert(pid, (process, identity, attempts + 1));
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot instrument pid {pid} after {ATTACH_ATTEMPTS} attempts: {e}"
                    );
                    exporter.health().inc_attach_errors();
                }
            }
        }
        {
            let mut ids = identities.write().unwrap_or_else(|p| p.into_inner());
            ids.gone.retain(|_, (_, at)| at.elapsed() < IDENTITY_GRACE);
        }
        exporter.sweep(Instant::now());
        {
            let guard = lock(&shared);
            let traced = tracer.as_ref().map_or(0, |t| t.traced_count());
            let traced_links = tracer.as_ref().map_or(0, |t| t.link_count());
            exporter
                .health()
                .set_instrumented_processes((guard.attacher.attached_count() + traced) as u64);
            exporter
                .health()
                .set_uprobe_links((guard.attacher.link_count() + traced_links) as u64);
            exporter
                .health()
                .set_armed_uprobe_links(guard.attacher.armed_link_count() as u64);
        }
        // Sleep until the next scan, or until Docker reports a change.
        match woken.recv_timeout(SCAN_INTERVAL.saturating_sub(started.elapsed())) {
            Ok(()) => while woken.try_recv().is_ok() {},
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(SCAN_INTERVAL.saturating_sub(started.elapsed()))
            }
        }
    }
    let mut guard = lock(&shared);
    for pid in guard.attacher.attached_pids() {
        guard.attacher.detach_process(pid);
    }
    if let Some(t) = &mut tracer {
        for pid in t.traced_pids() {
            t.untrace_process(pid);
        }
    }
}
