//! The Docker API's answers as sonde decodes them: container inspection (`GET
//! /containers/{id}/json`), container lists and the event stream's messages. The first byte
//! picks which.
#![no_main]

use bollard::models::{ContainerInspectResponse, ContainerSummary, EventMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(c) = serde_json::from_slice::<ContainerInspectResponse>(json) {
                let info = sonde::fuzzing::container_info(c, "fuzz");
                // What discovery does with it: the cgroup-id match and the label lookups.
                let _ = sonde::fuzzing::container_id_from_cgroup(&info.id);
                let _ = sonde::fuzzing::glob(&info.name, &info.image);
            }
        }
        1 => {
            let _ = serde_json::from_slice::<Vec<ContainerSummary>>(json);
        }
        _ => {
            if let Ok(e) = serde_json::from_slice::<EventMessage>(json) {
                let _ = e.actor.and_then(|a| a.id);
            }
        }
    }
});
