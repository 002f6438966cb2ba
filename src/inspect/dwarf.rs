//! Struct field offsets from a Go binary's DWARF (present unless built with `-w` or stripped).

use std::borrow::Cow;
use std::collections::HashMap;

use gimli::{AttributeValue, EndianSlice, LittleEndian};
use object::{Object, ObjectSection};

use super::GoOffsets;

#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    #[error("DWARF: {0}")]
    Parse(String),
    #[error("DWARF has no field {0}")]
    MissingField(String),
    #[error("DWARF section {section} would decompress to {size} bytes (limit {limit})")]
    TooLarge {
        section: String,
        size: u64,
        limit: u64,
    },
    #[error("DWARF walk ran out of time")]
    Timeout,
}

impl From<gimli::Error> for DwarfError {
    fn from(e: gimli::Error) -> Self {
        DwarfError::Parse(e.to_string())
    }
}

/// The structs and fields the kernel programs read.
pub(super) const WANTED: &[(&str, &[&str])] = &[
    (
        "net/http.Request",
        &["Method", "URL", "ContentLength", "RemoteAddr", "Header"],
    ),
    ("net/url.URL", &["Path", "Scheme", "Host"]),
    ("net/http.Response", &["StatusCode", "ContentLength"]),
    ("net/http.response", &["req", "status", "written"]),
    ("net/http.http2responseWriter", &["rws"]),
    (
        "net/http.http2responseWriterState",
        &["status", "wroteBytes"],
    ),
];

/// Go 1.27 moved the HTTP/2 server out of net/http's bundle into an internal package.
pub(super) const RENAMED: &[(&str, &str)] = &[
    (
        "net/http/internal/http2.responseWriter",
        "net/http.http2responseWriter",
    ),
    (
        "net/http/internal/http2.responseWriterState",
        "net/http.http2responseWriterState",
    ),
];

/// A bound on the entries walked, so a hostile binary cannot keep us here.
const MAX_ENTRIES: usize = 20_000_000;
/// A bound on one section's decompressed size: a few KB of zlib can claim gigabytes. Go's
/// own `.debug_info` is ~10 MB for a large binary.
pub(crate) const MAX_SECTION_SIZE: u64 = 256 << 20;

/// Struct field offsets from the binary's DWARF; `None` when it has no DWARF.
#[cfg(test)]
pub(crate) fn offsets(file: &object::File) -> Result<Option<GoOffsets>, DwarfError> {
    fields(file)?.map(|f| go_offsets(&f)).transpose()
}

/// The net/http fields the binary's DWARF describes (any subset); `None` when it has no DWARF.
pub(crate) fn fields(file: &object::File) -> Result<Option<FieldOffsets>, DwarfError> {
    let Some(sections) = load_sections(file)? else {
        return Ok(None);
    };
    walk(&sections, WANTED, RENAMED).map(Some)
}

/// The net/http offsets from raw (uncompressed) sections: what the `dwarf` fuzz target
/// drives, without an ELF around them.
pub fn offsets_from_sections(raw: &RawSections) -> Result<GoOffsets, DwarfError> {
    let sections = gimli::DwarfSections::load(|id| -> Result<Cow<[u8]>, DwarfError> {
        use gimli::SectionId::*;
        Ok(Cow::Borrowed(match id {
            DebugInfo => raw.info,
            DebugAbbrev => raw.abbrev,
            DebugStr => raw.str,
            DebugStrOffsets => raw.str_offsets,
            DebugLineStr => raw.line_str,
            DebugAddr => raw.addr,
            _ => &[],
        }))
    })?;
    go_offsets(&walk(&sections, WANTED, RENAMED)?)
}

/// The DWARF sections a struct walk reads, as bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawSections<'a> {
    pub info: &'a [u8],
    pub abbrev: &'a [u8],
    pub str: &'a [u8],
    pub str_offsets: &'a [u8],
    pub line_str: &'a [u8],
    pub addr: &'a [u8],
}

pub(super) fn go_offsets(found: &FieldOffsets) -> Result<GoOffsets, DwarfError> {
    let get = |s: &str, f: &str| {
        found
            .get(&(s.to_string(), f.to_string()))
            .copied()
            .ok_or_else(|| DwarfError::MissingField(format!("{s}.{f}")))
    };
    // A binary that has DWARF but no net/http (not a web server) has nothing for us.
    if !found.keys().any(|(s, _)| s == "net/http.Request") {
        return Err(DwarfError::MissingField("net/http.Request".into()));
    }
    Ok(GoOffsets {
        request_method: get("net/http.Request", "Method")?,
        request_url: get("net/http.Request", "URL")?,
        request_content_length: get("net/http.Request", "ContentLength")?,
        request_remote_addr: get("net/http.Request", "RemoteAddr")?,
        url_path: get("net/url.URL", "Path")?,
        response_req: get("net/http.response", "req")?,
        response_status: get("net/http.response", "status")?,
        response_written: get("net/http.response", "written")?,
        h2rw_rws: get("net/http.http2responseWriter", "rws")?,
        rws_status: get("net/http.http2responseWriterState", "status")?,
        rws_wrote_bytes: get("net/http.http2responseWriterState", "wroteBytes")?,
        url_scheme: get("net/url.URL", "Scheme")?,
        url_host: get("net/url.URL", "Host")?,
        client_status_code: get("net/http.Response", "StatusCode")?,
        client_content_length: get("net/http.Response", "ContentLength")?,
        request_header: get("net/http.Request", "Header")?,
    })
}

