//! Which discovered processes to instrument, and who they are. The [`Selector`] (here)
//! applies the configuration's rules and each container's labels to a process; beside it:
//! the container labels and the rules they make ([`labels`]), service identity
//! ([`identity`]), the files `executable_name` names ahead of their first run
//! ([`named_files`]), and the selected set between scans ([`tracker`]).

mod identity;
pub(crate) mod labels;
mod named_files;
mod tracker;

use crate::config::{Config, DockerSelect, PortSet};
use crate::discover::docker::{ContainerInfo, Containers};
use crate::discover::HostProcess;

use identity::metric_label_name;
pub(crate) use identity::Identity;
use labels::RuleCache;
use named_files::DirListings;
pub(crate) use tracker::Tracker;

/// The selection rules of the configuration. A host process is selected when it listens on
/// one of `open_port` **or** its executable path matches `executable_name` (as Beyla does).
/// A process in a container is selected by those rules too, or by its container's labels.
#[derive(Clone)]
pub(crate) struct Selector {
    ports: Option<PortSet>,
    exe: Option<regex::Regex>,
    service_name: Option<String>,
    service_namespace: Option<String>,
    docker_select: DockerSelect,
    docker_rules: Vec<crate::config::DockerRule>,
    containers: Option<Containers>,
    report_container: bool,
    go_source: crate::config::GoSource,
    /// Traces are exported: a handler's client calls need uprobes to be its children.
    traces: bool,
    /// (container label, Prometheus label name) pairs to copy onto metrics.
    copied_labels: Vec<(String, &'static str)>,
    /// `PATH` directories' matching files, for a name-only `executable_name`.
    on_path: DirListings,
    /// Each registered container's narrowing labels, parsed (and reported when invalid) once.
    label_rules: std::sync::Arc<std::sync::Mutex<RuleCache>>,
}

impl Selector {
    pub(crate) fn new(config: &Config) -> Self {
        Selector {
            ports: config.open_port.clone(),
            exe: config.executable_name.clone(),
            service_name: config.service_name.clone(),
            service_namespace: config.service_namespace.clone(),
            docker_select: config.docker_select,
            docker_rules: config.docker_rules.clone(),
            containers: None,
            report_container: config.metrics_report_container,
            go_source: config.go_source,
            traces: config.otlp.traces.is_some(),
            copied_labels: config
                .container_labels
                .iter()
                .map(|l| (l.clone(), metric_label_name(l)))
                .collect(),
            on_path: DirListings::default(),
            label_rules: Default::default(),
        }
    }

    /// Select containers by their labels, from this registry of running containers.
    pub(crate) fn with_containers(mut self, containers: Containers) -> Self {
        self.containers = Some(containers);
        self
    }

    /// Whether any rule looks at listening ports (`open_port`, a `sonde.open_ports` label):
    /// when none does, discovery skips reading them, by far the costliest part of a scan.
    pub(crate) fn needs_listen_ports(&self) -> bool {
        if self.ports.is_some() {
            return true;
        }
        let Some(containers) = self.containers.as_ref() else {
            return false;
        };
        let map = containers.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .any(|c| c.labels.contains_key(labels::OPEN_PORTS))
    }

    /// Whether the container `id` is known (created, not destroyed).
    pub(crate) fn knows_container(&self, id: &str) -> bool {
        self.containers
            .as_ref()
            .is_some_and(|c| c.read().unwrap_or_else(|e| e.into_inner()).contains_key(id))
    }

    /// Learns a container ahead of its engine's event (see `instrument_launch`); the event,
    /// when it comes, replaces it.
    pub(crate) fn learn_container(&self, info: ContainerInfo) {
        if let Some(c) = &self.containers {
            c.write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(info.id.clone())
                .or_insert_with(|| std::sync::Arc::new(info));
        }
    }

    fn container_of(&self, p: &HostProcess) -> Option<std::sync::Arc<ContainerInfo>> {
        let id = p.container_id.as_ref()?;
        let containers = self.containers.as_ref()?;
        let map = containers.read().unwrap_or_else(|e| e.into_inner());
        map.get(id).cloned()
    }

