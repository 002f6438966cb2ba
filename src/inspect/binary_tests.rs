//! Every installed Go toolchain's real binaries, in each build variant (static, stripped,
//! externally linked, PIE, client-only, without build info or section headers): the inspector's
//! answers checked against the bytes, DWARF and each other.

use super::testbins::{self, Variant};
use super::*;

fn probe(bin: &GoBinary) -> FunctionProbe {
    bin.function_probe(ProbeRole::HttpServerHandler, SERVE_HTTP)
        .unwrap_or_else(|e| panic!("{}: {e}", bin.path().display()))
}

fn check_probe(bin: &GoBinary, p: &FunctionProbe) {
    let data = bin.data();
    assert!(!p.ret_offsets.is_empty(), "{}", bin.path().display());
    for &off in &p.ret_offsets {
        assert_eq!(
            data[off as usize],
            0xc3,
            "{} at {off:#x}",
            bin.path().display()
        );
    }
    assert_eq!(bin.file_offset(p.entry_vaddr), Some(p.entry_offset));
    assert!(p.ret_offsets.iter().all(|&r| r > p.entry_offset));
}

/// The same binary read through the pclntab instead of `.symtab`.
fn via_pclntab(bin: &GoBinary) -> FunctionProbe {
    let t = pclntab::Pclntab::find(bin.data(), bin.elf()).expect("pclntab");
    let (entry, end) = t
        .find_function(bin.data(), bin.elf(), SERVE_HTTP)
        .expect("ServeHTTP in pclntab");
    let rets = bin.ret_vaddrs(entry, end).unwrap();
    FunctionProbe {
        role: ProbeRole::HttpServerHandler,
        symbol: SERVE_HTTP.into(),
        entry_vaddr: entry,
        entry_offset: bin.file_offset(entry).unwrap(),
        ret_offsets: rets.iter().map(|&v| bin.file_offset(v).unwrap()).collect(),
    }
}

