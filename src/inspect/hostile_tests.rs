//! Hostile and broken binaries: every one must come back as an error, quickly, never a
//! panic. Regression tests for what the fuzz targets (fuzz/) found live here too.

use std::time::{Duration, Instant};

use object::{Object, ObjectSection};

use super::elf::{ElfLayout, Segment};
use super::testbins::{self, Variant};
use super::*;

/// A real binary to break, from the oldest toolchain found (Go 1.19: zlib `.zdebug_*` DWARF)
/// or any other.
fn real(variant: Variant) -> Option<(String, Vec<u8>)> {
    let (label, go) = testbins::toolchains().into_iter().next()?;
    let path = testbins::get(&label, &go, variant)?;
    Some((label, std::fs::read(path).ok()?))
}

#[test]
fn truncated_and_flipped_binaries_are_errors() {
    for variant in [Variant::Static, Variant::StaticSw] {
        let Some((label, data)) = real(variant) else {
            eprintln!("skipping: no Go toolchain");
            return;
        };
        let t = Instant::now();
        // Truncations everywhere, including inside the headers.
        let cuts = [
            0,
            1,
            4,
            16,
            63,
            64,
            200,
            4096,
            data.len() / 3,
            data.len() / 2,
        ];
        for &cut in &cuts {
            let r = inspect_bytes("cut".into(), data[..cut].to_vec(), Duration::from_secs(10));
            assert!(r.is_err(), "{label} {variant:?} cut at {cut}: {r:?}");
        }
        // Byte flips spread over the file: any result is fine, a panic is not.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..24 {
            let mut d = data.clone();
            for _ in 0..64 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state % d.len() as u64) as usize;
                d[i] ^= (state >> 32) as u8 | 1;
            }
            let _ = inspect_bytes("flip".into(), d, Duration::from_secs(10));
        }
        eprintln!("{label} {variant:?}: hostile variants in {:?}", t.elapsed());
    }
}

#[test]
fn a_spent_budget_is_a_timeout() {
    let Some((_, data)) = real(Variant::StaticSw) else {
        eprintln!("skipping: no Go toolchain");
        return;
    };
    let r = inspect_bytes("slow".into(), data, Duration::ZERO);
    assert_eq!(r, Err(InspectError::Timeout(Duration::ZERO)));
    assert_eq!(InspectError::Timeout(Duration::ZERO).reason(), "timeout");
}

