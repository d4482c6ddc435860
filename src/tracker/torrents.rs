//! The `.torrent` files a tracker publishes with `--torrents DIR`: name, total size and
//! info-hash (SHA-1 of the raw `info` bytes, BEP 3), read with the local bencode span scanner.

use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use super::benc::{self, Value};
use crate::id::Id20;

/// Files larger than this are not served (a .torrent of a huge swarm is a few MiB).
pub const MAX_TORRENT_FILE: u64 = 16 << 20;
/// Most `.torrent` files listed from one directory.
pub const MAX_TORRENTS: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorrentEntry {
    /// File name in the directory (what the URL names).
    pub file_name: String,
    pub path: PathBuf,
    /// `info.name`.
    pub name: String,
    /// Sum of file lengths.
    pub size: u64,
    pub info_hash: Id20,
}

/// Why a file is not a usable torrent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TorrentFileError {
    #[error("not bencode: {0}")]
    Bencode(#[from] benc::BencError),
    #[error("no info dictionary")]
    NoInfo,
    #[error("bad info dictionary: {0}")]
    BadInfo(&'static str),
}

/// Reads name, size and info-hash from `.torrent` bytes.
pub fn parse_torrent(bytes: &[u8]) -> Result<(Id20, String, u64), TorrentFileError> {
    let (s, e) = benc::dict_value_span(bytes, b"info")?.ok_or(TorrentFileError::NoInfo)?;
    let raw = bytes.get(s..e).ok_or(TorrentFileError::NoInfo)?;
    let info = benc::decode(raw)?;
    if info.as_dict().is_none() {
        return Err(TorrentFileError::BadInfo("info is not a dictionary"));
    }
    let name = info
        .get("name")
        .and_then(Value::as_text)
        .ok_or(TorrentFileError::BadInfo("missing name"))?;
    let size = if let Some(l) = info.get("length").and_then(Value::as_int) {
        u64::try_from(l).map_err(|_| TorrentFileError::BadInfo("negative length"))?
    } else {
        let files = info
            .get("files")
            .and_then(Value::as_list)
            .ok_or(TorrentFileError::BadInfo("neither length nor files"))?;
        let mut total: u64 = 0;
        for f in files {
            let l = f
                .get("length")
                .and_then(Value::as_int)
                .and_then(|l| u64::try_from(l).ok())
                .ok_or(TorrentFileError::BadInfo("bad file length"))?;
            total = total.saturating_add(l);
        }
        total
    };
    let h: [u8; 20] = Sha1::digest(raw).into();
    Ok((Id20(h), name, size))
}

/// Lists the valid `.torrent` files directly inside `dir`, sorted by file name. Unreadable or
/// invalid files are skipped (logged), never fatal.
pub async fn scan_dir(dir: &Path) -> std::io::Result<Vec<TorrentEntry>> {
    let mut rd = tokio::fs::read_dir(dir).await?;
    let mut out = Vec::new();
    while let Some(e) = rd.next_entry().await? {
        if out.len() >= MAX_TORRENTS {
            break;
        }
        let Ok(file_name) = e.file_name().into_string() else {
            continue;
        };
        if !file_name.ends_with(".torrent") {
            continue;
        }
        let Ok(md) = e.metadata().await else { continue };
        if !md.is_file() || md.len() > MAX_TORRENT_FILE {
            continue;
        }
        let Ok(bytes) = tokio::fs::read(e.path()).await else {
            continue;
        };
        match parse_torrent(&bytes) {
            Ok((info_hash, name, size)) => out.push(TorrentEntry {
                file_name,
                path: e.path(),
                name,
                size,
                info_hash,
            }),
            Err(err) => tracing::warn!(file = %file_name, error = %err, "skipping torrent file"),
        }
    }
    out.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_file() {
        let single =
            b"d8:announce3:foo4:infod6:lengthi5e4:name3:abc12:piece lengthi16384e6:pieces0:ee";
        let (h, n, s) = parse_torrent(single).unwrap();
        assert_eq!((n.as_str(), s), ("abc", 5));
        let info = b"d6:lengthi5e4:name3:abc12:piece lengthi16384e6:pieces0:e";
        assert_eq!(h.0, <[u8; 20]>::from(Sha1::digest(info)));
        let multi =
            b"d4:infod5:filesld6:lengthi3e4:pathl1:aeed6:lengthi4e4:pathl1:beee4:name1:de e";
        let multi: Vec<u8> = multi.iter().copied().filter(|&c| c != b' ').collect();
        assert_eq!(parse_torrent(&multi).unwrap().2, 7);
        assert!(parse_torrent(b"d3:foo3:bare").is_err());
        assert!(parse_torrent(b"garbage").is_err());
    }
}
