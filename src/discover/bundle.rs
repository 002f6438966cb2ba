//! What a container is about to run, from its OCI bundle (`config.json`), before the exec:
//! the program runc will start, resolved inside the container's root file system.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// Where bundles are kept, as (directory, what follows the container id): containerd's for
/// Docker's containers (namespace `moby`: Docker's own containerd, and a system containerd),
/// and Podman's (rootful; conmon runs the runtime with the bundle `…/<id>/userdata`, whose
/// config.json is written before the runtime starts).
const BUNDLE_ROOTS: &[(&str, &str)] = &[
    (
        "/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby",
        "",
    ),
    ("/run/containerd/io.containerd.runtime.v2.task/moby", ""),
    ("/var/lib/containers/storage/overlay-containers", "userdata"),
    ("/run/containers/storage/overlay-containers", "userdata"),
];

/// A bundle's config is small; a hostile one must not cost memory.
const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// Symlinks followed while resolving one path (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BundleError {
    #[error("no OCI bundle found for container {0}")]
    NotFound(String),
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an OCI runtime config: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the bundle names no program to run")]
    NoProgram,
    #[error("{0} is not found in the container's root")]
    NotInRoot(String),
}

#[derive(Debug, Deserialize)]
struct OciConfig {
    root: Option<OciRoot>,
    process: Option<OciProcess>,
}

#[derive(Debug, Deserialize)]
struct OciRoot {
    path: String,
}

#[derive(Debug, Deserialize)]
struct OciProcess {
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    cwd: Option<String>,
}

/// The program a container will exec, as the host and the container see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Launch {
    /// The file on the host (inside the root's mount), to inspect and attach to.
    pub host_path: PathBuf,
    /// The path `/proc/<pid>/exe` will show once the process runs it.
    pub exe: PathBuf,
    /// The process's environment, as `KEY=value`.
    pub env: Vec<String>,
}

/// The bundle directory of a container: its runtime's working directory (runc runs in the
/// bundle) or one of the well-known places.
pub(crate) fn find_bundle(pid: u32, container_id: &str) -> Result<PathBuf, BundleError> {
    // Through the magic link, not its target: sonde may run in a container of its own,
    // where the host's /run is not mounted.
    if let Some(parent) = parent_of(pid) {
        let cwd = super::proc::cwd_path(parent.pid());
        let named = parent
            .cwd()
            .is_ok_and(|target| names_bundle(&target, container_id));
        if named && cwd.join("config.json").is_file() {
            return Ok(cwd);
        }
    }
    bundle_candidates(container_id)
        .into_iter()
        .map(on_host)
        .find(|dir| dir.join("config.json").is_file())
        .ok_or_else(|| BundleError::NotFound(container_id.to_string()))
}

/// Whether a directory is this container's bundle by its name: `…/<id>` (containerd) or
/// `…/<id>/userdata` (Podman; rootless too, under the user's storage).
fn names_bundle(dir: &Path, container_id: &str) -> bool {
    let name = |p: &Path| p.file_name().is_some_and(|n| n == container_id);
    name(dir) || (dir.ends_with("userdata") && dir.parent().is_some_and(name))
}

/// The well-known bundle directories of a container, in the order they are tried.
pub(crate) fn bundle_candidates(container_id: &str) -> Vec<PathBuf> {
    BUNDLE_ROOTS
        .iter()
        .map(|(root, tail)| Path::new(root).join(container_id).join(tail))
        .map(|p| p.components().collect())
        .collect()
}

/// A path of the host's file system as this process can open it: through `/proc/1/root`
/// when sonde runs in a mount namespace of its own (a container with the host's PID
/// namespace), as is otherwise.
pub(crate) fn on_host(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    static OWN_MOUNTS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let own = *OWN_MOUNTS.get_or_init(|| {
        let ns = |p: Result<super::proc::Proc, _>| p.and_then(|p| p.mount_namespace()).ok();
        let (me, init) = (
            ns(super::proc::Proc::myself()),
            ns(super::proc::Proc::open(1)),
        );
        me.is_some() && init.is_some() && me != init
    });
    if own && path.is_absolute() {
        super::proc::in_root_of(1, path)
    } else {
        path.to_path_buf()
    }
}

fn parent_of(pid: u32) -> Option<super::proc::Proc> {
    let ppid = super::proc::Proc::open(pid).ok()?.stat().ok()?.ppid;
    super::proc::Proc::open(ppid).ok()
}

