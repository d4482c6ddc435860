//! Web seeds (BEP 19, `url-list` / magnet `ws=`): mapping a piece to HTTP range requests for
//! single- and multi-file layouts (pure), and an async fetcher over the tracker module's small
//! HTTP/1.1 client with keep-alive connections
//! (`http://` and `https://`). Verification and back-off live in the engine.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::net::Net;
use crate::tracker::http::{ConnectOpts, HttpConn};
use crate::tracker::http_proto::{percent_encode, Url};
use crate::tracker::TrackerError;

/// One file of a torrent as a web seed sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components below the torrent's name (empty for a single-file torrent).
    pub path: Vec<String>,
    pub length: u64,
}

/// The torrent geometry needed to place pieces in files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `info.name`: the file name (single-file) or the directory (multi-file).
    pub name: String,
    pub files: Vec<FileEntry>,
    /// True for a single-file torrent (`info.length`).
    pub single: bool,
    pub piece_length: u64,
}

impl Layout {
    pub fn total(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |a, f| a.saturating_add(f.length))
    }
}

/// One HTTP range to fetch: bytes `start..start+len` of the file at `url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRequest {
    pub url: String,
    pub start: u64,
    pub len: u64,
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
    #[error(transparent)]
    Http(#[from] TrackerError),
}

/// Most bytes one piece may span (pieces are at most a few MiB in practice).
pub const MAX_PIECE: u64 = 64 << 20;

/// BEP 19: a base URL ending in `/` gets the name (and, multi-file, the path) appended; a
/// single-file URL not ending in `/` names the file itself. Components are percent-encoded.
pub fn file_url(base: &str, layout: &Layout, file: &FileEntry) -> String {
    if layout.single {
        if base.ends_with('/') {
            return format!("{base}{}", percent_encode(layout.name.as_bytes()));
        }
        return base.to_string();
    }
    let mut u = base.to_string();
    if !u.ends_with('/') {
        u.push('/');
    }
    u.push_str(&percent_encode(layout.name.as_bytes()));
    for c in &file.path {
        u.push('/');
        u.push_str(&percent_encode(c.as_bytes()));
    }
    u
}

/// The ranges (in order) that make up `piece`; zero-length files are skipped.
pub fn piece_ranges(
    base: &str,
    layout: &Layout,
    piece: u32,
) -> Result<Vec<RangeRequest>, WebSeedError> {
    let total = layout.total();
    let start = u64::from(piece)
        .checked_mul(layout.piece_length)
        .filter(|&s| s < total && layout.piece_length > 0)
        .ok_or(WebSeedError::NoSuchPiece(piece))?;
    let end = start.saturating_add(layout.piece_length).min(total);
    byte_ranges(base, layout, start, end - start)
}

/// The ranges (in order) that make up torrent bytes `start..start+len` (clipped to the
/// torrent); zero-length files are skipped. At most [`MAX_PIECE`] bytes.
pub fn byte_ranges(
    base: &str,
    layout: &Layout,
    start: u64,
    len: u64,
) -> Result<Vec<RangeRequest>, WebSeedError> {
    if len > MAX_PIECE {
        return Err(WebSeedError::TooLarge(len));
    }
    let end = start.saturating_add(len).min(layout.total());
    let mut out = Vec::new();
    let mut file_start = 0u64;
    for f in &layout.files {
        let file_end = file_start.saturating_add(f.length);
        let s = start.max(file_start);
        let e = end.min(file_end);
        if s < e {
            out.push(RangeRequest {
                url: file_url(base, layout, f),
                start: s - file_start,
                len: e - s,
            });
        }
        if file_end >= end {
            break;
        }
        file_start = file_end;
    }
    Ok(out)
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
            let body = self.fetch_range(r).await?;
            out.extend_from_slice(&body);
        }
        Ok(out)
    }

    async fn fetch_range(&mut self, r: &RangeRequest) -> Result<Vec<u8>, WebSeedError> {
        let u = Url::parse(&r.url)?;
        if u.scheme != "http" && u.scheme != "https" {
            return Err(TrackerError::UnsupportedScheme(r.url.clone()).into());
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
                Err(TrackerError::Io(_)) | Err(TrackerError::Malformed(_)) if attempt == 0 => {
                    continue
                }
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
        Err(WebSeedError::Http(TrackerError::Timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multi() -> Layout {
        Layout {
            name: "my dir".into(),
            files: vec![
                FileEntry {
                    path: vec!["a".into()],
                    length: 10,
                },
                FileEntry {
                    path: vec!["sub".into(), "b c".into()],
                    length: 0,
                },
                FileEntry {
                    path: vec!["d".into()],
                    length: 25,
                },
            ],
            single: false,
            piece_length: 16,
        }
    }

    #[test]
    fn urls_per_bep19() {
        let single = Layout {
            name: "f.iso".into(),
            files: vec![FileEntry {
                path: vec![],
                length: 5,
            }],
            single: true,
            piece_length: 4,
        };
        assert_eq!(
            file_url("http://h/x/", &single, &single.files[0]),
            "http://h/x/f.iso"
        );
        assert_eq!(
            file_url("http://h/f.iso", &single, &single.files[0]),
            "http://h/f.iso"
        );
        let m = multi();
        assert_eq!(
            file_url("http://h/x", &m, &m.files[1]),
            "http://h/x/my%20dir/sub/b%20c"
        );
    }

    #[test]
    fn pieces_span_files() {
        let m = multi();
        let p0 = piece_ranges("http://h/", &m, 0).unwrap();
        assert_eq!(
            p0,
            vec![
                RangeRequest {
                    url: "http://h/my%20dir/a".into(),
                    start: 0,
                    len: 10
                },
                RangeRequest {
                    url: "http://h/my%20dir/d".into(),
                    start: 0,
                    len: 6
                },
            ]
        );
        let p2 = piece_ranges("http://h/", &m, 2).unwrap();
        assert_eq!(
            p2,
            vec![RangeRequest {
                url: "http://h/my%20dir/d".into(),
                start: 22,
                len: 3
            }]
        );
        assert!(piece_ranges("http://h/", &m, 3).is_err());
        assert!(piece_ranges("http://h/", &m, u32::MAX).is_err());
        let total: u64 = (0..3)
            .flat_map(|p| piece_ranges("http://h/", &m, p).unwrap())
            .map(|r| r.len)
            .sum();
        assert_eq!(total, 35);
    }
}
