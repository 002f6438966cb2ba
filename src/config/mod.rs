//! Configuration: defaults < YAML file (`--config` / `SONDE_CONFIG`) < environment.
//!
//! Every stage reads it; it reads no stage but discovery's list of engine sockets.
//!
//! This file holds what the configuration is (the [`Config`] values and their types); the key
//! table is in [`keys`], loading and layering in [`load`], value parsing in [`values`].

mod keys;
mod load;
pub(crate) mod otlp;
mod values;

use std::path::PathBuf;

pub(crate) use keys::keys_help;
pub(crate) use values::{DockerRules, LogFilter, Pattern, Port, RoutePatterns, Ttl, UrlPath};

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

impl Config {
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
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
