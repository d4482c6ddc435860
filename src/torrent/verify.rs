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

use sha1::{Digest, Sha1};

use super::bitfield::Bitfield;
use super::storage::{Storage, StorageError};

/// SHA-1 of `data`.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(data);
    h.finalize().into()
}

/// Does stored piece `piece` match `expected`? Missing files mean "no" rather than an error.
pub fn check_piece(
    storage: &Storage,
    piece: u32,
    expected: &[u8; 20],
) -> Result<bool, StorageError> {
    match storage.read_piece(piece) {
        Ok(data) => Ok(sha1(&data) == *expected),
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
                while !stop.load(Ordering::Relaxed) {
                    let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&piece) = todo.get(k) else { break };
                    match check_piece(storage, piece, &hashes[piece as usize]) {
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
