//! The YAML configuration file (`--config`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut c = sonde::fuzzing::Config::default();
    let _ = c.apply_yaml(text, "fuzz.yaml");
});
