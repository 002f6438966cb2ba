//! Struct field offsets from the binary's own runtime type metadata, which every Go binary
//! carries, stripped or not, for the types it uses through interfaces and reflection.
//!
//! The way in: `runtime.firstmoduledata` (found by [`pclntab`](super::pclntab)) records
//! where the type descriptors live (`types` .. `etypes`). Each descriptor starts with
//! `abi.Type` (48 bytes on amd64: size, ptrdata, hash, tflag, align, fieldAlign, kind,
//! equal, gcdata, str, ptrToThis); a struct adds its package path and its field slice, and a
//! named type is followed by an `uncommonType` whose first word names its import path.
//! Scanning the descriptors (rather than walking `typelinks`, which Go 1.27 removed) finds a
//! struct by its import path and name whatever the release.
//!
//! Layout changes handled:
//! - moduledata: `covctrs, ecovctrs` before `types` from Go 1.20; `typedesclen` between
//!   `types` and `etypes` from Go 1.27.
//! - struct fields: `offsetAnon` (offset << 1 | embedded) up to Go 1.18, a plain offset from
//!   Go 1.19.
//! - names: a flags byte, then a varint length (Go 1.17+), then the bytes.
//! - Go 1.27 moved the HTTP/2 server into `net/http/internal/http2` (callers pass renames).

use std::collections::HashMap;

use super::dwarf::FieldOffsets;
use super::elf::{read_u32, read_u64, ElfLayout};
use super::pclntab::Generation;
use super::GoVersion;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TypeMetaError {
    #[error("runtime.moduledata not found")]
    NoModuledata,
    #[error("no plausible type section in runtime.moduledata")]
    NoTypes,
    #[error("type metadata: {0}")]
    Malformed(String),
    #[error("type metadata walk ran out of time")]
    Timeout,
}

const TYPE_HEADER: u64 = 48;
/// `abi.StructType`: the header, `PkgPath` (a name pointer) and `Fields` (a slice).
const STRUCT_FIELDS: u64 = TYPE_HEADER + 8;
const STRUCT_UNCOMMON: u64 = STRUCT_FIELDS + 24;
const FIELD_SIZE: u64 = 24;
const KIND_MASK: u8 = 0x1f;
const KIND_STRUCT: u8 = 25;
const TFLAG_UNCOMMON: u8 = 1 << 0;
const TFLAG_EXTRA_STAR: u8 = 1 << 1;
const TFLAG_NAMED: u8 = 1 << 2;
/// Bounds for a hostile or damaged file: the largest real type sections are tens of MB.
const MAX_TYPES: u64 = 512 << 20;
const MAX_FIELDS: u64 = 1 << 14;
const MAX_NAME: usize = 1 << 16;

/// Where `types` and `etypes` sit in `runtime.moduledata` (byte offsets on amd64), by
/// runtime generation. Up to Go 1.19 they follow `end, gcdata, gcbss` at 256; Go 1.20 put
/// `covctrs, ecovctrs` before them; Go 1.27 put `typedesclen` between them.
const TYPES_GO117: (u64, u64) = (280, 288);
const TYPES_GO120: (u64, u64) = (296, 304);
const TYPES_GO127: (u64, u64) = (296, 312);

/// Where a wanted struct may live: (import path, the name callers use, its wanted fields).
type Home<'w> = (&'w str, &'w str, &'w [&'w str]);

/// How struct field offsets are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldEncoding {
    /// `offset << 1 | embedded` (Go 1.17, 1.18).
    Shifted,
    /// The offset (Go 1.19+).
    Plain,
    /// Go 1.18 or 1.19, version unknown: decided per struct from its size.
    Unknown,
}

/// The type descriptors of one binary.
#[derive(Debug)]
pub(crate) struct TypeSection {
    start: u64,
    end: u64,
    encoding: FieldEncoding,
}

