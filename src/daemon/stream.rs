//! `GET /torrents/{id}/stream/{file}`: one file of a torrent over HTTP while it downloads,
//! with `Range` (RFC 9110 §14) so players can seek.
//!
//! A reader asks for the pieces at and just after its position first (its window, given to
//! the picker as the torrent's focus together with every other reader's), waits until the
//! piece it is at is verified and written (the session's pieces watch), then reads it from
//! the file. Seeking is a new request: a new window. Several readers at once each keep a
//! window; they are fetched in the order the readers came.
//!
//! Safety: the file is opened beneath the download directory without following links
//! (`torrent::storage::open_beneath`), and nothing is served as HTML or script: the
//! `Content-Type` comes from a short list of media types, with `nosniff` and a sandbox CSP,
//! so a file in a torrent cannot run script on the API's origin.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::metainfo::Metainfo;
use crate::torrent::Bitfield;

/// Bytes read from the file per chunk of the response body.
const CHUNK: u64 = 256 << 10;
/// A reader's window: this many bytes ahead of its position (at least 4 pieces).
const WINDOW_BYTES: u64 = 16 << 20;

/// What `Range` asks for, against a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    /// No (usable) range: the whole file, `200`.
    All,
    /// One satisfiable range, `206`.
    Part(RangeInclusive<u64>),
    /// Not satisfiable, `416`.
    Unsatisfiable,
}

/// Parses a `Range` header value for a file of `len` bytes. Only single byte ranges are
/// served as ranges; anything else the header may say gets the whole file, as RFC 9110
/// allows a server to ignore `Range`.
pub fn parse_range(value: Option<&str>, len: u64) -> Wanted {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Wanted::All;
    };
    if spec.contains(',') {
        return Wanted::All;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Wanted::All;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (a.is_empty(), num(a), num(b)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part(len.saturating_sub(n)..=len - 1)
            }
        }
        (false, Some(start), end) if b.is_empty() || end.is_some() => {
            if start >= len {
                return Wanted::Unsatisfiable;
            }
            let end = end.map_or(len - 1, |e| e.min(len - 1));
            if end < start {
                return Wanted::All;
            }
            Wanted::Part(start..=end)
        }
        _ => Wanted::All,
    }
}

/// The `Content-Type` for a file name: common media, subtitles, images and text; anything
/// else (HTML and SVG included) is `application/octet-stream`.
pub fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "avi" => "video/x-msvideo",
        "mov" => "video/quicktime",
        "ts" | "m2ts" => "video/mp2t",
        "ogv" => "video/ogg",
        "mp3" => "audio/mpeg",
        "m4a" | "aac" => "audio/mp4",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "srt" => "application/x-subrip",
        "vtt" => "text/vtt; charset=utf-8",
        "txt" | "nfo" => "text/plain; charset=utf-8",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// Where one file of a torrent lies: its bytes in the torrent's stream and on disk.
#[derive(Clone, Debug)]
pub struct FileSpan {
    /// Offset of the file's first byte in the torrent.
    pub offset: u64,
    pub len: u64,
    pub piece_length: u64,
    /// Path components beneath the download directory.
    pub rel: Vec<String>,
    pub name: String,
}

impl FileSpan {
    /// File `index` of `m`; `None` for an index out of range or a padding file.
    pub fn of(m: &Metainfo, index: usize) -> Option<FileSpan> {
        let f = m.info.files.get(index).filter(|f| !f.pad && !f.symlink)?;
        let mut rel = Vec::new();
        if m.info.multi_file {
            rel.push(m.info.name.clone());
        }
        rel.extend(f.path.iter().cloned());
        Some(FileSpan {
            offset: f.offset,
            len: f.length,
            piece_length: m.info.piece_length,
            name: f.path.last().cloned().unwrap_or_default(),
            rel,
        })
    }

    /// The piece holding byte `pos` of the file.
    pub fn piece_at(&self, pos: u64) -> u32 {
        ((self.offset + pos) / self.piece_length) as u32
    }

    /// The last piece holding bytes of the file (its first one for an empty file).
    fn last_piece(&self) -> u32 {
        self.piece_at(self.len.saturating_sub(1))
    }

