//! A container's init process before its exec, without relying on its runtime's process
//! name: the engine says the container is created (Podman's `init` event, written to its
//! event log before `<runtime> start`), and the runtime's state names the waiting init.
//!
//! Every OCI runtime splits a launch into `create` and `start`: `create` makes the init
//! process in the container's namespaces and cgroup, writes its PID to the pid file the
//! engine asked for (`--pid-file`) and to its own state, and the init then blocks on
//! `exec.fifo` in the state directory until `start` opens it; only then does it exec the
//! program. runc renames that init `runc:[2:INIT]` (which `attach::launch` catches); crun
//! keeps its own name (`crun`) and executable, so only the state tells it apart.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::worker::Worker;

/// runc's init before its exec of the container's program.
pub(crate) const RUNC_INIT_COMM: &str = "runc:[2:INIT]";

#[derive(Debug, thiserror::Error)]
pub(crate) enum RuntimeError {
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runtimes' state directories (rootful): `<root>/<id>/` holds crun's `status` and runc's
/// `state.json`; Docker's runc keeps its under `/run/docker/runtime-runc/moby`.
const STATE_ROOTS: &[&str] = &[
    "/run/crun",
    "/run/runc",
    "/run/docker/runtime-runc/moby",
    "/run/containerd/runc/moby",
];

/// A state or pid file is tiny; a hostile one must not cost memory.
const MAX_STATE_BYTES: u64 = 64 << 10;

#[derive(Deserialize)]
struct CrunStatus {
    pid: Option<u32>,
}

#[derive(Deserialize)]
struct RuncState {
    init_process_pid: Option<u32>,
}

/// A pid file's PID: decimal, with or without a trailing newline (conmon and crun write none).
pub(crate) fn parse_pidfile(text: &str) -> Option<u32> {
    text.trim().parse().ok().filter(|&p| p > 0)
}

/// The init PID in a runtime's state file: crun's `status` (`"pid"`) or runc's `state.json`
/// (`"init_process_pid"`).
pub(crate) fn pid_from_state(json: &[u8]) -> Option<u32> {
    if let Ok(s) = serde_json::from_slice::<CrunStatus>(json) {
        if let Some(pid) = s.pid.filter(|&p| p > 0) {
            return Some(pid);
        }
    }
    serde_json::from_slice::<RuncState>(json)
        .ok()?
        .init_process_pid
        .filter(|&p| p > 0)
}

fn read_small(path: &Path) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_STATE_BYTES)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

/// The PID of a created container's init, from the pid file in its bundle (Podman's
/// `userdata/pidfile`, containerd's `init.pid`) or its runtime's state under `roots`.
pub(crate) fn init_pid(container_id: &str, bundles: &[PathBuf], roots: &[PathBuf]) -> Option<u32> {
    let from_bundle = bundles.iter().find_map(|b| {
        ["pidfile", "init.pid"].iter().find_map(|f| {
            let text = read_small(&b.join(f))?;
            parse_pidfile(std::str::from_utf8(&text).ok()?)
        })
    });
    from_bundle.or_else(|| {
        roots.iter().find_map(|r| {
            let dir = r.join(container_id);
            ["status", "state.json"]
                .iter()
                .find_map(|f| pid_from_state(&read_small(&dir.join(f))?))
        })
    })
}

/// [`init_pid`] on this host's well-known places.
pub(crate) fn init_pid_on_host(container_id: &str) -> Option<u32> {
    let bundles: Vec<PathBuf> = super::bundle::bundle_candidates(container_id)
        .into_iter()
        .map(super::bundle::on_host)
        .collect();
    let roots: Vec<PathBuf> = STATE_ROOTS.iter().map(super::bundle::on_host).collect();
    init_pid(container_id, &bundles, &roots)
}

/// Whether a container's init still waits in its runtime, before the exec of `program`
/// (the path its `/proc/<pid>/exe` will show): runc's renamed init, or any init whose
/// executable is not the program yet (crun's is crun's own file, or `/memfd:crun`).
pub(crate) fn before_exec(comm: &str, exe: Option<&Path>, program: &Path) -> bool {
    if comm == RUNC_INIT_COMM {
        return true;
    }
    match exe {
        Some(exe) => exe != program,
        // Mid-exec, or gone: not known to wait.
        None => false,
    }
}

/// [`before_exec`] of a live process.
pub(crate) fn waits_before_exec(pid: u32, program: &Path) -> bool {
    // Both from one opened process: a reused PID cannot answer for half of them.
    let process = super::proc::Proc::open(pid).ok();
    let comm = process
        .as_ref()
        .and_then(|p| p.stat().ok())
        .map(|s| s.comm)
        .unwrap_or_default();
    let exe = process.as_ref().and_then(|p| p.exe().ok());
    before_exec(&comm, exe.as_deref(), program)
}