/// Reads the bundle's config and resolves its program inside the container's root.
pub(crate) fn launch_of(bundle: &Path) -> Result<Launch, BundleError> {
    use std::io::Read;
    let path = bundle.join("config.json");
    let mut text = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES).read_to_end(&mut text))
        .map_err(|source| BundleError::Read {
            path: path.clone(),
            source,
        })?;
    let config: OciConfig =
        serde_json::from_slice(&text).map_err(|source| BundleError::Parse { path, source })?;
    let process = config.process.ok_or(BundleError::NoProgram)?;
    let program = process.args.first().ok_or(BundleError::NoProgram)?;
    let root = config.root.ok_or(BundleError::NoProgram)?.path;
    // A relative root is relative to the bundle; an absolute one is the host's.
    let root = if Path::new(&root).is_absolute() {
        on_host(&root)
    } else {
        bundle.join(root)
    };
    let path_env = process
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let cwd = process.cwd.as_deref().unwrap_or("/");
    let exe = find_program(&root, program, path_env, cwd)
        .ok_or_else(|| BundleError::NotInRoot(program.clone()))?;
    Ok(Launch {
        host_path: root.join(exe.strip_prefix("/").unwrap_or(&exe)),
        exe,
        env: process.env,
    })
}

/// `program` as execvp would find it (a name is looked up in PATH), resolved to the real
/// file inside `root`. Returns the path inside the container.
pub(crate) fn find_program(
    root: &Path,
    program: &str,
    path_env: &str,
    cwd: &str,
) -> Option<PathBuf> {
    let candidates: Vec<String> = if program.contains('/') {
        let p = if program.starts_with('/') {
            program.to_string()
        } else {
            format!("{}/{}", cwd.trim_end_matches('/'), program)
        };
        vec![p]
    } else {
        path_env
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
            .collect()
    };
    candidates.into_iter().find_map(|c| {
        let inside = resolve_in_root(root, Path::new(&c))?;
        root.join(inside.strip_prefix("/").ok()?)
            .is_file()
            .then_some(inside)
    })
}

/// Resolves `path` as if `root` were `/`: symlinks (absolute ones too) never leave it.
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved = PathBuf::from("/");
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let next = resolved.join(&part);
        let on_host = root.join(next.strip_prefix("/").ok()?);
        match std::fs::symlink_metadata(&on_host) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return None;
                }
                let target = std::fs::read_link(&on_host).ok()?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => resolved = next,
            Err(_) => return None,
        }
    }
    Some(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_and_podman_bundle_places() {
        let id = "c".repeat(64);
        let all = bundle_candidates(&id);
        assert!(all.contains(&PathBuf::from(format!(
            "/run/containerd/io.containerd.runtime.v2.task/moby/{id}"
        ))));
        assert!(all.contains(&PathBuf::from(format!(
            "/var/lib/containers/storage/overlay-containers/{id}/userdata"
        ))));
        assert!(names_bundle(Path::new(&format!("/x/moby/{id}")), &id));
        assert!(names_bundle(
            Path::new(&format!(
                "/home/u/.local/share/containers/storage/overlay-containers/{id}/userdata"
            )),
            &id
        ));
        assert!(!names_bundle(Path::new("/x/userdata"), &id));
        assert!(!names_bundle(Path::new("/tmp"), &id));
    }

    #[test]
    fn resolves_programs_inside_the_root_only() {
        let root = std::env::temp_dir().join(format!("sonde-bundle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::write(root.join("usr/bin/server"), b"x").unwrap();
        std::os::unix::fs::symlink("/usr/bin/server", root.join("app/run")).unwrap();
        std::os::unix::fs::symlink("../../usr/bin/server", root.join("app/rel")).unwrap();
        // Would escape to the host's /etc/passwd if followed outside the root.
        std::os::unix::fs::symlink("/etc/passwd", root.join("app/escape")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("app/loop")).unwrap();

        let find = |p: &str, cwd: &str| find_program(&root, p, "/bin:/usr/bin", cwd);
        assert_eq!(find("server", "/"), Some(PathBuf::from("/usr/bin/server")));
        assert_eq!(
            find("/app/run", "/"),
            Some(PathBuf::from("/usr/bin/server"))
        );
        assert_eq!(
            find("./rel", "/app"),
            Some(PathBuf::from("/usr/bin/server"))
        );
        assert_eq!(find("/app/escape", "/"), None);
        assert_eq!(find("/app/loop", "/"), None);
        assert_eq!(find("missing", "/"), None);

        std::fs::write(
            root.join("config.json"),
            r#"{"root":{"path":"."},"process":{"args":["/app/run","-addr",":1"],"env":["PATH=/usr/bin","OTEL_SERVICE_NAME=x"],"cwd":"/"}}"#,
        )
        .unwrap();
        let launch = launch_of(&root).unwrap();
        assert_eq!(launch.exe, PathBuf::from("/usr/bin/server"));
        assert_eq!(launch.host_path, root.join("./usr/bin/server"));
        assert!(launch.env.contains(&"OTEL_SERVICE_NAME=x".to_string()));
        std::fs::write(root.join("config.json"), b"{\"process\": 3}").unwrap();
        assert!(matches!(launch_of(&root), Err(BundleError::Parse { .. })));
        let _ = std::fs::remove_dir_all(&root);
    }
}
