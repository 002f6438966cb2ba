//! A time budget for one inspection. A crafted binary can make honest parsers slow (a
//! pclntab magic every 8 bytes, millions of DWARF entries), so the loops that walk
//! attacker-sized tables ask [`check`] whether the inspection has run out of time.
//!
//! The deadline lives in a thread-local: an inspection runs on one thread from start to end,
//! and the parsers keep plain signatures (`fn(&[u8]) -> Result<..>`) that fuzz targets call
//! directly without any deadline.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long one binary may take to inspect. A real 100 MB Go binary takes well under a
/// second here; ten seconds leaves room for a loaded machine.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Only every Nth [`check`] reads the clock: the loops call it per table entry.
const CLOCK_EVERY: u32 = 1024;

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    static CALLS: Cell<u32> = const { Cell::new(0) };
    /// Sticky: once a check has failed, every later one fails too.
    static EXPIRED: Cell<bool> = const { Cell::new(false) };
}

/// The inspection ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expired;

/// Runs `f` with a deadline `timeout` from now (nested calls keep the earlier deadline).
pub(crate) fn with_timeout<T>(timeout: Duration, f: impl FnOnce() -> T) -> T {
    let deadline = Instant::now().checked_add(timeout);
    let previous = DEADLINE.with(|d| d.get());
    let effective = match (previous, deadline) {
        (Some(p), Some(n)) => Some(p.min(n)),
        (p, n) => p.or(n),
    };
    let was_expired = EXPIRED.with(|e| e.get());
    DEADLINE.with(|d| d.set(effective));
    CALLS.with(|c| c.set(0));
    // Restore on unwind too, so a panicking caller does not leave a stale deadline behind.
    struct Restore(Option<Instant>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
            EXPIRED.with(|e| e.set(self.1));
        }
    }
    let _restore = Restore(previous, was_expired);
    f()
}

/// `Err(Expired)` once the current deadline has passed; always `Ok` without one.
pub(crate) fn check() -> Result<(), Expired> {
    let Some(deadline) = DEADLINE.with(|d| d.get()) else {
        return Ok(());
    };
    if EXPIRED.with(|e| e.get()) {
        return Err(Expired);
    }
    let n = CALLS.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n
    });
    // The first call always reads the clock, so a zero budget expires at once.
    if n % CLOCK_EVERY != 1 {
        return Ok(());
    }
    if Instant::now() >= deadline {
        EXPIRED.with(|e| e.set(true));
        Err(Expired)
    } else {
        Ok(())
    }
}

/// Whether the current deadline has passed (reads the clock).
pub(crate) fn expired() -> bool {
    EXPIRED.with(|e| e.get())
        || DEADLINE
            .with(|d| d.get())
            .is_some_and(|d| Instant::now() >= d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_restores() {
        assert_eq!(check(), Ok(()));
        assert_eq!(with_timeout(Duration::ZERO, check), Err(Expired));
        assert_eq!(with_timeout(Duration::from_secs(60), check), Ok(()));
        // Nested: the earlier deadline wins.
        let inner = with_timeout(Duration::ZERO, || {
            with_timeout(Duration::from_secs(60), check)
        });
        assert_eq!(inner, Err(Expired));
        assert_eq!(check(), Ok(()));
    }
}
