// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* A deliberately bad program for the kernel matrix (scripts/kernel-matrix.sh): it copies a
 * user-chosen length into a 64-byte buffer with no bound, which every verifier must reject
 * ("R2 unbounded memory access"). The guest loads it through sonde's own loader and expects the
 * rejection; KERNEL_MATRIX_SELF_TEST=1 demands that it loads, so the matrix must fail. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct sys_enter_ctx {
    __u64 common;
    __s64 nr;
    __u64 args[6];
};

SEC("tracepoint/syscalls/sys_enter_read")
int read_unbounded(struct sys_enter_ctx *ctx)
{
    char buf[64];
    __u32 len = ctx->args[2];
    bpf_probe_read_user(buf, len, (void *)ctx->args[1]);
    return buf[0];
}
