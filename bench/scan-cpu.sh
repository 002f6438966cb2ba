#!/usr/bin/env bash
# CPU of the idle agent's 250 ms discovery scan, for two builds side by side.
#
#   bench/scan-cpu.sh BEFORE_BINARY AFTER_BINARY [RUNS] [SECONDS] [exe|port|both]
#
# Each run starts the agent with a rule that selects nothing (so it only scans) and the
# syscall tracer off (its tracepoints would slow every syscall, the scan's too), waits 5 s
# for start-up to pass, then reads its utime+stime from /proc/<pid>/stat at the start and the
# end of SECONDS (default 30). Two rules: `executable_name` (no ports read) and `open_port`
# (every process's fd table and each network namespace's TCP tables, every scan). Runs of the
# two builds are interleaved so machine load falls on both alike; 100 `sleep` processes are
# started so the host has ~200 processes. Needs root (the agent checks its capabilities).
set -euo pipefail
before=$1
after=$2
runs=${3:-3}
secs=${4:-30}
which=${5:-both}
tick=$(getconf CLK_TCK)

sleepers=()
for _ in $(seq 100); do
    sleep 3600 &
    sleepers+=($!)
done
trap 'kill "${sleepers[@]}" 2>/dev/null || true' EXIT

cpu_ticks() { # utime + stime of a PID, in clock ticks (fields 14 and 15 after the comm)
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

measure() { # binary, rule env → CPU % of one core over $secs
    local bin=$1 rule=$2 pid t0 t1
    env -i PATH="$PATH" "$rule" SONDE_SYSCALL_TRACING=false SONDE_LOG_LEVEL=warn nice -n 19 "$bin" >/tmp/scan-cpu.log 2>&1 &
    pid=$!
    sleep 5
    t0=$(cpu_ticks "$pid")
    sleep "$secs"
    t1=$(cpu_ticks "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    awk -v d=$((t1 - t0)) -v hz="$tick" -v s="$secs" 'BEGIN {printf "%.2f", 100 * d / hz / s}'
}

echo "processes: $(ls /proc | grep -c '^[0-9]'), ${secs} s per run, % of one core"
rules=()
[[ $which == port ]] || rules+=('SONDE_EXECUTABLE_NAME=^/no-such-sonde-bench-target$')
[[ $which == exe ]] || rules+=('SONDE_OPEN_PORT=65001')
for rule in "${rules[@]}"; do
    for i in $(seq "$runs"); do
        b=$(measure "$before" "$rule")
        a=$(measure "$after" "$rule")
        echo "${rule%%=*} run $i: before $b after $a"
    done
done
