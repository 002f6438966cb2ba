//! The module graph, checked: no import circle at any level of `src/`, the pipeline's layers
//! import only earlier ones (discover → select → inspect → attach → collect → enrich →
//! export), `ebpf_abi` imports nothing of sonde, and `internal_events` nothing but `ebpf_abi`
//! (every layer emits events, so they must not lead back into one).
//!
//! Imports are read from the source text (`crate::…` and `super::…` paths, `{…}` groups
//! included); test modules are left out, as they may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules (as paths from the crate root) → their source text without tests and comments.
fn modules(root: &Path) -> BTreeMap<Vec<String>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".rs") || name.ends_with("_tests.rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap();
            let mut module: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            out.insert(module, strip(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    out
}

/// The text without line comments and without `#[cfg(test)] mod x { … }` (at the end of a file
/// by convention here).
fn strip(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|l| l.trim_start().starts_with("mod ") && l.ends_with('{'))
        {
            break;
        }
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The module paths one module's text names, each cut to its longest existing module.
fn imports(
    module: &[String],
    text: &str,
    all: &BTreeMap<Vec<String>, String>,
) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < text.len() {
        // Bytes: `i` steps through multi-byte characters (`…` in a string) one byte at a time.
        let rest = &bytes[i..];
        let (start, skip) = if rest.starts_with(b"crate::") && (i == 0 || !ident(bytes[i - 1])) {
            (Vec::new(), "crate::".len())
        } else if rest.starts_with(b"super::") && (i == 0 || !ident(bytes[i - 1])) {
            let mut base = module.to_vec();
            let mut skip = 0;
            while text[i + skip..].starts_with("super::") {
                base.pop();
                skip += "super::".len();
            }
            (base, skip)
        } else {
            i += 1;
            continue;
        };
        i += skip;
        // `a::b::c`, or a `{a, b::c, …}` group: each first path of the group.
        let mut paths = Vec::new();
        if text[i..].starts_with('{') {
            let end = text[i..].find('}').map_or(text.len(), |e| i + e);
            for part in text[i + 1..end].split(',') {
                paths.push(part.trim().to_string());
            }
        } else {
            let end = text[i..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(text.len(), |e| i + e);
            paths.push(text[i..end].to_string());
        }
        for p in paths {
            let mut base = start.clone();
            for seg in p.split("::").map(str::trim) {
                let seg = seg.split_whitespace().next().unwrap_or_default();
                let mut next = base.clone();
                next.push(seg.to_string());
                if !all.contains_key(&next) {
                    break;
                }
                base = next;
            }
            out.insert(base);
        }
    }
    out
}

/// Edges between sibling modules at every level: `from` and `to` are children of one parent
/// (the empty path is the crate root). A module naming its own ancestor is no edge.
type Graph = BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>>;

fn graph(all: &BTreeMap<Vec<String>, String>) -> Graph {
    let mut g = Graph::new();
    for (module, text) in all {
        for target in imports(module, text, all) {
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common < module.len() && common < target.len() {
                g.entry(module[..common].to_vec())
                    .or_default()
                    .entry(module[common].clone())
                    .or_default()
                    .insert(target[common].clone());
            }
        }
    }
    g
}

/// A circle among one parent's children, as a path that ends where it starts.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for next in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

const LAYERS: &[&str] = &[
    "discover", "select", "inspect", "attach", "collect", "enrich", "export",
];

fn problems(all: &BTreeMap<Vec<String>, String>) -> Vec<String> {
    let g = graph(all);
    let mut out = Vec::new();
    for (parent, edges) in &g {
        if let Some(cycle) = find_cycle(edges) {
            let at = if parent.is_empty() {
                "crate".to_string()
            } else {
                parent.join("::")
            };
            out.push(format!("import circle in {at}: {}", cycle.join(" -> ")));
        }
    }
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    for (from, tos) in g.get(&Vec::new()).into_iter().flatten() {
        for to in tos {
            if let (Some(a), Some(b)) = (rank(from), rank(to)) {
                if b > a {
                    out.push(format!("{from} imports {to}, a later layer"));
                }
            }
            if from == "ebpf_abi" {
                out.push(format!("ebpf_abi imports {to}: it must stay a leaf"));
            }
            if from == "internal_events" && to != "ebpf_abi" {
                out.push(format!("internal_events imports {to}: it must stay a leaf"));
            }
        }
    }
    out
}

#[test]
fn no_import_circles_and_layers_one_way() {
    let all = modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(all.contains_key(&vec!["inspect".to_string(), "grpc".to_string()]));
    assert!(all.contains_key(&vec!["internal_events".to_string(), "events".to_string()]));
    let found = problems(&all);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_check_sees_circles_groups_and_super() {
    let m = |p: &str, text: &str| {
        (
            p.split('/').map(str::to_string).collect::<Vec<_>>(),
            strip(text),
        )
    };
    let mut all: BTreeMap<Vec<String>, String> = [
        m("config", "use crate::export::otlp::X;"),
        m("export", "use crate::config::Config;"),
        m("export/otlp", ""),
        m("inspect", ""),
        m("inspect/grpc", "use super::{dwarf, table, Plan};"),
        m("inspect/table", "use super::grpc::Offsets;"),
        m("inspect/dwarf", ""),
        m("ebpf_abi", "// use crate::inspect::X;\n"),
        m("select", "use crate::{config::Config, enrich::Identity};"),
        m("enrich", ""),
    ]
    .into_iter()
    .collect();
    all.insert(Vec::new(), String::new());
    let found = problems(&all);
    assert!(
        found
            .iter()
            .any(|p| p.contains("in crate: config -> export -> config")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("in inspect: grpc -> table -> grpc")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p == "select imports enrich, a later layer"),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|p| p.contains("ebpf_abi")),
        "comments are not imports"
    );
    // A leaf that emits into nothing: importing the ABI is fine, a layer is not.
    all.insert(
        vec!["internal_events".into()],
        "use crate::ebpf_abi::X;".into(),
    );
    all.insert(vec!["ebpf_abi".into()], String::new());
    assert!(!problems(&all).iter().any(|p| p.contains("internal_events")));
    all.insert(
        vec!["internal_events".into()],
        "use crate::export::otlp::Signal;".into(),
    );
    all.insert(
        vec!["export".into()],
        "use crate::internal_events::emit;".into(),
    );
    let found = problems(&all);
    assert!(
        found
            .iter()
            .any(|p| p == "internal_events imports export: it must stay a leaf"),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("in crate: export -> internal_events -> export")),
        "{found:?}"
    );
    all.insert(
        vec!["ebpf_abi".into()],
        "use crate::inspect::GoOffsets;".into(),
    );
    assert!(problems(&all)
        .iter()
        .any(|p| p.contains("ebpf_abi imports inspect")));
}
