//! The tracker server's state as pure data: per-torrent swarms with expiry, caps with LRU
//! eviction, an optional allow-list, and a per-IP token-bucket rate limit. No sockets, no clock
//! of its own: every call takes `now`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::Duration;

use lru::LruCache;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::{Event, ScrapeStats};
use crate::id::Id20;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Announce interval handed to clients; peers expire after two of them.
    pub interval: Duration,
    /// Most torrents tracked; the least recently announced one is evicted beyond it.
    pub max_torrents: usize,
    /// Most peers per torrent and family; the least recently seen is evicted beyond it.
    pub max_peers_per_torrent: usize,
    /// Peers returned when the client does not say.
    pub default_numwant: usize,
    /// Cap on `numwant`.
    pub max_numwant: usize,
    /// Announces+scrapes per second allowed per source IP (0 = unlimited), and the burst.
    pub per_ip_rate: f64,
    pub per_ip_burst: f64,
    /// Most source IPs the rate limiter remembers (LRU).
    pub max_tracked_ips: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            interval: Duration::from_secs(1800),
            max_torrents: 100_000,
            max_peers_per_torrent: 5_000,
            default_numwant: 50,
            max_numwant: 200,
            per_ip_rate: 20.0,
            per_ip_burst: 200.0,
            max_tracked_ips: 65_536,
        }
    }
}

#[derive(Clone, Debug)]
struct Peer {
    addr: SocketAddr,
    id: Id20,
    seeder: bool,
    last: Instant,
}

/// The peers of one torrent and one address family.
///
/// Peers sit in a contiguous `Vec` (an announce reply is one or two contiguous slices of it:
/// no pointer chasing), found by address through `index`. Recency is kept in `log`, an
/// append-only queue of (address, time) written on every announce: the oldest live peer is
/// at its front once entries made stale by a later announce of the same peer are skipped, so
/// expiry and LRU eviction are amortised O(1). The log is compacted when it grows past twice
/// the peer count, which bounds it by the peer cap.
struct Family {
    peers: Vec<Peer>,
    /// The peers' compact forms (BEP 23 / BEP 15: IP then port, 6 or 18 bytes each), in the
    /// same order as `peers`: a reply is a copy of contiguous bytes, not a walk over `Peer`s.
    compact: Vec<u8>,
    index: HashMap<SocketAddr, u32>,
    log: VecDeque<(SocketAddr, Instant)>,
    cap: usize,
}

