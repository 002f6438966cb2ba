//! sonde: RED metrics for Go services from eBPF uprobes, with no code change.
//!
//! A library plus a thin `main`, so fuzz targets and benchmarks can link the parsers.
//! The folders follow the pipeline: discover → select → inspect → attach → collect →
//! enrich → export.

pub mod agent;
pub mod attach;
pub mod cli;
pub mod collect;
pub mod config;
pub mod discover;
pub mod ebpf_abi;
pub mod enrich;
pub mod export;
pub mod floor;
pub mod inspect;
pub mod internal_events;
pub mod kernel;
pub mod privileges;
pub mod select;
pub mod worker;

#[cfg(test)]
mod layers;
