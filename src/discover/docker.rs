//! Containers, from the Docker API: subscribe to events first, then list, so no container
//! started in between is missed; reconnect with back-off and resynchronise after the daemon
//! restarts.

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

/// Running containers by id, shared with the discovery thread.
pub type Containers = Arc<RwLock<HashMap<String, Arc<ContainerInfo>>>>;

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

async fn inspect(docker: &Docker, id: &str) -> Result<ContainerInfo, DockerError> {
    Ok(container_info(
        docker.inspect_container(id, None).await?,
        id,
    ))
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

/// Keeps `containers` equal to the running containers, calling `changed` after every change,
/// until the process ends. Never returns: a lost daemon is retried with back-off.
pub async fn watch(containers: Containers, changed: impl Fn() + Send + 'static) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match run(&containers, &changed).await {
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

async fn run(containers: &Containers, changed: &impl Fn()) -> Result<(), DockerError> {
    let docker = connect()?;
    let filters: HashMap<String, Vec<String>> = [
        ("type".to_string(), vec!["container".to_string()]),
        (
            "event".to_string(),
            ["start", "die", "destroy", "rename"]
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
            all: false,
            ..Default::default()
        }))
        .await?;
    let mut fresh = HashMap::new();
    for summary in listed {
        let Some(id) = summary.id else { continue };
        match inspect(&docker, &id).await {
            Ok(info) => {
                fresh.insert(id, Arc::new(info));
            }
            Err(e) => tracing::debug!("container {id} vanished while listing: {e}"),
        }
    }
    tracing::info!("Docker: {} running containers", fresh.len());
    *containers.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    changed();

    while let Some(event) = events.next().await {
        let event = event?;
        let action = event.action.unwrap_or_default();
        let Some(id) = event.actor.and_then(|a| a.id) else {
            continue;
        };
        match action.as_str() {
            "start" | "rename" => match inspect(&docker, &id).await {
                Ok(info) => {
                    tracing::debug!("container {} ({}) {action}", info.name, short(&id));
                    containers
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, Arc::new(info));
                }
                Err(e) => tracing::debug!("container {} gone before inspect: {e}", short(&id)),
            },
            "die" | "destroy" => {
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
}
