//! Drains the syscall tracer's ring buffer into the connection parsers. Like `reader.rs`, the
//! kernel never wakes us per record: we drain on the same short timer, or earlier when the
//! buffer fills up.

use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::connections::{decode_sys, Connections};
use super::reader::DRAIN_INTERVAL;
use super::Request;

/// How often connections of exited processes are dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

pub struct SyscallReader {
    ring: AsyncFd<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
    connections: Connections,
    last_prune: Instant,
}

impl SyscallReader {
    pub fn new(ring: RingBuf<MapData>, lost: PerCpuArray<MapData, u64>) -> std::io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd; it stays open, and the same, for as long
        // as the AsyncFd owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
        Ok(SyscallReader {
            ring,
            lost,
            connections: Connections::default(),
            last_prune: Instant::now(),
        })
    }

    /// Waits until the kernel wakes us or the drain interval passes.
    pub async fn wait(&mut self) {
        tokio::select! {
            guard = self.ring.readable_mut() => {
                if let Ok(mut g) = guard { g.clear_ready(); }
            }
            _ = tokio::time::sleep(DRAIN_INTERVAL) => {}
        }
    }

    /// Parses every waiting record; finished requests go to `sink`. Returns records read.
    pub fn drain(&mut self, mut sink: impl FnMut(Request)) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            n += 1;
            match decode_sys(&item) {
                Ok(record) => {
                    // `SONDE_LOG_LEVEL=info,sonde::collect::syscalls=trace`: what the kernel
                    // reported, to tell a kernel-side pairing from a parser problem.
                    tracing::trace!(?record, "syscall record");
                    self.connections.handle(record, &mut sink)
                }
                // Only a mismatch between this binary and its own BPF object gets here.
                Err(e) => tracing::warn!("dropping a syscall record: {e}"),
            }
        }
        if self.last_prune.elapsed() >= PRUNE_INTERVAL {
            self.last_prune = Instant::now();
            self.connections.retain_pids(crate::discover::proc::exists);
        }
        n
    }

    /// Records the kernel dropped because the buffer was full, since load.
    pub fn lost_total(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}
