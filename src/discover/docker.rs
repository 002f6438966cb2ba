//! Containers, from the Docker API — Docker's, and Podman's compatible one: subscribe to
//! events first, then list, so no container started in between is missed; reconnect with
//! back-off and resynchronise after the daemon restarts. One watch per engine socket; they
//! share one map of containers, each replacing only its own entries.
//!
//! A container is known from its create event to its destroy event, so that when runc
//! starts its init process (see `attach::launch`) sonde already knows its labels, even for a
//! `docker start` of a stopped container. The create event's attributes are used at once:
//! Docker's inspect blocks while the container starts (~150 ms measured here), longer than
//! runc's wait before the exec.
//!
//! This file is the watch: sockets, connection, the event loop and reconnecting. What a
//! container's events and inspect answers map to is in [`info`]; Podman's event log in
//! [`podman_log`].

pub(crate) mod info;
mod podman_log;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use futures_util::StreamExt;

pub(crate) use info::{container_info, info_from_event, ContainerInfo, Containers, ProgramHint};
use info::{program_parts, ProgramParts};
pub(crate) use podman_log::{podman_container_from_log, PODMAN_EVENTS_LOG};

#[derive(Debug, thiserror::Error)]
pub(crate) enum DockerError {
    #[error("cannot connect to Docker at {socket}: {source}")]
    Connect {
        socket: String,
        source: bollard::errors::Error,
    },
    #[error("Docker API: {0}")]
    Api(#[from] bollard::errors::Error),
}

/// The engine sockets to watch: `DOCKER_HOST` (unix://…) or /var/run/docker.sock, Podman's
/// rootful /run/podman/podman.sock and rootless `$XDG_RUNTIME_DIR/podman/podman.sock` — those
/// that exist, each file once; Docker's when none exists (it is retried until it answers).
pub(crate) fn socket_paths() -> Vec<String> {
    let candidates = candidate_sockets(
        std::env::var("DOCKER_HOST").ok(),
        std::env::var("XDG_RUNTIME_DIR").ok(),
    );
    let mut seen = HashSet::new();
    let existing: Vec<String> = candidates
        .iter()
        .filter(|s| {
            let path = crate::discover::bundle::on_host(s.trim_start_matches("unix://"));
            std::fs::canonicalize(path).is_ok_and(|real| seen.insert(real))
        })
        .cloned()
        .collect();
    if existing.is_empty() {
        candidates.into_iter().take(1).collect()
    } else {
        existing
    }
}

/// Every socket an engine may listen on, Docker's first.
pub(crate) fn candidate_sockets(
    docker_host: Option<String>,
    xdg_runtime: Option<String>,
) -> Vec<String> {
    let mut out = vec![docker_host
        .filter(|h| h.starts_with("unix://"))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())];
    out.push("unix:///run/podman/podman.sock".to_string());
    if let Some(dir) = xdg_runtime.filter(|d| d.starts_with('/')) {
        out.push(format!(
            "unix://{}/podman/podman.sock",
            dir.trim_end_matches('/')
        ));
    }
    let mut seen = HashSet::new();
    out.retain(|s| seen.insert(s.clone()));
    out
}

fn connect(socket: &str) -> Result<Docker, DockerError> {
    Docker::connect_with_socket(socket, 30, bollard::API_DEFAULT_VERSION).map_err(|source| {
        DockerError::Connect {
            socket: socket.to_string(),
            source,
        }
    })
}

/// "Podman" or "Docker", from the engine's version answer, for logs.
async fn engine_name(docker: &Docker) -> &'static str {
    let podman = docker.version().await.is_ok_and(|v| {
        v.components
            .unwrap_or_default()
            .iter()
            .any(|c| c.name.contains("Podman"))
    });
    if podman {
        "Podman"
    } else {
        "Docker"
    }
}

/// Replaces one engine's containers in the shared map by what it listed, leaving the other
/// engines' alone.
pub(crate) fn resync(
    map: &mut HashMap<String, Arc<ContainerInfo>>,
    own: &mut HashSet<String>,
    fresh: HashMap<String, Arc<ContainerInfo>>,
) {
    for id in own.drain() {
        if !fresh.contains_key(&id) {
            map.remove(&id);
        }
    }
    own.extend(fresh.keys().cloned());
    map.extend(fresh);
}

async fn inspect(docker: &Docker, id: &str) -> Result<(ContainerInfo, ProgramParts), DockerError> {
    let c = docker.inspect_container(id, None).await?;
    let parts = program_parts(&c);
    Ok((container_info(c, id), parts))
}

