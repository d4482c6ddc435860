//! The server half shared by the tracker server (`tracker::server`) and `seed --http`: read
//! one request head (bounded; the caller puts a deadline around it, see `tracker::conns` for
//! the slowloris defences), and write one reply with `Connection: close`. One request per
//! connection: neither server needs more, and a closed connection frees its slot at once.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::head::head_end;
use super::HttpError;

/// Largest request head the servers accept.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Reads until `buf` holds a whole request head of at most `max` bytes; returns its length.
/// [`HttpError::HeadTooLarge`] past `max`, [`HttpError::Closed`] when the client goes away.
pub async fn read_request_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<usize, HttpError> {
    let mut tmp = [0u8; 2048];
    loop {
        if let Some(end) = head_end(buf, max)? {
            return Ok(end);
        }
        // Never read past what a head may still need: memory stays bounded by `max`.
        let room = (max - buf.len()).min(tmp.len());
        let n = stream.read(&mut tmp[..room]).await?;
        if n == 0 {
            return Err(HttpError::Closed);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// A reply: status, content type, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            content_type,
            body: body.into(),
        }
    }

    pub fn not_found() -> Self {
        Reply::new(404, "text/plain", &b"not found\n"[..])
    }
}

/// The reason phrase for the statuses these servers send.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Appends the reply's head to `out`.
pub fn encode_head(out: &mut Vec<u8>, r: &Reply) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
}

/// Bodies up to this size go out in the same write as the head (one segment for a tracker
/// reply); larger ones are written from where they are, not copied.
const COALESCE: usize = 16 * 1024;

/// Writes `r` (only its head when `head_only`, for `HEAD`), then shuts the stream down.
pub async fn write_reply<S: AsyncWrite + Unpin>(
    stream: &mut S,
    r: &Reply,
    head_only: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(128 + r.body.len().min(COALESCE));
    encode_head(&mut out, r);
    let body = if head_only { &[][..] } else { &r.body[..] };
    if body.len() <= COALESCE {
        out.extend_from_slice(body);
        stream.write_all(&out).await?;
    } else {
        stream.write_all(&out).await?;
        stream.write_all(body).await?;
    }
    stream.flush().await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_a_head_split_anyhow_and_bounds_it() {
        let req = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\nbody";
        let (mut a, mut b) = tokio::io::duplex(64);
        let w = tokio::spawn(async move {
            for c in req.chunks(3) {
                a.write_all(c).await.unwrap();
            }
            a
        });
        let mut buf = Vec::new();
        let n = read_request_head(&mut b, &mut buf, 1024).await.unwrap();
        assert_eq!(&buf[..n], &req[..req.len() - 4]);
        drop(w.await);

        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let _ = a.write_all(&[b'a'; 300]).await;
            a
        });
        let mut buf = Vec::new();
        let r = read_request_head(&mut b, &mut buf, 100).await;
        assert!(matches!(r, Err(HttpError::HeadTooLarge(100))), "{r:?}");
        assert!(buf.len() <= 100);

        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        let r = read_request_head(&mut b, &mut Vec::new(), 100).await;
        assert!(matches!(r, Err(HttpError::Closed)), "{r:?}");
    }

    #[tokio::test]
    async fn writes_replies() {
        for (body_len, head_only) in [(5, false), (5, true), (COALESCE + 1, false)] {
            let (mut a, mut b) = tokio::io::duplex(1 << 20);
            let r = Reply::new(200, "text/plain", vec![b'x'; body_len]);
            write_reply(&mut a, &r, head_only).await.unwrap();
            drop(a);
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            let (h, n) = super::super::head::parse_response_head(&got)
                .unwrap()
                .unwrap();
            assert_eq!(h.status, 200);
            assert!(!h.keep_alive());
            assert_eq!(h.header("content-length"), Some(&*body_len.to_string()));
            assert_eq!(got.len() - n, if head_only { 0 } else { body_len });
        }
    }
}
