//! The syscall tracer's HTTP/1.x parser over bytes a traced process read and wrote: any
//! process chooses them. `parse_arbitrary` reads the input as role, directions and chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for exchange in sonde::fuzzing::parse_http1(data) {
        // Whatever comes out must be printable as the exporter would.
        let _ = (exchange.method.len(), exchange.path.len(), exchange.status);
    }
});
