//! Rust mirror of ebpf/sonde_events.h: the records that cross between kernel and user space.
//! `layout_matches_c_header` fails if this file and the header drift apart. A leaf: it
//! imports nothing of sonde, so both sides of the contract can read it.

/// A record the kernel writes and user space reads by copying its bytes.
///
/// # Safety
/// `#[repr(C)]`, made only of integers and arrays of them: every bit pattern, zeros included,
/// is a valid value.
pub(crate) unsafe trait Record: Copy {
    /// The shortest record accepted; the bytes after it, when missing, read as zeros.
    const MIN_LEN: usize = std::mem::size_of::<Self>();
}

/// The one place a kernel record becomes a Rust value: `None` when `bytes` is shorter than
/// `T::MIN_LEN`; bytes past `T`'s size are ignored.
pub(crate) fn read_pod<T: Record>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < T::MIN_LEN {
        return None;
    }
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    let n = bytes.len().min(std::mem::size_of::<T>());
    // SAFETY: at most size_of::<T>() bytes are copied into the zeroed value, byte-wise (no
    // alignment needed); `Record` promises that any bytes, zeros included, make a valid T.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), value.as_mut_ptr().cast::<u8>(), n);
        Some(value.assume_init())
    }
}

pub(crate) const METHOD_MAX: usize = 16;
pub(crate) const PATH_MAX: usize = 128;
pub(crate) const REMOTE_MAX: usize = 48;

pub(crate) const EVENT_HTTP_SERVER: u8 = 1;
pub(crate) const EVENT_HTTP_CLIENT: u8 = 2;
pub(crate) const EVENT_RPC_SERVER: u8 = 3;
pub(crate) const EVENT_RPC_CLIENT: u8 = 4;
pub(crate) const RPC_METHOD_MAX: usize = 128;
pub(crate) const RPC_REMOTE_MAX: usize = 64;
pub(crate) const FLAG_PATH_TRUNCATED: u8 = 0x1;
pub(crate) const FLAG_HTTP2: u8 = 0x2;
pub(crate) const FLAG_ERROR: u8 = 0x4;
pub(crate) const FLAG_HTTPS: u8 = 0x8;
pub(crate) const FLAG_REMOTE_PARENT: u8 = 0x10;
pub(crate) const MAP_BUCKETS: u32 = 0;
pub(crate) const MAP_SWISS: u32 = 1;
/// Traces are not exported: the kernel makes no span ids and reads no headers.
pub(crate) const NO_TRACES: u32 = 2;

/// `struct go_offsets`: the value of the PID filter map.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GoOffsetsAbi {
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
    /// `MAP_BUCKETS` (Go < 1.24) or `MAP_SWISS`: how to read `Request.Header`.
    pub map_layout: u32,
}

// SAFETY: plain old data, every bit pattern is valid, no padding.
unsafe impl aya::Pod for GoOffsetsAbi {}

/// `struct http_request_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpRequestEvent {
    pub kind: u8,
    pub flags: u8,
    pub method_len: u8,
    pub remote_len: u8,
    pub pid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub goroutine: u64,
    pub request_content_length: i64,
    pub response_written: i64,
    pub status: u32,
    pub path_len: u32,
    pub method: [u8; METHOD_MAX],
    pub path: [u8; PATH_MAX],
    pub remote: [u8; REMOTE_MAX],
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: [u8; 8],
}

// SAFETY: repr(C), integers and byte arrays only.
unsafe impl Record for HttpRequestEvent {}

impl HttpRequestEvent {
    /// Reads an event from ring-buffer bytes; `None` when the record is too short.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        read_pod(bytes)
    }
}

/// `struct launch_event`: a container's init process, before it execs the application.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LaunchEvent {
    pub pid: u32,
    pub _pad: u32,
    pub ktime_ns: u64,
}

// SAFETY: repr(C), integers and byte arrays only.
unsafe impl Record for LaunchEvent {}

impl LaunchEvent {
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        read_pod(bytes)
    }
}

/// `struct enrol_event`: a process the kernel enrolled at an armed file's probe.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EnrolEvent {
    pub pid: u32,
    pub slot: u32,
    pub ktime_ns: u64,
}

// SAFETY: repr(C), integers and byte arrays only.
unsafe impl Record for EnrolEvent {}

impl EnrolEvent {
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        read_pod(bytes)
    }
}

pub(crate) const EXEC_PATH_MAX: usize = 256;
/// A uprobe cookie with this bit names an armed file's slot.
pub(crate) const ARMED_FILE: u64 = 1 << 32;

