//! Every exported request metric's name, HELP text, unit, bounds and label names, per
//! naming scheme: the Prometheus renderer and the OTLP encoder both read them from here,
//! so the two cannot drift apart.

use std::net::IpAddr;

use crate::collect::RequestKind;
use crate::config::MetricsNaming;
use crate::enrich::Identity;

pub(crate) const DURATION_BUCKETS: &[f64] = &[
    0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
pub(crate) const SIZE_BUCKETS: &[f64] = &[
    0.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// One histogram a request feeds. The order is the order families are rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Instrument {
    ServerDuration,
    ServerRequestSize,
    ServerResponseSize,
    ClientDuration,
    ClientRequestSize,
    ClientResponseSize,
    RpcServerDuration,
    RpcClientDuration,
}

use Instrument::*;

pub(crate) const INSTRUMENTS: [Instrument; 8] = [
    ServerDuration,
    ServerRequestSize,
    ServerResponseSize,
    ClientDuration,
    ClientRequestSize,
    ClientResponseSize,
    RpcServerDuration,
    RpcClientDuration,
];

impl Instrument {
    /// The histograms a request of `kind` feeds, in slot order (duration, request body,
    /// response body). Message sizes are not measured for RPC calls.
    pub(crate) fn of(kind: RequestKind) -> &'static [Instrument] {
        match kind {
            RequestKind::HttpServer => &[ServerDuration, ServerRequestSize, ServerResponseSize],
            RequestKind::HttpClient => &[ClientDuration, ClientRequestSize, ClientResponseSize],
            RequestKind::RpcServer => &[RpcServerDuration],
            RequestKind::RpcClient => &[RpcClientDuration],
        }
    }

    pub(crate) fn kind(self) -> RequestKind {
        match self {
            ServerDuration | ServerRequestSize | ServerResponseSize => RequestKind::HttpServer,
            ClientDuration | ClientRequestSize | ClientResponseSize => RequestKind::HttpClient,
            RpcServerDuration => RequestKind::RpcServer,
            RpcClientDuration => RequestKind::RpcClient,
        }
    }

    /// Index of this instrument in `Instrument::of(self.kind())`.
    pub(crate) fn slot(self) -> usize {
        match self {
            ServerRequestSize | ClientRequestSize => 1,
            ServerResponseSize | ClientResponseSize => 2,
            _ => 0,
        }
    }

    pub(crate) fn is_duration(self) -> bool {
        self.slot() == 0
    }

    pub(crate) fn bounds(self) -> &'static [f64] {
        if self.is_duration() {
            DURATION_BUCKETS
        } else {
            SIZE_BUCKETS
        }
    }

    pub(crate) fn otel_name(self) -> &'static str {
        match self {
            ServerDuration => "http.server.request.duration",
            ServerRequestSize => "http.server.request.body.size",
            ServerResponseSize => "http.server.response.body.size",
            ClientDuration => "http.client.request.duration",
            ClientRequestSize => "http.client.request.body.size",
            ClientResponseSize => "http.client.response.body.size",
            RpcServerDuration => "rpc.server.call.duration",
            RpcClientDuration => "rpc.client.call.duration",
        }
    }

    pub(crate) fn otel_unit(self) -> &'static str {
        if self.is_duration() {
            "s"
        } else {
            "By"
        }
    }

    /// The semantic-convention description: OTLP's, and the HELP of the `semconv` naming.
    pub(crate) fn description(self) -> &'static str {
        match self {
            ServerDuration => "Duration of HTTP server requests.",
            ServerRequestSize => "Size of HTTP server request bodies.",
            ServerResponseSize => "Size of HTTP server response bodies.",
            ClientDuration => "Duration of HTTP client requests.",
            ClientRequestSize => "Size of HTTP client request bodies.",
            ClientResponseSize => "Size of HTTP client response bodies.",
            RpcServerDuration => "Duration of RPCs received.",
            RpcClientDuration => "Duration of RPCs made.",
        }
    }

    /// The Prometheus family name and HELP under `naming`; `None` where that naming has no
    /// such family (Beyla's namings have no response sizes).
    pub(crate) fn prometheus(self, naming: MetricsNaming) -> Option<(&'static str, &'static str)> {
        if naming == MetricsNaming::Semconv {
            let name = match self {
                ServerDuration => "http_server_request_duration_seconds",
                ServerRequestSize => "http_server_request_body_size_bytes",
                ServerResponseSize => "http_server_response_body_size_bytes",
                ClientDuration => "http_client_request_duration_seconds",
                ClientRequestSize => "http_client_request_body_size_bytes",
                ClientResponseSize => "http_client_response_body_size_bytes",
                RpcServerDuration => "rpc_server_call_duration_seconds",
                RpcClientDuration => "rpc_client_call_duration_seconds",
            };
            return Some((name, self.description()));
        }
        // Beyla's names and HELP texts, word for word.
        Some(match self {
            ServerDuration => (
                "http_server_duration_seconds",
                "duration of HTTP service calls from the server side, in seconds",
            ),
            ServerRequestSize => (
                "http_server_request_size_bytes",
                "size, in bytes, of the HTTP request body as received at the server side",
            ),
            ClientDuration => (
                "http_client_duration_seconds",
                "duration of HTTP service calls from the client side, in seconds",
            ),
            ClientRequestSize => (
                "http_client_request_size_bytes",
                "size, in bytes, of the HTTP request body as sent from the client side",
            ),
            RpcServerDuration => (
                "rpc_server_duration_seconds",
                "duration of RPC service calls from the server side, in seconds",
            ),
            RpcClientDuration => (
                "rpc_client_duration_seconds",
                "duration of GRPC service calls from the client side, in seconds",
            ),
            ServerResponseSize | ClientResponseSize => return None,
        })
    }
}

