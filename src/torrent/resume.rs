//! Resume state: which pieces are verified, saved as we go so a restart (even after
//! `kill -9`) continues where it stopped.
//!
//! The file (`<state dir>/<info-hash hex>.resume`, bencoded like everything in BEP 3) holds
//! the info-hash, the verified-piece bitfield in BEP 3 wire format and, per file, its size
//! and modification time when the state was saved. It is written atomically (temporary
//! file, fsync, rename), after flushing the data it vouches for, and batched
//! ([`ResumeSaver`]: every few seconds or every N verified pieces).
//!
//! The last save when a torrent stops does *not* wait for the data to reach the disk (an
//! `fdatasync` of everything written since the previous save can take seconds and would
//! delay every completed download): it lists the pieces verified since the last flush as
//! `unsynced`, and a restart re-hashes those instead of trusting them.
//!
//! At start, a piece is trusted only if it was verified, is not `unsynced`, *and* every file
//! it touches still has the recorded size and mtime; other verified pieces are re-hashed
//! ([`ResumeState::plan`]). The resume file is untrusted input: its size is bounded before
//! reading, and the content is checked against the torrent (info-hash, piece count, file
//! count, bitfield spare bits) — anything odd means "no resume data", never a panic.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::bitfield::Bitfield;
use super::layout::Layout;
use super::storage::Storage;
use crate::id::InfoHash;

const VERSION: u32 = 1;

/// Size and modification time of one file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub length: u64,
    pub mtime_s: i64,
    pub mtime_ns: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("resume file {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("resume file {} is invalid: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// Saved state of one torrent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeState {
    pub info_hash: InfoHash,
    pub have: Bitfield,
    /// Pieces of `have` whose data was not flushed to disk when the state was saved: they
    /// are re-hashed at start rather than trusted.
    pub unsynced: Option<Bitfield>,
    /// Per file of the layout: `None` for padding files and files not on disk.
    pub files: Vec<Option<FileStamp>>,
}

/// What to do at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumePlan {
    /// Verified before and untouched since: count as have.
    pub trusted: Bitfield,
    /// Verified before but a file changed: hash again.
    pub recheck: Bitfield,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    version: u32,
    #[serde(with = "serde_bytes")]
    info_hash: Vec<u8>,
    pieces: u32,
    #[serde(with = "serde_bytes")]
    have: Vec<u8>,
    files: Vec<WireFile>,
    /// Absent in files written before it existed (and when every piece was flushed).
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    unsynced: Option<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct WireFile {
    present: u8,
    length: u64,
    mtime_s: i64,
    mtime_ns: u32,
}

/// Path of the resume file for `info_hash` in `state_dir`.
pub fn resume_path(state_dir: &Path, info_hash: &InfoHash) -> PathBuf {
    state_dir.join(format!("{}.resume", info_hash.to_hex()))
}

/// Largest resume file we read for `layout`: the bitfield, ~60 bytes per file, slack.
fn max_len(layout: &Layout) -> u64 {
    (layout.piece_count() as u64).div_ceil(8) + layout.files().len() as u64 * 96 + 4096
}

fn stamp_of(meta: &std::fs::Metadata) -> FileStamp {
    let (s, ns) = match meta.modified().ok().map(|t| t.duration_since(UNIX_EPOCH)) {
        Some(Ok(d)) => (d.as_secs() as i64, d.subsec_nanos()),
        Some(Err(e)) => (
            -(e.duration().as_secs() as i64),
            e.duration().subsec_nanos(),
        ),
        None => (0, 0),
    };
    FileStamp {
        length: meta.len(),
        mtime_s: s,
        mtime_ns: ns,
    }
}

/// Current stamps of the torrent's files (disk storage; `None` for padding, missing files
/// and non-disk storage).
pub fn file_stamps(storage: &Storage) -> Vec<Option<FileStamp>> {
    let layout = storage.layout();
    (0..layout.files().len())
        .map(|i| {
            if layout.files()[i].pad {
                return None;
            }
            let path = storage.file_path(i).ok().flatten()?;
            // Not following links: storage refuses them, so their target says nothing.
            std::fs::symlink_metadata(path).ok().map(|m| stamp_of(&m))
        })
        .collect()
}

