//! Function addresses from the Go runtime's own table (`runtime.pclntab`), which survives
//! `-ldflags=-s -w` and `strip`.
//!
//! Layouts handled (all start with `pcHeader`: magic u32, two zero bytes, min instruction
//! size, pointer size, nfunc, nfiles, ...):
//! - Go 1.16/1.17, magic `0xfffffffa`: no text start; the function table holds absolute
//!   entry addresses (pointer-sized pairs).
//! - Go 1.18+, magic `0xfffffff0` / `0xfffffff1`: a `textStart` word, and u32 entry offsets
//!   relative to it. Go 1.26 stopped filling `textStart` (it needed a relocation), so the text
//!   start is taken from `runtime.firstmoduledata`, the one data word that points back at the
//!   header, and cross-checked against the other tables it points at.

use super::elf::{file_slice, read_u32, read_u64, ElfLayout};
use super::InspectError;

const MAGIC_GO116: u32 = 0xffff_fffa;
const MAGIC_GO118: u32 = 0xffff_fff0;
const MAGIC_GO120: u32 = 0xffff_fff1;
/// More functions than this is not a real binary, and would make lookups slow.
const MAX_FUNCS: u64 = 4 << 20;
/// Function names longer than this are not plausible.
const MAX_NAME: usize = 64 << 10;
/// Header candidates tried in a section-less scan: each costs a moduledata search, and a
/// crafted file could hold a magic every 8 bytes. Real binaries have one.
const MAX_CANDIDATES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Go 1.16/1.17.
    Go116,
    /// Go 1.18 and later.
    Go118,
}

/// Where the text start came from (for display and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextStartSource {
    /// Go 1.16/1.17 tables hold absolute addresses.
    NotNeeded,
    Header,
    Moduledata,
}

/// A validated pclntab, by file offsets into the binary's bytes.
#[derive(Debug, Clone)]
pub struct Pclntab {
    layout: Layout,
    /// Virtual address and file offset of the pcHeader.
    pub header_vaddr: u64,
    header_off: usize,
    /// File bytes available from `header_off` (the end of the containing section/segment).
    avail: usize,
    nfunc: usize,
    funcname_off: usize,
    pcln_off: usize,
    text_start: u64,
    pub text_start_source: TextStartSource,
    /// Address of `runtime.firstmoduledata`, when found: the way to the type metadata.
    pub moduledata: Option<u64>,
    pub generation: Generation,
}

/// Which generation of the table (and so of the runtime) wrote this binary; it tells the
/// moduledata layouts apart when the Go version is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Generation {
    /// Go 1.16 and 1.17.
    Go116,
    /// Go 1.18 and 1.19.
    Go118,
    /// Go 1.20 and later.
    Go120,
}

/// Field offsets in `runtime.moduledata`, the same from Go 1.16 to 1.27: pcHeader pointer,
/// then six slices (funcnametab, cutab, filetab, pctab, pclntable, ftab), findfunctab,
/// minpc, maxpc, text.
const MD_FUNCNAMETAB: u64 = 8;
const MD_PCLNTABLE: u64 = 8 + 4 * 24;
const MD_FTAB: u64 = 8 + 5 * 24;
const MD_TEXT: u64 = 8 + 6 * 24 + 3 * 8;

impl Pclntab {
    /// Locates and validates the table: the `.gopclntab` section, else a scan of the load
    /// segments for a plausible header (externally linked PIE binaries keep it in
    /// `.data.rel.ro`, and section headers may be gone entirely).
    pub fn find(data: &[u8], elf: &ElfLayout) -> Result<Pclntab, InspectError> {
        if let Some(s) = elf.section(".gopclntab") {
            return Pclntab::at(data, elf, s.offset, s.size, s.addr);
        }
        let mut last_err = None;
        let mut candidates = 0;
        for seg in &elf.segments {
            if seg.is_executable() {
                continue;
            }
            let Some(bytes) = file_slice(data, seg.offset, seg.filesz) else {
                continue;
            };
            let mut i = ((8 - seg.vaddr % 8) % 8) as usize;
            while i + 8 <= bytes.len() {
                if i.is_multiple_of(64 << 10) {
                    super::check_budget()?;
                }
                let m = u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
                if matches!(m, MAGIC_GO116 | MAGIC_GO118 | MAGIC_GO120)
                    && bytes[i + 4..i + 8] == [0, 0, 1, 8]
                {
                    candidates += 1;
                    if candidates > MAX_CANDIDATES {
                        return Err(InspectError::Malformed(format!(
                            "more than {MAX_CANDIDATES} pclntab header candidates"
                        )));
                    }
                    match Pclntab::at(
                        data,
                        elf,
                        seg.offset + i as u64,
                        seg.filesz - i as u64,
                        seg.vaddr.wrapping_add(i as u64),
                    ) {
                        Ok(t) => return Ok(t),
                        Err(e) => last_err = Some(e),
                    }
                }
                i += 8;
            }
        }
        Err(last_err.unwrap_or_else(|| InspectError::Malformed("no Go pclntab found".into())))
    }

