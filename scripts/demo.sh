#!/usr/bin/env bash
# The README's first command: the demo Go service in a container, sonde in a container beside
# it (docker compose), a few requests, then the metrics from sonde and from a real Prometheus.
# Installs what it needs (scripts/setup.sh), starts a Docker engine when none runs, builds every
# image locally (nothing is pulled) and takes the stack down at the end (KEEP=1 leaves it up).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo: run as root (sonde loads BPF programs)"; exit 1; }
bash scripts/setup.sh
bash scripts/dockerd.sh

export DEMO_PORT=${DEMO_PORT:-8080} SONDE_PORT=${SONDE_PORT:-9400} PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
export COMPOSE_PROJECT=${COMPOSE_PROJECT:-sonde-demo}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$DEMO_PORT" "$SONDE_PORT" "$PROMETHEUS_PORT"; do
  if port_busy "$port"; then
    echo "demo: port $port is already in use; stop what listens there first (or set DEMO_PORT, SONDE_PORT, PROMETHEUS_PORT)"
    exit 1
  fi
done

compose() { docker-compose -f compose/docker-compose.yml -p "$COMPOSE_PROJECT" "$@"; }
[ "${KEEP:-0}" = 1 ] || trap 'echo "== taking the stack down"; compose down -t 2 >/dev/null 2>&1' EXIT

echo "== building the images and starting the stack (compose/up.sh)"
bash compose/up.sh 2>&1 | grep -vE "DEPRECATED|buildx|docs.docker.com|^\s*$"

echo "== waiting for sonde to instrument the demo container"
for _ in $(seq 100); do
  curl -s "localhost:$SONDE_PORT/metrics" | grep -q "^sonde_instrumented_processes [1-9]" && break
  sleep 0.2
done
compose logs --no-color sonde 2>/dev/null | grep -E "instrumented pid" || { compose logs --no-color sonde; echo "demo: sonde did not attach"; exit 1; }

echo "== sending 8 requests to the demo service"
for path in / / / /404 / /500 / /; do
  curl -s -o /dev/null -w "%{http_code} " "http://127.0.0.1:$DEMO_PORT$path"
done
echo
sleep 0.3
echo "== curl localhost:$SONDE_PORT/metrics"
curl -s "localhost:$SONDE_PORT/metrics" | grep -E "^(# (HELP|TYPE) http_|http_server_request_duration_seconds_(count|sum)|sonde_instrumented)"
echo "== the same series in Prometheus (127.0.0.1:$PROMETHEUS_PORT), after its next scrape"
query="http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query?query=http_server_request_duration_seconds_count"
for _ in $(seq 60); do
  curl -s "$query" | grep -q '"result":\[{' && break
  sleep 0.5
done
curl -s "$query" | python3 -c 'import json,sys
for r in json.load(sys.stdin)["data"]["result"]:
    m = r["metric"]
    print("  {service_name} ({container_name}) {http_request_method} {http_response_status_code}: {n}".format(n=r["value"][1], **m))'
