//! Configuration: defaults < YAML file (`--config` / `SONDE_CONFIG`) < environment.
//!
//! Every stage reads it; it reads no stage but discovery's list of engine sockets.

pub mod otlp;
mod values;

use std::path::{Path, PathBuf};

use values::{comma_list, parse_bool};
pub use values::{DockerRules, LogFilter, Pattern, Port, RoutePatterns, Ttl, UrlPath};

/// Exit code for bad configuration or usage, before anything is attached.
pub const EXIT_CONFIG: i32 = 2;

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
    pub otlp: otlp::OtlpConfig,
}

/// What measures a Go process: its own uprobes (every protocol it speaks, trace
/// propagation) or the syscall tracer (plaintext HTTP/1.x only, several times cheaper per
/// request under virtualisation: see BENCHMARKS.md), or `Auto`: per process, the syscall
/// tracer when inspection finds nothing only uprobes see (`inspect::source::choose`).
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

/// One configuration key: its YAML name (environment: `SONDE_<UPPER>`, `BEYLA_<UPPER>`), its
/// default and meaning as `--help` shows them, and how a value is applied.
pub struct Key {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
    /// Parses the value text and stores it; the error is what was expected.
    set: fn(&mut Config, &str) -> Result<(), &'static str>,
}

/// The one table of keys: it defines the file's serde struct (`FileConfig`, unknown keys
/// rejected), the environment names, the setters and `--help`; a test checks the README's
/// key tables against it.
macro_rules! keys {
    ($($name:ident, $default:literal, $meaning:literal, $set:expr;)*) => {
        /// The YAML file: every key optional; a key this struct does not have is an error.
        /// Values stay YAML values here and go through the same `FromStr` parsing as the
        /// environment's text, so both give the same messages.
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            $(
                #[serde(default, deserialize_with = "present")]
                $name: Option<serde_json::Value>,
            )*
        }

        impl FileConfig {
            /// The keys the file sets, in table order.
            fn entries(self) -> Vec<(&'static str, serde_json::Value)> {
                let mut out = Vec::new();
                $(
                    if let Some(v) = self.$name {
                        out.push((stringify!($name), v));
                    }
                )*
                out
            }
        }

        pub const KEYS: &[Key] = &[
            $(Key { name: stringify!($name), default: $default, meaning: $meaning, set: $set },)*
        ];
    };
}

/// A key written with no value (`service_name:`) is set to the empty text, not ignored.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

const BOOL: &str = "true or false";

fn flag(v: &str) -> Result<bool, &'static str> {
    parse_bool(v).ok_or(BOOL)
}

keys! {
    prometheus_port, "off", "serve metrics on this port",
        |c, v| { c.prometheus_port = Some(v.parse::<Port>()?.0); Ok(()) };
    prometheus_path, "/metrics", "path of the scrape endpoint",
        |c, v| { c.prometheus_path = v.parse::<UrlPath>()?.0; Ok(()) };
    open_port, "-", "select processes listening on these ports: 8080, 8000-8999,443",
        |c, v| { c.open_port = Some(v.parse()?); Ok(()) };
    executable_name, "-", "select processes whose executable path matches this regex",
        |c, v| { c.executable_name = Some(v.parse::<Pattern>()?.0); Ok(()) };
    service_name, "executable name", "override the service name of host processes",
        |c, v| { c.service_name = Some(v.to_string()); Ok(()) };
    service_namespace, "\"\"", "override the service namespace of host processes",
        |c, v| { c.service_namespace = Some(v.to_string()); Ok(()) };
    metrics_report_target, "false", "add url_path (never the query string)",
        |c, v| { c.metrics_report_target = flag(v)?; Ok(()) };
    metrics_report_peer, "false", "add client_address",
        |c, v| { c.metrics_report_peer = flag(v)?; Ok(()) };
    metrics_naming, "semconv", "semconv, beyla-v1 or beyla-v0",
        |c, v| { c.metrics_naming = v.parse()?; Ok(()) };
    routes_patterns, "-", "/users/{id} style patterns that set http_route (comma list)",
        |c, v| { c.routes_patterns = v.parse::<RoutePatterns>()?.0; Ok(()) };
    routes_unmatched, "/**", "route of paths no pattern matches",
        |c, v| {
            if v.is_empty() {
                return Err("a route such as /**");
            }
            c.routes_unmatched = v.to_string();
            Ok(())
        };
    log_level, "info", "error, warn, info, debug, trace, then optional module=level directives",
        |c, v| { c.log_level = v.parse::<LogFilter>()?.0; Ok(()) };
    print_traces, "false", "print one line per request on standard output",
        |c, v| { c.print_traces = flag(v)?; Ok(()) };
    syscall_tracing, "true", "measure selected non-Go processes through syscalls and OpenSSL",
        |c, v| { c.syscall_tracing = flag(v)?; Ok(()) };
    go_source, "uprobes", "what measures a selected Go process: uprobes, syscalls or auto",
        |c, v| { c.go_source = v.parse()?; Ok(()) };
    syscall_source, "auto", "what the syscall tracer runs from: auto, kprobes or tracepoints",
        |c, v| { c.syscall_source = v.parse()?; Ok(()) };
    docker, "when the socket exists", "false turns container discovery off",
        |c, v| { c.docker = Some(flag(v)?); Ok(()) };
    docker_select, "labelled", "labelled, or all: every container except sonde.enable=false",
        |c, v| { c.docker_select = v.parse()?; Ok(()) };
    container_series_ttl, "5m", "how long the series of a stopped container stay (300s, 5m, 1h)",
        |c, v| { c.container_series_ttl = v.parse::<Ttl>()?.0; Ok(()) };
    docker_rules, "-", "select containers by name, image and label globs: [{name: \"shop-*\"}]",
        |c, v| { c.docker_rules = v.parse::<DockerRules>()?.0; Ok(()) };
    metrics_report_container, "false", "add container_id and container_image",
        |c, v| { c.metrics_report_container = flag(v)?; Ok(()) };
    container_labels, "-", "container labels copied onto metrics (comma list)",
        |c, v| { c.container_labels = comma_list(v); Ok(()) };
}

