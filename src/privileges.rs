//! The capabilities sonde runs with: which it needs, which it has (`CapEff` in
//! /proc/self/status), and what each missing one takes away. sonde refuses to start without
//! the required set rather than failing later, one probe at a time.

use std::fmt::Write as _;

/// One Linux capability, with its bit number from linux/capability.h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capability {
    pub name: &'static str,
    pub bit: u32,
    /// What sonde does with it.
    pub used_for: &'static str,
    /// What stops working without it.
    pub without: &'static str,
}

/// The minimal set, measured on kernel 6.18 by running sonde under `setpriv` with each one
/// removed in turn (tests/privileges.rs runs it with exactly this set).
pub(crate) const REQUIRED: &[Capability] = &[
    Capability {
        name: "CAP_BPF",
        bit: 39,
        used_for: "load the BPF programs and maps",
        without: "no probes can be loaded (unless CAP_SYS_ADMIN stands in for it)",
    },
    Capability {
        name: "CAP_PERFMON",
        bit: 38,
        used_for: "open uprobe perf events, read kernel memory from BPF",
        without: "no uprobe can be attached (unless CAP_SYS_ADMIN stands in for it)",
    },
    Capability {
        name: "CAP_SYS_ADMIN",
        bit: 21,
        used_for: "uprobe perf events: this kernel refuses them without it, even with \
                   CAP_PERFMON; mounting tracefs",
        without: "every uprobe attach fails with EPERM; tracefs is not mounted",
    },
    Capability {
        name: "CAP_SYS_PTRACE",
        bit: 19,
        used_for: "read /proc/<pid>/exe, environ and fd of processes with other \
                   credentials (containers, other users)",
        without: "target binaries, listening ports and OTEL_SERVICE_NAME cannot be read: \
                  nothing is selected",
    },
    Capability {
        name: "CAP_DAC_READ_SEARCH",
        bit: 2,
        used_for: "read target executables and /proc files whatever their permissions",
        without: "binaries not readable by root's DAC (mode 0100, other owners in user \
                  namespaces) are skipped",
    },
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PrivilegeError {
    #[error(
        "missing capability {}: needed to {}; without it {}. Run as root, or grant {} \
         (see README, Install)",
        .0.name, .0.used_for, .0.without, names(REQUIRED)
    )]
    Missing(Capability),
    #[error("cannot read CapEff from /proc/self/status")]
    Unreadable,
}

fn names(caps: &[Capability]) -> String {
    caps.iter().map(|c| c.name).collect::<Vec<_>>().join(" ")
}

/// This process's effective capabilities.
pub(crate) fn effective() -> Option<u64> {
    crate::discover::proc::own_cap_eff()
}

const SYS_ADMIN_BIT: u32 = 21;

/// Whether `caps` holds `c`, or CAP_SYS_ADMIN where the kernel accepts it instead
/// (`bpf_capable()` and `perfmon_capable()`: Docker 20.10 cannot grant CAP_BPF/CAP_PERFMON).
fn holds(caps: u64, c: &Capability) -> bool {
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    has(c.bit) || (matches!(c.name, "CAP_BPF" | "CAP_PERFMON") && has(SYS_ADMIN_BIT))
}

/// The required capabilities absent from `caps`, in the order of [`REQUIRED`].
pub(crate) fn missing(caps: u64) -> Vec<Capability> {
    REQUIRED
        .iter()
        .filter(|c| !holds(caps, c))
        .copied()
        .collect()
}

/// `Ok` when every required capability is effective; else the first missing one.
pub(crate) fn require() -> Result<(), PrivilegeError> {
    let caps = effective().ok_or(PrivilegeError::Unreadable)?;
    match missing(caps).first() {
        Some(c) => Err(PrivilegeError::Missing(*c)),
        None => Ok(()),
    }
}

/// The `sonde check` section: each required capability, present or not, and what a missing
/// one disables.
pub(crate) fn report(caps: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "capabilities (CapEff {caps:#018x}):");
    for c in REQUIRED {
        if caps & (1u64 << c.bit) != 0 {
            let _ = writeln!(s, "  {:<20} present  ({})", c.name, c.used_for);
        } else if holds(caps, c) {
            let _ = writeln!(
                s,
                "  {:<20} absent   (CAP_SYS_ADMIN stands in for it)",
                c.name
            );
        } else {
            let _ = writeln!(s, "  {:<20} MISSING  disables: {}", c.name, c.without);
        }
    }
    let gone = missing(caps);
    if gone.is_empty() {
        let _ = writeln!(s, "  every required capability is present");
    } else {
        let _ = writeln!(s, "  sonde will refuse to start: missing {}", names(&gone));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff_and_names_what_is_missing() {
        // CapEff of this process as root in a Docker 20.10 container, from its status.
        let caps: u64 = 0x0000_00c0_0028_0004;
        assert!(missing(caps).is_empty(), "{:?}", missing(caps));
        let no_ptrace = caps & !(1 << 19);
        assert_eq!(missing(no_ptrace)[0].name, "CAP_SYS_PTRACE");
        let text = report(no_ptrace);
        assert!(text.contains("CAP_SYS_PTRACE       MISSING"), "{text}");
        assert!(
            text.contains("refuse to start: missing CAP_SYS_PTRACE"),
            "{text}"
        );
        let e = PrivilegeError::Missing(missing(no_ptrace)[0]).to_string();
        assert!(
            e.starts_with("missing capability CAP_SYS_PTRACE: needed to read"),
            "{e}"
        );
        assert_eq!(missing(0).len(), REQUIRED.len());
        // Docker 20.10: SYS_ADMIN, no BPF/PERFMON.
        let docker = caps & !(1 << 39) & !(1 << 38);
        assert!(missing(docker).is_empty());
        assert!(report(docker).contains("CAP_BPF              absent   (CAP_SYS_ADMIN"));
        let names: Vec<_> = missing(docker & !(1 << 21))
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"]);
    }
}
