//! The text of each kind of value, parsed: one `FromStr` type per kind, whose error is what
//! was expected (the loader adds the key and the value).

use std::str::FromStr;
use std::time::Duration;

use super::{DockerRule, DockerSelect, GoSource, MetricsNaming, PortSet, SyscallSource};

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

pub(super) fn comma_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A listening port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Port(pub u16);

impl FromStr for Port {
    type Err = &'static str;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "a port number from 1 to 65535";
        match v.parse::<u16>() {
            Ok(0) | Err(_) => Err(EXPECTED),
            Ok(p) => Ok(Port(p)),
        }
    }
}

impl FromStr for PortSet {
    type Err = &'static str;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        PortSet::parse(v).ok_or("a port, a range like 8000-8999, or a comma list")
    }
}

/// An absolute URL path (`/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlPath(pub String);

impl FromStr for UrlPath {
    type Err = &'static str;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        if v.starts_with('/') {
            Ok(UrlPath(v.to_string()))
        } else {
            Err("a path starting with '/'")
        }
    }
}

/// A regular expression (compiled once, here).
#[derive(Debug, Clone)]
pub(crate) struct Pattern(pub regex::Regex);

impl FromStr for Pattern {
    type Err = &'static str;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        regex::Regex::new(v)
            .map(Pattern)
            .map_err(|_| "a regular expression")
    }
}

/// `300`, `300s`, `5m`, `1h` (seconds when no unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ttl(pub Duration);

impl FromStr for Ttl {
    type Err = &'static str;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        parse_duration(v)
            .map(Ttl)
            .ok_or("a duration such as 300s, 5m or 1h")
    }
}

/// Route patterns, each starting with `/`: a comma list (or a YAML list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoutePatterns(pub Vec<String>);

impl FromStr for RoutePatterns {
    type Err = &'static str;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        let patterns = comma_list(v);
        if patterns.iter().any(|p| !p.starts_with('/')) {
            return Err("a comma list of paths like /users/{id}");
        }
        Ok(RoutePatterns(patterns))
    }
}

/// A level, or `RUST_LOG`-style directives, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogFilter(pub String);

impl FromStr for LogFilter {
    type Err = &'static str;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        let l = v.to_ascii_lowercase();
        if is_log_filter(&l) {
            Ok(LogFilter(l))
        } else {
            Err("error, warn, info, debug or trace, optionally followed by \
                 ,<module>=<level> directives (info,sonde::collect=debug)")
        }
    }
}

/// `docker_rules`: a YAML (flow or block) list of rules, each naming something to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DockerRules(pub Vec<DockerRule>);

impl FromStr for DockerRules {
    type Err = &'static str;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        let rules: Vec<DockerRule> = serde_saphyr::from_str(v)
            .map_err(|_| "a list of rules like [{name: \"shop-*\", enable: true}]")?;
        if rules.iter().any(DockerRule::is_empty) {
            return Err("rules that name at least one of name, image, labels");
        }
        Ok(DockerRules(rules))
    }
}

impl FromStr for MetricsNaming {
    type Err = &'static str;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        match v.to_ascii_lowercase().as_str() {
            "semconv" => Ok(MetricsNaming::Semconv),
            "beyla-v1" | "beyla_v1" => Ok(MetricsNaming::BeylaV1),
            "beyla-v0" | "beyla_v0" => Ok(MetricsNaming::BeylaV0),
            _ => Err("semconv, beyla-v1 or beyla-v0"),
        }
    }
}

impl FromStr for DockerSelect {
    type Err = &'static str;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        match v.to_ascii_lowercase().as_str() {
            "labelled" | "labeled" => Ok(DockerSelect::Labelled),
            "all" => Ok(DockerSelect::All),
            _ => Err("labelled or all"),
        }
    }
}

impl FromStr for GoSource {
    type Err = &'static str;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        GoSource::parse(v).ok_or("auto, uprobes or syscalls")
    }
}

impl FromStr for SyscallSource {
    type Err = &'static str;
    fn from_str(v: &str) -> Result<Self, Self::Err> {
        SyscallSource::parse(v).ok_or("auto, kprobes or tracepoints")
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

pub(super) fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}
