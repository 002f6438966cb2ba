//! Which container a process belongs to, from /proc/<pid>/cgroup (read by [`super::proc`]).
//! Pure parsing plus one read.

/// Prefixes of the cgroups of container *monitors* (Podman's conmon, CRI-O's): named after the
/// container, but the process in them is not the container's.
const MONITOR_PREFIXES: &[&str] = &["libpod-conmon-", "crio-conmon-"];

/// The 64-hex container id in a cgroup path, for every layout Docker and Podman produce:
/// Docker cgroup v1 `/docker/<id>`, v2 `/system.slice/docker-<id>.scope`; Podman's cgroupfs
/// manager `/libpod_parent/libpod-<id>`, its systemd manager `/machine.slice/libpod-<id>.scope`
/// (rootless: `/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-<id>.scope`,
/// possibly with a `/container` child); CRI's `crio-<id>.scope`, `cri-containerd-<id>.scope`;
/// nested (`/kubepods/.../<id>`, docker-in-docker `/docker/<outer>/docker/<id>`: the innermost
/// wins). Podman's conmon (`libpod-conmon-<id>`) is not in the container.
pub fn container_id_from_cgroup(text: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        // hierarchy-id:controllers:path
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        for segment in path.split('/') {
            if let Some(id) = id_of_segment(segment) {
                found = Some(id.to_string());
            }
        }
        if found.is_some() {
            return found;
        }
    }
    found
}

/// The container id one cgroup directory names: `<id>`, or `<manager>-<id>[.scope]`.
fn id_of_segment(segment: &str) -> Option<&str> {
    if MONITOR_PREFIXES.iter().any(|p| segment.starts_with(p)) {
        return None;
    }
    let stem = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = stem.rsplit_once('-').map_or(stem, |(_, id)| id);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

pub(crate) fn container_id_of(pid: u32) -> Option<String> {
    container_id_in(&super::proc::Proc::open(pid).ok()?)
}

/// The container of an opened process.
pub(crate) fn container_id_in(process: &super::proc::Proc) -> Option<String> {
    container_id_from_cgroup(&process.cgroup().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "d1509364266dc6edab10324dbd104c97d0e7721d10c7d1d66dba56078ddf8687";

    fn id(text: &str) -> Option<String> {
        container_id_from_cgroup(text)
    }

    #[test]
    fn docker_layouts() {
        let v1 = format!("9:name=systemd:/docker/{ID}\n8:pids:/docker/{ID}\n0::/\n");
        assert_eq!(id(&v1).as_deref(), Some(ID));
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(id(&v2).as_deref(), Some(ID));
        let hybrid = format!("1:name=systemd:/\n0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(id(&hybrid).as_deref(), Some(ID));
        let nested = format!("0::/docker/{}/docker/{ID}\n", "a".repeat(64));
        assert_eq!(id(&nested).as_deref(), Some(ID));
        assert_eq!(id("0::/user.slice/session-1.scope\n"), None);
        assert_eq!(id("garbage"), None);
    }

    #[test]
    fn podman_cgroupfs_manager_v1_and_v2() {
        // Measured here (rootful, cgroupfs manager, hybrid v1): every hierarchy and the v2 one.
        let v1 = format!(
            "9:name=systemd:/libpod_parent/libpod-{ID}\n8:pids:/libpod_parent/libpod-{ID}\n\
             1:cpu:/libpod_parent/libpod-{ID}\n0::/libpod_parent/libpod-{ID}\n"
        );
        assert_eq!(id(&v1).as_deref(), Some(ID));
        let v2 = format!("0::/libpod_parent/libpod-{ID}\n");
        assert_eq!(id(&v2).as_deref(), Some(ID));
    }

    #[test]
    fn podman_systemd_manager_rootful_and_rootless() {
        let rootful_v2 = format!("0::/machine.slice/libpod-{ID}.scope\n");
        assert_eq!(id(&rootful_v2).as_deref(), Some(ID));
        let rootful_v1 = format!(
            "12:pids:/machine.slice/libpod-{ID}.scope\n1:name=systemd:/machine.slice/libpod-{ID}.scope\n"
        );
        assert_eq!(id(&rootful_v1).as_deref(), Some(ID));
        let rootless = format!(
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope\n"
        );
        assert_eq!(id(&rootless).as_deref(), Some(ID));
        // With --systemd / cgroupns=private Podman moves the payload into a child cgroup.
        let child = format!(
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
        );
        assert_eq!(id(&child).as_deref(), Some(ID));
        // In a pod: the pod's slice, then the container's scope.
        let pod = format!(
            "0::/machine.slice/machine-libpod_pod_{}.slice/libpod-{ID}.scope\n",
            "b".repeat(64)
        );
        assert_eq!(id(&pod).as_deref(), Some(ID));
    }

    #[test]
    fn container_monitors_are_not_in_the_container() {
        // conmon, systemd manager (rootful and rootless) and cgroupfs manager.
        assert_eq!(
            id(&format!("0::/machine.slice/libpod-conmon-{ID}.scope\n")),
            None
        );
        assert_eq!(
            id(&format!(
                "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-conmon-{ID}.scope\n"
            )),
            None
        );
        assert_eq!(id("8:pids:/libpod_parent/conmon\n0::/\n"), None);
        assert_eq!(
            id(&format!("0::/system.slice/crio-conmon-{ID}.scope\n")),
            None
        );
    }

    #[test]
    fn cri_runtimes() {
        let crio = format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope\n");
        assert_eq!(id(&crio).as_deref(), Some(ID));
        let containerd = format!("0::/kubepods.slice/cri-containerd-{ID}.scope\n");
        assert_eq!(id(&containerd).as_deref(), Some(ID));
        // 64 hex that is not the whole name is no id.
        assert_eq!(id(&format!("0::/libpod-{ID}x.scope\n")), None);
    }
}
