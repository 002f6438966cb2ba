//! Which discovered processes to instrument, and who they are.

use std::collections::HashMap;

use crate::config::{Config, DockerSelect, PortSet};
use crate::discover::docker::{ContainerInfo, Containers};
use crate::discover::{otel_env, HostProcess};

/// Who served a request, as users name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Identity {
    pub service_name: String,
    pub service_namespace: String,
    /// Set for container targets only.
    pub container_name: Option<String>,
    /// More labels asked for in the configuration (`container_id`, `container_image`,
    /// `container_label_<name>`), already sanitised as Prometheus label names.
    pub extra: Vec<(&'static str, String)>,
}

/// Container labels users put on their services.
pub mod labels {
    pub const ENABLE: &str = "sonde.enable";
    pub const OPEN_PORTS: &str = "sonde.open_ports";
    pub const EXE: &str = "sonde.exe";
    pub const SERVICE_NAME: &str = "sonde.service.name";
    pub const SERVICE_NAMESPACE: &str = "sonde.service.namespace";
    pub const GO_SOURCE: &str = "sonde.go_source";
    pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
    pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
    /// podman-compose sets the Docker ones too; older versions only these.
    pub const PODMAN_COMPOSE_SERVICE: &str = "io.podman.compose.service";
    pub const PODMAN_COMPOSE_PROJECT: &str = "io.podman.compose.project";
}

/// The selection rules of the configuration. A host process is selected when it listens on
/// one of `open_port` **or** its executable path matches `executable_name` (as Beyla does).
/// A process in a container is selected by those rules too, or by its container's labels.
#[derive(Clone)]
pub struct Selector {
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

/// Parsed narrowing labels by container id, with the registration they were parsed from: a
/// container registered again (an engine event replacing what a launch learned) is parsed
/// again, anything else never.
type RuleCache = HashMap<String, (std::sync::Arc<ContainerInfo>, std::sync::Arc<LabelRules>)>;

/// What a narrowing label allows.
#[derive(Debug, Clone)]
pub enum Narrow<T> {
    /// No such label: every process of the container.
    Any,
    /// Only the processes this value matches.
    Only(T),
    /// The label cannot be parsed: none of the container's processes (reported once).
    Invalid,
}

/// A container's `sonde.open_ports`, `sonde.exe` and `sonde.go_source` labels as rules.
#[derive(Debug, Clone)]
pub struct LabelRules {
    pub open_ports: Narrow<PortSet>,
    pub exe: Narrow<regex::Regex>,
    /// `None`: no label, or an invalid one (reported once): the `go_source` setting.
    pub go_source: Option<crate::config::GoSource>,
}

impl LabelRules {
    /// Parses the labels, warning about each invalid one (once: see `Selector::label_rules`);
    /// `go_source`: the setting an invalid `sonde.go_source` label falls back to.
    pub fn parse(c: &ContainerInfo, go_source: crate::config::GoSource) -> LabelRules {
        fn narrow<T>(
            c: &ContainerInfo,
            label: &'static str,
            parse: impl Fn(&str) -> Option<T>,
        ) -> Narrow<T> {
            let Some(v) = c.labels.get(label) else {
                return Narrow::Any;
            };
            match parse(v) {
                Some(t) => Narrow::Only(t),
                None => {
                    crate::internal_events::emit(crate::internal_events::LabelInvalid {
                        container: &c.name,
                        label,
                        value: v,
                        fallback: None,
                    });
                    Narrow::Invalid
                }
            }
        }
        LabelRules {
            open_ports: narrow(c, labels::OPEN_PORTS, PortSet::parse),
            exe: narrow(c, labels::EXE, |v| regex::Regex::new(v).ok()),
            go_source: c.labels.get(labels::GO_SOURCE).and_then(|v| {
                let parsed = crate::config::GoSource::parse(v);
                if parsed.is_none() {
                    crate::internal_events::emit(crate::internal_events::LabelInvalid {
                        container: &c.name,
                        label: labels::GO_SOURCE,
                        value: v,
                        fallback: Some(("auto, uprobes or syscalls", go_source.name())),
                    });
                }
                parsed
            }),
        }
    }