    /// Bytes of the file from `pos` to the end of the piece holding `pos`.
    fn left_in_piece(&self, pos: u64) -> u64 {
        let abs = self.offset + pos;
        let piece_end = (abs / self.piece_length + 1) * self.piece_length;
        (piece_end - abs).min(self.len - pos)
    }

    /// A reader at `pos`: the pieces to fetch first, those it lacks from its position on.
    pub fn window(&self, pos: u64, have: Option<&Bitfield>) -> Vec<u32> {
        let count = (WINDOW_BYTES / self.piece_length).max(4);
        let first = self.piece_at(pos);
        let last = self
            .last_piece()
            .min(first.saturating_add(count as u32 - 1));
        (first..=last)
            .filter(|&p| !have.is_some_and(|h| p < h.len() && h.get(p)))
            .collect()
    }
}

/// The streaming readers of one torrent and their windows, merged into its focus.
#[derive(Debug)]
pub struct Readers {
    focus: watch::Sender<Vec<u32>>,
    windows: Mutex<(u64, BTreeMap<u64, Vec<u32>>)>,
}

impl Readers {
    pub fn new(focus: watch::Sender<Vec<u32>>) -> Arc<Readers> {
        Arc::new(Readers {
            focus,
            windows: Mutex::new((0, BTreeMap::new())),
        })
    }

    /// Readers right now.
    pub fn count(&self) -> usize {
        self.lock().1.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<u64, Vec<u32>>)> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn join(self: &Arc<Self>) -> ReaderGuard {
        let mut w = self.lock();
        w.0 += 1;
        let id = w.0;
        w.1.insert(id, Vec::new());
        ReaderGuard {
            readers: self.clone(),
            id,
        }
    }

    fn set(&self, id: u64, window: Vec<u32>) {
        let mut w = self.lock();
        if w.1.get(&id) == Some(&window) {
            return;
        }
        w.1.insert(id, window);
        self.publish(&w.1);
    }

    fn publish(&self, windows: &BTreeMap<u64, Vec<u32>>) {
        let mut all: Vec<u32> = Vec::new();
        for p in windows.values().flatten() {
            if !all.contains(p) {
                all.push(*p);
            }
        }
        self.focus.send_replace(all);
    }
}

/// One reader's place among a torrent's readers; leaving drops its window.
struct ReaderGuard {
    readers: Arc<Readers>,
    id: u64,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let mut w = self.readers.lock();
        w.1.remove(&self.id);
        self.readers.publish(&w.1);
    }
}

/// Everything a reader task needs.
pub struct Source {
    pub span: FileSpan,
    pub root: PathBuf,
    pub pieces: watch::Receiver<Option<Arc<Bitfield>>>,
    pub readers: Arc<Readers>,
    /// Bytes read from disk by every stream of the daemon (a metric).
    pub read_bytes: Arc<std::sync::atomic::AtomicU64>,
}

