//! The rate limit of internal events' log lines: per (kind, key), the first line of a window
//! is logged and the repeats within it are only counted; the next line logged says how many
//! were suppressed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Keys remembered at most; beyond, keys whose window ended are forgotten (a PID or a path per
/// key: they churn).
const MAX_KEYS: usize = 4096;

pub(super) struct Limiter {
    window: Duration,
    seen: HashMap<(&'static str, String), Seen>,
}

struct Seen {
    logged_at: Instant,
    suppressed: u64,
}

impl Limiter {
    pub(super) fn new(window: Duration) -> Limiter {
        Limiter {
            window,
            seen: HashMap::new(),
        }
    }

    /// `Some(suppressed since the last line)` when a line may be logged at `now`.
    pub(super) fn admit(&mut self, kind: &'static str, key: &str, now: Instant) -> Option<u64> {
        let window = self.window;
        if let Some(s) = self.seen.get_mut(&(kind, key.to_string())) {
            if now.saturating_duration_since(s.logged_at) < window {
                s.suppressed += 1;
                return None;
            }
            let n = std::mem::take(&mut s.suppressed);
            s.logged_at = now;
            return Some(n);
        }
        if self.seen.len() >= MAX_KEYS {
            self.seen
                .retain(|_, s| now.saturating_duration_since(s.logged_at) < window);
        }
        // Still full of live windows: log rather than grow without bound.
        if self.seen.len() < MAX_KEYS {
            self.seen.insert(
                (kind, key.to_string()),
                Seen {
                    logged_at: now,
                    suppressed: 0,
                },
            );
        }
        Some(0)
    }

    pub(super) fn forget(&mut self, kind: &'static str, key: &str) {
        self.seen.remove(&(kind, key.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_logged_repeats_suppressed_then_counted_in_the_next_line() {
        let mut l = Limiter::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(l.admit("a", "k", t), Some(0));
        for i in 1..=5 {
            assert_eq!(l.admit("a", "k", t + Duration::from_secs(i)), None);
        }
        // Another key, another kind: their own windows.
        assert_eq!(l.admit("a", "other", t), Some(0));
        assert_eq!(l.admit("b", "k", t), Some(0));
        assert_eq!(l.admit("a", "k", t + Duration::from_secs(10)), Some(5));
        assert_eq!(l.admit("a", "k", t + Duration::from_secs(11)), None);
        assert_eq!(l.admit("a", "k", t + Duration::from_secs(20)), Some(1));
        l.forget("a", "k");
        assert_eq!(l.admit("a", "k", t + Duration::from_secs(21)), Some(0));
    }

    #[test]
    fn keys_stay_bounded() {
        let mut l = Limiter::new(Duration::from_secs(10));
        let t = Instant::now();
        for i in 0..MAX_KEYS + 10 {
            assert_eq!(l.admit("pid", &i.to_string(), t), Some(0));
        }
        assert_eq!(l.seen.len(), MAX_KEYS);
        // Once their windows ended, old keys make room.
        assert_eq!(l.admit("pid", "new", t + Duration::from_secs(10)), Some(0));
        assert_eq!(l.seen.len(), 1);
    }
}
