//! Kretprobes made in tracefs's `kprobe_events`, for the syscall tracer's kprobe source: the
//! perf PMU (aya's `KProbe::attach`) cannot set how many calls a kretprobe follows at once.

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
pub(super) fn remove_stale_kretprobes() {
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
pub(super) struct TracefsKretprobe {
    /// `group/name`.
    event: String,
    perf: Option<std::os::fd::OwnedFd>,
}

impl TracefsKretprobe {
    pub(super) fn attach(
        function: &str,
        program: std::os::fd::BorrowedFd<'_>,
    ) -> std::io::Result<Self> {
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
