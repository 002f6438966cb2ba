//! sonde: RED metrics for Go services from eBPF uprobes, with no code change.

mod agent;
mod attach;
mod cli;
mod collect;
mod config;
mod discover;
mod ebpf_abi;
mod enrich;
mod export;
mod inspect;
mod kernel;
mod select;

fn main() {
    std::process::exit(cli::run());
}