    /// Whether the labels let this process of the container be measured.
    fn allow(&self, p: &HostProcess) -> bool {
        let ports = match &self.open_ports {
            Narrow::Any => true,
            Narrow::Only(ports) => p.listen_ports.iter().any(|&port| ports.contains(port)),
            Narrow::Invalid => false,
        };
        ports
            && match &self.exe {
                Narrow::Any => true,
                Narrow::Only(re) => re.is_match(&p.exe.to_string_lossy()),
                Narrow::Invalid => false,
            }
    }
}

/// Each directory's matching files, with the directory's mtime then: listed again only when
/// it changed (a file installed or removed).
type DirListings = std::sync::Arc<
    std::sync::Mutex<
        HashMap<std::path::PathBuf, (Option<std::time::SystemTime>, Vec<std::path::PathBuf>)>,
    >,
>;

/// `com.example.team` → `container_label_com_example_team`. Leaked once per configured
/// label at start-up, so every request can borrow the name.
fn metric_label_name(label: &str) -> &'static str {
    let sanitized: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Box::leak(format!("container_label_{sanitized}").into_boxed_str())
}

impl Selector {
    pub fn new(config: &Config) -> Self {
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

    /// The container's narrowing labels as rules, parsed when this registration of it is
    /// first seen. Entries of containers no longer registered are dropped then too.
    pub fn label_rules(&self, c: &std::sync::Arc<ContainerInfo>) -> std::sync::Arc<LabelRules> {
        let mut cache = self.label_rules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((info, rules)) = cache.get(&c.id) {
            if std::sync::Arc::ptr_eq(info, c) {
                return rules.clone();
            }
        }
        // Only this cache still holds them: the registry dropped (or replaced) them.
        cache.retain(|_, (info, _)| std::sync::Arc::strong_count(info) > 1);
        let rules = std::sync::Arc::new(LabelRules::parse(c, self.go_source));
        cache.insert(c.id.clone(), (c.clone(), rules.clone()));
        rules
    }

    /// Select containers by their labels, from this registry of running containers.
    pub fn with_containers(mut self, containers: Containers) -> Self {
        self.containers = Some(containers);
        self
    }

    /// Whether any rule looks at listening ports (`open_port`, a `sonde.open_ports` label):
    /// when none does, discovery skips reading them, by far the costliest part of a scan.
    pub fn needs_listen_ports(&self) -> bool {
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
    pub fn knows_container(&self, id: &str) -> bool {
        self.containers
            .as_ref()
            .is_some_and(|c| c.read().unwrap_or_else(|e| e.into_inner()).contains_key(id))
    }

    /// Learns a container ahead of its engine's event (see `instrument_launch`); the event,
    /// when it comes, replaces it.
    pub fn learn_container(&self, info: ContainerInfo) {
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

    pub fn matches(&self, p: &HostProcess) -> bool {
        if let Some(c) = self.container_of(p) {
            if self.container_selects(&c, p) {
                return true;
            }
        }
        self.host_rules_match(p)
    }

    /// A host process (not in a container) that `executable_name` selects: its file may be
    /// armed as a whole (every process running it is selected the same way).
    pub fn selects_by_executable(&self, p: &HostProcess) -> bool {
        p.container_id.is_none()
            && self
                .exe
                .as_ref()
                .is_some_and(|re| re.is_match(&p.exe.to_string_lossy()))
    }

    /// The files `executable_name` names by path, so they can be armed before they first
    /// run: the file of a literal pattern (`^/opt/app/bin/cli$`), or the files of the
    /// directory its literal start names (`^/opt/app/bin/.*`) that match it. Canonical
    /// paths (what `/proc/<pid>/exe` will show), regular executable files only.
    pub fn named_files(&self) -> Vec<std::path::PathBuf> {
        let Some(re) = &self.exe else {
            return Vec::new();
        };
        let prefixes = literal_path_prefixes(re.as_str());
        if prefixes.is_empty() {
            return self.files_on_path(re, &search_path());
        }
        let mut out = Vec::new();
        for (literal, exact) in prefixes {
            let candidates: Vec<std::path::PathBuf> = if exact {
                vec![literal.into()]
            } else {
                let dir = &literal[..=literal.rfind('/').unwrap_or(0)];
                match std::fs::read_dir(dir) {
                    Ok(entries) => entries
                        .flatten()
                        .take(MAX_NAMED_FILES)
                        .map(|e| e.path())
                        .collect(),
                    Err(_) => continue,
                }
            };
            for c in candidates {
                let Ok(real) = std::fs::canonicalize(&c) else {
                    continue;
                };
                use std::os::unix::fs::PermissionsExt;
                let runnable = std::fs::metadata(&real)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
                if runnable && re.is_match(&real.to_string_lossy()) && !out.contains(&real) {
                    out.push(real);
                }
            }
        }
        out
    }

    /// The files of `dirs` (sonde's `PATH`) a name-only pattern (`report$`) matches: commands
    /// are run from there, so they can be armed before their first run. At most
    /// [`MAX_PATH_FILES`], in `PATH` order: a pattern matching more is too broad to arm ahead.
    pub fn files_on_path(
        &self,
        re: &regex::Regex,
        dirs: &[std::path::PathBuf],
    ) -> Vec<std::path::PathBuf> {
        let mut cache = self.on_path.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<std::path::PathBuf> = Vec::new();
        for dir in dirs {
            let mtime = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
            let listed = match cache.get(dir) {
                Some((m, files)) if *m == mtime && mtime.is_some() => files.clone(),
                _ => {
                    let files = matching_entries(re, dir);
                    cache.insert(dir.clone(), (mtime, files.clone()));
                    files
                }
            };
            for f in listed {
                if out.len() >= MAX_PATH_FILES {
                    return out;
                }
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        out
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
    pub fn selects_before_exec(&self, p: &HostProcess) -> Option<bool> {
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
    pub fn may_select_container(&self, c: &ContainerInfo) -> bool {
        let mut unlabelled = c.clone();
        // Its sonde.exe / sonde.open_ports labels narrow to processes, not to the container.
        unlabelled.labels.remove(labels::EXE);
        unlabelled.labels.remove(labels::OPEN_PORTS);
        self.container_enabled(&unlabelled) || self.ports.is_some() || self.exe.is_some()
    }

    /// Whether a created container's program `exe` is worth arming in its image (see
    /// `Attacher::arm_image`): the container's labels and rules select it before it runs, and
    /// uprobes (not syscalls) would measure it.
    pub fn arms_image(&self, c: &std::sync::Arc<ContainerInfo>, exe: &std::path::Path) -> bool {
        let probe = HostProcess {
            pid: 0,
            exe: exe.to_path_buf(),
            start_time: 0,
            listen_ports: Vec::new(),
            container_id: None,
        };
        let source = match c.labels.get(labels::GO_SOURCE) {
            Some(v) => crate::config::GoSource::parse(v).unwrap_or(self.go_source),
            None => self.go_source,
        };
        !c.labels.contains_key(labels::OPEN_PORTS)
            && source == crate::config::GoSource::Uprobes
            && self.container_selects(c, &probe)
    }

    /// What measures this Go process: its container's `sonde.go_source` label, else the
    /// `go_source` setting. An invalid label is reported and ignored.
    pub fn go_source(&self, p: &HostProcess) -> crate::config::GoSource {
        let Some(c) = self.container_of(p) else {
            return self.go_source;
        };
        self.label_rules(&c).go_source.unwrap_or(self.go_source)
    }

    /// Whether traces are exported (a Go client's calls then carry trace context only uprobes
    /// propagate: see `inspect::source::choose`).
    pub fn traces(&self) -> bool {
        self.traces
    }

    /// The `go_source` setting of host files (no container label applies).
    pub fn host_go_source(&self) -> crate::config::GoSource {
        self.go_source
    }

    /// Host process: configured name > the process's OTEL_SERVICE_NAME > executable name.
    /// Container: `sonde.service.name` label > OTEL_SERVICE_NAME > compose service > container
    /// name; namespace: label > compose project.
    pub fn identity(&self, p: &HostProcess) -> Identity {
        self.identity_with_env(p, otel_env(p.pid))
    }

    /// As [`identity`](Self::identity), with the OTEL_SERVICE_NAME / _NAMESPACE the process
    /// will have (before its exec, /proc shows the runtime's environment, not its own).
    pub fn identity_with_env(
        &self,
        p: &HostProcess,
        (env_name, env_namespace): (Option<String>, Option<String>),
    ) -> Identity {
        if let Some(c) = self.container_of(p) {
            let label = |k: &str| c.labels.get(k).filter(|v| !v.is_empty()).cloned();
            let mut extra = Vec::new();
            if self.report_container {
                extra.push(("container_id", c.id.chars().take(12).collect()));
                extra.push(("container_image", c.image.clone()));
            }
            for (from, to) in &self.copied_labels {
                extra.push((*to, c.labels.get(from).cloned().unwrap_or_default()));
            }
            return Identity {
                service_name: label(labels::SERVICE_NAME)
                    .or(env_name)
                    .or_else(|| label(labels::COMPOSE_SERVICE))
                    .or_else(|| label(labels::PODMAN_COMPOSE_SERVICE))
                    .unwrap_or_else(|| c.name.clone()),
                service_namespace: label(labels::SERVICE_NAMESPACE)
                    .or_else(|| label(labels::COMPOSE_PROJECT))
                    .or_else(|| label(labels::PODMAN_COMPOSE_PROJECT))
                    .or(env_namespace)
                    .unwrap_or_default(),
                container_name: Some(c.name.clone()),
                extra,
            };
        }
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
            extra: Vec::new(),
        }
    }
}

/// Whether two readings of `/proc/<pid>/exe` name the same executable.
fn same_exe(now: &std::path::Path, before: &std::path::Path) -> bool {
    let strip = |p: &std::path::Path| {
        let s = p.as_os_str().as_encoded_bytes();
        s.strip_suffix(b" (deleted)".as_slice())
            .unwrap_or(s)
            .to_vec()
    };
    now == before || strip(now) == strip(before)
}

/// Entries of one directory looked at for `executable_name`'s files.
const MAX_NAMED_FILES: usize = 1024;
/// Files on `PATH` a name-only `executable_name` arms ahead, at most.
const MAX_PATH_FILES: usize = 32;
/// Entries of one `PATH` directory looked at (Debian's /usr/bin has ~1-3 thousand).
const MAX_PATH_ENTRIES: usize = 16384;

/// The directories of sonde's own `PATH` (the system's default when unset).
pub fn search_path() -> Vec<std::path::PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .filter(|p| p.is_absolute())
        .collect()
}

/// The runnable files of `dir` whose real path `re` matches (what `/proc/<pid>/exe` shows),
/// sorted. Only entries whose own path matches, or symlinks, are resolved.
fn matching_entries(re: &regex::Regex, dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten().take(MAX_PATH_ENTRIES) {
        let path = e.path();
        let link = e.file_type().is_ok_and(|t| t.is_symlink());
        if !link && !re.is_match(&path.to_string_lossy()) {
            continue;
        }
        let Ok(real) = std::fs::canonicalize(&path) else {
            continue;
        };
        use std::os::unix::fs::PermissionsExt;
        let runnable = std::fs::metadata(&real)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if runnable && re.is_match(&real.to_string_lossy()) && !out.contains(&real) {
            out.push(real);
        }
    }
    out.sort();
    out
}

/// The literal path each alternative of a regex starts with, when it starts with `/`, and
/// whether that is the whole match (`$` right after it). Escaped punctuation is literal; a
/// character a quantifier makes optional is not part of it.
pub fn literal_path_prefixes(pattern: &str) -> Vec<(String, bool)> {
    // Top-level alternatives only when there is no group or class to split inside.
    let alternatives: Vec<&str> = if pattern.contains(['(', '[']) {
        vec![pattern]
    } else {
        pattern.split('|').collect()
    };
    let mut out = Vec::new();
    for alt in alternatives {
        let alt = alt.strip_prefix('^').unwrap_or(alt);
        let mut literal = String::new();
        let mut exact = false;
        let mut chars = alt.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(n) if n.is_ascii_punctuation() => literal.push(n),
                    _ => break,
                },
                '$' => {
                    exact = chars.peek().is_none();
                    break;
                }
                '?' | '*' | '{' => {
                    literal.pop();
                    break;
                }
                '.' | '[' | ']' | '(' | ')' | '+' | '|' | '^' => break,
                c => literal.push(c),
            }
        }
        if literal.starts_with('/') {
            out.push((literal, exact));
        }
    }
    out
}

/// What changed since the previous scan.
#[derive(Debug, Default)]
pub struct Changes {
    pub added: Vec<(HostProcess, Identity)>,
    pub removed: Vec<u32>,
}

/// How long a process instrumented before its exec may take to exec the predicted program.
const EXEC_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Remembers the selected processes between scans.
pub struct Tracker {
    selector: Selector,
    /// Selected PIDs with their start time (a reused PID has another) and executable (an
    /// exec replaces it: a container's init is the runtime's until it execs the app).
    selected: HashMap<u32, (u64, std::path::PathBuf)>,
    /// PIDs instrumented before their exec (see `adopt`), with when: until the exec they
    /// still run the runtime, so their executable is not the one remembered yet.
    pending_exec: HashMap<u32, std::time::Instant>,
}

impl Tracker {
    pub fn new(selector: Selector) -> Self {
        Tracker {
            selector,
            selected: HashMap::new(),
            pending_exec: HashMap::new(),
        }
    }

    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// A process instrumented ahead of its exec of `exe` (a container's init waiting in
    /// runc): it counts as selected, and stays so until it runs `exe` or, if it never
    /// does (an entrypoint that runs something else), for [`EXEC_DEADLINE`].
    pub fn adopt(&mut self, pid: u32, start_time: u64, exe: std::path::PathBuf) {
        self.selected.insert(pid, (start_time, exe));
        self.pending_exec.insert(pid, std::time::Instant::now());
    }

    pub fn is_selected(&self, pid: u32) -> bool {
        self.selected.contains_key(&pid)
    }

    pub fn needs_listen_ports(&self) -> bool {
        self.selector.needs_listen_ports()
    }

    pub fn update(&mut self, scan: Vec<HostProcess>) -> Changes {
        let mut changes = Changes::default();
        let alive: HashMap<u32, (u64, &std::path::Path)> = scan
            .iter()
            .map(|p| (p.pid, (p.start_time, p.exe.as_path())))
            .collect();
        let pending = &mut self.pending_exec;
        self.selected.retain(|pid, (start, exe)| {
            let now = alive.get(pid);
            // A binary replaced on disk shows as `<path> (deleted)` in the processes still
            // running it: the same process, the same file, nothing to re-attach.
            if now.is_some_and(|(s, e)| s == start && same_exe(e, exe)) {
                pending.remove(pid);
                return true;
            }
            // Until its exec completes, the process shows runc's executable (and, in the
            // middle of the exec, sometimes "/"): not a reason to detach and re-attach,
            // which would lose the very first requests.
            // A scan taken just before the launch thread adopted it may not list it at all:
            // it is still there if /proc says so, with the same start time.
            let same_process = match now {
                Some((s, _)) => s == start,
                None => crate::discover::start_time(*pid) == Some(*start),
            };
            let waiting = same_process
                && pending
                    .get(pid)
                    .is_some_and(|since| since.elapsed() < EXEC_DEADLINE);
            if !waiting {
                pending.remove(pid);
                changes.removed.push(*pid);
            }
            waiting
        });
        for p in scan {
            if self.selected.contains_key(&p.pid) || !self.selector.matches(&p) {
                continue;
            }
            self.selected.insert(p.pid, (p.start_time, p.exe.clone()));
            let identity = self.selector.identity(&p);
            changes.added.push((p, identity));
        }
        changes
    }
}

pub use crate::discover::runtime::RUNC_INIT_COMM;

pub fn still_in_runtime(pid: u32) -> bool {
    crate::discover::proc::Proc::open(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.comm == RUNC_INIT_COMM)
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
            container_id: None,
        }
    }

