//! Host processes, from /proc (read through [`proc`]): executable, listening TCP ports, start
//! time, container.

pub(crate) mod bundle;
pub(crate) mod cgroup;
pub(crate) mod docker;
pub(crate) mod proc;
pub(crate) mod runtime;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// A process on this host as discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostProcess {
    pub pid: u32,
    /// Target of /proc/<pid>/exe.
    pub exe: PathBuf,
    /// Clock ticks since boot (field 22 of /proc/<pid>/stat): tells a reused PID apart.
    pub start_time: u64,
    pub listen_ports: Vec<u16>,
    /// The Docker container the process runs in, from its cgroup.
    pub container_id: Option<String>,
}

/// Every user-space process except sonde itself. Processes that vanish mid-scan are skipped.
pub(crate) fn scan() -> Vec<HostProcess> {
    scan_with(false)
}

/// The same without listening ports (`listen_ports` left empty), for when no rule uses them:
/// reading /proc/<pid>/net/tcp walks the kernel's whole TCP hash table, which made the
/// 250 ms scan cost ~10 % of a core on an idle host (bench/NOTES.md).
pub(crate) fn scan_without_ports() -> Vec<HostProcess> {
    scan_processes(false, false)
}

pub(crate) fn scan_with(include_self: bool) -> Vec<HostProcess> {
    scan_processes(include_self, true)
}

fn scan_processes(include_self: bool, ports: bool) -> Vec<HostProcess> {
    let me = std::process::id();
    // LISTEN sockets (inode → port), read once per network namespace, not once per process.
    let mut listening_by_netns: HashMap<u64, HashMap<u64, u16>> = HashMap::new();
    let mut out = Vec::new();
    // Each process is read through its own /proc/<pid> descriptor: a PID reused mid-scan
    // fails the reads instead of mixing two processes' files.
    for process in proc::all() {
        let pid = process.pid();
        if pid == me && !include_self {
            continue;
        }
        // Kernel threads have no exe.
        let Ok(exe) = process.exe() else {
            continue;
        };
        let Ok(stat) = process.stat() else {
            continue;
        };
        // runc's own processes (`runc:[0:PARENT]`, `[1:CHILD]`, `[2:INIT]`) sit in a starting
        // container's cgroup, so container rules match them; they run runc, not the
        // container's program, and inspecting runc costs megabytes for a "no HTTP server"
        // verdict. The init is adopted at its launch (agent/launch.rs) or found once it has exec'd.
        if is_runtime_bootstrap(&stat.comm) {
            continue;
        }
        let inodes = if ports {
            process.socket_inodes().unwrap_or_default()
        } else {
            HashSet::new()
        };
        let mut listen_ports = Vec::new();
        if !inodes.is_empty() {
            if let Ok(netns) = process.net_namespace() {
                let listening = listening_by_netns
                    .entry(netns)
                    .or_insert_with(|| process.listening_sockets());
                let mut ports: Vec<u16> = inodes
                    .iter()
                    .filter_map(|i| listening.get(i).copied())
                    .collect();
                ports.sort_unstable();
                ports.dedup();
                listen_ports = ports;
            }
        }
        out.push(HostProcess {
            pid,
            exe,
            start_time: stat.start_time,
            listen_ports,
            container_id: cgroup::container_id_in(&process),
        });
    }
    out
}

pub(crate) fn start_time(pid: u32) -> Option<u64> {
    Some(proc::Proc::open(pid).ok()?.stat().ok()?.start_time)
}

/// A container runtime's process, before the container's program runs.
pub(crate) fn is_runtime_bootstrap(comm: &str) -> bool {
    comm.starts_with("runc:[")
}

/// `OTEL_SERVICE_NAME` / `OTEL_SERVICE_NAMESPACE` from the process's environment.
pub(crate) fn otel_env(pid: u32) -> (Option<String>, Option<String>) {
    let buf = proc::Proc::open(pid)
        .and_then(|p| p.environ_bytes())
        .unwrap_or_default();
    parse_otel_env(&buf)
}

/// `OTEL_SERVICE_NAME` / `OTEL_SERVICE_NAMESPACE` from the bytes of `/proc/<pid>/environ`.
pub fn parse_otel_env(buf: &[u8]) -> (Option<String>, Option<String>) {
    let mut name = None;
    let mut namespace = None;
    for var in buf.split(|&b| b == 0) {
        let var = String::from_utf8_lossy(var);
        if let Some(v) = var.strip_prefix("OTEL_SERVICE_NAME=") {
            name = Some(v.to_string()).filter(|s| !s.is_empty());
        } else if let Some(v) = var.strip_prefix("OTEL_SERVICE_NAMESPACE=") {
            namespace = Some(v.to_string()).filter(|s| !s.is_empty());
        }
    }
    (name, namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_bootstrap_names() {
        assert!(is_runtime_bootstrap("runc:[1:CHILD]"));
        assert!(!is_runtime_bootstrap("runc"));
        assert!(!is_runtime_bootstrap("httpserver"));
    }

    #[test]
    fn runtime_bootstrap_processes_are_not_listed() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let listed = || scan_without_ports().iter().any(|p| p.pid == pid);
        assert!(listed(), "sleep {pid} not in the scan");
        // Renaming another process needs ptrace access to it (root, or a lax ptrace scope).
        if std::fs::write(format!("/proc/{pid}/comm"), "runc:[1:CHILD]").is_ok() {
            assert!(!listed(), "runc's bootstrap process {pid} was listed");
            std::fs::write(format!("/proc/{pid}/comm"), "sleep").unwrap();
            assert!(listed());
        } else {
            eprintln!("skipping the rename: cannot write /proc/{pid}/comm");
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn finds_our_own_listening_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::time::Instant::now();
        let procs = scan_with(true);
        eprintln!("scan of {} processes took {:?}", procs.len(), t.elapsed());
        let me = procs
            .iter()
            .find(|p| p.pid == std::process::id())
            .expect("self in scan");
        assert!(me.listen_ports.contains(&port), "{:?}", me.listen_ports);
        assert!(me.start_time > 0);
    }
}
