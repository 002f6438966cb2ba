/* Every record that crosses from the kernel to sonde, defined once.
 * src/collect/event.rs mirrors this file; its test fails if sizes or offsets drift. */
#ifndef SONDE_EVENTS_H
#define SONDE_EVENTS_H

#define SONDE_METHOD_MAX 16
#define SONDE_PATH_MAX 128
#define SONDE_REMOTE_MAX 48

enum sonde_event_kind {
    SONDE_EVENT_HTTP_SERVER = 1,
    SONDE_EVENT_HTTP_CLIENT = 2,
    SONDE_EVENT_RPC_SERVER = 3, /* struct rpc_request_event */
    SONDE_EVENT_RPC_CLIENT = 4, /* struct rpc_request_event */
};

/* flags */
#define SONDE_FLAG_PATH_TRUNCATED 0x1
#define SONDE_FLAG_HTTP2 0x2
#define SONDE_FLAG_ERROR 0x4 /* client: the call returned an error, no response */
#define SONDE_FLAG_HTTPS 0x8 /* client: the URL's scheme is https */
#define SONDE_FLAG_REMOTE_PARENT 0x10 /* parent_span_id came from an incoming traceparent */

/* Struct field offsets of one Go binary, written by user space per selected PID.
 * The value of the pid filter map: a PID without an entry emits nothing. */
struct go_offsets {
    __u32 request_method;         /* net/http.Request.Method (string) */
    __u32 request_url;            /* net/http.Request.URL (*url.URL) */
    __u32 request_content_length; /* net/http.Request.ContentLength (int64) */
    __u32 request_remote_addr;    /* net/http.Request.RemoteAddr (string) */
    __u32 url_path;               /* net/url.URL.Path (string) */
    __u32 response_req;           /* net/http.response.req (*Request) */
    __u32 response_status;        /* net/http.response.status (int) */
    __u32 response_written;       /* net/http.response.written (int64) */
    __u32 h2rw_rws;               /* net/http.http2responseWriter.rws */
    __u32 rws_status;             /* net/http.http2responseWriterState.status */
    __u32 rws_wrote_bytes;        /* net/http.http2responseWriterState.wroteBytes */
    __u32 url_scheme;             /* net/url.URL.Scheme (string) */
    __u32 url_host;               /* net/url.URL.Host (string) */
    __u32 client_status_code;     /* net/http.Response.StatusCode (int) */
    __u32 client_content_length;  /* net/http.Response.ContentLength (int64) */
    __u32 request_header;         /* net/http.Request.Header (map[string][]string) */
    __u32 map_layout;             /* SONDE_MAP_*: Go's map implementation */
};

#define SONDE_MAP_BUCKETS 0 /* Go < 1.24: hmap and buckets of 8 */
#define SONDE_MAP_SWISS 1   /* Go >= 1.24: swiss tables */
#define SONDE_NO_TRACES 2   /* traces are not exported: make no ids, read no headers */

/* One HTTP request, served (SERVER) or made (CLIENT). For a client call, `remote` is the
 * URL's host[:port], `response_written` the response's Content-Length (-1 unknown). */
struct http_request_event {
    __u8 kind;         /* enum sonde_event_kind */
    __u8 flags;        /* SONDE_FLAG_* */
    __u8 method_len;
    __u8 remote_len;
    __u32 pid;         /* tgid */
    __u64 start_ns;    /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
    __u64 end_ns;
    __u64 goroutine;
    __s64 request_content_length;
    __s64 response_written;
    __u32 status;
    __u32 path_len;    /* bytes copied into path */
    char method[SONDE_METHOD_MAX];
    char path[SONDE_PATH_MAX];
    char remote[SONDE_REMOTE_MAX];
    /* W3C trace context, made at the entry probe. A client call made on the goroutine of a
     * request being served carries that request's trace id, and its span id as parent. */
    __u8 trace_id[16];
    __u8 span_id[8];
    __u8 parent_span_id[8]; /* all zero: a root span */
};

/* A container's init process, renamed by runc before it execs the application
 * (ebpf/launch.bpf.c). */
struct launch_event {
    __u32 pid;      /* in the initial PID namespace */
    __u32 _pad;
    __u64 ktime_ns; /* bpf_ktime_get_ns */
};

/* A process enrolled by a probe attached to a whole file (see `enrol` in sonde.bpf.c): it
 * runs the armed file in `slot` and is measured from its first probe hit. */
struct enrol_event {
    __u32 pid;      /* in the initial PID namespace */
    __u32 slot;     /* the file's slot in `file_offsets` */
    __u64 ktime_ns; /* bpf_ktime_get_ns */
};

