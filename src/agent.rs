//! The running agent: discovery and attachment on one thread, event collection and export
//! on the async runtime.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::attach::{AttachError, Attacher};
use crate::collect::reader::Reader;
use crate::config::Config;
use crate::discover::docker::Containers;
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
    #[error("runtime: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Privileges(#[from] crate::privileges::PrivilegeError),
}

impl AgentError {
    fn exit_code(&self) -> i32 {
        match self {
            AgentError::NoSelector | AgentError::Routes(_) => crate::cli::EXIT_CONFIG,
            _ => 1,
        }
    }
}

pub fn run(config: Config) -> i32 {
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
    let features = crate::kernel::detect();
    crate::kernel::can_run_go_probes(&features).map_err(AgentError::Unsupported)?;
    // Before anything is loaded: one clear refusal instead of an EPERM per probe later.
    crate::privileges::require()?;

    let mut attacher = Attacher::load()?;
    // Loading parses the kernel's BTF (megabytes, freed at once): return those pages.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let mut reader = Reader::new(attacher.take_events()?, attacher.take_lost_counter()?)?;
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
    } else if !config.print_traces {
        tracing::warn!(
            "no SONDE_PROMETHEUS_PORT and no PRINT_TRACES: requests are measured but not shown"
        );
    }

    let identities = Arc::new(RwLock::new(Identities::default()));
    let stop = Arc::new(AtomicBool::new(false));
    // Docker events wake the discovery thread at once instead of at its next scan.
    let (wake, woken) = std::sync::mpsc::channel::<()>();
    let mut selector = Selector::new(&config);
    if config.docker_enabled() {
        let containers = Containers::default();
        selector = selector.with_containers(containers.clone());
        let wake = wake.clone();
        tracing::info!(
            "watching Docker at {}",
            crate::discover::docker::socket_path()
        );
        tokio::spawn(crate::discover::docker::watch(containers, move || {
            let _ = wake.send(());
        }));
    }
    let discovery = {
        let identities = identities.clone();
        let exporter = exporter.clone();
        let stop = stop.clone();
        let ttl = config.container_series_ttl;
        std::thread::Builder::new()
            .name("sonde-discovery".into())
            .spawn(move || {
                discovery_loop(attacher, selector, identities, exporter, stop, woken, ttl)
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
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        {
            let ids = identities.read().unwrap_or_else(|p| p.into_inner());
            reader.drain(|request| {
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
            });
        }
        if last_lost_check.elapsed() >= Duration::from_secs(1) {
            last_lost_check = Instant::now();
            let lost = reader.lost_total();
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

/// An event from a PID we no longer know (should not happen): name it after its binary.
fn fallback_identity(pid: u32) -> Arc<Identity> {
    let name = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("pid-{pid}"));
    Arc::new(Identity {
        service_name: name,
        ..Identity::default()
    })
}

fn discovery_loop(
    mut attacher: Attacher,
    selector: Selector,
    identities: Arc<RwLock<Identities>>,
    exporter: Arc<Exporter>,
    stop: Arc<AtomicBool>,
    woken: std::sync::mpsc::Receiver<()>,
    series_ttl: Duration,
) {
    let mut tracker = Tracker::new(selector);
    let plans = PlanCache::new();
    // Processes whose attach failed, with the attempts made so far.
    let mut retry: HashMap<u32, (HostProcess, Identity, u32)> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let changes = tracker.update(crate::discover::scan());
        if !changes.removed.is_empty() {
            let mut ids = identities.write().unwrap_or_else(|p| p.into_inner());
            for pid in changes.removed {
                retry.remove(&pid);
                if attacher.is_attached(pid) {
                    tracing::info!("pid {pid} exited: probes detached");
                }
                attacher.detach_process(pid);
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
        let candidates: Vec<_> = changes
            .added
            .into_iter()
            .map(|(p, i)| (p, i, 0))
            .chain(retry.drain().map(|(_, v)| v))
            .collect();
        for (process, identity, attempts) in candidates {
            let pid = process.pid;
            let inspected = plans.get_or_inspect(Path::new(&format!("/proc/{pid}/exe")));
            if matches!(inspected, Ok((_, _, true))) {
                // Inspection reads the whole binary and its DWARF (tens of MB, freed at once):
                // hand those pages back instead of keeping them resident.
                // SAFETY: malloc_trim has no preconditions.
                unsafe { libc::malloc_trim(0) };
            }
            let plan = match inspected {
                Ok((_, Ok(plan), _)) => plan,
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
            match attacher.attach_process(pid, &plan) {
                Ok(n) => {
                    tracing::info!(
                        "instrumented pid {pid} ({}, Go {}) as service \"{}\": {n} uprobes",
                        process.exe.display(),
                        plan.go_version,
                        identity.service_name
                    );
                    if let Some(name) = &identity.container_name {
                        exporter.revive_container(name);
                    }
                    identities
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .live
                        .insert(pid, Arc::new(identity));
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
        exporter
            .health()
            .set_instrumented_processes(attacher.attached_count() as u64);
        exporter
            .health()
            .set_uprobe_links(attacher.link_count() as u64);
        // Sleep until the next scan, or until Docker reports a change.
        match woken.recv_timeout(SCAN_INTERVAL.saturating_sub(started.elapsed())) {
            Ok(()) => while woken.try_recv().is_ok() {},
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            // No Docker watcher: plain periodic scans.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(SCAN_INTERVAL.saturating_sub(started.elapsed()))
            }
        }
    }
    for pid in attacher.attached_pids() {
        attacher.detach_process(pid);
    }
}
