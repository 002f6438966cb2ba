//! Containers on a real Podman (its Docker-compatible API service, runc as the runtime):
//! selection by labels, identity, and the first request of a starting container.
//! Containers use --network host and every request goes to 127.0.0.1.

mod support;

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use support::*;

const SOCKET: &str = "/run/podman/podman.sock";

/// Whether Podman and its API service answer; says why not when they do not.
fn require_podman_or_skip(test: &str) -> bool {
    if !require_root_or_skip(test) {
        return false;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        return skip_missing(test, "podman");
    }
    let answers = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "2",
            "--unix-socket",
            SOCKET,
            "http://d/_ping",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !answers {
        // The service is shared by every test (and engineer): start it once if nobody has.
        let _ = Command::new("bash").arg("scripts/podman.sh").status();
    }
    true
}

/// Runs `podman` with these arguments; fails the test with its stderr unless it succeeds.
fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .output()
        .expect("run podman");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The static Go test server in an image `FROM scratch`, built with Podman once.
fn podman_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let dir = scratch_image_context("target/podman-image", "Containerfile");
            let tag = "localhost/sonde-test/httpserver:latest".to_string();
            podman(&["build", "-q", "-t", &tag, dir.to_str().unwrap()]);
            tag
        })
        .clone()
}

/// A Podman container this test started, removed (by its id) when dropped.
struct Pod {
    id: String,
    name: String,
}

impl Pod {
    /// `podman create` + `podman start`, as this VM needs them: runc (crun refuses the hybrid
    /// cgroups), rlimits within what the sandbox may set, the host's network.
    fn create(name: &str, port: u16, labels: &[(&str, &str)]) -> Pod {
        let image = podman_image();
        let mut args: Vec<String> = [
            "create",
            "--runtime",
            "runc",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--network",
            "host",
            "--name",
            name,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (k, v) in labels {
            args.extend(["--label".to_string(), format!("{k}={v}")]);
        }
        args.extend([image, "-addr".into(), format!("127.0.0.1:{port}")]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Pod {
            id: podman(&refs),
            name: name.to_string(),
        }
    }

    fn run(name: &str, port: u16, labels: &[(&str, &str)]) -> Pod {
        let pod = Pod::create(name, port, labels);
        pod.start();
        pod
    }

    fn start(&self) {
        podman(&["start", &self.id]);
    }

    fn stop(&self) {
        podman(&["stop", "-t", "1", &self.id]);
    }

    fn pid(&self) -> u32 {
        podman(&["inspect", "-f", "{{.State.Pid}}", &self.id])
            .parse()
            .unwrap()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.id])
            .output();
    }
}

fn sonde_for_podman(extra: &[(&str, &str)]) -> (u16, SondeGuard) {
    let prom = free_port();
    let mut env = vec![("SONDE_PROMETHEUS_PORT".to_string(), prom.to_string())];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sonde = spawn_sonde(&refs);
    assert!(
        sonde.wait_for_log("Podman: ", Duration::from_secs(30)),
        "sonde did not list Podman's containers:\n{}",
        sonde.log()
    );
    (prom, sonde)
}

