//! Incremental HTTP/1.x parsing of one connection, from the bytes its process read and wrote.
//!
//! Pure: no kernel, no clock. Bytes come in chunks as the syscalls saw them, possibly with only
//! a prefix of each chunk known (the kernel copies a bounded prefix and reports the full
//! length): unknown bytes are fine inside a body, whose size is all that is measured, and make
//! the parser lose sync anywhere else. A stream that is not HTTP/1.x (TLS records, HTTP/2,
//! binary protocols) never produces an exchange; after losing sync the parser waits for a
//! chunk that starts like a new message. Memory is bounded per connection.

use std::collections::VecDeque;

/// Longest request or response head kept while waiting for its end.
pub const HEAD_MAX: usize = 8192;
/// Requests read but not answered yet (pipelining) kept per connection.
pub const PENDING_MAX: usize = 64;
/// Longest path kept; longer ones are truncated and flagged.
pub const PATH_MAX: usize = 128;
const METHOD_MAX: usize = 16;
/// A chunk-size line, extensions included.
const CHUNK_LINE_MAX: usize = 1024;

/// Which end of the connection the traced process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It accepted the connection: it reads requests and writes responses.
    Server,
    /// It connected: it writes requests and reads responses.
    Client,
}

/// Whether the traced process read or wrote the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// One request and its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub method: String,
    /// The request target's path, without query or fragment.
    pub path: String,
    pub path_truncated: bool,
    /// The request's Host header, if any.
    pub host: Option<String>,
    pub status: u16,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    /// When the request's first byte was seen, and its response's last byte.
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunked {
    /// Reading a chunk-size line: the size so far, digits seen, in an extension, line length.
    Size {
        size: u64,
        digits: bool,
        ext: bool,
        len: usize,
    },
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailer {
        line_len: usize,
    },
}

