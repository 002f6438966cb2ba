//! Stopping: the signals that end the agent, and every probe detached before it exits.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::attach::syscalls::SyscallTracer;

use super::syscall_tracer::TracerState;
use super::{lock, Shared};

/// SIGINT and SIGTERM, registered once, before the event loop, so a signal between two
/// polls is not missed.
pub(super) struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    pub(super) fn new() -> std::io::Result<Self> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Either signal.
    pub(super) async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Detaches every probe and stops every syscall trace discovery made.
pub(super) fn detach_all(shared: &Shared, tracer: &mut TracerState<SyscallTracer>) {
    let mut guard = lock(shared);
    for pid in guard.attacher.attached_pids() {
        guard.attacher.detach_process(pid);
    }
    if let Some(t) = tracer.ready() {
        for pid in t.traced_pids() {
            t.untrace_process(pid);
        }
    }
}
