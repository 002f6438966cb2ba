//! Raw kernel records → typed `Request`s. Pure: tested without a kernel.

use std::net::{IpAddr, SocketAddr};

use super::{Request, RequestKind, TraceContext};
use crate::ebpf_abi::{self, HttpRequestEvent, RpcRequestEvent};

/// Why a record was not turned into a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
}

fn text(bytes: &[u8], len: usize) -> String {
    String::from_utf8_lossy(&bytes[..len.min(bytes.len())]).into_owned()
}

/// Go's `Request.RemoteAddr` is "ip:port" or "[ipv6]:port".
pub(crate) fn parse_peer(remote: &str) -> Option<IpAddr> {
    remote
        .parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| remote.parse::<IpAddr>())
        .ok()
}

/// `host:port`, `[v6]:port` or a bare host (port from the scheme).
pub(crate) fn split_host(host: &str, https: bool) -> (String, u16) {
    let default = if https { 443 } else { 80 };
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((ip, port)) = rest.split_once(']') {
            let port = port.strip_prefix(':').and_then(|p| p.parse().ok());
            return (ip.to_string(), port.unwrap_or(default));
        }
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(default)),
        _ => (host.to_string(), default),
    }
}

pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
    // Every event starts with its kind; RPC events have their own layout.
    if matches!(
        bytes.first(),
        Some(&ebpf_abi::EVENT_RPC_SERVER) | Some(&ebpf_abi::EVENT_RPC_CLIENT)
    ) {
        return decode_rpc(bytes);
    }
    let e = HttpRequestEvent::from_bytes(bytes).ok_or(DecodeError::Short(bytes.len()))?;
    let kind = match e.kind {
        ebpf_abi::EVENT_HTTP_SERVER => RequestKind::HttpServer,
        ebpf_abi::EVENT_HTTP_CLIENT => RequestKind::HttpClient,
        other => return Err(DecodeError::UnknownKind(other)),
    };
    let remote = text(&e.remote, e.remote_len as usize);
    let flag = |f: u8| e.flags & f != 0;
    let mut request = Request {
        kind,
        pid: e.pid,
        start_ns: e.start_ns,
        end_ns: e.end_ns.max(e.start_ns),
        method: text(&e.method, e.method_len as usize),
        path: text(&e.path, e.path_len as usize),
        path_truncated: flag(ebpf_abi::FLAG_PATH_TRUNCATED),
        status: u16::try_from(e.status).unwrap_or(0),
        // -1 means unknown length (chunked): no body size can be claimed.
        request_body_bytes: e.request_content_length.max(0) as u64,
        response_body_bytes: e.response_written.max(0) as u64,
        peer: None,
        http2: flag(ebpf_abi::FLAG_HTTP2),
        server_address: String::new(),
        server_port: 0,
        error: false,
        trace: (e.trace_id != [0; 16]).then_some(TraceContext {
            trace_id: e.trace_id,
            span_id: e.span_id,
            parent_span_id: (e.parent_span_id != [0; 8]).then_some(e.parent_span_id),
            remote_parent: flag(ebpf_abi::FLAG_REMOTE_PARENT),
        }),
    };
    match kind {
        RequestKind::HttpServer => {
            // The handler wrote nothing and never called WriteHeader: net/http answers 200.
            if e.status == 0 {
                request.status = 200;
            }
            request.peer = parse_peer(&remote);
        }
        RequestKind::HttpClient => {
            (request.server_address, request.server_port) =
                split_host(&remote, flag(ebpf_abi::FLAG_HTTPS));
            request.error = flag(ebpf_abi::FLAG_ERROR);
            if request.error {
                request.status = 0;
            }
        }
        // Decoded by `decode_rpc`, never here.
        RequestKind::RpcServer | RequestKind::RpcClient => {}
    }
    Ok(request)
}

