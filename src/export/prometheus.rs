//! The Prometheus exposition of the request store: text format 0.0.4, or OpenMetrics 1.0
//! (which alone carries exemplars).
//!
//! Our own small writer instead of metrics-exporter-prometheus: the store is the one
//! aggregation (that exporter would count every request a second time, and cannot expire a
//! stopped container's series and revive them), and the output reproduces Beyla's.

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::names::{Labels, INSTRUMENTS};
use super::store::{Histogram, Store};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every request family under the store's naming, in the fixed family order; a family with
/// no series is left out entirely. Processes sharing a label set are summed.
pub(super) fn render_requests(store: &Store, out: &mut String, openmetrics: bool) {
    let naming = store.naming();
    let inner = store.lock();
    for i in INSTRUMENTS {
        let Some((name, help)) = i.prometheus(naming) else {
            continue;
        };
        let live = inner
            .processes
            .values()
            .flat_map(|p| p.series())
            .filter(|s| s.key.kind == i.kind())
            .map(|s| (&s.labels, &s.hists[i.slot()]));
        let departed = inner
            .departed
            .iter()
            .filter(|((d, _), _)| *d == i)
            .map(|((_, labels), h)| (labels, h));
        // Copied only where two processes share a label set.
        let mut merged: BTreeMap<&Labels, Cow<'_, Histogram>> = BTreeMap::new();
        for (labels, h) in live.chain(departed) {
            match merged.entry(labels) {
                Entry::Vacant(e) => {
                    e.insert(Cow::Borrowed(h));
                }
                Entry::Occupied(mut e) => e.get_mut().to_mut().merge(h),
            }
        }
        render_family(out, name, help, i.bounds(), &merged, openmetrics);
    }
}

