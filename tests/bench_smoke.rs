//! The overhead benchmark (bench/run.sh) in its smoke form: seconds, small counts, so the
//! benchmark cannot rot. Asserts only what does not depend on the machine's speed: exactly
//! two uprobe hits per request, every request counted, nothing lost at a low rate. Never a
//! timing threshold: the full benchmark (BENCHMARKS.md) is not part of the test suite.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The smoke run takes well under a minute here; this bounds a hung one.
const SMOKE_TIMEOUT: Duration = Duration::from_secs(600);

fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn has_go() -> bool {
    has("go")
        || std::fs::read_dir("/opt/sonde-go")
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
}

fn run_smoke(facts: &Path) -> String {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let log = facts.with_extension("log");
    let mut child = Command::new("python3")
        .arg(repo.join("bench/run.py"))
        .args(["--smoke", "--sonde", env!("CARGO_BIN_EXE_sonde"), "--facts"])
        .arg(facts)
        .current_dir(&repo)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("create the log"))
        .spawn()
        .expect("run bench/run.py");
    let deadline = Instant::now() + SMOKE_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for bench/run.py") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "bench/run.py --smoke still running after {SMOKE_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "bench/run.py --smoke failed ({status}):\n{output}"
    );
    output
}

fn read_facts(path: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(path)
        .expect("the smoke run writes its facts")
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn smoke_run_counts_two_hits_and_every_request() {
    let test = "smoke_run_counts_two_hits_and_every_request";
    if !require_root_or_skip(test) {
        return;
    }
    for tool in ["python3", "wrk", "taskset"] {
        if !has(tool) {
            skip_missing(test, tool);
            return;
        }
    }
    if !has_go() {
        skip_missing(test, "a Go toolchain");
        return;
    }
    let facts_path =
        std::env::temp_dir().join(format!("sonde-bench-smoke-{}.facts", std::process::id()));
    let log = run_smoke(&facts_path);
    let f = read_facts(&facts_path);
    let _ = std::fs::remove_file(&facts_path);
    let get = |k: &str| {
        *f.get(k)
            .unwrap_or_else(|| panic!("no fact {k} in:\n{f:?}\n{log}"))
    };

    // The floor: exactly the offsets sonde probes, hit twice per request (entry + its RET).
    assert!(get("floor_completed") > 0, "{log}");
    assert_eq!(get("floor_failed"), 0, "{log}");
    assert_eq!(get("floor_hits"), 2 * get("floor_completed"), "{f:?}");
    // sonde: its programs ran twice per request, and /metrics counted every one.
    assert!(get("metrics_completed") > 0, "{log}");
    assert_eq!(get("metrics_failed"), 0, "{log}");
    assert_eq!(
        get("metrics_program_runs"),
        2 * get("metrics_completed"),
        "{f:?}"
    );
    assert_eq!(get("metrics_counted"), get("metrics_completed"), "{f:?}");
    assert_eq!(get("metrics_events_lost"), 0, "{f:?}");
    // A fixed low rate: nothing lost between the kernel and /metrics.
    assert!(get("fixed_completed") > 0, "{log}");
    assert_eq!(get("fixed_failed"), 0, "{log}");
    assert_eq!(get("fixed_counted"), get("fixed_completed"), "{f:?}");
    assert_eq!(get("fixed_events_lost"), 0, "{f:?}");
    // Every mode of the throughput comparison ran.
    assert_eq!(get("trivial_runs"), 4, "{f:?}");
    assert_eq!(get("cpu_handler_runs"), 3, "{f:?}");
}
