//! The language-agnostic tracer: the socket syscalls (filtered in the kernel by the
//! `traced_tgids` bitmap) and, per selected process, OpenSSL uprobes in the libssl it maps (or in its own
//! executable when OpenSSL is linked in statically).
//!
//! The syscalls are seen from one of two sources running the same program bodies
//! (ebpf/syscalls.bpf.c), chosen at load (`syscall_source`, default `auto`):
//! - kprobes + kretprobes on the x86-64 syscall wrappers (`__x64_sys_read`, …), where the
//!   kernel has kprobes: only the traced syscalls pay, and only a traced process pays more
//!   than a filter check. Not on sock_recvmsg/tcp_sendmsg: the tracer's state is keyed by fd,
//!   which only the syscall has.
//! - syscall tracepoints everywhere else. While any syscall tracepoint has a program, every
//!   syscall of every process on the host takes the kernel's slow path (measured here: `dd bs=1`
//!   went from ~1.9 s to ~8.5 s for a million read+write pairs, about 3 µs per pair on this
//!   nested VM; BENCHMARKS.md has both sources on 6.12).
//!
//! Either is attached only while at least one process is traced: a host with only Go services
//! pays nothing.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::kprobe::{KProbeLink, KProbeLinkId};
use aya::programs::trace_point::{TracePointLink, TracePointLinkId};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
use aya::programs::{KProbe, TracePoint, UProbe};
use aya::Ebpf;
use object::{Object, ObjectSegment, ObjectSymbol};
use thiserror::Error;

use super::reaper::{Activity, Reaper};
pub use crate::config::SyscallSource;

static SYSCALLS_BPF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/syscalls.bpf.o"));

/// Each syscall tracepoint and the program it runs. Several syscalls share one program whose
/// code is the same for each (every data syscall's exit, accept/accept4, write/sendto): it
/// is loaded, and verified, once and attached to each of them; verification is most of the
/// load time (a test checks that the shared programs are identical in the object).
const TRACEPOINTS: &[(&str, &str)] = &[
    ("sys_enter_read", "sys_enter_read"),
    ("sys_exit_read", "sys_exit_read"),
    ("sys_enter_recvfrom", "sys_enter_recvfrom"),
    ("sys_exit_recvfrom", "sys_exit_read"),
    ("sys_enter_write", "sys_enter_write"),
    ("sys_exit_write", "sys_exit_read"),
    ("sys_enter_sendto", "sys_enter_write"),
    ("sys_exit_sendto", "sys_exit_read"),
    ("sys_enter_readv", "sys_enter_readv"),
    ("sys_exit_readv", "sys_exit_read"),
    ("sys_enter_writev", "sys_enter_writev"),
    ("sys_exit_writev", "sys_exit_read"),
    ("sys_enter_recvmsg", "sys_enter_recvmsg"),
    ("sys_exit_recvmsg", "sys_exit_read"),
    ("sys_enter_sendmsg", "sys_enter_sendmsg"),
    ("sys_exit_sendmsg", "sys_exit_read"),
    ("sys_enter_sendfile64", "sys_enter_sendfile64"),
    ("sys_exit_sendfile64", "sys_exit_read"),
    ("sys_enter_accept", "sys_enter_accept"),
    ("sys_exit_accept", "sys_exit_accept"),
    ("sys_enter_accept4", "sys_enter_accept"),
    ("sys_exit_accept4", "sys_exit_accept"),
    ("sys_enter_connect", "sys_enter_connect"),
    ("sys_exit_connect", "sys_exit_connect"),
    ("sys_enter_close", "sys_enter_close"),
];

