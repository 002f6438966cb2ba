#!/usr/bin/env bash
# What an unrelated syscall costs on a kernel with kprobes, with no sonde, with sonde idle (its
# tracer loaded, nothing traced), and with sonde's syscall tracer attached as tracepoints and
# as kprobes (SONDE_SYSCALL_SOURCE). Boots the kernel the way the kernel matrix does (QEMU TCG,
# scripts/kernel-matrix.sh) and runs bench/kernel-syscall-cost.guest.sh in it; prints its
# BENCH lines.
#
#   bench/kernel-syscall-cost.sh [KERNEL_SERIES]   (default 6.12; as root; ~5 min)
#
# The guest runs with `-icount shift=3`: its clock advances 8 ns per emulated instruction, so
# the figures are instruction counts in time units, the same from run to run whatever else
# the host runs (without it, on this shared 2-core machine, runs of one mode differed 3x).
# They are not bare-metal times: read the ratios. KERNEL_MATRIX_QEMU_ARGS= (empty) measures
# wall time instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export KERNEL_MATRIX_GUEST=bench/kernel-syscall-cost.guest.sh
export KERNEL_MATRIX_TIMEOUT=${KERNEL_MATRIX_TIMEOUT:-900}
export KERNEL_MATRIX_QEMU_ARGS=${KERNEL_MATRIX_QEMU_ARGS--icount shift=3}
exec scripts/kernel-matrix.sh "${1:-6.12}"
