//! The syscall tracer's programs as the object holds them, and OpenSSL offset finding.

use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

use super::hooks::{kprobe_functions, source_programs, Mode, KPROBES, TRACEPOINTS};
use super::openssl::ssl_offsets;
use super::SYSCALLS_BPF;

/// A program's instructions and what each relocation points at, by the program's name
/// (its symbol: several kprobe programs share the section `kprobe`).
fn program_code(obj: &object::File, name: &str) -> (Vec<u8>, Vec<(u64, String)>) {
    let symbol = obj
        .symbols()
        .find(|s| s.name() == Ok(name) && s.kind() == object::SymbolKind::Text)
        .unwrap_or_else(|| panic!("no program {name}"));
    let section = obj
        .section_by_index(symbol.section_index().expect("a program's section"))
        .expect("section");
    let (start, end) = (symbol.address(), symbol.address() + symbol.size());
    let relocations = section
        .relocations()
        .filter(|&(at, _)| at >= start && at < end)
        .map(|(at, r)| {
            let target = match r.target() {
                RelocationTarget::Symbol(i) => obj
                    .symbol_by_index(i)
                    .and_then(|s| s.name().map(str::to_string))
                    .unwrap_or_default(),
                other => format!("{other:?}"),
            };
            (at - start, target)
        })
        .collect();
    let data = section.data().expect("section data");
    (data[start as usize..end as usize].to_vec(), relocations)
}

#[test]
fn shared_tracepoint_programs_are_the_same_code_as_the_syscalls_they_replace() {
    let obj = object::File::parse(SYSCALLS_BPF).expect("parse syscalls.bpf.o");
    let mut shared = 0;
    for &(tracepoint, program) in TRACEPOINTS {
        if tracepoint == program {
            continue;
        }
        shared += 1;
        assert_eq!(
            program_code(&obj, tracepoint),
            program_code(&obj, program),
            "{tracepoint} runs {program}, but its own program differs: give it its own entry"
        );
    }
    assert_eq!(shared, 11);
    assert_eq!(source_programs(Mode::Tracepoints).len(), 14);
}

#[test]
fn shared_kprobe_programs_are_the_same_code_as_the_syscalls_they_replace() {
    let obj = object::File::parse(SYSCALLS_BPF).expect("parse syscalls.bpf.o");
    let mut shared = 0;
    for &(function, program) in KPROBES {
        // The program SYSCALL_PROBES made for this very syscall.
        let syscall = function
            .strip_prefix("__x64_sys_")
            .expect("a syscall wrapper");
        let kind = program.split('_').next().expect("kprobe or kretprobe");
        let own = format!("{kind}_{syscall}");
        if own == program {
            continue;
        }
        shared += 1;
        assert_eq!(
            program_code(&obj, &own),
            program_code(&obj, program),
            "{function} runs {program}, but its own program {own} differs"
        );
    }
    assert_eq!(shared, 11);
    assert_eq!(source_programs(Mode::Kprobes).len(), 14);
    // The same syscalls as the tracepoints.
    let mut syscalls: Vec<&str> = kprobe_functions()
        .iter()
        .map(|f| f.trim_start_matches("__x64_sys_"))
        .collect();
    let mut from_tracepoints: Vec<&str> = TRACEPOINTS
        .iter()
        .map(|&(tp, _)| {
            tp.trim_start_matches("sys_enter_")
                .trim_start_matches("sys_exit_")
        })
        .collect();
    syscalls.sort_unstable();
    from_tracepoints.sort_unstable();
    from_tracepoints.dedup();
    assert_eq!(syscalls, from_tracepoints);
}

#[test]
fn finds_openssl_functions_in_the_system_libssl() {
    let lib = Path::new("/lib/x86_64-linux-gnu/libssl.so.3");
    if !lib.exists() {
        eprintln!("SKIP: no {}", lib.display());
        return;
    }
    let offsets = ssl_offsets(lib);
    let names: Vec<&str> = offsets.iter().map(|&(p, _)| p).collect();
    assert_eq!(
        names,
        vec![
            "ssl_read_entry",
            "ssl_write_entry",
            "ssl_read_ex_entry",
            "ssl_write_ex_entry"
        ]
    );
    assert!(offsets.iter().all(|&(_, o)| o > 0));
    assert!(ssl_offsets(Path::new("/bin/true")).is_empty());
}
