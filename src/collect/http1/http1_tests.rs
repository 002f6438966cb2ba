//! The HTTP/1.x parser fed real-looking traffic in every chunking: keep-alive, pipelining,
//! chunked bodies, partial copies, non-HTTP streams, and arbitrary bytes.

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