/// gRPC status names as semconv's `rpc.response.status_code` spells them, by code.
const STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub(crate) fn status_name(code: u16) -> &'static str {
    STATUS_NAMES
        .get(usize::from(code))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// What distinguishes one request series from another within a process: only the fields
/// the labels are made of, so two requests with the same labels share a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestKey {
    pub kind: RequestKind,
    pub method: String,
    pub status: u16,
    pub error: bool,
    /// HTTP server only.
    pub route: String,
    /// Client calls only.
    pub server_address: String,
    pub server_port: u16,
    /// HTTP, when `metrics_report_target`.
    pub path: Option<String>,
    /// HTTP server, when `metrics_report_peer`.
    pub peer: Option<Option<IpAddr>>,
    /// The series new label sets go to once the store is full.
    pub overflow: bool,
}

/// Label set, sorted by name: the order Prometheus clients print.
pub(crate) type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
}

/// OTLP attribute set of one series, sorted by key.
pub(crate) type Attrs = Vec<(&'static str, Value)>;

/// The Prometheus labels of a series under `naming`.
pub(crate) fn prometheus_labels(naming: MetricsNaming, id: &Identity, k: &RequestKey) -> Labels {
    if k.overflow {
        return vec![("otel_metric_overflow", "true".into())];
    }
    let v0 = naming == MetricsNaming::BeylaV0;
    let mut l: Labels = vec![
        ("service_name", id.service_name.clone()),
        (
            if k.kind.is_rpc() {
                "rpc_method"
            } else if v0 {
                "http_method"
            } else {
                "http_request_method"
            },
            k.method.clone(),
        ),
    ];
    match (k.kind.is_rpc(), naming) {
        (true, MetricsNaming::Semconv) => {
            l.push(("rpc_system_name", "grpc".into()));
            l.push(("rpc_response_status_code", status_name(k.status).into()));
        }
        (true, _) => {
            l.push(("rpc_system", "grpc".into()));
            l.push(("rpc_grpc_status_code", k.status.to_string()));
        }
        (false, _) => {
            let status = if k.error {
                String::new()
            } else {
                k.status.to_string()
            };
            let name = if v0 {
                "http_status_code"
            } else {
                "http_response_status_code"
            };
            l.push((name, status));
        }
    }
    match k.kind {
        RequestKind::HttpServer => l.push(("http_route", k.route.clone())),
        RequestKind::HttpClient => {
            // semconv's fallback value: the kernel side sees that a call failed, not why.
            let error = if k.error { "_OTHER" } else { "" };
            l.push(("error_type", error.to_string()));
        }
        RequestKind::RpcServer | RequestKind::RpcClient => {}
    }
    if matches!(k.kind, RequestKind::HttpClient | RequestKind::RpcClient) {
        let (address, port) = if v0 {
            ("net_peer_name", "net_peer_port")
        } else {
            ("server_address", "server_port")
        };
        l.push((address, k.server_address.clone()));
        l.push((port, k.server_port.to_string()));
    }
    if !v0 {
        l.push(("service_namespace", id.service_namespace.clone()));
    }
    if let Some(c) = &id.container_name {
        l.push(("container_name", c.clone()));
    }
    l.extend(id.extra.iter().cloned());
    if let Some(path) = &k.path {
        l.push((if v0 { "http_target" } else { "url_path" }, path.clone()));
    }
    if let Some(peer) = &k.peer {
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        l.push((
            if v0 {
                "net_sock_peer_addr"
            } else {
                "client_address"
            },
            peer,
        ));
    }
    l.sort();
    l
}

/// The OTLP attributes of a series: always the semantic-convention names; the identity
/// goes in the resource.
pub(crate) fn otel_attrs(k: &RequestKey) -> Attrs {
    let s = |v: &str| Value::Str(v.to_string());
    if k.overflow {
        return vec![("otel.metric.overflow", s("true"))];
    }
    let mut a: Attrs = Vec::with_capacity(6);
    if k.kind.is_rpc() {
        // The method is `/pkg.Service/Method`; the status, gRPC's code.
        a.push(("rpc.method", s(&k.method)));
        a.push(("rpc.system.name", s("grpc")));
        a.push(("rpc.response.status_code", s(status_name(k.status))));
    } else {
        a.push(("http.request.method", s(&k.method)));
        if k.kind == RequestKind::HttpClient && k.error {
            // semconv's fallback: the kernel sees that a call failed, not why.
            a.push(("error.type", s("_OTHER")));
        } else {
            a.push(("http.response.status_code", Value::Int(k.status.into())));
        }
    }
    if k.kind == RequestKind::HttpServer {
        a.push(("http.route", s(&k.route)));
    }
    if matches!(k.kind, RequestKind::HttpClient | RequestKind::RpcClient) {
        a.push(("server.address", s(&k.server_address)));
        a.push(("server.port", Value::Int(k.server_port.into())));
    }
    if let Some(peer) = &k.peer {
        a.push((
            "client.address",
            Value::Str(peer.map(|p| p.to_string()).unwrap_or_default()),
        ));
    }
    if let Some(path) = &k.path {
        a.push(("url.path", s(path)));
    }
    a.sort();
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instrument_has_a_slot_in_its_kind() {
        for i in INSTRUMENTS {
            assert_eq!(Instrument::of(i.kind())[i.slot()], i);
            let (name, _) = match i.prometheus(MetricsNaming::Semconv) {
                Some(p) => p,
                None => panic!("{i:?}"),
            };
            // semconv's Prometheus name is the OTel name with its unit.
            let unit = if i.is_duration() {
                "_seconds"
            } else {
                "_bytes"
            };
            assert_eq!(name, format!("{}{unit}", i.otel_name().replace('.', "_")));
        }
    }

    #[test]
    fn status_names_cover_every_code() {
        assert_eq!(status_name(0), "OK");
        assert_eq!(status_name(12), "UNIMPLEMENTED");
        assert_eq!(status_name(16), "UNAUTHENTICATED");
        assert_eq!(status_name(17), "UNKNOWN");
    }
}
