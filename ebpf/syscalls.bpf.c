// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Any language: HTTP/1.x seen through syscalls, HTTPS through OpenSSL.
 *
 * Syscalls (tracepoints, or kprobes on the syscall wrappers where the kernel has them: see
 * SYSCALL_ENTER below) learn connections from accept/accept4 (server role) and connect (client role), copy a bounded prefix of every
 * buffer read or written on them, and report close. User space reassembles and parses the
 * streams. Only processes whose bit is set in `traced_tgids` emit anything; every other
 * process leaves each hook at its first check (an inlined array lookup, no map work).
 *
 * OpenSSL: uprobes/uretprobes on SSL_read/SSL_write (and the _ex forms) report plaintext. The
 * read/write syscall nested inside an SSL call on the same thread names the socket (nginx,
 * Python); without one (Node.js's memory BIOs), the socket this thread last read from names
 * an SSL_read's, and the socket write that follows on the thread an SSL_write's (its
 * plaintext is sent first, unbound, and a BIND record follows).
 * From then on that socket is marked TLS and its encrypted bytes are no longer sent.
 * What is kept about a socket past one call names its connection too: fds and freed SSL
 * objects' addresses are both handed out again.
 *
 * Tracepoint arguments are read with the layout of events/syscalls/<name>/format (args at
 * offset 16, ret at 16): no raw-tracepoint ctx->args, which aya's CO-RE mishandles. Nothing
 * here writes user memory. */

#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "sonde_events.h"
#include "bounds.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define EINPROGRESS 115
/* iovecs of one readv/writev/recvmsg/sendmsg copied; bytes past them are counted only. */
#define MAX_IOV 32

/* The syscalls/sys_enter_* and sys_exit_* record layouts (see their format files). */
struct sys_enter_ctx {
    __u64 common;
    __s64 nr;
    __u64 args[6];
};

struct sys_exit_ctx {
    __u64 common;
    __s64 nr;
    __s64 ret;
};

/* Traced processes, one bit per tgid (word tgid / 64, bit tgid % 64; 65536 words cover
 * PID_MAX_LIMIT): the in-kernel filter, checked first by every program. An array lookup is
 * inlined by the verifier (no helper call, no hashing), so a process that is not traced (a
 * bystander, or a Go process measured by uprobes) leaves after a few instructions. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, __u64);
} traced_tgids SEC(".maps");

struct conn_key {
    __u32 pid;
    __s32 fd;
};

struct conn {
    __u8 role;
    __u8 tls;
    __u16 family;
    __u16 port;
    __u16 _pad;
    /* When it opened: tells this connection from an earlier one on the same fd. */
    __u64 id;
};

/* A connection by fd and identity: what is remembered about a socket past the syscall that
 * named it. The fd alone would name whichever connection holds that number now. */
struct sock_ref {
    __s32 fd;
    __u32 _pad;
    __u64 conn_id;
};

/* Known connections. LRU: a close sonde never saw (dup2, close_range, exit) ages out. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct conn_key);
    __type(value, struct conn);
} conns SEC(".maps");

enum op {
    OP_BUF = 1,     /* read/recvfrom/write/sendto: one buffer */
    OP_IOV = 2,     /* readv/writev/recvmsg/sendmsg: an iovec array */
    OP_COUNT = 3,   /* sendfile: bytes only */
    OP_ACCEPT = 4,  /* the peer's sockaddr is written at `ptr` */
    OP_CONNECT = 5, /* peer already read at entry */
};

/* A syscall between its entry and its exit, by thread. */
struct pending {
    __u64 ptr;
    __u64 iovcnt;
    __s32 fd;
    __u8 op;
    __u8 direction;
    __u16 family;
    __u16 port;
    __u8 addr[16];
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u64);
    __type(value, struct pending);
} sys_pending SEC(".maps");

/* An SSL_read/SSL_write call in progress, by thread. */
struct ssl_call {
    __u64 ssl;
    __u64 buf;
    __u64 len_ptr; /* _ex forms: where the byte count is written; 0 otherwise */
    __s32 fd;      /* learnt from the nested syscall, or from an earlier call on this SSL */
    __u8 direction;
    /* 0: fd is only the socket this thread last read (a guess), trusted once the call
     * returns data. */
    __u8 trusted;
    __u8 _pad[2];
};

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u64);
    __type(value, struct ssl_call);
} ssl_calls SEC(".maps");

