//! A real Prometheus for the tests: started locally (Debian's `prometheus`), queried over its
//! HTTP API; and the queries sonde ships (dashboards, recording rules) to run against it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, wait_for_port, ChildGuard};

/// GET over HTTP/1.0, so the body is never chunked; the body only.
pub fn get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    match resp.find("\r\n\r\n") {
        Some(i) => resp[i + 4..].to_string(),
        None => String::new(),
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/api/v1/<path>` as JSON (`null` when Prometheus does not answer JSON).
pub fn api(port: u16, path: &str) -> serde_json::Value {
    serde_json::from_str(&get(port, &format!("/api/v1/{path}"))).unwrap_or_default()
}

/// The result of an instant query: the series (empty on an error).
pub fn query(port: u16, expr: &str) -> Vec<serde_json::Value> {
    let v = api(port, &format!("query?query={}", urlencode(expr)));
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// A query of the shipped dashboards or rules, and where it comes from.
pub struct Shipped {
    pub origin: String,
    pub expr: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Grafana's variables as the dashboard's "All" sends them, and a rate window that holds
/// several 2 s scrapes.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$service", ".*")
        .replace("$namespace", ".*")
        .replace("$container", ".*")
}

/// Every panel query of a dashboard JSON text.
pub fn dashboard_queries(json: &str) -> Vec<Shipped> {
    let d: serde_json::Value = serde_json::from_str(json).expect("dashboard JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Shipped {
                origin: format!("panel \"{}\"", p["title"].as_str().unwrap()),
                expr: substitute(t["expr"].as_str().unwrap()),
            });
        }
    }
    out
}

/// Every recording rule's expression of a rules YAML text.
pub fn recording_rules(yaml: &str) -> Vec<Shipped> {
    let r: serde_json::Value = serde_saphyr::from_str(yaml).expect("rules YAML");
    let mut out = Vec::new();
    for g in r["groups"].as_array().unwrap() {
        for rule in g["rules"].as_array().unwrap() {
            if let Some(name) = rule["record"].as_str() {
                out.push(Shipped {
                    origin: format!("rule {name}"),
                    expr: rule["expr"].as_str().unwrap().to_string(),
                });
            }
        }
    }
    out
}

/// The default dashboard (semconv) and the recording rules, as shipped.
pub fn shipped_queries() -> Vec<Shipped> {
    let read = |p: &str| std::fs::read_to_string(repo().join(p)).unwrap();
    let mut q = dashboard_queries(&read("dashboards/sonde-red.json"));
    q.extend(recording_rules(&read(
        "compose/prometheus/rules/sonde.rules.yml",
    )));
    q
}

/// The queries that return no data (or an error) from the Prometheus on `port`.
pub fn empty_queries(port: u16, queries: &[Shipped]) -> Vec<String> {
    queries
        .iter()
        .filter(|q| query(port, &q.expr).is_empty())
        .map(|q| format!("{}: {}", q.origin, q.expr))
        .collect()
}

/// A local Prometheus scraping `targets` every second, exemplar storage on; killed and its
/// data removed when dropped.
pub struct LocalPrometheus {
    pub port: u16,
    guard: Option<ChildGuard>,
    dir: PathBuf,
}

impl LocalPrometheus {
    pub fn start(targets: &[u16]) -> LocalPrometheus {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("sonde-test-prom-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list: Vec<String> = targets
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: sonde\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let guard = ChildGuard { child };
        assert!(
            wait_for_port(port, Duration::from_secs(30)),
            "prometheus did not listen"
        );
        LocalPrometheus {
            port,
            guard: Some(guard),
            dir,
        }
    }

    /// Polls until `check` holds on a query's result; the last result either way.
    pub fn wait(
        &self,
        expr: &str,
        timeout: Duration,
        check: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let t = Instant::now();
        loop {
            let r = query(self.port, expr);
            if check(&r) || t.elapsed() > timeout {
                return r;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for LocalPrometheus {
    fn drop(&mut self) {
        drop(self.guard.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
