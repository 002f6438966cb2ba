//! The syscall source of the tracer: which hooks (kprobes on the syscall wrappers, or the
//! syscall tracepoints) run which program, loading them, and attaching and detaching them
//! all at once (see syscalls.rs for why either, and why only while a process is traced).

use aya::programs::kprobe::{KProbeLink, KProbeLinkId};
use aya::programs::trace_point::{TracePointLink, TracePointLinkId};
use aya::programs::{KProbe, TracePoint};

use super::tracefs::{remove_stale_kretprobes, TracefsKretprobe};
use super::SyscallTraceError;
use crate::attach::links::{Core, ObjectError};
use crate::config::SyscallSource;

/// Each syscall tracepoint and the program it runs. Several syscalls share one program whose
/// code is the same for each (every data syscall's exit, accept/accept4, write/sendto): it
/// is loaded, and verified, once and attached to each of them; verification is most of the
/// load time (a test checks that the shared programs are identical in the object).
pub(super) const TRACEPOINTS: &[(&str, &str)] = &[
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
pub(super) const KPROBES: &[(&str, &str)] = &[
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
pub(crate) fn kprobe_functions() -> Vec<&'static str> {
    let mut f: Vec<&str> = KPROBES.iter().map(|&(f, _)| f).collect();
    f.dedup();
    f
}

/// The source the syscall programs run from, once chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Kprobes,
    Tracepoints,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
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

/// The programs of one source to load: each shared one once.
pub(super) fn source_programs(mode: Mode) -> Vec<&'static str> {
    let table = match mode {
        Mode::Kprobes => KPROBES,
        Mode::Tracepoints => TRACEPOINTS,
    };
    let mut names: Vec<&str> = table.iter().map(|&(_, p)| p).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The syscall hooks: what they run from, and their links while attached.
pub(super) struct Hooks {
    /// What the syscall programs run from.
    mode: Mode,
    /// What the configuration asked for: with `Auto`, kprobes that fail to attach fall back
    /// to tracepoints.
    wanted: SyscallSource,
    /// Why tracepoints, when they are the mode.
    why_tracepoints: String,
    /// The attached syscall hooks; empty while nothing is traced.
    links: Vec<SourceLink>,
    /// The thread closing the links of the last detach, if still running.
    closing: Option<std::thread::JoinHandle<()>>,
}

impl Hooks {
    /// Chooses the source (`wanted`; `Auto`: kprobes where the kernel can put them on every
    /// wrapper).
    pub(super) fn choose(wanted: SyscallSource) -> Result<Self, SyscallTraceError> {
        let kprobes = match wanted {
            SyscallSource::Tracepoints => Err("syscall_source is tracepoints".to_string()),
            _ => crate::kernel::kprobes_usable(&kprobe_functions()).and_then(|()| {
                // The kretprobes are made there (see tracefs.rs, KRETPROBE_MAXACTIVE).
                std::path::Path::new(crate::kernel::TRACEFS)
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
        Ok(Hooks {
            mode,
            wanted,
            why_tracepoints,
            links: Vec::new(),
            closing: None,
        })
    }

    /// Loads the chosen source's programs; see [`Hooks::load_source`].
    pub(super) fn load(&self, core: &mut Core) -> Result<(), SyscallTraceError> {
        Self::load_source(core, self.mode)
    }

    /// Loads one source's programs and checks that its hooks exist. Fails now, not at the
    /// first non-Go process, if a tracepoint is missing; not by attaching them all and
    /// detaching them: detaching takes ~1-2 s here (see `detach`), and a first traced
    /// process would wait for it.
    fn load_source(core: &mut Core, mode: Mode) -> Result<(), SyscallTraceError> {
        match mode {
            Mode::Tracepoints => core.load::<TracePoint>(source_programs(mode))?,
            Mode::Kprobes => core.load::<KProbe>(source_programs(mode))?,
        }
        if mode == Mode::Tracepoints {
            if let Some(&(missing, _)) = TRACEPOINTS
                .iter()
                .find(|(tp, _)| !crate::kernel::tracepoint_exists("syscalls", tp))
            {
                return Err(ObjectError::Missing(format!("tracepoint syscalls/{missing}")).into());
            }
        }
        Ok(())
    }

    /// The source the syscall programs run from.
    pub(super) fn mode(&self) -> Mode {
        self.mode
    }

    /// The source, for the log and `sonde check`.
    pub(super) fn source(&self) -> String {
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
    pub(super) fn attached(&self) -> bool {
        !self.links.is_empty()
    }

    /// Attaches every kprobe and detaches them again: `sonde check` proves kprobes work
    /// (ones that fail to attach, with `auto`, turn into tracepoints). Tracepoints are not
    /// tried: their existence was checked at load, and closing them takes ~2 s here.
    pub(super) fn try_attach(&mut self, core: &mut Core) -> Result<(), SyscallTraceError> {
        if self.attached() || self.mode == Mode::Tracepoints {
            return Ok(());
        }
        self.attach(core)?;
        self.detach(core);
        if let Some(closing) = self.closing.take() {
            let _ = closing.join();
        }
        Ok(())
    }

    pub(super) fn attach(&mut self, core: &mut Core) -> Result<(), SyscallTraceError> {
        if self.attached() {
            return Ok(());
        }
        // Links still closing would run the programs a second time per syscall meanwhile:
        // every record twice.
        if let Some(closing) = self.closing.take() {
            let _ = closing.join();
        }
        match self.attach_links(core) {
            Err(e) if self.mode == Mode::Kprobes && self.wanted == SyscallSource::Auto => {
                tracing::warn!("kprobes on the syscalls do not attach ({e}): using tracepoints");
                Self::load_source(core, Mode::Tracepoints)?;
                self.mode = Mode::Tracepoints;
                self.why_tracepoints = format!("failed to attach: {e}");
                self.attach_links(core)
            }
            other => other,
        }
    }

    /// Attaches the current mode's hooks; all or nothing.
    fn attach_links(&mut self, core: &mut Core) -> Result<(), SyscallTraceError> {
        let table = match self.mode {
            Mode::Kprobes => KPROBES,
            Mode::Tracepoints => TRACEPOINTS,
        };
        for &(hook, name) in table {
            let failed = |source| ObjectError::Program {
                name: format!("{name} on {hook}"),
                source,
            };
            let attached: Result<SourceLink, SyscallTraceError> = match self.mode {
                Mode::Tracepoints => core
                    .program::<TracePoint>(name)
                    .map_err(Into::into)
                    .and_then(|tp| {
                        Ok(SourceLink::Tracepoint(
                            name,
                            tp.attach("syscalls", hook).map_err(failed)?,
                        ))
                    }),
                Mode::Kprobes => core
                    .program::<KProbe>(name)
                    .map_err(Into::into)
                    .and_then(|kp| {
                        if matches!(kp.kind(), aya::programs::ProbeKind::Return) {
                            let fd = kp.fd().map_err(|source| ObjectError::Program {
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
                        Ok(SourceLink::Kprobe(
                            name,
                            kp.attach(hook, 0).map_err(failed)?,
                        ))
                    }),
            };
            match attached {
                Ok(link) => self.links.push(link),
                Err(e) => {
                    self.detach(core);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Closing a syscall hook's link waits for an RCU grace period (~75 ms each for a
    /// tracepoint here, ~2 s for all of them one after the other): they are closed at once,
    /// each on its own thread, off the caller's (discovery must not stall).
    pub(super) fn detach(&mut self, core: &mut Core) {
        let mut links = Vec::with_capacity(self.links.len());
        for link in std::mem::take(&mut self.links) {
            let taken = match link {
                SourceLink::Tracepoint(name, id) => core
                    .program::<TracePoint>(name)
                    .map(|tp| tp.take_link(id).map(OwnedLink::Tracepoint)),
                SourceLink::Kprobe(name, id) => core
                    .program::<KProbe>(name)
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
}
