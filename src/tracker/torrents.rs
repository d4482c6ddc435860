//! The `.torrent` files a tracker publishes with `--torrents DIR`: name, total size and
//! info-hash (SHA-1 of the raw `info` bytes, BEP 3), read with [`crate::metainfo`] so the tracker
//! lists exactly the torrents a client can open.

use std::path::{Path, PathBuf};

use crate::id::Id20;
use crate::metainfo::{Metainfo, MetainfoError};

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

/// Reads name, size and info-hash from `.torrent` bytes.
pub fn parse_torrent(bytes: &[u8]) -> Result<(Id20, String, u64), MetainfoError> {
    let m = Metainfo::from_bytes(bytes)?;
    let size = m.info.total_length();
    Ok((m.info_hash, m.info.name, size))
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
        use sha1::{Digest, Sha1};
        // One 20-byte hash per piece: 5 bytes in one piece.
        let info = b"d6:lengthi5e4:name3:abc12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let mut single = b"d8:announce3:foo4:info".to_vec();
        single.extend_from_slice(info);
        single.push(b'e');
        let (h, n, s) = parse_torrent(&single).unwrap();
        assert_eq!((n.as_str(), s), ("abc", 5));
        assert_eq!(h.0, <[u8; 20]>::from(Sha1::digest(info)));
        let multi = b"d4:infod5:filesld6:lengthi3e4:pathl1:aeed6:lengthi4e4:pathl1:beee\
                      4:name1:d12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        assert_eq!(parse_torrent(multi).unwrap().2, 7);
        assert!(parse_torrent(b"d3:foo3:bare").is_err());
        assert!(parse_torrent(b"garbage").is_err());
        // What the client would refuse is not listed either (no piece hashes here).
        let no_hashes = b"d4:infod6:lengthi5e4:name3:abc12:piece lengthi16384e6:pieces0:ee";
        assert!(parse_torrent(no_hashes).is_err());
    }
}
