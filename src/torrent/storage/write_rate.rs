//! A slow disk for tests and benchmarks: a write-rate limit on a [`super::Storage`].
//!
//! No BEP: this models the disk under BEP 3 piece storage. The disk is one queue that
//! writes at `bytes_per_sec`: a write issued while an earlier one is still "on the platter"
//! starts when that one ends. Pure bookkeeping with time passed in, so under simnet's paused
//! clock a slow disk costs no real time and every run is the same; the caller waits until
//! [`WriteRate::finish_at`] (a tokio sleep in a simulation, a thread sleep on the blocking
//! pool) and keeps the piece's buffers alive until then, as a real slow disk would.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A serial disk writing at a fixed rate.
#[derive(Debug)]
pub struct WriteRate {
    bytes_per_sec: u64,
    /// When the last write queued so far is done.
    free_at: Mutex<Option<Instant>>,
}

impl WriteRate {
    /// A disk writing `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> Self {
        WriteRate {
            bytes_per_sec: bytes_per_sec.max(1),
            free_at: Mutex::new(None),
        }
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Queues a write of `bytes` issued at `now`; returns when it is done.
    pub fn finish_at(&self, now: Instant, bytes: u64) -> Instant {
        let took = Duration::from_nanos(
            (u128::from(bytes) * 1_000_000_000 / u128::from(self.bytes_per_sec))
                .min(u128::from(u64::MAX)) as u64,
        );
        let mut free = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        let start = free.map_or(now, |f| f.max(now));
        let end = start + took;
        *free = Some(end);
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_queue_behind_each_other_at_the_rate() {
        let t0 = Instant::now();
        let d = WriteRate::new(10_000_000);
        // 1 MB takes 100 ms; a second write issued at once waits for the first.
        assert_eq!(d.finish_at(t0, 1_000_000), t0 + Duration::from_millis(100));
        assert_eq!(d.finish_at(t0, 1_000_000), t0 + Duration::from_millis(200));
        // An idle disk starts a write at once.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            d.finish_at(later, 500_000),
            later + Duration::from_millis(50)
        );
    }
}
