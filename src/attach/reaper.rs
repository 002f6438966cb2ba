//! Detaching a uprobe waits for a kernel grace period (measured here: ~130 ms per link, so
//! 2.5 s for a process with 19 probes, serially). Links closed at the same time share one
//! grace period, so detached links are handed to this thread and dropped in parallel, and
//! discovery never waits for them.
//!
//! Closing also holds up uprobe *attaches* made meanwhile (one attach was measured waiting
//! 256 ms), and a container's probes must be attached within runc's few tens of
//! milliseconds before its exec. So links are closed lazily, when the next launch is
//! likely furthest away: right after an attach, once no created container still waits for
//! one ("calm"); or once attaching has been quiet for [`QUIET`] and nothing was handed over
//! for [`SETTLE`]; or when many are waiting, or when the oldest has waited [`MAX_WAIT`]. A
//! closed process's PIDs leave the kernel filter at once; only the links wait.
//!
//! Why not just "quiet for a second": under churn a container's links arrive when it is
//! removed, often more than a second after the last attach and just before the next
//! container is created; closing them then made most containers (1 046 of 1 274 in a soak)
//! attach only after their exec.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::programs::uprobe::UProbeLink;

/// How many links are closed at once (one short-lived thread each).
const PARALLEL: usize = 64;
/// Links closed per decision: the kernel closes them one after another (~80 ms each here,
/// measured), and attaches wait for the whole batch, so a backlog is closed in slices with
/// room for attaches between them.
const BATCH: usize = 16;
/// Attaching quiet for this long: close what waits.
const QUIET: Duration = Duration::from_secs(1);
/// Close anyway once this many wait...
const MAX_PENDING: usize = 256;
/// ...or once the oldest has waited this long.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Links just handed over wait this long for a calm moment before "quiet" may close them.
const SETTLE: Duration = Duration::from_secs(1);
/// A created container not attached within this long is no longer expected.
const LAUNCH_EXPECTED_WITHIN: Duration = Duration::from_secs(10);

/// When sonde last attached, or expects to attach soon (a container was created), as
/// milliseconds since the reaper started. Shared with whoever knows.
#[derive(Clone)]
pub(crate) struct Activity {
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
    launches: Arc<Mutex<Launches>>,
    /// When an attach last completed with no container waiting for one (ms; 0: never).
    calm_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            launches: Arc::new(Mutex::new(Launches::default())),
            calm_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A container that may be selected was created: its attach is coming.
    pub(crate) fn expect_launch(&self, container_id: &str) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        let mut l = self.launches.lock().unwrap_or_else(|p| p.into_inner());
        l.prune(now);
        // Docker's answer can come after runc's init was already attached.
        if !l.attached.contains_key(container_id) {
            l.expected.insert(container_id.to_string(), now);
        }
    }

    /// An attach ended (done or failed), of a container's process or not. With no created
    /// container left waiting, the next launch is as far away as it gets: a good moment to
    /// close links.
    pub(crate) fn attached(&self, container_id: Option<&str>) {
        let now = self.now_ms();
        let mut l = self.launches.lock().unwrap_or_else(|p| p.into_inner());
        l.prune(now);
        if let Some(id) = container_id {
            l.expected.remove(id);
            l.attached.insert(id.to_string(), now);
        }
        if l.expected.is_empty() {
            self.calm_ms.store(now.max(1), Ordering::Relaxed);
        }
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    /// Calm since `since_ms`, and nothing created or attached after that calm began.
    fn calm_since(&self, since_ms: u64) -> bool {
        let calm = self.calm_ms.load(Ordering::Relaxed);
        calm != 0 && calm >= since_ms && calm >= self.last_ms.load(Ordering::Relaxed)
    }
}

/// Containers between their create and their attach, by id, and those attached lately (ms).
#[derive(Default)]
struct Launches {
    expected: HashMap<String, u64>,
    attached: HashMap<String, u64>,
}

impl Launches {
    /// A container not attached within [`LAUNCH_EXPECTED_WITHIN`] is not waited for (not
    /// a Go program, failed to start, or running before sonde).
    fn prune(&mut self, now: u64) {
        let horizon = now.saturating_sub(LAUNCH_EXPECTED_WITHIN.as_millis() as u64);
        self.expected.retain(|_, &mut t| t >= horizon);
        self.attached.retain(|_, &mut t| t >= horizon);
    }
}

/// Links waiting to be closed, as the decision sees them.
struct Waiting {
    count: usize,
    oldest: Duration,
    newest: Duration,
}

/// Whether to close the waiting links now.
fn due(w: &Waiting, quiet: Duration, calm: bool) -> bool {
    w.count > 0
        && (calm
            || (quiet >= QUIET && w.newest >= SETTLE)
            || w.count >= MAX_PENDING
            || w.oldest >= MAX_WAIT)
}

