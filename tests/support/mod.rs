//! Helpers for the integration tests: real processes, real sockets, cleaned up by PID.
#![allow(dead_code)]

pub mod prometheus;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// CI sets SONDE_REQUIRE_INTEGRATION=1: there, a test that cannot run fails instead of skipping.
fn required() -> bool {
    std::env::var("SONDE_REQUIRE_INTEGRATION").is_ok_and(|v| v == "1")
}

fn skip(test: &str, why: &str) -> bool {
    if required() {
        panic!("{test}: cannot run: {why} (SONDE_REQUIRE_INTEGRATION=1)");
    }
    eprintln!("SKIP {test}: {why}");
    false
}

/// A prerequisite is missing: skip, or fail under SONDE_REQUIRE_INTEGRATION=1.
pub fn skip_missing(test: &str, what: &str) -> bool {
    skip(
        test,
        &format!("{what} is not installed (scripts/setup.sh installs it)"),
    )
}

/// Whether this test can load BPF programs here; says why not when it cannot.
pub fn require_root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip(test, "needs root to load BPF programs");
    }
    if !Path::new("/sys/bus/event_source/devices/uprobe").exists() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        return skip(test, &format!("kernel {} has no uprobes", release.trim()));
    }
    true
}

#[derive(Debug, Clone)]
pub struct GoTarget {
    pub version: String,
    pub linkage: String,
    pub stripped: bool,
    pub path: PathBuf,
}

impl GoTarget {
    /// The file name, which is also the service name sonde gives it.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

/// Builds (once per test process) and lists every Go test server of the matrix.
pub fn go_targets() -> Vec<GoTarget> {
    static BUILT: OnceLock<Vec<GoTarget>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = repo().join("target/go-targets");
            let st = Command::new("bash")
                .arg(repo().join("scripts/build-go-targets.sh"))
                .arg(&out)
                .status()
                .expect("run scripts/build-go-targets.sh");
            assert!(st.success(), "scripts/build-go-targets.sh failed");
            let mut v: Vec<GoTarget> = std::fs::read_dir(&out)
                .unwrap()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let rest = name.strip_prefix("httpserver-")?;
                    let parts: Vec<&str> = rest.split('-').collect();
                    (parts.len() == 3).then(|| GoTarget {
                        version: parts[0].to_string(),
                        linkage: parts[1].to_string(),
                        stripped: parts[2] == "stripped",
                        path: e.path(),
                    })
                })
                .collect();
            v.sort_by(|a, b| a.path.cmp(&b.path));
            v
        })
        .clone()
}

/// The test server built without its TLS code (`-tags notls`), with the oldest and the
/// newest toolchain: what `go_source=auto` takes as plaintext HTTP/1.x only.
pub fn plaintext_go_servers() -> Vec<PathBuf> {
    let _ = go_targets();
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("target/go-targets"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("plainhttp-"))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// A child process killed (by its PID only) when the guard drops.
pub struct ChildGuard {
    pub child: Child,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    static USED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut used = USED.lock().unwrap();
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
}

/// Starts a Go test server on 127.0.0.1:port and waits until it listens.
pub fn spawn_go_server(path: &Path, port: u16, tls: bool) -> ChildGuard {
    spawn_go_server_with(path, port, if tls { &["-tls"] } else { &[] }, &[])
}

/// The test server with extra arguments and environment (e.g. `OTEL_SERVICE_NAME`); returns
/// once it prints that it listens.
pub fn spawn_go_server_with(
    path: &Path,
    port: u16,
    args: &[&str],
    env: &[(&str, &str)],
) -> ChildGuard {
    let mut cmd = Command::new(path);
    cmd.arg("-addr").arg(format!("127.0.0.1:{port}")).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("listening on"),
        "{}: {line}",
        path.display()
    );
    ChildGuard { child }
}

/// sonde running as a child, its stderr in a file the test can read.
pub struct SondeGuard {
    pub guard: ChildGuard,
    pub log_path: PathBuf,
}

