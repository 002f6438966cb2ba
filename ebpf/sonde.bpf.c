// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Go net/http server probes.
 *
 * Two hits per request, no more: an entry probe on net/http.serverHandler.ServeHTTP remembers
 * the start time and the *Request / ResponseWriter pointers by goroutine, and a plain uprobe
 * on each RET instruction of the same function (never a uretprobe: Go moves goroutine stacks)
 * reads everything else and emits one event. Nothing here ever writes user memory. */

#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "sonde_events.h"
#include "bounds.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The PID filter: only processes user space selected have an entry, and the value tells
 * the offsets of that process's Go binary. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 8192);
    __type(key, __u32);
    __type(value, struct go_offsets);
} pid_offsets SEC(".maps");

struct inflight_key {
    __u32 pid;
    __u32 _pad;
    __u64 goroutine;
};

struct trace_ctx {
    __u8 trace_id[16];
    __u8 span_id[8];
    __u8 parent_span_id[8];
    __u64 remote_parent; /* the parent is the caller's span, from its traceparent */
};

struct inflight {
    __u64 start_ns;
    __u64 req;
    __u64 rw_data;
    struct trace_ctx trace;
};

/* Bounded: a handler that panics never reaches a RET, and its entry is evicted in time. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, struct inflight_key);
    __type(value, struct inflight);
} server_inflight SEC(".maps");

/* Outgoing calls in flight, by goroutine: a handler's own call is on the same goroutine as
 * its request, so the two maps are kept apart. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, struct inflight_key);
    __type(value, struct inflight);
} client_inflight SEC(".maps");

/* Goroutines started while serving a request (or by such a goroutine), with the trace id
 * and span id (in span_id) of that request: their calls become its children. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, struct inflight_key);
    __type(value, struct trace_ctx);
} goroutine_trace SEC(".maps");

/* runtime.newproc1 in flight, by (pid, g0 of the thread: it runs on the system stack):
 * the goroutine that asked for the new one. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, struct inflight_key);
    __type(value, __u64);
} newproc_inflight SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4 << 20);
} events SEC(".maps");

/* Index 0: events dropped because the ring buffer was full. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} lost_events SEC(".maps");

/* The gRPC offsets of each selected process (see grpc.bpf.h). */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 8192);
    __type(key, __u32);
    __type(value, struct grpc_offsets);
} pid_grpc_offsets SEC(".maps");

/* Files armed as a whole: a program file the user selected by path (`executable_name`) has
 * its probes attached for every process (pid -1), with the file's slot in the cookie, so a
 * process that runs it is measured from its first instruction, however short it lives — no
 * scan could find it in time. Its first hit enrols it: the file's offsets are copied to its
 * PID and user space is told who it is. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, struct go_offsets);
} file_offsets SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, struct grpc_offsets);
} file_grpc_offsets SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 << 10);
} enrolments SEC(".maps");

/* User space drains on a short timer; wake it early only when this much is waiting, so the
 * application's thread never pays a wake-up per request. */
#define WAKEUP_THRESHOLD (1 << 20)

/* Go ABIInternal on amd64: R14 holds the current goroutine (g). */
#define GO_G(ctx) ((__u64)(ctx)->r14)

static __always_inline __u64 read_u64(__u64 addr)
{
    __u64 v = 0;
    bpf_probe_read_user(&v, sizeof(v), (void *)addr);
    return v;
}

/* Copies a Go string (pointer, length) into dst, returns the full length. */
static __always_inline __u64 read_go_string(char *dst, __u32 cap, __u64 str_addr)
{
    __u64 hdr[2] = {0, 0};
    if (bpf_probe_read_user(hdr, sizeof(hdr), (void *)str_addr) != 0)
        return 0;
    __u64 len = hdr[1];
    __u64 n = bounded(len, cap);
    if (n > 0 && hdr[0] != 0)
        bpf_probe_read_user(dst, n, (void *)hdr[0]);
    return len;
}

/* A struct is copied from user memory once, as far as the fields read from it reach, and the
 * fields are taken from that copy: one bpf_probe_read_user per struct instead of one per
 * field (each costs ~100 ns here; bench/NOTES.md). A field beyond the window, in a layout
 * not seen yet, is read on its own. */
#define REQUEST_WINDOW 192
#define RESPONSE_WINDOW 144

struct window {
    __u64 base; /* user address the copy starts at */
    __u32 len;  /* bytes copied (0: the copy failed, every field is read on its own) */
};

