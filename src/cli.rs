//! Command line: `sonde` (run the agent), `sonde inspect`, `sonde check`.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Config;

pub use crate::config::EXIT_CONFIG;

#[derive(Debug, Parser)]
#[command(
    name = "sonde",
    version,
    about = "RED metrics for every Go service on this host, from eBPF uprobes: no code change, no restart"
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
    /// Show what this kernel and these privileges allow; exits 1 when something the
    /// configuration needs is unavailable.
    Check {
        /// Load every program of every embedded BPF object through the verifier, and nothing
        /// else (the kernel matrix, scripts/kernel-matrix.sh).
        #[arg(long, hide = true)]
        load_all: bool,
        /// With --load-all: also every program of this BPF object file (repeatable).
        #[arg(long, hide = true, value_name = "FILE", requires = "load_all")]
        load_object: Vec<PathBuf>,
    },
    /// Benchmark floor: count-only uprobes on the offsets sonde would probe (bench/).
    #[command(hide = true)]
    Floor {
        /// The process to probe.
        pid: u32,
    },
}

/// `--help`'s text after the usage: how settings are given, then every key (from the same
/// table the loader uses, so none can be missing).
fn long_about() -> String {
    format!(
        "Runs the agent when no command is given. Every setting is a YAML key in --config and \
         an environment variable SONDE_<KEY> (BEYLA_<KEY> is accepted too), e.g.\n\n  \
         SONDE_PROMETHEUS_PORT=9400 SONDE_OPEN_PORT=8080 sonde\n\n\
         Keys:\n{}\n\
         OTLP export is configured by the standard OTEL_EXPORTER_OTLP_* variables (README).",
        crate::config::keys_help()
    )
}

pub fn run() -> i32 {
    let parsed = Cli::command()
        .long_about(long_about())
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
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
        Command::Check {
            load_all,
            load_object,
        } => {
            init_logging("warn");
            if load_all {
                return check_load_all(&load_object);
            }
            let config = match Config::from_env_and_file(cli.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sonde: configuration error: {e}");
                    return EXIT_CONFIG;
                }
            };
            check(&config)
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
        Ok(pid) => crate::discover::proc::exe_path(pid),
        Err(_) => PathBuf::from(target),
    };
    match crate::inspect::inspect(&path) {
        Ok(plan) => {
            print!("{}", crate::inspect::render(&plan));
            println!("{}", source_line(config, Some(&plan)));
            0
        }
        Err(e) => {
            println!("{}: cannot be instrumented: {e}", path.display());
            if matches!(e, crate::inspect::InspectError::NotGo) {
                println!("{}", source_line(config, None));
            }
            1
        }
    }
}

/// Which source measures such a binary when selected, and why.
fn source_line(config: &Config, plan: Option<&crate::inspect::ProbePlan>) -> String {
    use crate::config::GoSource;
    let label = crate::select::labels::GO_SOURCE;
    let Some(plan) = plan else {
        return if config.syscall_tracing {
            "source:     syscalls (not Go; syscall_tracing is on)".into()
        } else {
            "source:     none (not Go, and syscall_tracing is off)".into()
        };
    };
    if config.go_source == GoSource::Syscalls && !config.syscall_tracing {
        return "source:     uprobes (go_source=syscalls, but syscall_tracing is off)".into();
    }
    let traces = config.otlp.traces.is_some();
    let (source, why) =
        crate::inspect::source::choose(config.go_source, plan, traces, config.syscall_tracing);
    let limits = match config.go_source {
        GoSource::Syscalls => ": plaintext HTTP/1.x only",
        _ => "",
    };
    format!(
        "source:     {} ({why}{limits}; a container's {label} label overrides)",
        source.name()
    )
}

