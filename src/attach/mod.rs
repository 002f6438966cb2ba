//! Owns every kernel object: the loaded programs, their uprobe links and the maps.
//!
//! Uprobes are attached per selected process (`UProbeScope::OneProcess`), so a process that
//! is not selected never traps into a probe even when it runs the very same file; the
//! `pid_offsets` map is both the in-kernel PID filter and the offsets of each process.
//!
//! The exception is a file *armed* as a whole ([`Attacher::arm_file`]): a program the user
//! selected by its path, whose every process must be measured from its first instruction,
//! however short it lives. Its probes fire for every process running it and carry the file's
//! slot in their cookie; the first hit of a process enrols it in the kernel (ebpf/sonde.bpf.c,
//! `enrol`) and reports it on the `enrolments` ring.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::uprobe::UProbeScope;
use aya::programs::UProbe;
use thiserror::Error;

mod abi;
mod armed;
#[cfg(test)]
mod harmless_tests;
pub(crate) mod launch;
mod links;
mod reaper;
pub(crate) use armed::ArmedSlots;
pub(crate) use links::ObjectError;
pub(crate) use reaper::Activity;
pub(crate) mod syscalls;
pub(crate) mod verify;

use crate::ebpf_abi::{GoOffsetsAbi, GrpcOffsetsAbi};
use crate::inspect::{ProbePlan, ProbeRole};
use armed::{ArmedFile, FileKey};
use links::{Core, Links};

/// The compiled C programs, embedded at build time.
static SONDE_BPF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sonde.bpf.o"));

const ENTRY_PROGRAM: &str = "server_handler_entry";
const RETURN_PROGRAM: &str = "server_handler_return";
const CLIENT_ENTRY_PROGRAM: &str = "client_roundtrip_entry";
const CLIENT_RETURN_PROGRAM: &str = "client_roundtrip_return";
const GRPC_SERVER_ENTRY: &str = "grpc_server_entry";
const GRPC_SERVER_RETURN: &str = "grpc_server_return";
const GRPC_SERVER_STATUS: &str = "grpc_server_status";
const GRPC_INVOKE_ENTRY: &str = "grpc_client_invoke_entry";
const GRPC_INVOKE_RETURN: &str = "grpc_client_invoke_return";
const GRPC_STREAM_ENTRY: &str = "grpc_client_stream_entry";
const GRPC_STREAM_RETURN: &str = "grpc_client_stream_return";
const GRPC_STREAM_FINISH: &str = "grpc_client_stream_finish";
const GOROUTINE_ENTRY_PROGRAM: &str = "goroutine_start_entry";
const GOROUTINE_RETURN_PROGRAM: &str = "goroutine_start_return";
const PROGRAMS: [&str; 14] = [
    ENTRY_PROGRAM,
    RETURN_PROGRAM,
    CLIENT_ENTRY_PROGRAM,
    CLIENT_RETURN_PROGRAM,
    GRPC_SERVER_ENTRY,
    GRPC_SERVER_RETURN,
    GRPC_SERVER_STATUS,
    GRPC_INVOKE_ENTRY,
    GRPC_INVOKE_RETURN,
    GRPC_STREAM_ENTRY,
    GRPC_STREAM_RETURN,
    GRPC_STREAM_FINISH,
    GOROUTINE_ENTRY_PROGRAM,
    GOROUTINE_RETURN_PROGRAM,
];

#[derive(Debug, Error)]
pub(crate) enum AttachError {
    #[error("cannot load the BPF programs: {0}")]
    Load(#[from] aya::EbpfError),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("pid {pid}: attaching {symbol} at file offset {offset:#x} failed: {source}")]
    Uprobe {
        pid: u32,
        symbol: String,
        offset: u64,
        source: aya::programs::ProgramError,
    },
    #[error("pid 0 cannot be instrumented")]
    InvalidPid,
    #[error("cannot start the detach thread: {0}")]
    Thread(std::io::Error),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} files are armed already")]
    TooManyArmed(usize),
    #[error("pid {0} runs it with probes of its own")]
    AttachedPerProcess(u32),
    #[error("no armed file in slot {0}")]
    NoSlot(u32),
}

pub(crate) struct Attacher {
    /// The programs, maps and per-process links (an enrolled process has none of its own).
    core: Core,
    /// Probe goroutine starts (two hits per `go` statement): only worth it for traces.
    goroutine_probes: bool,
    armed: HashMap<FileKey, ArmedFile>,
    slots: ArmedSlots,
    next_slot: u32,
}