impl Family {
    fn new(cap: usize) -> Self {
        Family {
            peers: Vec::new(),
            compact: Vec::new(),
            index: HashMap::new(),
            log: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    fn len(&self) -> usize {
        self.peers.len()
    }

    fn remove(&mut self, addr: &SocketAddr) -> Option<Peer> {
        let i = self.index.remove(addr)? as usize;
        let p = self.peers.swap_remove(i);
        // The same swap-remove on the compact bytes.
        let w = compact_len(addr);
        let last = self.peers.len();
        if i != last {
            self.compact.copy_within(last * w..(last + 1) * w, i * w);
        }
        self.compact.truncate(last * w);
        if let Some(moved) = self.peers.get(i) {
            self.index.insert(moved.addr, i as u32);
        }
        Some(p)
    }

    /// Inserts or refreshes a peer; returns the replaced entry (same address) or the least
    /// recently seen peer evicted to stay under the cap.
    fn upsert(&mut self, p: Peer) -> Option<Peer> {
        let (addr, last) = (p.addr, p.last);
        let out = if let Some(&i) = self.index.get(&addr) {
            self.peers
                .get_mut(i as usize)
                .map(|slot| std::mem::replace(slot, p))
        } else {
            let evicted = if self.peers.len() >= self.cap {
                self.pop_oldest()
            } else {
                None
            };
            self.index.insert(addr, self.peers.len() as u32);
            self.peers.push(p);
            push_compact(&addr, &mut self.compact);
            evicted
        };
        self.log.push_back((addr, last));
        if self.log.len() > 2 * self.peers.len() + 16 {
            self.compact();
        }
        out
    }

    /// Whether a log entry still describes its peer's latest announce.
    fn live(&self, addr: &SocketAddr, t: Instant) -> bool {
        self.index
            .get(addr)
            .and_then(|&i| self.peers.get(i as usize))
            .is_some_and(|p| p.last == t)
    }

    /// Drops stale log entries at the front; returns the oldest live one.
    fn oldest(&mut self) -> Option<(SocketAddr, Instant)> {
        while let Some(&(a, t)) = self.log.front() {
            if self.live(&a, t) {
                return Some((a, t));
            }
            self.log.pop_front();
        }
        None
    }

    fn pop_oldest(&mut self) -> Option<Peer> {
        let (a, _) = self.oldest()?;
        self.log.pop_front();
        self.remove(&a)
    }

    /// Removes every peer last seen before `deadline`, calling `gone` for each.
    fn expire(&mut self, deadline: Instant, mut gone: impl FnMut(&Peer)) {
        // The log is in time order, so a front entry at or after the deadline means nothing
        // has expired: the common case costs one comparison, no lookup.
        while let Some(&(a, t)) = self.log.front() {
            if t >= deadline {
                break;
            }
            self.log.pop_front();
            if self.live(&a, t) {
                if let Some(p) = self.remove(&a) {
                    gone(&p);
                }
            }
        }
    }

    /// Rebuilds the log from the peers, oldest first (one entry per peer).
    fn compact(&mut self) {
        let mut v: Vec<(SocketAddr, Instant)> =
            self.peers.iter().map(|p| (p.addr, p.last)).collect();
        v.sort_by_key(|&(_, t)| t);
        self.log = v.into();
    }
}

/// Bytes of a peer's compact form: 6 for IPv4, 18 for IPv6.
fn compact_len(a: &SocketAddr) -> usize {
    if a.is_ipv6() {
        18
    } else {
        6
    }
}

fn compact_of(a: &SocketAddr) -> ([u8; 18], usize) {
    let mut b = [0u8; 18];
    let n = match a {
        SocketAddr::V4(a) => {
            b[..4].copy_from_slice(&a.ip().octets());
            4
        }
        SocketAddr::V6(a) => {
            b[..16].copy_from_slice(&a.ip().octets());
            16
        }
    };
    b[n..n + 2].copy_from_slice(&a.port().to_be_bytes());
    (b, n + 2)
}

/// Appends up to `want` entries of width `W` from `compact`, starting at entry `start` and
/// wrapping, skipping the announcer's own entry (`own[..W]`).
fn pick_compact<const W: usize>(
    compact: &[u8],
    own: &[u8; 18],
    start: usize,
    want: usize,
    out: &mut Vec<u8>,
) {
    let mut me = [0u8; W];
    me.copy_from_slice(&own[..W]);
    let (tail, head) = compact.split_at((start * W).min(compact.len()));
    let mut given = 0;
    for c in head.chunks_exact(W).chain(tail.chunks_exact(W)) {
        if given >= want {
            break;
        }
        let mut e = [0u8; W];
        e.copy_from_slice(c);
        if e != me {
            out.extend_from_slice(&e);
            given += 1;
        }
    }
}

fn push_compact(a: &SocketAddr, out: &mut Vec<u8>) {
    let (b, n) = compact_of(a);
    out.extend_from_slice(&b[..n]);
}

struct Swarm {
    v4: Family,
    v6: Family,
    seeders: u32,
    leechers: u32,
    downloaded: u32,
}

impl Swarm {
    fn new(cap: usize) -> Self {
        Swarm {
            v4: Family::new(cap),
            v6: Family::new(cap),
            seeders: 0,
            leechers: 0,
            downloaded: 0,
        }
    }

    fn family(&mut self, v6: bool) -> &mut Family {
        if v6 {
            &mut self.v6
        } else {
            &mut self.v4
        }
    }

    fn forget(&mut self, p: &Peer) {
        forget(&mut self.seeders, &mut self.leechers, p);
    }

    fn count(&mut self, p: &Peer) {
        if p.seeder {
            self.seeders += 1;
        } else {
            self.leechers += 1;
        }
    }

    /// Drops peers not seen since `deadline`.
    fn expire(&mut self, deadline: Instant) {
        let (s, l) = (&mut self.seeders, &mut self.leechers);
        self.v4.expire(deadline, |p| forget(s, l, p));
        self.v6.expire(deadline, |p| forget(s, l, p));
    }

    fn stats(&self) -> ScrapeStats {
        ScrapeStats {
            complete: self.seeders,
            downloaded: self.downloaded,
            incomplete: self.leechers,
        }
    }

    fn is_empty(&self) -> bool {
        self.v4.len() == 0 && self.v6.len() == 0
    }
}

fn forget(seeders: &mut u32, leechers: &mut u32, p: &Peer) {
    if p.seeder {
        *seeders = seeders.saturating_sub(1);
    } else {
        *leechers = leechers.saturating_sub(1);
    }
}

/// Why an announce was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("torrent not on this tracker's allow-list")]
    NotAllowed,
    #[error("too many requests, slow down")]
    RateLimited,
}

/// What an accepted announce gets back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub peers: Vec<(SocketAddr, Id20)>,
    pub complete: u32,
    pub incomplete: u32,
}