#[test]
fn compressed_dwarf_claiming_gigabytes_is_refused_not_allocated() {
    // Go 1.21+ writes SHF_COMPRESSED `.debug_*` sections with an Elf64_Chdr in front:
    // ch_type u32, reserved u32, ch_size u64. Claim 64 GiB.
    let found = testbins::toolchains().into_iter().find_map(|(label, go)| {
        let v = GoVersion::parse(&format!("go{label}"))?;
        (v >= GoVersion::new(1, 21, 0))
            .then(|| testbins::get(&label, &go, Variant::Static))
            .flatten()
    });
    let Some(path) = found else {
        eprintln!("skipping: no Go >= 1.21 toolchain");
        return;
    };
    let mut data = std::fs::read(&path).unwrap();
    let (off, flags) = {
        let f = object::File::parse(&data[..]).unwrap();
        let s = f.section_by_name(".debug_info").expect(".debug_info");
        let object::SectionFlags::Elf { sh_flags } = s.flags() else {
            panic!("not ELF")
        };
        (s.file_range().unwrap().0 as usize, sh_flags)
    };
    assert!(
        flags & u64::from(object::elf::SHF_COMPRESSED) != 0,
        "{flags:#x}"
    );
    data[off + 8..off + 16].copy_from_slice(&(64u64 << 30).to_le_bytes());
    let f = object::File::parse(&data[..]).unwrap();
    match dwarf::offsets(&f) {
        Err(dwarf::DwarfError::TooLarge { size, .. }) => assert_eq!(size, 64 << 30),
        other => panic!("{other:?}"),
    }
    // The gRPC walk reads the same sections through the same bounded loader (it once
    // decompressed them unbounded).
    match dwarf::struct_fields(&f, &[("google.golang.org/grpc.Server", &["opts"])]) {
        Err(dwarf::DwarfError::TooLarge { size, .. }) => assert_eq!(size, 64 << 30),
        other => panic!("{other:?}"),
    }
    drop(f);
    // The plan still comes, from the type metadata (DWARF is not even read)...
    let plan = inspect_bytes(path.clone(), data.clone(), Duration::from_secs(10)).unwrap();
    assert_eq!(plan.offsets_source, OffsetsSource::TypeMetadata);
    // ... and without it, past the refused DWARF, from the built-in table.
    let mut bin = GoBinary::from_bytes(path, data).unwrap();
    bin.no_type_metadata = true;
    match bin.plan() {
        Ok(plan) => assert!(matches!(plan.offsets_source, OffsetsSource::Table(_))),
        Err(InspectError::NoOffsets(_)) => {}
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn address_arithmetic_cannot_overflow() {
    let elf = ElfLayout {
        data_len: 0x2000,
        segments: vec![Segment {
            // The last byte of the segment is the last byte of the address space.
            vaddr: u64::MAX - 0xff,
            memsz: 0x100,
            offset: 0x1000,
            filesz: 0x100,
            flags: object::elf::PF_R | object::elf::PF_W,
        }],
        ..ElfLayout::default()
    };
    let data = vec![0u8; 0x2000];
    assert_eq!(elf.bytes_at(&data, u64::MAX - 0x10, u64::MAX), None);
    assert_eq!(elf.read_ptr(&data, u64::MAX - 4), None);
    assert!(elf.bytes_at(&data, u64::MAX - 0xff, 8).is_some());
    assert!(elf.bytes_at(&data, u64::MAX, 1).is_some());
    // A build-info blob at the very top of memory, and a pclntab header there.
    let mut blob = data.clone();
    blob[0x1000..0x100e].copy_from_slice(b"\xff Go buildinf:");
    // Flags 0x2 (inline strings) with varints running off the top of the address space.
    blob[0x100f] = 0x2;
    blob[0x100e] = 8;
    blob[0x10f0..0x1100].fill(0xff);
    blob[0x1020] = 0x7f; // a version string running to the end of memory
    assert!(buildinfo::read(&blob, &elf).is_err());
    let _ = pclntab::Pclntab::at(&data, &elf, 0x1000, 0x100, u64::MAX - 0xff);
}

/// The hand-made seed of the `pclntab` fuzz target is a valid Go 1.20 table, so the fuzzer
/// starts from inputs that reach the lookups rather than the header checks only.
#[test]
fn fuzz_seed_pclntab_is_a_valid_table() {
    let data = include_bytes!("../../fuzz/corpus/pclntab/minimal-go1.20");
    let vaddr = 0x80_0000;
    let elf = ElfLayout {
        data_len: data.len(),
        segments: vec![Segment {
            vaddr,
            memsz: data.len() as u64,
            offset: 0,
            filesz: data.len() as u64,
            flags: object::elf::PF_R,
        }],
        ..ElfLayout::default()
    };
    let t = pclntab::Pclntab::at(data, &elf, 0, data.len() as u64, vaddr).unwrap();
    assert_eq!(
        t.find_function(data, &elf, SERVE_HTTP),
        Some((0x401100, 0x401200))
    );
    assert_eq!(
        t.find_function(data, &elf, "runtime.main"),
        Some((0x401000, 0x401100))
    );
    assert_eq!(t.find_function(data, &elf, "main.main"), None);
}

/// The `dwarf` fuzz target's committed seed is a real unit: the walk finds the struct and
/// both its members, so mutations start from a path that reaches the member decoding.
#[test]
fn fuzz_seed_dwarf_is_a_valid_unit() {
    let r = dwarf::offsets_from_sections(&dwarf_input(include_bytes!(
        "../../fuzz/corpus/dwarf/request-struct"
    )));
    // Method and URL were read; the first field the seed lacks is the next one asked for.
    match r {
        Err(dwarf::DwarfError::MissingField(f)) => {
            assert_eq!(f, "net/http.Request.ContentLength")
        }
        other => panic!("{other:?}"),
    }
}

/// The `dwarf` fuzz target's input layout (see fuzz/fuzz_targets/dwarf.rs).
fn dwarf_input(data: &[u8]) -> dwarf::RawSections<'_> {
    let len = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    let (abbrev_len, str_len) = (len(0), len(4));
    dwarf::RawSections {
        abbrev: &data[8..8 + abbrev_len],
        str: &data[8 + abbrev_len..8 + abbrev_len + str_len],
        info: &data[8 + abbrev_len + str_len..],
        ..Default::default()
    }
}

/// Found by the `dwarf` fuzz target in CI: a unit's name given as a `DW_FORM_strx` index so
/// large that gimli 0.33 overflowed multiplying it by the offset size (a panic wherever
/// overflow checks are on, as in the debug build the tests run as the agent). gimli 0.34
/// checks it; an error, not a panic.
#[test]
fn fuzz_found_str_offsets_index_overflow_is_an_error() {
    let r = dwarf::offsets_from_sections(&dwarf_input(include_bytes!(
        "../../fuzz/regressions/dwarf/str-offsets-index-overflow"
    )));
    assert!(r.is_err(), "{r:?}");
}
