//! The language-agnostic tracer: syscall tracepoints (filtered in the kernel by the `sys_pids`
//! map) and, per selected process, OpenSSL uprobes in the libssl it maps (or in its own
//! executable when OpenSSL is linked in statically).
//!
//! While any syscall tracepoint has a program, every syscall of every process on the host takes
//! the kernel's slow path (measured here: `dd bs=1` went from ~1.9 s to ~8.5 s for a million
//! read+write pairs, about 3 µs per pair on this nested VM). So the tracepoints are attached
//! only while at least one process is traced: a host with only Go services pays nothing.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
use aya::programs::{TracePoint, UProbe};
use aya::Ebpf;
use object::{Object, ObjectSegment, ObjectSymbol};
use thiserror::Error;

use super::reaper::{Activity, Reaper};

static SYSCALLS_BPF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/syscalls.bpf.o"));

/// Syscalls traced at entry and exit (program names are `sys_enter_<name>`/`sys_exit_<name>`).
const SYSCALLS: &[&str] = &[
    "read",
    "recvfrom",
    "write",
    "sendto",
    "readv",
    "writev",
    "recvmsg",
    "sendmsg",
    "sendfile64",
    "accept",
    "accept4",
    "connect",
];
/// Traced at entry only.
const ENTRY_ONLY: &[&str] = &["close"];

/// OpenSSL functions and their entry programs; one return program serves them all.
const SSL_FUNCTIONS: &[(&str, &str)] = &[
    ("SSL_read", "ssl_read_entry"),
    ("SSL_write", "ssl_write_entry"),
    ("SSL_read_ex", "ssl_read_ex_entry"),
    ("SSL_write_ex", "ssl_write_ex_entry"),
];
const SSL_RETURN: &str = "ssl_return";

#[derive(Debug, Error)]
pub enum SyscallTraceError {
    #[error(transparent)]
    Tracefs(#[from] crate::kernel::KernelError),
    #[error("cannot load the syscall BPF programs: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("syscall BPF program {name}: {source}")]
    Program {
        name: String,
        source: aya::programs::ProgramError,
    },
    #[error("syscall BPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("syscall BPF object has no {0}")]
    Missing(String),
    #[error("pid 0 cannot be traced")]
    InvalidPid,
    #[error("cannot start the detach thread: {0}")]
    Thread(std::io::Error),
}

/// What a traced process got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    /// The file whose SSL_read/SSL_write are probed, if any.
    pub openssl: Option<PathBuf>,
    pub uprobes: usize,
}

pub struct SyscallTracer {
    reaper: Reaper,
    ebpf: Ebpf,
    processes: HashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    /// The attached tracepoints, by program name; empty while nothing is traced.
    tracepoints: Vec<(String, TracePointLinkId)>,
    /// OpenSSL offsets by file (device, inode, mtime): finding them reads the whole file
    /// (a Node.js binary is ~100 MB), once per file rather than once per process.
    offsets: HashMap<FileKey, SslOffsets>,
}

/// A file's (device, inode, mtime).
type FileKey = (u64, u64, i64);
/// Entry program and file offset of each OpenSSL function a file defines.
type SslOffsets = Vec<(&'static str, u64)>;

/// Bound on `offsets`: past it the cache starts over.
const OFFSETS_CACHE_MAX: usize = 256;

fn tracepoint_programs() -> impl Iterator<Item = String> {
    SYSCALLS
        .iter()
        .flat_map(|s| [format!("sys_enter_{s}"), format!("sys_exit_{s}")])
        .chain(ENTRY_ONLY.iter().map(|s| format!("sys_enter_{s}")))
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, SyscallTraceError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| SyscallTraceError::Missing(name.to_string()))?
        .try_into()
        .map_err(|source| SyscallTraceError::Program {
            name: name.to_string(),
            source,
        })
}

/// The mapped file of `pid` that is OpenSSL's libssl, as a path sonde can open.
fn mapped_libssl(pid: u32) -> Option<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libssl.so"))
        })?;
    // Through the process's root, so a container's own libssl is found.
    Some(PathBuf::from(format!("/proc/{pid}/root{path}")))
}

/// File offsets of the OpenSSL functions `file` defines (empty when it has none).
fn ssl_offsets(file: &Path) -> Vec<(&'static str, u64)> {
    let Ok(data) = std::fs::read(file) else {
        return Vec::new();
    };
    let Ok(obj) = object::File::parse(&*data) else {
        return Vec::new();
    };
    let segments: Vec<(u64, u64, u64)> = obj
        .segments()
        .filter_map(|s| {
            let (off, size) = s.file_range();
            (size > 0).then_some((s.address(), size, off))
        })
        .collect();
    let mut out = Vec::new();
    for &(name, prog) in SSL_FUNCTIONS {
        let addr = obj
            .dynamic_symbols()
            .chain(obj.symbols())
            .find(|s| s.is_definition() && s.name() == Ok(name))
            .map(|s| s.address());
        let Some(addr) = addr else { continue };
        if let Some(&(vaddr, _, off)) = segments
            .iter()
            .find(|&&(vaddr, size, _)| addr >= vaddr && addr < vaddr + size)
        {
            out.push((prog, addr - vaddr + off));
        }
    }
    out
}

