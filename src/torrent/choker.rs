//! Choker: whom we upload to (BEP 3 "Choking and Optimistic Unchoking").
//!
//! BEP 3 practice, as a pure function of peer statistics and time:
//! - every [`ROUND`] (10 s) unchoke the best [`ChokerConfig::slots`] (4) *interested* peers:
//!   when leeching, those that upload fastest to us (tit-for-tat); when seeding, those we
//!   upload fastest to, except that a peer which has been unchoked for
//!   [`ChokerConfig::seed_rotation`] yields its slot to waiting peers (fair rotation, so
//!   every leecher gets served);
//! - one extra *optimistic* unchoke, rotated every [`OPTIMISTIC_ROUND`] (30 s), drawn from the
//!   other interested peers with newly connected peers three times as likely (they have no
//!   rate yet and need a first piece to trade);
//! - **peers with no piece first**: the optimistic draw is among peers that have no piece
//!   at all while there are any, and a seed serves such waiting peers before others. A
//!   peer with nothing can upload nothing; once it has a piece its whole uplink joins the
//!   swarm. In a flash crowd this is what the first seconds are made of (measured in
//!   docs/simulation.md). Only until we have sent it one quota (512 KiB): a peer that
//!   hides its pieces gets that head start once per connection, then waits like anyone;
//! - snubbed peers (no block for a long time) are not rewarded with a regular slot;
//! - **piece quota**: a peer that has received [`ChokerConfig::quota`] (512 KiB) since we
//!   unchoked it and sends us nothing (any peer, when we seed) yields its slot to waiting
//!   peers, like libtorrent's seeding piece quota. At the start of a flash crowd only a
//!   few peers have pieces and everyone else has nothing to trade; slots held for a 10 s
//!   round (or 4 s of seed rotation, half a 16 MiB file at 2 MB/s) keep the pieces with a
//!   few peers, while a quota spreads them so every peer soon has something to upload;
//! - **work conserving**: an unchoked peer that has requested nothing from us for
//!   [`WASTE_AFTER`] (the torrent task reports it as [`PeerStat::wasting`]) holds a slot
//!   another interested peer could use. Such peers rank after every other candidate for
//!   [`WASTE_MEMORY`], and the torrent task forces a round so the slot moves at once
//!   instead of at the next 10 s round. In a flash crowd most interested peers have
//!   already requested what we have from someone else: measured at 200 leechers, 4 of a
//!   leecher's 5 unchoked peers received nothing in a given half second while ~45
//!   interested peers waited (docs/simulation.md). A peer that wastes a slot while nobody
//!   else wants one keeps it: ranking last costs nothing then.
//!
//! Randomness comes from the injected RNG (including the order of peers with equal rates),
//! so the same inputs and seed give the same decisions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio::time::Instant;

use super::picker::PeerKey;

/// Regular unchoke interval.
pub const ROUND: Duration = Duration::from_secs(10);
/// Unchoke interval while seeding. Tit-for-tat needs 10 s of rate samples; a seed's round
/// robin does not, and in a flash crowd a seed that keeps 5 leechers for 30 s sends them the
/// whole file while the others wait with nothing to trade: rotate quickly instead, so the
/// seed's pieces spread over the crowd (libtorrent's round-robin seed choker with a piece
/// quota has the same aim).
pub const SEED_ROUND: Duration = Duration::from_secs(2);
/// Optimistic unchoke interval.
pub const OPTIMISTIC_ROUND: Duration = Duration::from_secs(30);
/// Bytes a peer that gives nothing back may receive per unchoke while others wait.
pub const QUOTA: u64 = 512 << 10;
/// An unchoked peer that received nothing from us for this long is wasting its slot. An
/// unchoke reaches the peer and its requests come back within one round trip; a second
/// covers slow links without leaving the uplink idle for long.
pub const WASTE_AFTER: Duration = Duration::from_secs(1);
/// A peer that wasted a slot ranks last for this long (so we do not unchoke it again next).
pub const WASTE_MEMORY: Duration = Duration::from_secs(10);

