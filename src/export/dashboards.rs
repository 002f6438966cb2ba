//! The shipped dashboards (dashboards/*.json) and rules (compose/prometheus/rules/) may only
//! name metrics and labels this exporter writes: every query, legend and variable is checked
//! against the exposition of an exporter that saw every kind of request, under each naming.
//! (tests/compose.rs runs the same queries against a live Prometheus and wants data back.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::Exporter;
use crate::collect::{Request, RequestKind};
use crate::config::MetricsNaming;
use crate::enrich::{EnrichedRequest, Identity};

const SEMCONV: &str = include_str!("../../dashboards/sonde-red.json");
const BEYLA_V1: &str = include_str!("../../dashboards/sonde-red-beyla-v1.json");
const BEYLA_V0: &str = include_str!("../../dashboards/sonde-red-beyla-v0.json");
const RULES: &str = include_str!("../../compose/prometheus/rules/sonde.rules.yml");

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// Keywords, and aggregations (which may be followed by `by (…)` instead of `(`).
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
];

type Exported = BTreeMap<String, BTreeSet<String>>;

fn request(kind: RequestKind, status: u16, error: bool) -> EnrichedRequest {
    let method = if kind.is_rpc() { "/pkg.Svc/Get" } else { "GET" };
    EnrichedRequest {
        request: Request {
            kind,
            pid: 1,
            start_ns: 0,
            end_ns: 30_000_000,
            method: method.into(),
            path: "/a".into(),
            path_truncated: false,
            status,
            request_body_bytes: 10,
            response_body_bytes: 100,
            peer: Some("127.0.0.1".parse().unwrap()),
            http2: false,
            server_address: "127.0.0.1".into(),
            server_port: 80,
            error,
            trace: None,
        },
        identity: Arc::new(Identity {
            service_name: "svc".into(),
            service_namespace: "ns".into(),
            container_name: Some("c-1".into()),
            extra: vec![],
        }),
        route: "/a".into(),
    }
}

/// Metric name → label names, of an exporter that saw one request of every kind.
fn exported(naming: MetricsNaming) -> Exported {
    let e = Exporter::with(naming, false, false);
    for (kind, status, error) in [
        (RequestKind::HttpServer, 200, false),
        (RequestKind::HttpServer, 500, false),
        (RequestKind::HttpClient, 200, false),
        (RequestKind::HttpClient, 0, true),
        (RequestKind::RpcServer, 0, false),
        (RequestKind::RpcClient, 5, false),
    ] {
        e.record(&request(kind, status, error));
    }
    parse_exposition(&e.render())
}

fn parse_exposition(text: &str) -> Exported {
    let mut out = Exported::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            let body = &line[end + 1..line.rfind('}').unwrap()];
            for name in label_names_of(body) {
                labels.insert(name);
            }
        }
    }
    out
}

/// `a="x",b="y \"q\""` → a, b.
fn label_names_of(body: &str) -> Vec<String> {
    strip_strings(body)
        .split(',')
        .filter_map(|kv| kv.split('=').next())
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

/// String literals (with escapes) become `""`, durations in `[...]` disappear.
fn strip_strings(expr: &str) -> String {
    let mut out = String::new();
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            '[' => {
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Punct(char),
    Other,
}

fn tokens(expr: &str) -> Vec<Token> {
    let s = strip_strings(expr);
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(&c) = it.peek() {
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut id = String::new();
            while let Some(&d) = it.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    id.push(d);
                    it.next();
                } else {
                    break;
                }
            }
            out.push(Token::Ident(id));
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers, including 1e3 and 0x1f.
            while it
                .peek()
                .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.')
            {
                it.next();
            }
            out.push(Token::Other);
        } else {
            it.next();
            if !c.is_whitespace() {
                out.push(Token::Punct(c));
            }
        }
    }
    out
}

/// What one expression names that `exported` (plus `recorded`, the rules' own series) does
/// not have: unknown metrics, labels a metric does not carry, grouping or legend labels no
/// metric of the expression carries.
fn unknown_names(
    expr: &str,
    legend: &str,
    exported: &Exported,
    recorded: &BTreeSet<String>,
) -> Vec<String> {
    let t = tokens(expr);
    let mut problems = Vec::new();
    let mut used_labels: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    let mut grouping = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let Token::Ident(id) = &t[i] else {
            i += 1;
            continue;
        };
        let next = t.get(i + 1);
        if matches!(
            id.as_str(),
            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
        ) {
            if next == Some(&Token::Punct('(')) {
                i += 2;
                while let Some(Token::Ident(l)) = t.get(i) {
                    grouping.push(l.clone());
                    i += 1;
                    if t.get(i) == Some(&Token::Punct(',')) {
                        i += 1;
                    }
                }
            }
            i += 1;
            continue;
        }
        if next == Some(&Token::Punct('(')) || KEYWORDS.contains(&id.as_str()) {
            i += 1;
            continue;
        }
        // A metric name, bare or before a selector.
        let labels = if recorded.contains(id) {
            None
        } else if let Some(l) = exported.get(id) {
            Some(l)
        } else {
            problems.push(format!("metric {id}"));
            None
        };
        if let Some(l) = labels {
            used_labels.extend(l.iter().cloned());
        }
        i += 1;
        if t.get(i) == Some(&Token::Punct('{')) {
            i += 1;
            while i < t.len() && t[i] != Token::Punct('}') {
                if let (Token::Ident(label), Some(Token::Punct('=' | '!'))) = (&t[i], t.get(i + 1))
                {
                    if let Some(l) = labels {
                        if !l.contains(label) {
                            problems.push(format!("label {label} of {id}"));
                        }
                    }
                }
                i += 1;
            }
        }
    }
    // Recorded series carry whatever their rule kept: only check against exported metrics.
    let only_recorded = tokens(expr).iter().all(|t| match t {
        Token::Ident(id) => !exported.contains_key(id),
        _ => true,
    });
    let legend_labels = legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split("}}").next())
        .map(|s| s.trim().to_string());
    if !only_recorded {
        for l in grouping.into_iter().chain(legend_labels) {
            if l != "le" && !used_labels.contains(&l) {
                problems.push(format!("label {l} (grouping or legend)"));
            }
        }
    }
    problems
}

