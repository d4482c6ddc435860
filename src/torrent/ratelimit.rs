//! Rate limiting and rate measurement (pure, driven by `tokio::time::Instant`s so the
//! simulation's paused clock works).
//!
//! [`TokenBucket`] backs the global `--max-down-rate` / `--max-up-rate` limits: payload
//! bytes (BEP 3 `piece` messages) take tokens; a sender that would exceed the rate learns
//! how long to wait. [`RateEstimator`] measures bytes/s over a sliding window, used to rank
//! peers in the choker (BEP 3 tit-for-tat), to size request pipelines and for the progress
//! display.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `rate` bytes/s, at most `burst` bytes at once. Rate 0 = unlimited.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// May go negative: a reservation larger than the balance is a debt paid by waiting.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. A burst below 16 KiB would stall whole-block sends, so it is raised.
    pub fn new(rate: u64, burst: u64, now: Instant) -> Self {
        let burst = burst.max(16 * 1024);
        TokenBucket {
            rate,
            burst,
            tokens: burst as f64,
            last: now,
        }
    }

    /// Unlimited bucket.
    pub fn unlimited(now: Instant) -> Self {
        Self::new(0, 0, now)
    }

    pub fn is_unlimited(&self) -> bool {
        self.rate == 0
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.rate as f64).min(self.burst as f64);
    }

    /// Takes `n` tokens if available now.
    pub fn try_take(&mut self, now: Instant, n: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        self.refill(now);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens unconditionally and returns how long the caller must wait before
    /// sending (zero if the balance covered it). Concurrent callers queue up fairly because
    /// each reservation deepens the debt.
    pub fn reserve(&mut self, now: Instant, n: u64) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate as f64)
        }
    }
}

/// Bytes/s over a sliding window of fixed slots.
#[derive(Clone, Debug)]
pub struct RateEstimator {
    slot: Duration,
    slots: Vec<u64>,
    start: Instant,
    /// Absolute index of the newest slot.
    head: u64,
    total: u64,
}

impl RateEstimator {
    /// A window of `window` split into `n` slots (n ≥ 1).
    pub fn new(window: Duration, n: usize, now: Instant) -> Self {
        let n = n.max(1);
        let slot = (window / n as u32).max(Duration::from_millis(1));
        RateEstimator {
            slot,
            slots: vec![0; n],
            start: now,
            head: 0,
            total: 0,
        }
    }

    /// 5 s window in 250 ms slots: responsive enough for the choker's 10 s rounds.
    pub fn default_at(now: Instant) -> Self {
        Self::new(Duration::from_secs(5), 20, now)
    }

    fn advance(&mut self, now: Instant) {
        let idx =
            (now.saturating_duration_since(self.start).as_nanos() / self.slot.as_nanos()) as u64;
        if idx <= self.head {
            return;
        }
        let n = self.slots.len() as u64;
        let steps = (idx - self.head).min(n);
        for k in 1..=steps {
            let j = ((self.head + k) % n) as usize;
            self.slots[j] = 0;
        }
        self.head = idx;
    }

    /// Records `bytes` transferred at `now`.
    pub fn record(&mut self, now: Instant, bytes: u64) {
        self.advance(now);
        let j = (self.head % self.slots.len() as u64) as usize;
        self.slots[j] += bytes;
        self.total += bytes;
    }

    /// All bytes ever recorded.
    #[cfg(test)]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes/s over the window (over the elapsed time while the window is not yet full).
    pub fn rate(&mut self, now: Instant) -> u64 {
        self.advance(now);
        let sum: u64 = self.slots.iter().sum();
        let n = self.slots.len() as u64;
        // Full older slots plus the elapsed part of the current one.
        let elapsed = now.saturating_duration_since(self.start);
        let frac = elapsed.saturating_sub(self.slot * self.head as u32);
        let full = self.head.min(n - 1) as u32;
        let secs = (self.slot * full + frac).as_secs_f64().max(1e-3);
        (sum as f64 / secs) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100_000, 20_000, t0);
        assert!(b.try_take(t0, 20_000));
        assert!(!b.try_take(t0, 1));
        // 0.1 s later: 10 kB available.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.try_take(t1, 10_000));
        assert!(!b.try_take(t1, 100));
        // Reserving 50 kB in debt means waiting 0.5 s.
        let w = b.reserve(t1, 50_000);
        assert!((w.as_secs_f64() - 0.5).abs() < 1e-6, "{w:?}");
        // Burst cap: a long idle period only refills to `burst`.
        let t2 = t1 + Duration::from_secs(100);
        assert!(b.try_take(t2, 20_000));
        assert!(!b.try_take(t2, 1));
        // Over a simulated 10 s, throughput matches the rate.
        let mut b = TokenBucket::new(1_000_000, 16_384, t0);
        let mut now = t0;
        let mut sent = 0u64;
        while now < t0 + Duration::from_secs(10) {
            now += b.reserve(now, 16_384);
            sent += 16_384;
        }
        let rate = sent as f64 / 10.0;
        assert!((rate - 1_000_000.0).abs() < 20_000.0, "{rate}");
        assert!(TokenBucket::unlimited(t0).try_take(t0, u64::MAX));
    }

    #[test]
    fn estimator_tracks_recent_rate() {
        let t0 = Instant::now();
        let mut e = RateEstimator::default_at(t0);
        for k in 0..100u32 {
            e.record(t0 + Duration::from_millis(50) * k, 5_000); // 100 kB/s for 5 s
        }
        let r = e.rate(t0 + Duration::from_millis(4999));
        assert!((90_000..=110_000).contains(&r), "{r}");
        // After 10 s of silence the rate is 0, the total is kept.
        assert_eq!(e.rate(t0 + Duration::from_secs(15)), 0);
        assert_eq!(e.total(), 500_000);
    }
}
