//! OTLP export end to end: a real Go server instrumented by the real BPF programs, and an
//! OTLP receiver inside this test binary that decodes with the official protobuf
//! definitions (`opentelemetry-proto`), over http/protobuf (hyper) and gRPC (tonic).
//!
//! Needs root. Without it a test says why and skips; with SONDE_REQUIRE_INTEGRATION=1 (CI)
//! it fails instead.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, HistogramDataPoint};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::*;

const SECRET: &str = "c29uZGU6czNjcjN0";
const DURATION_BOUNDS: &[f64] = &[
    0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const SIZE_BOUNDS: &[f64] = &[
    0.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// Everything the receiver got.
#[derive(Default)]
struct Received {
    metrics: Vec<ExportMetricsServiceRequest>,
    traces: Vec<ExportTraceServiceRequest>,
    /// `authorization` of every request.
    auth: Vec<String>,
}

#[derive(Clone, Default)]
struct Shared {
    got: Arc<Mutex<Received>>,
    /// Non-zero: answer every request with this HTTP status (gRPC: UNAUTHENTICATED).
    reject: Arc<AtomicU16>,
    requests: Arc<AtomicU64>,
}

impl Shared {
    fn note_auth(&self, value: Option<&[u8]>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let v = value
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        self.got.lock().unwrap().auth.push(v);
    }
}

/// An OTLP receiver on 127.0.0.1:port, stopped when dropped.
struct Receiver {
    port: u16,
    shared: Shared,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[tonic::async_trait]
impl MetricsService for Shared {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.note_auth(
            request
                .metadata()
                .get("authorization")
                .map(|v| v.as_bytes()),
        );
        if self.reject.load(Ordering::Relaxed) != 0 {
            return Err(tonic::Status::unauthenticated("bad credentials"));
        }
        self.got.lock().unwrap().metrics.push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Shared {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.note_auth(
            request
                .metadata()
                .get("authorization")
                .map(|v| v.as_bytes()),
        );
        if self.reject.load(Ordering::Relaxed) != 0 {
            return Err(tonic::Status::unauthenticated("bad credentials"));
        }
        self.got.lock().unwrap().traces.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn handle_http(
    shared: Shared,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    shared.note_auth(req.headers().get("authorization").map(|v| v.as_bytes()));
    let path = req.uri().path().to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = |code: u16| {
        Ok(hyper::Response::builder()
            .status(code)
            .header("content-type", "application/x-protobuf")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap())
    };
    let reject = shared.reject.load(Ordering::Relaxed);
    if reject != 0 {
        return reply(reject);
    }
    if content_type.as_deref() != Some("application/x-protobuf") {
        return reply(415);
    }
    let mut got = shared.got.lock().unwrap();
    match path.as_str() {
        "/v1/metrics" => match ExportMetricsServiceRequest::decode(body) {
            Ok(m) => got.metrics.push(m),
            Err(_) => return reply(400),
        },
        "/v1/traces" => match ExportTraceServiceRequest::decode(body) {
            Ok(t) => got.traces.push(t),
            Err(_) => return reply(400),
        },
        _ => return reply(404),
    }
    reply(200)
}

impl Receiver {
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// OTLP/HTTP with protobuf bodies on `/v1/metrics` and `/v1/traces`.
    fn http(port: u16) -> Receiver {
        let shared = Shared::default();
        let rt = Self::runtime();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        let s = shared.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| handle_http(s.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            port,
            shared,
            runtime: Some(rt),
        }
    }

    /// OTLP/gRPC: the collector's MetricsService and TraceService.
    fn grpc(port: u16) -> Receiver {
        let shared = Shared::default();
        let rt = Self::runtime();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        let s = shared.clone();
        rt.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(MetricsServiceServer::new(s.clone()))
                .add_service(TraceServiceServer::new(s))
                .serve_with_incoming(tokio_stream(listener))
                .await;
        });
        Receiver {
            port,
            shared,
            runtime: Some(rt),
        }
    }

    fn got(&self) -> std::sync::MutexGuard<'_, Received> {
        self.shared.got.lock().unwrap()
    }
}

/// A stream of accepted connections, as tonic's server wants it.
fn tokio_stream(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key) {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn attr_int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key) {
        Some(any_value::Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

fn resource_pid(r: &Option<Resource>) -> Option<i64> {
    r.as_ref()
        .and_then(|r| attr_int(&r.attributes, "process.pid"))
}

/// Histogram points of metric `name` for process `pid`, with their unit and temporality.
/// Cumulative: from the newest export that has them. Delta: every export.
fn points(
    got: &Received,
    pid: u32,
    name: &str,
    delta: bool,
) -> Vec<(String, i32, HistogramDataPoint)> {
    let mut out = Vec::new();
    for req in got.metrics.iter().rev() {
        let mut found = false;
        for rm in &req.resource_metrics {
            if resource_pid(&rm.resource) != Some(pid.into()) {
                continue;
            }
            for sm in &rm.scope_metrics {
                for m in sm.metrics.iter().filter(|m| m.name == name) {
                    if let Some(metric::Data::Histogram(h)) = &m.data {
                        found = true;
                        for p in &h.data_points {
                            out.push((m.unit.clone(), h.aggregation_temporality, p.clone()));
                        }
                    }
                }
            }
        }
        if found && !delta {
            break;
        }
    }
    out
}

/// (count, sum, bucket counts) over the points whose attributes include all of `want`;
/// bucket counts added up point by point.
fn summed(
    points: &[(String, i32, HistogramDataPoint)],
    want: &[(&str, &str)],
) -> (u64, f64, Vec<u64>) {
    let mut count = 0;
    let mut sum = 0.0;
    let mut buckets: Vec<u64> = Vec::new();
    for (_, _, p) in points {
        let matches = want.iter().all(|(k, v)| match attr(&p.attributes, k) {
            Some(any_value::Value::StringValue(s)) => s == v,
            Some(any_value::Value::IntValue(i)) => i.to_string() == *v,
            _ => v.is_empty(),
        });
        if !matches {
            continue;
        }
        count += p.count;
        sum += p.sum.unwrap_or(0.0);
        if buckets.is_empty() {
            buckets = vec![0; p.bucket_counts.len()];
        }
        for (b, c) in buckets.iter_mut().zip(&p.bucket_counts) {
            *b += c;
        }
    }
    (count, sum, buckets)
}

/// The request mix of tests/http_server.rs: method, path, request body bytes.
const MIX: &[(&str, &str, usize)] = &[
    ("GET", "/status/200?size=10", 0),
    ("GET", "/status/200?size=10", 0),
    ("GET", "/status/200?size=10", 0),
    ("POST", "/echo", 100),
    ("POST", "/echo", 100),
    ("PUT", "/status/404?size=0", 50),
    ("DELETE", "/status/500?size=5", 0),
    ("DELETE", "/status/500?size=5", 0),
    ("PATCH", "/slow?ms=30", 0),
];

fn send_mix(port: u16) {
    for &(method, path, body) in MIX {
        let (status, _) = http(method, &format!("http://127.0.0.1:{port}{path}"), body);
        assert!(status >= 200, "{method} {path} failed");
    }
}

/// One call from the server on `port` to the server on `next` (OPTIONS, answered 201 with
/// 4 bytes) and one to a port where nothing listens (502).
fn send_calls(port: u16, next: u16, closed: u16) {
    let call = |url: String, method: &str| {
        let path = format!("/call?method={method}&url={url}");
        http("GET", &format!("http://127.0.0.1:{port}{path}"), 0).0
    };
    assert_eq!(
        call(
            format!("http://127.0.0.1:{next}/status/201?size=4"),
            "OPTIONS"
        ),
        201
    );
    assert_eq!(call(format!("http://127.0.0.1:{closed}/"), "GET"), 502);
}

fn one_target() -> GoTarget {
    go_targets()
        .into_iter()
        .rfind(|t| t.linkage == "static" && !t.stripped)
        .expect("a static Go target")
}

struct Setup {
    target: GoTarget,
    front_port: u16,
    front: ChildGuard,
    back_port: u16,
    back: ChildGuard,
    prom: u16,
    sonde: SondeGuard,
}

/// Two Go servers (front calls back), sonde instrumenting both with `env`.
fn start(env: &[(&str, &str)]) -> Setup {
    let target = one_target();
    let front_port = free_port();
    let back_port = free_port();
    let front = spawn_go_server(&target.path, front_port, false);
    let back = spawn_go_server(&target.path, back_port, false);
    let prom = free_port();
    let mut all = vec![
        (
            "SONDE_OPEN_PORT".to_string(),
            format!("{front_port},{back_port}"),
        ),
        ("SONDE_PROMETHEUS_PORT".to_string(), prom.to_string()),
    ];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sonde = spawn_sonde(&refs);
    for pid in [front.pid(), back.pid()] {
        sonde.expect_instrumented(pid, Duration::from_secs(30));
    }
    Setup {
        target,
        front_port,
        front,
        back_port,
        back,
        prom,
        sonde,
    }
}

/// Polls until `check` holds on what the receiver got; panics with `what` after `timeout`.
fn wait_until(r: &Receiver, timeout: Duration, what: &str, check: impl Fn(&Received) -> bool) {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if check(&r.got()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not received within {timeout:?}");
}

/// Exact metric points of the mix and the calls, on the front server.
fn assert_metrics(s: &Setup, r: &Receiver, delta: bool) {
    let pid = s.front.pid();
    let server = "http.server.request.duration";
    let settled = |got: &Received| {
        let p = points(got, pid, server, delta);
        let c = points(got, pid, "http.client.request.duration", delta);
        summed(&p, &[]).0 == MIX.len() as u64 + 2 && summed(&c, &[]).0 == 2
    };
    wait_until(
        r,
        Duration::from_secs(40),
        "the mix's metric points",
        settled,
    );
    let got = r.got();
    let p = points(&got, pid, server, delta);
    let temporality = if delta { 1 } else { 2 };
    for (unit, t, point) in &p {
        assert_eq!(unit, "s");
        assert_eq!(*t, temporality, "aggregation temporality");
        assert_eq!(point.explicit_bounds, DURATION_BOUNDS);
        assert_eq!(point.bucket_counts.len(), DURATION_BOUNDS.len() + 1);
        assert_eq!(point.bucket_counts.iter().sum::<u64>(), point.count);
    }
    let route = ("http.route", "/**");
    for (method, status, count) in [
        ("GET", "200", 3),
        ("GET", "201", 1),
        ("GET", "502", 1),
        ("POST", "200", 2),
        ("PUT", "404", 1),
        ("DELETE", "500", 2),
        ("PATCH", "200", 1),
    ] {
        let want = [
            ("http.request.method", method),
            ("http.response.status_code", status),
            route,
        ];
        assert_eq!(summed(&p, &want).0, count, "count of {method} {status}");
    }
    // /slow?ms=30 took at least 30 ms: nothing in the buckets up to 25 ms.
    let (_, sum, slow) = summed(
        &p,
        &[
            ("http.request.method", "PATCH"),
            ("http.response.status_code", "200"),
        ],
    );
    assert!(sum >= 0.03, "PATCH /slow took {sum} s");
    assert_eq!(&slow[..4], &[0, 0, 0, 0], "PATCH /slow buckets {slow:?}");

    let req = points(&got, pid, "http.server.request.body.size", delta);
    let resp = points(&got, pid, "http.server.response.body.size", delta);
    for (unit, _, point) in req.iter().chain(&resp) {
        assert_eq!(unit, "By");
        assert_eq!(point.explicit_bounds, SIZE_BOUNDS);
    }
    // Request bodies: 2×100 (POST) in (64, 128], 50 (PUT) in (32, 64], the rest 0.
    let (n, sum, buckets) = summed(&req, &[]);
    assert_eq!((n, sum), (MIX.len() as u64 + 2, 250.0));
    assert_eq!(buckets, vec![8, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0]);
    // Responses: GET 3×10 + the calls' 201 (0 bytes written) and 502 (0); POST echo 2×100;
    // PUT 0; DELETE 2×5; PATCH 0.
    let (_, sum, buckets) = summed(&resp, &[]);
    assert_eq!(sum, 30.0 + 200.0 + 10.0);
    assert_eq!(buckets, vec![4, 5, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
    let (n, sum, _) = summed(
        &resp,
        &[
            ("http.request.method", "POST"),
            ("http.response.status_code", "200"),
        ],
    );
    assert_eq!((n, sum), (2, 200.0));

    // Client side: the OPTIONS call (201, 4 bytes back) and the refused call.
    let c = points(&got, pid, "http.client.request.duration", delta);
    let next = s.back_port.to_string();
    let ok = [
        ("http.request.method", "OPTIONS"),
        ("http.response.status_code", "201"),
        ("server.address", "127.0.0.1"),
        ("server.port", next.as_str()),
    ];
    assert_eq!(summed(&c, &ok).0, 1, "the OPTIONS call");
    assert_eq!(
        summed(
            &c,
            &[("error.type", "_OTHER"), ("http.request.method", "GET")]
        )
        .0,
        1,
        "the refused call"
    );
    let cresp = points(&got, pid, "http.client.response.body.size", delta);
    assert_eq!(summed(&cresp, &ok).1, 4.0);

    // One resource per process, with its identity.
    let res = got
        .metrics
        .iter()
        .rev()
        .flat_map(|m| &m.resource_metrics)
        .find(|rm| resource_pid(&rm.resource) == Some(pid.into()))
        .and_then(|rm| rm.resource.clone())
        .unwrap();
    let a = &res.attributes;
    assert_eq!(attr_str(a, "service.name"), Some(s.target.name()));
    let instance = attr_str(a, "service.instance.id").unwrap();
    assert!(instance.ends_with(&format!(":{pid}")), "{instance}");
    assert!(attr_str(a, "host.name").is_some_and(|h| !h.is_empty()));
    assert_eq!(attr_str(a, "telemetry.sdk.name").as_deref(), Some("sonde"));
    assert_eq!(
        attr_str(a, "telemetry.sdk.language").as_deref(),
        Some("rust")
    );
    let back_pid = s.back.pid();
    let back = got
        .metrics
        .iter()
        .flat_map(|m| &m.resource_metrics)
        .find(|rm| resource_pid(&rm.resource) == Some(back_pid.into()))
        .expect("the back server has its own resource");
    assert_ne!(
        attr_str(
            &back.resource.as_ref().unwrap().attributes,
            "service.instance.id"
        ),
        Some(instance)
    );
}

fn all_spans(got: &Received) -> Vec<(Option<i64>, Span)> {
    got.traces
        .iter()
        .flat_map(|t| &t.resource_spans)
        .flat_map(|rs| {
            let pid = resource_pid(&rs.resource);
            rs.scope_spans
                .iter()
                .flat_map(move |ss| ss.spans.iter().map(move |s| (pid, s.clone())))
        })
        .collect()
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;

/// Spans of the mix and of the call on the front server, and the call's parent link.
fn assert_spans(s: &Setup, r: &Receiver) {
    let pid = i64::from(s.front.pid());
    wait_until(r, Duration::from_secs(30), "the spans", |got| {
        let spans = all_spans(got);
        spans
            .iter()
            .filter(|(p, sp)| *p == Some(pid) && sp.kind == SERVER)
            .count()
            >= MIX.len() + 2
            && spans
                .iter()
                .filter(|(p, sp)| *p == Some(pid) && sp.kind == CLIENT)
                .count()
                >= 2
    });
    let spans = all_spans(&r.got());
    let mine: Vec<&Span> = spans
        .iter()
        .filter(|(p, _)| *p == Some(pid))
        .map(|(_, s)| s)
        .collect();
    let server: Vec<&&Span> = mine.iter().filter(|s| s.kind == SERVER).collect();
    assert_eq!(server.len(), MIX.len() + 2, "one SERVER span per request");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for sp in &mine {
        assert_eq!(sp.trace_id.len(), 16);
        assert_eq!(sp.span_id.len(), 8);
        assert!(sp.end_time_unix_nano >= sp.start_time_unix_nano);
        // Real wall-clock times: within the last few minutes.
        assert!(
            sp.start_time_unix_nano <= now && now - sp.start_time_unix_nano < 300_000_000_000,
            "span start {} vs now {now}",
            sp.start_time_unix_nano
        );
    }
    let deletes: Vec<_> = server.iter().filter(|s| s.name == "DELETE /**").collect();
    assert_eq!(deletes.len(), 2);
    for d in deletes {
        assert_eq!(
            d.status.as_ref().map(|s| s.code),
            Some(STATUS_ERROR),
            "500 is an error"
        );
        assert_eq!(
            attr_int(&d.attributes, "http.response.status_code"),
            Some(500)
        );
        assert_eq!(
            attr_str(&d.attributes, "http.request.method").as_deref(),
            Some("DELETE")
        );
        assert_eq!(
            attr_str(&d.attributes, "url.path").as_deref(),
            Some("/status/500")
        );
        assert_eq!(
            attr_str(&d.attributes, "http.route").as_deref(),
            Some("/**")
        );
        assert_eq!(
            attr_str(&d.attributes, "client.address").as_deref(),
            Some("127.0.0.1")
        );
    }
    let put = server.iter().find(|s| s.name == "PUT /**").unwrap();
    assert_ne!(
        put.status.as_ref().map(|s| s.code),
        Some(STATUS_ERROR),
        "404 is no server error"
    );
    let slow = server.iter().find(|s| s.name == "PATCH /**").unwrap();
    assert!(slow.end_time_unix_nano - slow.start_time_unix_nano >= 30_000_000);

    let client: Vec<&&Span> = mine.iter().filter(|s| s.kind == CLIENT).collect();
    let options = client
        .iter()
        .find(|s| s.name == "OPTIONS /**")
        .expect("client span");
    let a = &options.attributes;
    assert_eq!(attr_int(a, "http.response.status_code"), Some(201));
    assert_eq!(attr_str(a, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr_int(a, "server.port"), Some(s.back_port.into()));
    assert_ne!(options.status.as_ref().map(|s| s.code), Some(STATUS_ERROR));
    let refused = client
        .iter()
        .find(|s| s.name == "GET /**")
        .expect("refused call span");
    assert_eq!(refused.status.as_ref().map(|s| s.code), Some(STATUS_ERROR));
    assert_eq!(
        attr_str(&refused.attributes, "error.type").as_deref(),
        Some("_OTHER")
    );

    // Parent links: each call is the child of the request whose handler made it.
    let parent_of = |call: &Span, status: i64| {
        let parent = server
            .iter()
            .find(|s| {
                attr_str(&s.attributes, "url.path").as_deref() == Some("/call")
                    && attr_int(&s.attributes, "http.response.status_code") == Some(status)
            })
            .expect("the /call server span");
        assert_eq!(
            call.trace_id, parent.trace_id,
            "a call joins its request's trace"
        );
        assert_eq!(
            call.parent_span_id, parent.span_id,
            "a call is its request's child"
        );
        assert!(parent.start_time_unix_nano <= call.start_time_unix_nano);
        assert!(call.end_time_unix_nano <= parent.end_time_unix_nano);
    };
    parent_of(options, 201);
    parent_of(refused, 502);
    for sp in &server {
        assert!(sp.parent_span_id.is_empty(), "{} is a root span", sp.name);
    }
    let trace_ids: std::collections::HashSet<&Vec<u8>> =
        server.iter().map(|s| &s.trace_id).collect();
    assert_eq!(
        trace_ids.len(),
        server.len(),
        "every request starts its own trace"
    );

    // The back server handled the OPTIONS call: its own SERVER span.
    let back = i64::from(s.back.pid());
    assert!(spans
        .iter()
        .any(|(p, sp)| *p == Some(back) && sp.kind == SERVER && sp.name == "OPTIONS /**"));
}

fn secret_never_logged(s: &Setup) {
    let log = s.sonde.log();
    assert!(
        !log.contains(SECRET),
        "the header value leaked into the log:\n{log}"
    );
    assert!(!scrape(s.prom).contains(SECRET));
}

#[test]
fn http_protobuf_exports_exact_metrics_and_spans_with_auth() {
    if !require_root_or_skip("http_protobuf_exports_exact_metrics_and_spans_with_auth") {
        return;
    }
    let r = Receiver::http(free_port());
    let endpoint = format!("http://127.0.0.1:{}", r.port);
    let headers = format!("Authorization=Basic%20{SECRET},X-Scope-OrgID=sonde-test");
    let s = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_HEADERS", &headers),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
    ]);
    send_mix(s.front_port);
    let closed = free_port();
    send_calls(s.front_port, s.back_port, closed);
    assert_metrics(&s, &r, false);
    assert_spans(&s, &r);
    {
        let got = r.got();
        assert!(!got.auth.is_empty());
        let want = format!("Basic {SECRET}");
        assert!(got.auth.iter().all(|a| *a == want), "{:?}", got.auth);
    }
    // Prometheus keeps working beside OTLP.
    let text = scrape(s.prom);
    let name = s.target.name();
    assert_eq!(
        metric_value(
            &text,
            "http_server_request_duration_seconds_count",
            &[
                ("service_name", &name),
                ("http_request_method", "DELETE"),
                ("http_response_status_code", "500")
            ]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "sonde_otlp_export_errors_total",
            &[("signal", "metrics")]
        ),
        Some(0.0)
    );
    secret_never_logged(&s);
}

#[test]
fn grpc_exports_delta_metrics_and_spans() {
    if !require_root_or_skip("grpc_exports_delta_metrics_and_spans") {
        return;
    }
    let r = Receiver::grpc(free_port());
    let endpoint = format!("http://127.0.0.1:{}", r.port);
    let headers = format!("authorization=Basic%20{SECRET}");
    let s = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_HEADERS", &headers),
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
    ]);
    send_mix(s.front_port);
    send_calls(s.front_port, s.back_port, free_port());
    assert_metrics(&s, &r, true);
    assert_spans(&s, &r);
    assert!(r.got().auth.iter().all(|a| *a == format!("Basic {SECRET}")));
    secret_never_logged(&s);
}

#[test]
fn unauthorized_is_logged_once_naming_the_endpoint() {
    if !require_root_or_skip("unauthorized_is_logged_once_naming_the_endpoint") {
        return;
    }
    let r = Receiver::http(free_port());
    r.shared.reject.store(401, Ordering::Relaxed);
    let endpoint = format!("http://127.0.0.1:{}", r.port);
    let headers = format!("Authorization=Basic%20{SECRET}");
    let s = start(&[
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            &format!("{endpoint}/v1/metrics"),
        ),
        ("OTEL_EXPORTER_OTLP_HEADERS", &headers),
        ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
    ]);
    send_mix(s.front_port);
    let t = Instant::now();
    while r.shared.requests.load(Ordering::Relaxed) < 5 {
        assert!(t.elapsed() < Duration::from_secs(30), "no export attempts");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(wait_for_metric_at_least(
        s.prom,
        "sonde_otlp_export_errors_total",
        &[("signal", "metrics")],
        5.0
    ));
    let log = s.sonde.log();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("was refused")).collect();
    assert_eq!(refused.len(), 1, "one error line for the rejection:\n{log}");
    assert!(refused[0].contains("ERROR"), "{}", refused[0]);
    assert!(
        refused[0].contains(&format!("{endpoint}/v1/metrics")),
        "{}",
        refused[0]
    );
    assert!(refused[0].contains("401"), "{}", refused[0]);
    // No traces endpoint, no traces.
    assert!(r.got().traces.is_empty());
    assert!(!log.contains("exporting OTLP traces"));
    secret_never_logged(&s);
}

fn wait_for_metric_at_least(port: u16, name: &str, labels: &[(&str, &str)], min: f64) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if metric_value(&scrape(port), name, labels).is_some_and(|v| v >= min) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let fields: HashMap<&str, &str> = status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    fields[field]
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn endpoint_down_for_30s_then_back_resumes_with_bounded_memory() {
    if !require_root_or_skip("endpoint_down_for_30s_then_back_resumes_with_bounded_memory") {
        return;
    }
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut s = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
    ]);
    let before = rss_kib(s.sonde.pid(), "VmRSS");
    // 30 s with nothing listening, under steady load so spans pile up.
    let mut sent = 0u64;
    let t = Instant::now();
    let mut conn = KeepAlive::connect(s.front_port);
    while t.elapsed() < Duration::from_secs(30) {
        if sent < 10_000 {
            assert_eq!(conn.get("/status/200?size=3"), 200);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(wait_for_metric_at_least(
        s.prom,
        "sonde_otlp_export_errors_total",
        &[("signal", "traces")],
        1.0
    ));
    assert!(
        s.sonde.log().contains("retrying with back-off"),
        "{}",
        s.sonde.log()
    );
    let peak = rss_kib(s.sonde.pid(), "VmHWM");
    assert!(
        peak < before + 64 * 1024,
        "sonde grew from {before} kB to a peak of {peak} kB while the endpoint was down"
    );
    // Back: every request of the outage is in the cumulative points, and spans flow again.
    let r = Receiver::http(port);
    let pid = s.front.pid();
    wait_until(
        &r,
        Duration::from_secs(60),
        "metrics after the outage",
        |got| {
            summed(
                &points(got, pid, "http.server.request.duration", false),
                &[("http.request.method", "GET")],
            )
            .0 == sent
        },
    );
    send_mix(s.front_port);
    let front = Some(i64::from(pid));
    wait_until(
        &r,
        Duration::from_secs(60),
        "spans after the outage",
        |got| {
            all_spans(got)
                .iter()
                .any(|(p, sp)| *p == front && sp.name == "PATCH /**")
        },
    );
    assert!(s.sonde.log().contains("works again"), "{}", s.sonde.log());
    let text = scrape(s.prom);
    assert!(text.contains("sonde_build_info"), "agent healthy: {text}");
    assert!(
        s.sonde.guard.child.try_wait().unwrap().is_none(),
        "sonde exited"
    );
    let after = rss_kib(s.sonde.pid(), "VmRSS");
    eprintln!("{sent} requests during the outage; sonde RSS {before} kB before, peak {peak} kB, {after} kB after");
    assert!(after < before + 64 * 1024, "{before} kB → {after} kB");
}

/// One GET with extra headers on its own connection; returns the status.
fn get_with_headers(port: u16, path: &str, headers: &[(String, String)]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An incoming `traceparent` makes the SERVER span (and the calls its handler makes, on its
/// goroutine or one it starts) join that trace, on both of Go's map layouts (buckets before
/// 1.24, swiss tables since), for small and large header sets.
#[test]
fn incoming_traceparent_joins_the_trace() {
    if !require_root_or_skip("incoming_traceparent_joins_the_trace") {
        return;
    }
    let targets: Vec<GoTarget> = ["1.19", "1.23", "1.24", "1.27"]
        .iter()
        .filter_map(|minor| {
            go_targets().into_iter().rfind(|t| {
                t.linkage == "static" && !t.stripped && t.version.starts_with(&format!("{minor}."))
            })
        })
        .collect();
    assert!(targets.len() >= 2, "need Go builds on both sides of 1.24");
    let ports: Vec<u16> = targets.iter().map(|_| free_port()).collect();
    let servers: Vec<ChildGuard> = targets
        .iter()
        .zip(&ports)
        .map(|(t, p)| spawn_go_server(&t.path, *p, false))
        .collect();
    let r = Receiver::http(free_port());
    let endpoint = format!("http://127.0.0.1:{}/v1/traces", r.port);
    let open = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let sonde = spawn_sonde(&[
        ("SONDE_OPEN_PORT", &open),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
    ]);
    for s in &servers {
        sonde.expect_instrumented(s.pid(), Duration::from_secs(30));
    }
    let upstream = free_port();
    let mut sent = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        for (j, extra) in [2usize, 14].into_iter().enumerate() {
            let trace_id: Vec<u8> = (0..16).map(|k| (i * 40 + j * 20 + k + 1) as u8).collect();
            let parent: Vec<u8> = (0..8).map(|k| (0xa0 + i * 8 + j * 4 + k) as u8).collect();
            let mut headers: Vec<(String, String)> = (0..extra)
                .map(|n| (format!("X-Extra-{n}"), format!("value-{n}")))
                .collect();
            headers.insert(
                extra / 2,
                (
                    "traceparent".into(),
                    format!("00-{}-{}-01", hex(&trace_id), hex(&parent)),
                ),
            );
            // The second call is made on a goroutine the handler starts.
            let path = format!("/call?url=http://127.0.0.1:{upstream}/&go={j}");
            assert_eq!(get_with_headers(*port, &path, &headers), 502);
            sent.push((*port, extra, trace_id, parent));
        }
    }
    // And one without: a new trace.
    assert_eq!(get_with_headers(ports[0], "/status/204", &[]), 204);
    wait_until(&r, Duration::from_secs(30), "the spans", |got| {
        all_spans(got).len() > 2 * sent.len()
    });
    let spans = all_spans(&r.got());
    for (port, extra, trace_id, parent) in &sent {
        let what = format!(
            "server on :{port} with {extra} more headers (call on a new goroutine: {})",
            *extra > 2
        );
        let in_trace: Vec<&Span> = spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.trace_id == *trace_id)
            .collect();
        let server = in_trace
            .iter()
            .find(|s| s.kind == SERVER)
            .unwrap_or_else(|| panic!("{what}: no SERVER span joined the trace"));
        assert_eq!(server.parent_span_id, *parent, "{what}: remote parent");
        assert_eq!(server.flags & 0x300, 0x300, "{what}: the parent is remote");
        let client = in_trace
            .iter()
            .find(|s| s.kind == CLIENT)
            .unwrap_or_else(|| panic!("{what}: the call is not in the trace"));
        assert_eq!(client.parent_span_id, server.span_id, "{what}");
        assert_eq!(client.flags & 0x300, 0x100, "{what}: a local parent");
    }
    let fresh = spans
        .iter()
        .find(|(_, s)| {
            s.name == "GET /**" && attr_int(&s.attributes, "http.response.status_code") == Some(204)
        })
        .unwrap();
    assert!(fresh.1.parent_span_id.is_empty());
    assert!(!sent.iter().any(|(_, _, t, _)| *t == fresh.1.trace_id));
}

/// Bad OTLP settings stop sonde before anything is attached, naming the variable; a
/// malformed header is reported without its value.
#[test]
fn bad_otlp_settings_exit_2_naming_the_variable() {
    let run = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(sonde_bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SONDE_OPEN_PORT", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (key, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "10s"),
        ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "often"),
        ("SONDE_TRACES_SAMPLER_RATIO", "2"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318"),
    ] {
        let (code, err) = run(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            (key, value),
        ]);
        assert_eq!(code, Some(2), "{key}={value}: {err}");
        assert!(err.contains(key) && err.contains(value), "{err}");
    }
    let (code, err) = run(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            &format!("Authorization Basic {SECRET}"),
        ),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{err}");
    assert!(!err.contains(SECRET), "the header value is echoed: {err}");

    // `sonde check` never shows them either.
    let out = std::process::Command::new(sonde_bin())
        .arg("check")
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            format!("Authorization=Basic%20{SECRET}"),
        )
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(SECRET), "{all}");
}

/// `GET path` with `Accept: accept`: (content type, body).
fn get_accepting(port: u16, path: &str, accept: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let ct = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (ct, body.to_string())
}

#[test]
fn exemplars_stored_by_prometheus_are_the_received_spans() {
    let test = "exemplars_stored_by_prometheus_are_the_received_spans";
    if !require_root_or_skip(test) {
        return;
    }
    if std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_missing(test, "prometheus");
        return;
    }
    let r = Receiver::http(free_port());
    let endpoint = format!("http://127.0.0.1:{}", r.port);
    let s = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
    ]);
    let prom = support::prometheus::LocalPrometheus::start(&[s.prom]);
    send_mix(s.front_port);
    let pid = i64::from(s.front.pid());
    wait_until(&r, Duration::from_secs(30), "the spans", |got| {
        all_spans(got)
            .iter()
            .filter(|(p, sp)| *p == Some(pid) && sp.kind == SERVER)
            .count()
            >= MIX.len()
    });
    let spans: HashMap<(String, String), Span> = all_spans(&r.got())
        .into_iter()
        .filter(|(p, _)| *p == Some(pid))
        .map(|(_, sp)| ((hex(&sp.trace_id), hex(&sp.span_id)), sp))
        .collect();

    // The exposition: text by default, OpenMetrics with exemplars when asked.
    let (ct, text) = get_accepting(s.prom, "/metrics", "text/plain");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(!text.contains("trace_id"));
    let (ct, om) = get_accepting(
        s.prom,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ct}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains("_bucket{") && om.contains(" # {trace_id=\""),
        "{om}"
    );

    // Prometheus scraped them: one exemplar per (series, bucket) a request fell in, each the
    // ids of a SERVER span the receiver got, for that method, with the span's duration.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = format!(
        "query_exemplars?query=http_server_request_duration_seconds_bucket&start={}&end={}",
        now - 600,
        now + 600
    );
    let t = Instant::now();
    let found = loop {
        let v = support::prometheus::api(prom.port, &path);
        let mut found = Vec::new();
        for series in v["data"].as_array().into_iter().flatten() {
            let labels = &series["seriesLabels"];
            for e in series["exemplars"].as_array().into_iter().flatten() {
                found.push((
                    labels["http_request_method"].as_str().unwrap().to_string(),
                    labels["le"].as_str().unwrap().parse::<f64>().unwrap(),
                    e["labels"]["trace_id"].as_str().unwrap().to_string(),
                    e["labels"]["span_id"].as_str().unwrap().to_string(),
                    e["value"].as_str().unwrap().parse::<f64>().unwrap(),
                ));
            }
        }
        let methods: std::collections::BTreeSet<&str> =
            found.iter().map(|f| f.0.as_str()).collect();
        if methods.len() == 5 || t.elapsed() > Duration::from_secs(30) {
            assert_eq!(
                methods.into_iter().collect::<Vec<_>>(),
                ["DELETE", "GET", "PATCH", "POST", "PUT"],
                "{v}"
            );
            break found;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    for (method, le, trace_id, span_id, value) in &found {
        let sp = spans
            .get(&(trace_id.clone(), span_id.clone()))
            .unwrap_or_else(|| {
                panic!("exemplar {trace_id}/{span_id} ({method}) is no span received")
            });
        assert_eq!(sp.kind, SERVER);
        assert!(sp.name.starts_with(&format!("{method} ")), "{}", sp.name);
        let secs = (sp.end_time_unix_nano - sp.start_time_unix_nano) as f64 / 1e9;
        assert!(
            (secs - value).abs() < 1e-6,
            "{method}: {value} vs span {secs}"
        );
        assert!(*value <= *le, "{method}: {value} in le={le}");
    }
    let patch = found.iter().find(|f| f.0 == "PATCH").unwrap();
    assert!(patch.4 >= 0.03, "the 30 ms request: {}", patch.4);

    // The same links as OTLP exemplars.
    wait_until(&r, Duration::from_secs(30), "OTLP exemplars", |got| {
        got.metrics.iter().any(|m| {
            m.resource_metrics.iter().any(|rm| {
                resource_pid(&rm.resource) == Some(pid)
                    && rm.scope_metrics.iter().any(|sm| {
                        sm.metrics.iter().any(|m| {
                            m.name == "http.server.request.duration"
                                && matches!(&m.data, Some(metric::Data::Histogram(h))
                                    if h.data_points.iter().any(|p| !p.exemplars.is_empty()))
                        })
                    })
            })
        })
    });
    let got = r.got();
    let last = got
        .metrics
        .iter()
        .rev()
        .flat_map(|m| &m.resource_metrics)
        .find(|rm| resource_pid(&rm.resource) == Some(pid))
        .unwrap();
    let mut n = 0;
    for m in last.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
        let Some(metric::Data::Histogram(h)) = &m.data else {
            continue;
        };
        for p in &h.data_points {
            for e in &p.exemplars {
                assert_eq!(m.name, "http.server.request.duration", "durations only");
                let key = (hex(&e.trace_id), hex(&e.span_id));
                assert!(
                    spans.contains_key(&key),
                    "OTLP exemplar {key:?} is no span received"
                );
                n += 1;
            }
        }
    }
    assert!(n >= 5, "{n} OTLP exemplars");
}
