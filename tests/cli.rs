//! The command line as a user meets it: bad configuration, `inspect`, `check`, `--help`.

mod support;

use std::process::Command;

use support::*;

fn sonde(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(sonde_bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().expect("run sonde");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    for (env, key, value) in [
        (("SONDE_OPEN_PORT", "80a"), "SONDE_OPEN_PORT", "80a"),
        (("OPEN_PORT", "9-1"), "OPEN_PORT", "9-1"),
        (
            ("BEYLA_PROMETHEUS_PORT", "70000"),
            "BEYLA_PROMETHEUS_PORT",
            "70000",
        ),
        (
            ("SONDE_METRICS_NAMING", "beyla-v9"),
            "SONDE_METRICS_NAMING",
            "beyla-v9",
        ),
        (
            ("SONDE_EXECUTABLE_NAME", "(unclosed"),
            "SONDE_EXECUTABLE_NAME",
            "(unclosed",
        ),
        (
            ("BEYLA_METRICS_REPORT_PEER", "maybe"),
            "BEYLA_METRICS_REPORT_PEER",
            "maybe",
        ),
        (("SONDE_LOG_LEVEL", "loud"), "SONDE_LOG_LEVEL", "loud"),
        (("SONDE_GO_SOURCE", "kprobes"), "SONDE_GO_SOURCE", "kprobes"),
    ] {
        let (code, _, err) = sonde(&[], &[env, ("SONDE_OPEN_PORT_UNUSED", "1")]);
        assert_eq!(code, 2, "{env:?}: {err}");
        assert!(err.contains(key) && err.contains(value), "{env:?}: {err}");
    }
}

#[test]
fn yaml_errors_name_the_key_and_nothing_to_select_is_an_error() {
    let dir = std::env::temp_dir().join(format!("sonde-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("sonde.yaml");
    std::fs::write(&f, "open_port: 8080\nprometheus_prot: 9400\n").unwrap();
    let (code, _, err) = sonde(&["--config", f.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("prometheus_prot"), "{err}");
    let (code, _, err) = sonde(&[], &[("SONDE_CONFIG", f.to_str().unwrap())]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = sonde(&[], &[("SONDE_DOCKER", "false")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("SONDE_OPEN_PORT"), "{err}");
    let (code, _, err) = sonde(&["--config", "/nonexistent/sonde.yaml"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/sonde.yaml"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_and_version() {
    let (code, out, _) = sonde(&["--help"], &[]);
    assert_eq!(code, 0);
    for word in ["inspect", "check", "--config", "SONDE_OPEN_PORT"] {
        assert!(out.contains(word), "--help lacks {word}:\n{out}");
    }
    let (code, out, _) = sonde(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
    let (code, _, err) = sonde(&["frobnicate"], &[]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn inspect_shows_the_plan_or_why_not() {
    let t = go_targets()
        .into_iter()
        .find(|t| t.stripped && t.linkage == "dynamic")
        .expect("a stripped dynamic target");
    let (code, out, _) = sonde(&["inspect", t.path.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("go version: {}", t.version)), "{out}");
    assert!(
        out.contains("symbols:    .gopclntab") || out.contains("pclntab"),
        "{out}"
    );
    // A stripped binary's offsets come from its own type metadata, each field named with
    // its source.
    assert!(out.contains("offsets:    runtime type metadata"), "{out}");
    assert!(
        out.contains("http.response.status")
            && out.contains("(type metadata)")
            && !out.contains("(table"),
        "{out}"
    );
    assert!(
        out.contains("net/http.serverHandler.ServeHTTP") && out.contains("RET"),
        "{out}"
    );

    // A corrupt copy: the first half of the file.
    let data = std::fs::read(&t.path).unwrap();
    let corrupt = std::env::temp_dir().join(format!("sonde-corrupt-{}", std::process::id()));
    std::fs::write(&corrupt, &data[..data.len() / 2]).unwrap();
    let (code, out, _) = sonde(&["inspect", corrupt.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot be instrumented"), "{out}");
    let _ = std::fs::remove_file(&corrupt);

    let (code, out, _) = sonde(&["inspect", "/bin/sh"], &[]);
    assert_eq!(code, 1);
    assert!(out.contains("not a Go binary"), "{out}");

    // By PID: our own process is not Go either.
    let (code, out, _) = sonde(&["inspect", &std::process::id().to_string()], &[]);
    assert_eq!(code, 1);
    assert!(out.contains("not a Go binary"), "{out}");
}

#[test]
fn inspect_says_which_source_measures_the_binary() {
    let t = go_targets()
        .into_iter()
        .find(|t| t.stripped && t.linkage == "dynamic")
        .expect("a stripped dynamic target");
    let path = t.path.to_str().unwrap();
    let (code, out, _) = sonde(&["inspect", path], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("source:     uprobes (go_source=uprobes"),
        "{out}"
    );
    let (code, out, _) = sonde(&["inspect", path], &[("SONDE_GO_SOURCE", "syscalls")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("source:     syscalls (go_source=syscalls"),
        "{out}"
    );
    // auto: this server can serve TLS (its -tls flag), the same code built without it cannot.
    let (code, out, _) = sonde(&["inspect", path], &[("SONDE_GO_SOURCE", "auto")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("speaks:     TLS server yes, gRPC no, h2c no"),
        "{out}"
    );
    assert!(
        out.contains("source:     uprobes (go_source=auto: can serve TLS"),
        "{out}"
    );
    for plain in plaintext_go_servers() {
        let (code, out, _) = sonde(
            &["inspect", plain.to_str().unwrap()],
            &[("SONDE_GO_SOURCE", "auto")],
        );
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("speaks:     TLS server no, gRPC no, h2c no"),
            "{out}"
        );
        assert!(
            out.contains("source:     syscalls (go_source=auto: plaintext HTTP/1.x only"),
            "{out}"
        );
    }
    let (code, _, err) = sonde(&["inspect", path], &[("SONDE_GO_SOURCE", "both")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("SONDE_GO_SOURCE"), "{err}");
    let (code, out, _) = sonde(&["inspect", "/bin/sh"], &[]);
    assert_eq!(code, 1);
    assert!(out.contains("source:     syscalls (not Go"), "{out}");
    let (_, out, _) = sonde(
        &["inspect", "/bin/sh"],
        &[("SONDE_SYSCALL_TRACING", "false")],
    );
    assert!(out.contains("source:     none (not Go"), "{out}");
}

#[test]
fn check_reports_kernel_features_and_verifier() {
    if !require_root_or_skip("check_reports_kernel_features_and_verifier") {
        return;
    }
    let (code, out, _) = sonde(&["check"], &[]);
    assert_eq!(code, 0, "{out}");
    for line in [
        "uprobes",
        "ring buffer",
        "kprobes",
        "tracefs",
        "CAP_BPF",
        "pass the verifier: yes",
    ] {
        assert!(out.contains(line), "check lacks {line}:\n{out}");
    }
}

#[test]
fn check_follows_the_configuration() {
    if !require_root_or_skip("check_follows_the_configuration") {
        return;
    }
    // `check` reads the configuration now: a bad value is a configuration error.
    let (code, _, err) = sonde(&["check"], &[("SONDE_SYSCALL_TRACING", "maybe")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.to_lowercase().contains("syscall_tracing"), "{err}");
    // Turned off, the tracer is not needed: not loaded, not a failure.
    let (code, out, _) = sonde(&["check"], &[("SONDE_SYSCALL_TRACING", "false")]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("syscall + OpenSSL tracer (non-Go processes): off (syscall_tracing is false)"),
        "{out}"
    );
}

/// `sonde check --load-all` (the kernel matrix's verifier check) loads every embedded program,
/// and a known-bad object (tests/kernels/unbounded.bpf.c, compiled now) is reported rejected
/// with the verifier's reason and a non-zero exit: a verifier regression cannot pass silently.
#[test]
fn load_all_loads_every_program_and_sees_a_rejection() {
    if !require_root_or_skip("load_all_loads_every_program_and_sees_a_rejection") {
        return;
    }
    let (code, out, _) = sonde(&["check", "--load-all"], &[]);
    assert_eq!(code, 0, "{out}");
    for program in [
        "sonde.bpf.o/server_handler_entry",
        "launch.bpf.o/task_rename",
        "floor.bpf.o/floor_hit",
        "syscalls.bpf.o/sys_exit_read",
        "syscalls.bpf.o/ssl_return",
    ] {
        assert!(
            out.contains(&format!("loaded {program}")),
            "{program}:\n{out}"
        );
    }
    assert!(out.contains(" programs loaded, 0 rejected"), "{out}");

    let dir = std::env::temp_dir().join(format!("sonde-bad-bpf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("unbounded.bpf.o");
    let repo = env!("CARGO_MANIFEST_DIR");
    let st = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".into()))
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
        ])
        .arg(format!("{repo}/tests/kernels/unbounded.bpf.c"))
        .arg("-o")
        .arg(&bad)
        .status()
        .expect("run clang (it builds sonde too)");
    assert!(st.success());
    let (code, out, _) = sonde(
        &[
            "check",
            "--load-all",
            "--load-object",
            bad.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("unbounded.bpf.o/read_unbounded: rejected: "))
        .unwrap_or_else(|| panic!("no rejection:\n{out}"));
    assert!(line.contains("verifier: R2 "), "{line}");
    assert!(out.contains(" programs loaded, 1 rejected"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