impl TypeSection {
    /// Reads `types`/`etypes` out of the moduledata at `md`. `version` is the Go version when
    /// known (from the build info or the runtime's version string).
    pub(crate) fn locate(
        data: &[u8],
        elf: &ElfLayout,
        md: u64,
        generation: Generation,
        version: Option<GoVersion>,
    ) -> Result<TypeSection, TypeMetaError> {
        let word = |off: u64| elf.read_ptr(data, md.checked_add(off)?);
        let candidates: &[(u64, u64)] = match (version, generation) {
            (Some(v), _) if v >= GoVersion::new(1, 27, 0) => &[TYPES_GO127, TYPES_GO120],
            (Some(v), _) if v >= GoVersion::new(1, 20, 0) => &[TYPES_GO120, TYPES_GO127],
            (Some(_), _) | (None, Generation::Go116 | Generation::Go118) => &[TYPES_GO117],
            (None, Generation::Go120) => &[TYPES_GO127, TYPES_GO120],
        };
        let plausible = |start: u64, end: u64| {
            end > start
                && end - start <= MAX_TYPES
                && elf
                    .segment_of(start)
                    .is_some_and(|s| end - s.vaddr <= s.filesz && !s.is_executable())
        };
        for &(types_at, etypes_at) in candidates {
            let (Some(start), Some(end)) = (word(types_at), word(etypes_at)) else {
                continue;
            };
            if !plausible(start, end) {
                continue;
            }
            // Go 1.27's typedesclen is a length inside the section, never an address.
            if etypes_at == TYPES_GO127.1 && !word(304).is_some_and(|l| l > 0 && l <= end - start) {
                continue;
            }
            let encoding = match version {
                Some(v) if v < GoVersion::new(1, 19, 0) => FieldEncoding::Shifted,
                Some(_) => FieldEncoding::Plain,
                None => match generation {
                    Generation::Go116 => FieldEncoding::Shifted,
                    Generation::Go118 => FieldEncoding::Unknown,
                    Generation::Go120 => FieldEncoding::Plain,
                },
            };
            return Ok(TypeSection {
                start,
                end,
                encoding,
            });
        }
        Err(TypeMetaError::NoTypes)
    }

    /// Offsets of the wanted struct fields, keyed `("import/path.Type", "field")` as
    /// [`dwarf::struct_fields`](super::dwarf::struct_fields) keys them. `renamed` maps a
    /// type's new home to the name callers use (Go 1.27's HTTP/2 move). Structs or fields
    /// the binary does not describe are left out.
    pub(crate) fn struct_fields(
        &self,
        data: &[u8],
        elf: &ElfLayout,
        wanted: &[(&str, &[&str])],
        renamed: &[(&str, &str)],
    ) -> Result<FieldOffsets, TypeMetaError> {
        // The descriptor's own string is "pkgname.Type" (the last path element): match on
        // it first, then confirm the full import path from the uncommon type.
        let mut by_string: HashMap<String, Vec<Home>> = HashMap::new();
        for &(full, fields) in wanted {
            let mut homes = vec![full];
            homes.extend(
                renamed
                    .iter()
                    .filter(|(_, to)| *to == full)
                    .map(|(from, _)| *from),
            );
            for home in homes {
                let Some((path, name)) = home.rsplit_once('.') else {
                    continue;
                };
                let pkg = path.rsplit('/').next().unwrap_or(path);
                by_string
                    .entry(format!("{pkg}.{name}"))
                    .or_default()
                    .push((path, full, fields));
            }
        }
        let region = elf
            .bytes_at(data, self.start, self.end - self.start)
            .ok_or_else(|| TypeMetaError::Malformed("type section outside the file".into()))?;
        let mut found = FieldOffsets::new();
        let mut done: Vec<&str> = Vec::new();
        let first = ((8 - self.start % 8) % 8) as usize;
        let mut i = first;
        while i + STRUCT_UNCOMMON as usize + 4 <= region.len() {
            if i.is_multiple_of(256 << 10) && super::budget::check().is_err() {
                return Err(TypeMetaError::Timeout);
            }
            let at = i;
            i += 8;
            let tflag = region[at + 20];
            if region[at + 23] & KIND_MASK != KIND_STRUCT
                || tflag & (TFLAG_NAMED | TFLAG_UNCOMMON) != (TFLAG_NAMED | TFLAG_UNCOMMON)
            {
                continue;
            }
            let Some(str_off) = read_u32(region, at + 40) else {
                continue;
            };
            let Some(name) = self.name_at_off(data, elf, str_off) else {
                continue;
            };
            let name = if tflag & TFLAG_EXTRA_STAR != 0 {
                name.strip_prefix(b"*").unwrap_or(name)
            } else {
                name
            };
            let Some(homes) = std::str::from_utf8(name)
                .ok()
                .and_then(|n| by_string.get(n))
            else {
                continue;
            };
            let Some(pkg_path) = read_u32(region, at + STRUCT_UNCOMMON as usize)
                .and_then(|off| self.name_at_off(data, elf, off))
            else {
                continue;
            };
            let Some(&(_, full, fields)) = homes
                .iter()
                .find(|(path, full, _)| path.as_bytes() == pkg_path && !done.contains(full))
            else {
                continue;
            };
            let desc = self.start + at as u64;
            let size = read_u64(region, at).unwrap_or(0);
            let decoded = self.fields(data, elf, desc, size)?;
            for &field in fields {
                if let Some(&off) = decoded.get(field) {
                    found.insert((full.to_string(), field.to_string()), off);
                }
            }
            done.push(full);
            if done.len() == wanted.len() {
                break;
            }
        }
        Ok(found)
    }

