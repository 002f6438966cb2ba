//! End to end: real Go servers built with every toolchain here, sonde loading its real BPF
//! programs into this kernel, real requests, exact metrics.
//!
//! Needs root. Without it (or without a toolchain) a test says why and skips; with
//! SONDE_REQUIRE_INTEGRATION=1 (CI) it fails instead.

mod support;

use std::time::Duration;

use support::*;

/// One request of the fixed mix: method, path, request body bytes.
const MIX: &[(&str, &str, usize)] = &[
    ("GET", "/status/200?size=10", 0),
    ("GET", "/status/200?size=10", 0),
    ("GET", "/status/200?size=10", 0),
    ("GET", "/implicit", 0),
    ("POST", "/echo", 100),
    ("POST", "/echo", 100),
    ("PUT", "/status/404?size=0", 50),
    ("DELETE", "/status/500?size=5", 0),
    ("DELETE", "/status/500?size=5", 0),
    ("PATCH", "/slow?ms=30", 0),
];

/// What the mix must produce per (method, status): count, request bytes, response bytes.
fn expected(implicit_body: usize) -> Vec<(&'static str, &'static str, f64, f64, f64)> {
    vec![
        ("GET", "200", 4.0, 0.0, 30.0 + implicit_body as f64),
        ("POST", "200", 2.0, 200.0, 200.0),
        ("PUT", "404", 1.0, 50.0, 0.0),
        ("DELETE", "500", 2.0, 0.0, 10.0),
        ("PATCH", "200", 1.0, 0.0, 0.0),
    ]
}

fn send_mix(port: u16) -> usize {
    let mut implicit = 0;
    for &(method, path, body) in MIX {
        let (status, len) = http(method, &format!("http://127.0.0.1:{port}{path}"), body);
        assert!(status >= 200, "{method} {path} on :{port} failed");
        if path == "/implicit" {
            implicit = len;
        }
    }
    implicit
}

/// Outgoing calls from the server on `port`: two OPTIONS and one DELETE (7-byte body) to the
/// server on `next`, one GET to a port where nothing listens.
fn send_calls(port: u16, next: u16, closed: u16) {
    let call = |method: &str, url: &str, size: usize| {
        let path = format!("/call?method={method}&size={size}&url={url}");
        http("GET", &format!("http://127.0.0.1:{port}{path}"), 0).0
    };
    let upstream = format!("http://127.0.0.1:{next}");
    assert_eq!(
        call("OPTIONS", &format!("{upstream}/status/201?size=4"), 0),
        201
    );
    assert_eq!(
        call("OPTIONS", &format!("{upstream}/status/201?size=4"), 0),
        201
    );
    assert_eq!(call("DELETE", &format!("{upstream}/status/202"), 7), 202);
    assert_eq!(call("GET", &format!("http://127.0.0.1:{closed}/"), 0), 502);
}

fn assert_calls(text: &str, service: &str, next: u16, closed: u16) {
    let next = next.to_string();
    let client = |method: &str, status: &str, port: &str, name: &str| {
        metric_value(
            text,
            name,
            &[
                ("service_name", service),
                ("http_request_method", method),
                ("http_response_status_code", status),
                ("server_address", "127.0.0.1"),
                ("server_port", port),
            ],
        )
    };
    let count = "http_client_request_duration_seconds_count";
    assert_eq!(
        client("OPTIONS", "201", &next, count),
        Some(2.0),
        "{service}: client calls\n{text}"
    );
    assert_eq!(
        client(
            "OPTIONS",
            "201",
            &next,
            "http_client_response_body_size_bytes_sum"
        ),
        Some(8.0),
        "{service}"
    );
    assert_eq!(
        client("DELETE", "202", &next, count),
        Some(1.0),
        "{service}"
    );
    assert_eq!(
        client(
            "DELETE",
            "202",
            &next,
            "http_client_request_body_size_bytes_sum"
        ),
        Some(7.0),
        "{service}"
    );
    let refused = metric_value(
        text,
        count,
        &[
            ("service_name", service),
            ("server_port", &closed.to_string()),
            ("http_response_status_code", ""),
            ("error_type", "_OTHER"),
        ],
    );
    assert_eq!(
        refused,
        Some(1.0),
        "{service}: a refused call is counted with its error"
    );
}

