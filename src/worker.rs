//! A named thread that runs until its owner goes: told to stop and joined when dropped. The
//! discovery loop and the watches that poll a descriptor or drain a ring on their own thread
//! (container launches, executions, Podman's event log) are each one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Whether the thread's owner asked it to stop.
pub(crate) struct Stop(Arc<AtomicBool>);

impl Stop {
    pub(crate) fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The thread, stopped and joined on drop.
pub(crate) struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts `run` on a thread named `name`; `run` returns once [`Stop::requested`].
    pub(crate) fn spawn(
        name: &str,
        run: impl FnOnce(Stop) + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Stop(stop.clone());
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(flag))?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_worker_stops_and_joins_its_thread() {
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = Worker::spawn("sonde-test", move |stop| {
            while !stop.requested() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            tx.send(()).unwrap();
        })
        .unwrap();
        drop(worker);
        assert!(
            rx.try_recv().is_ok(),
            "the thread ended before drop returned"
        );
    }
}
