//! Kademlia routing table for the Mainline DHT (BEP 5), with BEP 42 node-id checks.
//!
//! 160-bit ids, buckets of k = 8 that split only when the bucket covering our own id is full
//! (so the table holds O(k·log N) nodes). Node status follows BEP 5: *good* if it answered
//! one of our queries in the last 15 minutes, or has ever answered and queried us in the last
//! 15 minutes; *questionable* after 15 minutes of silence; *bad* after failing to answer
//! several queries in a row. Each bucket keeps a small replacement cache that refills it when
//! a node goes bad.
//!
//! Hygiene: at most one entry per IP (a port change updates the entry), and loopback /
//! private / link-local addresses are refused unless our own bind address is itself local
//! (so loopback tests and LANs work while a public table stays clean). BEP 42: ids that do
//! not match the node's IP are either refused (`enforce_node_id`) or de-prioritised (evicted
//! first, never displacing a conforming node).
//!
//! BEP 32: a dual-stack node keeps two tables, one per address family
//! ([`TableConfig::v6`]); a table never accepts a node of the other family.
//!
//! Pure: time is passed in as `tokio::time::Instant`, randomness as an `Rng`.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::id::{Id20, NodeId};

/// BEP 5: a node is questionable after 15 minutes of inactivity; buckets untouched for as
/// long are refreshed.
pub const GOOD_FOR: Duration = Duration::from_secs(15 * 60);
/// Failed queries in a row after which a node is bad.
pub const MAX_FAILURES: u8 = 2;
/// Don't ping the same questionable node more often than this.
const PING_INTERVAL: Duration = Duration::from_secs(60);

/// Table settings.
#[derive(Clone, Debug)]
pub struct TableConfig {
    /// Bucket size (BEP 5: 8).
    pub k: usize,
    /// Replacement cache size per bucket.
    pub replacements: usize,
    /// Accept loopback/private/link-local addresses (set when we are bound to one).
    pub allow_private: bool,
    /// BEP 42: refuse nodes whose id does not match their IP (else only de-prioritise).
    pub enforce_node_id: bool,
    /// BEP 32: the address family this table holds (Some(true) = IPv6 only, Some(false) =
    /// IPv4 only); a dual-stack node keeps one table per family. None accepts both.
    pub v6: Option<bool>,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            k: 8,
            replacements: 8,
            allow_private: false,
            enforce_node_id: false,
            v6: None,
        }
    }
}

/// One node in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: NodeId,
    pub addr: SocketAddr,
    /// Last time it answered one of our queries.
    pub last_response: Option<Instant>,
    /// Last time it sent us a query.
    pub last_query: Option<Instant>,
    pub last_ping: Option<Instant>,
    /// Consecutive failed queries.
    pub failures: u8,
    /// BEP 42 conformance (local addresses are exempt, i.e. true).
    pub id_ok: bool,
}

/// BEP 5 node status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Good,
    Questionable,
    Bad,
}

impl Entry {
    pub fn status(&self, now: Instant) -> Status {
        if self.failures >= MAX_FAILURES {
            return Status::Bad;
        }
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < GOOD_FOR);
        if recent(self.last_response) || (self.last_response.is_some() && recent(self.last_query)) {
            Status::Good
        } else {
            Status::Questionable
        }
    }
}

/// What happened to a node offered to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// A new entry.
    Added,
    /// An existing entry was refreshed (maybe with a new port).
    Updated,
    /// The bucket was full: kept in the replacement cache.
    Cached,
    /// Refused (own id, bad address, BEP 42, IP already used by another id).
    Rejected,
}

#[derive(Clone, Debug)]
struct Bucket {
    nodes: Vec<Entry>,
    replacements: VecDeque<Entry>,
    last_changed: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Self {
        Bucket {
            nodes: Vec::new(),
            replacements: VecDeque::new(),
            last_changed: now,
        }
    }
}

