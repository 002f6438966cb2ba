//! Reads an executable into memory without its machine code and debug sections.
//!
//! Inspection needs the headers, the symbol and function tables, the type descriptors and the
//! build info: a few MB of a Go binary. `.text` (read later, one probed function at a time)
//! and DWARF (read only if the type descriptors fail) are most of the rest. The buffer is
//! allocated zeroed, so the pages of sections left out are never touched and never count in
//! sonde's RSS: inspecting an 8.7 MB server peaked ~5 MB lower (BENCHMARKS.md, issue 20).

use std::fs::File;
use std::os::unix::fs::FileExt as _;

/// The file's bytes, with the sections in [`Skipped`] left as zeros.
pub(crate) struct Sparse {
    pub data: Vec<u8>,
    /// `None`: the whole file was read (not a 64-bit little-endian ELF with section headers).
    pub skipped: Option<Skipped>,
}

/// What [`read`] left out, so that readers of those bytes go to the file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Skipped {
    /// File ranges `[start, end)` of the left-out executable sections.
    pub code: Vec<(u64, u64)>,
    /// Whether any `.debug_*`/`.zdebug_*` section was left out.
    pub debug: bool,
}

impl Skipped {
    /// Whether `[offset, offset + len)` touches a left-out code range.
    pub(crate) fn covers_code(&self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        self.code.iter().any(|&(s, e)| offset < e && s < end)
    }
}

const SHT_NOBITS: u32 = 8;
const SHF_EXECINSTR: u64 = 0x4;

/// Reads `size` bytes of `file`, leaving out executable and debug sections when the section
/// headers say where they are; anything unusual falls back to reading the whole file.
pub(crate) fn read(file: &File, size: u64) -> std::io::Result<Sparse> {
    let mut data = vec![0u8; size as usize];
    match sections(file, &data) {
        Some(plan) => {
            for &(start, end) in &plan.read {
                file.read_exact_at(&mut data[start as usize..end as usize], start)?;
            }
            Ok(Sparse {
                data,
                skipped: Some(plan.skipped),
            })
        }
        None => {
            file.read_exact_at(&mut data, 0)?;
            Ok(Sparse {
                data,
                skipped: None,
            })
        }
    }
}

struct Plan {
    /// File ranges to read: the headers and every section kept.
    read: Vec<(u64, u64)>,
    skipped: Skipped,
}

/// Which ranges to read, from the ELF and section headers (read here, into `data`'s length
/// only for bounds). `None` when the file is not a shape this understands.
fn sections(file: &File, data: &[u8]) -> Option<Plan> {
    let size = data.len() as u64;
    let mut ehdr = [0u8; 64];
    file.read_exact_at(&mut ehdr, 0).ok()?;
    // 64-bit, little-endian ELF only; the inspector refuses anything else anyway.
    if ehdr[..4] != *b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([ehdr[o], ehdr[o + 1]]) as u64;
    let u64_at = |o: usize| u64::from_le_bytes(ehdr[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    // No section headers, or extended numbering: read everything.
    if shoff == 0 || shnum == 0 || shentsize < 64 || shstrndx >= shnum {
        return None;
    }
    let within = |off: u64, len: u64| off.checked_add(len).filter(|&e| e <= size);
    let sh_end = within(shoff, shentsize.checked_mul(shnum)?)?;
    let ph_end = within(phoff, phentsize.checked_mul(phnum)?)?;
    let mut shdrs = vec![0u8; (sh_end - shoff) as usize];
    file.read_exact_at(&mut shdrs, shoff).ok()?;
    let shdr = |i: u64| {
        let at = (i * shentsize) as usize;
        let h = &shdrs[at..at + 64];
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
        (u32_at(0), u32_at(4), u64_at(8), u64_at(0x18), u64_at(0x20))
    };
    let (_, _, _, str_off, str_len) = shdr(shstrndx);
    within(str_off, str_len)?;
    let mut names = vec![0u8; str_len as usize];
    file.read_exact_at(&mut names, str_off).ok()?;
    let name_at = |o: u32| {
        let rest = names.get(o as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(&rest[..end])
    };

    let mut read = vec![(0, 64), (shoff, sh_end)];
    if phnum > 0 {
        read.push((phoff, ph_end));
    }
    let mut skipped = Skipped::default();
    for i in 0..shnum {
        let (name, kind, flags, off, len) = shdr(i);
        if kind == SHT_NOBITS || len == 0 {
            continue;
        }
        let end = within(off, len)?;
        let name = name_at(name)?;
        if flags & SHF_EXECINSTR != 0 {
            skipped.code.push((off, end));
        } else if name.starts_with(b".debug_") || name.starts_with(b".zdebug_") {
            skipped.debug = true;
        } else {
            read.push((off, end));
        }
    }
    Some(Plan { read, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go_server() -> Option<std::path::PathBuf> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/go-targets");
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with("-static-plain"))
            })
    }

    #[test]
    fn kept_sections_match_the_file_and_left_out_ones_stay_zero() {
        let Some(path) = go_server() else {
            eprintln!("skipped: no Go test server built (scripts/build-go-targets.sh)");
            return;
        };
        let whole = std::fs::read(&path).unwrap();
        let file = File::open(&path).unwrap();
        let sparse = read(&file, whole.len() as u64).unwrap();
        let skipped = sparse
            .skipped
            .expect("a Go ELF with section headers is read sparsely");
        assert!(skipped.debug, "{} has DWARF", path.display());
        assert_eq!(skipped.code.len(), 1, "one executable section, .text");
        let (s, e) = skipped.code[0];
        assert!(sparse.data[s as usize..e as usize].iter().all(|&b| b == 0));
        assert!(skipped.covers_code(s + 10, 4) && !skipped.covers_code(e, 4));
        let obj = object::File::parse(&whole[..]).unwrap();
        use object::{Object as _, ObjectSection as _};
        for name in [
            ".gopclntab",
            ".go.buildinfo",
            ".symtab",
            ".strtab",
            ".rodata",
        ] {
            let (off, len) = obj.section_by_name(name).unwrap().file_range().unwrap();
            let r = off as usize..(off + len) as usize;
            assert_eq!(sparse.data[r.clone()], whole[r], "{name}");
        }
    }

    #[test]
    fn anything_but_a_sectioned_elf64_is_read_whole() {
        let dir = std::env::temp_dir().join(format!("sonde-sparse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("script");
        std::fs::write(&p, b"#!/bin/sh\necho hello\n").unwrap();
        let s = read(&File::open(&p).unwrap(), 21).unwrap();
        assert!(s.skipped.is_none());
        assert_eq!(s.data, b"#!/bin/sh\necho hello\n");
        // An ELF header whose section table points past the end.
        let mut elf = vec![0u8; 128];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x28..0x30].copy_from_slice(&4096u64.to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        std::fs::write(&p, &elf).unwrap();
        let s = read(&File::open(&p).unwrap(), 128).unwrap();
        assert!(s.skipped.is_none());
        assert_eq!(s.data, elf);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