static __always_inline void window_copy(struct window *w, void *buf, __u64 cap, __u64 base,
                                        __u64 need)
{
    w->base = base;
    w->len = 0;
    __u64 n = bounded(need, cap);
    if (n == 0)
        return;
    if (bpf_probe_read_user(buf, n, (void *)base) == 0)
        w->len = n;
}

static __always_inline __u64 window_u64(const struct window *w, const __u8 *buf, __u64 cap,
                                        __u64 off)
{
    if (off <= cap - 8 && off + 8 <= w->len) {
        __u64 v;
        __builtin_memcpy(&v, buf + off, sizeof(v));
        return v;
    }
    return read_u64(w->base + off);
}

static __always_inline __u64 max_u64(__u64 a, __u64 b)
{
    return a > b ? a : b;
}

/* Copies a Go string whose header (pointer, length) was already read; returns its length. */
static __always_inline __u64 copy_go_string(char *dst, __u32 cap, __u64 ptr, __u64 len)
{
    __u64 n = bounded(len, cap);
    if (n > 0 && ptr != 0)
        bpf_probe_read_user(dst, n, (void *)ptr);
    return len;
}

static __always_inline void count_lost(void)
{
    __u32 zero = 0;
    __u64 *lost = bpf_map_lookup_elem(&lost_events, &zero);
    if (lost)
        *lost += 1;
}

/* Never wake user space per event: it drains on a timer, or early when this much waits. */
static __always_inline void submit(struct http_request_event *e)
{
    __u64 wake = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKEUP_THRESHOLD
                     ? BPF_RB_FORCE_WAKEUP
                     : BPF_RB_NO_WAKEUP;
    bpf_ringbuf_submit(e, wake);
}

/* Incoming W3C trace context: the `Traceparent` entry of the request's Header map
 * (map[string][]string), found by a bounded scan of the map's memory. Go changed its map
 * implementation in 1.24 (buckets of 8 → swiss tables), so there are two readers. */
#define TRACEPARENT_LEN 55  /* 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags> */
#define MAP_SCAN_GROUPS 4   /* buckets or groups looked at: headers of ordinary requests */
#define GO_STRING_SIZE 16
#define GO_SLICE_SIZE 24
#define HMAP_BUCKET_SIZE (8 + 8 * GO_STRING_SIZE + 8 * GO_SLICE_SIZE + 8)
#define HMAP_MIN_TOPHASH 5
#define SWISS_SLOT_SIZE (GO_STRING_SIZE + GO_SLICE_SIZE)
#define SWISS_GROUP_SIZE (8 + 8 * SWISS_SLOT_SIZE)

/* Whether the Go string at `addr` is "Traceparent" (the canonical form Go stores). */
static __always_inline int is_traceparent(__u64 addr)
{
    __u64 hdr[2] = {0, 0};
    if (bpf_probe_read_user(hdr, sizeof(hdr), (void *)addr) != 0 || hdr[1] != 11 || !hdr[0])
        return 0;
    char k[11];
    if (bpf_probe_read_user(k, sizeof(k), (void *)hdr[0]) != 0)
        return 0;
    return k[0] == 'T' && k[1] == 'r' && k[2] == 'a' && k[3] == 'c' && k[4] == 'e' &&
           k[5] == 'p' && k[6] == 'a' && k[7] == 'r' && k[8] == 'e' && k[9] == 'n' &&
           k[10] == 't';
}

/* Go < 1.24: hmap {count, flags, B, noverflow, hash0, buckets, ...}; a bucket is tophash[8],
 * keys[8], elems[8], overflow. Returns the address of the value slice, or 0. */
static __always_inline __u64 find_traceparent_buckets(__u64 h)
{
    __u8 b = 0;
    bpf_probe_read_user(&b, 1, (void *)(h + 9));
    __u64 buckets = read_u64(h + 16);
    __u64 n = b < 2 ? (1ULL << b) : MAP_SCAN_GROUPS;
#pragma clang loop unroll(disable)
    for (int i = 0; i < MAP_SCAN_GROUPS; i++) {
        if (i >= n || !buckets)
            break;
        __u64 bucket = buckets + i * HMAP_BUCKET_SIZE;
        __u64 tophash = read_u64(bucket);
#pragma clang loop unroll(disable)
        for (int s = 0; s < 8; s++) {
            if (((tophash >> (s * 8)) & 0xff) < HMAP_MIN_TOPHASH)
                continue;
            if (is_traceparent(bucket + 8 + s * GO_STRING_SIZE))
                return bucket + 8 + 8 * GO_STRING_SIZE + s * GO_SLICE_SIZE;
        }
    }
    return 0;
}

