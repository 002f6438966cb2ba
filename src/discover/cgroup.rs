//! Which container a process belongs to, from /proc/<pid>/cgroup. Pure parsing plus one read.

/// The 64-hex container id in a cgroup path, for every layout Docker produces:
/// cgroup v1 `/docker/<id>`, v2 `/system.slice/docker-<id>.scope`, nested
/// (`/kubepods/.../<id>`, docker-in-docker `/docker/<outer>/docker/<id>`: the innermost wins).
pub fn container_id_from_cgroup(text: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        // hierarchy-id:controllers:path
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        for segment in path.split('/') {
            let id = segment
                .strip_prefix("docker-")
                .and_then(|s| s.strip_suffix(".scope"))
                .unwrap_or(segment);
            if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                found = Some(id.to_string());
            }
        }
        if found.is_some() {
            return found;
        }
    }
    found
}

pub fn container_id_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    container_id_from_cgroup(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "d1509364266dc6edab10324dbd104c97d0e7721d10c7d1d66dba56078ddf8687";

    #[test]
    fn every_layout() {
        let v1 = format!("9:name=systemd:/docker/{ID}\n8:pids:/docker/{ID}\n0::/\n");
        assert_eq!(container_id_from_cgroup(&v1).as_deref(), Some(ID));
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(container_id_from_cgroup(&v2).as_deref(), Some(ID));
        let hybrid = format!("1:name=systemd:/\n0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(container_id_from_cgroup(&hybrid).as_deref(), Some(ID));
        let nested = format!("0::/docker/{}/docker/{ID}\n", "a".repeat(64));
        assert_eq!(container_id_from_cgroup(&nested).as_deref(), Some(ID));
        assert_eq!(
            container_id_from_cgroup("0::/user.slice/session-1.scope\n"),
            None
        );
        assert_eq!(container_id_from_cgroup("garbage"), None);
    }
}
