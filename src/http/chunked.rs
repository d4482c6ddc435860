//! The chunked transfer coding (RFC 9112 §7.1) as a state machine fed byte slices as they
//! arrive, in any split. Pure: no I/O, and the only allocation is the decoded body, which is
//! checked against its limit before a chunk's bytes are taken. Chunk extensions and
//! trailers are skipped (bounded); bare `\n` line ends are refused.

use super::head::MAX_RESPONSE_HEAD;
use super::HttpError;

/// Longest chunk-size line (size, extensions) accepted.
pub const MAX_SIZE_LINE: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of the chunk size.
    Size,
    /// After the size: whitespace and `;extensions` up to the CR.
    Extension,
    /// The LF ending the size line.
    SizeLf,
    /// This many data bytes still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataCr,
    DataLf,
    /// A trailer line (or the final blank line) of this many bytes so far.
    Trailer(usize),
    TrailerLf(usize),
    Done,
}

/// Decodes one chunked body.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: usize,
    line_len: usize,
    trailer_len: usize,
    body_len: u64,
    max_body: usize,
}

impl ChunkedDecoder {
    /// A decoder refusing bodies over `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            digits: 0,
            line_len: 0,
            trailer_len: 0,
            body_len: 0,
            max_body,
        }
    }

    /// Whether the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending body bytes to `out`; returns how many input bytes were
    /// consumed. Stops at the end of the body: bytes after it (the next response on a
    /// kept-alive connection) are left unconsumed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < input.len() {
            let c = input[i];
            match self.state {
                State::Done => break,
                State::Data(rem) => {
                    let n = rem.min((input.len() - i) as u64) as usize;
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let left = rem - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::Size | State::Extension => {
                    self.line_len += 1;
                    if self.line_len > MAX_SIZE_LINE {
                        return Err(HttpError::Malformed("chunk size line too long"));
                    }
                    match (self.state, c) {
                        (State::Size, _) if c.is_ascii_hexdigit() => {
                            let d = (c as char).to_digit(16).unwrap_or(0);
                            self.size = self
                                .size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(u64::from(d)))
                                .ok_or(HttpError::Malformed("chunk size overflows"))?;
                            self.digits += 1;
                        }
                        (_, b'\r') => {
                            if self.digits == 0 {
                                return Err(HttpError::Malformed("bad chunk size"));
                            }
                            self.state = State::SizeLf;
                        }
                        (State::Size, b';' | b' ' | b'\t') if self.digits > 0 => {
                            self.state = State::Extension;
                        }
                        (State::Extension, c) if c != b'\n' => {}
                        _ => return Err(HttpError::Malformed("bad chunk size")),
                    }
                }
                State::SizeLf => {
                    if c != b'\n' {
                        return Err(HttpError::Malformed("bad chunk size line end"));
                    }
                    let size = self.size;
                    self.size = 0;
                    self.digits = 0;
                    self.line_len = 0;
                    if size == 0 {
                        self.state = State::Trailer(0);
                    } else {
                        let total = self.body_len.saturating_add(size);
                        if total > self.max_body as u64 {
                            return Err(HttpError::BodyTooLarge(self.max_body));
                        }
                        self.body_len = total;
                        self.state = State::Data(size);
                    }
                }
                State::DataCr => {
                    if c != b'\r' {
                        return Err(HttpError::Malformed("chunk data longer than its size"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if c != b'\n' {
                        return Err(HttpError::Malformed("chunk data longer than its size"));
                    }
                    self.state = State::Size;
                }
                State::Trailer(n) => {
                    self.trailer_len += 1;
                    if self.trailer_len > MAX_RESPONSE_HEAD {
                        return Err(HttpError::HeadTooLarge(MAX_RESPONSE_HEAD));
                    }
                    self.state = match c {
                        b'\r' => State::TrailerLf(n),
                        b'\n' => return Err(HttpError::Malformed("bad chunk trailer")),
                        _ => State::Trailer(n + 1),
                    };
                }
                State::TrailerLf(n) => {
                    self.trailer_len += 1;
                    if c != b'\n' {
                        return Err(HttpError::Malformed("bad chunk trailer"));
                    }
                    self.state = if n == 0 {
                        State::Done
                    } else {
                        State::Trailer(0)
                    };
                }
            }
            i += 1;
        }
        Ok(i)
    }
}

