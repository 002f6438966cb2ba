#!/usr/bin/env python3
"""What each measurement source costs, and how fast sonde starts counting (issue 20).

Prints, and with --out writes as a Markdown section:
  - added µs per request on the same Go server (trivial handler, wrk keep-alive) for each
    source: `go_source=uprobes`, `go_source=syscalls` and `go_source=auto` (which picks
    syscalls for this plaintext-only server), interleaved with the server alone;
    every count checked against what the server answered;
  - bystander: the same server selected by nothing, while sonde traces another (non-Go)
    process through syscalls, so the syscall tracepoints are attached;
  - sonde start → a running Go server counted (p99 of --starts starts), and the same for a
    process measured through syscalls;
  - sonde's RSS, anonymous and file-backed apart: steady after load, and peak with
    --containers instrumented containers (when Docker answers).

The figure is the server's CPU time per request (utime+stime over wrk's completed requests):
on this shared 2-core machine throughput moves with other people's work, CPU per request
much less. Run as root from the repository: `bench/sources.sh [--sonde PATH]`.
"""

import argparse
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as common  # noqa: E402  (bench/run.py: build, processes, /proc, Prometheus)

log = common.log


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mem(pid):
    """RssAnon, RssFile, VmRSS, VmHWM of a process, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("RssAnon", "RssFile", "RssShmem", "VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def sonde_env(prom, **extra):
    env = dict(os.environ, SONDE_PROMETHEUS_PORT=str(prom), SONDE_DOCKER="false",
               SONDE_LOG_LEVEL="warn", SONDE_METRICS_REPORT_TARGET="true")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def exe_rule(path):
    return "^" + re.escape(path) + "$"


def count(prom, **labels):
    return int(common.metric_sum(common.scrape(prom), "http_server_request_duration_seconds_count",
                                 **labels))


def settle(prom, expect, timeout=20, **labels):
    """The count once it reaches `expect` (or stops moving for 3 s)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = count(prom, **labels)
        if n != last:
            last, since = n, time.monotonic()
        if n >= expect and time.monotonic() - since >= 0.5:
            return n
        if time.monotonic() - since >= 3:
            return n
        time.sleep(0.1)
    return last


class Sonde:
    def __init__(self, sonde, env, wait_instrumented=1):
        self.prom = int(env["SONDE_PROMETHEUS_PORT"])
        self.proc = common.Proc([sonde], env=env)
        ok = common.wait_until(
            lambda: common.metric_sum(common.scrape(self.prom), "sonde_instrumented_processes")
            >= wait_instrumented, 60, 0.05)
        if not ok:
            self.proc.stop()
            sys.exit("bench: sonde did not instrument its target within 60 s")

    def stop(self):
        self.proc.stop()