/* One swiss group: a control word (high bit set: empty or deleted) and 8 key/value slots. */
static __always_inline __u64 find_in_group(__u64 group)
{
    __u64 ctrl = read_u64(group);
#pragma clang loop unroll(disable)
    for (int s = 0; s < 8; s++) {
        if ((ctrl >> (s * 8)) & 0x80)
            continue;
        __u64 slot = group + 8 + s * SWISS_SLOT_SIZE;
        if (is_traceparent(slot))
            return slot + GO_STRING_SIZE;
    }
    return 0;
}

/* Go >= 1.24: Map {used, seed, dirPtr, dirLen, ...}. dirLen 0: dirPtr is the one group of a
 * small map; else a directory of tables {used, capacity, growthLeft, localDepth, index,
 * groups {data, lengthMask}}. */
static __always_inline __u64 find_traceparent_swiss(__u64 m)
{
    __u64 dir = read_u64(m + 16);
    __u64 dir_len = read_u64(m + 24);
    if (!dir)
        return 0;
    if (dir_len == 0)
        return find_in_group(dir);
    __u64 table = read_u64(dir);
    if (!table)
        return 0;
    __u64 groups = read_u64(table + 16);
    __u64 mask = read_u64(table + 24);
#pragma clang loop unroll(disable)
    for (int g = 0; g < MAP_SCAN_GROUPS; g++) {
        if (g > mask || !groups)
            break;
        __u64 found = find_in_group(groups + g * SWISS_GROUP_SIZE);
        if (found)
            return found;
    }
    return 0;
}

