#!/usr/bin/env bash
# Soak run (not in CI): 2 000 req/s on a host Go server for MINUTES (30 by default) while
# containers are started, given a fixed number of requests and removed, one after another;
# sonde's RSS and fd count sampled every 10 s; at the end every request must be accounted
# for (counted, or counted as lost). Series of removed containers retire after 60 s. Usage: bench/soak.sh [MINUTES]. Needs root and Docker;
# run scripts/build-go-targets.sh first. Prints a summary; samples in $OUT/samples.csv.
#
# RATE, CONNS, CHURN_REQUESTS (per container), SONDE (binary; release if built, else debug).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${1:-30}"
RATE="${RATE:-2000}"
CONNS="${CONNS:-8}"
CHURN_REQUESTS="${CHURN_REQUESTS:-50}"
OUT="${OUT:-target/soak}"
SONDE="${SONDE:-}"
if [ -z "$SONDE" ]; then
    SONDE=target/release/sonde
    [ -x "$SONDE" ] || SONDE=target/debug/sonde
fi
[ -x "$SONDE" ] || { echo "build sonde first (cargo build)"; exit 1; }
SERVER="$(ls target/go-targets/httpserver-*-static-plain | sort -V | tail -n 1)"
[ -x "$SERVER" ] || { echo "run scripts/build-go-targets.sh target/go-targets first"; exit 1; }
mkdir -p "$OUT"
TAG="harden-soak-$$"

# Ports nothing listens on: steady server, churn containers, sonde's metrics.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); CPORT=$(free_port); PROM=$(free_port)

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    docker ps -aq --filter "name=^$TAG-" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker rmi -f "$TAG:latest" >/dev/null 2>&1 || true
}
trap cleanup EXIT
# If a command ends the soak early, say which: a silent stop is what hid the bug above.
trap 'echo "soak.sh: line $LINENO exited $? ($BASH_COMMAND)" >&2' ERR

# The churn image: the same static server, FROM scratch.
IMG_DIR="$OUT/image"; mkdir -p "$IMG_DIR"
cp "$SERVER" "$IMG_DIR/httpserver"
printf 'FROM scratch\nCOPY httpserver /httpserver\nENTRYPOINT ["/httpserver"]\n' >"$IMG_DIR/Dockerfile"
docker build -q -t "$TAG:latest" "$IMG_DIR" >/dev/null 2>&1

LOAD="$OUT/soakload"
GOCACHE="$PWD/$OUT/gocache" GO111MODULE=off go build -o "$LOAD" ./bench/soakload

"$SERVER" -addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
pids+=($!)
# Only this run's containers (by name), whatever other sonde instances select.
SONDE_OPEN_PORT=$PORT SONDE_PROMETHEUS_PORT=$PROM SONDE_DOCKER=true \
    SONDE_DOCKER_RULES="[{name: \"$TAG-*\"}]" SONDE_CONTAINER_SERIES_TTL=60s \
    "$SONDE" 2>"$OUT/sonde.log" &
SONDE_PID=$!
pids+=($SONDE_PID)
for _ in $(seq 100); do
    grep -q "instrumented pid" "$OUT/sonde.log" && break
    sleep 0.2
done
grep -q "instrumented pid" "$OUT/sonde.log" || { cat "$OUT/sonde.log"; exit 1; }

metric() { # name, label filter (a fixed string): the sum of matching series, 0 if none
    # One awk, not grep | grep: under pipefail a grep that matches nothing (a series not yet
    # exported) failed the assignment and set -e ended the whole soak.
    { curl -s "localhost:$PROM/metrics" || true; } |
        awk -v n="$1" -v f="$2" 'index($0, n) == 1 && index($0, f) {s += $NF} END {print s + 0}'
}

echo "soak: ${MINUTES} min, $RATE req/s on :$PORT, container churn, sonde $SONDE (pid $SONDE_PID)"
"$LOAD" -url "http://127.0.0.1:$PORT/status/200" -rate "$RATE" -conns "$CONNS" \
    -duration "${MINUTES}m" >"$OUT/load.txt" &
LOAD_PID=$!
pids+=($LOAD_PID)

