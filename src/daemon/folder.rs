//! `daemon --watch DIR`: a `.torrent` or `.magnet` file dropped into DIR is added once, then
//! renamed with `.added` appended (or `.invalid` when it could not be added), as
//! Transmission does, so it is never added twice and the user sees what happened.
//!
//! The folder is polled (every [`POLL`]); a file is taken only once its size and
//! modification time stayed the same for one whole poll, so a file still being written
//! (a slow copy, a browser's download) is not read half-done; one that does not parse yet
//! is left alone until it has not changed for [`SETTLE`] (a writer may pause longer than
//! a poll), and only then called invalid. A `.magnet` file holds a
//! magnet link (or an info-hash) on its first line. Files are bounded like request bodies.
//! Pure decision ([`Watcher::scan`]) + a thin polling task.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::input::{parse_input, Input};
use super::Daemon;
use crate::metainfo::MAX_TORRENT_SIZE;
use crate::session::Source;

/// How often the folder is looked at.
pub const POLL: Duration = Duration::from_secs(1);
/// A file that does not parse is given this long after its last change before it is
/// called invalid: a writer that paused longer than a poll mid-file gets to finish.
const SETTLE: Duration = Duration::from_secs(5);

/// What a file looked like at the last poll.
type Seen = (u64, Option<SystemTime>);

/// The files of the folder seen so far, and which are ready.
#[derive(Debug, Default)]
pub struct Watcher {
    seen: BTreeMap<PathBuf, Seen>,
}

/// Is `p` a file the watch folder takes?
fn wanted(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("torrent") || e.eq_ignore_ascii_case("magnet"))
}

impl Watcher {
    /// Given the folder's files now (path, size, mtime), the ones that stood still since
    /// the last poll: ready to add. Forgets files that are gone.
    pub fn scan(&mut self, now: Vec<(PathBuf, Seen)>) -> Vec<PathBuf> {
        let mut ready = Vec::new();
        let mut next = BTreeMap::new();
        for (p, st) in now {
            if !wanted(&p) {
                continue;
            }
            if self.seen.get(&p) == Some(&st) {
                ready.push(p.clone());
            }
            next.insert(p, st);
        }
        self.seen = next;
        ready
    }
}

fn list(dir: &Path) -> Vec<(PathBuf, Seen)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            let md = e.metadata().ok().filter(|m| m.is_file())?;
            Some((e.path(), (md.len(), md.modified().ok())))
        })
        .take(10_000)
        .collect()
}

/// Adds one ready file; renames it `.added` or `.invalid`.
async fn take(daemon: &Arc<Daemon>, p: &Path) {
    let added = async {
        let len = std::fs::metadata(p).map_err(|e| e.to_string())?.len();
        if len > MAX_TORRENT_SIZE as u64 {
            return Err("too large".to_string());
        }
        let body = std::fs::read(p).map_err(|e| e.to_string())?;
        let is_magnet = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("magnet"));
        let body = if is_magnet {
            body.split(|&b| b == b'\n').next().unwrap_or(&[]).to_vec()
        } else {
            body
        };
        let (source, raw, magnet) = match parse_input(&body).map_err(|e| e.to_string())? {
            Input::Magnet(m, text) => (Source::Magnet(m), None, Some(text)),
            Input::Torrent(m, raw) => (Source::Metainfo(m), Some(raw), None),
            Input::Url(_) => return Err("URLs are not taken from the watch folder".into()),
        };
        daemon
            .add(source, raw.as_deref(), magnet)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let suffix = match &added {
        Err(_) if recently_changed(p) => return, // tried again at the next poll
        Ok((id, ih)) => {
            tracing::info!(path = %p.display(), id, %ih, "added from the watch folder");
            "added"
        }
        Err(e) => {
            tracing::warn!(path = %p.display(), "not added from the watch folder: {e}");
            "invalid"
        }
    };
    let mut to = p.as_os_str().to_owned();
    to.push(".");
    to.push(suffix);
    if let Err(e) = std::fs::rename(p, &to) {
        tracing::warn!(path = %p.display(), "cannot rename: {e}");
    }
}

fn recently_changed(p: &Path) -> bool {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < SETTLE)
}

/// Polls `dir` until the daemon is gone.
pub fn spawn(daemon: &Arc<Daemon>, dir: PathBuf) {
    let weak = Arc::downgrade(daemon);
    tokio::spawn(async move {
        let mut w = Watcher::default();
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            let Some(d) = weak.upgrade() else {
                return;
            };
            let listing = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || list(&dir))
                    .await
                    .unwrap_or_default()
            };
            for p in w.scan(listing) {
                take(&d, &p).await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_ready_once_it_stood_still_for_a_poll() {
        let mut w = Watcher::default();
        let t = |s: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let a = PathBuf::from("/w/a.torrent");
        let m = PathBuf::from("/w/b.MAGNET");
        let other = PathBuf::from("/w/notes.txt");
        let hidden = PathBuf::from("/w/.c.torrent");
        // First sight: nothing is ready yet.
        let now = vec![
            (a.clone(), (10, t(1))),
            (m.clone(), (60, t(1))),
            (other.clone(), (5, t(1))),
            (hidden.clone(), (5, t(1))),
        ];
        assert!(w.scan(now).is_empty());
        // a.torrent is still growing; b.magnet stood still.
        let now = vec![(a.clone(), (20, t(2))), (m.clone(), (60, t(1)))];
        assert_eq!(w.scan(now), vec![m.clone()]);
        // a.torrent stopped growing.
        let now = vec![(a.clone(), (20, t(2)))];
        assert_eq!(w.scan(now), vec![a.clone()]);
        // Gone (renamed) files are forgotten.
        assert!(w.scan(Vec::new()).is_empty());
        assert!(w.seen.is_empty());
    }
}