/// Every problem of one dashboard: "panel title: what".
fn check_dashboard(json: &str, exported: &Exported) -> Vec<String> {
    let d: serde_json::Value = serde_json::from_str(json).expect("dashboard JSON");
    let none = BTreeSet::new();
    let mut problems = Vec::new();
    let mut queries = 0;
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            queries += 1;
            let expr = t["expr"].as_str().unwrap();
            let legend = t["legendFormat"].as_str().unwrap_or("");
            for what in unknown_names(expr, legend, exported, &none) {
                problems.push(format!("{}: {what}", p["title"].as_str().unwrap()));
            }
        }
    }
    assert!(queries > 20, "only {queries} queries found");
    let all_labels: BTreeSet<&String> = exported.values().flatten().collect();
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let label = q
                .trim_start_matches("label_values(")
                .trim_end_matches(')')
                .rsplit(',')
                .next()
                .unwrap()
                .trim()
                .to_string();
            if !all_labels.contains(&label) {
                problems.push(format!("variable {}: label {label}", v["name"]));
            }
        }
    }
    problems
}

fn check_rules(yaml: &str, exported: &Exported) -> Vec<String> {
    let r: serde_json::Value = serde_saphyr::from_str(yaml).expect("rules YAML");
    let rules: Vec<&serde_json::Value> = r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let recorded: BTreeSet<String> = rules
        .iter()
        .filter_map(|r| r["record"].as_str().map(str::to_string))
        .collect();
    let mut problems = Vec::new();
    for rule in &rules {
        let name = rule["record"].as_str().or(rule["alert"].as_str()).unwrap();
        for what in unknown_names(rule["expr"].as_str().unwrap(), "", exported, &recorded) {
            problems.push(format!("{name}: {what}"));
        }
    }
    problems
}

#[test]
fn every_dashboard_names_only_what_its_naming_exports() {
    for (naming, json) in [
        (MetricsNaming::Semconv, SEMCONV),
        (MetricsNaming::BeylaV1, BEYLA_V1),
        (MetricsNaming::BeylaV0, BEYLA_V0),
    ] {
        let problems = check_dashboard(json, &exported(naming));
        assert!(problems.is_empty(), "{naming:?}: {problems:#?}");
    }
}

#[test]
fn the_rules_name_only_what_semconv_exports() {
    let problems = check_rules(RULES, &exported(MetricsNaming::Semconv));
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_renamed_metric_or_label_is_caught() {
    let semconv = exported(MetricsNaming::Semconv);
    // The fixture: the dashboard as if sonde had renamed a metric, or a label.
    let renamed = SEMCONV.replace(
        "rpc_server_call_duration_seconds",
        "rpc_server_duration_seconds",
    );
    let problems = check_dashboard(&renamed, &semconv);
    assert!(
        problems
            .iter()
            .any(|p| p
                == "Server calls by method and status: metric rpc_server_duration_seconds_count"),
        "{problems:#?}"
    );
    let renamed = SEMCONV.replace("http_route", "route");
    let problems = check_dashboard(&renamed, &semconv);
    assert!(
        problems
            .iter()
            .any(|p| p == "Top routes by request rate: label route (grouping or legend)"),
        "{problems:#?}"
    );
    let renamed = SEMCONV.replace("http_response_status_code=~", "http_status_code=~");
    let problems = check_dashboard(&renamed, &semconv);
    assert!(
        problems.iter().any(|p| p
            == "Error ratio (5xx) by service: label http_status_code of http_server_request_duration_seconds_count"),
        "{problems:#?}"
    );
    // A dashboard of another naming does not fit.
    assert!(!check_dashboard(BEYLA_V0, &semconv).is_empty());
    let renamed = RULES.replace("sonde_events_lost_total", "sonde_lost_events_total");
    assert_eq!(
        check_rules(&renamed, &semconv),
        vec!["SondeEventsLost: metric sonde_lost_events_total"]
    );
}

#[test]
fn tokens_skip_strings_and_durations() {
    assert_eq!(
        tokens(r#"rate(a{b=~"x{y}[z]"}[$__rate_interval]) > 1.5e3"#),
        vec![
            Token::Ident("rate".into()),
            Token::Punct('('),
            Token::Ident("a".into()),
            Token::Punct('{'),
            Token::Ident("b".into()),
            Token::Punct('='),
            Token::Punct('~'),
            Token::Punct('"'),
            Token::Punct('"'),
            Token::Punct('}'),
            Token::Punct(')'),
            Token::Punct('>'),
            Token::Other,
        ]
    );
}
