//! The struct fields the HTTP programs read, and where each offset comes from.
//!
//! Sources are tried field by field — the binary's own type metadata, then DWARF, then the
//! built-in table — so a field one source lacks does not throw away what it did describe, and
//! `sonde inspect` can say which source gave each offset. Only the fields the planned probes
//! read are required: a client-only program (a CLI that calls APIs) has no `net/http.response`
//! in its metadata, and a server built without HTTP/2 has no HTTP/2 writer.

use std::fmt;

use super::dwarf::FieldOffsets;
use super::GoOffsets;

/// Which probes read a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// Read by the server and the client programs alike.
    Request,
    /// `net/http.response`: the HTTP/1 server's writer.
    Server,
    /// The HTTP/2 server's writer (bundled in net/http; a build may leave it out).
    ServerH2,
    /// `net/http.Response`: what a client call got back.
    Client,
}

/// One field: struct (import path + name, as DWARF names it), field, group, and where its
/// offset lives in [`GoOffsets`].
pub(crate) struct Field {
    pub strukt: &'static str,
    pub name: &'static str,
    pub group: Group,
    slot: fn(&mut GoOffsets) -> &mut u32,
}

impl Field {
    /// `http.Request.Method`: the package's last element, as Go code spells it.
    pub(crate) fn display(&self) -> String {
        let short = self.strukt.rsplit('/').next().unwrap_or(self.strukt);
        format!("{short}.{}", self.name)
    }

    fn key(&self) -> (String, String) {
        (self.strukt.to_string(), self.name.to_string())
    }

    /// This field's offset in `o`.
    pub(crate) fn value(&self, o: &GoOffsets) -> u32 {
        let mut copy = *o;
        *(self.slot)(&mut copy)
    }
}

const REQUEST: &str = "net/http.Request";
const URL: &str = "net/url.URL";
const RESPONSE: &str = "net/http.response";
const H2_WRITER: &str = "net/http.http2responseWriter";
const H2_STATE: &str = "net/http.http2responseWriterState";
const CLIENT_RESPONSE: &str = "net/http.Response";

/// Every field the HTTP programs read, in the order `sonde inspect` prints them.
pub(crate) const FIELDS: &[Field] = &[
    Field {
        strukt: REQUEST,
        name: "Method",
        group: Group::Request,
        slot: |o| &mut o.request_method,
    },
    Field {
        strukt: REQUEST,
        name: "URL",
        group: Group::Request,
        slot: |o| &mut o.request_url,
    },
    Field {
        strukt: REQUEST,
        name: "ContentLength",
        group: Group::Request,
        slot: |o| &mut o.request_content_length,
    },
    Field {
        strukt: REQUEST,
        name: "RemoteAddr",
        group: Group::Request,
        slot: |o| &mut o.request_remote_addr,
    },
    Field {
        strukt: REQUEST,
        name: "Header",
        group: Group::Request,
        slot: |o| &mut o.request_header,
    },
    Field {
        strukt: URL,
        name: "Path",
        group: Group::Request,
        slot: |o| &mut o.url_path,
    },
    Field {
        strukt: URL,
        name: "Scheme",
        group: Group::Request,
        slot: |o| &mut o.url_scheme,
    },
    Field {
        strukt: URL,
        name: "Host",
        group: Group::Request,
        slot: |o| &mut o.url_host,
    },
    Field {
        strukt: RESPONSE,
        name: "req",
        group: Group::Server,
        slot: |o| &mut o.response_req,
    },
    Field {
        strukt: RESPONSE,
        name: "status",
        group: Group::Server,
        slot: |o| &mut o.response_status,
    },
    Field {
        strukt: RESPONSE,
        name: "written",
        group: Group::Server,
        slot: |o| &mut o.response_written,
    },
    Field {
        strukt: H2_WRITER,
        name: "rws",
        group: Group::ServerH2,
        slot: |o| &mut o.h2rw_rws,
    },
    Field {
        strukt: H2_STATE,
        name: "status",
        group: Group::ServerH2,
        slot: |o| &mut o.rws_status,
    },
    Field {
        strukt: H2_STATE,
        name: "wroteBytes",
        group: Group::ServerH2,
        slot: |o| &mut o.rws_wrote_bytes,
    },
    Field {
        strukt: CLIENT_RESPONSE,
        name: "StatusCode",
        group: Group::Client,
        slot: |o| &mut o.client_status_code,
    },
    Field {
        strukt: CLIENT_RESPONSE,
        name: "ContentLength",
        group: Group::Client,
        slot: |o| &mut o.client_content_length,
    },
];

/// Which probes the plan has, so which groups must be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Needs {
    pub server: bool,
    pub client: bool,
}

impl Needs {
    #[cfg(test)]
    pub(crate) const ALL: Needs = Needs {
        server: true,
        client: true,
    };
}

/// Where one offset came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSource {
    TypeMetadata,
    Dwarf,
    /// The built-in table, with the Go version of the row used.
    Table(String),
    /// No planned probe reads it (its offset is 0 and never used).
    NotNeeded,
}

impl fmt::Display for FieldSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldSource::TypeMetadata => f.write_str("type metadata"),
            FieldSource::Dwarf => f.write_str("DWARF"),
            FieldSource::Table(v) => write!(f, "table (Go {v})"),
            FieldSource::NotNeeded => f.write_str("not needed by the planned probes"),
        }
    }
}

/// The offsets, and for each entry of [`FIELDS`] its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub offsets: GoOffsets,
    pub sources: Vec<FieldSource>,
}

/// A needed field no source describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Missing(pub String);

