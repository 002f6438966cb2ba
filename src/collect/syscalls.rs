//! The decode step of the syscall tracer's ring ([`SyscallReader`]): records go to the
//! connection parsers, which hand on finished requests. Drained like the Go events' ring
//! (`reader.rs`): never woken per record.

use std::time::{Duration, Instant};

use super::connections::{decode_sys, Connections};
use super::reader::{Decode, RingReader};
use super::Request;

/// How often connections of exited processes are dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// The connections the syscall records build up.
pub(crate) struct SyscallRecords {
    connections: Connections,
    last_prune: Instant,
}

impl Default for SyscallRecords {
    fn default() -> Self {
        SyscallRecords {
            connections: Connections::default(),
            last_prune: Instant::now(),
        }
    }
}

impl Decode for SyscallRecords {
    fn record(&mut self, bytes: &[u8], sink: &mut impl FnMut(Request)) {
        match decode_sys(bytes) {
            Ok(record) => {
                // `SONDE_LOG_LEVEL=info,sonde::collect::syscalls=trace`: what the kernel
                // reported, to tell a kernel-side pairing from a parser problem.
                tracing::trace!(?record, "syscall record");
                self.connections.handle(record, sink)
            }
            // Only a mismatch between this binary and its own BPF object gets here.
            Err(e) => tracing::warn!("dropping a syscall record: {e}"),
        }
    }

    fn drained(&mut self) {
        if self.last_prune.elapsed() >= PRUNE_INTERVAL {
            self.last_prune = Instant::now();
            self.connections.retain_pids(crate::discover::proc::exists);
        }
    }
}

/// The syscall tracer's ring.
pub(crate) type SyscallReader = RingReader<SyscallRecords>;