/* A program execution (ebpf/launch.bpf.c, sched_process_exec): the path given to exec. */
#define SONDE_EXEC_PATH_MAX 256
struct exec_event {
    __u32 pid;
    __u32 len; /* bytes of filename before its NUL */
    char filename[SONDE_EXEC_PATH_MAX];
};

/* A uprobe cookie with this bit set names an armed file's slot (its low 32 bits). */
#define SONDE_ARMED_FILE (1ULL << 32)

/* gRPC (google.golang.org/grpc) field offsets of one binary: the value of `pid_grpc_offsets`.
 * A PID without an entry emits no RPC events (its HTTP probes are unaffected). */
struct grpc_offsets {
    __u32 stream_method;  /* internal/transport.Stream.method (string) */
    __u32 stream_status;  /* internal/transport.Stream.status (*status.Status), client side */
    __u32 status_proto;   /* internal/status.Status.s (*spb.Status) */
    __u32 proto_code;     /* genproto rpc/status.Status.Code (int32) */
    __u32 error_status;   /* internal/status.Error.e (*spb.Status), or .s (*Status) */
    __u32 error_indirect; /* 1: Error holds a *Status (grpc-go >= 1.38), 0: a *spb.Status */
    __u32 cc_target;      /* grpc.ClientConn.target (string) */
    __u32 cs_attempt;     /* grpc.clientStream.attempt (*csAttempt) */
    __u32 attempt_stream; /* grpc.csAttempt.s (*transport.Stream) */
};

#define SONDE_RPC_METHOD_MAX 128
#define SONDE_RPC_REMOTE_MAX 64

/* One gRPC call, served (RPC_SERVER) or made (RPC_CLIENT). `status` is the gRPC status code
 * (0 OK … 16 UNAUTHENTICATED); `remote` is the client's dial target. The first byte is the
 * kind, as in every event, so user space can tell the records apart. */
struct rpc_request_event {
    __u8 kind;         /* enum sonde_event_kind */
    __u8 flags;        /* SONDE_FLAG_PATH_TRUNCATED: the method was cut */
    __u16 method_len;  /* bytes copied into method */
    __u32 pid;
    __u64 start_ns;
    __u64 end_ns;
    __u64 goroutine;
    __u32 status;
    __u16 remote_len;
    __u16 _pad;
    char method[SONDE_RPC_METHOD_MAX];
    char remote[SONDE_RPC_REMOTE_MAX];
};

/* ---- Any language: syscall and OpenSSL tracing (ebpf/syscalls.bpf.c) ---- */

#define SONDE_SYS_DATA_MAX 1024 /* bytes of each buffer copied; the full length is sent too */

enum sonde_sys_kind {
    SONDE_SYS_OPEN = 1,  /* accept/connect succeeded: a new connection, with its peer */
    SONDE_SYS_DATA = 2,  /* bytes read or written on a connection */
    SONDE_SYS_CLOSE = 3, /* close(fd) of a connection */
    SONDE_SYS_BIND = 4,  /* the SSL object in addr[0..8] runs over this fd */
    SONDE_SYS_ORPHAN = 5, /* the SSL object in addr[0..8] runs over an untraced socket */
};

#define SONDE_SYS_ROLE_SERVER 1 /* accepted */
#define SONDE_SYS_ROLE_CLIENT 2 /* connected */

#define SONDE_SYS_DIR_IN 1  /* read by the process */
#define SONDE_SYS_DIR_OUT 2 /* written by the process */

#define SONDE_SYS_FLAG_TLS 0x1 /* plaintext from SSL_read/SSL_write, not the socket */
#define SONDE_SYS_FLAG_UNBOUND 0x2 /* TLS plaintext whose socket is not known yet: fd is -1,
                                      addr[0..8] the SSL object; a BIND record follows */

/* One record of the syscall tracer. `addr` holds the peer (IPv4 in its first 4 bytes) for
 * OPEN; `data` the first `copied` bytes of the `len` bytes of a DATA record. */
struct sys_event {
    __u8 kind;      /* enum sonde_sys_kind */
    __u8 role;      /* SONDE_SYS_ROLE_* */
    __u8 direction; /* SONDE_SYS_DIR_* */
    __u8 flags;     /* SONDE_SYS_FLAG_* */
    __u32 pid;      /* tgid */
    __s32 fd;
    __u16 family;   /* AF_INET, AF_INET6, 0 unknown */
    __u16 port;     /* peer port, host byte order */
    __u64 ts_ns;    /* bpf_ktime_get_ns at the syscall's exit */
    __u64 len;
    __u32 copied;
    __u32 _pad;
    __u8 addr[16];
    __u8 data[SONDE_SYS_DATA_MAX];
};

#endif
