// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* grpc-go (google.golang.org/grpc) server and client probes, included by sonde.bpf.c (they
 * share its ring buffer and helpers). Plain uprobes only, at entries and at RET instructions;
 * nothing here writes user memory.
 *
 * Server, three hits per call: (*Server).handleStream entry remembers the stream by goroutine;
 * (*http2Server).WriteStatus entry, on the same goroutine, notes the status code; a RET of
 * handleStream emits.
 * Unary client, two hits (plus one no-op hit of finish, below): (*ClientConn).Invoke entry and
 * RET; the returned error tells the status.
 * Streaming client, three hits: (*ClientConn).NewStream entry and RET, which hands the call to
 * the *clientStream it returned, and (*clientStream).finish entry, on whatever goroutine ends
 * the stream, which reads the status the transport stream received. */

/* pid_grpc_offsets is defined in sonde.bpf.c: enrolling a process fills it too. */

/* The calling process's gRPC offsets; see offsets_of. */
static __always_inline struct grpc_offsets *grpc_offsets_of(struct pt_regs *ctx, __u32 pid)
{
    struct grpc_offsets *off = bpf_map_lookup_elem(&pid_grpc_offsets, &pid);
    if (off || !enrol(ctx, pid))
        return off;
    return bpf_map_lookup_elem(&pid_grpc_offsets, &pid);
}

struct grpc_call {
    __u64 start_ns;
    __u64 obj; /* server: *transport.Stream; client: *ClientConn */
    __u64 method_ptr;
    __u64 method_len;
    __u32 status;
    __u32 _pad;
};

/* By goroutine: calls between entry and RET. LRU: a panicking handler never reaches a RET. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, struct inflight_key);
    __type(value, struct grpc_call);
} grpc_server_inflight SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, struct inflight_key);
    __type(value, struct grpc_call);
} grpc_client_inflight SEC(".maps");

/* Client streams between NewStream's return and finish, by *clientStream (the `goroutine`
 * field of the key holds the stream pointer): a stream may end on another goroutine. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, struct inflight_key);
    __type(value, struct grpc_call);
} grpc_streams_inflight SEC(".maps");

#define GRPC_STATUS_UNKNOWN 2
#define GRPC_STATUS_MAX 16

static __always_inline __u32 read_u32(__u64 addr)
{
    __u32 v = 0;
    bpf_probe_read_user(&v, sizeof(v), (void *)addr);
    return v;
}

/* *status.Status → its code; nil (or a nil proto) is OK, as status.(*Status).Code says. */
static __always_inline __u32 grpc_status_code(struct grpc_offsets *off, __u64 st)
{
    if (!st)
        return 0;
    __u64 proto = read_u64(st + off->status_proto);
    return proto ? read_u32(proto + off->proto_code) : 0;
}

/* An `error` returned by grpc-go → its status code. Every error grpc-go's call paths return
 * is a *status.Error; anything that does not read as one is UNKNOWN, as status.Code says. */
static __always_inline __u32 grpc_error_code(struct grpc_offsets *off, __u64 itab, __u64 data)
{
    if (!itab)
        return 0;
    if (!data)
        return GRPC_STATUS_UNKNOWN;
    __u64 p = read_u64(data + off->error_status);
    if (off->error_indirect && p)
        p = read_u64(p + off->status_proto);
    if (!p)
        return GRPC_STATUS_UNKNOWN;
    __u32 code = read_u32(p + off->proto_code);
    return code >= 1 && code <= GRPC_STATUS_MAX ? code : GRPC_STATUS_UNKNOWN;
}

static __always_inline void grpc_remember(void *map, struct inflight_key *key, __u64 obj,
                                          __u64 method_ptr, __u64 method_len)
{
    struct grpc_call v = {
        .start_ns = bpf_ktime_get_ns(),
        .obj = obj,
        .method_ptr = method_ptr,
        .method_len = method_len,
        .status = GRPC_STATUS_UNKNOWN,
    };
    bpf_map_update_elem(map, key, &v, BPF_ANY);
}