fn assert_mix(text: &str, service: &str, implicit_body: usize) {
    for (method, status, count, req_bytes, resp_bytes) in expected(implicit_body) {
        let labels = [
            ("service_name", service),
            ("http_request_method", method),
            ("http_response_status_code", status),
            ("http_route", "/**"),
            ("service_namespace", ""),
        ];
        let get = |name: &str| metric_value(text, name, &labels);
        assert_eq!(
            get("http_server_request_duration_seconds_count"),
            Some(count),
            "{service}: count of {method} {status}\n{text}"
        );
        assert_eq!(
            get("http_server_request_body_size_bytes_sum"),
            Some(req_bytes),
            "{service}: request bytes of {method} {status}"
        );
        assert_eq!(
            get("http_server_response_body_size_bytes_sum"),
            Some(resp_bytes),
            "{service}: response bytes of {method} {status}"
        );
        assert_eq!(
            get("http_server_request_body_size_bytes_count"),
            Some(count)
        );
    }
    // The 30 ms request lands in the (0.025, 0.05] bucket, and the sum says so too.
    let slow = [("service_name", service), ("http_request_method", "PATCH")];
    let bucket = |le: &str| {
        let mut l = slow.to_vec();
        l.push(("le", le));
        metric_value(text, "http_server_request_duration_seconds_bucket", &l)
    };
    assert_eq!(
        bucket("0.025"),
        Some(0.0),
        "{service}: 30 ms request below 25 ms?"
    );
    assert_eq!(
        bucket("0.1"),
        Some(1.0),
        "{service}: 30 ms request above 100 ms?"
    );
    let sum = metric_value(text, "http_server_request_duration_seconds_sum", &slow).unwrap();
    assert!(
        (0.029..0.1).contains(&sum),
        "{service}: 30 ms request took {sum} s"
    );
}

