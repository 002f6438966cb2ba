#!/usr/bin/env bash
# Plan time: how long `sonde inspect` takes to turn a Go binary into a probe plan (read,
# parse, find functions and RETs, struct offsets), median of RUNS runs, per binary.
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
printf '%-55s %8s %10s  %s\n' binary size_MB median_ms offsets
for b in "${bins[@]}"; do
  times=()
  for _ in $(seq "$runs"); do
    t0=$(date +%s%N)
    out=$("$sonde" inspect "$b" 2>/dev/null || true)
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000000 )))
  done
  median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")
  size=$(( $(stat -c %s "$b") / 1000000 ))
  src=$(printf '%s\n' "$out" | sed -n 's/^offsets: *//p' | head -n1)
  printf '%-55s %8s %10s  %s\n' "$b" "$size" "$median" "${src:-(no plan)}"
done
