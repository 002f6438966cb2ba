//! Per-request cost and memory of the request aggregation, without root:
//! `cargo test --lib export::bench -- --ignored --nocapture --test-threads=1`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Exporter;
use crate::collect::{Request, RequestKind};
use crate::config::MetricsNaming;
use crate::enrich::{EnrichedRequest, Identity};

fn request(pid: u32, method: &str, path: String, identity: &Arc<Identity>) -> EnrichedRequest {
    EnrichedRequest {
        request: Request {
            kind: RequestKind::HttpServer,
            pid,
            start_ns: 0,
            end_ns: 3_000_000 * u64::from(pid),
            method: method.into(),
            path: path.clone(),
            path_truncated: false,
            status: 200,
            request_body_bytes: 100,
            response_body_bytes: 1000,
            peer: None,
            http2: false,
            server_address: String::new(),
            server_port: 0,
            error: false,
            trace: None,
        },
        identity: identity.clone(),
        route: path,
    }
}

/// 4 processes × 8 methods × 8 paths: 256 series.
fn mix() -> Vec<EnrichedRequest> {
    let mut out = Vec::new();
    for pid in 1..=4u32 {
        let id = Arc::new(Identity {
            service_name: format!("svc-{pid}"),
            service_namespace: "ns".into(),
            container_name: Some(format!("web-{pid}")),
            extra: vec![],
        });
        for m in [
            "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE",
        ] {
            for p in 0..8 {
                out.push(request(pid, m, format!("/users/{p}"), &id));
            }
        }
    }
    out
}

fn rss_kib() -> u64 {
    crate::discover::proc::own_rss_kib()
}

type Resources = Mutex<HashMap<u32, (Arc<Identity>, Arc<String>)>>;

/// What OTLP metrics add per request now: the resource cache hit of `Otlp::resource`.
fn otlp_metrics(cache: &Resources, r: &EnrichedRequest) {
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((id, _)) = c.get(&r.request.pid) {
        if Arc::ptr_eq(id, &r.identity) || **id == *r.identity {
            return;
        }
    }
    c.insert(r.request.pid, (r.identity.clone(), Arc::new(String::new())));
}

#[test]
#[ignore = "benchmark: run by hand, see BENCHMARKS.md"]
fn aggregation_cost_per_request_and_memory_per_series() {
    const N: usize = 1_000_000;
    let reqs = mix();
    for otlp in [false, true] {
        let e = Exporter::with(MetricsNaming::Semconv, true, false);
        let cache = Resources::default();
        let t = Instant::now();
        for i in 0..N {
            let r = &reqs[i % reqs.len()];
            e.record(r);
            if otlp {
                otlp_metrics(&cache, r);
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / N as f64;
        println!("BENCH record, OTLP metrics {otlp}: {ns:.0} ns/request");
    }
    let id = reqs[0].identity.clone();
    let before = rss_kib();
    let e = Exporter::with(MetricsNaming::Semconv, true, false);
    for i in 0..20_000 {
        e.record(&request(1, "GET", format!("/item/{i}"), &id));
    }
    let after = rss_kib();
    println!(
        "BENCH 20000 series (Prometheus and OTLP): {} KiB RSS, {:.2} ms to render",
        after - before,
        {
            let t = Instant::now();
            let n = e.render().len();
            assert!(n > 0);
            t.elapsed().as_secs_f64() * 1e3
        }
    );
}
