//! Configuration: defaults < YAML file (`--config` / `SONDE_CONFIG`) < environment.
//!

use std::path::{Path, PathBuf};

/// Which metric names and label names the Prometheus exporter uses (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsNaming {
    #[default]
    Semconv,
    BeylaV1,
    BeylaV0,
}

/// Ports a process may listen on: `8080`, `8000-8999,443`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSet {
    /// Inclusive ranges.
    pub ranges: Vec<(u16, u16)>,
}

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// A level, or `RUST_LOG`-style directives: `level` or `module::path=level`, comma-separated.
/// Stricter than `EnvFilter`, which reads a typo such as `inf` as a module name.
fn is_log_filter(s: &str) -> bool {
    !s.is_empty()
        && s.split(',').all(|d| match d.split_once('=') {
            None => LOG_LEVELS.contains(&d),
            Some((module, level)) => {
                LOG_LEVELS.contains(&level)
                    && !module.is_empty()
                    && module.split("::").all(|p| {
                        !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_')
                    })
            }
        })
}

impl PortSet {
    pub fn contains(&self, port: u16) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= port && port <= hi)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Scrape endpoint port; `None` turns the endpoint off.
    pub prometheus_port: Option<u16>,
    pub prometheus_path: String,
    pub open_port: Option<PortSet>,
    pub executable_name: Option<regex::Regex>,
    pub service_name: Option<String>,
    pub service_namespace: Option<String>,
    pub metrics_report_target: bool,
    pub metrics_report_peer: bool,
    pub metrics_naming: MetricsNaming,
    pub routes_patterns: Vec<String>,
    /// Route given to paths no pattern matches (`/**`).
    pub routes_unmatched: String,
    pub log_level: String,
    pub print_traces: bool,
    /// Discover Docker containers: `None` means "when the Docker socket exists".
    pub docker: Option<bool>,
    pub docker_select: DockerSelect,
    /// Add `container_id` and `container_image` to container metrics.
    pub metrics_report_container: bool,
    /// Container labels copied onto its metrics as `container_label_<name>`.
    pub container_labels: Vec<String>,
    /// Select containers by name, image and labels, without touching them.
    pub docker_rules: Vec<DockerRule>,
    /// How long the series of a container that stopped are kept.
    pub container_series_ttl: std::time::Duration,
    /// Trace selected non-Go processes through syscalls and OpenSSL.
    pub syscall_tracing: bool,
    /// What measures a selected Go process (a container's `sonde.go_source` label overrides).
    pub go_source: GoSource,
    /// What the syscall tracer's programs run from.
    pub syscall_source: SyscallSource,
    pub config_file: Option<PathBuf>,
    /// OTLP export, from the standard `OTEL_*` variables.
    pub otlp: crate::export::otlp::OtlpConfig,
}

/// What measures a Go process: its own uprobes (every protocol it speaks, trace
/// propagation) or the syscall tracer (plaintext HTTP/1.x only, several times cheaper per
/// request under virtualisation: see BENCHMARKS.md), or `Auto`: per process, the syscall
/// tracer when inspection finds nothing only uprobes see (`select::Selector::source_for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GoSource {
    #[default]
    Uprobes,
    Syscalls,
    Auto,
}

impl GoSource {
    pub fn parse(v: &str) -> Option<GoSource> {
        match v.trim().to_ascii_lowercase().as_str() {
            "uprobes" => Some(GoSource::Uprobes),
            "syscalls" => Some(GoSource::Syscalls),
            "auto" => Some(GoSource::Auto),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GoSource::Uprobes => "uprobes",
            GoSource::Syscalls => "syscalls",
            GoSource::Auto => "auto",
        }
    }
}

/// What the syscall tracer's programs run from: kprobes on the syscall wrappers (only the
/// traced syscalls pay) or the syscall tracepoints (every syscall of every task takes the slow
/// path while they are attached). `Auto`: kprobes where this kernel has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyscallSource {
    #[default]
    Auto,
    Kprobes,
    Tracepoints,
}

