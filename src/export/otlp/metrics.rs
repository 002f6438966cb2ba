//! The request store → OTLP explicit-bucket histograms, under the semantic-convention names
//! and units, with the Prometheus exporter's bounds; cumulative or delta. The store counts;
//! this only encodes (and, in delta mode, remembers what it already sent).

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    exemplar, metric, AggregationTemporality, Exemplar, Histogram, HistogramDataPoint, Metric,
    ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::config::Temporality;
use super::resource::{kv_int, kv_str, scope};
use crate::enrich::Identity;
use crate::export::names::{otel_attrs, Attrs, Instrument, Value, INSTRUMENTS};
use crate::export::store::{self, Mark, Store};

fn to_kv(a: &Attrs) -> Vec<KeyValue> {
    a.iter()
        .map(|(k, v)| match v {
            Value::Str(s) => kv_str(k, s.clone()),
            Value::Int(i) => kv_int(k, *i),
        })
        .collect()
}

/// The point of one histogram; in delta mode only what came since the last export, `None`
/// when nothing did.
fn point(
    h: &store::Histogram,
    instrument: Instrument,
    attrs: &Attrs,
    start_unix_ns: u64,
    now_unix_ns: u64,
    delta: bool,
) -> Option<HistogramDataPoint> {
    let (counts, sum, count) = match (&h.mark, delta) {
        (Some(m), true) => (
            h.counts.iter().zip(&m.counts).map(|(a, b)| a - b).collect(),
            h.sum - m.sum,
            h.count - m.count,
        ),
        _ => (h.counts.clone(), h.sum, h.count),
    };
    if count == 0 {
        return None;
    }
    Some(HistogramDataPoint {
        attributes: to_kv(attrs),
        start_time_unix_nano: start_unix_ns,
        time_unix_nano: now_unix_ns,
        count,
        sum: Some(sum),
        bucket_counts: counts,
        explicit_bounds: instrument.bounds().to_vec(),
        min: Some(h.min),
        max: Some(h.max),
        exemplars: h
            .exemplars
            .iter()
            .flatten()
            // A delta point carries the exemplars of its interval only.
            .filter(|e| !delta || h.mark.is_none() || e.unix_ns >= start_unix_ns)
            .map(|e| Exemplar {
                time_unix_nano: e.unix_ns,
                value: Some(exemplar::Value::AsDouble(e.value)),
                span_id: e.span_id.to_vec(),
                trace_id: e.trace_id.to_vec(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

/// Adds `b` to `a`, two points of the same attributes and bounds.
fn add(a: &mut HistogramDataPoint, b: &HistogramDataPoint) {
    for (x, y) in a.bucket_counts.iter_mut().zip(&b.bucket_counts) {
        *x += y;
    }
    a.count += b.count;
    a.sum = Some(a.sum.unwrap_or(0.0) + b.sum.unwrap_or(0.0));
    a.min = a.min.zip(b.min).map(|(x, y)| x.min(y));
    a.max = a.max.zip(b.max).map(|(x, y)| x.max(y));
    a.exemplars.extend(b.exemplars.iter().cloned());
}

/// The export request for now, one resource per process (`resource` names it); in delta
/// mode this also starts the next interval. `None` when there is nothing to send.
pub(crate) fn collect(
    store: &Store,
    temporality: Temporality,
    now_unix_ns: u64,
    alive: impl Fn(u32) -> bool,
    mut resource: impl FnMut(u32, &Arc<Identity>) -> Arc<Resource>,
) -> Option<ExportMetricsServiceRequest> {
    let delta = temporality == Temporality::Delta;
    let aggregation = match temporality {
        Temporality::Cumulative => AggregationTemporality::Cumulative,
        Temporality::Delta => AggregationTemporality::Delta,
    } as i32;
    let mut inner = store.lock();
    store.retire_processes(&mut inner, alive);
    let mut pids: Vec<u32> = inner.processes.keys().copied().collect();
    pids.sort_unstable();
    let mut out = Vec::new();
    for pid in pids {
        let p = inner.processes.get_mut(&pid).expect("key just listed");
        let mut metrics: Vec<Metric> = Vec::new();
        for i in INSTRUMENTS {
            // Attributes are made here, once per export, not kept with every series.
            let mut points: Vec<(Attrs, HistogramDataPoint)> = p
                .series()
                .filter(|s| s.key.kind == i.kind())
                .filter_map(|s| {
                    let h = &s.hists[i.slot()];
                    let attrs = otel_attrs(&s.key);
                    point(h, i, &attrs, p.start_unix_ns, now_unix_ns, delta).map(|pt| (attrs, pt))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            points.sort_by(|a, b| a.0.cmp(&b.0));
            // Series that differ only by the process's identity (named late) are one point.
            points.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    add(&mut kept.1, &later.1);
                }
                same
            });
            metrics.push(Metric {
                name: i.otel_name().into(),
                description: i.description().into(),
                unit: i.otel_unit().into(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: points.into_iter().map(|(_, pt)| pt).collect(),
                    aggregation_temporality: aggregation,
                })),
                ..Default::default()
            });
        }
        if metrics.is_empty() {
            continue;
        }
        if delta {
            for s in p.series_mut() {
                for h in &mut s.hists {
                    h.mark = Some(Box::new(Mark {
                        counts: h.counts.clone(),
                        sum: h.sum,
                        count: h.count,
                    }));
                    h.min = f64::INFINITY;
                    h.max = f64::NEG_INFINITY;
                }
            }
            p.start_unix_ns = now_unix_ns;
        }
        out.push(ResourceMetrics {
            resource: Some((*resource(pid, &p.identity)).clone()),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::collect::{Request, RequestKind};
    use crate::config::MetricsNaming;
    use crate::enrich::EnrichedRequest;
    use crate::export::names::DURATION_BUCKETS;

    /// The store as the agent feeds it, and this encoder on top.
    struct MetricStore {
        store: Store,
        temporality: Temporality,
    }

    impl MetricStore {
        fn new(temporality: Temporality, target: bool, peer: bool, ttl: Duration) -> Self {
            let store = Store::new(MetricsNaming::Semconv, target, peer, ttl, 1000);
            MetricStore { store, temporality }
        }

        fn record(
            &self,
            r: &EnrichedRequest,
            _resource: impl FnOnce() -> Arc<Resource>,
            now: u64,
            trace: Option<([u8; 16], [u8; 8])>,
        ) {
            self.store.record(r, || now);
            if let Some((t, s)) = trace {
                self.store.exemplar(r, t, s, now);
            }
        }

        /// Each process's resource says its service name.
        fn collect(&self, now: u64) -> Option<ExportMetricsServiceRequest> {
            collect(
                &self.store,
                self.temporality,
                now,
                |_| true,
                |_, id| {
                    Arc::new(Resource {
                        attributes: vec![kv_str("service.name", id.service_name.clone())],
                        ..Default::default()
                    })
                },
            )
        }
    }

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
