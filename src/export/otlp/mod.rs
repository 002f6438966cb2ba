//! OTLP export: the Prometheus set of metrics under OTel names, and one span per request,
//! pushed over http/protobuf or gRPC to any OTLP endpoint.
//!
//! Collection only ever takes a short lock here: metrics are aggregated in memory and
//! snapshotted on a timer, spans go into a bounded buffer; the network side runs in its
//! own tasks with bounded queues, so a slow or dead endpoint costs data, never memory or
//! collection time.

pub(crate) mod metrics;
pub(crate) mod queue;
pub(crate) mod resource;
pub(crate) mod traces;
pub(crate) mod transport;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

// The settings live with the rest of the configuration (which must not import export/);
// `config` keeps naming them here for the submodules.
pub(crate) use crate::config::otlp as config;
pub(crate) use config::Signal;
use queue::{BatchQueue, Retry};
use traces::{IdGenerator, SpanIds, WallClock};
use transport::{Payload, Transport};

use crate::enrich::EnrichedRequest;
use crate::export::Exporter;
use crate::internal_events::{emit, OtlpDropped};

#[derive(Debug, thiserror::Error)]
pub(crate) enum OtlpError {
    #[error("OTLP {signal} exporter for {endpoint}: {source}")]
    Transport {
        signal: &'static str,
        endpoint: String,
        source: transport::SendError,
    },
}

/// Spans waiting for the next batch; beyond this the oldest are dropped (about 1 KiB each).
const SPAN_BUFFER: usize = 8192;
/// Spans per export request.
const SPAN_BATCH: usize = 512;
/// Spans are sent at least this often.
const SPAN_FLUSH: Duration = Duration::from_secs(1);
/// Export requests waiting while the endpoint is down.
const TRACE_BATCHES_QUEUED: usize = 4;
const DELTA_BATCHES_QUEUED: usize = 8;

fn retry(superseded_by_newer: bool) -> Retry {
    Retry {
        first: Duration::from_secs(1),
        max: Duration::from_secs(10),
        attempts: 6,
        superseded_by_newer,
    }
}

type ResourceCache = HashMap<u32, (Arc<crate::enrich::Identity>, Arc<Resource>)>;

struct SpanBuffer {
    spans: Mutex<VecDeque<(Arc<Resource>, Span)>>,
    full: tokio::sync::Notify,
}

pub(crate) struct Otlp {
    /// OTLP metrics are on: read from the exporter's store.
    metrics: bool,
    temporality: config::Temporality,
    spans: Option<Arc<SpanBuffer>>,
    sampler_ratio: f64,
    clock: WallClock,
    ids: IdGenerator,
    host: String,
    /// By PID, with the identity it was made for: an event that raced the identity's
    /// registration is not allowed to name the process for good.
    resources: Mutex<ResourceCache>,
    exporter: Arc<Exporter>,
}

impl Otlp {
    /// Starts the export tasks on the current tokio runtime.
    pub(crate) fn start(
        config: &crate::config::Config,
        exporter: Arc<Exporter>,
    ) -> Result<Arc<Otlp>, OtlpError> {
        let c = &config.otlp;
        let transport = |s: &config::SignalConfig| {
            Transport::new(s).map_err(|source| OtlpError::Transport {
                signal: s.signal.name(),
                endpoint: s.shown_endpoint(),
                source,
            })
        };
        let otlp = Arc::new(Otlp {
            metrics: c.metrics.is_some(),
            temporality: c.temporality,
            spans: c.traces.as_ref().map(|_| {
                Arc::new(SpanBuffer {
                    spans: Mutex::new(VecDeque::new()),
                    full: tokio::sync::Notify::new(),
                })
            }),
            sampler_ratio: c.sampler_ratio,
            clock: WallClock::measure(),
            ids: IdGenerator::new(),
            host: resource::host_name(),
            resources: Mutex::new(HashMap::new()),
            exporter: exporter.clone(),
        });
        if let Some(s) = &c.metrics {
            let t = transport(s)?;
            let cumulative = c.temporality == config::Temporality::Cumulative;
            // A cumulative snapshot holds everything older ones did: keep only the newest.
            let q = BatchQueue::new(if cumulative { 1 } else { DELTA_BATCHES_QUEUED });
            tracing::info!(
                "exporting OTLP metrics to {} ({}, every {:?}, {})",
                s.shown_endpoint(),
                s.protocol,
                c.metric_interval,
                if cumulative { "cumulative" } else { "delta" }
            );
            tokio::spawn(queue::run_sender(
                Signal::Metrics,
                s.shown_endpoint(),
                t,
                q.clone(),
                retry(cumulative),
            ));
            tokio::spawn(metrics_ticker(otlp.clone(), q, c.metric_interval));
        }
        if let (Some(s), Some(buf)) = (&c.traces, &otlp.spans) {
            let t = transport(s)?;
            let q = BatchQueue::new(TRACE_BATCHES_QUEUED);
            tracing::info!(
                "exporting OTLP traces to {} ({}, sampler ratio {})",
                s.shown_endpoint(),
                s.protocol,
                c.sampler_ratio
            );
            tokio::spawn(queue::run_sender(
                Signal::Traces,
                s.shown_endpoint(),
                t,
                q.clone(),
                retry(false),
            ));
            tokio::spawn(span_batcher(buf.clone(), q));
        }
        Ok(otlp)
    }