/// The links of exited containers are closed (attaching quiet for a second, at most 60 s:
/// src/attach/reaper.rs), so that closing them does not hold up the next attach.
/// Armed files' links (an image's program armed at its container's creation) stay.
fn links_closed(prom: u16) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(75) {
        let text = scrape(prom);
        let links = metric_value(&text, "sonde_uprobe_links", &[]);
        if links.is_some() && links == metric_value(&text, "sonde_armed_uprobe_links", &[]) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn count(text: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric_value(text, "http_server_request_duration_seconds_count", labels)
}

/// Only the labelled Podman containers are instrumented, with the container identity
/// (compose labels too); every request is counted exactly.
#[test]
fn labelled_podman_containers_only_with_identity() {
    if !require_podman_or_skip("labelled_podman_containers_only_with_identity") {
        return;
    }
    let (p_on, p_off, p_compose) = (free_port(), free_port(), free_port());
    let on = Pod::run(
        &container_name("podman-on"),
        p_on,
        &[("sonde.enable", "true")],
    );
    let off = Pod::run(&container_name("podman-off"), p_off, &[]);
    let compose = Pod::run(
        &container_name("podman-compose"),
        p_compose,
        &[
            ("sonde.enable", "true"),
            ("io.podman.compose.project", "shop"),
            ("com.docker.compose.service", "web"),
        ],
    );
    for p in [p_on, p_off, p_compose] {
        assert!(wait_for_port(p, Duration::from_secs(10)));
    }
    let (prom, sonde) = sonde_for_podman(&[]);
    for pid in [on.pid(), compose.pid()] {
        sonde.expect_instrumented(pid, Duration::from_secs(10));
    }
    for p in [p_on, p_off, p_compose] {
        for _ in 0..4 {
            assert_eq!(
                http("GET", &format!("http://127.0.0.1:{p}/status/200?size=3"), 0).0,
                200
            );
        }
    }
    assert!(
        wait_for_metric(
            prom,
            "http_server_request_duration_seconds_count",
            &[("container_name", &compose.name)],
            4.0,
            Duration::from_secs(5)
        ),
        "{}",
        sonde.log()
    );
    assert!(wait_for_metric(
        prom,
        "http_server_request_duration_seconds_count",
        &[("container_name", &on.name)],
        4.0,
        Duration::from_secs(5)
    ));
    let text = scrape(prom);
    assert_eq!(
        count(
            &text,
            &[
                ("service_name", &on.name),
                ("container_name", &on.name),
                ("service_namespace", "")
            ]
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        count(
            &text,
            &[
                ("service_name", "web"),
                ("service_namespace", "shop"),
                ("container_name", &compose.name)
            ]
        ),
        Some(4.0),
        "compose service and podman-compose project\n{text}"
    );
    assert_eq!(
        count(&text, &[("container_name", &off.name)]),
        None,
        "unlabelled container measured\n{text}"
    );
    let off_pid = off.pid().to_string();
    assert!(
        !sonde
            .log()
            .contains(&format!("instrumented pid {off_pid} ")),
        "{}",
        sonde.log()
    );
}

/// A labelled Podman container is measured from its very first request (sent the moment its
/// port accepts), at its first start and after a stop and start.
#[test]
fn first_requests_of_a_podman_container_are_counted() {
    if !require_podman_or_skip("first_requests_of_a_podman_container_are_counted") {
        return;
    }
    let (prom, sonde) = sonde_for_podman(&[("SONDE_LOG_LEVEL", "debug")]);
    // One container of the image first, so its binary is inspected (as in tests/docker.rs).
    {
        let port = free_port();
        let warm = Pod::run(
            &container_name("podman-warm"),
            port,
            &[("sonde.enable", "true")],
        );
        assert!(wait_for_port(port, Duration::from_secs(10)));
        assert!(
            sonde.wait_for_log(
                &format!("as service \"{}\"", warm.name),
                Duration::from_secs(10)
            ),
            "{}",
            sonde.log()
        );
    }
    assert!(links_closed(prom), "{}", sonde.log());
    let port = free_port();
    let name = container_name("podman-first");
    let pod = Pod::create(&name, port, &[("sonde.enable", "true")]);
    let statuses = std::thread::scope(|s| {
        let started = s.spawn(|| pod.start());
        let statuses = first_requests(port, "/status/200", 10, Duration::from_secs(20));
        started.join().unwrap();
        statuses
    });
    assert_eq!(statuses, vec![200; 10]);
    let counted = |n: f64| {
        wait_for_metric(
            prom,
            "http_server_request_duration_seconds_count",
            &[
                ("container_name", &name),
                ("http_response_status_code", "200"),
            ],
            n,
            Duration::from_secs(10),
        )
    };
    assert!(
        counted(10.0),
        "not every first request was counted: {:?}\n{}",
        count(&scrape(prom), &[("container_name", &name)]),
        sonde.log()
    );
    pod.stop();
    assert!(links_closed(prom), "{}", sonde.log());
    let statuses = std::thread::scope(|s| {
        let started = s.spawn(|| pod.start());
        let statuses = first_requests(port, "/status/200", 5, Duration::from_secs(20));
        started.join().unwrap();
        statuses
    });
    assert_eq!(statuses, vec![200; 5]);
    assert!(
        counted(15.0),
        "not every first request after the restart was counted: {:?}\n{}",
        count(&scrape(prom), &[("container_name", &name)]),
        sonde.log()
    );
    let log = sonde.log();
    let before_exec = log
        .lines()
        .filter(|l| {
            l.contains(&format!(
                "as service \"{name}\" before its exec: launch_path=armed"
            ))
        })
        .count();
    // The warm container armed the image's program: this one's init was only enrolled.
    assert_eq!(before_exec, 2, "{log}");
}

/// The launch path that does not depend on runc's renamed init (crun's does not rename
/// itself): Podman's `init` event and the runtime's pid file. runc's trigger is turned off,
/// so this path alone finds the init before its exec.
#[test]
fn first_requests_found_by_podmans_init_event() {
    if !require_podman_or_skip("first_requests_found_by_podmans_init_event") {
        return;
    }
    let (prom, sonde) =
        sonde_for_podman(&[("SONDE_LOG_LEVEL", "debug"), ("SONDE_RUNC_RENAME", "false")]);
    assert!(
        sonde.wait_for_log("watching Podman's event log", Duration::from_secs(10)),
        "{}",
        sonde.log()
    );
    {
        let port = free_port();
        let warm = Pod::run(
            &container_name("podman-init-warm"),
            port,
            &[("sonde.enable", "true")],
        );
        assert!(wait_for_port(port, Duration::from_secs(10)));
        assert!(
            sonde.wait_for_log(
                &format!("as service \"{}\"", warm.name),
                Duration::from_secs(10)
            ),
            "{}",
            sonde.log()
        );
    }
    assert!(links_closed(prom), "{}", sonde.log());
    let port = free_port();
    let name = container_name("podman-init");
    let pod = Pod::create(&name, port, &[("sonde.enable", "true")]);
    let statuses = std::thread::scope(|s| {
        let started = s.spawn(|| pod.start());
        let statuses = first_requests(port, "/status/200", 10, Duration::from_secs(20));
        started.join().unwrap();
        statuses
    });
    assert_eq!(statuses, vec![200; 10]);
    assert!(
        wait_for_metric(
            prom,
            "http_server_request_duration_seconds_count",
            &[
                ("container_name", &name),
                ("http_response_status_code", "200"),
            ],
            10.0,
            Duration::from_secs(10),
        ),
        "not every first request was counted: {:?}\n{}",
        count(&scrape(prom), &[("container_name", &name)]),
        sonde.log()
    );
    let log = sonde.log();
    assert!(
        log.lines()
            .any(|l| l.contains("(EngineInit)") && l.contains("launch of pid")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "as service \"{name}\" before its exec: launch_path=armed"
        )),
        "{log}"
    );
    assert!(!log.contains("(RuncInit)"), "{log}");
}