/// Each kernel function probed in kprobe mode and the program it runs: every syscall of
/// `TRACEPOINTS` on its x86-64 wrapper, the return probe first (an entry without its return
/// would leave state behind). Shared programs as there (the same test checks them).
const KPROBES: &[(&str, &str)] = &[
    ("__x64_sys_read", "kretprobe_read"),
    ("__x64_sys_read", "kprobe_read"),
    ("__x64_sys_recvfrom", "kretprobe_read"),
    ("__x64_sys_recvfrom", "kprobe_recvfrom"),
    ("__x64_sys_write", "kretprobe_read"),
    ("__x64_sys_write", "kprobe_write"),
    ("__x64_sys_sendto", "kretprobe_read"),
    ("__x64_sys_sendto", "kprobe_write"),
    ("__x64_sys_readv", "kretprobe_read"),
    ("__x64_sys_readv", "kprobe_readv"),
    ("__x64_sys_writev", "kretprobe_read"),
    ("__x64_sys_writev", "kprobe_writev"),
    ("__x64_sys_recvmsg", "kretprobe_read"),
    ("__x64_sys_recvmsg", "kprobe_recvmsg"),
    ("__x64_sys_sendmsg", "kretprobe_read"),
    ("__x64_sys_sendmsg", "kprobe_sendmsg"),
    ("__x64_sys_sendfile64", "kretprobe_read"),
    ("__x64_sys_sendfile64", "kprobe_sendfile64"),
    ("__x64_sys_accept", "kretprobe_accept"),
    ("__x64_sys_accept", "kprobe_accept"),
    ("__x64_sys_accept4", "kretprobe_accept"),
    ("__x64_sys_accept4", "kprobe_accept"),
    ("__x64_sys_connect", "kretprobe_connect"),
    ("__x64_sys_connect", "kprobe_connect"),
    ("__x64_sys_close", "kprobe_close"),
];

/// The kernel functions kprobe mode needs.
pub fn kprobe_functions() -> Vec<&'static str> {
    let mut f: Vec<&str> = KPROBES.iter().map(|&(f, _)| f).collect();
    f.dedup();
    f
}

/// The source the syscall programs run from, once chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Kprobes,
    Tracepoints,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Kprobes => "kprobes",
            Mode::Tracepoints => "tracepoints",
        }
    }
}