/// Decodes a whole chunked body held in one slice: the body and the bytes consumed, `None`
/// when the input ends before the body does.
pub fn decode_all(input: &[u8], max_body: usize) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut d = ChunkedDecoder::new(max_body);
    let mut out = Vec::new();
    let n = d.feed(input, &mut out)?;
    Ok(d.is_done().then_some((out, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        b"4;name=v\r\nWiki\r\n5 \r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";

    #[test]
    fn decodes_and_stops_at_the_end() {
        let (body, n) = decode_all(BODY, 1 << 20).unwrap().unwrap();
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(&BODY[n..], b"NEXT");
        let (body, n) = decode_all(b"0\r\n\r\n", 0).unwrap().unwrap();
        assert!(body.is_empty());
        assert_eq!(n, 5);
    }

    #[test]
    fn every_split_gives_the_same_body() {
        let want = decode_all(BODY, 1 << 20).unwrap().unwrap();
        for cut in 0..=BODY.len() {
            let mut d = ChunkedDecoder::new(1 << 20);
            let mut out = Vec::new();
            let a = d.feed(&BODY[..cut], &mut out).unwrap();
            assert_eq!(a, cut.min(want.1), "{cut}");
            let b = d.feed(&BODY[a..], &mut out).unwrap();
            assert!(d.is_done());
            assert_eq!((out.clone(), a + b), want, "{cut}");
        }
        // One byte at a time.
        let mut d = ChunkedDecoder::new(1 << 20);
        let mut out = Vec::new();
        let mut used = 0;
        for b in BODY.chunks(1) {
            used += d.feed(b, &mut out).unwrap();
        }
        assert_eq!((out, used), want);
    }

    #[test]
    fn incomplete_is_none() {
        for end in [1, 3, 10, 20, BODY.len() - 7] {
            assert_eq!(decode_all(&BODY[..end], 1 << 20).unwrap(), None, "{end}");
        }
    }

    #[test]
    fn bad_sizes_and_line_ends() {
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b";ext\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b"1\n",
            b"1\rx",
            b"1 x\n",
            b"3\r\nabcd\r\n",
            b"3\r\nabc\n\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\n\rx",
        ] {
            assert!(decode_all(bad, 1 << 20).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn overflow_and_limits() {
        // 17 hex digits overflow u64.
        assert!(decode_all(b"10000000000000000\r\n", usize::MAX).is_err());
        // Largest u64 is a valid size but over any limit: refused before any data arrives.
        assert!(matches!(
            decode_all(b"ffffffffffffffff\r\n", usize::MAX - 1),
            Err(HttpError::BodyTooLarge(_))
        ));
        // The limit counts all chunks.
        assert!(decode_all(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", 6).is_ok());
        assert!(matches!(
            decode_all(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n", 6),
            Err(HttpError::BodyTooLarge(6))
        ));
        // Leading zeros are digits, not an overflow; an endless size line is refused.
        assert!(decode_all(b"0000000000000000000003\r\nabc\r\n0\r\n\r\n", 9).is_ok());
        let mut long = b"1;".to_vec();
        long.resize(MAX_SIZE_LINE + 1, b'x');
        assert!(decode_all(&long, 9).is_err());
        // Trailers are bounded too.
        let mut t = b"0\r\n".to_vec();
        while t.len() < MAX_RESPONSE_HEAD + 10 {
            t.extend_from_slice(b"X-T: 1\r\n");
        }
        assert!(matches!(decode_all(&t, 9), Err(HttpError::HeadTooLarge(_))));
    }

    #[test]
    fn output_is_bounded_by_the_limit() {
        // However the input lies, the body never outgrows max_body.
        let mut d = ChunkedDecoder::new(10);
        let mut out = Vec::new();
        let _ = d.feed(b"a\r\n0123456789\r\n1\r\nX", &mut out);
        assert!(out.len() <= 10);
    }
}
