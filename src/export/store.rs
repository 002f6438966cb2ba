//! The one aggregation of requests: histograms per series, per process. The Prometheus
//! renderer and the OTLP encoder both read it; neither counts a request again.
//!
//! A series' Prometheus labels are resolved once, when it is created (its OTLP attributes,
//! needed once per export, are made from its key then); a request finds its series by
//! hashing borrowed fields, so the per-request path allocates nothing once its series
//! exists. Series are kept per process because OTLP reports one resource
//! per process; Prometheus sums the processes that share a label set when it renders.
//!
//! Expiry: a stopped container's series go when its TTL passes unless it starts again
//! (`retire`/`revive`); a process that exited and sent nothing for the TTL stops being
//! reported over OTLP and its counts move to `departed`, which only Prometheus reads, so
//! its counters never go backwards.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(crate) use super::histogram::{Exemplar, Histogram, Mark};
use super::names::{prometheus_labels, Instrument, Labels, RequestKey};
use crate::collect::RequestKind;
use crate::config::MetricsNaming;
use crate::enrich::{EnrichedRequest, Identity};

/// Series kept before new label sets go to one overflow series per process and kind.
pub(crate) const DEFAULT_MAX_SERIES: usize = 20_000;
/// How often `sweep` looks for processes that exited (it runs every scan).
const PROCESS_CHECK_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Series {
    pub key: RequestKey,
    /// Who the process was when these requests came: a process named late (or left
    /// unnamed after its exit) starts new series; the ones it has keep their labels.
    pub identity: Arc<Identity>,
    pub labels: Labels,
    /// In `Instrument::of(key.kind)` order.
    pub hists: Vec<Histogram>,
}

impl Series {
    fn new(naming: MetricsNaming, identity: &Arc<Identity>, key: RequestKey) -> Self {
        Series {
            identity: identity.clone(),
            labels: prometheus_labels(naming, identity, &key),
            hists: Instrument::of(key.kind)
                .iter()
                .map(|i| Histogram::new(i.bounds()))
                .collect(),
            key,
        }
    }

    fn container(&self) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == "container_name")
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) struct Process {
    pub identity: Arc<Identity>,
    /// Start of the OTLP points: first request (cumulative) or last export (delta), Unix ns.
    pub start_unix_ns: u64,
    last_update: Instant,
    /// By the hash of the key; on a collision, at the next free hash (linear probing).
    series: HashMap<u64, Series>,
}

impl Process {
    pub(crate) fn series(&self) -> impl Iterator<Item = &Series> {
        self.series.values()
    }
    pub(crate) fn series_mut(&mut self) -> impl Iterator<Item = &mut Series> {
        self.series.values_mut()
    }

    /// The slot of `key`: where it is, or the free one where it goes.
    fn slot(&self, key: &KeyRef<'_>, id: &Arc<Identity>, hash: u64) -> (u64, bool) {
        let mut h = hash;
        loop {
            match self.series.get(&h) {
                Some(s) if KeyRef::of(&s.key) == *key && same(&s.identity, id) => return (h, true),
                Some(_) => h = h.wrapping_add(1),
                None => return (h, false),
            }
        }
    }

    /// Keeps the series `keep` says, re-placing the rest so no probe chain is broken.
    fn retain(&mut self, keep: impl Fn(&Series) -> bool) -> usize {
        let before = self.series.len();
        let kept: Vec<Series> = self
            .series
            .drain()
            .map(|(_, s)| s)
            .filter(|s| keep(s))
            .collect();
        for s in kept {
            let key = KeyRef::of(&s.key);
            let (at, _) = self.slot(&key, &s.identity, key.hash());
            self.series.insert(at, s);
        }
        before - self.series.len()
    }
}

/// The key fields of a request, borrowed: hashed and compared without allocating.
#[derive(Clone, Copy, PartialEq)]
struct KeyRef<'a> {
    kind: RequestKind,
    method: &'a str,
    status: u16,
    error: bool,
    route: &'a str,
    server_address: &'a str,
    server_port: u16,
    path: Option<&'a str>,
    peer: Option<Option<IpAddr>>,
    overflow: bool,
}

