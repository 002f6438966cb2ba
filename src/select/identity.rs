//! Who a selected process is, as users name it: service name and namespace from the
//! configuration, the container's labels, compose and the process's own `OTEL_SERVICE_*`, and
//! the container labels copied onto metrics.

use super::{labels, Selector};
use crate::discover::{otel_env, HostProcess};

/// Who served a request, as users name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct Identity {
    pub service_name: String,
    pub service_namespace: String,
    /// Set for container targets only.
    pub container_name: Option<String>,
    /// More labels asked for in the configuration (`container_id`, `container_image`,
    /// `container_label_<name>`), already sanitised as Prometheus label names.
    pub extra: Vec<(&'static str, String)>,
}

/// `com.example.team` → `container_label_com_example_team`. Leaked once per configured
/// label at start-up, so every request can borrow the name.
pub(super) fn metric_label_name(label: &str) -> &'static str {
    let sanitized: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Box::leak(format!("container_label_{sanitized}").into_boxed_str())
}

impl Selector {
    /// Host process: configured name > the process's OTEL_SERVICE_NAME > executable name.
    /// Container: `sonde.service.name` label > OTEL_SERVICE_NAME > compose service > container
    /// name; namespace: label > compose project.
    pub(crate) fn identity(&self, p: &HostProcess) -> Identity {
        self.identity_with_env(p, otel_env(p.pid))
    }

    /// As [`identity`](Self::identity), with the OTEL_SERVICE_NAME / _NAMESPACE the process
    /// will have (before its exec, /proc shows the runtime's environment, not its own).
    pub(crate) fn identity_with_env(
        &self,
        p: &HostProcess,
        (env_name, env_namespace): (Option<String>, Option<String>),
    ) -> Identity {
        if let Some(c) = self.container_of(p) {
            let label = |k: &str| c.labels.get(k).filter(|v| !v.is_empty()).cloned();
            let mut extra = Vec::new();
            if self.report_container {
                extra.push(("container_id", c.id.chars().take(12).collect()));
                extra.push(("container_image", c.image.clone()));
            }
            for (from, to) in &self.copied_labels {
                extra.push((*to, c.labels.get(from).cloned().unwrap_or_default()));
            }
            return Identity {
                service_name: label(labels::SERVICE_NAME)
                    .or(env_name)
                    .or_else(|| label(labels::COMPOSE_SERVICE))
                    .or_else(|| label(labels::PODMAN_COMPOSE_SERVICE))
                    .unwrap_or_else(|| c.name.clone()),
                service_namespace: label(labels::SERVICE_NAMESPACE)
                    .or_else(|| label(labels::COMPOSE_PROJECT))
                    .or_else(|| label(labels::PODMAN_COMPOSE_PROJECT))
                    .or(env_namespace)
                    .unwrap_or_default(),
                container_name: Some(c.name.clone()),
                extra,
            };
        }
        let exe_name = p
            .exe
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_default();
        Identity {
            service_name: self.service_name.clone().or(env_name).unwrap_or(exe_name),
            service_namespace: self
                .service_namespace
                .clone()
                .or(env_namespace)
                .unwrap_or_default(),
            container_name: None,
            extra: Vec::new(),
        }
    }
}