echo "t_s,rss_kb,fds,containers_done,churn_errors" >"$OUT/samples.csv"
start=$(date +%s)
done_c=0; churn_err=0; churn_sent=0; last_sample=0
while kill -0 "$LOAD_PID" 2>/dev/null; do
    now=$(( $(date +%s) - start ))
    if [ $((now - last_sample)) -ge 10 ] || [ "$last_sample" = 0 ]; then
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$SONDE_PID/status")
        fds=$(ls "/proc/$SONDE_PID/fd" | wc -l)
        echo "$now,$rss,$fds,$done_c,$churn_err" >>"$OUT/samples.csv"
        last_sample=$now; [ "$last_sample" = 0 ] && last_sample=1
    fi
    # One container: start, wait (up to 30 s) until sonde instruments it, send a fixed batch,
    # check (for up to 20 s) that the count is exact, remove it.
    name="$TAG-$done_c"
    cid=$(docker run -d --network host --name "$name" "$TAG:latest" -addr "127.0.0.1:$CPORT")
    cpid=$(docker inspect -f '{{.State.Pid}}' "$cid")
    ok=0
    for _ in $(seq 300); do
        # The line must name this container: PIDs wrap within a soak, and an earlier
        # container's line for the same PID would let the requests go out before the attach.
        awk -v p="instrumented pid $cpid (" -v s="as service \"$name\"" \
            'index($0, p) && index($0, s) {f = 1} END {exit !f}' "$OUT/sonde.log" &&
            { ok=1; break; }
        sleep 0.1
    done
    if [ "$ok" = 1 ]; then
        # sonde may instrument the container before its program runs (at runc's init), so
        # "instrumented" can come before the port accepts: wait for it, or curls are refused.
        for _ in $(seq 300); do
            (exec 3<>"/dev/tcp/127.0.0.1/$CPORT") 2>/dev/null && break
            sleep 0.01
        done
        for _ in $(seq "$CHURN_REQUESTS"); do
            curl -s -o /dev/null "http://127.0.0.1:$CPORT/status/200" || true
        done
        churn_sent=$((churn_sent + CHURN_REQUESTS))
        got=0
        for _ in $(seq 200); do
            got=$(metric http_server_request_duration_seconds_count "service_name=\"$name\"")
            [ "$got" = "$CHURN_REQUESTS" ] && break
            sleep 0.1
        done
        [ "$got" = "$CHURN_REQUESTS" ] || { churn_err=$((churn_err + 1)); echo "container $name: $got of $CHURN_REQUESTS counted"; }
    else
        churn_err=$((churn_err + 1)); echo "container $name (pid $cpid) not instrumented"
    fi
    docker rm -f "$cid" >/dev/null
    done_c=$((done_c + 1))
done
wait "$LOAD_PID" || true
sleep 2
read -r _ sent _ failed <"$OUT/load.txt"
counted=$(metric http_server_request_duration_seconds_count "service_name=\"$(basename "$SERVER")\"")
lost=$(metric sonde_events_lost_total "")
rss_first=$(sed -n 2p "$OUT/samples.csv" | cut -d, -f2); rss_last=$(tail -n 1 "$OUT/samples.csv" | cut -d, -f2)
rss_max=$(tail -n +2 "$OUT/samples.csv" | cut -d, -f2 | sort -n | tail -n 1)
fd_first=$(sed -n 2p "$OUT/samples.csv" | cut -d, -f3); fd_last=$(tail -n 1 "$OUT/samples.csv" | cut -d, -f3)
fd_max=$(tail -n +2 "$OUT/samples.csv" | cut -d, -f3 | sort -n | tail -n 1)
alive=yes; kill -0 "$SONDE_PID" 2>/dev/null || alive=no
elapsed=$(( $(date +%s) - start ))
cat <<SUMMARY | tee "$OUT/summary.txt"
duration:            ${elapsed} s (asked ${MINUTES} min), $RATE req/s asked, $(( sent / (MINUTES * 60) )) req/s achieved
steady server:       sent $sent (failed $failed), counted $counted, lost events $lost
                     accounted: $( [ "$((counted + lost))" = "$sent" ] && echo "every request (counted + lost = sent)" || echo "NO: counted + lost != sent" )
containers churned:  $done_c, $churn_sent requests, $churn_err with a wrong count or not instrumented
sonde RSS (kB):      first $rss_first, last $rss_last, max $rss_max
sonde fds:           first $fd_first, last $fd_last, max $fd_max
sonde alive at end:  $alive
SUMMARY