def python_server(port):
    """A non-Go HTTP/1.1 server: what makes sonde attach the syscall tracepoints."""
    p = common.Proc(["python3", "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                    stderr=subprocess.DEVNULL)
    if not common.wait_port(port, 10):
        p.stop()
        sys.exit("bench: python3 -m http.server did not listen")
    return p


def per_request(server_pid, port, seconds, conns):
    c0 = common.proc_cpu_s(server_pid)
    res = common.wrk(port, seconds, conns)
    res["cpu_us"] = 1e6 * (common.proc_cpu_s(server_pid) - c0) / res["requests"]
    return res


def sources(sonde, server_path, rounds, seconds, conns):
    """{mode: [cpu µs/req, ...]} for alone / uprobes / syscalls / auto / bystander, plus
    counts."""
    port = free_port()
    other = free_port()
    prom = free_port()
    server = common.start_server(server_path, port)
    py = python_server(other)
    service = os.path.basename(server_path)
    runs = {m: [] for m in ("alone", "uprobes", "syscalls", "auto", "bystander")}
    exact = []
    try:
        for r in range(rounds):
            for mode in runs:
                agent = None
                if mode in ("uprobes", "syscalls", "auto"):
                    agent = Sonde(sonde, sonde_env(prom, SONDE_EXECUTABLE_NAME=exe_rule(server_path),
                                                   SONDE_GO_SOURCE=mode))
                elif mode == "bystander":
                    # Selects only the Python server: the Go server is a bystander.
                    agent = Sonde(sonde, sonde_env(prom, SONDE_OPEN_PORT=other))
                try:
                    common.wrk(port, 1, conns)  # warm-up, also counted
                    before = 0
                    if agent and mode != "bystander":
                        # Once the warm-up's last records are drained.
                        before = settle(prom, 1, service_name=service)
                    res = per_request(server.pid, port, seconds, conns)
                    if agent and mode != "bystander":
                        # wrk reports completed responses; a request cut at its end is answered
                        # and counted by sonde but not by wrk: allow the open connections.
                        n = settle(prom, before + res["requests"], service_name=service) - before
                        exact.append((mode, res["requests"], n))
                    if agent:
                        res["rss"] = mem(agent.proc.pid)
                finally:
                    if agent:
                        agent.stop()
                runs[mode].append(res)
                log(f"round {r + 1}/{rounds} {mode:9} {res['rps']:8.0f} req/s "
                    f"server {res['cpu_us']:6.2f} µs/req")
    finally:
        server.stop()
        py.stop()
    return runs, exact


def dd_ns_per_pair(n):
    """CPU ns per read+write pair of `dd bs=1` (pinned to core 0): a syscall-bound bystander."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["taskset", "-c", "0", "dd", "if=/dev/zero", "of=/dev/null", "bs=1",
                    f"count={n}"], capture_output=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return 1e9 * ((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)) / n


def bystander_syscalls(sonde, rounds, n=500000):
    """The tracepoints' tax on a process sonde does not trace, precisely: wrk's figures move by
    ±1 µs per request here with other people's work, a syscall loop's CPU time much less.
    {"alone": [...], "traced": [...]}, ns per read+write pair."""
    other, prom = free_port(), free_port()
    py = python_server(other)
    out = {"alone": [], "traced": []}
    try:
        for r in range(rounds):
            out["alone"].append(dd_ns_per_pair(n))
            agent = Sonde(sonde, sonde_env(prom, SONDE_OPEN_PORT=other))
            try:
                out["traced"].append(dd_ns_per_pair(n))
            finally:
                agent.stop()
            log(f"round {r + 1}/{rounds} dd bs=1: alone {out['alone'][-1]:.0f} ns/pair, "
                f"tracepoints attached {out['traced'][-1]:.0f} ns/pair")
    finally:
        py.stop()
    return out


def syscalls_per_request(server_path, seconds=2):
    """Traced syscalls (read and write) the server makes per request, by strace -c."""
    if not shutil.which("strace"):
        return None
    port = free_port()
    server = common.start_server(server_path, port)
    out_file = os.path.join(common.WORK, "strace.out")
    try:
        st = subprocess.Popen(["strace", "-c", "-f", "-p", str(server.pid), "-o", out_file],
                              stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        res = common.wrk(port, seconds, 8)
        st.send_signal(signal.SIGINT)
        st.wait(30)
    finally:
        server.stop()
    calls = 0
    with open(out_file) as f:
        for line in f:
            parts = line.split()
            if parts and parts[-1] in ("read", "write", "readv", "writev", "recvfrom", "sendto",
                                       "recvmsg", "sendmsg", "accept4", "close"):
                calls += int(parts[3])
    return calls / res["requests"]


def start_to_counted(sonde, server_path, starts, mode):
    """ms from sonde's exec to the first counted request of an already running server.

    A request every 5 ms, each on its own path; the earliest path sonde counted (it reports
    url_path) tells when it began counting, the send time of that request."""
    port, prom = free_port(), free_port()
    if mode == "python":
        server = python_server(port)
        env = sonde_env(prom, SONDE_OPEN_PORT=port)
    else:
        server = common.start_server(server_path, port)
        env = sonde_env(prom, SONDE_EXECUTABLE_NAME=exe_rule(server_path), SONDE_GO_SOURCE=mode)
    out = []
    try:
        for _ in range(starts):
            sent = {}
            t0 = time.monotonic()
            agent = common.Proc([sonde], env=env)
            try:
                i = 0
                while time.monotonic() - t0 < 3.0:
                    path = f"/s{i}"
                    sent[path] = time.monotonic() - t0
                    common.get(port, path)
                    i += 1
                    time.sleep(0.005)
                time.sleep(0.3)
                text = common.scrape(prom)
                counted = [sent[p] for p in sent if common.metric_sum(
                    text, "http_server_request_duration_seconds_count", url_path=p) >= 1]
                out.append(1e3 * min(counted) if counted else None)
            finally:
                agent.stop()
            log(f"start → counted ({mode}): {out[-1]} ms")
    finally:
        server.stop()
    return out


def peak_containers(sonde, server_path, n):
    if not common.docker_ok():
        return None
    common.build_image(server_path)
    prom = free_port()
    env = sonde_env(prom, SONDE_DOCKER="true")
    agent = common.Proc([sonde], env=env)
    cs = common.Containers()
    try:
        if not common.wait_until(lambda: common.scrape(prom), 60, 0.1):
            sys.exit("bench: sonde (docker) did not serve metrics")
        idle = mem(agent.pid)
        ports = [free_port() for _ in range(n)]
        names = [cs.run(f"src{i}", p) for i, p in enumerate(ports)]
        served = 0
        for name, port in zip(names, ports):
            common.wait_port(port, 30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                common.get(port, "/")
                if count(prom, container_name=name) >= 1:
                    served += 1
                    break
                time.sleep(0.02)
        time.sleep(1)
        return {"idle": idle, "with": mem(agent.pid), "containers": n, "counted": served}
    finally:
        agent.stop()
        cs.remove()


def pctl(xs, p):
    xs = sorted(x for x in xs if x is not None)
    return common.pctl(xs, p) if xs else None


def sources_table(w, runs, added, rps, exact, dd, per_req):
    w("| source on the same Go server (trivial handler) | server CPU/req | added µs/req | req/s |")
    w("|---|---|---|---|")
    for mode, label in (("alone", "alone"), ("uprobes", "`go_source=uprobes`"),
                        ("syscalls", "`go_source=syscalls`"),
                        ("auto", "`go_source=auto` (picks syscalls: no TLS/gRPC/h2c code)"),
                        ("bystander", "bystander (selected by nothing; sonde traces a Python "
                                      "server through syscalls)")):
        cpu = statistics.median(r["cpu_us"] for r in runs[mode])
        add = "–" if mode == "alone" else f"{added[mode]:.2f}"
        w(f"| {label} | {cpu:.2f} µs | {add} | {rps[mode]:.0f} |")
    w("")
    dd_alone = statistics.median(dd["alone"])
    dd_tax = statistics.median(dd["traced"]) - dd_alone
    w(f"Bystander, precisely: `dd bs=1` (a read+write pair per byte, pinned) takes "
      f"{dd_alone:.0f} ns of CPU per pair alone and {dd_tax:+.0f} ns more while sonde traces "
      f"another process (medians of {len(dd['alone'])} interleaved runs). "
      + (f"The Go server makes {per_req:.2f} traced syscalls per request (`strace -c`), so a "
         f"bystander pays ≈ {dd_tax * per_req / 2 / 1000:.2f} µs per request."
         if per_req else "") + "\n")
    w("Counts (wrk's completed responses → sonde's count, every run): " + "; ".join(
        f"{mode} {sent} → {got}" for mode, sent, got in exact) + ".\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sonde", help="sonde binary (default: build a release one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--out", help="append the Markdown section to this file")
    ap.add_argument("--start-and-footprint", action="store_true",
                    help="only start → counted and RSS (minutes, not half an hour)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    sonde, server_path, _, go = common.build(args)
    full = not args.start_and_footprint
    if full:
        runs, exact = sources(sonde, server_path, args.rounds, args.seconds, args.conns)
        alone = statistics.median(r["cpu_us"] for r in runs["alone"])
        added = {m: statistics.median(r["cpu_us"] for r in runs[m]) - alone
                 for m in ("uprobes", "syscalls", "auto", "bystander")}
        rps = {m: statistics.median(r["rps"] for r in runs[m]) for m in runs}
        steady = {m: runs[m][-1]["rss"] for m in ("uprobes", "syscalls", "auto", "bystander")}
        dd = bystander_syscalls(sonde, args.rounds + 2)
        per_req = syscalls_per_request(server_path)
    starts = {m: start_to_counted(sonde, server_path, args.starts, m)
              for m in ("uprobes", "syscalls", "auto", "python")}
    peak = peak_containers(sonde, server_path, args.containers)

    lines = []
    w = lines.append
    m = common.machine()
    w(f"## Sources, start and footprint (`bench/sources.sh`, issue 20)\n")
    w(f"{m['date']}, kernel {m['kernel']}, {m['cores']} cores, load {m['load']}; Go server "
      f"built with {go}, sonde `{os.path.relpath(sonde, common.REPO)}`; "
      + (f"{args.rounds} interleaved rounds of {args.seconds} s, wrk -c{args.conns}, server "
         f"pinned to core 0, wrk to core 1; medians.\n" if full
         else "start → counted and footprint only (`--start-and-footprint`).\n"))
    if full:
        sources_table(w, runs, added, rps, exact, dd, per_req)
    w("| sonde start → first request counted (a request every 5 ms) | p50 | p99 | max | counted |")
    w("|---|---|---|---|---|")
    for mode, label in (("uprobes", "running Go server, uprobes"),
                        ("syscalls", "running Go server, `go_source=syscalls`"),
                        ("auto", "running Go server, `go_source=auto`"),
                        ("python", "running Python server (syscall tracer)")):
        xs = starts[mode]
        ok = [x for x in xs if x is not None]
        w(f"| {label} | {pctl(ok, 50):.0f} ms | {pctl(ok, 99):.0f} ms | {max(ok):.0f} ms | "
          f"{len(ok)}/{len(xs)} |" if ok else f"| {label} | – | – | – | 0/{len(xs)} |")
    w("")
    w("| sonde RSS (kB) | anonymous | file-backed | total | peak (VmHWM) |")
    w("|---|---|---|---|---|")
    for mode in ("uprobes", "syscalls", "auto", "bystander") if full else ():
        r = steady[mode]
        w(f"| after the {mode} runs | {r['RssAnon']} | {r['RssFile']} | {r['VmRSS']} | "
          f"{r['VmHWM']} |")
    if peak:
        for k, label in (("idle", "Docker, idle"),
                         ("with", f"{peak['containers']} containers "
                                  f"({peak['counted']} counted)")):
            r = peak[k]
            w(f"| {label} | {r['RssAnon']} | {r['RssFile']} | {r['VmRSS']} | {r['VmHWM']} |")
    else:
        w("| (no Docker: containers not measured) | | | | |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
