//! Container launches before the application's exec: a `task/task_rename` tracepoint
//! program reports runc's init process (see ebpf/launch.bpf.c), and a small thread hands
//! each PID to discovery at once.

use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use aya::programs::TracePoint;
use aya::Ebpf;
use thiserror::Error;

use crate::ebpf_abi::LaunchEvent;
use crate::worker::{Stop, Worker};

static LAUNCH_BPF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/launch.bpf.o"));

const FORMAT: &str = "/sys/kernel/tracing/events/task/task_rename/format";
const EXEC_FORMAT: &str = "/sys/kernel/tracing/events/sched/sched_process_exec/format";

/// Which watch of the launch object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watch {
    /// runc's init renamed (`task/task_rename`): [`LaunchWatch`].
    Launch,
    /// Every exec on the host (`sched/sched_process_exec`): [`ExecWatch`].
    Exec,
}

impl Watch {
    fn format(self) -> &'static str {
        match self {
            Watch::Launch => FORMAT,
            Watch::Exec => EXEC_FORMAT,
        }
    }
}

/// The launch object for one watch: maps made and this kernel's record offsets written in,
/// its program not yet verified ([`LaunchWatch::start`], [`ExecWatch::start`] do that).
///
/// `loader` is the agent's one loader, which then loads the other objects: another loader
/// would parse the kernel's BTF again (~17 MB and ~30 ms, on the way to the first count).
/// Hence `'static` offsets (a loader keeps references to them) and globals that need not
/// exist (the other objects have neither; `launch_object_has_both_offsets` checks this one).
pub(crate) fn load_object(
    loader: &mut aya::EbpfLoader<'static>,
    watch: Watch,
) -> Result<Ebpf, LaunchError> {
    static NEWCOMM: OnceLock<u32> = OnceLock::new();
    static FILENAME: OnceLock<u32> = OnceLock::new();
    let (cell, field, global) = match watch {
        Watch::Launch => (&NEWCOMM, "newcomm", "NEWCOMM_OFFSET"),
        Watch::Exec => (&FILENAME, "filename", "FILENAME_OFFSET"),
    };
    let offset = match cell.get() {
        Some(v) => v,
        None => {
            let format =
                std::fs::read_to_string(watch.format()).map_err(|e| LaunchError::NoTracepoint {
                    format: watch.format(),
                    source: e,
                })?;
            let v = field_offset(&format, field).ok_or(LaunchError::Format(field))?;
            cell.get_or_init(|| v)
        }
    };
    Ok(loader
        .override_global(global, offset, false)
        .load(LAUNCH_BPF)?)
}

#[derive(Debug, Error)]
pub(crate) enum LaunchError {
    #[error("the tracepoint is not available ({format}: {source})")]
    NoTracepoint {
        format: &'static str,
        source: std::io::Error,
    },
    #[error("the tracepoint has no field {0}")]
    Format(&'static str),
    #[error("cannot load the launch program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("launch program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("launch ring buffer: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("the launch object has no {0}")]
    Missing(&'static str),
    #[error("cannot start the launch thread: {0}")]
    Thread(std::io::Error),
}

/// The byte offset of `field` in a tracepoint record, from its format file.
pub(crate) fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        // `char newcomm[16]` or `pid_t pid`: the name is the last word, before any `[`.
        let name = decl.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        let off = line.split("offset:").nth(1)?.split(';').next()?;
        off.trim().parse().ok()
    })
}

/// Verifies `program` of `ebpf` and attaches it to the tracepoint `category/name`; its
/// reports come on the ring buffer `ring`.
fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &'static str,
    (category, name): (&str, &str),
    ring: &'static str,
) -> Result<RingBuf<MapData>, LaunchError> {
    let tracepoint: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or(LaunchError::Missing(program))?
        .try_into()?;
    tracepoint.load()?;
    tracepoint.attach(category, name)?;
    Ok(RingBuf::try_from(
        ebpf.take_map(ring).ok_or(LaunchError::Missing(ring))?,
    )?)
}

/// The loaded, attached program and the thread that reads its reports; detached on drop.
pub(crate) struct LaunchWatch {
    _thread: Worker,
}

