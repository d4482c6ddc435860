//! Piece verification: SHA-1 of each piece against the info dictionary's `pieces` string
//! (BEP 3), off the async executor.
//!
//! Hashing a piece (up to several MiB) would stall every other task on the executor, so the
//! async helpers run on tokio's blocking pool (`spawn_blocking`). A full recheck (`--recheck`,
//! or a download directory that already holds the files) hashes pieces on several threads
//! at once and returns the verified bitfield; a piece whose file is missing is simply not
//! verified.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha1::{Digest, Sha1};

use super::bitfield::Bitfield;
use super::storage::{Storage, StorageError};

/// SHA-1 of `data`.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(data);
    h.finalize().into()
}

/// A piece being downloaded, held as the received blocks themselves (BEP 3 `piece`
/// payloads, 16 KiB each) instead of a contiguous buffer they are copied into.
///
/// Why: each block's payload is already a zero-copy slice of the socket read buffer
/// (`Bytes`); copying it into a piece buffer was one extra `memmove` of every downloaded
/// byte (~6 % of the downloader's CPU). SHA-1 is fed the blocks in order, and the verified
/// piece goes to disk with one vectored write ([`Storage::write_blocks`]), so the payload
/// is touched by user space only for hashing.
///
/// Memory: a block keeps its read buffer alive until the piece is hashed; the reader's
/// reads are at most 256 KiB and a piece's blocks usually arrive together, so this is
/// about one read buffer per piece in flight.
#[derive(Debug)]
pub struct PieceBlocks {
    len: u32,
    block: u32,
    blocks: Vec<Option<Bytes>>,
}

impl PieceBlocks {
    /// An empty piece of `len` bytes split into blocks of `block` bytes (the last shorter).
    pub fn new(len: u32, block: u32) -> Self {
        let block = block.max(1);
        let n = len.div_ceil(block) as usize;
        Self {
            len,
            block,
            blocks: vec![None; n],
        }
    }

    /// Stores a block. Refused (false, nothing stored) unless `begin` is a block boundary
    /// and `data` is exactly that block's length: the caller only passes blocks it
    /// requested, so anything else is a bug or a hostile peer, never a partial fill.
    pub fn insert(&mut self, begin: u32, data: Bytes) -> bool {
        if !begin.is_multiple_of(self.block) || begin >= self.len {
            return false;
        }
        let want = (self.len - begin).min(self.block) as usize;
        if data.len() != want {
            return false;
        }
        match self.blocks.get_mut((begin / self.block) as usize) {
            Some(slot) => {
                *slot = Some(data);
                true
            }
            None => false,
        }
    }

    /// Every block present?
    pub fn is_complete(&self) -> bool {
        self.blocks.iter().all(Option::is_some)
    }

    /// The blocks in order (a missing block is skipped, so an incomplete piece never
    /// hashes to the expected digest).
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> {
        self.blocks.iter().flatten().map(|b| &b[..])
    }

    /// SHA-1 of the piece.
    pub fn sha1(&self) -> [u8; 20] {
        let mut h = Sha1::new();
        for b in self.slices() {
            h.update(b);
        }
        h.finalize().into()
    }

    /// SHA-1 of each block (for telling honest senders from corrupt ones).
    pub fn block_digests(&self) -> Vec<[u8; 20]> {
        self.slices().map(sha1).collect()
    }
}

/// Does stored piece `piece` match `expected`? Missing files mean "no" rather than an error.
pub fn check_piece(
    storage: &Storage,
    piece: u32,
    expected: &[u8; 20],
) -> Result<bool, StorageError> {
    check_piece_with(storage, piece, expected, &mut Vec::new())
}