/// Podman's event log, read as it grows: each complete new line once.
#[derive(Default)]
pub(crate) struct LogTail {
    offset: u64,
    partial: Vec<u8>,
}

#[derive(Deserialize)]
struct EventLine {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Status", default)]
    status: String,
    #[serde(rename = "Type", default)]
    kind: String,
}

/// How much of the log is read at once: a burst of events is far smaller.
const TAIL_CHUNK: u64 = 1 << 20;

impl LogTail {
    /// Starts at the end: events written before sonde started are not launches to catch.
    pub(crate) fn at_end(path: &Path) -> Self {
        LogTail {
            offset: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            partial: Vec::new(),
        }
    }

    /// The ids of containers whose `init` event (created by the runtime, not started yet)
    /// is in `bytes`, the log's next bytes.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(bytes);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        complete
            .split(|&b| b == b'\n')
            // Cheap filter first: most lines are other events.
            .filter(|l| l.windows(6).any(|w| w == b"\"init\""))
            .filter_map(|l| serde_json::from_slice::<EventLine>(l).ok())
            .filter(|e| e.kind == "container" && e.status == "init" && !e.id.is_empty())
            .map(|e| e.id)
            .collect()
    }

    /// Reads what was appended to `path` since the last call; a log that shrank (rotated)
    /// is read from its start.
    pub(crate) fn read_new(&mut self, path: &Path) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(path) else {
            return Vec::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if f.take(TAIL_CHUNK).read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.feed(&buf)
    }
}

/// Follows Podman's event log and calls `on_init` with each created container's id, from
/// its own thread, within a millisecond of the line being written (inotify); stops on drop.
pub(crate) struct InitWatch {
    _thread: Worker,
}

impl InitWatch {
    pub(crate) fn start(
        log: PathBuf,
        on_init: impl Fn(String) + Send + 'static,
    ) -> Result<Self, RuntimeError> {
        let dir = log.parent().unwrap_or(Path::new("/")).to_path_buf();
        let watch_err = |source| RuntimeError::Watch {
            path: dir.clone(),
            source,
        };
        // SAFETY: no pointer arguments.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(watch_err(std::io::Error::last_os_error()));
        }
        // SAFETY: fd was just returned by inotify_init1 and is owned here from now on.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let cdir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| watch_err(std::io::ErrorKind::InvalidInput.into()))?;
        use std::os::fd::AsRawFd;
        // The directory, not the file: the log may not exist yet, or be rotated.
        // SAFETY: a valid inotify fd and a NUL-terminated path.
        let wd = unsafe {
            libc::inotify_add_watch(
                fd.as_raw_fd(),
                cdir.as_ptr(),
                libc::IN_MODIFY | libc::IN_CREATE | libc::IN_MOVED_TO,
            )
        };
        if wd < 0 {
            return Err(watch_err(std::io::Error::last_os_error()));
        }
        let thread = Worker::spawn("sonde-podman-init", move |stop| {
            let mut tail = LogTail::at_end(&log);
            let mut events = [0u8; 4096];
            while !stop.requested() {
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                let ready = unsafe { libc::poll(&mut pfd, 1, 200) };
                if ready <= 0 {
                    continue;
                }
                // Drain the notifications; which file changed does not matter.
                // SAFETY: reads into a buffer of the given length.
                while unsafe {
                    libc::read(fd.as_raw_fd(), events.as_mut_ptr().cast(), events.len())
                } > 0
                {}
                for id in tail.read_new(&log) {
                    on_init(id);
                }
            }
        })
        .map_err(|source| RuntimeError::Watch {
            path: dir.clone(),
            source,
        })?;
        Ok(InitWatch { _thread: thread })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1184b9c36f5baa24b3b152bc49b50c2dfbe31530fc1745e7c67905b593e28e46";

