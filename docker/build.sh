#!/usr/bin/env bash
# Builds a static sonde (glibc, +crt-static) and the image sonde:latest from docker/Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet --target "$target"
stage=$(mktemp -d /tmp/sonde-image.XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp "target/$target/release/sonde" "$stage/sonde"
cp docker/Dockerfile "$stage/"
docker build -q -t "${SONDE_IMAGE:-sonde:latest}" "$stage" >/dev/null
echo "built image ${SONDE_IMAGE:-sonde:latest} ($(du -h "$stage/sonde" | cut -f1) static binary)"
