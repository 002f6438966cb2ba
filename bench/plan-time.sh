#!/usr/bin/env bash
# Plan time: how long `sonde inspect` takes to turn a Go binary into a probe plan (read,
# parse, find functions and RETs, struct offsets), median of RUNS runs, per binary: wall time
# and CPU time (user + system; other work on the machine moves the first, hardly the second).
# Usage: bench/plan-time.sh [--sonde PATH] [--runs N] BINARY...
# With no BINARY: dockerd (the largest Go program on a host with Docker) and the stripped
# Go 1.27 test server, if present. Prints one line per binary; nothing is written.
set -euo pipefail
cd "$(dirname "$0")/.."
sonde=target/debug/sonde
[ -x target/release/sonde ] && sonde=target/release/sonde
runs=7
bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --sonde) sonde=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) bins+=("$1"); shift ;;
  esac
done
if [ ${#bins[@]} -eq 0 ]; then
  for b in "$(command -v dockerd || true)" target/go-targets/httpserver-1.27.3-static-stripped; do
    [ -n "$b" ] && [ -f "$b" ] && bins+=("$b")
  done
fi
[ ${#bins[@]} -gt 0 ] || { echo "no binary to measure" >&2; exit 2; }
median() { sort -n | sed -n "$(( (runs + 1) / 2 ))p"; }
printf '%-50s %7s %9s %9s  %s\n' binary size_MB wall_ms cpu_ms offsets
for b in "${bins[@]}"; do
  walls=() cpus=()
  for _ in $(seq "$runs"); do
    t0=$(date +%s%N)
    # CPU time of the child from /proc's view of this shell's children (ticks → ms).
    c0=$(awk '{print $16 + $17}' /proc/$$/stat)
    out=$("$sonde" inspect "$b" 2>/dev/null || true)
    c1=$(awk '{print $16 + $17}' /proc/$$/stat)
    t1=$(date +%s%N)
    walls+=($(( (t1 - t0) / 1000000 )))
    cpus+=($(( (c1 - c0) * 1000 / $(getconf CLK_TCK) )))
  done
  wall=$(printf '%s\n' "${walls[@]}" | median)
  cpu=$(printf '%s\n' "${cpus[@]}" | median)
  size=$(( $(stat -c %s "$b") / 1000000 ))
  src=$(printf '%s\n' "$out" | sed -n 's/^offsets: *//p' | head -n1)
  printf '%-50s %7s %9s %9s  %s\n' "$b" "$size" "$wall" "$cpu" "${src:-(no plan)}"
done
