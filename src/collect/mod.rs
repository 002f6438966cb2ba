//! Reads kernel events and turns raw records into typed `Request` values.

use std::net::IpAddr;

/// One finished request, as observed in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestKind,
    pub pid: u32,
    /// CLOCK_MONOTONIC nanoseconds.
    pub start_ns: u64,
    pub end_ns: u64,
    pub method: String,
    /// URL path, never the query string.
    pub path: String,
    pub path_truncated: bool,
    pub status: u16,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    /// The client's address for server requests.
    pub peer: Option<IpAddr>,
    pub http2: bool,
    /// Client calls: the server as the URL named it, and the port (from the scheme when the
    /// URL has none). Empty for server requests.
    pub server_address: String,
    pub server_port: u16,
    /// Client calls: the call failed (refused, timed out…) and there is no response.
    pub error: bool,
    /// Ids made in the kernel at the entry probe; `None` from programs that make none.
    pub trace: Option<TraceContext>,
}

/// W3C ids of one request's span, and its parent's when it has one (a client call made
/// while serving a request on the same goroutine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// The parent is another process's span, from an incoming `traceparent`.
    pub remote_parent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    HttpServer,
    HttpClient,
    /// A gRPC call served: `method` is the RPC method (`/pkg.Service/Method`), `status` the
    /// gRPC status code (0 OK … 16 UNAUTHENTICATED).
    RpcServer,
    /// A gRPC call made: as `RpcServer`, plus the server from the dial target.
    RpcClient,
}

impl RequestKind {
    pub fn is_rpc(self) -> bool {
        matches!(self, RequestKind::RpcServer | RequestKind::RpcClient)
    }
}

impl Request {
    pub fn duration_seconds(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }
}

pub(crate) mod connections;
pub(crate) mod event;
pub(crate) mod http1;
pub(crate) mod reader;
pub(crate) mod syscalls;
