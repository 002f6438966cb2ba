#!/usr/bin/env bash
# The README's first command: a Go service, sonde attached to it, metrics shown.
# Installs what it needs (scripts/setup.sh), builds everything, cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo: run as root (sonde loads BPF programs)"; exit 1; }
bash scripts/setup.sh

echo "== building sonde"
cargo build --release --quiet
work=$(mktemp -d /tmp/sonde-demo.XXXXXX)
echo "== building the demo Go service (Debian's Go $(go version | awk '{print $3}'))"
(cd demo/example-http-service && GO111MODULE=off GOPATH="$work/gopath" GOCACHE="$work/gocache" \
  go build -o "$work/example-http-service" .)

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8080 "${SONDE_PROMETHEUS_PORT:-9400}"; do
  if port_busy "$port"; then
    echo "demo: port $port is already in use; stop what listens there first:"
    ss -ltnp "sport = :$port" 2>/dev/null | tail -n +2
    exit 1
  fi
done

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$work/example-http-service" >"$work/service.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do port_busy 8080 && break; sleep 0.1; done
kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/service.log"; echo "demo: the service did not start"; exit 1; }
echo "== started example-http-service (pid ${pids[0]}) on 127.0.0.1:8080"

SONDE_PROMETHEUS_PORT=${SONDE_PROMETHEUS_PORT:-9400} SONDE_OPEN_PORT=8080 \
  SONDE_METRICS_NAMING=${SONDE_METRICS_NAMING:-semconv} ./target/release/sonde 2>"$work/sonde.log" &
pids+=($!)
echo "== started sonde (pid ${pids[1]}): SONDE_PROMETHEUS_PORT=9400 SONDE_OPEN_PORT=8080 sonde"
for _ in $(seq 50); do
  grep -q "instrumented pid" "$work/sonde.log" && break
  sleep 0.1
done
grep "instrumented pid" "$work/sonde.log" || { cat "$work/sonde.log"; echo "demo: sonde did not attach"; exit 1; }

echo "== sending 8 requests"
for path in / / / /404 / /500 / /; do
  curl -s -o /dev/null -w "%{http_code} " "http://127.0.0.1:8080$path"
done
echo
sleep 0.3
echo "== curl localhost:${SONDE_PROMETHEUS_PORT:-9400}/metrics"
curl -s "localhost:${SONDE_PROMETHEUS_PORT:-9400}/metrics" | grep -E "^(# (HELP|TYPE) http_|http_server_request_duration_seconds_(count|sum)|sonde_instrumented)"
