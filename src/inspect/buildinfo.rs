//! The Go build-info blob: `\xff Go buildinf:`, pointer size, flags, then either two pointers
//! to Go strings (before Go 1.18) or the version and module info inline as varint-prefixed
//! strings (flag 0x2, Go 1.18+).

use super::elf::{file_slice, ElfLayout};
use super::{GoVersion, InspectError};

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
const ALIGN: u64 = 16;
const FLAG_BIG_ENDIAN: u8 = 0x1;
const FLAG_INLINE: u8 = 0x2;
/// Longer version or module strings are not plausible and would only cost memory.
const MAX_STRING: u64 = 1 << 20;

/// What the blob says about the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// As written by the toolchain, e.g. `go1.21.13`.
    pub version_string: String,
    pub version: GoVersion,
    /// The raw module info (`path`, `mod`, `dep` lines), possibly empty.
    pub modinfo: String,
    /// False when the binary has no build-info blob: the version then comes from the
    /// runtime's own version string and the module list is unknown.
    pub from_blob: bool,
}

/// Finds and decodes the blob. `Ok(None)` when there is none: not a Go binary.
pub fn read(data: &[u8], elf: &ElfLayout) -> Result<Option<BuildInfo>, InspectError> {
    let Some(vaddr) = find_blob(data, elf) else {
        return Ok(None);
    };
    let hdr = elf
        .bytes_at(data, vaddr, HEADER_LEN as u64)
        .ok_or_else(|| InspectError::Malformed("truncated build info header".into()))?;
    let ptr_size = hdr[14];
    let flags = hdr[15];
    if flags & FLAG_BIG_ENDIAN != 0 || ptr_size != 8 {
        return Err(InspectError::Malformed(format!(
            "build info for pointer size {ptr_size}, flags {flags:#x}: not a 64-bit little-endian binary"
        )));
    }
    let (version_string, modinfo) = if flags & FLAG_INLINE != 0 {
        let mut at = vaddr
            .checked_add(HEADER_LEN as u64)
            .ok_or_else(|| InspectError::Malformed("build info at the end of memory".into()))?;
        let v = inline_string(data, elf, &mut at)?;
        let m = inline_string(data, elf, &mut at).unwrap_or_default();
        (v, m)
    } else {
        let v = pointer_string(data, elf, vaddr.wrapping_add(16))?;
        let m = pointer_string(data, elf, vaddr.wrapping_add(24)).unwrap_or_default();
        (v, m)
    };
    let version = GoVersion::parse(&version_string).ok_or_else(|| {
        InspectError::Malformed(format!("unrecognised Go version {version_string:?}"))
    })?;
    Ok(Some(BuildInfo {
        version_string,
        version,
        modinfo,
        from_blob: true,
    }))
}

/// The blob's address: in `.go.buildinfo`, else in the first writable, non-executable load
/// segment (how `debug/buildinfo` finds it when the section headers are gone).
fn find_blob(data: &[u8], elf: &ElfLayout) -> Option<u64> {
    if let Some(s) = elf.section(".go.buildinfo") {
        if let Some(v) = scan(data, s.offset, s.size, s.addr) {
            return Some(v);
        }
    }
    let seg = elf
        .segments
        .iter()
        .find(|s| s.is_writable() && !s.is_executable())?;
    scan(data, seg.offset, seg.filesz, seg.vaddr)
}

fn scan(data: &[u8], offset: u64, size: u64, vaddr: u64) -> Option<u64> {
    let size = size.min((data.len() as u64).saturating_sub(offset));
    let bytes = file_slice(data, offset, size)?;
    // Keep the 16-byte alignment in terms of addresses, like the toolchain does.
    let first = ((ALIGN - vaddr % ALIGN) % ALIGN) as usize;
    (first..bytes.len())
        .step_by(ALIGN as usize)
        .find(|&i| bytes[i..].starts_with(MAGIC))
        .and_then(|i| vaddr.checked_add(i as u64))
}

fn inline_string(data: &[u8], elf: &ElfLayout, at: &mut u64) -> Result<String, InspectError> {
    let bad = || InspectError::Malformed("truncated build info string".into());
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *elf
            .bytes_at(data, *at, 1)
            .ok_or_else(bad)?
            .first()
            .ok_or_else(bad)?;
        *at = at.checked_add(1).ok_or_else(bad)?;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(bad());
        }
    }
    if len > MAX_STRING {
        return Err(bad());
    }
    let bytes = elf.bytes_at(data, *at, len).ok_or_else(bad)?;
    *at = at.checked_add(len).ok_or_else(bad)?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Old format: the header holds a pointer to a Go string header (data pointer, length).
fn pointer_string(data: &[u8], elf: &ElfLayout, at: u64) -> Result<String, InspectError> {
    let bad = || InspectError::Malformed("bad build info string pointer".into());
    let hdr = elf.read_ptr(data, at).ok_or_else(bad)?;
    let ptr = elf.read_ptr(data, hdr).ok_or_else(bad)?;
    let len = elf
        .read_ptr(data, hdr.checked_add(8).ok_or_else(bad)?)
        .ok_or_else(bad)?;
    if len > MAX_STRING {
        return Err(bad());
    }
    let bytes = elf.bytes_at(data, ptr, len).ok_or_else(bad)?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        let v = |s| GoVersion::parse(s);
        assert_eq!(v("go1.21.13"), Some(GoVersion::new(1, 21, 13)));
        assert_eq!(v("go1.22rc1"), Some(GoVersion::new(1, 22, 0)));
        assert_eq!(v("go1.19"), Some(GoVersion::new(1, 19, 0)));
        assert_eq!(v("devel go1.23-abcdef Tue"), Some(GoVersion::new(1, 23, 0)));
        assert_eq!(
            v("go1.24.11 X:boringcrypto"),
            Some(GoVersion::new(1, 24, 11))
        );
        assert_eq!(v("1.21"), None);
        assert_eq!(v("go"), None);
        assert_eq!(v("gox.y"), None);
    }
}
