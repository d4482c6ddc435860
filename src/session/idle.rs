//! Which connected peers are useless, and a bounded ban list.
//!
//! BEP 3 leaves connection management to the client; common practice (libtorrent's
//! "inactivity" disconnects) is to drop a peer when neither side has been interested for a
//! while and the connection slot could serve someone else. [`IdlePeers`] tracks since when
//! each peer has been mutually uninterested and names the ones to drop, longest idle first.
//! Pure state, no I/O: the swarm actor feeds it on its tick.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::torrent::PeerKey;

/// Since when each peer has been uninterested in both directions.
#[derive(Debug, Default)]
pub struct IdlePeers {
    since: BTreeMap<PeerKey, Instant>,
}

impl IdlePeers {
    /// Records the peer's state at `now`: idle (neither side interested) or not.
    pub fn observe(&mut self, key: PeerKey, idle: bool, now: Instant) {
        if idle {
            self.since.entry(key).or_insert(now);
        } else {
            self.since.remove(&key);
        }
    }

    pub fn remove(&mut self, key: PeerKey) {
        self.since.remove(&key);
    }

    /// Up to `max` peers idle for at least `after`, longest idle first (ties by key, so
    /// the choice is deterministic).
    pub fn victims(&self, now: Instant, after: Duration, max: usize) -> Vec<PeerKey> {
        let mut v: Vec<(Instant, PeerKey)> = self
            .since
            .iter()
            .filter(|(_, &t)| now.saturating_duration_since(t) >= after)
            .map(|(&k, &t)| (t, k))
            .collect();
        v.sort();
        v.into_iter().take(max).map(|(_, k)| k).collect()
    }
}

/// Addresses banned for sending corrupt data, at most `cap` of them: the oldest ban is
/// forgotten first, so a flood of throw-away addresses cannot grow memory without bound.
#[derive(Debug)]
pub struct BanList {
    set: BTreeSet<SocketAddr>,
    order: VecDeque<SocketAddr>,
    cap: usize,
}

impl BanList {
    pub fn new(cap: usize) -> Self {
        BanList {
            set: BTreeSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub fn insert(&mut self, a: SocketAddr) {
        if !self.set.insert(a) {
            return;
        }
        self.order.push_back(a);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    pub fn contains(&self, a: &SocketAddr) -> bool {
        self.set.contains(a)
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_long_idle_peers_are_victims_oldest_first() {
        let t0 = Instant::now();
        let mut idle = IdlePeers::default();
        idle.observe(PeerKey(1), true, t0);
        idle.observe(PeerKey(2), true, t0 + Duration::from_secs(10));
        idle.observe(PeerKey(3), true, t0 + Duration::from_secs(50));
        // Observing again does not reset the clock.
        idle.observe(PeerKey(1), true, t0 + Duration::from_secs(55));
        let now = t0 + Duration::from_secs(70);
        let after = Duration::from_secs(60);
        assert_eq!(idle.victims(now, after, 10), vec![PeerKey(1), PeerKey(2)]);
        assert_eq!(idle.victims(now, after, 1), vec![PeerKey(1)]);
        // Interest resets; removal forgets.
        idle.observe(PeerKey(1), false, now);
        idle.remove(PeerKey(2));
        assert!(idle.victims(now, after, 10).is_empty());
    }

    #[test]
    fn ban_list_forgets_oldest_beyond_cap() {
        let mut b = BanList::new(3);
        let a = |i: u8| SocketAddr::from(([10, 0, 0, i], 6881));
        for i in 1..=5 {
            b.insert(a(i));
        }
        b.insert(a(5)); // already banned: no change
        assert_eq!(b.len(), 3);
        assert!(!b.contains(&a(1)) && !b.contains(&a(2)));
        assert!(b.contains(&a(3)) && b.contains(&a(5)));
    }
}
