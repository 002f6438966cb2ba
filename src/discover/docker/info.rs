//! What sonde keeps of a container, mapped from what the engine says: a create event's
//! attributes, an inspect answer, and where its program can be read before it runs (image
//! layers, `PATH`, working directory).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// What sonde needs to know about a running container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without Docker's leading '/'.
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
}

/// Containers by id, from create to destroy, shared with the discovery thread.
pub(crate) type Containers = Arc<RwLock<HashMap<String, Arc<ContainerInfo>>>>;

/// Where a created container's program can be read before the container runs: its image
/// layers (the overlay is mounted only at start) and how the runtime will look it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProgramHint {
    pub container: Arc<ContainerInfo>,
    /// Upper layer first, then the lower layers in order.
    pub layers: Vec<std::path::PathBuf>,
    pub program: String,
    pub path_env: String,
    pub cwd: String,
}

/// Attributes of a container event that are not labels (Docker's, then Podman's).
const NON_LABEL_ATTRIBUTES: &[&str] = &[
    "name",
    "image",
    "exitCode",
    "signal",
    "execID",
    "containerExitCode",
    "podId",
];

/// A container as its create event describes it: labels are the attributes other than the
/// event's own (a label named like one of those cannot be told apart; inspect fixes it).
pub(crate) fn info_from_event(id: &str, attributes: &HashMap<String, String>) -> ContainerInfo {
    ContainerInfo {
        id: id.to_string(),
        name: attributes.get("name").cloned().unwrap_or_default(),
        image: attributes.get("image").cloned().unwrap_or_default(),
        labels: attributes
            .iter()
            .filter(|(k, _)| !NON_LABEL_ATTRIBUTES.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The overlay2 layers of a container, upper first.
pub(crate) fn overlay_layers(graph_driver: &HashMap<String, String>) -> Vec<std::path::PathBuf> {
    let mut layers = Vec::new();
    if let Some(upper) = graph_driver.get("UpperDir") {
        layers.push(upper.into());
    }
    if let Some(lower) = graph_driver.get("LowerDir") {
        layers.extend(lower.split(':').filter(|l| !l.is_empty()).map(Into::into));
    }
    layers
}

/// Where a container's program is and how the runtime will look it up, from its inspect.
pub(super) fn program_parts(c: &bollard::models::ContainerInspectResponse) -> ProgramParts {
    let env = c.config.as_ref().and_then(|c| c.env.as_ref());
    ProgramParts {
        layers: c
            .graph_driver
            .as_ref()
            .map(|g| overlay_layers(&g.data))
            .unwrap_or_default(),
        program: c.path.clone().unwrap_or_default(),
        path_env: env
            .into_iter()
            .flatten()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .to_string(),
        cwd: c
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
    }
}

/// What sonde keeps of the daemon's answer to `GET /containers/{id}/json`; every field may be
/// missing.
pub fn container_info(c: bollard::models::ContainerInspectResponse, id: &str) -> ContainerInfo {
    let config = c.config.unwrap_or_default();
    ContainerInfo {
        id: c.id.unwrap_or_else(|| id.to_string()),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default(),
    }
}

pub(super) struct ProgramParts {
    layers: Vec<std::path::PathBuf>,
    program: String,
    path_env: String,
    cwd: String,
}

impl ProgramParts {
    pub(super) fn hint(self, container: Arc<ContainerInfo>) -> Option<ProgramHint> {
        (!self.layers.is_empty() && !self.program.is_empty()).then_some(ProgramHint {
            container,
            layers: self.layers,
            program: self.program,
            path_env: self.path_env,
            cwd: self.cwd,
        })
    }
}
