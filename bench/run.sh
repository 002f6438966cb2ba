#!/usr/bin/env bash
# sonde's overhead benchmark: `bench/run.sh` (full, ≤ 15 min, writes BENCHMARKS.md) or
# `bench/run.sh --smoke` (seconds). Options: bench/run.sh --help.
set -euo pipefail
exec python3 "$(dirname "$0")/run.py" "$@"
