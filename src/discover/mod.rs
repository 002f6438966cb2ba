//! Host processes, from /proc: executable, listening TCP ports, start time, container.

pub mod bundle;
pub mod cgroup;
pub mod docker;
pub mod runtime;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// A process on this host as discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProcess {
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
pub fn scan() -> Vec<HostProcess> {
    scan_with(false)
}

/// The same without listening ports (`listen_ports` left empty), for when no rule uses them:
/// reading /proc/<pid>/net/tcp walks the kernel's whole TCP hash table, which made the
/// 250 ms scan cost ~10 % of a core on an idle host (bench/NOTES.md).
pub fn scan_without_ports() -> Vec<HostProcess> {
    scan_processes(false, false)
}

pub fn scan_with(include_self: bool) -> Vec<HostProcess> {
    scan_processes(include_self, true)
}

fn scan_processes(include_self: bool, ports: bool) -> Vec<HostProcess> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // LISTEN sockets (inode → port), read once per network namespace, not once per process.
    let mut listening_by_netns: HashMap<u64, HashMap<u64, u16>> = HashMap::new();
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me && !include_self {
            continue;
        }
        // Kernel threads have no exe.
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // runc's own processes (`runc:[0:PARENT]`, `[1:CHILD]`, `[2:INIT]`) sit in a starting
        // container's cgroup, so container rules match them; they run runc, not the
        // container's program, and inspecting runc costs megabytes for a "no HTTP server"
        // verdict. The init is adopted at its launch (agent/launch.rs) or found once it has exec'd.
        if command_name(&stat).is_some_and(is_runtime_bootstrap) {
            continue;
        }
        let Some(start_time) = parse_start_time(&stat) else {
            continue;
        };
        let inodes = if ports {
            socket_inodes(pid)
        } else {
            HashSet::new()
        };
        let mut listen_ports = Vec::new();
        if !inodes.is_empty() {
            if let Some(netns) = netns_inode(pid) {
                let listening = listening_by_netns
                    .entry(netns)
                    .or_insert_with(|| listening_sockets(pid));
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
            start_time,
            listen_ports,
            container_id: cgroup::container_id_of(pid),
        });
    }
    out
}

pub fn start_time(pid: u32) -> Option<u64> {
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 2 (the command name, `comm`) of a `/proc/<pid>/stat` line.
pub fn command_name(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// A container runtime's process, before the container's program runs.
pub fn is_runtime_bootstrap(comm: &str) -> bool {
    comm.starts_with("runc:[")
}

/// Field 22 (start time) of a `/proc/<pid>/stat` line.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn netns_inode(pid: u32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

fn socket_inodes(pid: u32) -> HashSet<u64> {
    let mut set = HashSet::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return set;
    };
    for fd in fds.flatten() {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            if let Some(inode) = target
                .to_str()
                .and_then(|s| s.strip_prefix("socket:["))
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse().ok())
            {
                set.insert(inode);
            }
        }
    }
    set
}

/// LISTEN sockets of the process's network namespace: inode → local port.
fn listening_sockets(pid: u32) -> HashMap<u64, u16> {
    let mut map = HashMap::new();
    for file in ["tcp", "tcp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
            parse_listening(&text, &mut map);
        }
    }
    map
}

/// Parses /proc/net/tcp{,6} lines; state 0A is LISTEN.
pub fn parse_listening(text: &str, map: &mut HashMap<u64, u16>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != "0A" {
            continue;
        }
        let port = f[1]
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        if let (Some(port), Ok(inode)) = (port, f[9].parse::<u64>()) {
            map.insert(inode, port);
        }
    }
}

/// `OTEL_SERVICE_NAME` / `OTEL_SERVICE_NAMESPACE` from the process's environment.
pub fn otel_env(pid: u32) -> (Option<String>, Option<String>) {
    use std::io::Read;
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/environ")) {
        // Bounded: an environment is small, a hostile one must not cost us memory.
        let _ = f.take(256 * 1024).read_to_end(&mut buf);
    }
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
    fn parses_listen_lines_only() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n\
   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0 100 0 0 10 0\n";
        let mut m = HashMap::new();
        parse_listening(text, &mut m);
        assert_eq!(m.get(&12345), Some(&8080));
        assert_eq!(m.get(&999), None);
    }

    #[test]
    fn command_names_with_spaces_and_parentheses() {
        let stat = "42 (runc:[2:INIT]) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0";
        assert_eq!(command_name(stat), Some("runc:[2:INIT]"));
        assert_eq!(parse_start_time(stat), Some(777));
        assert_eq!(command_name("7 (a (b) c) R 1"), Some("a (b) c"));
        assert_eq!(command_name("garbage"), None);
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
