//! Prometheus export: histograms per naming, agent health, the scrape endpoint.
//!
//! The text is rendered by our own small writer instead of metrics-exporter-prometheus: the
//! output must reproduce Beyla's exactly (label order, `le` formatting, HELP texts), and a
//! per-request record is one short lock and a few additions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use thiserror::Error;

#[cfg(test)]
mod dashboards;
mod rpc;

use crate::config::{Config, MetricsNaming};
use crate::enrich::EnrichedRequest;

pub mod otlp;

pub const DURATION_BUCKETS: &[f64] = &[
    0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
pub const SIZE_BUCKETS: &[f64] = &[
    0.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("cannot listen on port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
}

/// Names and label names of one naming scheme.
struct Names {
    duration: &'static str,
    duration_help: &'static str,
    request_size: &'static str,
    request_size_help: &'static str,
    /// semconv only.
    response_size: Option<(&'static str, &'static str)>,
    method: &'static str,
    status: &'static str,
    url_path: &'static str,
    peer: &'static str,
    server_address: &'static str,
    server_port: &'static str,
    namespace: bool,
}

fn names(naming: MetricsNaming, client: bool) -> Names {
    let v0 = naming == MetricsNaming::BeylaV0;
    let (server_address, server_port) = if v0 {
        ("net_peer_name", "net_peer_port")
    } else {
        ("server_address", "server_port")
    };
    let method = if v0 {
        "http_method"
    } else {
        "http_request_method"
    };
    let status = if v0 {
        "http_status_code"
    } else {
        "http_response_status_code"
    };
    let url_path = if v0 { "http_target" } else { "url_path" };
    let peer = if v0 {
        "net_sock_peer_addr"
    } else {
        "client_address"
    };
    let common = |duration, duration_help, request_size, request_size_help, response_size| Names {
        duration,
        duration_help,
        request_size,
        request_size_help,
        response_size,
        method,
        status,
        url_path,
        peer,
        server_address,
        server_port,
        namespace: !v0,
    };
    match (naming, client) {
        (MetricsNaming::Semconv, false) => common(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests.",
            "http_server_request_body_size_bytes",
            "Size of HTTP server request bodies.",
            Some((
                "http_server_response_body_size_bytes",
                "Size of HTTP server response bodies.",
            )),
        ),
        (MetricsNaming::Semconv, true) => common(
            "http_client_request_duration_seconds",
            "Duration of HTTP client requests.",
            "http_client_request_body_size_bytes",
            "Size of HTTP client request bodies.",
            Some((
                "http_client_response_body_size_bytes",
                "Size of HTTP client response bodies.",
            )),
        ),
        (_, false) => common(
            "http_server_duration_seconds",
            "duration of HTTP service calls from the server side, in seconds",
            "http_server_request_size_bytes",
            "size, in bytes, of the HTTP request body as received at the server side",
            None,
        ),
        (_, true) => common(
            "http_client_duration_seconds",
            "duration of HTTP service calls from the client side, in seconds",
            "http_client_request_size_bytes",
            "size, in bytes, of the HTTP request body as sent from the client side",
            None,
        ),
    }
}

/// The trace of a recent request in one bucket: a link from a slow bucket to its trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub value: f64,
    pub unix_ms: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
    /// Per bucket, the newest sampled request's trace; empty until traces are on.
    exemplars: Vec<Option<Exemplar>>,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Histogram {
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
            exemplars: Vec::new(),
        }
    }

    fn observe(&mut self, bounds: &[f64], v: f64) {
        let i = bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// Label set, sorted by name: the order Prometheus clients print.
type Labels = Vec<(&'static str, String)>;

struct Family {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    series: BTreeMap<Labels, Histogram>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Self {
        Family {
            name,
            help,
            bounds,
            series: BTreeMap::new(),
        }
    }

    fn observe(&mut self, labels: &Labels, v: f64) {
        let bounds = self.bounds;
        if let Some(h) = self.series.get_mut(labels) {
            h.observe(bounds, v);
        } else {
            let mut h = Histogram::new(bounds);
            h.observe(bounds, v);
            self.series.insert(labels.clone(), h);
        }
    }

    /// Attaches the exemplar to the bucket its value falls in, on a series `observe` made.
    fn exemplar(&mut self, labels: &Labels, e: Exemplar) {
        let bounds = self.bounds;
        if let Some(h) = self.series.get_mut(labels) {
            let i = bounds
                .iter()
                .position(|&b| e.value <= b)
                .unwrap_or(bounds.len());
            if h.exemplars.is_empty() {
                h.exemplars = vec![None; bounds.len() + 1];
            }
            h.exemplars[i] = Some(e);
        }
    }

    /// The text format, or OpenMetrics (which alone carries exemplars).
    fn render(&self, out: &mut String, openmetrics: bool) {
        if self.series.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} histogram", self.name);
        for (labels, h) in &self.series {
            let mut base = String::new();
            for (k, v) in labels {
                let _ = write!(base, "{k}=\"{}\",", escape(v));
            }
            let mut cumulative = 0;
            for (i, c) in h.counts.iter().enumerate() {
                cumulative += c;
                let le = match self.bounds.get(i) {
                    Some(b) => format!("{b}"),
                    None => "+Inf".to_string(),
                };
                let _ = write!(
                    out,
                    "{}_bucket{{{base}le=\"{le}\"}} {cumulative}",
                    self.name
                );
                if let Some(Some(e)) = h.exemplars.get(i).filter(|_| openmetrics) {
                    let _ = write!(
                        out,
                        " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {}.{:03}",
                        hex(&e.trace_id),
                        hex(&e.span_id),
                        e.value,
                        e.unix_ms / 1000,
                        e.unix_ms % 1000
                    );
                }
                out.push('\n');
            }
            let plain = base.trim_end_matches(',');
            let _ = writeln!(out, "{}_sum{{{plain}}} {}", self.name, h.sum);
            let _ = writeln!(out, "{}_count{{{plain}}} {}", self.name, h.count);
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The reasons `inspect` gives for not instrumenting a binary (`InspectError::reason`).
const SKIP_REASONS: &[&str] = &[
    "io",
    "too_large",
    "not_elf",
    "unsupported_arch",
    "not_go",
    "go_too_old",
    "malformed",
    "missing_function",
    "no_offsets",
    "timeout",
];

/// Counters about sonde itself, shared by every stage.
#[derive(Default)]
pub struct Health {
    instrumented: AtomicU64,
    links: AtomicU64,
    armed_links: AtomicU64,
    attach_errors: AtomicU64,
    events: AtomicU64,
    lost: AtomicU64,
    skipped: Mutex<BTreeMap<&'static str, u64>>,
    /// OTLP export attempts that failed, and data dropped: [metrics, traces].
    otlp_errors: [AtomicU64; 2],
    otlp_dropped: [AtomicU64; 2],
}

impl Health {
    pub fn set_instrumented_processes(&self, n: u64) {
        self.instrumented.store(n, Ordering::Relaxed);
    }
    pub fn set_uprobe_links(&self, n: u64) {
        self.links.store(n, Ordering::Relaxed);
    }
    pub fn set_armed_uprobe_links(&self, n: u64) {
        self.armed_links.store(n, Ordering::Relaxed);
    }
    pub fn inc_attach_errors(&self) {
        self.attach_errors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add_events_lost(&self, n: u64) {
        self.lost.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc_skipped(&self, reason: &'static str) {
        *self
            .skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    pub fn inc_otlp_export_errors(&self, signal: otlp::Signal) {
        self.otlp_errors[signal as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn add_otlp_dropped(&self, signal: otlp::Signal, n: u64) {
        self.otlp_dropped[signal as usize].fetch_add(n, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, openmetrics: bool) {
        let mut metric = |name: &str, kind: &str, help: &str, body: String| {
            // OpenMetrics names a counter's family without the `_total` of its samples.
            let family = match openmetrics {
                true => name.strip_suffix("_total").unwrap_or(name),
                false => name,
            };
            let _ = writeln!(
                out,
                "# HELP {family} {help}\n# TYPE {family} {kind}\n{body}"
            );
        };
        metric(
            "sonde_build_info",
            "gauge",
            "sonde's version.",
            format!(
                "sonde_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
        );
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric(
            "sonde_instrumented_processes",
            "gauge",
            "Processes with probes attached now.",
            format!("sonde_instrumented_processes {}", g(&self.instrumented)),
        );
        metric(
            "sonde_uprobe_links",
            "gauge",
            "Uprobe links held: attached, or detached and still being closed.",
            format!("sonde_uprobe_links {}", g(&self.links)),
        );
        metric(
            "sonde_armed_uprobe_links",
            "gauge",
            "Of those, the links of files armed as a whole (executable_name's files, container images' programs).",
            format!("sonde_armed_uprobe_links {}", g(&self.armed_links)),
        );
        metric(
            "sonde_attach_errors_total",
            "counter",
            "Processes sonde failed to attach probes to.",
            format!("sonde_attach_errors_total {}", g(&self.attach_errors)),
        );
        metric(
            "sonde_events_total",
            "counter",
            "Requests received from the kernel.",
            format!("sonde_events_total {}", g(&self.events)),
        );
        metric(
            "sonde_events_lost_total",
            "counter",
            "Requests the kernel dropped because the ring buffer was full.",
            format!("sonde_events_lost_total {}", g(&self.lost)),
        );
        let by_signal = |name: &str, a: &[AtomicU64; 2]| {
            [otlp::Signal::Metrics, otlp::Signal::Traces]
                .iter()
                .map(|s| format!("{name}{{signal=\"{}\"}} {}", s.name(), g(&a[*s as usize])))
                .collect::<Vec<_>>()
                .join("\n")
        };
        metric(
            "sonde_otlp_export_errors_total",
            "counter",
            "OTLP export attempts that failed (endpoint down, slow, or refusing).",
            by_signal("sonde_otlp_export_errors_total", &self.otlp_errors),
        );
        metric(
            "sonde_otlp_dropped_total",
            "counter",
            "OTLP data given up on: metric export requests, or spans.",
            by_signal("sonde_otlp_dropped_total", &self.otlp_dropped),
        );
        // Every known reason from the start, at 0: `increase()` then sees the first skip, and
        // a dashboard panel on this family is never empty.
        let mut skipped = self
            .skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for r in SKIP_REASONS {
            skipped.entry(r).or_default();
        }
        let body = skipped
            .iter()
            .map(|(r, n)| format!("sonde_skipped_binaries_total{{reason=\"{r}\"}} {n}"))
            .collect::<Vec<_>>()
            .join("\n");
        metric(
            "sonde_skipped_binaries_total",
            "counter",
            "Selected processes not instrumented, by reason.",
            body,
        );
    }
}

/// The histograms of one side (server or client) under one naming.
struct Families {
    duration: Family,
    request_size: Family,
    response_size: Option<Family>,
}

impl Families {
    fn new(names: &Names) -> Self {
        Families {
            duration: Family::new(names.duration, names.duration_help, DURATION_BUCKETS),
            request_size: Family::new(names.request_size, names.request_size_help, SIZE_BUCKETS),
            response_size: names
                .response_size
                .map(|(n, h)| Family::new(n, h, SIZE_BUCKETS)),
        }
    }

    fn observe(&mut self, labels: &Labels, r: &crate::collect::Request) {
        self.duration.observe(labels, r.duration_seconds());
        self.request_size
            .observe(labels, r.request_body_bytes as f64);
        if let Some(resp) = self.response_size.as_mut() {
            resp.observe(labels, r.response_body_bytes as f64);
        }
    }

    fn render(&self, out: &mut String, openmetrics: bool) {
        self.duration.render(out, openmetrics);
        self.request_size.render(out, openmetrics);
        if let Some(resp) = &self.response_size {
            resp.render(out, openmetrics);
        }
    }

    fn retain(&mut self, keep: impl Fn(&Labels) -> bool) {
        self.duration.series.retain(|l, _| keep(l));
        self.request_size.series.retain(|l, _| keep(l));
        if let Some(r) = self.response_size.as_mut() {
            r.series.retain(|l, _| keep(l));
        }
    }
}

pub struct Exporter {
    server_names: Names,
    client_names: Names,
    report_target: bool,
    report_peer: bool,
    /// Server families, then client families.
    families: Mutex<(Families, Families)>,
    rpc: Mutex<rpc::RpcFamilies>,
    health: Health,
    /// Containers that stopped, with when their series expire.
    retiring: Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Exporter {
    pub fn new(config: &Config) -> Self {
        Self::with(
            config.metrics_naming,
            config.metrics_report_target,
            config.metrics_report_peer,
        )
    }

    pub fn with(naming: MetricsNaming, report_target: bool, report_peer: bool) -> Self {
        let server_names = names(naming, false);
        let client_names = names(naming, true);
        let families = (Families::new(&server_names), Families::new(&client_names));
        Exporter {
            server_names,
            client_names,
            report_target,
            report_peer,
            families: Mutex::new(families),
            rpc: Mutex::new(rpc::RpcFamilies::new(naming)),
            health: Health::default(),
            retiring: Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    fn labels(&self, r: &EnrichedRequest) -> Labels {
        let client = r.request.kind == crate::collect::RequestKind::HttpClient;
        let n = if client {
            &self.client_names
        } else {
            &self.server_names
        };
        let status = if r.request.error {
            String::new()
        } else {
            r.request.status.to_string()
        };
        let mut l: Labels = vec![
            (n.method, r.request.method.clone()),
            (n.status, status),
            ("service_name", r.identity.service_name.clone()),
        ];
        if client {
            l.push((n.server_address, r.request.server_address.clone()));
            l.push((n.server_port, r.request.server_port.to_string()));
            // semconv's fallback value: the kernel side sees that a call failed, not why.
            let error = if r.request.error { "_OTHER" } else { "" };
            l.push(("error_type", error.to_string()));
        } else {
            l.push(("http_route", r.route.clone()));
        }
        if n.namespace {
            l.push(("service_namespace", r.identity.service_namespace.clone()));
        }
        if let Some(c) = &r.identity.container_name {
            l.push(("container_name", c.clone()));
        }
        l.extend(r.identity.extra.iter().cloned());
        if self.report_target {
            l.push((n.url_path, r.request.path.clone()));
        }
        if self.report_peer && !client {
            let peer = r.request.peer.map(|p| p.to_string()).unwrap_or_default();
            l.push((n.peer, peer));
        }
        l.sort();
        l
    }

    pub fn record(&self, r: &EnrichedRequest) {
        if r.request.kind.is_rpc() {
            self.health.events.fetch_add(1, Ordering::Relaxed);
            let mut f = self.rpc.lock().unwrap_or_else(|p| p.into_inner());
            f.observe(r);
            return;
        }
        let labels = self.labels(r);
        self.health.events.fetch_add(1, Ordering::Relaxed);
        let mut f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        match r.request.kind {
            crate::collect::RequestKind::HttpServer => f.0.observe(&labels, &r.request),
            crate::collect::RequestKind::HttpClient => f.1.observe(&labels, &r.request),
            crate::collect::RequestKind::RpcServer | crate::collect::RequestKind::RpcClient => {}
        }
    }

    /// The trace of a request `record` just counted, as the exemplar of its duration bucket.
    pub fn exemplar(&self, r: &EnrichedRequest, trace_id: [u8; 16], span_id: [u8; 8]) {
        let e = Exemplar {
            trace_id,
            span_id,
            value: r.request.duration_seconds(),
            unix_ms: otlp::traces::WallClock::now_unix_ns() / 1_000_000,
        };
        if r.request.kind.is_rpc() {
            self.rpc
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .exemplar(r, e);
            return;
        }
        let labels = self.labels(r);
        let mut f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        match r.request.kind {
            crate::collect::RequestKind::HttpServer => f.0.duration.exemplar(&labels, e),
            crate::collect::RequestKind::HttpClient => f.1.duration.exemplar(&labels, e),
            crate::collect::RequestKind::RpcServer | crate::collect::RequestKind::RpcClient => {}
        }
    }

    /// The container stopped: its series go at `expires` unless it comes back first.
    pub fn retire_container(&self, name: &str, expires: std::time::Instant) {
        self.retiring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), expires);
    }

    pub fn revive_container(&self, name: &str) {
        self.retiring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Drops the series of containers whose time is up.
    pub fn sweep(&self, now: std::time::Instant) {
        let expired: Vec<String> = {
            let mut retiring = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
            let gone = retiring
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>();
            for n in &gone {
                retiring.remove(n);
            }
            gone
        };
        if expired.is_empty() {
            return;
        }
        let keep = |labels: &Labels| {
            !labels
                .iter()
                .any(|(k, v)| *k == "container_name" && expired.contains(v))
        };
        let mut f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        f.0.retain(keep);
        f.1.retain(keep);
        drop(f);
        self.rpc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(keep);
        tracing::info!("expired the series of stopped containers {expired:?}");
    }

    /// The Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        self.render_as(false)
    }

    /// OpenMetrics 1.0: the same samples, with exemplars on the duration buckets.
    pub fn render_openmetrics(&self) -> String {
        self.render_as(true)
    }

    fn render_as(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        {
            let f = self.families.lock().unwrap_or_else(|p| p.into_inner());
            f.0.render(&mut out, openmetrics);
            f.1.render(&mut out, openmetrics);
        }
        self.rpc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .render(&mut out, openmetrics);
        self.health.render(&mut out, openmetrics);
        if openmetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// One line per request for `print_traces`.
pub fn print_trace_line(r: &EnrichedRequest) -> String {
    let q = &r.request;
    if q.kind.is_rpc() {
        let side = if q.kind == crate::collect::RequestKind::RpcClient {
            format!(" server={}:{}", q.server_address, q.server_port)
        } else {
            String::new()
        };
        return format!(
            "{:.3}ms grpc {} {}{side} service={} pid={}",
            q.duration_seconds() * 1e3,
            q.method,
            rpc::status_name(q.status),
            r.identity.service_name,
            q.pid,
        );
    }
    format!(
        "{:.3}ms {} {} {} ({}) peer={} service={} pid={}{}",
        q.duration_seconds() * 1e3,
        q.method,
        q.status,
        q.path,
        r.route,
        q.peer.map(|p| p.to_string()).unwrap_or_default(),
        r.identity.service_name,
        q.pid,
        if q.http2 { " h2" } else { "" },
    )
}

/// Binds the scrape port first, so a used port is a clear error instead of a panic.
pub async fn bind(port: u16) -> Result<tokio::net::TcpListener, ExportError> {
    tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|source| ExportError::Bind { port, source })
}

pub async fn serve(listener: tokio::net::TcpListener, exporter: Arc<Exporter>, path: String) {
    use warp::Filter;
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let route = warp::get()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("accept"))
        .and_then(move |full: warp::path::FullPath, accept: Option<String>| {
            let exporter = exporter.clone();
            let wanted = segments.clone();
            async move {
                let got: Vec<&str> = full.as_str().split('/').filter(|s| !s.is_empty()).collect();
                if got != wanted {
                    return Err(warp::reject::not_found());
                }
                // Prometheus asks for OpenMetrics first; only that format has exemplars.
                let reply = if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
                    (
                        exporter.render_openmetrics(),
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                } else {
                    (
                        exporter.render(),
                        "text/plain; version=0.0.4; charset=utf-8",
                    )
                };
                Ok::<_, warp::Rejection>(warp::reply::with_header(reply.0, "content-type", reply.1))
            }
        });
    warp::serve(route).incoming(listener).run().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{Request, RequestKind};
    use crate::enrich::Identity;

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
        e.record(&request("GET", 200, 0.01, "/", Some("web-2")));
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
        let e = Exporter::with(MetricsNaming::BeylaV0, false, false);
        e.health().inc_skipped("not_go");
        e.health().inc_skipped("not_go");
        e.health().add_events_lost(3);
        let text = e.render();
        assert!(text.contains("sonde_skipped_binaries_total{reason=\"not_go\"} 2\n"));
        assert!(text.contains("sonde_skipped_binaries_total{reason=\"timeout\"} 0\n"));
        assert!(text.contains("sonde_events_lost_total 3\n"));
        assert!(text.contains(&format!(
            "sonde_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }
}
