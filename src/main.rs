//! sonde: RED metrics for Go services from eBPF uprobes, with no code change.

fn main() {
    std::process::exit(sonde::cli::run());
}