impl SyscallTracer {
    /// Loads the programs (verifier included) and checks that the tracepoints attach, then
    /// detaches them until a process is traced. `activity`: the Go attacher's, so closing
    /// OpenSSL links waits for calm moments too.
    pub fn load(activity: Activity) -> Result<Self, SyscallTraceError> {
        if crate::kernel::ensure_tracefs()? {
            tracing::info!("mounted tracefs for the syscall tracepoints");
        }
        crate::kernel::raise_memlock();
        let mut ebpf = Ebpf::load(SYSCALLS_BPF)?;
        for name in tracepoint_programs() {
            let tp: &mut TracePoint = program(&mut ebpf, &name)?;
            tp.load().map_err(|source| SyscallTraceError::Program {
                name: name.clone(),
                source,
            })?;
        }
        for name in SSL_FUNCTIONS
            .iter()
            .map(|&(_, p)| p)
            .chain(std::iter::once(SSL_RETURN))
        {
            let p: &mut UProbe = program(&mut ebpf, name)?;
            p.load().map_err(|source| SyscallTraceError::Program {
                name: name.to_string(),
                source,
            })?;
        }
        let mut tracer = SyscallTracer {
            reaper: Reaper::new(activity).map_err(SyscallTraceError::Thread)?,
            ebpf,
            processes: HashMap::new(),
            tracepoints: Vec::new(),
            offsets: HashMap::new(),
        };
        // Fail now, not at the first non-Go process, if the tracepoints cannot attach.
        tracer.attach_tracepoints()?;
        tracer.detach_tracepoints();
        Ok(tracer)
    }

    /// Whether the syscall tracepoints are attached now.
    pub fn tracepoints_attached(&self) -> bool {
        !self.tracepoints.is_empty()
    }