impl LaunchWatch {
    /// Verifies and attaches the program of `ebpf` (from [`load_object`] with
    /// [`Watch::Launch`]); `on_launch` is called with each init process's PID and when it
    /// was renamed (CLOCK_MONOTONIC ns), from the watch thread.
    pub(crate) fn start(
        mut ebpf: Ebpf,
        on_launch: impl Fn(u32, u64) + Send + 'static,
    ) -> Result<Self, LaunchError> {
        let ring = attach_tracepoint(
            &mut ebpf,
            "task_rename",
            ("task", "task_rename"),
            "launches",
        )?;
        let thread = Worker::spawn("sonde-launch", move |stop| {
            watch(ebpf, ring, stop, on_launch)
        })
        .map_err(LaunchError::Thread)?;
        Ok(LaunchWatch { _thread: thread })
    }
}

/// Owns the program (so it stays attached) and reads reports until told to stop.
fn watch(_ebpf: Ebpf, mut ring: RingBuf<MapData>, stop: Stop, on_launch: impl Fn(u32, u64)) {
    let poll_ms = Duration::from_millis(200).as_millis() as i32;
    while !stop.requested() {
        let mut pfd = libc::pollfd {
            fd: ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let _ = unsafe { libc::poll(&mut pfd, 1, poll_ms) };
        while let Some(item) = ring.next() {
            if let Some(e) = LaunchEvent::from_bytes(&item) {
                on_launch(e.pid, e.ktime_ns);
            }
        }
    }
}

/// Every program execution on the host (`sched/sched_process_exec`), for arming the files
/// `executable_name` selects once they have been seen running; detached on drop.
pub(crate) struct ExecWatch {
    _thread: Worker,
}

impl ExecWatch {
    /// Verifies and attaches the program of `ebpf` (from [`load_object`] with
    /// [`Watch::Exec`]); `on_exec` is called, from the watch thread, with each execution's
    /// PID and the path given to exec, within `EXEC_DRAIN` of it.
    pub(crate) fn start(
        mut ebpf: Ebpf,
        mut on_exec: impl FnMut(u32, std::path::PathBuf) + Send + 'static,
    ) -> Result<Self, LaunchError> {
        let mut ring = attach_tracepoint(
            &mut ebpf,
            "process_exec",
            ("sched", "sched_process_exec"),
            "execs",
        )?;
        let thread = Worker::spawn("sonde-execs", move |stop| {
            let _ebpf = ebpf;
            // Reports do not wake user space (one per exec on a busy host): drain on a
            // timer.
            while !stop.requested() {
                std::thread::sleep(EXEC_DRAIN);
                while let Some(item) = ring.next() {
                    if let Some(e) = crate::ebpf_abi::ExecEvent::from_bytes(&item) {
                        on_exec(e.pid, e.path());
                    }
                }
            }
        })
        .map_err(LaunchError::Thread)?;
        Ok(ExecWatch { _thread: thread })
    }
}

/// How often executions are read.
const EXEC_DRAIN: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_field_offsets_of_both_layouts() {
        let with_pid = "name: task_rename\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:char oldcomm[16];\toffset:12;\tsize:16;\tsigned:0;\n\tfield:char newcomm[16];\toffset:28;\tsize:16;\tsigned:0;\n";
        assert_eq!(field_offset(with_pid, "newcomm"), Some(28));
        assert_eq!(field_offset(with_pid, "pid"), Some(8));
        assert_eq!(field_offset(with_pid, "comm"), None);
        let without_pid = "\tfield:char oldcomm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:char newcomm[16];\toffset:24;\tsize:16;\tsigned:0;\n";
        assert_eq!(field_offset(without_pid, "newcomm"), Some(24));
        assert_eq!(field_offset(without_pid, "pid"), None);
    }

    /// The offsets are written with `must_exist` off (see [`load_object`]): a renamed global
    /// would silently stay 0, so its presence is checked here.
    #[test]
    fn launch_object_has_both_offsets() {
        use object::{Object as _, ObjectSymbol as _};
        let obj = object::File::parse(LAUNCH_BPF).expect("launch.bpf.o parses");
        for global in ["NEWCOMM_OFFSET", "FILENAME_OFFSET"] {
            assert!(
                obj.symbols().any(|s| s.name() == Ok(global)),
                "launch.bpf.o has no {global}"
            );
        }
    }

    #[test]
    fn reads_the_exec_filename_field() {
        let format = "name: sched_process_exec\nformat:\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(format, "filename"), Some(8));
        assert_eq!(field_offset(format, "pid"), Some(12));
    }
}
