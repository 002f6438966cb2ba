//! Short-lived host processes selected by `executable_name`: a Go CLI that makes 5 HTTP and
//! 3 gRPC calls in a few milliseconds and exits is measured exactly, every run, because its
//! file is armed as a whole before it ever runs (no scan could find it in time).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds tests/go/<name> with Debian's Go in GOPATH mode (offline, grpc-go from
/// golang-google-grpc-dev), once: a binary newer than its source is kept.
fn build_go(name: &str) -> PathBuf {
    let src = repo().join("tests/go").join(name);
    let out_dir = repo().join("target/short-lived");
    std::fs::create_dir_all(&out_dir).unwrap();
    let bin = out_dir.join(name);
    let newer = |a: &Path, b: &Path| {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        matches!((m(a), m(b)), (Some(x), Some(y)) if x > y)
    };
    if newer(&bin, &src.join("main.go")) {
        return bin;
    }
    let tmp = out_dir.join(format!("{name}.tmp.{}", std::process::id()));
    let st = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", out_dir.join(".gocache"))
        .env("CGO_ENABLED", "0")
        .status()
        .expect("run go");
    assert!(st.success(), "go build of tests/go/{name} failed");
    std::fs::rename(&tmp, &bin).unwrap();
    bin
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// Runs the CLI once; returns how long it said it ran.
fn run_cli(cli: &Path, http_port: u16, grpc_port: u16) -> Duration {
    let out = Command::new(cli)
        .args([
            "-http",
            &format!("http://127.0.0.1:{http_port}/ping"),
            "-grpc",
            &format!("127.0.0.1:{grpc_port}"),
        ])
        .output()
        .expect("run the CLI");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let us: u64 = stdout
        .trim()
        .strip_prefix("done in ")
        .and_then(|s| s.strip_suffix(" us"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {stdout:?}"));
    Duration::from_micros(us)
}

#[test]
fn a_cli_selected_by_path_is_measured_from_its_first_call() {
    if !require_root_or_skip("a_cli_selected_by_path_is_measured_from_its_first_call") {
        return;
    }
    if Command::new("go").arg("version").output().is_err() {
        skip_missing(
            "a_cli_selected_by_path_is_measured_from_its_first_call",
            "go",
        );
        return;
    }
    let server = build_go("grpcserver");
    let built = build_go("shortcli");
    // A file of this run's own, so nothing else runs it.
    let dir = repo().join(format!("target/short-lived/run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cli = dir.join("sonde-cli");
    std::fs::copy(&built, &cli).unwrap();
    let cli = std::fs::canonicalize(&cli).unwrap();

    let (grpc_port, http_port) = (free_port(), free_port());
    let _server = ChildGuard {
        child: Command::new(&server)
            .args([
                "-port",
                &grpc_port.to_string(),
                "-http",
                &http_port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the gRPC server"),
    };
    assert!(wait_for_port(http_port, Duration::from_secs(10)));
    assert!(wait_for_port(grpc_port, Duration::from_secs(10)));

    let prom = free_port();
    let t = Instant::now();
    let sonde = spawn_sonde(&[
        (
            "SONDE_EXECUTABLE_NAME",
            &format!("^{}$", regex_escape(&cli.to_string_lossy())),
        ),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ("SONDE_DOCKER", "false"),
        ("SONDE_LOG_LEVEL", "debug"),
    ]);
    assert!(
        sonde.wait_for_log(&format!("armed {}", cli.display()), Duration::from_secs(30)),
        "the CLI's file was not armed:\n{}",
        sonde.log()
    );
    eprintln!("armed {:?} after sonde started", t.elapsed());

    let svc = [("service_name", "sonde-cli"), ("service_namespace", "")];
    let rpc = [
        ("service_name", "sonde-cli"),
        ("rpc_method", "/sonde.test.Echo/Unary"),
        ("rpc_response_status_code", "OK"),
        ("server_address", "127.0.0.1"),
    ];
    for run in 1..=3u32 {
        let took = run_cli(&cli, http_port, grpc_port);
        eprintln!("run {run}: the CLI made its 8 calls and exited in {took:?}");
        assert!(took < Duration::from_millis(100), "{took:?}");
        let n = f64::from(run);
        assert!(
            wait_for_metric(
                prom,
                "rpc_client_call_duration_seconds_count",
                &rpc,
                3.0 * n,
                Duration::from_secs(5)
            ),
            "run {run}: gRPC calls {:?}\n{}",
            metric_value(
                &scrape(prom),
                "rpc_client_call_duration_seconds_count",
                &svc
            ),
            sonde.log()
        );
        assert!(
            wait_for_metric(
                prom,
                "http_client_request_duration_seconds_count",
                &[
                    ("service_name", "sonde-cli"),
                    ("http_request_method", "GET"),
                    ("http_response_status_code", "200"),
                ],
                5.0 * n,
                Duration::from_secs(5)
            ),
            "run {run}: HTTP calls {:?}\n{}",
            metric_value(
                &scrape(prom),
                "http_client_request_duration_seconds_count",
                &svc
            ),
            sonde.log()
        );
    }
    let text = scrape(prom);
    // Exactly those, with the identity a long-lived process of that file gets; the server,
    // which runs another file, is not selected.
    assert_eq!(
        metric_value(&text, "rpc_client_call_duration_seconds_count", &svc),
        Some(9.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "http_client_request_duration_seconds_count", &svc),
        Some(15.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "rpc_server_call_duration_seconds_count", &[]),
        None,
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// With a name-only pattern the file is not known before it runs: its first run is seen by
/// the exec tracepoint and the file armed, and every later run is counted exactly.
#[test]
fn a_cli_selected_by_name_is_measured_from_its_second_run() {
    if !require_root_or_skip("a_cli_selected_by_name_is_measured_from_its_second_run") {
        return;
    }
    if Command::new("go").arg("version").output().is_err() {
        skip_missing(
            "a_cli_selected_by_name_is_measured_from_its_second_run",
            "go",
        );
        return;
    }
    let server = build_go("grpcserver");
    let built = build_go("shortcli");
    let dir = repo().join(format!("target/short-lived/name-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("sonde-cli-{}", std::process::id());
    let cli = dir.join(&name);
    std::fs::copy(&built, &cli).unwrap();
    let cli = std::fs::canonicalize(&cli).unwrap();

    let (grpc_port, http_port) = (free_port(), free_port());
    let _server = ChildGuard {
        child: Command::new(&server)
            .args([
                "-port",
                &grpc_port.to_string(),
                "-http",
                &http_port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the gRPC server"),
    };
    assert!(wait_for_port(http_port, Duration::from_secs(10)));
    assert!(wait_for_port(grpc_port, Duration::from_secs(10)));

    let prom = free_port();
    let sonde = spawn_sonde(&[
        (
            "SONDE_EXECUTABLE_NAME",
            &format!("{}$", regex_escape(&name)),
        ),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ("SONDE_DOCKER", "false"),
    ]);
    assert!(
        sonde.wait_for_log("watching executions", Duration::from_secs(30)),
        "{}",
        sonde.log()
    );
    // Serving metrics: the agent is up.
    assert!(wait_for_metric(
        prom,
        "sonde_instrumented_processes",
        &[],
        0.0,
        Duration::from_secs(30)
    ));
    let took = run_cli(&cli, http_port, grpc_port);
    assert!(took < Duration::from_millis(100), "{took:?}");
    assert!(
        sonde.wait_for_log(&format!("armed {}", cli.display()), Duration::from_secs(10)),
        "the CLI's file was not armed after its first run:\n{}",
        sonde.log()
    );
    // The first run ended before its file was armed: whatever it got is the baseline.
    std::thread::sleep(Duration::from_millis(300));
    let svc = [("service_name", name.as_str())];
    let value = |metric: &str| metric_value(&scrape(prom), metric, &svc).unwrap_or(0.0);
    let (http0, grpc0) = (
        value("http_client_request_duration_seconds_count"),
        value("rpc_client_call_duration_seconds_count"),
    );
    for run in 1..=2u32 {
        let took = run_cli(&cli, http_port, grpc_port);
        assert!(took < Duration::from_millis(100), "{took:?}");
        let n = f64::from(run);
        assert!(
            wait_for_metric(
                prom,
                "rpc_client_call_duration_seconds_count",
                &svc,
                grpc0 + 3.0 * n,
                Duration::from_secs(5)
            ),
            "run {run}: {}\n{}",
            value("rpc_client_call_duration_seconds_count"),
            sonde.log()
        );
        assert!(
            wait_for_metric(
                prom,
                "http_client_request_duration_seconds_count",
                &svc,
                http0 + 5.0 * n,
                Duration::from_secs(5)
            ),
            "run {run}: {}\n{}",
            value("http_client_request_duration_seconds_count"),
            sonde.log()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A name-only pattern names no directory, but commands are run from `PATH`: the matching
/// files of sonde's own `PATH` are armed at its start, so the CLI's very first run is counted
/// exactly.
#[test]
fn a_cli_on_path_selected_by_name_is_measured_from_its_first_run() {
    let test = "a_cli_on_path_selected_by_name_is_measured_from_its_first_run";
    if !require_root_or_skip(test) {
        return;
    }
    if Command::new("go").arg("version").output().is_err() {
        skip_missing(test, "go");
        return;
    }
    let server = build_go("grpcserver");
    let built = build_go("shortcli");
    let dir = repo().join(format!("target/short-lived/path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = std::fs::canonicalize(&dir).unwrap();
    let name = format!("sonde-pathcli-{}", std::process::id());
    let cli = dir.join(&name);
    std::fs::copy(&built, &cli).unwrap();

    let (grpc_port, http_port) = (free_port(), free_port());
    let _server = ChildGuard {
        child: Command::new(&server)
            .args([
                "-port",
                &grpc_port.to_string(),
                "-http",
                &http_port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the gRPC server"),
    };
    assert!(wait_for_port(http_port, Duration::from_secs(10)));
    assert!(wait_for_port(grpc_port, Duration::from_secs(10)));

    let prom = free_port();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sonde = spawn_sonde(&[
        (
            "SONDE_EXECUTABLE_NAME",
            &format!("{}$", regex_escape(&name)),
        ),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ("SONDE_DOCKER", "false"),
        ("PATH", &path),
    ]);
    assert!(
        sonde.wait_for_log(&format!("armed {}", cli.display()), Duration::from_secs(30)),
        "the CLI's file on PATH was not armed:\n{}",
        sonde.log()
    );
    let svc = [("service_name", name.as_str())];
    for run in 1..=2u32 {
        let took = run_cli(&cli, http_port, grpc_port);
        assert!(took < Duration::from_millis(100), "{took:?}");
        let n = f64::from(run);
        for (metric, per_run) in [
            ("rpc_client_call_duration_seconds_count", 3.0),
            ("http_client_request_duration_seconds_count", 5.0),
        ] {
            assert!(
                wait_for_metric(prom, metric, &svc, per_run * n, Duration::from_secs(5)),
                "run {run}: {metric} {:?}\n{}",
                metric_value(&scrape(prom), metric, &svc),
                sonde.log()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
