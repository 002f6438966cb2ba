//! OTLP export settings from the standard `OTEL_*` variables: endpoints, protocol, headers,
//! interval, temporality; plus `SONDE_TRACES_SAMPLER_RATIO`.

use std::fmt;
use std::time::Duration;

/// A bad OTLP setting, named as the user wrote it. Header values are never repeated here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value:?} for {key}: {expected}")]
pub struct OtlpConfigError {
    pub key: String,
    pub value: String,
    pub expected: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    HttpProtobuf,
    Grpc,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Temporality {
    #[default]
    Cumulative,
    Delta,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Metrics,
    Traces,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Traces => "traces",
        }
    }

    fn upper(self) -> &'static str {
        match self {
            Signal::Metrics => "METRICS",
            Signal::Traces => "TRACES",
        }
    }
}

/// A header value from `OTEL_EXPORTER_OTLP_*HEADERS`: credentials, so it prints as
/// `<redacted>` everywhere, `Debug` included.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where and how one signal is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalConfig {
    pub signal: Signal,
    /// The full URL: for http/protobuf with `/v1/metrics` or `/v1/traces` already appended
    /// when it came from the generic variable.
    pub endpoint: String,
    pub protocol: Protocol,
    /// Lower-case names (gRPC metadata requires it; HTTP does not care).
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
}

impl SignalConfig {
    /// The endpoint as logs show it: without any `user:password@`.
    pub fn shown_endpoint(&self) -> String {
        redact_userinfo(&self.endpoint)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    pub metrics: Option<SignalConfig>,
    pub traces: Option<SignalConfig>,
    pub metric_interval: Duration,
    pub temporality: Temporality,
    pub sampler_ratio: f64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            metrics: None,
            traces: None,
            metric_interval: Duration::from_secs(60),
            temporality: Temporality::Cumulative,
            sampler_ratio: 1.0,
        }
    }
}

impl OtlpConfig {
    pub fn enabled(&self) -> bool {
        self.metrics.is_some() || self.traces.is_some()
    }

    /// Reads the standard variables through `env`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<OtlpConfig, OtlpConfigError> {
        let get = |k: &str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let bad = |key: &str, value: &str, expected| OtlpConfigError {
            key: key.to_string(),
            value: value.to_string(),
            expected,
        };
        let mut c = OtlpConfig::default();
        if let Some(v) = get("OTEL_METRIC_EXPORT_INTERVAL") {
            let ms: u64 = v
                .parse()
                .ok()
                .filter(|&ms| ms > 0)
                .ok_or_else(|| bad("OTEL_METRIC_EXPORT_INTERVAL", &v, "milliseconds, > 0"))?;
            c.metric_interval = Duration::from_millis(ms);
        }
        if let Some(v) = get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE") {
            c.temporality = match v.to_ascii_lowercase().as_str() {
                "cumulative" => Temporality::Cumulative,
                // Every instrument here is a histogram: lowmemory means delta for them.
                "delta" | "lowmemory" => Temporality::Delta,
                _ => {
                    return Err(bad(
                        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                        &v,
                        "cumulative, delta or lowmemory",
                    ))
                }
            }
        }
        for key in ["SONDE_TRACES_SAMPLER_RATIO", "BEYLA_TRACES_SAMPLER_RATIO"] {
            if let Some(v) = get(key) {
                c.sampler_ratio = v
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| bad(key, &v, "a ratio from 0 to 1"))?;
                break;
            }
        }
        c.metrics = signal(Signal::Metrics, &get)?;
        c.traces = signal(Signal::Traces, &get)?;
        Ok(c)
    }
}

fn signal(
    signal: Signal,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SignalConfig>, OtlpConfigError> {
    let s = signal.upper();
    let exporter_key = format!("OTEL_{s}_EXPORTER");
    if let Some(v) = get(&exporter_key) {
        match v.to_ascii_lowercase().as_str() {
            "none" => return Ok(None),
            "otlp" => {}
            _ => {
                return Err(OtlpConfigError {
                    key: exporter_key,
                    value: v,
                    expected: "otlp or none",
                })
            }
        }
    }
    let protocol_key = [
        format!("OTEL_EXPORTER_OTLP_{s}_PROTOCOL"),
        "OTEL_EXPORTER_OTLP_PROTOCOL".to_string(),
    ]
    .into_iter()
    .find(|k| get(k).is_some());
    let protocol = match protocol_key {
        None => Protocol::HttpProtobuf,
        Some(k) => {
            let v = get(&k).unwrap_or_default();
            match v.to_ascii_lowercase().as_str() {
                "http/protobuf" => Protocol::HttpProtobuf,
                "grpc" => Protocol::Grpc,
                _ => {
                    return Err(OtlpConfigError {
                        key: k,
                        value: v,
                        expected: "http/protobuf or grpc (http/json is not supported)",
                    })
                }
            }
        }
    };
    let specific_key = format!("OTEL_EXPORTER_OTLP_{s}_ENDPOINT");
    let (key, endpoint) = if let Some(v) = get(&specific_key) {
        (specific_key, v)
    } else if let Some(v) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
        let url = match protocol {
            // The generic variable is a base URL: each signal has its own path under it.
            Protocol::HttpProtobuf => {
                format!("{}/v1/{}", v.trim_end_matches('/'), signal.name())
            }
            Protocol::Grpc => v,
        };
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), url)
    } else {
        return Ok(None);
    };
    if !valid_url(&endpoint) {
        return Err(OtlpConfigError {
            key,
            value: redact_userinfo(&endpoint),
            expected: "a URL such as http://localhost:4318 or https://otlp.example.com",
        });
    }
    let mut headers = Vec::new();
    for key in [
        "OTEL_EXPORTER_OTLP_HEADERS".to_string(),
        format!("OTEL_EXPORTER_OTLP_{s}_HEADERS"),
    ] {
        if let Some(v) = get(&key) {
            for (name, value) in parse_headers(&v).ok_or_else(|| OtlpConfigError {
                key: key.clone(),
                // Credentials: never echoed back, not even in an error.
                value: "<redacted>".to_string(),
                expected: "comma-separated name=value pairs, values URL-encoded",
            })? {
                headers.retain(|(n, _): &(String, Secret)| *n != name);
                headers.push((name, Secret(value)));
            }
        }
    }
    let timeout_key = [
        format!("OTEL_EXPORTER_OTLP_{s}_TIMEOUT"),
        "OTEL_EXPORTER_OTLP_TIMEOUT".to_string(),
    ]
    .into_iter()
    .find(|k| get(k).is_some());
    let timeout = match timeout_key {
        None => Duration::from_secs(10),
        Some(k) => {
            let v = get(&k).unwrap_or_default();
            let ms: u64 = v.parse().ok().filter(|&ms| ms > 0).ok_or(OtlpConfigError {
                key: k,
                value: v,
                expected: "milliseconds, > 0",
            })?;
            Duration::from_millis(ms)
        }
    };
    Ok(Some(SignalConfig {
        signal,
        endpoint,
        protocol,
        headers,
        timeout,
    }))
}

