#!/usr/bin/env bash
# Starts Podman's API service (Docker-compatible, at /run/podman/podman.sock) for the tests when
# none answers. Containers themselves are run with the podman CLI; the service only serves
# sonde's list/inspect/events.
set -euo pipefail
SOCK=/run/podman/podman.sock
answers() { curl -sf --max-time 2 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; }
if answers; then
  exit 0
fi
command -v podman >/dev/null || { echo "podman: not installed (scripts/setup.sh installs it)"; exit 1; }
mkdir -p /run/podman /var/log
setsid nohup podman system service --time=0 "unix://$SOCK" >/var/log/sonde-test-podman.log 2>&1 &
for _ in $(seq 100); do
  answers && { echo "podman: API service started (pid $!)"; exit 0; }
  sleep 0.2
done
echo "podman: the API service did not start; its log:"; tail -20 /var/log/sonde-test-podman.log
exit 1