pub struct PeerStore {
    cfg: StoreConfig,
    swarms: LruCache<Id20, Swarm>,
    allow: Option<BTreeSet<Id20>>,
    limiter: LruCache<IpAddr, (f64, Instant)>,
    rng: StdRng,
}

impl PeerStore {
    pub fn new(cfg: StoreConfig, allow: Option<BTreeSet<Id20>>, seed: u64) -> Self {
        let one = NonZeroUsize::MIN;
        PeerStore {
            swarms: LruCache::new(NonZeroUsize::new(cfg.max_torrents).unwrap_or(one)),
            limiter: LruCache::new(NonZeroUsize::new(cfg.max_tracked_ips).unwrap_or(one)),
            cfg,
            allow,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn interval_secs(&self) -> u32 {
        u32::try_from(self.cfg.interval.as_secs()).unwrap_or(u32::MAX)
    }

    /// Token bucket per source IP; true when this request may proceed.
    pub fn rate_ok(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.cfg.per_ip_rate <= 0.0 {
            return true;
        }
        let (rate, burst) = (self.cfg.per_ip_rate, self.cfg.per_ip_burst.max(1.0));
        let (tokens, last) = self.limiter.get(&ip).copied().unwrap_or((burst, now));
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * rate).min(burst);
        let ok = tokens >= 1.0;
        self.limiter
            .put(ip, (if ok { tokens - 1.0 } else { tokens }, now));
        ok
    }

    pub fn allowed(&self, h: &Id20) -> bool {
        self.allow.as_ref().is_none_or(|a| a.contains(h))
    }

    /// Records an announce from `addr` (the source IP with the announced port) and picks up to
    /// `numwant` other peers of the same address family at random.
    #[allow(clippy::too_many_arguments)]
    pub fn announce(
        &mut self,
        now: Instant,
        info_hash: Id20,
        addr: SocketAddr,
        peer_id: Id20,
        left: u64,
        event: Event,
        numwant: Option<usize>,
    ) -> Result<Outcome, Refusal> {
        let mut peers = Vec::new();
        let (complete, incomplete) = self.announce_with(
            now,
            info_hash,
            addr,
            peer_id,
            left,
            event,
            numwant,
            |a, id| peers.push((a, id)),
        )?;
        Ok(Outcome {
            peers,
            complete,
            incomplete,
        })
    }

    /// [`Self::announce`] without allocating: each picked peer goes to `sink`; returns
    /// (seeders, leechers).
    #[allow(clippy::too_many_arguments)]
    pub fn announce_with(
        &mut self,
        now: Instant,
        info_hash: Id20,
        addr: SocketAddr,
        peer_id: Id20,
        left: u64,
        event: Event,
        numwant: Option<usize>,
        mut sink: impl FnMut(SocketAddr, Id20),
    ) -> Result<(u32, u32), Refusal> {
        let pick = |f: &Family, start: usize, want: usize| {
            let (tail, head) = f.peers.split_at(start);
            let mut given = 0;
            for p in head.iter().chain(tail) {
                if given >= want {
                    break;
                }
                if p.addr != addr {
                    sink(p.addr, p.id);
                    given += 1;
                }
            }
        };
        self.announce_core(now, info_hash, addr, peer_id, left, event, numwant, pick)
    }

    /// [`Self::announce`] appending the picked peers' compact forms (BEP 15 / BEP 23: 6 bytes
    /// per IPv4 peer, 18 per IPv6) to `out`: the UDP server's hot path, a copy of contiguous
    /// bytes. Returns (seeders, leechers).
    #[allow(clippy::too_many_arguments)]
    pub fn announce_compact(
        &mut self,
        now: Instant,
        info_hash: Id20,
        addr: SocketAddr,
        peer_id: Id20,
        left: u64,
        event: Event,
        numwant: Option<usize>,
        out: &mut Vec<u8>,
    ) -> Result<(u32, u32), Refusal> {
        let (own, w) = compact_of(&addr);
        let pick = |f: &Family, start: usize, want: usize| {
            // Fixed widths, so the compare and the copy of each entry are inlined.
            if w == 6 {
                pick_compact::<6>(&f.compact, &own, start, want, out);
            } else {
                pick_compact::<18>(&f.compact, &own, start, want, out);
            }
        };
        self.announce_core(now, info_hash, addr, peer_id, left, event, numwant, pick)
    }

    /// Records the announce, then lets `pick` take up to `want` peers from the family's list
    /// starting at a random index (wrapping).
    #[allow(clippy::too_many_arguments)]
    fn announce_core(
        &mut self,
        now: Instant,
        info_hash: Id20,
        addr: SocketAddr,
        peer_id: Id20,
        left: u64,
        event: Event,
        numwant: Option<usize>,
        pick: impl FnOnce(&Family, usize, usize),
    ) -> Result<(u32, u32), Refusal> {
        if !self.allowed(&info_hash) {
            return Err(Refusal::NotAllowed);
        }
        let cap = self.cfg.max_peers_per_torrent;
        let deadline = now.checked_sub(self.cfg.interval * 2);
        if !self.swarms.contains(&info_hash) {
            if event == Event::Stopped {
                return Ok((0, 0));
            }
            // push() evicts the least recently announced torrent when full.
            self.swarms.push(info_hash, Swarm::new(cap));
        }
        let Some(swarm) = self.swarms.get_mut(&info_hash) else {
            return Ok((0, 0));
        };
        if let Some(d) = deadline {
            swarm.expire(d);
        }
        let v6 = addr.is_ipv6();
        if event == Event::Stopped {
            if let Some(p) = swarm.family(v6).remove(&addr) {
                swarm.forget(&p);
            }
        } else {
            let peer = Peer {
                addr,
                id: peer_id,
                seeder: left == 0,
                last: now,
            };
            if event == Event::Completed {
                swarm.downloaded = swarm.downloaded.saturating_add(1);
            }
            swarm.count(&peer);
            // The replaced entry (same address) or the evicted least recently seen one.
            if let Some(old) = swarm.family(v6).upsert(peer) {
                swarm.forget(&old);
            }
        }
        let want = numwant
            .unwrap_or(self.cfg.default_numwant)
            .min(self.cfg.max_numwant);
        let fam = swarm.family(v6);
        let n = fam.len();
        if want > 0 && n > 0 {
            // A contiguous run (wrapping) from a random start: O(numwant), cache-friendly,
            // and every peer is equally likely to be handed out over many announces.
            let start = self.rng.random_range(0..n);
            pick(fam, start, want);
        }
        let out = (swarm.seeders, swarm.leechers);
        if swarm.is_empty() {
            self.swarms.pop(&info_hash);
        }
        Ok(out)
    }

    /// Counters for one torrent, expiring stale peers first.
    pub fn scrape(&mut self, now: Instant, h: &Id20) -> ScrapeStats {
        let deadline = now.checked_sub(self.cfg.interval * 2);
        match self.swarms.peek_mut(h) {
            Some(s) => {
                if let Some(d) = deadline {
                    s.expire(d);
                }
                s.stats()
            }
            None => ScrapeStats::default(),
        }
    }

    pub fn torrents(&self) -> usize {
        self.swarms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> StoreConfig {
        StoreConfig {
            interval: Duration::from_secs(100),
            max_torrents: 3,
            max_peers_per_torrent: 4,
            default_numwant: 50,
            max_numwant: 2,
            per_ip_rate: 1.0,
            per_ip_burst: 2.0,
            max_tracked_ips: 2,
        }
    }

    fn a(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 1000))
    }

