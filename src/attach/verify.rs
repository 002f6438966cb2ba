//! `sonde check --load-all` (hidden): every program of every embedded BPF object, and of any
//! object file named with `--load-object`, through this kernel's verifier. The agent loads
//! only what its configuration uses; the kernel matrix (scripts/kernel-matrix.sh) needs to
//! know that all of it loads on each kernel, and that a rejection is seen as one.

use std::path::Path;

use aya::programs::Program;
use aya::{Ebpf, EbpfLoader};
use thiserror::Error;

/// The objects `build.rs` compiled, as embedded in the binary.
pub(crate) const EMBEDDED: &[(&str, &[u8])] = &[
    (
        "sonde.bpf.o",
        include_bytes!(concat!(env!("OUT_DIR"), "/sonde.bpf.o")),
    ),
    (
        "launch.bpf.o",
        include_bytes!(concat!(env!("OUT_DIR"), "/launch.bpf.o")),
    ),
    (
        "floor.bpf.o",
        include_bytes!(concat!(env!("OUT_DIR"), "/floor.bpf.o")),
    ),
    (
        "syscalls.bpf.o",
        include_bytes!(concat!(env!("OUT_DIR"), "/syscalls.bpf.o")),
    ),
];

#[derive(Debug, Error)]
pub(crate) enum VerifyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the object does not load (maps, BTF or relocations): {0}")]
    Object(aya::EbpfError),
    #[error("{0}")]
    Program(String),
    #[error("program type {0} is not loaded by this check")]
    Unsupported(String),
}

/// What happened to one program (or to a whole object, with `program` "*").
#[derive(Debug)]
pub(crate) struct Outcome {
    pub object: String,
    pub program: String,
    pub result: Result<(), VerifyError>,
}

/// The verifier's conclusion: its last lines, where it names what it rejected.
fn summarize(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            // The verifier ends with statistics; the line before them names the rejection.
            let log = verifier_log.to_string();
            let stats = ["verification time", "stack depth", "processed "];
            let why = log
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty() && !stats.iter().any(|s| l.starts_with(s)))
                .unwrap_or("(no verifier log)");
            format!("{io_error}; verifier: {why}")
        }
        other => other.to_string(),
    }
}

fn load_program(program: &mut Program) -> Result<(), VerifyError> {
    let result = match program {
        Program::UProbe(p) => p.load(),
        Program::TracePoint(p) => p.load(),
        Program::KProbe(p) => p.load(),
        Program::RawTracePoint(p) => p.load(),
        other => return Err(VerifyError::Unsupported(format!("{:?}", other.prog_type()))),
    };
    result.map_err(|e| VerifyError::Program(summarize(&e)))
}

/// Loads every program of one object; the programs unload when this returns.
pub(crate) fn load_object(name: &str, data: &[u8]) -> Vec<Outcome> {
    crate::kernel::raise_memlock();
    let mut ebpf: Ebpf = match EbpfLoader::new().load(data) {
        Ok(e) => e,
        Err(e) => {
            return vec![Outcome {
                object: name.to_string(),
                program: "*".into(),
                result: Err(VerifyError::Object(e)),
            }]
        }
    };
    let mut out: Vec<Outcome> = ebpf
        .programs_mut()
        .map(|(program, p)| Outcome {
            object: name.to_string(),
            program: program.to_string(),
            result: load_program(p),
        })
        .collect();
    out.sort_by(|a, b| a.program.cmp(&b.program));
    out
}

/// Every embedded object, then each file in `extra`.
pub(crate) fn load_all(extra: &[impl AsRef<Path>]) -> Vec<Outcome> {
    let mut out = Vec::new();
    for (name, data) in EMBEDDED {
        out.extend(load_object(name, data));
    }
    out.extend(load_files(extra));
    out
}

/// Every program of each object file.
pub(crate) fn load_files(files: &[impl AsRef<Path>]) -> Vec<Outcome> {
    let mut out = Vec::new();
    for path in files {
        let path = path.as_ref();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        match std::fs::read(path) {
            Ok(data) => out.extend(load_object(&name, &data)),
            Err(source) => out.push(Outcome {
                object: name,
                program: "*".into(),
                result: Err(VerifyError::Read {
                    path: path.display().to_string(),
                    source,
                }),
            }),
        }
    }
    out
}

/// One line per program: `loaded OBJ/PROG` or `OBJ/PROG: rejected: why`.
pub(crate) fn render(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    for o in outcomes {
        match &o.result {
            Ok(()) => s.push_str(&format!("loaded {}/{}\n", o.object, o.program)),
            Err(e) => s.push_str(&format!("{}/{}: rejected: {e}\n", o.object, o.program)),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_object_file_is_a_failure() {
        let out = load_files(&["/nonexistent/sonde-test.bpf.o"]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].object, "sonde-test.bpf.o");
        assert!(matches!(out[0].result, Err(VerifyError::Read { .. })));
        assert!(render(&out).contains("sonde-test.bpf.o/*: rejected: cannot read"));
    }

    #[test]
    fn a_garbage_object_is_a_failure_not_an_empty_success() {
        let out = load_object("junk.o", b"not an ELF file");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].program, "*");
        assert!(matches!(out[0].result, Err(VerifyError::Object(_))));
    }
}
