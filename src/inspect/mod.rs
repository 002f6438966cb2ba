//! Turns a Go executable into a probe plan. A pure function of the file: no kernel, no
//! process, testable without root; cached by (inode, size, mtime).
//!
//! Steps: read the file (size-capped, [`binary`]), parse the x86-64 ELF layout ([`elf`]), read
//! the Go version from the build-info blob ([`buildinfo`], [`version`]), find functions through
//! `.symtab` or the pclntab ([`symbols`], [`pclntab`]), decode their bodies for RET sites
//! ([`ret`]), and take struct field offsets from the type metadata, DWARF or the built-in table
//! ([`typemeta`], [`dwarf`], [`offsets_table`], [`fields`]). The result is a [`ProbePlan`]
//! ([`plan`]; as text, [`render`]) or an [`InspectError`] ([`error`]). This file holds the
//! entry points, under a time budget ([`budget`]), and the names of the probed functions.

mod binary;
pub(crate) mod budget;
pub(crate) mod buildinfo;
pub(crate) mod cache;
pub(crate) mod dwarf;
pub(crate) mod elf;
mod error;
pub(crate) mod fields;
pub(crate) mod grpc;
pub(crate) mod grpc_offsets_table;
pub(crate) mod offsets_table;
pub(crate) mod pclntab;
mod plan;
mod render;
pub(crate) mod ret;
pub(crate) mod source;
pub(crate) mod sparse;
pub(crate) mod symbols;
pub(crate) mod typemeta;
mod version;

use std::path::{Path, PathBuf};

pub(crate) use self::binary::GoBinary;
#[allow(unused_imports)]
pub(crate) use self::cache::{CachedPlan, FileKey, PlanCache};
pub(crate) use self::error::InspectError;
pub(crate) use self::plan::{
    FunctionProbe, GoOffsets, GrpcOffsets, OffsetsSource, ProbePlan, ProbeRole, Speaks,
    SymbolSource,
};
pub(crate) use self::render::render;
pub(crate) use self::version::GoVersion;

/// Files larger than this are refused rather than read into memory (the largest Go
/// programs in common use, e.g. kubelet, are ~100 MB).
pub(crate) const MAX_FILE_SIZE: u64 = 512 << 20;

/// The function every plan probes: one call per server request.
pub const SERVE_HTTP: &str = "net/http.serverHandler.ServeHTTP";
/// The exported wrapper, not `roundTrip` itself: the same call with one RET instead of ~16,
/// and every uprobe costs a kernel grace period (~130 ms here) to detach.
pub(crate) const ROUND_TRIP: &str = "net/http.(*Transport).RoundTrip";
/// Where every goroutine is made: probed only when traces are exported.
pub(crate) const NEWPROC1: &str = "runtime.newproc1";
/// Reachable only through `tls.Server` (what `ServeTLS`, `tls.Listen` and `tls.NewListener`
/// use): linked in exactly when the program can serve TLS.
pub(crate) const TLS_SERVER_HANDSHAKE: &str = "crypto/tls.(*Conn).serverHandshake";
/// x/net's h2c wrapper (plaintext HTTP/2).
pub(crate) const H2C_HANDLER: &str = "golang.org/x/net/http2/h2c.h2cHandler.ServeHTTP";

/// Turns an executable into a probe plan, or says why it cannot be instrumented, within
/// [`budget::DEFAULT_TIMEOUT`].
pub(crate) fn inspect(path: &Path) -> Result<ProbePlan, InspectError> {
    inspect_within(path, budget::DEFAULT_TIMEOUT)
}

/// As [`inspect`], with a chosen time budget.
pub(crate) fn inspect_within(
    path: &Path,
    timeout: std::time::Duration,
) -> Result<ProbePlan, InspectError> {
    within(timeout, || GoBinary::open(path)?.plan())
}

/// Runs an inspection under a time budget; a failure after the deadline is a time-out
/// (a loop cut short may surface as a missing function).
fn within(
    timeout: std::time::Duration,
    f: impl FnOnce() -> Result<ProbePlan, InspectError>,
) -> Result<ProbePlan, InspectError> {
    budget::with_timeout(timeout, || {
        // A loop cut short may have surfaced as another error, or even as a plan built from
        // a partial search: past the deadline nothing is trusted.
        match f() {
            _ if budget::expired() => Err(InspectError::Timeout(timeout)),
            r => r,
        }
    })
}

/// As [`inspect_within`], for bytes already in memory (fuzz targets, tests).
pub fn inspect_bytes(
    path: PathBuf,
    data: Vec<u8>,
    timeout: std::time::Duration,
) -> Result<ProbePlan, InspectError> {
    within(timeout, || GoBinary::from_bytes(path, data)?.plan())
}

/// What every time-budgeted loop returns when the budget is spent (the duration is filled
/// in by [`inspect_within`]).
pub(crate) fn check_budget() -> Result<(), InspectError> {
    budget::check().map_err(|_| InspectError::Timeout(std::time::Duration::ZERO))
}

#[cfg(test)]
pub(crate) mod testbins;

#[cfg(test)]
#[path = "binary_tests.rs"]
mod tests;

#[cfg(test)]
mod hostile_tests;
