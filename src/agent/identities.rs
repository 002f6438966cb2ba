//! Who each instrumented PID is, read by the collector for every request; kept a while after
//! the process exits, for its events still in the rings.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::enrich::Identity;
use crate::export::Exporter;

/// Events can still be in the ring buffer after their process exited; keep its identity
/// this long so they are attributed correctly.
const IDENTITY_GRACE: Duration = Duration::from_secs(10);

/// Identity of each instrumented PID.
#[derive(Default)]
pub(super) struct Identities {
    live: HashMap<u32, Arc<Identity>>,
    /// PIDs that exited, with when, so late events still find their identity.
    gone: HashMap<u32, (Arc<Identity>, Instant)>,
}

impl Identities {
    pub(super) fn get(&self, pid: u32) -> Option<Arc<Identity>> {
        self.live
            .get(&pid)
            .or_else(|| self.gone.get(&pid).map(|(i, _)| i))
            .cloned()
    }

    fn insert(&mut self, pid: u32, identity: Identity) {
        self.live.insert(pid, Arc::new(identity));
    }

    /// The process is gone: its identity is kept for `IDENTITY_GRACE` from `now`. The name of
    /// its container when it was the container's last live process (its series can retire).
    pub(super) fn exited(&mut self, pid: u32, now: Instant) -> Option<String> {
        let id = self.live.remove(&pid)?;
        let last_of_container = id.container_name.as_ref().filter(|name| {
            !self
                .live
                .values()
                .any(|o| o.container_name.as_ref() == Some(*name))
        });
        let retired = last_of_container.cloned();
        self.gone.insert(pid, (id, now));
        retired
    }

    /// Forgets the identities of processes gone for longer than the grace.
    pub(super) fn sweep(&mut self, now: Instant) {
        self.gone
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < IDENTITY_GRACE);
    }
}

/// The identities for writing, whatever a panicking holder left.
pub(super) fn write(identities: &RwLock<Identities>) -> RwLockWriteGuard<'_, Identities> {
    identities.write().unwrap_or_else(|p| p.into_inner())
}

/// Names an instrumented process for the collector (and revives its container's series).
pub(super) fn register(
    identities: &RwLock<Identities>,
    exporter: &Exporter,
    pid: u32,
    identity: Identity,
) {
    if let Some(name) = &identity.container_name {
        exporter.revive_container(name);
    }
    write(identities).insert(pid, identity);
}

/// An event from a PID we no longer know (should not happen): name it after its binary.
pub(super) fn fallback_identity(pid: u32) -> Arc<Identity> {
    let name = crate::discover::proc::Proc::open(pid)
        .and_then(|p| p.exe())
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("pid-{pid}"));
    Arc::new(Identity {
        service_name: name,
        ..Identity::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, container: Option<&str>) -> Identity {
        Identity {
            service_name: name.into(),
            container_name: container.map(str::to_string),
            ..Identity::default()
        }
    }

    #[test]
    fn an_exited_process_keeps_its_identity_for_the_grace_only() {
        let mut ids = Identities::default();
        let t0 = Instant::now();
        ids.insert(7, service("api", None));
        ids.exited(7, t0);
        assert_eq!(
            ids.get(7).unwrap().service_name,
            "api",
            "late events are named"
        );
        ids.sweep(t0 + IDENTITY_GRACE - Duration::from_millis(1));
        assert!(ids.get(7).is_some(), "still within the grace");
        ids.sweep(t0 + IDENTITY_GRACE);
        assert!(ids.get(7).is_none(), "forgotten once the grace is over");
        assert!(ids.get(8).is_none());
    }

    #[test]
    fn a_container_retires_with_its_last_live_process_only() {
        let mut ids = Identities::default();
        let now = Instant::now();
        ids.insert(1, service("web", Some("web-1")));
        ids.insert(2, service("web", Some("web-1")));
        ids.insert(3, service("db", Some("db-1")));
        ids.insert(4, service("cli", None));
        assert_eq!(ids.exited(1, now), None, "pid 2 still runs in web-1");
        assert_eq!(ids.exited(2, now).as_deref(), Some("web-1"));
        assert_eq!(
            ids.exited(2, now),
            None,
            "gone already: nothing to retire twice"
        );
        assert_eq!(ids.exited(4, now), None, "a host process has no container");
        assert_eq!(ids.exited(99, now), None, "never instrumented");
        assert_eq!(ids.exited(3, now).as_deref(), Some("db-1"));
    }
}