#[test]
fn go_matrix_exact_metrics() {
    if !require_root_or_skip("go_matrix_exact_metrics") {
        return;
    }
    let targets = go_targets();
    assert!(!targets.is_empty(), "no Go targets were built");
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for t in &targets {
        let port = free_port();
        servers.push((t, port, spawn_go_server(&t.path, port, false)));
        ports.push(port.to_string());
    }
    let prom = free_port();
    let sonde = spawn_sonde(&[
        ("SONDE_OPEN_PORT", &ports.join(",")),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
    ]);
    let n = targets.len() as f64;
    let t0 = std::time::Instant::now();
    assert!(
        wait_for_metric(
            prom,
            "sonde_instrumented_processes",
            &[],
            n,
            Duration::from_secs(30)
        ),
        "sonde did not instrument all {n} servers:\n{}",
        sonde.log()
    );
    eprintln!("instrumented all in {:?}", t0.elapsed());
    let mut implicit = Vec::new();
    for (_, port, _) in &servers {
        implicit.push(send_mix(*port));
    }
    eprintln!("mix sent at {:?}", t0.elapsed());
    // Each server calls the next one (and a closed port) through Go's HTTP client.
    let closed = free_port();
    for (i, (_, port, _)) in servers.iter().enumerate() {
        let next = servers[(i + 1) % servers.len()].1;
        send_calls(*port, next, closed);
    }
    eprintln!("calls sent at {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_millis(300));
    let text = scrape(prom);
    for (i, ((t, _, _), implicit_body)) in servers.iter().zip(implicit).enumerate() {
        let service = t.name();
        assert_mix(&text, &service, implicit_body);
        let next = servers[(i + 1) % servers.len()].1;
        assert_calls(&text, &service, next, closed);
    }
    assert_eq!(
        metric_value(&text, "sonde_events_lost_total", &[]),
        Some(0.0)
    );
}

/// The newest static build, for tests that need one real server.
fn one_target() -> support::GoTarget {
    go_targets()
        .into_iter()
        .rfind(|t| t.linkage == "static" && !t.stripped)
        .expect("a static Go target")
}

fn start_pair(
    env: &[(&str, &str)],
    tls: bool,
) -> (support::GoTarget, u16, ChildGuard, u16, SondeGuard) {
    let t = one_target();
    let port = free_port();
    let server = spawn_go_server(&t.path, port, tls);
    let prom = free_port();
    let mut all = vec![
        ("SONDE_OPEN_PORT".to_string(), port.to_string()),
        ("SONDE_PROMETHEUS_PORT".to_string(), prom.to_string()),
    ];
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sonde = spawn_sonde(&refs);
    assert!(
        wait_for_metric(
            prom,
            "sonde_instrumented_processes",
            &[],
            1.0,
            Duration::from_secs(15)
        ),
        "not instrumented:\n{}",
        sonde.log()
    );
    (t, port, server, prom, sonde)
}

/// The seed walkthrough, section 5: Beyla's first names and labels, line for line.
#[test]
fn beyla_v0_output_matches_the_walkthrough() {
    if !require_root_or_skip("beyla_v0_output_matches_the_walkthrough") {
        return;
    }
    let (t, port, _server, prom, _sonde) =
        start_pair(&[("BEYLA_METRICS_NAMING", "beyla-v0")], false);
    for _ in 0..6 {
        http("GET", &format!("http://127.0.0.1:{port}/slow?ms=60"), 0);
    }
    http("GET", &format!("http://127.0.0.1:{port}/status/500"), 0);
    std::thread::sleep(Duration::from_millis(300));
    let text = scrape(prom);
    let svc = t.name();
    let base = format!(
        "http_method=\"GET\",http_route=\"/**\",http_status_code=\"200\",service_name=\"{svc}\""
    );
    // Every line as Beyla printed it; the count is exact wherever timing cannot move it (a
    // 60 ms request on a loaded machine may land in the 0.075 or the 0.1 bucket).
    let header = [
        "# HELP http_server_duration_seconds duration of HTTP service calls from the server side, in seconds",
        "# TYPE http_server_duration_seconds histogram",
    ];
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == header[0])
        .unwrap_or_else(|| panic!("no HELP line:\n{text}"));
    assert_eq!(lines[start + 1], header[1]);
    let les = [
        "0", "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5",
        "5", "7.5", "10", "+Inf",
    ];
    let mut previous = 0;
    for (i, le) in les.iter().enumerate() {
        let line = lines[start + 2 + i];
        let prefix = format!("http_server_duration_seconds_bucket{{{base},le=\"{le}\"}} ");
        let n: u32 = line
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("line {} is {line:?}, expected {prefix}N\n{text}", i + 2))
            .parse()
            .unwrap();
        match *le {
            "0" | "0.005" | "0.01" | "0.025" | "0.05" => assert_eq!(n, 0, "{line}"),
            "0.075" | "0.1" => assert!(n >= previous && n <= 6, "{line}"),
            _ => assert_eq!(n, 6, "{line}"),
        }
        previous = n;
    }
    assert!(text.contains(&format!("http_server_duration_seconds_count{{{base}}} 6\n")));
    assert!(text.contains(
        "# HELP http_server_request_size_bytes size, in bytes, of the HTTP request body as received at the server side\n# TYPE http_server_request_size_bytes histogram\n"
    ));
    for (le, n) in [("0", 6), ("32", 6), ("8192", 6), ("+Inf", 6)] {
        let line = format!("http_server_request_size_bytes_bucket{{{base},le=\"{le}\"}} {n}\n");
        assert!(text.contains(&line), "missing {line}\n{text}");
    }
    assert!(text.contains(&format!("http_server_request_size_bytes_sum{{{base}}} 0\n")));
    let err = base.replace("\"200\"", "\"500\"");
    assert!(text.contains(&format!("http_server_duration_seconds_count{{{err}}} 1\n")));
    // beyla-v0 had neither the namespace nor the semconv names.
    assert!(!text.contains("service_namespace") && !text.contains("http_request_method"));
}

