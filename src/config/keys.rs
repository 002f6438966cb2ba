//! The one table of configuration keys: each key's name, default, meaning and setter, from
//! which the YAML file's struct, the environment names and `--help` are all made.

use super::values::{comma_list, parse_bool};
use super::{Config, DockerRules, LogFilter, Pattern, Port, RoutePatterns, Ttl, UrlPath};

/// One configuration key: its YAML name (environment: `SONDE_<UPPER>`, `BEYLA_<UPPER>`), its
/// default and meaning as `--help` shows them, and how a value is applied.
pub(crate) struct Key {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
    /// Parses the value text and stores it; the error is what was expected.
    pub(super) set: fn(&mut Config, &str) -> Result<(), &'static str>,
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
        pub(crate) struct FileConfig {
            $(
                #[serde(default, deserialize_with = "present")]
                $name: Option<serde_json::Value>,
            )*
        }

        impl FileConfig {
            /// The keys the file sets, in table order.
            pub(super) fn entries(self) -> Vec<(&'static str, serde_json::Value)> {
                let mut out = Vec::new();
                $(
                    if let Some(v) = self.$name {
                        out.push((stringify!($name), v));
                    }
                )*
                out
            }
        }

        pub(crate) const KEYS: &[Key] = &[
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
pub(super) const BARE_ALIASES: &[&str] = &["open_port", "executable_name", "print_traces"];

/// The keys as `--help` lists them.
pub(crate) fn keys_help() -> String {
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
