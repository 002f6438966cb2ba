#!/bin/bash
# Runs inside a kernel-matrix guest (scripts/kernel-matrix.sh, tests/kernels/init): the host's
# root, read-only under a tmpfs overlay, on the kernel under test. Prints one line per check,
# `PASS name detail` or `FAIL name detail`, which the harness counts; anything else is log.
# Ports are fixed: nothing else runs in the guest.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p"; }
SONDE=$(arg sonde.bin)
GO_PLAIN=$(arg sonde.go_plain)
GO_STRIPPED=$(arg sonde.go_stripped)
BAD=$(arg sonde.bad)
SELF_TEST=$(arg sonde.self_test)
WAIT=60

mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null
echo "KERNEL $(uname -r)"

pass() { echo "PASS $*"; }
fail() {
  echo "FAIL $*"
  failed=1
}
indent() { sed 's/^/    | /'; }
failed=0

# The syscall source sonde must choose: kprobes wherever the kernel has them (6.1, 6.12).
if [ -e /sys/bus/event_source/devices/kprobe ]; then MODE=kprobes; else MODE=tracepoints; fi

# 1. sonde check: exit 0, and it says the syscall tracer is available, from which source.
out=$("$SONDE" check 2>&1)
rc=$?
echo "$out" | indent
if [ $rc = 0 ] && echo "$out" | grep -q "^syscall + OpenSSL tracer (non-Go processes): available, syscall source: $MODE"; then
  pass "sonde-check exit 0, syscall tracer available, source $MODE"
else
  fail "sonde-check exit $rc (want the syscall tracer available from $MODE)"
fi

# 2. Every program of every embedded object through this kernel's verifier.
extra=()
[ -n "$SELF_TEST" ] && extra=(--load-object "$SELF_TEST")
out=$("$SONDE" check --load-all "${extra[@]}" 2>&1)
rc=$?
echo "$out" | grep -v '^loaded ' | indent
n=$(echo "$out" | grep -c '^loaded ')
if [ $rc = 0 ]; then
  pass "load-all $n programs loaded"
else
  fail "load-all exit $rc ($n programs loaded)"
fi

# 3. The known-bad object is rejected, through the same loader: a verifier failure is seen.
out=$("$SONDE" check --load-all --load-object "$BAD" 2>&1)
rc=$?
if [ $rc != 0 ] && echo "$out" | grep -q 'unbounded.bpf.o/read_unbounded: rejected'; then
  pass "bad-object-rejected $(basename "$BAD")"
else
  echo "$out" | grep -v '^loaded ' | indent
  fail "bad-object-rejected exit $rc"
fi

# 4. Real servers, one sonde selecting them all by port.
work=/tmp/matrix
mkdir -p $work/www $work/nginx
printf 'h%.0s' $(seq 123) >$work/www/hello.txt
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=127.0.0.1 -keyout $work/key.pem -out $work/cert.pem >/dev/null 2>&1
cat >$work/nginx.conf <<EOF
daemon off; master_process on; worker_processes 1; user root;
pid $work/nginx/nginx.pid; error_log $work/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off; client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi; uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:18084; listen 127.0.0.1:18085 ssl;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
    location / { return 200 "ok\n"; }
  }
}
EOF
"$GO_PLAIN" -addr 127.0.0.1:18081 >/dev/null 2>&1 &
go_plain=$!
"$GO_STRIPPED" -addr 127.0.0.1:18082 >/dev/null 2>&1 &
go_stripped=$!
(cd $work/www && exec python3 -m http.server 18083 --bind 127.0.0.1 >/dev/null 2>&1) &
py=$!
nginx -e $work/nginx/error.log -p $work/nginx -c $work/nginx.conf &
nginx_master=$!

listening() { grep -q ":$(printf '%04X' "$1") 00000000:0000 0A" /proc/net/tcp; }
for p in 18081 18082 18083 18084 18085; do
  t=0
  while ! listening $p && [ $t -lt $WAIT ]; do sleep 1; t=$((t + 1)); done
  listening $p || fail "servers port $p does not listen"
done
t=0
while [ -z "$(cat /proc/$nginx_master/task/$nginx_master/children 2>/dev/null)" ] && [ $t -lt $WAIT ]; do
  sleep 1
  t=$((t + 1))
done
nginx_worker=$(awk '{print $1}' /proc/$nginx_master/task/$nginx_master/children)

SONDE_OPEN_PORT=18081,18082,18083,18084,18085 SONDE_PROMETHEUS_PORT=19400 SONDE_DOCKER=false \
  SONDE_ROUTES_PATTERNS='/status/{code},/hello.txt,/http-ok,/https-ok' SONDE_LOG_LEVEL=info \
  "$SONDE" >$work/sonde.log 2>&1 &
sonde=$!

