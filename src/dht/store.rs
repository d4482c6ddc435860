//! What a DHT node stores for others: announce tokens and peers per info-hash.
//!
//! - Tokens (BEP 5): `token = SHA-1(secret || requester IP)` truncated to 8 bytes. The
//!   secret rotates every 5 minutes and the previous one is still accepted, so a token is
//!   valid for 5 to 10 minutes and only from the IP it was given to.
//! - Peer store (BEP 5): peers per info-hash expire 30 minutes after their last announce.
//!   Memory is bounded per info-hash and in total with LRU eviction (a flood of announces
//!   for random info-hashes pushes out the least recently touched swarms).
//! - BEP 33: seed/peer bloom filters for `scrape`; `seed` flag on announces; `noseed`.
//! - BEP 51: random samples of stored info-hashes for `sample_infohashes`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::Duration;

use lru::LruCache;
use rand::seq::SliceRandom;
use rand::Rng;
use sha1::{Digest, Sha1};
use tokio::time::Instant;

use super::krpc::BLOOM_BYTES;
use crate::id::InfoHash;

/// BEP 5: rotate the token secret every 5 minutes.
pub const TOKEN_ROTATION: Duration = Duration::from_secs(5 * 60);
/// Peers expire this long after their last announce.
pub const PEER_TTL: Duration = Duration::from_secs(30 * 60);
const TOKEN_LEN: usize = 8;

/// Announce tokens.
#[derive(Clone, Debug)]
pub struct Tokens {
    current: [u8; 16],
    previous: [u8; 16],
    rotated_at: Instant,
}

fn token_for(secret: &[u8; 16], ip: IpAddr) -> [u8; TOKEN_LEN] {
    let mut h = Sha1::new();
    h.update(secret);
    match ip {
        IpAddr::V4(v4) => h.update(v4.octets()),
        IpAddr::V6(v6) => h.update(v6.octets()),
    }
    let d = h.finalize();
    let mut out = [0u8; TOKEN_LEN];
    out.copy_from_slice(&d[..TOKEN_LEN]);
    out
}

impl Tokens {
    pub fn new(now: Instant, rng: &mut impl Rng) -> Self {
        Tokens {
            current: rng.random(),
            previous: rng.random(),
            rotated_at: now,
        }
    }

    /// Rotates the secret when 5 minutes have passed.
    pub fn maybe_rotate(&mut self, now: Instant, rng: &mut impl Rng) {
        if now.saturating_duration_since(self.rotated_at) >= TOKEN_ROTATION {
            self.previous = self.current;
            self.current = rng.random();
            self.rotated_at = now;
        }
    }

    /// The token to hand to `ip`.
    pub fn token(&self, ip: IpAddr) -> Vec<u8> {
        token_for(&self.current, ip).to_vec()
    }

    /// Was `token` issued to `ip` by the current or the previous secret?
    pub fn verify(&self, token: &[u8], ip: IpAddr) -> bool {
        token == token_for(&self.current, ip) || token == token_for(&self.previous, ip)
    }
}

/// A BEP 33 bloom filter (m = 2048 bits, k = 2, SHA-1 of the IP bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct Bloom(pub [u8; BLOOM_BYTES]);

impl Default for Bloom {
    fn default() -> Self {
        Bloom([0; BLOOM_BYTES])
    }
}

impl std::fmt::Debug for Bloom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bloom(~{:.0})", self.estimate())
    }
}

impl Bloom {
    pub fn insert(&mut self, ip: IpAddr) {
        let h = match ip {
            IpAddr::V4(v4) => Sha1::digest(v4.octets()),
            IpAddr::V6(v6) => Sha1::digest(v6.octets()),
        };
        let m = BLOOM_BYTES * 8;
        let i1 = (usize::from(h[0]) | usize::from(h[1]) << 8) % m;
        let i2 = (usize::from(h[2]) | usize::from(h[3]) << 8) % m;
        self.0[i1 / 8] |= 1 << (i1 % 8);
        self.0[i2 / 8] |= 1 << (i2 % 8);
    }

    /// Estimated number of distinct IPs inserted.
    pub fn estimate(&self) -> f64 {
        let m = (BLOOM_BYTES * 8) as f64;
        let zeros: u32 = self.0.iter().map(|b| b.count_zeros()).sum();
        let c = f64::from(zeros).min(m - 1.0);
        (c / m).ln() / (2.0 * (1.0 - 1.0 / m).ln())
    }
}

#[derive(Clone, Copy, Debug)]
struct PeerEntry {
    announced: Instant,
    seed: bool,
}

/// Store bounds.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub max_per_hash: usize,
    pub max_total: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_per_hash: 500,
            max_total: 20_000,
        }
    }
}

/// Peers announced to us, per info-hash.
pub struct PeerStore {
    cfg: StoreConfig,
    swarms: LruCache<InfoHash, LruCache<SocketAddr, PeerEntry>>,
    total: usize,
}