/// Resolves every needed field, first from `type_meta`, then from `dwarf()`, then from
/// `table()`; the later sources are only consulted when an earlier one left a needed field
/// out (a DWARF walk costs tens of milliseconds).
pub(crate) fn resolve(
    needs: Needs,
    type_meta: Option<&FieldOffsets>,
    mut dwarf: impl FnMut() -> Option<FieldOffsets>,
    mut table: impl FnMut() -> Option<(String, GoOffsets)>,
) -> Result<Resolved, Missing> {
    let has = |m: &FieldOffsets, s: &str| m.keys().any(|(k, _)| k == s);
    // Metadata that describes the server's writer but no HTTP/2 writer is a build without the
    // HTTP/2 server (`-tags nethttpomithttp2`): no HTTP/2 request can reach those fields.
    let h2_absent =
        type_meta.is_some_and(|m| has(m, RESPONSE) && !has(m, H2_WRITER) && !has(m, H2_STATE));
    let needed = |g: Group| match g {
        Group::Request => needs.server || needs.client,
        Group::Server => needs.server,
        Group::ServerH2 => needs.server && !h2_absent,
        Group::Client => needs.client,
    };
    let mut offsets = GoOffsets::default();
    let mut sources = vec![FieldSource::NotNeeded; FIELDS.len()];
    let mut dwarf_fields: Option<Option<FieldOffsets>> = None;
    let mut table_row: Option<Option<(String, GoOffsets)>> = None;
    for (i, field) in FIELDS.iter().enumerate() {
        if !needed(field.group) {
            continue;
        }
        let key = field.key();
        let found = if let Some(&v) = type_meta.and_then(|m| m.get(&key)) {
            Some((v, FieldSource::TypeMetadata))
        } else if let Some(&v) = dwarf_fields
            .get_or_insert_with(&mut dwarf)
            .as_ref()
            .and_then(|m| m.get(&key))
        {
            Some((v, FieldSource::Dwarf))
        } else {
            table_row
                .get_or_insert_with(&mut table)
                .as_ref()
                .map(|(row, o)| (field.value(o), FieldSource::Table(row.clone())))
        };
        let Some((v, source)) = found else {
            return Err(Missing(format!("{}.{}", field.strukt, field.name)));
        };
        *(field.slot)(&mut offsets) = v;
        sources[i] = source;
    }
    Ok(Resolved { offsets, sources })
}

impl Resolved {
    /// One source when every needed field came from it.
    pub(crate) fn single_source(&self) -> Option<&FieldSource> {
        let mut used = self
            .sources
            .iter()
            .filter(|s| **s != FieldSource::NotNeeded);
        let first = used.next()?;
        used.all(|s| s == first).then_some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_from(v: u32, skip: &[&str]) -> FieldOffsets {
        FIELDS
            .iter()
            .filter(|f| !skip.contains(&f.strukt))
            .map(|f| (f.key(), v))
            .collect()
    }

    #[test]
    fn every_field_has_its_own_slot() {
        let mut o = GoOffsets::default();
        for (i, f) in FIELDS.iter().enumerate() {
            *(f.slot)(&mut o) = i as u32 + 1;
        }
        for (i, f) in FIELDS.iter().enumerate() {
            assert_eq!(f.value(&o), i as u32 + 1, "{}", f.display());
        }
    }

    #[test]
    fn a_field_the_metadata_lacks_comes_from_dwarf_the_rest_stays() {
        let mut tm = all_from(8, &[]);
        tm.remove(&(RESPONSE.to_string(), "status".to_string()));
        let r = resolve(Needs::ALL, Some(&tm), || Some(all_from(16, &[])), || None).unwrap();
        assert_eq!(r.offsets.response_status, 16);
        assert_eq!(r.offsets.response_req, 8);
        let status = FIELDS
            .iter()
            .position(|f| f.strukt == RESPONSE && f.name == "status")
            .unwrap();
        assert_eq!(r.sources[status], FieldSource::Dwarf);
        assert_eq!(r.single_source(), None);
    }

    #[test]
    fn client_only_binary_needs_no_server_struct() {
        let tm = all_from(8, &[RESPONSE, H2_WRITER, H2_STATE]);
        let needs = Needs {
            server: false,
            client: true,
        };
        let r = resolve(needs, Some(&tm), || None, || None).unwrap();
        assert_eq!(r.single_source(), Some(&FieldSource::TypeMetadata));
        assert_eq!(r.offsets.response_status, 0);
        // The same metadata cannot serve a server probe.
        let err = resolve(Needs::ALL, Some(&tm), || None, || None).unwrap_err();
        assert_eq!(err, Missing("net/http.response.req".into()));
    }

    #[test]
    fn server_without_http2_needs_no_http2_fields() {
        let tm = all_from(8, &[H2_WRITER, H2_STATE]);
        let r = resolve(Needs::ALL, Some(&tm), || None, || None).unwrap();
        assert_eq!(r.offsets.h2rw_rws, 0);
        // Without metadata nothing says HTTP/2 is absent: the table must supply it.
        let row = (
            "1.21".to_string(),
            GoOffsets {
                h2rw_rws: 24,
                ..GoOffsets::default()
            },
        );
        let r = resolve(Needs::ALL, None, || None, || Some(row.clone())).unwrap();
        assert_eq!(r.offsets.h2rw_rws, 24);
        assert_eq!(r.single_source(), Some(&FieldSource::Table("1.21".into())));
    }

    #[test]
    fn later_sources_are_not_read_when_the_metadata_suffices() {
        let tm = all_from(8, &[]);
        let r = resolve(
            Needs::ALL,
            Some(&tm),
            || panic!("DWARF walked"),
            || panic!("table read"),
        )
        .unwrap();
        assert_eq!(r.single_source(), Some(&FieldSource::TypeMetadata));
    }
}
