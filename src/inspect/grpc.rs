//! grpc-go (google.golang.org/grpc) in a Go binary: its version, the functions to probe and
//! the struct offsets the kernel programs read (ebpf/grpc.bpf.h). Everything here is
//! optional: a binary without gRPC, or one whose layout sonde does not know, keeps its HTTP
//! probes and loses only the RPC metrics.

use super::{
    dwarf, grpc_offsets_table, FunctionProbe, GoBinary, GoVersion, GrpcOffsets, InspectError,
    OffsetsSource, ProbeRole,
};

/// One server call: entry (the stream) and every RET (the end).
pub(crate) const HANDLE_STREAM: &str = "google.golang.org/grpc.(*Server).handleStream";
/// The status a server call ends with; entry only, on the handleStream goroutine.
pub(crate) const WRITE_STATUS: &str =
    "google.golang.org/grpc/internal/transport.(*http2Server).WriteStatus";
/// One unary client call: entry and every RET (the returned error is the status).
pub(crate) const INVOKE: &str = "google.golang.org/grpc.(*ClientConn).Invoke";
/// One streaming client call starts: entry and every RET (the stream, or the error).
pub(crate) const NEW_STREAM: &str = "google.golang.org/grpc.(*ClientConn).NewStream";
/// A client stream ends, on any goroutine; entry only.
pub(crate) const STREAM_FINISH: &str = "google.golang.org/grpc.(*clientStream).finish";

const MODULE: &str = "google.golang.org/grpc";
/// grpc-go's user agent, `"grpc-go/" + Version`, is a constant in every binary's rodata:
/// the version of a GOPATH build, which has no module list.
const USER_AGENT: &[u8] = b"grpc-go/";

const STREAM: &str = "google.golang.org/grpc/internal/transport.Stream";
const STATUS: &str = "google.golang.org/grpc/internal/status.Status";
const ERROR: &str = "google.golang.org/grpc/internal/status.Error";
const PROTO_STATUS: &str = "google.golang.org/genproto/googleapis/rpc/status.Status";
const CLIENT_CONN: &str = "google.golang.org/grpc.ClientConn";
const CLIENT_STREAM: &str = "google.golang.org/grpc.clientStream";
const ATTEMPT: &str = "google.golang.org/grpc.csAttempt";

/// The structs and fields the kernel programs read. `Error` holds a `*spb.Status` named `e`
/// before grpc-go 1.38, and a `*Status` named `s` since.
const WANTED: &[(&str, &[&str])] = &[
    (STREAM, &["method", "status"]),
    (STATUS, &["s"]),
    (ERROR, &["e", "s"]),
    (PROTO_STATUS, &["Code"]),
    (CLIENT_CONN, &["target"]),
    (CLIENT_STREAM, &["attempt"]),
    (ATTEMPT, &["s"]),
];

/// What the probe plan knows about a binary's gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcPlan {
    /// grpc-go's version, e.g. `1.33.3`.
    pub version: String,
    pub offsets_source: OffsetsSource,
    pub offsets: GrpcOffsets,
}

/// grpc-go's version: from the module list, else from the user-agent constant. `None`: the
/// binary has no grpc-go.
pub(crate) fn version(modinfo: &str, data: &[u8]) -> Option<String> {
    let from_modules = modinfo.lines().find_map(|l| {
        let mut f = l.split('\t');
        match (f.next(), f.next(), f.next()) {
            (Some("dep"), Some(MODULE), Some(v)) => Some(v.trim_start_matches('v').to_string()),
            _ => None,
        }
    });
    // A `=>` replacement line follows its `dep` line and names the version really built.
    let replaced = modinfo
        .lines()
        .skip_while(|l| !l.starts_with(&format!("dep\t{MODULE}\t")))
        .nth(1)
        .and_then(|l| l.strip_prefix("=>\t"))
        .and_then(|l| l.split('\t').nth(1))
        .map(|v| v.trim_start_matches('v').to_string());
    replaced.or(from_modules).or_else(|| {
        data.windows(USER_AGENT.len())
            .enumerate()
            .filter(|(_, w)| *w == USER_AGENT)
            .find_map(|(at, _)| {
                let rest = &data[at + USER_AGENT.len()..];
                let n = rest
                    .iter()
                    .take(32)
                    .take_while(|b| b.is_ascii_digit() || **b == b'.')
                    .count();
                let v = std::str::from_utf8(&rest[..n]).ok()?;
                parse_version(v).map(|_| v.to_string())
            })
    })
}

/// `1.33.3` → (1, 33, 3); at least major.minor.
fn parse_version(v: &str) -> Option<GoVersion> {
    GoVersion::parse(&format!("go{v}"))
}

