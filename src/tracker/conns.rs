//! Admission of HTTP connections to the tracker server ([`super::server`]): the defences
//! against slowloris (clients that open many connections and send their request head a byte
//! at a time, to hold every slot). Pure: the server asks [`ConnTable::admit`] on each
//! accept and tells it when a head is complete ([`ConnTable::head_done`]) and when a
//! connection ends ([`ConnTable::release`]).
//!
//! 1. **Per-address cap.** At most `per_addr` connections from one source (an IPv4 address,
//!    or an IPv6 /64, the smallest block a host is usually given); further ones are refused
//!    on arrival. A few addresses can then hold only a few caps' worth of the global slots.
//! 2. **Short head timeout under pressure.** A connection admitted while more than half of
//!    the slots are in use gets `pressure_timeout` (2 s) instead of `head_timeout` (10 s) to
//!    send its request head: a real client sends it in one packet.
//! 3. **Eviction when full.** Accepts never wait for a slot (a waiting accept leaves
//!    honest clients queued in the kernel behind the attackers' connections). When every
//!    slot is taken, the oldest connection of the source holding the most connections
//!    makes room, preferring connections still sending their head; an honest client,
//!    whose request is answered at once, is almost never that connection.
//!
//! Everything is bounded by `max_conns`: the table holds at most that many entries.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// Limits of the HTTP server's connection table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once, in all.
    pub max_conns: usize,
    /// Connections open at once from one source address (IPv4) or /64 (IPv6).
    pub per_addr: usize,
    /// Time a client gets to send its request head.
    pub head_timeout: Duration,
    /// That time for a connection admitted while more than half the slots are in use.
    pub pressure_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_conns: 256,
            per_addr: 32,
            head_timeout: Duration::from_secs(10),
            pressure_timeout: Duration::from_secs(2),
        }
    }
}

/// Whom connections are counted against: an IPv4 address or an IPv6 /64 prefix
/// (IPv4-mapped IPv6 addresses count as their IPv4 address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    V4(u32),
    V6Prefix(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// What to do with a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Serve it as connection `id`; its request head must be complete by `head_deadline`.
    /// `evicted` is a connection to close first to make room.
    Accept {
        id: u64,
        head_deadline: Instant,
        evicted: Option<u64>,
    },
    /// Its source already has `per_addr` connections: close it at once.
    Refuse,
}

#[derive(Debug)]
struct Entry {
    source: Source,
    /// Still receiving its request head (not yet answering it).
    in_head: bool,
}

/// The open HTTP connections (see the module doc).
#[derive(Debug)]
pub struct ConnTable {
    limits: ConnLimits,
    next_id: u64,
    /// By id, which is also the order of arrival.
    conns: BTreeMap<u64, Entry>,
    per_source: HashMap<Source, usize>,
}

impl ConnTable {
    pub fn new(limits: ConnLimits) -> Self {
        ConnTable {
            limits: ConnLimits {
                max_conns: limits.max_conns.max(1),
                per_addr: limits.per_addr.max(1),
                ..limits
            },
            next_id: 0,
            conns: BTreeMap::new(),
            per_source: HashMap::new(),
        }
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether connection `id` is still open (not released, not evicted).
    pub fn contains(&self, id: u64) -> bool {
        self.conns.contains_key(&id)
    }

    /// Decides about a connection from `ip` accepted at `now`.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Admit {
        let source = Source::of(ip);
        if self.per_source.get(&source).copied().unwrap_or(0) >= self.limits.per_addr {
            return Admit::Refuse;
        }
        let evicted = if self.conns.len() >= self.limits.max_conns {
            let v = self.victim();
            if let Some(v) = v {
                self.release(v);
            }
            v
        } else {
            None
        };
        let timeout = if self.conns.len() * 2 > self.limits.max_conns {
            self.limits.pressure_timeout
        } else {
            self.limits.head_timeout
        };
        let id = self.next_id;
        self.next_id += 1;
        self.conns.insert(
            id,
            Entry {
                source,
                in_head: true,
            },
        );
        *self.per_source.entry(source).or_insert(0) += 1;
        Admit::Accept {
            id,
            head_deadline: now + timeout,
            evicted,
        }
    }

    /// The connection to evict: of the source with the most connections, the oldest one
    /// still in its head (any of its connections if none is). Ties between sources go to the
    /// one whose candidate is older. One pass over at most `max_conns` entries.
    fn victim(&self) -> Option<u64> {
        let mut best: Option<(bool, usize, u64)> = None;
        for (&id, e) in &self.conns {
            let n = self.per_source.get(&e.source).copied().unwrap_or(0);
            let rank = (e.in_head, n);
            // Iteration is oldest first, so only a strictly better rank replaces.
            if best.is_none_or(|(h, c, _)| rank > (h, c)) {
                best = Some((e.in_head, n, id));
            }
        }
        best.map(|(_, _, id)| id)
    }

