//! Sends one OTLP export request over http/protobuf (hyper) or gRPC (tonic), and says
//! whether a failure is worth retrying.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::config::{Protocol, SignalConfig};

/// What one export request carries.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Metrics(ExportMetricsServiceRequest),
    Traces(ExportTraceServiceRequest),
}

/// Why an export failed. Messages never hold header values.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// 401/403 or gRPC UNAUTHENTICATED/PERMISSION_DENIED: retrying will not help.
    #[error("rejected the credentials ({0})")]
    Unauthorized(String),
    /// Down, slow, overloaded: retry later.
    #[error("{0}")]
    Retryable(String),
    /// The endpoint refused this request for good (bad path, malformed data).
    #[error("{0}")]
    Permanent(String),
    #[error("cannot set up the client: {0}")]
    Setup(String),
}

enum Inner {
    Http {
        client: Box<Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>>,
        uri: hyper::Uri,
    },
    Grpc {
        channel: Channel,
    },
}

pub(crate) struct Transport {
    inner: Inner,
    headers: Vec<(String, String)>,
    timeout: std::time::Duration,
}

/// Enough of a response body to tell errors apart; the rest is not read.
const MAX_RESPONSE: usize = 64 * 1024;

impl Transport {
    /// Must run inside the tokio runtime (gRPC channels connect lazily in it).
    pub(crate) fn new(c: &SignalConfig) -> Result<Transport, SendError> {
        let setup = |e: &dyn std::fmt::Display| SendError::Setup(e.to_string());
        let inner = match c.protocol {
            Protocol::HttpProtobuf => {
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_webpki_roots()
                    .https_or_http()
                    .enable_http1()
                    .build();
                Inner::Http {
                    client: Box::new(Client::builder(TokioExecutor::new()).build(connector)),
                    uri: c.endpoint.parse().map_err(|e| setup(&e))?,
                }
            }
            Protocol::Grpc => {
                let mut endpoint = Endpoint::from_shared(c.endpoint.clone())
                    .map_err(|e| setup(&e))?
                    .timeout(c.timeout)
                    .connect_timeout(c.timeout);
                if c.endpoint.starts_with("https://") {
                    endpoint = endpoint
                        .tls_config(ClientTlsConfig::new().with_webpki_roots())
                        .map_err(|e| setup(&e))?;
                }
                Inner::Grpc {
                    channel: endpoint.connect_lazy(),
                }
            }
        };
        Ok(Transport {
            inner,
            headers: c
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect(),
            timeout: c.timeout,
        })
    }

    pub(crate) async fn send(&self, payload: &Payload) -> Result<(), SendError> {
        match &self.inner {
            Inner::Http { client, uri } => {
                let body = match payload {
                    Payload::Metrics(m) => m.encode_to_vec(),
                    Payload::Traces(t) => t.encode_to_vec(),
                };
                let mut req = hyper::Request::post(uri.clone())
                    .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
                    .header(hyper::header::USER_AGENT, user_agent());
                for (k, v) in &self.headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let req = req
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|_| SendError::Setup("invalid header name or value".into()))?;
                let call = async {
                    let resp = client.request(req).await.map_err(|e| {
                        SendError::Retryable(format!("cannot reach the endpoint: {}", chain(&e)))
                    })?;
                    let status = resp.status();
                    // Read (a bounded part of) the body so the connection can be reused.
                    let _ = Limited::new(resp.into_body(), MAX_RESPONSE).collect().await;
                    Ok::<_, SendError>(status)
                };
                let status = tokio::time::timeout(self.timeout, call)
                    .await
                    .map_err(|_| {
                        SendError::Retryable(format!("no answer in {:?}", self.timeout))
                    })??;
                classify_http(status)
            }
            Inner::Grpc { channel } => {
                let result = match payload {
                    Payload::Metrics(m) => MetricsServiceClient::new(channel.clone())
                        .export(self.grpc_request(m.clone())?)
                        .await
                        .map(|_| ()),
                    Payload::Traces(t) => TraceServiceClient::new(channel.clone())
                        .export(self.grpc_request(t.clone())?)
                        .await
                        .map(|_| ()),
                };
                result.map_err(|s| classify_grpc(&s))
            }
        }
    }

    fn grpc_request<T>(&self, msg: T) -> Result<tonic::Request<T>, SendError> {
        let mut req = tonic::Request::new(msg);
        for (k, v) in &self.headers {
            let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
                .map_err(|_| SendError::Setup(format!("invalid header name {k:?}")))?;
            let value = v
                .parse()
                .map_err(|_| SendError::Setup(format!("invalid value for header {k:?}")))?;
            req.metadata_mut().insert(key, value);
        }
        req.set_timeout(self.timeout);
        Ok(req)
    }
}

fn user_agent() -> String {
    format!("sonde/{}", env!("CARGO_PKG_VERSION"))
}

/// An error with its causes, which hold the useful part ("connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub(crate) fn classify_http(status: hyper::StatusCode) -> Result<(), SendError> {
    let code = status.as_u16();
    match code {
        200..=299 => Ok(()),
        401 | 403 => Err(SendError::Unauthorized(format!("HTTP {status}"))),
        // The OTLP/HTTP spec's retryable answers.
        429 | 502 | 503 | 504 => Err(SendError::Retryable(format!("HTTP {status}"))),
        _ => Err(SendError::Permanent(format!("HTTP {status}"))),
    }
}

pub(crate) fn classify_grpc(s: &tonic::Status) -> SendError {
    use tonic::Code;
    let what = format!("gRPC {:?}: {}", s.code(), s.message());
    match s.code() {
        Code::Unauthenticated | Code::PermissionDenied => SendError::Unauthorized(what),
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss
        | Code::Unknown => SendError::Retryable(what),
        _ => SendError::Permanent(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_are_classified_like_the_otlp_spec() {
        assert!(classify_http(hyper::StatusCode::OK).is_ok());
        assert!(matches!(
            classify_http(hyper::StatusCode::UNAUTHORIZED),
            Err(SendError::Unauthorized(_))
        ));
        assert!(matches!(
            classify_http(hyper::StatusCode::SERVICE_UNAVAILABLE),
            Err(SendError::Retryable(_))
        ));
        assert!(matches!(
            classify_http(hyper::StatusCode::NOT_FOUND),
            Err(SendError::Permanent(_))
        ));
        assert!(matches!(
            classify_grpc(&tonic::Status::permission_denied("no")),
            SendError::Unauthorized(_)
        ));
        assert!(matches!(
            classify_grpc(&tonic::Status::unavailable("down")),
            SendError::Retryable(_)
        ));
    }
}
