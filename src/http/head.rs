//! HTTP/1.x message heads (RFC 9112 §2-6) as pure functions: the response head the client
//! reads (status line, headers, how the body is framed) and the request head the servers
//! read (request line, header lookup). Fed whatever bytes have arrived so far: `None` means
//! "not complete yet, read more". Every size is bounded: a head longer than its limit is an
//! error however it is split across reads.

use super::HttpError;

/// Largest response head (status line + headers + blank line) accepted.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Most header lines kept from one response.
pub const MAX_HEADERS: usize = 128;

const END: &[u8] = b"\r\n\r\n";

/// Offset just past the `\r\n\r\n` ending a head that starts at `buf[0]`, looking at most
/// `max` bytes in; `Err` when `max` bytes hold no end.
pub fn head_end(buf: &[u8], max: usize) -> Result<Option<usize>, HttpError> {
    let window = &buf[..buf.len().min(max)];
    match window.windows(END.len()).position(|w| w == END) {
        Some(i) => Ok(Some(i + END.len())),
        None if buf.len() >= max => Err(HttpError::HeadTooLarge(max)),
        None => Ok(None),
    }
}

/// A response's status line and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// The `x` of `HTTP/1.x`.
    pub minor_version: u8,
    pub status: u16,
    /// Header names lowercased, values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked` ([`super::chunked`]).
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

