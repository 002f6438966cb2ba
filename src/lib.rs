//! sonde: RED metrics for Go services from eBPF uprobes, with no code change.
//!
//! A library plus a thin `main`, so fuzz targets can link the parsers.
//! The folders follow the pipeline: discover → select → inspect → attach → collect →
//! enrich → export.
//!
//! Only `cli::run` (for `main`) and [`fuzzing`] are reachable from outside the crate;
//! everything else is `pub(crate)` at most, and the lint below keeps it so.

#![warn(unreachable_pub)]

pub(crate) mod agent;
pub(crate) mod attach;
pub mod cli;
pub(crate) mod collect;
pub(crate) mod config;
pub(crate) mod discover;
pub(crate) mod ebpf_abi;
pub(crate) mod enrich;
pub(crate) mod export;
pub(crate) mod floor;
pub(crate) mod inspect;
pub(crate) mod internal_events;
pub(crate) mod kernel;
pub(crate) mod privileges;
pub(crate) mod select;
pub(crate) mod worker;

#[cfg(test)]
mod layers;

/// The parsers of untrusted input the fuzz targets (`fuzz/`) drive, and nothing else.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::collect::event::decode as decode_event;
    pub use crate::collect::http1::parse_arbitrary as parse_http1;
    pub use crate::config::{glob, Config, PortSet};
    pub use crate::discover::cgroup::container_id_from_cgroup;
    pub use crate::discover::docker::info::container_info;
    pub use crate::discover::parse_otel_env;
    pub use crate::discover::proc::{parse_listening, parse_stat};
    pub use crate::enrich::routes::RouteMatcher;
    pub use crate::inspect::buildinfo::read as read_buildinfo;
    pub use crate::inspect::dwarf::{offsets_from_sections, RawSections};
    pub use crate::inspect::elf::{ElfLayout, Segment};
    pub use crate::inspect::pclntab::Pclntab;
    pub use crate::inspect::{inspect_bytes, SERVE_HTTP};
}