/// A dial target (`host:port`, `dns:///host:port`, `passthrough:///host:port`) → server.
/// Without a port grpc-go dials 443, as HTTPS does.
pub(crate) fn split_target(target: &str) -> (String, u16) {
    let endpoint = match target.split_once("://") {
        Some((_, rest)) => rest.rsplit('/').next().unwrap_or(rest),
        None => target,
    };
    split_host(endpoint, true)
}

fn decode_rpc(bytes: &[u8]) -> Result<Request, DecodeError> {
    let e = RpcRequestEvent::from_bytes(bytes).ok_or(DecodeError::Short(bytes.len()))?;
    let client = e.kind == ebpf_abi::EVENT_RPC_CLIENT;
    let (server_address, server_port) = if client {
        split_target(&text(&e.remote, e.remote_len as usize))
    } else {
        (String::new(), 0)
    };
    Ok(Request {
        kind: if client {
            RequestKind::RpcClient
        } else {
            RequestKind::RpcServer
        },
        pid: e.pid,
        start_ns: e.start_ns,
        end_ns: e.end_ns.max(e.start_ns),
        method: text(&e.method, e.method_len as usize),
        path: String::new(),
        path_truncated: e.flags & ebpf_abi::FLAG_PATH_TRUNCATED != 0,
        // Codes above 16 are not gRPC's: UNKNOWN, as grpc-go itself maps them.
        status: if e.status <= 16 { e.status as u16 } else { 2 },
        request_body_bytes: 0,
        response_body_bytes: 0,
        peer: None,
        http2: true,
        server_address,
        server_port,
        error: false,
        trace: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf_abi::{METHOD_MAX, PATH_MAX, REMOTE_MAX};

    fn event(method: &str, path: &str, remote: &str, status: u32) -> Vec<u8> {
        let mut e = HttpRequestEvent {
            kind: ebpf_abi::EVENT_HTTP_SERVER,
            flags: 0,
            method_len: method.len() as u8,
            remote_len: remote.len() as u8,
            pid: 42,
            start_ns: 1_000,
            end_ns: 3_000,
            goroutine: 7,
            request_content_length: -1,
            response_written: 12,
            status,
            path_len: path.len() as u32,
            method: [0; METHOD_MAX],
            path: [0; PATH_MAX],
            remote: [0; REMOTE_MAX],
            trace_id: [0; 16],
            span_id: [0; 8],
            parent_span_id: [0; 8],
        };
        e.method[..method.len()].copy_from_slice(method.as_bytes());
        e.path[..path.len()].copy_from_slice(path.as_bytes());
        e.remote[..remote.len()].copy_from_slice(remote.as_bytes());
        // SAFETY: reading a POD struct as bytes.
        unsafe {
            std::slice::from_raw_parts(
                (&e as *const HttpRequestEvent).cast::<u8>(),
                std::mem::size_of::<HttpRequestEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_a_server_request() {
        let r = decode(&event("POST", "/users/7", "127.0.0.1:5555", 201)).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/users/7");
        assert_eq!(r.status, 201);
        assert_eq!(r.peer, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(r.request_body_bytes, 0);
        assert_eq!(r.response_body_bytes, 12);
        assert_eq!(r.duration_seconds(), 2e-6);
        assert_eq!(r.trace, None, "no ids: sonde makes its own");
    }

    #[test]
    fn carries_the_kernel_trace_context() {
        let mut b = event("GET", "/", "", 200);
        let at = std::mem::offset_of!(HttpRequestEvent, trace_id);
        b[at..at + 16].copy_from_slice(&[7; 16]);
        b[at + 16..at + 24].copy_from_slice(&[8; 8]);
        let t = decode(&b).unwrap().trace.unwrap();
        assert_eq!(
            (t.trace_id, t.span_id, t.parent_span_id),
            ([7; 16], [8; 8], None)
        );
        b[at + 24..at + 32].copy_from_slice(&[9; 8]);
        assert_eq!(
            decode(&b).unwrap().trace.unwrap().parent_span_id,
            Some([9; 8])
        );
    }

    #[test]
    fn implicit_status_is_200_and_ipv6_peers_parse() {
        let r = decode(&event("GET", "/", "[::1]:80", 0)).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.peer, Some("::1".parse().unwrap()));
    }

    #[test]
    fn client_calls_name_their_server() {
        assert_eq!(
            split_host("127.0.0.1:8080", false),
            ("127.0.0.1".into(), 8080)
        );
        assert_eq!(split_host("[::1]:9000", false), ("::1".into(), 9000));
        assert_eq!(split_host("example.com", true), ("example.com".into(), 443));
        assert_eq!(split_host("example.com", false), ("example.com".into(), 80));
        let mut b = event("GET", "/x", "api.local:81", 204);
        b[0] = ebpf_abi::EVENT_HTTP_CLIENT;
        let r = decode(&b).unwrap();
        assert_eq!(r.kind, RequestKind::HttpClient);
        assert_eq!(
            (r.server_address.as_str(), r.server_port, r.status),
            ("api.local", 81, 204)
        );
        b[1] = ebpf_abi::FLAG_ERROR;
        let r = decode(&b).unwrap();
        assert!(r.error);
        assert_eq!(r.status, 0);
    }

    fn rpc_event(kind: u8, method: &str, target: &str, status: u32) -> Vec<u8> {
        let mut e = RpcRequestEvent {
            kind,
            flags: 0,
            method_len: method.len() as u16,
            pid: 9,
            start_ns: 10,
            end_ns: 20,
            goroutine: 1,
            status,
            remote_len: target.len() as u16,
            _pad: 0,
            method: [0; ebpf_abi::RPC_METHOD_MAX],
            remote: [0; ebpf_abi::RPC_REMOTE_MAX],
        };
        e.method[..method.len()].copy_from_slice(method.as_bytes());
        e.remote[..target.len()].copy_from_slice(target.as_bytes());
        // SAFETY: reading a POD struct as bytes.
        unsafe {
            std::slice::from_raw_parts(
                (&e as *const RpcRequestEvent).cast::<u8>(),
                std::mem::size_of::<RpcRequestEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_rpc_calls() {
        let r = decode(&rpc_event(ebpf_abi::EVENT_RPC_SERVER, "/a.B/C", "", 5)).unwrap();
        assert_eq!(
            (r.kind, r.method.as_str(), r.status),
            (RequestKind::RpcServer, "/a.B/C", 5)
        );
        let r = decode(&rpc_event(
            ebpf_abi::EVENT_RPC_CLIENT,
            "/a.B/C",
            "dns:///api:8443",
            99,
        ))
        .unwrap();
        assert_eq!(r.kind, RequestKind::RpcClient);
        assert_eq!((r.server_address.as_str(), r.server_port), ("api", 8443));
        assert_eq!(r.status, 2);
        assert_eq!(
            decode(&[ebpf_abi::EVENT_RPC_CLIENT, 0]),
            Err(DecodeError::Short(2))
        );
    }

    #[test]
    fn dial_targets_name_the_server() {
        assert_eq!(split_target("127.0.0.1:50051"), ("127.0.0.1".into(), 50051));
        assert_eq!(
            split_target("passthrough:///localhost:9"),
            ("localhost".into(), 9)
        );
        assert_eq!(
            split_target("dns:///example.com"),
            ("example.com".into(), 443)
        );
        assert_eq!(split_target("[::1]:7000"), ("::1".into(), 7000));
        assert_eq!(split_target("[::1]"), ("::1".into(), 443));
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode(&[1, 2, 3]), Err(DecodeError::Short(3)));
        let mut b = event("GET", "/", "", 200);
        b[0] = 99;
        assert_eq!(decode(&b), Err(DecodeError::UnknownKind(99)));
    }
}