impl ResumeState {
    /// Writes atomically: `<path>.tmp`, fsync, rename over `path`.
    pub fn save(&self, path: &Path) -> Result<(), ResumeError> {
        let io_err = |source| ResumeError::Io {
            path: path.to_path_buf(),
            source,
        };
        let wire = Wire {
            version: VERSION,
            info_hash: self.info_hash.as_bytes().to_vec(),
            pieces: self.have.len(),
            have: self.have.as_bytes().to_vec(),
            files: self
                .files
                .iter()
                .map(|f| match f {
                    Some(s) => WireFile {
                        present: 1,
                        length: s.length,
                        mtime_s: s.mtime_s,
                        mtime_ns: s.mtime_ns,
                    },
                    None => WireFile {
                        present: 0,
                        length: 0,
                        mtime_s: 0,
                        mtime_ns: 0,
                    },
                })
                .collect(),
            unsynced: self
                .unsynced
                .as_ref()
                .filter(|u| !u.none())
                .map(|u| u.as_bytes().to_vec()),
        };
        let bytes = crate::bencode::to_bytes(&wire).map_err(|e| ResumeError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io_err)?;
            f.write_all(&bytes).map_err(io_err)?;
            f.sync_all().map_err(io_err)?;
        }
        std::fs::rename(&tmp, path).map_err(io_err)?;
        // Make the rename itself durable (best effort: not every platform allows this).
        if let Some(dir) = path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Loads and validates the resume file for `info_hash`/`layout`. `Ok(None)` when there
    /// is none; `Err(Invalid)` when it exists but cannot be trusted (start from a recheck).
    pub fn load(
        path: &Path,
        info_hash: &InfoHash,
        layout: &Layout,
    ) -> Result<Option<ResumeState>, ResumeError> {
        let invalid = |reason: &str| ResumeError::Invalid {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ResumeError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let limit = max_len(layout);
        let mut bytes = Vec::new();
        f.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ResumeError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if bytes.len() as u64 > limit {
            return Err(invalid("too large"));
        }
        let wire: Wire =
            crate::bencode::from_bytes(&bytes).map_err(|e| invalid(&format!("decode: {e}")))?;
        if wire.version != VERSION {
            return Err(invalid("unknown version"));
        }
        if wire.info_hash != info_hash.as_bytes() {
            return Err(invalid("info-hash differs"));
        }
        if wire.pieces != layout.piece_count() {
            return Err(invalid("piece count differs"));
        }
        if wire.files.len() != layout.files().len() {
            return Err(invalid("file count differs"));
        }
        let have = Bitfield::from_bytes(&wire.have, wire.pieces)
            .map_err(|e| invalid(&format!("bitfield: {e}")))?;
        let unsynced = match &wire.unsynced {
            Some(b) => Some(
                Bitfield::from_bytes(b, wire.pieces)
                    .map_err(|e| invalid(&format!("unsynced bitfield: {e}")))?,
            ),
            None => None,
        };
        let files = wire
            .files
            .into_iter()
            .map(|f| {
                (f.present != 0).then_some(FileStamp {
                    length: f.length,
                    mtime_s: f.mtime_s,
                    mtime_ns: f.mtime_ns,
                })
            })
            .collect();
        Ok(Some(ResumeState {
            info_hash: *info_hash,
            have,
            unsynced,
            files,
        }))
    }

    /// Splits the saved verified pieces into trusted and to-recheck, comparing the saved
    /// stamps with `current` ([`file_stamps`]).
    pub fn plan(&self, layout: &Layout, current: &[Option<FileStamp>]) -> ResumePlan {
        let n = layout.piece_count();
        let unchanged: Vec<bool> = (0..layout.files().len())
            .map(|i| {
                layout.files()[i].pad
                    || layout.files()[i].length == 0
                    || matches!(
                        (self.files.get(i), current.get(i)),
                        (Some(Some(a)), Some(Some(b))) if a == b && a.length == layout.files()[i].length
                    )
            })
            .collect();
        let mut trusted = Bitfield::new(n);
        let mut recheck = Bitfield::new(n);
        for p in self.have.iter_set().filter(|&p| p < n) {
            let synced = !self.unsynced.as_ref().is_some_and(|u| u.get(p));
            if synced && layout.piece_files(p).iter().all(|&f| unchanged[f]) {
                trusted.set(p);
            } else {
                recheck.set(p);
            }
        }
        ResumePlan { trusted, recheck }
    }
}

/// Decides when to save: every `interval` or every `every` newly verified pieces, and
/// only when something changed.
#[derive(Clone, Debug)]
pub struct ResumeSaver {
    interval: Duration,
    every: u32,
    last: Instant,
    pending: u32,
}

impl ResumeSaver {
    pub fn new(interval: Duration, every: u32, now: Instant) -> Self {
        ResumeSaver {
            interval,
            every: every.max(1),
            last: now,
            pending: 0,
        }
    }