impl KeyRef<'_> {
    fn hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        (self.kind as u8).hash(&mut h);
        (self.method, self.status, self.error, self.route).hash(&mut h);
        (self.server_address, self.server_port, self.path, self.peer).hash(&mut h);
        self.overflow.hash(&mut h);
        h.finish()
    }

    fn of(k: &RequestKey) -> KeyRef<'_> {
        KeyRef {
            kind: k.kind,
            method: &k.method,
            status: k.status,
            error: k.error,
            route: &k.route,
            server_address: &k.server_address,
            server_port: k.server_port,
            path: k.path.as_deref(),
            peer: k.peer,
            overflow: k.overflow,
        }
    }

    fn owned(&self) -> RequestKey {
        RequestKey {
            kind: self.kind,
            method: self.method.to_string(),
            status: self.status,
            error: self.error,
            route: self.route.to_string(),
            server_address: self.server_address.to_string(),
            server_port: self.server_port,
            path: self.path.map(str::to_string),
            peer: self.peer,
            overflow: self.overflow,
        }
    }

    fn overflow(kind: RequestKind) -> KeyRef<'static> {
        KeyRef {
            kind,
            method: "",
            status: 0,
            error: false,
            route: "",
            server_address: "",
            server_port: 0,
            path: None,
            peer: None,
            overflow: true,
        }
    }
}

pub(crate) struct Inner {
    pub processes: HashMap<u32, Process>,
    /// Counts of processes no longer reported over OTLP, by kind and labels.
    pub departed: BTreeMap<(Instrument, Labels), Histogram>,
    series_count: usize,
    /// Containers that stopped, with when their series expire.
    retiring: HashMap<String, Instant>,
    last_process_check: Option<Instant>,
    warned_full: bool,
}

pub(crate) struct Store {
    naming: MetricsNaming,
    report_target: bool,
    report_peer: bool,
    /// A process that exited goes after this long without a request.
    idle_ttl: Duration,
    max_series: usize,
    inner: Mutex<Inner>,
}

impl Store {
    pub(crate) fn new(
        naming: MetricsNaming,
        report_target: bool,
        report_peer: bool,
        idle_ttl: Duration,
        max_series: usize,
    ) -> Self {
        Store {
            naming,
            report_target,
            report_peer,
            idle_ttl,
            max_series,
            inner: Mutex::new(Inner {
                processes: HashMap::new(),
                departed: BTreeMap::new(),
                series_count: 0,
                retiring: HashMap::new(),
                last_process_check: None,
                warned_full: false,
            }),
        }
    }