pub(super) struct Reaper {
    tx: Option<mpsc::Sender<Vec<UProbeLink>>>,
    thread: Option<JoinHandle<()>>,
    /// Links handed over and not closed yet.
    pending: Arc<AtomicUsize>,
    activity: Activity,
}

impl Reaper {
    /// `activity`: shared by every reaper, since any close holds up any attach.
    pub(super) fn new(activity: Activity) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Vec<UProbeLink>>();
        let pending = Arc::new(AtomicUsize::new(0));
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

    pub(super) fn reap(&self, links: Vec<UProbeLink>) {
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
    pub(super) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub(super) fn activity(&self) -> &Activity {
        &self.activity
    }
}

fn run(rx: mpsc::Receiver<Vec<UProbeLink>>, counter: Arc<AtomicUsize>, activity: Activity) {
    let mut waiting: Vec<UProbeLink> = Vec::new();
    let mut oldest = Instant::now();
    // When the latest links came, on the activity's clock (calm is compared with it).
    let mut newest_ms = 0;
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
                newest_ms = activity.now_ms();
                waiting.extend(links);
                false
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            // sonde is stopping: close everything now.
            Err(mpsc::RecvTimeoutError::Disconnected) => true,
        };
        let w = Waiting {
            count: waiting.len(),
            oldest: oldest.elapsed(),
            newest: Duration::from_millis(activity.now_ms().saturating_sub(newest_ms)),
        };
        let calm = activity.calm_since(newest_ms);
        if !waiting.is_empty() && (due(&w, activity.quiet_for(), calm) || closing) {
            let batch: Vec<UProbeLink> = if closing {
                std::mem::take(&mut waiting)
            } else {
                waiting.drain(..waiting.len().min(BATCH)).collect()
            };
            let n = batch.len();
            let t = Instant::now();
            drop_in_parallel(batch);
            tracing::debug!(
                "closed {n} links in {:?} (calm {calm}, oldest waited {:?})",
                t.elapsed(),
                w.oldest
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(count: usize, oldest_ms: u64, newest_ms: u64) -> Waiting {
        Waiting {
            count,
            oldest: Duration::from_millis(oldest_ms),
            newest: Duration::from_millis(newest_ms),
        }
    }

    #[test]
    fn links_just_removed_wait_for_the_next_attach_not_just_for_quiet() {
        let long_quiet = Duration::from_secs(5);
        // A container removed long after the last attach: its next one may be seconds away
        // or about to start; closing now would collide with that launch.
        assert!(!due(&waiting(19, 50, 50), long_quiet, false));
        // The next container attached, and none other waits: close now.
        assert!(due(&waiting(19, 500, 500), Duration::ZERO, true));
        // No container came: quiet and settled.
        assert!(due(&waiting(19, 1000, 1000), long_quiet, false));
        assert!(!due(
            &waiting(19, 1000, 1000),
            Duration::from_millis(300),
            false
        ));
        // Many, or old: close whatever the activity.
        assert!(due(&waiting(MAX_PENDING, 10, 10), Duration::ZERO, false));
        assert!(due(&waiting(3, 60_000, 10), Duration::ZERO, false));
        assert!(!due(&waiting(0, 0, 0), long_quiet, true));
    }

    #[test]
    fn calm_comes_once_every_created_container_was_attached() {
        let a = Activity::new();
        a.expect_launch("c1");
        a.expect_launch("c2");
        a.attached(Some("c1"));
        assert!(!a.calm_since(0), "c2 still waits for its attach");
        // A host process attached meanwhile changes nothing.
        a.attached(None);
        assert!(!a.calm_since(0));
        a.attached(Some("c2"));
        assert!(a.calm_since(0));
        // Links handed over after that calm wait for the next one.
        std::thread::sleep(Duration::from_millis(5));
        assert!(!a.calm_since(a.now_ms()));
        // A container created after the calm ends it.
        a.expect_launch("c3");
        assert!(!a.calm_since(0));
    }

    #[test]
    fn a_create_heard_after_its_attach_is_not_waited_for() {
        let a = Activity::new();
        a.attached(Some("c1"));
        a.expect_launch("c1");
        a.attached(None);
        assert!(a.calm_since(0));
    }

    #[test]
    fn a_created_container_never_attached_stops_being_expected() {
        let Some(epoch) =
            Instant::now().checked_sub(LAUNCH_EXPECTED_WITHIN + Duration::from_secs(1))
        else {
            return;
        };
        let a = Activity {
            epoch,
            ..Activity::new()
        };
        // Created at the epoch, 11 s ago, and never attached.
        a.launches.lock().unwrap().expected.insert("c1".into(), 0);
        a.attached(None);
        assert!(a.calm_since(0), "c1, 11 s old, is no longer waited for");
    }
}
