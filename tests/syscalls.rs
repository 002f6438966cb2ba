//! End to end, any language: real nginx, Python and Node.js servers (HTTP and HTTPS through
//! OpenSSL), sonde's syscall tracepoints and OpenSSL uprobes loaded into this kernel, real
//! requests on 127.0.0.1, exact metrics. A Go server selected by the same rule keeps its Go
//! probes and is counted once.
//!
//! Needs root, nginx, node, python3, openssl and curl (scripts/setup.sh installs them).
//! Without them a test says why and skips; with SONDE_REQUIRE_INTEGRATION=1 (CI) it fails.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Debian's nginx, by path: /usr/sbin may not be on a test's PATH.
const NGINX: &str = "/usr/sbin/nginx";

/// Generous: CI is a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(40);

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn prerequisites(test: &str, tools: &[&str]) -> bool {
    if !require_root_or_skip(test) {
        return false;
    }
    for t in tools {
        if !have(t) {
            return skip_missing(test, t);
        }
    }
    if !Path::new("/sys/kernel/tracing/events/syscalls").exists()
        && !Path::new("/sys/kernel/debug/tracing/events/syscalls").exists()
        && Path::new("/sys/kernel/tracing/events").exists()
    {
        return skip_missing(test, "syscall tracepoints (CONFIG_FTRACE_SYSCALLS)");
    }
    true
}

fn scratch_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sonde-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A self-signed certificate for 127.0.0.1, made now by `openssl`.
fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(st.success(), "openssl req failed");
    (cert, key)
}

/// Starts a program and waits until it listens on every port.
fn spawn_listening(cmd: &mut Command, ports: &[u16]) -> ChildGuard {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let guard = ChildGuard { child };
    for &p in ports {
        assert!(wait_for_port(p, WAIT), "{cmd:?} does not listen on {p}");
    }
    guard
}

/// The service name sonde gives a host process: its executable's file name.
fn service_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn wait_traced(sonde: &SondeGuard, pid: u32) {
    assert!(
        sonde.wait_for_log(&format!("tracing pid {pid} "), WAIT),
        "pid {pid} is not traced:\n{}",
        sonde.log()
    );
}

/// What the clients saw, per (method, status, route; the route is not checked for client
/// series): count, request and response body bytes.
#[derive(Default)]
struct Tally(BTreeMap<(String, u16, String), (u64, u64, u64)>);

impl Tally {
    fn add(&mut self, method: &str, status: u16, route: &str, req: u64, resp: u64) {
        let e = self
            .0
            .entry((method.to_string(), status, route.to_string()))
            .or_default();
        e.0 += 1;
        e.1 += req;
        e.2 += resp;
    }

    fn total(&self) -> u64 {
        self.0.values().map(|v| v.0).sum()
    }
}

/// Waits until the service's total count reaches the tally's, then checks every series.
fn assert_tally(prom: u16, side: &str, service: &str, extra: &[(&str, &str)], tally: &Tally) {
    let count = format!("http_{side}_request_duration_seconds_count");
    let mut base = vec![("service_name", service)];
    base.extend_from_slice(extra);
    let t = Instant::now();
    let mut text = String::new();
    while t.elapsed() < WAIT {
        text = scrape(prom);
        if metric_value(&text, &count, &base) == Some(tally.total() as f64) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metric_value(&text, &count, &base),
        Some(tally.total() as f64),
        "{service}: total {side} requests\n{text}"
    );
    for ((method, status, route), &(n, req, resp)) in &tally.0 {
        let status = status.to_string();
        let mut labels = base.clone();
        labels.extend([
            ("http_request_method", method.as_str()),
            ("http_response_status_code", status.as_str()),
        ]);
        // Client series have no route.
        if side == "server" {
            labels.push(("http_route", route.as_str()));
        }
        let get = |name: &str| metric_value(&text, &format!("http_{side}_{name}"), &labels);
        let what = format!("{service}: {side} {method} {status} {route}");
        assert_eq!(
            get("request_duration_seconds_count"),
            Some(n as f64),
            "{what}: count\n{text}"
        );
        assert_eq!(
            get("request_body_size_bytes_sum"),
            Some(req as f64),
            "{what}: request body bytes\n{text}"
        );
        assert_eq!(
            get("response_body_size_bytes_sum"),
            Some(resp as f64),
            "{what}: response body bytes\n{text}"
        );
    }
}