/* Takes the call remembered under `key` out of `map` (copied first: the slot is gone once
 * deleted); 0 when there is none. */
static __always_inline int grpc_take(void *map, struct inflight_key *key, struct grpc_call *out)
{
    struct grpc_call *found = bpf_map_lookup_elem(map, key);
    if (!found)
        return 0;
    *out = *found;
    bpf_map_delete_elem(map, key);
    return 1;
}

static __always_inline void copy_go_bytes(char *dst, __u32 cap, __u64 ptr, __u64 len)
{
    __u64 n = bounded(len, cap);
    if (n > 0 && ptr)
        bpf_probe_read_user(dst, n, (void *)ptr);
}

/* Emits one call; `cc` (client only) names the server through its dial target. */
static __always_inline void grpc_emit(struct grpc_offsets *off, __u8 kind, __u32 pid, __u64 g,
                                      struct grpc_call *v, __u32 status, __u64 cc)
{
    struct rpc_request_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e) {
        count_lost();
        return;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->pid = pid;
    e->start_ns = v->start_ns;
    e->end_ns = bpf_ktime_get_ns();
    e->goroutine = g;
    e->status = status;
    __u64 len = v->method_len;
    copy_go_bytes(e->method, SONDE_RPC_METHOD_MAX, v->method_ptr, len);
    if (len > SONDE_RPC_METHOD_MAX) {
        e->flags |= SONDE_FLAG_PATH_TRUNCATED;
        len = SONDE_RPC_METHOD_MAX;
    }
    e->method_len = len;
    if (cc) {
        len = read_go_string(e->remote, SONDE_RPC_REMOTE_MAX, cc + off->cc_target);
        e->remote_len = len < SONDE_RPC_REMOTE_MAX ? len : SONDE_RPC_REMOTE_MAX;
    }
    bpf_ringbuf_submit(e, bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKEUP_THRESHOLD
                              ? BPF_RB_FORCE_WAKEUP
                              : BPF_RB_NO_WAKEUP);
}

/* (*Server).handleStream(t ServerTransport, stream *transport.Stream, trInfo *traceInfo):
 * receiver RAX, the interface RBX/RCX, the stream RDI. */
SEC("uprobe")
int grpc_server_entry(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct grpc_offsets *off = grpc_offsets_of(ctx, pid);
    if (!off)
        return 0;
    __u64 stream = ctx->rdi;
    __u64 hdr[2] = {0, 0};
    bpf_probe_read_user(hdr, sizeof(hdr), (void *)(stream + off->stream_method));
    struct inflight_key key = {.pid = pid, .goroutine = GO_G(ctx)};
    grpc_remember(&grpc_server_inflight, &key, stream, hdr[0], hdr[1]);
    return 0;
}

/* (*http2Server).WriteStatus(s *Stream, st *status.Status): receiver RAX, s RBX, st RCX. */
SEC("uprobe")
int grpc_server_status(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct grpc_offsets *off = grpc_offsets_of(ctx, pid);
    if (!off)
        return 0;
    struct inflight_key key = {.pid = pid, .goroutine = GO_G(ctx)};
    struct grpc_call *v = bpf_map_lookup_elem(&grpc_server_inflight, &key);
    if (v && v->obj == (__u64)ctx->rbx)
        v->status = grpc_status_code(off, ctx->rcx);
    return 0;
}

SEC("uprobe")
int grpc_server_return(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct grpc_offsets *off = grpc_offsets_of(ctx, pid);
    if (!off)
        return 0;
    struct inflight_key key = {.pid = pid, .goroutine = GO_G(ctx)};
    struct grpc_call v;
    if (!grpc_take(&grpc_server_inflight, &key, &v))
        return 0;
    grpc_emit(off, SONDE_EVENT_RPC_SERVER, pid, key.goroutine, &v, v.status, 0);
    return 0;
}