/// [`check_piece`] reading into `buf`, which is reused from piece to piece: a fresh zeroed
/// piece-sized allocation per piece cost a `memset` (and page faults) of the whole torrent
/// even when nothing is on disk yet, which is every fresh download's start-up recheck.
fn check_piece_with(
    storage: &Storage,
    piece: u32,
    expected: &[u8; 20],
    buf: &mut Vec<u8>,
) -> Result<bool, StorageError> {
    // Bounded by the layout: piece_len is the actual length of this (checked) piece.
    let len = storage.layout().piece_len(piece) as usize;
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let data = &mut buf[..len];
    match storage.read_into(piece, 0, data) {
        Ok(()) => Ok(sha1(data) == *expected),
        Err(e) if e.is_missing() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Hashes `data` on the blocking pool; gives the buffer back for reuse.
pub async fn hash_blocking(data: Vec<u8>) -> ([u8; 20], Vec<u8>) {
    // The closure cannot panic; if the pool is shutting down, report a hash that matches
    // nothing so the piece is simply not trusted.
    tokio::task::spawn_blocking(move || (sha1(&data), data))
        .await
        .unwrap_or_default()
}

/// Checks a stored piece on the blocking pool.
pub async fn check_piece_blocking(
    storage: Arc<Storage>,
    piece: u32,
    expected: [u8; 20],
) -> Result<bool, StorageError> {
    tokio::task::spawn_blocking(move || check_piece(&storage, piece, &expected))
        .await
        .unwrap_or(Ok(false))
}

/// Verifies the pieces in `only` (all pieces when `None`) against `hashes`, on `threads`
/// threads. Blocking; returns the set of pieces that verified.
pub fn recheck(
    storage: &Storage,
    hashes: &[[u8; 20]],
    only: Option<&Bitfield>,
    threads: usize,
) -> Result<Bitfield, StorageError> {
    let n = storage.layout().piece_count();
    if hashes.len() != n as usize {
        return Err(StorageError::HashCount {
            got: hashes.len(),
            expected: n,
        });
    }
    let todo: Vec<u32> = match only {
        Some(b) => b.iter_set().filter(|&i| i < n).collect(),
        None => (0..n).collect(),
    };
    let next = AtomicU32::new(0);
    let stop = AtomicBool::new(false);
    let result = Mutex::new(Bitfield::new(n));
    let error: Mutex<Option<StorageError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, 16) {
            s.spawn(|| {
                let mut buf = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&piece) = todo.get(k) else { break };
                    match check_piece_with(storage, piece, &hashes[piece as usize], &mut buf) {
                        Ok(true) => {
                            result.lock().unwrap_or_else(|e| e.into_inner()).set(piece);
                        }
                        Ok(false) => {}
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(result.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// [`recheck`] on the blocking pool, using every core.
pub async fn recheck_blocking(
    storage: Arc<Storage>,
    hashes: Arc<Vec<[u8; 20]>>,
    only: Option<Bitfield>,
) -> Result<Bitfield, StorageError> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::task::spawn_blocking(move || recheck(&storage, &hashes, only.as_ref(), threads))
        .await
        .unwrap_or_else(|_| {
            Err(StorageError::Io {
                path: std::path::PathBuf::new(),
                source: std::io::Error::other("recheck task failed"),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_blocks_hash_like_the_contiguous_piece() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut p = PieceBlocks::new(40_000, 16_384);
        // Out of order, last block short.
        assert!(p.insert(32_768, Bytes::copy_from_slice(&data[32_768..])));
        assert!(!p.is_complete());
        assert!(p.insert(0, Bytes::copy_from_slice(&data[..16_384])));
        assert_ne!(p.sha1(), sha1(&data));
        assert!(p.insert(16_384, Bytes::copy_from_slice(&data[16_384..32_768])));
        assert!(p.is_complete());
        assert_eq!(p.sha1(), sha1(&data));
        let d: Vec<_> = data.chunks(16_384).map(sha1).collect();
        assert_eq!(p.block_digests(), d);
    }

    #[test]
    fn piece_blocks_refuse_misaligned_or_wrong_length_blocks() {
        let mut p = PieceBlocks::new(40_000, 16_384);
        assert!(!p.insert(1, Bytes::from(vec![0; 16_384])));
        assert!(!p.insert(0, Bytes::from(vec![0; 100])));
        assert!(!p.insert(32_768, Bytes::from(vec![0; 16_384])));
        assert!(!p.insert(49_152, Bytes::from(vec![0; 16_384])));
        assert!(!p.insert(u32::MAX - 16_383, Bytes::from(vec![0; 16_384])));
        assert_eq!(p.slices().count(), 0);
        let mut empty = PieceBlocks::new(0, 0);
        assert!(empty.is_complete());
        assert!(!empty.insert(0, Bytes::new()));
    }
}