struct ssl_key {
    __u32 pid;
    __u32 _pad;
    __u64 ssl;
};

/* The socket under each SSL object: SSL_read may return buffered plaintext without any
 * syscall. OpenSSL hands a freed SSL object's address to the next one, so an entry holds
 * only while its connection is open. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct ssl_key);
    __type(value, struct sock_ref);
} ssl_fds SEC(".maps");

/* The connection each thread last read from. Runtimes that run OpenSSL over memory BIOs
 * (Node.js) read the socket themselves and call SSL_read after it on the same thread, so no
 * syscall nests inside the SSL call: this names the socket of an SSL object not seen yet. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u64);
    __type(value, struct sock_ref);
} last_read_fd SEC(".maps");

/* An SSL object whose SSL_write returned plaintext before its socket was known, by thread:
 * over memory BIOs the encrypted bytes are written to the socket right after, on the same
 * thread, and that write names the socket. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, __u64);
    __type(value, __u64);
} unbound_write SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    /* Mapped twice into sonde (the kernel's wrap-around view), all resident: 4 MiB costs
     * 8 MiB of RSS and holds ~150 ms of a 19k req/s nginx's records, three drain periods. */
    __uint(max_entries, 4 << 20);
} sys_events SEC(".maps");

/* Index 0: records dropped because the ring buffer was full. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} sys_lost SEC(".maps");

/* User space drains on a timer; wake it early only when this much is waiting. */
#define WAKEUP_THRESHOLD (4 << 20)

static __always_inline int selected(__u32 pid)
{
    __u32 word = pid >> 6;
    __u64 *bits = bpf_map_lookup_elem(&traced_tgids, &word);
    return bits && ((*bits >> (pid & 63)) & 1);
}

/* The first statement of every tracepoint program. */
#define LEAVE_UNLESS_TRACED()                                                                \
    if (!selected(bpf_get_current_pid_tgid() >> 32))                                         \
    return 0

/* The fd `ref` names, if the connection it was taken from is still open on it; -1 if not. */
static __always_inline __s32 still_open(__u32 pid, const struct sock_ref *ref)
{
    if (!ref)
        return -1;
    struct conn_key key = {.pid = pid, .fd = ref->fd};
    struct conn *c = bpf_map_lookup_elem(&conns, &key);
    return c && c->id == ref->conn_id ? ref->fd : -1;
}

/* Records are built here and copied into the ring buffer at their used size (a 150-byte
 * write takes ~200 bytes of ring, not the whole struct). */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct sys_event);
} scratch SEC(".maps");

static __always_inline struct sys_event *scratch_event(void)
{
    __u32 zero = 0;
    return bpf_map_lookup_elem(&scratch, &zero);
}

#define SYS_EVENT_HEADER (sizeof(struct sys_event) - SONDE_SYS_DATA_MAX)

/* Sends the record's header and its first `copied` data bytes; never wakes user space
 * unless the buffer is filling up. */
static __always_inline void output(struct sys_event *e, __u32 copied)
{
    __u64 wake = bpf_ringbuf_query(&sys_events, BPF_RB_AVAIL_DATA) >= WAKEUP_THRESHOLD
                     ? BPF_RB_FORCE_WAKEUP
                     : BPF_RB_NO_WAKEUP;
    /* Bounded after the query call: a bound kept across a call may be spilled and lost. */
    __u64 size = SYS_EVENT_HEADER + bounded(copied, SONDE_SYS_DATA_MAX);
    if (bpf_ringbuf_output(&sys_events, e, size, wake) != 0) {
        __u32 zero = 0;
        __u64 *lost = bpf_map_lookup_elem(&sys_lost, &zero);
        if (lost)
            *lost += 1;
    }
}