impl ResponseHead {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the server lets the connection carry another request: HTTP/1.1 without
    /// `Connection: close` (HTTP/1.0 connections are not reused).
    pub fn keep_alive(&self) -> bool {
        self.minor_version >= 1
            && !self
                .header("connection")
                .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    /// How the body that follows is delimited. Conflicting `Content-Length` values are an
    /// error (a body that two parsers would cut differently).
    pub fn framing(&self) -> Result<Framing, HttpError> {
        if self.status == 204 || self.status == 304 || (100..200).contains(&self.status) {
            return Ok(Framing::Empty);
        }
        let chunked = self
            .headers
            .iter()
            .filter(|(k, _)| k == "transfer-encoding")
            .any(|(_, v)| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            return Ok(Framing::Chunked);
        }
        let mut len = None;
        for (_, v) in self.headers.iter().filter(|(k, _)| k == "content-length") {
            let n = parse_decimal(v).ok_or(HttpError::Malformed("bad Content-Length"))?;
            if len.is_some_and(|l| l != n) {
                return Err(HttpError::Malformed("conflicting Content-Length"));
            }
            len = Some(n);
        }
        Ok(len.map_or(Framing::UntilClose, Framing::Length))
    }
}

fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a response head at the start of `buf`: `Ok(None)` while it is incomplete, else the
/// head and its length in bytes (the body starts there).
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let Some(end) = head_end(buf, MAX_RESPONSE_HEAD)? else {
        return Ok(None);
    };
    let mut lines = buf[..end - END.len()].split(|&c| c == b'\n');
    let status_line = lines.next().unwrap_or_default();
    let status_line = status_line.strip_suffix(b"\r").unwrap_or(status_line);
    let rest = status_line
        .strip_prefix(b"HTTP/1.")
        .ok_or(HttpError::Malformed("not an HTTP/1.x reply"))?;
    let (minor, status) = match rest {
        [m, b' ', a, b, c, ..] if m.is_ascii_digit() => (*m - b'0', [*a, *b, *c]),
        _ => return Err(HttpError::Malformed("bad HTTP status line")),
    };
    if !status.iter().all(u8::is_ascii_digit) || rest.get(5).is_some_and(|&c| c != b' ') {
        return Err(HttpError::Malformed("bad HTTP status line"));
    }
    let status = status
        .iter()
        .fold(0u16, |a, &d| a * 10 + u16::from(d - b'0'));
    if status < 100 {
        return Err(HttpError::Malformed("bad HTTP status code"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // Lines without a colon (obsolete folding, junk) carry nothing we use.
        let Some(i) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        if headers.len() >= MAX_HEADERS {
            return Err(HttpError::Malformed("too many headers"));
        }
        let name = String::from_utf8_lossy(line[..i].trim_ascii()).to_ascii_lowercase();
        let value = String::from_utf8_lossy(line[i + 1..].trim_ascii()).into_owned();
        headers.push((name, value));
    }
    Ok(Some((
        ResponseHead {
            minor_version: minor,
            status,
            headers,
        },
        end,
    )))
}

/// A request line, borrowed from the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLine<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    /// `HTTP/1.1` and the like; empty when the line has no version.
    pub version: &'a [u8],
}

impl<'a> RequestLine<'a> {
    /// The first line of a complete request head: method, target and version separated by
    /// single spaces. `None` without a method and a target.
    pub fn parse(head: &'a [u8]) -> Option<RequestLine<'a>> {
        let end = head.iter().position(|&c| c == b'\r' || c == b'\n');
        let line = &head[..end.unwrap_or(head.len())];
        let mut parts = line.split(|&c| c == b' ');
        let method = parts.next().filter(|m| !m.is_empty())?;
        let target = parts.next().filter(|t| !t.is_empty())?;
        let version = parts.next().unwrap_or_default();
        Some(RequestLine {
            method,
            target,
            version,
        })
    }

    /// The target's path (before any `?`) and query (after it; empty when none).
    pub fn path_and_query(&self) -> (&'a [u8], &'a [u8]) {
        match self.target.iter().position(|&c| c == b'?') {
            Some(i) => (&self.target[..i], &self.target[i + 1..]),
            None => (self.target, &b""[..]),
        }
    }

    pub fn is_http1(&self) -> bool {
        self.version.starts_with(b"HTTP/1.")
    }
}

/// The value of request header `name` (any case) in a complete head, trimmed.
pub fn request_header<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    head.split(|&c| c == b'\n').skip(1).find_map(|l| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        let i = l.iter().position(|&c| c == b':')?;
        l[..i]
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| l[i + 1..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESP: &[u8] = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\nX-Empty:\r\nCONNECTION: Keep-Alive\r\n\r\nhello";

    #[test]
    fn parses_a_response_head() {
        let (h, n) = parse_response_head(RESP).unwrap().unwrap();
        assert_eq!(&RESP[n..], b"hello");
        assert_eq!((h.minor_version, h.status), (1, 206));
        assert_eq!(h.header("content-length"), Some("5"));
        assert_eq!(h.header("x-empty"), Some(""));
        assert!(h.keep_alive());
        assert_eq!(h.framing().unwrap(), Framing::Length(5));
    }

    #[test]
    fn incomplete_at_every_split() {
        let (want, n) = parse_response_head(RESP).unwrap().unwrap();
        for cut in 0..n {
            assert_eq!(parse_response_head(&RESP[..cut]).unwrap(), None, "{cut}");
        }
        for cut in n..=RESP.len() {
            assert_eq!(
                parse_response_head(&RESP[..cut]).unwrap(),
                Some((want.clone(), n))
            );
        }
    }

    #[test]
    fn keep_alive_and_framing_rules() {
        let head = |s: &str| parse_response_head(s.as_bytes()).unwrap().unwrap().0;
        assert!(!head("HTTP/1.0 200 OK\r\n\r\n").keep_alive());
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive());
        assert!(head("HTTP/1.1 200 OK\r\n\r\n").keep_alive());
        assert_eq!(
            head("HTTP/1.1 200 OK\r\n\r\n").framing().unwrap(),
            Framing::UntilClose
        );
        assert_eq!(
            head("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n")
                .framing()
                .unwrap(),
            Framing::Empty
        );
        assert_eq!(
            head(
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            )
            .framing()
            .unwrap(),
            Framing::Chunked
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 4\r\ncontent-length: 4\r\n\r\n")
                .framing()
                .unwrap(),
            Framing::Length(4)
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        ] {
            assert!(head(bad).framing().is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_status_lines() {
        for bad in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"ICY 200 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 099 OK\r\n\r\n",
            b"HTTP/1.x 200 OK\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert!(parse_response_head(bad).is_err(), "{bad:?}");
        }
        // A bare status with no reason phrase is fine.
        let (h, _) = parse_response_head(b"HTTP/1.1 404\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 404);
    }

    #[test]
    fn oversized_heads_are_refused_however_split() {
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() < MAX_RESPONSE_HEAD + 100 {
            big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        big.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse_response_head(&big),
            Err(HttpError::HeadTooLarge(_))
        ));
        assert_eq!(
            parse_response_head(&big[..MAX_RESPONSE_HEAD - 1]).unwrap(),
            None
        );
        assert!(parse_response_head(&big[..MAX_RESPONSE_HEAD]).is_err());
        // Many short headers: bounded by count too.
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"a:\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert!(parse_response_head(&many).is_err());
    }

    #[test]
    fn request_line_and_headers() {
        let head =
            b"GET /announce?info_hash=x&port=1 HTTP/1.1\r\nHost: t.example:80\r\nX-A:  b \r\n\r\n";
        let l = RequestLine::parse(head).unwrap();
        assert_eq!(l.method, b"GET");
        assert!(l.is_http1());
        assert_eq!(
            l.path_and_query(),
            (&b"/announce"[..], &b"info_hash=x&port=1"[..])
        );
        assert_eq!(request_header(head, "host"), Some(&b"t.example:80"[..]));
        assert_eq!(request_header(head, "x-a"), Some(&b"b"[..]));
        assert_eq!(
            request_header(head, "get /announce?info_hash=x&port=1 http/1.1"),
            None
        );
        assert_eq!(RequestLine::parse(b"GET\r\n\r\n"), None);
        assert_eq!(RequestLine::parse(b" / HTTP/1.1\r\n\r\n"), None);
        assert!(!RequestLine::parse(b"GET / SPDY\r\n\r\n")
            .unwrap()
            .is_http1());
        assert_eq!(head_end(head, 8192).unwrap(), Some(head.len()));
        assert_eq!(head_end(&head[..head.len() - 1], 8192).unwrap(), None);
        assert!(head_end(&[b'a'; 64], 64).is_err());
    }
}
