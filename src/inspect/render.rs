//! The probe plan as text, for `sonde inspect`: every probe with its offsets, every struct
//! field with its source, what the binary speaks and its gRPC layout.

use std::fmt::Write as _;

use super::{fields, grpc, ProbePlan};

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// Human-readable plan, for `sonde inspect`.
pub(crate) fn render(plan: &ProbePlan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "path:       {}", plan.path.display());
    let _ = writeln!(s, "go version: {}", plan.go_version);
    if !plan.modules_known {
        let _ = writeln!(
            s,
            "build info: none (no .go.buildinfo): version from the runtime's string, module list unknown"
        );
    }
    let _ = writeln!(s, "symbols:    {}", plan.symbols);
    let _ = writeln!(s, "offsets:    {}", plan.offsets_source);
    for p in &plan.probes {
        let _ = writeln!(s, "probe {:?}: {}", p.role, p.symbol);
        let _ = writeln!(
            s,
            "  entry:    vaddr {:#x}, file offset {:#x}",
            p.entry_vaddr, p.entry_offset
        );
        let rets: Vec<String> = p.ret_offsets.iter().map(|o| format!("{o:#x}")).collect();
        if rets.is_empty() {
            let _ = writeln!(s, "  returns:  not probed (entry only)");
            continue;
        }
        let _ = writeln!(
            s,
            "  returns:  {} RET(s) at file offsets {}",
            rets.len(),
            rets.join(" ")
        );
    }
    let _ = writeln!(s, "struct offsets (bytes):");
    for (i, field) in fields::FIELDS.iter().enumerate() {
        let name = field.display();
        match plan.offset_sources.get(i) {
            Some(fields::FieldSource::NotNeeded) | None => {
                let _ = writeln!(s, "  {name:<42} -    (not needed by the planned probes)");
            }
            Some(source) => {
                let v = field.value(&plan.offsets);
                let _ = writeln!(s, "  {name:<42} {v:<4} ({source})");
            }
        }
    }
    let sp = &plan.speaks;
    let _ = writeln!(
        s,
        "speaks:     TLS server {}, gRPC {}, h2c {}",
        yes_no(sp.tls_server),
        yes_no(sp.grpc),
        yes_no(sp.h2c)
    );
    match &plan.grpc {
        Some(g) => {
            let source = g.offsets_source.to_string();
            let _ = writeln!(s, "grpc:       grpc-go {}", g.version);
            let _ = writeln!(s, "grpc offsets: {source}");
            for (name, v) in grpc::render_offsets(&g.offsets) {
                let _ = writeln!(s, "  {name:<42} {v}");
            }
        }
        None => {
            let _ = writeln!(
                s,
                "grpc:       not instrumented (no grpc-go, or layout unknown)"
            );
        }
    }
    s
}