/// `struct exec_event`: a program execution and the path given to exec.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExecEvent {
    pub pid: u32,
    pub len: u32,
    pub filename: [u8; EXEC_PATH_MAX],
}

// SAFETY: repr(C), integers and byte arrays only.
unsafe impl Record for ExecEvent {}

impl ExecEvent {
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        read_pod(bytes)
    }

    /// The path given to exec (truncated at EXEC_PATH_MAX - 1 bytes).
    pub(crate) fn path(&self) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let n = (self.len as usize).min(EXEC_PATH_MAX);
        std::ffi::OsStr::from_bytes(&self.filename[..n]).into()
    }
}

/// `struct grpc_offsets`: the value of the `pid_grpc_offsets` map.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GrpcOffsetsAbi {
    pub stream_method: u32,
    pub stream_status: u32,
    pub status_proto: u32,
    pub proto_code: u32,
    pub error_status: u32,
    pub error_indirect: u32,
    pub cc_target: u32,
    pub cs_attempt: u32,
    pub attempt_stream: u32,
}

// SAFETY: plain old data, every bit pattern is valid, no padding.
unsafe impl aya::Pod for GrpcOffsetsAbi {}

/// `struct rpc_request_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct RpcRequestEvent {
    pub kind: u8,
    pub flags: u8,
    pub method_len: u16,
    pub pid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub goroutine: u64,
    pub status: u32,
    pub remote_len: u16,
    pub _pad: u16,
    pub method: [u8; RPC_METHOD_MAX],
    pub remote: [u8; RPC_REMOTE_MAX],
}

// SAFETY: repr(C), integers and byte arrays only.
unsafe impl Record for RpcRequestEvent {}

impl RpcRequestEvent {
    /// Reads an event from ring-buffer bytes; `None` when the record is too short.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        read_pod(bytes)
    }
}

pub(crate) const SYS_DATA_MAX: usize = 1024;
pub(crate) const SYS_OPEN: u8 = 1;
pub(crate) const SYS_DATA: u8 = 2;
pub(crate) const SYS_CLOSE: u8 = 3;
pub(crate) const SYS_BIND: u8 = 4;
pub(crate) const SYS_ORPHAN: u8 = 5;
pub(crate) const SYS_ROLE_SERVER: u8 = 1;
pub(crate) const SYS_ROLE_CLIENT: u8 = 2;
pub(crate) const SYS_DIR_IN: u8 = 1;
pub(crate) const SYS_DIR_OUT: u8 = 2;
pub(crate) const SYS_FLAG_TLS: u8 = 0x1;
pub(crate) const SYS_FLAG_UNBOUND: u8 = 0x2;

/// `struct sys_event`: one record of the syscall/OpenSSL tracer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SysEvent {
    pub kind: u8,
    pub role: u8,
    pub direction: u8,
    pub flags: u8,
    pub pid: u32,
    pub fd: i32,
    pub family: u16,
    pub port: u16,
    pub ts_ns: u64,
    pub len: u64,
    pub copied: u32,
    pub _pad: u32,
    pub addr: [u8; 16],
    pub data: [u8; SYS_DATA_MAX],
}

/// The fixed part of a `SysEvent`, before `data`.
pub(crate) const SYS_EVENT_HEADER: usize = std::mem::offset_of!(SysEvent, data);

// SAFETY: repr(C), integers and byte arrays only. A record carries only the bytes of `data`
// that were copied.
unsafe impl Record for SysEvent {
    const MIN_LEN: usize = SYS_EVENT_HEADER;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use std::process::Command;

    /// Every `#define`, enum constant and struct (with its fields, in order) of the header.
    struct Header {
        constants: Vec<String>,
        structs: Vec<(String, Vec<String>)>,
    }

