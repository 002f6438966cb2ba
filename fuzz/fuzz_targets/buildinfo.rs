//! The Go build-info blob, found by its magic in a writable segment that covers the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde::fuzzing::{ElfLayout, Segment};

fuzz_target!(|data: &[u8]| {
    let elf = ElfLayout {
        data_len: data.len(),
        segments: vec![Segment {
            vaddr: 0x60_0000,
            memsz: data.len() as u64,
            offset: 0,
            filesz: data.len() as u64,
            flags: object_flags::PF_R | object_flags::PF_W,
        }],
        ..ElfLayout::default()
    };
    let _ = sonde::fuzzing::read_buildinfo(data, &elf);
});

mod object_flags {
    pub const PF_W: u32 = 2;
    pub const PF_R: u32 = 4;
}
