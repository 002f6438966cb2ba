//! The shipped Prometheus rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`), and the dashboards are what dashboards/generate.py writes.
//! (Names and labels against sonde's exposition: src/export/dashboards.rs; against a live
//! Prometheus: tests/compose.rs.)

mod support;

use std::process::Command;

use support::*;

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/compose/prometheus/rules");

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    if Command::new("promtool").arg("--version").output().is_err() {
        skip_missing(
            "promtool_checks_and_tests_the_rules",
            "promtool (Debian's prometheus)",
        );
        return;
    }
    let (ok, out) = run(Command::new("promtool")
        .args(["check", "rules", "sonde.rules.yml"])
        .current_dir(RULES));
    assert!(ok && out.contains("SUCCESS: 32 rules found"), "{out}");
    let (ok, out) = run(Command::new("promtool")
        .args(["test", "rules", "sonde.rules.test.yml"])
        .current_dir(RULES));
    assert!(ok && out.contains("SUCCESS"), "{out}");
    // The unit tests can fail: a wrong expectation is reported.
    let dir = std::env::temp_dir().join(format!("sonde-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        format!("{RULES}/sonde.rules.yml"),
        dir.join("sonde.rules.yml"),
    )
    .unwrap();
    let tests = std::fs::read_to_string(format!("{RULES}/sonde.rules.test.yml")).unwrap();
    std::fs::write(
        dir.join("t.yml"),
        tests.replace("value: 0.25", "value: 0.3"),
    )
    .unwrap();
    let (ok, out) = run(Command::new("promtool")
        .args(["test", "rules", "t.yml"])
        .current_dir(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !ok && out.contains("sonde:rpc_server_error_ratio:rate1h"),
        "{out}"
    );
}

#[test]
fn dashboards_are_generated() {
    let (ok, out) = run(Command::new("python3").args([
        concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/generate.py"),
        "--check",
    ]));
    assert!(ok, "{out}");
}