impl SyscallSource {
    pub fn parse(v: &str) -> Option<SyscallSource> {
        match v.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(SyscallSource::Auto),
            "kprobes" => Some(SyscallSource::Kprobes),
            "tracepoints" => Some(SyscallSource::Tracepoints),
            _ => None,
        }
    }
}

/// A YAML rule: containers whose name, image and labels all match the globs (`*`, `?`) are
/// instrumented (`enable: true`, the default) or left alone (`enable: false`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerRule {
    pub name: Option<String>,
    pub image: Option<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default = "enabled")]
    pub enable: bool,
}

fn enabled() -> bool {
    true
}

impl DockerRule {
    fn is_empty(&self) -> bool {
        self.name.is_none() && self.image.is_none() && self.labels.is_empty()
    }

    /// Whether the rule applies to a container with this name, image and labels.
    pub fn matches(
        &self,
        name: &str,
        image: &str,
        labels: &std::collections::HashMap<String, String>,
    ) -> bool {
        self.name.as_deref().is_none_or(|g| glob(g, name))
            && self.image.as_deref().is_none_or(|g| glob(g, image))
            && self
                .labels
                .iter()
                .all(|(k, g)| labels.get(k).is_some_and(|v| glob(g, v)))
    }
}

/// Shell-style glob: `*` any run, `?` one character, everything else literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Which containers are instrumented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DockerSelect {
    /// Containers labelled `sonde.enable=true`.
    #[default]
    Labelled,
    /// Every container except those labelled `sonde.enable=false`.
    All,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prometheus_port: None,
            prometheus_path: "/metrics".to_string(),
            open_port: None,
            executable_name: None,
            service_name: None,
            service_namespace: None,
            metrics_report_target: false,
            metrics_report_peer: false,
            metrics_naming: MetricsNaming::Semconv,
            routes_patterns: Vec::new(),
            routes_unmatched: "/**".to_string(),
            log_level: "info".to_string(),
            print_traces: false,
            docker: None,
            docker_select: DockerSelect::Labelled,
            metrics_report_container: false,
            docker_rules: Vec::new(),
            container_labels: Vec::new(),
            container_series_ttl: std::time::Duration::from_secs(300),
            syscall_tracing: true,
            go_source: GoSource::default(),
            syscall_source: SyscallSource::default(),
            config_file: None,
            otlp: Default::default(),
        }
    }
}

/// A configuration value that could not be used; names the key as the user wrote it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid value {value:?} for {key}: {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("unknown key {key:?} in {file}")]
    UnknownKey { key: String, file: String },
    #[error("cannot read {file}: {reason}")]
    File { file: String, reason: String },
}

/// Every key, with its YAML name. Environment names are `SONDE_<UPPER>` / `BEYLA_<UPPER>`.
const KEYS: &[&str] = &[
    "prometheus_port",
    "prometheus_path",
    "open_port",
    "executable_name",
    "service_name",
    "service_namespace",
    "metrics_report_target",
    "metrics_report_peer",
    "metrics_naming",
    "routes_patterns",
    "routes_unmatched",
    "log_level",
    "print_traces",
    "docker",
    "docker_select",
    "container_series_ttl",
    "metrics_report_container",
    "container_labels",
    "docker_rules",
    "syscall_tracing",
    "go_source",
    "syscall_source",
];

/// Beyla's first versions read these without a prefix.
const BARE_ALIASES: &[&str] = &["open_port", "executable_name", "print_traces"];

impl Config {
    /// Reads `SONDE_CONFIG` / the given file and the process environment.
    pub fn from_env_and_file(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env_file = std::env::var_os("SONDE_CONFIG").map(PathBuf::from);
        let file = file.map(Path::to_path_buf).or(env_file);
        Config::load(file.as_deref(), &|k| std::env::var(k).ok())
    }

