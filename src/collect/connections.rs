//! Connections of the syscall tracer: one HTTP/1.x parser per (pid, fd), fed by the kernel's
//! open/data/close records, producing the same `Request`s as the Go probes. Pure: tested
//! without a kernel.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::event::split_host;
use super::http1::{Direction, Exchange, Http1Parser, Role};
use super::{Request, RequestKind};
use crate::ebpf_abi::{self, SysEvent, SYS_EVENT_HEADER};

/// Connections tracked at once; past it the least recently used are dropped.
pub(crate) const MAX_CONNECTIONS: usize = 16384;
/// TLS plaintext waiting for its socket (see `SysRecord::Bind`): SSL objects, and chunks each.
const MAX_UNBOUND: usize = 1024;
const MAX_UNBOUND_CHUNKS: usize = 16;

/// A kernel record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SysRecord<'a> {
    Open {
        pid: u32,
        fd: i32,
        role: Role,
        peer: Option<SocketAddr>,
    },
    Data {
        pid: u32,
        fd: i32,
        role: Option<Role>,
        direction: Direction,
        tls: bool,
        ts_ns: u64,
        len: u64,
        data: &'a [u8],
        /// TLS plaintext whose socket is not known yet: the SSL object it belongs to.
        unbound_ssl: Option<u64>,
    },
    /// The SSL object runs over this connection: its unbound plaintext belongs here.
    Bind {
        pid: u32,
        fd: i32,
        role: Option<Role>,
        ssl: u64,
    },
    /// The SSL object runs over a socket sonde does not trace: its unbound plaintext has
    /// no connection to go to.
    Orphan {
        pid: u32,
        ssl: u64,
    },
    Close {
        pid: u32,
        fd: i32,
        ts_ns: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SysDecodeError {
    #[error("record of {0} bytes is shorter than a syscall event")]
    Short(usize),
    #[error("unknown syscall event kind {0}")]
    UnknownKind(u8),
    #[error("unknown role {0} or direction {1}")]
    BadField(u8, u8),
}

fn role_of(b: u8) -> Option<Role> {
    match b {
        ebpf_abi::SYS_ROLE_SERVER => Some(Role::Server),
        ebpf_abi::SYS_ROLE_CLIENT => Some(Role::Client),
        _ => None,
    }
}

fn peer_of(family: u16, addr: &[u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        2 => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        10 => {
            let v6 = Ipv6Addr::from(*addr);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn ssl_of(addr: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&addr[..8]);
    u64::from_ne_bytes(b)
}

/// Decodes one ring-buffer record (the data may be shorter than the fixed struct).
pub(crate) fn decode_sys(bytes: &[u8]) -> Result<SysRecord<'_>, SysDecodeError> {
    let e: SysEvent = ebpf_abi::read_pod(bytes).ok_or(SysDecodeError::Short(bytes.len()))?;
    match e.kind {
        ebpf_abi::SYS_OPEN => Ok(SysRecord::Open {
            pid: e.pid,
            fd: e.fd,
            role: role_of(e.role).ok_or(SysDecodeError::BadField(e.role, e.direction))?,
            peer: peer_of(e.family, &e.addr, e.port),
        }),
        ebpf_abi::SYS_DATA => {
            let direction = match e.direction {
                ebpf_abi::SYS_DIR_IN => Direction::In,
                ebpf_abi::SYS_DIR_OUT => Direction::Out,
                d => return Err(SysDecodeError::BadField(e.role, d)),
            };
            let copied = (e.copied as usize)
                .min(ebpf_abi::SYS_DATA_MAX)
                .min(bytes.len() - SYS_EVENT_HEADER);
            let unbound = e.flags & ebpf_abi::SYS_FLAG_UNBOUND != 0;
            Ok(SysRecord::Data {
                pid: e.pid,
                fd: e.fd,
                role: role_of(e.role),
                direction,
                tls: e.flags & ebpf_abi::SYS_FLAG_TLS != 0,
                ts_ns: e.ts_ns,
                len: e.len.max(copied as u64),
                data: &bytes[SYS_EVENT_HEADER..SYS_EVENT_HEADER + copied],
                unbound_ssl: unbound.then(|| ssl_of(&e.addr)),
            })
        }
        ebpf_abi::SYS_BIND => Ok(SysRecord::Bind {
            pid: e.pid,
            fd: e.fd,
            role: role_of(e.role),
            ssl: ssl_of(&e.addr),
        }),
        ebpf_abi::SYS_ORPHAN => Ok(SysRecord::Orphan {
            pid: e.pid,
            ssl: ssl_of(&e.addr),
        }),
        ebpf_abi::SYS_CLOSE => Ok(SysRecord::Close {
            pid: e.pid,
            fd: e.fd,
            ts_ns: e.ts_ns,
        }),
        other => Err(SysDecodeError::UnknownKind(other)),
    }
}

struct Conn {
    parser: Http1Parser,
    role: Role,
    peer: Option<SocketAddr>,
    /// Plaintext comes from OpenSSL: the socket's own bytes are encrypted and ignored.
    tls: bool,
    /// Order of last use, for eviction.
    used: u64,
}

impl Conn {
    fn new(role: Role, peer: Option<SocketAddr>) -> Self {
        Conn {
            parser: Http1Parser::new(role),
            role,
            peer,
            tls: false,
            used: 0,
        }
    }
}

/// A chunk kept until its socket is known.
struct Unbound {
    direction: Direction,
    ts_ns: u64,
    len: u64,
    data: Vec<u8>,
}

/// Every traced connection.
#[derive(Default)]
pub(crate) struct Connections {
    conns: HashMap<(u32, i32), Conn>,
    clock: u64,
    exchanges: Vec<Exchange>,
    /// TLS plaintext by (pid, SSL object), waiting for its `Bind`.
    unbound: HashMap<(u32, u64), Vec<Unbound>>,
}

impl Connections {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Applies one record; finished requests go to `sink`.
    pub(crate) fn handle(&mut self, record: SysRecord<'_>, sink: &mut impl FnMut(Request)) {
        self.clock += 1;
        match record {
            SysRecord::Open {
                pid,
                fd,
                role,
                peer,
            } => {
                // A reused fd whose close was missed: the old connection is over.
                self.conns.remove(&(pid, fd));
                self.make_room();
                let mut c = Conn::new(role, peer);
                c.used = self.clock;
                self.conns.insert((pid, fd), c);
            }
            SysRecord::Data {
                pid,
                fd,
                role,
                direction,
                tls,
                ts_ns,
                len,
                data,
                unbound_ssl,
            } => {
                if let Some(ssl) = unbound_ssl {
                    if self.unbound.len() >= MAX_UNBOUND && !self.unbound.contains_key(&(pid, ssl))
                    {
                        // Binds that never came: start over rather than grow.
                        self.unbound.clear();
                    }
                    let chunks = self.unbound.entry((pid, ssl)).or_default();
                    if chunks.len() < MAX_UNBOUND_CHUNKS {
                        chunks.push(Unbound {
                            direction,
                            ts_ns,
                            len,
                            data: data.to_vec(),
                        });
                    }
                    return;
                }
                if !self.conns.contains_key(&(pid, fd)) {
                    // Its open record was lost: the kernel still knows the role.
                    let Some(role) = role else { return };
                    self.make_room();
                    self.conns.insert((pid, fd), Conn::new(role, None));
                }
                let Some(c) = self.conns.get_mut(&(pid, fd)) else {
                    return;
                };
                c.used = self.clock;
                if tls && !c.tls {
                    // The handshake went through the socket; plaintext starts here.
                    c.tls = true;
                    c.parser = Http1Parser::new(c.role);
                } else if !tls && c.tls {
                    return;
                }
                c.parser
                    .feed(direction, data, len, ts_ns, &mut self.exchanges);
                emit(&mut self.exchanges, pid, c, sink);
            }
            SysRecord::Bind { pid, fd, role, ssl } => {
                let Some(chunks) = self.unbound.remove(&(pid, ssl)) else {
                    return;
                };
                for u in chunks {
                    self.handle(
                        SysRecord::Data {
                            pid,
                            fd,
                            role,
                            direction: u.direction,
                            tls: true,
                            ts_ns: u.ts_ns,
                            len: u.len,
                            data: &u.data,
                            unbound_ssl: None,
                        },
                        sink,
                    );
                }
            }
            SysRecord::Orphan { pid, ssl } => {
                // Else a later SSL object at this freed address would inherit it.
                self.unbound.remove(&(pid, ssl));
            }
            SysRecord::Close { pid, fd, ts_ns } => {
                if let Some(mut c) = self.conns.remove(&(pid, fd)) {
                    c.parser.close(ts_ns, &mut self.exchanges);
                    emit(&mut self.exchanges, pid, &c, sink);
                }
            }
        }
    }

    /// Drops the connections of processes for which `alive` says no.
    pub(crate) fn retain_pids(&mut self, mut alive: impl FnMut(u32) -> bool) {
        let mut verdict: HashMap<u32, bool> = HashMap::new();
        self.conns
            .retain(|&(pid, _), _| *verdict.entry(pid).or_insert_with(|| alive(pid)));
        self.unbound
            .retain(|&(pid, _), _| *verdict.entry(pid).or_insert_with(|| alive(pid)));
    }

    fn make_room(&mut self) {
        if self.conns.len() < MAX_CONNECTIONS {
            return;
        }
        // Drop the least recently used eighth at once, so this sort is rare.
        let mut ages: Vec<u64> = self.conns.values().map(|c| c.used).collect();
        ages.sort_unstable();
        let cut = ages[ages.len() / 8];
        self.conns.retain(|_, c| c.used > cut);
    }
}

fn emit(exchanges: &mut Vec<Exchange>, pid: u32, c: &Conn, sink: &mut impl FnMut(Request)) {
    for x in exchanges.drain(..) {
        sink(to_request(pid, c.role, c.peer, c.tls, x));
    }
}

fn to_request(pid: u32, role: Role, peer: Option<SocketAddr>, tls: bool, x: Exchange) -> Request {
    let mut r = Request {
        kind: match role {
            Role::Server => RequestKind::HttpServer,
            Role::Client => RequestKind::HttpClient,
        },
        pid,
        start_ns: x.start_ns,
        end_ns: x.end_ns,
        method: x.method,
        path: x.path,
        path_truncated: x.path_truncated,
        status: x.status,
        request_body_bytes: x.request_body_bytes,
        response_body_bytes: x.response_body_bytes,
        peer: None,
        http2: false,
        server_address: String::new(),
        server_port: 0,
        error: false,
        // No goroutine to carry a trace: such spans start their own.
        trace: None,
    };
    match role {
        Role::Server => r.peer = peer.map(|p| p.ip()),
        Role::Client => {
            // As the Go probes do: the server as the request named it (Host), else the
            // address connected to.
            (r.server_address, r.server_port) = match (&x.host, peer) {
                (Some(h), _) if !h.is_empty() => split_host(h, tls),
                (_, Some(p)) => (p.ip().to_string(), p.port()),
                _ => (String::new(), 0),
            };
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(conns: &mut Connections, records: Vec<SysRecord<'_>>) -> Vec<Request> {
        let mut out = Vec::new();
        for r in records {
            conns.handle(r, &mut |q| out.push(q));
        }
        out
    }

    fn data(fd: i32, direction: Direction, tls: bool, bytes: &[u8]) -> SysRecord<'_> {
        SysRecord::Data {
            pid: 7,
            fd,
            role: None,
            direction,
            tls,
            ts_ns: 100,
            len: bytes.len() as u64,
            data: bytes,
            unbound_ssl: None,
        }
    }

    /// TLS plaintext written by SSL object 0xabc before its socket is known.
    fn unbound(bytes: &[u8]) -> SysRecord<'_> {
        SysRecord::Data {
            pid: 7,
            fd: -1,
            role: None,
            direction: Direction::Out,
            tls: true,
            ts_ns: 50,
            len: bytes.len() as u64,
            data: bytes,
            unbound_ssl: Some(0xabc),
        }
    }

    #[test]
    fn server_and_client_connections() {
        let mut c = Connections::default();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let upstream: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let out = collect(
            &mut c,
            vec![
                SysRecord::Open {
                    pid: 7,
                    fd: 3,
                    role: Role::Server,
                    peer: Some(peer),
                },
                SysRecord::Open {
                    pid: 7,
                    fd: 4,
                    role: Role::Client,
                    peer: Some(upstream),
                },
                data(3, Direction::In, false, b"GET /x HTTP/1.1\r\n\r\n"),
                data(4, Direction::Out, false, b"GET /up HTTP/1.1\r\n\r\n"),
                data(4, Direction::In, false, b"HTTP/1.1 204 No\r\n\r\n"),
                data(3, Direction::Out, false, b"HTTP/1.1 200 OK\r\n"),
                data(3, Direction::Out, false, b"Content-Length: 0\r\n\r\n"),
                SysRecord::Close {
                    pid: 7,
                    fd: 3,
                    ts_ns: 200,
                },
            ],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].kind, RequestKind::HttpClient);
        assert_eq!(
            (out[0].server_address.as_str(), out[0].server_port),
            ("127.0.0.1", 8081)
        );
        assert_eq!(out[1].kind, RequestKind::HttpServer);
        assert_eq!(out[1].peer, Some(peer.ip()));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn tls_plaintext_replaces_the_socket_bytes() {
        let mut c = Connections::default();
        let out = collect(
            &mut c,
            vec![
                SysRecord::Open {
                    pid: 7,
                    fd: 5,
                    role: Role::Server,
                    peer: None,
                },
                data(5, Direction::In, false, b"\x16\x03\x01\x00\xa0\x01"),
                data(5, Direction::In, true, b"GET /s HTTP/1.1\r\n\r\n"),
                data(5, Direction::In, false, b"GET /encrypted HTTP/1.1\r\n\r\n"),
                data(
                    5,
                    Direction::Out,
                    true,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                ),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].path, "/s");
    }

    #[test]
    fn unbound_tls_plaintext_waits_for_its_socket() {
        let mut c = Connections::default();
        let request = b"GET /tls HTTP/1.1\r\nHost: api:8443\r\n\r\n";
        let out = collect(
            &mut c,
            vec![
                SysRecord::Open {
                    pid: 7,
                    fd: 9,
                    role: Role::Client,
                    peer: None,
                },
                unbound(request),
                SysRecord::Bind {
                    pid: 7,
                    fd: 9,
                    role: Some(Role::Client),
                    ssl: 0xabc,
                },
                data(
                    9,
                    Direction::In,
                    true,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                ),
            ],
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].path.as_str(), out[0].server_port, out[0].status),
            ("/tls", 8443, 200)
        );
    }

    #[test]
    fn orphaned_tls_plaintext_is_dropped_not_given_to_the_next_ssl_object() {
        let mut c = Connections::default();
        let old = b"GET /old HTTP/1.1\r\n\r\n";
        let new = b"GET /new HTTP/1.1\r\n\r\n";
        let out = collect(
            &mut c,
            vec![
                SysRecord::Open {
                    pid: 7,
                    fd: 9,
                    role: Role::Client,
                    peer: None,
                },
                // Written to a connection older than sonde, then that SSL object is freed
                // and a new one gets its address.
                unbound(old),
                SysRecord::Orphan { pid: 7, ssl: 0xabc },
                unbound(new),
                SysRecord::Bind {
                    pid: 7,
                    fd: 9,
                    role: Some(Role::Client),
                    ssl: 0xabc,
                },
                data(
                    9,
                    Direction::In,
                    true,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                ),
            ],
        );
        let paths: Vec<&str> = out.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/new"]);
    }

    #[test]
    fn decodes_records_and_rejects_short_ones() {
        assert_eq!(decode_sys(&[0; 10]), Err(SysDecodeError::Short(10)));
        let mut b = vec![0u8; SYS_EVENT_HEADER + 4];
        b[0] = ebpf_abi::SYS_DATA;
        b[1] = ebpf_abi::SYS_ROLE_SERVER;
        b[2] = ebpf_abi::SYS_DIR_IN;
        b[24] = 100; // len
        b[32] = 200; // copied: more than the record holds
        b[SYS_EVENT_HEADER..].copy_from_slice(b"GET ");
        match decode_sys(&b).unwrap() {
            SysRecord::Data { data, len, .. } => {
                assert_eq!(data, b"GET ");
                assert_eq!(len, 100);
            }
            other => panic!("{other:?}"),
        }
        b[0] = 9;
        assert_eq!(decode_sys(&b), Err(SysDecodeError::UnknownKind(9)));
    }

    #[test]
    fn connections_are_bounded() {
        let mut c = Connections::default();
        for fd in 0..(MAX_CONNECTIONS as i32 + 100) {
            c.handle(
                SysRecord::Open {
                    pid: 1,
                    fd,
                    role: Role::Server,
                    peer: None,
                },
                &mut |_| {},
            );
        }
        assert!(c.len() <= MAX_CONNECTIONS);
        c.retain_pids(|_| false);
        assert!(c.is_empty());
    }
}
