//! The store's series: one per label set and process, expiry and revival, departed processes,
//! the series cap, late identities.

use super::*;
use crate::collect::Request;

pub(crate) fn request(kind: RequestKind, pid: u32, container: Option<&str>) -> EnrichedRequest {
    EnrichedRequest {
        request: Request {
            kind,
            pid,
            start_ns: 0,
            end_ns: 30_000_000,
            method: "GET".into(),
            path: "/a".into(),
            path_truncated: false,
            status: 200,
            request_body_bytes: 40,
            response_body_bytes: 5000,
            peer: None,
            http2: false,
            server_address: String::new(),
            server_port: 0,
            error: false,
            trace: None,
        },
        identity: Arc::new(Identity {
            service_name: "svc".into(),
            service_namespace: "ns".into(),
            container_name: container.map(str::to_string),
            extra: vec![],
        }),
        route: "/**".into(),
    }
}

fn store(ttl: Duration, max: usize) -> Store {
    Store::new(MetricsNaming::Semconv, false, false, ttl, max)
}

fn counts(s: &Store) -> u64 {
    let inner = s.lock();
    let live: u64 = inner
        .processes
        .values()
        .flat_map(|p| p.series())
        .map(|s| s.hists[0].count)
        .sum();
    live + inner
        .departed
        .iter()
        .filter(|((i, _), _)| i.slot() == 0)
        .map(|(_, h)| h.count)
        .sum::<u64>()
}

#[test]
fn one_series_per_label_set_and_process() {
    let s = store(Duration::from_secs(60), 100);
    for _ in 0..3 {
        s.record(&request(RequestKind::HttpServer, 1, None), || 5);
    }
    s.record(&request(RequestKind::HttpServer, 2, None), || 6);
    s.record(&request(RequestKind::RpcServer, 2, None), || 6);
    let inner = s.lock();
    assert_eq!(inner.series_count, 3);
    let p = &inner.processes[&1];
    assert_eq!(p.start_unix_ns, 5);
    let series: Vec<&Series> = p.series().collect();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].hists.len(), 3);
    assert_eq!(series[0].hists[0].count, 3);
    assert_eq!(
        series[0].hists[2].counts[9], 3,
        "5000 bytes in (4096, 8192]"
    );
    let rpc = inner.processes[&2]
        .series()
        .find(|s| s.key.kind.is_rpc())
        .unwrap();
    assert_eq!(rpc.hists.len(), 1, "no sizes for RPC calls");
}

#[test]
fn stopped_containers_expire_after_their_ttl_unless_revived() {
    let s = store(Duration::from_secs(60), 100);
    s.record(&request(RequestKind::HttpServer, 1, Some("web-1")), || 0);
    s.record(&request(RequestKind::HttpServer, 2, Some("web-2")), || 0);
    s.record(&request(RequestKind::HttpServer, 3, Some("web-3")), || 0);
    let now = Instant::now();
    s.retire_container("web-1", now + Duration::from_secs(60));
    s.retire_container("web-2", now);
    s.retire_container("web-3", now + Duration::from_secs(60));
    s.sweep(now, |_| true);
    assert_eq!(counts(&s), 2, "web-2 expired, web-1 and web-3 wait");
    s.revive_container("web-1");
    s.sweep(now + Duration::from_secs(120), |_| true);
    let inner = s.lock();
    let left: Vec<&str> = inner
        .processes
        .values()
        .flat_map(|p| p.series())
        .filter_map(|s| s.container())
        .collect();
    assert_eq!(left, ["web-1"]);
    assert_eq!(inner.series_count, 1);
}

#[test]
fn exited_processes_keep_their_counts_for_prometheus_only() {
    let s = store(Duration::ZERO, 100);
    s.record(&request(RequestKind::HttpServer, 1, Some("web")), || 0);
    s.record(&request(RequestKind::HttpServer, 2, Some("web")), || 0);
    let now = Instant::now();
    s.sweep(now, |pid| pid == 2);
    {
        let inner = s.lock();
        assert!(!inner.processes.contains_key(&1), "exited: not in OTLP");
        assert_eq!(inner.departed.len(), 3, "its three histograms");
        assert_eq!(inner.series_count, 2);
    }
    assert_eq!(counts(&s), 2, "counters never go backwards");
    // The departed counts still expire with their container.
    s.retire_container("web", now);
    s.sweep(now + PROCESS_CHECK_EVERY, |_| false);
    assert_eq!(counts(&s), 0);
    assert_eq!(s.lock().series_count, 0);
}

#[test]
fn the_cap_sends_new_label_sets_to_one_overflow_series() {
    let s = store(Duration::from_secs(60), 2);
    for m in ["GET", "PUT", "POST", "DELETE"] {
        let mut r = request(RequestKind::HttpServer, 1, None);
        r.request.method = m.into();
        s.record(&r, || 0);
        s.record(&r, || 0);
    }
    let inner = s.lock();
    let mut by_method: Vec<(String, u64)> = inner.processes[&1]
        .series()
        .map(|s| (s.labels[0].1.clone(), s.hists[0].count))
        .collect();
    by_method.sort();
    assert_eq!(
        by_method,
        [("GET".into(), 2), ("PUT".into(), 2), ("true".into(), 4)]
    );
    let overflow = inner.processes[&1]
        .series()
        .find(|s| s.key.overflow)
        .unwrap();
    assert_eq!(overflow.labels, [("otel_metric_overflow", "true".into())]);
}

#[test]
fn a_late_identity_starts_new_series_and_keeps_the_old_ones() {
    let s = store(Duration::from_secs(60), 100);
    let mut r = request(RequestKind::HttpServer, 1, None);
    s.record(&r, || 0);
    r.identity = Arc::new(Identity {
        service_name: "shop".into(),
        ..Identity::default()
    });
    s.record(&r, || 0);
    s.record(&r, || 0);
    let inner = s.lock();
    let p = &inner.processes[&1];
    assert_eq!(p.identity.service_name, "shop");
    let mut by_name: Vec<(String, u64)> = p
        .series()
        .map(|s| {
            (
                s.labels
                    .iter()
                    .find(|l| l.0 == "service_name")
                    .unwrap()
                    .1
                    .clone(),
                s.hists[0].count,
            )
        })
        .collect();
    by_name.sort();
    assert_eq!(by_name, [("shop".into(), 2), ("svc".into(), 1)]);
}