/* Reads a sockaddr_in/_in6 into family, port (host order) and addr. */
static __always_inline void read_sockaddr(__u64 ptr, __u16 *family, __u16 *port, __u8 *addr)
{
    __u8 sa[24] = {};
    if (!ptr || bpf_probe_read_user(sa, sizeof(sa), (void *)ptr) != 0)
        return;
    __u16 fam = sa[0] | (sa[1] << 8);
    *family = fam;
    *port = (sa[2] << 8) | sa[3];
    if (fam == AF_INET)
        __builtin_memcpy(addr, &sa[4], 4);
    else if (fam == AF_INET6)
        __builtin_memcpy(addr, &sa[8], 16);
}

/* Emits `len` bytes whose first ones are at `buf` (copies at most SONDE_SYS_DATA_MAX). */
static __always_inline void emit_data(__u32 pid, __s32 fd, struct conn *c, __u8 direction,
                                      __u8 flags, __u64 buf, __u64 len, __u64 ssl)
{
    struct sys_event *e = scratch_event();
    if (!e)
        return;
    e->kind = SONDE_SYS_DATA;
    e->role = c ? c->role : 0;
    e->direction = direction;
    e->flags = flags;
    e->pid = pid;
    e->fd = fd;
    e->family = 0;
    e->port = 0;
    e->ts_ns = bpf_ktime_get_ns();
    e->len = len;
    e->_pad = 0;
    /* Unbound TLS plaintext names its SSL object here; see SONDE_SYS_FLAG_UNBOUND. */
    __builtin_memset(e->addr, 0, sizeof(e->addr));
    __builtin_memcpy(e->addr, &ssl, sizeof(ssl));
    __u32 n = buf ? bounded(len, SONDE_SYS_DATA_MAX) : 0;
    if (n > 0 && bpf_probe_read_user(e->data, n, (void *)buf) != 0)
        n = 0;
    e->copied = n;
    output(e, n);
}

static __always_inline void emit_conn(__u8 kind, __u32 pid, __s32 fd, __u8 role, __u16 family,
                                      __u16 port, const __u8 *addr)
{
    struct sys_event *e = scratch_event();
    if (!e)
        return;
    e->kind = kind;
    e->role = role;
    e->direction = 0;
    e->flags = 0;
    e->pid = pid;
    e->fd = fd;
    e->family = family;
    e->port = port;
    e->ts_ns = bpf_ktime_get_ns();
    e->len = 0;
    e->copied = 0;
    e->_pad = 0;
    __builtin_memset(e->addr, 0, sizeof(e->addr));
    if (addr)
        __builtin_memcpy(e->addr, addr, 16);
    output(e, 0);
}

/* What became of an SSL object whose plaintext was sent unbound: BIND names its socket,
 * ORPHAN says it has none sonde traces. */
static __always_inline void emit_ssl(__u8 kind, __u32 pid, __s32 fd, __u8 role, __u64 ssl)
{
    __u8 addr[16] = {};
    __builtin_memcpy(addr, &ssl, sizeof(ssl));
    emit_conn(kind, pid, fd, role, 0, 0, addr);
}

/* Entry of a data syscall: inside an SSL call it only names the SSL object's socket;
 * otherwise a known, non-TLS connection's call is remembered until its exit. */
static __always_inline void data_enter(__s32 fd, __u8 op, __u8 direction, __u64 ptr,
                                       __u64 iovcnt)
{
    __u64 tid = bpf_get_current_pid_tgid();
    __u32 pid = tid >> 32;
    if (!selected(pid))
        return;
    struct conn_key key = {.pid = pid, .fd = fd};
    struct conn *c = bpf_map_lookup_elem(&conns, &key);
    if (direction == SONDE_SYS_DIR_IN) {
        /* Any read, traced socket or not: after a read of a connection older than sonde,
         * the guess must be "unknown", not the traced connection read before it. */
        struct sock_ref last = {.fd = fd, .conn_id = c ? c->id : 0};
        bpf_map_update_elem(&last_read_fd, &tid, &last, BPF_ANY);
    }
    struct ssl_call *call = bpf_map_lookup_elem(&ssl_calls, &tid);
    if (call) {
        call->fd = fd;
        call->trusted = 1;
        if (c)
            c->tls = 1;
        return;
    }
    if (direction == SONDE_SYS_DIR_OUT) {
        /* The thread's next write after an unbound SSL_write carries its ciphertext. Onto a
         * socket sonde does not trace (one older than sonde), the plaintext has no home:
         * dropped, rather than pinned on the next traced connection written. */
        __u64 *found = bpf_map_lookup_elem(&unbound_write, &tid);
        if (found) {
            __u64 ssl = *found;
            bpf_map_delete_elem(&unbound_write, &tid);
            if (!c) {
                emit_ssl(SONDE_SYS_ORPHAN, pid, -1, 0, ssl);
                return;
            }
            struct ssl_key skey = {.pid = pid, .ssl = ssl};
            struct sock_ref ref = {.fd = fd, .conn_id = c->id};
            bpf_map_update_elem(&ssl_fds, &skey, &ref, BPF_ANY);
            c->tls = 1;
            emit_ssl(SONDE_SYS_BIND, pid, fd, c->role, ssl);
            return;
        }
    }
    if (!c || c->tls)
        return;
    struct pending p = {.ptr = ptr, .iovcnt = iovcnt, .fd = fd, .op = op, .direction = direction};
    bpf_map_update_elem(&sys_pending, &tid, &p, BPF_ANY);
}

