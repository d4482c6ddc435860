//! Web seeds (BEP 19, `url-list` / magnet `ws=`): mapping torrent bytes to HTTP range
//! requests with the torrent's own [`Layout`] (single- and multi-file URLs per BEP 19; BEP 47
//! padding files are zeros and never requested), and an async fetcher over
//! [`crate::http`]'s client with keep-alive connections (`http://` and `https://`).
//! Verification and back-off live in the engine.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::http::{percent, ConnectOpts, HttpConn, HttpError, Url};
use crate::metainfo::Metainfo;
use crate::net::Net;
use crate::torrent::{Layout, LayoutError, Segment};

/// One piece of the bytes to fetch: bytes `start..start+len` of the file at `url`, or, for a
/// BEP 47 padding file, `len` zero bytes that are never requested (`url` is empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRequest {
    pub url: String,
    pub start: u64,
    pub len: u64,
    pub pad: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WebSeedError {
    #[error("piece {0} is outside the torrent")]
    NoSuchPiece(u32),
    #[error("web seed answered HTTP {0}")]
    Status(u16),
    #[error("web seed sent {got} bytes for a {want}-byte range")]
    WrongLength { got: usize, want: u64 },
    #[error("piece too large to fetch ({0} bytes)")]
    TooLarge(u64),
    #[error("web seed {0}")]
    Http(#[from] HttpError),
}

/// Most bytes one fetch may span (pieces are at most a few MiB in practice).
pub const MAX_PIECE: u64 = 64 << 20;

/// The layout of a torrent as web seeds see it: the same geometry as storage's.
pub fn layout_of(meta: &Metainfo) -> Result<Layout, LayoutError> {
    let info = &meta.info;
    let mut b = Layout::builder(
        info.piece_length,
        info.multi_file.then_some(info.name.as_str()),
    )?;
    for f in &info.files {
        b.push(f.path.iter().map(String::as_str), f.length, f.pad);
    }
    b.build()
}

/// A single-file torrent: one file whose path is just the torrent's name (a multi-file
/// torrent's paths always start with its name as a directory).
fn is_single(layout: &Layout) -> bool {
    layout.files().len() == 1 && layout.path(0).count() == 1
}

/// BEP 19: a base URL ending in `/` gets the name (and, multi-file, the path) appended; a
/// single-file URL not ending in `/` names the file itself. Components are percent-encoded.
pub fn file_url(base: &str, layout: &Layout, file: usize) -> String {
    let mut u = base.to_string();
    if is_single(layout) && !base.ends_with('/') {
        return u;
    }
    if !u.ends_with('/') {
        u.push('/');
    }
    for (i, c) in layout.path(file).enumerate() {
        if i > 0 {
            u.push('/');
        }
        percent::encode_into(&mut u, c.as_bytes());
    }
    u
}

/// The ranges (in order) that make up `piece`; zero-length files are skipped.
pub fn piece_ranges(
    base: &str,
    layout: &Layout,
    piece: u32,
) -> Result<Vec<RangeRequest>, WebSeedError> {
    if piece >= layout.piece_count() {
        return Err(WebSeedError::NoSuchPiece(piece));
    }
    let r = layout.piece_range(piece);
    byte_ranges(base, layout, r.start, r.end - r.start)
}

/// The ranges (in order) that make up torrent bytes `start..start+len` (clipped to the
/// torrent), one per file touched; zero-length files are skipped. At most [`MAX_PIECE`]
/// bytes.
pub fn byte_ranges(
    base: &str,
    layout: &Layout,
    start: u64,
    len: u64,
) -> Result<Vec<RangeRequest>, WebSeedError> {
    if len > MAX_PIECE {
        return Err(WebSeedError::TooLarge(len));
    }
    let end = start.saturating_add(len).min(layout.total_length());
    let plen = layout.piece_length();
    let mut segs: Vec<Segment> = Vec::new();
    let mut at = start;
    while at < end {
        // Piece by piece (the layout maps within a piece); a file's consecutive segments
        // are joined so that each file is one request.
        let piece = (at / plen) as u32;
        let off = at % plen;
        let n = (plen - off).min(end - at);
        let mut part = Vec::new();
        // off < plen ≤ MAX_PIECE_LENGTH and n ≤ plen: both fit in u32.
        if !layout.map(piece, off as u32, n as u32, &mut part) {
            return Err(WebSeedError::NoSuchPiece(piece));
        }
        for sg in part {
            match segs.last_mut() {
                Some(l) if l.file == sg.file && l.file_offset + l.len == sg.file_offset => {
                    l.len += sg.len
                }
                _ => segs.push(sg),
            }
        }
        at += n;
    }
    Ok(segs
        .into_iter()
        .map(|sg| {
            let pad = layout.files()[sg.file].pad;
            RangeRequest {
                url: if pad {
                    String::new()
                } else {
                    file_url(base, layout, sg.file)
                },
                start: sg.file_offset,
                len: sg.len,
                pad,
            }
        })
        .collect())
}

/// Fetches ranges over keep-alive connections, one per host:port, reused across calls.
pub struct WebSeedFetcher {
    net: Net,
    timeout: Duration,
    conns: BTreeMap<String, HttpConn>,
    opts: ConnectOpts,
}

impl WebSeedFetcher {
    pub fn new(net: Net, timeout: Duration) -> Self {
        WebSeedFetcher {
            net,
            timeout,
            conns: BTreeMap::new(),
            opts: ConnectOpts::default(),
        }
    }

    /// Connects from `ip` (the session's bind address) instead of the default route.
    pub fn with_bind_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.opts.bind_ip = ip;
        self
    }

    /// Trusts these roots for `https://` web seeds instead of the system's.
    pub fn with_tls(mut self, cfg: Arc<tokio_rustls::rustls::ClientConfig>) -> Self {
        self.opts.tls = Some(cfg);
        self
    }

    /// Fetches every range and concatenates them: the piece's bytes, unverified.
    pub async fn fetch_piece(&mut self, ranges: &[RangeRequest]) -> Result<Vec<u8>, WebSeedError> {
        let want: u64 = ranges.iter().map(|r| r.len).sum();
        if want > MAX_PIECE {
            return Err(WebSeedError::TooLarge(want));
        }
        let mut out = Vec::with_capacity(want as usize);
        for r in ranges {
            if r.pad {
                out.resize(out.len() + r.len as usize, 0);
                continue;
            }
            let body = self.fetch_range(r).await?;
            out.extend_from_slice(&body);
        }
        Ok(out)
    }

    async fn fetch_range(&mut self, r: &RangeRequest) -> Result<Vec<u8>, WebSeedError> {
        let u = Url::parse(&r.url)?;
        if !u.is_http() {
            return Err(HttpError::UnsupportedScheme(r.url.clone()).into());
        }
        // Scheme in the key: an http and an https server may share host:port in theory.
        let key = format!("{}://{}", u.scheme, u.host_header());
        let range = format!("bytes={}-{}", r.start, r.start + r.len.saturating_sub(1));
        // One retry on a fresh connection: a kept-alive one may have been closed by the server.
        for attempt in 0..2 {
            let mut conn = match self.conns.remove(&key) {
                Some(c) if attempt == 0 => c,
                _ => HttpConn::open(&self.net, &u, &self.opts, self.timeout).await?,
            };
            let resp = match conn
                .get(
                    &u.path,
                    &[("Range", &range)],
                    true,
                    r.len as usize,
                    self.timeout,
                )
                .await
            {
                Ok(resp) => resp,
                Err(e) if attempt == 0 && e.is_stale_connection() => continue,
                Err(e) => return Err(e.into()),
            };
            if resp.keep_alive {
                self.conns.insert(key.clone(), conn);
            }
            // 206 is the answer to a range; a 200 is only usable if it is exactly the range
            // (the whole file is the range asked for).
            let ok = resp.status == 206 || (resp.status == 200 && r.start == 0);
            if !ok {
                return Err(WebSeedError::Status(resp.status));
            }
            if resp.body.len() as u64 != r.len {
                return Err(WebSeedError::WrongLength {
                    got: resp.body.len(),
                    want: r.len,
                });
            }
            return Ok(resp.body);
        }
        Err(WebSeedError::Http(HttpError::Timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multi() -> Layout {
        let mut b = Layout::builder(16, Some("my dir")).unwrap();
        b.push(["a"], 10, false)
            .push(["sub", "b c"], 0, false)
            .push(["d"], 25, false);
        b.build().unwrap()
    }

    fn range(url: &str, start: u64, len: u64) -> RangeRequest {
        RangeRequest {
            url: url.into(),
            start,
            len,
            pad: false,
        }
    }

    #[test]
    fn urls_per_bep19() {
        let single = Layout::single("f.iso", 5, 4).unwrap();
        assert_eq!(file_url("http://h/x/", &single, 0), "http://h/x/f.iso");
        assert_eq!(file_url("http://h/f.iso", &single, 0), "http://h/f.iso");
        let m = multi();
        assert_eq!(
            file_url("http://h/x", &m, 1),
            "http://h/x/my%20dir/sub/b%20c"
        );
        assert_eq!(file_url("http://h/x/", &m, 0), "http://h/x/my%20dir/a");
        // A multi-file torrent of one file is still a directory.
        let mut b = Layout::builder(4, Some("dir")).unwrap();
        b.push(["only"], 5, false);
        let one = b.build().unwrap();
        assert_eq!(file_url("http://h/x", &one, 0), "http://h/x/dir/only");
    }

    #[test]
    fn pieces_span_files() {
        let m = multi();
        let p0 = piece_ranges("http://h/", &m, 0).unwrap();
        assert_eq!(
            p0,
            vec![
                range("http://h/my%20dir/a", 0, 10),
                range("http://h/my%20dir/d", 0, 6)
            ]
        );
        let p2 = piece_ranges("http://h/", &m, 2).unwrap();
        assert_eq!(p2, vec![range("http://h/my%20dir/d", 22, 3)]);
        assert!(piece_ranges("http://h/", &m, 3).is_err());
        assert!(piece_ranges("http://h/", &m, u32::MAX).is_err());
        let total: u64 = (0..3)
            .flat_map(|p| piece_ranges("http://h/", &m, p).unwrap())
            .map(|r| r.len)
            .sum();
        assert_eq!(total, 35);
    }

    #[test]
    fn runs_across_pieces_are_one_request_per_file() {
        let m = multi();
        assert_eq!(
            byte_ranges("http://h/", &m, 4, 100).unwrap(),
            vec![
                range("http://h/my%20dir/a", 4, 6),
                range("http://h/my%20dir/d", 0, 25)
            ]
        );
        assert_eq!(byte_ranges("http://h/", &m, 35, 10).unwrap(), vec![]);
        assert!(matches!(
            byte_ranges("http://h/", &m, 0, MAX_PIECE + 1),
            Err(WebSeedError::TooLarge(_))
        ));
    }

    #[test]
    fn padding_is_zeros_not_a_request() {
        let mut b = Layout::builder(16, Some("t")).unwrap();
        b.push(["a"], 10, false)
            .push([".pad", "6"], 6, true)
            .push(["b"], 16, false);
        let l = b.build().unwrap();
        let r = piece_ranges("http://h/", &l, 0).unwrap();
        assert_eq!(r[0], range("http://h/t/a", 0, 10));
        assert_eq!(
            r[1],
            RangeRequest {
                url: String::new(),
                start: 0,
                len: 6,
                pad: true
            }
        );
        assert_eq!(
            piece_ranges("http://h/", &l, 1).unwrap(),
            vec![range("http://h/t/b", 0, 16)]
        );
    }

    #[tokio::test]
    async fn padding_is_fetched_without_the_network() {
        let mut f = WebSeedFetcher::new(Net::Tokio, Duration::from_secs(1));
        let pad = RangeRequest {
            url: String::new(),
            start: 0,
            len: 7,
            pad: true,
        };
        assert_eq!(f.fetch_piece(&[pad]).await.unwrap(), vec![0u8; 7]);
    }
}