    #[test]
    fn peers_see_each_other_and_counts() {
        let now = Instant::now();
        let mut s = PeerStore::new(cfg(), None, 1);
        let h = Id20([1; 20]);
        let o = s
            .announce(now, h, a(1), Id20([1; 20]), 0, Event::Started, None)
            .unwrap();
        assert!(o.peers.is_empty());
        assert_eq!((o.complete, o.incomplete), (1, 0));
        let o = s
            .announce(now, h, a(2), Id20([2; 20]), 5, Event::Started, None)
            .unwrap();
        assert_eq!(o.peers, vec![(a(1), Id20([1; 20]))]);
        assert_eq!((o.complete, o.incomplete), (1, 1));
        // Re-announce does not double count; completing moves leecher to seeder.
        let o = s
            .announce(now, h, a(2), Id20([2; 20]), 0, Event::Completed, None)
            .unwrap();
        assert_eq!((o.complete, o.incomplete), (2, 0));
        assert_eq!(
            s.scrape(now, &h),
            ScrapeStats {
                complete: 2,
                downloaded: 1,
                incomplete: 0
            }
        );
        s.announce(now, h, a(2), Id20([2; 20]), 0, Event::Stopped, None)
            .unwrap();
        assert_eq!(s.scrape(now, &h).complete, 1);
    }

