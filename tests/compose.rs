//! The compose stack from compose/: one command brings up sonde, a labelled demo service and a
//! real Prometheus server, and Prometheus shows the demo's histograms with container labels.
//! Then, with gRPC and outgoing HTTP traffic added, every panel query of the shipped dashboard
//! and every recording rule returns data from that Prometheus, which loaded the rules.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::prometheus::{self, Shipped};
use support::*;

struct Stack {
    project: String,
}

impl Stack {
    /// This run's own image tags: other engineers' runs on the same engine build theirs.
    fn images(&self) -> [(&'static str, String); 3] {
        ["sonde", "demo", "prometheus"].map(|what| {
            let var = match what {
                "sonde" => "SONDE_IMAGE",
                "demo" => "DEMO_IMAGE",
                _ => "PROMETHEUS_IMAGE",
            };
            (var, format!("sonde-test/{what}:{}", self.project))
        })
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args([
                "-f",
                concat!(env!("CARGO_MANIFEST_DIR"), "/compose/docker-compose.yml"),
            ])
            .args(["-p", &self.project, "down", "-t", "2"])
            .envs(self.images())
            .output();
        for (_, tag) in self.images() {
            let _ = Command::new("docker").args(["rmi", &tag]).output();
        }
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
    let stack = Stack {
        project: project.clone(),
    };
    let st = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/compose/up.sh"))
        .envs(stack.images())
        .env("COMPOSE_PROJECT", &project)
        .env("DEMO_PORT", demo.to_string())
        .env("SONDE_PORT", sonde.to_string())
        .env("PROMETHEUS_PORT", prometheus.to_string())
        .status()
        .expect("run compose/up.sh");
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
    shipped_queries_return_data(&project, demo, sonde, prometheus);
}

/// A static Go target from target/go-targets in an image `FROM scratch`, run labelled for
/// sonde on the host network; removed when dropped.
fn run_labelled(binary: &std::path::Path, what: &str, args: &[String]) -> Container {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/{what}-image"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(binary, dir.join("server")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY server /server\nENTRYPOINT [\"/server\"]\n",
    )
    .unwrap();
    let tag = format!("sonde-test/{what}:latest");
    docker(&["build", "-q", "-t", &tag, dir.to_str().unwrap()]);
    let name = container_name(what);
    let mut a = vec![
        "run",
        "-d",
        "--network",
        "host",
        "--label",
        "sonde.enable=true",
        "--name",
        &name,
        &tag,
    ];
    a.extend(args.iter().map(String::as_str));
    let id = docker(&a);
    Container { id, name }
}

/// The newest static gRPC target in target/go-targets (scripts/test.sh builds them first);
/// built with scripts/build-grpc-targets.sh when there is none.
fn grpc_target() -> std::path::PathBuf {
    let out = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/go-targets");
    let newest = || {
        let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(&out)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with("grpcserver-") && n.ends_with("-static-plain")
            })
            .collect();
        v.sort();
        v.pop()
    };
    if let Some(p) = newest() {
        return p;
    }
    let st = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/build-grpc-targets.sh"
        ))
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run scripts/build-grpc-targets.sh");
    assert!(st.success(), "scripts/build-grpc-targets.sh failed");
    newest().expect("a static gRPC target")
}

/// gRPC calls (server and client, OK and not) and outgoing HTTP calls (5xx and refused)
/// beside the demo, then every shipped query must return data from the stack's Prometheus;
/// the same check on a dashboard with a renamed metric names its panels.
fn shipped_queries_return_data(project: &str, demo: u16, sonde: u16, prom: u16) {
    let (grpc_port, http_port, closed) = (free_port(), free_port(), free_port());
    let grpc = run_labelled(
        &grpc_target(),
        "grpcserver",
        &[
            "-port".into(),
            grpc_port.to_string(),
            "-closed".into(),
            closed.to_string(),
        ],
    );
    let caller = Container::run(
        &container_name("caller"),
        http_port,
        &[("sonde.enable", "true")],
    );
    // By PID in sonde's log: other containers on this engine may be labelled too.
    let sonde_container = format!("{project}_sonde_1");
    for c in [&grpc, &caller] {
        let want = format!("instrumented pid {} ", c.pid());
        let t = Instant::now();
        loop {
            let out = Command::new("docker")
                .args(["logs", &sonde_container])
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            if log.contains(&want) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{} not instrumented:\n{log}",
                c.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    docker(&["kill", "-s", "USR1", &grpc.id]);
    for url in [
        format!("127.0.0.1:{demo}/503"),
        format!("127.0.0.1:{closed}/"),
    ] {
        http(
            "GET",
            &format!("http://127.0.0.1:{http_port}/call?url=http://{url}"),
            0,
        );
    }
    for path in ["/", "/404", "/500"] {
        http("GET", &format!("http://127.0.0.1:{demo}{path}"), 0);
    }
    let rules = prometheus::api(prom, "rules");
    let groups: Vec<&serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let mut names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["sonde-alerts", "sonde-red"], "{rules}");
    let loaded: Vec<&serde_json::Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(loaded.len(), 32, "{rules}");
    assert!(loaded.iter().all(|r| r["health"] != "err"), "{rules}");
    let shipped = prometheus::shipped_queries();
    assert!(shipped.len() > 40, "{} queries", shipped.len());
    let t = Instant::now();
    let empty = loop {
        let empty = prometheus::empty_queries(prom, &shipped);
        if empty.is_empty() || t.elapsed() > Duration::from_secs(40) {
            break empty;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        empty.is_empty(),
        "queries without data:\n{}\nsonde:\n{}",
        empty.join("\n"),
        scrape(sonde)
    );
    for label in ["service_name", "service_namespace", "container_name"] {
        let v = prometheus::api(prom, &format!("label/{label}/values"));
        assert!(
            v["data"].as_array().is_some_and(|a| !a.is_empty()),
            "dashboard variable on {label}: {v}"
        );
    }
    // The fixture: the dashboard as if sonde had renamed gRPC's server metric.
    let json = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dashboards/sonde-red.json"
    ))
    .unwrap()
    .replace(
        "rpc_server_call_duration_seconds",
        "rpc_server_duration_seconds",
    );
    let renamed: Vec<Shipped> = prometheus::dashboard_queries(&json);
    let panels: std::collections::BTreeSet<&str> = renamed
        .iter()
        .filter(|q| prometheus::query(prom, &q.expr).is_empty())
        .map(|q| q.origin.as_str())
        .collect();
    assert_eq!(
        panels.into_iter().collect::<Vec<_>>(),
        [
            "panel \"Server calls by method and status\"",
            "panel \"Server error ratio (status not OK)\"",
            "panel \"Server latency by method (p50, p95, p99)\""
        ],
        "renamed metric: the empty panels"
    );
}