/// Every program of every embedded object (and of `extra` files) through the verifier: 0 only
/// when all of them load.
fn check_load_all(extra: &[PathBuf]) -> i32 {
    let outcomes = crate::attach::verify::load_all(extra);
    print!("{}", crate::attach::verify::render(&outcomes));
    let rejected = outcomes.iter().filter(|o| o.result.is_err()).count();
    println!(
        "{} programs loaded, {rejected} rejected",
        outcomes.len() - rejected
    );
    i32::from(rejected > 0)
}

/// The exit status of `sonde check`: 1 when the Go probes cannot run, or when the syscall
/// tracer cannot load while the configuration turns it on (its default).
fn check_status(go_probes: bool, syscall_tracer: Option<bool>, syscall_tracing: bool) -> i32 {
    let tracer_missing = syscall_tracing && syscall_tracer != Some(true);
    i32::from(!go_probes || tracer_missing)
}

fn check(config: &Config) -> i32 {
    match crate::kernel::ensure_tracefs() {
        Ok(true) => println!("mounted tracefs at /sys/kernel/tracing"),
        Ok(false) => {}
        Err(e) => println!("warning: {e}"),
    }
    let features = crate::kernel::detect(&crate::attach::syscalls::kprobe_functions());
    print!("{}", crate::kernel::render(&features));
    match crate::privileges::effective() {
        Some(caps) => print!("{}", crate::privileges::report(caps)),
        None => println!("capabilities: cannot read CapEff from /proc/self/status"),
    }
    let mut loader = crate::attach::loader();
    let go_probes = match crate::kernel::can_run_go_probes(&features) {
        Ok(()) => match crate::attach::Attacher::load(&mut loader) {
            Ok(_) => {
                println!("BPF programs load and pass the verifier: yes");
                println!("Go HTTP server probes: available");
                true
            }
            Err(e) => {
                println!("BPF programs load and pass the verifier: no ({e})");
                println!("Go HTTP server probes: unavailable");
                false
            }
        },
        Err(why) => {
            println!("Go HTTP server probes: unavailable: {why}");
            false
        }
    };
    let tracer = if !config.syscall_tracing {
        println!("syscall + OpenSSL tracer (non-Go processes): off (syscall_tracing is false)");
        None
    } else if !go_probes {
        // The same privileges and ring buffer are missing: loading it would only say so again.
        println!("syscall + OpenSSL tracer (non-Go processes): not tried");
        Some(false)
    } else {
        // Attached once and detached: the source named is one that works here.
        let loaded = crate::attach::syscalls::SyscallTracer::load(
            &mut loader,
            crate::attach::Activity::new(),
            config.syscall_source,
        )
        .and_then(|mut t| t.try_attach().map(|()| t));
        match loaded {
            Ok(t) => {
                println!(
                    "syscall + OpenSSL tracer (non-Go processes): available, {}",
                    t.source()
                );
                Some(true)
            }
            Err(e) => {
                println!(
                    "syscall + OpenSSL tracer (non-Go processes): unavailable: {e}\n\
                     the configuration needs it (syscall_tracing: true; \
                     SONDE_SYSCALL_TRACING=false runs without it)"
                );
                Some(false)
            }
        }
    };
    check_status(go_probes, tracer, config.syscall_tracing)
}

#[cfg(test)]
mod tests {
    use super::check_status;

    #[test]
    fn check_fails_when_a_needed_capability_is_missing() {
        // Everything there.
        assert_eq!(check_status(true, Some(true), true), 0);
        // The syscall tracer is rejected (the 6.1 verifier did) while the configuration
        // traces non-Go processes: not a warning, a failure.
        assert_eq!(check_status(true, Some(false), true), 1);
        // The same kernel, with syscall tracing turned off: nothing needed is missing.
        assert_eq!(check_status(true, None, false), 0);
        assert_eq!(check_status(true, Some(false), false), 0);
        // No Go probes: always a failure.
        assert_eq!(check_status(false, Some(true), true), 1);
        assert_eq!(check_status(false, None, false), 1);
    }
}