    /// Validates a header at a file offset; `size` bounds every later read.
    pub fn at(
        data: &[u8],
        elf: &ElfLayout,
        offset: u64,
        size: u64,
        vaddr: u64,
    ) -> Result<Pclntab, InspectError> {
        let bad = |what: &str| InspectError::Malformed(format!("pclntab: {what}"));
        let bytes = file_slice(data, offset, size).ok_or_else(|| bad("outside the file"))?;
        let magic = read_u32(bytes, 0).ok_or_else(|| bad("truncated header"))?;
        let (layout, generation) = match magic {
            MAGIC_GO116 => (Layout::Go116, Generation::Go116),
            MAGIC_GO118 => (Layout::Go118, Generation::Go118),
            MAGIC_GO120 => (Layout::Go118, Generation::Go120),
            m => return Err(bad(&format!("unsupported magic {m:#x} (Go before 1.16?)"))),
        };
        if bytes.get(4..8) != Some(&[0, 0, 1, 8][..]) {
            return Err(bad("not an amd64 header"));
        }
        let word = |i: usize| read_u64(bytes, 8 + 8 * i).ok_or_else(|| bad("truncated header"));
        let nfunc = word(0)?;
        // Go 1.18 inserted textStart after nfiles, shifting the table offsets by one word.
        let first_off = if layout == Layout::Go116 { 2 } else { 3 };
        let funcname_off = word(first_off)?;
        let pcln_off = word(first_off + 4)?;
        if nfunc == 0 || nfunc > MAX_FUNCS {
            return Err(bad(&format!("implausible function count {nfunc}")));
        }
        let entry_size: u64 = if layout == Layout::Go116 { 16 } else { 8 };
        let ftab_end = pcln_off
            .checked_add((nfunc + 1) * entry_size)
            .ok_or_else(|| bad("function table overflows"))?;
        if funcname_off >= size || ftab_end > size {
            return Err(bad("table offsets outside the section"));
        }
        let mut t = Pclntab {
            layout,
            header_vaddr: vaddr,
            header_off: offset as usize,
            avail: bytes.len(),
            nfunc: nfunc as usize,
            funcname_off: funcname_off as usize,
            pcln_off: pcln_off as usize,
            text_start: 0,
            text_start_source: TextStartSource::NotNeeded,
            moduledata: None,
            generation,
        };
        let found = t.find_moduledata(data, elf);
        t.moduledata = found.map(|(md, _)| md);
        if layout == Layout::Go118 {
            // Prefer the moduledata (always right, the only source from Go 1.26); the header
            // word, relocated if need be, is the fallback.
            if let Some((_, text)) = found {
                t.text_start = text;
                t.text_start_source = TextStartSource::Moduledata;
            } else {
                let text = elf.read_ptr(data, vaddr.wrapping_add(24)).unwrap_or(0);
                if text == 0 {
                    return Err(bad("no text start: runtime.moduledata not found"));
                }
                t.text_start = text;
                t.text_start_source = TextStartSource::Header;
            }
        }
        // The table must be sorted; checking it once makes lookups trustworthy.
        let mut prev = 0u64;
        for i in 0..=t.nfunc {
            super::check_budget()?;
            let e = t
                .entry(data, elf, i)
                .ok_or_else(|| bad("truncated function table"))?;
            if e < prev {
                return Err(bad("function table is not sorted"));
            }
            prev = e;
        }
        Ok(t)
    }