/// Offsets from DWARF field lists; `None` when a field the programs need is missing.
fn from_fields(f: &dwarf::FieldOffsets) -> Option<GrpcOffsets> {
    let get = |s: &str, field: &str| f.get(&(s.to_string(), field.to_string())).copied();
    let (error_status, error_indirect) = match (get(ERROR, "e"), get(ERROR, "s")) {
        (Some(e), _) => (e, false),
        (None, Some(s)) => (s, true),
        (None, None) => return None,
    };
    Some(GrpcOffsets {
        stream_method: get(STREAM, "method")?,
        stream_status: get(STREAM, "status")?,
        status_proto: get(STATUS, "s")?,
        proto_code: get(PROTO_STATUS, "Code")?,
        error_status,
        error_indirect,
        cc_target: get(CLIENT_CONN, "target")?,
        cs_attempt: get(CLIENT_STREAM, "attempt")?,
        attempt_stream: get(ATTEMPT, "s")?,
    })
}

/// An entry-only probe: no RET sites, the call's end is seen elsewhere.
fn entry_probe(bin: &GoBinary, role: ProbeRole, name: &str) -> Result<FunctionProbe, InspectError> {
    let (entry, _) = bin
        .find_function(name)
        .ok_or_else(|| InspectError::MissingFunction(name.to_string()))?;
    let entry_offset = bin
        .file_offset(entry)
        .ok_or_else(|| InspectError::Malformed(format!("{name}: {entry:#x} is not in the file")))?;
    Ok(FunctionProbe {
        role,
        symbol: name.to_string(),
        entry_vaddr: entry,
        entry_offset,
        ret_offsets: Vec::new(),
    })
}

/// The gRPC part of a probe plan, or `None` (logged once per binary, since plans are
/// cached) when the binary has no grpc-go or sonde cannot instrument the one it has.
/// Whether any grpc-go function sonde probes is linked in (its layout may still be unknown).
pub(crate) fn linked(bin: &GoBinary) -> bool {
    [HANDLE_STREAM, INVOKE, NEW_STREAM]
        .iter()
        .any(|f| bin.find_function(f).is_some())
}

pub(crate) fn plan(bin: &GoBinary) -> Option<(GrpcPlan, Vec<FunctionProbe>)> {
    let path = bin.path.display().to_string();
    let mut probes = Vec::new();
    // Each side is probed when all of its functions are linked in.
    let server = [
        bin.function_probe(ProbeRole::GrpcServerHandleStream, HANDLE_STREAM),
        entry_probe(bin, ProbeRole::GrpcServerWriteStatus, WRITE_STATUS),
    ];
    let unary = [bin.function_probe(ProbeRole::GrpcClientInvoke, INVOKE)];
    let streams = [
        bin.function_probe(ProbeRole::GrpcClientNewStream, NEW_STREAM),
        entry_probe(bin, ProbeRole::GrpcClientStreamFinish, STREAM_FINISH),
    ];
    for group in [&server[..], &unary[..], &streams[..]] {
        if group.iter().all(Result::is_ok) {
            probes.extend(group.iter().filter_map(|p| p.as_ref().ok().cloned()));
        } else if let Some(Err(e)) = group.iter().find(|p| p.is_err()) {
            tracing::debug!(%path, "gRPC probe not available: {e}");
        }
    }
    // Looked for only once its functions are known to be there: the user-agent scan reads
    // the whole file.
    if probes.is_empty() {
        return None;
    }
    let Some(version) = version(&bin.build.modinfo, &bin.data) else {
        tracing::info!(%path, "grpc-go functions found but no grpc-go version: gRPC not instrumented, HTTP still is");
        return None;
    };
    let from_types = match bin.type_fields(WANTED, &[]) {
        Ok(fields) => {
            let o = from_fields(&fields);
            if o.is_none() {
                let missing: Vec<String> = WANTED
                    .iter()
                    .flat_map(|(s, fs)| fs.iter().map(move |f| (s, f)))
                    .filter(|(s, f)| !fields.contains_key(&(s.to_string(), f.to_string())))
                    .map(|(s, f)| format!("{s}.{f}"))
                    .collect();
                tracing::debug!(%path, "gRPC type metadata lacks {}", missing.join(", "));
            }
            o
        }
        Err(e) => {
            tracing::debug!(%path, "gRPC offsets from type metadata: {e}");
            None
        }
    };
    if let Some(offsets) = from_types {
        return Some((
            GrpcPlan {
                version,
                offsets_source: OffsetsSource::TypeMetadata,
                offsets,
            },
            probes,
        ));
    }
    let from_dwarf = match bin.object().map(|f| dwarf::struct_fields(&f, WANTED)) {
        Ok(Ok(Some(fields))) => from_fields(&fields),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            tracing::debug!(%path, "gRPC offsets from DWARF: {e}");
            None
        }
        Err(e) => {
            tracing::debug!(%path, "gRPC offsets from DWARF: {e}");
            None
        }
    };
    let (offsets_source, offsets) = match from_dwarf {
        Some(o) => (OffsetsSource::Dwarf, o),
        None => match grpc_offsets_table::lookup(&version, bin.go_version()) {
            Some((row, o)) => (OffsetsSource::Table(row), o),
            None => {
                tracing::info!(
                    %path,
                    grpc = %version,
                    go = %bin.go_version(),
                    "no struct offsets for this grpc-go and Go version: gRPC not instrumented, HTTP still is"
                );
                return None;
            }
        },
    };
    Some((
        GrpcPlan {
            version,
            offsets_source,
            offsets,
        },
        probes,
    ))
}

