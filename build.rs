//! Compiles the C programs in ebpf/ with clang and embeds the objects in the binary.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &[
    "sonde.bpf.c",
    "launch.bpf.c",
    "floor.bpf.c",
    "syscalls.bpf.c",
];

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    // UAPI headers (linux/bpf.h and friends) live under the multiarch directory on Debian.
    let multiarch = "/usr/include/x86_64-linux-gnu";
    println!("cargo:rerun-if-changed=ebpf");
    println!("cargo:rerun-if-env-changed=CLANG");
    for src in PROGRAMS {
        let obj = out.join(src.replace(".c", ".o"));
        let status = Command::new(&clang)
            .args([
                "-O2",
                "-g",
                "-target",
                "bpf",
                "-D__TARGET_ARCH_x86",
                "-Wall",
                "-Werror",
            ])
            .arg(format!("-I{multiarch}"))
            .arg("-Iebpf")
            .arg("-c")
            .arg(format!("ebpf/{src}"))
            .arg("-o")
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("clang failed to compile ebpf/{src} ({s})"),
            Err(e) => panic!(
                "cannot run `{clang}` to compile ebpf/{src}: {e}. \
                 Install clang and libbpf-dev (scripts/setup.sh does it)"
            ),
        }
    }
}
