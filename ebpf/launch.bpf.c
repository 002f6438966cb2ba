// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Container launches, caught before the application's exec.
 *
 * runc names a container's init process "runc:[2:INIT]" and keeps it waiting (30-60 ms
 * measured here) for `runc start` before it execs the application. A Go server listens 1-5 ms
 * after its exec, so reacting to the exec or to Docker's start event always loses the race
 * for its first requests. This program reports the init process at its rename instead, and
 * user space attaches that PID's uprobes to the binary the bundle names before the exec: the
 * kernel arms them when the exec maps the file. Renames are rare, so each report wakes user
 * space at once. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "sonde_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Offset of `newcomm` in the task_rename record; read from the tracepoint's format file by
 * user space, because the record's layout has changed across kernel versions. */
volatile const __u32 NEWCOMM_OFFSET = 28;

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 << 10);
} launches SEC(".maps");

static const char RUNC_INIT[] = "runc:[2:INIT]";

SEC("tracepoint/task/task_rename")
int task_rename(void *ctx)
{
    char comm[16] = {};
    if (bpf_probe_read_kernel(comm, sizeof(comm), (char *)ctx + NEWCOMM_OFFSET) != 0)
        return 0;
#pragma unroll
    for (int i = 0; i < (int)sizeof(RUNC_INIT); i++) {
        if (comm[i] != RUNC_INIT[i])
            return 0;
    }
    struct launch_event *e = bpf_ringbuf_reserve(&launches, sizeof(*e), 0);
    if (!e)
        return 0;
    /* runc renames itself with prctl(PR_SET_NAME), from its only thread. */
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->_pad = 0;
    e->ktime_ns = bpf_ktime_get_ns();
    bpf_ringbuf_submit(e, 0);
    return 0;
}

/* Executions, for `executable_name`'s files that are not armed yet (src/attach/launch.rs,
 * ExecWatch): a program seen running once is armed as a whole, so its later runs, however
 * short, are measured from their first request. Loaded only when `executable_name` is set.
 * Reports wait for user space's next drain (no wake-up per exec). */

/* Offset of the `filename` __data_loc field in the sched_process_exec record; read from the
 * tracepoint's format file by user space. */
volatile const __u32 FILENAME_OFFSET = 8;

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 256 << 10);
} execs SEC(".maps");

SEC("tracepoint/sched/sched_process_exec")
int process_exec(void *ctx)
{
    __u32 loc = 0;
    if (bpf_probe_read_kernel(&loc, sizeof(loc), (char *)ctx + FILENAME_OFFSET) != 0)
        return 0;
    struct exec_event *e = bpf_ringbuf_reserve(&execs, sizeof(*e), 0);
    if (!e)
        return 0;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    long n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename),
                                       (char *)ctx + (loc & 0xffff));
    e->len = n > 0 ? (__u32)(n - 1) : 0;
    bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
    return 0;
}