# One deadline for every attach: a kernel where they fail fails in WAIT seconds, not in one
# WAIT per process.
deadline=$((SECONDS + WAIT))
wait_log() {
  while ! grep -q "$1" $work/sonde.log && [ $SECONDS -lt $deadline ]; do sleep 1; done
  grep -q "$1" $work/sonde.log
}
ready=1
for needle in "instrumented pid $go_plain " "instrumented pid $go_stripped " \
  "tracing pid $py " "tracing pid $nginx_worker "; do
  wait_log "$needle" || { fail "attach '$needle' not in the log"; ready=0; }
done

# Threads sleeping inside a probed syscall hold kretprobe slots, traced or not: 32 threads of
# a bystander blocked in recv (the syscall Python and nginx read requests with) take more than
# the kernel's default of max(10, 2 x CPUs). sonde's kretprobes have 1024 slots each
# (KRETPROBE_MAXACTIVE): the counts below stay exact because of it.
python3 -c '
import socket, threading, time
pairs = [socket.socketpair() for _ in range(32)]
for a, _ in pairs:
    threading.Thread(target=a.recv, args=(1,), daemon=True).start()
time.sleep(3600)' &
blockers=$!
in_recv() {
  local n=0 t
  for t in /proc/$blockers/task/*; do
    [ "$(cut -d' ' -f1 "$t/syscall" 2>/dev/null)" = 45 ] && n=$((n + 1))
  done
  echo $n
}
t=0
while [ "$(in_recv)" -lt 32 ] && [ $t -lt $WAIT ]; do sleep 1; t=$((t + 1)); done
echo "    $(in_recv) bystander threads blocked in recvfrom"

# n requests with curl, each answered 2xx.
requests() {
  local n=$1 url=$2 i code
  for i in $(seq "$n"); do
    code=$(curl -sk --http1.1 --max-time 20 -o /dev/null -w '%{http_code}' "$url")
    case $code in 2??) ;; *) echo "    curl $url: $code" ;; esac
  done
}
# The sum of http_server_request_duration_seconds_count over the series with these labels.
count() {
  curl -s --max-time 10 http://127.0.0.1:19400/metrics \
    | grep '^http_server_request_duration_seconds_count{' \
    | grep -F "service_name=\"$1\"" | grep -F "${2:-}" \
    | awk '{s += $NF} END {print s + 0}'
}
expect() {
  local name=$1 want=$2 service=$3 label=${4:-} got t=0
  got=$(count "$service" "$label")
  while [ "$got" != "$want" ] && [ $t -lt 30 ]; do
    sleep 1
    t=$((t + 1))
    got=$(count "$service" "$label")
  done
  if [ "$got" = "$want" ]; then
    pass "$name $got/$want requests counted ($service $label)"
  else
    fail "$name $got/$want requests counted ($service $label)"
  fi
}

if [ $ready = 1 ]; then
  requests 5 'http://127.0.0.1:18081/status/200?size=3'
  requests 4 'http://127.0.0.1:18082/status/201'
  requests 3 'http://127.0.0.1:18083/hello.txt'
  requests 2 'http://127.0.0.1:18084/http-ok'
  requests 3 'https://127.0.0.1:18085/https-ok'
  expect go-plain 5 "$(basename "$GO_PLAIN")"
  expect go-stripped 4 "$(basename "$GO_STRIPPED")"
  expect python-http 3 "$(basename "$(readlink /proc/$py/exe)")"
  expect nginx-http 2 nginx 'http_route="/http-ok"'
  expect nginx-https 3 nginx 'http_route="/https-ok"'
  expect nginx-total 5 nginx
  if [ $MODE = kprobes ]; then
    n=$(grep -c "^r1024:sonde_$sonde/" /sys/kernel/tracing/kprobe_events)
    if [ "$n" = 12 ]; then
      pass "kretprobes $n with 1024 slots each"
    else
      grep sonde_ /sys/kernel/tracing/kprobe_events | indent
      fail "kretprobes: $n of 12 with 1024 slots in kprobe_events"
    fi
  fi
  if grep -q "syscall tracer loaded in .*syscall source: $MODE" $work/sonde.log \
    && grep -q "syscall $MODE attached" $work/sonde.log; then
    pass "syscall-source $MODE (loaded and attached)"
  else
    fail "syscall-source: the log does not say $MODE loaded and attached"
  fi
fi
if [ $failed = 1 ]; then
  echo "    sonde log:"
  tail -n 40 $work/sonde.log | indent
fi
kill $sonde $go_plain $go_stripped $py $nginx_master $blockers 2>/dev/null
wait 2>/dev/null
# sonde removes the kretprobe events it made when it exits.
if [ $MODE = kprobes ]; then
  if grep -q "sonde_$sonde/" /sys/kernel/tracing/kprobe_events; then
    fail "kretprobes left in kprobe_events after sonde exited"
  else
    pass "kretprobes removed when sonde exited"
  fi
fi
exit $failed
