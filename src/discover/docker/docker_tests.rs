//! The watch's pure parts: reconnect back-off, sockets, per-engine resync, and the mapping of
//! events, inspect answers and Podman's log.

use super::info::overlay_layers;
use super::podman_log::container_from_event_log;
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