impl SondeGuard {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Fails the test, with sonde's log, unless sonde says it instrumented `pid` in time.
    pub fn expect_instrumented(&self, pid: u32, timeout: Duration) {
        assert!(
            self.wait_for_log(&format!("instrumented pid {pid} "), timeout),
            "pid {pid} not instrumented within {timeout:?}:\n{}",
            self.log()
        );
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Stops sonde with SIGTERM and returns its exit code.
    pub fn stop(mut self) -> Option<i32> {
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(self.guard.pid() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(st)) = self.guard.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

pub fn sonde_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sonde")
}

/// Starts sonde with exactly these environment variables (plus PATH), stderr to a log file.
pub fn spawn_sonde(env: &[(&str, &str)]) -> SondeGuard {
    let dir = repo().join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join(format!(
        "sonde-{}-{}.log",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ (free_port() as u128)
    ));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new(sonde_bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SONDE_LOG_LEVEL", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sonde");
    SondeGuard {
        guard: ChildGuard { child },
        log_path,
    }
}

/// One HTTP/1.1 request on its own connection; returns (status, body length).
pub fn http(method: &str, url: &str, body_len: usize) -> (u16, usize) {
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = vec![b'b'; body_len];
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    parse_response(&resp).unwrap_or_else(|| panic!("bad response to {method} {url}"))
}

/// (status, body length) of a whole `Connection: close` response with Content-Length or
/// chunked body as Go writes them.
fn parse_response(resp: &[u8]) -> Option<(u16, usize)> {
    let text = String::from_utf8_lossy(resp);
    let head_end = text.find("\r\n\r\n")?;
    let status = text.get(9..12)?.parse().ok()?;
    Some((status, resp.len() - head_end - 4))
}

/// GET http://127.0.0.1:port/metrics.
pub fn scrape(port: u16) -> String {
    scrape_path(port, "/metrics")
}

pub fn scrape_path(port: u16, path: &str) -> String {
    let mut s = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(_) => return String::new(),
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    match resp.find("\r\n\r\n") {
        Some(i) => resp[i + 4..].to_string(),
        None => String::new(),
    }
}

type Labels = Vec<(String, String)>;

/// Parses one series line: (name, labels, value).
fn parse_series(line: &str) -> Option<(&str, Labels, f64)> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.find('{') {
        Some(i) => (&series[..i], &series[i + 1..series.len() - 1]),
        None => (series, ""),
    };
    let mut out = Vec::new();
    let mut rest = labels;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').to_string();
        let after = &rest[eq + 2..];
        let mut end = 0;
        let bytes = after.as_bytes();
        while end < bytes.len() && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\')) {
            end += 1;
        }
        out.push((key, after[..end].to_string()));
        rest = &after[(end + 1).min(after.len())..];
    }
    Some((name, out, value))
}

/// The value of the one series named `name` whose labels include all of `labels`; the sum
/// when several series match (e.g. a label left out on purpose).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some((n, ls, v)) = parse_series(line) else {
            continue;
        };
        if n != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, want)| ls.iter().any(|(lk, lv)| lk == k && lv == want))
        {
            total = Some(total.unwrap_or(0.0) + v);
        }
    }
    total
}

/// Polls /metrics until the series reaches `want` or the timeout passes.
pub fn wait_for_metric(
    port: u16,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    timeout: Duration,
) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if metric_value(&scrape(port), name, labels) == Some(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Whether a Docker engine answers; says why not when it does not.
pub fn require_docker_or_skip(test: &str) -> bool {
    if !require_root_or_skip(test) {
        return false;
    }
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return skip(
            test,
            "no Docker engine answers (scripts/dockerd.sh starts one)",
        );
    }
    true
}

/// Runs `docker` with these arguments; fails the test with its stderr unless it succeeds.
/// Returns its trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An image `FROM scratch` holding the newest static Go test server, built once.
pub fn test_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let dir = scratch_image_context("target/test-image", "Dockerfile");
            let tag = "sonde-test/httpserver:latest".to_string();
            docker(&["build", "-q", "-t", &tag, dir.to_str().unwrap()]);
            tag
        })
        .clone()
}