struct iovec_user {
    __u64 base;
    __u64 len;
};

/* Takes this thread's pending syscall (copied first: the slot is gone once deleted); 0 when
 * there is none. */
static __always_inline int take_pending(__u64 tid, struct pending *out)
{
    struct pending *found = bpf_map_lookup_elem(&sys_pending, &tid);
    if (!found)
        return 0;
    *out = *found;
    bpf_map_delete_elem(&sys_pending, &tid);
    return 1;
}

static __always_inline void data_exit(__s64 ret)
{
    __u64 tid = bpf_get_current_pid_tgid();
    __u32 pid = tid >> 32;
    struct pending p;
    if (!take_pending(tid, &p))
        return;
    if (ret <= 0 || (p.op != OP_BUF && p.op != OP_IOV && p.op != OP_COUNT))
        return;
    struct conn_key key = {.pid = pid, .fd = p.fd};
    struct conn *c = bpf_map_lookup_elem(&conns, &key);
    if (!c)
        return;
    if (p.op == OP_BUF) {
        emit_data(pid, p.fd, c, p.direction, 0, p.ptr, ret, 0);
        return;
    }
    if (p.op == OP_COUNT) {
        emit_data(pid, p.fd, c, p.direction, 0, 0, ret, 0);
        return;
    }
    /* The bytes fill the iovecs in order: one record per iovec used. */
    __u64 left = ret;
    for (int i = 0; i < MAX_IOV; i++) {
        if (left == 0 || i >= p.iovcnt)
            break;
        struct iovec_user iov = {};
        if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(p.ptr + i * sizeof(iov))) != 0)
            break;
        __u64 n = iov.len < left ? iov.len : left;
        if (n == 0)
            continue;
        emit_data(pid, p.fd, c, p.direction, 0, iov.base, n, 0);
        left -= n;
    }
    if (left > 0)
        emit_data(pid, p.fd, c, p.direction, 0, 0, left, 0);
}

/* Each syscall has two sources with one body. Tracepoints (sys_enter_<name>/sys_exit_<name>)
 * exist everywhere, but while one has a program every task on the host takes the slow syscall
 * path, for every syscall. Where kprobes exist, the same bodies run from a kprobe and a
 * kretprobe on the syscall's x86-64 wrapper (__x64_sys_<name>): only the traced syscalls pay,
 * and a getppid or futex of an unrelated process runs as if sonde were not there. The wrapper,
 * not sock_recvmsg/tcp_sendmsg and friends, because the tracer's state is keyed by fd, which
 * only the syscall knows (below it a socket is a struct sock; recovering its fd would mean
 * walking the task's fd table), and because it keeps one implementation for both sources.
 * The wrapper's only argument is the user's saved registers: the syscall's arguments are read
 * from them (di, si, dx, r10 = args 0-3). Both sets of programs are in this object; user space
 * loads and attaches the set it chose (src/attach/syscalls.rs). */
