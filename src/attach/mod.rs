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
use std::sync::{Arc, RwLock};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope};
use aya::programs::UProbe;
use aya::Ebpf;
use thiserror::Error;

mod abi;
#[cfg(test)]
mod harmless_tests;
pub mod launch;
mod reaper;
pub use reaper::Activity;
pub mod syscalls;
pub mod verify;

use crate::ebpf_abi::{GoOffsetsAbi, GrpcOffsetsAbi};
use crate::inspect::{ProbePlan, ProbeRole};
use reaper::Reaper;

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
pub enum AttachError {
    #[error("cannot load the BPF programs: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("BPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("BPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("BPF object has no {0}")]
    Missing(&'static str),
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

use crate::ebpf_abi::ARMED_FILE;
/// The size of the `file_offsets` map.
const MAX_ARMED_FILES: usize = 256;

/// The path of each armed file by slot, for naming the processes the kernel enrols.
pub type ArmedSlots = Arc<RwLock<HashMap<u32, PathBuf>>>;

/// Identifies a file's content: a file rewritten in place keeps its inode, not its mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
}

impl FileKey {
    fn of(path: &Path) -> Result<Self, AttachError> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).map_err(|source| AttachError::File {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(FileKey {
            dev: m.dev(),
            ino: m.ino(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        })
    }
}

/// A file armed as a whole: its slot, its links, and the offsets a process running it gets.
struct ArmedFile {
    slot: u32,
    /// Whether a process running it is enrolled at its first hit (a host file selected by
    /// `executable_name`), or only when sonde enrols it (a container image's program).
    auto_enrol: bool,
    links: ProcessLinks,
    offsets: GoOffsetsAbi,
    grpc: Option<GrpcOffsetsAbi>,
}

/// Links of one instrumented process, by program, so they can be detached when it goes away.
struct ProcessLinks {
    links: Vec<(&'static str, UProbeLinkId)>,
    /// The armed file's slot of an enrolled process (no links of its own).
    slot: Option<u32>,
}

pub struct Attacher {
    // Declared first so it is dropped first: it closes the links in parallel while the
    // programs they point at are still loaded.
    reaper: Reaper,
    ebpf: Ebpf,
    processes: HashMap<u32, ProcessLinks>,
    /// Probe goroutine starts (two hits per `go` statement): only worth it for traces.
    goroutine_probes: bool,
    armed: HashMap<FileKey, ArmedFile>,
    slots: ArmedSlots,
    next_slot: u32,
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, AttachError> {
    ebpf.program_mut(name)
        .ok_or(AttachError::Missing(name))?
        .try_into()
        .map_err(|source| AttachError::Program { name, source })
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
pub fn loader() -> aya::EbpfLoader<'static> {
    let mut loader = aya::EbpfLoader::new();
    loader.btf(None);
    loader
}

impl Attacher {
    /// Loads the programs into the kernel (verifier included); attaches nothing yet.
    /// `loader`: see [`loader`].
    pub fn load(loader: &mut aya::EbpfLoader<'_>) -> Result<Self, AttachError> {
        crate::kernel::raise_memlock();
        if let Some(size) = ring_buffer_size_override() {
            loader.map_max_entries("events", size);
        }
        let mut ebpf = loader.load(SONDE_BPF)?;
        for name in PROGRAMS {
            uprobe(&mut ebpf, name)?
                .load()
                .map_err(|source| AttachError::Program { name, source })?;
        }
        Ok(Attacher {
            reaper: Reaper::new(Activity::new()).map_err(AttachError::Thread)?,
            ebpf,
            processes: HashMap::new(),
            goroutine_probes: false,
            armed: HashMap::new(),
            slots: ArmedSlots::default(),
            next_slot: 0,
        })
    }

    /// The reports of processes the kernel enrolled at an armed file's probe; can be taken
    /// once.
    pub fn take_enrolments(&mut self) -> Result<RingBuf<MapData>, AttachError> {
        let map = self
            .ebpf
            .take_map("enrolments")
            .ok_or(AttachError::Missing("enrolments"))?;
        RingBuf::try_from(map).map_err(|source| AttachError::Map {
            name: "enrolments",
            source,
        })
    }

    /// Armed files' paths by slot, kept up to date.
    pub fn armed_slots(&self) -> ArmedSlots {
        self.slots.clone()
    }

    /// The slot of the armed file `path` is (by device, inode and mtime), if armed. An
    /// image's file is armed in its layer and run through each container's overlay mount,
    /// which has a device of its own but shows the layer file's inode and mtime: those two
    /// name it.
    pub fn armed_slot(&self, path: &Path) -> Option<u32> {
        let key = FileKey::of(path).ok()?;
        if let Some(a) = self.armed.get(&key) {
            return Some(a.slot);
        }
        self.armed
            .iter()
            .find(|(k, a)| !a.auto_enrol && k.ino == key.ino && k.mtime_ns == key.mtime_ns)
            .map(|(_, a)| a.slot)
    }

    /// Arms a container image's program `path` (in its layer): its probes are attached for
    /// every process that runs it, long before a container starts, but measure only the
    /// processes sonde enrols ([`Attacher::enrol`], at a selected container's launch): the
    /// launch then costs two map writes instead of registering uprobes.
    pub fn arm_image(&mut self, path: &Path, plan: &ProbePlan) -> Result<(u32, bool), AttachError> {
        self.arm(path, path, plan, false)
    }

    /// Whether a process enrolled in `slot` is still known.
    fn slot_in_use(&self, slot: u32) -> bool {
        self.processes.values().any(|p| p.slot == Some(slot))
    }

    /// Disarms an image's file armed in `slot` when no enrolled process runs it; whether it
    /// was.
    pub fn disarm_image(&mut self, slot: u32) -> bool {
        if self.slot_in_use(slot) {
            return false;
        }
        let key = self
            .armed
            .iter()
            .find(|(_, a)| a.slot == slot && !a.auto_enrol)
            .map(|(k, _)| *k);
        match key {
            Some(k) => {
                self.disarm(k);
                true
            }
            None => false,
        }
    }

    /// Arms `path` as a whole: its plan's probes fire for every process running it, each
    /// process being enrolled by the kernel at its first hit. `name` is the path processes
    /// will show as their executable. Returns the slot, and whether it was armed just now.
    /// A file rewritten since it was armed is disarmed and armed again.
    pub fn arm_file(
        &mut self,
        path: &Path,
        name: &Path,
        plan: &ProbePlan,
    ) -> Result<(u32, bool), AttachError> {
        self.arm(path, name, plan, true)
    }

    fn arm(
        &mut self,
        path: &Path,
        name: &Path,
        plan: &ProbePlan,
        auto_enrol: bool,
    ) -> Result<(u32, bool), AttachError> {
        let key = FileKey::of(path)?;
        if let Some(a) = self.armed.get(&key) {
            return Ok((a.slot, false));
        }
        // An image's file armed through another path (its layer, or a container's overlay):
        // one set of probes per inode, or every hit would count twice.
        if !auto_enrol {
            if let Some(slot) = self.armed_slot(path) {
                return Ok((slot, false));
            }
        }
        let stale: Vec<FileKey> = self
            .armed
            .keys()
            .filter(|k| k.dev == key.dev && k.ino == key.ino)
            .copied()
            .collect();
        for k in stale {
            self.disarm(k);
        }
        if self.armed.len() >= MAX_ARMED_FILES {
            return Err(AttachError::TooManyArmed(MAX_ARMED_FILES));
        }
        // A process with probes of its own on this file would hit both sets: count twice.
        if let Some(pid) = self.attached_running(key) {
            return Err(AttachError::AttachedPerProcess(pid));
        }
        // Slots are not reused: a late enrolment report must never name another file.
        let slot = self.next_slot;
        let offsets = self.offsets_abi(plan);
        let grpc = plan.grpc.as_ref().map(|g| GrpcOffsetsAbi::from(&g.offsets));
        // Offsets before probes: a hit must find them.
        self.file_map("file_offsets").and_then(|mut m| {
            m.insert(slot, offsets, 0)
                .map_err(|source| AttachError::Map {
                    name: "file_offsets",
                    source,
                })
        })?;
        if let Some(g) = grpc {
            if let Err(e) = self.file_grpc_map().and_then(|mut m| {
                m.insert(slot, g, 0).map_err(|source| AttachError::Map {
                    name: "file_grpc_offsets",
                    source,
                })
            }) {
                self.remove_file_offsets(slot);
                return Err(e);
            }
        }
        // Without the cookie's bit, a hit of a process sonde did not enrol is ignored.
        let cookie = auto_enrol.then_some(ARMED_FILE | u64::from(slot));
        let links = match self.attach_plan(0, plan, path, UProbeScope::AllProcesses, cookie) {
            Ok(l) => l,
            Err(e) => {
                self.remove_file_offsets(slot);
                return Err(e);
            }
        };
        self.next_slot += 1;
        self.armed.insert(
            key,
            ArmedFile {
                slot,
                auto_enrol,
                links,
                offsets,
                grpc,
            },
        );
        if auto_enrol {
            self.slots
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(slot, name.to_path_buf());
        }
        Ok((slot, true))
    }

    /// Enrols a process that runs the armed file in `slot`, as the kernel does at its first
    /// probe hit (found by a scan before it hit one); no links of its own.
    pub fn enrol(&mut self, pid: u32, slot: u32) -> Result<(), AttachError> {
        let (offsets, grpc) = self
            .armed
            .values()
            .find(|a| a.slot == slot)
            .map(|a| (a.offsets, a.grpc))
            .ok_or(AttachError::NoSlot(slot))?;
        if let Some(g) = grpc {
            self.grpc_filter().and_then(|mut m| {
                m.insert(pid, g, 0).map_err(|source| AttachError::Map {
                    name: "pid_grpc_offsets",
                    source,
                })
            })?;
        }
        self.pid_filter().and_then(|mut m| {
            m.insert(pid, offsets, 0)
                .map_err(|source| AttachError::Map {
                    name: "pid_offsets",
                    source,
                })
        })?;
        self.processes.insert(
            pid,
            ProcessLinks {
                links: Vec::new(),
                slot: Some(slot),
            },
        );
        Ok(())
    }

    /// Records a process the kernel enrolled: its filter entries are sonde's to remove.
    pub fn adopt_enrolled(&mut self, pid: u32, slot: u32) {
        self.processes.entry(pid).or_insert(ProcessLinks {
            links: Vec::new(),
            slot: Some(slot),
        });
    }

    pub fn armed_count(&self) -> usize {
        self.armed.len()
    }

    /// A process with links of its own that runs the file `key`.
    fn attached_running(&self, key: FileKey) -> Option<u32> {
        self.processes
            .iter()
            .filter(|(_, l)| !l.links.is_empty())
            .map(|(pid, _)| *pid)
            .find(|pid| {
                // Not by device: a container runs an image's file through its own overlay.
                FileKey::of(&crate::discover::proc::exe_path(*pid)).is_ok_and(|k| k.ino == key.ino)
            })
    }

    fn disarm(&mut self, key: FileKey) {
        if let Some(a) = self.armed.remove(&key) {
            self.remove_file_offsets(a.slot);
            self.slots
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&a.slot);
            self.detach_links(a.links);
        }
    }

    fn remove_file_offsets(&mut self, slot: u32) {
        if let Ok(mut m) = self.file_map("file_offsets") {
            let _ = m.remove(&slot);
        }
        if let Ok(mut m) = self.file_grpc_map() {
            let _ = m.remove(&slot);
        }
    }

    /// The event ring buffer; can be taken once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, AttachError> {
        let map = self
            .ebpf
            .take_map("events")
            .ok_or(AttachError::Missing("events"))?;
        RingBuf::try_from(map).map_err(|source| AttachError::Map {
            name: "events",
            source,
        })
    }

    /// The per-CPU counter of events the kernel dropped because the ring buffer was full.
    pub fn take_lost_counter(&mut self) -> Result<PerCpuArray<MapData, u64>, AttachError> {
        let map = self
            .ebpf
            .take_map("lost_events")
            .ok_or(AttachError::Missing("lost_events"))?;
        PerCpuArray::try_from(map).map_err(|source| AttachError::Map {
            name: "lost_events",
            source,
        })
    }

    /// Also attach `runtime.newproc1` probes, so calls made on goroutines a handler started
    /// are children of its request. Applies to processes attached from now on.
    pub fn set_goroutine_probes(&mut self, on: bool) {
        self.goroutine_probes = on;
    }

    pub fn is_attached(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    pub fn attached_count(&self) -> usize {
        self.processes.len()
    }

    /// Attaches the plan's probes to one process. On error nothing stays attached.
    pub fn attach_process(&mut self, pid: u32, plan: &ProbePlan) -> Result<usize, AttachError> {
        // The kernel resolves the magic link to the binary's inode, across mount namespaces.
        self.attach_process_to(pid, plan, &crate::discover::proc::exe_path(pid))
    }

    /// Attaches the plan's probes, set in the file at `binary`, to one process — which may
    /// not run that file yet: the kernel arms them when the process maps it (its exec).
    pub fn attach_process_to(
        &mut self,
        pid: u32,
        plan: &ProbePlan,
        binary: &std::path::Path,
    ) -> Result<usize, AttachError> {
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or(AttachError::InvalidPid)?);
        let links = self.attach_plan(pid, plan, binary, scope, None)?;
        let count = links.links.len();
        // Before the HTTP filter entry, which marks the process as attached.
        if let Some(grpc) = &plan.grpc {
            let offsets = GrpcOffsetsAbi::from(&grpc.offsets);
            if let Err(source) = self.grpc_filter().and_then(|mut m| {
                m.insert(pid, offsets, 0)
                    .map_err(|source| AttachError::Map {
                        name: "pid_grpc_offsets",
                        source,
                    })
            }) {
                self.detach_links(links);
                return Err(source);
            }
        }
        let offsets = self.offsets_abi(plan);
        if let Err(source) = self.pid_filter().and_then(|mut m| {
            m.insert(pid, offsets, 0)
                .map_err(|source| AttachError::Map {
                    name: "pid_offsets",
                    source,
                })
        }) {
            if let Ok(mut m) = self.grpc_filter() {
                let _ = m.remove(&pid);
            }
            self.detach_links(links);
            return Err(source);
        }
        self.processes.insert(pid, links);
        Ok(count)
    }

    /// The plan's probes on `target`, for `scope`, each with `cookie`. `pid` names the
    /// process in errors (0: every process). On error nothing stays attached.
    fn attach_plan(
        &mut self,
        pid: u32,
        plan: &ProbePlan,
        binary: &Path,
        scope: UProbeScope,
        cookie: Option<u64>,
    ) -> Result<ProcessLinks, AttachError> {
        let target = binary;
        self.reaper.activity().touch();
        let mut links = ProcessLinks {
            links: Vec::new(),
            slot: None,
        };
        let result = (|| {
            for probe in &plan.probes {
                let (entry_prog, ret_prog) = match probe.role {
                    ProbeRole::HttpServerHandler => (ENTRY_PROGRAM, RETURN_PROGRAM),
                    ProbeRole::HttpClientRoundTrip => (CLIENT_ENTRY_PROGRAM, CLIENT_RETURN_PROGRAM),
                    ProbeRole::GrpcServerHandleStream => (GRPC_SERVER_ENTRY, GRPC_SERVER_RETURN),
                    // Entry-only roles have no RET sites.
                    ProbeRole::GrpcServerWriteStatus => (GRPC_SERVER_STATUS, GRPC_SERVER_STATUS),
                    ProbeRole::GrpcClientInvoke => (GRPC_INVOKE_ENTRY, GRPC_INVOKE_RETURN),
                    ProbeRole::GrpcClientNewStream => (GRPC_STREAM_ENTRY, GRPC_STREAM_RETURN),
                    ProbeRole::GrpcClientStreamFinish => (GRPC_STREAM_FINISH, GRPC_STREAM_FINISH),
                    ProbeRole::GoroutineStart if !self.goroutine_probes => continue,
                    ProbeRole::GoroutineStart => {
                        (GOROUTINE_ENTRY_PROGRAM, GOROUTINE_RETURN_PROGRAM)
                    }
                };
                let attach = |ebpf: &mut Ebpf, prog: &'static str, offset: u64| {
                    uprobe(ebpf, prog)?
                        .attach(
                            UProbeAttachPoint {
                                location: UProbeAttachLocation::AbsoluteOffset(offset),
                                cookie,
                            },
                            target,
                            scope,
                        )
                        .map_err(|source| AttachError::Uprobe {
                            pid,
                            symbol: probe.symbol.clone(),
                            offset,
                            source,
                        })
                };
                // RETs first: an entry without a return would leave in-flight state behind.
                for &off in &probe.ret_offsets {
                    let id = attach(&mut self.ebpf, ret_prog, off)?;
                    links.links.push((ret_prog, id));
                }
                let id = attach(&mut self.ebpf, entry_prog, probe.entry_offset)?;
                links.links.push((entry_prog, id));
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.detach_links(links);
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
    pub fn detach_process(&mut self, pid: u32) {
        if let Ok(mut m) = self.pid_filter() {
            // Absent already is fine: the process may never have been fully attached.
            let _ = m.remove(&pid);
        }
        if let Ok(mut m) = self.grpc_filter() {
            let _ = m.remove(&pid);
        }
        if let Some(links) = self.processes.remove(&pid) {
            self.detach_links(links);
        }
    }

    /// Where to say that attaches are coming (a container was created), so link closing,
    /// which holds attaches up, waits.
    pub fn activity(&self) -> Activity {
        self.reaper.activity().clone()
    }

    /// Uprobe links sonde holds: attached ones plus detached ones still being closed.
    pub fn link_count(&self) -> usize {
        self.processes
            .values()
            .map(|p| p.links.len())
            .sum::<usize>()
            + self
                .armed
                .values()
                .map(|a| a.links.links.len())
                .sum::<usize>()
            + self.reaper.pending()
    }

    /// Links of armed files (part of [`Attacher::link_count`]).
    pub fn armed_link_count(&self) -> usize {
        self.armed.values().map(|a| a.links.links.len()).sum()
    }

    pub fn attached_pids(&self) -> Vec<u32> {
        self.processes.keys().copied().collect()
    }

    /// Hands the links to the reaper, which closes them in parallel (see reaper.rs).
    fn detach_links(&mut self, links: ProcessLinks) {
        let mut owned = Vec::with_capacity(links.links.len());
        for (prog, id) in links.links {
            if let Ok(p) = uprobe(&mut self.ebpf, prog) {
                match p.take_link(id) {
                    Ok(link) => owned.push(link),
                    Err(e) => tracing::debug!("detaching a {prog} link: {e}"),
                }
            }
        }
        self.reaper.reap(owned);
    }

    fn pid_filter(&mut self) -> Result<BpfHashMap<&mut MapData, u32, GoOffsetsAbi>, AttachError> {
        let map = self
            .ebpf
            .map_mut("pid_offsets")
            .ok_or(AttachError::Missing("pid_offsets"))?;
        BpfHashMap::try_from(map).map_err(|source| AttachError::Map {
            name: "pid_offsets",
            source,
        })
    }

    fn file_map(
        &mut self,
        name: &'static str,
    ) -> Result<BpfHashMap<&mut MapData, u32, GoOffsetsAbi>, AttachError> {
        let map = self.ebpf.map_mut(name).ok_or(AttachError::Missing(name))?;
        BpfHashMap::try_from(map).map_err(|source| AttachError::Map { name, source })
    }

    fn file_grpc_map(
        &mut self,
    ) -> Result<BpfHashMap<&mut MapData, u32, GrpcOffsetsAbi>, AttachError> {
        let map = self
            .ebpf
            .map_mut("file_grpc_offsets")
            .ok_or(AttachError::Missing("file_grpc_offsets"))?;
        BpfHashMap::try_from(map).map_err(|source| AttachError::Map {
            name: "file_grpc_offsets",
            source,
        })
    }

    fn grpc_filter(
        &mut self,
    ) -> Result<BpfHashMap<&mut MapData, u32, GrpcOffsetsAbi>, AttachError> {
        let map = self
            .ebpf
            .map_mut("pid_grpc_offsets")
            .ok_or(AttachError::Missing("pid_grpc_offsets"))?;
        BpfHashMap::try_from(map).map_err(|source| AttachError::Map {
            name: "pid_grpc_offsets",
            source,
        })
    }
}