    /// Every field of the struct descriptor at `desc`, by name, with its byte offset.
    fn fields(
        &self,
        data: &[u8],
        elf: &ElfLayout,
        desc: u64,
        size: u64,
    ) -> Result<HashMap<String, u32>, TypeMetaError> {
        let bad = |what: &str| TypeMetaError::Malformed(format!("struct at {desc:#x}: {what}"));
        let ptr = elf
            .read_ptr(data, desc + STRUCT_FIELDS)
            .ok_or_else(|| bad("no field slice"))?;
        let len = elf
            .read_ptr(data, desc + STRUCT_FIELDS + 8)
            .ok_or_else(|| bad("no field count"))?;
        if len > MAX_FIELDS {
            return Err(bad(&format!("{len} fields")));
        }
        let mut raw = Vec::with_capacity(len as usize);
        for k in 0..len {
            let f = ptr
                .checked_add(k * FIELD_SIZE)
                .ok_or_else(|| bad("field slice overflows"))?;
            let name_ptr = elf.read_ptr(data, f).ok_or_else(|| bad("field name"))?;
            let off = elf
                .read_ptr(data, f + 16)
                .ok_or_else(|| bad("field offset"))?;
            let name = self
                .name_at(data, elf, name_ptr)
                .ok_or_else(|| bad("unreadable field name"))?;
            raw.push((String::from_utf8_lossy(name).into_owned(), off));
        }
        let shifted = match self.encoding {
            FieldEncoding::Shifted => true,
            FieldEncoding::Plain => false,
            // Doubled offsets overrun the struct unless every field sits in its first half:
            // then the first reading is the one that fits.
            FieldEncoding::Unknown => raw.iter().any(|&(_, o)| o >= size.max(1)),
        };
        raw.into_iter()
            .map(|(name, o)| {
                let off = if shifted { o >> 1 } else { o };
                if off >= size.max(1) {
                    return Err(bad(&format!(
                        "field {name} at {off} beyond the size {size}"
                    )));
                }
                Ok((name, off as u32))
            })
            .collect()
    }

    /// A name referenced by an offset from the start of the type section.
    fn name_at_off<'d>(&self, data: &'d [u8], elf: &ElfLayout, off: u32) -> Option<&'d [u8]> {
        if off == 0 {
            return None;
        }
        self.name_at(data, elf, self.start.checked_add(u64::from(off))?)
    }

    /// An `abi.Name`: a flags byte, a varint length, the bytes.
    fn name_at<'d>(&self, data: &'d [u8], elf: &ElfLayout, vaddr: u64) -> Option<&'d [u8]> {
        let head = elf
            .bytes_at(data, vaddr, 6)
            .or_else(|| elf.bytes_at(data, vaddr, 2))?;
        let (mut len, mut shift, mut used) = (0usize, 0, 0);
        for &b in &head[1..] {
            used += 1;
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 21 {
                return None;
            }
        }
        if len > MAX_NAME {
            return None;
        }
        elf.bytes_at(data, vaddr.checked_add(1 + used as u64)?, len as u64)
    }
}