    /// What crun 1.8 leaves between `crun create` and `crun start` (state root /run/crun):
    /// `<id>/status`, `<id>/exec.fifo` (the init blocks opening it) and `<id>/config.json`.
    fn crun_state(root: &Path, pid: u32) {
        let dir = root.join(ID);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("status"),
            format!(
                r#"{{
    "pid": {pid},
    "process-start-time": 263473330,
    "cgroup-path": "/libpod_parent/libpod-{ID}",
    "scope": "",
    "rootfs": "/var/lib/containers/storage/overlay/abc/merged",
    "systemd-cgroup": false,
    "bundle": "/var/lib/containers/storage/overlay-containers/{ID}/userdata",
    "created": "2026-12-07T05:00:00.000293421Z",
    "owner": "root",
    "detached": true,
    "external_descriptors": "[\"/dev/null\",\"/dev/null\",\"/dev/null\"]"
}}"#
            ),
        )
        .unwrap();
        std::fs::write(dir.join("exec.fifo"), b"").unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sonde-runtime-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn pid_files_and_state_files() {
        assert_eq!(parse_pidfile("4242"), Some(4242));
        assert_eq!(parse_pidfile("4242\n"), Some(4242));
        assert_eq!(parse_pidfile(""), None);
        assert_eq!(parse_pidfile("0"), None);
        assert_eq!(parse_pidfile("-1"), None);
        assert_eq!(pid_from_state(br#"{"pid": 17, "bundle": "/b"}"#), Some(17));
        assert_eq!(
            pid_from_state(br#"{"id":"x","init_process_pid":23,"init_process_start":5}"#),
            Some(23)
        );
        assert_eq!(pid_from_state(br#"{"pid": 0}"#), None);
        assert_eq!(pid_from_state(b"garbage"), None);
    }

    #[test]
    fn the_init_of_a_crun_container_is_found_in_its_state() {
        let d = scratch("crun");
        let (bundles, roots) = (d.join("bundles"), d.join("run-crun"));
        crun_state(&roots, 31337);
        let bundle = bundles.join(ID).join("userdata");
        std::fs::create_dir_all(&bundle).unwrap();
        // Before conmon wrote the pid file: crun's state names the init.
        assert_eq!(
            init_pid(
                ID,
                std::slice::from_ref(&bundle),
                std::slice::from_ref(&roots)
            ),
            Some(31337)
        );
        // The engine's pid file (Podman: userdata/pidfile, no newline) comes first.
        std::fs::write(bundle.join("pidfile"), "31338").unwrap();
        assert_eq!(
            init_pid(
                ID,
                std::slice::from_ref(&bundle),
                std::slice::from_ref(&roots)
            ),
            Some(31338)
        );
        // Another container's state is not this one's.
        assert_eq!(
            init_pid(&"f".repeat(64), &[], std::slice::from_ref(&roots)),
            None
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_init_waiting_in_its_runtime_is_told_from_the_program() {
        let program = Path::new("/server");
        // runc: renamed, executable still runc's.
        assert!(before_exec(
            "runc:[2:INIT]",
            Some(Path::new("/usr/bin/runc")),
            program
        ));
        // crun: not renamed; its executable is crun's own file, or the sealed copy it
        // re-executes from (memfd).
        assert!(before_exec(
            "crun",
            Some(Path::new("/usr/bin/crun")),
            program
        ));
        assert!(before_exec(
            "crun",
            Some(Path::new("/memfd:crun (deleted)")),
            program
        ));
        // Exec'd: the program runs.
        assert!(!before_exec("server", Some(program), program));
        // Mid-exec or gone: not known to wait.
        assert!(!before_exec("crun", None, program));
    }

    #[test]
    fn init_events_are_read_once_as_the_log_grows() {
        let mut tail = LogTail::default();
        let line = |status: &str, id: &str| {
            format!(
                r#"{{"ID":"{id}","Image":"localhost/web:1","Name":"web","Status":"{status}","Time":"2026-12-07T04:55:40.067441966Z","Type":"container","Attributes":{{"sonde.enable":"true"}}}}"#
            ) + "\n"
        };
        let create = line("create", ID);
        let init = line("init", ID);
        assert!(tail.feed(create.as_bytes()).is_empty());
        // A line written in two parts is read when complete.
        let (a, b) = init.split_at(40);
        assert!(tail.feed(a.as_bytes()).is_empty());
        assert_eq!(tail.feed(b.as_bytes()), [ID]);
        assert!(tail.feed(line("start", ID).as_bytes()).is_empty());
        // An image event with status init is not a container's.
        let image = r#"{"Name":"x","Status":"init","Type":"image","ID":"abc"}"#.to_string() + "\n";
        assert!(tail.feed(image.as_bytes()).is_empty());
        assert!(tail.feed(b"garbage \"init\"\n").is_empty());

        let d = scratch("log");
        let log = d.join("events.log");
        std::fs::write(&log, &create).unwrap();
        let mut tail = LogTail::at_end(&log);
        assert!(tail.read_new(&log).is_empty());
        std::fs::write(&log, format!("{create}{init}")).unwrap();
        assert_eq!(tail.read_new(&log), [ID]);
        assert!(tail.read_new(&log).is_empty());
        // Rotated: read from the start.
        std::fs::write(&log, &init).unwrap();
        assert_eq!(tail.read_new(&log), [ID]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
