//! Heads of HTTP/1.x messages: whether bytes can start a request or a response, the request
//! line (method, path without query, truncated to [`PATH_MAX`]) or status line, and the
//! headers that frame the body (`Content-Length`, `Transfer-Encoding`) and name the host.

use super::PATH_MAX;

const METHOD_MAX: usize = 16;

/// A parsed head's first line.
pub(super) enum StartLine {
    Request {
        method: String,
        path: String,
        truncated: bool,
    },
    Response {
        status: u16,
    },
}

pub(super) struct Head {
    pub(super) start: StartLine,
    pub(super) content_length: Option<u64>,
    pub(super) chunked: bool,
    pub(super) host: Option<String>,
}

fn is_method_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

/// Whether `bytes` can be the beginning of a message of this side (false as soon as it
/// cannot). `complete_token`: the method (or version prefix) must be whole.
pub(super) fn plausible_start(bytes: &[u8], request: bool, complete_token: bool) -> bool {
    if request {
        for (i, &b) in bytes.iter().enumerate() {
            if b == b' ' {
                return i > 0;
            }
            if !is_method_byte(b) || i >= METHOD_MAX {
                return false;
            }
        }
        !complete_token
    } else {
        const V: &[u8] = b"HTTP/1.";
        let n = bytes.len().min(V.len());
        bytes[..n] == V[..n] && (!complete_token || n == V.len())
    }
}

/// The path of a request target: origin form `/p?q`, absolute form `http://h/p?q`, `*`.
fn target_path(target: &str) -> &str {
    let mut path = target;
    if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        path = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

pub(super) fn parse_head(head: &[u8], request: bool) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next()?;
    let start = if request {
        let mut parts = first.split(' ');
        let method = parts.next()?;
        let target = parts.next()?;
        let version = parts.next()?;
        if method.is_empty()
            || method.len() > METHOD_MAX
            || !method.bytes().all(is_method_byte)
            || target.is_empty()
            || !version.starts_with("HTTP/1.")
            || parts.next().is_some()
        {
            return None;
        }
        let full = target_path(target);
        let mut cut = full.len().min(PATH_MAX);
        while !full.is_char_boundary(cut) {
            cut -= 1;
        }
        StartLine::Request {
            method: method.to_string(),
            path: full[..cut].to_string(),
            truncated: cut < full.len(),
        }
    } else {
        let rest = first.strip_prefix("HTTP/1.")?;
        let mut parts = rest.splitn(3, ' ');
        let minor = parts.next()?;
        let code = parts.next()?;
        if minor.len() != 1 || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        StartLine::Response {
            status: code.parse().ok()?,
        }
    };
    let mut h = Head {
        start,
        content_length: None,
        chunked: false,
        host: None,
    };
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value.parse().ok()?;
            if h.content_length.is_some_and(|old| old != n) {
                return None;
            }
            h.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("host") {
            h.host = Some(value.to_string());
        }
    }
    Some(h)
}