    /// A container's own `sonde.enable` label decides; else the first YAML rule that matches
    /// it; else `docker_select`. Its `sonde.open_ports` / `sonde.exe` labels narrow which of its
    /// processes are measured.
    fn container_selects(&self, c: &std::sync::Arc<ContainerInfo>, p: &HostProcess) -> bool {
        self.container_enabled(c) && self.label_rules(c).allow(p)
    }

    fn container_enabled(&self, c: &ContainerInfo) -> bool {
        let enable = c
            .labels
            .get(labels::ENABLE)
            .map(|v| v.trim().to_ascii_lowercase());
        let rule = || {
            self.docker_rules
                .iter()
                .find(|r| r.matches(&c.name, &c.image, &c.labels))
                .map(|r| r.enable)
        };
        match enable.as_deref() {
            Some("true") => true,
            Some("false") => false,
            _ => rule().unwrap_or(self.docker_select == DockerSelect::All),
        }
    }

    pub(crate) fn matches(&self, p: &HostProcess) -> bool {
        if let Some(c) = self.container_of(p) {
            if self.container_selects(&c, p) {
                return true;
            }
        }
        self.host_rules_match(p)
    }

    /// A host process (not in a container) that `executable_name` selects: its file may be
    /// armed as a whole (every process running it is selected the same way).
    pub(crate) fn selects_by_executable(&self, p: &HostProcess) -> bool {
        p.container_id.is_none()
            && self
                .exe
                .as_ref()
                .is_some_and(|re| re.is_match(&p.exe.to_string_lossy()))
    }

    fn host_rules_match(&self, p: &HostProcess) -> bool {
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

    /// Whether a container's process that is about to exec `exe` is selected, decided before
    /// the exec. `None` when that cannot be known yet: the rules need its listening ports.
    pub(crate) fn selects_before_exec(&self, p: &HostProcess) -> Option<bool> {
        let c = self.container_of(p)?;
        if c.labels.contains_key(labels::OPEN_PORTS) {
            return None;
        }
        if self.container_selects(&c, p) || self.host_rules_match(p) {
            return Some(true);
        }
        // Not selected so far, but the host port rule may select it once it listens.
        if self.ports.is_some() {
            return None;
        }
        Some(false)
    }

    /// Whether a container could be selected at all, ignoring which of its processes: worth
    /// reading its program ahead.
    pub(crate) fn may_select_container(&self, c: &ContainerInfo) -> bool {
        let mut unlabelled = c.clone();
        // Its sonde.exe / sonde.open_ports labels narrow to processes, not to the container.
        unlabelled.labels.remove(labels::EXE);
        unlabelled.labels.remove(labels::OPEN_PORTS);
        self.container_enabled(&unlabelled) || self.ports.is_some() || self.exe.is_some()
    }

    /// Whether a created container's program `exe` is worth arming in its image (see
    /// `Attacher::arm_image`): the container's labels and rules select it before it runs, and
    /// uprobes (not syscalls) would measure it.
    pub(crate) fn arms_image(
        &self,
        c: &std::sync::Arc<ContainerInfo>,
        exe: &std::path::Path,
    ) -> bool {
        let probe = HostProcess {
            pid: 0,
            exe: exe.to_path_buf(),
            start_time: 0,
            listen_ports: Vec::new(),
            container_id: None,
        };
        let source = self.label_rules(c).go_source.unwrap_or(self.go_source);
        !c.labels.contains_key(labels::OPEN_PORTS)
            && source == crate::config::GoSource::Uprobes
            && self.container_selects(c, &probe)
    }

    /// What measures this Go process: its container's `sonde.go_source` label, else the
    /// `go_source` setting. An invalid label is reported and ignored.
    pub(crate) fn go_source(&self, p: &HostProcess) -> crate::config::GoSource {
        let Some(c) = self.container_of(p) else {
            return self.go_source;
        };
        self.label_rules(&c).go_source.unwrap_or(self.go_source)
    }

    /// Whether traces are exported (a Go client's calls then carry trace context only uprobes
    /// propagate: see `inspect::source::choose`).
    pub(crate) fn traces(&self) -> bool {
        self.traces
    }

    /// The `go_source` setting of host files (no container label applies).
    pub(crate) fn host_go_source(&self) -> crate::config::GoSource {
        self.go_source
    }
}

#[cfg(test)]
#[path = "select/select_tests.rs"]
mod tests;