    /// Defaults < YAML file < environment (`SONDE_` over `BEYLA_` over bare legacy names).
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut c = Config {
            config_file: file.map(Path::to_path_buf),
            ..Config::default()
        };
        if let Some(path) = file {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                file: shown.clone(),
                reason: e.to_string(),
            })?;
            c.apply_yaml(&text, &shown)?;
        }
        for key in KEYS {
            let upper = key.to_uppercase();
            let mut names = vec![format!("SONDE_{upper}"), format!("BEYLA_{upper}")];
            if BARE_ALIASES.contains(key) {
                names.push(upper.clone());
            }
            if let Some((name, value)) = names.iter().find_map(|n| env(n).map(|v| (n, v))) {
                c.set(key, name, &value)?;
            }
        }
        c.otlp =
            crate::export::otlp::OtlpConfig::from_env(env).map_err(|e| ConfigError::Invalid {
                key: e.key,
                value: e.value,
                expected: e.expected,
            })?;
        Ok(c)
    }

    /// Applies a YAML configuration document (the text of `--config`); `shown` names it in
    /// errors. Public so the fuzz target can feed it arbitrary text.
    pub fn apply_yaml(&mut self, text: &str, shown: &str) -> Result<(), ConfigError> {
        let shown = shown.to_string();
        let c = self;
        let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ConfigError::File {
            file: shown.clone(),
            reason: e.to_string(),
        })?;
        let map = match doc {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => Default::default(),
            _ => {
                return Err(ConfigError::File {
                    file: shown,
                    reason: "expected a mapping of keys to values".into(),
                })
            }
        };
        for (k, v) in map {
            let key = k.as_str().unwrap_or_default().to_string();
            if !KEYS.contains(&key.as_str()) {
                return Err(ConfigError::UnknownKey { key, file: shown });
            }
            let value = match v {
                // Rules are structured: handed on as YAML text, parsed like the env form.
                other if key == "docker_rules" => serde_yaml::to_string(&other).unwrap_or_default(),
                serde_yaml::Value::Sequence(items) => {
                    items.iter().map(yaml_scalar).collect::<Vec<_>>().join(",")
                }
                other => yaml_scalar(&other),
            };
            c.set(&key, &format!("{key} (in {shown})"), &value)?;
        }
        Ok(())
    }

    /// Whether anything selects processes to instrument.
    pub fn has_selector(&self) -> bool {
        self.open_port.is_some() || self.executable_name.is_some() || self.docker_enabled()
    }

    /// Container discovery is on when asked, or by default when an engine's socket (Docker's
    /// or Podman's) exists.
    pub fn docker_enabled(&self) -> bool {
        self.docker.unwrap_or_else(|| {
            crate::discover::docker::socket_paths()
                .iter()
                .any(|s| std::path::Path::new(s.trim_start_matches("unix://")).exists())
        })
    }

    fn set(&mut self, key: &str, shown: &str, value: &str) -> Result<(), ConfigError> {
        let bad = |expected: &'static str| ConfigError::Invalid {
            key: shown.to_string(),
            value: value.to_string(),
            expected,
        };
        let v = value.trim();
        match key {
            "prometheus_port" => {
                let port: u16 = v
                    .parse()
                    .map_err(|_| bad("a port number from 1 to 65535"))?;
                if port == 0 {
                    return Err(bad("a port number from 1 to 65535"));
                }
                self.prometheus_port = Some(port);
            }
            "prometheus_path" => {
                if !v.starts_with('/') {
                    return Err(bad("a path starting with '/'"));
                }
                self.prometheus_path = v.to_string();
            }
            "open_port" => {
                self.open_port = Some(
                    PortSet::parse(v)
                        .ok_or_else(|| bad("a port, a range like 8000-8999, or a comma list"))?,
                )
            }
            "executable_name" => {
                self.executable_name =
                    Some(regex::Regex::new(v).map_err(|_| bad("a regular expression"))?)
            }
            "service_name" => self.service_name = Some(v.to_string()),
            "service_namespace" => self.service_namespace = Some(v.to_string()),
            "metrics_report_target" => {
                self.metrics_report_target = parse_bool(v).ok_or_else(|| bad("true or false"))?
            }
            "metrics_report_peer" => {
                self.metrics_report_peer = parse_bool(v).ok_or_else(|| bad("true or false"))?
            }
            "print_traces" => {
                self.print_traces = parse_bool(v).ok_or_else(|| bad("true or false"))?
            }
            "syscall_tracing" => {
                self.syscall_tracing = parse_bool(v).ok_or_else(|| bad("true or false"))?
            }
            "go_source" => {
                self.go_source =
                    GoSource::parse(v).ok_or_else(|| bad("auto, uprobes or syscalls"))?
            }
            "syscall_source" => {
                self.syscall_source =
                    SyscallSource::parse(v).ok_or_else(|| bad("auto, kprobes or tracepoints"))?
            }
            "metrics_naming" => {
                self.metrics_naming = match v.to_ascii_lowercase().as_str() {
                    "semconv" => MetricsNaming::Semconv,
                    "beyla-v1" | "beyla_v1" => MetricsNaming::BeylaV1,
                    "beyla-v0" | "beyla_v0" => MetricsNaming::BeylaV0,
                    _ => return Err(bad("semconv, beyla-v1 or beyla-v0")),
                }
            }
            "routes_patterns" => {
                let patterns: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                if patterns.iter().any(|p| !p.starts_with('/')) {
                    return Err(bad("a comma list of paths like /users/{id}"));
                }
                self.routes_patterns = patterns;
            }
            "routes_unmatched" => {
                if v.is_empty() {
                    return Err(bad("a route such as /**"));
                }
                self.routes_unmatched = v.to_string();
            }
            "docker" => self.docker = Some(parse_bool(v).ok_or_else(|| bad("true or false"))?),
            "docker_select" => {
                self.docker_select = match v.to_ascii_lowercase().as_str() {
                    "labelled" | "labeled" => DockerSelect::Labelled,
                    "all" => DockerSelect::All,
                    _ => return Err(bad("labelled or all")),
                }
            }
            "metrics_report_container" => {
                self.metrics_report_container = parse_bool(v).ok_or_else(|| bad("true or false"))?
            }
            "container_labels" => {
                self.container_labels = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "docker_rules" => {
                self.docker_rules = serde_yaml::from_str::<Vec<DockerRule>>(v)
                    .map_err(|_| bad("a list of rules like [{name: \"shop-*\", enable: true}]"))?;
                if self.docker_rules.iter().any(DockerRule::is_empty) {
                    return Err(bad("rules that name at least one of name, image, labels"));
                }
            }
            "container_series_ttl" => {
                self.container_series_ttl =
                    parse_duration(v).ok_or_else(|| bad("a duration such as 300s, 5m or 1h"))?
            }
            "log_level" => {
                let l = v.to_ascii_lowercase();
                if !is_log_filter(&l) {
                    return Err(bad(
                        "error, warn, info, debug or trace, optionally followed by \
                         ,<module>=<level> directives (info,sonde::collect=debug)",
                    ));
                }
                self.log_level = l;
            }
            _ => unreachable!("keys come from KEYS"),
        }
        Ok(())
    }
}

impl PortSet {
    /// `8080`, `8000-8999,443`; `None` for anything else.
    pub fn parse(s: &str) -> Option<PortSet> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim) {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?),
                None => {
                    let p = part.parse::<u16>().ok()?;
                    (p, p)
                }
            };
            if lo == 0 || hi < lo {
                return None;
            }
            ranges.push((lo, hi));
        }
        (!ranges.is_empty()).then_some(PortSet { ranges })
    }
}

/// `300`, `300s`, `5m`, `1h` (seconds when no unit).
fn parse_duration(v: &str) -> Option<std::time::Duration> {
    let (number, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = number.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn yaml_scalar(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Null => String::new(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
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
}
