//! Requests → OTLP spans: SERVER for handled requests, CLIENT for outgoing calls, named
//! `METHOD /route`, with semantic-convention attributes and wall-clock times.

use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};

use super::resource::{kv_int, kv_str};
use crate::collect::RequestKind;
use crate::enrich::EnrichedRequest;

/// Turns CLOCK_MONOTONIC (what the kernel stamps events with) into Unix time, by the offset
/// between the two clocks measured once at start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    offset_ns: i128,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl WallClock {
    pub(crate) fn measure() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        WallClock {
            offset_ns: real - mono,
        }
    }

    pub(crate) fn unix_ns(&self, monotonic_ns: u64) -> u64 {
        (monotonic_ns as i128 + self.offset_ns).max(0) as u64
    }

    pub(crate) fn now_unix_ns() -> u64 {
        clock_ns(libc::CLOCK_REALTIME).max(0) as u64
    }
}

/// Trace and span ids of one request, and its parent span when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanIds {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub remote_parent: bool,
}

/// Ids for requests the kernel gave none: splitmix64 seeded from the OS.
pub(crate) struct IdGenerator {
    state: std::sync::atomic::AtomicU64,
}

impl IdGenerator {
    pub(crate) fn new() -> Self {
        let mut seed = [0u8; 8];
        // SAFETY: writing at most 8 bytes into an 8-byte buffer.
        let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), 8, 0) };
        let seed = if n == 8 {
            u64::from_ne_bytes(seed)
        } else {
            WallClock::now_unix_ns() ^ u64::from(std::process::id())
        };
        IdGenerator {
            state: std::sync::atomic::AtomicU64::new(seed),
        }
    }

    fn next(&self) -> u64 {
        let s = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn root(&self) -> SpanIds {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&self.next().to_be_bytes());
        trace_id[8..].copy_from_slice(&self.next().to_be_bytes());
        SpanIds {
            trace_id,
            span_id: self.next().max(1).to_be_bytes(),
            parent_span_id: None,
            remote_parent: false,
        }
    }
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

/// W3C/OTel TraceIdRatioBased: the decision depends on the trace id only, so every span of
/// a trace is kept or dropped together.
pub(crate) fn sampled(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let x = u64::from_be_bytes(low) >> 1;
    (x as f64) < ratio * (1u64 << 63) as f64
}

pub(crate) fn span(r: &EnrichedRequest, ids: &SpanIds, clock: &WallClock) -> Span {
    let q = &r.request;
    if matches!(q.kind, RequestKind::RpcServer | RequestKind::RpcClient) {
        return rpc_span(r, ids, clock);
    }
    let server = q.kind == RequestKind::HttpServer;
    let mut attributes = vec![kv_str("http.request.method", q.method.clone())];
    if server || !q.error {
        attributes.push(kv_int("http.response.status_code", q.status.into()));
    }
    attributes.push(kv_str("url.path", q.path.clone()));
    let error = if server {
        attributes.push(kv_str("http.route", r.route.clone()));
        if let Some(peer) = q.peer {
            attributes.push(kv_str("client.address", peer.to_string()));
        }
        q.status >= 500
    } else {
        attributes.push(kv_str("server.address", q.server_address.clone()));
        attributes.push(kv_int("server.port", q.server_port.into()));
        if q.error {
            attributes.push(kv_str("error.type", "_OTHER"));
        }
        q.error || q.status >= 400
    };
    attributes.push(kv_str(
        "network.protocol.version",
        if q.http2 { "2" } else { "1.1" },
    ));
    attributes.push(kv_int(
        "http.request.body.size",
        q.request_body_bytes as i64,
    ));
    attributes.push(kv_int(
        "http.response.body.size",
        q.response_body_bytes as i64,
    ));
    let name = format!("{} {}", q.method, r.route);
    build(q, ids, clock, name, server, attributes, error)
}

/// The span both kinds of request share the shape of.
fn build(
    q: &crate::collect::Request,
    ids: &SpanIds,
    clock: &WallClock,
    name: String,
    server: bool,
    attributes: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    error: bool,
) -> Span {
    let status = if error {
        Status {
            code: StatusCode::Error as i32,
            message: String::new(),
        }
    } else {
        Status::default()
    };
    Span {
        trace_id: ids.trace_id.to_vec(),
        span_id: ids.span_id.to_vec(),
        parent_span_id: ids.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        // W3C "sampled" (only sampled spans are exported), and whether the parent is remote.
        flags: 0x1 | 0x100 | if ids.remote_parent { 0x200 } else { 0 },
        name,
        kind: if server {
            SpanKind::Server
        } else {
            SpanKind::Client
        } as i32,
        start_time_unix_nano: clock.unix_ns(q.start_ns),
        end_time_unix_nano: clock.unix_ns(q.end_ns),
        attributes,
        status: Some(status),
        ..Default::default()
    }
}

/// A gRPC call: named after its method, an error when its status is not OK.
fn rpc_span(r: &EnrichedRequest, ids: &SpanIds, clock: &WallClock) -> Span {
    let q = &r.request;
    let server = q.kind == RequestKind::RpcServer;
    let mut attributes = vec![
        kv_str("rpc.system.name", "grpc"),
        kv_str("rpc.method", q.method.clone()),
        kv_str(
            "rpc.response.status_code",
            crate::export::status_name(q.status),
        ),
    ];
    if !server {
        attributes.push(kv_str("server.address", q.server_address.clone()));
        attributes.push(kv_int("server.port", q.server_port.into()));
    }
    build(
        q,
        ids,
        clock,
        q.method.clone(),
        server,
        attributes,
        q.status != 0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_sampling_is_by_trace_id() {
        let g = IdGenerator::new();
        let a = g.root();
        let b = g.root();
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, [0; 8]);
        let kept = (0..10_000)
            .filter(|_| sampled(&g.root().trace_id, 0.25))
            .count();
        assert!((2000..3000).contains(&kept), "{kept}");
        assert!(sampled(&a.trace_id, 1.0) && !sampled(&a.trace_id, 0.0));
    }

    #[test]
    fn monotonic_becomes_wall_clock() {
        let c = WallClock::measure();
        let mono = clock_ns(libc::CLOCK_MONOTONIC) as u64;
        let diff = c.unix_ns(mono) as i128 - WallClock::now_unix_ns() as i128;
        assert!(diff.abs() < 1_000_000_000, "{diff}");
    }
}