/// Beyla's first versions read these without a prefix.
const BARE_ALIASES: &[&str] = &["open_port", "executable_name", "print_traces"];

/// The keys as `--help` lists them.
pub fn keys_help() -> String {
    let width = KEYS.iter().map(|k| k.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for k in KEYS {
        out.push_str(&format!(
            "  {:width$}  {} (default: {})\n",
            k.name, k.meaning, k.default
        ));
    }
    out
}

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
            let upper = key.name.to_uppercase();
            let mut names = vec![format!("SONDE_{upper}"), format!("BEYLA_{upper}")];
            if BARE_ALIASES.contains(&key.name) {
                names.push(upper.clone());
            }
            if let Some((name, value)) = names.iter().find_map(|n| env(n).map(|v| (n, v))) {
                c.set(key, name, &value)?;
            }
        }
        c.otlp = otlp::OtlpConfig::from_env(env).map_err(|e| ConfigError::Invalid {
            key: e.key,
            value: e.value,
            expected: e.expected,
        })?;
        Ok(c)
    }

    /// Applies a YAML configuration document (the text of `--config`); `shown` names it in
    /// errors. Public so the fuzz target can feed it arbitrary text.
    pub fn apply_yaml(&mut self, text: &str, shown: &str) -> Result<(), ConfigError> {
        let file: Option<FileConfig> =
            serde_saphyr::from_str(text).map_err(|e| match unknown_field(&e) {
                Some(key) => ConfigError::UnknownKey {
                    key,
                    file: shown.to_string(),
                },
                None => ConfigError::File {
                    file: shown.to_string(),
                    reason: e.to_string(),
                },
            })?;
        for (name, value) in file.unwrap_or_default().entries() {
            let key = KEYS
                .iter()
                .find(|k| k.name == name)
                .expect("FileConfig comes from KEYS");
            let text = match value {
                // Rules are structured: handed on as JSON text (YAML's flow form), parsed
                // like the environment's.
                v if name == "docker_rules" => v.to_string(),
                serde_json::Value::Array(items) => {
                    items.iter().map(scalar_text).collect::<Vec<_>>().join(",")
                }
                v => scalar_text(&v),
            };
            self.set(key, &format!("{name} (in {shown})"), &text)?;
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

    fn set(&mut self, key: &Key, shown: &str, value: &str) -> Result<(), ConfigError> {
        (key.set)(self, value.trim()).map_err(|expected| ConfigError::Invalid {
            key: shown.to_string(),
            value: value.to_string(),
            expected,
        })
    }
}

/// The key a `deny_unknown_fields` error names, through the parser's wrappers.
fn unknown_field(mut e: &serde_saphyr::Error) -> Option<String> {
    loop {
        match e {
            serde_saphyr::Error::WithSnippet { error, .. }
            | serde_saphyr::Error::AliasError { error, .. } => e = error,
            serde_saphyr::Error::SerdeUnknownField { field, .. } => return Some(field.clone()),
            _ => return None,
        }
    }
}

fn scalar_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
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
}
