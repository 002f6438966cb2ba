//! Probe plans cached per file identity, so N processes of one binary are inspected once
//! and an unsupported binary is reported once. Errors are cached too.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{inspect, InspectError, ProbePlan};

/// Identity of a file's contents as far as the kernel tells: a replaced or rewritten
/// binary gets a new key, so stale offsets are never reused. The device is left out on
/// purpose: every container's overlay mount has a device of its own while the file is the
/// same lower-layer inode, so with it one image would be inspected once per container (and
/// the image's layer file, inspected ahead on the create event, would never match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    pub ino: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
    pub size: u64,
}

impl FileKey {
    /// Follows symlinks, so `/proc/<pid>/exe` names the executable itself.
    pub(crate) fn of(path: &Path) -> Result<FileKey, InspectError> {
        let m = std::fs::metadata(path).map_err(|e| InspectError::io(path, &e))?;
        Ok(FileKey {
            ino: m.ino(),
            mtime_sec: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            size: m.size(),
        })
    }
}

/// A shared inspection result (cheap to clone).
pub(crate) type CachedPlan = Result<Arc<ProbePlan>, InspectError>;

/// Bounded map from [`FileKey`] to the inspection result.
#[derive(Debug)]
pub(crate) struct PlanCache {
    inner: Mutex<Inner>,
    /// Signalled when an inspection ends.
    inspected: Condvar,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<FileKey, (u64, CachedPlan)>,
    seq: u64,
    /// Files being inspected right now: the containers of one image start together, and one
    /// inspection must serve them all.
    inspecting: HashSet<FileKey>,
}

/// Ends an inspection in flight, even if it unwinds.
struct InFlight<'a> {
    cache: &'a PlanCache,
    key: FileKey,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.cache.lock().inspecting.remove(&self.key);
        self.cache.inspected.notify_all();
    }
}

/// Distinct binaries remembered; far more than a host runs.
pub(crate) const DEFAULT_CAPACITY: usize = 256;

impl Default for PlanCache {
    fn default() -> Self {
        PlanCache::new()
    }
}

impl PlanCache {
    pub(crate) fn new() -> PlanCache {
        PlanCache::with_capacity(DEFAULT_CAPACITY)
    }

    pub(crate) fn with_capacity(capacity: usize) -> PlanCache {
        PlanCache {
            inner: Mutex::new(Inner::default()),
            inspected: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The plan for the file at `path`, inspecting it on a miss. `Err` only when the file
    /// cannot be stat'ed (e.g. the process is gone); that is not cached. The boolean says
    /// whether this call did the inspection (so callers log a failure once).
    ///
    /// A cached plan's `path` is the path of the first inspection: attach by the caller's
    /// own path (`/proc/<pid>/exe`), not by `plan.path`.
    pub(crate) fn get_or_inspect(
        &self,
        path: &Path,
    ) -> Result<(FileKey, CachedPlan, bool), InspectError> {
        let key = FileKey::of(path)?;
        {
            let mut inner = self.lock();
            loop {
                if let Some((_, p)) = inner.map.get(&key) {
                    return Ok((key, p.clone(), false));
                }
                if !inner.inspecting.contains(&key) {
                    break;
                }
                // Another thread reads this very file: wait for its answer.
                inner = self
                    .inspected
                    .wait(inner)
                    .unwrap_or_else(|e| e.into_inner());
            }
            inner.inspecting.insert(key);
        }
        let _in_flight = InFlight { cache: self, key };
        // Inspect without holding the lock: it reads the whole file.
        let started = std::time::Instant::now();
        let plan = inspect(path).map(Arc::new);
        if let Ok(p) = &plan {
            tracing::info!(
                "inspected {} (Go {}) in {:.0?}: plan cached for every process running it",
                path.display(),
                p.go_version,
                started.elapsed()
            );
        }
        // The file may have been replaced while we read it; only cache if it was not.
        if FileKey::of(path).ok() != Some(key) {
            return Ok((key, plan, true));
        }
        self.insert(key, plan.clone());
        Ok((key, plan, true))
    }

    #[cfg(test)]
    /// The plan for the file at `path` (e.g. `/proc/<pid>/exe`), inspecting it on a miss.
    /// A cached failure comes back as the same error every time; use
    /// [`get_or_inspect`](Self::get_or_inspect) to know whether it is new.
    pub(crate) fn get(&self, path: &Path) -> Result<Arc<ProbePlan>, InspectError> {
        self.get_or_inspect(path).and_then(|(_, plan, _)| plan)
    }

    /// A cached result by file identity, without inspecting.
    #[cfg(test)]
    pub(crate) fn lookup(&self, key: &FileKey) -> Option<CachedPlan> {
        let inner = self.lock();
        inner.map.get(key).map(|(_, p)| p.clone())
    }

    pub(crate) fn insert(&self, key: FileKey, plan: CachedPlan) {
        let mut inner = self.lock();
        if inner.map.len() >= self.capacity && !inner.map.contains_key(&key) {
            let oldest = inner
                .map
                .iter()
                .min_by_key(|(_, (s, _))| *s)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                inner.map.remove(&k);
            }
        }
        inner.seq += 1;
        let seq = inner.seq;
        inner.map.insert(key, (seq, plan));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    #[cfg(test)]
    /// Re-check right before attaching: offsets of a replaced binary crash the target.
    pub(crate) fn is_current(path: &Path, key: &FileKey) -> bool {
        FileKey::of(path).ok().as_ref() == Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_errors_and_follows_file_changes() {
        let dir = std::env::temp_dir().join(format!("sonde-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("notgo");
        std::fs::write(&f, b"not an elf").unwrap();
        let cache = PlanCache::with_capacity(2);
        let (k1, p1, fresh1) = cache.get_or_inspect(&f).unwrap();
        assert!(fresh1);
        assert!(matches!(&p1, Err(InspectError::NotElf(_))));
        let (k2, p2, fresh2) = cache.get_or_inspect(&f).unwrap();
        assert!(!fresh2);
        assert_eq!(k1, k2);
        assert_eq!(p1, p2);
        assert!(matches!(cache.get(&f), Err(InspectError::NotElf(_))));
        assert!(PlanCache::is_current(&f, &k1));

        // Replacing the file gives a new key (new inode) and a new inspection.
        let tmp = dir.join("notgo.new");
        std::fs::write(&tmp, b"still not an elf, longer").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert!(!PlanCache::is_current(&f, &k1));
        let (k3, _, fresh3) = cache.get_or_inspect(&f).unwrap();
        assert!(fresh3);
        assert_ne!(k1, k3);
        assert_eq!(cache.len(), 2);

        // Capacity evicts the oldest.
        let g = dir.join("other");
        std::fs::write(&g, b"x").unwrap();
        let _ = cache.get_or_inspect(&g).unwrap();
        assert_eq!(cache.len(), 2);
        assert!(cache.lookup(&k1).is_none());

        assert!(cache.get_or_inspect(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn threads_asking_for_one_file_at_once_share_one_inspection() {
        let dir = std::env::temp_dir().join(format!("sonde-cache-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Large enough that reading it takes a while, so the threads overlap.
        let f = dir.join("big");
        std::fs::write(&f, vec![0u8; 32 << 20]).unwrap();
        let cache = PlanCache::new();
        let start = std::sync::Barrier::new(8);
        let fresh: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        cache.get_or_inspect(&f).unwrap().2
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(fresh, 1, "the file was inspected {fresh} times");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
