//! Which discovered processes to instrument, and who they are.

use std::collections::HashMap;

use crate::config::{Config, PortSet};
use crate::discover::{otel_env, HostProcess};
use crate::enrich::Identity;

/// The selection rules of the configuration. A process is selected when it listens on one of
/// `open_port` **or** its executable path matches `executable_name` (as Beyla does).
pub struct Selector {
    ports: Option<PortSet>,
    exe: Option<regex::Regex>,
    service_name: Option<String>,
    service_namespace: Option<String>,
}

impl Selector {
    pub fn new(config: &Config) -> Self {
        Selector {
            ports: config.open_port.clone(),
            exe: config.executable_name.clone(),
            service_name: config.service_name.clone(),
            service_namespace: config.service_namespace.clone(),
        }
    }

    pub fn matches(&self, p: &HostProcess) -> bool {
        let by_port = self
            .ports
            .as_ref()
            .is_some_and(|ports| p.listen_ports.iter().any(|&port| ports.contains(port)));
        let by_exe = self
            .exe
            .as_ref()
            .is_some_and(|re| re.is_match(&p.exe.to_string_lossy()));
        by_port || by_exe
    }

    /// Configured name > the process's OTEL_SERVICE_NAME > the executable's file name.
    pub fn identity(&self, p: &HostProcess) -> Identity {
        let (env_name, env_namespace) = otel_env(p.pid);
        let exe_name = p
            .exe
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_default();
        Identity {
            service_name: self.service_name.clone().or(env_name).unwrap_or(exe_name),
            service_namespace: self
                .service_namespace
                .clone()
                .or(env_namespace)
                .unwrap_or_default(),
            container_name: None,
        }
    }
}

/// What changed since the previous scan.
#[derive(Debug, Default)]
pub struct Changes {
    pub added: Vec<(HostProcess, Identity)>,
    pub removed: Vec<u32>,
}

/// Remembers the selected processes between scans.
pub struct Tracker {
    selector: Selector,
    /// Selected PIDs with their start time (a reused PID has another).
    selected: HashMap<u32, u64>,
}

impl Tracker {
    pub fn new(selector: Selector) -> Self {
        Tracker {
            selector,
            selected: HashMap::new(),
        }
    }

    pub fn update(&mut self, scan: Vec<HostProcess>) -> Changes {
        let mut changes = Changes::default();
        let alive: HashMap<u32, u64> = scan.iter().map(|p| (p.pid, p.start_time)).collect();
        self.selected.retain(|pid, start| {
            let same = alive.get(pid) == Some(start);
            if !same {
                changes.removed.push(*pid);
            }
            same
        });
        for p in scan {
            if self.selected.contains_key(&p.pid) || !self.selector.matches(&p) {
                continue;
            }
            self.selected.insert(p.pid, p.start_time);
            let identity = self.selector.identity(&p);
            changes.added.push((p, identity));
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn proc_(pid: u32, exe: &str, ports: &[u16], start: u64) -> HostProcess {
        HostProcess {
            pid,
            exe: PathBuf::from(exe),
            start_time: start,
            listen_ports: ports.to_vec(),
        }
    }

    fn selector(ports: &str, exe: Option<&str>) -> Selector {
        let config = Config {
            open_port: PortSet::parse(ports),
            executable_name: exe.map(|e| regex::Regex::new(e).unwrap()),
            ..Config::default()
        };
        Selector::new(&config)
    }

    #[test]
    fn port_or_executable_selects() {
        let s = selector("8080,9000-9100", Some("api$"));
        assert!(s.matches(&proc_(1, "/bin/x", &[9050], 1)));
        assert!(s.matches(&proc_(1, "/srv/api", &[], 1)));
        assert!(!s.matches(&proc_(1, "/bin/x", &[22], 1)));
    }

    #[test]
    fn tracker_adds_once_and_removes_exited_and_reused_pids() {
        let mut t = Tracker::new(selector("8080", None));
        let c = t.update(vec![
            proc_(10, "/a/svc", &[8080], 5),
            proc_(11, "/a/other", &[22], 5),
        ]);
        assert_eq!(c.added.len(), 1);
        assert_eq!(c.added[0].1.service_name, "svc");
        assert!(t
            .update(vec![proc_(10, "/a/svc", &[8080], 5)])
            .added
            .is_empty());
        // Starts listening later: selected on that later scan.
        let c = t.update(vec![
            proc_(10, "/a/svc", &[8080], 5),
            proc_(12, "/a/late", &[8080], 6),
        ]);
        assert_eq!(c.added.len(), 1);
        // PID 10 reused by another process, 12 exited.
        let c = t.update(vec![proc_(10, "/a/svc", &[8080], 99)]);
        assert_eq!(c.removed.len(), 2);
        assert_eq!(c.added.len(), 1);
    }
}