    fn attach_tracepoints(&mut self) -> Result<(), SyscallTraceError> {
        if self.tracepoints_attached() {
            return Ok(());
        }
        for name in tracepoint_programs() {
            let attached = program::<TracePoint>(&mut self.ebpf, &name).and_then(|tp| {
                tp.attach("syscalls", &name)
                    .map_err(|source| SyscallTraceError::Program {
                        name: name.clone(),
                        source,
                    })
            });
            match attached {
                Ok(id) => self.tracepoints.push((name, id)),
                Err(e) => {
                    self.detach_tracepoints();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn detach_tracepoints(&mut self) {
        for (name, id) in std::mem::take(&mut self.tracepoints) {
            if let Ok(tp) = program::<TracePoint>(&mut self.ebpf, &name) {
                if let Err(e) = tp.detach(id) {
                    tracing::debug!("detaching tracepoint {name}: {e}");
                }
            }
        }
    }

    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, SyscallTraceError> {
        let map = self
            .ebpf
            .take_map("sys_events")
            .ok_or_else(|| SyscallTraceError::Missing("sys_events".into()))?;
        RingBuf::try_from(map).map_err(|source| SyscallTraceError::Map {
            name: "sys_events",
            source,
        })
    }

    pub fn take_lost_counter(&mut self) -> Result<PerCpuArray<MapData, u64>, SyscallTraceError> {
        let map = self
            .ebpf
            .take_map("sys_lost")
            .ok_or_else(|| SyscallTraceError::Missing("sys_lost".into()))?;
        PerCpuArray::try_from(map).map_err(|source| SyscallTraceError::Map {
            name: "sys_lost",
            source,
        })
    }

    pub fn is_traced(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    pub fn traced_count(&self) -> usize {
        self.processes.len()
    }

    pub fn link_count(&self) -> usize {
        self.processes.values().map(Vec::len).sum::<usize>() + self.reaper.pending()
    }

    pub fn traced_pids(&self) -> Vec<u32> {
        self.processes.keys().copied().collect()
    }

    /// Starts tracing one process. A failed OpenSSL attach leaves plain syscall tracing on.
    pub fn trace_process(&mut self, pid: u32) -> Result<Traced, SyscallTraceError> {
        let scope =
            UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or(SyscallTraceError::InvalidPid)?);
        if !self.tracepoints_attached() {
            self.attach_tracepoints()?;
            tracing::info!("syscall tracepoints attached");
        }
        let mut links = Vec::new();
        let mut openssl = None;
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        for file in mapped_libssl(pid).into_iter().chain(std::iter::once(exe)) {
            let offsets = self.cached_ssl_offsets(&file);
            if offsets.is_empty() {
                continue;
            }
            match self.attach_ssl(&file, &offsets, scope) {
                Ok(l) => {
                    links = l;
                    openssl = Some(file);
                }
                Err(e) => tracing::warn!(
                    "pid {pid}: OpenSSL probes in {} failed, HTTPS not measured: {e}",
                    file.display()
                ),
            }
            break;
        }
        let uprobes = links.len();
        let inserted = self.pid_filter().and_then(|mut m| {
            m.insert(pid, 1, 0)
                .map_err(|source| SyscallTraceError::Map {
                    name: "sys_pids",
                    source,
                })
        });
        if let Err(e) = inserted {
            self.detach_links(links);
            if self.processes.is_empty() {
                self.detach_tracepoints();
            }
            return Err(e);
        }
        self.processes.insert(pid, links);
        Ok(Traced { openssl, uprobes })
    }

    fn cached_ssl_offsets(&mut self, file: &Path) -> Vec<(&'static str, u64)> {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(file) else {
            return Vec::new();
        };
        let key = (meta.dev(), meta.ino(), meta.mtime());
        if let Some(found) = self.offsets.get(&key) {
            return found.clone();
        }
        let found = ssl_offsets(file);
        // The file was read whole and freed: hand those pages back.
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
        if self.offsets.len() >= OFFSETS_CACHE_MAX {
            self.offsets.clear();
        }
        self.offsets.insert(key, found.clone());
        found
    }

    /// Entry probes on each function the file has, one return probe each; all or nothing.
    fn attach_ssl(
        &mut self,
        file: &Path,
        offsets: &[(&'static str, u64)],
        scope: UProbeScope,
    ) -> Result<Vec<(&'static str, UProbeLinkId)>, SyscallTraceError> {
        let mut links = Vec::new();
        let mut result = Ok(());
        for &(prog, offset) in offsets {
            // The return probe first: an entry without its return would leave state behind.
            for name in [SSL_RETURN, prog] {
                let attached = program::<UProbe>(&mut self.ebpf, name).and_then(|p| {
                    p.attach(UProbeAttachLocation::AbsoluteOffset(offset), file, scope)
                        .map_err(|source| SyscallTraceError::Program {
                            name: name.to_string(),
                            source,
                        })
                });
                match attached {
                    Ok(id) => links.push((name, id)),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if result.is_err() {
                break;
            }
        }
        match result {
            Ok(()) => Ok(links),
            Err(e) => {
                self.detach_links(links);
                Err(e)
            }
        }
    }

    /// Stops tracing a process. Unknown PIDs are ignored.
    pub fn untrace_process(&mut self, pid: u32) {
        if let Ok(mut m) = self.pid_filter() {
            let _ = m.remove(&pid);
        }
        if let Some(links) = self.processes.remove(&pid) {
            self.detach_links(links);
        }
        if self.processes.is_empty() && self.tracepoints_attached() {
            self.detach_tracepoints();
            tracing::info!("syscall tracepoints detached: no process is traced");
        }
    }

    fn detach_links(&mut self, links: Vec<(&'static str, UProbeLinkId)>) {
        let mut owned = Vec::with_capacity(links.len());
        for (name, id) in links {
            if let Ok(p) = program::<UProbe>(&mut self.ebpf, name) {
                match p.take_link(id) {
                    Ok(link) => owned.push(link),
                    Err(e) => tracing::debug!("detaching a {name} link: {e}"),
                }
            }
        }
        self.reaper.reap(owned);
    }

    fn pid_filter(&mut self) -> Result<BpfHashMap<&mut MapData, u32, u32>, SyscallTraceError> {
        let map = self
            .ebpf
            .map_mut("sys_pids")
            .ok_or_else(|| SyscallTraceError::Missing("sys_pids".into()))?;
        BpfHashMap::try_from(map).map_err(|source| SyscallTraceError::Map {
            name: "sys_pids",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_openssl_functions_in_the_system_libssl() {
        let lib = Path::new("/lib/x86_64-linux-gnu/libssl.so.3");
        if !lib.exists() {
            eprintln!("SKIP: no {}", lib.display());
            return;
        }
        let offsets = ssl_offsets(lib);
        let names: Vec<&str> = offsets.iter().map(|&(p, _)| p).collect();
        assert_eq!(
            names,
            vec![
                "ssl_read_entry",
                "ssl_write_entry",
                "ssl_read_ex_entry",
                "ssl_write_ex_entry"
            ]
        );
        assert!(offsets.iter().all(|&(_, o)| o > 0));
        assert!(ssl_offsets(Path::new("/bin/true")).is_empty());
    }
}
