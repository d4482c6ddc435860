//! LEDBAT congestion control for uTP (BEP 29, RFC 6817): grow the window while the one-way
//! queuing delay is under the target, shrink it when above, so a bulk transfer yields to
//! interactive traffic (and to TCP) on a shared bottleneck.

use std::time::Duration;

use tokio::time::Instant;

/// How long a minute of the base-delay history lasts.
const HISTORY_SLOT: Duration = Duration::from_secs(60);

/// The lowest one-way delay seen over the last two minutes (two one-minute minima), so a
/// route change is forgotten after at most two minutes (RFC 6817, "base delay").
///
/// Delays are the peer's `timestamp_difference` fields: our clock and theirs differ by an
/// unknown constant, so samples are compared modulo 2^32 and only differences mean anything.
#[derive(Clone, Debug, Default)]
pub struct DelayHistory {
    cur: Option<u32>,
    prev: Option<u32>,
    slot_start: Option<Instant>,
}

/// `a` is below `b` in wrapping u32 arithmetic.
fn below(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) < 0x8000_0000 && a != b
}

fn min_wrap(a: Option<u32>, b: u32) -> u32 {
    match a {
        Some(a) if below(a, b) => a,
        _ => b,
    }
}

impl DelayHistory {
    pub fn add(&mut self, sample: u32, now: Instant) {
        let start = *self.slot_start.get_or_insert(now);
        if now.saturating_duration_since(start) >= HISTORY_SLOT {
            self.prev = self.cur.take();
            self.slot_start = Some(now);
        }
        self.cur = Some(min_wrap(self.cur, sample));
    }

    /// The base delay, when any sample was seen.
    pub fn base(&self) -> Option<u32> {
        match (self.cur, self.prev) {
            (Some(c), p) => Some(min_wrap(p, c)),
            (None, p) => p,
        }
    }

    /// How far `sample` lies above the base: the queuing delay (microseconds).
    pub fn queuing(&self, sample: u32) -> u32 {
        match self.base() {
            Some(b) if !below(sample, b) => sample.wrapping_sub(b),
            _ => 0,
        }
    }
}

/// The congestion window and how it moves.
#[derive(Clone, Debug)]
pub struct Ledbat {
    /// Bytes allowed in flight.
    cwnd: f64,
    min: f64,
    max: f64,
    target_us: f64,
    /// Most the window grows per round trip when the delay is far below the target.
    gain: f64,
    /// Doubling per round trip until the delay reaches half the target or a loss.
    slow_start: bool,
    history: DelayHistory,
    last_cut: Option<Instant>,
    /// The last queuing delay measured (microseconds).
    pub last_queuing_us: u32,
}

impl Ledbat {
    pub fn new(initial: usize, min: usize, max: usize, target: Duration, gain: usize) -> Self {
        Ledbat {
            cwnd: initial.clamp(min, max) as f64,
            min: min as f64,
            max: max as f64,
            target_us: target.as_micros().max(1) as f64,
            gain: gain as f64,
            slow_start: true,
            history: DelayHistory::default(),
            last_cut: None,
            last_queuing_us: 0,
        }
    }

    pub fn cwnd(&self) -> usize {
        self.cwnd as usize
    }

    /// `bytes` were acknowledged by a packet whose `timestamp_difference` was `delay`
    /// (0: the peer had no sample yet).
    pub fn on_ack(&mut self, bytes: usize, delay: u32, now: Instant) {
        let mut off = 1.0;
        if delay != 0 {
            self.history.add(delay, now);
            let q = self.history.queuing(delay);
            self.last_queuing_us = q;
            // RFC 6817's off_target, capped above (grow at most `gain` per round trip) and
            // not below: far over the target, e.g. behind a TCP flow's standing queue, the
            // window shrinks in proportion and yields within a few round trips.
            off = ((self.target_us - q as f64) / self.target_us).min(1.0);
            if q as f64 > self.target_us / 2.0 {
                self.slow_start = false;
            }
        }
        let bytes = bytes as f64;
        if self.slow_start {
            self.cwnd += bytes;
        } else {
            // A whole window acknowledged moves it by `gain × off_target` bytes (per RTT),
            // and takes off at most half of it.
            let delta = self.gain * off * bytes / self.cwnd.max(1.0);
            self.cwnd += delta.max(-bytes / 2.0);
        }
        self.cwnd = self.cwnd.clamp(self.min, self.max);
    }

