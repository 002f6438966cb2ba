//! The running agent: discovery and attachment on one thread, event collection and export
//! on the async runtime.
//!
//! This file starts the agent and wires its parts: `events` (the collector's loop),
//! `discovery` (the scans, with `pending` attaches and `arming` of whole files), `launch`
//! (containers instrumented before their exec), `enrolments` (processes the kernel enrolled
//! at an armed file), `syscall_tracer` (loaded in the background), `identities` (who each PID
//! is) and `shutdown`.

mod arming;
mod discovery;
mod enrolments;
mod events;
mod identities;
mod launch;
mod pending;
mod shutdown;
mod syscall_tracer;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use thiserror::Error;

use crate::attach::launch as launch_object;
use crate::attach::{AttachError, Attacher};
use crate::collect::reader::Reader;
use crate::config::Config;
use crate::discover::docker::Containers;
use crate::discover::HostProcess;
use crate::enrich::routes::RouteMatcher;
use crate::export::Exporter;
use crate::inspect::cache::PlanCache;
use crate::select::{Selector, Tracker};

use discovery::Discovery;
use enrolments::Enrolments;
use events::Collector;
use identities::Identities;
use launch::Launcher;
use shutdown::Signals;
use syscall_tracer::TracerState;

#[derive(Debug, Error)]
pub(crate) enum AgentError {
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

pub(crate) fn run(config: Config) -> i32 {
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
    let mut attacher = Attacher::load(&mut loader)?;
    attacher.set_goroutine_probes(config.otlp.traces.is_some());
    // The launch and exec watches' objects, from the same loader (see `attach::loader`);
    // their programs are verified and attached when the watches start.
    let wants_launches = config.docker_enabled();
    let wants_execs = config.executable_name.is_some();
    if wants_launches || wants_execs {
        if let Err(e) = crate::kernel::ensure_tracefs() {
            tracing::warn!("{e}");
        }
    }
    let launch_object = wants_launches
        .then(|| launch_object::load_object(&mut loader, launch_object::Watch::Launch));
    let exec_object =
        wants_execs.then(|| launch_object::load_object(&mut loader, launch_object::Watch::Exec));
    // Creating the loader parsed the kernel's BTF (megabytes, freed at once): return those
    // pages.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    tracing::debug!("Go probes loaded in {:?}", started.elapsed());
    let reader = Reader::new(attacher.take_events()?, attacher.take_lost_counter()?)?;
    let enrolments = Enrolments {
        ring: attacher.take_enrolments()?,
        slots: attacher.armed_slots(),
    };
    // Docker events and container launches wake the discovery thread at once instead of at
    // its next scan; so does the syscall tracer once it is loaded.
    let (wake, woken) = std::sync::mpsc::channel::<()>();
    // The syscall tracer takes far longer to load than the Go probes (more and bigger
    // programs to verify): the metrics port and the Go probes do not wait for it.
    let (tracer, sys_loading) =
        syscall_tracer::load(&config, loader, attacher.activity(), wake.clone());
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
    let plans = Arc::new(PlanCache::new());
    // Processes the kernel enrolled at an armed file's probe, named at once by the collector
    // and handed to discovery, which owns their filter entries.
    let (enrolled_tx, enrolled) = std::sync::mpsc::channel::<HostProcess>();
    // Files of `executable_name` seen running, to arm for their later runs.
    let (seen_tx, seen) = std::sync::mpsc::channel::<std::path::PathBuf>();
    // Loading the exec watcher's program takes tens of milliseconds (more under load): off the
    // way to the first scan. Its handle lives in the thread's result, kept until the agent
    // stops; files named by path are armed by the scans meanwhile.
    let _execs = {
        let re = config.executable_name.clone();
        std::thread::Builder::new()
            .name("sonde-execs".into())
            .spawn(move || arming::watch_execs(exec_object, re, seen_tx))?
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
        _inits = launch::watch_engine_inits(launcher.clone());
        if let Some(object) = launch_object {
            _launches = launch::watch_launches(object, launcher);
        }
        launch::watch_containers(
            containers,
            wake.clone(),
            activity,
            plans.clone(),
            selector.clone(),
            shared.clone(),
        );
    }
    let discovery = {
        let discovery = Discovery {
            shared,
            selector: selector.clone(),
            tracer: TracerState::new(tracer),
            plans,
            identities: identities.clone(),
            exporter: exporter.clone(),
            woken,
            enrolled,
            seen,
            series_ttl: config.container_series_ttl,
        };
        crate::worker::Worker::spawn("sonde-discovery", move |stop| discovery.run(stop))?
    };

    let mut signals = Signals::new()?;
    Collector {
        reader,
        sys_reader: None,
        sys_loading,
        enrolments,
        selector,
        identities,
        exporter,
        otlp,
        routes,
        print_traces: config.print_traces,
        enrolled: enrolled_tx,
    }
    .run(&mut signals)
    .await;
    tracing::info!("stopping: detaching every probe");
    // Stops the scans and waits for discovery to detach everything.
    drop(discovery);
    Ok(())
}
