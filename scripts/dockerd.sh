#!/usr/bin/env bash
# Starts a Docker engine for the tests when none answers (CI machines start with none):
# no bridge, no iptables, as the tests run containers with --network host.
set -euo pipefail
if docker info >/dev/null 2>&1; then
  exit 0
fi
command -v dockerd >/dev/null || { echo "dockerd: not installed (scripts/setup.sh installs docker.io)"; exit 1; }
mkdir -p /var/log
# dockerd outlives this script: close what the script inherited (a caller's lock file, a test
# runner's pipes), or dockerd would hold it open for good. 255 is bash's own script file.
for fd in /proc/$$/fd/*; do
  n=${fd##*/}
  case $n in 0 | 1 | 2 | 255) ;; *) eval "exec $n>&-" 2>/dev/null || true ;; esac
done
setsid nohup dockerd --bridge=none --iptables=false >/var/log/sonde-test-dockerd.log 2>&1 &
for _ in $(seq 100); do
  docker info >/dev/null 2>&1 && { echo "dockerd: started (pid $!)"; exit 0; }
  sleep 0.2
done
echo "dockerd: did not start; its log:"; tail -20 /var/log/sonde-test-dockerd.log
exit 1
