//! Rust mirror of ebpf/sonde_events.h: the records that cross between kernel and user space.
//! `layout_matches_c_header` fails if this file and the header drift apart.

use crate::inspect::grpc::GrpcOffsets;
use crate::inspect::GoOffsets;

pub const METHOD_MAX: usize = 16;
pub const PATH_MAX: usize = 128;
pub const REMOTE_MAX: usize = 48;

pub const EVENT_HTTP_SERVER: u8 = 1;
pub const EVENT_HTTP_CLIENT: u8 = 2;
pub const EVENT_RPC_SERVER: u8 = 3;
pub const EVENT_RPC_CLIENT: u8 = 4;
pub const RPC_METHOD_MAX: usize = 128;
pub const RPC_REMOTE_MAX: usize = 64;
pub const FLAG_PATH_TRUNCATED: u8 = 0x1;
pub const FLAG_HTTP2: u8 = 0x2;
pub const FLAG_ERROR: u8 = 0x4;
pub const FLAG_HTTPS: u8 = 0x8;
pub const FLAG_REMOTE_PARENT: u8 = 0x10;
pub const MAP_BUCKETS: u32 = 0;
pub const MAP_SWISS: u32 = 1;
/// Traces are not exported: the kernel makes no span ids and reads no headers.
pub const NO_TRACES: u32 = 2;

/// `struct go_offsets`: the value of the PID filter map.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GoOffsetsAbi {
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

impl From<&GoOffsets> for GoOffsetsAbi {
    fn from(o: &GoOffsets) -> Self {
        GoOffsetsAbi {
            request_method: o.request_method,
            request_url: o.request_url,
            request_content_length: o.request_content_length,
            request_remote_addr: o.request_remote_addr,
            url_path: o.url_path,
            response_req: o.response_req,
            response_status: o.response_status,
            response_written: o.response_written,
            h2rw_rws: o.h2rw_rws,
            rws_status: o.rws_status,
            rws_wrote_bytes: o.rws_wrote_bytes,
            url_scheme: o.url_scheme,
            url_host: o.url_host,
            client_status_code: o.client_status_code,
            client_content_length: o.client_content_length,
            request_header: o.request_header,
            map_layout: MAP_BUCKETS,
        }
    }
}

/// `struct http_request_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HttpRequestEvent {
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

impl HttpRequestEvent {
    /// Reads an event from ring-buffer bytes; `None` when the record is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length was checked, the type is plain old data, and the read is
        // unaligned-safe.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// `struct launch_event`: a container's init process, before it execs the application.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchEvent {
    pub pid: u32,
    pub _pad: u32,
    pub ktime_ns: u64,
}

impl LaunchEvent {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: as for HttpRequestEvent: length checked, plain old data, unaligned read.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// `struct enrol_event`: a process the kernel enrolled at an armed file's probe.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnrolEvent {
    pub pid: u32,
    pub slot: u32,
    pub ktime_ns: u64,
}

impl EnrolEvent {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: as for HttpRequestEvent: length checked, plain old data, unaligned read.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

pub const EXEC_PATH_MAX: usize = 256;

/// `struct exec_event`: a program execution and the path given to exec.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExecEvent {
    pub pid: u32,
    pub len: u32,
    pub filename: [u8; EXEC_PATH_MAX],
}

impl ExecEvent {
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: as for HttpRequestEvent: length checked, plain old data, unaligned read.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }

    /// The path given to exec (truncated at EXEC_PATH_MAX - 1 bytes).
    pub fn path(&self) -> std::path::PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let n = (self.len as usize).min(EXEC_PATH_MAX);
        std::ffi::OsStr::from_bytes(&self.filename[..n]).into()
    }
}

/// `struct grpc_offsets`: the value of the `pid_grpc_offsets` map.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcOffsetsAbi {
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

impl From<&GrpcOffsets> for GrpcOffsetsAbi {
    fn from(o: &GrpcOffsets) -> Self {
        GrpcOffsetsAbi {
            stream_method: o.stream_method,
            stream_status: o.stream_status,
            status_proto: o.status_proto,
            proto_code: o.proto_code,
            error_status: o.error_status,
            error_indirect: u32::from(o.error_indirect),
            cc_target: o.cc_target,
            cs_attempt: o.cs_attempt,
            attempt_stream: o.attempt_stream,
        }
    }
}

/// `struct rpc_request_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RpcRequestEvent {
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

impl RpcRequestEvent {
    /// Reads an event from ring-buffer bytes; `None` when the record is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length was checked, the type is plain old data, and the read is
        // unaligned-safe.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

pub const SYS_DATA_MAX: usize = 1024;
pub const SYS_OPEN: u8 = 1;
pub const SYS_DATA: u8 = 2;
pub const SYS_CLOSE: u8 = 3;
pub const SYS_BIND: u8 = 4;
pub const SYS_ORPHAN: u8 = 5;
pub const SYS_ROLE_SERVER: u8 = 1;
pub const SYS_ROLE_CLIENT: u8 = 2;
pub const SYS_DIR_IN: u8 = 1;
pub const SYS_DIR_OUT: u8 = 2;
pub const SYS_FLAG_TLS: u8 = 0x1;
pub const SYS_FLAG_UNBOUND: u8 = 0x2;

/// `struct sys_event`: one record of the syscall/OpenSSL tracer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SysEvent {
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
pub const SYS_EVENT_HEADER: usize = std::mem::offset_of!(SysEvent, data);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use std::process::Command;

    /// Compiles a C program against the header with the host compiler and compares every
    /// size and field offset with this file.
    #[test]
    fn layout_matches_c_header() {
        let dir = std::env::temp_dir().join(format!("sonde-abi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("abi.c");
        let header = concat!(env!("CARGO_MANIFEST_DIR"), "/ebpf/sonde_events.h");
        let mut c = format!(
            "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#include \"{header}\"\nint main(void) {{\n"
        );
        let mut expected = Vec::new();
        macro_rules! check {
            ($cty:literal, $rty:ty, [$($f:ident),*]) => {
                c.push_str(&format!("printf(\"%zu\\n\", sizeof(struct {}));\n", $cty));
                expected.push(size_of::<$rty>());
                $(
                    c.push_str(&format!("printf(\"%zu\\n\", offsetof(struct {}, {}));\n", $cty, stringify!($f)));
                    expected.push(offset_of!($rty, $f));
                )*
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
            [kind, role, direction, flags, pid, fd, family, port, ts_ns, len, copied, addr, data]
        );
        for (name, value) in [
            ("SONDE_SYS_DATA_MAX", SYS_DATA_MAX),
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
        ] {
            c.push_str(&format!("printf(\"%zu\\n\", (size_t){name});\n"));
            expected.push(value);
        }
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
        let got: Vec<usize> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(
            got, expected,
            "src/ebpf_abi.rs and ebpf/sonde_events.h disagree"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
