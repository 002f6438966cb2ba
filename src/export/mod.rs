//! Export: one store of request series (`store`), rendered as Prometheus text
//! (`prometheus`) and encoded as OTLP metrics (`otlp::metrics`); names, HELP texts and
//! labels of every naming in `names`; agent health in `health`; the scrape endpoint.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod dashboards;
mod health;
mod histogram;
pub(crate) mod names;
mod prometheus;
pub(crate) mod store;

use crate::config::Config;
use crate::enrich::EnrichedRequest;

pub(crate) mod otlp;

pub(crate) use health::Health;
pub(crate) use names::status_name;
use store::Store;

#[derive(Debug, Error)]
pub(crate) enum ExportError {
    #[error("cannot listen on port {port}: {source}")]
    Bind { port: u16, source: std::io::Error },
}

/// Series of a stopped container (and of an exited process) outlive it this long by default.
#[cfg(test)]
const DEFAULT_SERIES_TTL: std::time::Duration = std::time::Duration::from_secs(300);

pub(crate) struct Exporter {
    store: Store,
    health: Health,
}

impl Exporter {
    pub(crate) fn new(config: &Config) -> Self {
        Exporter {
            store: Store::new(
                config.metrics_naming,
                config.metrics_report_target,
                config.metrics_report_peer,
                config.container_series_ttl,
                store::DEFAULT_MAX_SERIES,
            ),
            health: Health::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn with(
        naming: crate::config::MetricsNaming,
        report_target: bool,
        report_peer: bool,
    ) -> Self {
        Exporter {
            store: Store::new(
                naming,
                report_target,
                report_peer,
                DEFAULT_SERIES_TTL,
                store::DEFAULT_MAX_SERIES,
            ),
            health: Health::default(),
        }
    }

    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn record(&self, r: &EnrichedRequest) {
        self.health.events.fetch_add(1, Ordering::Relaxed);
        self.store.record(r, otlp::traces::WallClock::now_unix_ns);
    }

    /// The trace of a request `record` just counted, as the exemplar of its duration bucket.
    pub(crate) fn exemplar(&self, r: &EnrichedRequest, trace_id: [u8; 16], span_id: [u8; 8]) {
        let now = otlp::traces::WallClock::now_unix_ns();
        self.store.exemplar(r, trace_id, span_id, now);
    }

    /// The container stopped: its series go at `expires` unless it comes back first.
    pub(crate) fn retire_container(&self, name: &str, expires: Instant) {
        self.store.retire_container(name, expires);
    }

    pub(crate) fn revive_container(&self, name: &str) {
        self.store.revive_container(name);
    }

    /// Drops the series of containers whose time is up.
    pub(crate) fn sweep(&self, now: Instant) {
        self.store.sweep(now, store::pid_alive);
    }

    /// The Prometheus text format (0.0.4).
    pub(crate) fn render(&self) -> String {
        self.render_as(false)
    }

    /// OpenMetrics 1.0: the same samples, with exemplars on the duration buckets.
    pub(crate) fn render_openmetrics(&self) -> String {
        self.render_as(true)
    }

    fn render_as(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        prometheus::render_requests(&self.store, &mut out, openmetrics);
        self.health.render(&mut out, openmetrics);
        if openmetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

/// One line per request for `print_traces`.
pub(crate) fn print_trace_line(r: &EnrichedRequest) -> String {
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
            status_name(q.status),
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
pub(crate) async fn bind(port: u16) -> Result<tokio::net::TcpListener, ExportError> {
    tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|source| ExportError::Bind { port, source })
}

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    exporter: Arc<Exporter>,
    path: String,
) {
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
