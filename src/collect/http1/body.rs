//! Message bodies of HTTP/1.x: `Content-Length`, chunked transfer coding (sizes, extensions,
//! trailers) and until-close, counted as bytes come, including bytes only known by their
//! number (past the prefix the kernel copied).

/// A chunk-size line, extensions included.
const CHUNK_LINE_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Chunked {
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
    pub(super) fn start() -> Self {
        Chunked::Size {
            size: 0,
            digits: false,
            ext: false,
            len: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Body {
    Length(u64),
    Chunked(Chunked),
    /// A response without length: it ends when the connection closes.
    UntilClose,
}

/// How a body step ended.
pub(super) enum Step {
    /// Every byte was used and the body goes on.
    More,
    /// The body ended after this many bytes of the input.
    Done(usize),
    /// Not valid framing.
    Invalid,
}

impl Body {
    /// Consumes known bytes; adds the body bytes among them to `counted`.
    pub(super) fn feed(&mut self, data: &[u8], counted: &mut u64) -> Step {
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
    pub(super) fn skip(&mut self, n: u64, counted: &mut u64) -> Step {
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