fn valid_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http") | Some("https"))
        && uri.host().is_some_and(|h| !h.is_empty())
}

/// `a=b,c=d%20e` → [("a","b"), ("c","d e")]; `None` when malformed.
pub(crate) fn parse_headers(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=')?;
        let k = percent_decode(k.trim())?.to_ascii_lowercase();
        let v = percent_decode(v.trim())?;
        let valid_name = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_name || v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return None;
        }
        out.push((k, v));
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `https://user:pw@host/x` → `https://host/x`.
pub(crate) fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<OtlpConfig, OtlpConfigError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtlpConfig::from_env(&|k| m.get(k).cloned())
    }

    #[test]
    fn off_without_an_endpoint() {
        let c = load(&[]).unwrap();
        assert!(!c.enabled());
        assert_eq!(c.metric_interval, Duration::from_secs(60));
    }

    #[test]
    fn generic_endpoint_gets_signal_paths_for_http_only() {
        let c = load(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318/")]).unwrap();
        assert_eq!(
            c.metrics.unwrap().endpoint,
            "http://localhost:4318/v1/metrics"
        );
        assert_eq!(
            c.traces.unwrap().endpoint,
            "http://localhost:4318/v1/traces"
        );
        let c = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ])
        .unwrap();
        let m = c.metrics.unwrap();
        assert_eq!(
            (m.endpoint.as_str(), m.protocol),
            ("http://localhost:4317", Protocol::Grpc)
        );
        let t = c.traces.unwrap();
        assert_eq!(t.protocol, Protocol::HttpProtobuf);
        assert_eq!(t.endpoint, "http://localhost:4317/v1/traces");
    }

    #[test]
    fn per_signal_endpoint_is_used_as_given() {
        let c = load(&[
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "https://m.example/otlp/x",
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1500"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "Delta"),
        ])
        .unwrap();
        assert_eq!(c.metrics.unwrap().endpoint, "https://m.example/otlp/x");
        assert!(
            c.traces.is_none(),
            "traces stay off without a traces endpoint"
        );
        assert_eq!(c.metric_interval, Duration::from_millis(1500));
        assert_eq!(c.temporality, Temporality::Delta);
        let c = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])
        .unwrap();
        assert!(c.metrics.is_some() && c.traces.is_none());
    }

    #[test]
    fn headers_are_url_decoded_merged_and_redacted() {
        let c = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Basic%20c2VjcmV0,X-Org=a",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-org=b"),
        ])
        .unwrap();
        let t = c.traces.clone().unwrap();
        assert_eq!(t.headers[0].0, "authorization");
        assert_eq!(t.headers[0].1.expose(), "Basic c2VjcmV0");
        assert_eq!(t.headers[1].1.expose(), "b");
        assert_eq!(c.metrics.clone().unwrap().headers[1].1.expose(), "a");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("c2VjcmV0") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_never_the_secret() {
        for (k, v) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "sometimes",
            ),
            ("SONDE_TRACES_SAMPLER_RATIO", "1.5"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "-1"),
        ] {
            let e = load(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318"), (k, v)])
                .unwrap_err()
                .to_string();
            assert!(e.contains(k) && e.contains(v), "{e}");
        }
        let e = load(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318")]).unwrap_err();
        assert_eq!(e.key, "OTEL_EXPORTER_OTLP_ENDPOINT");
        let e = load(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization:Basic hunter2"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_HEADERS") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn userinfo_is_hidden() {
        assert_eq!(redact_userinfo("https://u:p@h:1/x"), "https://h:1/x");
        assert_eq!(redact_userinfo("http://h/a@b"), "http://h/a@b");
    }
}