static __always_inline int hex_nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static __always_inline int parse_hex(const char *s, __u8 *out, int n)
{
#pragma clang loop unroll(disable)
    for (int i = 0; i < n; i++) {
        int hi = hex_nibble(s[2 * i]);
        int lo = hex_nibble(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (hi << 4) | lo;
    }
    return 0;
}

/* Makes this request join the trace of its incoming `traceparent`, if it has a valid one. */
static __always_inline void join_incoming_trace(__u64 req, struct go_offsets *off,
                                                struct trace_ctx *t)
{
    __u64 header = read_u64(req + off->request_header);
    if (!header)
        return;
    __u64 value = off->map_layout == SONDE_MAP_SWISS ? find_traceparent_swiss(header)
                                                     : find_traceparent_buckets(header);
    if (!value)
        return;
    __u64 slice[2] = {0, 0};
    if (bpf_probe_read_user(slice, sizeof(slice), (void *)value) != 0 || !slice[0] ||
        !slice[1])
        return;
    __u64 str[2] = {0, 0};
    if (bpf_probe_read_user(str, sizeof(str), (void *)slice[0]) != 0 || !str[0] ||
        str[1] < TRACEPARENT_LEN)
        return;
    char tp[TRACEPARENT_LEN];
    if (bpf_probe_read_user(tp, sizeof(tp), (void *)str[0]) != 0)
        return;
    if (tp[2] != '-' || tp[35] != '-' || tp[52] != '-')
        return;
    __u8 trace_id[16];
    __u8 parent[8];
    if (parse_hex(tp + 3, trace_id, 16) || parse_hex(tp + 36, parent, 8))
        return;
    __u64 *tw = (__u64 *)trace_id;
    __u64 *pw = (__u64 *)parent;
    /* All-zero ids are invalid: start a new trace instead. */
    if ((tw[0] | tw[1]) == 0 || pw[0] == 0)
        return;
    __builtin_memcpy(t->trace_id, trace_id, sizeof(trace_id));
    __builtin_memcpy(t->parent_span_id, parent, sizeof(parent));
    t->remote_parent = 1;
}

/* At a probe of an armed file (its cookie says which), a process without offsets yet is
 * enrolled: the file's offsets become its own, and user space learns its PID (once: the
 * thread that inserts it reports). 1 when the process has offsets now. */
static __always_inline int enrol(struct pt_regs *ctx, __u32 pid)
{
    __u64 cookie = bpf_get_attach_cookie(ctx);
    if (!(cookie & SONDE_ARMED_FILE))
        return 0;
    __u32 slot = (__u32)cookie;
    struct go_offsets *off = bpf_map_lookup_elem(&file_offsets, &slot);
    if (!off)
        return 0;
    struct grpc_offsets *grpc = bpf_map_lookup_elem(&file_grpc_offsets, &slot);
    /* gRPC first: the HTTP entry is what marks a process as enrolled. */
    if (grpc)
        bpf_map_update_elem(&pid_grpc_offsets, &pid, grpc, BPF_NOEXIST);
    if (bpf_map_update_elem(&pid_offsets, &pid, off, BPF_NOEXIST) != 0)
        return 1;
    struct enrol_event *e = bpf_ringbuf_reserve(&enrolments, sizeof(*e), 0);
    if (e) {
        e->pid = pid;
        e->slot = slot;
        e->ktime_ns = bpf_ktime_get_ns();
        bpf_ringbuf_submit(e, 0);
    }
    return 1;
}

/* The calling process's offsets: its own entry, or its armed file's (enrolling it). */
static __always_inline struct go_offsets *offsets_of(struct pt_regs *ctx, __u32 pid)
{
    struct go_offsets *off = bpf_map_lookup_elem(&pid_offsets, &pid);
    if (off || !enrol(ctx, pid))
        return off;
    return bpf_map_lookup_elem(&pid_offsets, &pid);
}

static __always_inline void random_words(__u32 *dst, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = bpf_get_prandom_u32();
}

/* Remembers a call's start and arguments by goroutine, for a selected process only, with
 * new span ids. `parent_map`: where a request this call belongs to may be in flight on the
 * same goroutine (a handler's own outgoing call); NULL for server requests. */
static __always_inline void remember(struct pt_regs *ctx, void *inflight_map, void *parent_map,
                                     __u64 req, __u64 rw_data)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct go_offsets *off = offsets_of(ctx, pid);
    if (!off)
        return;
    struct inflight_key key = {.pid = pid, .goroutine = GO_G(ctx)};
    struct inflight v = {.start_ns = bpf_ktime_get_ns(), .req = req, .rw_data = rw_data};
    /* Metrics only: ids and the header scan would cost every request for nothing. */
    if (off->map_layout == SONDE_NO_TRACES)
        goto store;
    random_words((__u32 *)v.trace.span_id, 2);
    struct inflight *parent = parent_map ? bpf_map_lookup_elem(parent_map, &key) : NULL;
    /* start_ns 0: that request is over (its slot stays for reuse), it is no parent. */
    if (parent && parent->start_ns) {
        __builtin_memcpy(v.trace.trace_id, parent->trace.trace_id, sizeof(v.trace.trace_id));
        __builtin_memcpy(v.trace.parent_span_id, parent->trace.span_id,
                         sizeof(v.trace.parent_span_id));
    } else {
        struct trace_ctx *started_by =
            parent_map ? bpf_map_lookup_elem(&goroutine_trace, &key) : NULL;
        if (started_by) {
            __builtin_memcpy(v.trace.trace_id, started_by->trace_id, sizeof(v.trace.trace_id));
            __builtin_memcpy(v.trace.parent_span_id, started_by->span_id,
                             sizeof(v.trace.parent_span_id));
        } else {
            random_words((__u32 *)v.trace.trace_id, 4);
            if (!parent_map)
                join_incoming_trace(req, off, &v.trace);
        }
    }
    /* A goroutine that made a call before keeps its slot (the RET marks it consumed instead
     * of deleting it): storing into it costs ~200 ns less per request here than an LRU update
     * plus a delete (bench/NOTES.md). Go reuses goroutines, so the slots in use stay about as
     * many as the goroutines that serve at once. */
store:;
    struct inflight *cur = bpf_map_lookup_elem(inflight_map, &key);
    if (cur)
        *cur = v;
    else
        bpf_map_update_elem(inflight_map, &key, &v, BPF_ANY);
}

/* At a RET: takes this goroutine's call out of `inflight_map` and starts its event with
 * what both sides share (timing, method, path, Content-Length), copying the *Request into
 * req_buf (REQUEST_WINDOW bytes) once. NULL: nothing to report. */
