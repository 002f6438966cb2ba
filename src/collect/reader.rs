//! Drains the kernel ring buffer. The kernel never wakes us per event (that would cost the
//! application's thread ~17 µs each here); we drain on a short timer, or earlier when the
//! kernel signals the buffer is filling up.

use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::event::decode;
use super::Request;

/// How often the buffer is drained when the kernel has not asked for it.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

pub struct Reader {
    ring: AsyncFd<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
}

impl Reader {
    pub fn new(ring: RingBuf<MapData>, lost: PerCpuArray<MapData, u64>) -> std::io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd; it stays open, and the same, for as long
        // as the AsyncFd owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
        Ok(Reader { ring, lost })
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

    /// Hands every waiting request to `sink`; returns how many were read.
    pub fn drain(&mut self, mut sink: impl FnMut(Request)) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            n += 1;
            match decode(&item) {
                Ok(r) => sink(r),
                // Only a mismatch between this binary and its own BPF object gets here.
                Err(e) => tracing::warn!("dropping a kernel record: {e}"),
            }
        }
        n
    }

    /// Events the kernel dropped because the buffer was full, since load.
    pub fn lost_total(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}
