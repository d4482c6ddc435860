//! Steady writeback: dirty pages handed to the kernel as the download goes, not all at once.
//!
//! No BEP: this is how verified pieces (BEP 3) reach the platter. Left alone, the kernel lets
//! a fast download dirty pages until its dirty threshold and then makes the next `pwrite`
//! wait while it writes back (on this machine gigabytes at once): the write blocks for
//! seconds, pieces waiting for it pile up in memory, and the system time of the run jumps.
//! Instead, every [`WRITEBACK_CHUNK`] bytes written to a file, writeback of the range written
//! since the previous kick is started with `sync_file_range(SYNC_FILE_RANGE_WRITE)`, which
//! queues the I/O and returns without waiting for it (Linux only; elsewhere a no-op). Nothing
//! is made durable by this: `Storage::flush` (fsync) still does that.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Mutex;

/// Bytes written to one file between two writeback kicks.
pub const WRITEBACK_CHUNK: u64 = 8 << 20;

/// What was written to each file since its last kick.
#[derive(Debug, Default)]
pub(super) struct Writeback {
    spans: Mutex<HashMap<usize, Span>>,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    lo: u64,
    hi: u64,
    bytes: u64,
}

impl Writeback {
    /// Notes `len` bytes written at `off` of file `key`; once [`WRITEBACK_CHUNK`] bytes have
    /// been written since the last kick, returns the byte range to start writing back (and
    /// starts counting afresh).
    pub(super) fn wrote(&self, key: usize, off: u64, len: u64) -> Option<(u64, u64)> {
        if len == 0 {
            return None;
        }
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        let end = off.saturating_add(len);
        let s = spans.entry(key).or_insert(Span {
            lo: off,
            hi: end,
            bytes: 0,
        });
        s.lo = s.lo.min(off);
        s.hi = s.hi.max(end);
        s.bytes += len;
        if s.bytes < WRITEBACK_CHUNK {
            return None;
        }
        let range = (s.lo, s.hi - s.lo);
        spans.remove(&key);
        Some(range)
    }
}

/// Starts writeback of `len` bytes at `off` of `file` without waiting for it. Best effort:
/// an error (a filesystem without it) only means the kernel flushes on its own schedule.
pub(super) fn start(file: &File, off: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(len)) = (libc::off64_t::try_from(off), libc::off64_t::try_from(len))
        else {
            return;
        };
        // SAFETY: sync_file_range only reads its integer arguments and acts on an open
        // descriptor that `file` owns for the whole call; it touches no memory of ours.
        let _ = unsafe {
            libc::sync_file_range(file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE)
        };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, off, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kicks_every_chunk_per_file_with_the_span_written() {
        let w = Writeback::default();
        let piece = 1 << 20;
        // Pieces of file 0 out of order, and file 1 in between: counted apart.
        for i in 0..7u64 {
            assert_eq!(w.wrote(0, (7 - i) * piece, piece), None);
            assert_eq!(w.wrote(1, i * piece, piece), None);
        }
        assert_eq!(w.wrote(0, 0, piece), Some((0, 8 * piece)));
        assert_eq!(w.wrote(1, 7 * piece, piece), Some((0, 8 * piece)));
        // Counting starts afresh after a kick.
        assert_eq!(w.wrote(0, 8 * piece, piece), None);
        assert_eq!(w.wrote(0, 9 * piece, 0), None);
    }

    #[test]
    fn start_is_harmless_on_any_file() {
        let dir = std::env::temp_dir().join(format!("mf-writeback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, vec![7u8; 1 << 16]).unwrap();
        let f = File::open(&p).unwrap();
        start(&f, 0, 1 << 16);
        start(&f, 1 << 20, 1 << 16);
        drop(f);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