/// The Go version the runtime was built with (`runtime.buildVersion`), for binaries without
/// build info: a Go string header in the data segments that points at text shaped like
/// `go1.N[.P]`. `None` when no such string is found.
pub(crate) fn runtime_version(data: &[u8], elf: &ElfLayout) -> Option<(String, GoVersion)> {
    // Candidate strings first (few), then the one string header pointing at one of them.
    let mut candidates: HashMap<u64, usize> = HashMap::new();
    for seg in elf.segments.iter().filter(|s| !s.is_executable()) {
        let bytes = super::elf::file_slice(data, seg.offset, seg.filesz)?;
        for pos in memchr::memmem::find_iter(bytes, b"go1.") {
            let tail = &bytes[pos..bytes.len().min(pos + 40)];
            let len = version_len(tail);
            if len > 0 {
                candidates.insert(seg.vaddr + pos as u64, len);
            }
            if candidates.len() > 4096 {
                break;
            }
        }
    }
    if candidates.is_empty() {
        return None;
    }
    let accept = |ptr: u64, len: u64| -> Option<(String, GoVersion)> {
        let max = *candidates.get(&ptr)?;
        if len < 4 || len as usize > max {
            return None;
        }
        let s = std::str::from_utf8(elf.bytes_at(data, ptr, len)?).ok()?;
        // The whole string must be the version: a longer literal that merely starts with
        // `go1.` is somebody else's text.
        (version_len(s.as_bytes()) == s.len())
            .then(|| GoVersion::parse(s).map(|v| (s.to_string(), v)))?
    };
    // PIE: the pointer is a relocation addend.
    for (&place, &addend) in &elf.relative {
        if candidates.contains_key(&addend) {
            let len = elf.read_ptr(data, place + 8).unwrap_or(0);
            if let Some(v) = accept(addend, len) {
                return Some(v);
            }
        }
    }
    for seg in elf.segments.iter().filter(|s| s.is_writable()) {
        let bytes = super::elf::file_slice(data, seg.offset, seg.filesz)?;
        let first = ((8 - seg.vaddr % 8) % 8) as usize;
        let mut i = first;
        while i + 16 <= bytes.len() {
            let ptr = read_u64(bytes, i).unwrap_or(0);
            if candidates.contains_key(&ptr) {
                let len = read_u64(bytes, i + 8).unwrap_or(0);
                if let Some(v) = accept(ptr, len) {
                    return Some(v);
                }
            }
            i += 8;
        }
    }
    None
}

/// Length of the `go1.N[.P][rcK|betaK]` prefix of `b`, 0 when it is not one.
fn version_len(b: &[u8]) -> usize {
    let Some(rest) = b.strip_prefix(b"go1.") else {
        return 0;
    };
    let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
    let minor = digits(rest);
    if minor == 0 {
        return 0;
    }
    let mut n = 4 + minor;
    if b.get(n) == Some(&b'.') && digits(&b[n + 1..]) > 0 {
        n += 1 + digits(&b[n + 1..]);
    } else {
        for pre in [&b"rc"[..], b"beta"] {
            if b[n..].starts_with(pre) && digits(&b[n + pre.len()..]) > 0 {
                n += pre.len() + digits(&b[n + pre.len()..]);
                break;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes() {
        assert_eq!(version_len(b"go1.21.13"), 9);
        assert_eq!(version_len(b"go1.25.5Xsomething"), 8);
        assert_eq!(version_len(b"go1.22rc1 "), 9);
        assert_eq!(version_len(b"go1.x"), 0);
        assert_eq!(version_len(b"go2.1"), 0);
    }
}
