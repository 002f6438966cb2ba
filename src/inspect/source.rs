//! Which source measures a Go binary: its own uprobes or the syscall tracer, decided from what
//! inspection found linked in.

use crate::config::GoSource;
use crate::inspect::{ProbePlan, ProbeRole};

/// Resolves a `go_source` setting for one binary to `Uprobes` or `Syscalls`, with the reason
/// the log and `sonde inspect` give. `auto` takes the syscall tracer only for what it sees in
/// full: plaintext HTTP/1.x. Anything the binary could serve that the tracer cannot follow
/// (TLS, gRPC, h2c), or client calls whose trace context only uprobes carry, keeps uprobes:
/// a wrong guess towards uprobes costs CPU, one towards syscalls loses requests.
pub(crate) fn choose(
    setting: GoSource,
    plan: &ProbePlan,
    traces: bool,
    tracer: bool,
) -> (GoSource, String) {
    let client_calls = plan
        .probes
        .iter()
        .any(|p| p.role == ProbeRole::HttpClientRoundTrip);
    let sp = &plan.speaks;
    let (source, why) = match setting {
        GoSource::Uprobes => (GoSource::Uprobes, ""),
        GoSource::Syscalls => (GoSource::Syscalls, ""),
        GoSource::Auto if !tracer => (GoSource::Uprobes, ": no syscall tracer"),
        GoSource::Auto if sp.grpc => (GoSource::Uprobes, ": grpc-go linked in (HTTP/2)"),
        GoSource::Auto if sp.tls_server => (
            GoSource::Uprobes,
            ": can serve TLS (crypto/tls server handshake linked in)",
        ),
        GoSource::Auto if sp.h2c => (GoSource::Uprobes, ": h2c linked in (HTTP/2)"),
        GoSource::Auto if traces && client_calls => (
            GoSource::Uprobes,
            ": makes HTTP client calls and traces are exported (propagation)",
        ),
        GoSource::Auto => (
            GoSource::Syscalls,
            ": plaintext HTTP/1.x only (no TLS server, gRPC or h2c code)",
        ),
    };
    (source, format!("go_source={}{why}", setting.name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn plan_speaking(speaks: crate::inspect::Speaks, client: bool) -> crate::inspect::ProbePlan {
        use crate::inspect::{FunctionProbe, ProbeRole};
        let probe = |role| FunctionProbe {
            role,
            symbol: String::new(),
            entry_vaddr: 0,
            entry_offset: 0,
            ret_offsets: Vec::new(),
        };
        let mut probes = vec![probe(ProbeRole::HttpServerHandler)];
        if client {
            probes.push(probe(ProbeRole::HttpClientRoundTrip));
        }
        crate::inspect::ProbePlan {
            path: PathBuf::from("/srv/api"),
            go_version: crate::inspect::GoVersion::new(1, 22, 0),
            symbols: crate::inspect::SymbolSource::Symtab,
            offsets_source: crate::inspect::OffsetsSource::Dwarf,
            offsets: Default::default(),
            offset_sources: Vec::new(),
            modules_known: true,
            probes,
            grpc: None,
            speaks,
        }
    }

    #[test]
    fn auto_takes_syscalls_only_for_plaintext_http1() {
        use crate::config::GoSource;
        use crate::inspect::Speaks;
        let plain = plan_speaking(Speaks::default(), true);
        let (s, why) = choose(GoSource::Auto, &plain, false, true);
        assert_eq!(s, GoSource::Syscalls);
        assert!(
            why.starts_with("go_source=auto: plaintext HTTP/1.x only"),
            "{why}"
        );
        // Without the tracer, or with traces to propagate into its client calls: uprobes.
        assert_eq!(
            choose(GoSource::Auto, &plain, false, false).0,
            GoSource::Uprobes
        );
        let (s, why) = choose(GoSource::Auto, &plain, true, true);
        assert_eq!(s, GoSource::Uprobes);
        assert!(why.contains("client calls"), "{why}");
        // A server making no client call has nothing to propagate.
        let server_only = plan_speaking(Speaks::default(), false);
        assert_eq!(
            choose(GoSource::Auto, &server_only, true, true).0,
            GoSource::Syscalls
        );
        for (speaks, reason) in [
            (
                Speaks {
                    tls_server: true,
                    ..Speaks::default()
                },
                "TLS",
            ),
            (
                Speaks {
                    grpc: true,
                    ..Speaks::default()
                },
                "grpc-go",
            ),
            (
                Speaks {
                    h2c: true,
                    ..Speaks::default()
                },
                "h2c",
            ),
        ] {
            let (s, why) = choose(GoSource::Auto, &plan_speaking(speaks, false), false, true);
            assert_eq!(s, GoSource::Uprobes, "{why}");
            assert!(why.contains(reason), "{why}");
        }
        // An explicit setting is obeyed whatever the binary speaks.
        let tls = plan_speaking(
            Speaks {
                tls_server: true,
                ..Speaks::default()
            },
            false,
        );
        assert_eq!(
            choose(GoSource::Syscalls, &tls, false, true),
            (GoSource::Syscalls, "go_source=syscalls".to_string())
        );
        assert_eq!(
            choose(GoSource::Uprobes, &plain, false, true),
            (GoSource::Uprobes, "go_source=uprobes".to_string())
        );
    }
}
