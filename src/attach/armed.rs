//! Files *armed* as a whole ([`Attacher::arm_file`], [`Attacher::arm_image`]): their probes
//! fire for every process running them and carry the file's slot in their cookie, so a
//! process is measured from its first instruction however short it lives; the first hit of
//! a process enrols it in the kernel (ebpf/sonde.bpf.c, `enrol`), or sonde enrols it
//! ([`Attacher::enrol`]) at a selected container's launch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aya::programs::uprobe::UProbeScope;

use super::links::Links;
use super::{AttachError, Attacher};
use crate::ebpf_abi::{GoOffsetsAbi, GrpcOffsetsAbi, ARMED_FILE};
use crate::inspect::ProbePlan;

/// The size of the `file_offsets` map.
const MAX_ARMED_FILES: usize = 256;

/// The path of each armed file by slot, for naming the processes the kernel enrols.
pub(crate) type ArmedSlots = Arc<RwLock<HashMap<u32, PathBuf>>>;

/// Identifies a file's content: a file rewritten in place keeps its inode, not its mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FileKey {
    dev: u64,
    ino: u64,
    mtime_ns: i128,
}

impl FileKey {
    fn of(path: &Path) -> Result<Self, AttachError> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).map_err(|source| AttachError::File {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(FileKey {
            dev: m.dev(),
            ino: m.ino(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        })
    }
}

/// A file armed as a whole: its slot, its links, and the offsets a process running it gets.
pub(super) struct ArmedFile {
    slot: u32,
    /// Whether a process running it is enrolled at its first hit (a host file selected by
    /// `executable_name`), or only when sonde enrols it (a container image's program).
    auto_enrol: bool,
    links: Links,
    offsets: GoOffsetsAbi,
    grpc: Option<GrpcOffsetsAbi>,
}

impl Attacher {
    /// Armed files' paths by slot, kept up to date.
    pub(crate) fn armed_slots(&self) -> ArmedSlots {
        self.slots.clone()
    }

    /// The slot of the armed file `path` is (by device, inode and mtime), if armed. An
    /// image's file is armed in its layer and run through each container's overlay mount,
    /// which has a device of its own but shows the layer file's inode and mtime: those two
    /// name it.
    pub(crate) fn armed_slot(&self, path: &Path) -> Option<u32> {
        let key = FileKey::of(path).ok()?;
        if let Some(a) = self.armed.get(&key) {
            return Some(a.slot);
        }
        self.armed
            .iter()
            .find(|(k, a)| !a.auto_enrol && k.ino == key.ino && k.mtime_ns == key.mtime_ns)
            .map(|(_, a)| a.slot)
    }

    /// Arms a container image's program `path` (in its layer): its probes are attached for
    /// every process that runs it, long before a container starts, but measure only the
    /// processes sonde enrols ([`Attacher::enrol`], at a selected container's launch): the
    /// launch then costs two map writes instead of registering uprobes.
    pub(crate) fn arm_image(
        &mut self,
        path: &Path,
        plan: &ProbePlan,
    ) -> Result<(u32, bool), AttachError> {
        self.arm(path, path, plan, false)
    }

    /// Arms `path` as a whole: its plan's probes fire for every process running it, each
    /// process being enrolled by the kernel at its first hit. `name` is the path processes
    /// will show as their executable. Returns the slot, and whether it was armed just now.
    /// A file rewritten since it was armed is disarmed and armed again.
    pub(crate) fn arm_file(
        &mut self,
        path: &Path,
        name: &Path,
        plan: &ProbePlan,
    ) -> Result<(u32, bool), AttachError> {
        self.arm(path, name, plan, true)
    }

    fn arm(
        &mut self,
        path: &Path,
        name: &Path,
        plan: &ProbePlan,
        auto_enrol: bool,
    ) -> Result<(u32, bool), AttachError> {
        let key = FileKey::of(path)?;
        if let Some(a) = self.armed.get(&key) {
            return Ok((a.slot, false));
        }
        // An image's file armed through another path (its layer, or a container's overlay):
        // one set of probes per inode, or every hit would count twice.
        if !auto_enrol {
            if let Some(slot) = self.armed_slot(path) {
                return Ok((slot, false));
            }
        }
        let stale: Vec<FileKey> = self
            .armed
            .keys()
            .filter(|k| k.dev == key.dev && k.ino == key.ino)
            .copied()
            .collect();
        for k in stale {
            self.disarm(k);
        }
        if self.armed.len() >= MAX_ARMED_FILES {
            return Err(AttachError::TooManyArmed(MAX_ARMED_FILES));
        }
        // A process with probes of its own on this file would hit both sets: count twice.
        if let Some(pid) = self.attached_running(key) {
            return Err(AttachError::AttachedPerProcess(pid));
        }
        // Slots are not reused: a late enrolment report must never name another file.
        let slot = self.next_slot;
        let offsets = self.offsets_abi(plan);
        let grpc = plan.grpc.as_ref().map(|g| GrpcOffsetsAbi::from(&g.offsets));
        // Offsets before probes: a hit must find them.
        self.core.insert("file_offsets", slot, offsets)?;
        if let Some(g) = grpc {
            if let Err(e) = self.core.insert("file_grpc_offsets", slot, g) {
                self.remove_file_offsets(slot);
                return Err(e.into());
            }
        }
        // Without the cookie's bit, a hit of a process sonde did not enrol is ignored.
        let cookie = auto_enrol.then_some(ARMED_FILE | u64::from(slot));
        let links = match self.attach_plan(0, plan, path, UProbeScope::AllProcesses, cookie) {
            Ok(l) => l,
            Err(e) => {
                self.remove_file_offsets(slot);
                return Err(e);
            }
        };
        self.next_slot += 1;
        self.armed.insert(
            key,
            ArmedFile {
                slot,
                auto_enrol,
                links,
                offsets,
                grpc,
            },
        );
        if auto_enrol {
            self.slots
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(slot, name.to_path_buf());
        }
        Ok((slot, true))
    }

    /// Enrols a process that runs the armed file in `slot`, as the kernel does at its first
    /// probe hit (found by a scan before it hit one); no links of its own.
    pub(crate) fn enrol(&mut self, pid: u32, slot: u32) -> Result<(), AttachError> {
        let (offsets, grpc) = self
            .armed
            .values()
            .find(|a| a.slot == slot)
            .map(|a| (a.offsets, a.grpc))
            .ok_or(AttachError::NoSlot(slot))?;
        if let Some(g) = grpc {
            self.core.insert("pid_grpc_offsets", pid, g)?;
        }
        self.core.insert("pid_offsets", pid, offsets)?;
        self.core.insert_process(pid, Vec::new());
        Ok(())
    }

    /// Records a process the kernel enrolled: its filter entries are sonde's to remove.
    pub(crate) fn adopt_enrolled(&mut self, pid: u32) {
        self.core.adopt_process(pid);
    }

    /// A process with links of its own that runs the file `key`.
    fn attached_running(&self, key: FileKey) -> Option<u32> {
        self.core
            .processes()
            .filter(|(_, links)| !links.is_empty())
            .map(|(pid, _)| pid)
            .find(|pid| {
                // Not by device: a container runs an image's file through its own overlay.
                FileKey::of(&crate::discover::proc::exe_path(*pid)).is_ok_and(|k| k.ino == key.ino)
            })
    }

    fn disarm(&mut self, key: FileKey) {
        if let Some(a) = self.armed.remove(&key) {
            self.remove_file_offsets(a.slot);
            self.slots
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&a.slot);
            self.core.detach(a.links);
        }
    }

    fn remove_file_offsets(&mut self, slot: u32) {
        self.core.remove::<GoOffsetsAbi>("file_offsets", slot);
        self.core
            .remove::<GrpcOffsetsAbi>("file_grpc_offsets", slot);
    }

    /// Links of armed files (part of [`Attacher::link_count`]).
    pub(crate) fn armed_link_count(&self) -> usize {
        self.armed.values().map(|a| a.links.len()).sum()
    }
}
