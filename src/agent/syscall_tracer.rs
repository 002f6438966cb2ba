//! The syscall/OpenSSL tracer for non-Go processes: loaded in the background (it takes far
//! longer to load than the Go probes), then handed to discovery and its reader to the
//! collector.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::RwLock;
use std::time::Instant;

use crate::attach::syscalls::SyscallTracer;
use crate::collect::syscalls::SyscallReader;
use crate::config::Config;
use crate::discover::HostProcess;
use crate::enrich::Identity;
use crate::export::Exporter;
use crate::internal_events::{emit, AttachFailed, Attached, AttachedVia, FailedVia};

use super::identities::{register, Identities};

/// The syscall reader on its way to the collector.
pub(super) type ReaderArrival = tokio::sync::oneshot::Receiver<SyscallReader>;

/// Where discovery stands with the tracer: generic so the transitions are tested without one.
pub(super) enum TracerState<T> {
    Loading(Receiver<T>),
    Ready(T),
    /// Turned off, or it could not load here.
    Absent,
}

impl<T> TracerState<T> {
    pub(super) fn new(arrival: Option<Receiver<T>>) -> Self {
        arrival.map_or(TracerState::Absent, TracerState::Loading)
    }

    /// Loaded or still loading: non-Go processes are (or will be) measured.
    pub(super) fn exists(&self) -> bool {
        !matches!(self, TracerState::Absent)
    }

    pub(super) fn ready(&mut self) -> Option<&mut T> {
        match self {
            TracerState::Ready(t) => Some(t),
            _ => None,
        }
    }

    pub(super) fn ready_ref(&self) -> Option<&T> {
        match self {
            TracerState::Ready(t) => Some(t),
            _ => None,
        }
    }

    /// Takes the tracer if it arrived. `true` when the wait ended now, with the tracer or
    /// without (its loader gave up).
    pub(super) fn settle(&mut self) -> bool {
        let TracerState::Loading(rx) = self else {
            return false;
        };
        match rx.try_recv() {
            Ok(t) => *self = TracerState::Ready(t),
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => *self = TracerState::Absent,
        }
        true
    }
}

/// Starts loading the syscall/OpenSSL tracer for non-Go processes in the background, unless
/// turned off. If it cannot load here, both receivers see their sender dropped, and the Go
/// probes run alone.
pub(super) fn load(
    config: &Config,
    mut loader: aya::EbpfLoader<'static>,
    activity: crate::attach::Activity,
    wake: std::sync::mpsc::Sender<()>,
) -> (Option<Receiver<SyscallTracer>>, Option<ReaderArrival>) {
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
pub(super) async fn wait_loaded(arrival: &mut Option<ReaderArrival>) -> Option<SyscallReader> {
    match arrival {
        Some(rx) => rx.await.ok(),
        None => std::future::pending().await,
    }
}

pub(super) async fn wait_syscalls(reader: &mut Option<SyscallReader>) {
    match reader {
        Some(r) => r.wait().await,
        None => std::future::pending().await,
    }
}

/// Starts measuring one process through the syscall tracer; `why`: for the log.
pub(super) fn trace(
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
            emit(Attached {
                pid,
                exe: &process.exe,
                service: &identity.service_name,
                via: AttachedVia::Syscalls { why, tls: &tls },
            });
            register(identities, exporter, pid, identity);
        }
        Err(e) => emit(AttachFailed {
            pid,
            error: &e,
            via: FailedVia::Syscalls,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracer_wait_ends_once_with_the_tracer_or_without() {
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let mut state = TracerState::new(Some(rx));
        assert!(!state.settle(), "nothing yet");
        assert!(state.exists() && state.ready().is_none());
        tx.send(7).unwrap();
        assert!(state.settle(), "arrived now");
        assert_eq!(state.ready().copied(), Some(7));
        assert!(state.exists() && !matches!(state, TracerState::Loading(_)));
        drop(tx);
        assert!(!state.settle(), "settled already: not again");
        assert_eq!(state.ready_ref().copied(), Some(7));

        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let mut failed = TracerState::new(Some(rx));
        drop(tx);
        assert!(failed.settle(), "its loader gave up: the wait ends too");
        assert!(!failed.exists() && failed.ready().is_none());

        let mut off = TracerState::<u32>::new(None);
        assert!(!off.exists() && !off.settle());
    }
}
