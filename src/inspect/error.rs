//! Why a binary cannot be instrumented: the one error of every inspection step, with a short
//! stable reason for metrics.

use std::path::Path;

use super::GoVersion;

/// Why a binary cannot be instrumented. `Clone` (strings only) so results can be cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path} is too large ({size} bytes, limit {limit})")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("not an ELF executable: {0}")]
    NotElf(String),
    #[error("unsupported architecture {0}: only x86-64 is supported")]
    UnsupportedArch(String),
    #[error("not a Go binary (no Go build info)")]
    NotGo,
    #[error("Go {0} is too old: Go 1.17 or newer is needed (register ABI)")]
    GoTooOld(GoVersion),
    #[error("malformed Go binary: {0}")]
    Malformed(String),
    #[error("function {0} not found")]
    MissingFunction(String),
    #[error("no struct offsets for Go {0}")]
    NoOffsets(GoVersion),
    #[error("inspection took longer than {0:?}: refused")]
    Timeout(std::time::Duration),
}

impl InspectError {
    /// A short, stable label (for metrics): `not_go`, `go_too_old`, ...
    pub fn reason(&self) -> &'static str {
        match self {
            InspectError::Io { .. } => "io",
            InspectError::TooLarge { .. } => "too_large",
            InspectError::NotElf(_) => "not_elf",
            InspectError::UnsupportedArch(_) => "unsupported_arch",
            InspectError::NotGo => "not_go",
            InspectError::GoTooOld(_) => "go_too_old",
            InspectError::Malformed(_) => "malformed",
            InspectError::MissingFunction(_) => "missing_function",
            InspectError::NoOffsets(_) => "no_offsets",
            InspectError::Timeout(_) => "timeout",
        }
    }

    pub(crate) fn io(path: &Path, e: &std::io::Error) -> InspectError {
        InspectError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }
}