/// Human-readable offsets, for `sonde inspect` (and scripts/gen-grpc-offsets.sh).
pub(crate) fn render_offsets(o: &GrpcOffsets) -> Vec<(&'static str, u32)> {
    vec![
        ("transport.Stream.method", o.stream_method),
        ("transport.Stream.status", o.stream_status),
        ("status.Status.s", o.status_proto),
        ("spb.Status.Code", o.proto_code),
        ("status.Error.status", o.error_status),
        ("status.Error.indirect", u32::from(o.error_indirect)),
        ("grpc.ClientConn.target", o.cc_target),
        ("grpc.clientStream.attempt", o.cs_attempt),
        ("grpc.csAttempt.s", o.attempt_stream),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For every grpc-go build of the test matrix (`scripts/build-grpc-targets.sh`, run before
    /// the unit tests in CI): the offsets its type metadata gives are those its DWARF gives and
    /// those of the table row that backs them up, and its stripped twin is planned from its
    /// metadata with the same offsets.
    #[test]
    fn type_metadata_dwarf_and_table_agree_for_every_grpc_build() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/go-targets");
        let mut plain: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        let n = p.file_name().unwrap().to_string_lossy();
                        n.starts_with("grpcserver-") && n.ends_with("-plain")
                    })
                    .collect()
            })
            .unwrap_or_default();
        if plain.is_empty() {
            eprintln!("skipping: no grpc-go builds in {}", dir.display());
            return;
        }
        plain.sort();
        for path in plain {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let bin = GoBinary::open(&path).unwrap();
            let from_types = from_fields(&bin.type_fields(WANTED, &[]).unwrap())
                .unwrap_or_else(|| panic!("{name}: type metadata lacks a gRPC field"));
            let object = bin.object().unwrap();
            let from_dwarf = from_fields(&dwarf::struct_fields(&object, WANTED).unwrap().unwrap())
                .unwrap_or_else(|| panic!("{name}: DWARF lacks a gRPC field"));
            assert_eq!(from_types, from_dwarf, "{name}: type metadata vs DWARF");
            let v = version(&bin.build.modinfo, &bin.data).unwrap();
            let (row, from_table) = grpc_offsets_table::lookup(&v, bin.go_version())
                .unwrap_or_else(|| panic!("{name}: no table row"));
            assert_eq!(
                from_types, from_table,
                "{name}: type metadata vs table row {row}"
            );
            let stripped = path.with_file_name(name.replace("-plain", "-stripped"));
            let (grpc, _) = plan(&GoBinary::open(&stripped).unwrap()).unwrap();
            assert_eq!(grpc.offsets_source, OffsetsSource::TypeMetadata, "{name}");
            assert_eq!(grpc.offsets, from_types, "{name}: stripped twin");
        }
    }

    #[test]
    fn version_from_modules_replacements_and_user_agent() {
        let mods = "path\tx\nmod\tx\t(devel)\t\ndep\tgoogle.golang.org/grpc\tv1.62.1\th1:abc\n";
        assert_eq!(version(mods, b"").as_deref(), Some("1.62.1"));
        let replaced = format!("{mods}=>\t../grpc\tv1.60.0\t\n");
        assert_eq!(version(&replaced, b"").as_deref(), Some("1.60.0"));
        let data = b"\0\0grpc-go/\0grpc-go/1.33.3\0more";
        assert_eq!(version("", data).as_deref(), Some("1.33.3"));
        assert_eq!(
            version("dep\tgoogle.golang.org/grpcx\tv1.0.0\n", b"x"),
            None
        );
        assert_eq!(version("", b"grpc-go/x"), None);
    }

    #[test]
    fn error_layout_decides_the_indirection() {
        let mut f: dwarf::FieldOffsets = [
            ((STREAM, "method"), 56),
            ((STREAM, "status"), 200),
            ((STATUS, "s"), 0),
            ((PROTO_STATUS, "Code"), 0),
            ((CLIENT_CONN, "target"), 16),
            ((CLIENT_STREAM, "attempt"), 100),
            ((ATTEMPT, "s"), 16),
        ]
        .into_iter()
        .map(|((s, f), v)| ((s.to_string(), f.to_string()), v))
        .collect();
        assert_eq!(from_fields(&f), None);
        f.insert((ERROR.into(), "s".into()), 0);
        assert!(from_fields(&f).unwrap().error_indirect);
        f.insert((ERROR.into(), "e".into()), 0);
        assert!(!from_fields(&f).unwrap().error_indirect);
        f.remove(&(CLIENT_CONN.to_string(), "target".to_string()));
        assert_eq!(from_fields(&f), None);
    }
}
