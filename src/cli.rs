//! Command line: `sonde` (run the agent), `sonde inspect`, `sonde check`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Exit code for bad configuration or usage, before anything is attached.
pub const EXIT_CONFIG: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "sonde",
    version,
    about = "RED metrics for every Go service on this host, from eBPF uprobes: no code change, no restart",
    long_about = "Runs the agent when no command is given. Every setting is a YAML key in --config \
                  and an environment variable SONDE_<KEY> (BEYLA_<KEY> is accepted too), e.g.\n\n  \
                  SONDE_PROMETHEUS_PORT=9400 SONDE_OPEN_PORT=8080 sonde\n\n\
                  Keys: prometheus_port, prometheus_path, open_port, executable_name, service_name, \
                  service_namespace, metrics_report_target, metrics_report_peer, metrics_naming \
                  (semconv|beyla-v1|beyla-v0), routes_patterns, routes_unmatched, log_level, print_traces."
)]
struct Cli {
    /// YAML configuration file (also SONDE_CONFIG); the environment overrides it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Show the probe plan of a Go binary, or why it cannot be instrumented.
    Inspect {
        /// A process id (its /proc/<pid>/exe is read) or the path of an executable.
        target: String,
    },
    /// Show what this kernel and these privileges allow.
    Check,
    /// Benchmark floor: count-only uprobes on the offsets sonde would probe (bench/).
    #[command(hide = true)]
    Floor {
        /// The process to probe.
        pid: u32,
    },
}

pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Inspect { target } => {
            init_logging("warn");
            let config = match Config::from_env_and_file(cli.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sonde: configuration error: {e}");
                    return EXIT_CONFIG;
                }
            };
            inspect(&target, &config)
        }
        Command::Check => {
            init_logging("warn");
            check()
        }
        Command::Floor { pid } => {
            init_logging("warn");
            crate::floor::run(pid)
        }
        Command::Run => {
            let config = match Config::from_env_and_file(cli.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sonde: configuration error: {e}");
                    return EXIT_CONFIG;
                }
            };
            init_logging(&config.log_level);
            crate::agent::run(config)
        }
    }
}

/// `SONDE_LOG_LEVEL` (or the configured level) sets the level; `RUST_LOG`-style directives work.
fn init_logging(default_level: &str) {
    let filter = std::env::var("SONDE_LOG_LEVEL")
        .ok()
        .map(|s| s.to_lowercase())
        .unwrap_or_else(|| default_level.to_lowercase());
    // The HTTP/gRPC client crates log request details at debug level: never let them near
    // the OTLP credentials.
    let filter = format!(
        "{filter},h2=error,hyper=error,hyper_util=error,tonic=error,tower=error,rustls=error"
    );
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn inspect(target: &str, config: &Config) -> i32 {
    let path = match target.parse::<u32>() {
        Ok(pid) => PathBuf::from(format!("/proc/{pid}/exe")),
        Err(_) => PathBuf::from(target),
    };
    match crate::inspect::inspect(&path) {
        Ok(plan) => {
            print!("{}", crate::inspect::render(&plan));
            println!("{}", source_line(config, true));
            0
        }
        Err(e) => {
            println!("{}: cannot be instrumented: {e}", path.display());
            if matches!(e, crate::inspect::InspectError::NotGo) {
                println!("{}", source_line(config, false));
            }
            1
        }
    }
}

/// Which source measures such a binary when selected, and why.
fn source_line(config: &Config, go: bool) -> String {
    use crate::config::GoSource;
    let label = crate::select::labels::GO_SOURCE;
    match (go, config.go_source, config.syscall_tracing) {
        (false, _, true) => "source:     syscalls (not Go; syscall_tracing is on)".into(),
        (false, _, false) => "source:     none (not Go, and syscall_tracing is off)".into(),
        (true, GoSource::Uprobes, _) => format!(
            "source:     uprobes (go_source=uprobes; a container's {label} label overrides)"
        ),
        (true, GoSource::Syscalls, true) => format!(
            "source:     syscalls (go_source=syscalls: plaintext HTTP/1.x only; a container's {label} label overrides)"
        ),
        (true, GoSource::Syscalls, false) => {
            "source:     uprobes (go_source=syscalls, but syscall_tracing is off)".into()
        }
    }
}

fn check() -> i32 {
    match crate::kernel::ensure_tracefs() {
        Ok(true) => println!("mounted tracefs at /sys/kernel/tracing"),
        Ok(false) => {}
        Err(e) => println!("warning: {e}"),
    }
    let features = crate::kernel::detect();
    print!("{}", crate::kernel::render(&features));
    match crate::privileges::effective() {
        Some(caps) => print!("{}", crate::privileges::report(caps)),
        None => println!("capabilities: cannot read CapEff from /proc/self/status"),
    }
    match crate::kernel::can_run_go_probes(&features) {
        Ok(()) => {
            let mut loader = crate::attach::loader();
            match crate::attach::Attacher::load(&mut loader) {
                Ok(_) => println!("BPF programs load and pass the verifier: yes"),
                Err(e) => {
                    println!("BPF programs load and pass the verifier: no ({e})");
                    return 1;
                }
            }
            println!("Go HTTP server probes: available");
            // Non-Go processes only: the Go probes work without it, so it does not fail.
            match crate::attach::syscalls::SyscallTracer::load(
                &mut loader,
                crate::attach::Activity::new(),
            ) {
                Ok(_) => println!(
                    "syscall + OpenSSL tracer (non-Go processes): available, {}",
                    crate::kernel::syscall_source().detail
                ),
                Err(e) => println!("syscall + OpenSSL tracer (non-Go processes): unavailable: {e}"),
            }
            0
        }
        Err(why) => {
            println!("Go HTTP server probes: unavailable: {why}");
            1
        }
    }
}