/// The seed walkthrough, section 6: beyla-v1 names with url_path and client_address.
#[test]
fn beyla_v1_with_target_and_peer_matches_the_walkthrough() {
    if !require_root_or_skip("beyla_v1_with_target_and_peer_matches_the_walkthrough") {
        return;
    }
    let (t, port, _server, prom, _sonde) = start_pair(
        &[
            ("BEYLA_METRICS_NAMING", "beyla-v1"),
            ("BEYLA_METRICS_REPORT_TARGET", "true"),
            ("BEYLA_METRICS_REPORT_PEER", "true"),
        ],
        false,
    );
    http(
        "GET",
        &format!("http://127.0.0.1:{port}/status/200?secret=1&size=3"),
        0,
    );
    std::thread::sleep(Duration::from_millis(300));
    let text = scrape(prom);
    let line = format!(
        "http_server_duration_seconds_bucket{{client_address=\"127.0.0.1\",http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/**\",service_name=\"{}\",service_namespace=\"\",url_path=\"/status/200\",le=\"+Inf\"}} 1",
        t.name()
    );
    assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    assert!(
        !text.contains("secret"),
        "a query string reached the metrics:\n{text}"
    );
}

/// 100 concurrent keep-alive connections: every request counted once, under its own status,
/// and every response the server sent is intact.
#[test]
fn concurrent_keepalive_counts_are_exact() {
    if !require_root_or_skip("concurrent_keepalive_counts_are_exact") {
        return;
    }
    let (t, port, _server, prom, sonde) = start_pair(&[], false);
    const CONNS: usize = 100;
    const PER_CONN: usize = 40;
    let cases = [("200", 2u64), ("404", 4), ("500", 5)];
    let handles: Vec<_> = (0..CONNS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut tally = [0u64; 3];
                let mut conn = KeepAlive::connect(port);
                for i in 0..PER_CONN {
                    let k = (c + i) % 3;
                    let (code, size) = cases[k];
                    let (status, body) =
                        conn.request("GET", &format!("/status/{code}?size={size}"), 0);
                    assert_eq!(status.to_string(), code, "wrong status from the server");
                    assert_eq!(body, size, "wrong body from the server");
                    tally[k] += 1;
                }
                tally
            })
        })
        .collect();
    let mut sent = [0u64; 3];
    for h in handles {
        let t = h.join().expect("client thread");
        for k in 0..3 {
            sent[k] += t[k];
        }
    }
    let total: u64 = sent.iter().sum();
    assert_eq!(total as usize, CONNS * PER_CONN);
    let svc = t.name();
    assert!(
        wait_for_metric(
            prom,
            "http_server_request_duration_seconds_count",
            &[("service_name", &svc)],
            total as f64,
            Duration::from_secs(5)
        ),
        "sonde did not count {total} requests:\n{}",
        sonde.log()
    );
    let text = scrape(prom);
    for (k, (code, size)) in cases.iter().enumerate() {
        let labels = [
            ("service_name", svc.as_str()),
            ("http_response_status_code", *code),
        ];
        assert_eq!(
            metric_value(&text, "http_server_request_duration_seconds_count", &labels),
            Some(sent[k] as f64),
            "requests counted under status {code}"
        );
        assert_eq!(
            metric_value(&text, "http_server_response_body_size_bytes_sum", &labels),
            Some((sent[k] * *size) as f64),
            "response bytes under status {code}: a status was given to another request"
        );
    }
    assert_eq!(
        metric_value(&text, "sonde_events_lost_total", &[]),
        Some(0.0)
    );
}

