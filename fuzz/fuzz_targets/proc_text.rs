//! The /proc texts discovery reads from every process on the host (a process controls its
//! own command name, environment and, in a container, much of its cgroup path), and the
//! small grammars of configuration values. The first byte picks the parser.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use sonde::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 6 {
        0 => {
            let _ = fuzzing::container_id_from_cgroup(&text);
        }
        1 => {
            let _ = fuzzing::parse_stat(rest);
        }
        2 => {
            let mut m = HashMap::new();
            fuzzing::parse_listening(rest, &mut m);
        }
        3 => {
            let _ = fuzzing::parse_otel_env(rest);
        }
        4 => {
            let _ = fuzzing::PortSet::parse(&text);
        }
        _ => {
            let (pattern, subject) = text.split_once('\n').unwrap_or((&text, ""));
            let _ = fuzzing::glob(pattern, subject);
        }
    }
});
