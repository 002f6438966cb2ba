//! Least privilege: sonde measures a real Go server with exactly the documented capability
//! set (run under util-linux `setpriv`), refuses clearly with one less, and never lets a
//! query string or a credential header reach its metrics, traces or logs.
//!
//! Needs root (to hand out capabilities) and setpriv.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const MINIMAL: &[&str] = &[
    "bpf",
    "perfmon",
    "sys_admin",
    "sys_ptrace",
    "dac_read_search",
];

fn have_setpriv(test: &str) -> bool {
    if Path::new("/usr/bin/setpriv").exists() {
        return true;
    }
    skip_missing(test, "setpriv (util-linux)")
}

/// `setpriv` arguments giving exactly `caps` as bounding, inheritable and ambient sets.
fn setpriv(caps: &[&str]) -> Command {
    let set = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new("/usr/bin/setpriv");
    cmd.args([
        "--bounding-set",
        &set,
        "--inh-caps",
        &set,
        "--ambient-caps",
        &set,
    ]);
    cmd.arg("--");
    cmd
}

fn newest_static() -> GoTarget {
    go_targets()
        .into_iter()
        .rfind(|t| t.linkage == "static" && !t.stripped)
        .expect("a static Go target")
}

/// sonde under `setpriv` with `caps`, its stdout and stderr in one log file.
fn spawn_with_caps(caps: &[&str], env: &[(&str, &str)]) -> SondeGuard {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join(format!(
        "privileges-{}-{}.log",
        std::process::id(),
        free_port()
    ));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = setpriv(caps);
    cmd.arg(sonde_bin())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SONDE_DOCKER", "false");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start setpriv sonde");
    SondeGuard {
        guard: ChildGuard { child },
        log_path,
    }
}

#[test]
fn measures_a_go_server_with_the_minimal_capabilities() {
    let test = "measures_a_go_server_with_the_minimal_capabilities";
    if !require_root_or_skip(test) || !have_setpriv(test) {
        return;
    }
    // `sonde check` under the same set sees every one of them.
    let out = setpriv(MINIMAL)
        .arg(sonde_bin())
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("every required capability is present"),
        "{text}"
    );
    assert!(!text.contains("CAP_SYS_RESOURCE     present"));

    let t = newest_static();
    let (port, prom) = (free_port(), free_port());
    let server = spawn_go_server(&t.path, port, false);
    let sonde = spawn_with_caps(
        MINIMAL,
        &[
            ("SONDE_OPEN_PORT", &port.to_string()),
            ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ],
    );
    sonde.expect_instrumented(server.pid(), Duration::from_secs(30));
    for _ in 0..3 {
        http("GET", &format!("http://127.0.0.1:{port}/status/201"), 0);
    }
    assert!(
        wait_for_metric(
            prom,
            "http_server_request_duration_seconds_count",
            &[
                ("service_name", &t.name()),
                ("http_response_status_code", "201")
            ],
            3.0,
            Duration::from_secs(20)
        ),
        "{}\n{}",
        scrape(prom),
        sonde.log()
    );
    drop(server);
    assert_eq!(sonde.stop(), Some(0));
}

#[test]
fn refuses_to_start_without_one_capability() {
    let test = "refuses_to_start_without_one_capability";
    if !require_root_or_skip(test) || !have_setpriv(test) {
        return;
    }
    for dropped in ["sys_ptrace", "sys_admin"] {
        let caps: Vec<&str> = MINIMAL.iter().copied().filter(|c| *c != dropped).collect();
        let name = format!("CAP_{}", dropped.to_uppercase());
        let check = setpriv(&caps)
            .arg(sonde_bin())
            .arg("check")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&check.stdout);
        assert!(
            text.contains(&format!("{name:<20} MISSING  disables: ")),
            "{text}"
        );

        let port = free_port();
        let mut sonde = spawn_with_caps(&caps, &[("SONDE_OPEN_PORT", &port.to_string())]);
        let t = Instant::now();
        let code = loop {
            if let Ok(Some(st)) = sonde.guard.child.try_wait() {
                break st.code();
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "still running without {name}:\n{}",
                sonde.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = sonde.log();
        assert_eq!(code, Some(1), "{log}");
        assert!(
            log.contains(&format!("sonde: missing capability {name}: needed to")),
            "{log}"
        );
    }
}

#[test]
fn query_strings_and_credentials_never_reach_metrics_traces_or_logs() {
    let test = "query_strings_and_credentials_never_reach_metrics_traces_or_logs";
    if !require_root_or_skip(test) {
        return;
    }
    let t = newest_static();
    let (port, prom) = (free_port(), free_port());
    let server = spawn_go_server(&t.path, port, false);
    // Everything that could carry it switched on: url_path label, peer, per-request trace
    // lines on stdout, debug logs.
    let sonde = spawn_with_caps(
        MINIMAL,
        &[
            ("SONDE_OPEN_PORT", &port.to_string()),
            ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
            ("SONDE_METRICS_REPORT_TARGET", "true"),
            ("SONDE_METRICS_REPORT_PEER", "true"),
            ("SONDE_PRINT_TRACES", "true"),
            ("SONDE_LOG_LEVEL", "debug"),
        ],
    );
    sonde.expect_instrumented(server.pid(), Duration::from_secs(30));
    use std::io::{Read, Write};
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /status/200?size=2&token=SECRETQUERY HTTP/1.1\r\nHost: x\r\n\
             Authorization: Bearer SECRETAUTH\r\nCookie: session=SECRETCOOKIE\r\n\
             Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    assert!(
        wait_for_metric(
            prom,
            "http_server_request_duration_seconds_count",
            &[("url_path", "/status/200"), ("service_name", &t.name())],
            2.0,
            Duration::from_secs(20)
        ),
        "{}\n{}",
        scrape(prom),
        sonde.log()
    );
    // The trace lines are out too (stdout is in the log).
    assert!(
        sonde.wait_for_log("/status/200", Duration::from_secs(10)),
        "{}",
        sonde.log()
    );
    let everything = format!("{}\n{}", scrape(prom), sonde.log());
    for secret in ["SECRET", "token=", "Bearer", "session="] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
    drop(server);
    assert_eq!(sonde.stop(), Some(0));
}