/// A copy of an ELF file with its section headers removed, as some packers leave them.
fn without_section_headers(mut data: Vec<u8>) -> Vec<u8> {
    data[0x28..0x30].fill(0); // e_shoff
    data[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
    data
}

#[test]
fn every_toolchain_and_variant() {
    let tcs = testbins::toolchains();
    let newest = tcs.last().map(|t| t.0.clone());
    for (label, go) in &tcs {
        let want = GoVersion::parse(&format!("go{label}")).unwrap();
        let mut variants = vec![
            Variant::Static,
            Variant::StaticSw,
            Variant::StaticStrip,
            Variant::Extlink,
            Variant::ExtlinkStrip,
        ];
        // PIE builds are slow; the oldest (no .gopclntab section) and newest (no text
        // start in the header) cover both pclntab paths.
        if label.starts_with("1.19") || Some(label) == newest.as_ref() {
            variants.push(Variant::Pie);
        }
        let mut by_variant = Vec::new();
        for v in variants {
            let Some(path) = testbins::get(label, go, v) else {
                continue;
            };
            let bin = GoBinary::open(&path).unwrap_or_else(|e| panic!("{label} {v:?}: {e}"));
            assert_eq!(bin.go_version(), want, "{label} {v:?}");
            let expect_source = match v {
                Variant::StaticSw | Variant::StaticStrip | Variant::ExtlinkStrip => {
                    SymbolSource::Pclntab
                }
                _ => SymbolSource::Symtab,
            };
            assert_eq!(bin.symbol_source(), expect_source, "{label} {v:?}");
            let p = probe(&bin);
            check_probe(&bin, &p);
            // Both indexes agree on the same bytes.
            let q = via_pclntab(&bin);
            assert_eq!(p, q, "{label} {v:?}: symtab vs pclntab");
            check_probe(&bin, &q);
            // And without section headers: scans for build info and the pclntab.
            let bare =
                GoBinary::from_bytes(path.clone(), without_section_headers(bin.data().to_vec()))
                    .unwrap_or_else(|e| panic!("{label} {v:?} without sections: {e}"));
            assert_eq!(bare.go_version(), want);
            assert_eq!(bare.symbol_source(), SymbolSource::Pclntab);
            assert_eq!(probe(&bare), p, "{label} {v:?} without sections");
            by_variant.push((v, p));
        }
        // `objcopy --strip-all` keeps code where it was.
        let get = |v| by_variant.iter().find(|(w, _)| *w == v).map(|(_, p)| p);
        for (full, stripped) in [
            (Variant::Static, Variant::StaticStrip),
            (Variant::Extlink, Variant::ExtlinkStrip),
        ] {
            if let (Some(a), Some(b)) = (get(full), get(stripped)) {
                assert_eq!(a, b, "{label}: {full:?} vs {stripped:?}");
            }
        }
    }
}

/// Hides the build-info blob, as release builds that strip it ship.
fn without_build_info(mut data: Vec<u8>) -> Vec<u8> {
    while let Some(at) = memchr::memmem::find(&data, b"\xff Go buildinf:") {
        data[at] = 0;
    }
    data
}

fn dwarf_offsets(path: &Path) -> GoOffsets {
    let bin = GoBinary::open(path).unwrap();
    let file = bin.object().unwrap();
    dwarf::offsets(&file).unwrap().expect("DWARF")
}

#[test]
fn type_metadata_matches_dwarf_for_every_toolchain() {
    let tcs = testbins::toolchains();
    assert!(!tcs.is_empty(), "no Go toolchain");
    let newest = tcs.last().map(|t| t.0.clone());
    for (label, go) in &tcs {
        let Some(full) = testbins::get(label, go, Variant::Static) else {
            continue;
        };
        let want = dwarf_offsets(&full);
        let mut variants = vec![Variant::Static, Variant::StaticSw, Variant::ExtlinkStrip];
        if label.starts_with("1.19") || Some(label) == newest.as_ref() {
            variants.push(Variant::Pie);
        }
        for v in variants {
            let Some(path) = testbins::get(label, go, v) else {
                continue;
            };
            let bin = GoBinary::open(&path).unwrap();
            let fields = bin
                .type_fields(dwarf::WANTED, dwarf::RENAMED)
                .unwrap_or_else(|e| panic!("{label} {v:?}: {e}"));
            let got = dwarf::go_offsets(&fields).unwrap_or_else(|e| panic!("{label} {v:?}: {e}"));
            assert_eq!(got, want, "{label} {v:?}: type metadata vs DWARF");
            assert_eq!(
                bin.offsets().unwrap(),
                (OffsetsSource::TypeMetadata, want),
                "{label} {v:?}"
            );
        }
    }
}

/// A program that only makes HTTP calls has no server writer in its metadata: it is
/// planned from the fields its client probe reads, with no table row to fall back on.
#[test]
fn client_only_program_needs_no_server_fields() {
    for (label, go) in testbins::toolchains() {
        let (Some(full), Some(path)) = (
            testbins::get(&label, &go, Variant::Static),
            testbins::get(&label, &go, Variant::ClientSw),
        ) else {
            continue;
        };
        let want = dwarf_offsets(&full);
        let mut bin = GoBinary::open(&path).unwrap();
        bin.no_table_row = true;
        let plan = bin.plan().unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(
            plan.probes
                .iter()
                .all(|p| p.role != ProbeRole::HttpServerHandler),
            "{label}"
        );
        assert_eq!(plan.offsets_source, OffsetsSource::TypeMetadata, "{label}");
        for (i, f) in fields::FIELDS.iter().enumerate() {
            let source = &plan.offset_sources[i];
            if f.group == fields::Group::Server || f.group == fields::Group::ServerH2 {
                assert_eq!(
                    *source,
                    fields::FieldSource::NotNeeded,
                    "{label} {}",
                    f.display()
                );
            } else {
                assert_eq!(
                    *source,
                    fields::FieldSource::TypeMetadata,
                    "{label} {}",
                    f.display()
                );
                assert_eq!(
                    f.value(&plan.offsets),
                    f.value(&want),
                    "{label} {}",
                    f.display()
                );
            }
        }
        assert!(render(&plan).contains("not needed by the planned probes"));
    }
}

#[test]
fn go_binary_without_build_info_is_recognised() {
    for (label, go) in testbins::toolchains() {
        let Some(path) = testbins::get(&label, &go, Variant::StaticSw) else {
            continue;
        };
        let data = without_build_info(std::fs::read(&path).unwrap());
        let bin = GoBinary::from_bytes(path.clone(), data)
            .unwrap_or_else(|e| panic!("{label} without build info: {e}"));
        assert_eq!(
            bin.go_version(),
            GoVersion::parse(&format!("go{label}")).unwrap(),
            "{label}"
        );
        assert!(!bin.has_build_info());
        let plan = bin.plan().unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(plan.offsets_source, OffsetsSource::TypeMetadata, "{label}");
        assert!(!plan.modules_known);
        assert!(render(&plan).contains("module list unknown"), "{label}");
    }
}

/// A release whose layout the table has never seen still works: the 1.27 rows are hidden
/// and the stripped 1.27 binary is planned from its own type metadata; without that
/// metadata it would be skipped.
#[test]
fn newest_release_needs_no_table_row() {
    let Some((label, go)) = testbins::toolchains()
        .into_iter()
        .find(|(l, _)| l.starts_with("1.27"))
    else {
        eprintln!("skipping: no Go 1.27 toolchain");
        return;
    };
    let full = testbins::get(&label, &go, Variant::Static).unwrap();
    let path = testbins::get(&label, &go, Variant::StaticStrip).unwrap();
    let mut bin = GoBinary::open(&path).unwrap();
    bin.no_table_row = true;
    let plan = bin.plan().unwrap();
    assert_eq!(plan.offsets_source, OffsetsSource::TypeMetadata);
    let want = dwarf_offsets(&full);
    for (f, source) in fields::FIELDS.iter().zip(&plan.offset_sources) {
        if *source != fields::FieldSource::NotNeeded {
            assert_eq!(f.value(&plan.offsets), f.value(&want), "{}", f.display());
        }
    }
    bin.no_type_metadata = true;
    assert_eq!(
        bin.plan().unwrap_err(),
        InspectError::NoOffsets(bin.go_version())
    );
}

#[test]
fn go_126_text_start_comes_from_moduledata() {
    for (label, go) in testbins::toolchains() {
        let Some(path) = testbins::get(&label, &go, Variant::StaticSw) else {
            continue;
        };
        let bin = GoBinary::open(&path).unwrap();
        let t = pclntab::Pclntab::find(bin.data(), bin.elf()).unwrap();
        let header_text = bin.elf().read_ptr(bin.data(), t.header_vaddr + 24).unwrap();
        if bin.go_version() >= GoVersion::new(1, 26, 0) {
            assert_eq!(header_text, 0, "{label}");
        } else {
            assert_eq!(header_text, t.text_start(), "{label}");
        }
        assert_eq!(t.text_start_source, pclntab::TextStartSource::Moduledata);
        assert_eq!(
            Some(t.text_start()),
            bin.elf().section(".text").map(|s| s.addr)
        );
    }
}

fn any_bin(variant: Variant) -> Option<PathBuf> {
    let (label, go) = testbins::toolchains().into_iter().last()?;
    testbins::get(&label, &go, variant)
}

#[test]
fn truncated_and_corrupt_files_are_errors() {
    let Some(path) = any_bin(Variant::StaticSw) else {
        return;
    };
    let data = std::fs::read(&path).unwrap();
    let p = Path::new("corrupt");
    for len in [
        0,
        3,
        64,
        100,
        4096,
        data.len() / 3,
        data.len() / 2,
        data.len() - 1,
    ] {
        let r = GoBinary::from_bytes(p.into(), data[..len].to_vec())
            .and_then(|b| b.function_probe(ProbeRole::HttpServerHandler, SERVE_HTTP));
        if len < data.len() / 2 {
            assert!(r.is_err(), "truncated to {len}");
        }
    }
    // Scribble over the pclntab header and function table.
    let bin = GoBinary::open(&path).unwrap();
    let pcl = bin.elf().section(".gopclntab").unwrap().offset as usize;
    for (at, byte) in [
        (15, 0x7f),
        (34, 0xff),
        (66, 0xff),
        (71, 0xff),
        (0, 0x00),
        (6, 2),
    ] {
        let mut d = data.clone();
        d[pcl + at] = byte;
        let r = GoBinary::from_bytes(p.into(), d)
            .and_then(|b| b.function_probe(ProbeRole::HttpServerHandler, SERVE_HTTP));
        assert!(r.is_err(), "pclntab byte {at} = {byte:#x}");
    }
    // Pseudo-random corruption anywhere must never panic.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..40 {
        let mut d = data.clone();
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % d.len() as u64) as usize;
            d[i] = (x >> 32) as u8;
        }
        let _ = GoBinary::from_bytes(p.into(), d)
            .and_then(|b| b.function_probe(ProbeRole::HttpServerHandler, SERVE_HTTP));
    }
}