/// An attached syscall hook.
enum SourceLink {
    Tracepoint(&'static str, TracePointLinkId),
    Kprobe(&'static str, KProbeLinkId),
    Kretprobe(TracefsKretprobe),
}

/// A detached hook, closed when dropped.
enum OwnedLink {
    // Held only to be dropped (closed) off the caller's thread.
    Tracepoint(#[allow(dead_code)] TracePointLink),
    Kprobe(#[allow(dead_code)] KProbeLink),
    Kretprobe(#[allow(dead_code)] TracefsKretprobe),
}

/// Calls of one function a kretprobe can follow at once. Each call holds a slot from entry to
/// return, and every thread of the host sleeping inside a probed syscall (a `read` of a pipe,
/// an `accept`) holds one, traced or not: with the kernel's default (max(10, 2 × possible
/// CPUs)) a host with more sleepers than that would see a traced process's syscalls return
/// unseen. The perf PMU (aya's KProbe::attach) cannot set it, so the kretprobes are made in
/// tracefs's kprobe_events (`r1024:…`). ~100 bytes a slot: ~1.2 MiB for the 12 functions.
const KRETPROBE_MAXACTIVE: u32 = 1024;

/// The kprobe_events group of this process's kretprobes.
fn kretprobe_group(pid: u32) -> String {
    format!("sonde_{pid}")
}

fn write_kprobe_events(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    // Append: opened for writing without it, kprobe_events drops every probe on the host.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(format!("{}/kprobe_events", crate::kernel::TRACEFS))?;
    f.write_all(format!("{line}\n").as_bytes())
}

/// Removes kretprobe events left by a sonde that died without removing them (they cost
/// nothing while no program is attached, but would pile up).
fn remove_stale_kretprobes() {
    let Ok(events) = std::fs::read_to_string(format!("{}/kprobe_events", crate::kernel::TRACEFS))
    else {
        return;
    };
    for line in events.lines() {
        // r1024:sonde_123/x64_sys_read __x64_sys_read
        let Some(event) = line
            .split_whitespace()
            .next()
            .and_then(|d| d.split_once(':'))
            .map(|(_, e)| e)
        else {
            continue;
        };
        let Some(pid) = event
            .split_once('/')
            .and_then(|(g, _)| g.strip_prefix("sonde_"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !crate::discover::proc::exists(pid) {
            if let Err(e) = write_kprobe_events(&format!("-:{event}")) {
                tracing::debug!("removing the stale kretprobe {event}: {e}");
            }
        }
    }
}

/// A kretprobe event of kprobe_events running a loaded kprobe program through a perf event;
/// removed when dropped.
struct TracefsKretprobe {
    /// `group/name`.
    event: String,
    perf: Option<std::os::fd::OwnedFd>,
}

impl TracefsKretprobe {
    fn attach(function: &str, program: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Self> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let group = kretprobe_group(std::process::id());
        let name = function.trim_start_matches('_');
        let event = format!("{group}/{name}");
        write_kprobe_events(&format!("r{KRETPROBE_MAXACTIVE}:{event} {function}"))?;
        // From here on, dropped on any error: the event is removed.
        let mut made = TracefsKretprobe { event, perf: None };
        let id: u64 = std::fs::read_to_string(format!(
            "{}/events/{group}/{name}/id",
            crate::kernel::TRACEFS
        ))?
        .trim()
        .parse()
        .map_err(|_| std::io::Error::other("unreadable event id"))?;
        let attr = PerfEventAttr {
            type_: PERF_TYPE_TRACEPOINT,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: id,
            sample_period: 1,
            wakeup_events: 1,
            ..PerfEventAttr::default()
        };
        // SAFETY: attr is a valid perf_event_attr of the size it declares; pid -1 with cpu 0
        // is a tracepoint event for every task (the BPF program runs on every CPU).
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                -1,
                0,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        let perf = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: ioctls on an owned perf event descriptor with an int argument.
        let rc = unsafe {
            libc::ioctl(
                perf.as_raw_fd(),
                PERF_EVENT_IOC_SET_BPF,
                program.as_raw_fd(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::ioctl(perf.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        made.perf = Some(perf);
        Ok(made)
    }
}

impl Drop for TracefsKretprobe {
    fn drop(&mut self) {
        // The event is busy while its perf event is open.
        drop(self.perf.take());
        if let Err(e) = write_kprobe_events(&format!("-:{}", self.event)) {
            tracing::debug!("removing the kretprobe {}: {e}", self.event);
        }
    }
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// _IOW('$', 8, __u32) and _IO('$', 0) of linux/perf_event.h.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

/// struct perf_event_attr up to PERF_ATTR_SIZE_VER7 (128 bytes); the flag bits are all 0
/// (enabled, counting every task).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    rest: [u64; 9],
}

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
    #[error("syscall BPF program {name}: {source}")]
    Kretprobe {
        name: String,
        source: std::io::Error,
    },
    #[error("syscall_source is kprobes, but kprobes cannot be used here: {0}")]
    NoKprobes(String),
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
    /// What the syscall programs run from.
    mode: Mode,
    /// What the configuration asked for: with `Auto`, kprobes that fail to attach fall back
    /// to tracepoints.
    wanted: SyscallSource,
    /// Why tracepoints, when they are the mode.
    why_tracepoints: String,
    /// The attached syscall hooks; empty while nothing is traced.
    source_links: Vec<SourceLink>,
    /// The thread closing the links of the last detach, if still running.
    closing: Option<std::thread::JoinHandle<()>>,
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

/// The programs of one source to load: each shared one once.
fn source_programs(mode: Mode) -> Vec<&'static str> {
    let table = match mode {
        Mode::Kprobes => KPROBES,
        Mode::Tracepoints => TRACEPOINTS,
    };
    let mut names: Vec<&str> = table.iter().map(|&(_, p)| p).collect();
    names.sort_unstable();
    names.dedup();
    names
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
    let maps = crate::discover::proc::Proc::open(pid)
        .and_then(|p| p.mapped_files())
        .ok()?;
    let path = maps.iter().find(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libssl.so"))
    })?;
    // Through the process's root, so a container's own libssl is found.
    Some(crate::discover::proc::in_root_of(pid, path))
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
    /// Chooses the syscall source (`wanted`; `Auto`: kprobes where the kernel can put them on
    /// every wrapper), loads its programs and the OpenSSL ones (verifier included) and checks
    /// that its hooks exist; nothing is attached until a process is traced. `activity`: the
    /// Go attacher's, so closing OpenSSL links waits for calm moments too.
    ///
    /// `loader`: the one the Go programs were loaded with, so the kernel's BTF is parsed once.
    pub fn load(
        loader: &mut aya::EbpfLoader<'_>,
        activity: Activity,
        wanted: SyscallSource,
    ) -> Result<Self, SyscallTraceError> {
        if crate::kernel::ensure_tracefs()? {
            tracing::info!("mounted tracefs for the syscall tracepoints");
        }
        crate::kernel::raise_memlock();
        let kprobes = match wanted {
            SyscallSource::Tracepoints => Err("syscall_source is tracepoints".to_string()),
            _ => crate::kernel::kprobes_usable(&kprobe_functions()).and_then(|()| {
                // The kretprobes are made there (see KRETPROBE_MAXACTIVE).
                Path::new(crate::kernel::TRACEFS)
                    .join("kprobe_events")
                    .exists()
                    .then_some(())
                    .ok_or_else(|| "no kprobe_events in tracefs".to_string())
            }),
        };
        let (mode, why_tracepoints) = match (wanted, kprobes) {
            (_, Ok(())) => (Mode::Kprobes, String::new()),
            (SyscallSource::Kprobes, Err(why)) => return Err(SyscallTraceError::NoKprobes(why)),
            (_, Err(why)) => (Mode::Tracepoints, why),
        };
        if mode == Mode::Kprobes {
            remove_stale_kretprobes();
        }
        let ebpf = loader.load(SYSCALLS_BPF)?;
        let mut tracer = SyscallTracer {
            reaper: Reaper::new(activity).map_err(SyscallTraceError::Thread)?,
            ebpf,
            processes: HashMap::new(),
            mode,
            wanted,
            why_tracepoints,
            source_links: Vec::new(),
            closing: None,
            offsets: HashMap::new(),
        };
        tracer.load_source(mode)?;
        for name in SSL_FUNCTIONS
            .iter()
            .map(|&(_, p)| p)
            .chain(std::iter::once(SSL_RETURN))
        {
            let p: &mut UProbe = program(&mut tracer.ebpf, name)?;
            p.load().map_err(|source| SyscallTraceError::Program {
                name: name.to_string(),
                source,
            })?;
        }
        Ok(tracer)
    }

    /// Loads one source's programs and checks that its hooks exist. Fails now, not at the
    /// first non-Go process, if a tracepoint is missing; not by attaching them all and
    /// detaching them: detaching takes ~1-2 s here (see `detach_source`), and a first traced
    /// process would wait for it.
    fn load_source(&mut self, mode: Mode) -> Result<(), SyscallTraceError> {
        for name in source_programs(mode) {
            let loaded = match mode {
                Mode::Tracepoints => program::<TracePoint>(&mut self.ebpf, name)?.load(),
                Mode::Kprobes => program::<KProbe>(&mut self.ebpf, name)?.load(),
            };
            loaded.map_err(|source| SyscallTraceError::Program {
                name: name.to_string(),
                source,
            })?;
        }
        if mode == Mode::Tracepoints {
            if let Some(&(missing, _)) = TRACEPOINTS
                .iter()
                .find(|(tp, _)| !crate::kernel::tracepoint_exists("syscalls", tp))
            {
                return Err(SyscallTraceError::Missing(format!(
                    "tracepoint syscalls/{missing}"
                )));
            }
        }
        Ok(())
    }

    /// The source the syscall programs run from.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The source, for the log and `sonde check`.
    pub fn source(&self) -> String {
        match self.mode {
            Mode::Kprobes => "syscall source: kprobes on the syscall wrappers (__x64_sys_read, \
                              __x64_sys_write, …): only those syscalls pay"
                .into(),
            Mode::Tracepoints => format!(
                "syscall source: tracepoints (syscalls/sys_enter_*, sys_exit_*: every syscall \
                 of every task takes the slow path while attached); kprobes: {}",
                self.why_tracepoints
            ),
        }
    }

    /// Whether the syscall hooks are attached now.
    pub fn source_attached(&self) -> bool {
        !self.source_links.is_empty()
    }

    /// Attaches every kprobe and detaches them again: `sonde check` proves kprobes work
    /// (ones that fail to attach, with `auto`, turn into tracepoints). Tracepoints are not
    /// tried: their existence was checked at load, and closing them takes ~2 s here.
    pub fn try_attach(&mut self) -> Result<(), SyscallTraceError> {
        if self.source_attached() || self.mode == Mode::Tracepoints {
            return Ok(());
        }
        self.attach_source()?;
        self.detach_source();
        if let Some(closing) = self.closing.take() {
            let _ = closing.join();
        }
        Ok(())
    }

    fn attach_source(&mut self) -> Result<(), SyscallTraceError> {
        if self.source_attached() {
            return Ok(());
        }
        // Links still closing would run the programs a second time per syscall meanwhile:
        // every record twice.
        if let Some(closing) = self.closing.take() {
            let _ = closing.join();
        }
        match self.attach_links() {
            Err(e) if self.mode == Mode::Kprobes && self.wanted == SyscallSource::Auto => {
                tracing::warn!("kprobes on the syscalls do not attach ({e}): using tracepoints");
                self.load_source(Mode::Tracepoints)?;
                self.mode = Mode::Tracepoints;
                self.why_tracepoints = format!("failed to attach: {e}");
                self.attach_links()
            }
            other => other,
        }
    }

    /// Attaches the current mode's hooks; all or nothing.
    fn attach_links(&mut self) -> Result<(), SyscallTraceError> {
        let table = match self.mode {
            Mode::Kprobes => KPROBES,
            Mode::Tracepoints => TRACEPOINTS,
        };
        for &(hook, name) in table {
            let attached = match self.mode {
                Mode::Tracepoints => program::<TracePoint>(&mut self.ebpf, name).and_then(|tp| {
                    tp.attach("syscalls", hook)
                        .map(|id| SourceLink::Tracepoint(name, id))
                        .map_err(|source| SyscallTraceError::Program {
                            name: format!("{name} on {hook}"),
                            source,
                        })
                }),
                Mode::Kprobes => program::<KProbe>(&mut self.ebpf, name).and_then(|kp| {
                    if matches!(kp.kind(), aya::programs::ProbeKind::Return) {
                        let fd = kp.fd().map_err(|source| SyscallTraceError::Program {
                            name: name.to_string(),
                            source,
                        })?;
                        return TracefsKretprobe::attach(hook, std::os::fd::AsFd::as_fd(fd))
                            .map(SourceLink::Kretprobe)
                            .map_err(|source| SyscallTraceError::Kretprobe {
                                name: format!("{name} on {hook}"),
                                source,
                            });
                    }
                    kp.attach(hook, 0)
                        .map(|id| SourceLink::Kprobe(name, id))
                        .map_err(|source| SyscallTraceError::Program {
                            name: format!("{name} on {hook}"),
                            source,
                        })
                }),
            };
            match attached {
                Ok(link) => self.source_links.push(link),
                Err(e) => {
                    self.detach_source();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Closing a syscall hook's link waits for an RCU grace period (~75 ms each for a
    /// tracepoint here, ~2 s for all of them one after the other): they are closed at once,
    /// each on its own thread, off the caller's (discovery must not stall).
    fn detach_source(&mut self) {
        let mut links = Vec::with_capacity(self.source_links.len());
        for link in std::mem::take(&mut self.source_links) {
            let taken = match link {
                SourceLink::Tracepoint(name, id) => program::<TracePoint>(&mut self.ebpf, name)
                    .map(|tp| tp.take_link(id).map(OwnedLink::Tracepoint)),
                SourceLink::Kprobe(name, id) => program::<KProbe>(&mut self.ebpf, name)
                    .map(|kp| kp.take_link(id).map(OwnedLink::Kprobe)),
                SourceLink::Kretprobe(k) => Ok(Ok(OwnedLink::Kretprobe(k))),
            };
            match taken {
                Ok(Ok(link)) => links.push(link),
                Ok(Err(e)) => tracing::debug!("detaching a syscall hook: {e}"),
                Err(e) => tracing::debug!("detaching a syscall hook: {e}"),
            }
        }
        if links.is_empty() {
            return;
        }
        if let Some(closing) = self.closing.take() {
            let _ = closing.join();
        }
        let close = move || {
            std::thread::scope(|s| {
                for link in links {
                    s.spawn(move || drop(link));
                }
            })
        };
        match std::thread::Builder::new()
            .name("sonde-tpclose".into())
            .spawn(close)
        {
            Ok(handle) => self.closing = Some(handle),
            // The closure, and the links in it, were dropped: closed on this thread.
            Err(e) => tracing::debug!("closing syscall hook links here: {e}"),
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
        if !self.source_attached() {
            self.attach_source()?;
            tracing::info!("syscall {} attached", self.mode.name());
        }
        let mut links = Vec::new();
        let mut openssl = None;
        let exe = crate::discover::proc::exe_path(pid);
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
        let inserted = self.set_traced(pid, true);
        if let Err(e) = inserted {
            self.detach_links(links);
            if self.processes.is_empty() {
                self.detach_source();
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
        if let Err(e) = self.set_traced(pid, false) {
            tracing::debug!("pid {pid}: clearing its traced bit: {e}");
        }
        if let Some(links) = self.processes.remove(&pid) {
            self.detach_links(links);
        }
        if self.processes.is_empty() && self.source_attached() {
            self.detach_source();
            tracing::info!(
                "syscall {} detached: no process is traced",
                self.mode.name()
            );
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

    /// Sets or clears `pid`'s bit in the in-kernel filter. Only this thread writes the map,
    /// so reading the word and writing it back loses no other PID's bit.
    fn set_traced(&mut self, pid: u32, traced: bool) -> Result<(), SyscallTraceError> {
        let map = self
            .ebpf
            .map_mut("traced_tgids")
            .ok_or_else(|| SyscallTraceError::Missing("traced_tgids".into()))?;
        let err = |source| SyscallTraceError::Map {
            name: "traced_tgids",
            source,
        };
        let mut bits: Array<&mut MapData, u64> = Array::try_from(map).map_err(err)?;
        let (word, bit) = (pid / 64, 1u64 << (pid % 64));
        let old = bits.get(&word, 0).map_err(err)?;
        let new = if traced { old | bit } else { old & !bit };
        bits.set(word, new, 0).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{ObjectSection, RelocationTarget};

    /// A program's instructions and what each relocation points at, by the program's name
    /// (its symbol: several kprobe programs share the section `kprobe`).
    fn program_code(obj: &object::File, name: &str) -> (Vec<u8>, Vec<(u64, String)>) {
        let symbol = obj
            .symbols()
            .find(|s| s.name() == Ok(name) && s.kind() == object::SymbolKind::Text)
            .unwrap_or_else(|| panic!("no program {name}"));
        let section = obj
            .section_by_index(symbol.section_index().expect("a program's section"))
            .expect("section");
        let (start, end) = (symbol.address(), symbol.address() + symbol.size());
        let relocations = section
            .relocations()
            .filter(|&(at, _)| at >= start && at < end)
            .map(|(at, r)| {
                let target = match r.target() {
                    RelocationTarget::Symbol(i) => obj
                        .symbol_by_index(i)
                        .and_then(|s| s.name().map(str::to_string))
                        .unwrap_or_default(),
                    other => format!("{other:?}"),
                };
                (at - start, target)
            })
            .collect();
        let data = section.data().expect("section data");
        (data[start as usize..end as usize].to_vec(), relocations)
    }

    #[test]
    fn shared_tracepoint_programs_are_the_same_code_as_the_syscalls_they_replace() {
        let obj = object::File::parse(SYSCALLS_BPF).expect("parse syscalls.bpf.o");
        let mut shared = 0;
        for &(tracepoint, program) in TRACEPOINTS {
            if tracepoint == program {
                continue;
            }
            shared += 1;
            assert_eq!(
                program_code(&obj, tracepoint),
                program_code(&obj, program),
                "{tracepoint} runs {program}, but its own program differs: give it its own entry"
            );
        }
        assert_eq!(shared, 11);
        assert_eq!(source_programs(Mode::Tracepoints).len(), 14);
    }

    #[test]
    fn shared_kprobe_programs_are_the_same_code_as_the_syscalls_they_replace() {
        let obj = object::File::parse(SYSCALLS_BPF).expect("parse syscalls.bpf.o");
        let mut shared = 0;
        for &(function, program) in KPROBES {
            // The program SYSCALL_PROBES made for this very syscall.
            let syscall = function
                .strip_prefix("__x64_sys_")
                .expect("a syscall wrapper");
            let kind = program.split('_').next().expect("kprobe or kretprobe");
            let own = format!("{kind}_{syscall}");
            if own == program {
                continue;
            }
            shared += 1;
            assert_eq!(
                program_code(&obj, &own),
                program_code(&obj, program),
                "{function} runs {program}, but its own program {own} differs"
            );
        }
        assert_eq!(shared, 11);
        assert_eq!(source_programs(Mode::Kprobes).len(), 14);
        // The same syscalls as the tracepoints.
        let mut syscalls: Vec<&str> = kprobe_functions()
            .iter()
            .map(|f| f.trim_start_matches("__x64_sys_"))
            .collect();
        let mut from_tracepoints: Vec<&str> = TRACEPOINTS
            .iter()
            .map(|&(tp, _)| {
                tp.trim_start_matches("sys_enter_")
                    .trim_start_matches("sys_exit_")
            })
            .collect();
        syscalls.sort_unstable();
        from_tracepoints.sort_unstable();
        from_tracepoints.dedup();
        assert_eq!(syscalls, from_tracepoints);
    }

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