    fn parse_header(text: &str) -> Header {
        // Comments out first (they hold words like `struct rpc_request_event`).
        let mut code = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("/*") {
            code.push_str(&rest[..i]);
            rest = rest[i..].find("*/").map_or("", |e| &rest[i + e + 2..]);
        }
        code.push_str(rest);
        let code: String = code
            .lines()
            .map(|l| l.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let mut constants = Vec::new();
        let mut structs = Vec::new();
        let mut lines = code.lines();
        while let Some(line) = lines.next() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["#define", name, _, ..] => constants.push(name.to_string()),
                ["enum", _, "{"] => {
                    for l in lines.by_ref().take_while(|l| !l.contains('}')) {
                        if let Some((name, _)) = l.split_once('=') {
                            constants.push(name.trim().to_string());
                        }
                    }
                }
                ["struct", name, "{"] => {
                    let fields = lines
                        .by_ref()
                        .take_while(|l| !l.contains('}'))
                        .filter_map(|l| {
                            let decl = l.trim().strip_suffix(';')?;
                            let last = decl.split_whitespace().last()?;
                            Some(last.split('[').next().unwrap_or_default().to_string())
                        })
                        .collect();
                    structs.push((name.to_string(), fields));
                }
                _ => {}
            }
        }
        Header { constants, structs }
    }

    /// Compiles a C program against the header with the host compiler and compares every
    /// size, field offset and constant with this file; the header itself is parsed so that
    /// anything added to it without a mirror here fails too.
    #[test]
    fn layout_matches_c_header() {
        let dir = std::env::temp_dir().join(format!("sonde-abi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("abi.c");
        let header = concat!(env!("CARGO_MANIFEST_DIR"), "/ebpf/sonde_events.h");
        let mut c = format!(
            "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#include \"{header}\"\nint main(void) {{\n"
        );
        let mut expected: Vec<u64> = Vec::new();
        let mut mirrored_structs: Vec<(String, Vec<String>)> = Vec::new();
        macro_rules! check {
            ($cty:literal, $rty:ty, [$($f:ident),*]) => {
                c.push_str(&format!("printf(\"%zu\\n\", sizeof(struct {}));\n", $cty));
                expected.push(size_of::<$rty>() as u64);
                $(
                    c.push_str(&format!("printf(\"%zu\\n\", offsetof(struct {}, {}));\n", $cty, stringify!($f)));
                    expected.push(offset_of!($rty, $f) as u64);
                )*
                mirrored_structs.push(($cty.to_string(), vec![$(stringify!($f).to_string()),*]));
            };
        }
        check!(
            "go_offsets",
            GoOffsetsAbi,
            [
                request_method,
                request_url,
                request_content_length,
                request_remote_addr,
                url_path,
                response_req,
                response_status,
                response_written,
                h2rw_rws,
                rws_status,
                rws_wrote_bytes,
                url_scheme,
                url_host,
                client_status_code,
                client_content_length,
                request_header,
                map_layout
            ]
        );
        check!(
            "http_request_event",
            HttpRequestEvent,
            [
                kind,
                flags,
                method_len,
                remote_len,
                pid,
                start_ns,
                end_ns,
                goroutine,
                request_content_length,
                response_written,
                status,
                path_len,
                method,
                path,
                remote,
                trace_id,
                span_id,
                parent_span_id
            ]
        );
        check!("launch_event", LaunchEvent, [pid, _pad, ktime_ns]);
        check!("enrol_event", EnrolEvent, [pid, slot, ktime_ns]);
        check!("exec_event", ExecEvent, [pid, len, filename]);
        check!(
            "grpc_offsets",
            GrpcOffsetsAbi,
            [
                stream_method,
                stream_status,
                status_proto,
                proto_code,
                error_status,
                error_indirect,
                cc_target,
                cs_attempt,
                attempt_stream
            ]
        );
        check!(
            "rpc_request_event",
            RpcRequestEvent,
            [
                kind, flags, method_len, pid, start_ns, end_ns, goroutine, status, remote_len,
                _pad, method, remote
            ]
        );
        check!(
            "sys_event",
            SysEvent,
            [
                kind, role, direction, flags, pid, fd, family, port, ts_ns, len, copied, _pad,
                addr, data
            ]
        );
        let constants: &[(&str, u64)] = &[
            ("SONDE_METHOD_MAX", METHOD_MAX as u64),
            ("SONDE_PATH_MAX", PATH_MAX as u64),
            ("SONDE_REMOTE_MAX", REMOTE_MAX as u64),
            ("SONDE_EVENT_HTTP_SERVER", EVENT_HTTP_SERVER.into()),
            ("SONDE_EVENT_HTTP_CLIENT", EVENT_HTTP_CLIENT.into()),
            ("SONDE_EVENT_RPC_SERVER", EVENT_RPC_SERVER.into()),
            ("SONDE_EVENT_RPC_CLIENT", EVENT_RPC_CLIENT.into()),
            ("SONDE_FLAG_PATH_TRUNCATED", FLAG_PATH_TRUNCATED.into()),
            ("SONDE_FLAG_HTTP2", FLAG_HTTP2.into()),
            ("SONDE_FLAG_ERROR", FLAG_ERROR.into()),
            ("SONDE_FLAG_HTTPS", FLAG_HTTPS.into()),
            ("SONDE_FLAG_REMOTE_PARENT", FLAG_REMOTE_PARENT.into()),
            ("SONDE_MAP_BUCKETS", MAP_BUCKETS.into()),
            ("SONDE_MAP_SWISS", MAP_SWISS.into()),
            ("SONDE_NO_TRACES", NO_TRACES.into()),
            ("SONDE_EXEC_PATH_MAX", EXEC_PATH_MAX as u64),
            ("SONDE_ARMED_FILE", ARMED_FILE),
            ("SONDE_RPC_METHOD_MAX", RPC_METHOD_MAX as u64),
            ("SONDE_RPC_REMOTE_MAX", RPC_REMOTE_MAX as u64),
            ("SONDE_SYS_DATA_MAX", SYS_DATA_MAX as u64),
            ("SONDE_SYS_OPEN", SYS_OPEN.into()),
            ("SONDE_SYS_DATA", SYS_DATA.into()),
            ("SONDE_SYS_CLOSE", SYS_CLOSE.into()),
            ("SONDE_SYS_BIND", SYS_BIND.into()),
            ("SONDE_SYS_ORPHAN", SYS_ORPHAN.into()),
            ("SONDE_SYS_ROLE_SERVER", SYS_ROLE_SERVER.into()),
            ("SONDE_SYS_ROLE_CLIENT", SYS_ROLE_CLIENT.into()),
            ("SONDE_SYS_DIR_IN", SYS_DIR_IN.into()),
            ("SONDE_SYS_DIR_OUT", SYS_DIR_OUT.into()),
            ("SONDE_SYS_FLAG_TLS", SYS_FLAG_TLS.into()),
            ("SONDE_SYS_FLAG_UNBOUND", SYS_FLAG_UNBOUND.into()),
        ];
        for (name, value) in constants {
            c.push_str(&format!(
                "printf(\"%llu\\n\", (unsigned long long)({name}));\n"
            ));
            expected.push(*value);
        }

        // Nothing in the header without its mirror (the include guard aside).
        let parsed = parse_header(&std::fs::read_to_string(header).unwrap());
        let mut in_header: Vec<&str> = parsed
            .constants
            .iter()
            .map(String::as_str)
            .filter(|n| *n != "SONDE_EVENTS_H")
            .collect();
        let mut mirrored: Vec<&str> = constants.iter().map(|(n, _)| *n).collect();
        in_header.sort_unstable();
        mirrored.sort_unstable();
        assert_eq!(
            in_header, mirrored,
            "constants of ebpf/sonde_events.h vs ebpf_abi.rs"
        );
        let mut structs = parsed.structs.clone();
        structs.sort();
        mirrored_structs.sort();
        assert_eq!(
            structs, mirrored_structs,
            "structs (and their fields, in order)"
        );

        c.push_str("return 0; }\n");
        std::fs::write(&src, c).unwrap();
        let exe = dir.join("abi");
        let st = Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .status()
            .expect("run cc");
        assert!(st.success(), "cc failed on the ABI check program");
        let out = Command::new(&exe).output().unwrap();
        let got: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(
            got, expected,
            "src/ebpf_abi.rs and ebpf/sonde_events.h disagree"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn read_pod_takes_short_records_only_down_to_their_minimum() {
        let e = LaunchEvent {
            pid: 7,
            _pad: 0,
            ktime_ns: 99,
        };
        // SAFETY: reading the bytes of a plain-old-data value for the test.
        let bytes: &[u8] = unsafe {
            std::slice::from_raw_parts((&e as *const LaunchEvent).cast(), size_of::<LaunchEvent>())
        };
        let mut unaligned = vec![0u8];
        unaligned.extend_from_slice(bytes);
        assert_eq!(read_pod::<LaunchEvent>(&unaligned[1..]), Some(e));
        assert_eq!(read_pod::<LaunchEvent>(&bytes[..15]), None);
        let mut sys = vec![0u8; SYS_EVENT_HEADER + 3];
        sys[0] = SYS_DATA;
        sys[SYS_EVENT_HEADER..].copy_from_slice(b"GET");
        let got: SysEvent = read_pod(&sys).unwrap();
        assert_eq!((got.kind, &got.data[..4]), (SYS_DATA, &b"GET\0"[..]));
        assert!(read_pod::<SysEvent>(&sys[..SYS_EVENT_HEADER - 1]).is_none());
    }
}