/* (*ClientConn).Invoke(ctx, method string, args, reply interface{}, opts ...CallOption) error:
 * receiver RAX, ctx RBX/RCX, method RDI/RSI; at a RET the error is RAX (itab) / RBX (data). */
SEC("uprobe")
int grpc_client_invoke_entry(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (!grpc_offsets_of(ctx, pid))
        return 0;
    struct inflight_key key = {.pid = pid, .goroutine = GO_G(ctx)};
    grpc_remember(&grpc_client_inflight, &key, ctx->rax, ctx->rdi, ctx->rsi);
    return 0;
}

SEC("uprobe")
int grpc_client_invoke_return(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct grpc_offsets *off = grpc_offsets_of(ctx, pid);
    if (!off)
        return 0;
    struct inflight_key key = {.pid = pid, .goroutine = GO_G(ctx)};
    struct grpc_call v;
    if (!grpc_take(&grpc_client_inflight, &key, &v))
        return 0;
    __u32 status = grpc_error_code(off, ctx->rax, ctx->rbx);
    grpc_emit(off, SONDE_EVENT_RPC_CLIENT, pid, key.goroutine, &v, status, v.obj);
    return 0;
}

/* (*ClientConn).NewStream(ctx, desc *StreamDesc, method string, opts ...CallOption)
 * (ClientStream, error): receiver RAX, ctx RBX/RCX, desc RDI, method RSI/R8; at a RET the
 * stream is RAX/RBX and the error RCX/RDI. */
SEC("uprobe")
int grpc_client_stream_entry(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (!grpc_offsets_of(ctx, pid))
        return 0;
    struct inflight_key key = {.pid = pid, .goroutine = GO_G(ctx)};
    grpc_remember(&grpc_client_inflight, &key, ctx->rax, ctx->rsi, ctx->r8);
    return 0;
}

SEC("uprobe")
int grpc_client_stream_return(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct grpc_offsets *off = grpc_offsets_of(ctx, pid);
    if (!off)
        return 0;
    struct inflight_key key = {.pid = pid, .goroutine = GO_G(ctx)};
    struct grpc_call v;
    if (!grpc_take(&grpc_client_inflight, &key, &v))
        return 0;
    if (ctx->rcx) {
        /* The stream could not be opened (refused connection: UNAVAILABLE). */
        __u32 status = grpc_error_code(off, ctx->rcx, ctx->rdi);
        grpc_emit(off, SONDE_EVENT_RPC_CLIENT, pid, key.goroutine, &v, status, v.obj);
        return 0;
    }
    struct inflight_key skey = {.pid = pid, .goroutine = ctx->rbx};
    bpf_map_update_elem(&grpc_streams_inflight, &skey, &v, BPF_ANY);
    return 0;
}

/* (*clientStream).finish(err error): receiver RAX, err RBX/RCX. Unary calls pass here too,
 * and find nothing: their stream was never handed over. */
SEC("uprobe")
int grpc_client_stream_finish(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct grpc_offsets *off = grpc_offsets_of(ctx, pid);
    if (!off)
        return 0;
    __u64 cs = ctx->rax;
    struct inflight_key skey = {.pid = pid, .goroutine = cs};
    struct grpc_call v;
    if (!grpc_take(&grpc_streams_inflight, &skey, &v))
        return 0;
    /* The end of a stream is io.EOF, not a status error: the transport stream's status,
     * from the server's trailers, is the call's. */
    __u32 status = 0;
    if (ctx->rbx) {
        __u64 attempt = read_u64(cs + off->cs_attempt);
        __u64 ts = attempt ? read_u64(attempt + off->attempt_stream) : 0;
        __u64 st = ts ? read_u64(ts + off->stream_status) : 0;
        status = st ? grpc_status_code(off, st) : grpc_error_code(off, ctx->rbx, ctx->rcx);
    }
    grpc_emit(off, SONDE_EVENT_RPC_CLIENT, pid, GO_G(ctx), &v, status, v.obj);
    return 0;
}