impl Chunked {
    fn start() -> Self {
        Chunked::Size {
            size: 0,
            digits: false,
            ext: false,
            len: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked(Chunked),
    /// A response without length: it ends when the connection closes.
    UntilClose,
}

/// How a body step ended.
enum Step {
    /// Every byte was used and the body goes on.
    More,
    /// The body ended after this many bytes of the input.
    Done(usize),
    /// Not valid framing.
    Invalid,
}

impl Body {
    /// Consumes known bytes; adds the body bytes among them to `counted`.
    fn feed(&mut self, data: &[u8], counted: &mut u64) -> Step {
        match self {
            Body::UntilClose => {
                *counted += data.len() as u64;
                Step::More
            }
            Body::Length(left) => {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                *counted += n;
                if *left == 0 {
                    Step::Done(n as usize)
                } else {
                    Step::More
                }
            }
            Body::Chunked(state) => {
                let mut i = 0;
                while i < data.len() {
                    match state {
                        Chunked::Size {
                            size,
                            digits,
                            ext,
                            len,
                        } => {
                            let b = data[i];
                            i += 1;
                            *len += 1;
                            if *len > CHUNK_LINE_MAX {
                                return Step::Invalid;
                            }
                            match b {
                                b'\n' => {
                                    if !*digits {
                                        return Step::Invalid;
                                    }
                                    *state = if *size == 0 {
                                        Chunked::Trailer { line_len: 0 }
                                    } else {
                                        Chunked::Data(*size)
                                    };
                                }
                                b'\r' => {}
                                _ if *ext => {}
                                b';' | b' ' | b'\t' if *digits => *ext = true,
                                _ => {
                                    let Some(d) = (b as char).to_digit(16) else {
                                        return Step::Invalid;
                                    };
                                    let Some(s) =
                                        size.checked_mul(16).and_then(|s| s.checked_add(d as u64))
                                    else {
                                        return Step::Invalid;
                                    };
                                    *size = s;
                                    *digits = true;
                                }
                            }
                        }
                        Chunked::Data(left) => {
                            let n = (*left).min((data.len() - i) as u64);
                            *left -= n;
                            *counted += n;
                            i += n as usize;
                            if *left == 0 {
                                *state = Chunked::DataEnd;
                            }
                        }
                        Chunked::DataEnd => {
                            let b = data[i];
                            i += 1;
                            match b {
                                b'\r' => {}
                                b'\n' => *state = Chunked::start(),
                                _ => return Step::Invalid,
                            }
                        }
                        Chunked::Trailer { line_len } => {
                            let b = data[i];
                            i += 1;
                            match b {
                                b'\r' => {}
                                b'\n' if *line_len == 0 => return Step::Done(i),
                                b'\n' => *line_len = 0,
                                _ => {
                                    *line_len += 1;
                                    if *line_len > CHUNK_LINE_MAX {
                                        return Step::Invalid;
                                    }
                                }
                            }
                        }
                    }
                }
                Step::More
            }
        }
    }

    /// Skips `n` unknown bytes: only possible inside data whose length is known.
    fn skip(&mut self, n: u64, counted: &mut u64) -> Step {
        match self {
            Body::UntilClose => {
                *counted += n;
                Step::More
            }
            Body::Length(left) if n <= *left => {
                *left -= n;
                *counted += n;
                if *left == 0 {
                    Step::Done(0)
                } else {
                    Step::More
                }
            }
            Body::Chunked(Chunked::Data(left)) if n <= *left => {
                *left -= n;
                *counted += n;
                if *left == 0 {
                    *self = Body::Chunked(Chunked::DataEnd);
                }
                Step::More
            }
            // The write goes on past the chunk's data, into framing the kernel did not copy.
            // Go writes a chunk's data with its CRLF (2 bytes more) and the end of a body with
            // the last chunk too (`\r\n0\r\n\r\n`, 7 bytes more): only those two tails are
            // taken on trust; anything else loses the connection as before.
            Body::Chunked(Chunked::Data(left)) => {
                let rest = n - *left;
                match rest {
                    2 | 7 => {
                        *counted += *left;
                        if rest == 2 {
                            *self = Body::Chunked(Chunked::start());
                            Step::More
                        } else {
                            Step::Done(0)
                        }
                    }
                    _ => Step::Invalid,
                }
            }
            _ => Step::Invalid,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Between messages or inside a head (the bytes so far are in `head`).
    Head,
    Body(Body),
    /// Out of sync: waiting for a chunk that starts a message.
    Lost,
}

/// One direction of the connection.
#[derive(Debug)]
struct Side {
    state: State,
    head: Vec<u8>,
    head_start_ns: u64,
    /// Body bytes of the message being read.
    body_bytes: u64,
}

impl Side {
    fn new() -> Self {
        Side {
            state: State::Head,
            head: Vec::new(),
            head_start_ns: 0,
            body_bytes: 0,
        }
    }

    fn lose(&mut self) {
        self.state = State::Lost;
        self.head = Vec::new();
    }
}

#[derive(Debug)]
struct Pending {
    method: String,
    path: String,
    path_truncated: bool,
    host: Option<String>,
    start_ns: u64,
    /// Content-Length, or the chunked bytes counted so far.
    body_bytes: u64,
}

/// The response being read: its status and whether a request is waiting for it.
#[derive(Debug)]
struct Response {
    status: u16,
    answered: bool,
}

/// One connection's parser. Feed it every chunk in the order the process saw them.
#[derive(Debug)]
pub struct Http1Parser {
    role: Role,
    requests: Side,
    responses: Side,
    pending: VecDeque<Pending>,
    response: Option<Response>,
    /// The connection switched protocols (101) or is not HTTP at all: nothing more to parse.
    done: bool,
}

/// A parsed head's first line.
enum StartLine {
    Request {
        method: String,
        path: String,
        truncated: bool,
    },
    Response {
        status: u16,
    },
}

struct Head {
    start: StartLine,
    content_length: Option<u64>,
    chunked: bool,
    host: Option<String>,
}

fn is_method_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

/// Whether `bytes` can be the beginning of a message of this side (false as soon as it
/// cannot). `complete_token`: the method (or version prefix) must be whole.
fn plausible_start(bytes: &[u8], request: bool, complete_token: bool) -> bool {
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

fn parse_head(head: &[u8], request: bool) -> Option<Head> {
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

impl Http1Parser {
    pub fn new(role: Role) -> Self {
        Http1Parser {
            role,
            requests: Side::new(),
            responses: Side::new(),
            pending: VecDeque::new(),
            response: None,
            done: false,
        }
    }

    /// Requests read and not answered yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one chunk: `len` bytes of which the first `data.len()` are known (`len` smaller
    /// than `data.len()` is read as `data.len()`). Finished exchanges are appended to `out`.
    pub fn feed(
        &mut self,
        direction: Direction,
        data: &[u8],
        len: u64,
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        if self.done {
            return;
        }
        let request = matches!(
            (self.role, direction),
            (Role::Server, Direction::In) | (Role::Client, Direction::Out)
        );
        let gap = len.saturating_sub(data.len() as u64);
        if self.side(request).state == State::Lost {
            if !plausible_start(data, request, true) {
                return;
            }
            let side = self.side_mut(request);
            side.state = State::Head;
            side.head.clear();
        }
        let mut i = 0;
        while i < data.len() && !self.done {
            let used = match self.side(request).state {
                State::Head => self.feed_head(request, &data[i..], ts_ns, out),
                State::Body(_) => self.feed_body(request, &data[i..], ts_ns, out),
                State::Lost => return,
            };
            match used {
                Some(n) => i += n,
                None => {
                    self.lose();
                    return;
                }
            }
        }
        if gap > 0 && !self.done {
            self.skip(request, gap, ts_ns, out);
        }
    }

    /// The connection closed: a response read until close is complete now.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        if !self.done && matches!(self.responses.state, State::Body(Body::UntilClose)) {
            self.finish_response(ts_ns, out);
        }
        self.done = true;
        self.pending.clear();
    }

    fn side(&self, request: bool) -> &Side {
        if request {
            &self.requests
        } else {
            &self.responses
        }
    }

    fn side_mut(&mut self, request: bool) -> &mut Side {
        if request {
            &mut self.requests
        } else {
            &mut self.responses
        }
    }

    /// Out of sync: drop what is half-known on both sides and wait for a new message on each.
    fn lose(&mut self) {
        self.requests.lose();
        self.responses.lose();
        self.pending.clear();
        self.response = None;
    }

    /// Reads head bytes; returns how many of `data` were used, `None` if invalid.
    fn feed_head(
        &mut self,
        request: bool,
        data: &[u8],
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) -> Option<usize> {
        let side = self.side_mut(request);
        let mut skipped = 0;
        if side.head.is_empty() {
            // Empty lines between messages are allowed.
            skipped = data
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if skipped == data.len() {
                return Some(skipped);
            }
            side.head_start_ns = ts_ns;
        }
        let data = &data[skipped..];
        let old = side.head.len();
        let room = HEAD_MAX.saturating_sub(old);
        side.head.extend_from_slice(&data[..data.len().min(room)]);
        let from = old.saturating_sub(3);
        let end = side.head[from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| from + p + 4);
        let Some(end) = end else {
            if side.head.len() >= HEAD_MAX || !plausible_start(&side.head, request, false) {
                return None;
            }
            return Some(skipped + data.len());
        };
        side.head.truncate(end);
        let head = std::mem::take(&mut side.head);
        let used = skipped + end - old;
        let start_ns = side.head_start_ns;
        let parsed = parse_head(&head, request)?;
        if request {
            self.start_request(parsed, start_ns)?;
        } else {
            self.start_response(parsed, ts_ns, out)?;
        }
        Some(used)
    }

    fn start_request(&mut self, head: Head, start_ns: u64) -> Option<()> {
        let StartLine::Request {
            method,
            path,
            truncated,
        } = head.start
        else {
            return None;
        };
        if self.pending.len() >= PENDING_MAX {
            return None;
        }
        let body = if head.chunked {
            Some(Body::Chunked(Chunked::start()))
        } else {
            head.content_length.filter(|&n| n > 0).map(Body::Length)
        };
        self.pending.push_back(Pending {
            method,
            path,
            path_truncated: truncated,
            host: head.host,
            start_ns,
            body_bytes: if head.chunked {
                0
            } else {
                head.content_length.unwrap_or(0)
            },
        });
        self.requests.state = body.map_or(State::Head, State::Body);
        self.requests.body_bytes = 0;
        Some(())
    }

    fn start_response(&mut self, head: Head, ts_ns: u64, out: &mut Vec<Exchange>) -> Option<()> {
        let StartLine::Response { status } = head.start else {
            return None;
        };
        if status == 101 {
            // Switching protocols (WebSocket, h2c): the rest is not HTTP/1.
            self.lose();
            self.done = true;
            return Some(());
        }
        if (100..200).contains(&status) {
            // An interim response; the final one follows.
            return Some(());
        }
        let front = self.pending.front();
        let head_request = front.is_some_and(|p| p.method == "HEAD");
        self.response = Some(Response {
            status,
            answered: front.is_some(),
        });
        self.responses.body_bytes = 0;
        let body = if head_request || status == 204 || status == 304 {
            None
        } else if head.chunked {
            Some(Body::Chunked(Chunked::start()))
        } else {
            match head.content_length {
                Some(0) => None,
                Some(n) => Some(Body::Length(n)),
                None => Some(Body::UntilClose),
            }
        };
        match body {
            // Answering nothing we saw and ending only at close: whatever follows would be
            // swallowed as its body; wait for a new response instead.
            Some(Body::UntilClose) if self.pending.is_empty() => {
                self.response = None;
                self.responses.lose();
            }
            Some(b) => self.responses.state = State::Body(b),
            None => self.finish_response(ts_ns, out),
        }
        Some(())
    }

    fn feed_body(
        &mut self,
        request: bool,
        data: &[u8],
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) -> Option<usize> {
        let side = self.side_mut(request);
        let State::Body(body) = &mut side.state else {
            return Some(0);
        };
        let before = side.body_bytes;
        let step = body.feed(data, &mut side.body_bytes);
        let added = side.body_bytes - before;
        self.body_progress(request, added, matches!(step, Step::Done(_)), ts_ns, out);
        match step {
            Step::More => Some(data.len()),
            Step::Done(n) => Some(n),
            Step::Invalid => None,
        }
    }

    fn skip(&mut self, request: bool, gap: u64, ts_ns: u64, out: &mut Vec<Exchange>) {
        let side = self.side_mut(request);
        let State::Body(body) = &mut side.state else {
            // Unknown bytes where a head should be.
            self.lose();
            return;
        };
        let before = side.body_bytes;
        let step = body.skip(gap, &mut side.body_bytes);
        let added = side.body_bytes - before;
        match step {
            Step::Invalid => self.lose(),
            Step::More => self.body_progress(request, added, false, ts_ns, out),
            Step::Done(_) => self.body_progress(request, added, true, ts_ns, out),
        }
    }

    /// Body bytes were read; at the end of a body the side waits for the next head.
    fn body_progress(
        &mut self,
        request: bool,
        added: u64,
        done: bool,
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        if request {
            // Chunked request bodies are counted as they come (Content-Length was taken).
            if matches!(self.requests.state, State::Body(Body::Chunked(_))) {
                if let Some(p) = self.pending.back_mut() {
                    p.body_bytes += added;
                }
            }
            if done {
                self.requests.state = State::Head;
            }
        } else if done {
            self.finish_response(ts_ns, out);
        }
    }

    fn finish_response(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        self.responses.state = State::Head;
        let Some(response) = self.response.take() else {
            return;
        };
        if !response.answered {
            return;
        }
        let Some(p) = self.pending.pop_front() else {
            return;
        };
        out.push(Exchange {
            method: p.method,
            path: p.path,
            path_truncated: p.path_truncated,
            host: p.host,
            status: response.status,
            request_body_bytes: p.body_bytes,
            response_body_bytes: self.responses.body_bytes,
            start_ns: p.start_ns,
            end_ns: ts_ns.max(p.start_ns),
        });
    }
}

/// Runs a parser over arbitrary bytes, for fuzzing and property tests: the first byte picks
/// the role (bit 0: client), then each chunk is a control byte — bit 0 the direction (1: out),
/// bits 1-6 times 4 the known bytes that follow, bit 7 a 2-byte little-endian count of unknown
/// bytes after them (as for a buffer copied only in part, or sendfile) — and the connection is
/// closed at the end. Never panics; returns the exchanges produced.
pub fn parse_arbitrary(data: &[u8]) -> Vec<Exchange> {
    let Some((&first, mut rest)) = data.split_first() else {
        return Vec::new();
    };
    let role = if first & 1 == 1 {
        Role::Client
    } else {
        Role::Server
    };
    let mut parser = Http1Parser::new(role);
    let mut out = Vec::new();
    let mut ts = 0;
    while let Some((&c, tail)) = rest.split_first() {
        rest = tail;
        let direction = if c & 1 == 1 {
            Direction::Out
        } else {
            Direction::In
        };
        let known = (((c >> 1) & 0x3f) as usize * 4).min(rest.len());
        let (chunk, tail) = rest.split_at(known);
        rest = tail;
        let mut gap = 0;
        if c & 0x80 != 0 && rest.len() >= 2 {
            gap = u16::from_le_bytes([rest[0], rest[1]]) as u64;
            rest = &rest[2..];
        }
        ts += 1;
        parser.feed(direction, chunk, known as u64 + gap, ts, &mut out);
    }
    parser.close(ts + 1, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{In, Out};

    fn feed_all(p: &mut Http1Parser, chunks: &[(Direction, &[u8])]) -> Vec<Exchange> {
        let mut out = Vec::new();
        for (i, (d, c)) in chunks.iter().enumerate() {
            p.feed(*d, c, c.len() as u64, (i as u64 + 1) * 10, &mut out);
        }
        out
    }

    fn summary(e: &[Exchange]) -> Vec<(String, String, u16, u64, u64)> {
        e.iter()
            .map(|e| {
                (
                    e.method.clone(),
                    e.path.clone(),
                    e.status,
                    e.request_body_bytes,
                    e.response_body_bytes,
                )
            })
            .collect()
    }

    fn s(m: &str, p: &str, st: u16, rq: u64, rs: u64) -> (String, String, u16, u64, u64) {
        (m.into(), p.into(), st, rq, rs)
    }

    #[test]
    fn keep_alive_requests_one_after_another() {
        let mut p = Http1Parser::new(Role::Server);
        let out = feed_all(
            &mut p,
            &[
                (In, b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"),
                (Out, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
                (In, b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
                (Out, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
            ],
        );
        assert_eq!(
            summary(&out),
            vec![s("GET", "/a", 200, 0, 5), s("POST", "/b", 201, 3, 0)]
        );
        assert_eq!(out[0].host.as_deref(), Some("h"));
        assert_eq!((out[0].start_ns, out[0].end_ns), (10, 20));
    }

    #[test]
    fn pipelined_requests_in_one_read() {
        let mut p = Http1Parser::new(Role::Server);
        let reqs = b"GET /1 HTTP/1.1\r\n\r\nPUT /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nxyDELETE /3 HTTP/1.1\r\n\r\n";
        let resps = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\nHTTP/1.1 500 E\r\nContent-Length: 2\r\n\r\nee";
        let out = feed_all(&mut p, &[(In, reqs), (Out, resps)]);
        assert_eq!(
            summary(&out),
            vec![
                s("GET", "/1", 200, 0, 1),
                s("PUT", "/2", 404, 2, 0),
                s("DELETE", "/3", 500, 0, 2)
            ]
        );
    }

    #[test]
    fn bodies_and_heads_split_over_many_calls() {
        let mut p = Http1Parser::new(Role::Server);
        let req = b"POST /up HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-T: 1\r\n\r\n";
        let mut out = Vec::new();
        for b in req.chunks(1) {
            p.feed(In, b, 1, 1, &mut out);
        }
        assert!(out.is_empty());
        for b in resp.chunks(3) {
            p.feed(Out, b, b.len() as u64, 2, &mut out);
        }
        assert_eq!(summary(&out), vec![s("POST", "/up", 200, 10, 7)]);
    }

    #[test]
    fn chunked_request_bodies_are_counted() {
        let mut p = Http1Parser::new(Role::Server);
        let out = feed_all(
            &mut p,
            &[
                (
                    In,
                    b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                ),
                (In, b"2\r\n!!\r\n0\r\n\r\n"),
                (Out, b"HTTP/1.1 204 No Content\r\n\r\n"),
            ],
        );
        assert_eq!(summary(&out), vec![s("POST", "/c", 204, 7, 0)]);
    }

    #[test]
    fn unknown_bytes_inside_bodies_are_counted() {
        let mut p = Http1Parser::new(Role::Server);
        let mut out = Vec::new();
        p.feed(In, b"GET /file HTTP/1.1\r\n\r\n", 22, 1, &mut out);
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        p.feed(Out, head, head.len() as u64, 2, &mut out);
        // sendfile: bytes only.
        p.feed(Out, b"", 60000, 3, &mut out);
        // A large write of which only a prefix was copied.
        p.feed(Out, &[b'x'; 1024], 40000, 4, &mut out);
        assert_eq!(summary(&out), vec![s("GET", "/file", 200, 0, 100000)]);
        assert_eq!(out[0].end_ns, 4);
        // The connection is still in sync.
        let out = feed_all(
            &mut p,
            &[
                (In, b"HEAD /h HTTP/1.1\r\n\r\n"),
                (Out, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
            ],
        );
        assert_eq!(summary(&out), vec![s("HEAD", "/h", 200, 0, 0)]);
    }

    /// Go's chunked responses as the syscalls see them (`strace`: a 5000-byte body is a
    /// 4096-byte write then a 1042-byte one, a 3000-byte body one 3137-byte write), with only
    /// the first 1 KiB of each write copied: the framing past it is the data's CRLF and the
    /// last chunk.
    #[test]
    fn chunked_framing_past_the_copied_prefix_of_a_write() {
        let mut p = Http1Parser::new(Role::Server);
        let mut out = Vec::new();
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
            Date: Mon, 07 Dec 2026 05:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n";
        let copied = |known: &[u8]| {
            let mut v = known.to_vec();
            v.resize(1024, b'x');
            v
        };
        p.feed(In, b"GET /a HTTP/1.1\r\n\r\n", 19, 1, &mut out);
        // 5000 bytes of data: 4096 - head in the first write, the rest + CRLF + last chunk.
        let first = 4096 - head.len() as u64;
        assert!(
            5000 - first > 1024,
            "the framing must lie past the copied 1 KiB"
        );
        p.feed(Out, &copied(head), 4096, 2, &mut out);
        p.feed(Out, &copied(b""), 5000 - first + 7, 3, &mut out);
        assert_eq!(summary(&out), vec![s("GET", "/a", 200, 0, 5000)]);
        // One write: head, size line, 3000 bytes, CRLF, last chunk.
        out.clear();
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nbb8\r\n";
        p.feed(In, b"GET /b HTTP/1.1\r\n\r\n", 19, 4, &mut out);
        p.feed(
            Out,
            &copied(head),
            head.len() as u64 + 3000 + 7,
            5,
            &mut out,
        );
        assert_eq!(summary(&out), vec![s("GET", "/b", 200, 0, 3000)]);
        // A chunk ended with its CRLF only: the next write's size line is read.
        out.clear();
        p.feed(In, b"GET /c HTTP/1.1\r\n\r\n", 19, 6, &mut out);
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n";
        p.feed(
            Out,
            &copied(head),
            head.len() as u64 + 0x800 + 2,
            7,
            &mut out,
        );
        p.feed(Out, b"3\r\nabc\r\n0\r\n\r\n", 15, 8, &mut out);
        assert_eq!(summary(&out), vec![s("GET", "/c", 200, 0, 0x803)]);
        // Any other unseen tail loses the connection (nothing is made up), until a new head.
        out.clear();
        p.feed(In, b"GET /d HTTP/1.1\r\n\r\n", 19, 9, &mut out);
        p.feed(
            Out,
            &copied(head),
            head.len() as u64 + 0x800 + 5,
            10,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn response_until_close_and_http10() {
        let mut p = Http1Parser::new(Role::Server);
        let mut out = feed_all(
            &mut p,
            &[
                (In, b"GET / HTTP/1.0\r\n\r\n"),
                (Out, b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n"),
                (Out, b"<html>"),
            ],
        );
        assert!(out.is_empty());
        p.close(99, &mut out);
        assert_eq!(summary(&out), vec![s("GET", "/", 200, 0, 6)]);
        assert_eq!(out[0].end_ns, 99);
    }

    #[test]
    fn client_role_and_interim_responses() {
        let mut p = Http1Parser::new(Role::Client);
        let out = feed_all(
            &mut p,
            &[
                (
                    Out,
                    b"PUT http://api:81/v1/x?q HTTP/1.1\r\nHost: api:81\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
                ),
                (In, b"HTTP/1.1 100 Continue\r\n\r\n"),
                (Out, b"data"),
                (In, b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok"),
            ],
        );
        assert_eq!(summary(&out), vec![s("PUT", "/v1/x", 202, 4, 2)]);
        assert_eq!(out[0].host.as_deref(), Some("api:81"));
    }

    #[test]
    fn binary_and_tls_never_produce_requests() {
        let mut p = Http1Parser::new(Role::Server);
        let out = feed_all(
            &mut p,
            &[
                (In, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
                (Out, b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76"),
                (In, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
                (Out, b"HTTP/1.1 200 OK\r\n\r\n"),
            ],
        );
        assert!(out.is_empty());
        // After garbage, a chunk that starts a request is parsed again.
        let out = feed_all(
            &mut p,
            &[
                (In, b"GET /again HTTP/1.1\r\n\r\n"),
                (Out, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ],
        );
        assert_eq!(summary(&out), vec![s("GET", "/again", 200, 0, 0)]);
    }

    #[test]
    fn malformed_heads_are_dropped() {
        for bad in [
            &b"GET /x HTTP/1.1\r\nContent-Length: abc\r\n\r\n"[..],
            b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"get /x HTTP/1.1\r\n\r\n",
            b"GET /x FTP/1.0\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /x HTTP/1.1\r\nno colon here\r\n\r\n",
        ] {
            let mut p = Http1Parser::new(Role::Server);
            let out = feed_all(
                &mut p,
                &[
                    (In, bad),
                    (Out, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
                ],
            );
            assert!(out.is_empty(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn memory_is_bounded() {
        let mut p = Http1Parser::new(Role::Server);
        let mut out = Vec::new();
        p.feed(In, b"GET /", 5, 1, &mut out);
        for _ in 0..100 {
            p.feed(In, &[b'a'; 1024], 1024, 1, &mut out);
        }
        assert!(p.requests.head.capacity() <= 2 * HEAD_MAX);
        // Requests never answered are capped.
        let mut p = Http1Parser::new(Role::Server);
        for _ in 0..PENDING_MAX + 10 {
            p.feed(In, b"GET / HTTP/1.1\r\n\r\n", 18, 1, &mut out);
        }
        assert!(p.pending() <= PENDING_MAX);
        assert!(out.is_empty());
    }

    #[test]
    fn long_paths_are_truncated() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "p".repeat(300));
        let mut p = Http1Parser::new(Role::Server);
        let out = feed_all(
            &mut p,
            &[
                (In, long.as_bytes()),
                (Out, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ],
        );
        assert_eq!(out[0].path.len(), PATH_MAX);
        assert!(out[0].path_truncated);
    }

    #[test]
    fn switching_protocols_stops_parsing() {
        let mut p = Http1Parser::new(Role::Server);
        let out = feed_all(
            &mut p,
            &[
                (In, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
                (Out, b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
                (In, b"GET /x HTTP/1.1\r\n\r\n"),
                (Out, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ],
        );
        assert!(out.is_empty());
    }

    #[test]
    fn the_fuzz_entry_point_parses_what_it_is_given() {
        // Chunk lengths are multiples of 4.
        let req = b"GET /ff HTTP/1.1\r\n\r\n";
        let resp = b"HTTP/1.1 200 OKK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!((req.len(), resp.len()), (20, 44));
        let mut input = vec![0u8, (20 / 4) << 1];
        input.extend_from_slice(req);
        input.push(1 | ((44 / 4) << 1));
        input.extend_from_slice(resp);
        let out = parse_arbitrary(&input);
        assert_eq!(summary(&out), vec![s("GET", "/ff", 200, 0, 5)]);
        assert!(parse_arbitrary(&[]).is_empty());
        assert!(parse_arbitrary(&[0xff; 300]).is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator: the fuzz target does this at scale.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = b"GET /HTP1.0\r\n:ContentLgh-chunkdTrasfr 0123456789abcdef;\x00\xff";
        for round in 0..300 {
            let role = if round % 2 == 0 {
                Role::Server
            } else {
                Role::Client
            };
            let mut p = Http1Parser::new(role);
            let mut out = Vec::new();
            for _ in 0..40 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let n = (x % 64) as usize;
                let data: Vec<u8> = (0..n)
                    .map(|i| alphabet[((x >> (i % 50)) as usize + i) % alphabet.len()])
                    .collect();
                let dir = if x & 1 == 0 { In } else { Out };
                let extra = if x & 6 == 0 { x % 5000 } else { 0 };
                p.feed(dir, &data, n as u64 + extra, x % 1000, &mut out);
            }
            p.close(1, &mut out);
        }
    }
}