    /// A piece was verified.
    pub fn on_verified(&mut self) {
        self.pending += 1;
    }

    /// Is a save due now?
    pub fn due(&self, now: Instant) -> bool {
        self.pending > 0
            && (self.pending >= self.every
                || now.saturating_duration_since(self.last) >= self.interval)
    }

    /// The state was saved at `now`.
    pub fn saved(&mut self, now: Instant) {
        self.pending = 0;
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(layout: &Layout) -> ResumeState {
        let mut have = Bitfield::new(layout.piece_count());
        have.set(0);
        have.set(2);
        ResumeState {
            info_hash: InfoHash::new([7; 20]),
            have,
            unsynced: None,
            files: vec![
                Some(FileStamp {
                    length: 40_000,
                    mtime_s: 1_700_000_000,
                    mtime_ns: 5,
                }),
                Some(FileStamp {
                    length: 30_000,
                    mtime_s: 1_700_000_001,
                    mtime_ns: 6,
                }),
            ],
        }
    }

    fn layout() -> Layout {
        use crate::torrent::layout::FileSpec;
        let f = |n: &str, length| FileSpec {
            path: vec![n.to_string()],
            length,
            pad: false,
        };
        // Pieces of 16 KiB: a = pieces 0..=2 (piece 2 spans a and b), b = pieces 2..=4.
        Layout::new(16_384, vec![f("a", 40_000), f("b", 30_000)]).unwrap()
    }

    #[test]
    fn a_deeply_nested_resume_file_is_refused_without_recursing() {
        use crate::torrent::layout::FileSpec;
        // 64 GiB in 16 KiB pieces: the size limit admits a ~0.5 MB resume file, room for
        // 250,000 nested lists, which a recursive decoder would follow off the stack.
        let big = Layout::new(
            16_384,
            vec![FileSpec {
                path: vec!["big".into()],
                length: 64 << 30,
                pad: false,
            }],
        )
        .unwrap();
        let depth = 250_000;
        assert!(2 * depth as u64 + 5 <= max_len(&big));
        let dir = tempfile::tempdir().unwrap();
        let ih = InfoHash::new([7; 20]);
        let path = resume_path(dir.path(), &ih);
        // Under a key the wire format does not know: serde skips unknown values by
        // walking them, and that walk recursed.
        let mut nested = b"d1:x".to_vec();
        nested.extend(std::iter::repeat_n(b'l', depth));
        nested.extend(std::iter::repeat_n(b'e', depth + 1));
        std::fs::write(&path, &nested).unwrap();
        assert!(matches!(
            ResumeState::load(&path, &ih, &big),
            Err(ResumeError::Invalid { .. })
        ));
    }

    #[test]
    fn save_load_round_trip_and_plan() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout();
        let st = state(&l);
        let path = resume_path(dir.path(), &st.info_hash);
        assert_eq!(ResumeState::load(&path, &st.info_hash, &l).unwrap(), None);
        st.save(&path).unwrap();
        let back = ResumeState::load(&path, &st.info_hash, &l)
            .unwrap()
            .unwrap();
        assert_eq!(back, st);
        // Unchanged files: everything trusted.
        let plan = back.plan(&l, &st.files);
        assert_eq!(plan.trusted.iter_set().collect::<Vec<_>>(), vec![0, 2]);
        assert!(plan.recheck.none());
        // b changed: piece 2 (spanning a and b) must be rechecked, piece 0 is still trusted.
        let mut now = st.files.clone();
        now[1].as_mut().unwrap().mtime_s += 1;
        let plan = back.plan(&l, &now);
        assert_eq!(plan.trusted.iter_set().collect::<Vec<_>>(), vec![0]);
        assert_eq!(plan.recheck.iter_set().collect::<Vec<_>>(), vec![2]);
        // a deleted: nothing trusted.
        now[0] = None;
        assert!(back.plan(&l, &now).trusted.none());
        // Wrong torrent.
        assert!(ResumeState::load(&path, &InfoHash::new([8; 20]), &l).is_err());
    }