/// `SONDE_RING_BUFFER_SIZE` (bytes; a power of two, at least a page) replaces the 4 MiB the
/// C program declares: the fault tests fill a small one on purpose.
fn ring_buffer_size_override() -> Option<u32> {
    let v = std::env::var("SONDE_RING_BUFFER_SIZE").ok()?;
    match v.trim().parse::<u32>() {
        Ok(n) if n.is_power_of_two() && n >= 4096 => Some(n),
        _ => {
            tracing::warn!("ignoring SONDE_RING_BUFFER_SIZE={v}: not a power of two >= 4096");
            None
        }
    }
}

/// The agent's one loader, for every object it loads: sonde's programs need no kernel BTF
/// (no CO-RE relocations), but aya has no constructor that skips it, so making a loader
/// parses it (~17 MB for ~30 ms), freed here at once. A second loader made later cost a
/// spike over the rings and code (peak RSS of an idle agent 37.6 MB, 26.5 MB with one) and
/// ~25 ms on the way to the first count (BENCHMARKS.md, issue 20).
pub(crate) fn loader() -> aya::EbpfLoader<'static> {
    let mut loader = aya::EbpfLoader::new();
    loader.btf(None);
    loader
}

/// The entry and return programs of a probe's role.
fn role_programs(role: ProbeRole) -> (&'static str, &'static str) {
    match role {
        ProbeRole::HttpServerHandler => (ENTRY_PROGRAM, RETURN_PROGRAM),
        ProbeRole::HttpClientRoundTrip => (CLIENT_ENTRY_PROGRAM, CLIENT_RETURN_PROGRAM),
        ProbeRole::GrpcServerHandleStream => (GRPC_SERVER_ENTRY, GRPC_SERVER_RETURN),
        // Entry-only roles have no RET sites.
        ProbeRole::GrpcServerWriteStatus => (GRPC_SERVER_STATUS, GRPC_SERVER_STATUS),
        ProbeRole::GrpcClientInvoke => (GRPC_INVOKE_ENTRY, GRPC_INVOKE_RETURN),
        ProbeRole::GrpcClientNewStream => (GRPC_STREAM_ENTRY, GRPC_STREAM_RETURN),
        ProbeRole::GrpcClientStreamFinish => (GRPC_STREAM_FINISH, GRPC_STREAM_FINISH),
        ProbeRole::GoroutineStart => (GOROUTINE_ENTRY_PROGRAM, GOROUTINE_RETURN_PROGRAM),
    }
}

impl Attacher {
    /// Loads the programs into the kernel (verifier included); attaches nothing yet.
    /// `loader`: see [`loader`].
    pub(crate) fn load(loader: &mut aya::EbpfLoader<'_>) -> Result<Self, AttachError> {
        crate::kernel::raise_memlock();
        if let Some(size) = ring_buffer_size_override() {
            loader.map_max_entries("events", size);
        }
        let ebpf = loader.load(SONDE_BPF)?;
        let mut core = Core::new(ebpf, Activity::new()).map_err(AttachError::Thread)?;
        core.load::<UProbe>(PROGRAMS)?;
        Ok(Attacher {
            core,
            goroutine_probes: false,
            armed: HashMap::new(),
            slots: ArmedSlots::default(),
            next_slot: 0,
        })
    }

    /// The reports of processes the kernel enrolled at an armed file's probe; can be taken
    /// once.
    pub(crate) fn take_enrolments(&mut self) -> Result<RingBuf<MapData>, AttachError> {
        Ok(self.core.take_map("enrolments")?)
    }

    /// The event ring buffer; can be taken once.
    pub(crate) fn take_events(&mut self) -> Result<RingBuf<MapData>, AttachError> {
        Ok(self.core.take_map("events")?)
    }

    /// The per-CPU counter of events the kernel dropped because the ring buffer was full.
    pub(crate) fn take_lost_counter(&mut self) -> Result<PerCpuArray<MapData, u64>, AttachError> {
        Ok(self.core.take_map("lost_events")?)
    }

    /// Also attach `runtime.newproc1` probes, so calls made on goroutines a handler started
    /// are children of its request. Applies to processes attached from now on.
    pub(crate) fn set_goroutine_probes(&mut self, on: bool) {
        self.goroutine_probes = on;
    }

    pub(crate) fn is_attached(&self, pid: u32) -> bool {
        self.core.contains(pid)
    }

    pub(crate) fn attached_count(&self) -> usize {
        self.core.process_count()
    }

