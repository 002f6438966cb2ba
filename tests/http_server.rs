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
        assert_eq!(get("http_server_request_body_size_bytes_count"), Some(count));
    }
    // The 30 ms request lands in the (0.025, 0.05] bucket, and the sum says so too.
    let slow = [("service_name", service), ("http_request_method", "PATCH")];
    let bucket = |le: &str| {
        let mut l = slow.to_vec();
        l.push(("le", le));
        metric_value(text, "http_server_request_duration_seconds_bucket", &l)
    };
    assert_eq!(bucket("0.025"), Some(0.0), "{service}: 30 ms request below 25 ms?");
    assert_eq!(bucket("0.1"), Some(1.0), "{service}: 30 ms request above 100 ms?");
    let sum = metric_value(text, "http_server_request_duration_seconds_sum", &slow).unwrap();
    assert!((0.029..0.1).contains(&sum), "{service}: 30 ms request took {sum} s");
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
    assert!(
        wait_for_metric(prom, "sonde_instrumented_processes", &[], n, Duration::from_secs(30)),
        "sonde did not instrument all {n} servers:\n{}",
        sonde.log()
    );
    let mut implicit = Vec::new();
    for (_, port, _) in &servers {
        implicit.push(send_mix(*port));
    }
    std::thread::sleep(Duration::from_millis(300));
    let text = scrape(prom);
    for ((t, _, _), implicit_body) in servers.iter().zip(implicit) {
        let service = t.path.file_name().unwrap().to_string_lossy().to_string();
        assert_mix(&text, &service, implicit_body);
    }
    assert_eq!(metric_value(&text, "sonde_events_lost_total", &[]), Some(0.0));
}
