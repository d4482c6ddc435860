//! The daemon's list of torrents on disk: `<state-dir>/daemon/torrents.json` plus one
//! `.torrent` per torrent whose metainfo is known (`<state-dir>/daemon/torrents/<ih>.torrent`),
//! so a restart (after `kill -9` too) brings every torrent back with its settings, and a
//! magnet whose metadata was fetched once needs no second fetch. Verified pieces come back
//! from the session's resume data (`<state-dir>/resume`), not from here.
//!
//! Every write goes to a temporary file that is renamed over the old one, so a crash leaves
//! either the old list or the new one. Reading is bounded and a damaged file is an error the
//! daemon reports (it does not start over silently and lose the list).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::id::InfoHash;

/// Largest `torrents.json` read back (about 10,000 torrents with long magnet links).
const MAX_LIST_BYTES: u64 = 32 << 20;

/// One torrent as saved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub id: u64,
    /// 40 hex digits.
    pub info_hash: String,
    /// The magnet link it was added with (also when the metainfo is now known: its trackers
    /// and peers stay useful).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub magnet: Option<String>,
    pub output: PathBuf,
    #[serde(default)]
    pub paused: bool,
    /// Seconds since the Unix epoch.
    #[serde(default)]
    pub added: u64,
    #[serde(default)]
    pub settings: Settings,
    /// Its place in the queue (smaller first; `None`: by id, as lists saved before queues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_order: Option<u64>,
    /// It was complete when last seen running (it queues for a seed slot).
    #[serde(default)]
    pub complete: bool,
}

/// A torrent's own settings (`PATCH /torrents/{id}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Pieces in order (for playing while downloading).
    #[serde(default)]
    pub sequential: bool,
    /// Only these files (indexes of `/files`); `None`: all.
    #[serde(default)]
    pub files: Option<Vec<u32>>,
    /// Bytes/s; `None`: the daemon's limit.
    #[serde(default)]
    pub max_down_rate: Option<u64>,
    #[serde(default)]
    pub max_up_rate: Option<u64>,
    /// Pause once this many times the torrent's size was uploaded.
    #[serde(default)]
    pub seed_ratio: Option<f64>,
    /// Pause after seeding this many seconds.
    #[serde(default)]
    pub seed_time: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedList {
    pub next_id: u64,
    pub torrents: Vec<Saved>,
}

/// Where the daemon keeps its list and .torrent files.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Self {
        Store {
            dir: state_dir.join("daemon"),
        }
    }

    fn list_path(&self) -> PathBuf {
        self.dir.join("torrents.json")
    }

    /// The .torrent kept for `ih`.
    pub fn torrent_path(&self, ih: &InfoHash) -> PathBuf {
        self.dir
            .join("torrents")
            .join(format!("{}.torrent", ih.to_hex()))
    }

    /// The saved list; an empty one when there is none yet.
    pub fn load(&self) -> Result<SavedList, String> {
        let p = self.list_path();
        let f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SavedList::default()),
            Err(e) => return Err(format!("{}: {e}", p.display())),
        };
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_LIST_BYTES + 1), &mut buf)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if buf.len() as u64 > MAX_LIST_BYTES {
            return Err(format!(
                "{}: larger than {MAX_LIST_BYTES} bytes",
                p.display()
            ));
        }
        let list: SavedList =
            serde_json::from_slice(&buf).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(list)
    }

    /// Replaces the saved list (atomically, synced).
    pub fn save(&self, list: &SavedList) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(list).map_err(std::io::Error::other)?;
        write_atomic(&self.list_path(), &body)
    }

    /// Keeps a torrent's .torrent file.
    pub fn save_torrent(&self, ih: &InfoHash, bytes: &[u8]) -> std::io::Result<()> {
        write_atomic(&self.torrent_path(ih), bytes)
    }

    /// Forgets a torrent's .torrent file (a missing one is fine).
    pub fn remove_torrent(&self, ih: &InfoHash) {
        let _ = std::fs::remove_file(self.torrent_path(ih));
    }
}

/// Writes `body` to a temporary file next to `path`, syncs it and renames it over `path`.
fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_survives_a_round_trip_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.load().unwrap(), SavedList::default());
        let list = SavedList {
            next_id: 3,
            torrents: vec![Saved {
                id: 2,
                info_hash: "aa".repeat(20),
                magnet: Some("magnet:?xt=urn:btih:".to_string() + &"aa".repeat(20)),
                output: dir.path().join("dl"),
                paused: true,
                added: 1_700_000_000,
                settings: Settings {
                    sequential: true,
                    files: Some(vec![0, 2]),
                    seed_ratio: Some(1.5),
                    ..Settings::default()
                },
                queue_order: Some(7),
                complete: true,
            }],
        };
        store.save(&list).unwrap();
        assert_eq!(store.load().unwrap(), list);
        std::fs::write(dir.path().join("daemon/torrents.json"), b"{\"next_id\": [").unwrap();
        let e = store.load().unwrap_err();
        assert!(e.contains("torrents.json"), "{e}");
    }
}
