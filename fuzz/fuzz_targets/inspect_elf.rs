//! Whole executables through the inspector, as `sonde` reads them from other containers.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sonde::fuzzing::inspect_bytes("fuzz".into(), data.to_vec(), Duration::from_secs(5));
});