    /// Connection `id` has sent its whole request head: it is being answered now.
    pub fn head_done(&mut self, id: u64) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.in_head = false;
        }
    }

    /// Connection `id` ended (a no-op if it was evicted or released already).
    pub fn release(&mut self, id: u64) {
        let Some(e) = self.conns.remove(&id) else {
            return;
        };
        if let Some(n) = self.per_source.get_mut(&e.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&e.source);
            }
        }
    }

    /// Connections open from `ip`'s source.
    #[cfg(test)]
    pub fn count_from(&self, ip: IpAddr) -> usize {
        self.per_source.get(&Source::of(ip)).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(max: usize, per: usize) -> ConnLimits {
        ConnLimits {
            max_conns: max,
            per_addr: per,
            ..ConnLimits::default()
        }
    }

    fn accept(t: &mut ConnTable, a: &str, now: Instant) -> (u64, Instant, Option<u64>) {
        match t.admit(ip(a), now) {
            Admit::Accept {
                id,
                head_deadline,
                evicted,
            } => (id, head_deadline, evicted),
            Admit::Refuse => panic!("{a} refused"),
        }
    }

    #[test]
    fn per_address_cap_refuses_and_frees() {
        let mut t = ConnTable::new(limits(100, 3));
        let now = Instant::now();
        let ids: Vec<u64> = (0..3).map(|_| accept(&mut t, "10.0.0.1", now).0).collect();
        assert_eq!(t.admit(ip("10.0.0.1"), now), Admit::Refuse);
        // Another address is not affected; IPv4-mapped IPv6 is the same address.
        accept(&mut t, "10.0.0.2", now);
        assert_eq!(t.admit(ip("::ffff:10.0.0.1"), now), Admit::Refuse);
        t.release(ids[1]);
        t.release(ids[1]); // twice: harmless
        assert_eq!(t.count_from(ip("10.0.0.1")), 2);
        accept(&mut t, "10.0.0.1", now);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn ipv6_counts_per_slash_64() {
        let mut t = ConnTable::new(limits(100, 2));
        let now = Instant::now();
        accept(&mut t, "2001:db8:1:2::1", now);
        accept(&mut t, "2001:db8:1:2:ffff::9", now);
        assert_eq!(t.admit(ip("2001:db8:1:2::77"), now), Admit::Refuse);
        accept(&mut t, "2001:db8:1:3::1", now);
    }

    #[test]
    fn head_timeout_shortens_past_half_full() {
        let l = limits(4, 4);
        let mut t = ConnTable::new(l);
        let now = Instant::now();
        assert_eq!(accept(&mut t, "10.0.0.1", now).1, now + l.head_timeout);
        assert_eq!(accept(&mut t, "10.0.0.1", now).1, now + l.head_timeout);
        // Two of four in use: not more than half yet.
        assert_eq!(accept(&mut t, "10.0.0.1", now).1, now + l.head_timeout);
        assert_eq!(accept(&mut t, "10.0.0.2", now).1, now + l.pressure_timeout);
    }

    #[test]
    fn full_table_evicts_oldest_head_of_busiest_source() {
        let mut t = ConnTable::new(limits(6, 4));
        let now = Instant::now();
        let a0 = accept(&mut t, "10.0.0.1", now).0;
        let b0 = accept(&mut t, "10.0.0.2", now).0;
        let b1 = accept(&mut t, "10.0.0.2", now).0;
        let b2 = accept(&mut t, "10.0.0.2", now).0;
        let a1 = accept(&mut t, "10.0.0.1", now).0;
        let c0 = accept(&mut t, "10.0.0.3", now).0;
        assert_eq!(t.len(), 6);
        // 10.0.0.2 holds the most; its oldest goes.
        let (n0, _, ev) = accept(&mut t, "10.0.0.9", now);
        assert_eq!(ev, Some(b0));
        assert!(!t.contains(b0));
        assert_eq!(t.len(), 6);
        // 10.0.0.1 and 10.0.0.2 now hold two each. a0 is the oldest of them, but it is
        // being answered: b1, the oldest still in its head, goes.
        t.head_done(a0);
        let (_, _, ev) = accept(&mut t, "10.0.0.8", now);
        assert_eq!(ev, Some(b1));
        // 10.0.0.1 alone holds two: its connection in its head goes, not a0.
        let (_, _, ev) = accept(&mut t, "10.0.0.7", now);
        assert_eq!(ev, Some(a1));
        assert!(t.contains(a0) && t.contains(b2) && t.contains(c0) && t.contains(n0));
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn all_answering_still_makes_room() {
        let mut t = ConnTable::new(limits(2, 2));
        let now = Instant::now();
        let a = accept(&mut t, "10.0.0.1", now).0;
        let b = accept(&mut t, "10.0.0.2", now).0;
        t.head_done(a);
        t.head_done(b);
        assert_eq!(accept(&mut t, "10.0.0.3", now).2, Some(a));
    }

    #[test]
    fn bounded_under_any_sequence() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut t = ConnTable::new(limits(16, 3));
        let now = Instant::now();
        let mut open = Vec::new();
        for _ in 0..5000 {
            match rng.random_range(0..4) {
                0 if !open.is_empty() => {
                    let i = rng.random_range(0..open.len());
                    t.release(open.swap_remove(i));
                }
                1 if !open.is_empty() => t.head_done(open[rng.random_range(0..open.len())]),
                _ => {
                    let a = IpAddr::from([10, 0, 0, rng.random_range(0..8u8)]);
                    if let Admit::Accept { id, evicted, .. } = t.admit(a, now) {
                        open.push(id);
                        if let Some(e) = evicted {
                            open.retain(|&x| x != e);
                        }
                    }
                }
            }
            assert!(t.len() <= 16);
            assert_eq!(t.len(), open.len());
            assert_eq!(t.per_source.values().sum::<usize>(), t.len());
            assert!(t.per_source.values().all(|&n| (1..=3).contains(&n)));
        }
    }
}
