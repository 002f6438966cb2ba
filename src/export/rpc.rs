//! gRPC call histograms: `rpc_{server,client}_call_duration_seconds` (semconv) or Beyla's
//! `rpc_{server,client}_duration_seconds`, with the same duration buckets as HTTP.

use super::{Family, Labels, DURATION_BUCKETS};
use crate::collect::RequestKind;
use crate::config::MetricsNaming;
use crate::enrich::EnrichedRequest;

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

pub fn status_name(code: u16) -> &'static str {
    STATUS_NAMES
        .get(usize::from(code))
        .copied()
        .unwrap_or("UNKNOWN")
}

pub(super) struct RpcFamilies {
    naming: MetricsNaming,
    server: Family,
    client: Family,
}

impl RpcFamilies {
    pub(super) fn new(naming: MetricsNaming) -> Self {
        let (server, client) = if naming == MetricsNaming::Semconv {
            (
                Family::new(
                    "rpc_server_call_duration_seconds",
                    "Duration of RPCs received.",
                    DURATION_BUCKETS,
                ),
                Family::new(
                    "rpc_client_call_duration_seconds",
                    "Duration of RPCs made.",
                    DURATION_BUCKETS,
                ),
            )
        } else {
            (
                Family::new(
                    "rpc_server_duration_seconds",
                    "duration of RPC service calls from the server side, in seconds",
                    DURATION_BUCKETS,
                ),
                Family::new(
                    "rpc_client_duration_seconds",
                    "duration of GRPC service calls from the client side, in seconds",
                    DURATION_BUCKETS,
                ),
            )
        };
        RpcFamilies {
            naming,
            server,
            client,
        }
    }

    /// The labels of one call: the method, the system, the status (a name under semconv,
    /// the integer code under Beyla's namings), identity, and the server for client calls.
    fn labels(&self, r: &EnrichedRequest) -> Labels {
        let q = &r.request;
        let client = q.kind == RequestKind::RpcClient;
        let mut l: Labels = vec![
            ("rpc_method", q.method.clone()),
            ("service_name", r.identity.service_name.clone()),
        ];
        match self.naming {
            MetricsNaming::Semconv => {
                l.push(("rpc_system_name", "grpc".into()));
                l.push(("rpc_response_status_code", status_name(q.status).into()));
            }
            MetricsNaming::BeylaV1 | MetricsNaming::BeylaV0 => {
                l.push(("rpc_system", "grpc".into()));
                l.push(("rpc_grpc_status_code", q.status.to_string()));
            }
        }
        if self.naming != MetricsNaming::BeylaV0 {
            l.push(("service_namespace", r.identity.service_namespace.clone()));
        }
        if client {
            let (address, port) = if self.naming == MetricsNaming::BeylaV0 {
                ("net_peer_name", "net_peer_port")
            } else {
                ("server_address", "server_port")
            };
            l.push((address, q.server_address.clone()));
            l.push((port, q.server_port.to_string()));
        }
        if let Some(c) = &r.identity.container_name {
            l.push(("container_name", c.clone()));
        }
        l.extend(r.identity.extra.iter().cloned());
        l.sort();
        l
    }

    pub(super) fn observe(&mut self, r: &EnrichedRequest) {
        let labels = self.labels(r);
        let family = if r.request.kind == RequestKind::RpcClient {
            &mut self.client
        } else {
            &mut self.server
        };
        family.observe(&labels, r.request.duration_seconds());
    }

    pub(super) fn exemplar(&mut self, r: &EnrichedRequest, e: super::Exemplar) {
        let labels = self.labels(r);
        let family = if r.request.kind == RequestKind::RpcClient {
            &mut self.client
        } else {
            &mut self.server
        };
        family.exemplar(&labels, e);
    }

    pub(super) fn render(&self, out: &mut String, openmetrics: bool) {
        self.server.render(out, openmetrics);
        self.client.render(out, openmetrics);
    }

    pub(super) fn retain(&mut self, keep: impl Fn(&Labels) -> bool) {
        self.server.series.retain(|l, _| keep(l));
        self.client.series.retain(|l, _| keep(l));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::Exporter;
    use super::*;
    use crate::collect::Request;
    use crate::enrich::Identity;

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
    fn status_names_cover_every_code() {
        assert_eq!(status_name(0), "OK");
        assert_eq!(status_name(12), "UNIMPLEMENTED");
        assert_eq!(status_name(16), "UNAUTHENTICATED");
        assert_eq!(status_name(17), "UNKNOWN");
    }
}