    /// Attaches the plan's probes to one process. On error nothing stays attached.
    pub(crate) fn attach_process(
        &mut self,
        pid: u32,
        plan: &ProbePlan,
    ) -> Result<usize, AttachError> {
        // The kernel resolves the magic link to the binary's inode, across mount namespaces.
        self.attach_process_to(pid, plan, &crate::discover::proc::exe_path(pid))
    }

    /// Attaches the plan's probes, set in the file at `binary`, to one process — which may
    /// not run that file yet: the kernel arms them when the process maps it (its exec).
    pub(crate) fn attach_process_to(
        &mut self,
        pid: u32,
        plan: &ProbePlan,
        binary: &Path,
    ) -> Result<usize, AttachError> {
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or(AttachError::InvalidPid)?);
        let links = self.attach_plan(pid, plan, binary, scope, None)?;
        let count = links.len();
        // Before the HTTP filter entry, which marks the process as attached.
        if let Some(grpc) = &plan.grpc {
            let offsets = GrpcOffsetsAbi::from(&grpc.offsets);
            if let Err(e) = self.core.insert("pid_grpc_offsets", pid, offsets) {
                self.core.detach(links);
                return Err(e.into());
            }
        }
        let offsets = self.offsets_abi(plan);
        if let Err(e) = self.core.insert("pid_offsets", pid, offsets) {
            self.core.remove::<GrpcOffsetsAbi>("pid_grpc_offsets", pid);
            self.core.detach(links);
            return Err(e.into());
        }
        self.core.insert_process(pid, links);
        Ok(count)
    }

    /// The plan's probes on `binary`, for `scope`, each with `cookie`. `pid` names the
    /// process in errors (0: every process). On error nothing stays attached.
    fn attach_plan(
        &mut self,
        pid: u32,
        plan: &ProbePlan,
        binary: &Path,
        scope: UProbeScope,
        cookie: Option<u64>,
    ) -> Result<Links, AttachError> {
        self.core.activity().touch();
        let mut links = Links::new();
        let result = (|| {
            for probe in &plan.probes {
                if probe.role == ProbeRole::GoroutineStart && !self.goroutine_probes {
                    continue;
                }
                let (entry_prog, ret_prog) = role_programs(probe.role);
                // RETs first: an entry without a return would leave in-flight state behind.
                let sites = probe
                    .ret_offsets
                    .iter()
                    .map(|&off| (ret_prog, off))
                    .chain(std::iter::once((entry_prog, probe.entry_offset)));
                for (prog, offset) in sites {
                    let failed = |source| AttachError::Uprobe {
                        pid,
                        symbol: probe.symbol.clone(),
                        offset,
                        source,
                    };
                    let core = &mut self.core;
                    core.attach_uprobe(&mut links, prog, binary, offset, cookie, scope, failed)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.core.detach(links);
            return Err(e);
        }
        Ok(links)
    }

    /// The `pid_offsets` value of a process running the plan's binary.
    fn offsets_abi(&self, plan: &ProbePlan) -> GoOffsetsAbi {
        let mut offsets = GoOffsetsAbi::from(&plan.offsets);
        // Go 1.24 replaced the bucket hash map by swiss tables.
        if plan.go_version >= crate::inspect::GoVersion::new(1, 24, 0) {
            offsets.map_layout = crate::ebpf_abi::MAP_SWISS;
        }
        // The goroutine probes are on exactly when traces are exported.
        if !self.goroutine_probes {
            offsets.map_layout = crate::ebpf_abi::NO_TRACES;
        }
        offsets
    }

    /// Removes a process from the filter and detaches its links. Unknown PIDs are ignored.
    pub(crate) fn detach_process(&mut self, pid: u32) {
        // Absent already is fine: the process may never have been fully attached.
        self.core.remove::<GoOffsetsAbi>("pid_offsets", pid);
        self.core.remove::<GrpcOffsetsAbi>("pid_grpc_offsets", pid);
        self.core.detach_process(pid);
    }

    /// Where to say that attaches are coming (a container was created), so link closing,
    /// which holds attaches up, waits.
    pub(crate) fn activity(&self) -> Activity {
        self.core.activity().clone()
    }

    /// Uprobe links sonde holds: attached ones plus detached ones still being closed.
    pub(crate) fn link_count(&self) -> usize {
        self.core.link_count() + self.armed_link_count()
    }

    pub(crate) fn attached_pids(&self) -> Vec<u32> {
        self.core.pids()
    }
}