/// HTTP/2 over TLS (ALPN h2) is measured like HTTP/1.1.
#[test]
fn http2_requests_are_counted() {
    if !require_root_or_skip("http2_requests_are_counted") {
        return;
    }
    for t in go_targets()
        .into_iter()
        .filter(|t| t.linkage == "static" && t.stripped)
    {
        let port = free_port();
        let _server = spawn_go_server(&t.path, port, true);
        let prom = free_port();
        let sonde = spawn_sonde(&[
            ("SONDE_OPEN_PORT", &port.to_string()),
            ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ]);
        assert!(
            wait_for_metric(
                prom,
                "sonde_instrumented_processes",
                &[],
                1.0,
                Duration::from_secs(15)
            ),
            "{}: not instrumented:\n{}",
            t.name(),
            sonde.log()
        );
        let base = format!("https://127.0.0.1:{port}");
        let w = "%{http_version} %{http_code}\n";
        let out = std::process::Command::new("curl")
            .args(["-sk", "--http2", "-w", w])
            .args(["-o", "/dev/null", &format!("{base}/status/201?size=7")])
            .args(["-o", "/dev/null", &format!("{base}/status/201?size=7")])
            .args(["-o", "/dev/null", &format!("{base}/status/404?size=1")])
            .args(["--next", "-sk", "--http2", "-w", w, "-o", "/dev/null"])
            .args([
                "-X",
                "POST",
                "--data-binary",
                "0123456789",
                &format!("{base}/echo"),
            ])
            .output()
            .expect("run curl");
        let printed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            printed, "2 201\n2 201\n2 404\n2 200\n",
            "curl did not speak HTTP/2"
        );
        let svc = t.name();
        let q = |method: &str, code: &str, name: &str| {
            metric_value(
                &scrape(prom),
                name,
                &[
                    ("service_name", &svc),
                    ("http_request_method", method),
                    ("http_response_status_code", code),
                ],
            )
        };
        let t0 = std::time::Instant::now();
        while q("POST", "200", "http_server_request_duration_seconds_count").is_none()
            && t0.elapsed() < Duration::from_secs(3)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            q("GET", "201", "http_server_request_duration_seconds_count"),
            Some(2.0),
            "{svc}"
        );
        assert_eq!(
            q("GET", "201", "http_server_response_body_size_bytes_sum"),
            Some(14.0),
            "{svc}"
        );
        assert_eq!(
            q("GET", "404", "http_server_request_duration_seconds_count"),
            Some(1.0),
            "{svc}"
        );
        assert_eq!(
            q("POST", "200", "http_server_request_body_size_bytes_sum"),
            Some(10.0),
            "{svc}"
        );
        assert_eq!(
            q("POST", "200", "http_server_response_body_size_bytes_sum"),
            Some(10.0),
            "{svc}"
        );
    }
}

/// A server started after sonde is instrumented within a second; when it exits its probes go.
#[test]
fn late_processes_are_picked_up_and_exits_dropped() {
    if !require_root_or_skip("late_processes_are_picked_up_and_exits_dropped") {
        return;
    }
    let t = one_target();
    let port = free_port();
    let prom = free_port();
    let sonde = spawn_sonde(&[
        ("OPEN_PORT", &port.to_string()),
        ("BEYLA_PROMETHEUS_PORT", &prom.to_string()),
    ]);
    assert!(
        sonde.wait_for_log("serving Prometheus metrics", Duration::from_secs(10)),
        "{}",
        sonde.log()
    );
    let server = spawn_go_server(&t.path, port, false);
    let started = std::time::Instant::now();
    assert!(
        wait_for_metric(
            prom,
            "sonde_instrumented_processes",
            &[],
            1.0,
            Duration::from_secs(5)
        ),
        "{}",
        sonde.log()
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "picked up after {took:?}");
    http("DELETE", &format!("http://127.0.0.1:{port}/status/204"), 0);
    assert!(wait_for_metric(
        prom,
        "http_server_request_duration_seconds_count",
        &[
            ("http_request_method", "DELETE"),
            ("http_response_status_code", "204")
        ],
        1.0,
        Duration::from_secs(3)
    ));
    let pid = server.pid();
    drop(server);
    assert!(
        wait_for_metric(
            prom,
            "sonde_instrumented_processes",
            &[],
            0.0,
            Duration::from_secs(3)
        ),
        "{}",
        sonde.log()
    );
    assert!(sonde.wait_for_log(
        &format!("pid {pid} exited: probes detached"),
        Duration::from_secs(2)
    ));
    assert_eq!(
        sonde.stop(),
        Some(0),
        "sonde should exit cleanly on SIGTERM"
    );
}