    /// A packet was lost (duplicate acks or SACK): halve, at most once per `rtt`.
    pub fn on_loss(&mut self, now: Instant, rtt: Duration) {
        if self
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < rtt)
        {
            return;
        }
        self.last_cut = Some(now);
        self.slow_start = false;
        self.cwnd = (self.cwnd / 2.0).clamp(self.min, self.max);
    }

    /// The retransmission timer fired: back to the minimum.
    pub fn on_timeout(&mut self) {
        self.slow_start = false;
        self.cwnd = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u32 = 1000;

    #[test]
    fn base_delay_is_the_two_minute_minimum() {
        let t0 = Instant::now();
        let mut h = DelayHistory::default();
        h.add(50 * MS, t0);
        h.add(40 * MS, t0 + Duration::from_secs(10));
        assert_eq!(h.base(), Some(40 * MS));
        assert_eq!(h.queuing(90 * MS), 50 * MS);
        h.add(70 * MS, t0 + Duration::from_secs(61));
        assert_eq!(h.base(), Some(40 * MS), "last minute still counts");
        h.add(70 * MS, t0 + Duration::from_secs(122));
        assert_eq!(h.base(), Some(70 * MS), "forgotten after two minutes");
        // Clocks are offsets: wrapping samples compare right.
        let mut h = DelayHistory::default();
        h.add(u32::MAX - 5, t0);
        h.add(10, t0);
        assert_eq!(h.base(), Some(u32::MAX - 5));
        assert_eq!(h.queuing(10), 16);
    }

    #[test]
    fn grows_below_target_and_shrinks_above() {
        let t0 = Instant::now();
        let mut l = Ledbat::new(10_000, 1000, 1 << 20, Duration::from_millis(100), 3000);
        l.on_ack(1000, 20 * MS, t0);
        assert!(l.cwnd() > 10_000);
        // Queuing delay far above target: leaves slow start, shrinks.
        let before = l.cwnd();
        l.on_ack(1000, 20 * MS + 250 * MS, t0);
        assert!(l.cwnd() < before, "{} < {before}", l.cwnd());
        // Growth per window acknowledged is bounded by the gain.
        let mut l = Ledbat::new(100_000, 1000, 1 << 20, Duration::from_millis(100), 3000);
        l.on_loss(t0, Duration::from_millis(50));
        let w = l.cwnd();
        let mut acked = 0;
        while acked < w {
            l.on_ack(1000, 20 * MS, t0);
            acked += 1000;
        }
        assert!(l.cwnd() <= w + 3000 + 100, "{} vs {w}", l.cwnd());
        assert!(l.cwnd() > w);
        // Far above the target it shrinks faster than `gain` per window, by at most half.
        let mut l = Ledbat::new(100_000, 1000, 1 << 20, Duration::from_millis(100), 3000);
        l.on_ack(1000, 20 * MS, t0);
        l.on_loss(t0, Duration::from_millis(50));
        let w = l.cwnd();
        let mut acked = 0;
        while acked < w {
            l.on_ack(1000, 20 * MS + 500 * MS, t0);
            acked += 1000;
        }
        assert!(l.cwnd() < w - 3000 * 3, "{} vs {w}", l.cwnd());
        assert!(l.cwnd() >= w / 2 - 1000, "{} vs {w}", l.cwnd());
    }

    #[test]
    fn loss_halves_once_per_rtt_and_timeout_resets() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(50);
        let mut l = Ledbat::new(64_000, 1000, 1 << 20, Duration::from_millis(100), 3000);
        l.on_loss(t0, rtt);
        assert_eq!(l.cwnd(), 32_000);
        l.on_loss(t0 + Duration::from_millis(10), rtt);
        assert_eq!(l.cwnd(), 32_000);
        l.on_loss(t0 + Duration::from_millis(60), rtt);
        assert_eq!(l.cwnd(), 16_000);
        l.on_timeout();
        assert_eq!(l.cwnd(), 1000);
    }
}
