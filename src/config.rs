//! Configuration: defaults < YAML file (`--config` / `SONDE_CONFIG`) < environment.
//!
//! OWNER: config helper. The types below are the contract other stages use; keep their
//! names and meaning, add fields freely.

use std::path::PathBuf;

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
    pub config_file: Option<PathBuf>,
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
            config_file: None,
        }
    }
}