    #[test]
    fn numwant_capped_and_families_apart() {
        let now = Instant::now();
        let mut s = PeerStore::new(cfg(), None, 1);
        let h = Id20([1; 20]);
        for i in 1..=4 {
            s.announce(now, h, a(i), Id20([i; 20]), 1, Event::None, None)
                .unwrap();
        }
        let o = s
            .announce(now, h, a(1), Id20([1; 20]), 1, Event::None, Some(100))
            .unwrap();
        assert_eq!(o.peers.len(), 2, "max_numwant caps");
        assert!(o.peers.iter().all(|(p, _)| *p != a(1)));
        let v6: SocketAddr = "[::1]:5".parse().unwrap();
        let o = s
            .announce(now, h, v6, Id20([9; 20]), 1, Event::None, None)
            .unwrap();
        assert!(o.peers.is_empty(), "v6 announcer gets no v4 peers");
        assert_eq!(o.incomplete, 5);
    }

    #[test]
    fn expiry_after_two_intervals() {
        let t0 = Instant::now();
        let mut s = PeerStore::new(cfg(), None, 1);
        let h = Id20([1; 20]);
        s.announce(t0, h, a(1), Id20([1; 20]), 0, Event::None, None)
            .unwrap();
        assert_eq!(s.scrape(t0 + Duration::from_secs(199), &h).complete, 1);
        assert_eq!(s.scrape(t0 + Duration::from_secs(201), &h).complete, 0);
        let o = s
            .announce(
                t0 + Duration::from_secs(201),
                h,
                a(2),
                Id20([2; 20]),
                1,
                Event::None,
                None,
            )
            .unwrap();
        assert!(o.peers.is_empty());
    }

    #[test]
    fn caps_evict_lru() {
        let now = Instant::now();
        let mut s = PeerStore::new(cfg(), None, 1);
        for i in 0..10u8 {
            s.announce(
                now,
                Id20([i; 20]),
                a(1),
                Id20([1; 20]),
                1,
                Event::None,
                None,
            )
            .unwrap();
        }
        assert_eq!(s.torrents(), 3);
        assert_eq!(s.scrape(now, &Id20([9; 20])).incomplete, 1);
        assert_eq!(s.scrape(now, &Id20([0; 20])).incomplete, 0);
        let h = Id20([9; 20]);
        for i in 0..20u8 {
            s.announce(now, h, a(i), Id20([i; 20]), 1, Event::None, None)
                .unwrap();
        }
        assert_eq!(
            s.scrape(now, &h).incomplete,
            4,
            "per-torrent cap with counts kept right"
        );
    }

    #[test]
    fn compact_picks_match_peer_picks() {
        // Two stores with one seed see the same announces: the compact reply must be the
        // encoding of the same peers, through inserts, refreshes, stops and evictions.
        let now = Instant::now();
        let mut c = cfg();
        c.max_numwant = 3;
        let (mut s1, mut s2) = (
            PeerStore::new(c.clone(), None, 5),
            PeerStore::new(c, None, 5),
        );
        let h = Id20([1; 20]);
        let v6 = |i: u8| SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i)], 7));
        for i in 0..40u8 {
            let addr = if i % 3 == 0 { v6(i % 7) } else { a(i % 9) };
            let ev = if i % 5 == 4 {
                Event::Stopped
            } else {
                Event::None
            };
            let mut picked = Vec::new();
            let r1 = s1.announce_with(now, h, addr, Id20([i; 20]), 1, ev, None, |p, _| {
                picked.push(p)
            });
            let mut out = Vec::new();
            let r2 = s2.announce_compact(now, h, addr, Id20([i; 20]), 1, ev, None, &mut out);
            assert_eq!(r1, r2);
            let mut want = Vec::new();
            for p in &picked {
                assert_eq!(p.is_ipv6(), addr.is_ipv6());
                push_compact(p, &mut want);
            }
            assert_eq!(out, want, "announce {i}");
        }
    }

    #[test]
    fn allow_list_and_rate_limit() {
        let now = Instant::now();
        let allow: BTreeSet<Id20> = [Id20([1; 20])].into_iter().collect();
        let mut s = PeerStore::new(cfg(), Some(allow), 1);
        assert_eq!(
            s.announce(
                now,
                Id20([2; 20]),
                a(1),
                Id20([1; 20]),
                1,
                Event::None,
                None
            ),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(s.torrents(), 0);
        let ip = a(1).ip();
        assert!(s.rate_ok(now, ip));
        assert!(s.rate_ok(now, ip));
        assert!(!s.rate_ok(now, ip));
        assert!(s.rate_ok(now + Duration::from_secs(1), ip));
    }
}
