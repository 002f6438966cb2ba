//! Drains a kernel ring buffer: one reader for every ring of requests (the Go probes' events,
//! the syscall tracer's records), over a decode step that turns a ring's records into
//! requests. The kernel never wakes us per event (that would cost the application's thread
//! ~17 µs each here); we drain on a short timer, or earlier when the kernel signals the
//! buffer is filling up.

use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::event::decode;
use super::Request;

/// How often the buffer is drained when the kernel has not asked for it.
pub(crate) const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// What a reader does with its ring's records.
pub(crate) trait Decode {
    /// Turns one record into the requests it finishes, each handed to `sink`.
    fn record(&mut self, bytes: &[u8], sink: &mut impl FnMut(Request));

    /// After each drain.
    fn drained(&mut self) {}
}

/// A ring buffer, the per-CPU counter of what the kernel could not put in it, and the decode
/// step of its records.
pub(crate) struct RingReader<D> {
    ring: AsyncFd<RingBuf<MapData>>,
    lost: PerCpuArray<MapData, u64>,
    decode: D,
}

impl<D: Decode + Default> RingReader<D> {
    pub(crate) fn new(
        ring: RingBuf<MapData>,
        lost: PerCpuArray<MapData, u64>,
    ) -> std::io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd; it stays open, and the same, for as long
        // as the AsyncFd owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
        Ok(RingReader {
            ring,
            lost,
            decode: D::default(),
        })
    }
}

impl<D: Decode> RingReader<D> {
    /// Waits until the kernel wakes us or the drain interval passes.
    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            guard = self.ring.readable_mut() => {
                if let Ok(mut g) = guard { g.clear_ready(); }
            }
            _ = tokio::time::sleep(DRAIN_INTERVAL) => {}
        }
    }

    /// Decodes every waiting record; finished requests go to `sink`. Returns records read.
    pub(crate) fn drain(&mut self, mut sink: impl FnMut(Request)) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(item) = ring.next() {
            n += 1;
            self.decode.record(&item, &mut sink);
        }
        self.decode.drained();
        n
    }

    /// Records the kernel dropped because the buffer was full, since load.
    pub(crate) fn lost_total(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

/// The Go probes' events: one record, one request.
#[derive(Default)]
pub(crate) struct GoEvents;

impl Decode for GoEvents {
    fn record(&mut self, bytes: &[u8], sink: &mut impl FnMut(Request)) {
        match decode(bytes) {
            Ok(r) => sink(r),
            // Only a mismatch between this binary and its own BPF object gets here.
            Err(e) => tracing::warn!("dropping a kernel record: {e}"),
        }
    }
}

/// The Go probes' event ring.
pub(crate) type Reader = RingReader<GoEvents>;
