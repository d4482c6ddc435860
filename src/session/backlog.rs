//! Bytes on their way to the disk, and the gate that stops a torrent's peer readers while
//! there are too many of them.
//!
//! No BEP: this is flow control under the BEP 3 peer wire. A complete piece is held in memory
//! from the moment it is handed to hashing and writing until its write returns. When the
//! network delivers faster than the disk writes, those pieces pile up; the swarm core already
//! stops *requesting* past [`super::swarm::SwarmConfig::max_unwritten`], but blocks requested
//! before keep arriving. The gate stops peers' readers from *reading* too, so what is still
//! in flight waits in the kernel's socket buffer (TCP, whose window then closes) or as unused
//! QUIC stream credit, not in our memory. The gate only waits on writes already under way,
//! which always finish, so it cannot deadlock.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// A torrent's bytes handed to hashing and writing and not yet written (see the module doc).
#[derive(Debug, Default)]
pub struct DiskBacklog {
    bytes: AtomicU64,
    peak: AtomicU64,
    /// Readers wait while `bytes` is at least this; 0 (the default): never.
    bound: AtomicU64,
    room: Notify,
}

impl DiskBacklog {
    /// A gauge whose readers wait at `bound` bytes (0: never).
    pub fn new(bound: u64) -> Self {
        let b = DiskBacklog::default();
        b.bound.store(bound, Ordering::Relaxed);
        b
    }

    pub(crate) fn set_bound(&self, bound: u64) {
        self.bound.store(bound, Ordering::Relaxed);
        self.room.notify_waiters();
    }

    /// Bytes waiting for the disk now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The most bytes that ever waited at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    pub fn bound(&self) -> u64 {
        self.bound.load(Ordering::Relaxed)
    }

    /// Is the gate closed (readers wait)?
    pub fn full(&self) -> bool {
        let bound = self.bound();
        bound > 0 && self.bytes() >= bound
    }

    /// `n` bytes of a piece were handed to hashing and writing.
    pub(crate) fn add(&self, n: u64) {
        let now = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// A piece of `n` bytes is written (or failed its hash and was dropped).
    pub(crate) fn done(&self, n: u64) {
        let before = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            })
            .unwrap_or(0);
        let bound = self.bound();
        if bound > 0 && before >= bound && before.saturating_sub(n) < bound {
            self.room.notify_waiters();
        }
    }

    /// Returns once the gate is open (at once if it is).
    pub async fn wait_room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a `done` in between is not missed.
            notified.as_mut().enable();
            if !self.full() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn readers_wait_while_full_and_resume_when_writes_return() {
        let b = Arc::new(DiskBacklog::new(100));
        b.add(60);
        b.wait_room().await; // under the bound: open
        b.add(60);
        assert!(b.full());
        assert_eq!(b.peak(), 120);
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.wait_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        b.done(60);
        waiter.await.unwrap();
        assert_eq!(b.bytes(), 60);
        assert!(!b.full());
        // No bound: never full.
        let free = DiskBacklog::default();
        free.add(u64::MAX / 2);
        free.wait_room().await;
    }
}
