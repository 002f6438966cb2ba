//! The selector's rules, labels, identities, named files and tracker, checked on made-up
//! processes and containers.

use super::labels::Narrow;
use super::named_files::literal_path_prefixes;
use super::*;
use std::path::PathBuf;

fn proc_(pid: u32, exe: &str, ports: &[u16], start: u64) -> HostProcess {
    HostProcess {
        pid,
        exe: PathBuf::from(exe),
        start_time: start,
        listen_ports: ports.to_vec(),
        container_id: None,
    }
}

fn container_proc(pid: u32, ports: &[u16], id: &str) -> HostProcess {
    HostProcess {
        container_id: Some(id.to_string()),
        ..proc_(pid, "/app", ports, 1)
    }
}

fn with_container(select: DockerSelect, labels: &[(&str, &str)]) -> Selector {
    let containers = Containers::default();
    containers.write().unwrap().insert(
        "c1".to_string(),
        std::sync::Arc::new(ContainerInfo {
            id: "c1".into(),
            name: "shop-web-1".into(),
            image: "web:1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }),
    );
    let config = Config {
        docker_select: select,
        ..Config::default()
    };
    Selector::new(&config).with_containers(containers)
}

#[test]
fn narrowing_labels_are_parsed_once_per_registration() {
    let s = with_container(
        DockerSelect::Labelled,
        &[
            ("sonde.enable", "true"),
            ("sonde.open_ports", "8080"),
            ("sonde.exe", "(unclosed"),
        ],
    );
    let registered = |s: &Selector| s.container_of(&container_proc(1, &[], "c1")).unwrap();
    let c = registered(&s);
    let first = s.label_rules(&c);
    assert!(matches!(first.open_ports, Narrow::Only(_)));
    assert!(matches!(first.exe, Narrow::Invalid));
    for _ in 0..10 {
        // What every 250 ms scan does: no new parse (and no new warning).
        assert!(!s.matches(&container_proc(1, &[8080], "c1")));
        assert!(std::sync::Arc::ptr_eq(
            &first,
            &s.label_rules(&registered(&s))
        ));
    }
    // Registered again (the engine's event replacing a launch's guess): parsed again, and
    // the old registration's entry is gone.
    let mut fixed = (*c).clone();
    fixed.labels.insert("sonde.exe".into(), "^/app$".into());
    let containers = s.containers.clone().unwrap();
    containers
        .write()
        .unwrap()
        .insert("c1".into(), std::sync::Arc::new(fixed));
    drop(c);
    assert!(s.matches(&container_proc(1, &[8080], "c1")));
    assert!(!s.matches(&container_proc(1, &[9090], "c1")));
    assert!(!std::sync::Arc::ptr_eq(
        &first,
        &s.label_rules(&registered(&s))
    ));
    assert_eq!(s.label_rules.lock().unwrap().len(), 1);
}

/// Each invalid label is one event (one warning, one count), however often the scans ask.
#[test]
fn invalid_labels_are_counted_once_per_registration() {
    use crate::internal_events::{read, scoped, Counter};
    let _own = scoped(std::time::Duration::from_secs(30));
    let s = with_container(
        DockerSelect::Labelled,
        &[
            ("sonde.enable", "true"),
            ("sonde.open_ports", "80-x"),
            ("sonde.go_source", "ebpf"),
        ],
    );
    for _ in 0..10 {
        assert!(!s.matches(&container_proc(1, &[80], "c1")));
        assert_eq!(s.go_source(&container_proc(1, &[80], "c1")), s.go_source);
    }
    assert_eq!(read(Counter::LabelInvalid, labels::OPEN_PORTS), 1);
    assert_eq!(read(Counter::LabelInvalid, labels::GO_SOURCE), 1);
}

#[test]
fn container_labels_select_and_narrow() {
    let on = with_container(DockerSelect::Labelled, &[("sonde.enable", "true")]);
    assert!(on.matches(&container_proc(1, &[], "c1")));
    assert!(!on.matches(&container_proc(1, &[], "other")));
    assert!(!with_container(DockerSelect::Labelled, &[]).matches(&container_proc(1, &[], "c1")));
    assert!(with_container(DockerSelect::All, &[]).matches(&container_proc(1, &[], "c1")));
    let out = with_container(DockerSelect::All, &[("sonde.enable", "false")]);
    assert!(!out.matches(&container_proc(1, &[], "c1")));
    let ports = with_container(
        DockerSelect::Labelled,
        &[("sonde.enable", "true"), ("sonde.open_ports", "8080-8081")],
    );
    assert!(ports.matches(&container_proc(1, &[8081], "c1")));
    assert!(!ports.matches(&container_proc(1, &[9000], "c1")));
    let exe = with_container(
        DockerSelect::Labelled,
        &[("sonde.enable", "true"), ("sonde.exe", "^/srv/")],
    );
    assert!(!exe.matches(&container_proc(1, &[], "c1")));
}

#[test]
fn listen_ports_are_read_only_when_a_rule_uses_them() {
    assert!(!Selector::new(&Config::default()).needs_listen_ports());
    let ports = Config {
        open_port: PortSet::parse("8080"),
        ..Config::default()
    };
    assert!(Selector::new(&ports).needs_listen_ports());
    assert!(
        !with_container(DockerSelect::Labelled, &[("sonde.enable", "true")]).needs_listen_ports()
    );
    assert!(with_container(
        DockerSelect::Labelled,
        &[("sonde.enable", "true"), ("sonde.open_ports", "8080")]
    )
    .needs_listen_ports());
}

#[test]
fn rules_select_without_labels_and_labels_win() {
    let rules: Vec<crate::config::DockerRule> =
        serde_saphyr::from_str(r#"[{name: "shop-*"}, {image: "web:*", enable: false}]"#).unwrap();
    let mut s = with_container(DockerSelect::Labelled, &[]);
    s.docker_rules = rules.clone();
    assert!(
        s.matches(&container_proc(1, &[], "c1")),
        "name rule selects"
    );
    let mut s = with_container(DockerSelect::Labelled, &[("sonde.enable", "false")]);
    s.docker_rules = rules.clone();
    assert!(
        !s.matches(&container_proc(1, &[], "c1")),
        "the container's label wins"
    );
    let mut s = with_container(DockerSelect::All, &[]);
    s.docker_rules = rules[1..].to_vec();
    assert!(
        !s.matches(&container_proc(1, &[], "c1")),
        "a rule excludes under select=all"
    );
}

#[test]
fn literal_paths_of_executable_patterns() {
    let p = |s: &str| literal_path_prefixes(s);
    assert_eq!(
        p("^/opt/app/bin/cli$"),
        [("/opt/app/bin/cli".to_string(), true)]
    );
    assert_eq!(
        p("^/opt/app/bin/.*"),
        [("/opt/app/bin/".to_string(), false)]
    );
    assert_eq!(
        p(r"^/opt/my\.app/cli\-1$"),
        [("/opt/my.app/cli-1".to_string(), true)]
    );
    // The optional character is not part of the literal.
    assert_eq!(
        p("^/usr/bin/toolx?$"),
        [("/usr/bin/tool".to_string(), false)]
    );
    assert_eq!(
        p("^/a/x$|^/b/y$"),
        [("/a/x".to_string(), true), ("/b/y".to_string(), true)]
    );
    // Names without a path name no file.
    assert!(p("server$").is_empty());
    assert!(p("(a|/b)").is_empty());
    assert!(p(".*/cli$").is_empty());
}

#[test]
fn a_name_only_pattern_names_the_matching_files_on_path() {
    use std::os::unix::fs::PermissionsExt;
    let root = std::env::temp_dir().join(format!("sonde-onpath-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (bin, other) = (root.join("bin"), root.join("other"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let make = |p: &std::path::Path, mode: u32| {
        std::fs::write(p, b"x").unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    make(&bin.join("report-cli"), 0o755);
    make(&bin.join("report-cli.txt"), 0o644);
    make(&bin.join("unrelated"), 0o755);
    // A command installed as a symlink to its real file elsewhere.
    make(&other.join("real-report-cli"), 0o755);
    std::os::unix::fs::symlink(other.join("real-report-cli"), bin.join("rc")).unwrap();
    let s = selector("", Some("report-cli$"));
    let re = regex::Regex::new("report-cli$").unwrap();
    let dirs = [bin.clone(), root.join("missing")];
    let canon = |p: std::path::PathBuf| std::fs::canonicalize(p).unwrap();
    assert_eq!(
        s.files_on_path(&re, &dirs),
        vec![
            canon(bin.join("report-cli")),
            canon(other.join("real-report-cli"))
        ]
    );
    // Listed again when the directory changes.
    make(&bin.join("new-report-cli"), 0o755);
    assert_eq!(s.files_on_path(&re, &dirs).len(), 3);
    // A pattern naming a path is not looked up on PATH.
    let t = selector("", Some(&format!("^{}/report-cli$", bin.display())));
    assert_eq!(t.named_files(), vec![canon(bin.join("report-cli"))]);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn named_files_are_the_matching_executables() {
    let dir = std::env::temp_dir().join(format!("sonde-named-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for (name, mode) in [
        ("cli-a", 0o755),
        ("cli-b", 0o755),
        ("cli-data", 0o644),
        ("other", 0o755),
    ] {
        let f = dir.join(name);
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::os::unix::fs::symlink(dir.join("cli-a"), dir.join("cli-link")).unwrap();
    let real = std::fs::canonicalize(&dir).unwrap();
    let selector = |re: String| {
        Selector::new(&Config {
            executable_name: Some(regex::Regex::new(&re).unwrap()),
            ..Config::default()
        })
    };
    let esc = regex::escape(&real.to_string_lossy());
    let mut files = selector(format!("^{esc}/cli-.*")).named_files();
    files.sort();
    // The link resolves to cli-a, listed once; the non-executable file is left out.
    assert_eq!(files, [real.join("cli-a"), real.join("cli-b")]);
    let files = selector(format!("^{esc}/other$")).named_files();
    assert_eq!(files, [real.join("other")]);
    assert!(selector("other$".into()).named_files().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn go_source_label_overrides_the_setting() {
    use crate::config::GoSource;
    let host = proc_(1, "/srv/app", &[], 1);
    let default = with_container(DockerSelect::Labelled, &[]);
    assert_eq!(default.go_source(&host), GoSource::Uprobes);
    assert_eq!(
        default.go_source(&container_proc(1, &[], "c1")),
        GoSource::Uprobes
    );
    let labelled = with_container(DockerSelect::Labelled, &[("sonde.go_source", "syscalls")]);
    assert_eq!(
        labelled.go_source(&container_proc(1, &[], "c1")),
        GoSource::Syscalls
    );
    // Another container, or a host process, keeps the setting.
    assert_eq!(labelled.go_source(&host), GoSource::Uprobes);
    assert_eq!(
        labelled.go_source(&container_proc(1, &[], "c2")),
        GoSource::Uprobes
    );
    let invalid = with_container(DockerSelect::Labelled, &[("sonde.go_source", "ebpf")]);
    assert_eq!(
        invalid.go_source(&container_proc(1, &[], "c1")),
        GoSource::Uprobes
    );
    let mut syscalls = Selector::new(&Config {
        go_source: GoSource::Syscalls,
        ..Config::default()
    });
    assert_eq!(syscalls.go_source(&host), GoSource::Syscalls);
    let containers = Containers::default();
    containers.write().unwrap().insert(
        "c1".to_string(),
        std::sync::Arc::new(ContainerInfo {
            id: "c1".into(),
            name: "grpc-1".into(),
            image: "grpc:1".into(),
            labels: [("sonde.go_source".to_string(), "uprobes".to_string())].into(),
        }),
    );
    syscalls = syscalls.with_containers(containers);
    assert_eq!(
        syscalls.go_source(&container_proc(1, &[], "c1")),
        GoSource::Uprobes
    );
}

#[test]
fn container_identity_precedence() {
    let compose = with_container(
        DockerSelect::Labelled,
        &[
            ("com.docker.compose.service", "web"),
            ("com.docker.compose.project", "shop"),
        ],
    );
    // PID 0 has no environ: the labels decide.
    let id = compose.identity(&container_proc(0, &[], "c1"));
    assert_eq!(
        (id.service_name.as_str(), id.service_namespace.as_str()),
        ("web", "shop")
    );
    assert_eq!(id.container_name.as_deref(), Some("shop-web-1"));
    let named = with_container(
        DockerSelect::Labelled,
        &[
            ("com.docker.compose.service", "web"),
            ("sonde.service.name", "checkout"),
            ("sonde.service.namespace", "prod"),
        ],
    );
    let id = named.identity(&container_proc(0, &[], "c1"));
    assert_eq!(
        (id.service_name.as_str(), id.service_namespace.as_str()),
        ("checkout", "prod")
    );
    let podman_compose = with_container(
        DockerSelect::Labelled,
        &[
            ("io.podman.compose.service", "api"),
            ("io.podman.compose.project", "store"),
        ],
    );
    let id = podman_compose.identity(&container_proc(0, &[], "c1"));
    assert_eq!(
        (id.service_name.as_str(), id.service_namespace.as_str()),
        ("api", "store")
    );
    let plain = with_container(DockerSelect::Labelled, &[]);
    assert_eq!(
        plain.identity(&container_proc(0, &[], "c1")).service_name,
        "shop-web-1"
    );
    assert!(plain
        .identity(&container_proc(0, &[], "c1"))
        .extra
        .is_empty());
}

#[test]
fn container_id_image_and_chosen_labels_on_request() {
    let mut s = with_container(DockerSelect::Labelled, &[("com.example.team", "payments")]);
    s.report_container = true;
    s.copied_labels = vec![
        (
            "com.example.team".into(),
            metric_label_name("com.example.team"),
        ),
        ("missing".into(), metric_label_name("missing")),
    ];
    let id = s.identity(&container_proc(0, &[], "c1"));
    assert_eq!(
        id.extra,
        vec![
            ("container_id", "c1".to_string()),
            ("container_image", "web:1".to_string()),
            ("container_label_com_example_team", "payments".to_string()),
            ("container_label_missing", String::new()),
        ]
    );
}

fn selector(ports: &str, exe: Option<&str>) -> Selector {
    let config = Config {
        open_port: PortSet::parse(ports),
        executable_name: exe.map(|e| regex::Regex::new(e).unwrap()),
        ..Config::default()
    };
    Selector::new(&config)
}

#[test]
fn a_binary_replaced_on_disk_is_not_a_new_process() {
    let mut t = Tracker::new(selector("9050", None));
    let first = t.update(vec![proc_(7, "/srv/app", &[9050], 100)]);
    assert_eq!(first.added.len(), 1);
    let later = t.update(vec![proc_(7, "/srv/app (deleted)", &[9050], 100)]);
    assert!(
        later.added.is_empty() && later.removed.is_empty(),
        "{later:?}"
    );
    // An exec into another file is a change, and so is a reused PID.
    let exec = t.update(vec![proc_(7, "/srv/other", &[9050], 100)]);
    assert_eq!((exec.removed.len(), exec.added.len()), (1, 1));
    let reused = t.update(vec![proc_(7, "/srv/other", &[9050], 555)]);
    assert_eq!((reused.removed, reused.added.len()), (vec![7], 1));
}

#[test]
fn port_or_executable_selects() {
    let s = selector("8080,9000-9100", Some("api$"));
    assert!(s.matches(&proc_(1, "/bin/x", &[9050], 1)));
    assert!(s.matches(&proc_(1, "/srv/api", &[], 1)));
    assert!(!s.matches(&proc_(1, "/bin/x", &[22], 1)));
}

#[test]
fn a_process_adopted_before_its_exec_stays_until_it_runs_the_program() {
    let mut t = Tracker::new(selector("8080", None));
    t.adopt(20, 7, PathBuf::from("/server"));
    // Still runc, then mid-exec: kept, nothing added or removed.
    for exe in ["/memfd:runc_cloned:/proc/self/exe (deleted)", "/"] {
        let c = t.update(vec![proc_(20, exe, &[], 7)]);
        assert!(c.added.is_empty() && c.removed.is_empty(), "{exe}: {c:?}");
    }
    let c = t.update(vec![proc_(20, "/server", &[8080], 7)]);
    assert!(c.added.is_empty() && c.removed.is_empty());
    // A scan taken before the adoption does not list the process; /proc still has it.
    let me = std::process::id();
    let my_start = crate::discover::start_time(me).unwrap();
    t.adopt(me, my_start, PathBuf::from("/server"));
    let c = t.update(vec![proc_(20, "/server", &[8080], 7)]);
    assert!(c.removed.is_empty(), "{c:?}");
    t.adopt(999_999_999, 7, PathBuf::from("/server"));
    let c = t.update(vec![proc_(20, "/server", &[8080], 7)]);
    assert!(
        c.removed.contains(&999_999_999) && !c.removed.contains(&me),
        "{c:?}"
    );
    // Confirmed: from now on an exec is an exec.
    let c = t.update(vec![proc_(20, "/bin/sh", &[], 7)]);
    assert_eq!(c.removed, vec![20]);
    // A reused PID is another process, pending or not.
    t.adopt(21, 7, PathBuf::from("/server"));
    let c = t.update(vec![proc_(21, "/server", &[], 8)]);
    assert_eq!(c.removed, vec![21]);
}

#[test]
fn tracker_adds_once_and_removes_exited_and_reused_pids() {
    let mut t = Tracker::new(selector("8080", None));
    let c = t.update(vec![
        proc_(10, "/a/svc", &[8080], 5),
        proc_(11, "/a/other", &[22], 5),
    ]);
    assert_eq!(c.added.len(), 1);
    assert_eq!(c.added[0].1.service_name, "svc");
    assert!(t
        .update(vec![proc_(10, "/a/svc", &[8080], 5)])
        .added
        .is_empty());
    // Starts listening later: selected on that later scan.
    let c = t.update(vec![
        proc_(10, "/a/svc", &[8080], 5),
        proc_(12, "/a/late", &[8080], 6),
    ]);
    assert_eq!(c.added.len(), 1);
    // PID 10 reused by another process, 12 exited.
    let c = t.update(vec![proc_(10, "/a/svc", &[8080], 99)]);
    assert_eq!(c.removed.len(), 2);
    assert_eq!(c.added.len(), 1);
}

/// A created container's image is armed only when uprobes would measure its program: the
/// `sonde.go_source` label decides, and an invalid one falls back to the setting.
#[test]
fn arming_an_image_follows_the_go_source_label() {
    let arms = |labels: &[(&str, &str)]| {
        let s = with_container(DockerSelect::Labelled, labels);
        let c = s.container_of(&container_proc(1, &[], "c1")).unwrap();
        s.arms_image(&c, std::path::Path::new("/app"))
    };
    assert!(arms(&[("sonde.enable", "true")]));
    assert!(!arms(&[
        ("sonde.enable", "true"),
        ("sonde.go_source", "syscalls")
    ]));
    assert!(arms(&[
        ("sonde.enable", "true"),
        ("sonde.go_source", "ebpf")
    ]));
    assert!(!arms(&[
        ("sonde.enable", "true"),
        ("sonde.open_ports", "8080")
    ]));
    assert!(!arms(&[]));
}
