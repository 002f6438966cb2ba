//! Incremental HTTP/1.x parsing of one connection, from the bytes its process read and wrote.
//!
//! Pure: no kernel, no clock. Bytes come in chunks as the syscalls saw them, possibly with only
//! a prefix of each chunk known (the kernel copies a bounded prefix and reports the full
//! length): unknown bytes are fine inside a body, whose size is all that is measured, and make
//! the parser lose sync anywhere else. A stream that is not HTTP/1.x (TLS records, HTTP/2,
//! binary protocols) never produces an exchange; after losing sync the parser waits for a
//! chunk that starts like a new message. Memory is bounded per connection.
//!
//! This file is the connection: both directions' states, requests waiting for their
//! responses, what ends an exchange. Heads are parsed in [`head`], bodies framed in [`body`].

mod body;
mod head;

use std::collections::VecDeque;

use body::{Body, Chunked, Step};
use head::{parse_head, plausible_start, Head, StartLine};

/// Longest request or response head kept while waiting for its end.
pub(crate) const HEAD_MAX: usize = 8192;
/// Requests read but not answered yet (pipelining) kept per connection.
pub(crate) const PENDING_MAX: usize = 64;
/// Longest path kept; longer ones are truncated and flagged.
pub(crate) const PATH_MAX: usize = 128;

/// Which end of the connection the traced process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// It accepted the connection: it reads requests and writes responses.
    Server,
    /// It connected: it writes requests and reads responses.
    Client,
}

/// Whether the traced process read or wrote the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
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
pub(crate) struct Http1Parser {
    role: Role,
    requests: Side,
    responses: Side,
    pending: VecDeque<Pending>,
    response: Option<Response>,
    /// The connection switched protocols (101) or is not HTTP at all: nothing more to parse.
    done: bool,
}

impl Http1Parser {
    pub(crate) fn new(role: Role) -> Self {
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
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one chunk: `len` bytes of which the first `data.len()` are known (`len` smaller
    /// than `data.len()` is read as `data.len()`). Finished exchanges are appended to `out`.
    pub(crate) fn feed(
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
    pub(crate) fn close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
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
#[path = "http1/http1_tests.rs"]
mod tests;
