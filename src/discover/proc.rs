//! The one place sonde reads `/proc`, on top of the `procfs` crate.
//!
//! A process is read through [`Proc`], which holds a descriptor of its `/proc/<pid>`
//! directory (procfs's `Process` opens it once) and reads every file relative to it: when the
//! process exits and its PID is reused, the old descriptor keeps failing (`ESRCH`) instead of
//! reading the new process, so one `Proc` never mixes two processes.
//!
//! Paths through magic links (`/proc/<pid>/exe`, `/proc/<pid>/root/…`) are also built here:
//! the kernel resolves them across mount namespaces, which is why inspection and attachment
//! open a target's binary by them rather than by the path the link shows.
//!
//! Kernel-wide files (`/proc/sys/kernel/…`, `/proc/self/mounts`, `/proc/kallsyms`) are plain
//! reads: procfs parses nothing there that sonde needs.
//!
//! This module imports nothing of sonde, so every layer may use it.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use procfs::process::{FDTarget, MMapPath, Process};

/// The mount point of procfs as sonde sees it.
const PROC: &str = "/proc";

/// An environment larger than this is cut: a hostile one must not cost the agent memory.
pub(crate) const ENVIRON_LIMIT: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ProcError {
    /// The process is gone (or was never there), or its file cannot be read or parsed.
    #[error("/proc/{pid}: {source}")]
    Process {
        pid: u32,
        #[source]
        source: procfs::ProcError,
    },
    #[error("{path}: unexpected contents")]
    Parse { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What sonde uses of `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The command name (`comm`, at most 15 bytes; runc's bootstrap renames itself).
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    /// Clock ticks since boot at which the process started: tells a reused PID apart.
    pub start_time: u64,
}

/// The fields sonde uses of a `/proc/<pid>/stat` text. A process chooses its own command
/// name, spaces and parentheses included: fields resume after the *last* `)`. (Fuzzed.)
pub fn parse_stat(text: &[u8]) -> Option<Stat> {
    let text = std::str::from_utf8(text).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields 3 (state), 4 (ppid) … 22 (start time), counted from 1 with the pid and comm.
    let mut rest = text[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let start_time = rest.nth(17)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        start_time,
    })
}

/// Adds the LISTEN sockets of a `/proc/net/tcp{,6}` text to `map` (inode → local port), by
/// the parser [`Proc::listening_sockets`] uses.
pub fn parse_listening(text: &[u8], map: &mut HashMap<u64, u16>) {
    use procfs::FromReadSI;
    if let Ok(t) = procfs::net::TcpNetEntries::from_read(text, procfs::current_system_info()) {
        add_listening(t.0, map);
    }
}

fn add_listening(
    entries: impl IntoIterator<Item = procfs::net::TcpNetEntry>,
    map: &mut HashMap<u64, u16>,
) {
    for e in entries {
        if e.state == procfs::net::TcpState::Listen {
            map.insert(e.inode, e.local_address.port());
        }
    }
}

/// One process, read through its `/proc/<pid>` directory descriptor.
#[derive(Debug)]
pub(crate) struct Proc {
    inner: Process,
    pid: u32,
}

impl Proc {
    /// Opens `/proc/<pid>`; fails when no such process exists.
    pub(crate) fn open(pid: u32) -> Result<Proc, ProcError> {
        let inner = i32::try_from(pid)
            .map_err(|_| procfs::ProcError::NotFound(None))
            .and_then(Process::new)
            .map_err(|source| ProcError::Process { pid, source })?;
        Ok(Proc { inner, pid })
    }

    /// This process (`/proc/self`).
    pub(crate) fn myself() -> Result<Proc, ProcError> {
        let pid = std::process::id();
        let inner = Process::myself().map_err(|source| ProcError::Process { pid, source })?;
        Ok(Proc { inner, pid })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    fn err(&self) -> impl Fn(procfs::ProcError) -> ProcError + '_ {
        |source| ProcError::Process {
            pid: self.pid,
            source,
        }
    }

    /// The target of `/proc/<pid>/exe`: the executable's path in the process's own mount
    /// namespace. Kernel threads have none.
    pub(crate) fn exe(&self) -> Result<PathBuf, ProcError> {
        self.inner.exe().map_err(self.err())
    }

    /// The target of `/proc/<pid>/cwd`.
    pub(crate) fn cwd(&self) -> Result<PathBuf, ProcError> {
        self.inner.cwd().map_err(self.err())
    }

    /// `/proc/<pid>/stat`, by a parser of the four fields sonde uses. Not procfs's `stat()`:
    /// it parses all 52 fields through an 8 KiB buffer, and with its `cgroups()` the idle
    /// 250 ms scan (which reads both for every process) cost 1.73-1.97 % of a core against
    /// 1.67-1.77 % by hand (BENCHMARKS.md, issue 16 item 4).
    pub(crate) fn stat(&self) -> Result<Stat, ProcError> {
        let text = self.read_small("stat")?;
        parse_stat(text.as_bytes()).ok_or_else(|| ProcError::Parse {
            path: self.path("stat"),
        })
    }

    /// A small file of the process's directory, whole.
    fn read_small(&self, file: &str) -> Result<String, ProcError> {
        let mut f = self.inner.open_relative(file).map_err(self.err())?;
        let mut text = String::with_capacity(1024);
        f.read_to_string(&mut text)
            .map_err(|source| ProcError::Io {
                path: self.path(file),
                source,
            })?;
        Ok(text)
    }

    fn path(&self, file: &str) -> PathBuf {
        Path::new(PROC).join(self.pid.to_string()).join(file)
    }

    /// The effective capability mask (`CapEff` of `/proc/<pid>/status`).
    pub(crate) fn cap_eff(&self) -> Result<u64, ProcError> {
        Ok(self.inner.status().map_err(self.err())?.capeff)
    }

    /// Resident memory in KiB (`VmRSS` of `/proc/<pid>/status`; none for kernel threads).
    #[cfg(test)]
    pub(crate) fn rss_kib(&self) -> Result<Option<u64>, ProcError> {
        Ok(self.inner.status().map_err(self.err())?.vmrss)
    }

    /// The text of `/proc/<pid>/cgroup` (`hierarchy:controllers:path` lines). Read whole,
    /// not through procfs's `cgroups()`, which makes strings of every controller of every line
    /// for each process of each scan: see [`Proc::stat`] for the figure.
    pub(crate) fn cgroup(&self) -> Result<String, ProcError> {
        self.read_small("cgroup")
    }

    /// The inode of the process's network namespace: processes that share it share one TCP
    /// table.
    pub(crate) fn net_namespace(&self) -> Result<u64, ProcError> {
        self.namespace("ns/net")
    }

    /// The inode of the process's mount namespace.
    pub(crate) fn mount_namespace(&self) -> Result<u64, ProcError> {
        self.namespace("ns/mnt")
    }

    /// One namespace's inode, by opening its `ns/<kind>` file. procfs's `namespaces()` stats
    /// every kind (about ten files); sonde asks for one at a time.
    fn namespace(&self, file: &str) -> Result<u64, ProcError> {
        use std::os::unix::fs::MetadataExt;
        let f = self.inner.open_relative(file).map_err(self.err())?;
        let meta = f.metadata().map_err(|source| ProcError::Io {
            path: Path::new(PROC).join(self.pid.to_string()).join(file),
            source,
        })?;
        Ok(meta.ino())
    }

    /// Inodes of the process's sockets (from the targets of `/proc/<pid>/fd/*`).
    pub(crate) fn socket_inodes(&self) -> Result<HashSet<u64>, ProcError> {
        let fds = self.inner.fd().map_err(self.err())?;
        // A descriptor closed mid-walk is skipped, not an error.
        Ok(fds
            .flatten()
            .filter_map(|fd| match fd.target {
                FDTarget::Socket(inode) => Some(inode),
                _ => None,
            })
            .collect())
    }

    /// LISTEN TCP sockets (IPv4 and IPv6) of the process's network namespace: inode → local
    /// port. `/proc/net/tcp` would be sonde's own namespace; a container's is read through
    /// one of its processes.
    pub(crate) fn listening_sockets(&self) -> HashMap<u64, u16> {
        let mut map = HashMap::new();
        for table in [self.inner.tcp(), self.inner.tcp6()] {
            // One table may be absent (IPv6 disabled): the other still counts.
            add_listening(table.into_iter().flatten(), &mut map);
        }
        map
    }

    /// The raw bytes of `/proc/<pid>/environ` (`KEY=value` separated by NUL), at most
    /// [`ENVIRON_LIMIT`]. procfs's `environ()` reads it whole into a map; this stays bounded.
    pub(crate) fn environ_bytes(&self) -> Result<Vec<u8>, ProcError> {
        let f = self.inner.open_relative("environ").map_err(self.err())?;
        let mut buf = Vec::new();
        f.take(ENVIRON_LIMIT)
            .read_to_end(&mut buf)
            .map_err(|source| ProcError::Io {
                path: Path::new(PROC).join(self.pid.to_string()).join("environ"),
                source,
            })?;
        Ok(buf)
    }

    /// The files mapped into the process (`/proc/<pid>/maps`), as the process names them,
    /// in address order, each once.
    pub(crate) fn mapped_files(&self) -> Result<Vec<PathBuf>, ProcError> {
        let maps = self.inner.maps().map_err(self.err())?;
        let mut seen = HashSet::new();
        Ok(maps
            .into_iter()
            .filter_map(|m| match m.pathname {
                MMapPath::Path(p) => Some(p),
                _ => None,
            })
            .filter(|p| seen.insert(p.clone()))
            .collect())
    }
}

/// Every PID in `/proc`, each opened, in directory order. Processes that exit meanwhile are
/// left out.
pub(crate) fn all() -> impl Iterator<Item = Proc> {
    procfs::process::all_processes()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|inner| {
            let pid = u32::try_from(inner.pid).ok()?;
            Some(Proc { inner, pid })
        })
}

/// Whether a process with this PID exists (a zombie counts).
pub(crate) fn exists(pid: u32) -> bool {
    Path::new(PROC).join(pid.to_string()).exists()
}

/// `/proc/<pid>/exe`, the magic link: opening it opens the process's executable across mount
/// namespaces (and keeps naming the file the process runs even if its path was replaced).
pub(crate) fn exe_path(pid: u32) -> PathBuf {
    Path::new(PROC).join(pid.to_string()).join("exe")
}

/// `/proc/<pid>/cwd`, the magic link to the process's working directory.
pub(crate) fn cwd_path(pid: u32) -> PathBuf {
    Path::new(PROC).join(pid.to_string()).join("cwd")
}

/// `path` of the process's own file system, through `/proc/<pid>/root` (a container's
/// files, from the host).
pub(crate) fn in_root_of(pid: u32, path: &Path) -> PathBuf {
    let root = Path::new(PROC).join(pid.to_string()).join("root");
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// The effective capabilities of this process.
pub(crate) fn own_cap_eff() -> Option<u64> {
    Proc::myself().ok()?.cap_eff().ok()
}

/// This process's resident memory in KiB (0 when unknown).
#[cfg(test)]
pub(crate) fn own_rss_kib() -> u64 {
    Proc::myself()
        .ok()
        .and_then(|p| p.rss_kib().ok().flatten())
        .unwrap_or(0)
}

/// Whether a file system of this type is mounted in this process's mount namespace.
pub(crate) fn own_mounts_have(fs_type: &str) -> bool {
    // A plain read: procfs's mountinfo parses far more than one column.
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some(fs_type))
        })
        .unwrap_or(false)
}

/// A kernel setting, `/proc/sys/kernel/<name>`, trimmed (e.g. `osrelease`, `hostname`).
pub(crate) fn kernel_setting(name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys/kernel").join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The text of `/proc/kallsyms`.
pub(crate) fn kallsyms() -> Result<String, ProcError> {
    let path = PathBuf::from("/proc/kallsyms");
    std::fs::read_to_string(&path).map_err(|source| ProcError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap()
    }

    #[test]
    fn reads_this_process() {
        let me = Proc::myself().unwrap();
        assert_eq!(me.pid(), std::process::id());
        assert_eq!(me.exe().unwrap(), std::env::current_exe().unwrap());
        let stat = me.stat().unwrap();
        assert!(stat.start_time > 0);
        assert_eq!(stat.ppid, std::os::unix::process::parent_id());
        // The state of the main thread, which may be waiting for the test threads.
        assert!("RSD".contains(stat.state), "{}", stat.state);
        assert_eq!(me.cwd().unwrap(), std::env::current_dir().unwrap());
        assert!(me.cgroup().unwrap().lines().all(|l| l.contains(":/")));
        assert!(me.net_namespace().unwrap() > 0);
        assert_eq!(
            me.mount_namespace().unwrap(),
            Proc::open(std::process::id())
                .unwrap()
                .mount_namespace()
                .unwrap()
        );
        assert!(own_rss_kib() > 0);
        assert!(own_cap_eff().is_some());
        assert!(me
            .mapped_files()
            .unwrap()
            .contains(&std::env::current_exe().unwrap()));
    }

    #[test]
    fn finds_our_listening_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = Proc::myself().unwrap();
        let inodes = me.socket_inodes().unwrap();
        let listening = me.listening_sockets();
        assert!(
            inodes.iter().any(|i| listening.get(i) == Some(&port)),
            "port {port} not among {listening:?}"
        );
    }

    #[test]
    fn reads_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("SONDE_PROC_TEST", "yes")
            .spawn()
            .unwrap();
        let p = Proc::open(child.id()).unwrap();
        let sleep = p.exe().unwrap();
        assert_eq!(sleep.file_name().unwrap(), "sleep");
        let stat = p.stat().unwrap();
        assert_eq!(stat.ppid, std::process::id());
        assert!(
            stat.start_time >= Proc::myself().unwrap().stat().unwrap().start_time,
            "a child starts after its parent"
        );
        // The parent resumes when the child's exec releases the old memory, before the
        // kernel has recorded where the new environment is: until then environ reads empty.
        let mut env = p.environ_bytes().unwrap();
        for _ in 0..100 {
            if !env.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            env = p.environ_bytes().unwrap();
        }
        assert!(
            env.split(|&b| b == 0).any(|v| v == b"SONDE_PROC_TEST=yes"),
            "{}",
            String::from_utf8_lossy(&env)
        );
        assert!(exists(child.id()));
        assert_eq!(exe_path(child.id()).canonicalize().unwrap(), sleep);
        let _ = child.kill();
        let _ = child.wait();
        assert!(!exists(child.id()));
        assert!(Proc::open(child.id()).is_err());
    }

    /// A `Proc` opened before its process exits never reads the process that gets the PID
    /// next. Reusing one exact PID cannot be forced without a PID namespace of our own, so
    /// the test checks the mechanism that guarantees it: after the exit the descriptor reads
    /// nothing, while the path-based read of a live PID would.
    #[test]
    fn a_gone_process_reads_nothing() {
        let mut child = sleeper();
        let p = Proc::open(child.id()).unwrap();
        assert!(p.stat().is_ok());
        let _ = child.kill();
        let _ = child.wait();
        assert!(p.stat().is_err(), "read a reaped process's stat");
        assert!(p.exe().is_err(), "read a reaped process's exe");
        assert!(p.cgroup().is_err());
    }

    #[test]
    fn parses_listen_lines_only() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n\
   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0 100 0 0 10 0\n";
        let mut m = HashMap::new();
        parse_listening(text.as_bytes(), &mut m);
        assert_eq!(m.get(&12345), Some(&8080));
        assert_eq!(m.get(&999), None);
        // Garbage adds nothing and does not panic.
        parse_listening(b"garbage\n0: zz", &mut m);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn command_names_with_spaces_and_parentheses() {
        let stat = "42 (runc:[2:INIT]) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0 \
                    0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse_stat(stat.as_bytes()).unwrap();
        assert_eq!(s.comm, "runc:[2:INIT]");
        assert_eq!(s.start_time, 777);
        assert_eq!(s.ppid, 1);
        assert_eq!(s.state, 'S');
        let odd = stat.replace("(runc:[2:INIT])", "(a (b) c)");
        assert_eq!(parse_stat(odd.as_bytes()).unwrap().comm, "a (b) c");
        assert_eq!(parse_stat(b"garbage"), None);
        assert_eq!(parse_stat(b"7 (a) R"), None);
        // The same answer as procfs's full parser.
        let full = Proc::myself().unwrap().inner.stat().unwrap();
        let mine = Proc::myself().unwrap().stat().unwrap();
        assert_eq!((mine.comm, mine.ppid), (full.comm, full.ppid as u32));
        assert_eq!(mine.start_time, full.starttime);
    }

    #[test]
    fn paths_through_magic_links() {
        assert_eq!(exe_path(42), Path::new("/proc/42/exe"));
        assert_eq!(cwd_path(42), Path::new("/proc/42/cwd"));
        assert_eq!(
            in_root_of(42, Path::new("/usr/lib/libssl.so.3")),
            Path::new("/proc/42/root/usr/lib/libssl.so.3")
        );
    }

    #[test]
    fn kernel_wide_files() {
        assert!(kernel_setting("osrelease").is_some_and(|r| !r.is_empty()));
        assert!(own_mounts_have("proc"));
        assert!(!own_mounts_have("no-such-fs"));
        assert!(all().any(|p| p.pid() == std::process::id()));
    }
}
