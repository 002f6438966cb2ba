//! gRPC (grpc-go) end to end: real BPF programs, real Go gRPC servers built from Debian's
//! golang-google-grpc-dev with every toolchain here, plain and stripped, calling themselves.
//! Needs root; skips (or fails under SONDE_REQUIRE_INTEGRATION=1) when something is missing.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use support::{
    free_port, metric_value, require_root_or_skip, scrape, skip_missing, spawn_sonde,
    wait_for_metric, ChildGuard, SondeGuard,
};

const UNARY: &str = "/sonde.test.Echo/Unary";
const STREAM: &str = "/sonde.test.Echo/Stream";
const MISSING: &str = "/sonde.test.Echo/Missing";

/// What tests/go/grpcserver's script does, and so what both sides must report:
/// (method, status name, status code, calls).
const CALLS: &[(&str, &str, u16, f64)] = &[
    (UNARY, "OK", 0, 3.0),
    (UNARY, "NOT_FOUND", 5, 2.0),
    (UNARY, "PERMISSION_DENIED", 7, 1.0),
    (STREAM, "OK", 0, 2.0),
    (STREAM, "NOT_FOUND", 5, 1.0),
    (MISSING, "UNIMPLEMENTED", 12, 1.0),
];

#[derive(Debug, Clone)]
struct GrpcTarget {
    version: String,
    stripped: bool,
    path: PathBuf,
}

