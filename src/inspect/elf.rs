//! The parts of an x86-64 ELF image the inspector needs, copied out of the `object` parser so
//! they can live next to the file bytes without borrowing them: load segments, sections,
//! `.symtab` functions and the RELA relative relocations (PIE binaries keep pointers there,
//! with zeros in the file).

use std::collections::HashMap;

use object::elf;
use object::read::elf::{Dyn, ProgramHeader as _, Rela};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

use super::InspectError;

/// One `PT_LOAD` program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub flags: u32,
}

impl Segment {
    pub fn is_writable(&self) -> bool {
        self.flags & elf::PF_W != 0
    }

    pub fn is_executable(&self) -> bool {
        self.flags & elf::PF_X != 0
    }
}

/// One section with bytes in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
}

/// Owned layout of an ELF file; every address lookup is bounds-checked against `data_len`.
#[derive(Debug, Clone, Default)]
pub struct ElfLayout {
    pub data_len: usize,
    pub segments: Vec<Segment>,
    pub sections: Vec<Section>,
    /// `.symtab` function symbols: name → (address, size).
    pub functions: HashMap<String, (u64, u64)>,
    /// `R_X86_64_RELATIVE` relocations: place → addend.
    pub relative: HashMap<u64, u64>,
}

/// More relocations than this is not a plausible executable.
const MAX_RELOCS: usize = 16 << 20;
/// More function symbols than this neither (a large Go binary has ~100 000).
const MAX_SYMBOLS: usize = 4 << 20;

impl ElfLayout {
    /// Parses an x86-64 ELF64 image.
    pub fn parse(data: &[u8]) -> Result<ElfLayout, InspectError> {
        let file = object::File::parse(data)
            .map_err(|e| InspectError::NotElf(format!("cannot parse as ELF: {e}")))?;
        let object::File::Elf64(ref ef) = file else {
            return Err(InspectError::NotElf(format!(
                "{:?} file, only 64-bit ELF is supported",
                file.format()
            )));
        };
        if file.architecture() != object::Architecture::X86_64 {
            return Err(InspectError::UnsupportedArch(format!(
                "{:?}",
                file.architecture()
            )));
        }
        let endian = ef.endian();
        let mut layout = ElfLayout {
            data_len: data.len(),
            ..ElfLayout::default()
        };
        let mut dynamic = None;
        for ph in ef.elf_program_headers() {
            let seg = Segment {
                vaddr: ph.p_vaddr(endian),
                memsz: ph.p_memsz(endian),
                offset: ph.p_offset(endian),
                filesz: ph.p_filesz(endian),
                flags: ph.p_flags(endian),
            };
            match ph.p_type(endian) {
                elf::PT_LOAD => layout.segments.push(seg),
                elf::PT_DYNAMIC => dynamic = Some(seg),
                _ => {}
            }
        }
        for s in file.sections() {
            if s.kind() == SectionKind::UninitializedData {
                continue;
            }
            let Some((offset, size)) = s.file_range() else {
                continue;
            };
            layout.sections.push(Section {
                name: s.name().unwrap_or("").to_string(),
                addr: s.address(),
                offset,
                size,
            });
        }
        for (n, sym) in file.symbols().enumerate() {
            if n > MAX_SYMBOLS {
                return Err(InspectError::Malformed(format!(
                    "more than {MAX_SYMBOLS} symbols"
                )));
            }
            if n.is_multiple_of(4096) {
                super::check_budget()?;
            }
            if sym.kind() != SymbolKind::Text || sym.address() == 0 {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            layout
                .functions
                .entry(name.to_string())
                .or_insert((sym.address(), sym.size()));
        }
        if let Some(dynseg) = dynamic {
            layout.read_relative_relocs(data, dynseg, endian)?;
        }
        Ok(layout)
    }

    /// Reads `DT_RELA` through the dynamic segment, so it works without section headers.
    fn read_relative_relocs(
        &mut self,
        data: &[u8],
        dynseg: Segment,
        endian: object::Endianness,
    ) -> Result<(), InspectError> {
        let dyn_bytes = file_slice(data, dynseg.offset, dynseg.filesz)
            .ok_or_else(|| InspectError::Malformed("PT_DYNAMIC outside the file".into()))?;
        let n = dyn_bytes.len() / std::mem::size_of::<elf::Dyn64<object::Endianness>>();
        let (entries, _): (&[elf::Dyn64<object::Endianness>], _) =
            object::pod::slice_from_bytes(dyn_bytes, n)
                .map_err(|_| InspectError::Malformed("bad dynamic section".into()))?;
        let (mut rela, mut relasz) = (None, None);
        for d in entries {
            match d.d_tag(endian) {
                elf::DT_NULL => break,
                elf::DT_RELA => rela = Some(d.d_val(endian)),
                elf::DT_RELASZ => relasz = Some(d.d_val(endian)),
                _ => {}
            }
        }
        let (Some(rela), Some(relasz)) = (rela, relasz) else {
            return Ok(());
        };
        let off = self
            .vaddr_to_offset(rela)
            .ok_or_else(|| InspectError::Malformed("DT_RELA outside the file".into()))?;
        let bytes = file_slice(data, off, relasz)
            .ok_or_else(|| InspectError::Malformed("DT_RELASZ outside the file".into()))?;
        let n = bytes.len() / std::mem::size_of::<elf::Rela64<object::Endianness>>();
        if n > MAX_RELOCS {
            return Err(InspectError::Malformed(format!("{n} relocations")));
        }
        let (relocs, _): (&[elf::Rela64<object::Endianness>], _) =
            object::pod::slice_from_bytes(bytes, n)
                .map_err(|_| InspectError::Malformed("bad relocation table".into()))?;
        for r in relocs {
            if r.r_type(endian, false) == elf::R_X86_64_RELATIVE {
                self.relative
                    .insert(r.r_offset(endian), r.r_addend(endian) as u64);
            }
        }
        Ok(())
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The load segment whose file-backed bytes hold `vaddr`.
    pub fn segment_of(&self, vaddr: u64) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
    }

    /// What uprobes take: the file offset of a mapped address.
    pub fn vaddr_to_offset(&self, vaddr: u64) -> Option<u64> {
        let s = self.segment_of(vaddr)?;
        let off = s.offset.checked_add(vaddr - s.vaddr)?;
        (off < self.data_len as u64).then_some(off)
    }

    /// `len` file bytes at `vaddr`, all inside one segment.
    pub fn bytes_at<'d>(&self, data: &'d [u8], vaddr: u64, len: u64) -> Option<&'d [u8]> {
        let s = self.segment_of(vaddr)?;
        let rel = vaddr - s.vaddr;
        if rel.checked_add(len)? > s.filesz {
            return None;
        }
        file_slice(data, s.offset.checked_add(rel)?, len)
    }

    /// A pointer-sized word at `vaddr`, with the relocation applied when the loader would
    /// write it (RELA keeps the value out of the file).
    pub fn read_ptr(&self, data: &[u8], vaddr: u64) -> Option<u64> {
        if let Some(&v) = self.relative.get(&vaddr) {
            return Some(v);
        }
        let b = self.bytes_at(data, vaddr, 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

/// `data[off..off+len]`, or `None` if any part falls outside.
pub(crate) fn file_slice(data: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end)
}

pub(crate) fn read_u32(data: &[u8], off: usize) -> Option<u32> {
    let b = data.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

pub(crate) fn read_u64(data: &[u8], off: usize) -> Option<u64> {
    let b = data.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}