fn render_family(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    series: &BTreeMap<&Labels, Cow<'_, Histogram>>,
    openmetrics: bool,
) {
    if series.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, h) in series {
        let mut base = String::new();
        for (k, v) in labels.iter() {
            let _ = write!(base, "{k}=\"{}\",", escape(v));
        }
        let mut cumulative = 0;
        for (i, c) in h.counts.iter().enumerate() {
            cumulative += c;
            let le = match bounds.get(i) {
                Some(b) => format!("{b}"),
                None => "+Inf".to_string(),
            };
            let _ = write!(out, "{name}_bucket{{{base}le=\"{le}\"}} {cumulative}");
            if let Some(Some(e)) = h.exemplars.get(i).filter(|_| openmetrics) {
                let ms = e.unix_ns / 1_000_000;
                let _ = write!(
                    out,
                    " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {}.{:03}",
                    hex(&e.trace_id),
                    hex(&e.span_id),
                    e.value,
                    ms / 1000,
                    ms % 1000
                );
            }
            out.push('\n');
        }
        let plain = base.trim_end_matches(',');
        let _ = writeln!(out, "{name}_sum{{{plain}}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{plain}}} {}", h.count);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::Exporter;
    use crate::collect::{Request, RequestKind};
    use crate::config::MetricsNaming;
    use crate::enrich::{EnrichedRequest, Identity};

    fn request(
        method: &str,
        status: u16,
        secs: f64,
        path: &str,
        container: Option<&str>,
    ) -> EnrichedRequest {
        EnrichedRequest {
            request: Request {
                kind: RequestKind::HttpServer,
                pid: 1,
                start_ns: 0,
                end_ns: (secs * 1e9) as u64,
                method: method.into(),
                path: path.into(),
                path_truncated: false,
                status,
                request_body_bytes: 40,
                response_body_bytes: 5000,
                peer: Some("10.1.2.3".parse().unwrap()),
                http2: false,
                server_address: String::new(),
                server_port: 0,
                error: false,
                trace: None,
            },
            identity: Arc::new(Identity {
                service_name: "svc \"q\"".into(),
                service_namespace: "ns".into(),
                container_name: container.map(str::to_string),
                extra: vec![],
            }),
            route: "/**".into(),
        }
    }

    #[test]
    fn semconv_histograms_render_exactly() {
        let e = Exporter::with(MetricsNaming::Semconv, true, true);
        e.record(&request("GET", 200, 0.03, "/a", None));
        e.record(&request("GET", 200, 0.2, "/a", None));
        let text = e.render();
        let l = r#"client_address="10.1.2.3",http_request_method="GET",http_response_status_code="200",http_route="/**",service_name="svc \"q\"",service_namespace="ns",url_path="/a""#;
        for line in [
            format!("http_server_request_duration_seconds_bucket{{{l},le=\"0.025\"}} 0"),
            format!("http_server_request_duration_seconds_bucket{{{l},le=\"0.05\"}} 1"),
            format!("http_server_request_duration_seconds_bucket{{{l},le=\"0.25\"}} 2"),
            format!("http_server_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} 2"),
            format!("http_server_request_duration_seconds_count{{{l}}} 2"),
            format!("http_server_request_body_size_bytes_bucket{{{l},le=\"32\"}} 0"),
            format!("http_server_request_body_size_bytes_bucket{{{l},le=\"64\"}} 2"),
            format!("http_server_request_body_size_bytes_sum{{{l}}} 80"),
            format!("http_server_response_body_size_bytes_bucket{{{l},le=\"8192\"}} 2"),
            "sonde_events_total 2".to_string(),
        ] {
            assert!(text.lines().any(|x| x == line), "missing {line}\n{text}");
        }
        let sum = text
            .lines()
            .find(|x| x.starts_with("http_server_request_duration_seconds_sum"))
            .unwrap();
        let v: f64 = sum.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((v - 0.23).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn stopped_containers_expire_only_after_their_ttl_and_revive() {
        let e = Exporter::with(MetricsNaming::Semconv, false, false);
        e.record(&request("GET", 200, 0.01, "/", Some("web-1")));
        // Another container is another process.
        let mut web2 = request("GET", 200, 0.01, "/", Some("web-2"));
        web2.request.pid = 2;
        e.record(&web2);
        let now = std::time::Instant::now();
        e.retire_container("web-1", now + std::time::Duration::from_secs(60));
        e.retire_container("web-2", now);
        e.sweep(now);
        let text = e.render();
        assert!(text.contains("container_name=\"web-1\""));
        assert!(!text.contains("container_name=\"web-2\""));
        e.revive_container("web-1");
        e.sweep(now + std::time::Duration::from_secs(120));
        assert!(e.render().contains("container_name=\"web-1\""));
    }

    #[test]
    fn openmetrics_carries_exemplars_on_duration_buckets_only() {
        let e = Exporter::with(MetricsNaming::Semconv, false, false);
        let r = request("GET", 200, 0.03, "/a", None);
        e.record(&r);
        e.exemplar(&r, [0xab; 16], [0x01, 2, 3, 4, 5, 6, 7, 8]);
        let om = e.render_openmetrics();
        let l = r#"http_request_method="GET",http_response_status_code="200",http_route="/**",service_name="svc \"q\"",service_namespace="ns""#;
        let line = om
            .lines()
            .find(|x| {
                x.starts_with(&format!(
                    "http_server_request_duration_seconds_bucket{{{l},le=\"0.05\"}} 1 # "
                ))
            })
            .unwrap_or_else(|| panic!("{om}"));
        let ex = line.split(" # ").nth(1).unwrap();
        let (ids, rest) = ex.split_once("} ").unwrap();
        assert_eq!(
            ids,
            format!(
                "{{trace_id=\"{}\",span_id=\"0102030405060708\"",
                "ab".repeat(16)
            )
        );
        let mut rest = rest.split(' ');
        assert_eq!(rest.next(), Some("0.03"));
        let ts: f64 = rest.next().unwrap().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - ts).abs() < 60.0, "{ts} vs {now}");
        assert_eq!(
            om.matches(" # {").count(),
            1,
            "one bucket, one family: {om}"
        );
        assert!(om.ends_with("# EOF\n"));
        assert!(
            om.contains("# TYPE sonde_events counter\nsonde_events_total 1\n"),
            "{om}"
        );
        let text = e.render();
        assert!(!text.contains(" # {") && !text.contains("# EOF"), "{text}");
        assert!(text.contains("# TYPE sonde_events_total counter\n"));
        // A newer request in the same bucket replaces it.
        e.record(&r);
        e.exemplar(&r, [0xcd; 16], [9; 8]);
        let om = e.render_openmetrics();
        assert_eq!(om.matches(" # {").count(), 1);
        assert!(om.contains(&"cd".repeat(16)));
    }

    #[test]
    fn health_counts_skips_by_reason() {
        let _own = crate::internal_events::scoped(std::time::Duration::from_secs(30));
        let e = Exporter::with(MetricsNaming::BeylaV0, false, false);
        let skip = || {
            crate::internal_events::emit(crate::internal_events::BinarySkipped {
                pid: 1,
                exe: std::path::Path::new("/bin/true"),
                reason: "not_go",
                error: &"not a Go binary",
                first: true,
            })
        };
        skip();
        skip();
        crate::internal_events::emit(crate::internal_events::EventsLost {
            source: "uprobes",
            n: 3,
        });
        let text = e.render();
        assert!(text.contains("sonde_skipped_binaries_total{reason=\"not_go\"} 2\n"));
        assert!(text.contains("sonde_skipped_binaries_total{reason=\"timeout\"} 0\n"));
        assert!(text.contains("sonde_events_lost_total 3\n"));
        assert!(text.contains(&format!(
            "sonde_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }

    fn call(kind: RequestKind, status: u16) -> EnrichedRequest {
        EnrichedRequest {
            request: Request {
                kind,
                pid: 1,
                start_ns: 0,
                end_ns: 20_000_000,
                method: "/pkg.Svc/Get".into(),
                path: String::new(),
                path_truncated: false,
                status,
                request_body_bytes: 0,
                response_body_bytes: 0,
                peer: None,
                http2: true,
                server_address: "127.0.0.1".into(),
                server_port: 50051,
                error: false,
                trace: None,
            },
            identity: Arc::new(Identity {
                service_name: "svc".into(),
                service_namespace: "ns".into(),
                container_name: None,
                extra: vec![],
            }),
            route: "/**".into(),
        }
    }

    #[test]
    fn semconv_names_statuses() {
        let e = Exporter::with(MetricsNaming::Semconv, true, true);
        e.record(&call(RequestKind::RpcServer, 5));
        e.record(&call(RequestKind::RpcClient, 0));
        let text = e.render();
        for line in [
            r#"rpc_server_call_duration_seconds_bucket{rpc_method="/pkg.Svc/Get",rpc_response_status_code="NOT_FOUND",rpc_system_name="grpc",service_name="svc",service_namespace="ns",le="0.025"} 1"#,
            r#"rpc_client_call_duration_seconds_count{rpc_method="/pkg.Svc/Get",rpc_response_status_code="OK",rpc_system_name="grpc",server_address="127.0.0.1",server_port="50051",service_name="svc",service_namespace="ns"} 1"#,
            "# TYPE rpc_server_call_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!text.contains("http_server"), "{text}");
    }

    #[test]
    fn beyla_namings_use_integer_codes() {
        let e = Exporter::with(MetricsNaming::BeylaV1, false, false);
        e.record(&call(RequestKind::RpcServer, 7));
        let text = e.render();
        let line = r#"rpc_server_duration_seconds_count{rpc_grpc_status_code="7",rpc_method="/pkg.Svc/Get",rpc_system="grpc",service_name="svc",service_namespace="ns"} 1"#;
        assert!(text.lines().any(|l| l == line), "{text}");
        let e = Exporter::with(MetricsNaming::BeylaV0, false, false);
        e.record(&call(RequestKind::RpcClient, 14));
        let text = e.render();
        let line = r#"rpc_client_duration_seconds_count{net_peer_name="127.0.0.1",net_peer_port="50051",rpc_grpc_status_code="14",rpc_method="/pkg.Svc/Get",rpc_system="grpc",service_name="svc"} 1"#;
        assert!(text.lines().any(|l| l == line), "{text}");
    }

    #[test]
    fn processes_sharing_labels_are_summed_and_outlive_their_exit() {
        let e = Exporter {
            store: super::super::store::Store::new(
                MetricsNaming::Semconv,
                false,
                false,
                std::time::Duration::ZERO,
                100,
            ),
            health: Default::default(),
        };
        let mut r = request("GET", 200, 0.03, "/a", Some("web"));
        e.record(&r);
        r.request.pid = 2;
        e.record(&r);
        e.record(&r);
        let line = |text: &str| {
            text.lines()
                .find(|l| l.starts_with("http_server_request_duration_seconds_count{"))
                .map(str::to_string)
        };
        let before = e.render();
        assert!(line(&before).unwrap().ends_with(" 3"), "{before}");
        // Both exit and idle out: OTLP forgets them, Prometheus keeps counting from 3.
        e.store().sweep(std::time::Instant::now(), |_| false);
        assert!(e.store().lock().processes.is_empty());
        assert_eq!(line(&e.render()), line(&before));
    }
}
