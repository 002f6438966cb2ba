#!/usr/bin/env bash
# What each measurement source costs, start → counted, RSS (issue 20): bench/sources.sh --help.
set -euo pipefail
exec python3 "$(dirname "$0")/sources.py" "$@"