/// Requests made by `curl` on one connection (keep-alive), each `(method, url, body)`;
/// returns (status, body bytes) per request.
fn curl(requests: &[(&str, String, usize)]) -> Vec<(u16, u64)> {
    let mut cmd = Command::new("curl");
    for (i, (method, url, body)) in requests.iter().enumerate() {
        if i > 0 {
            cmd.arg("--next");
        }
        cmd.args([
            "-sk",
            "--http1.1",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
        ])
        .arg("%{http_code} %{size_download}\\n")
        .args(["-X", method]);
        if *body > 0 {
            cmd.args(["--data-binary", &"d".repeat(*body)]);
        }
        cmd.arg(url);
    }
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let got: Vec<(u16, u64)> = text
        .lines()
        .map(|l| {
            let (s, n) = l.split_once(' ').unwrap();
            (s.parse().unwrap(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(got.len(), requests.len(), "curl: {text}");
    got
}

fn nginx_conf(dir: &Path, http: u16, https: u16, cert: &Path, key: &Path) -> PathBuf {
    let www = dir.join("www/static");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("file.bin"), vec![b'f'; 5000]).unwrap();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n\
         access_log off;\nsendfile on;\nkeepalive_requests 1000;\n\
         client_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
         server {{\n  listen 127.0.0.1:{http};\n  listen 127.0.0.1:{https} ssl;\n\
         ssl_certificate {};\n  ssl_certificate_key {};\n  root {d}/www;\n\
         location = /ok {{ return 200 \"hello\\n\"; }}\n\
         location = /missing {{ return 404; }}\n}}\n}}\n",
        cert.display(),
        key.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

#[test]
fn nginx_http_and_https_keepalive_and_pipelining() {
    let test = "nginx_http_and_https_keepalive_and_pipelining";
    if !prerequisites(test, &[NGINX, "openssl", "curl"]) {
        return;
    }
    let dir = scratch_dir("nginx");
    let (cert, key) = make_cert(&dir);
    let (http, https, prom) = (free_port(), free_port(), free_port());
    let conf = nginx_conf(&dir, http, https, &cert, &key);
    let nginx = spawn_listening(
        Command::new(NGINX)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf),
        &[http, https],
    );
    let sonde = spawn_sonde(&[
        ("SONDE_OPEN_PORT", &format!("{http},{https}")),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ("SONDE_ROUTES_PATTERNS", "/ok,/missing,/static/{file}"),
    ]);
    // The master listens before it forks its worker: wait for the worker.
    let t = Instant::now();
    let mut workers = children_of(nginx.pid());
    while workers.is_empty() && t.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(50));
        workers = children_of(nginx.pid());
    }
    assert_eq!(workers.len(), 1, "one nginx worker");
    wait_traced(&sonde, nginx.pid());
    wait_traced(&sonde, workers[0]);
    let service = service_of(workers[0]);
    let mut tally = Tally::default();

    // Keep-alive: several requests on one connection, a sendfile'd body, HEAD.
    let mut c = KeepAlive::connect(http);
    for (method, path, route, body) in [
        ("GET", "/ok?x=1", "/ok", 0),
        ("GET", "/ok", "/ok", 0),
        ("GET", "/ok", "/ok", 0),
        ("POST", "/ok", "/ok", 100),
        ("GET", "/missing", "/missing", 0),
        ("GET", "/missing?q", "/missing", 0),
        ("GET", "/static/file.bin", "/static/{file}", 0),
        ("HEAD", "/static/file.bin", "/static/{file}", 0),
    ] {
        let (status, len) = c.request(method, path, body);
        tally.add(method, status, route, body as u64, len);
    }
    assert_eq!(
        tally.0[&("GET".into(), 200, "/static/{file}".into())].2,
        5000
    );
    // Pipelined: three requests in one write, then their three responses.
    let mut p = KeepAlive::connect(http);
    p.send(
        b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /missing HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /static/file.bin HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    for route in ["/ok", "/missing", "/static/{file}"] {
        let (status, len) = p.response(false);
        tally.add("GET", status, route, 0, len);
    }
    // HTTPS, keep-alive: plaintext from SSL_read/SSL_write, encrypted bytes not parsed.
    let base = format!("https://127.0.0.1:{https}");
    let reqs = [
        ("GET", format!("{base}/ok"), 0),
        ("GET", format!("{base}/ok"), 0),
        ("GET", format!("{base}/missing"), 0),
        ("GET", format!("{base}/static/file.bin"), 0),
        ("POST", format!("{base}/ok"), 10),
    ];
    for ((method, url, body), (status, len)) in reqs.iter().zip(curl(&reqs)) {
        let route = url
            .strip_prefix(&base)
            .unwrap()
            .replace("file.bin", "{file}");
        tally.add(method, status, &route, *body as u64, len);
    }
    drop(c);
    drop(p);
    assert_eq!(tally.total(), 16);
    assert_tally(prom, "server", &service, &[], &tally);
    // Nothing else was counted for nginx: no request from the TLS records themselves.
    std::thread::sleep(Duration::from_millis(500));
    let text = scrape(prom);
    assert_eq!(
        metric_value(
            &text,
            "http_server_request_duration_seconds_count",
            &[("service_name", &service)]
        ),
        Some(16.0),
        "{text}"
    );
    assert!(
        sonde.log().contains("OpenSSL"),
        "OpenSSL probes attached:\n{}",
        sonde.log()
    );
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

#[test]
fn python_http_server_and_a_go_server_counted_once() {
    let test = "python_http_server_and_a_go_server_counted_once";
    if !prerequisites(test, &["python3"]) {
        return;
    }
    let dir = scratch_dir("pyhttp");
    std::fs::write(dir.join("hello.txt"), vec![b'h'; 123]).unwrap();
    let (py, go, prom) = (free_port(), free_port(), free_port());
    let server = spawn_listening(
        Command::new(python())
            .args(["-m", "http.server", &py.to_string(), "--bind", "127.0.0.1"])
            .current_dir(&dir),
        &[py],
    );
    let target = go_targets()
        .into_iter()
        .find(|t| !t.stripped)
        .expect("a Go test server");
    let go_server = spawn_go_server(&target.path, go, false);
    let sonde = spawn_sonde(&[
        ("SONDE_OPEN_PORT", &format!("{py},{go}")),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ("SONDE_ROUTES_PATTERNS", "/hello.txt,/status/{code}"),
        // Only this test's processes: other labelled containers on the host would keep the
        // tracepoints attached.
        ("SONDE_DOCKER", "false"),
    ]);
    wait_traced(&sonde, server.pid());
    sonde.expect_instrumented(go_server.pid(), WAIT);
    let service = service_of(server.pid());
    let mut tally = Tally::default();
    for (method, path, route, body) in [
        ("GET", "/hello.txt", "/hello.txt", 0),
        ("GET", "/hello.txt?v=2", "/hello.txt", 0),
        ("GET", "/", "/**", 0),
        ("GET", "/nope", "/**", 0),
        ("HEAD", "/hello.txt", "/hello.txt", 0),
        ("POST", "/hello.txt", "/hello.txt", 20),
    ] {
        // Python answers HTTP/1.0 and closes: one connection each.
        let (status, len) = http(method, &format!("http://127.0.0.1:{py}{path}"), body);
        let len = if method == "HEAD" { 0 } else { len as u64 };
        tally.add(method, status, route, body as u64, len);
    }
    assert_eq!(tally.0[&("GET".into(), 200, "/hello.txt".into())].2, 246);
    let mut go_tally = Tally::default();
    for _ in 0..3 {
        let (status, len) = http(
            "GET",
            &format!("http://127.0.0.1:{go}/status/202?size=3"),
            0,
        );
        go_tally.add("GET", status, "/status/{code}", 0, len as u64);
    }
    assert_tally(prom, "server", &service, &[], &tally);
    assert_tally(prom, "server", &target.name(), &[], &go_tally);
    std::thread::sleep(Duration::from_millis(500));
    let text = scrape(prom);
    assert_eq!(
        metric_value(
            &text,
            "http_server_request_duration_seconds_count",
            &[("service_name", &target.name())]
        ),
        Some(3.0),
        "the Go server is counted once\n{text}"
    );
    assert!(
        !sonde
            .log()
            .contains(&format!("tracing pid {} ", go_server.pid())),
        "a Go process is never traced through syscalls:\n{}",
        sonde.log()
    );
    // The last traced process exits: the tracepoints, which slow every syscall on the host,
    // go away.
    drop(server);
    assert!(
        sonde.wait_for_log("syscall tracepoints detached", WAIT),
        "{}",
        sonde.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The series of one service that must not depend on the source: counts and body bytes.
fn source_independent_series(text: &str, service: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| {
            (l.starts_with("http_server_request_duration_seconds_count{")
                || l.starts_with("http_server_request_body_size_bytes_sum{")
                || l.starts_with("http_server_response_body_size_bytes_sum{"))
                && l.contains(&format!("service_name=\"{service}\""))
        })
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn go_source_syscalls_counts_a_go_server_exactly_as_uprobes_do() {
    let test = "go_source_syscalls_counts_a_go_server_exactly_as_uprobes_do";
    if !prerequisites(test, &[]) {
        return;
    }
    let target = go_targets()
        .into_iter()
        .find(|t| !t.stripped)
        .expect("a Go test server");
    let port = free_port();
    let server = spawn_go_server(&target.path, port, false);
    let requests: [(&str, &str, &str, usize); 9] = [
        ("GET", "/status/200?size=10", "/status/{code}", 0),
        ("GET", "/status/404?size=3", "/status/{code}", 0),
        // Under 2 KiB: Go sends it with a Content-Length.
        ("GET", "/status/200?size=2000", "/status/{code}", 0),
        // Chunked, the framing past the first 1 KiB of a write (the kernel copies no more):
        // one 3137-byte write, and 4096 + 1042 bytes.
        ("GET", "/status/200?size=3000", "/status/{code}", 0),
        ("GET", "/status/200?size=5000", "/status/{code}", 0),
        ("POST", "/echo", "/echo", 100),
        ("PUT", "/status/201", "/status/{code}", 7),
        ("GET", "/implicit", "/implicit", 0),
        ("GET", "/nope", "/**", 0),
    ];
    let mut seen = Vec::new();
    for source in ["uprobes", "syscalls"] {
        let prom = free_port();
        let sonde = spawn_sonde(&[
            ("SONDE_OPEN_PORT", &port.to_string()),
            ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
            ("SONDE_ROUTES_PATTERNS", "/status/{code},/echo,/implicit"),
            ("SONDE_DOCKER", "false"),
            ("SONDE_GO_SOURCE", source),
        ]);
        if source == "syscalls" {
            assert!(
                sonde.wait_for_log(
                    &format!(
                        "tracing pid {} ({}, Go, go_source=syscalls) through syscalls",
                        server.pid(),
                        target.path.display()
                    ),
                    WAIT
                ),
                "{}",
                sonde.log()
            );
        } else {
            sonde.expect_instrumented(server.pid(), WAIT);
        }
        let mut tally = Tally::default();
        // Keep-alive, opened once sonde measures the server, and one connection each.
        let mut conn = KeepAlive::connect(port);
        for (method, path, route, body) in requests {
            let (status, len) = conn.request(method, path, body);
            tally.add(method, status, route, body as u64, len);
            let (status, len) = KeepAlive::connect(port).request(method, path, body);
            tally.add(method, status, route, body as u64, len);
        }
        assert_eq!(tally.total(), 18);
        assert_tally(prom, "server", &target.name(), &[], &tally);
        // Nothing arrives late, nothing twice.
        std::thread::sleep(Duration::from_millis(500));
        let text = scrape(prom);
        assert_eq!(
            metric_value(
                &text,
                "http_server_request_duration_seconds_count",
                &[("service_name", &target.name())]
            ),
            Some(18.0),
            "{source}\n{text}"
        );
        let log = sonde.log();
        if source == "syscalls" {
            assert!(
                !log.contains(&format!("instrumented pid {} ", server.pid())),
                "a Go process measured through syscalls gets no uprobes:\n{log}"
            );
            assert_eq!(
                metric_value(&text, "sonde_uprobe_links", &[]),
                Some(0.0),
                "{text}"
            );
        } else {
            assert!(
                !log.contains(&format!("tracing pid {} ", server.pid())),
                "{log}"
            );
        }
        seen.push(source_independent_series(&text, &target.name()));
        drop(conn);
        sonde.stop();
    }
    assert!(!seen[0].is_empty());
    assert_eq!(seen[0], seen[1], "the same series whichever source");
}

#[test]
fn go_source_auto_takes_syscalls_for_plaintext_http1_and_uprobes_for_tls() {
    let test = "go_source_auto_takes_syscalls_for_plaintext_http1_and_uprobes_for_tls";
    if !prerequisites(test, &["curl"]) {
        return;
    }
    let plain = plaintext_go_servers();
    assert!(!plain.is_empty(), "no plaintext Go test server was built");
    let tls = go_targets()
        .into_iter()
        .find(|t| !t.stripped && t.linkage == "static")
        .expect("a Go test server");
    let (port, tls_port, prom) = (free_port(), free_port(), free_port());
    let plain_server = spawn_go_server(&plain[0], port, false);
    let tls_server = spawn_go_server(&tls.path, tls_port, true);
    let plain_name = plain[0].file_name().unwrap().to_string_lossy().into_owned();
    // The plaintext server by its file (which sonde would otherwise arm as a whole, with
    // uprobes for every process running it), the TLS one by its port.
    let plain_rule = format!("^{}$", plain[0].display().to_string().replace('.', "\\."));
    let sonde = spawn_sonde(&[
        ("SONDE_EXECUTABLE_NAME", &plain_rule),
        ("SONDE_OPEN_PORT", &tls_port.to_string()),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ("SONDE_ROUTES_PATTERNS", "/status/{code},/echo,/implicit"),
        ("SONDE_DOCKER", "false"),
        ("SONDE_GO_SOURCE", "auto"),
    ]);
    assert!(
        sonde.wait_for_log(
            &format!(
                "tracing pid {} ({}, Go, go_source=auto: plaintext HTTP/1.x only",
                plain_server.pid(),
                plain[0].display()
            ),
            WAIT
        ),
        "{}",
        sonde.log()
    );
    sonde.expect_instrumented(tls_server.pid(), WAIT);
    let log = sonde.log();
    assert!(
        log.lines().any(
            |l| l.contains(&format!("instrumented pid {} ", tls_server.pid()))
                && l.contains("(go_source=auto: can serve TLS")
        ),
        "{log}"
    );
    let requests: [(&str, &str, &str, usize); 5] = [
        ("GET", "/status/200?size=10", "/status/{code}", 0),
        ("GET", "/status/404?size=3", "/status/{code}", 0),
        ("POST", "/echo", "/echo", 100),
        ("GET", "/implicit", "/implicit", 0),
        ("GET", "/nope", "/**", 0),
    ];
    let mut tally = Tally::default();
    let mut conn = KeepAlive::connect(port);
    for (method, path, route, body) in requests {
        let (status, len) = conn.request(method, path, body);
        tally.add(method, status, route, body as u64, len);
        let (status, len) = KeepAlive::connect(port).request(method, path, body);
        tally.add(method, status, route, body as u64, len);
    }
    assert_tally(prom, "server", &plain_name, &[], &tally);
    let mut tls_tally = Tally::default();
    let base = format!("https://127.0.0.1:{tls_port}");
    let tls_requests: Vec<(&str, String, usize)> = requests
        .iter()
        .map(|(m, p, _, b)| (*m, format!("{base}{p}"), *b))
        .collect();
    for ((method, _, route, body), (status, len)) in requests.iter().zip(curl(&tls_requests)) {
        tls_tally.add(method, status, route, *body as u64, len);
    }
    assert_eq!(tls_tally.total(), 5);
    assert_tally(prom, "server", &tls.name(), &[], &tls_tally);
    // Nothing arrives late, nothing twice, each process by one source only.
    std::thread::sleep(Duration::from_millis(500));
    let text = scrape(prom);
    for (svc, n) in [(&plain_name, 10.0), (&tls.name(), 5.0)] {
        assert_eq!(
            metric_value(
                &text,
                "http_server_request_duration_seconds_count",
                &[("service_name", svc)]
            ),
            Some(n),
            "{svc}\n{text}"
        );
    }
    let log = sonde.log();
    assert!(
        !log.contains(&format!("instrumented pid {} ", plain_server.pid())),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "not arming {}: measured through syscalls (go_source=auto: plaintext",
            plain[0].display()
        )),
        "{log}"
    );
    assert!(
        !log.contains(&format!("tracing pid {} ", tls_server.pid())),
        "{log}"
    );
    drop(conn);
    sonde.stop();
}

#[test]
fn python_ssl_server_is_measured_in_plaintext() {
    let test = "python_ssl_server_is_measured_in_plaintext";
    if !prerequisites(test, &["python3", "openssl", "curl"]) {
        return;
    }
    let dir = scratch_dir("pyssl");
    let (cert, key) = make_cert(&dir);
    let (port, prom) = (free_port(), free_port());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/syscalls/tls_server.py");
    let server = spawn_listening(
        Command::new(python())
            .arg(&script)
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key),
        &[port],
    );
    let sonde = spawn_sonde(&[
        ("SONDE_OPEN_PORT", &port.to_string()),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ("SONDE_ROUTES_PATTERNS", "/status/{code},/upload"),
    ]);
    wait_traced(&sonde, server.pid());
    assert!(sonde.log().contains("OpenSSL"), "{}", sonde.log());
    let service = service_of(server.pid());
    let base = format!("https://127.0.0.1:{port}");
    let reqs = [
        ("GET", format!("{base}/status/200"), 0),
        ("GET", format!("{base}/status/200?x=y"), 0),
        ("GET", format!("{base}/status/404"), 0),
        ("POST", format!("{base}/upload"), 10),
    ];
    let mut tally = Tally::default();
    for ((method, url, body), (status, len)) in reqs.iter().zip(curl(&reqs)) {
        let route = if url.contains("/status/") {
            "/status/{code}"
        } else {
            "/upload"
        };
        tally.add(method, status, route, *body as u64, len);
    }
    // A second connection, then one more request on its own.
    for ((method, _, body), (status, len)) in reqs[..1].iter().zip(curl(&reqs[..1])) {
        tally.add(method, status, "/status/{code}", *body as u64, len);
    }
    assert_eq!(tally.0[&("GET".into(), 200, "/status/{code}".into())].0, 3);
    assert_tally(prom, "server", &service, &[], &tally);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `program tests/syscalls/SCRIPT PORT TLS_PORT CERT KEY`, once both ports listen.
fn spawn_http_and_https(
    program: &str,
    script: &str,
    port: u16,
    tls_port: u16,
    cert: &Path,
    key: &Path,
) -> ChildGuard {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/syscalls")
        .join(script);
    spawn_listening(
        Command::new(program)
            .arg(&script)
            .arg(port.to_string())
            .arg(tls_port.to_string())
            .arg(cert)
            .arg(key),
        &[port, tls_port],
    )
}

/// sonde selecting the process that listens on `port` and `tls_port`.
fn spawn_sonde_on_both(port: u16, tls_port: u16, prom: u16, routes: &str) -> SondeGuard {
    spawn_sonde(&[
        ("SONDE_OPEN_PORT", &format!("{port},{tls_port}")),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ("SONDE_ROUTES_PATTERNS", routes),
    ])
}

/// Open fds of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Waits until the server holds only `idle` fds again: it has closed the last connection
/// (and, in membio_server.py, freed its SSL object).
fn wait_fds(pid: u32, idle: usize) {
    let t = Instant::now();
    while fd_count(pid) != idle && t.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fd_count(pid), idle, "pid {pid} keeps a connection open");
}

/// OpenSSL over memory BIOs hands a new connection's SSL object the address of a freed one,
/// and the kernel hands its old fd to the next connection: an SSL-object-to-fd mapping
/// that outlives its connection marks a plain connection as TLS, and its requests vanish
/// (the Node.js test lost its /call requests this way, now and then).
#[test]
fn reused_ssl_object_and_fd_keep_connections_apart() {
    let test = "reused_ssl_object_and_fd_keep_connections_apart";
    if !prerequisites(test, &["python3", "openssl", "curl"]) {
        return;
    }
    let dir = scratch_dir("membio");
    let (cert, key) = make_cert(&dir);
    let (port, tls_port, prom) = (free_port(), free_port(), free_port());
    let server = spawn_http_and_https(python(), "membio_server.py", port, tls_port, &cert, &key);
    let sonde = spawn_sonde_on_both(port, tls_port, prom, "/tls/{n},/plain/{n}");
    wait_traced(&sonde, server.pid());
    let service = service_of(server.pid());
    let pid = server.pid();
    let idle = fd_count(pid);
    let mut tally = Tally::default();
    let https = |n: u32| {
        let url = format!("https://127.0.0.1:{tls_port}/tls/{n}");
        curl(&[("GET", url, 0)])[0]
    };
    for round in 0..3 {
        let (status, len) = https(round);
        tally.add("GET", status, "/tls/{n}", 0, len);
        wait_fds(pid, idle);
        // Takes the fd the HTTPS connection had.
        let mut plain = KeepAlive::connect(port);
        let (status, len) = plain.request("GET", &format!("/plain/{round}"), 0);
        tally.add("GET", status, "/plain/{n}", 0, len);
        // A new SSL object, at the freed one's address more often than not.
        let (status, len) = https(round);
        tally.add("GET", status, "/tls/{n}", 0, len);
        let (status, len) = plain.request("GET", &format!("/plain/{round}"), 0);
        tally.add("GET", status, "/plain/{n}", 0, len);
        drop(plain);
        wait_fds(pid, idle);
    }
    assert_eq!(tally.total(), 12);
    assert_eq!(
        tally.0[&("GET".into(), 200, "/plain/{n}".into())],
        (6, 0, 12)
    );
    assert_tally(prom, "server", &service, &[], &tally);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn node_http_server_and_client() {
    let test = "node_http_server_and_client";
    if !prerequisites(test, &["node", "openssl", "curl"]) {
        return;
    }
    let dir = scratch_dir("node");
    let (cert, key) = make_cert(&dir);
    let (port, tls_port, prom) = (free_port(), free_port(), free_port());
    let server = spawn_http_and_https("node", "node_http.js", port, tls_port, &cert, &key);
    let sonde = spawn_sonde_on_both(port, tls_port, prom, "/call,/status/{code}");
    wait_traced(&sonde, server.pid());
    let service = service_of(server.pid());
    let mut server_tally = Tally::default();
    let mut client_tally = Tally::default();
    // Each /call makes one outgoing call to /status/<code> on the same server, on one
    // keep-alive client connection.
    for (method, code, size) in [("GET", 201, 0), ("GET", 201, 0), ("POST", 503, 11)] {
        let url =
            format!("http://127.0.0.1:{port}/call?to=/status/{code}&method={method}&size={size}");
        let (status, len) = http("GET", &url, 0);
        assert_eq!(status, code);
        server_tally.add("GET", status, "/call", 0, len as u64);
        server_tally.add(method, code, "/status/{code}", size as u64, 5);
        client_tally.add(method, code, "/status/{code}", size as u64, 5);
    }
    // Keep-alive into the server itself, chunked responses.
    let mut c = KeepAlive::connect(port);
    for (method, path, route) in [
        ("GET", "/status/200", "/status/{code}"),
        ("PUT", "/status/202", "/status/{code}"),
        ("DELETE", "/other", "/**"),
    ] {
        let (status, len) = c.request(method, path, 0);
        server_tally.add(method, status, route, 0, len);
    }
    drop(c);
    // HTTPS: OpenSSL runs over memory BIOs in Node.js (no syscall inside SSL_read); its
    // symbols are in whichever file has them (the node binary when linked in statically).
    let base = format!("https://127.0.0.1:{tls_port}");
    let reqs = [
        ("GET", format!("{base}/status/200"), 0),
        ("GET", format!("{base}/status/200"), 0),
        ("POST", format!("{base}/status/201"), 9),
    ];
    for ((method, url, body), (status, len)) in reqs.iter().zip(curl(&reqs)) {
        assert!(url.contains("/status/"));
        server_tally.add(method, status, "/status/{code}", *body as u64, len);
    }
    // An HTTPS client call (OpenSSL over memory BIOs again) to the HTTPS port.
    let mut tls_client_tally = Tally::default();
    for _ in 0..2 {
        let url = format!("http://127.0.0.1:{port}/call?to=/status/206&tls=1");
        let (status, len) = http("GET", &url, 0);
        assert_eq!(status, 206);
        server_tally.add("GET", 206, "/call", 0, len as u64);
        server_tally.add("GET", 206, "/status/{code}", 0, 5);
        tls_client_tally.add("GET", 206, "/status/{code}", 0, 5);
    }
    assert_eq!(server_tally.total(), 16);
    assert_tally(prom, "server", &service, &[], &server_tally);
    let port_s = port.to_string();
    assert_tally(
        prom,
        "client",
        &service,
        &[("server_address", "127.0.0.1"), ("server_port", &port_s)],
        &client_tally,
    );
    let tls_port_s = tls_port.to_string();
    assert_tally(
        prom,
        "client",
        &service,
        &[
            ("server_address", "127.0.0.1"),
            ("server_port", &tls_port_s),
        ],
        &tls_client_tally,
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Node.js service whose keep-alive HTTPS connections (client and server side) opened
/// before sonde: their plaintext has no known socket, and must not be pinned on the new plain
/// connection the thread reads or writes next (that connection's requests would vanish).
#[test]
fn tls_connections_older_than_sonde_do_not_capture_new_ones() {
    let test = "tls_connections_older_than_sonde_do_not_capture_new_ones";
    if !prerequisites(test, &["node", "openssl"]) {
        return;
    }
    let dir = scratch_dir("node-old-tls");
    let (cert, key) = make_cert(&dir);
    let (port, tls_port, prom) = (free_port(), free_port(), free_port());
    let server = spawn_http_and_https("node", "node_http.js", port, tls_port, &cert, &key);
    let call = format!("http://127.0.0.1:{port}/call?to=/status/206&tls=1");
    // Opens the keep-alive HTTPS connection (both of its ends are in this process).
    assert_eq!(http("GET", &call, 0).0, 206);
    let sonde = spawn_sonde_on_both(port, tls_port, prom, "/call,/status/{code}");
    wait_traced(&sonde, server.pid());
    let service = service_of(server.pid());
    let mut tally = Tally::default();
    for _ in 0..3 {
        // A new plain connection each time; the call inside reuses the old HTTPS one.
        let (status, len) = http("GET", &call, 0);
        assert_eq!(status, 206);
        tally.add("GET", 206, "/call", 0, len as u64);
        let mut plain = KeepAlive::connect(port);
        let (status, len) = plain.request("GET", "/status/200", 0);
        tally.add("GET", status, "/status/{code}", 0, len);
    }
    // The old connection's requests are not seen (see the README's limits): only these.
    assert_tally(prom, "server", &service, &[], &tally);
    let text = scrape(prom);
    assert!(
        !text.contains("http_response_status_code=\"206\",http_route=\"/status/{code}\""),
        "a request of the old HTTPS connection was counted:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sonde_check_names_the_syscall_source() {
    if !require_root_or_skip("sonde_check_names_the_syscall_source") {
        return;
    }
    let out = Command::new(sonde_bin()).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("syscall source"))
        .unwrap_or_else(|| panic!("no syscall source line:\n{text}"));
    assert!(line.contains("tracepoints"), "{line}");
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        assert!(
            line.contains("kprobes: absent (CONFIG_KPROBES off)"),
            "{line}"
        );
    }
    assert!(
        text.contains("syscall + OpenSSL tracer (non-Go processes): available"),
        "{text}"
    );
}

/// A container removed (by name) when dropped, and its image (by tag).
struct NginxContainer {
    name: String,
    image: String,
}

impl Drop for NginxContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// An image holding only the host's nginx, the libraries `ldd` names (its own libssl among
/// them), a configuration and a certificate: `docker import` of that tree.
fn nginx_image(dir: &Path, tag: &str, http: u16, https: u16) {
    let root = dir.join("rootfs");
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let ldd = Command::new("ldd").arg(NGINX).output().unwrap();
    let mut files = vec![PathBuf::from(NGINX)];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(p) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in files {
        let to = root.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
    }
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/:/none\n").unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\n").unwrap();
    make_cert(&etc);
    let conf = nginx_conf(
        &root.join("tmp"),
        http,
        https,
        Path::new("/etc/cert.pem"),
        Path::new("/etc/key.pem"),
    );
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace(&root.join("tmp").display().to_string(), "/tmp");
    std::fs::write(etc.join("nginx.conf"), text).unwrap();
    let tar = dir.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar");
    docker(&[
        "import",
        "--change",
        r#"ENTRYPOINT ["/usr/sbin/nginx", "-e", "/tmp/error.log", "-p", "/tmp", "-c", "/etc/nginx.conf"]"#,
        tar.to_str().unwrap(),
        tag,
    ]);
}

#[test]
fn labelled_nginx_container_is_traced_with_its_own_libssl() {
    let test = "labelled_nginx_container_is_traced_with_its_own_libssl";
    if !require_docker_or_skip(test) || !prerequisites(test, &[NGINX, "openssl", "curl", "ldd"]) {
        return;
    }
    let dir = scratch_dir("nginx-image");
    let (http, https, prom) = (free_port(), free_port(), free_port());
    let id = std::process::id();
    let c = NginxContainer {
        name: format!("sonde-test-nginx-{id}"),
        image: format!("sonde-test/nginx-{id}:latest"),
    };
    nginx_image(&dir, &c.image, http, https);
    docker(&[
        "run",
        "-d",
        "--network",
        "host",
        "--name",
        &c.name,
        "--label",
        "sonde.enable=true",
        &c.image,
    ]);
    for p in [http, https] {
        assert!(wait_for_port(p, WAIT), "nginx container on {p}");
    }
    let master: u32 = docker(&["inspect", "-f", "{{.State.Pid}}", &c.name])
        .parse()
        .unwrap();
    let t = Instant::now();
    let mut workers = children_of(master);
    while workers.is_empty() && t.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(50));
        workers = children_of(master);
    }
    assert_eq!(workers.len(), 1, "one nginx worker");
    // Selected by its label only: no port or executable rule.
    let sonde = spawn_sonde(&[
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ("SONDE_ROUTES_PATTERNS", "/ok,/missing"),
    ]);
    wait_traced(&sonde, workers[0]);
    assert!(
        sonde.log().contains(&format!(
            "OpenSSL /proc/{}/root/lib/x86_64-linux-gnu/libssl.so",
            workers[0]
        )) || sonde.log().contains(&format!(
            "OpenSSL /proc/{}/root/usr/lib/x86_64-linux-gnu/libssl.so",
            workers[0]
        )),
        "the container's own libssl is probed:\n{}",
        sonde.log()
    );
    let mut tally = Tally::default();
    let base = format!("https://127.0.0.1:{https}");
    let reqs = [
        ("GET", format!("{base}/ok"), 0),
        ("GET", format!("{base}/ok"), 0),
        ("GET", format!("{base}/missing"), 0),
        ("GET", format!("http://127.0.0.1:{http}/ok"), 0),
    ];
    for ((method, url, body), (status, len)) in reqs.iter().zip(curl(&reqs)) {
        let route = if url.ends_with("/ok") {
            "/ok"
        } else {
            "/missing"
        };
        tally.add(method, status, route, *body as u64, len);
    }
    assert_tally(
        prom,
        "server",
        &c.name,
        &[("container_name", &c.name)],
        &tally,
    );
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
