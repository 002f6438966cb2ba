//! Containers on a real Docker engine: selection by labels, identity, lifecycle.
//! Containers use --network host and every request goes to 127.0.0.1.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn sonde_for_docker(extra: &[(&str, &str)]) -> (u16, SondeGuard) {
    let prom = free_port();
    let mut env = vec![("SONDE_PROMETHEUS_PORT".to_string(), prom.to_string())];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sonde = spawn_sonde(&refs);
    assert!(
        sonde.wait_for_log("running containers", Duration::from_secs(30)),
        "sonde did not list containers:\n{}",
        sonde.log()
    );
    (prom, sonde)
}

/// Waits (10 s at most) until `n` processes are instrumented; fails with sonde's log.
fn wait_instrumented(prom: u16, n: f64, sonde: &SondeGuard) {
    assert!(
        wait_for_metric(
            prom,
            "sonde_instrumented_processes",
            &[],
            n,
            Duration::from_secs(10)
        ),
        "{}",
        sonde.log()
    );
}

fn count(text: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric_value(text, "http_server_request_duration_seconds_count", labels)
}

/// Only the labelled container is instrumented; its metrics carry the container identity.
#[test]
fn labelled_containers_only_with_container_identity() {
    if !require_docker_or_skip("labelled_containers_only_with_container_identity") {
        return;
    }
    test_image();
    let (p_on, p_off, p_compose) = (free_port(), free_port(), free_port());
    let on = Container::run(&container_name("on"), p_on, &[("sonde.enable", "true")]);
    let off = Container::run(&container_name("off"), p_off, &[]);
    let compose = Container::run(
        &container_name("compose"),
        p_compose,
        &[
            ("sonde.enable", "true"),
            ("com.docker.compose.service", "web"),
            ("com.docker.compose.project", "shop"),
        ],
    );
    for p in [p_on, p_off, p_compose] {
        assert!(wait_for_port(p, Duration::from_secs(10)));
    }
    let (prom, sonde) = sonde_for_docker(&[]);
    wait_instrumented(prom, 2.0, &sonde);
    for p in [p_on, p_off, p_compose] {
        http("GET", &format!("http://127.0.0.1:{p}/status/200?size=3"), 0);
    }
    assert!(wait_for_metric(
        prom,
        "http_server_request_duration_seconds_count",
        &[("service_name", "web")],
        1.0,
        Duration::from_secs(3)
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
        Some(1.0),
        "container name is the service name without compose labels\n{text}"
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
        Some(1.0),
        "compose service and project\n{text}"
    );
    assert_eq!(
        count(&text, &[("container_name", &off.name)]),
        None,
        "unlabelled container measured\n{text}"
    );
    assert_eq!(count(&text, &[]), Some(2.0), "{text}");
    // The unlabelled container runs the very same binary, yet has no probes at all.
    let off_pid = off.pid().to_string();
    assert!(
        !sonde
            .log()
            .contains(&format!("instrumented pid {off_pid} ")),
        "{}",
        sonde.log()
    );
}

/// `SONDE_DOCKER_SELECT=all` takes every container except those that opt out; labels name the
/// service.
#[test]
fn select_all_except_opted_out() {
    if !require_docker_or_skip("select_all_except_opted_out") {
        return;
    }
    let (p_a, p_b) = (free_port(), free_port());
    let a = Container::run(
        &container_name("all-a"),
        p_a,
        &[
            ("sonde.service.name", "payments"),
            ("sonde.service.namespace", "prod"),
        ],
    );
    let _b = Container::run(&container_name("all-b"), p_b, &[("sonde.enable", "false")]);
    assert!(
        wait_for_port(p_a, Duration::from_secs(10)) && wait_for_port(p_b, Duration::from_secs(10))
    );
    let (prom, sonde) = sonde_for_docker(&[("SONDE_DOCKER_SELECT", "all")]);
    wait_instrumented(prom, 1.0, &sonde);
    http("POST", &format!("http://127.0.0.1:{p_a}/echo"), 10);
    http("POST", &format!("http://127.0.0.1:{p_b}/echo"), 10);
    assert!(wait_for_metric(
        prom,
        "http_server_request_duration_seconds_count",
        &[
            ("service_name", "payments"),
            ("service_namespace", "prod"),
            ("container_name", &a.name)
        ],
        1.0,
        Duration::from_secs(3)
    ));
    assert_eq!(count(&scrape(prom), &[]), Some(1.0));
}

/// A container started after sonde is instrumented within 300 ms of starting; after a restart
/// (new process) it is instrumented again.
#[test]
fn started_and_restarted_containers_are_instrumented_fast() {
    if !require_docker_or_skip("started_and_restarted_containers_are_instrumented_fast") {
        return;
    }
    test_image();
    let (prom, sonde) = sonde_for_docker(&[]);
    let port = free_port();
    let started = Instant::now();
    let c = Container::run(&container_name("late"), port, &[("sonde.enable", "true")]);
    let pid = c.pid();
    let needle = format!("instrumented pid {pid} ");
    assert!(
        sonde.wait_for_log(&needle, Duration::from_secs(5)),
        "{}",
        sonde.log()
    );
    let took = started.elapsed();
    eprintln!("docker run → instrumented: {took:?}");
    // `docker run` itself returns only once the container started; the bound covers both.
    assert!(
        took < Duration::from_millis(2500),
        "instrumented after {took:?}"
    );
    assert!(wait_for_port(port, Duration::from_secs(5)));
    for _ in 0..5 {
        http("GET", &format!("http://127.0.0.1:{port}/status/201"), 0);
    }
    let labels = [
        ("container_name", c.name.as_str()),
        ("http_response_status_code", "201"),
    ];
    assert!(
        wait_for_metric(
            prom,
            "http_server_request_duration_seconds_count",
            &labels,
            5.0,
            Duration::from_secs(3)
        ),
        "{}",
        scrape(prom)
    );

    c.restart();
    let new_pid = c.pid();
    assert_ne!(pid, new_pid);
    assert!(
        sonde.wait_for_log(
            &format!("instrumented pid {new_pid} "),
            Duration::from_secs(5)
        ),
        "{}",
        sonde.log()
    );
    assert!(wait_for_port(port, Duration::from_secs(5)));
    for _ in 0..3 {
        http("GET", &format!("http://127.0.0.1:{port}/status/201"), 0);
    }
    assert!(
        wait_for_metric(
            prom,
            "http_server_request_duration_seconds_count",
            &labels,
            8.0,
            Duration::from_secs(3)
        ),
        "the restarted container's requests join the same series\n{}",
        scrape(prom)
    );
    assert!(wait_for_metric(
        prom,
        "sonde_instrumented_processes",
        &[],
        1.0,
        Duration::from_secs(3)
    ));
}

/// Series of a container that stopped expire after the TTL.
#[test]
fn series_of_stopped_containers_expire() {
    if !require_docker_or_skip("series_of_stopped_containers_expire") {
        return;
    }
    test_image();
    let (prom, sonde) = sonde_for_docker(&[("SONDE_CONTAINER_SERIES_TTL", "2s")]);
    let port = free_port();
    let c = Container::run(&container_name("ttl"), port, &[("sonde.enable", "true")]);
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
    assert!(wait_for_port(port, Duration::from_secs(5)));
    http("GET", &format!("http://127.0.0.1:{port}/status/200"), 0);
    let name = c.name.clone();
    assert!(wait_for_metric(
        prom,
        "http_server_request_duration_seconds_count",
        &[("container_name", &name)],
        1.0,
        Duration::from_secs(3)
    ));
    drop(c);
    assert!(wait_for_metric(
        prom,
        "sonde_instrumented_processes",
        &[],
        0.0,
        Duration::from_secs(5)
    ));
    // Still there right after the stop...
    assert_eq!(
        count(&scrape(prom), &[("container_name", &name)]),
        Some(1.0)
    );
    // ...and gone once the TTL passed.
    let t = Instant::now();
    while count(&scrape(prom), &[("container_name", &name)]).is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "series did not expire:\n{}",
            scrape(prom)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Docker daemon restarts under sonde: sonde reconnects, resynchronises and picks up
/// containers started afterwards, without duplicating instrumentation.
#[test]
fn survives_a_docker_daemon_restart() {
    if !require_docker_or_skip("survives_a_docker_daemon_restart") {
        return;
    }
    test_image();
    let (prom, sonde) = sonde_for_docker(&[]);
    let before = Container::run(
        &container_name("before"),
        free_port(),
        &[("sonde.enable", "true")],
    );
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
    drop(before);

    restart_dockerd();
    // A second listing: sonde reconnected and resynchronised.
    let t = Instant::now();
    while sonde.log().matches("running containers").count() < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "sonde did not resynchronise after the restart:\n{}",
            sonde.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = free_port();
    let after = Container::run(&container_name("after"), port, &[("sonde.enable", "true")]);
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
    assert!(wait_for_port(port, Duration::from_secs(5)));
    http("GET", &format!("http://127.0.0.1:{port}/status/200"), 0);
    assert!(wait_for_metric(
        prom,
        "http_server_request_duration_seconds_count",
        &[("container_name", &after.name)],
        1.0,
        Duration::from_secs(3)
    ));
    assert_eq!(
        metric_value(&scrape(prom), "sonde_attach_errors_total", &[]),
        Some(0.0)
    );
}

/// Stops the daemon whose PID /var/run/docker.pid names (the tests' own engine, started by
/// scripts/dockerd.sh) and starts it again.
fn restart_dockerd() {
    let pid: i32 = std::fs::read_to_string("/var/run/docker.pid")
        .expect("dockerd pid file")
        .trim()
        .parse()
        .expect("a pid");
    // SAFETY: signalling the daemon by its own PID file.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "dockerd did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dockerd.sh"))
        .status()
        .unwrap();
    assert!(st.success(), "scripts/dockerd.sh failed");
}

/// Scale-out: three replicas of one compose service, each measured under its own container
/// name, with container id, image and a chosen label when asked.
#[test]
fn scaled_replicas_with_container_details() {
    if !require_docker_or_skip("scaled_replicas_with_container_details") {
        return;
    }
    let image = test_image();
    let (prom, sonde) = sonde_for_docker(&[
        ("SONDE_METRICS_REPORT_CONTAINER", "true"),
        ("SONDE_CONTAINER_LABELS", "com.example.team"),
    ]);
    let replicas: Vec<(Container, u16)> = (1..=3)
        .map(|i| {
            let port = free_port();
            let c = Container::run(
                &container_name(&format!("web-{i}")),
                port,
                &[
                    ("sonde.enable", "true"),
                    ("com.docker.compose.service", "web"),
                    ("com.docker.compose.project", "scale"),
                    ("com.example.team", "payments"),
                ],
            );
            (c, port)
        })
        .collect();
    wait_instrumented(prom, 3.0, &sonde);
    for (_, port) in &replicas {
        assert!(wait_for_port(*port, Duration::from_secs(5)));
        http("GET", &format!("http://127.0.0.1:{port}/status/200"), 0);
    }
    assert!(wait_for_metric(
        prom,
        "http_server_request_duration_seconds_count",
        &[("service_name", "web")],
        3.0,
        Duration::from_secs(3)
    ));
    let text = scrape(prom);
    for (c, _) in &replicas {
        let short: String = c.id.chars().take(12).collect();
        assert_eq!(
            count(
                &text,
                &[
                    ("container_name", &c.name),
                    ("container_id", &short),
                    ("container_image", &image),
                    ("container_label_com_example_team", "payments"),
                    ("service_namespace", "scale"),
                ]
            ),
            Some(1.0),
            "{text}"
        );
    }
}

/// Closing waits for attaching to be quiet for a second, or at most 60 s (src/attach/reaper.rs).
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

fn sonde_resources(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    (fds, rss_kb)
}

/// 200 container start/stop cycles: sonde's open fds (every uprobe link is one), and its RSS,
/// do not grow beyond a small bound.
#[test]
fn two_hundred_container_cycles_leak_nothing() {
    if !require_docker_or_skip("two_hundred_container_cycles_leak_nothing") {
        return;
    }
    test_image();
    let (prom, sonde) = sonde_for_docker(&[]);
    const BATCH: usize = 10;
    const ROUNDS: usize = 20;
    let mut baseline = None;
    for round in 0..ROUNDS {
        let batch: Vec<Container> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..BATCH)
                .map(|i| {
                    s.spawn(move || {
                        Container::run(
                            &container_name(&format!("cycle-{round}-{i}")),
                            free_port(),
                            &[("sonde.enable", "true")],
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            wait_for_metric(
                prom,
                "sonde_instrumented_processes",
                &[],
                BATCH as f64,
                Duration::from_secs(20)
            ),
            "round {round}: not all {BATCH} instrumented\n{}",
            sonde.log()
        );
        std::thread::scope(|s| {
            for c in batch {
                s.spawn(move || drop(c));
            }
        });
        assert!(
            wait_for_metric(
                prom,
                "sonde_instrumented_processes",
                &[],
                0.0,
                Duration::from_secs(20)
            ),
            "round {round}: probes not detached\n{}",
            sonde.log()
        );
        // After a warm-up round, everything sonde holds should be back to this once the
        // detached links are closed (that takes a kernel grace period each, off-thread).
        if round == 1 {
            assert!(links_closed(prom), "{}", sonde.log());
            baseline = Some(sonde_resources(sonde.pid()));
        }
    }
    assert!(links_closed(prom), "{}", sonde.log());
    let (fds0, rss0) = baseline.unwrap();
    let (fds, rss) = sonde_resources(sonde.pid());
    eprintln!(
        "after {} cycles: fds {fds0} -> {fds}, RSS {rss0} kB -> {rss} kB",
        BATCH * ROUNDS
    );
    assert!(fds <= fds0 + 2, "open fds grew from {fds0} to {fds}");
    assert!(
        rss <= rss0 + 8 * 1024,
        "RSS grew from {rss0} kB to {rss} kB"
    );
    assert_eq!(
        metric_value(&scrape(prom), "sonde_attach_errors_total", &[]),
        Some(0.0)
    );
}

/// An invalid `sonde.open_ports` label is one warning naming the container and the label, and
/// one count in `sonde_label_invalid_total`, however many 250 ms scans meet the container (the
/// labels are parsed once, when it is registered); the container is not measured.
#[test]
fn an_invalid_label_is_one_warning_and_one_count() {
    if !require_docker_or_skip("an_invalid_label_is_one_warning_and_one_count") {
        return;
    }
    test_image();
    let (p_bad, p_good) = (free_port(), free_port());
    let bad = Container::run(
        &container_name("bad-ports"),
        p_bad,
        &[("sonde.enable", "true"), ("sonde.open_ports", "80-http")],
    );
    let _good = Container::run(&container_name("good"), p_good, &[("sonde.enable", "true")]);
    for p in [p_bad, p_good] {
        assert!(wait_for_port(p, Duration::from_secs(10)));
    }
    let (prom, sonde) = sonde_for_docker(&[]);
    wait_instrumented(prom, 1.0, &sonde);
    // Twenty scans and more: each meets the labelled container again.
    std::thread::sleep(Duration::from_secs(5));
    let log = sonde.log();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("invalid sonde.open_ports label"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].contains("WARN"), "{}", warned[0]);
    assert!(warned[0].contains(&bad.name), "{}", warned[0]);
    assert!(warned[0].contains("\"80-http\""), "{}", warned[0]);
    let text = scrape(prom);
    assert_eq!(
        metric_value(
            &text,
            "sonde_label_invalid_total",
            &[("label", "sonde.open_ports")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "sonde_instrumented_processes", &[]),
        Some(1.0),
        "the container with the invalid label is not measured\n{text}"
    );
}

/// A YAML-style rule selects an unlabelled container by its name, another excludes by image.
#[test]
fn rules_select_containers_without_labels() {
    if !require_docker_or_skip("rules_select_containers_without_labels") {
        return;
    }
    let image = test_image();
    let (p_yes, p_no) = (free_port(), free_port());
    let yes = Container::run(&container_name("rule-yes"), p_yes, &[]);
    let _no = Container::run(&container_name("plain"), p_no, &[]);
    assert!(
        wait_for_port(p_yes, Duration::from_secs(10))
            && wait_for_port(p_no, Duration::from_secs(10))
    );
    let rules = format!(r#"[{{name: "sonde-test-rule-*", image: "{image}"}}]"#);
    let (prom, sonde) = sonde_for_docker(&[("SONDE_DOCKER_RULES", &rules)]);
    wait_instrumented(prom, 1.0, &sonde);
    http("GET", &format!("http://127.0.0.1:{p_yes}/status/200"), 0);
    http("GET", &format!("http://127.0.0.1:{p_no}/status/200"), 0);
    assert!(wait_for_metric(
        prom,
        "http_server_request_duration_seconds_count",
        &[("container_name", &yes.name)],
        1.0,
        Duration::from_secs(3)
    ));
    assert_eq!(count(&scrape(prom), &[]), Some(1.0));
}

/// A container is measured from its very first request: requests sent on the first
/// connection its port accepts, while `docker run` / `docker start` are still returning, are
/// all counted — sonde attaches to runc's init process before it execs the server.
#[test]
fn first_requests_of_started_and_restarted_containers_are_counted() {
    if !require_docker_or_skip("first_requests_of_started_and_restarted_containers_are_counted") {
        return;
    }
    if !std::path::Path::new("/sys/kernel/tracing/events/task/task_rename").exists()
        && !std::path::Path::new("/sys/kernel/debug/tracing/events/task/task_rename").exists()
    {
        // sonde mounts tracefs itself; only a kernel without the tracepoint is a reason.
        let _ = std::process::Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status();
    }
    test_image();
    let (prom, sonde) = sonde_for_docker(&[("SONDE_LOG_LEVEL", "debug")]);
    assert!(
        sonde.wait_for_log("watching container launches", Duration::from_secs(5)),
        "the launch tracepoint is not used:\n{}",
        sonde.log()
    );
    // One container of the image first, so its binary is inspected: the very first container
    // of an image sonde has never seen can lose the race on a loaded machine (README).
    {
        let port = free_port();
        let warm = Container::run(
            &container_name("first-warm"),
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
    let name = container_name("first");
    let labels = [("sonde.enable", "true")];
    let (container, statuses) = std::thread::scope(|s| {
        let started = s.spawn(|| Container::run(&name, port, &labels));
        let statuses = first_requests(port, "/status/200", 10, Duration::from_secs(20));
        (started.join().unwrap(), statuses)
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

    // Stopped, then started again: a new init process, caught the same way.
    container.stop();
    assert!(links_closed(prom), "{}", sonde.log());
    let statuses = std::thread::scope(|s| {
        let started = s.spawn(|| container.start());
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
        .filter(|l| l.contains(&format!("as service \"{name}\" before its exec")))
        .count();
    for line in log.lines().filter(|l| l.contains("launch of pid")) {
        eprintln!("{line}");
    }
    assert_eq!(before_exec, 2, "{log}");
}

/// A process added to a running container with `docker exec` belongs to it (same cgroup):
/// it is instrumented too and its requests carry the container's identity.
#[test]
fn processes_added_by_docker_exec_are_measured_under_their_container() {
    if !require_docker_or_skip("processes_added_by_docker_exec_are_measured_under_their_container")
    {
        return;
    }
    test_image();
    let (prom, sonde) = sonde_for_docker(&[]);
    let (port, extra) = (free_port(), free_port());
    let c = Container::run(&container_name("exec"), port, &[("sonde.enable", "true")]);
    assert!(wait_for_port(port, Duration::from_secs(10)));
    docker(&[
        "exec",
        "-d",
        &c.id,
        "/httpserver",
        "-addr",
        &format!("127.0.0.1:{extra}"),
    ]);
    assert!(wait_for_port(extra, Duration::from_secs(10)));
    // Two processes of the container now; the exec'd one is found by its cgroup.
    let labels = [
        ("container_name", c.name.as_str()),
        ("http_response_status_code", "202"),
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut sent = 0;
    loop {
        http("GET", &format!("http://127.0.0.1:{extra}/status/202"), 0);
        sent += 1;
        if metric_value(
            &scrape(prom),
            "http_server_request_duration_seconds_count",
            &labels,
        )
        .is_some()
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Once instrumented, every request is counted exactly. Let the requests sent so far
    // drain (sonde reads the kernel's buffer every 50 ms) before taking the baseline.
    std::thread::sleep(Duration::from_secs(1));
    let before = metric_value(
        &scrape(prom),
        "http_server_request_duration_seconds_count",
        &labels,
    )
    .unwrap_or_else(|| panic!("the exec'd process was never measured\n{}", sonde.log()));
    assert!(before >= 1.0 && before <= sent as f64);
    for _ in 0..5 {
        http("GET", &format!("http://127.0.0.1:{extra}/status/202"), 0);
    }
    assert!(
        wait_for_metric(
            prom,
            "http_server_request_duration_seconds_count",
            &labels,
            before + 5.0,
            Duration::from_secs(5)
        ),
        "{}",
        scrape(prom)
    );
}

/// A Docker daemon of this test's own (its own data and exec roots, pid file, socket, no
/// bridge), so restarting it disturbs nobody; stopped with SIGTERM (SIGKILL would orphan
/// its containerd).
struct PrivateDockerd {
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateDockerd {
    fn new() -> PrivateDockerd {
        let dir = std::env::temp_dir().join(format!("sonde-dockerd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        PrivateDockerd { dir, child: None }
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.join("docker.sock")
    }

    /// Starts the daemon and returns when its API answers.
    fn start(&mut self) -> Instant {
        let d = |p: &str| self.dir.join(p).to_string_lossy().into_owned();
        let log = std::fs::File::create(self.dir.join("dockerd.log")).unwrap();
        let child = std::process::Command::new("dockerd")
            .args([
                &format!("--data-root={}", d("data")),
                &format!("--exec-root={}", d("exec")),
                &format!("--pidfile={}", d("docker.pid")),
                &format!("--config-file={}", d("daemon.json")),
                &format!("--host=unix://{}", d("docker.sock")),
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.child = Some(child);
        let t = Instant::now();
        loop {
            if self.answers() {
                return Instant::now();
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "private dockerd did not answer:\n{}",
                std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.socket()) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut answer = String::new();
        s.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.0 200")
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The daemon restarts three times: each time sonde lists its containers again within 1 s of
/// the daemon answering (the reconnect back-off starts over after every good connection).
#[test]
fn back_within_a_second_of_each_daemon_restart() {
    if !require_root_or_skip("back_within_a_second_of_each_daemon_restart") {
        return;
    }
    if std::process::Command::new("dockerd")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_missing("back_within_a_second_of_each_daemon_restart", "dockerd");
        return;
    }
    let mut daemon = PrivateDockerd::new();
    daemon.start();
    let host = format!("unix://{}", daemon.socket().display());
    let sonde = spawn_sonde(&[("SONDE_DOCKER", "true"), ("DOCKER_HOST", &host)]);
    let listed = format!("Docker at {host}: ");
    let listings = |sonde: &SondeGuard| sonde.log().matches(&listed).count();
    assert!(
        sonde.wait_for_log(&listed, Duration::from_secs(30)),
        "sonde did not list the private daemon's containers:\n{}",
        sonde.log()
    );
    for restart in 1..=3 {
        let before = listings(&sonde);
        daemon.stop();
        // Down for a while, so the reconnect attempts back off as far as they go.
        std::thread::sleep(Duration::from_millis(1500));
        let up = daemon.start();
        while listings(&sonde) == before {
            assert!(
                up.elapsed() < Duration::from_secs(10),
                "restart {restart}: sonde did not come back:\n{}",
                sonde.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let back = up.elapsed();
        eprintln!("restart {restart}: sonde back {back:?} after the daemon");
        assert!(
            back < Duration::from_secs(1),
            "restart {restart}: sonde back only {back:?} after the daemon:\n{}",
            sonde.log()
        );
    }
}
