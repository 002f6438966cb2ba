//! The bounded hand-off between collection and the network: producers never wait, the
//! sender retries with back-off, and what does not fit is dropped and counted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::config::Signal;
use super::transport::{Payload, SendError, Transport};
use crate::internal_events::{
    emit, OtlpDropped, OtlpExportFailed, OtlpExportRecovered, OtlpFailure,
};

/// Export requests waiting to be sent, oldest first. Full → the oldest is dropped.
pub(crate) struct BatchQueue {
    items: Mutex<VecDeque<Payload>>,
    capacity: usize,
    ready: Notify,
}

impl BatchQueue {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(BatchQueue {
            items: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
            ready: Notify::new(),
        })
    }

    /// Never blocks; returns how many older batches were dropped to make room.
    pub(crate) fn push(&self, p: Payload) -> usize {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = 0;
        while items.len() >= self.capacity {
            items.pop_front();
            dropped += 1;
        }
        items.push_back(p);
        drop(items);
        self.ready.notify_one();
        dropped
    }

    fn pop(&self) -> Option<Payload> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    fn is_empty(&self) -> bool {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    async fn next(&self) -> Payload {
        loop {
            if let Some(p) = self.pop() {
                return p;
            }
            self.ready.notified().await;
        }
    }
}

/// How the sender retries a failing batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub first: Duration,
    pub max: Duration,
    pub attempts: u32,
    /// A newer batch replaces this one (cumulative metrics): stop retrying when one waits.
    pub superseded_by_newer: bool,
}

impl Retry {
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self.first.saturating_mul(1 << attempt.min(16));
        let base = exp.min(self.max);
        // ±20 % jitter, so many agents do not retry in step.
        let jitter = (super::traces::WallClock::now_unix_ns() % 400) as f64 / 1000.0 + 0.8;
        base.mul_f64(jitter)
    }
}

/// Sends every batch of `queue` to `transport`, for ever.
pub(crate) async fn run_sender(
    signal: Signal,
    shown_endpoint: String,
    transport: Transport,
    queue: Arc<BatchQueue>,
    retry: Retry,
) {
    let (name, endpoint) = (signal.name(), shown_endpoint.as_str());
    let failed = |error: &dyn std::fmt::Display, kind| {
        emit(OtlpExportFailed {
            signal: name,
            endpoint,
            error,
            kind,
        })
    };
    let dropped = || emit(OtlpDropped { signal: name, n: 1 });
    // Whether the last attempt failed: the first success after says so (and the next failure
    // is logged at once). Repeats within an outage are rate-limited by the events.
    let mut failing = false;
    loop {
        let batch = queue.next().await;
        let mut attempt = 0;
        loop {
            match transport.send(&batch).await {
                Ok(()) => {
                    if failing {
                        emit(OtlpExportRecovered {
                            signal: name,
                            endpoint,
                        });
                    }
                    failing = false;
                    break;
                }
                Err(SendError::Unauthorized(why)) => {
                    failed(&why, OtlpFailure::Refused);
                    dropped();
                    failing = true;
                    break;
                }
                Err(SendError::Retryable(why)) => {
                    failed(&why, OtlpFailure::Retrying);
                    failing = true;
                    attempt += 1;
                    if attempt >= retry.attempts || (retry.superseded_by_newer && !queue.is_empty())
                    {
                        dropped();
                        break;
                    }
                    tokio::time::sleep(retry.delay(attempt - 1)).await;
                }
                Err(e @ (SendError::Permanent(_) | SendError::Setup(_))) => {
                    failed(&e, OtlpFailure::Rejected);
                    dropped();
                    failing = true;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let q = BatchQueue::new(2);
        let p = || Payload::Traces(ExportTraceServiceRequest::default());
        assert_eq!(q.push(p()) + q.push(p()), 0);
        assert_eq!(q.push(p()), 1);
        assert_eq!(q.items.lock().unwrap().len(), 2);
    }

    #[test]
    fn back_off_grows_to_its_cap() {
        let r = Retry {
            first: Duration::from_secs(1),
            max: Duration::from_secs(8),
            attempts: 5,
            superseded_by_newer: false,
        };
        assert!(r.delay(0) <= Duration::from_millis(1200));
        assert!(r.delay(2) >= Duration::from_millis(3200));
        assert!(r.delay(10) <= Duration::from_millis(9600));
    }
}