impl GrpcTarget {
    fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds (once per test process) and lists the gRPC targets; empty when grpc-go is not
/// installed.
fn grpc_targets() -> Vec<GrpcTarget> {
    static BUILT: OnceLock<Vec<GrpcTarget>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !Path::new("/usr/share/gocode/src/google.golang.org/grpc").exists() {
                return Vec::new();
            }
            let out = repo().join("target/go-targets");
            let st = Command::new("bash")
                .arg(repo().join("scripts/build-grpc-targets.sh"))
                .arg(&out)
                .status()
                .expect("run scripts/build-grpc-targets.sh");
            assert!(st.success(), "scripts/build-grpc-targets.sh failed");
            let mut v: Vec<GrpcTarget> = std::fs::read_dir(&out)
                .unwrap()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let rest = name.strip_prefix("grpcserver-")?;
                    let parts: Vec<&str> = rest.split('-').collect();
                    (parts.len() == 3 && !name.ends_with(".tmp")).then(|| GrpcTarget {
                        version: parts[0].to_string(),
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

fn targets_or_skip(test: &str) -> Option<Vec<GrpcTarget>> {
    let t = grpc_targets();
    if t.is_empty() {
        skip_missing(test, "golang-google-grpc-dev");
        return None;
    }
    Some(t)
}

/// A running gRPC target: its port, and everything it printed after starting.
struct Server {
    guard: ChildGuard,
    port: u16,
    out: Arc<Mutex<String>>,
}

impl Server {
    fn start(path: &Path, closed: u16, http: Option<u16>) -> Server {
        let port = free_port();
        let mut cmd = Command::new(path);
        cmd.arg("-port")
            .arg(port.to_string())
            .arg("-closed")
            .arg(closed.to_string());
        if let Some(h) = http {
            cmd.arg("-http").arg(h.to_string());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        let mut lines = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        lines.read_line(&mut first).unwrap();
        assert!(
            first.starts_with("listening on"),
            "{}: {first}",
            path.display()
        );
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Server {
            guard: ChildGuard { child },
            port,
            out,
        }
    }

    fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Starts the client script (SIGUSR1).
    fn run_script(&self) {
        // SAFETY: signalling our own child by PID.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, libc::SIGUSR1) }, 0);
    }

    fn wait_script_done(&self, timeout: Duration) -> String {
        let t = Instant::now();
        while t.elapsed() < timeout {
            let out = self.out.lock().unwrap().clone();
            if out.contains("script done") {
                return out;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "pid {}: the client script did not finish: {}",
            self.pid(),
            self.out.lock().unwrap()
        );
    }
}

fn wait_instrumented(sonde: &SondeGuard, pids: &[u32]) {
    for pid in pids {
        sonde.expect_instrumented(*pid, Duration::from_secs(60));
    }
}

/// Polls until the series reaches `want` (the kernel's events are drained on a timer), then
/// returns the scrape.
fn wait_value(prom: u16, name: &str, labels: &[(&str, &str)], want: f64) -> String {
    let ok = wait_for_metric(prom, name, labels, want, Duration::from_secs(30));
    let text = scrape(prom);
    assert!(
        ok,
        "{name}{labels:?}: want {want}, got {:?}\n{text}",
        metric_value(&text, name, labels)
    );
    text
}

/// Every call of the script, on both sides, with exact counts and nothing else.
fn assert_semconv(prom: u16, service: &str, port: u16, closed: u16) {
    let port_s = port.to_string();
    // The last call the script makes, so everything before it is in once this is.
    let text = wait_value(
        prom,
        "rpc_client_call_duration_seconds_count",
        &[
            ("service_name", service),
            ("rpc_response_status_code", "UNAVAILABLE"),
            ("server_port", &closed.to_string()),
        ],
        1.0,
    );
    let closed_s = closed.to_string();
    let unavailable = [
        ("service_name", service),
        ("rpc_method", UNARY),
        ("rpc_system_name", "grpc"),
        ("rpc_response_status_code", "UNAVAILABLE"),
        ("server_address", "127.0.0.1"),
        ("server_port", closed_s.as_str()),
    ];
    assert_eq!(
        metric_value(
            &text,
            "rpc_client_call_duration_seconds_count",
            &unavailable
        ),
        Some(1.0),
        "{service}"
    );
    let mut server_total = 0.0;
    for &(method, status, _, n) in CALLS {
        let server = [
            ("service_name", service),
            ("rpc_method", method),
            ("rpc_system_name", "grpc"),
            ("rpc_response_status_code", status),
        ];
        let text = wait_value(prom, "rpc_server_call_duration_seconds_count", &server, n);
        assert_eq!(
            metric_value(
                &text,
                "rpc_server_call_duration_seconds_bucket",
                &[&server[..], &[("le", "+Inf")]].concat()
            ),
            Some(n),
            "{service} {method} {status}"
        );
        let client = [
            &server[..],
            &[("server_address", "127.0.0.1"), ("server_port", &port_s)],
        ]
        .concat();
        assert_eq!(
            metric_value(&text, "rpc_client_call_duration_seconds_count", &client),
            Some(n),
            "{service} client {method} {status}\n{text}"
        );
        server_total += n;
    }
    let text = scrape(prom);
    let svc = [("service_name", service)];
    assert_eq!(
        metric_value(&text, "rpc_server_call_duration_seconds_count", &svc),
        Some(server_total),
        "{service}: server calls beyond the script\n{text}"
    );
    assert_eq!(
        metric_value(&text, "rpc_client_call_duration_seconds_count", &svc),
        Some(server_total + 1.0),
        "{service}: client calls beyond the script\n{text}"
    );
    // grpc-go has its own HTTP/2 transport: no call is also an HTTP request.
    for name in [
        "http_server_request_duration_seconds_count",
        "http_client_request_duration_seconds_count",
    ] {
        assert_eq!(
            metric_value(&text, name, &svc),
            None,
            "{service} shows up as HTTP\n{text}"
        );
    }
}

#[test]
fn grpc_matrix_exact_metrics() {
    const TEST: &str = "grpc_matrix_exact_metrics";
    if !require_root_or_skip(TEST) {
        return;
    }
    let Some(targets) = targets_or_skip(TEST) else {
        return;
    };
    let versions: std::collections::BTreeSet<&str> =
        targets.iter().map(|t| t.version.as_str()).collect();
    eprintln!("gRPC targets: {} builds, Go {versions:?}", targets.len());
    assert!(targets.iter().any(|t| t.stripped));
    assert!(targets.iter().any(|t| !t.stripped));
    let closed = free_port();
    let servers: Vec<(GrpcTarget, Server)> = targets
        .iter()
        .map(|t| (t.clone(), Server::start(&t.path, closed, None)))
        .collect();
    let ports: Vec<String> = servers.iter().map(|(_, s)| s.port.to_string()).collect();
    let prom = free_port();
    let sonde = spawn_sonde(&[
        ("SONDE_OPEN_PORT", &ports.join(",")),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
    ]);
    let pids: Vec<u32> = servers.iter().map(|(_, s)| s.pid()).collect();
    wait_instrumented(&sonde, &pids);
    for (t, s) in &servers {
        assert!(
            sonde
                .log()
                .lines()
                .any(|l| l.contains(&format!("instrumented pid {} ", s.pid()))
                    && l.contains("grpc-go 1.")),
            "{}: gRPC not instrumented:\n{}",
            t.name(),
            sonde.log()
        );
        s.run_script();
    }
    for (t, s) in &servers {
        let out = s.wait_script_done(Duration::from_secs(60));
        assert!(out.contains("closed: Unavailable"), "{}: {out}", t.name());
    }
    for (t, s) in &servers {
        assert_semconv(prom, &t.name(), s.port, closed);
    }
    assert_eq!(
        metric_value(&scrape(prom), "sonde_events_lost_total", &[]),
        Some(0.0)
    );
}

fn newest(stripped: bool) -> GrpcTarget {
    grpc_targets()
        .into_iter()
        .rfind(|t| t.stripped == stripped)
        .expect("a gRPC target")
}

#[test]
fn grpc_beyla_v1_naming() {
    const TEST: &str = "grpc_beyla_v1_naming";
    if !require_root_or_skip(TEST) || targets_or_skip(TEST).is_none() {
        return;
    }
    let t = newest(true);
    let closed = free_port();
    let s = Server::start(&t.path, closed, None);
    let prom = free_port();
    let sonde = spawn_sonde(&[
        ("SONDE_OPEN_PORT", &s.port.to_string()),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ("BEYLA_METRICS_NAMING", "beyla-v1"),
    ]);
    wait_instrumented(&sonde, &[s.pid()]);
    s.run_script();
    s.wait_script_done(Duration::from_secs(60));
    let service = t.name();
    let port = s.port.to_string();
    for &(method, _, code, n) in CALLS {
        let code = code.to_string();
        let server = [
            ("service_name", service.as_str()),
            ("rpc_method", method),
            ("rpc_system", "grpc"),
            ("rpc_grpc_status_code", code.as_str()),
        ];
        wait_value(prom, "rpc_server_duration_seconds_count", &server, n);
        let client = [
            &server[..],
            &[("server_address", "127.0.0.1"), ("server_port", &port)],
        ]
        .concat();
        let text = wait_value(prom, "rpc_client_duration_seconds_count", &client, n);
        assert!(
            !text.contains("rpc_server_call_duration_seconds"),
            "semconv names under beyla-v1"
        );
    }
    let closed = closed.to_string();
    wait_value(
        prom,
        "rpc_client_duration_seconds_count",
        &[
            ("service_name", service.as_str()),
            ("rpc_grpc_status_code", "14"),
            ("server_port", &closed),
        ],
        1.0,
    );
}

/// go_source=auto: a gRPC server speaks HTTP/2, which only its uprobes see; every call is
/// still counted exactly.
#[test]
fn go_source_auto_keeps_uprobes_for_grpc() {
    const TEST: &str = "go_source_auto_keeps_uprobes_for_grpc";
    if !require_root_or_skip(TEST) || targets_or_skip(TEST).is_none() {
        return;
    }
    let t = newest(false);
    let closed = free_port();
    let s = Server::start(&t.path, closed, None);
    let prom = free_port();
    let sonde = spawn_sonde(&[
        ("SONDE_OPEN_PORT", &s.port.to_string()),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ("SONDE_DOCKER", "false"),
        ("SONDE_GO_SOURCE", "auto"),
    ]);
    wait_instrumented(&sonde, &[s.pid()]);
    let log = sonde.log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("instrumented pid {} ", s.pid()))
                && l.contains("(go_source=auto: grpc-go linked in")),
        "{log}"
    );
    s.run_script();
    s.wait_script_done(Duration::from_secs(60));
    assert_semconv(prom, &t.name(), s.port, closed);
    assert!(
        !sonde.log().contains(&format!("tracing pid {} ", s.pid())),
        "{}",
        sonde.log()
    );
}

/// An unknown grpc-go layout in a stripped binary (not in its type metadata, no DWARF, no
/// table row): gRPC is skipped with one log line, the HTTP probes of the same process still
/// count.
#[test]
fn unknown_grpc_layout_is_skipped_and_http_still_works() {
    const TEST: &str = "unknown_grpc_layout_is_skipped_and_http_still_works";
    if !require_root_or_skip(TEST) || targets_or_skip(TEST).is_none() {
        return;
    }
    let t = newest(true);
    let mut data = std::fs::read(&t.path).unwrap();
    let from = b"grpc-go/1.";
    let mut patched = 0;
    let mut i = 0;
    while let Some(at) = data[i..].windows(from.len()).position(|w| w == from) {
        let at = i + at + from.len();
        // The minor version's two digits become 99: a grpc-go no table row names.
        if data[at].is_ascii_digit() && data[at + 1].is_ascii_digit() {
            data[at] = b'9';
            data[at + 1] = b'9';
            patched += 1;
        }
        i = at;
    }
    assert!(patched > 0, "no grpc-go user agent in {}", t.path.display());
    // And the runtime type metadata must not describe the layout either: rename the type
    // descriptor of transport.Stream (a length-prefixed name, "*transport.Stream" or
    // "transport.Stream") so no struct of that name is found. Only reflection reads it.
    let mut renamed = 0;
    for from in [&b"\x11*transport.Stream"[..], &b"\x10transport.Stream"[..]] {
        let mut i = 0;
        while let Some(at) = data[i..].windows(from.len()).position(|w| w == from) {
            let end = i + at + from.len();
            data[end - 1] = b'n';
            renamed += 1;
            i = end;
        }
    }
    assert!(
        renamed > 0,
        "no transport.Stream type name in {}",
        t.path.display()
    );
    let dir = repo().join("target/test-bins");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("grpc-unknown-{}", std::process::id()));
    std::fs::write(&path, &data).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();

    let inspect = Command::new(support::sonde_bin())
        .arg("inspect")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(inspect.status.success(), "{text}");
    assert!(text.contains("net/http.serverHandler.ServeHTTP"), "{text}");
    assert!(text.contains("grpc:       not instrumented"), "{text}");
    assert!(!text.contains("handleStream"), "{text}");

    let http = free_port();
    let s = Server::start(&path, free_port(), Some(http));
    let prom = free_port();
    let sonde = spawn_sonde(&[
        ("SONDE_OPEN_PORT", &s.port.to_string()),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
    ]);
    wait_instrumented(&sonde, &[s.pid()]);
    let log = sonde.log();
    assert_eq!(
        log.matches("gRPC not instrumented, HTTP still is").count(),
        1,
        "{log}"
    );
    s.run_script();
    s.wait_script_done(Duration::from_secs(60));
    for _ in 0..3 {
        assert_eq!(
            support::http("GET", &format!("http://127.0.0.1:{http}/ping"), 0).0,
            200
        );
    }
    let service = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = wait_value(
        prom,
        "http_server_request_duration_seconds_count",
        &[
            ("service_name", &service),
            ("http_response_status_code", "200"),
        ],
        3.0,
    );
    assert!(!text.contains("rpc_server_call"), "{text}");
    assert!(!text.contains("rpc_client_call"), "{text}");
    drop(s);
    let _ = std::fs::remove_file(&path);
}

/// `sonde inspect` lists the gRPC probe points, with offsets from DWARF or from the table.
#[test]
fn inspect_lists_grpc_probes() {
    let Some(targets) = targets_or_skip("inspect_lists_grpc_probes") else {
        return;
    };
    let mut offsets_by_build = Vec::new();
    for t in targets {
        let out = Command::new(support::sonde_bin())
            .arg("inspect")
            .arg(&t.path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {text}", t.name());
        for role in [
            "probe GrpcServerHandleStream: google.golang.org/grpc.(*Server).handleStream",
            "probe GrpcServerWriteStatus: google.golang.org/grpc/internal/transport.(*http2Server).WriteStatus",
            "probe GrpcClientInvoke: google.golang.org/grpc.(*ClientConn).Invoke",
            "probe GrpcClientNewStream: google.golang.org/grpc.(*ClientConn).NewStream",
            "probe GrpcClientStreamFinish: google.golang.org/grpc.(*clientStream).finish",
            "grpc:       grpc-go 1.",
        ] {
            assert!(text.contains(role), "{}: no {role}\n{text}", t.name());
        }
        // Stripped or not, the binary's own type metadata describes grpc-go's structs (the
        // unit test type_metadata_dwarf_and_table_agree_for_every_grpc_build checks them
        // against DWARF and the table).
        assert!(
            text.contains("grpc offsets: runtime type metadata"),
            "{}: {text}",
            t.name()
        );
        let offsets = text
            .split_once("grpc offsets:")
            .map(|(_, rest)| rest.lines().skip(1).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        offsets_by_build.push((t.version.clone(), t.stripped, offsets));
    }
    // A stripped build's metadata says what its unstripped twin's says.
    for (version, stripped, from_stripped) in offsets_by_build.iter().filter(|o| o.1) {
        if let Some((_, _, plain)) = offsets_by_build.iter().find(|o| &o.0 == version && !o.1) {
            assert!(*stripped);
            assert_eq!(
                from_stripped, plain,
                "Go {version}: stripped and plain disagree"
            );
        }
    }
}
