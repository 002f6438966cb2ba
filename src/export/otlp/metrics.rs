//! Requests → OTLP explicit-bucket histograms, under the semantic-convention names and units,
//! with the Prometheus exporter's bounds; cumulative or delta.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric, AggregationTemporality, Exemplar, Histogram, HistogramDataPoint, Metric,
    ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::config::Temporality;
use super::resource::{kv_int, kv_str, scope};
use crate::collect::RequestKind;
use crate::enrich::EnrichedRequest;
use crate::export::{DURATION_BUCKETS, SIZE_BUCKETS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Instrument {
    ServerDuration,
    ServerRequestSize,
    ServerResponseSize,
    ClientDuration,
    ClientRequestSize,
    ClientResponseSize,
    RpcServerDuration,
    RpcClientDuration,
}

impl Instrument {
    pub fn name(self) -> &'static str {
        match self {
            Instrument::ServerDuration => "http.server.request.duration",
            Instrument::ServerRequestSize => "http.server.request.body.size",
            Instrument::ServerResponseSize => "http.server.response.body.size",
            Instrument::ClientDuration => "http.client.request.duration",
            Instrument::ClientRequestSize => "http.client.request.body.size",
            Instrument::ClientResponseSize => "http.client.response.body.size",
            Instrument::RpcServerDuration => "rpc.server.call.duration",
            Instrument::RpcClientDuration => "rpc.client.call.duration",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Instrument::ServerDuration => "Duration of HTTP server requests.",
            Instrument::ServerRequestSize => "Size of HTTP server request bodies.",
            Instrument::ServerResponseSize => "Size of HTTP server response bodies.",
            Instrument::ClientDuration => "Duration of HTTP client requests.",
            Instrument::ClientRequestSize => "Size of HTTP client request bodies.",
            Instrument::ClientResponseSize => "Size of HTTP client response bodies.",
            Instrument::RpcServerDuration => "Duration of RPC calls served.",
            Instrument::RpcClientDuration => "Duration of RPC calls made.",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Instrument::ServerDuration
            | Instrument::ClientDuration
            | Instrument::RpcServerDuration
            | Instrument::RpcClientDuration => "s",
            _ => "By",
        }
    }

    fn bounds(self) -> &'static [f64] {
        match self {
            Instrument::ServerDuration
            | Instrument::ClientDuration
            | Instrument::RpcServerDuration
            | Instrument::RpcClientDuration => DURATION_BUCKETS,
            _ => SIZE_BUCKETS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Value {
    Str(String),
    Int(i64),
}

/// Attribute set of one series, sorted by key.
type Attrs = Vec<(&'static str, Value)>;

/// A sampled request as an exemplar: trace id, span id, value, Unix ns.
type SampledRequest = ([u8; 16], [u8; 8], f64, u64);

#[derive(Debug, Clone)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
    min: f64,
    max: f64,
    /// Per bucket, the newest sampled request's (trace id, span id, value, Unix ns).
    exemplars: Vec<Option<SampledRequest>>,
}

impl Hist {
    fn new(bounds: &[f64]) -> Self {
        Hist {
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            exemplars: Vec::new(),
        }
    }

    fn observe(&mut self, bounds: &[f64], v: f64) {
        // Upper bounds are inclusive, as in Prometheus' `le`.
        let i = bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn exemplar(&mut self, bounds: &[f64], e: SampledRequest) {
        let i = bounds
            .iter()
            .position(|&b| e.2 <= b)
            .unwrap_or(bounds.len());
        if self.exemplars.is_empty() {
            self.exemplars = vec![None; bounds.len() + 1];
        }
        self.exemplars[i] = Some(e);
    }
}

struct ProcessSeries {
    identity: Arc<crate::enrich::Identity>,
    resource: Arc<Resource>,
    /// Start of the series: first request (cumulative) or last export (delta), Unix ns.
    start_unix_ns: u64,
    last_update: Instant,
    series: BTreeMap<(Instrument, Attrs), Hist>,
}

pub struct MetricStore {
    temporality: Temporality,
    report_target: bool,
    report_peer: bool,
    /// Series of a process that exited go after this long without a request.
    idle_ttl: Duration,
    by_pid: Mutex<HashMap<u32, ProcessSeries>>,
}

fn attrs(r: &EnrichedRequest, report_target: bool, report_peer: bool) -> Attrs {
    let q = &r.request;
    if matches!(q.kind, RequestKind::RpcServer | RequestKind::RpcClient) {
        // The method is `/pkg.Service/Method`; the status, gRPC's code.
        let mut a: Attrs = vec![
            ("rpc.method", Value::Str(q.method.clone())),
            ("rpc.system.name", Value::Str("grpc".into())),
            (
                "rpc.response.status_code",
                Value::Str(crate::export::rpc::status_name(q.status).into()),
            ),
        ];
        if q.kind == RequestKind::RpcClient {
            a.push(("server.address", Value::Str(q.server_address.clone())));
            a.push(("server.port", Value::Int(q.server_port.into())));
        }
        a.sort();
        return a;
    }
    let mut a: Attrs = vec![("http.request.method", Value::Str(q.method.clone()))];
    match q.kind {
        RequestKind::HttpServer => {
            a.push(("http.response.status_code", Value::Int(q.status.into())));
            a.push(("http.route", Value::Str(r.route.clone())));
            if report_peer {
                let peer = q.peer.map(|p| p.to_string()).unwrap_or_default();
                a.push(("client.address", Value::Str(peer)));
            }
        }
        RequestKind::HttpClient => {
            if q.error {
                // semconv's fallback: the kernel sees that a call failed, not why.
                a.push(("error.type", Value::Str("_OTHER".into())));
            } else {
                a.push(("http.response.status_code", Value::Int(q.status.into())));
            }
            a.push(("server.address", Value::Str(q.server_address.clone())));
            a.push(("server.port", Value::Int(q.server_port.into())));
        }
        RequestKind::RpcServer | RequestKind::RpcClient => {}
    }
    if report_target {
        a.push(("url.path", Value::Str(q.path.clone())));
    }
    a.sort();
    a
}

fn to_kv(a: &Attrs) -> Vec<KeyValue> {
    a.iter()
        .map(|(k, v)| match v {
            Value::Str(s) => kv_str(k, s.clone()),
            Value::Int(i) => kv_int(k, *i),
        })
        .collect()
}

impl MetricStore {
    pub fn new(
        temporality: Temporality,
        report_target: bool,
        report_peer: bool,
        idle_ttl: Duration,
    ) -> Self {
        MetricStore {
            temporality,
            report_target,
            report_peer,
            idle_ttl,
            by_pid: Mutex::new(HashMap::new()),
        }
    }

    /// One short lock and a few additions: this runs for every request. `trace`: the ids
    /// of its sampled span, kept as the exemplar of its duration bucket.
    pub fn record(
        &self,
        r: &EnrichedRequest,
        resource: impl FnOnce() -> Arc<Resource>,
        now_unix_ns: u64,
        trace: Option<([u8; 16], [u8; 8])>,
    ) {
        let q = &r.request;
        let a = attrs(r, self.report_target, self.report_peer);
        let instruments: &[Instrument] = match q.kind {
            RequestKind::HttpServer => &[
                Instrument::ServerDuration,
                Instrument::ServerRequestSize,
                Instrument::ServerResponseSize,
            ],
            RequestKind::HttpClient => &[
                Instrument::ClientDuration,
                Instrument::ClientRequestSize,
                Instrument::ClientResponseSize,
            ],
            // Message sizes are not measured for RPC calls.
            RequestKind::RpcServer => &[Instrument::RpcServerDuration],
            RequestKind::RpcClient => &[Instrument::RpcClientDuration],
        };
        let values = [
            q.duration_seconds(),
            q.request_body_bytes as f64,
            q.response_body_bytes as f64,
        ];
        let mut by_pid = self.by_pid.lock().unwrap_or_else(|p| p.into_inner());
        let p = match by_pid.entry(q.pid) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let p = e.into_mut();
                if *p.identity != *r.identity {
                    // Its identity was registered after its first events: name it right.
                    p.identity = r.identity.clone();
                    p.resource = resource();
                }
                p
            }
            std::collections::hash_map::Entry::Vacant(e) => e.insert(ProcessSeries {
                identity: r.identity.clone(),
                resource: resource(),
                start_unix_ns: now_unix_ns,
                last_update: Instant::now(),
                series: BTreeMap::new(),
            }),
        };
        p.last_update = Instant::now();
        for (&instrument, v) in instruments.iter().zip(values) {
            let bounds = instrument.bounds();
            let h = match p.series.entry((instrument, a.clone())) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(Hist::new(bounds)),
            };
            h.observe(bounds, v);
            if let (Some((trace_id, span_id)), true) = (trace, instrument.unit() == "s") {
                h.exemplar(bounds, (trace_id, span_id, v, now_unix_ns));
            }
        }
    }

    /// The export request for now; in delta mode this also starts the next interval.
    /// `None` when there is nothing to send.
    pub fn collect(&self, now_unix_ns: u64) -> Option<ExportMetricsServiceRequest> {
        let temporality = match self.temporality {
            Temporality::Cumulative => AggregationTemporality::Cumulative,
            Temporality::Delta => AggregationTemporality::Delta,
        } as i32;
        let mut by_pid = self.by_pid.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = self.idle_ttl;
        by_pid.retain(|pid, p| {
            p.last_update.elapsed() < ttl || std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        let mut out = Vec::new();
        let mut pids: Vec<u32> = by_pid.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let p = by_pid.get_mut(&pid).expect("key just listed");
            if p.series.is_empty() {
                continue;
            }
            let mut metrics: Vec<Metric> = Vec::new();
            for ((instrument, a), h) in &p.series {
                let point = HistogramDataPoint {
                    attributes: to_kv(a),
                    start_time_unix_nano: p.start_unix_ns,
                    time_unix_nano: now_unix_ns,
                    count: h.count,
                    sum: Some(h.sum),
                    bucket_counts: h.counts.clone(),
                    explicit_bounds: instrument.bounds().to_vec(),
                    min: (h.count > 0).then_some(h.min),
                    max: (h.count > 0).then_some(h.max),
                    exemplars: h
                        .exemplars
                        .iter()
                        .flatten()
                        .map(|(trace_id, span_id, v, at)| Exemplar {
                            time_unix_nano: *at,
                            value: Some(exemplar::Value::AsDouble(*v)),
                            span_id: span_id.to_vec(),
                            trace_id: trace_id.to_vec(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                };
                match metrics.last_mut() {
                    Some(m) if m.name == instrument.name() => {
                        if let Some(metric::Data::Histogram(hist)) = &mut m.data {
                            hist.data_points.push(point);
                        }
                    }
                    _ => metrics.push(Metric {
                        name: instrument.name().into(),
                        description: instrument.description().into(),
                        unit: instrument.unit().into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![point],
                            aggregation_temporality: temporality,
                        })),
                        ..Default::default()
                    }),
                }
            }
            if self.temporality == Temporality::Delta {
                p.series.clear();
                p.start_unix_ns = now_unix_ns;
            }
            out.push(ResourceMetrics {
                resource: Some((*p.resource).clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        (!out.is_empty()).then_some(ExportMetricsServiceRequest {
            resource_metrics: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::Request;
    use crate::enrich::Identity;

    fn request(kind: RequestKind, status: u16, secs: f64, error: bool) -> EnrichedRequest {
        EnrichedRequest {
            request: Request {
                kind,
                pid: 7,
                start_ns: 0,
                end_ns: (secs * 1e9) as u64,
                method: "GET".into(),
                path: "/a".into(),
                path_truncated: false,
                status,
                request_body_bytes: 40,
                response_body_bytes: 5000,
                peer: None,
                http2: false,
                server_address: "api".into(),
                server_port: 81,
                error,
                trace: None,
            },
            identity: Arc::new(Identity::default()),
            route: "/a".into(),
        }
    }

    fn res() -> Arc<Resource> {
        Arc::new(Resource::default())
    }

    fn points(req: &ExportMetricsServiceRequest, name: &str) -> Vec<HistogramDataPoint> {
        req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .filter(|m| m.name == name)
            .flat_map(|m| match &m.data {
                Some(metric::Data::Histogram(h)) => h.data_points.clone(),
                _ => vec![],
            })
            .collect()
    }

    #[test]
    fn cumulative_points_keep_counting_with_prometheus_bounds() {
        let s = MetricStore::new(
            Temporality::Cumulative,
            false,
            false,
            Duration::from_secs(60),
        );
        s.record(
            &request(RequestKind::HttpServer, 200, 0.03, false),
            res,
            10,
            None,
        );
        s.record(
            &request(RequestKind::HttpServer, 200, 0.2, false),
            res,
            11,
            None,
        );
        let r = s.collect(100).unwrap();
        let p = &points(&r, "http.server.request.duration")[0];
        assert_eq!(p.count, 2);
        assert_eq!(p.explicit_bounds, DURATION_BUCKETS);
        assert_eq!(
            p.bucket_counts,
            vec![0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert!((p.sum.unwrap() - 0.23).abs() < 1e-9);
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (10, 100));
        let body = &points(&r, "http.server.response.body.size")[0];
        assert_eq!(body.bucket_counts.last(), Some(&0));
        assert_eq!(body.bucket_counts[9], 2, "5000 bytes: in (4096, 8192]");
        let m = &r.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(
            m.iter().find(|m| m.unit == "s").unwrap().name,
            "http.server.request.duration"
        );
        s.record(
            &request(RequestKind::HttpServer, 200, 0.03, false),
            res,
            12,
            None,
        );
        assert_eq!(
            points(&s.collect(200).unwrap(), "http.server.request.duration")[0].count,
            3
        );
    }

    #[test]
    fn sampled_spans_are_exemplars_of_duration_buckets() {
        let s = MetricStore::new(
            Temporality::Cumulative,
            false,
            false,
            Duration::from_secs(60),
        );
        let r = request(RequestKind::HttpServer, 200, 0.03, false);
        s.record(&r, res, 10, Some(([7; 16], [8; 8])));
        s.record(&r, res, 11, None);
        let req = s.collect(100).unwrap();
        let p = &points(&req, "http.server.request.duration")[0];
        assert_eq!(p.exemplars.len(), 1);
        let e = &p.exemplars[0];
        assert_eq!(
            (e.trace_id.as_slice(), e.span_id.as_slice()),
            (&[7u8; 16][..], &[8u8; 8][..])
        );
        assert_eq!(e.value, Some(exemplar::Value::AsDouble(0.03)));
        assert_eq!(e.time_unix_nano, 10);
        assert!(points(&req, "http.server.response.body.size")[0]
            .exemplars
            .is_empty());
    }

    #[test]
    fn a_late_identity_renames_the_resource() {
        let s = MetricStore::new(
            Temporality::Cumulative,
            false,
            false,
            Duration::from_secs(60),
        );
        let named = |n: &str| {
            let n = n.to_string();
            move || {
                Arc::new(Resource {
                    attributes: vec![kv_str("service.name", n)],
                    ..Default::default()
                })
            }
        };
        let mut r = request(RequestKind::HttpServer, 200, 0.01, false);
        s.record(&r, named("pid-7"), 1, None);
        r.identity = Arc::new(Identity {
            service_name: "shop".into(),
            ..Identity::default()
        });
        s.record(&r, named("shop"), 2, None);
        let req = s.collect(3).unwrap();
        let res = req.resource_metrics[0].resource.as_ref().unwrap();
        assert_eq!(res.attributes[0], kv_str("service.name", "shop"));
        let p = &points(&req, "http.server.request.duration")[0];
        assert_eq!(p.count, 2, "the series carry on");
    }

    #[test]
    fn delta_points_restart_each_interval() {
        let s = MetricStore::new(Temporality::Delta, false, false, Duration::from_secs(60));
        s.record(
            &request(RequestKind::HttpClient, 503, 0.01, false),
            res,
            10,
            None,
        );
        s.record(
            &request(RequestKind::HttpClient, 0, 0.01, true),
            res,
            10,
            None,
        );
        let r = s.collect(100).unwrap();
        let p = points(&r, "http.client.request.duration");
        assert_eq!(p.len(), 2, "failed call is its own series");
        let failed = p
            .iter()
            .find(|p| p.attributes.iter().any(|kv| kv.key == "error.type"))
            .unwrap();
        assert!(!failed
            .attributes
            .iter()
            .any(|kv| kv.key == "http.response.status_code"));
        assert!(s.collect(150).is_none(), "nothing new: nothing sent");
        s.record(
            &request(RequestKind::HttpClient, 503, 0.01, false),
            res,
            160,
            None,
        );
        let p = &points(&s.collect(200).unwrap(), "http.client.request.duration")[0];
        assert_eq!((p.count, p.start_time_unix_nano), (1, 100));
    }
}
