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

use std::num::NonZeroU32;
use std::path::PathBuf;

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::uprobe::UProbeScope;
use aya::programs::UProbe;
use thiserror::Error;

mod hooks;
mod openssl;
#[cfg(test)]
mod programs_tests;
mod tracefs;

use super::links::{Core, ObjectError};
use super::reaper::Activity;
pub(crate) use crate::config::SyscallSource;
use hooks::Hooks;
pub(crate) use hooks::{kprobe_functions, Mode};
use openssl::SslOffsetCache;

static SYSCALLS_BPF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/syscalls.bpf.o"));

#[derive(Debug, Error)]
pub(crate) enum SyscallTraceError {
    #[error(transparent)]
    Tracefs(#[from] crate::kernel::KernelError),
    #[error("cannot load the syscall BPF programs: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("syscall {0}")]
    Object(#[from] ObjectError),
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
pub(crate) struct Traced {
    /// The file whose SSL_read/SSL_write are probed, if any.
    pub openssl: Option<PathBuf>,
    pub uprobes: usize,
}

pub(crate) struct SyscallTracer {
    /// The programs, maps and each traced process's OpenSSL links.
    core: Core,
    /// The syscall hooks, attached while at least one process is traced.
    hooks: Hooks,
    ssl_offsets: SslOffsetCache,
}

impl SyscallTracer {
    /// Chooses the syscall source (`wanted`; `Auto`: kprobes where the kernel can put them on
    /// every wrapper), loads its programs and the OpenSSL ones (verifier included) and checks
    /// that its hooks exist; nothing is attached until a process is traced. `activity`: the
    /// Go attacher's, so closing OpenSSL links waits for calm moments too.
    ///
    /// `loader`: the one the Go programs were loaded with, so the kernel's BTF is parsed once.
    pub(crate) fn load(
        loader: &mut aya::EbpfLoader<'_>,
        activity: Activity,
        wanted: SyscallSource,
    ) -> Result<Self, SyscallTraceError> {
        if crate::kernel::ensure_tracefs()? {
            tracing::info!("mounted tracefs for the syscall tracepoints");
        }
        crate::kernel::raise_memlock();
        let hooks = Hooks::choose(wanted)?;
        let ebpf = loader.load(SYSCALLS_BPF)?;
        let mut core = Core::new(ebpf, activity).map_err(SyscallTraceError::Thread)?;
        hooks.load(&mut core)?;
        core.load::<UProbe>(openssl::programs())?;
        Ok(SyscallTracer {
            core,
            hooks,
            ssl_offsets: SslOffsetCache::default(),
        })
    }

    /// The source the syscall programs run from.
    pub(crate) fn mode(&self) -> Mode {
        self.hooks.mode()
    }

    /// The source, for the log and `sonde check`.
    pub(crate) fn source(&self) -> String {
        self.hooks.source()
    }

    /// Whether the syscall hooks are attached now.
    pub(crate) fn source_attached(&self) -> bool {
        self.hooks.attached()
    }

    /// Attaches every kprobe and detaches them again: `sonde check` proves kprobes work
    /// (ones that fail to attach, with `auto`, turn into tracepoints). Tracepoints are not
    /// tried: their existence was checked at load, and closing them takes ~2 s here.
    pub(crate) fn try_attach(&mut self) -> Result<(), SyscallTraceError> {
        self.hooks.try_attach(&mut self.core)
    }

    pub(crate) fn take_events(&mut self) -> Result<RingBuf<MapData>, SyscallTraceError> {
        Ok(self.core.take_map("sys_events")?)
    }

    pub(crate) fn take_lost_counter(
        &mut self,
    ) -> Result<PerCpuArray<MapData, u64>, SyscallTraceError> {
        Ok(self.core.take_map("sys_lost")?)
    }

    pub(crate) fn is_traced(&self, pid: u32) -> bool {
        self.core.contains(pid)
    }

    pub(crate) fn traced_count(&self) -> usize {
        self.core.process_count()
    }

    pub(crate) fn link_count(&self) -> usize {
        self.core.link_count()
    }

    pub(crate) fn traced_pids(&self) -> Vec<u32> {
        self.core.pids()
    }

    /// Starts tracing one process. A failed OpenSSL attach leaves plain syscall tracing on.
    pub(crate) fn trace_process(&mut self, pid: u32) -> Result<Traced, SyscallTraceError> {
        let scope =
            UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or(SyscallTraceError::InvalidPid)?);
        if !self.source_attached() {
            self.hooks.attach(&mut self.core)?;
            tracing::info!("syscall {} attached", self.mode().name());
        }
        let mut links = Vec::new();
        let mut ssl = None;
        let exe = crate::discover::proc::exe_path(pid);
        for file in openssl::mapped_libssl(pid)
            .into_iter()
            .chain(std::iter::once(exe))
        {
            let offsets = self.ssl_offsets.get(&file);
            if offsets.is_empty() {
                continue;
            }
            match openssl::attach(&mut self.core, &file, &offsets, scope) {
                Ok(l) => {
                    links = l;
                    ssl = Some(file);
                }
                Err(e) => crate::internal_events::emit(crate::internal_events::AttachFailed {
                    pid,
                    error: &SyscallTraceError::from(e),
                    via: crate::internal_events::FailedVia::OpenSsl(&file),
                }),
            }
            break;
        }
        let uprobes = links.len();
        let inserted = self.set_traced(pid, true);
        if let Err(e) = inserted {
            self.core.detach(links);
            if self.core.process_count() == 0 {
                self.hooks.detach(&mut self.core);
            }
            return Err(e);
        }
        self.core.insert_process(pid, links);
        Ok(Traced {
            openssl: ssl,
            uprobes,
        })
    }

    /// Stops tracing a process. Unknown PIDs are ignored.
    pub(crate) fn untrace_process(&mut self, pid: u32) {
        if let Err(e) = self.set_traced(pid, false) {
            tracing::debug!("pid {pid}: clearing its traced bit: {e}");
        }
        self.core.detach_process(pid);
        if self.core.process_count() == 0 && self.source_attached() {
            self.hooks.detach(&mut self.core);
            tracing::info!(
                "syscall {} detached: no process is traced",
                self.mode().name()
            );
        }
    }

    /// Sets or clears `pid`'s bit in the in-kernel filter. Only this thread writes the map,
    /// so reading the word and writing it back loses no other PID's bit.
    fn set_traced(&mut self, pid: u32, traced: bool) -> Result<(), SyscallTraceError> {
        let mut bits: Array<&mut MapData, u64> = self.core.map("traced_tgids")?;
        let err = |source| ObjectError::Map {
            name: "traced_tgids",
            source,
        };
        let (word, bit) = (pid / 64, 1u64 << (pid % 64));
        let old = bits.get(&word, 0).map_err(err)?;
        let new = if traced { old | bit } else { old & !bit };
        Ok(bits.set(word, new, 0).map_err(err)?)
    }
}