/// A non-Go process and a Go 1.16-style binary on selected ports are skipped with a reason;
/// sonde keeps running and still measures the Go server beside them.
#[test]
fn unsupported_targets_are_skipped_with_a_reason() {
    if !require_root_or_skip("unsupported_targets_are_skipped_with_a_reason") {
        return;
    }
    let t = one_target();
    // A Go 1.16-style binary: the same program claiming an older toolchain.
    let data = std::fs::read(&t.path).unwrap();
    let (from, to) = (
        format!("go{}", t.version),
        format!("go1.16.{}", "9".repeat(t.version.len() - 5)),
    );
    assert_eq!(from.len(), to.len());
    let mut patched = data.clone();
    let mut replaced = 0;
    let mut i = 0;
    while let Some(pos) = patched[i..]
        .windows(from.len())
        .position(|w| w == from.as_bytes())
    {
        patched[i + pos..i + pos + to.len()].copy_from_slice(to.as_bytes());
        replaced += 1;
        i += pos + to.len();
    }
    assert!(replaced > 0);
    let old_go = std::env::temp_dir().join(format!("sonde-go116-{}", std::process::id()));
    std::fs::write(&old_go, &patched).unwrap();
    std::fs::set_permissions(&old_go, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let (py_port, old_port, go_port, prom) = (free_port(), free_port(), free_port(), free_port());
    let _py = ChildGuard {
        child: std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &py_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3"),
    };
    let _old = spawn_go_server(&old_go, old_port, false);
    let _go = spawn_go_server(&t.path, go_port, false);
    // Wait for python to listen.
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", py_port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "python3 http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sonde = spawn_sonde(&[
        (
            "SONDE_OPEN_PORT",
            &format!("{py_port},{old_port},{go_port}"),
        ),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        // What Go-only sonde does with a non-Go process (tests/syscalls.rs covers tracing).
        ("SONDE_SYSCALL_TRACING", "false"),
    ]);
    assert!(wait_for_metric(
        prom,
        "sonde_instrumented_processes",
        &[],
        1.0,
        Duration::from_secs(15)
    ));
    assert!(
        sonde.wait_for_log("not a Go binary", Duration::from_secs(5)),
        "{}",
        sonde.log()
    );
    assert!(
        sonde.wait_for_log("1.16", Duration::from_secs(5)),
        "{}",
        sonde.log()
    );
    let text = scrape(prom);
    assert_eq!(
        metric_value(
            &text,
            "sonde_skipped_binaries_total",
            &[("reason", "not_go")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "sonde_skipped_binaries_total",
            &[("reason", "go_too_old")]
        ),
        Some(1.0),
        "{text}"
    );
    http("GET", &format!("http://127.0.0.1:{py_port}/"), 0);
    http("GET", &format!("http://127.0.0.1:{old_port}/status/200"), 0);
    http("GET", &format!("http://127.0.0.1:{go_port}/status/202"), 0);
    assert!(wait_for_metric(
        prom,
        "http_server_request_duration_seconds_count",
        &[("http_response_status_code", "202")],
        1.0,
        Duration::from_secs(3)
    ));
    let text = scrape(prom);
    assert_eq!(
        metric_value(&text, "http_server_request_duration_seconds_count", &[]),
        Some(1.0),
        "only the Go server is measured"
    );
    let _ = std::fs::remove_file(&old_go);
}

/// Selection by executable regex (no port), service identity from the process's own
/// OTEL_SERVICE_NAME, and routes from patterns.
#[test]
fn executable_name_routes_and_service_name() {
    if !require_root_or_skip("executable_name_routes_and_service_name") {
        return;
    }
    let t = one_target();
    let port = free_port();
    let mut child = std::process::Command::new(&t.path);
    child
        .args(["-addr", &format!("127.0.0.1:{port}")])
        .env("OTEL_SERVICE_NAME", "checkout")
        .stdout(std::process::Stdio::piped());
    let mut child = child.spawn().expect("start server");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _server = ChildGuard { child };
    let prom = free_port();
    let sonde = spawn_sonde(&[
        (
            "SONDE_EXECUTABLE_NAME",
            &format!("{}$", regex_escape(&t.name())),
        ),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
        ("SONDE_ROUTES_PATTERNS", "/status/{code},/echo"),
    ]);
    assert!(
        wait_for_metric(
            prom,
            "sonde_instrumented_processes",
            &[],
            1.0,
            Duration::from_secs(15)
        ),
        "{}",
        sonde.log()
    );
    http(
        "GET",
        &format!("http://127.0.0.1:{port}/status/201?size=1"),
        0,
    );
    http(
        "GET",
        &format!("http://127.0.0.1:{port}/status/202?size=1"),
        0,
    );
    http("GET", &format!("http://127.0.0.1:{port}/implicit"), 0);
    assert!(wait_for_metric(
        prom,
        "http_server_request_duration_seconds_count",
        &[("service_name", "checkout")],
        3.0,
        Duration::from_secs(3)
    ));
    let text = scrape(prom);
    let count = |route: &str| {
        metric_value(
            &text,
            "http_server_request_duration_seconds_count",
            &[("service_name", "checkout"), ("http_route", route)],
        )
    };
    assert_eq!(count("/status/{code}"), Some(2.0), "{text}");
    assert_eq!(count("/**"), Some(1.0), "{text}");
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// A Debian-packaged Go program (stripped, no DWARF): Debian's own Prometheus server.
#[test]
fn debian_packaged_prometheus_is_measured() {
    if !require_root_or_skip("debian_packaged_prometheus_is_measured") {
        return;
    }
    let bin = std::path::Path::new("/usr/bin/prometheus");
    if !bin.exists() {
        support::skip_missing(
            "debian_packaged_prometheus_is_measured",
            "Debian's prometheus package",
        );
        return;
    }
    let port = free_port();
    let data = std::env::temp_dir().join(format!("sonde-prom-{}", std::process::id()));
    let config = data.join("prometheus.yml");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(&config, "global: {}\n").unwrap();
    let _prometheus = ChildGuard {
        child: std::process::Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start prometheus"),
    };
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "prometheus did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let prom = free_port();
    let sonde = spawn_sonde(&[
        ("SONDE_OPEN_PORT", &port.to_string()),
        ("SONDE_PROMETHEUS_PORT", &prom.to_string()),
    ]);
    assert!(
        wait_for_metric(
            prom,
            "sonde_instrumented_processes",
            &[],
            1.0,
            Duration::from_secs(15)
        ),
        "{}",
        sonde.log()
    );
    for _ in 0..3 {
        assert_eq!(
            http("GET", &format!("http://127.0.0.1:{port}/-/healthy"), 0).0,
            200
        );
    }
    assert_eq!(
        http("GET", &format!("http://127.0.0.1:{port}/no/such/page"), 0).0,
        404
    );
    let labels = |code| {
        [
            ("service_name", "prometheus"),
            ("http_request_method", "GET"),
            ("http_response_status_code", code),
        ]
    };
    assert!(
        wait_for_metric(
            prom,
            "http_server_request_duration_seconds_count",
            &labels("404"),
            1.0,
            Duration::from_secs(3)
        ),
        "{}",
        scrape(prom)
    );
    let text = scrape(prom);
    assert_eq!(
        metric_value(
            &text,
            "http_server_request_duration_seconds_count",
            &labels("200")
        ),
        Some(3.0),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&data);
}
