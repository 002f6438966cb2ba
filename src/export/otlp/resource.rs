//! The OTLP resource of one service instance (one process): who sent a metric or a span.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::enrich::Identity;

pub(crate) fn kv_str(key: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

pub(crate) fn kv_int(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

pub(crate) fn host_name() -> String {
    crate::discover::proc::kernel_setting("hostname").unwrap_or_default()
}

/// The scope every metric and span is reported under.
pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "sonde".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// Resource attributes for the process `pid` serving as `identity`; `container_id` for a
/// container target (read from its cgroup by the caller).
pub(crate) fn resource(
    identity: &Identity,
    pid: u32,
    host: &str,
    container_id: Option<&str>,
) -> Resource {
    let mut attrs = vec![
        kv_str("service.name", identity.service_name.clone()),
        // One resource per process: two replicas of a service are two instances.
        kv_str("service.instance.id", format!("{host}:{pid}")),
        kv_str("host.name", host),
        kv_int("process.pid", pid.into()),
        kv_str("telemetry.sdk.name", "sonde"),
        kv_str("telemetry.sdk.language", "rust"),
        kv_str("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        kv_str("telemetry.distro.name", "sonde"),
    ];
    if !identity.service_namespace.is_empty() {
        attrs.push(kv_str(
            "service.namespace",
            identity.service_namespace.clone(),
        ));
    }
    if let Some(name) = &identity.container_name {
        attrs.push(kv_str("container.name", name.clone()));
        if let Some(id) = container_id {
            attrs.push(kv_str("container.id", id));
        }
    }
    for (k, v) in &identity.extra {
        // The Prometheus labels asked for, under OTel's names where there is one.
        let key = match *k {
            "container_id" => continue,
            "container_image" => "container.image.name".to_string(),
            other => match other.strip_prefix("container_label_") {
                Some(l) => format!("container.label.{l}"),
                None => other.to_string(),
            },
        };
        attrs.push(kv_str(&key, v.clone()));
    }
    Resource {
        attributes: attrs,
        ..Default::default()
    }
}