/// Streams `range` of the file: chunks on the returned channel, in order; an error item
/// ends it (the torrent stopped, or the file could not be read).
pub fn spawn_reader(
    src: Source,
    range: RangeInclusive<u64>,
) -> mpsc::Receiver<Result<Bytes, std::io::Error>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        if let Err(e) = read(src, range, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

async fn read(
    mut src: Source,
    range: RangeInclusive<u64>,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> std::io::Result<()> {
    let guard = src.readers.join();
    let (mut pos, end) = (*range.start(), *range.end());
    let rel: Vec<&str> = src.span.rel.iter().map(String::as_str).collect();
    let mut file = None;
    while pos <= end && pos < src.span.len {
        let piece = src.span.piece_at(pos);
        // The window moves with the reader; wait for the piece it is at.
        loop {
            let have = src.pieces.borrow_and_update().clone();
            src.readers
                .set(guard.id, src.span.window(pos, have.as_deref()));
            if have
                .as_ref()
                .is_some_and(|h| piece < h.len() && h.get(piece))
            {
                break;
            }
            tokio::select! {
                r = src.pieces.changed() => {
                    if r.is_err() {
                        return Err(std::io::Error::other("the torrent stopped"));
                    }
                }
                // The client left while we waited: free the window now.
                _ = tx.closed() => return Ok(()),
            }
        }
        if file.is_none() {
            let f = crate::torrent::storage::open_beneath(&src.root, &rel, false)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            file = Some(Arc::new(f));
        }
        let f = file.clone().expect("opened above");
        let n = src.span.left_in_piece(pos).min(end + 1 - pos).min(CHUNK);
        let at = pos;
        let chunk = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n as usize];
            std::os::unix::fs::FileExt::read_exact_at(f.as_ref(), &mut buf, at)?;
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .map_err(std::io::Error::other)??;
        src.read_bytes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
            // The client went away (or seeked: a new request).
            return Ok(());
        }
        pos += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_parsed_as_rfc_9110_says() {
        let len = 1000;
        assert_eq!(parse_range(None, len), Wanted::All);
        assert_eq!(parse_range(Some("bytes=0-99"), len), Wanted::Part(0..=99));
        assert_eq!(
            parse_range(Some("bytes=900-"), len),
            Wanted::Part(900..=999)
        );
        assert_eq!(
            parse_range(Some("bytes=900-5000"), len),
            Wanted::Part(900..=999)
        );
        assert_eq!(
            parse_range(Some("bytes=-100"), len),
            Wanted::Part(900..=999)
        );
        assert_eq!(parse_range(Some("bytes=-5000"), len), Wanted::Part(0..=999));
        assert_eq!(parse_range(Some("bytes=1000-"), len), Wanted::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), len), Wanted::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-1"), len), Wanted::All);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), len), Wanted::All);
        assert_eq!(parse_range(Some("items=0-1"), len), Wanted::All);
        assert_eq!(parse_range(Some("bytes=x-1"), len), Wanted::All);
        assert_eq!(
            parse_range(Some("bytes=99999999999999999999999-"), len),
            Wanted::All
        );
        assert_eq!(parse_range(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
    }

    #[test]
    fn nothing_is_served_as_html_or_script() {
        assert_eq!(content_type("a.MP4"), "video/mp4");
        assert_eq!(content_type("b.mkv"), "video/x-matroska");
        for evil in ["x.html", "x.htm", "x.svg", "x.js", "x.xhtml", "noext", "x."] {
            assert_eq!(content_type(evil), "application/octet-stream", "{evil}");
        }
    }

    #[test]
    fn a_window_covers_the_pieces_a_reader_lacks_from_its_position() {
        let span = FileSpan {
            offset: 3 << 20,
            len: 40 << 20,
            piece_length: 1 << 20,
            rel: vec!["v.mkv".into()],
            name: "v.mkv".into(),
        };
        assert_eq!(span.piece_at(0), 3);
        assert_eq!(span.left_in_piece(0), 1 << 20);
        assert_eq!(span.left_in_piece(10), (1 << 20) - 10);
        let w = span.window(0, None);
        assert_eq!(w, (3..19).collect::<Vec<u32>>());
        let mut have = Bitfield::new(43);
        have.set(3);
        have.set(5);
        let w = span.window(0, Some(&have));
        assert_eq!(w.first(), Some(&4));
        assert!(!w.contains(&5));
        // Near the end the window stops at the file's last piece.
        let w = span.window((40 << 20) - 1, None);
        assert_eq!(w, vec![42]);
    }

    #[test]
    fn readers_windows_merge_in_arrival_order_and_leave_with_them() {
        let (tx, rx) = watch::channel(Vec::new());
        let readers = Readers::new(tx);
        let a = readers.join();
        let b = readers.join();
        readers.set(b.id, vec![7, 8]);
        readers.set(a.id, vec![1, 2, 7]);
        assert_eq!(*rx.borrow(), vec![1, 2, 7, 8]);
        assert_eq!(readers.count(), 2);
        drop(a);
        assert_eq!(*rx.borrow(), vec![7, 8]);
        drop(b);
        assert!(rx.borrow().is_empty());
        assert_eq!(readers.count(), 0);
    }
}