impl PeerStore {
    pub fn new(cfg: StoreConfig) -> Self {
        PeerStore {
            cfg,
            swarms: LruCache::unbounded(),
            total: 0,
        }
    }

    /// Total number of stored peers.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Number of info-hashes with peers.
    #[cfg(test)]
    pub fn num_hashes(&self) -> usize {
        self.swarms.len()
    }

    /// Records an announce (BEP 5 `announce_peer`, BEP 33 `seed`).
    pub fn announce(&mut self, info_hash: InfoHash, peer: SocketAddr, seed: bool, now: Instant) {
        let per = NonZeroUsize::new(self.cfg.max_per_hash.max(1)).unwrap_or(NonZeroUsize::MIN);
        let swarm = self
            .swarms
            .get_or_insert_mut(info_hash, || LruCache::new(per));
        let before = swarm.len();
        // `push` evicts the least recently announced peer when the swarm is full.
        swarm.push(
            peer,
            PeerEntry {
                announced: now,
                seed,
            },
        );
        self.total = self.total + swarm.len() - before;
        while self.total > self.cfg.max_total.max(1) {
            // Evict from the least recently touched swarm (never the one just announced
            // to, which is now the most recent, unless it is the only one).
            let Some(key) = self.swarms.peek_lru().map(|(k, _)| *k) else {
                break;
            };
            let Some(lru_swarm) = self.swarms.peek_mut(&key) else {
                break;
            };
            if lru_swarm.pop_lru().is_some() {
                self.total -= 1;
            }
            if lru_swarm.is_empty() {
                self.swarms.pop_lru();
            }
        }
    }

    /// Removes expired peers everywhere.
    pub fn expire(&mut self, now: Instant) {
        let mut empty = Vec::new();
        for (ih, swarm) in self.swarms.iter_mut() {
            while let Some((_, e)) = swarm.peek_lru() {
                if now.saturating_duration_since(e.announced) >= PEER_TTL {
                    swarm.pop_lru();
                    self.total -= 1;
                } else {
                    break;
                }
            }
            if swarm.is_empty() {
                empty.push(*ih);
            }
        }
        for ih in empty {
            self.swarms.pop(&ih);
        }
    }

