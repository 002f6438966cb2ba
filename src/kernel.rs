//! What this kernel and these privileges allow: detected, never assumed.

use std::fmt::Write as _;
use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub(crate) enum KernelError {
    #[error("cannot mount tracefs at {path}: {source}")]
    MountTracefs {
        path: &'static str,
        source: std::io::Error,
    },
}

pub(crate) const TRACEFS: &str = "/sys/kernel/tracing";

/// Capabilities sonde cares about, with their bit numbers from linux/capability.h.
const CAPS: &[(&str, u32, &str)] = &[
    (
        "CAP_SYS_ADMIN",
        21,
        "load BPF on kernels without CAP_BPF; mount tracefs",
    ),
    ("CAP_BPF", 39, "load BPF programs and maps"),
    ("CAP_PERFMON", 38, "attach uprobes (perf events)"),
    (
        "CAP_SYS_PTRACE",
        19,
        "read /proc/<pid>/exe and environ of other users' processes",
    ),
    (
        "CAP_DAC_READ_SEARCH",
        2,
        "read target binaries and /proc regardless of permissions",
    ),
    (
        "CAP_SYS_RESOURCE",
        24,
        "raise RLIMIT_MEMLOCK on kernels that charge BPF maps to it",
    ),
];

/// One line of `sonde check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Feature {
    pub name: &'static str,
    pub available: bool,
    pub detail: String,
}

/// Kernel release, e.g. (6, 18, 44).
pub(crate) fn kernel_version() -> Option<(u32, u32, u32)> {
    parse_release(&crate::discover::proc::kernel_setting("osrelease")?)
}