static __always_inline struct http_request_event *
start_event(struct pt_regs *ctx, void *inflight_map, __u8 kind, struct inflight *v,
            struct go_offsets **off, __u64 *url, __u8 *req_buf, struct window *reqw)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    *off = offsets_of(ctx, pid);
    if (!*off)
        return NULL;
    struct inflight_key key = {.pid = pid, .goroutine = GO_G(ctx)};
    struct inflight *found = bpf_map_lookup_elem(inflight_map, &key);
    /* start_ns 0: consumed by an earlier RET (the server entry reuses slots, see there). */
    if (!found || !found->start_ns)
        return NULL;
    *v = *found;
    found->start_ns = 0;

    struct http_request_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e) {
        count_lost();
        return NULL;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->pid = pid;
    e->start_ns = v->start_ns;
    e->end_ns = bpf_ktime_get_ns();
    e->goroutine = key.goroutine;
    __builtin_memcpy(e->trace_id, v->trace.trace_id, sizeof(e->trace_id));
    __builtin_memcpy(e->span_id, v->trace.span_id, sizeof(e->span_id));
    __builtin_memcpy(e->parent_span_id, v->trace.parent_span_id, sizeof(e->parent_span_id));
    if (v->trace.remote_parent)
        e->flags |= SONDE_FLAG_REMOTE_PARENT;

    struct go_offsets *o = *off;
    struct window *w = reqw;
    __u64 need = max_u64(max_u64(o->request_method + 16, o->request_url + 8),
                         max_u64(o->request_content_length + 8, o->request_remote_addr + 16));
    window_copy(w, req_buf, REQUEST_WINDOW, v->req, need);
    __u64 len = copy_go_string(e->method, SONDE_METHOD_MAX,
                               window_u64(w, req_buf, REQUEST_WINDOW, o->request_method),
                               window_u64(w, req_buf, REQUEST_WINDOW, o->request_method + 8));
    e->method_len = len < SONDE_METHOD_MAX ? len : SONDE_METHOD_MAX;
    e->request_content_length =
        (__s64)window_u64(w, req_buf, REQUEST_WINDOW, o->request_content_length);
    *url = window_u64(w, req_buf, REQUEST_WINDOW, o->request_url);
    if (*url) {
        len = read_go_string(e->path, SONDE_PATH_MAX, *url + (*off)->url_path);
        if (len > SONDE_PATH_MAX) {
            e->flags |= SONDE_FLAG_PATH_TRUNCATED;
            len = SONDE_PATH_MAX;
        }
        e->path_len = len;
    }
    return e;
}

/* serverHandler.ServeHTTP(rw ResponseWriter, req *Request): receiver in RAX, the interface in
 * RBX (itab) and RCX (data), req in RDI. */
SEC("uprobe")
int server_handler_entry(struct pt_regs *ctx)
{
    remember(ctx, &server_inflight, NULL, ctx->rdi, ctx->rcx);
    return 0;
}

SEC("uprobe")
int server_handler_return(struct pt_regs *ctx)
{
    struct inflight v;
    struct go_offsets *off;
    __u64 url;
    __u8 req_buf[REQUEST_WINDOW];
    struct window w;
    struct http_request_event *e = start_event(ctx, &server_inflight, SONDE_EVENT_HTTP_SERVER, &v,
                                               &off, &url, req_buf, &w);
    if (!e)
        return 0;
    __u64 req = v.req;
    __u64 len = copy_go_string(
        e->remote, SONDE_REMOTE_MAX,
        window_u64(&w, req_buf, REQUEST_WINDOW, off->request_remote_addr),
        window_u64(&w, req_buf, REQUEST_WINDOW, off->request_remote_addr + 8));
    e->remote_len = len < SONDE_REMOTE_MAX ? len : SONDE_REMOTE_MAX;

    /* Which ResponseWriter is it? Only two kinds reach serverHandler.ServeHTTP: HTTP/1's
     * *response, which points back at the request, and HTTP/2's writer, whose first word is
     * its state (Go 1.27 rebuilds the *Request for HTTP/2, so nothing there points back).
     * No itab symbols needed, so this works on stripped binaries too. */
    __u64 rw = v.rw_data;
    __u8 rw_buf[RESPONSE_WINDOW];
    struct window rw_w = {.base = rw, .len = 0};
    if (rw) {
        __u64 need = max_u64(max_u64(off->response_req + 8, off->response_status + 8),
                             max_u64(off->response_written + 8, off->h2rw_rws + 8));
        window_copy(&rw_w, rw_buf, RESPONSE_WINDOW, rw, need);
    }
    if (rw && window_u64(&rw_w, rw_buf, RESPONSE_WINDOW, off->response_req) == req) {
        e->status = (__u32)window_u64(&rw_w, rw_buf, RESPONSE_WINDOW, off->response_status);
        e->response_written =
            (__s64)window_u64(&rw_w, rw_buf, RESPONSE_WINDOW, off->response_written);
    } else if (rw) {
        __u64 rws = window_u64(&rw_w, rw_buf, RESPONSE_WINDOW, off->h2rw_rws);
        if (rws) {
            e->flags |= SONDE_FLAG_HTTP2;
            e->status = (__u32)read_u64(rws + off->rws_status);
            e->response_written = (__s64)read_u64(rws + off->rws_wrote_bytes);
        }
    }
    submit(e);
    return 0;
}

