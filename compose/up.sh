#!/usr/bin/env bash
# One command for the compose demo: builds sonde, demo and Prometheus images locally (no
# registry needed), then `docker-compose up -d`. Ports: DEMO_PORT (8080), SONDE_PORT (9400),
# PROMETHEUS_PORT (9090). Stop with: docker-compose -f compose/docker-compose.yml -p sonde down
set -euo pipefail
cd "$(dirname "$0")/.."
project=${COMPOSE_PROJECT:-sonde}
stage=$(mktemp -d /tmp/sonde-compose.XXXXXX)
trap 'rm -rf "$stage"' EXIT

bash docker/build.sh

# The demo service, static, FROM scratch.
mkdir -p "$stage/demo"
(cd demo/example-http-service && CGO_ENABLED=0 GO111MODULE=off GOPATH="$stage/gopath" \
  GOCACHE="${GOCACHE:-$stage/gocache}" go build -o "$stage/demo/example-http-service" .)
printf 'FROM scratch\nCOPY example-http-service /example-http-service\nENTRYPOINT ["/example-http-service"]\n' \
  >"$stage/demo/Dockerfile"
docker build -q -t "${DEMO_IMAGE:-sonde-demo:latest}" "$stage/demo" >/dev/null

# Prometheus from Debian's package: the binary and the libraries it links, FROM scratch.
command -v prometheus >/dev/null || { echo "up: install Debian's prometheus (scripts/setup.sh)"; exit 1; }
mkdir -p "$stage/prometheus/rootfs/prometheus" "$stage/prometheus/rootfs/tmp" "$stage/prometheus/rootfs/bin"
cp /usr/bin/prometheus "$stage/prometheus/rootfs/bin/"
for lib in $(ldd /usr/bin/prometheus | grep -o '/[^ ]*'); do
  mkdir -p "$stage/prometheus/rootfs$(dirname "$lib")"
  cp -L "$lib" "$stage/prometheus/rootfs$lib"
done
printf 'FROM scratch\nCOPY rootfs/ /\nENTRYPOINT ["/bin/prometheus"]\n' >"$stage/prometheus/Dockerfile"
docker build -q -t "${PROMETHEUS_IMAGE:-sonde-prometheus:latest}" "$stage/prometheus" >/dev/null

config=$(mktemp /tmp/sonde-prometheus.XXXXXX.yml)
sed "s/127.0.0.1:9400/127.0.0.1:${SONDE_PORT:-9400}/" compose/prometheus.yml >"$config"
chmod 644 "$config"
export PROMETHEUS_CONFIG=$config
docker-compose -f compose/docker-compose.yml -p "$project" up -d
echo "up: demo on 127.0.0.1:${DEMO_PORT:-8080}, sonde on :${SONDE_PORT:-9400}/metrics, Prometheus on 127.0.0.1:${PROMETHEUS_PORT:-9090}"
