//! Per-peer request pipeline: how many block requests to keep outstanding (BEP 3 practice,
//! BEP 10 `reqq`), and snub detection.
//!
//! A peer can only deliver at full speed if enough requests are in flight to cover the
//! bandwidth-delay product: `depth ≈ rate × RTT / 16 KiB`. Measured rate is itself capped by
//! the depth (rate ≤ depth × 16 KiB / RTT), so we aim at [`PipelineConfig::bdp_factor`] times
//! the BDP plus a few blocks of slack, which lets the depth grow until the link — not the
//! pipeline — is the bottleneck. RTT is the *minimum* recent request→block delay: the
//! loaded delay includes the peer's queue (which our own depth fills), and using it would
//! make the depth grow without bound. The result is clamped to `[min, min(reqq, max)]`,
//! `reqq` being the peer's advertised queue length from the BEP 10 handshake.
//!
//! The rate is a 4 s average, so right after an unchoke it is near zero and the
//! BDP-based depth would starve a fast peer for seconds (a seed that unchokes a new
//! leecher every few seconds never saw full speed). So the depth also has a *window* that
//! grows like TCP slow start: +1 per block that arrives while the pipeline is full and
//! the block's round trip shows no queueing at the peer (≤ 2 × min RTT +
//! [`QUEUE_SLACK`]). Once the peer's queue builds up, the window stops growing, which keeps
//! us from reserving blocks at a slow peer that faster peers could deliver (a flash crowd
//! is limited by exactly that, docs/simulation.md).
//!
//! A peer that has requests outstanding but delivers no block for [`SNUB_TIMEOUT`] (60 s)
//! is *snubbed*: the torrent task releases its requests in the picker so other peers fetch
//! them, and its depth drops to 1 until a block arrives.

use std::time::Duration;

use tokio::time::Instant;

use super::layout::BLOCK_SIZE;
use super::ratelimit::RateEstimator;

/// No block for this long while requests are outstanding ⇒ snubbed.
pub const SNUB_TIMEOUT: Duration = Duration::from_secs(60);

/// Round-trip time above 2 × min RTT that still counts as "no queue at the peer".
const QUEUE_SLACK: Duration = Duration::from_millis(20);

/// How long a minimum-RTT sample is remembered before a fresh window replaces it.
const RTT_WINDOW: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub min_depth: usize,
    pub max_depth: usize,
    /// Depth used before any RTT/rate sample exists.
    pub initial_depth: usize,
    pub bdp_factor: f64,
    pub slack: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            min_depth: 2,
            max_depth: 250,
            initial_depth: 8,
            bdp_factor: 2.0,
            slack: 2,
        }
    }
}

/// Request-pipeline state of one peer connection.
#[derive(Clone, Debug)]
pub struct Pipeline {
    cfg: PipelineConfig,
    reqq: usize,
    rate: RateEstimator,
    /// Minimum RTT of the current and previous window.
    rtt_cur: Option<Duration>,
    rtt_prev: Option<Duration>,
    rtt_window_start: Instant,
    /// Last time a block arrived, or requests were sent while none were outstanding.
    last_progress: Instant,
    snubbed: bool,
    /// Slow-start window (see the module docs).
    window: usize,
}

impl Pipeline {
    pub fn new(cfg: PipelineConfig, now: Instant) -> Self {
        Pipeline {
            reqq: cfg.max_depth,
            window: cfg.initial_depth,
            cfg,
            rate: RateEstimator::new(Duration::from_secs(4), 16, now),
            rtt_cur: None,
            rtt_prev: None,
            rtt_window_start: now,
            last_progress: now,
            snubbed: false,
        }
    }

    /// The peer's BEP 10 `reqq` (queue length it accepts).
    pub fn set_reqq(&mut self, reqq: usize) {
        self.reqq = reqq.max(1);
    }

    /// Requests were sent; `had_outstanding` = some were already in flight before.
    pub fn on_requests_sent(&mut self, now: Instant, had_outstanding: bool) {
        if !had_outstanding {
            // Idle time before this does not count towards snubbing.
            self.last_progress = now;
        }
    }

    /// A block of `bytes` arrived; `requested_at` is when we sent its request (if known),
    /// `outstanding` how many requests were in flight with it.
    pub fn on_block(
        &mut self,
        now: Instant,
        bytes: u64,
        requested_at: Option<Instant>,
        outstanding: usize,
    ) {
        self.rate.record(now, bytes);
        self.last_progress = now;
        self.snubbed = false;
        if now.saturating_duration_since(self.rtt_window_start) >= RTT_WINDOW {
            self.rtt_prev = self.rtt_cur.take();
            self.rtt_window_start = now;
        }
        if let Some(t) = requested_at {
            let rtt = now.saturating_duration_since(t);
            self.rtt_cur = Some(self.rtt_cur.map_or(rtt, |r| r.min(rtt)));
            let base = self.min_rtt().unwrap_or(rtt);
            // Grow only when the window, not a lack of blocks to ask for, was the limit.
            if outstanding + 2 >= self.window && rtt <= base * 2 + QUEUE_SLACK {
                self.window = (self.window + 1).min(self.cfg.max_depth);
            }
        }
    }

