#!/bin/bash
# Runs inside a kernel-matrix guest (bench/kernel-syscall-cost.sh boots it through
# scripts/kernel-matrix.sh): what one syscall of a process sonde does NOT trace costs with no
# sonde, with sonde's syscall hooks attached as tracepoints, and as kprobes. The hooks are
# attached because one process (python3 http.server) is traced; the measured loop is another
# process. Prints `BENCH …` lines (the figures) and one `PASS`/`FAIL` line.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p"; }
SONDE=$(arg sonde.bin)
ROUNDS=3
REPS=3
N_PPID=200000 # getppid calls per round: a syscall neither source probes
N_RW=100000   # read(/dev/zero, 1 byte) + write(/dev/null, 1 byte) pairs: syscalls both probe

mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null
echo "KERNEL $(uname -r)"
work=/tmp/cost
mkdir -p $work
cat >$work/loop.c <<'EOF'
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
/* loop getppid N | loop rw N: prints nanoseconds per iteration. */
int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    long n = atol(argv[2]);
    int zero = open("/dev/zero", O_RDONLY), null = open("/dev/null", O_WRONLY);
    char b;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (strcmp(argv[1], "getppid") == 0) {
        for (long i = 0; i < n; i++)
            syscall(SYS_getppid);
    } else {
        for (long i = 0; i < n; i++) {
            if (read(zero, &b, 1) != 1 || write(null, &b, 1) != 1)
                return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.0f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n);
    return 0;
}
EOF
cc -O2 -o $work/loop $work/loop.c || { echo "FAIL bench cannot compile the syscall loop"; exit 1; }

(cd $work && exec taskset -c 0 python3 -m http.server 18083 --bind 127.0.0.1 >/dev/null 2>&1) &
py=$!
listening() { grep -q ":$(printf '%04X' "$1") 00000000:0000 0A" /proc/net/tcp; }
t=0
while ! listening 18083 && [ $t -lt 60 ]; do sleep 1; t=$((t + 1)); done

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# The loop on vCPU 1, sonde and the traced server on vCPU 0: sonde's own work does not take
# the measured loop's CPU.
loop() { taskset -c 1 $work/loop "$@"; }
MODES="none idle tracepoints kprobes"
for mode in $MODES; do eval "ppid_$mode='' rw_$mode=''"; done
# REPS runs of each loop, in each mode; ROUNDS rounds, modes interleaved (the host's load
# drifts). idle: sonde running, its tracer loaded, nothing traced (no hooks attached).
measure() {
  local mode=$1 r
  for r in $(seq $REPS); do
    eval "ppid_$mode=\"\$ppid_$mode $(loop getppid $N_PPID)\""
    eval "rw_$mode=\"\$rw_$mode $(loop rw $N_RW)\""
  done
}
ok=1
for round in $(seq $ROUNDS); do
  for mode in $MODES; do
    if [ $mode = none ]; then
      measure none
      continue
    fi
    port=18083 source=$mode needle="syscall $mode attached"
    if [ $mode = idle ]; then
      port=18099 source=kprobes needle="syscall tracer loaded in"
    fi
    SONDE_SYSCALL_SOURCE=$source SONDE_OPEN_PORT=$port SONDE_DOCKER=false SONDE_LOG_LEVEL=info \
      taskset -c 0 "$SONDE" >$work/sonde-$mode.log 2>&1 &
    sonde=$!
    t=0
    while ! grep -q "$needle" $work/sonde-$mode.log && [ $t -lt 90 ]; do
      sleep 1
      t=$((t + 1))
    done
    if grep -q "$needle" $work/sonde-$mode.log; then
      sleep 1
      measure $mode
    else
      echo "FAIL bench sonde: no '$needle' in its log"
      tail -n 20 $work/sonde-$mode.log | sed 's/^/    | /'
      ok=0
    fi
    kill $sonde
    wait $sonde 2>/dev/null
  done
done
for mode in $MODES; do
  eval "p=\$ppid_$mode w=\$rw_$mode"
  echo "    $mode getppid ns:$p; read+write pair ns:$w"
  eval "ppid_$mode=$(echo $p | tr ' ' '\n' | median)"
  eval "rw_$mode=$(echo $w | tr ' ' '\n' | median)"
  eval "echo \"BENCH $mode: getppid \$ppid_$mode ns, read+write pair \$rw_$mode ns (medians of $((ROUNDS * REPS)))\""
done
kill $py 2>/dev/null
wait 2>/dev/null
if [ $ok = 1 ]; then
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
  for base in none idle; do
    eval "bp=\$ppid_$base br=\$rw_$base"
    echo "BENCH ratio to $base: getppid tracepoints $(ratio "$ppid_tracepoints" "$bp")x, kprobes $(ratio "$ppid_kprobes" "$bp")x; read+write tracepoints $(ratio "$rw_tracepoints" "$br")x, kprobes $(ratio "$rw_kprobes" "$br")x"
  done
  echo "PASS bench syscall cost measured"
fi
exit $((1 - ok))
