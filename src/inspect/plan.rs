//! The probe plan: what an inspection finds in a binary — the functions to probe (entry and
//! RET sites as file offsets), the struct offsets the kernel programs read and where each came
//! from, the protocols the binary can speak. What `attach` takes, and what the cache keeps.

use std::fmt;
use std::path::PathBuf;

use super::{fields, grpc, GoVersion};

/// Where function addresses came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolSource {
    Symtab,
    Pclntab,
}

/// Where struct field offsets came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsSource {
    /// The binary's runtime type descriptors (moduledata → types → struct fields).
    TypeMetadata,
    Dwarf,
    /// The built-in table, with the Go version of the row used.
    Table(String),
    /// Field by field from several of the above (`sonde inspect` lists each field's).
    Mixed,
    /// No HTTP probe is planned (a gRPC-only program): no HTTP field is read.
    NotNeeded,
}

impl OffsetsSource {
    pub(super) fn of(resolved: &fields::Resolved) -> OffsetsSource {
        if resolved
            .sources
            .iter()
            .all(|s| *s == fields::FieldSource::NotNeeded)
        {
            return OffsetsSource::NotNeeded;
        }
        match resolved.single_source() {
            Some(fields::FieldSource::TypeMetadata) => OffsetsSource::TypeMetadata,
            Some(fields::FieldSource::Dwarf) => OffsetsSource::Dwarf,
            Some(fields::FieldSource::Table(row)) => OffsetsSource::Table(row.clone()),
            _ => OffsetsSource::Mixed,
        }
    }
}

/// What a probed function is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeRole {
    /// `net/http.serverHandler.ServeHTTP`: one server request, entry and every RET.
    HttpServerHandler,
    /// `net/http.(*Transport).RoundTrip`: one outgoing call, entry and every RET.
    HttpClientRoundTrip,
    /// grpc-go `(*Server).handleStream`: one served call, entry and every RET.
    GrpcServerHandleStream,
    /// grpc-go `(*http2Server).WriteStatus`: the served call's status; entry only.
    GrpcServerWriteStatus,
    /// grpc-go `(*ClientConn).Invoke`: one unary call made, entry and every RET.
    GrpcClientInvoke,
    /// grpc-go `(*ClientConn).NewStream`: a streaming call made, entry and every RET.
    GrpcClientNewStream,
    /// grpc-go `(*clientStream).finish`: a streaming call's end; entry only.
    GrpcClientStreamFinish,
    /// `runtime.newproc1`: a goroutine starts (which request it belongs to, for traces).
    GoroutineStart,
}

impl ProbeRole {
    pub fn is_http(self) -> bool {
        matches!(
            self,
            ProbeRole::HttpServerHandler | ProbeRole::HttpClientRoundTrip
        )
    }
}

/// One function to probe: its entry and every RET instruction, as file offsets (what
/// uprobes take), plus virtual addresses for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionProbe {
    pub role: ProbeRole,
    pub symbol: String,
    pub entry_vaddr: u64,
    pub entry_offset: u64,
    pub ret_offsets: Vec<u64>,
}

/// Struct field offsets (bytes) of one grpc-go build; see `struct grpc_offsets`. Here, not in
/// `grpc`, so the generated table and `grpc` both read it without importing each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GrpcOffsets {
    pub stream_method: u32,
    pub stream_status: u32,
    pub status_proto: u32,
    pub proto_code: u32,
    pub error_status: u32,
    /// `status.Error` holds a `*status.Status` (read one more pointer) rather than the proto.
    pub error_indirect: bool,
    pub cc_target: u32,
    pub cs_attempt: u32,
    pub attempt_stream: u32,
}

/// Struct field offsets (bytes) the kernel programs read; see ebpf/sonde_events.h.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GoOffsets {
    pub request_method: u32,
    pub request_url: u32,
    pub request_content_length: u32,
    pub request_remote_addr: u32,
    pub url_path: u32,
    pub response_req: u32,
    pub response_status: u32,
    pub response_written: u32,
    pub h2rw_rws: u32,
    pub rws_status: u32,
    pub rws_wrote_bytes: u32,
    pub url_scheme: u32,
    pub url_host: u32,
    pub client_status_code: u32,
    pub client_content_length: u32,
    pub request_header: u32,
}

/// Everything needed to instrument one executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePlan {
    pub path: PathBuf,
    pub go_version: GoVersion,
    pub symbols: SymbolSource,
    pub offsets_source: OffsetsSource,
    pub offsets: GoOffsets,
    /// Where each of [`fields::FIELDS`] came from, in that order.
    pub offset_sources: Vec<fields::FieldSource>,
    /// False when the binary has no build-info blob.
    pub modules_known: bool,
    pub probes: Vec<FunctionProbe>,
    /// grpc-go, when the binary has it and sonde knows its layout (its probes are in
    /// `probes`).
    pub grpc: Option<grpc::GrpcPlan>,
    /// What the binary can speak that only uprobes see (for `go_source=auto`).
    pub speaks: Speaks,
}

/// Protocols a binary's code can serve that the syscall tracer cannot follow, known from the
/// functions linked in. The linker drops unreachable code, so a plaintext-only net/http
/// server has none of them; a binary that merely can (a `-tls` flag) counts as one that does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Speaks {
    /// `crypto/tls`'s server handshake: TLS (and HTTP/2 over it) is served.
    pub tls_server: bool,
    /// grpc-go, server or client, whether or not sonde knows its layout.
    pub grpc: bool,
    /// `golang.org/x/net/http2/h2c`: HTTP/2 without TLS.
    pub h2c: bool,
}

impl fmt::Display for SymbolSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SymbolSource::Symtab => ".symtab",
            SymbolSource::Pclntab => ".gopclntab (Go runtime table)",
        })
    }
}

impl fmt::Display for OffsetsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffsetsSource::TypeMetadata => f.write_str("runtime type metadata"),
            OffsetsSource::Dwarf => f.write_str("DWARF"),
            OffsetsSource::Table(v) => write!(f, "built-in table (row for Go {v})"),
            OffsetsSource::Mixed => f.write_str("per field (see struct offsets)"),
            OffsetsSource::NotNeeded => f.write_str("none needed (no HTTP probe)"),
        }
    }
}
