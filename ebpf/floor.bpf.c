// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* The floor of the overhead benchmark (bench/): a uprobe that only counts.
 *
 * `sonde floor <pid>` attaches this one program to exactly the entry and RET offsets sonde
 * probes, so the difference between the floor and the server alone is what the uprobe traps
 * cost by themselves, the least any uprobe-based tool can cost. Not used by the agent. */

#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} floor_hits SEC(".maps");

SEC("uprobe")
int floor_hit(struct pt_regs *ctx)
{
    __u32 zero = 0;
    __u64 *hits = bpf_map_lookup_elem(&floor_hits, &zero);
    if (hits)
        *hits += 1;
    return 0;
}