/// Field offsets by (struct, field).
pub(crate) type FieldOffsets = HashMap<(String, String), u32>;

/// Offsets of the given struct fields, by (struct, field), for the structs the binary's
/// DWARF describes; `None` when it has no DWARF. Fields it does not have are left out, so
/// callers can tell layouts of different library versions apart.
pub(crate) fn struct_fields(
    file: &object::File,
    wanted: &[(&str, &[&str])],
) -> Result<Option<FieldOffsets>, DwarfError> {
    let Some(sections) = load_sections(file)? else {
        return Ok(None);
    };
    walk(&sections, wanted, &[]).map(Some)
}

type Sections<'a> = gimli::DwarfSections<Cow<'a, [u8]>>;

/// The sections a struct walk needs, decompressed within [`MAX_SECTION_SIZE`] each; `None`
/// when the binary has no DWARF.
fn load_sections<'a>(file: &'a object::File) -> Result<Option<Sections<'a>>, DwarfError> {
    if file.section_by_name(".debug_info").is_none()
        && file.section_by_name(".zdebug_info").is_none()
    {
        return Ok(None);
    }
    let load = |id: gimli::SectionId| -> Result<Cow<'a, [u8]>, DwarfError> {
        // Types and their members need only these; decompressing the line tables, frames
        // and locations too would triple the time and memory of an inspection.
        use gimli::SectionId::*;
        if !matches!(
            id,
            DebugInfo
                | DebugAbbrev
                | DebugStr
                | DebugStrOffsets
                | DebugLineStr
                | DebugLine
                | DebugAddr
                | DebugRanges
                | DebugRngLists
        ) {
            return Ok(Cow::Borrowed(&[][..]));
        }
        let name = id.name();
        let section = file.section_by_name(name).or_else(|| {
            // Go before 1.20 wrote zlib-compressed `.zdebug_*` sections.
            name.strip_prefix(".debug_")
                .and_then(|rest| file.section_by_name(&format!(".zdebug_{rest}")))
        });
        let Some(s) = section else {
            return Ok(Cow::Borrowed(&[][..]));
        };
        let compressed = s
            .compressed_data()
            .map_err(|e| DwarfError::Parse(format!("{name}: {e}")))?;
        if compressed.uncompressed_size > MAX_SECTION_SIZE {
            return Err(DwarfError::TooLarge {
                section: name.to_string(),
                size: compressed.uncompressed_size,
                limit: MAX_SECTION_SIZE,
            });
        }
        compressed
            .decompress()
            .map_err(|e| DwarfError::Parse(format!("{name}: {e}")))
    };
    Ok(Some(gimli::DwarfSections::load(load)?))
}

/// Walks every unit for the `wanted` structs (a struct named like the first of a `renamed`
/// pair counts as the second) and their members' offsets. Bounded by [`MAX_ENTRIES`] and the
/// inspection's time budget; stops once every wanted struct has been seen (Go describes each
/// type once).
fn walk(
    sections: &Sections,
    wanted: &[(&str, &[&str])],
    renamed: &[(&str, &str)],
) -> Result<FieldOffsets, DwarfError> {
    let dwarf = sections.borrow(|s| EndianSlice::new(s, LittleEndian));
    let mut found = FieldOffsets::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut entries_seen = 0usize;
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut cursor = unit.entries();
        // The struct we are inside of, with its depth.
        let mut current: Option<(&str, &[&str], isize)> = None;
        while let Some(entry) = cursor.next_dfs()? {
            entries_seen += 1;
            if entries_seen > MAX_ENTRIES {
                return Err(DwarfError::Parse("too many DWARF entries".into()));
            }
            if super::budget::check().is_err() {
                return Err(DwarfError::Timeout);
            }
            let depth = entry.depth();
            if matches!(current, Some((_, _, d)) if depth <= d) {
                current = None;
            }
            let name = || -> Result<&str, DwarfError> {
                Ok(match entry.attr_value(gimli::DW_AT_name) {
                    Some(v) => {
                        std::str::from_utf8(dwarf.attr_string(&unit, v)?.slice()).unwrap_or("")
                    }
                    None => "",
                })
            };
            match entry.tag() {
                gimli::DW_TAG_structure_type => {
                    let n = name()?;
                    let n = renamed
                        .iter()
                        .find(|(new, _)| *new == n)
                        .map_or(n, |(_, old)| old);
                    current = wanted
                        .iter()
                        .find(|(s, _)| *s == n)
                        .map(|(s, fields)| (*s, *fields, depth));
                    if let Some((s, _, _)) = current {
                        if !seen.contains(&s) {
                            seen.push(s);
                        }
                    }
                }
                gimli::DW_TAG_member => {
                    let Some((strukt, fields, _)) = current else {
                        continue;
                    };
                    let n = name()?;
                    if !fields.contains(&n) {
                        continue;
                    }
                    let offset = match entry.attr_value(gimli::DW_AT_data_member_location) {
                        Some(AttributeValue::Udata(v)) => v,
                        Some(AttributeValue::Data1(v)) => v.into(),
                        Some(AttributeValue::Data2(v)) => v.into(),
                        Some(AttributeValue::Data4(v)) => v.into(),
                        Some(AttributeValue::Data8(v)) => v,
                        Some(AttributeValue::Sdata(v)) => v as u64,
                        _ => continue,
                    };
                    if let Ok(offset) = u32::try_from(offset) {
                        found.insert((strukt.to_string(), n.to_string()), offset);
                    }
                }
                _ => {}
            }
        }
        if seen.len() >= wanted.len() {
            break;
        }
    }
    Ok(found)
}
