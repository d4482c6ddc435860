//! Which connected peers are useless, and a bounded ban list.
//!
//! BEP 3 leaves connection management to the client; common practice (libtorrent's
//! "inactivity" disconnects) is to drop a peer when neither side has been interested for a
//! while and the connection slot could serve someone else. [`IdlePeers`] tracks since when
//! each peer has been mutually uninterested and names the ones to drop, longest idle first.
//! Pure state, no I/O: the swarm core feeds it on its tick.

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

/// What [`eviction_victim`] needs to know about one connected peer.
#[derive(Clone, Copy, Debug)]
pub struct EvictStat {
    pub key: PeerKey,
    pub connected_at: Instant,
    /// We want pieces the peer has.
    pub am_interested: bool,
    /// The peer wants pieces we have.
    pub peer_interested: bool,
    /// The peer is a seed (has every piece).
    pub is_seed: bool,
}

/// A peer connected for less than this is never evicted: a newcomer must get the chance
/// to exchange bitfields and interest, and two crowds of newcomers cannot keep evicting
/// each other (the churn guard).
pub const EVICT_MIN_AGE: Duration = Duration::from_secs(20);
/// At most one eviction per this interval (bounds the churn a flood of connects can cause).
pub const EVICT_INTERVAL: Duration = Duration::from_secs(1);

/// At the connection limit a new incoming peer arrives: which connected peer, if any, is
/// useless enough to make room for it (libtorrent does the same for incoming connections
/// when its peer list is full). `seeding`: we have every piece.
///
/// Useless means, when seeding, a peer that wants nothing from us (not interested, or a
/// seed itself); when leeching, a peer where neither side is interested. Only peers older
/// than [`EVICT_MIN_AGE`] qualify and the oldest goes first (ties by key, deterministic);
/// the caller also allows at most one eviction per [`EVICT_INTERVAL`] (`last_eviction`).
pub fn eviction_victim(
    peers: &[EvictStat],
    seeding: bool,
    now: Instant,
    last_eviction: Option<Instant>,
) -> Option<PeerKey> {
    if last_eviction.is_some_and(|t| now.saturating_duration_since(t) < EVICT_INTERVAL) {
        return None;
    }
    peers
        .iter()
        .filter(|p| now.saturating_duration_since(p.connected_at) >= EVICT_MIN_AGE)
        .filter(|p| {
            if seeding {
                !p.peer_interested || p.is_seed
            } else {
                !p.am_interested && !p.peer_interested
            }
        })
        .min_by_key(|p| (p.connected_at, p.key))
        .map(|p| p.key)
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

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.set.len()
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
    fn eviction_picks_the_oldest_useless_peer_and_is_rate_limited() {
        let t0 = Instant::now();
        let st = |k: u64, age_s: u64, am: bool, peer: bool| EvictStat {
            key: PeerKey(k),
            connected_at: t0 + Duration::from_secs(100 - age_s),
            am_interested: am,
            peer_interested: peer,
            is_seed: false,
        };
        let now = t0 + Duration::from_secs(100);
        let peers = [
            st(1, 50, false, true),  // wants our pieces
            st(2, 30, true, false),  // we want its pieces
            st(3, 40, false, false), // mutual uninterest
            st(4, 5, false, false),  // useless but too new
        ];
        // Leeching: only mutual uninterest counts, and not for a newcomer.
        assert_eq!(eviction_victim(&peers, false, now, None), Some(PeerKey(3)));
        // Seeding: not interested in us is enough; the oldest such peer goes first.
        assert_eq!(eviction_victim(&peers, true, now, None), Some(PeerKey(3)));
        let mut seed = st(5, 60, false, false);
        seed.is_seed = true;
        seed.peer_interested = true;
        let mut with_seed = peers.to_vec();
        with_seed.push(seed);
        assert_eq!(
            eviction_victim(&with_seed, true, now, None),
            Some(PeerKey(5))
        );
        // Churn guard: one eviction per interval.
        let recent = Some(now - Duration::from_millis(500));
        assert_eq!(eviction_victim(&peers, false, now, recent), None);
        let old = Some(now - EVICT_INTERVAL);
        assert_eq!(eviction_victim(&peers, false, now, old), Some(PeerKey(3)));
        // Nobody useless: refuse the newcomer.
        assert_eq!(eviction_victim(&peers[..2], false, now, None), None);
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
