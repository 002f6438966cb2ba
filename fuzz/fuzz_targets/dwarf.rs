//! The DWARF struct walk on raw sections, without an ELF around them (a mutated ELF rarely
//! keeps valid DWARF, so `inspect_elf` seldom reaches it). Input: `.debug_abbrev`'s length
//! and `.debug_str`'s (u32 little-endian each), those two sections, then `.debug_info`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde::fuzzing::{offsets_from_sections, RawSections};

fn split(data: &[u8]) -> Option<RawSections<'_>> {
    let len = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let (abbrev_len, str_len) = (len(0)?, len(4)?);
    let rest = data.get(8..)?;
    let abbrev = rest.get(..abbrev_len)?;
    let rest = &rest[abbrev_len..];
    let str = rest.get(..str_len)?;
    Some(RawSections {
        info: &rest[str_len..],
        abbrev,
        str,
        ..RawSections::default()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some(sections) = split(data) {
        let _ = offsets_from_sections(&sections);
    }
});