/// A build context for an image of the newest static Go test server, `FROM scratch`, under
/// `dir` (relative to the repository) with its build file named `file`: what the Docker and
/// Podman tests both run.
pub fn scratch_image_context(dir: &str, file: &str) -> PathBuf {
    let target = go_targets()
        .into_iter()
        .rfind(|t| t.linkage == "static" && !t.stripped)
        .expect("a static Go target");
    let dir = repo().join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&target.path, dir.join("httpserver")).unwrap();
    std::fs::write(
        dir.join(file),
        "FROM scratch\nCOPY httpserver /httpserver\nENTRYPOINT [\"/httpserver\"]\n",
    )
    .unwrap();
    dir
}

/// A container this test started, removed (by its id) when dropped.
pub struct Container {
    pub id: String,
    pub name: String,
}

impl Container {
    /// `docker run -d --network host` of the test image serving on 127.0.0.1:port.
    pub fn run(name: &str, port: u16, labels: &[(&str, &str)]) -> Container {
        let image = test_image();
        let mut args = vec![
            "run".to_string(),
            "-d".into(),
            "--network".into(),
            "host".into(),
        ];
        args.extend(["--name".to_string(), name.to_string()]);
        for (k, v) in labels {
            args.extend(["--label".to_string(), format!("{k}={v}")]);
        }
        args.extend([image, "-addr".into(), format!("127.0.0.1:{port}")]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = docker(&refs);
        Container {
            id,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        docker(&["inspect", "-f", "{{.State.Pid}}", &self.id])
            .parse()
            .unwrap()
    }

    pub fn restart(&self) {
        docker(&["restart", "-t", "1", &self.id]);
    }

    pub fn stop(&self) {
        docker(&["stop", "-t", "1", &self.id]);
    }

    pub fn start(&self) {
        docker(&["start", &self.id]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
    }
}

/// A unique container name for this test run.
pub fn container_name(what: &str) -> String {
    format!("sonde-test-{what}-{}", std::process::id())
}

/// Connects to 127.0.0.1:port the moment it accepts (trying every millisecond) and sends
/// `n` keep-alive GET requests on that first connection; returns their statuses.
pub fn first_requests(port: u16, path: &str, n: usize, timeout: Duration) -> Vec<u16> {
    let t = Instant::now();
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if t.elapsed() < timeout => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("nothing accepted on port {port} within {timeout:?}: {e}"),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut statuses = Vec::new();
    for _ in 0..n {
        write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        statuses.push(status);
    }
    statuses
}

/// Waits until something accepts on 127.0.0.1:port.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// A keep-alive HTTP/1.1 connection, as a load generator keeps them (and so a load loop does
/// not exhaust local ports); reads Content-Length and chunked responses, and can pipeline.
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    pub fn connect(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        KeepAlive {
            reader: BufReader::new(s),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.reader.get_mut().write_all(raw).unwrap();
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.reader.read_line(&mut l).unwrap();
        l
    }

    /// Reads one response; returns (status, body bytes).
    pub fn response(&mut self, head_request: bool) -> (u16, u64) {
        let status: u16 = self.line()[9..12].parse().unwrap();
        let (mut len, mut chunked) = (0u64, false);
        loop {
            let l = self.line();
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            } else if l == "\r\n" {
                break;
            }
        }
        if head_request {
            return (status, 0);
        }
        if !chunked {
            let mut body = vec![0; len as usize];
            self.reader.read_exact(&mut body).unwrap();
            return (status, len);
        }
        let mut total = 0;
        loop {
            let size = u64::from_str_radix(self.line().trim(), 16).unwrap();
            let mut chunk = vec![0; size as usize + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                return (status, total);
            }
            total += size;
        }
    }

    pub fn request(&mut self, method: &str, path: &str, body: usize) -> (u16, u64) {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {body}\r\n\r\n{}",
            "b".repeat(body)
        );
        self.send(req.as_bytes());
        self.response(method == "HEAD")
    }

    /// A GET without a body; returns the status.
    pub fn get(&mut self, path: &str) -> u16 {
        self.request("GET", path, 0).0
    }
}
