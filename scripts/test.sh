#!/usr/bin/env bash
# The README's test command, and what CI runs: installs prerequisites, checks formatting and
# lints, then unit tests and the integration tests (root: real BPF, real Go servers), then the
# kernel matrix (the BPF side on Debian's 6.1 and 6.12 kernels, ~3 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
# Incremental caches only pay off for edit-compile loops; here they would double the debug
# target's size (4.5 GB of 8 GB measured) on a disk the fuzz build still needs.
export CARGO_INCREMENTAL=0

disk_free() { echo "== disk: $(df -h --output=avail . | tail -n 1 | tr -d ' ') free ($1)"; }
disk_free "start"
bash scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== Prometheus rules (promtool check + unit tests) and generated dashboards"
promtool check rules compose/prometheus/rules/sonde.rules.yml
(cd compose/prometheus/rules && promtool test rules sonde.rules.test.yml)
python3 dashboards/generate.py --check
echo "== Docker engine"
bash scripts/dockerd.sh
echo "== Podman API service"
bash scripts/podman.sh
echo "== Go test targets"
bash scripts/build-go-targets.sh target/go-targets | tail -n 3
bash scripts/build-grpc-targets.sh target/go-targets | tail -n 3
echo "== third-party Go servers (npm, Debian)"
bash scripts/fetch-third-party-go.sh target/third-party | tail -n 1
echo "== unit tests"
cargo test --lib --bins --quiet
echo "== integration tests (one at a time: they load BPF and bind ports)"
SONDE_REQUIRE_INTEGRATION=1 cargo test --no-fail-fast --test '*' -- --test-threads=1
echo "== kernel matrix: Debian's 6.1 and 6.12 kernels under QEMU (the host kernel is covered above)"
bash scripts/kernel-matrix.sh 6.1 6.12
disk_free "before the fuzz build"
echo "== fuzz smoke (every target in fuzz/, a few seconds each)"
bash scripts/fuzz-smoke.sh "${FUZZ_SECONDS:-10}"
