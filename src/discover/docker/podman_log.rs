//! Podman's event log, read directly: a container starting before Podman's API service
//! relayed its creation is known from the log's newest event that names it.

use std::collections::HashMap;

use super::ContainerInfo;

/// Podman's event log (rootful, `events_logger = "file"`): the CLI appends each event here
/// before it goes on, while the API service relays it only later — ~200 ms measured here, after
/// the container's program has started.
pub(crate) const PODMAN_EVENTS_LOG: &str = "/run/libpod/events/events.log";
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
pub(crate) fn container_from_event_log(log: &[u8], id: &str) -> Option<ContainerInfo> {
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
pub(crate) fn podman_container_from_log(id: &str) -> Option<ContainerInfo> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(crate::discover::bundle::on_host(PODMAN_EVENTS_LOG)).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(EVENTS_TAIL_BYTES)))
        .ok()?;
    let mut buf = Vec::new();
    f.take(EVENTS_TAIL_BYTES).read_to_end(&mut buf).ok()?;
    container_from_event_log(&buf, id)
}
