//! The attach core both BPF objects are driven through: the Go probes ([`super::Attacher`])
//! and the syscall/OpenSSL tracer ([`super::syscalls::SyscallTracer`]). It holds one loaded
//! object, finds its programs and maps by name, attaches uprobes and records their links per
//! process, and hands the links of a process that goes to the reaper (reaper.rs), which closes
//! them off the caller's thread.

use std::collections::HashMap;
use std::path::Path;

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope};
use aya::programs::{KProbe, Program, ProgramError, TracePoint, UProbe};
use aya::{Ebpf, Pod};
use thiserror::Error;

use super::reaper::{Activity, Reaper};

/// Uprobe links, each with the name of its program (a link is taken back through it).
pub(super) type Links = Vec<(&'static str, UProbeLinkId)>;

/// A program or map of the object that cannot be had.
#[derive(Debug, Error)]
pub(crate) enum ObjectError {
    #[error("BPF program {name}: {source}")]
    Program { name: String, source: ProgramError },
    #[error("BPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("BPF object has no {0}")]
    Missing(String),
}

/// A kind of program that loads with no more than its code.
pub(super) trait Load {
    fn load_code(&mut self) -> Result<(), ProgramError>;
}

impl Load for UProbe {
    fn load_code(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

impl Load for KProbe {
    fn load_code(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

impl Load for TracePoint {
    fn load_code(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

/// A loaded BPF object and the uprobe links of each process it instruments.
pub(super) struct Core {
    // Declared first so it is dropped first: it closes the links in parallel while the
    // programs they point at are still loaded.
    reaper: Reaper,
    ebpf: Ebpf,
    processes: HashMap<u32, Links>,
}

impl Core {
    /// `activity`: shared by every reaper, since any close holds up any attach.
    pub(super) fn new(ebpf: Ebpf, activity: Activity) -> std::io::Result<Self> {
        Ok(Core {
            reaper: Reaper::new(activity)?,
            ebpf,
            processes: HashMap::new(),
        })
    }

    /// The program `name`, as the kind it is (`UProbe`, `TracePoint`, `KProbe`…).
    pub(super) fn program<'a, P>(&'a mut self, name: &'static str) -> Result<&'a mut P, ObjectError>
    where
        &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
    {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| ObjectError::Missing(name.to_string()))?
            .try_into()
            .map_err(|source| ObjectError::Program {
                name: name.to_string(),
                source,
            })
    }

    /// Loads the programs `names`, of kind `P`, into the kernel (verifier included).
    pub(super) fn load<P: Load>(
        &mut self,
        names: impl IntoIterator<Item = &'static str>,
    ) -> Result<(), ObjectError>
    where
        for<'a> &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
    {
        for name in names {
            self.program::<P>(name)?
                .load_code()
                .map_err(|source| ObjectError::Program {
                    name: name.to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The map `name`, as the kind it is, borrowed.
    pub(super) fn map<'a, M>(&'a mut self, name: &'static str) -> Result<M, ObjectError>
    where
        M: TryFrom<&'a mut Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| ObjectError::Missing(name.to_string()))?;
        M::try_from(map).map_err(|source| ObjectError::Map { name, source })
    }

    /// The map `name` (a ring buffer, a lost-record counter), as the kind it is, taken out
    /// of the object; can be taken once.
    pub(super) fn take_map<M>(&mut self, name: &'static str) -> Result<M, ObjectError>
    where
        M: TryFrom<Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .take_map(name)
            .ok_or_else(|| ObjectError::Missing(name.to_string()))?;
        M::try_from(map).map_err(|source| ObjectError::Map { name, source })
    }

    /// Sets `key` to `value` in the hash map `name`.
    pub(super) fn insert<V: Pod>(
        &mut self,
        name: &'static str,
        key: u32,
        value: V,
    ) -> Result<(), ObjectError> {
        let mut map: BpfHashMap<&mut MapData, u32, V> = self.map(name)?;
        map.insert(key, value, 0)
            .map_err(|source| ObjectError::Map { name, source })
    }

    /// Removes `key` from the hash map `name` of `V` values; absent already is fine.
    pub(super) fn remove<V: Pod>(&mut self, name: &'static str, key: u32) {
        if let Ok(mut map) = self.map::<BpfHashMap<&mut MapData, u32, V>>(name) {
            let _ = map.remove(&key);
        }
    }

    /// Attaches the uprobe program `name` at file offset `offset` of `target`, for `scope`,
    /// and records its link in `links`. A failed attach is the caller's error (`attach_error`);
    /// a program that cannot be had is the object's.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attach_uprobe<E: From<ObjectError>>(
        &mut self,
        links: &mut Links,
        name: &'static str,
        target: &Path,
        offset: u64,
        cookie: Option<u64>,
        scope: UProbeScope,
        attach_error: impl FnOnce(ProgramError) -> E,
    ) -> Result<(), E> {
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(offset),
            cookie,
        };
        let id = self
            .program::<UProbe>(name)?
            .attach(point, target, scope)
            .map_err(attach_error)?;
        links.push((name, id));
        Ok(())
    }

    /// Hands the links to the reaper, which closes them in parallel (see reaper.rs).
    pub(super) fn detach(&mut self, links: Links) {
        let mut owned = Vec::with_capacity(links.len());
        for (name, id) in links {
            if let Ok(p) = self.program::<UProbe>(name) {
                match p.take_link(id) {
                    Ok(link) => owned.push(link),
                    Err(e) => tracing::debug!("detaching a {name} link: {e}"),
                }
            }
        }
        self.reaper.reap(owned);
    }

    /// Records an instrumented process and its links.
    pub(super) fn insert_process(&mut self, pid: u32, links: Links) {
        self.processes.insert(pid, links);
    }

    /// Records a process with no links of its own, unless it is known already.
    pub(super) fn adopt_process(&mut self, pid: u32) {
        self.processes.entry(pid).or_default();
    }

    /// Forgets a process and detaches its links; whether it was known.
    pub(super) fn detach_process(&mut self, pid: u32) -> bool {
        match self.processes.remove(&pid) {
            Some(links) => {
                self.detach(links);
                true
            }
            None => false,
        }
    }

    pub(super) fn contains(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    pub(super) fn process_count(&self) -> usize {
        self.processes.len()
    }

    pub(super) fn pids(&self) -> Vec<u32> {
        self.processes.keys().copied().collect()
    }

    pub(super) fn processes(&self) -> impl Iterator<Item = (u32, &Links)> {
        self.processes.iter().map(|(pid, p)| (*pid, p))
    }

    /// Links of the processes plus detached ones still being closed.
    pub(super) fn link_count(&self) -> usize {
        self.processes
            .values()
            .map(|links| links.len())
            .sum::<usize>()
            + self.reaper.pending()
    }

    /// Where attaches say they happen, so link closing, which holds them up, waits.
    pub(super) fn activity(&self) -> &Activity {
        self.reaper.activity()
    }
}
