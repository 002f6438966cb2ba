//! Containers, from the Docker API: subscribe to events first, then list, so no container
//! started in between is missed; reconnect with back-off and resynchronise after the daemon
//! restarts.
//!
//! A container is known from its create event to its destroy event, so that when runc
//! starts its init process (see `attach::launch`) sonde already knows its labels, even for a
//! `docker start` of a stopped container. The create event's attributes are used at once:
//! Docker's inspect blocks while the container starts (~150 ms measured here), longer than
//! runc's wait before the exec.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use futures_util::StreamExt;

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
pub type Containers = Arc<RwLock<HashMap<String, Arc<ContainerInfo>>>>;

/// Where a created container's program can be read before the container runs: its image
/// layers (the overlay is mounted only at start) and how the runtime will look it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramHint {
    pub container: Arc<ContainerInfo>,
    /// Upper layer first, then the lower layers in order.
    pub layers: Vec<std::path::PathBuf>,
    pub program: String,
    pub path_env: String,
    pub cwd: String,
}

/// Attributes of a container event that are not labels.
const NON_LABEL_ATTRIBUTES: &[&str] = &["name", "image", "exitCode", "signal", "execID"];

/// A container as its create event describes it: labels are the attributes other than the
/// event's own (a label named like one of those cannot be told apart; inspect fixes it).
pub fn info_from_event(id: &str, attributes: &HashMap<String, String>) -> ContainerInfo {
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
pub fn overlay_layers(graph_driver: &HashMap<String, String>) -> Vec<std::path::PathBuf> {
    let mut layers = Vec::new();
    if let Some(upper) = graph_driver.get("UpperDir") {
        layers.push(upper.into());
    }
    if let Some(lower) = graph_driver.get("LowerDir") {
        layers.extend(lower.split(':').filter(|l| !l.is_empty()).map(Into::into));
    }
    layers
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot connect to Docker at {socket}: {source}")]
    Connect {
        socket: String,
        source: bollard::errors::Error,
    },
    #[error("Docker API: {0}")]
    Api(#[from] bollard::errors::Error),
}

/// The socket: `DOCKER_HOST` (unix://…) or /var/run/docker.sock.
pub fn socket_path() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| h.starts_with("unix://"))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

fn connect() -> Result<Docker, DockerError> {
    let socket = socket_path();
    Docker::connect_with_socket(&socket, 30, bollard::API_DEFAULT_VERSION)
        .map_err(|source| DockerError::Connect { socket, source })
}

async fn inspect(docker: &Docker, id: &str) -> Result<(ContainerInfo, ProgramParts), DockerError> {
    let c = docker.inspect_container(id, None).await?;
    let parts = program_parts(&c);
    Ok((container_info(c, id), parts))
}

/// Where a container's program is and how the runtime will look it up, from its inspect.
fn program_parts(c: &bollard::models::ContainerInspectResponse) -> ProgramParts {
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

struct ProgramParts {
    layers: Vec<std::path::PathBuf>,
    program: String,
    path_env: String,
    cwd: String,
}

impl ProgramParts {
    fn hint(self, container: Arc<ContainerInfo>) -> Option<ProgramHint> {
        (!self.layers.is_empty() && !self.program.is_empty()).then_some(ProgramHint {
            container,
            layers: self.layers,
            program: self.program,
            path_env: self.path_env,
            cwd: self.cwd,
        })
    }
}

/// Keeps `containers` equal to the containers Docker has, calling `changed` after every
/// change and `created` with where a new container's program can be read ahead, until the
/// process ends. Never returns: a lost daemon is retried with back-off.
pub async fn watch(
    containers: Containers,
    changed: impl Fn() + Send + 'static,
    created: impl Fn(ProgramHint) + Send + Sync + 'static,
) {
    let created = Arc::new(created);
    let mut backoff = Duration::from_millis(200);
    loop {
        match run(&containers, &changed, &created).await {
            Ok(()) => tracing::warn!("Docker event stream ended; reconnecting"),
            Err(e) => tracing::warn!("{e}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
        if containers.read().is_ok_and(|c| !c.is_empty()) {
            // Keep what we know until the daemon answers again: the processes still run.
            tracing::debug!("keeping known containers while Docker is unreachable");
        }
    }
}

async fn run<C>(
    containers: &Containers,
    changed: &impl Fn(),
    created: &Arc<C>,
) -> Result<(), DockerError>
where
    C: Fn(ProgramHint) + Send + Sync + 'static,
{
    let docker = connect()?;
    let filters: HashMap<String, Vec<String>> = [
        ("type".to_string(), vec!["container".to_string()]),
        (
            "event".to_string(),
            ["create", "start", "die", "destroy", "rename"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
    ]
    .into();
    // Subscribe first, then list: a container starting in between shows up in both, never in
    // neither.
    let mut events = docker.events(Some(EventsOptions {
        filters: Some(filters),
        ..Default::default()
    }));
    let listed = docker
        .list_containers(Some(ListContainersOptions {
            // Stopped ones too: a `docker start` of one is caught at its launch.
            all: true,
            ..Default::default()
        }))
        .await?;
    let mut fresh = HashMap::new();
    let listed_running: Vec<bool> = listed
        .iter()
        .map(|s| {
            s.state
                .as_ref()
                .is_some_and(|st| st.to_string() == "running")
        })
        .collect();
    for summary in listed {
        let Some(id) = summary.id else { continue };
        match inspect(&docker, &id).await {
            Ok((info, parts)) => {
                let info = Arc::new(info);
                if let Some(hint) = parts.hint(info.clone()) {
                    created(hint);
                }
                fresh.insert(id, info);
            }
            Err(e) => tracing::debug!("container {id} vanished while listing: {e}"),
        }
    }
    tracing::info!(
        "Docker: {} running containers",
        running_count(&listed_running)
    );
    *containers.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    changed();

    while let Some(event) = events.next().await {
        let event = event?;
        let action = event.action.unwrap_or_default();
        let Some(actor) = event.actor else { continue };
        let Some(id) = actor.id else { continue };
        match action.as_str() {
            "create" => {
                let info = Arc::new(info_from_event(&id, &actor.attributes.unwrap_or_default()));
                tracing::debug!("container {} ({}) created", info.name, short(&id));
                containers
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone(), info);
                // Inspect is quick until the container starts: read its program ahead.
                let docker = docker.clone();
                let created = created.clone();
                tokio::spawn(async move {
                    if let Ok((info, parts)) = inspect(&docker, &id).await {
                        if let Some(hint) = parts.hint(Arc::new(info)) {
                            created(hint);
                        }
                    }
                });
            }
            "start" | "rename" => match inspect(&docker, &id).await {
                Ok((info, _)) => {
                    tracing::debug!("container {} ({}) {action}", info.name, short(&id));
                    containers
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, Arc::new(info));
                }
                Err(e) => tracing::debug!("container {} gone before inspect: {e}", short(&id)),
            },
            // A stopped container keeps its entry: it may be started again.
            "die" => continue,
            "destroy" => {
                containers
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            }
            _ => continue,
        }
        changed();
    }
    Ok(())
}

fn running_count(running: &[bool]) -> usize {
    running.iter().filter(|r| **r).count()
}

/// The 12-character form of an id, for logs. By characters: the id comes from the daemon's
/// answer, and a byte index could split a character.
fn short(id: &str) -> &str {
    id.char_indices().nth(12).map_or(id, |(i, _)| &id[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_never_split_a_character() {
        assert_eq!(short("d1509364266dc6edab"), "d1509364266d");
        assert_eq!(short("abc"), "abc");
        assert_eq!(short("ééééééééééééé"), "éééééééééééé");
    }

    #[test]
    fn missing_fields_are_empty() {
        let c: bollard::models::ContainerInspectResponse =
            serde_json::from_str(r#"{"Name":"/web","Config":{"Labels":{"a":"b"}}}"#).unwrap();
        let info = container_info(c, "abc");
        assert_eq!(info.id, "abc");
        assert_eq!(info.name, "web");
        assert_eq!(info.labels.get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn create_event_attributes_give_labels_name_and_image() {
        let attributes: HashMap<String, String> = [
            ("name", "shop-web-1"),
            ("image", "web:1"),
            ("sonde.enable", "true"),
            ("com.docker.compose.service", "web"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let info = info_from_event("abc", &attributes);
        assert_eq!(
            (info.name.as_str(), info.image.as_str()),
            ("shop-web-1", "web:1")
        );
        assert_eq!(info.labels.len(), 2);
        assert_eq!(info.labels["sonde.enable"], "true");
    }

    #[test]
    fn overlay_layers_upper_first() {
        let data: HashMap<String, String> = [
            ("LowerDir", "/l/a/diff:/l/b/diff"),
            ("UpperDir", "/l/c/diff"),
            ("MergedDir", "/l/c/merged"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let layers: Vec<String> = overlay_layers(&data)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(layers, ["/l/c/diff", "/l/a/diff", "/l/b/diff"]);
    }
}