#define SYSCALL_ENTER(name, on_enter)                                                        \
    SEC("tracepoint/syscalls/sys_enter_" #name)                                              \
    int sys_enter_##name(struct sys_enter_ctx *ctx)                                          \
    {                                                                                        \
        LEAVE_UNLESS_TRACED();                                                               \
        const __u64 *args = ctx->args;                                                       \
        on_enter;                                                                            \
        return 0;                                                                            \
    }                                                                                        \
    SEC("kprobe")                                                                            \
    int kprobe_##name(struct pt_regs *ctx)                                                   \
    {                                                                                        \
        LEAVE_UNLESS_TRACED();                                                               \
        __u64 args[4];                                                                       \
        if (syscall_args(ctx, args) != 0)                                                    \
            return 0;                                                                        \
        on_enter;                                                                            \
        return 0;                                                                            \
    }

#define SYSCALL_EXIT(name, on_exit)                                                          \
    SEC("tracepoint/syscalls/sys_exit_" #name)                                               \
    int sys_exit_##name(struct sys_exit_ctx *ctx)                                            \
    {                                                                                        \
        LEAVE_UNLESS_TRACED();                                                               \
        __s64 ret = ctx->ret;                                                                \
        on_exit;                                                                             \
        return 0;                                                                            \
    }                                                                                        \
    SEC("kretprobe")                                                                         \
    int kretprobe_##name(struct pt_regs *ctx)                                                \
    {                                                                                        \
        LEAVE_UNLESS_TRACED();                                                               \
        __s64 ret = (__s64)ctx->rax;                                                         \
        on_exit;                                                                             \
        return 0;                                                                            \
    }

/* A syscall's programs, each one statement on `args` (entry) or `ret` (exit). */
#define SYSCALL_PROBES(name, on_enter, on_exit)                                              \
    SYSCALL_ENTER(name, on_enter)                                                            \
    SYSCALL_EXIT(name, on_exit)

/* The first four arguments of the syscall whose wrapper `ctx` entered. One read: in struct
 * pt_regs r10 comes first and di last, eight words apart. */
static __always_inline int syscall_args(struct pt_regs *ctx, __u64 *args)
{
    const struct pt_regs *regs = (const struct pt_regs *)ctx->rdi;
    __u64 w[8]; /* r10 r9 r8 ax cx dx si di */
    if (bpf_probe_read_kernel(w, sizeof(w), &regs->r10) != 0)
        return -1;
    args[0] = w[7];
    args[1] = w[6];
    args[2] = w[5];
    args[3] = w[0];
    return 0;
}

/* MSG_PEEK reads leave the bytes in the socket: they are read again. */
#define MSG_PEEK 2

/* read/recvfrom/write/sendto(fd, buf, ...): one buffer. */
static __always_inline void buf_enter(__u64 fd, __u64 buf, __u8 direction, __u64 flags)
{
    if (flags & MSG_PEEK)
        return;
    data_enter((__s32)fd, OP_BUF, direction, buf, 0);
}

/* recvmsg/sendmsg(fd, msg, flags); struct msghdr: msg_iov at 16, msg_iovlen at 24. */
static __always_inline void msg_enter(__u64 fd, __u64 msg, __u64 flags, __u8 direction)
{
    __u64 hdr[4] = {};
    if ((flags & MSG_PEEK) || bpf_probe_read_user(hdr, sizeof(hdr), (void *)msg) != 0)
        return;
    data_enter((__s32)fd, OP_IOV, direction, hdr[2], hdr[3]);
}

SYSCALL_PROBES(read, buf_enter(args[0], args[1], SONDE_SYS_DIR_IN, 0), data_exit(ret))
SYSCALL_PROBES(recvfrom, buf_enter(args[0], args[1], SONDE_SYS_DIR_IN, args[3]), data_exit(ret))
SYSCALL_PROBES(write, buf_enter(args[0], args[1], SONDE_SYS_DIR_OUT, 0), data_exit(ret))
SYSCALL_PROBES(sendto, buf_enter(args[0], args[1], SONDE_SYS_DIR_OUT, 0), data_exit(ret))
/* readv/writev(fd, iov, iovcnt). */
SYSCALL_PROBES(readv, data_enter((__s32)args[0], OP_IOV, SONDE_SYS_DIR_IN, args[1], args[2]),
               data_exit(ret))
SYSCALL_PROBES(writev, data_enter((__s32)args[0], OP_IOV, SONDE_SYS_DIR_OUT, args[1], args[2]),
               data_exit(ret))
SYSCALL_PROBES(recvmsg, msg_enter(args[0], args[1], args[2], SONDE_SYS_DIR_IN), data_exit(ret))
SYSCALL_PROBES(sendmsg, msg_enter(args[0], args[1], args[2], SONDE_SYS_DIR_OUT), data_exit(ret))

/* sendfile(out_fd, in_fd, offset, count): a file's bytes sent as a body; counted only. */
SYSCALL_PROBES(sendfile64, data_enter((__s32)args[0], OP_COUNT, SONDE_SYS_DIR_OUT, 0, 0),
               data_exit(ret))

static __always_inline void accept_enter(__u64 fd, __u64 addr)
{
    __u64 tid = bpf_get_current_pid_tgid();
    if (!selected(tid >> 32))
        return;
    struct pending p = {.ptr = addr, .fd = (__s32)fd, .op = OP_ACCEPT};
    bpf_map_update_elem(&sys_pending, &tid, &p, BPF_ANY);
}

static __always_inline void accept_exit(__s64 ret)
{
    __u64 tid = bpf_get_current_pid_tgid();
    __u32 pid = tid >> 32;
    struct pending p;
    if (!take_pending(tid, &p))
        return;
    if (p.op != OP_ACCEPT || ret < 0)
        return;
    __s32 fd = (__s32)ret;
    __u16 family = 0, port = 0;
    __u8 addr[16] = {};
    read_sockaddr(p.ptr, &family, &port, addr);
    struct conn_key key = {.pid = pid, .fd = fd};
    struct conn c = {
        .role = SONDE_SYS_ROLE_SERVER, .family = family, .port = port, .id = bpf_ktime_get_ns()};
    bpf_map_update_elem(&conns, &key, &c, BPF_ANY);
    emit_conn(SONDE_SYS_OPEN, pid, fd, SONDE_SYS_ROLE_SERVER, family, port, addr);
}

SYSCALL_PROBES(accept, accept_enter(args[0], args[1]), accept_exit(ret))
SYSCALL_PROBES(accept4, accept_enter(args[0], args[1]), accept_exit(ret))

/* connect(fd, addr, len): only IPv4/IPv6 peers become client connections (not Unix sockets
 * or netlink). A non-blocking connect returns -EINPROGRESS and completes later. */
static __always_inline void connect_enter(__u64 fd, __u64 addr)
{
    __u64 tid = bpf_get_current_pid_tgid();
    struct pending p = {.fd = (__s32)fd, .op = OP_CONNECT};
    read_sockaddr(addr, &p.family, &p.port, p.addr);
    if (p.family != AF_INET && p.family != AF_INET6)
        return;
    bpf_map_update_elem(&sys_pending, &tid, &p, BPF_ANY);
}

static __always_inline void connect_exit(__s64 ret)
{
    __u64 tid = bpf_get_current_pid_tgid();
    __u32 pid = tid >> 32;
    struct pending p;
    if (!take_pending(tid, &p))
        return;
    if (p.op != OP_CONNECT || (ret != 0 && ret != -EINPROGRESS))
        return;
    struct conn_key key = {.pid = pid, .fd = p.fd};
    struct conn c = {.role = SONDE_SYS_ROLE_CLIENT,
                     .family = p.family,
                     .port = p.port,
                     .id = bpf_ktime_get_ns()};
    bpf_map_update_elem(&conns, &key, &c, BPF_ANY);
    emit_conn(SONDE_SYS_OPEN, pid, p.fd, SONDE_SYS_ROLE_CLIENT, p.family, p.port, p.addr);
}

SYSCALL_PROBES(connect, connect_enter(args[0], args[1]), connect_exit(ret))

static __always_inline void close_enter(__u64 fd)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct conn_key key = {.pid = pid, .fd = (__s32)fd};
    struct conn *c = bpf_map_lookup_elem(&conns, &key);
    if (!c)
        return;
    __u8 role = c->role;
    bpf_map_delete_elem(&conns, &key);
    emit_conn(SONDE_SYS_CLOSE, pid, key.fd, role, 0, 0, NULL);
}

SYSCALL_ENTER(close, close_enter(args[0]))

/* ---- OpenSSL ---- */

static __always_inline void ssl_enter(__u64 ssl, __u64 buf, __u64 len_ptr, __u8 direction)
{
    __u64 tid = bpf_get_current_pid_tgid();
    __u32 pid = tid >> 32;
    if (!selected(pid))
        return;
    struct ssl_key key = {.pid = pid, .ssl = ssl};
    __u8 trusted = 1;
    __s32 fd = still_open(pid, bpf_map_lookup_elem(&ssl_fds, &key));
    if (fd < 0 && direction == SONDE_SYS_DIR_IN) {
        fd = still_open(pid, bpf_map_lookup_elem(&last_read_fd, &tid));
        trusted = 0;
    }
    struct ssl_call call = {.ssl = ssl,
                            .buf = buf,
                            .len_ptr = len_ptr,
                            .fd = fd,
                            .direction = direction,
                            .trusted = trusted};
    bpf_map_update_elem(&ssl_calls, &tid, &call, BPF_ANY);
}

static __always_inline void ssl_exit(__s64 ret)
{
    __u64 tid = bpf_get_current_pid_tgid();
    __u32 pid = tid >> 32;
    struct ssl_call *found = bpf_map_lookup_elem(&ssl_calls, &tid);
    if (!found)
        return;
    struct ssl_call call = *found;
    bpf_map_delete_elem(&ssl_calls, &tid);
    __u64 n = 0;
    if (call.len_ptr) {
        /* SSL_read_ex/SSL_write_ex return 1 and write the byte count. */
        if (ret == 1)
            bpf_probe_read_user(&n, sizeof(n), (void *)call.len_ptr);
    } else if (ret > 0) {
        n = ret;
    }
    if (call.fd < 0) {
        if (call.direction == SONDE_SYS_DIR_OUT && n > 0) {
            emit_data(pid, -1, NULL, call.direction, SONDE_SYS_FLAG_TLS | SONDE_SYS_FLAG_UNBOUND,
                      call.buf, n, call.ssl);
            bpf_map_update_elem(&unbound_write, &tid, &call.ssl, BPF_ANY);
        }
        return;
    }
    /* A guessed socket is kept only for a call that moved data: a client's first SSL_read
     * runs the handshake before the thread ever read its own socket. */
    if (!call.trusted && n == 0)
        return;
    struct conn_key key = {.pid = pid, .fd = call.fd};
    struct conn *c = bpf_map_lookup_elem(&conns, &key);
    if (!c)
        return;
    struct ssl_key skey = {.pid = pid, .ssl = call.ssl};
    struct sock_ref ref = {.fd = call.fd, .conn_id = c->id};
    bpf_map_update_elem(&ssl_fds, &skey, &ref, BPF_ANY);
    c->tls = 1;
    if (n > 0)
        emit_data(pid, call.fd, c, call.direction, SONDE_SYS_FLAG_TLS, call.buf, n, 0);
}

/* int SSL_read(SSL *ssl, void *buf, int num) */
SEC("uprobe")
int ssl_read_entry(struct pt_regs *ctx)
{
    ssl_enter(ctx->rdi, ctx->rsi, 0, SONDE_SYS_DIR_IN);
    return 0;
}

/* int SSL_write(SSL *ssl, const void *buf, int num) */
SEC("uprobe")
int ssl_write_entry(struct pt_regs *ctx)
{
    ssl_enter(ctx->rdi, ctx->rsi, 0, SONDE_SYS_DIR_OUT);
    return 0;
}

/* int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes) */
SEC("uprobe")
int ssl_read_ex_entry(struct pt_regs *ctx)
{
    ssl_enter(ctx->rdi, ctx->rsi, ctx->rcx, SONDE_SYS_DIR_IN);
    return 0;
}

/* int SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written) */
SEC("uprobe")
int ssl_write_ex_entry(struct pt_regs *ctx)
{
    ssl_enter(ctx->rdi, ctx->rsi, ctx->rcx, SONDE_SYS_DIR_OUT);
    return 0;
}

/* One return probe serves all four: the call's kind was saved at entry. The return value is
 * an int: sign-extend it. */
SEC("uretprobe")
int ssl_return(struct pt_regs *ctx)
{
    ssl_exit((__s64)(int)ctx->rax);
    return 0;
}
