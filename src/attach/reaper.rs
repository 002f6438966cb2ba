//! Detaching a uprobe waits for a kernel grace period (measured here: ~130 ms per link, so
//! 2.5 s for a process with 19 probes, serially). Links closed at the same time share one
//! grace period, so detached links are handed to this thread and dropped in parallel, and
//! discovery never waits for them.
//!
//! Closing also holds up uprobe *attaches* made meanwhile (one attach was measured waiting
//! 256 ms), and a container's probes must be attached within runc's few tens of
//! milliseconds before its exec. So links are closed lazily: once attaching has been quiet
//! for [`QUIET`], or when many are waiting, or when the oldest has waited [`MAX_WAIT`]. A
//! closed process's PIDs leave the kernel filter at once; only the links wait.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::programs::uprobe::UProbeLink;

/// How many links are closed at once (one short-lived thread each).
const PARALLEL: usize = 64;
/// Attaching quiet for this long: close what waits.
const QUIET: Duration = Duration::from_secs(1);
/// Close anyway once this many wait...
const MAX_PENDING: usize = 256;
/// ...or once the oldest has waited this long.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// When sonde last attached, or expects to attach soon (a container was created), as
/// milliseconds since the reaper started. Shared with whoever knows.
#[derive(Clone)]
pub struct Activity {
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    pub fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

pub struct Reaper {
    tx: Option<mpsc::Sender<Vec<UProbeLink>>>,
    thread: Option<JoinHandle<()>>,
    /// Links handed over and not closed yet.
    pending: Arc<AtomicUsize>,
    activity: Activity,
}

impl Reaper {
    pub fn new() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Vec<UProbeLink>>();
        let pending = Arc::new(AtomicUsize::new(0));
        let activity = Activity {
            epoch: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        };
        let counter = pending.clone();
        let quiet = activity.clone();
        let thread = std::thread::Builder::new()
            .name("sonde-detach".into())
            .spawn(move || run(rx, counter, quiet))?;
        Ok(Reaper {
            tx: Some(tx),
            thread: Some(thread),
            pending,
            activity,
        })
    }

    pub fn reap(&self, links: Vec<UProbeLink>) {
        if links.is_empty() {
            return;
        }
        let n = links.len();
        self.pending.fetch_add(n, Ordering::Relaxed);
        if let Some(tx) = &self.tx {
            if let Err(mpsc::SendError(links)) = tx.send(links) {
                drop_in_parallel(links);
                self.pending.fetch_sub(n, Ordering::Relaxed);
            }
        }
    }

    /// Links handed over that are still being closed.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }
}

fn run(rx: mpsc::Receiver<Vec<UProbeLink>>, counter: Arc<AtomicUsize>, activity: Activity) {
    let mut waiting: Vec<UProbeLink> = Vec::new();
    let mut oldest = Instant::now();
    loop {
        let got = if waiting.is_empty() {
            rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(Duration::from_millis(100))
        };
        let closing = match got {
            Ok(links) => {
                if waiting.is_empty() {
                    oldest = Instant::now();
                }
                waiting.extend(links);
                false
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            // sonde is stopping: close everything now.
            Err(mpsc::RecvTimeoutError::Disconnected) => true,
        };
        let due = activity.quiet_for() >= QUIET
            || waiting.len() >= MAX_PENDING
            || oldest.elapsed() >= MAX_WAIT;
        if !waiting.is_empty() && (due || closing) {
            let n = waiting.len();
            drop_in_parallel(std::mem::take(&mut waiting));
            counter.fetch_sub(n, Ordering::Relaxed);
            // The closing threads' stacks and the links' buffers: hand the pages back.
            // SAFETY: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
        if closing {
            return;
        }
    }
}

impl Drop for Reaper {
    /// Waits until every handed-over link is closed.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn drop_in_parallel(mut links: Vec<UProbeLink>) {
    while !links.is_empty() {
        let wave: Vec<UProbeLink> = links.drain(..links.len().min(PARALLEL)).collect();
        std::thread::scope(|s| {
            for link in wave {
                let spawned = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn_scoped(s, move || drop(link));
                // No thread to be had: close it here instead (slower, never lost).
                if let Err(e) = spawned {
                    tracing::debug!("closing a link inline: {e}");
                }
            }
        });
    }
}