/// Keeps `containers` equal to the containers the engine at `socket` has (besides other
/// engines' entries), calling `changed` after every change and `created` with where a new
/// container's program can be read ahead, until the process ends. Never returns: a lost
/// daemon is retried with back-off.
pub(crate) async fn watch(
    containers: Containers,
    socket: String,
    changed: impl Fn() + Send + 'static,
    created: impl Fn(ProgramHint) + Send + Sync + 'static,
) {
    let created = Arc::new(created);
    let mut reconnect = Reconnect::default();
    let mut own = HashSet::new();
    loop {
        let result = run(
            &containers,
            &socket,
            &mut own,
            &changed,
            &created,
            &mut reconnect,
        )
        .await;
        let wait = reconnect.lost(unix_now());
        // The first failure of a connection that worked is worth a warning; the retries
        // while the engine is down are not (the event decides, from `attempts`).
        {
            // In a block: the error is not held across the sleep.
            let error = result.err();
            crate::internal_events::emit(crate::internal_events::EngineReconnect {
                socket: &socket,
                error: error.as_ref().map(|e| e as &dyn std::fmt::Display),
                wait,
                attempts: reconnect.attempts,
            });
        }
        tokio::time::sleep(wait).await;
        if containers.read().is_ok_and(|c| !c.is_empty()) {
            // Keep what we know until the daemon answers again: the processes still run.
            tracing::debug!("keeping known containers while Docker is unreachable");
        }
    }
}

/// When to try an engine again, and from when to ask for its events.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reconnect {
    /// The next wait; doubles while the engine stays unreachable, starts over once it answered.
    backoff: Duration,
    /// Failed attempts since the engine last answered.
    attempts: u32,
    /// The current connection listed the containers (it worked).
    up: bool,
    /// When the last working connection ended (Unix seconds): events from then on are asked
    /// for again, so a container created and removed while sonde was away is not missed.
    since: Option<i64>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            backoff: Reconnect::FIRST,
            attempts: 0,
            up: false,
            since: None,
        }
    }
}

impl Reconnect {
    const FIRST: Duration = Duration::from_millis(100);
    /// A restarted daemon is seen again within this (a failed connect to a Unix socket costs
    /// nothing worth backing off further for).
    const MAX: Duration = Duration::from_millis(500);

    /// The connection listed the engine's containers.
    fn connected(&mut self) {
        *self = Reconnect {
            up: true,
            ..Reconnect::default()
        };
    }

    /// The connection (or the attempt) ended at `now`: how long to wait before the next one.
    fn lost(&mut self, now: i64) -> Duration {
        if self.up {
            self.since = Some(now);
            self.up = false;
        }
        self.attempts += 1;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(Reconnect::MAX);
        wait
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

async fn run<C>(
    containers: &Containers,
    socket: &str,
    own: &mut HashSet<String>,
    changed: &impl Fn(),
    created: &Arc<C>,
    reconnect: &mut Reconnect,
) -> Result<(), DockerError>
where
    C: Fn(ProgramHint) + Send + Sync + 'static,
{
    let docker = connect(socket)?;
    let engine = engine_name(&docker).await;
    let filters: HashMap<String, Vec<String>> = [
        ("type".to_string(), vec!["container".to_string()]),
        (
            "event".to_string(),
            // Podman says "remove" where Docker says "destroy".
            ["create", "start", "die", "destroy", "remove", "rename"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ),
    ]
    .into();
    // Subscribe first, then list: a container starting in between shows up in both, never in
    // neither.
    // After a lost connection, the events since it ended are replayed (handling them again is
    // harmless): the listing below gives the state, the replay what happened in between.
    let mut events = docker.events(Some(EventsOptions {
        filters: Some(filters),
        since: reconnect.since.map(|t| t.to_string()),
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
        "{engine} at {socket}: {} running containers",
        running_count(&listed_running)
    );
    resync(
        &mut containers.write().unwrap_or_else(|p| p.into_inner()),
        own,
        fresh,
    );
    reconnect.connected();
    changed();

    while let Some(event) = events.next().await {
        let event = event?;
        let action = event.action.unwrap_or_default();
        let Some(actor) = event.actor else { continue };
        let Some(id) = actor.id else { continue };
        match action.as_str() {
            "create" => {
                let info = Arc::new(info_from_event(&id, &actor.attributes.unwrap_or_default()));
                tracing::debug!("{engine} container {} ({}) created", info.name, short(&id));
                own.insert(id.clone());
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
                    tracing::debug!("{engine} container {} ({}) {action}", info.name, short(&id));
                    own.insert(id.clone());
                    containers
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, Arc::new(info));
                }
                Err(e) => tracing::debug!("container {} gone before inspect: {e}", short(&id)),
            },
            // A stopped container keeps its entry: it may be started again.
            "die" => continue,
            "destroy" | "remove" => {
                own.remove(&id);
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
#[path = "docker/docker_tests.rs"]
mod tests;
