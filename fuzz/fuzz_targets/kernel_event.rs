//! Kernel → user event records. Their method, path and host bytes were copied from the
//! target's memory, so a hostile process chooses them; then the route matcher sees the path.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = sonde::fuzzing::decode_event(data) {
        let routes = sonde::fuzzing::RouteMatcher::new(
            &["/users/{id}".to_string(), "/static/*".to_string()],
            "/**",
        )
        .expect("fixed patterns");
        let _ = routes.route(&request.path);
    }
});