    fn container_proc(pid: u32, ports: &[u16], id: &str) -> HostProcess {
        HostProcess {
            container_id: Some(id.to_string()),
            ..proc_(pid, "/app", ports, 1)
        }
    }

    fn with_container(select: DockerSelect, labels: &[(&str, &str)]) -> Selector {
        let containers = Containers::default();
        containers.write().unwrap().insert(
            "c1".to_string(),
            std::sync::Arc::new(ContainerInfo {
                id: "c1".into(),
                name: "shop-web-1".into(),
                image: "web:1".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
        );
        let config = Config {
            docker_select: select,
            ..Config::default()
        };
        Selector::new(&config).with_containers(containers)
    }

    #[test]
    fn narrowing_labels_are_parsed_once_per_registration() {
        let s = with_container(
            DockerSelect::Labelled,
            &[
                ("sonde.enable", "true"),
                ("sonde.open_ports", "8080"),
                ("sonde.exe", "(unclosed"),
            ],
        );
        let registered = |s: &Selector| s.container_of(&container_proc(1, &[], "c1")).unwrap();
        let c = registered(&s);
        let first = s.label_rules(&c);
        assert!(matches!(first.open_ports, Narrow::Only(_)));
        assert!(matches!(first.exe, Narrow::Invalid));
        for _ in 0..10 {
            // What every 250 ms scan does: no new parse (and no new warning).
            assert!(!s.matches(&container_proc(1, &[8080], "c1")));
            assert!(std::sync::Arc::ptr_eq(
                &first,
                &s.label_rules(&registered(&s))
            ));
        }
        // Registered again (the engine's event replacing a launch's guess): parsed again, and
        // the old registration's entry is gone.
        let mut fixed = (*c).clone();
        fixed.labels.insert("sonde.exe".into(), "^/app$".into());
        let containers = s.containers.clone().unwrap();
        containers
            .write()
            .unwrap()
            .insert("c1".into(), std::sync::Arc::new(fixed));
        drop(c);
        assert!(s.matches(&container_proc(1, &[8080], "c1")));
        assert!(!s.matches(&container_proc(1, &[9090], "c1")));
        assert!(!std::sync::Arc::ptr_eq(
            &first,
            &s.label_rules(&registered(&s))
        ));
        assert_eq!(s.label_rules.lock().unwrap().len(), 1);
    }

    /// Each invalid label is one event (one warning, one count), however often the scans ask.
    #[test]
    fn invalid_labels_are_counted_once_per_registration() {
        use crate::internal_events::{read, scoped, Counter};
        let _own = scoped(std::time::Duration::from_secs(30));
        let s = with_container(
            DockerSelect::Labelled,
            &[
                ("sonde.enable", "true"),
                ("sonde.open_ports", "80-x"),
                ("sonde.go_source", "ebpf"),
            ],
        );
        for _ in 0..10 {
            assert!(!s.matches(&container_proc(1, &[80], "c1")));
            assert_eq!(s.go_source(&container_proc(1, &[80], "c1")), s.go_source);
        }
        assert_eq!(read(Counter::LabelInvalid, labels::OPEN_PORTS), 1);
        assert_eq!(read(Counter::LabelInvalid, labels::GO_SOURCE), 1);
    }

    #[test]
    fn container_labels_select_and_narrow() {
        let on = with_container(DockerSelect::Labelled, &[("sonde.enable", "true")]);
        assert!(on.matches(&container_proc(1, &[], "c1")));
        assert!(!on.matches(&container_proc(1, &[], "other")));
        assert!(
            !with_container(DockerSelect::Labelled, &[]).matches(&container_proc(1, &[], "c1"))
        );
        assert!(with_container(DockerSelect::All, &[]).matches(&container_proc(1, &[], "c1")));
        let out = with_container(DockerSelect::All, &[("sonde.enable", "false")]);
        assert!(!out.matches(&container_proc(1, &[], "c1")));
        let ports = with_container(
            DockerSelect::Labelled,
            &[("sonde.enable", "true"), ("sonde.open_ports", "8080-8081")],
        );
        assert!(ports.matches(&container_proc(1, &[8081], "c1")));
        assert!(!ports.matches(&container_proc(1, &[9000], "c1")));
        let exe = with_container(
            DockerSelect::Labelled,
            &[("sonde.enable", "true"), ("sonde.exe", "^/srv/")],
        );
        assert!(!exe.matches(&container_proc(1, &[], "c1")));
    }

    #[test]
    fn listen_ports_are_read_only_when_a_rule_uses_them() {
        assert!(!Selector::new(&Config::default()).needs_listen_ports());
        let ports = Config {
            open_port: PortSet::parse("8080"),
            ..Config::default()
        };
        assert!(Selector::new(&ports).needs_listen_ports());
        assert!(
            !with_container(DockerSelect::Labelled, &[("sonde.enable", "true")])
                .needs_listen_ports()
        );
        assert!(with_container(
            DockerSelect::Labelled,
            &[("sonde.enable", "true"), ("sonde.open_ports", "8080")]
        )
        .needs_listen_ports());
    }

    #[test]
    fn rules_select_without_labels_and_labels_win() {
        let rules: Vec<crate::config::DockerRule> =
            serde_saphyr::from_str(r#"[{name: "shop-*"}, {image: "web:*", enable: false}]"#)
                .unwrap();
        let mut s = with_container(DockerSelect::Labelled, &[]);
        s.docker_rules = rules.clone();
        assert!(
            s.matches(&container_proc(1, &[], "c1")),
            "name rule selects"
        );
        let mut s = with_container(DockerSelect::Labelled, &[("sonde.enable", "false")]);
        s.docker_rules = rules.clone();
        assert!(
            !s.matches(&container_proc(1, &[], "c1")),
            "the container's label wins"
        );
        let mut s = with_container(DockerSelect::All, &[]);
        s.docker_rules = rules[1..].to_vec();
        assert!(
            !s.matches(&container_proc(1, &[], "c1")),
            "a rule excludes under select=all"
        );
    }

    #[test]
    fn literal_paths_of_executable_patterns() {
        let p = |s: &str| literal_path_prefixes(s);
        assert_eq!(
            p("^/opt/app/bin/cli$"),
            [("/opt/app/bin/cli".to_string(), true)]
        );
        assert_eq!(
            p("^/opt/app/bin/.*"),
            [("/opt/app/bin/".to_string(), false)]
        );
        assert_eq!(
            p(r"^/opt/my\.app/cli\-1$"),
            [("/opt/my.app/cli-1".to_string(), true)]
        );
        // The optional character is not part of the literal.
        assert_eq!(
            p("^/usr/bin/toolx?$"),
            [("/usr/bin/tool".to_string(), false)]
        );
        assert_eq!(
            p("^/a/x$|^/b/y$"),
            [("/a/x".to_string(), true), ("/b/y".to_string(), true)]
        );
        // Names without a path name no file.
        assert!(p("server$").is_empty());
        assert!(p("(a|/b)").is_empty());
        assert!(p(".*/cli$").is_empty());
    }

    #[test]
    fn a_name_only_pattern_names_the_matching_files_on_path() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("sonde-onpath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (bin, other) = (root.join("bin"), root.join("other"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let make = |p: &std::path::Path, mode: u32| {
            std::fs::write(p, b"x").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        make(&bin.join("report-cli"), 0o755);
        make(&bin.join("report-cli.txt"), 0o644);
        make(&bin.join("unrelated"), 0o755);
        // A command installed as a symlink to its real file elsewhere.
        make(&other.join("real-report-cli"), 0o755);
        std::os::unix::fs::symlink(other.join("real-report-cli"), bin.join("rc")).unwrap();
        let s = selector("", Some("report-cli$"));
        let re = regex::Regex::new("report-cli$").unwrap();
        let dirs = [bin.clone(), root.join("missing")];
        let canon = |p: std::path::PathBuf| std::fs::canonicalize(p).unwrap();
        assert_eq!(
            s.files_on_path(&re, &dirs),
            vec![
                canon(bin.join("report-cli")),
                canon(other.join("real-report-cli"))
            ]
        );
        // Listed again when the directory changes.
        make(&bin.join("new-report-cli"), 0o755);
        assert_eq!(s.files_on_path(&re, &dirs).len(), 3);
        // A pattern naming a path is not looked up on PATH.
        let t = selector("", Some(&format!("^{}/report-cli$", bin.display())));
        assert_eq!(t.named_files(), vec![canon(bin.join("report-cli"))]);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn named_files_are_the_matching_executables() {
        let dir = std::env::temp_dir().join(format!("sonde-named-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for (name, mode) in [
            ("cli-a", 0o755),
            ("cli-b", 0o755),
            ("cli-data", 0o644),
            ("other", 0o755),
        ] {
            let f = dir.join(name);
            std::fs::write(&f, b"x").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::os::unix::fs::symlink(dir.join("cli-a"), dir.join("cli-link")).unwrap();
        let real = std::fs::canonicalize(&dir).unwrap();
        let selector = |re: String| {
            Selector::new(&Config {
                executable_name: Some(regex::Regex::new(&re).unwrap()),
                ..Config::default()
            })
        };
        let esc = regex::escape(&real.to_string_lossy());
        let mut files = selector(format!("^{esc}/cli-.*")).named_files();
        files.sort();
        // The link resolves to cli-a, listed once; the non-executable file is left out.
        assert_eq!(files, [real.join("cli-a"), real.join("cli-b")]);
        let files = selector(format!("^{esc}/other$")).named_files();
        assert_eq!(files, [real.join("other")]);
        assert!(selector("other$".into()).named_files().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn go_source_label_overrides_the_setting() {
        use crate::config::GoSource;
        let host = proc_(1, "/srv/app", &[], 1);
        let default = with_container(DockerSelect::Labelled, &[]);
        assert_eq!(default.go_source(&host), GoSource::Uprobes);
        assert_eq!(
            default.go_source(&container_proc(1, &[], "c1")),
            GoSource::Uprobes
        );
        let labelled = with_container(DockerSelect::Labelled, &[("sonde.go_source", "syscalls")]);
        assert_eq!(
            labelled.go_source(&container_proc(1, &[], "c1")),
            GoSource::Syscalls
        );
        // Another container, or a host process, keeps the setting.
        assert_eq!(labelled.go_source(&host), GoSource::Uprobes);
        assert_eq!(
            labelled.go_source(&container_proc(1, &[], "c2")),
            GoSource::Uprobes
        );
        let invalid = with_container(DockerSelect::Labelled, &[("sonde.go_source", "ebpf")]);
        assert_eq!(
            invalid.go_source(&container_proc(1, &[], "c1")),
            GoSource::Uprobes
        );
        let mut syscalls = Selector::new(&Config {
            go_source: GoSource::Syscalls,
            ..Config::default()
        });
        assert_eq!(syscalls.go_source(&host), GoSource::Syscalls);
        let containers = Containers::default();
        containers.write().unwrap().insert(
            "c1".to_string(),
            std::sync::Arc::new(ContainerInfo {
                id: "c1".into(),
                name: "grpc-1".into(),
                image: "grpc:1".into(),
                labels: [("sonde.go_source".to_string(), "uprobes".to_string())].into(),
            }),
        );
        syscalls = syscalls.with_containers(containers);
        assert_eq!(
            syscalls.go_source(&container_proc(1, &[], "c1")),
            GoSource::Uprobes
        );
    }

    #[test]
    fn container_identity_precedence() {
        let compose = with_container(
            DockerSelect::Labelled,
            &[
                ("com.docker.compose.service", "web"),
                ("com.docker.compose.project", "shop"),
            ],
        );
        // PID 0 has no environ: the labels decide.
        let id = compose.identity(&container_proc(0, &[], "c1"));
        assert_eq!(
            (id.service_name.as_str(), id.service_namespace.as_str()),
            ("web", "shop")
        );
        assert_eq!(id.container_name.as_deref(), Some("shop-web-1"));
        let named = with_container(
            DockerSelect::Labelled,
            &[
                ("com.docker.compose.service", "web"),
                ("sonde.service.name", "checkout"),
                ("sonde.service.namespace", "prod"),
            ],
        );
        let id = named.identity(&container_proc(0, &[], "c1"));
        assert_eq!(
            (id.service_name.as_str(), id.service_namespace.as_str()),
            ("checkout", "prod")
        );
        let podman_compose = with_container(
            DockerSelect::Labelled,
            &[
                ("io.podman.compose.service", "api"),
                ("io.podman.compose.project", "store"),
            ],
        );
        let id = podman_compose.identity(&container_proc(0, &[], "c1"));
        assert_eq!(
            (id.service_name.as_str(), id.service_namespace.as_str()),
            ("api", "store")
        );
        let plain = with_container(DockerSelect::Labelled, &[]);
        assert_eq!(
            plain.identity(&container_proc(0, &[], "c1")).service_name,
            "shop-web-1"
        );
        assert!(plain
            .identity(&container_proc(0, &[], "c1"))
            .extra
            .is_empty());
    }

    #[test]
    fn container_id_image_and_chosen_labels_on_request() {
        let mut s = with_container(DockerSelect::Labelled, &[("com.example.team", "payments")]);
        s.report_container = true;
        s.copied_labels = vec![
            (
                "com.example.team".into(),
                metric_label_name("com.example.team"),
            ),
            ("missing".into(), metric_label_name("missing")),
        ];
        let id = s.identity(&container_proc(0, &[], "c1"));
        assert_eq!(
            id.extra,
            vec![
                ("container_id", "c1".to_string()),
                ("container_image", "web:1".to_string()),
                ("container_label_com_example_team", "payments".to_string()),
                ("container_label_missing", String::new()),
            ]
        );
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
    fn a_binary_replaced_on_disk_is_not_a_new_process() {
        let mut t = Tracker::new(selector("9050", None));
        let first = t.update(vec![proc_(7, "/srv/app", &[9050], 100)]);
        assert_eq!(first.added.len(), 1);
        let later = t.update(vec![proc_(7, "/srv/app (deleted)", &[9050], 100)]);
        assert!(
            later.added.is_empty() && later.removed.is_empty(),
            "{later:?}"
        );
        // An exec into another file is a change, and so is a reused PID.
        let exec = t.update(vec![proc_(7, "/srv/other", &[9050], 100)]);
        assert_eq!((exec.removed.len(), exec.added.len()), (1, 1));
        let reused = t.update(vec![proc_(7, "/srv/other", &[9050], 555)]);
        assert_eq!((reused.removed, reused.added.len()), (vec![7], 1));
    }

    #[test]
    fn port_or_executable_selects() {
        let s = selector("8080,9000-9100", Some("api$"));
        assert!(s.matches(&proc_(1, "/bin/x", &[9050], 1)));
        assert!(s.matches(&proc_(1, "/srv/api", &[], 1)));
        assert!(!s.matches(&proc_(1, "/bin/x", &[22], 1)));
    }

    #[test]
    fn a_process_adopted_before_its_exec_stays_until_it_runs_the_program() {
        let mut t = Tracker::new(selector("8080", None));
        t.adopt(20, 7, PathBuf::from("/server"));
        // Still runc, then mid-exec: kept, nothing added or removed.
        for exe in ["/memfd:runc_cloned:/proc/self/exe (deleted)", "/"] {
            let c = t.update(vec![proc_(20, exe, &[], 7)]);
            assert!(c.added.is_empty() && c.removed.is_empty(), "{exe}: {c:?}");
        }
        let c = t.update(vec![proc_(20, "/server", &[8080], 7)]);
        assert!(c.added.is_empty() && c.removed.is_empty());
        // A scan taken before the adoption does not list the process; /proc still has it.
        let me = std::process::id();
        let my_start = crate::discover::start_time(me).unwrap();
        t.adopt(me, my_start, PathBuf::from("/server"));
        let c = t.update(vec![proc_(20, "/server", &[8080], 7)]);
        assert!(c.removed.is_empty(), "{c:?}");
        t.adopt(999_999_999, 7, PathBuf::from("/server"));
        let c = t.update(vec![proc_(20, "/server", &[8080], 7)]);
        assert!(
            c.removed.contains(&999_999_999) && !c.removed.contains(&me),
            "{c:?}"
        );
        // Confirmed: from now on an exec is an exec.
        let c = t.update(vec![proc_(20, "/bin/sh", &[], 7)]);
        assert_eq!(c.removed, vec![20]);
        // A reused PID is another process, pending or not.
        t.adopt(21, 7, PathBuf::from("/server"));
        let c = t.update(vec![proc_(21, "/server", &[], 8)]);
        assert_eq!(c.removed, vec![21]);
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