fn parse_release(release: &str) -> Option<(u32, u32, u32)> {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

fn tracefs_mounted() -> bool {
    crate::discover::proc::own_mounts_have("tracefs")
}

/// Mounts tracefs when it is not mounted yet; tracepoints need it.
pub(crate) fn ensure_tracefs() -> Result<bool, KernelError> {
    if tracefs_mounted() {
        return Ok(false);
    }
    let target = std::ffi::CString::new(TRACEFS).expect("no NUL in a constant");
    let fstype = std::ffi::CString::new("tracefs").expect("no NUL in a constant");
    // SAFETY: valid NUL-terminated strings; a null data pointer is allowed by mount(2).
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(KernelError::MountTracefs {
            path: TRACEFS,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(true)
}

fn effective_caps() -> Option<u64> {
    crate::discover::proc::own_cap_eff()
}

/// Everything `sonde check` reports, in order.
/// `kprobe_functions`: the kernel functions the syscall tracer would probe (the attach layer
/// knows them; this module only asks the kernel).
pub(crate) fn detect(kprobe_functions: &[&str]) -> Vec<Feature> {
    let mut out = Vec::new();
    let version = kernel_version();
    let release = crate::discover::proc::kernel_setting("osrelease").unwrap_or_default();
    out.push(Feature {
        name: "kernel",
        available: true,
        detail: release,
    });
    let at_least = |maj: u32, min: u32| version.is_some_and(|(a, b, _)| (a, b) >= (maj, min));
    out.push(Feature {
        name: "btf",
        available: Path::new("/sys/kernel/btf/vmlinux").exists(),
        detail: "/sys/kernel/btf/vmlinux".into(),
    });
    out.push(Feature {
        name: "uprobes",
        available: Path::new("/sys/bus/event_source/devices/uprobe").exists(),
        detail: "perf PMU 'uprobe' (required: Go probes)".into(),
    });
    out.push(Feature {
        name: "ring buffer",
        available: at_least(5, 8),
        detail: "BPF_MAP_TYPE_RINGBUF needs kernel >= 5.8 (required)".into(),
    });
    let kprobes = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    out.push(Feature {
        name: "kprobes",
        available: kprobes,
        detail: if kprobes {
            "perf PMU 'kprobe'".into()
        } else {
            "absent (CONFIG_KPROBES off?): syscall tracing will use tracepoints".into()
        },
    });
    let mounted = tracefs_mounted();
    out.push(Feature {
        name: "tracefs",
        available: mounted,
        detail: if mounted {
            format!("mounted at {TRACEFS}")
        } else {
            "not mounted (sonde mounts it when it needs tracepoints)".into()
        },
    });
    out.push(syscall_source(kprobe_functions));
    let paranoid = crate::discover::proc::kernel_setting("perf_event_paranoid").unwrap_or_default();
    out.push(Feature {
        name: "perf_event_paranoid",
        available: true,
        detail: paranoid,
    });
    let stats = crate::discover::proc::kernel_setting("bpf_stats_enabled").unwrap_or_default();
    out.push(Feature {
        name: "bpf_stats_enabled",
        available: stats == "1",
        detail: format!("{stats} (program run time is measured only when 1)"),
    });
    let caps = effective_caps().unwrap_or(0);
    for &(name, bit, why) in CAPS {
        out.push(Feature {
            name,
            available: caps & (1u64 << bit) != 0,
            detail: why.to_string(),
        });
    }
    out
}

/// Whether tracefs lists the tracepoint `category/name`.
pub(crate) fn tracepoint_exists(category: &str, name: &str) -> bool {
    Path::new(TRACEFS)
        .join("events")
        .join(category)
        .join(name)
        .join("id")
        .exists()
}

/// Whether kprobes can be put on every one of `functions`; if not, why. Asks the kernel (the
/// kprobe PMU or tracefs's kprobe_events, and the functions it lists as traceable), never
/// assumes from the version.
pub(crate) fn kprobes_usable(functions: &[&str]) -> Result<(), String> {
    let pmu = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    if !pmu && !Path::new(TRACEFS).join("kprobe_events").exists() {
        return Err("absent (CONFIG_KPROBES off)".into());
    }
    // available_filter_functions: what ftrace (and so an ftrace-based kprobe) can hook; without
    // the function tracer, kallsyms says at least that the symbol exists.
    let listed: std::collections::HashSet<String> =
        match std::fs::read_to_string(Path::new(TRACEFS).join("available_filter_functions")) {
            Ok(text) => text
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect(),
            Err(_) => crate::discover::proc::kallsyms()
                .map_err(|e| format!("cannot read {e}"))?
                .lines()
                .filter_map(|l| l.split_whitespace().nth(2))
                .map(str::to_string)
                .collect(),
        };
    match functions.iter().find(|f| !listed.contains(**f)) {
        Some(f) => Err(format!("present, but {f} cannot be probed")),
        None => Ok(()),
    }
}

/// What this kernel offers the syscall tracer (non-Go processes), and which source
/// `syscall_source: auto` picks; the tracer's own line in `sonde check` says what it chose.
pub(crate) fn syscall_source(kprobe_functions: &[&str]) -> Feature {
    let kprobes = kprobes_usable(kprobe_functions);
    let events = Path::new(TRACEFS).join("events/syscalls");
    let (tracepoints, state) = if !tracefs_mounted() {
        (true, "tracefs is mounted at start")
    } else if events.exists() {
        (true, "syscalls/sys_enter_*, sys_exit_*")
    } else {
        (false, "no syscalls/ events (CONFIG_FTRACE_SYSCALLS off)")
    };
    let available = kprobes.is_ok() || tracepoints;
    let detail = match kprobes {
        Ok(()) => format!(
            "kprobes on the syscall wrappers (__x64_sys_read, …): only those syscalls pay; \
             fallback: tracepoints ({})",
            if tracepoints { state } else { "none" }
        ),
        Err(why) => format!("tracepoints ({state}); kprobes: {why}"),
    };
    Feature {
        name: "syscall source",
        available,
        detail,
    }
}

/// Whether sonde can run its Go probes here, and if not, why.
pub(crate) fn can_run_go_probes(features: &[Feature]) -> Result<(), String> {
    let has = |n: &str| features.iter().any(|f| f.name == n && f.available);
    if !has("uprobes") {
        return Err("this kernel has no uprobe support".into());
    }
    if !has("ring buffer") {
        return Err("this kernel is older than 5.8 (no BPF ring buffer)".into());
    }
    let privileged = has("CAP_SYS_ADMIN") || (has("CAP_BPF") && has("CAP_PERFMON"));
    if !privileged {
        return Err("missing privileges: run as root or with CAP_BPF and CAP_PERFMON".into());
    }
    Ok(())
}

pub(crate) fn render(features: &[Feature]) -> String {
    let mut s = String::new();
    for f in features {
        let mark = if f.available { "yes" } else { "no " };
        let _ = writeln!(s, "{:<22} {mark}  {}", f.name, f.detail);
    }
    s
}

/// Lifts RLIMIT_MEMLOCK; kernels before 5.11 charge BPF maps to it. Best effort.
pub(crate) fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct is passed by pointer.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    if rc != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18, 44)));
        assert_eq!(parse_release("5.10"), Some((5, 10, 0)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn go_probes_need_uprobes() {
        let f = vec![Feature {
            name: "uprobes",
            available: false,
            detail: String::new(),
        }];
        assert!(can_run_go_probes(&f).unwrap_err().contains("uprobe"));
    }
}