/// What the choker needs to know about one connected peer.
#[derive(Clone, Debug)]
pub struct PeerStat {
    pub key: PeerKey,
    /// The peer is interested in our pieces.
    pub interested: bool,
    /// Payload bytes/s the peer sends us.
    pub down_rate: u64,
    /// Payload bytes/s we send the peer.
    pub up_rate: u64,
    pub connected_at: Instant,
    /// The peer has not sent us a block for a long time although we asked.
    pub snubbed: bool,
    /// Unchoked, yet it has requested nothing from us for [`WASTE_AFTER`].
    pub wasting: bool,
    /// Payload bytes sent to it since we last unchoked it (0 while choked).
    pub sent_since_unchoke: u64,
    /// Pieces it has (as far as it told us): a peer with none has nothing to trade yet.
    pub pieces: u32,
    /// Payload bytes sent to it since it connected.
    pub sent_total: u64,
}

#[derive(Clone, Debug)]
pub struct ChokerConfig {
    /// Regular upload slots.
    pub slots: usize,
    /// A peer connected for less than this is "new" (3× optimistic weight).
    pub new_peer_age: Duration,
    /// Regular upload slots while seeding. A seed has no tit-for-tat to run and, in a
    /// flash crowd, is the source every piece starts from: more peers served at once
    /// (each within its quota) spread the first pieces over more of the crowd. 7 + the
    /// optimistic slot = 8, libtorrent's default `unchoke_slots_limit`; measured 0.725 →
    /// 0.752 efficiency at 50 leechers (docs/simulation.md).
    pub seed_slots: usize,
    /// Seeding: after this long unchoked, a peer goes to the back of the queue.
    pub seed_rotation: Duration,
    /// A peer that got this many bytes since its unchoke and gives nothing back (always,
    /// when we seed) goes to the back of the queue (see the module docs).
    pub quota: u64,
}

impl Default for ChokerConfig {
    fn default() -> Self {
        ChokerConfig {
            slots: 4,
            new_peer_age: Duration::from_secs(60),
            seed_slots: 7,
            seed_rotation: Duration::from_secs(4),
            quota: QUOTA,
        }
    }
}

/// The current decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unchoked {
    /// Every peer that should be unchoked (regular slots + optimistic).
    pub peers: BTreeSet<PeerKey>,
    pub optimistic: Option<PeerKey>,
}

/// Choker state for one torrent.
pub struct Choker {
    cfg: ChokerConfig,
    rng: StdRng,
    last_round: Option<Instant>,
    last_optimistic: Option<Instant>,
    current: Unchoked,
    /// Since when each currently unchoked peer has been unchoked.
    unchoked_since: BTreeMap<PeerKey, Instant>,
    /// Last round each connected peer was unchoked (seeding round robin).
    last_served: BTreeMap<PeerKey, Instant>,
    /// When each peer was last seen wasting a slot.
    wasted: BTreeMap<PeerKey, Instant>,
}

impl Choker {
    pub fn new(cfg: ChokerConfig, rng: StdRng) -> Self {
        Choker {
            cfg,
            rng,
            last_round: None,
            last_optimistic: None,
            current: Unchoked::default(),
            unchoked_since: BTreeMap::new(),
            last_served: BTreeMap::new(),
            wasted: BTreeMap::new(),
        }
    }

    /// Has a peer that received `sent` bytes since its unchoke, and sends us `down_rate`,
    /// had its quota (see the module docs)? When we seed, every peer gives nothing back.
    pub fn had_quota(&self, sent: u64, down_rate: u64, seeding: bool) -> bool {
        (seeding || down_rate == 0) && sent >= self.cfg.quota
    }

    /// See [`ChokerConfig::quota`].
    pub fn quota(&self) -> u64 {
        self.cfg.quota
    }