    /// Minimum recent RTT.
    pub fn min_rtt(&self) -> Option<Duration> {
        match (self.rtt_cur, self.rtt_prev) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn is_snubbed(&self) -> bool {
        self.snubbed
    }

    /// Checks the snub timer. Returns true when the peer's requests must be released in
    /// the picker: when it becomes snubbed, and again after every further [`SNUB_TIMEOUT`]
    /// of silence (so the single request a snubbed peer still gets cannot stall a block).
    pub fn check_snub(&mut self, now: Instant, outstanding: usize) -> bool {
        if outstanding == 0 {
            return false;
        }
        if now.saturating_duration_since(self.last_progress) >= SNUB_TIMEOUT {
            self.snubbed = true;
            self.last_progress = now;
            return true;
        }
        false
    }

    /// How many requests to keep outstanding now.
    pub fn depth(&mut self, now: Instant) -> usize {
        if self.snubbed {
            return 1;
        }
        let hi = self.reqq.min(self.cfg.max_depth).max(1);
        let lo = self.cfg.min_depth.min(hi);
        let rate = self.rate.rate(now);
        let d = match self.min_rtt() {
            Some(rtt) if rate > 0 => {
                let bdp = rate as f64 * rtt.as_secs_f64() / BLOCK_SIZE as f64;
                (bdp * self.cfg.bdp_factor).ceil() as usize + self.cfg.slack
            }
            _ => self.cfg.initial_depth,
        };
        d.max(self.window).clamp(lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_follows_bandwidth_delay_product() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(PipelineConfig::default(), t0);
        assert_eq!(p.depth(t0), 8);
        // 10 MB/s with 100 ms RTT: BDP = 1 MB ≈ 61 blocks; 2× + 2 = 125.
        let mut now = t0;
        for _ in 0..400 {
            now += Duration::from_micros(1638); // 16384 B every 1.6384 ms = 10 MB/s
            p.on_block(now, 16384, Some(now - Duration::from_millis(100)), 0);
        }
        let d = p.depth(now);
        assert!((115..=135).contains(&d), "{d}");
        // reqq caps it.
        p.set_reqq(50);
        assert_eq!(p.depth(now), 50);
        // A slow peer (10 kB/s, 50 ms): clamped to the minimum plus slack (with a small
        // initial window, which never grows here: the pipeline was never full).
        let cfg = PipelineConfig {
            initial_depth: 2,
            ..PipelineConfig::default()
        };
        let mut q = Pipeline::new(cfg, t0);
        let mut now = t0;
        for _ in 0..10 {
            now += Duration::from_millis(400);
            q.on_block(now, 4096, Some(now - Duration::from_millis(50)), 0);
        }
        assert_eq!(q.depth(now), 3);
    }

    #[test]
    fn window_grows_while_full_and_unqueued_then_holds() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(PipelineConfig::default(), t0);
        assert_eq!(p.depth(t0), 8);
        // Right after an unchoke the 4 s rate average is still tiny, so the BDP term alone
        // would stay near the floor; blocks arriving on a full pipeline with an unloaded
        // round trip (100 ms) grow the window by one each, i.e. doubling per round trip.
        let mut now = t0 + Duration::from_millis(100);
        for _ in 0..8 {
            let d = p.depth(now);
            p.on_block(now, 16384, Some(now - Duration::from_millis(100)), d);
        }
        assert_eq!(p.window, 16);
        assert!(p.depth(now) >= 16);
        // Not full (we had nothing more to ask for): no growth.
        p.on_block(now, 16384, Some(now - Duration::from_millis(100)), 3);
        assert_eq!(p.window, 16);
        // The peer's queue builds up (round trip 400 ms > 2 × 100 ms + 20 ms): hold.
        now += Duration::from_millis(400);
        for _ in 0..20 {
            let d = p.depth(now);
            p.on_block(now, 16384, Some(now - Duration::from_millis(400)), d);
        }
        assert_eq!(p.window, 16, "window kept growing into the peer's queue");
    }

    #[test]
    fn min_rtt_ignores_queueing_delay() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(PipelineConfig::default(), t0);
        p.on_block(t0 + Duration::from_millis(10), 16384, Some(t0), 0);
        p.on_block(t0 + Duration::from_millis(500), 16384, Some(t0), 0);
        assert_eq!(p.min_rtt(), Some(Duration::from_millis(10)));
    }

    #[test]
    fn snub_after_silence_with_requests_outstanding() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(PipelineConfig::default(), t0);
        // Idle (nothing outstanding) is never a snub.
        assert!(!p.check_snub(t0 + Duration::from_secs(120), 0));
        let t1 = t0 + Duration::from_secs(120);
        p.on_requests_sent(t1, false);
        assert!(!p.check_snub(t1 + Duration::from_secs(59), 5));
        assert!(p.check_snub(t1 + SNUB_TIMEOUT, 5));
        assert!(
            !p.check_snub(t1 + SNUB_TIMEOUT, 5),
            "reported once per timeout"
        );
        assert!(
            p.check_snub(t1 + SNUB_TIMEOUT * 2, 1),
            "a snubbed peer sitting on a request is released again"
        );
        assert!(p.is_snubbed());
        assert_eq!(p.depth(t1 + SNUB_TIMEOUT), 1);
        p.on_block(t1 + Duration::from_secs(70), 16384, None, 0);
        assert!(!p.is_snubbed());
    }
}