    fn live<'a>(
        swarm: &'a LruCache<SocketAddr, PeerEntry>,
        now: Instant,
    ) -> impl Iterator<Item = (&'a SocketAddr, &'a PeerEntry)> + 'a {
        swarm
            .iter()
            .filter(move |(_, e)| now.saturating_duration_since(e.announced) < PEER_TTL)
    }

    /// Up to `max` random live peers of the given family for `get_peers`; with `noseed`,
    /// non-seeds come first (BEP 33).
    pub fn get(
        &self,
        info_hash: &InfoHash,
        v6: bool,
        max: usize,
        noseed: bool,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Vec<SocketAddr> {
        let Some(swarm) = self.swarms.peek(info_hash) else {
            return Vec::new();
        };
        let mut all: Vec<(SocketAddr, bool)> = Self::live(swarm, now)
            .filter(|(a, _)| a.is_ipv6() == v6)
            .map(|(a, e)| (*a, e.seed))
            .collect();
        all.shuffle(rng);
        if noseed {
            all.sort_by_key(|(_, seed)| *seed); // stable: random order within each group
        }
        all.into_iter().take(max).map(|(a, _)| a).collect()
    }

    /// BEP 33 filters (seeds, peers) for a stored info-hash.
    pub fn scrape(&self, info_hash: &InfoHash, now: Instant) -> Option<(Bloom, Bloom)> {
        let swarm = self.swarms.peek(info_hash)?;
        let (mut seeds, mut peers) = (Bloom::default(), Bloom::default());
        for (a, e) in Self::live(swarm, now) {
            if e.seed {
                seeds.insert(a.ip());
            } else {
                peers.insert(a.ip());
            }
        }
        Some((seeds, peers))
    }

    /// BEP 51: up to `max` random stored info-hashes, and how many there are.
    pub fn samples(&self, max: usize, rng: &mut impl Rng) -> (Vec<InfoHash>, usize) {
        let mut all: Vec<InfoHash> = self.swarms.iter().map(|(ih, _)| *ih).collect();
        all.sort();
        let num = all.len();
        all.shuffle(rng);
        all.truncate(max);
        (all, num)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id20;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn tokens_bound_to_ip_and_rotate() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut t = Tokens::new(t0, &mut rng);
        let a: IpAddr = "1.2.3.4".parse().unwrap();
        let b: IpAddr = "1.2.3.5".parse().unwrap();
        let tok = t.token(a);
        assert_eq!(tok.len(), 8);
        assert!(t.verify(&tok, a));
        assert!(!t.verify(&tok, b));
        t.maybe_rotate(t0 + Duration::from_secs(299), &mut rng);
        assert!(t.verify(&tok, a));
        t.maybe_rotate(t0 + TOKEN_ROTATION, &mut rng);
        assert!(t.verify(&tok, a), "previous secret still accepted");
        t.maybe_rotate(t0 + TOKEN_ROTATION * 2, &mut rng);
        assert!(!t.verify(&tok, a), "two rotations later it is gone");
        assert!(!t.verify(b"", a));
    }

    #[test]
    fn bloom_bep33_test_vector() {
        let mut bf = Bloom::default();
        for i in 0..=255u8 {
            bf.insert(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)));
        }
        for i in 0..=0x3E7u16 {
            bf.insert(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)));
        }
        let want = "F6C3F5EAA07FFD91BDE89F777F26FB2BFF37BDB8FB2BBAA2FD3DDDE7BACFFF75EE7CCBAE\
                    FE5EEDB1FBFAFF67F6ABFF5E43DDBCA3FD9B9FFDF4FFD3E9DFF12D1BDF59DB53DBE9FA5B\
                    7FF3B8FDFCDE1AFB8BEDD7BE2F3EE71EBBBFE93BCDEEFE148246C2BC5DBFF7E7EFDCF24F\
                    D8DC7ADFFD8FFFDFDDFFF7A4BBEEDF5CB95CE81FC7FCFF1FF4FFFFDFE5F7FDCBB7FD79B3\
                    FA1FC77BFE07FFF905B7B7FFC7FEFEFFE0B8370BB0CD3F5B7F2BD93FEB4386CFDD6F7FD5\
                    BFAF2E9EBFFFFEECD67ADBF7C67F17EFD5D75EBA6FFEBA7FFF47A91EB1BFBB53E8ABFB57\
                    62ABE8FF237279BFEFBFEEF5FFC5FEBFDFE5ADFFADFEE1FB737FFFFBFD9F6AEFFEEE76B6\
                    FD8F72EF";
        assert_eq!(hex::encode_upper(bf.0), want);
        let est = bf.estimate();
        assert!((est - 1224.9308).abs() < 0.001, "{est}");
    }

    fn peer(i: u32) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 6881))
    }

    #[test]
    fn store_get_expiry_and_family() {
        let mut rng = StdRng::seed_from_u64(2);
        let now = Instant::now();
        let mut s = PeerStore::new(StoreConfig::default());
        let ih = Id20([1; 20]);
        // Announce times are monotonic, as they are in the node.
        s.announce(ih, peer(1), false, now);
        s.announce(ih, "[2001:db8::1]:1".parse().unwrap(), false, now);
        s.announce(ih, peer(1), false, now); // re-announce: no duplicate
        s.announce(ih, peer(2), true, now + Duration::from_secs(60));
        assert_eq!(s.len(), 3);
        let mut got = s.get(&ih, false, 10, false, now, &mut rng);
        got.sort();
        assert_eq!(got, vec![peer(1), peer(2)]);
        assert_eq!(s.get(&ih, true, 10, false, now, &mut rng).len(), 1);
        // noseed puts the non-seed first.
        for _ in 0..5 {
            assert_eq!(s.get(&ih, false, 1, true, now, &mut rng), vec![peer(1)]);
        }
        // 30 minutes after the first announce, only peer(2) is left.
        let later = now + PEER_TTL;
        assert_eq!(s.get(&ih, false, 10, false, later, &mut rng), vec![peer(2)]);
        s.expire(later);
        assert_eq!(s.len(), 1);
        s.expire(later + Duration::from_secs(60));
        assert_eq!(s.len(), 0);
        assert_eq!(s.num_hashes(), 0);
    }

    #[test]
    fn store_bounds_per_hash_and_total() {
        let now = Instant::now();
        let mut s = PeerStore::new(StoreConfig {
            max_per_hash: 10,
            max_total: 100,
        });
        let ih = Id20([1; 20]);
        for i in 0..50 {
            s.announce(ih, peer(i), false, now);
        }
        assert_eq!(s.len(), 10);
        // A flood of random info-hashes keeps the total bounded.
        for i in 0..1000u32 {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(&i.to_be_bytes());
            s.announce(Id20(h), peer(i), false, now);
            assert!(s.len() <= 100);
        }
        assert_eq!(s.len(), 100);
        assert!(s.num_hashes() <= 100);
    }

    #[test]
    fn scrape_and_samples() {
        let mut rng = StdRng::seed_from_u64(3);
        let now = Instant::now();
        let mut s = PeerStore::new(StoreConfig::default());
        let ih = Id20([1; 20]);
        for i in 0..20 {
            s.announce(ih, peer(i), i < 5, now);
        }
        let (seeds, peers) = s.scrape(&ih, now).unwrap();
        assert!((seeds.estimate() - 5.0).abs() < 1.0);
        assert!((peers.estimate() - 15.0).abs() < 2.0);
        assert!(s.scrape(&Id20([2; 20]), now).is_none());
        for i in 0..30u8 {
            s.announce(Id20([i + 10; 20]), peer(1), false, now);
        }
        let (samples, num) = s.samples(20, &mut rng);
        assert_eq!(num, 31);
        assert_eq!(samples.len(), 20);
        let set: std::collections::BTreeSet<_> = samples.iter().collect();
        assert_eq!(set.len(), 20);
    }
}
