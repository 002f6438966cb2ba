//! Container labels users put on their services (`sonde.enable`, `sonde.open_ports`, ...,
//! and the compose ones identity falls back on), and the narrowing rules a container's
//! `sonde.open_ports` / `sonde.exe` / `sonde.go_source` labels make, parsed once per registration of the container.

use std::collections::HashMap;

use super::Selector;
use crate::config::PortSet;
use crate::discover::docker::ContainerInfo;
use crate::discover::HostProcess;

pub(crate) const ENABLE: &str = "sonde.enable";
pub(crate) const OPEN_PORTS: &str = "sonde.open_ports";
pub(crate) const EXE: &str = "sonde.exe";
pub(crate) const SERVICE_NAME: &str = "sonde.service.name";
pub(crate) const SERVICE_NAMESPACE: &str = "sonde.service.namespace";
pub(crate) const GO_SOURCE: &str = "sonde.go_source";
pub(crate) const COMPOSE_SERVICE: &str = "com.docker.compose.service";
pub(crate) const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// podman-compose sets the Docker ones too; older versions only these.
pub(crate) const PODMAN_COMPOSE_SERVICE: &str = "io.podman.compose.service";
pub(crate) const PODMAN_COMPOSE_PROJECT: &str = "io.podman.compose.project";

/// Parsed narrowing labels by container id, with the registration they were parsed from: a
/// container registered again (an engine event replacing what a launch learned) is parsed
/// again, anything else never.
pub(super) type RuleCache =
    HashMap<String, (std::sync::Arc<ContainerInfo>, std::sync::Arc<LabelRules>)>;

/// What a narrowing label allows.
#[derive(Debug, Clone)]
pub(crate) enum Narrow<T> {
    /// No such label: every process of the container.
    Any,
    /// Only the processes this value matches.
    Only(T),
    /// The label cannot be parsed: none of the container's processes (reported once).
    Invalid,
}

/// A container's `sonde.open_ports`, `sonde.exe` and `sonde.go_source` labels as rules.
#[derive(Debug, Clone)]
pub(crate) struct LabelRules {
    pub open_ports: Narrow<PortSet>,
    pub exe: Narrow<regex::Regex>,
    /// `None`: no label, or an invalid one (reported once): the `go_source` setting.
    pub go_source: Option<crate::config::GoSource>,
}

impl LabelRules {
    /// Parses the labels, warning about each invalid one (once: see `Selector::label_rules`);
    /// `go_source`: the setting an invalid `sonde.go_source` label falls back to.
    pub(crate) fn parse(c: &ContainerInfo, go_source: crate::config::GoSource) -> LabelRules {
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
            open_ports: narrow(c, OPEN_PORTS, PortSet::parse),
            exe: narrow(c, EXE, |v| regex::Regex::new(v).ok()),
            go_source: c.labels.get(GO_SOURCE).and_then(|v| {
                let parsed = crate::config::GoSource::parse(v);
                if parsed.is_none() {
                    crate::internal_events::emit(crate::internal_events::LabelInvalid {
                        container: &c.name,
                        label: GO_SOURCE,
                        value: v,
                        fallback: Some(("auto, uprobes or syscalls", go_source.name())),
                    });
                }
                parsed
            }),
        }
    }

    /// Whether the labels let this process of the container be measured.
    pub(super) fn allow(&self, p: &HostProcess) -> bool {
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

impl Selector {
    /// The container's narrowing labels as rules, parsed when this registration of it is
    /// first seen. Entries of containers no longer registered are dropped then too.
    pub(crate) fn label_rules(
        &self,
        c: &std::sync::Arc<ContainerInfo>,
    ) -> std::sync::Arc<LabelRules> {
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
}
