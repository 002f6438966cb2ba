#!/usr/bin/env bash
# What an unrelated syscall costs on a kernel with kprobes, with no sonde, with sonde's syscall
# tracer on tracepoints and on kprobes (SONDE_SYSCALL_SOURCE). Boots the kernel the way the
# kernel matrix does (QEMU TCG, scripts/kernel-matrix.sh) and runs
# bench/kernel-syscall-cost.guest.sh in it; prints its BENCH lines.
#
#   bench/kernel-syscall-cost.sh [KERNEL_SERIES]   (default 6.12; as root)
#
# TCG emulates every instruction: absolute figures are many times bare metal's; read the
# ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
KERNEL_MATRIX_GUEST=bench/kernel-syscall-cost.guest.sh KERNEL_MATRIX_TIMEOUT=${KERNEL_MATRIX_TIMEOUT:-900} \
  exec scripts/kernel-matrix.sh "${1:-6.12}"