    fn resource(&self, pid: u32, identity: &Arc<crate::enrich::Identity>) -> Arc<Resource> {
        let mut cache = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, res)) = cache.get(&pid) {
            if Arc::ptr_eq(known, identity) || **known == **identity {
                return res.clone();
            }
        }
        // A PID is reused only after its process exited; forget the oldest resources first
        // so the cache stays bounded on hosts with many short-lived processes.
        if cache.len() >= 4096 {
            cache.retain(|pid, _| crate::discover::proc::exists(*pid));
        }
        let container_id = identity
            .container_name
            .as_ref()
            .and_then(|_| crate::discover::cgroup::container_id_of(pid));
        let res = Arc::new(resource::resource(
            identity,
            pid,
            &self.host,
            container_id.as_deref(),
        ));
        cache.insert(pid, (identity.clone(), res.clone()));
        res
    }

    /// Called for every request, on the collection path: never blocks on the network.
    pub(crate) fn record(&self, r: &EnrichedRequest) {
        // The span's ids first: a sampled span is the exemplar of its request's bucket, in
        // OTLP and in the Prometheus exposition (the request is already counted there).
        let ids = self
            .spans
            .as_ref()
            .map(|_| match r.request.trace {
                Some(t) => SpanIds {
                    trace_id: t.trace_id,
                    span_id: t.span_id,
                    parent_span_id: t.parent_span_id,
                    remote_parent: t.remote_parent,
                },
                None => self.ids.root(),
            })
            .filter(|ids| traces::sampled(&ids.trace_id, self.sampler_ratio));
        if self.metrics {
            // Named while the process runs: its container id is read from its cgroup.
            self.resource(r.request.pid, &r.identity);
        }
        if let (Some(buf), Some(ids)) = (&self.spans, ids) {
            self.exporter.exemplar(r, ids.trace_id, ids.span_id);
            self.push_span(buf, r, &ids);
        }
    }

    fn push_span(&self, buf: &SpanBuffer, r: &EnrichedRequest, ids: &SpanIds) {
        let span = traces::span(r, ids, &self.clock);
        let res = self.resource(r.request.pid, &r.identity);
        let mut spans = buf.spans.lock().unwrap_or_else(|p| p.into_inner());
        if spans.len() >= SPAN_BUFFER {
            spans.pop_front();
            emit(OtlpDropped {
                signal: Signal::Traces.name(),
                n: 1,
            });
        }
        spans.push_back((res, span));
        if spans.len() >= SPAN_BATCH {
            buf.full.notify_one();
        }
    }
}

async fn metrics_ticker(otlp: Arc<Otlp>, queue: Arc<BatchQueue>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let req = metrics::collect(
            otlp.exporter.store(),
            otlp.temporality,
            WallClock::now_unix_ns(),
            crate::export::store::pid_alive,
            |pid, identity| otlp.resource(pid, identity),
        );
        if let Some(req) = req {
            let dropped = queue.push(Payload::Metrics(req));
            emit(OtlpDropped {
                signal: Signal::Metrics.name(),
                n: dropped as u64,
            });
        }
    }
}

async fn span_batcher(buf: Arc<SpanBuffer>, queue: Arc<BatchQueue>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SPAN_FLUSH) => {}
            _ = buf.full.notified() => {}
        }
        loop {
            let batch: Vec<(Arc<Resource>, Span)> = {
                let mut spans = buf.spans.lock().unwrap_or_else(|p| p.into_inner());
                let n = spans.len().min(SPAN_BATCH);
                spans.drain(..n).collect()
            };
            if batch.is_empty() {
                break;
            }
            let more = batch.len() == SPAN_BATCH;
            let dropped = queue.push(Payload::Traces(group_spans(batch)));
            emit(OtlpDropped {
                signal: Signal::Traces.name(),
                n: (dropped * SPAN_BATCH) as u64,
            });
            if !more {
                break;
            }
        }
    }
}

/// One `ResourceSpans` per process, in the order spans arrived.
fn group_spans(batch: Vec<(Arc<Resource>, Span)>) -> ExportTraceServiceRequest {
    let mut out: Vec<(Arc<Resource>, Vec<Span>)> = Vec::new();
    for (res, span) in batch {
        match out.iter_mut().find(|(r, _)| Arc::ptr_eq(r, &res)) {
            Some((_, spans)) => spans.push(span),
            None => out.push((res, vec![span])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: out
            .into_iter()
            .map(|(res, spans)| ResourceSpans {
                resource: Some((*res).clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(resource::scope()),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}