    pub(crate) fn naming(&self) -> MetricsNaming {
        self.naming
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key<'a>(&self, r: &'a EnrichedRequest) -> KeyRef<'a> {
        let q = &r.request;
        let http = !q.kind.is_rpc();
        let client = matches!(q.kind, RequestKind::HttpClient | RequestKind::RpcClient);
        let server = q.kind == RequestKind::HttpServer;
        KeyRef {
            kind: q.kind,
            method: &q.method,
            status: q.status,
            // Only HTTP client calls carry an error (the kernel saw the call fail).
            error: q.error && http,
            route: if server { &r.route } else { "" },
            server_address: if client { &q.server_address } else { "" },
            server_port: if client { q.server_port } else { 0 },
            path: (http && self.report_target).then_some(q.path.as_str()),
            peer: (server && self.report_peer).then_some(q.peer),
            overflow: false,
        }
    }

    /// One short lock and a few additions: this runs for every request. `now_unix_ns` is
    /// asked only when the process is new.
    pub(crate) fn record(&self, r: &EnrichedRequest, now_unix_ns: impl FnOnce() -> u64) {
        let q = &r.request;
        let values = [
            q.duration_seconds(),
            q.request_body_bytes as f64,
            q.response_body_bytes as f64,
        ];
        let mut inner = self.lock();
        let s = self.series_for(&mut inner, r, now_unix_ns);
        for ((i, h), v) in Instrument::of(q.kind).iter().zip(&mut s.hists).zip(values) {
            h.observe(i.bounds(), v);
        }
    }

    /// The trace of a request `record` just counted, as the exemplar of its duration bucket.
    pub(crate) fn exemplar(
        &self,
        r: &EnrichedRequest,
        trace_id: [u8; 16],
        span_id: [u8; 8],
        at: u64,
    ) {
        let e = Exemplar {
            trace_id,
            span_id,
            value: r.request.duration_seconds(),
            unix_ns: at,
        };
        let mut inner = self.lock();
        let s = self.series_for(&mut inner, r, || at);
        let bounds = Instrument::of(r.request.kind)[0].bounds();
        s.hists[0].exemplar(bounds, e);
    }

    fn series_for<'a>(
        &self,
        inner: &'a mut Inner,
        r: &EnrichedRequest,
        now_unix_ns: impl FnOnce() -> u64,
    ) -> &'a mut Series {
        let Inner {
            processes,
            series_count,
            warned_full,
            ..
        } = inner;
        let p = processes.entry(r.request.pid).or_insert_with(|| Process {
            identity: r.identity.clone(),
            start_unix_ns: now_unix_ns(),
            last_update: Instant::now(),
            series: HashMap::new(),
        });
        p.last_update = Instant::now();
        if !same(&p.identity, &r.identity) {
            // Its identity was registered after its first events: OTLP names the process
            // right from now on (and sums its series that differ only by identity).
            p.identity = r.identity.clone();
        }
        let mut key = self.key(r);
        let hash = key.hash();
        let (mut at, known) = p.slot(&key, &r.identity, hash);
        if !known && *series_count >= self.max_series {
            if !*warned_full {
                *warned_full = true;
                tracing::warn!(
                    max = self.max_series,
                    "too many metric series: new label sets are counted in one overflow series"
                );
            }
            key = KeyRef::overflow(r.request.kind);
            at = p.slot(&key, &r.identity, key.hash()).0;
        }
        let identity = &r.identity;
        p.series.entry(at).or_insert_with(|| {
            *series_count += 1;
            Series::new(self.naming, identity, key.owned())
        })
    }

    /// The container stopped: its series go at `expires` unless it comes back first.
    pub(crate) fn retire_container(&self, name: &str, expires: Instant) {
        self.lock().retiring.insert(name.to_string(), expires);
    }

    pub(crate) fn revive_container(&self, name: &str) {
        self.lock().retiring.remove(name);
    }

    /// Drops the series of containers whose time is up, and now and then retires the
    /// processes that exited (`alive` says which PIDs still run).
    pub(crate) fn sweep(&self, now: Instant, alive: impl Fn(u32) -> bool) {
        let mut inner = self.lock();
        let expired: HashSet<String> = {
            let gone: Vec<String> = inner
                .retiring
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(n, _)| n.clone())
                .collect();
            for n in &gone {
                inner.retiring.remove(n);
            }
            gone.into_iter().collect()
        };
        if !expired.is_empty() {
            let Inner {
                processes,
                departed,
                series_count,
                ..
            } = &mut *inner;
            let gone = |c: Option<&str>| c.is_some_and(|c| expired.contains(c));
            for p in processes.values_mut() {
                if p.series().any(|s| gone(s.container())) {
                    *series_count -= p.retain(|s| !gone(s.container()));
                }
            }
            departed.retain(|(i, l), _| {
                let c = l.iter().find(|(k, _)| *k == "container_name");
                let keep = !gone(c.map(|(_, v)| v.as_str()));
                // A departed series is one entry per instrument; count it once.
                if !keep && i.slot() == 0 {
                    *series_count -= 1;
                }
                keep
            });
            tracing::info!("expired the series of stopped containers {expired:?}");
        }
        if inner
            .last_process_check
            .is_none_or(|t| now.saturating_duration_since(t) >= PROCESS_CHECK_EVERY)
        {
            inner.last_process_check = Some(now);
            self.retire_processes(&mut inner, alive);
        }
    }

    /// Processes that exited and were idle for the TTL: their counts move to `departed`.
    pub(crate) fn retire_processes(&self, inner: &mut Inner, alive: impl Fn(u32) -> bool) {
        let ttl = self.idle_ttl;
        let gone: Vec<u32> = inner
            .processes
            .iter()
            .filter(|(pid, p)| p.last_update.elapsed() >= ttl && !alive(**pid))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            let Some(p) = inner.processes.remove(&pid) else {
                continue;
            };
            for s in p.series.into_values() {
                inner.series_count -= 1;
                for (i, h) in Instrument::of(s.key.kind).iter().zip(s.hists) {
                    match inner.departed.entry((*i, s.labels.clone())) {
                        std::collections::btree_map::Entry::Occupied(mut e) => {
                            e.get_mut().merge(&h)
                        }
                        std::collections::btree_map::Entry::Vacant(e) => {
                            if i.slot() == 0 {
                                inner.series_count += 1;
                            }
                            e.insert(h);
                        }
                    }
                }
            }
        }
    }
}

fn same(a: &Arc<Identity>, b: &Arc<Identity>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// Whether a process still runs.
pub(crate) fn pid_alive(pid: u32) -> bool {
    crate::discover::proc::exists(pid)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