    /// A peer with no piece that has not yet had a quota's worth from us: it goes first
    /// (see the module docs). Once it had that much it is an ordinary peer, so one that
    /// hides its pieces cannot come back to the front.
    fn starter(&self, p: &PeerStat) -> bool {
        p.pieces == 0 && p.sent_total < self.cfg.quota
    }

    /// The last decision.
    pub fn current(&self) -> &Unchoked {
        &self.current
    }

    /// Forces a round at the next `tick` (e.g. an unchoked peer left or lost interest).
    pub fn force_round(&mut self) {
        self.last_round = None;
    }

    /// Runs a round if one is due; returns the new decision when it ran. `seeding` selects
    /// the upload-rate ranking.
    pub fn tick(&mut self, now: Instant, peers: &[PeerStat], seeding: bool) -> Option<&Unchoked> {
        let interval = if seeding { SEED_ROUND } else { ROUND };
        if self
            .last_round
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return None;
        }
        self.last_round = Some(now);
        self.round(now, peers, seeding);
        Some(&self.current)
    }

    fn round(&mut self, now: Instant, peers: &[PeerStat], seeding: bool) {
        for p in peers.iter().filter(|p| p.wasting) {
            self.wasted.insert(p.key, now);
        }
        self.wasted
            .retain(|_, t| now.saturating_duration_since(*t) < WASTE_MEMORY);
        let wasted = |p: &PeerStat| self.wasted.contains_key(&p.key);
        let mut cands: Vec<&PeerStat> = peers
            .iter()
            .filter(|p| p.interested && !p.snubbed)
            .collect();
        // Equal rates (typically all zero in a fresh swarm) are ordered at random, drawn in
        // key order from the seeded RNG, so ties do not always favour the same peers.
        cands.sort_by_key(|p| p.key);
        let tie: BTreeMap<PeerKey, u64> =
            cands.iter().map(|p| (p.key, self.rng.random())).collect();
        let rotate = self.cfg.seed_rotation;
        let quota = self.cfg.quota;
        let served_long = |p: &PeerStat| {
            p.sent_since_unchoke >= quota
                || self
                    .unchoked_since
                    .get(&p.key)
                    .is_some_and(|&t| now.saturating_duration_since(t) >= rotate)
        };
        if seeding {
            // Round robin: peers being served keep their slot (fastest first) until they
            // have had `seed_rotation`; then those who waited longest; the long-served last.
            let class = |p: &PeerStat| {
                if served_long(p) {
                    2
                } else if self.unchoked_since.contains_key(&p.key) {
                    0
                } else {
                    1
                }
            };
            let served = |p: &PeerStat| self.last_served.get(&p.key).copied();
            cands.sort_by(|a, b| {
                let (ca, cb) = (class(a), class(b));
                wasted(a)
                    .cmp(&wasted(b))
                    .then(ca.cmp(&cb))
                    .then_with(|| {
                        if ca == 1 {
                            // Waiting peers with no piece first: each one served becomes
                            // an uploader (see `Choker` docs), then who waited longest.
                            self.starter(b)
                                .cmp(&self.starter(a))
                                .then(served(a).cmp(&served(b)))
                        } else {
                            std::cmp::Ordering::Equal
                        }
                    })
                    .then(b.up_rate.cmp(&a.up_rate))
                    .then(tie[&a.key].cmp(&tie[&b.key]))
                    .then(a.key.cmp(&b.key))
            });
        } else {
            // A peer that gives nothing back and had its quota waits behind the others.
            let had_quota = |p: &PeerStat| self.had_quota(p.sent_since_unchoke, p.down_rate, false);
            cands.sort_by(|a, b| {
                wasted(a)
                    .cmp(&wasted(b))
                    .then(had_quota(a).cmp(&had_quota(b)))
                    .then(b.down_rate.cmp(&a.down_rate))
                    .then(tie[&a.key].cmp(&tie[&b.key]))
                    .then(a.key.cmp(&b.key))
            });
        }
        let slots = if seeding {
            self.cfg.seed_slots
        } else {
            self.cfg.slots
        };
        let regular: BTreeSet<PeerKey> = cands.iter().take(slots).map(|p| p.key).collect();

        // Keep the optimistic peer until its 30 s are up, unless it left, lost interest,
        // wastes the slot or earned a regular slot.
        let mut optimistic = self.current.optimistic.filter(|k| {
            !regular.contains(k)
                && peers.iter().any(|p| {
                    p.key == *k
                        && p.interested
                        && !p.wasting
                        && !self.had_quota(p.sent_since_unchoke, p.down_rate, false)
                })
        });
        let due = self
            .last_optimistic
            .is_none_or(|t| now.saturating_duration_since(t) >= OPTIMISTIC_ROUND);
        if optimistic.is_none() || due {
            let eligible = |p: &&PeerStat| {
                p.interested && !regular.contains(&p.key) && Some(p.key) != optimistic
            };
            // Peers that recently wasted a slot only when nobody else is waiting; peers
            // with no piece before the others (see the module docs).
            let fresh = peers.iter().filter(eligible).any(|p| !wasted(p));
            let empty = peers
                .iter()
                .filter(eligible)
                .any(|p| self.starter(p) && (!fresh || !wasted(p)));
            let pool: Vec<(PeerKey, u32)> = peers
                .iter()
                .filter(eligible)
                .filter(|p| !fresh || !wasted(p))
                .filter(|p| !empty || self.starter(p))
                .map(|p| {
                    let new = now.saturating_duration_since(p.connected_at) < self.cfg.new_peer_age;
                    (p.key, if new { 3 } else { 1 })
                })
                .collect();
            let total: u32 = pool.iter().map(|(_, w)| w).sum();
            if total > 0 {
                let mut x = self.rng.random_range(0..total);
                for (k, w) in pool {
                    if x < w {
                        optimistic = Some(k);
                        break;
                    }
                    x -= w;
                }
                self.last_optimistic = Some(now);
            } else if optimistic.is_some() && due {
                // Nobody else to rotate to: keep it.
                self.last_optimistic = Some(now);
            }
        }
        let mut all = regular;
        if let Some(o) = optimistic {
            all.insert(o);
        }
        self.unchoked_since.retain(|k, _| all.contains(k));
        for k in &all {
            self.unchoked_since.entry(*k).or_insert(now);
            self.last_served.insert(*k, now);
        }
        // Bounded by the connected peers.
        let connected: BTreeSet<PeerKey> = peers.iter().map(|p| p.key).collect();
        self.last_served.retain(|k, _| connected.contains(k));
        self.current = Unchoked {
            peers: all,
            optimistic,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn stat(k: u64, down: u64, up: u64, at: Instant) -> PeerStat {
        PeerStat {
            key: PeerKey(k),
            interested: true,
            down_rate: down,
            up_rate: up,
            connected_at: at,
            snubbed: false,
            wasting: false,
            sent_since_unchoke: 0,
            pieces: 0,
            sent_total: 0,
        }
    }

    /// The regular (non-optimistic) unchokes of a decision.
    fn regular(d: &Unchoked) -> BTreeSet<PeerKey> {
        d.peers
            .iter()
            .filter(|k| Some(**k) != d.optimistic)
            .copied()
            .collect()
    }

    fn keys(v: &[u64]) -> BTreeSet<PeerKey> {
        v.iter().map(|&k| PeerKey(k)).collect()
    }

    #[test]
    fn leeching_unchokes_best_four_uploaders_plus_optimistic() {
        let t0 = Instant::now();
        let mut c = Choker::new(ChokerConfig::default(), StdRng::seed_from_u64(1));
        let mut peers: Vec<PeerStat> = (1..=8).map(|k| stat(k, k * 100, 0, t0)).collect();
        peers[7].interested = false; // the fastest is not interested
        peers[6].snubbed = true;
        let d = c.tick(t0, &peers, false).unwrap().clone();
        let regular = regular(&d);
        assert_eq!(regular, keys(&[3, 4, 5, 6]));
        let o = d.optimistic.unwrap();
        assert!(keys(&[1, 2, 7]).contains(&o), "{o:?}");
        assert_eq!(d.peers.len(), 5);
        // Not due yet.
        assert!(c.tick(t0 + Duration::from_secs(5), &peers, false).is_none());
        // Rates change: the next round follows them, optimistic kept (30 s not up).
        peers[0].down_rate = 10_000;
        let d2 = c.tick(t0 + ROUND, &peers, false).unwrap().clone();
        assert!(d2.peers.contains(&PeerKey(1)));
        if o != PeerKey(1) {
            assert_eq!(d2.optimistic, Some(o));
        }
    }

    #[test]
    fn optimistic_rotates_and_prefers_new_peers() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(600);
        let mut counts: BTreeMap<PeerKey, u32> = BTreeMap::new();
        let cfg = ChokerConfig {
            slots: 0,
            ..Default::default()
        };
        let mut c = Choker::new(cfg, StdRng::seed_from_u64(5));
        // Peers 1, 3, 4 connected long ago, peer 2 is always new.
        let peers = vec![
            stat(1, 0, 0, t0),
            stat(2, 0, 0, later),
            stat(3, 0, 0, t0),
            stat(4, 0, 0, t0),
        ];
        let mut changes = 0;
        let mut last = None;
        for r in 0..400u32 {
            let now = later + OPTIMISTIC_ROUND * r;
            let mut ps = peers.clone();
            ps[1].connected_at = now; // stays "new"
            let d = c.tick(now, &ps, false).unwrap();
            let o = d.optimistic.unwrap();
            *counts.entry(o).or_default() += 1;
            if last.is_some_and(|l| l != o) {
                changes += 1;
            }
            last = Some(o);
        }
        assert!(changes > 10, "optimistic never rotates");
        let old = [1, 3, 4]
            .iter()
            .map(|&k| counts[&PeerKey(k)])
            .max()
            .unwrap();
        let new = counts[&PeerKey(2)];
        // The current optimistic is excluded from the draw, so rotation is forced;
        // still, the new peer is favoured overall.
        assert!(new > old, "new {new} old {old}");
    }

    #[test]
    fn peers_with_no_piece_come_first() {
        let t0 = Instant::now();
        // Peers 1..=6 have pieces, 7 and 8 none; peer 1 uploads to us.
        let mut peers: Vec<PeerStat> = (1..=8).map(|k| stat(k, 0, 0, t0)).collect();
        for p in peers.iter_mut().take(6) {
            p.pieces = 5;
        }
        peers[0].down_rate = 1000;
        // Leeching: tit-for-tat keeps the regular slot; the optimistic one goes to a peer
        // with nothing, whatever the draw.
        let cfg = ChokerConfig {
            slots: 1,
            ..Default::default()
        };
        for seed in 0..20 {
            let mut c = Choker::new(cfg.clone(), StdRng::seed_from_u64(seed));
            let d = c.tick(t0, &peers, false).unwrap();
            assert_eq!(regular(d), keys(&[1]));
            let o = d.optimistic.unwrap();
            assert!(o == PeerKey(7) || o == PeerKey(8), "{o:?}");
        }
        // Once they have a piece, the draw is among everyone again.
        peers[6].pieces = 1;
        peers[7].pieces = 1;
        let drawn: BTreeSet<PeerKey> = (0..40)
            .filter_map(|seed| {
                let mut c = Choker::new(cfg.clone(), StdRng::seed_from_u64(seed));
                c.tick(t0, &peers, false).unwrap().optimistic
            })
            .collect();
        assert!(drawn.len() > 3, "{drawn:?}");
        // Seeding: waiting peers with nothing are served first.
        peers[6].pieces = 0;
        peers[7].pieces = 0;
        let cfg = ChokerConfig {
            seed_slots: 2,
            ..Default::default()
        };
        let mut c = Choker::new(cfg.clone(), StdRng::seed_from_u64(1));
        let d = c.tick(t0, &peers, true).unwrap();
        assert_eq!(regular(d), keys(&[7, 8]));
        // ... but only until they had a quota from us: one that hides its pieces does not
        // come back to the front.
        peers[6].sent_total = QUOTA;
        let mut c = Choker::new(cfg, StdRng::seed_from_u64(1));
        let d = c.tick(t0, &peers, true).unwrap();
        assert!(regular(d).contains(&PeerKey(8)));
        assert!(!regular(d).contains(&PeerKey(7)));
    }

    #[test]
    fn seeding_rotates_slots_fairly() {
        let t0 = Instant::now();
        let cfg = ChokerConfig {
            slots: 2,
            seed_slots: 2,
            ..Default::default()
        };
        let mut c = Choker::new(cfg, StdRng::seed_from_u64(9));
        let peers: Vec<PeerStat> = (1..=6).map(|k| stat(k, 0, 1000 * k, t0)).collect();
        let mut served = BTreeSet::new();
        for r in 0..12u32 {
            let d = c.tick(t0 + ROUND * r, &peers, true).unwrap();
            let regular: Vec<_> = regular(d).into_iter().collect();
            assert_eq!(regular.len(), 2);
            served.extend(regular);
        }
        assert_eq!(
            served,
            keys(&[1, 2, 3, 4, 5, 6]),
            "every leecher gets a regular slot"
        );
        // Determinism.
        let mut c2 = Choker::new(
            ChokerConfig {
                slots: 2,
                seed_slots: 2,
                ..Default::default()
            },
            StdRng::seed_from_u64(9),
        );
        let mut c3 = Choker::new(
            ChokerConfig {
                slots: 2,
                seed_slots: 2,
                ..Default::default()
            },
            StdRng::seed_from_u64(9),
        );
        for r in 0..5u32 {
            let a = c2.tick(t0 + ROUND * r, &peers, true).cloned();
            let b = c3.tick(t0 + ROUND * r, &peers, true).cloned();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn equal_rates_are_not_always_won_by_the_same_peers() {
        let old = Instant::now();
        let t0 = old + Duration::from_secs(600);
        let peers: Vec<PeerStat> = (1..=20).map(|k| stat(k, 0, 0, old)).collect();
        let mut winners = BTreeSet::new();
        for seed in 0..10 {
            let mut c = Choker::new(ChokerConfig::default(), StdRng::seed_from_u64(seed));
            let d = c.tick(t0, &peers, false).unwrap();
            winners.extend(d.peers.iter().copied());
        }
        assert!(winners.len() > 10, "{winners:?}");
    }

    #[test]
    fn seeding_refills_slots_when_served_peers_leave() {
        let t0 = Instant::now();
        let mut c = Choker::new(ChokerConfig::default(), StdRng::seed_from_u64(3));
        let mut peers: Vec<PeerStat> = (1..=30).map(|k| stat(k, 0, 0, t0)).collect();
        let first = c.tick(t0, &peers, true).unwrap().peers.clone();
        assert_eq!(first.len(), ChokerConfig::default().seed_slots + 1);
        // The served peers complete and disconnect; the others wait.
        peers.retain(|p| !first.contains(&p.key));
        let t1 = t0 + Duration::from_secs(9);
        c.force_round();
        let second = c.tick(t1, &peers, true).unwrap().peers.clone();
        assert_eq!(second.len(), first.len(), "{second:?}");
        assert!(second.is_disjoint(&first));
    }

    #[test]
    fn a_slot_that_is_wasted_moves_to_a_waiting_peer() {
        let old = Instant::now();
        let t0 = old + Duration::from_secs(600);
        let cfg = ChokerConfig {
            slots: 2,
            ..Default::default()
        };
        let mut c = Choker::new(cfg, StdRng::seed_from_u64(4));
        // Peers 5 and 6 upload to us fastest and get the regular slots.
        let mut peers: Vec<PeerStat> = (1..=6).map(|k| stat(k, k * 10, 0, old)).collect();
        peers[4].down_rate = 1000;
        peers[5].down_rate = 900;
        let d = c.tick(t0, &peers, false).unwrap().clone();
        assert!(d.peers.contains(&PeerKey(5)) && d.peers.contains(&PeerKey(6)));
        // Peer 5 requests nothing for a second: the forced round gives its slot to the
        // next best waiting peer, although 5 still uploads to us fastest.
        peers[4].wasting = true;
        c.force_round();
        let t1 = t0 + WASTE_AFTER;
        let d = c.tick(t1, &peers, false).unwrap().clone();
        let regular = regular(&d);
        assert_eq!(regular, keys(&[4, 6]), "{d:?}");
        // It stays behind others for WASTE_MEMORY, then competes on its rate again.
        peers[4].wasting = false;
        c.force_round();
        let d = c.tick(t1 + Duration::from_secs(1), &peers, false).unwrap();
        assert!(!d.peers.contains(&PeerKey(5)) || d.optimistic == Some(PeerKey(5)));
        c.force_round();
        let d = c.tick(t1 + WASTE_MEMORY, &peers, false).unwrap();
        assert!(d.peers.contains(&PeerKey(5)));
        // With nobody else interested, a wasting peer keeps its slot (it costs nothing).
        let mut lone = vec![stat(1, 0, 0, old)];
        lone[0].wasting = true;
        let mut c = Choker::new(ChokerConfig::default(), StdRng::seed_from_u64(4));
        assert!(c
            .tick(t0, &lone, false)
            .unwrap()
            .peers
            .contains(&PeerKey(1)));
    }

    #[test]
    fn a_peer_that_had_its_quota_and_gives_nothing_back_yields() {
        let old = Instant::now();
        let t0 = old + Duration::from_secs(600);
        let cfg = ChokerConfig {
            slots: 1,
            ..Default::default()
        };
        let mut c = Choker::new(cfg.clone(), StdRng::seed_from_u64(8));
        // Nobody uploads to us yet (a flash crowd's first seconds).
        let mut peers: Vec<PeerStat> = (1..=3).map(|k| stat(k, 0, 0, old)).collect();
        let first = c.tick(t0, &peers, false).unwrap().clone();
        let mut served = first.peers.clone();
        // Whoever was unchoked got its quota: next round goes to the others.
        for p in peers.iter_mut() {
            if first.peers.contains(&p.key) {
                p.sent_since_unchoke = cfg.quota;
            }
        }
        c.force_round();
        let second = c
            .tick(t0 + Duration::from_secs(1), &peers, false)
            .unwrap()
            .clone();
        let regular: Vec<_> = regular(&second).into_iter().collect();
        assert_eq!(regular.len(), 1);
        assert!(!first.peers.contains(&regular[0]), "{first:?} {second:?}");
        served.extend(second.peers.iter().copied());
        assert_eq!(
            served,
            keys(&[1, 2, 3]),
            "every peer got something to trade"
        );
        // A peer that uploads to us keeps its slot whatever it received (tit-for-tat).
        let mut c = Choker::new(cfg.clone(), StdRng::seed_from_u64(8));
        let mut peers: Vec<PeerStat> = (1..=3).map(|k| stat(k, 0, 0, old)).collect();
        peers[0].down_rate = 500;
        peers[0].sent_since_unchoke = 10 * cfg.quota;
        let d = c.tick(t0, &peers, false).unwrap();
        assert!(d.peers.contains(&PeerKey(1)) && d.optimistic != Some(PeerKey(1)));
    }
}
