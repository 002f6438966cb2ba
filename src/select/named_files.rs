//! The files `executable_name` names, found before any process runs them, so they can be
//! armed ahead: a literal path or directory in the pattern, else the matching files of
//! sonde's own `PATH` (each directory listed again only when it changed).

use std::collections::HashMap;

use super::Selector;

/// Each directory's matching files, with the directory's mtime then: listed again only when
/// it changed (a file installed or removed).
pub(super) type DirListings = std::sync::Arc<
    std::sync::Mutex<
        HashMap<std::path::PathBuf, (Option<std::time::SystemTime>, Vec<std::path::PathBuf>)>,
    >,
>;

impl Selector {
    /// The files `executable_name` names by path, so they can be armed before they first
    /// run: the file of a literal pattern (`^/opt/app/bin/cli$`), or the files of the
    /// directory its literal start names (`^/opt/app/bin/.*`) that match it. Canonical
    /// paths (what `/proc/<pid>/exe` will show), regular executable files only.
    pub(crate) fn named_files(&self) -> Vec<std::path::PathBuf> {
        let Some(re) = &self.exe else {
            return Vec::new();
        };
        let prefixes = literal_path_prefixes(re.as_str());
        if prefixes.is_empty() {
            return self.files_on_path(re, &search_path());
        }
        let mut out = Vec::new();
        for (literal, exact) in prefixes {
            let candidates: Vec<std::path::PathBuf> = if exact {
                vec![literal.into()]
            } else {
                let dir = &literal[..=literal.rfind('/').unwrap_or(0)];
                match std::fs::read_dir(dir) {
                    Ok(entries) => entries
                        .flatten()
                        .take(MAX_NAMED_FILES)
                        .map(|e| e.path())
                        .collect(),
                    Err(_) => continue,
                }
            };
            for c in candidates {
                push_runnable_match(re, &c, &mut out);
            }
        }
        out
    }

    /// The files of `dirs` (sonde's `PATH`) a name-only pattern (`report$`) matches: commands
    /// are run from there, so they can be armed before their first run. At most
    /// [`MAX_PATH_FILES`], in `PATH` order: a pattern matching more is too broad to arm ahead.
    pub(crate) fn files_on_path(
        &self,
        re: &regex::Regex,
        dirs: &[std::path::PathBuf],
    ) -> Vec<std::path::PathBuf> {
        let mut cache = self.on_path.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<std::path::PathBuf> = Vec::new();
        for dir in dirs {
            let mtime = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
            let listed = match cache.get(dir) {
                Some((m, files)) if *m == mtime && mtime.is_some() => files.clone(),
                _ => {
                    let files = matching_entries(re, dir);
                    cache.insert(dir.clone(), (mtime, files.clone()));
                    files
                }
            };
            for f in listed {
                if out.len() >= MAX_PATH_FILES {
                    return out;
                }
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        out
    }
}

/// Entries of one directory looked at for `executable_name`'s files.
const MAX_NAMED_FILES: usize = 1024;
/// Files on `PATH` a name-only `executable_name` arms ahead, at most.
const MAX_PATH_FILES: usize = 32;
/// Entries of one `PATH` directory looked at (Debian's /usr/bin has ~1-3 thousand).
const MAX_PATH_ENTRIES: usize = 16384;

/// The directories of sonde's own `PATH` (the system's default when unset).
pub(crate) fn search_path() -> Vec<std::path::PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .filter(|p| p.is_absolute())
        .collect()
}

/// The runnable files of `dir` whose real path `re` matches (what `/proc/<pid>/exe` shows),
/// sorted. Only entries whose own path matches, or symlinks, are resolved.
fn matching_entries(re: &regex::Regex, dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten().take(MAX_PATH_ENTRIES) {
        let path = e.path();
        let link = e.file_type().is_ok_and(|t| t.is_symlink());
        if !link && !re.is_match(&path.to_string_lossy()) {
            continue;
        }
        push_runnable_match(re, &path, &mut out);
    }
    out.sort();
    out
}

/// Adds `path`'s real path to `out` when it is a runnable regular file that `re` matches (the
/// real path is what `/proc/<pid>/exe` will show) and is not there yet.
fn push_runnable_match(
    re: &regex::Regex,
    path: &std::path::Path,
    out: &mut Vec<std::path::PathBuf>,
) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(real) = std::fs::canonicalize(path) else {
        return;
    };
    let runnable =
        std::fs::metadata(&real).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if runnable && re.is_match(&real.to_string_lossy()) && !out.contains(&real) {
        out.push(real);
    }
}

/// The literal path each alternative of a regex starts with, when it starts with `/`, and
/// whether that is the whole match (`$` right after it). Escaped punctuation is literal; a
/// character a quantifier makes optional is not part of it.
pub(crate) fn literal_path_prefixes(pattern: &str) -> Vec<(String, bool)> {
    // Top-level alternatives only when there is no group or class to split inside.
    let alternatives: Vec<&str> = if pattern.contains(['(', '[']) {
        vec![pattern]
    } else {
        pattern.split('|').collect()
    };
    let mut out = Vec::new();
    for alt in alternatives {
        let alt = alt.strip_prefix('^').unwrap_or(alt);
        let mut literal = String::new();
        let mut exact = false;
        let mut chars = alt.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(n) if n.is_ascii_punctuation() => literal.push(n),
                    _ => break,
                },
                '$' => {
                    exact = chars.peek().is_none();
                    break;
                }
                '?' | '*' | '{' => {
                    literal.pop();
                    break;
                }
                '.' | '[' | ']' | '(' | ')' | '+' | '|' | '^' => break,
                c => literal.push(c),
            }
        }
        if literal.starts_with('/') {
            out.push((literal, exact));
        }
    }
    out
}