    #[test]
    fn unsynced_pieces_are_rechecked_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout();
        let mut st = state(&l);
        let mut u = Bitfield::new(l.piece_count());
        u.set(2);
        st.unsynced = Some(u);
        let path = resume_path(dir.path(), &st.info_hash);
        st.save(&path).unwrap();
        let back = ResumeState::load(&path, &st.info_hash, &l)
            .unwrap()
            .unwrap();
        assert_eq!(back, st);
        let plan = back.plan(&l, &st.files);
        assert_eq!(plan.trusted.iter_set().collect::<Vec<_>>(), vec![0]);
        assert_eq!(plan.recheck.iter_set().collect::<Vec<_>>(), vec![2]);
        // An empty set is not written at all (older readers see the same file as before).
        st.unsynced = Some(Bitfield::new(l.piece_count()));
        st.save(&path).unwrap();
        let back = ResumeState::load(&path, &st.info_hash, &l)
            .unwrap()
            .unwrap();
        assert_eq!(back.unsynced, None);
        assert_eq!(back.plan(&l, &st.files).trusted.count(), 2);
    }

    #[test]
    fn corrupt_files_are_rejected_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let l = layout();
        let st = state(&l);
        let path = resume_path(dir.path(), &st.info_hash);
        st.save(&path).unwrap();
        let good = std::fs::read(&path).unwrap();
        // Every truncation and a sweep of single-byte corruptions: Ok or Err, never a panic,
        // and never a state with the wrong shape.
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(ResumeState::load(&path, &st.info_hash, &l).is_err());
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] = bad[i].wrapping_add(1);
            std::fs::write(&path, &bad).unwrap();
            if let Ok(Some(s)) = ResumeState::load(&path, &st.info_hash, &l) {
                assert_eq!(s.have.len(), l.piece_count());
                assert_eq!(s.files.len(), 2);
            }
        }
        // Oversized file.
        std::fs::write(&path, vec![b'x'; 1 << 20]).unwrap();
        assert!(matches!(
            ResumeState::load(&path, &st.info_hash, &l),
            Err(ResumeError::Invalid { .. })
        ));
        // Spare bits set in the bitfield (5 pieces: low 3 bits of the byte are spare).
        let mut s2 = st.clone();
        s2.have = Bitfield::new(8);
        s2.have.set(7);
        let w = serde_bencode::to_bytes(&Wire {
            version: VERSION,
            info_hash: vec![7; 20],
            pieces: 5,
            have: s2.have.as_bytes().to_vec(),
            files: vec![],
            unsynced: None,
        })
        .unwrap();
        std::fs::write(&path, &w).unwrap();
        assert!(ResumeState::load(&path, &st.info_hash, &l).is_err());
    }

    #[test]
    fn saver_batches() {
        let t0 = Instant::now();
        let mut s = ResumeSaver::new(Duration::from_secs(5), 10, t0);
        assert!(!s.due(t0 + Duration::from_secs(60)), "nothing to save");
        s.on_verified();
        assert!(!s.due(t0 + Duration::from_secs(1)));
        assert!(s.due(t0 + Duration::from_secs(5)));
        s.saved(t0 + Duration::from_secs(5));
        for _ in 0..10 {
            s.on_verified();
        }
        assert!(s.due(t0 + Duration::from_secs(6)));
    }

    #[test]
    fn stamps_of_disk_files() {
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let l = Arc::new(layout());
        let storage = Storage::disk(l.clone(), dir.path());
        assert_eq!(file_stamps(&storage), vec![None, None]);
        storage.write_block(0, 0, &[1u8; 16_384]).unwrap();
        let st = file_stamps(&storage);
        assert_eq!(st[0].map(|s| s.length), Some(40_000));
        assert_eq!(st[1], None);
    }
}
