//! What a client may add (the body of `POST /torrents`, as rqbit takes it): a magnet link
//! (BEP 9), an info-hash (40 hex or 32 base32 characters), an `http(s)://` URL of a .torrent,
//! or the .torrent file itself (BEP 3). Pure: the URL is returned for the caller to fetch.
//! Every byte is untrusted; the size bound is the HTTP layer's.

use std::sync::Arc;

use crate::magnet::Magnet;
use crate::metainfo::Metainfo;

/// A request body, understood.
#[derive(Debug)]
pub enum Input {
    /// A magnet link or an info-hash (as a magnet), with the text it was given as.
    Magnet(Magnet, String),
    /// A .torrent, with its bytes.
    Torrent(Arc<Metainfo>, Vec<u8>),
    /// The URL of a .torrent, still to be downloaded.
    Url(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("empty body: send a magnet link, an info-hash, a URL or a .torrent file")]
    Empty,
    #[error("bad magnet link: {0}")]
    Magnet(String),
    #[error("not a valid .torrent: {0}")]
    Torrent(String),
    #[error("not a magnet link, an info-hash, an http(s) URL or a .torrent file")]
    Unknown,
}

/// Reads a request body (see the module doc).
pub fn parse_input(body: &[u8]) -> Result<Input, InputError> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return Err(InputError::Empty);
    }
    if trimmed.first() == Some(&b'd') {
        let m = Metainfo::from_bytes(body).map_err(|e| InputError::Torrent(e.to_string()))?;
        return Ok(Input::Torrent(Arc::new(m), body.to_vec()));
    }
    let Ok(text) = std::str::from_utf8(trimmed) else {
        return Err(InputError::Unknown);
    };
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    if lower.starts_with("magnet:") {
        let m = Magnet::parse(text).map_err(|e| InputError::Magnet(e.to_string()))?;
        return Ok(Input::Magnet(m, text.to_string()));
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        if text.chars().any(char::is_whitespace) {
            return Err(InputError::Unknown);
        }
        return Ok(Input::Url(text.to_string()));
    }
    if (text.len() == 40 || text.len() == 32) && text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        let uri = format!("magnet:?xt=urn:btih:{text}");
        if let Ok(m) = Magnet::parse(&uri) {
            return Ok(Input::Magnet(m, uri));
        }
    }
    Err(InputError::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IH: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    #[test]
    fn each_kind_of_body_is_recognised() {
        let m = parse_input(format!(" magnet:?xt=urn:btih:{IH}&dn=x\n").as_bytes()).unwrap();
        assert!(
            matches!(m, Input::Magnet(ref m, _) if m.info_hash.to_hex() == IH),
            "{m:?}"
        );
        let h = parse_input(IH.as_bytes()).unwrap();
        assert!(
            matches!(h, Input::Magnet(ref m, _) if m.info_hash.to_hex() == IH),
            "{h:?}"
        );
        let b32 = parse_input(b"YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK").unwrap();
        assert!(matches!(b32, Input::Magnet(ref m, _) if m.info_hash.to_hex() == IH));
        let u = parse_input(b"https://example.org/a.torrent").unwrap();
        assert!(matches!(u, Input::Url(ref u) if u == "https://example.org/a.torrent"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"hello").unwrap();
        let opts = crate::metainfo::CreateOptions::default();
        let t = crate::metainfo::create(&dir.path().join("f"), &opts)
            .unwrap()
            .to_bytes();
        let got = parse_input(&t).unwrap();
        assert!(matches!(got, Input::Torrent(_, ref raw) if *raw == t));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(parse_input(b"  \n").unwrap_err(), InputError::Empty);
        assert_eq!(parse_input(b"hello").unwrap_err(), InputError::Unknown);
        assert_eq!(
            parse_input(&[0xff, 0xfe, 0x00]).unwrap_err(),
            InputError::Unknown
        );
        assert!(matches!(
            parse_input(b"magnet:?xt=urn:btih:zz").unwrap_err(),
            InputError::Magnet(_)
        ));
        assert!(matches!(
            parse_input(b"d4:infoi1ee").unwrap_err(),
            InputError::Torrent(_)
        ));
        assert_eq!(
            parse_input(b"http://a b/x.torrent").unwrap_err(),
            InputError::Unknown
        );
        // A deeply nested bencode body is an error, not a stack overflow.
        let deep = [b"d1:a".as_slice(), &[b'l'; 100_000]].concat();
        assert!(matches!(
            parse_input(&deep).unwrap_err(),
            InputError::Torrent(_)
        ));
    }
}
