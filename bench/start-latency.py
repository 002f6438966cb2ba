#!/usr/bin/env python3
"""Container start → first request counted, on Docker or Podman (runc), one container at a time.

Starts sonde (metrics on a free port, url_path reported), then for each trial runs a labelled
container of the Go test server image with --network host, sends GET /status/200 the moment its
port accepts and polls /metrics until that request is counted. Prints p50/p99 of
`run → counted` and `run → port accepts`, and how many first requests were counted.

    bench/start-latency.py --engine podman --image localhost/sonde-test/httpserver:latest
    bench/start-latency.py --engine docker --image sonde-test/httpserver:latest

The images are the ones tests/podman.rs and tests/docker.rs build (FROM scratch, static Go).
"""
import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
        return True
    except OSError:
        return False


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        r.read()


def scrape(prom):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{prom}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return ""


def counted(text, name, path):
    for line in text.splitlines():
        if (line.startswith("http_server_request_duration_seconds_count{")
                and f'container_name="{name}"' in line and f'url_path="{path}"' in line):
            return float(line.rsplit(" ", 1)[1]) >= 1
    return False


def links(text):
    """Uprobe links other than armed files' (an image's program armed ahead stays)."""
    total = armed = None
    for line in text.splitlines():
        if line.startswith("sonde_uprobe_links "):
            total = float(line.split()[1])
        elif line.startswith("sonde_armed_uprobe_links "):
            armed = float(line.split()[1])
    if total is None:
        return None
    return total - (armed or 0)


def dur_ms(text):
    """A Rust Duration's Debug form (`1.5ms`, `230.1µs`, `1.2s`) in milliseconds."""
    text = text.strip()
    for unit, f in (("ms", 1.0), ("µs", 1e-3), ("ns", 1e-6), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * f
    raise ValueError(text)


def pctl(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["docker", "podman"], required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--sonde", default="target/debug/sonde")
    ap.add_argument("--settle", action="store_true",
                    help="before each trial, wait until sonde closed the previous container's "
                         "uprobe links (sonde_uprobe_links 0): closing holds attaches up")
    ap.add_argument("--log-level", default="info",
                    help="sonde's log level; with debug, the launch breakdown is printed")
    a = ap.parse_args()
    run = [a.engine, "run", "-d", "--network", "host", "--label", "sonde.enable=true"]
    if a.engine == "podman":
        # This VM: crun refuses the hybrid cgroups; no CAP_SYS_RESOURCE for Podman's rlimits.
        run += ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    prom = free_port()
    env = dict(os.environ, SONDE_PROMETHEUS_PORT=str(prom), SONDE_METRICS_REPORT_TARGET="true",
               SONDE_LOG_LEVEL=a.log_level, SONDE_DOCKER="true")
    log = open(f"/tmp/sonde-start-latency-{a.engine}.log", "w")
    sonde = subprocess.Popen([a.sonde], env=env, stderr=log, stdout=subprocess.DEVNULL)
    names = []
    try:
        deadline = time.monotonic() + 60
        while not scrape(prom):
            if time.monotonic() > deadline:
                sys.exit("sonde did not serve metrics")
            time.sleep(0.1)
        time.sleep(2)  # both engines listed
        # One container first: the image's program is inspected once (see README).
        trials = [("warm", True)] + [(str(i), False) for i in range(a.trials)]
        took, accept, after, missed = [], [], [], 0
        for tag, warm in trials:
            if a.settle:
                deadline = time.monotonic() + 75
                while time.monotonic() < deadline and links(scrape(prom)) != 0:
                    time.sleep(0.05)
            port = free_port()
            name = f"sonde-start-{a.engine}-{os.getpid()}-{tag}"
            t0 = time.monotonic()
            subprocess.run(run + ["--name", name, a.image, "-addr", f"127.0.0.1:{port}"],
                           check=True, stdout=subprocess.DEVNULL)
            names.append(name)
            while not accepts(port):
                if time.monotonic() - t0 > 30:
                    sys.exit(f"{name}: port {port} never accepted")
                time.sleep(0.001)
            t_accept = time.monotonic()
            get(port, "/status/200")
            first = None
            while time.monotonic() - t0 < 10:
                if counted(scrape(prom), name, "/status/200"):
                    first = time.monotonic()
                    break
                time.sleep(0.005)
            subprocess.run([a.engine, "rm", "-f", name], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            names.remove(name)
            if warm:
                continue
            accept.append(1e3 * (t_accept - t0))
            if first is None:
                missed += 1
            else:
                took.append(1e3 * (first - t0))
                after.append(1e3 * (first - t_accept))
        print(f"{a.engine}: {len(took)}/{a.trials} first requests counted; "
              f"run → first request counted p50 {pctl(took, 50):.0f} ms, p99 {pctl(took, 99):.0f} ms; "
              f"run → port accepts p50 {pctl(accept, 50):.0f} ms, p99 {pctl(accept, 99):.0f} ms; "
              f"port accepts → counted (sonde's share, incl. the scrape poll) "
              f"p50 {pctl(after, 50):.0f} ms, p99 {pctl(after, 99):.0f} ms")
        lines = open(log.name).read().splitlines()
        before = sum("before its exec" in l and f'"sonde-start-{a.engine}-' in l for l in lines)
        paths = {}
        for l in lines:
            if "launch_path=" in l and f'"sonde-start-{a.engine}-' in l:
                p = l.split("launch_path=", 1)[1].split(",")[0].split(")")[0]
                paths[p] = paths.get(p, 0) + 1
        print(f"{a.engine}: {before} containers instrumented before their exec (sonde's log); "
              f"launch paths: {paths}")
        # Debug lines: "launch of pid N (Trigger): received R ms after, bundle+selection D, armed E"
        ours = {l.split("instrumented pid ", 1)[1].split(" ", 1)[0] for l in lines
                if "instrumented pid " in l and f'"sonde-start-{a.engine}-' in l}
        recv, sel, act = [], [], []
        for l in lines:
            pid = l.split("launch of pid ", 1)[1].split(" ", 1)[0] if "launch of pid " in l else None
            if pid in ours and "received" in l:
                try:
                    r = float(l.split("received ", 1)[1].split(" ms")[0])
                    rest = l.split("bundle+selection ", 1)[1]
                    d, e = rest.split(", ", 1)
                    recv.append(r)
                    sel.append(dur_ms(d))
                    act.append(dur_ms(e.split(" ", 1)[1]))
                except (IndexError, ValueError):
                    continue
        if recv:
            print(f"{a.engine}: launch breakdown over {len(recv)} launches (p50 / p99 ms): "
                  f"runtime's report → sonde {pctl(recv, 50):.1f} / {pctl(recv, 99):.1f}; "
                  f"container + bundle + selection {pctl(sel, 50):.1f} / {pctl(sel, 99):.1f}; "
                  f"enrol or attach {pctl(act, 50):.1f} / {pctl(act, 99):.1f}")
        return 0 if missed == 0 else 1
    finally:
        for n in names:
            subprocess.run([a.engine, "rm", "-f", n], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sonde.terminate()
        sonde.wait()


if __name__ == "__main__":
    sys.exit(main())
