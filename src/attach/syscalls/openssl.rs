//! OpenSSL in a traced process: the libssl it maps (or its own executable, when OpenSSL is
//! linked in statically), the file offsets of SSL_read/SSL_write there, found once per file,
//! and the uprobes on them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aya::programs::uprobe::UProbeScope;
use object::{Object, ObjectSegment, ObjectSymbol};

use crate::attach::links::{Core, Links, ObjectError};

/// OpenSSL functions and their entry programs; one return program serves them all.
const SSL_FUNCTIONS: &[(&str, &str)] = &[
    ("SSL_read", "ssl_read_entry"),
    ("SSL_write", "ssl_write_entry"),
    ("SSL_read_ex", "ssl_read_ex_entry"),
    ("SSL_write_ex", "ssl_write_ex_entry"),
];
const SSL_RETURN: &str = "ssl_return";

/// A file's (device, inode, mtime).
type FileKey = (u64, u64, i64);
/// Entry program and file offset of each OpenSSL function a file defines.
pub(super) type SslOffsets = Vec<(&'static str, u64)>;

/// Bound on the cache: past it the cache starts over.
const OFFSETS_CACHE_MAX: usize = 256;

/// OpenSSL offsets by file (device, inode, mtime): finding them reads the whole file (a
/// Node.js binary is ~100 MB), once per file rather than once per process.
#[derive(Default)]
pub(super) struct SslOffsetCache {
    offsets: HashMap<FileKey, SslOffsets>,
}

impl SslOffsetCache {
    pub(super) fn get(&mut self, file: &Path) -> SslOffsets {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(file) else {
            return Vec::new();
        };
        let key = (meta.dev(), meta.ino(), meta.mtime());
        if let Some(found) = self.offsets.get(&key) {
            return found.clone();
        }
        let found = ssl_offsets(file);
        // The file was read whole and freed: hand those pages back.
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
        if self.offsets.len() >= OFFSETS_CACHE_MAX {
            self.offsets.clear();
        }
        self.offsets.insert(key, found.clone());
        found
    }
}

/// The programs to load: each function's entry program and the return program.
pub(super) fn programs() -> impl Iterator<Item = &'static str> {
    SSL_FUNCTIONS
        .iter()
        .map(|&(_, p)| p)
        .chain(std::iter::once(SSL_RETURN))
}

/// The mapped file of `pid` that is OpenSSL's libssl, as a path sonde can open.
pub(super) fn mapped_libssl(pid: u32) -> Option<PathBuf> {
    let maps = crate::discover::proc::Proc::open(pid)
        .and_then(|p| p.mapped_files())
        .ok()?;
    let path = maps.iter().find(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("libssl.so"))
    })?;
    // Through the process's root, so a container's own libssl is found.
    Some(crate::discover::proc::in_root_of(pid, path))
}

/// File offsets of the OpenSSL functions `file` defines (empty when it has none).
pub(super) fn ssl_offsets(file: &Path) -> Vec<(&'static str, u64)> {
    let Ok(data) = std::fs::read(file) else {
        return Vec::new();
    };
    let Ok(obj) = object::File::parse(&*data) else {
        return Vec::new();
    };
    let segments: Vec<(u64, u64, u64)> = obj
        .segments()
        .filter_map(|s| {
            let (off, size) = s.file_range();
            (size > 0).then_some((s.address(), size, off))
        })
        .collect();
    let mut out = Vec::new();
    for &(name, prog) in SSL_FUNCTIONS {
        let addr = obj
            .dynamic_symbols()
            .chain(obj.symbols())
            .find(|s| s.is_definition() && s.name() == Ok(name))
            .map(|s| s.address());
        let Some(addr) = addr else { continue };
        if let Some(&(vaddr, _, off)) = segments
            .iter()
            .find(|&&(vaddr, size, _)| addr >= vaddr && addr < vaddr + size)
        {
            out.push((prog, addr - vaddr + off));
        }
    }
    out
}

/// Entry probes on each function the file has, one return probe each; all or nothing.
pub(super) fn attach(
    core: &mut Core,
    file: &Path,
    offsets: &[(&'static str, u64)],
    scope: UProbeScope,
) -> Result<Links, ObjectError> {
    let mut links = Links::new();
    let mut result = Ok(());
    'functions: for &(prog, offset) in offsets {
        // The return probe first: an entry without its return would leave state behind.
        for name in [SSL_RETURN, prog] {
            let failed = |source| ObjectError::Program {
                name: name.to_string(),
                source,
            };
            result = core.attach_uprobe(&mut links, name, file, offset, None, scope, failed);
            if result.is_err() {
                break 'functions;
            }
        }
    }
    match result {
        Ok(()) => Ok(links),
        Err(e) => {
            core.detach(links);
            Err(e)
        }
    }
}
