//! The compose stack from compose/: one command brings up sonde, a labelled demo service and a
//! real Prometheus server, and Prometheus shows the demo's histograms with container labels.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

struct Stack {
    project: String,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args([
                "-f",
                concat!(env!("CARGO_MANIFEST_DIR"), "/compose/docker-compose.yml"),
            ])
            .args(["-p", &self.project, "down", "-t", "2"])
            .output();
    }
}

#[test]
fn compose_stack_reaches_prometheus() {
    if !require_docker_or_skip("compose_stack_reaches_prometheus") {
        return;
    }
    if Command::new("docker-compose")
        .arg("version")
        .output()
        .is_err()
    {
        skip_missing("compose_stack_reaches_prometheus", "docker-compose");
        return;
    }
    let project = format!("sondetest{}", std::process::id());
    let (demo, sonde, prometheus) = (free_port(), free_port(), free_port());
    let st = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/compose/up.sh"))
        .env("COMPOSE_PROJECT", &project)
        .env("DEMO_PORT", demo.to_string())
        .env("SONDE_PORT", sonde.to_string())
        .env("PROMETHEUS_PORT", prometheus.to_string())
        .status()
        .expect("run compose/up.sh");
    let _stack = Stack {
        project: project.clone(),
    };
    assert!(st.success(), "compose/up.sh failed");
    assert!(
        wait_for_port(demo, Duration::from_secs(20)),
        "the demo did not start"
    );
    assert!(
        wait_for_metric(
            sonde,
            "sonde_instrumented_processes",
            &[],
            1.0,
            Duration::from_secs(20)
        ),
        "sonde (in its container) did not instrument the demo:\n{}",
        scrape(sonde)
    );
    for path in ["/", "/", "/404", "/500", "/"] {
        http("GET", &format!("http://127.0.0.1:{demo}{path}"), 0);
    }
    let container = format!("{project}_demo_1");
    let query = "/api/v1/query?query=http_server_request_duration_seconds_count";
    let t = Instant::now();
    loop {
        let body = scrape_path(prometheus, query);
        if body.contains(&format!("\"container_name\":\"{container}\""))
            && body.contains("\"service_name\":\"demo\"")
            && body.contains(&format!("\"service_namespace\":\"{project}\""))
            && body.contains("\"http_response_status_code\":\"404\"")
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "Prometheus never showed the demo's series:\n{body}\nsonde:\n{}",
            scrape(sonde)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
