//! The target must never be harmed: no embedded program may call a helper that writes user
//! memory, changes a return value or signals a process, and the Go programs are plain
//! uprobes (a uretprobe rewrites the return address on the goroutine's stack, which Go moves).
//! Read from the very objects `build.rs` compiled and sonde embeds.

use object::{Object, ObjectSection, SectionKind};

// The objects `build.rs` compiled, as sonde embeds them (sonde.bpf.o first).
use super::verify::EMBEDDED as OBJECTS;

/// bpf_probe_write_user, bpf_override_return, bpf_send_signal, bpf_send_signal_thread
/// (ids from `bpf_helper_defs.h`).
const HARMFUL: &[(i32, &str)] = &[
    (36, "bpf_probe_write_user"),
    (58, "bpf_override_return"),
    (109, "bpf_send_signal"),
    (117, "bpf_send_signal_thread"),
];

const BPF_CALL: u8 = 0x85; // BPF_JMP | BPF_CALL

/// The helper ids a program's code calls.
fn helpers_in(code: &[u8]) -> Vec<i32> {
    code.chunks_exact(8)
        // src_reg 0: a helper; 1 is a call to a BPF function, 2 a kfunc.
        .filter(|insn| insn[0] == BPF_CALL && insn[1] >> 4 == 0)
        .map(|insn| i32::from_le_bytes(insn[4..8].try_into().unwrap()))
        .collect()
}

/// Every helper id called by the object's programs, with the section it is called from.
fn helper_calls(elf: &[u8]) -> Vec<(String, i32)> {
    let file = object::File::parse(elf).expect("a BPF ELF object");
    let mut calls = Vec::new();
    for section in file.sections() {
        if section.kind() != SectionKind::Text {
            continue;
        }
        let name = section.name().unwrap_or("?").to_string();
        let code = section.data().expect("section data");
        calls.extend(helpers_in(code).into_iter().map(|id| (name.clone(), id)));
    }
    calls
}

#[test]
fn no_program_calls_a_helper_that_writes_or_signals() {
    for (object, elf) in OBJECTS {
        let calls = helper_calls(elf);
        // The decoding itself is checked: every object reads memory or submits events.
        assert!(!calls.is_empty(), "{object}: no helper call decoded");
        for (section, id) in calls {
            if let Some((_, helper)) = HARMFUL.iter().find(|(h, _)| *h == id) {
                panic!("{object}.bpf.o {section} calls {helper}");
            }
        }
    }
}

#[test]
fn the_decoder_tells_helper_calls_from_other_calls() {
    let code = [
        [BPF_CALL, 0x00, 0, 0, 36, 0, 0, 0],      // call helper 36
        [BPF_CALL, 0x10, 0, 0, 36, 0, 0, 0],      // call a BPF function at +36
        [0xb7, 0x01, 0, 0, 36, 0, 0, 0],          // r1 = 36
        [BPF_CALL, 0x00, 0, 0, 0x83, 0x00, 0, 0], // call helper 131 (ringbuf_output)
    ]
    .concat();
    assert_eq!(helpers_in(&code), vec![36, 131]);
}

#[test]
fn go_programs_are_never_uretprobes() {
    let file = object::File::parse(OBJECTS[0].1).unwrap();
    let programs: Vec<_> = file
        .sections()
        .filter(|s| s.kind() == SectionKind::Text)
        .filter_map(|s| s.name().ok().map(str::to_string))
        .filter(|n| n != ".text")
        .collect();
    assert!(programs.iter().any(|n| n == "uprobe"), "{programs:?}");
    for name in programs {
        assert!(
            !name.starts_with("uretprobe"),
            "sonde.bpf.o has a {name} program"
        );
    }
}