#[test]
fn non_go_and_non_elf() {
    assert_eq!(inspect(Path::new("/bin/ls")), Err(InspectError::NotGo));
    assert!(matches!(
        inspect(Path::new("/etc/hostname")),
        Err(InspectError::NotElf(_)) | Err(InspectError::Io { .. })
    ));
    assert!(matches!(
        inspect(Path::new("/nonexistent/x")),
        Err(InspectError::Io { .. })
    ));
    // aarch64 ELF header.
    let mut d = std::fs::read("/bin/ls").unwrap();
    d[0x12] = 183;
    d[0x13] = 0;
    assert!(matches!(
        GoBinary::from_bytes("arm".into(), d),
        Err(InspectError::UnsupportedArch(_))
    ));
}

#[test]
fn go_older_than_117_is_rejected() {
    let Some(path) = any_bin(Variant::StaticSw) else {
        return;
    };
    let mut data = std::fs::read(&path).unwrap();
    let bin = GoBinary::open(&path).unwrap();
    let v = bin.build_info().version_string.clone();
    let minor = bin.go_version().minor.to_string();
    let patched = v.replacen(&format!("go1.{minor}"), "go1.16", 1);
    assert_eq!(patched.len(), v.len(), "needs a two-digit minor version");
    let magic = b"\xff Go buildinf:";
    let blob = data.windows(magic.len()).position(|w| w == magic).unwrap();
    let at = blob
        + data[blob..]
            .windows(v.len())
            .position(|w| w == v.as_bytes())
            .unwrap();
    data[at..at + v.len()].copy_from_slice(patched.as_bytes());
    match GoBinary::from_bytes(path, data) {
        Err(InspectError::GoTooOld(g)) => assert_eq!((g.major, g.minor), (1, 16)),
        other => panic!("expected GoTooOld, got {other:?}"),
    }
}

#[test]
fn inspect_and_render() {
    let Some(path) = any_bin(Variant::Static) else {
        return;
    };
    match inspect(&path) {
        Ok(plan) => {
            assert_eq!(plan.symbols, SymbolSource::Symtab);
            let http = plan
                .probes
                .iter()
                .filter(|p| p.role != ProbeRole::GoroutineStart)
                .count();
            assert_eq!(http, 1);
            let text = render(&plan);
            assert!(text.contains(SERVE_HTTP), "{text}");
            assert!(text.contains(&plan.go_version.to_string()), "{text}");
            assert!(text.contains("RET"), "{text}");
        }
        // The offsets table may not have a row for every toolchain here.
        Err(InspectError::NoOffsets(_)) => {}
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn version_display_and_order() {
    assert_eq!(GoVersion::new(1, 21, 13).to_string(), "1.21.13");
    assert!(GoVersion::new(1, 16, 15) < GoVersion::new(1, 17, 0));
    assert!(GoVersion::new(1, 9, 0) < GoVersion::new(1, 10, 0));
    assert_eq!(
        InspectError::NoOffsets(GoVersion::new(1, 30, 1)).to_string(),
        "no struct offsets for Go 1.30.1"
    );
}
