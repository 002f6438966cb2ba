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

use std::collections::{HashMap, HashSet};
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

/// Podman's event log (rootful, `events_logger = "file"`): the CLI appends each event here
/// before it goes on, while the API service relays it only later — ~200 ms measured here, after
/// the container's program has started.
pub const PODMAN_EVENTS_LOG: &str = "/run/libpod/events/events.log";
/// How much of the end of the log is read: a starting container's create event is recent.
const EVENTS_TAIL_BYTES: u64 = 256 << 10;

#[derive(serde::Deserialize)]
struct PodmanEvent {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "Status", default)]
    status: String,
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(rename = "Attributes", default)]
    attributes: Option<HashMap<String, String>>,
}

/// A container as the newest event of Podman's log that names it describes it (labels are
/// its attributes), for a container starting before the API service relayed its creation.
pub fn container_from_event_log(log: &[u8], id: &str) -> Option<ContainerInfo> {
    log.split(|&b| b == b'\n').rev().find_map(|line| {
        // Cheap filter first: most lines are other containers'.
        if line.windows(id.len()).all(|w| w != id.as_bytes()) {
            return None;
        }
        let e: PodmanEvent = serde_json::from_slice(line).ok()?;
        (e.kind == "container" && e.id == id && e.status != "remove").then(|| ContainerInfo {
            id: e.id,
            name: e.name,
            image: e.image,
            labels: e.attributes.unwrap_or_default(),
        })
    })
}

/// [`container_from_event_log`] on the end of Podman's log file.
pub fn podman_container_from_log(id: &str) -> Option<ContainerInfo> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(crate::discover::bundle::on_host(PODMAN_EVENTS_LOG)).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(EVENTS_TAIL_BYTES)))
        .ok()?;
    let mut buf = Vec::new();
    f.take(EVENTS_TAIL_BYTES).read_to_end(&mut buf).ok()?;
    container_from_event_log(&buf, id)
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

/// The engine sockets to watch: `DOCKER_HOST` (unix://…) or /var/run/docker.sock, Podman's
/// rootful /run/podman/podman.sock and rootless `$XDG_RUNTIME_DIR/podman/podman.sock` — those
/// that exist, each file once; Docker's when none exists (it is retried until it answers).
pub fn socket_paths() -> Vec<String> {
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
pub fn candidate_sockets(docker_host: Option<String>, xdg_runtime: Option<String>) -> Vec<String> {
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
pub fn resync(
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

/// Keeps `containers` equal to the containers the engine at `socket` has (besides other
/// engines' entries), calling `changed` after every change and `created` with where a new
/// container's program can be read ahead, until the process ends. Never returns: a lost
/// daemon is retried with back-off.
pub async fn watch(
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
mod tests {
    use super::*;

    #[test]
    fn back_off_starts_over_after_a_connection_that_worked_and_replays_the_gap() {
        let mut r = Reconnect::default();
        // The engine is not there yet: waits grow to the cap, no replay (nothing was seen).
        let waits: Vec<u128> = (0..6).map(|_| r.lost(1000).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500, 500]);
        assert_eq!(r.since, None);
        r.connected();
        assert!(r.up && r.attempts == 0);
        // It restarts: the first retry is quick again, and events from the loss on are asked for.
        assert_eq!(r.lost(2000).as_millis(), 100);
        assert_eq!(r.lost(2001).as_millis(), 200);
        assert_eq!(r.since, Some(2000));
        for i in 0..3 {
            r.connected();
            assert_eq!(r.lost(3000 + i).as_millis(), 100, "restart {i}");
            assert_eq!(r.since, Some(3000 + i));
        }
    }

    #[test]
    fn sockets_of_both_engines() {
        let s = candidate_sockets(None, Some("/run/user/1000/".into()));
        assert_eq!(
            s,
            [
                "unix:///var/run/docker.sock",
                "unix:///run/podman/podman.sock",
                "unix:///run/user/1000/podman/podman.sock"
            ]
        );
        // DOCKER_HOST pointing at Podman is watched once.
        let s = candidate_sockets(Some("unix:///run/podman/podman.sock".into()), None);
        assert_eq!(s, ["unix:///run/podman/podman.sock"]);
        // A TCP DOCKER_HOST is not followed; a relative runtime dir is ignored.
        let s = candidate_sockets(Some("tcp://1.2.3.4:2375".into()), Some("run".into()));
        assert_eq!(
            s,
            [
                "unix:///var/run/docker.sock",
                "unix:///run/podman/podman.sock"
            ]
        );
    }

    #[test]
    fn each_engine_replaces_only_its_own_containers() {
        let info = |id: &str| {
            Arc::new(ContainerInfo {
                id: id.into(),
                name: id.into(),
                image: String::new(),
                labels: HashMap::new(),
            })
        };
        let mut map = HashMap::new();
        let (mut docker, mut podman) = (HashSet::new(), HashSet::new());
        resync(
            &mut map,
            &mut docker,
            [("d1".to_string(), info("d1"))].into(),
        );
        resync(
            &mut map,
            &mut podman,
            [
                ("p1".to_string(), info("p1")),
                ("p2".to_string(), info("p2")),
            ]
            .into(),
        );
        assert_eq!(map.len(), 3);
        // Podman restarted and lists only p2: d1 stays.
        resync(
            &mut map,
            &mut podman,
            [("p2".to_string(), info("p2"))].into(),
        );
        let mut ids: Vec<&String> = map.keys().collect();
        ids.sort();
        assert_eq!(ids, ["d1", "p2"]);
        resync(&mut map, &mut docker, HashMap::new());
        assert_eq!(map.keys().collect::<Vec<_>>(), ["p2"]);
    }

    #[test]
    fn podman_event_attributes_are_not_labels() {
        let attributes: HashMap<String, String> = [
            ("name", "p"),
            ("image", "localhost/web:1"),
            ("containerExitCode", "0"),
            ("podId", ""),
            ("io.podman.compose.project", "shop"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let info = info_from_event("abc", &attributes);
        assert_eq!(info.labels.len(), 1, "{:?}", info.labels);
    }

    #[test]
    fn podman_event_log_names_a_starting_container() {
        let id = "1184b9c36f5baa24b3b152bc49b50c2dfbe31530fc1745e7c67905b593e28e46";
        let other = "06e3fe76c0134e13d86e10fa47ef804b64f02e649f54f7a03e79ffd6eb0e9738";
        // Lines as Podman 4.3 writes them.
        let log = format!(
            r#"{{"ID":"{id}","Image":"localhost/web:1","Name":"web","Status":"create","Time":"2026-12-07T02:56:31.4Z","Type":"container","Attributes":{{"io.buildah.version":"1.28.2","sonde.enable":"true"}}}}
{{"ID":"{other}","Image":"localhost/x:1","Name":"x","Status":"remove","Time":"2026-12-07T02:57:02.2Z","Type":"container","Attributes":{{"foo":"bar"}}}}
{{"Name":"localhost/web:1","Status":"pull","Time":"2026-12-07T02:57:03Z","Type":"image"}}
"#
        );
        let info = container_from_event_log(log.as_bytes(), id).unwrap();
        assert_eq!(
            (info.name.as_str(), info.image.as_str()),
            ("web", "localhost/web:1")
        );
        assert_eq!(info.labels["sonde.enable"], "true");
        // Removed: gone, not described.
        assert!(container_from_event_log(log.as_bytes(), other).is_none());
        assert!(container_from_event_log(log.as_bytes(), &"f".repeat(64)).is_none());
        assert!(container_from_event_log(b"garbage\n{", id).is_none());
    }

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
