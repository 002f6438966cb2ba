//! The Go runtime's function table: the input is the `.gopclntab` section, mapped read-only
//! at a fixed address, then searched for the function sonde probes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde::fuzzing::{ElfLayout, Segment};
use sonde::fuzzing::Pclntab;

const VADDR: u64 = 0x80_0000;

fuzz_target!(|data: &[u8]| {
    let elf = ElfLayout {
        data_len: data.len(),
        segments: vec![Segment {
            vaddr: VADDR,
            memsz: data.len() as u64,
            offset: 0,
            filesz: data.len() as u64,
            flags: 4, // PF_R
        }],
        ..ElfLayout::default()
    };
    if let Ok(t) = Pclntab::at(data, &elf, 0, data.len() as u64, VADDR) {
        let _ = t.find_function(data, &elf, sonde::fuzzing::SERVE_HTTP);
    }
    // The section-less scan too (what stripped, externally linked binaries need).
    let _ = Pclntab::find(data, &elf);
});