/* net/http.(*Transport).RoundTrip(req *Request) (*Response, error): the receiver in RAX, req
 * in RBX; at a RET the results are in RAX (*Response) and RBX/RCX (error). Covers http.Get,
 * Client.Do and a Transport used directly. */
SEC("uprobe")
int client_roundtrip_entry(struct pt_regs *ctx)
{
    remember(ctx, &client_inflight, &server_inflight, ctx->rbx, 0);
    return 0;
}

SEC("uprobe")
int client_roundtrip_return(struct pt_regs *ctx)
{
    struct inflight v;
    struct go_offsets *off;
    __u64 url;
    __u8 req_buf[REQUEST_WINDOW];
    struct window w;
    struct http_request_event *e = start_event(ctx, &client_inflight, SONDE_EVENT_HTTP_CLIENT, &v,
                                               &off, &url, req_buf, &w);
    if (!e)
        return 0;
    if (url) {
        __u64 len = read_go_string(e->remote, SONDE_REMOTE_MAX, url + off->url_host);
        e->remote_len = len < SONDE_REMOTE_MAX ? len : SONDE_REMOTE_MAX;
        __u64 scheme[2] = {0, 0};
        if (bpf_probe_read_user(scheme, sizeof(scheme), (void *)(url + off->url_scheme)) == 0 &&
            scheme[1] == 5)
            e->flags |= SONDE_FLAG_HTTPS;
    }
    __u64 resp = (__u64)ctx->rax;
    if (resp) {
        e->status = (__u32)read_u64(resp + off->client_status_code);
        e->response_written = (__s64)read_u64(resp + off->client_content_length);
    } else {
        e->flags |= SONDE_FLAG_ERROR;
        e->response_written = -1;
    }
    submit(e);
    return 0;
}

/* runtime.newproc1(fn *funcval, callergp *g, callerpc uintptr, ...) *g: callergp in RBX at
 * the entry, the new goroutine in RAX at a RET. Attached only when traces are exported. */
SEC("uprobe")
int goroutine_start_entry(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (!offsets_of(ctx, pid))
        return 0;
    struct inflight_key key = {.pid = pid, .goroutine = GO_G(ctx)};
    __u64 caller = ctx->rbx;
    bpf_map_update_elem(&newproc_inflight, &key, &caller, BPF_ANY);
    return 0;
}

SEC("uprobe")
int goroutine_start_return(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct inflight_key key = {.pid = pid, .goroutine = GO_G(ctx)};
    __u64 *found = bpf_map_lookup_elem(&newproc_inflight, &key);
    if (!found)
        return 0;
    struct inflight_key caller = {.pid = pid, .goroutine = *found};
    bpf_map_delete_elem(&newproc_inflight, &key);
    struct inflight_key started = {.pid = pid, .goroutine = (__u64)ctx->rax};
    if (!started.goroutine)
        return 0;
    struct trace_ctx t = {};
    struct inflight *req = bpf_map_lookup_elem(&server_inflight, &caller);
    struct trace_ctx *inherited = bpf_map_lookup_elem(&goroutine_trace, &caller);
    if (req && req->start_ns) {
        __builtin_memcpy(t.trace_id, req->trace.trace_id, sizeof(t.trace_id));
        __builtin_memcpy(t.span_id, req->trace.span_id, sizeof(t.span_id));
    } else if (inherited) {
        t = *inherited;
    } else {
        /* Goroutine structs are reused: forget what an earlier one with this g inherited. */
        bpf_map_delete_elem(&goroutine_trace, &started);
        return 0;
    }
    bpf_map_update_elem(&goroutine_trace, &started, &t, BPF_ANY);
    return 0;
}

#include "grpc.bpf.h"
