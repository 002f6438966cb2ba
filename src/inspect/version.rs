//! Go versions as the toolchain writes them (`go1.21.13`, `go1.22rc1`): parsed from the build
//! info or the runtime's own string, compared to gate what sonde supports (Go 1.17's register
//! ABI and newer) and to pick rows of the offsets tables.

use std::fmt;

/// A Go version such as 1.21.13 (`go1.21.13`). Pre-releases keep their base numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl GoVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> GoVersion {
        GoVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses what the toolchain writes: `go1.21.13`, `go1.22rc1`, `devel go1.23-abc ...`,
    /// `go1.24.11 X:boringcrypto`. Pre-releases keep their base numbers.
    pub fn parse(s: &str) -> Option<GoVersion> {
        let s = s.trim();
        let s = s.strip_prefix("devel ").unwrap_or(s);
        let rest = s.strip_prefix("go")?;
        let mut nums = [0u32; 3];
        let mut parts = 0;
        for (i, part) in rest.splitn(3, '.').enumerate() {
            let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.is_empty() {
                if i < 2 {
                    return None;
                }
                break;
            }
            nums[i] = digits.parse().ok()?;
            parts = i + 1;
            // `1.22rc1`: what follows the digits ends the version.
            if digits.len() != part.len() {
                break;
            }
        }
        (parts >= 2).then_some(GoVersion::new(nums[0], nums[1], nums[2]))
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}
