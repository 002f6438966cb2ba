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

echo "== one first request, and a wait until Prometheus has scraped it"
# rate() counts increases between two samples of a series; a series first seen with all the
# demo's requests in it would read 0 req/s. The first request gives every rate a starting point.
curl -s -o /dev/null "http://127.0.0.1:$DEMO_PORT/"
for _ in $(seq 60); do
  curl -s "http://127.0.0.1:$PROMETHEUS_PORT/api/v1/query?query=sum(http_server_request_duration_seconds_count)" \
    | grep -q '"value":\[[0-9.]*,"[1-9]' && break
  sleep 0.5
done
echo "== sending 24 requests to the demo service, over 3 seconds"
for _ in 1 2 3; do
  for path in / / / /404 / /500 / /; do
    curl -s -o /dev/null -w "%{http_code} " "http://127.0.0.1:$DEMO_PORT$path"
  done
  sleep 1
done
echo
echo "== RED summary per service, from the histograms in Prometheus (127.0.0.1:$PROMETHEUS_PORT)"
# After Prometheus's next scrapes: rate over the last minute, errors (5xx) and p50/p99 over
# every request counted so far (the 24 and the first one).
PROM="http://127.0.0.1:$PROMETHEUS_PORT" python3 - <<'PY'
import json, os, time, urllib.parse, urllib.request
prom = os.environ["PROM"]
def q(expr):
    url = prom + "/api/v1/query?query=" + urllib.parse.quote(expr)
    with urllib.request.urlopen(url, timeout=5) as r:
        return {(m["metric"].get("service_namespace", ""), m["metric"].get("service_name", "")): float(m["value"][1])
                for m in json.load(r)["data"]["result"]}
by = "service_namespace, service_name"
h = "http_server_request_duration_seconds"
deadline = time.time() + 30
while True:
    total = q(f"sum by ({by}) ({h}_count)")
    rate = q(f"sum by ({by}) (rate({h}_count[1m]))")
    if (sum(total.values()) >= 25 and all(rate.values()) and rate) or time.time() > deadline:
        break
    time.sleep(1)
errors = q(f'sum by ({by}) ({h}_count{{http_response_status_code=~"5.."}})')
p50 = q(f"histogram_quantile(0.5, sum by ({by}, le) ({h}_bucket))")
p99 = q(f"histogram_quantile(0.99, sum by ({by}, le) ({h}_bucket))")
print(f"  {'service':<28} {'req/s (1m)':>10} {'requests':>9} {'errors':>13} {'p50':>8} {'p99':>8}")
for key in sorted(total):
    n, e = total[key], errors.get(key, 0.0)
    name = "/".join(k for k in key if k)
    print(f"  {name:<28} {rate.get(key, 0.0):>10.2f} {n:>9.0f} {e:>5.0f} ({e / n:>5.1%}) "
          f"{p50.get(key, float('nan')) * 1e3:>6.0f}ms {p99.get(key, float('nan')) * 1e3:>6.0f}ms")
with urllib.request.urlopen(prom + "/api/v1/rules", timeout=5) as r:
    rules = [x for g in json.load(r)["data"]["groups"] for x in g["rules"]]
print(f"  (p50/p99 interpolated in the histogram buckets; Prometheus evaluates {sum(r['type'] == 'recording' for r in rules)}"
      f" recording and {sum(r['type'] == 'alerting' for r in rules)} alert rules of compose/prometheus/rules/)")
PY
echo "== dashboards"
echo "  Grafana: dashboards/sonde-red.json (import it, or provision it with a Grafana of your own:"
echo "  docker-compose -f compose/docker-compose.yml -f compose/grafana.yml -p $COMPOSE_PROJECT up -d grafana,"
echo "  then http://127.0.0.1:3000; KEEP=1 scripts/demo.sh keeps the stack up); Prometheus: http://127.0.0.1:$PROMETHEUS_PORT/graph, raw metrics: curl localhost:$SONDE_PORT/metrics"