    /// `runtime.firstmoduledata` and the text start it records, found by the word that
    /// points at this header (in the file, or as a RELA addend in PIE binaries).
    fn find_moduledata(&self, data: &[u8], elf: &ElfLayout) -> Option<(u64, u64)> {
        let target = self.header_vaddr;
        let field = |md: u64, off: u64| elf.read_ptr(data, md.checked_add(off)?);
        let funcnametab = target.checked_add(self.funcname_off as u64)?;
        let pclntable = target.checked_add(self.pcln_off as u64)?;
        let check = |md: u64| -> Option<u64> {
            let ok = field(md, MD_FUNCNAMETAB)? == funcnametab
                && field(md, MD_PCLNTABLE)? == pclntable
                && field(md, MD_FTAB)? == pclntable;
            let text = field(md, MD_TEXT)?;
            (ok && text != 0 && elf.segment_of(text).is_some_and(|s| s.is_executable()))
                .then_some(text)
        };
        for (&place, &addend) in &elf.relative {
            super::check_budget().ok()?;
            if addend == target {
                if let Some(t) = check(place) {
                    return Some((place, t));
                }
            }
        }
        for seg in elf.segments.iter().filter(|s| s.is_writable()) {
            let bytes = file_slice(data, seg.offset, seg.filesz)?;
            let start = ((8 - seg.vaddr % 8) % 8) as usize;
            let mut i = start;
            while i + 8 <= bytes.len() {
                if i.is_multiple_of(64 << 10) {
                    super::check_budget().ok()?;
                }
                if read_u64(bytes, i) == Some(target) {
                    let md = seg.vaddr.wrapping_add(i as u64);
                    if let Some(t) = check(md) {
                        return Some((md, t));
                    }
                }
                i += 8;
            }
        }
        None
    }

    fn table<'d>(&self, data: &'d [u8]) -> Option<&'d [u8]> {
        data.get(self.header_off..self.header_off.checked_add(self.avail)?)
    }

    /// Entry address of function `i` (`i == nfunc` gives the end of the last function).
    fn entry(&self, data: &[u8], elf: &ElfLayout, i: usize) -> Option<u64> {
        let t = self.table(data)?;
        match self.layout {
            Layout::Go116 => {
                let at = self.pcln_off.checked_add(i.checked_mul(16)?)?;
                read_u64(t, at)?;
                // Absolute addresses: PIE binaries keep them in relocations.
                elf.read_ptr(data, self.header_vaddr.checked_add(at as u64)?)
            }
            Layout::Go118 => {
                let at = self.pcln_off.checked_add(i.checked_mul(8)?)?;
                Some(self.text_start.checked_add(u64::from(read_u32(t, at)?))?)
            }
        }
    }

    /// Name of function `i`.
    fn name<'d>(&self, data: &'d [u8], i: usize) -> Option<&'d [u8]> {
        let t = self.table(data)?;
        let (entry_size, field, name_field) = match self.layout {
            Layout::Go116 => (16, 8, 8),
            Layout::Go118 => (8, 4, 4),
        };
        let at = self
            .pcln_off
            .checked_add(i.checked_mul(entry_size)?)?
            .checked_add(field)?;
        let funcoff = match self.layout {
            Layout::Go116 => usize::try_from(read_u64(t, at)?).ok()?,
            Layout::Go118 => read_u32(t, at)? as usize,
        };
        let func = self.pcln_off.checked_add(funcoff)?;
        let nameoff = read_u32(t, func.checked_add(name_field)?)? as i32;
        let start = self
            .funcname_off
            .checked_add(usize::try_from(nameoff).ok()?)?;
        let tail = t.get(start..)?;
        let tail = &tail[..tail.len().min(MAX_NAME)];
        let len = tail.iter().position(|&b| b == 0)?;
        Some(&tail[..len])
    }

    /// Entry and end address of a function, by its full Go name. The end is the next
    /// function's entry, so it includes any alignment padding.
    pub fn find_function(&self, data: &[u8], elf: &ElfLayout, name: &str) -> Option<(u64, u64)> {
        let i = (0..self.nfunc).find(|&i| {
            // Out of time: stop looking (the caller reports the function missing, or the
            // next budget check reports the time-out).
            super::check_budget().is_err() || self.name(data, i) == Some(name.as_bytes())
        })?;
        super::check_budget().ok()?;
        Some((self.entry(data, elf, i)?, self.entry(data, elf, i + 1)?))
    }

    #[cfg(test)]
    pub fn text_start(&self) -> u64 {
        self.text_start
    }
}