/// The routing table.
#[derive(Clone, Debug)]
pub struct Table {
    own: NodeId,
    cfg: TableConfig,
    buckets: Vec<Bucket>,
    /// IP → id of the entry (in a bucket or a replacement cache) using it.
    ips: BTreeMap<IpAddr, NodeId>,
}

/// True for addresses that are not routable on the public internet.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 carrier-grade NAT
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

fn is_bogus(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    addr.port() == 0
        || ip.is_unspecified()
        // An IPv4 node must live in the IPv4 table under its IPv4 address (BEP 32).
        || matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// CRC-32C (Castagnoli), as BEP 42 requires. Bitwise: it runs a few times per node.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

/// The BEP 42 CRC for `ip` with the 3 random bits `r`.
fn bep42_crc(ip: IpAddr, r: u8) -> u32 {
    let r = r & 7;
    match ip {
        IpAddr::V4(v4) => {
            let mut b = v4.octets();
            for (x, m) in b.iter_mut().zip([0x03, 0x0f, 0x3f, 0xff]) {
                *x &= m;
            }
            b[0] |= r << 5;
            crc32c(&b)
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut b = [0u8; 8];
            for (i, m) in [0x01, 0x03, 0x07, 0x0f, 0x1f, 0x3f, 0x7f, 0xff]
                .iter()
                .enumerate()
            {
                b[i] = o[i] & m;
            }
            b[0] |= r << 5;
            crc32c(&b)
        }
    }
}

/// BEP 42: a node id for our external IP.
pub fn bep42_node_id(ip: IpAddr, rng: &mut impl Rng) -> NodeId {
    let mut id = [0u8; 20];
    rng.fill(&mut id[..]);
    let r = id[19] & 7;
    id[19] = r | (id[19] & !7);
    let crc = bep42_crc(ip, r);
    id[0] = (crc >> 24) as u8;
    id[1] = (crc >> 16) as u8;
    id[2] = ((crc >> 8) as u8 & 0xf8) | (id[2] & 7);
    Id20(id)
}

/// BEP 42: does `id` match `ip`? Local addresses are exempt.
pub fn bep42_valid(id: &NodeId, ip: IpAddr) -> bool {
    if is_local(ip) {
        return true;
    }
    let crc = bep42_crc(ip, id.0[19]);
    id.0[0] == (crc >> 24) as u8
        && id.0[1] == (crc >> 16) as u8
        && (id.0[2] & 0xf8) == ((crc >> 8) as u8 & 0xf8)
}

/// A random id that falls in bucket `index` relative to `own` (shares exactly `index`
/// leading bits, or at least `index` bits for the last bucket).
fn random_id_in_bucket(own: &NodeId, index: usize, last: bool, rng: &mut impl Rng) -> NodeId {
    let mut id: [u8; 20] = rng.random();
    for bit in 0..160usize {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        let own_bit = own.0[byte] & mask;
        if bit < index {
            id[byte] = (id[byte] & !mask) | own_bit;
        } else if bit == index && !last {
            id[byte] = (id[byte] & !mask) | (!own_bit & mask);
        }
    }
    Id20(id)
}

impl Table {
    pub fn new(own: NodeId, cfg: TableConfig, now: Instant) -> Self {
        Table {
            own,
            cfg,
            buckets: vec![Bucket::new(now)],
            ips: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &TableConfig {
        &self.cfg
    }

    /// Number of nodes in buckets (not counting replacement caches).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    pub fn num_buckets(&self) -> usize {
        self.buckets.len()
    }

    fn bucket_index(&self, id: &NodeId) -> usize {
        let lz = self.own.distance(id).leading_zeros() as usize;
        lz.min(self.buckets.len() - 1)
    }

    /// Is this address acceptable at all?
    pub fn addr_ok(&self, addr: &SocketAddr) -> bool {
        !is_bogus(addr)
            && self.cfg.v6.is_none_or(|v6| v6 == addr.is_ipv6())
            && (self.cfg.allow_private || !is_local(addr.ip()))
    }

    fn find(&self, id: &NodeId) -> Option<(usize, usize)> {
        let b = self.bucket_index(id);
        self.buckets[b]
            .nodes
            .iter()
            .position(|e| e.id == *id)
            .map(|i| (b, i))
    }

    /// Looks up an entry by id.
    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        self.find(id).map(|(b, i)| &self.buckets[b].nodes[i])
    }

    /// A node answered one of our queries.
    pub fn heard_response(&mut self, id: NodeId, addr: SocketAddr, now: Instant) -> Insert {
        self.offer(id, addr, now, true)
    }

    /// A node sent us a query. Known nodes are refreshed; unknown ones are only added where
    /// there is free room (they have not proven they answer).
    pub fn heard_query(&mut self, id: NodeId, addr: SocketAddr, now: Instant) -> Insert {
        self.offer(id, addr, now, false)
    }

    fn offer(&mut self, id: NodeId, addr: SocketAddr, now: Instant, response: bool) -> Insert {
        if id == self.own || !self.addr_ok(&addr) {
            return Insert::Rejected;
        }
        let id_ok = bep42_valid(&id, addr.ip());
        if !id_ok && self.cfg.enforce_node_id {
            return Insert::Rejected;
        }
        // One entry per IP.
        if let Some(existing) = self.ips.get(&addr.ip()).copied() {
            if existing != id {
                let existing_bad = self
                    .get(&existing)
                    .is_some_and(|e| e.status(now) == Status::Bad);
                if !existing_bad {
                    return Insert::Rejected;
                }
                self.remove(&existing);
            }
        }
        if let Some((b, i)) = self.find(&id) {
            let e = &mut self.buckets[b].nodes[i];
            if e.addr != addr {
                // Same IP (guaranteed by the map) or a new IP for the same id.
                if e.addr.ip() != addr.ip() {
                    if self.ips.contains_key(&addr.ip()) {
                        return Insert::Rejected;
                    }
                    self.ips.remove(&e.addr.ip());
                    self.ips.insert(addr.ip(), id);
                }
                e.addr = addr;
            }
            if response {
                e.last_response = Some(now);
                e.failures = 0;
                self.buckets[b].last_changed = now;
            } else {
                e.last_query = Some(now);
            }
            return Insert::Updated;
        }
        let entry = Entry {
            id,
            addr,
            last_response: response.then_some(now),
            last_query: (!response).then_some(now),
            last_ping: None,
            failures: 0,
            id_ok,
        };
        self.insert_new(entry, now, response)
    }

    fn insert_new(&mut self, entry: Entry, now: Instant, response: bool) -> Insert {
        loop {
            let b = self.bucket_index(&entry.id);
            let k = self.cfg.k;
            let bucket = &mut self.buckets[b];
            // Drop a stale cached copy of this node.
            if let Some(p) = bucket.replacements.iter().position(|e| e.id == entry.id) {
                bucket.replacements.remove(p);
                self.ips.remove(&entry.addr.ip());
            }
            let n_buckets = self.buckets.len();
            let bucket = &mut self.buckets[b];
            if bucket.nodes.len() < k {
                self.ips.insert(entry.addr.ip(), entry.id);
                bucket.nodes.push(entry);
                bucket.last_changed = now;
                return Insert::Added;
            }
            // Full. Split if this is the bucket holding our own id.
            if b == n_buckets - 1 && n_buckets < 160 {
                self.split(now);
                continue;
            }
            if !response {
                return Insert::Rejected;
            }
            // Evict a bad node; else a non-conforming (BEP 42) one if the newcomer conforms.
            let victim = bucket
                .nodes
                .iter()
                .position(|e| e.status(now) == Status::Bad)
                .or_else(|| {
                    if entry.id_ok {
                        bucket
                            .nodes
                            .iter()
                            .position(|e| !e.id_ok && e.status(now) != Status::Good)
                    } else {
                        None
                    }
                });
            if let Some(v) = victim {
                let old = std::mem::replace(&mut bucket.nodes[v], entry.clone());
                bucket.last_changed = now;
                self.ips.remove(&old.addr.ip());
                self.ips.insert(entry.addr.ip(), entry.id);
                return Insert::Added;
            }
            // Keep it as a replacement (newest last; oldest dropped when full).
            if bucket.replacements.len() >= self.cfg.replacements {
                if let Some(old) = bucket.replacements.pop_front() {
                    self.ips.remove(&old.addr.ip());
                }
            }
            let bucket = &mut self.buckets[b];
            self.ips.insert(entry.addr.ip(), entry.id);
            bucket.replacements.push_back(entry);
            return Insert::Cached;
        }
    }

    fn split(&mut self, now: Instant) {
        let last = self.buckets.len() - 1;
        let own = self.own;
        let old = &mut self.buckets[last];
        let mut near = Bucket::new(now);
        near.last_changed = old.last_changed;
        let far_depth = |id: &NodeId| own.distance(id).leading_zeros() as usize == last;
        let (keep, moved): (Vec<Entry>, Vec<Entry>) =
            old.nodes.drain(..).partition(|e| far_depth(&e.id));
        old.nodes = keep;
        near.nodes = moved;
        let (keep, moved): (VecDeque<Entry>, VecDeque<Entry>) =
            old.replacements.drain(..).partition(|e| far_depth(&e.id));
        old.replacements = keep;
        near.replacements = moved;
        self.buckets.push(near);
    }

    /// Removes a node (from bucket or replacement cache).
    pub fn remove(&mut self, id: &NodeId) {
        let b = self.bucket_index(id);
        let bucket = &mut self.buckets[b];
        if let Some(i) = bucket.nodes.iter().position(|e| e.id == *id) {
            let e = bucket.nodes.remove(i);
            self.ips.remove(&e.addr.ip());
        } else if let Some(i) = bucket.replacements.iter().position(|e| e.id == *id) {
            if let Some(e) = bucket.replacements.remove(i) {
                self.ips.remove(&e.addr.ip());
            }
        }
    }

    /// A query to this node timed out. When it turns bad and a replacement is waiting, the
    /// replacement takes its place.
    pub fn failed(&mut self, id: &NodeId, now: Instant) {
        let Some((b, i)) = self.find(id) else { return };
        let bucket = &mut self.buckets[b];
        let e = &mut bucket.nodes[i];
        e.failures = e.failures.saturating_add(1);
        if e.status(now) == Status::Bad {
            if let Some(r) = bucket.replacements.pop_back() {
                let old = std::mem::replace(&mut bucket.nodes[i], r);
                bucket.last_changed = now;
                self.ips.remove(&old.addr.ip());
            }
        }
    }

    /// The `n` closest non-bad nodes to `target`, closest first.
    pub fn closest(&self, target: &Id20, n: usize, now: Instant) -> Vec<Entry> {
        let mut all: Vec<&Entry> = self
            .buckets
            .iter()
            .flat_map(|b| b.nodes.iter())
            .filter(|e| e.status(now) != Status::Bad)
            .collect();
        all.sort_by_key(|e| (target.distance(&e.id), e.addr));
        all.into_iter().take(n).cloned().collect()
    }

    /// Good nodes (for saving state).
    pub fn good_nodes(&self, now: Instant) -> Vec<Entry> {
        self.buckets
            .iter()
            .flat_map(|b| b.nodes.iter())
            .filter(|e| e.status(now) == Status::Good)
            .cloned()
            .collect()
    }

    /// Every entry in the buckets.
    #[cfg(test)]
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.nodes.iter())
    }

    /// Questionable nodes to ping now (each at most once per minute); marks them pinged.
    pub fn pings_due(&mut self, now: Instant, max: usize) -> Vec<(NodeId, SocketAddr)> {
        let mut out = Vec::new();
        for b in &mut self.buckets {
            for e in &mut b.nodes {
                if out.len() >= max {
                    return out;
                }
                let due = e
                    .last_ping
                    .is_none_or(|t| now.saturating_duration_since(t) >= PING_INTERVAL);
                if e.status(now) == Status::Questionable && due {
                    e.last_ping = Some(now);
                    out.push((e.id, e.addr));
                }
            }
        }
        out
    }

    /// Targets for buckets not changed for 15 minutes (BEP 5 refresh). Each returned bucket's
    /// deadline is pushed forward, so the caller should look the target up.
    pub fn refresh_targets(&mut self, now: Instant, rng: &mut impl Rng) -> Vec<NodeId> {
        let n = self.buckets.len();
        let mut out = Vec::new();
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if now.saturating_duration_since(b.last_changed) >= GOOD_FOR {
                b.last_changed = now;
                out.push(random_id_in_bucket(&self.own, i, i == n - 1, rng));
            }
        }
        out
    }

    /// One random target in every bucket, regardless of deadlines (used once after
    /// bootstrap to fill the far buckets, which a self-lookup alone leaves thin).
    pub fn all_refresh_targets(&mut self, now: Instant, rng: &mut impl Rng) -> Vec<NodeId> {
        let n = self.buckets.len();
        let mut out = Vec::new();
        for (i, b) in self.buckets.iter_mut().enumerate() {
            b.last_changed = now;
            out.push(random_id_in_bucket(&self.own, i, i == n - 1, rng));
        }
        out
    }

    /// The earliest instant at which some bucket needs a refresh.
    #[cfg(test)]
    pub fn next_refresh(&self) -> Option<Instant> {
        self.buckets.iter().map(|b| b.last_changed + GOOD_FOR).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn cfg() -> TableConfig {
        TableConfig {
            allow_private: true,
            ..Default::default()
        }
    }

    fn addr(i: u32) -> SocketAddr {
        let b = i.to_be_bytes();
        SocketAddr::from(([10, b[1], b[2], b[3]], 6881))
    }

    fn id_with_prefix(first: u8, rest: u8) -> Id20 {
        let mut b = [rest; 20];
        b[0] = first;
        Id20(b)
    }

    #[test]
    fn bep42_test_vectors() {
        let cases = [
            ("124.31.75.21", 1u8, "5fbfbf"),
            ("21.75.31.124", 86, "5a3ce9"),
            ("65.23.51.170", 22, "a5d432"),
            ("84.124.73.14", 65, "1b0321"),
            ("43.213.53.83", 90, "e56f6c"),
        ];
        for (ip, r, prefix) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            let crc = bep42_crc(ip, r);
            let got = format!(
                "{:02x}{:02x}{:02x}",
                (crc >> 24) as u8,
                (crc >> 16) as u8,
                (crc >> 8) as u8 & 0xf8
            );
            let want = u32::from_str_radix(prefix, 16).unwrap();
            let want = format!(
                "{:02x}{:02x}{:02x}",
                (want >> 16) as u8,
                (want >> 8) as u8,
                want as u8 & 0xf8
            );
            assert_eq!(got, want, "{ip}");
            let mut id = [0u8; 20];
            hex::decode_to_slice(
                format!("{prefix}{}", "00".repeat(16)) + &format!("{r:02x}"),
                &mut id,
            )
            .unwrap();
            assert!(bep42_valid(&Id20(id), ip));
            id[0] ^= 1;
            assert!(!bep42_valid(&Id20(id), ip));
        }
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20 {
            let ip: IpAddr = "203.0.113.9".parse().unwrap();
            assert!(bep42_valid(&bep42_node_id(ip, &mut rng), ip));
            let ip6: IpAddr = "2001:db8::7".parse().unwrap();
            assert!(bep42_valid(&bep42_node_id(ip6, &mut rng), ip6));
        }
    }

    #[test]
    fn status_timings() {
        let t0 = Instant::now();
        let mut e = Entry {
            id: Id20([1; 20]),
            addr: addr(1),
            last_response: Some(t0),
            last_query: None,
            last_ping: None,
            failures: 0,
            id_ok: true,
        };
        assert_eq!(e.status(t0 + Duration::from_secs(60)), Status::Good);
        let later = t0 + GOOD_FOR + Duration::from_secs(1);
        assert_eq!(e.status(later), Status::Questionable);
        // A recent query from a node that has answered before makes it good again.
        e.last_query = Some(later);
        assert_eq!(e.status(later), Status::Good);
        e.failures = MAX_FAILURES;
        assert_eq!(e.status(later), Status::Bad);
        // Never answered, only queried: questionable.
        let q = Entry {
            last_response: None,
            last_query: Some(t0),
            failures: 0,
            ..e
        };
        assert_eq!(q.status(t0), Status::Questionable);
    }

    #[test]
    fn splits_only_around_own_id() {
        let now = Instant::now();
        let own = Id20([0; 20]);
        let mut t = Table::new(own, cfg(), now);
        // 20 nodes far away (first bit 1): only 8 fit, the far bucket never splits.
        for i in 0..20u32 {
            let r = t.heard_response(id_with_prefix(0x80 | i as u8, i as u8), addr(i), now);
            if i < 8 {
                assert_eq!(r, Insert::Added);
            }
        }
        assert_eq!(t.len(), 8);
        // Nodes near us keep splitting the own bucket.
        for i in 0..40u32 {
            let mut b = [0u8; 20];
            b[1] = 1 + i as u8; // first 8 bits equal to own
            b[19] = i as u8;
            t.heard_response(Id20(b), addr(100 + i), now);
        }
        assert!(t.num_buckets() > 8, "buckets {}", t.num_buckets());
        // Far bucket (index 0) still holds at most k nodes.
        assert_eq!(t.entries().filter(|e| e.id.0[0] & 0x80 != 0).count(), 8);
        assert!(t.len() > 16);
        // Every bucket respects k.
        for b in &t.buckets {
            assert!(b.nodes.len() <= 8);
        }
    }

    #[test]
    fn one_entry_per_ip_and_port_update() {
        let now = Instant::now();
        let mut t = Table::new(Id20([0; 20]), cfg(), now);
        let a = id_with_prefix(0x80, 1);
        let b = id_with_prefix(0x90, 2);
        assert_eq!(
            t.heard_response(a, "10.0.0.1:1000".parse().unwrap(), now),
            Insert::Added
        );
        // Another id from the same IP is refused.
        assert_eq!(
            t.heard_response(b, "10.0.0.1:2000".parse().unwrap(), now),
            Insert::Rejected
        );
        // Same id, new port: updated.
        assert_eq!(
            t.heard_response(a, "10.0.0.1:1001".parse().unwrap(), now),
            Insert::Updated
        );
        assert_eq!(t.get(&a).unwrap().addr, "10.0.0.1:1001".parse().unwrap());
        assert_eq!(t.len(), 1);
        // Once the first goes bad, the IP can be reused.
        t.failed(&a, now);
        t.failed(&a, now);
        assert_eq!(
            t.heard_response(b, "10.0.0.1:2000".parse().unwrap(), now),
            Insert::Added
        );
        assert!(t.get(&a).is_none());
    }

    #[test]
    fn private_addresses_filtered_unless_allowed() {
        let now = Instant::now();
        let mut t = Table::new(Id20([0; 20]), TableConfig::default(), now);
        for a in [
            "127.0.0.5:1",
            "10.1.2.3:1",
            "192.168.1.1:1",
            "169.254.0.1:1",
            "[::1]:1",
            "[fe80::1]:1",
            "0.0.0.0:1",
        ] {
            assert_eq!(
                t.heard_response(Id20([9; 20]), a.parse().unwrap(), now),
                Insert::Rejected,
                "{a}"
            );
        }
        // Port 0 is never acceptable.
        let ip: IpAddr = "8.8.8.8".parse().unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let good = bep42_node_id(ip, &mut rng);
        assert_eq!(
            t.heard_response(good, "8.8.8.8:0".parse().unwrap(), now),
            Insert::Rejected
        );
        assert_eq!(
            t.heard_response(good, "8.8.8.8:53".parse().unwrap(), now),
            Insert::Added
        );
        let mut local = Table::new(Id20([0; 20]), cfg(), now);
        assert_eq!(
            local.heard_response(Id20([9; 20]), "127.0.0.5:1".parse().unwrap(), now),
            Insert::Added
        );
    }

    /// BEP 32: a family-bound table takes only nodes of its family; v4-mapped IPv6
    /// addresses are refused everywhere (that node belongs in the IPv4 table).
    #[test]
    fn family_tables_stay_separate() {
        let now = Instant::now();
        let mut t4 = Table::new(
            Id20([0; 20]),
            TableConfig {
                v6: Some(false),
                ..cfg()
            },
            now,
        );
        let mut t6 = Table::new(
            Id20([0; 20]),
            TableConfig {
                v6: Some(true),
                ..cfg()
            },
            now,
        );
        let (a4, a6): (SocketAddr, SocketAddr) =
            ("127.0.0.5:1".parse().unwrap(), "[::1]:1".parse().unwrap());
        assert_eq!(t4.heard_response(Id20([1; 20]), a6, now), Insert::Rejected);
        assert_eq!(t6.heard_response(Id20([1; 20]), a4, now), Insert::Rejected);
        assert_eq!(t4.heard_response(Id20([1; 20]), a4, now), Insert::Added);
        assert_eq!(t6.heard_response(Id20([1; 20]), a6, now), Insert::Added);
        assert!(!t4.addr_ok(&a6) && !t6.addr_ok(&a4));
        let mapped: SocketAddr = "[::ffff:127.0.0.6]:1".parse().unwrap();
        assert_eq!(
            t6.heard_response(Id20([2; 20]), mapped, now),
            Insert::Rejected
        );
        let mut any = Table::new(Id20([0; 20]), cfg(), now);
        assert_eq!(
            any.heard_response(Id20([2; 20]), mapped, now),
            Insert::Rejected
        );
        assert_eq!((t4.len(), t6.len()), (1, 1));
    }

    #[test]
    fn bep42_enforce_vs_deprioritise() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(5);
        let ip: IpAddr = "8.8.4.4".parse().unwrap();
        let bad_id = Id20([0xff; 20]);
        assert!(!bep42_valid(&bad_id, ip));
        let mut strict = Table::new(
            Id20([0; 20]),
            TableConfig {
                enforce_node_id: true,
                ..Default::default()
            },
            now,
        );
        assert_eq!(
            strict.heard_response(bad_id, SocketAddr::new(ip, 1), now),
            Insert::Rejected
        );
        let mut lax = Table::new(Id20([0; 20]), TableConfig::default(), now);
        assert_eq!(
            lax.heard_response(bad_id, SocketAddr::new(ip, 1), now),
            Insert::Added
        );
        // Fill the far bucket (ids starting with 1) with non-conforming nodes, let them go
        // questionable; a conforming newcomer displaces one of them.
        let mut lax = Table::new(Id20([0; 20]), TableConfig::default(), now);
        for i in 0..8u8 {
            let mut id = [0xf0u8; 20];
            id[19] = i;
            lax.heard_response(Id20(id), SocketAddr::from(([8, 8, 8, i + 1], 1)), now);
        }
        // Need enough own-side split: far bucket only once the table has split; make own
        // bucket split by adding near nodes first.
        let later = now + GOOD_FOR + Duration::from_secs(1);
        let ip2: IpAddr = "9.9.9.9".parse().unwrap();
        let mut conforming;
        loop {
            conforming = bep42_node_id(ip2, &mut rng);
            if conforming.0[0] & 0x80 != 0 {
                break;
            }
        }
        // The first insert of a far node will split the single bucket; after that, bucket 0
        // (far) is full of questionable non-conforming nodes.
        let r = lax.heard_response(conforming, SocketAddr::new(ip2, 1), later);
        assert_eq!(r, Insert::Added);
        assert_eq!(lax.entries().filter(|e| e.id.0[0] & 0x80 != 0).count(), 8);
        assert!(lax.get(&conforming).is_some());
    }

    #[test]
    fn bad_node_replaced_from_cache() {
        let now = Instant::now();
        let own = Id20([0; 20]);
        let mut t = Table::new(own, cfg(), now);
        // Force a split so the far bucket stops splitting.
        let mut near = [0u8; 20];
        near[19] = 1;
        t.heard_response(Id20(near), addr(999), now);
        for i in 0..10u32 {
            t.heard_response(id_with_prefix(0x80, i as u8), addr(i), now);
        }
        assert_eq!(t.entries().filter(|e| e.id.0[0] & 0x80 != 0).count(), 8);
        let cached = id_with_prefix(0x80, 9);
        assert!(t.get(&cached).is_none());
        let victim = id_with_prefix(0x80, 0);
        t.failed(&victim, now);
        assert!(t.get(&victim).is_some());
        t.failed(&victim, now);
        assert!(t.get(&victim).is_none());
        assert!(t.get(&cached).is_some(), "newest replacement promoted");
        // The victim's IP is free again.
        assert_eq!(
            t.heard_response(id_with_prefix(0x81, 0x55), addr(0), now),
            Insert::Cached
        );
    }

    #[test]
    fn queries_only_fill_free_room() {
        let now = Instant::now();
        let mut t = Table::new(Id20([0; 20]), cfg(), now);
        let mut near = [0u8; 20];
        near[19] = 1;
        t.heard_response(Id20(near), addr(999), now);
        for i in 0..8u32 {
            t.heard_response(id_with_prefix(0x80, i as u8), addr(i), now);
        }
        assert_eq!(
            t.heard_query(id_with_prefix(0x80, 50), addr(50), now),
            Insert::Rejected
        );
        assert_eq!(
            t.heard_query(id_with_prefix(0x80, 1), addr(1), now),
            Insert::Updated
        );
    }

    #[test]
    fn closest_sorted_and_skips_bad() {
        let now = Instant::now();
        let mut t = Table::new(Id20([0; 20]), cfg(), now);
        let mut rng = StdRng::seed_from_u64(7);
        for i in 0..200u32 {
            let id: [u8; 20] = rng.random();
            t.heard_response(Id20(id), addr(i), now);
        }
        let target = Id20(rng.random());
        let c = t.closest(&target, 8, now);
        assert_eq!(c.len(), 8);
        for w in c.windows(2) {
            assert!(target.distance(&w[0].id) < target.distance(&w[1].id));
        }
        // No closer node in the table than the 8 returned.
        let worst = target.distance(&c[7].id);
        let closer = t
            .entries()
            .filter(|e| target.distance(&e.id) < worst)
            .count();
        assert_eq!(closer, 7);
        let first = c[0].id;
        t.failed(&first, now);
        t.failed(&first, now);
        assert!(t.closest(&target, 8, now).iter().all(|e| e.id != first));
    }

    #[test]
    fn refresh_targets_land_in_their_bucket() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(11);
        let own = Id20(rng.random());
        let mut t = Table::new(own, cfg(), now);
        for i in 0..300u32 {
            t.heard_response(Id20(rng.random()), addr(i), now);
        }
        assert!(t.refresh_targets(now, &mut rng).is_empty());
        assert_eq!(t.next_refresh(), Some(now + GOOD_FOR));
        let later = now + GOOD_FOR;
        let targets = t.refresh_targets(later, &mut rng);
        assert_eq!(targets.len(), t.num_buckets());
        for (i, target) in targets.iter().enumerate() {
            assert_eq!(t.bucket_index(target), i);
        }
        assert!(t.refresh_targets(later, &mut rng).is_empty());
    }

    #[test]
    fn to_ping_returns_questionable_once_a_minute() {
        let now = Instant::now();
        let mut t = Table::new(Id20([0; 20]), cfg(), now);
        t.heard_response(Id20([1; 20]), addr(1), now);
        assert!(t.pings_due(now, 10).is_empty());
        let later = now + GOOD_FOR;
        assert_eq!(t.pings_due(later, 10).len(), 1);
        assert!(t.pings_due(later, 10).is_empty());
        assert_eq!(t.pings_due(later + PING_INTERVAL, 10).len(), 1);
    }
}
