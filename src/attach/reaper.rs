//! Detaching a uprobe waits for a kernel grace period (measured here: ~130 ms per link, so
//! 2.5 s for a process with 19 probes, serially). Links closed at the same time share one
//! grace period, so detached links are handed to this thread and dropped in parallel, and
//! discovery never waits for them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use aya::programs::uprobe::UProbeLink;

/// How many links are closed at once (one short-lived thread each).
const PARALLEL: usize = 64;

pub struct Reaper {
    tx: Option<mpsc::Sender<Vec<UProbeLink>>>,
    thread: Option<JoinHandle<()>>,
    /// Links handed over and not closed yet.
    pending: Arc<AtomicUsize>,
}

impl Reaper {
    pub fn new() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Vec<UProbeLink>>();
        let pending = Arc::new(AtomicUsize::new(0));
        let counter = pending.clone();
        let thread = std::thread::Builder::new()
            .name("sonde-detach".into())
            .spawn(move || {
                while let Ok(mut links) = rx.recv() {
                    // Whatever else is already waiting goes in the same wave.
                    while let Ok(more) = rx.try_recv() {
                        links.extend(more);
                    }
                    let n = links.len();
                    drop_in_parallel(links);
                    counter.fetch_sub(n, Ordering::Relaxed);
                }
            })?;
        Ok(Reaper {
            tx: Some(tx),
            thread: Some(thread),
            pending,
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
