//! Loading and layering checked: Beyla's names, precedence, every key's parsing and errors,
//! the README's key tables against the table.

use super::keys::KEYS;
use super::*;
use std::collections::HashMap;

fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let m: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load(None, &|k| m.get(k).cloned())
}

#[test]
fn beyla_seed_command_line_works() {
    let c = load(&[("BEYLA_PROMETHEUS_PORT", "9400"), ("OPEN_PORT", "8080")]).unwrap();
    assert_eq!(c.prometheus_port, Some(9400));
    assert!(c.open_port.unwrap().contains(8080));
}

#[test]
fn sonde_wins_over_beyla_over_bare() {
    let c = load(&[
        ("SONDE_OPEN_PORT", "1"),
        ("BEYLA_OPEN_PORT", "2"),
        ("OPEN_PORT", "3"),
    ])
    .unwrap();
    assert_eq!(c.open_port.unwrap().ranges, vec![(1, 1)]);
}

#[test]
fn port_lists_and_ranges() {
    let p = PortSet::parse("8000-8999, 443").unwrap();
    assert!(p.contains(8500) && p.contains(443) && !p.contains(80));
    for bad in ["", "0", "80a", "9-1", "70000", "1,,2"] {
        assert!(PortSet::parse(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn errors_name_the_key_and_value() {
    let e = load(&[("SONDE_OPEN_PORT", "80a")]).unwrap_err().to_string();
    assert!(e.contains("SONDE_OPEN_PORT") && e.contains("80a"), "{e}");
    let e = load(&[("BEYLA_METRICS_NAMING", "v9")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("BEYLA_METRICS_NAMING"), "{e}");
    let e = load(&[("SONDE_PROMETHEUS_PORT", "0")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("SONDE_PROMETHEUS_PORT"), "{e}");
    assert!(load(&[("SONDE_EXECUTABLE_NAME", "(")]).is_err());
    assert!(load(&[("SONDE_METRICS_REPORT_PEER", "maybe")]).is_err());
}

#[test]
fn globs() {
    assert!(glob("shop-*", "shop-web-1"));
    assert!(glob("*web*", "shop-web-1"));
    assert!(glob("web-?", "web-1") && !glob("web-?", "web-10"));
    assert!(!glob("shop-*", "store-web"));
    assert!(glob("*", "") && glob("a*b*c", "aXXbYYc") && !glob("a*b*c", "aXXbYY"));
}

#[test]
fn docker_rules_from_env_and_yaml() {
    let c = load(&[(
        "SONDE_DOCKER_RULES",
        r#"[{name: "shop-*", labels: {team: "pay*"}}, {image: "debug/*", enable: false}]"#,
    )])
    .unwrap();
    assert_eq!(c.docker_rules.len(), 2);
    let labels = [("team".to_string(), "payments".to_string())].into();
    assert!(c.docker_rules[0].matches("shop-web-1", "web:1", &labels));
    assert!(!c.docker_rules[0].matches("shop-web-1", "web:1", &Default::default()));
    assert!(!c.docker_rules[1].enable);
    let e = load(&[("SONDE_DOCKER_RULES", "[{nmae: x}]")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("SONDE_DOCKER_RULES"), "{e}");
    assert!(load(&[("SONDE_DOCKER_RULES", "[{enable: true}]")]).is_err());

    let dir = std::env::temp_dir().join(format!("sonde-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("c.yaml");
    std::fs::write(
        &f,
        "docker_rules:\n  - name: \"web-*\"\n    image: \"shop/*\"\n",
    )
    .unwrap();
    let c = Config::load(Some(&f), &|_| None).unwrap();
    assert_eq!(c.docker_rules[0].image.as_deref(), Some("shop/*"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn syscall_source_key() {
    assert_eq!(load(&[]).unwrap().syscall_source, SyscallSource::Auto);
    let c = load(&[("SONDE_SYSCALL_SOURCE", "Tracepoints")]).unwrap();
    assert_eq!(c.syscall_source, SyscallSource::Tracepoints);
    let c = load(&[("SONDE_SYSCALL_SOURCE", "kprobes")]).unwrap();
    assert_eq!(c.syscall_source, SyscallSource::Kprobes);
    let e = load(&[("SONDE_SYSCALL_SOURCE", "fentry")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("SONDE_SYSCALL_SOURCE") && e.contains("auto, kprobes or tracepoints"),
        "{e}"
    );
}

#[test]
fn go_source_key() {
    assert_eq!(load(&[]).unwrap().go_source, GoSource::Uprobes);
    let c = load(&[("SONDE_GO_SOURCE", "Syscalls")]).unwrap();
    assert_eq!(c.go_source, GoSource::Syscalls);
    assert_eq!(
        load(&[("SONDE_GO_SOURCE", "auto")]).unwrap().go_source,
        GoSource::Auto
    );
    let e = load(&[("SONDE_GO_SOURCE", "ebpf")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("SONDE_GO_SOURCE") && e.contains("auto, uprobes or syscalls"),
        "{e}"
    );
}

#[test]
fn docker_keys() {
    let c = load(&[
        ("SONDE_DOCKER", "false"),
        ("SONDE_DOCKER_SELECT", "all"),
        ("SONDE_CONTAINER_SERIES_TTL", "2m"),
    ])
    .unwrap();
    assert_eq!(c.docker, Some(false));
    assert!(!c.has_selector());
    assert_eq!(c.docker_select, DockerSelect::All);
    assert_eq!(c.container_series_ttl.as_secs(), 120);
    assert!(load(&[("SONDE_CONTAINER_SERIES_TTL", "5 days")]).is_err());
    assert!(load(&[("SONDE_DOCKER_SELECT", "some")]).is_err());
}

#[test]
fn log_level_takes_a_level_or_module_directives() {
    for ok in [
        "INFO",
        "debug",
        "info,sonde::collect::syscalls=trace",
        "warn,h2=error",
    ] {
        let c = load(&[("SONDE_LOG_LEVEL", ok)]).unwrap();
        assert_eq!(c.log_level, ok.to_ascii_lowercase());
    }
    for bad in [
        "",
        "inf",
        "info,",
        "sonde=loud",
        "=debug",
        "a::=info",
        "info debug",
    ] {
        let e = load(&[("SONDE_LOG_LEVEL", bad)]).unwrap_err().to_string();
        assert!(e.contains("SONDE_LOG_LEVEL"), "{bad:?}: {e}");
    }
}

#[test]
fn yaml_then_env() {
    let dir = std::env::temp_dir().join(format!("sonde-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("c.yaml");
    std::fs::write(
        &f,
        "prometheus_port: 9000\nopen_port: 8080\nmetrics_naming: beyla-v0\n\
         routes_patterns: [\"/users/{id}\", \"/items/{id}\"]\nlog_level: DEBUG\n",
    )
    .unwrap();
    let env: HashMap<&str, &str> = [("SONDE_PROMETHEUS_PORT", "9400")].into();
    let c = Config::load(Some(&f), &|k| env.get(k).map(|s| s.to_string())).unwrap();
    assert_eq!(c.prometheus_port, Some(9400));
    assert_eq!(c.metrics_naming, MetricsNaming::BeylaV0);
    assert_eq!(c.routes_patterns, vec!["/users/{id}", "/items/{id}"]);
    assert_eq!(c.log_level, "debug");
    std::fs::write(&f, "open_prot: 8080\n").unwrap();
    let e = Config::load(Some(&f), &|_| None).unwrap_err().to_string();
    assert!(e.contains("open_prot"), "{e}");
    std::fs::write(&f, "open_port: nope\n").unwrap();
    let e = Config::load(Some(&f), &|_| None).unwrap_err().to_string();
    assert!(e.contains("open_port (in "), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readme_key_tables_list_exactly_the_keys() {
    let readme = include_str!("../../README.md");
    let mut documented = std::collections::BTreeSet::new();
    let mut in_table = false;
    for line in readme.lines() {
        if line.starts_with("| key | default | meaning |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
        }
        if in_table && !line.starts_with("|---") {
            let first = line.split('|').nth(1).unwrap_or_default();
            for name in first.split(',') {
                documented.insert(name.trim().trim_matches('`').to_string());
            }
        }
    }
    let keys: std::collections::BTreeSet<String> =
        KEYS.iter().map(|k| k.name.to_string()).collect();
    assert_eq!(
        documented, keys,
        "README's key tables and config::KEYS differ"
    );
    let help = keys_help();
    for k in KEYS {
        assert!(help.contains(k.name), "--help lacks {}", k.name);
    }
}

#[test]
fn every_key_is_read_from_the_file_and_unknown_ones_are_named() {
    let mut c = Config::default();
    c.apply_yaml(
        "prometheus_port: 9400\nservice_name:\ncontainer_labels: [a, b]\ndocker: no\n",
        "f.yaml",
    )
    .unwrap();
    assert_eq!(c.prometheus_port, Some(9400));
    assert_eq!(c.service_name.as_deref(), Some(""));
    assert_eq!(c.container_labels, vec!["a", "b"]);
    assert_eq!(c.docker, Some(false));
    for k in KEYS {
        // A key the file struct did not know would be an unknown key, not a bad value.
        let e = Config::default().apply_yaml(&format!("{}: [[[]]]\n", k.name), "f.yaml");
        assert!(
            !matches!(e, Err(ConfigError::UnknownKey { .. })),
            "{}: {e:?}",
            k.name
        );
    }
    let e = Config::default()
        .apply_yaml("open_port: 80\nopen_prot: 8080\n", "f.yaml")
        .unwrap_err();
    assert_eq!(
        e,
        ConfigError::UnknownKey {
            key: "open_prot".into(),
            file: "f.yaml".into()
        }
    );
    assert!(Config::default().apply_yaml("", "f.yaml").is_ok());
    assert!(matches!(
        Config::default().apply_yaml("- a\n", "f.yaml"),
        Err(ConfigError::File { .. })
    ));
}

#[test]
fn newtypes_parse_and_refuse() {
    assert_eq!("8080".parse::<Port>(), Ok(Port(8080)));
    assert!("0".parse::<Port>().is_err() && "65536".parse::<Port>().is_err());
    assert_eq!("5m".parse::<Ttl>().unwrap().0.as_secs(), 300);
    assert_eq!("90".parse::<Ttl>().unwrap().0.as_secs(), 90);
    assert!("5 days".parse::<Ttl>().is_err());
    assert!("^/srv/.*$"
        .parse::<Pattern>()
        .unwrap()
        .0
        .is_match("/srv/api"));
    assert!("(".parse::<Pattern>().is_err());
    assert!("users".parse::<RoutePatterns>().is_err());
}
