//! Knowing our own external address and whether peers can reach us.
//!
//! External address, from three sources:
//! - a port mapping's answer (UPnP IGD / NAT-PMP / PCP, given to [`Reach::set_mapping`]):
//!   the router itself says it, so it wins;
//! - the DHT's BEP 42 consensus (the `ip` field of KRPC responses, which the DHT node only
//!   reports once several distinct nodes agreed): counts as a full quorum;
//! - BEP 10 `yourip` from peers' extended handshakes: one vote per peer IP, and an address
//!   needs [`QUORUM`] distinct voters, so one peer (or one host with many connections)
//!   cannot move it.
//!
//! Reachability ([`Reachable`]): `yes` once a BitTorrent handshake arrived over an incoming
//! connection from a remote address ([`is_remote`]) or a port mapping succeeded; `no` when
//! [`WARN_AFTER`] passed with neither (then [`ReachStatus::warning`] says which port to
//! forward, TCP and UDP); `unknown` before that.
//!
//! Pure ([`ReachState`], time as an argument) plus a locked wrapper the session shares.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Distinct voters an address needs before it is believed.
pub const QUORUM: usize = 3;
/// Candidate addresses tracked at most (a flood of lies cannot grow memory).
const MAX_CANDIDATES: usize = 16;
/// Voters remembered at most (the oldest vote's voter is forgotten first).
const MAX_VOTERS: usize = 256;
/// No incoming connection this long after start: warn that nobody seems able to reach us.
pub const WARN_AFTER: Duration = Duration::from_secs(10 * 60);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachable {
    Yes,
    #[default]
    Unknown,
    No,
}

impl Reachable {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reachable::Yes => "yes",
            Reachable::Unknown => "unknown",
            Reachable::No => "no",
        }
    }
}

/// What is known now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReachStatus {
    pub external_addr: Option<IpAddr>,
    pub reachable: Reachable,
    /// Our listen port (what to forward).
    pub port: Option<u16>,
}

impl ReachStatus {
    /// The warning to show when nobody could reach us (`reachable: no`).
    pub fn warning(&self) -> Option<String> {
        let port = self.port?;
        (self.reachable == Reachable::No).then(|| {
            format!(
                "warning: no peer has connected to us in {} minutes; peers behind other routers \
                 cannot reach this machine. Forward TCP port {port} and UDP port {port} on your \
                 router to this machine (or enable UPnP or NAT-PMP on the router)",
                WARN_AFTER.as_secs() / 60
            )
        })
    }
}

/// Is an incoming connection from `peer` proof that the outside can reach us?
///
/// Normally only a globally routable address is: a peer on our LAN (or this host) reaches
/// us whatever the router does. One exception makes the rule testable on loopback: a
/// session bound to one specific loopback address (`127.0.0.x`, as the tests bind) lives in
/// a network of loopback addresses, where every address other than its own is remote.
pub fn is_remote(peer: IpAddr, bind: Option<IpAddr>) -> bool {
    let peer = canonical(peer);
    let bind = bind.map(canonical);
    if Some(peer) == bind {
        return false;
    }
    if bind.is_some_and(|b| b.is_loopback()) {
        return true;
    }
    is_global(peer)
}

/// Not loopback, private, link-local, shared (CGNAT), unspecified, multicast or
/// documentation space.
pub fn is_global(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_documentation()
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The pure state.
#[derive(Debug)]
pub struct ReachState {
    bind: Option<IpAddr>,
    port: Option<u16>,
    started: Instant,
    /// Voter → the address it reported (one vote per voter: a new report replaces its old).
    votes: BTreeMap<IpAddr, IpAddr>,
    /// Voters in the order they first voted (to forget the oldest past MAX_VOTERS).
    voters: std::collections::VecDeque<IpAddr>,
    dht: Option<IpAddr>,
    mapping: Option<SocketAddr>,
    incoming_remote: bool,
}

impl ReachState {
    /// `listen`: our listen address (None: we accept no connections, reachability stays
    /// unknown).
    pub fn new(listen: Option<SocketAddr>, now: Instant) -> Self {
        ReachState {
            bind: listen.map(|a| a.ip()).filter(|ip| !ip.is_unspecified()),
            port: listen.map(|a| a.port()),
            started: now,
            votes: BTreeMap::new(),
            voters: Default::default(),
            dht: None,
            mapping: None,
            incoming_remote: false,
        }
    }

    /// A peer at `voter` said our address is `reported` (BEP 10 `yourip`). A loopback
    /// address is no external address, except for a session bound to one (the loopback
    /// network of tests, as in [`is_remote`]).
    pub fn vote(&mut self, voter: IpAddr, reported: IpAddr) {
        let (voter, reported) = (canonical(voter), canonical(reported));
        let loopback_world = self.bind.is_some_and(|b| b.is_loopback());
        if reported.is_unspecified()
            || reported.is_multicast()
            || (reported.is_loopback() && !loopback_world)
        {
            return;
        }
        let known = self.votes.contains_key(&voter);
        let mut tally: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for ip in self.votes.values() {
            *tally.entry(*ip).or_default() += 1;
        }
        if !tally.contains_key(&reported) && tally.len() >= MAX_CANDIDATES {
            // Full of candidates: one that a single voter named makes room (liars cannot
            // keep the truth out by naming many addresses once each).
            let Some(lone) = tally.iter().find(|(_, n)| **n == 1).map(|(ip, _)| *ip) else {
                return;
            };
            self.votes.retain(|_, ip| *ip != lone);
            self.voters
                .retain(|v| self.votes.contains_key(v) || *v == voter);
        }
        if !known {
            if self.voters.len() >= MAX_VOTERS {
                if let Some(old) = self.voters.pop_front() {
                    self.votes.remove(&old);
                }
            }
            self.voters.push_back(voter);
        }
        self.votes.insert(voter, reported);
    }

    /// The DHT's BEP 42 consensus on our address.
    pub fn dht(&mut self, ip: Option<IpAddr>) {
        self.dht = ip.map(canonical);
    }

    /// A port mapping's external address (None: no mapping, or it was lost).
    pub fn set_mapping(&mut self, external: Option<SocketAddr>) {
        self.mapping = external;
    }

    /// A BitTorrent handshake over an incoming connection from `peer`.
    pub fn incoming(&mut self, peer: IpAddr) {
        if is_remote(peer, self.bind) {
            self.incoming_remote = true;
        }
    }

    /// The address with the most distinct voters, if it has a quorum (the DHT's consensus
    /// counting as one).
    pub fn external_addr(&self) -> Option<IpAddr> {
        if let Some(m) = self.mapping {
            if !m.ip().is_unspecified() {
                return Some(canonical(m.ip()));
            }
        }
        let mut tally: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for ip in self.votes.values() {
            *tally.entry(*ip).or_default() += 1;
        }
        if let Some(d) = self.dht {
            *tally.entry(d).or_default() += QUORUM;
        }
        let best = tally.values().copied().max()?;
        if best < QUORUM {
            return None;
        }
        let mut leaders = tally.iter().filter(|(_, n)| **n == best);
        let first = leaders.next().map(|(ip, _)| *ip);
        // A tie is no answer.
        if leaders.next().is_some() {
            return None;
        }
        first
    }

    pub fn reachable(&self, now: Instant) -> Reachable {
        if self.incoming_remote || self.mapping.is_some() {
            Reachable::Yes
        } else if self.port.is_some() && now.saturating_duration_since(self.started) >= WARN_AFTER {
            Reachable::No
        } else {
            Reachable::Unknown
        }
    }

    pub fn status(&self, now: Instant) -> ReachStatus {
        ReachStatus {
            external_addr: self.external_addr(),
            reachable: self.reachable(now),
            port: self.port,
        }
    }
}

/// [`ReachState`] shared by the session's tasks.
#[derive(Debug)]
pub struct Reach(Mutex<ReachState>);

impl Reach {
    pub fn new(listen: Option<SocketAddr>) -> Self {
        Reach(Mutex::new(ReachState::new(listen, Instant::now())))
    }

    fn with<T>(&self, f: impl FnOnce(&mut ReachState) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn vote(&self, voter: IpAddr, reported: IpAddr) {
        self.with(|s| s.vote(voter, reported));
    }

    pub fn dht(&self, ip: Option<IpAddr>) {
        self.with(|s| s.dht(ip));
    }

    pub fn set_mapping(&self, external: Option<SocketAddr>) {
        self.with(|s| s.set_mapping(external));
    }

    pub fn incoming(&self, peer: IpAddr) {
        self.with(|s| s.incoming(peer));
    }

    pub fn status(&self) -> ReachStatus {
        self.with(|s| s.status(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn state(listen: &str) -> (ReachState, Instant) {
        let t0 = Instant::now();
        (ReachState::new(Some(listen.parse().unwrap()), t0), t0)
    }

    #[test]
    fn one_peer_cannot_move_our_address() {
        let (mut s, _) = state("0.0.0.0:6881");
        // One liar, however often it says it.
        for _ in 0..100 {
            s.vote(ip("198.51.100.9"), ip("203.0.113.66"));
        }
        assert_eq!(s.external_addr(), None);
        // Two honest peers: still short of the quorum.
        s.vote(ip("198.51.100.1"), ip("203.0.113.5"));
        s.vote(ip("198.51.100.2"), ip("203.0.113.5"));
        assert_eq!(s.external_addr(), None);
        s.vote(ip("198.51.100.3"), ip("203.0.113.5"));
        assert_eq!(s.external_addr(), Some(ip("203.0.113.5")));
        // An IPv4-mapped voter is the same voter.
        s.vote(ip("::ffff:198.51.100.1"), ip("203.0.113.66"));
        s.vote(ip("198.51.100.2"), ip("203.0.113.66"));
        // 66 now has 3 voters (9, 1, 2), 5 has one: the address moved only because three
        // distinct voters said so.
        assert_eq!(s.external_addr(), Some(ip("203.0.113.66")));
    }

    #[test]
    fn ties_loopback_and_floods_are_no_answer() {
        let (mut s, _) = state("0.0.0.0:6881");
        for i in 1..=3u8 {
            s.vote(IpAddr::from([10, 0, 0, i]), ip("203.0.113.1"));
            s.vote(IpAddr::from([10, 0, 1, i]), ip("203.0.113.2"));
            s.vote(IpAddr::from([10, 0, 2, i]), ip("127.0.0.1"));
            s.vote(IpAddr::from([10, 0, 3, i]), ip("0.0.0.0"));
        }
        assert_eq!(s.external_addr(), None);
        // Thousands of voters with thousands of addresses: bounded memory.
        let mut s = ReachState::new(None, Instant::now());
        for i in 0..5000u32 {
            let v = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            s.vote(v, IpAddr::from((0xcb00_7100 + i).to_be_bytes()));
        }
        assert!(s.votes.len() <= MAX_VOTERS);
        assert!(s.voters.len() <= MAX_VOTERS);
        let distinct: BTreeSet<_> = s.votes.values().collect();
        assert!(distinct.len() <= MAX_CANDIDATES);
        // The truth still gets in after the flood.
        for i in 1..=3u8 {
            s.vote(IpAddr::from([192, 0, 2, i]), ip("203.0.113.200"));
        }
        assert_eq!(s.external_addr(), Some(ip("203.0.113.200")));
        // A session bound to one loopback address takes loopback votes (tests).
        let (mut s, _) = state("127.0.0.40:7000");
        for i in 1..=3u8 {
            s.vote(IpAddr::from([127, 0, 0, i]), ip("127.0.0.40"));
        }
        assert_eq!(s.external_addr(), Some(ip("127.0.0.40")));
    }

    #[test]
    fn the_dht_consensus_and_a_mapping_count_more() {
        let (mut s, _) = state("0.0.0.0:6881");
        s.dht(Some(ip("203.0.113.7")));
        assert_eq!(s.external_addr(), Some(ip("203.0.113.7")));
        s.vote(ip("198.51.100.1"), ip("203.0.113.8"));
        assert_eq!(s.external_addr(), Some(ip("203.0.113.7")));
        s.set_mapping(Some("192.0.2.44:40000".parse().unwrap()));
        assert_eq!(s.external_addr(), Some(ip("192.0.2.44")));
        s.set_mapping(None);
        assert_eq!(s.external_addr(), Some(ip("203.0.113.7")));
    }

    #[test]
    fn reachable_transitions() {
        let (mut s, t0) = state("0.0.0.0:6881");
        assert_eq!(s.reachable(t0), Reachable::Unknown);
        // Incoming from the LAN or this host proves nothing.
        s.incoming(ip("192.168.1.20"));
        s.incoming(ip("127.0.0.1"));
        s.incoming(ip("fe80::1"));
        assert_eq!(
            s.reachable(t0 + WARN_AFTER - Duration::from_secs(1)),
            Reachable::Unknown
        );
        let st = s.status(t0 + WARN_AFTER);
        assert_eq!(st.reachable, Reachable::No);
        let w = st.warning().unwrap();
        assert!(w.contains("TCP port 6881 and UDP port 6881"), "{w}");
        // A remote peer gets in: yes, for good.
        s.incoming(ip("93.184.216.34"));
        assert_eq!(s.reachable(t0 + WARN_AFTER), Reachable::Yes);
        assert_eq!(s.status(t0 + WARN_AFTER).warning(), None);

        // A successful mapping is yes at once.
        let (mut s, t0) = state("0.0.0.0:6881");
        s.set_mapping(Some("192.0.2.44:6881".parse().unwrap()));
        assert_eq!(s.reachable(t0), Reachable::Yes);

        // Not listening: never a warning.
        let s = ReachState::new(None, t0);
        assert_eq!(s.reachable(t0 + WARN_AFTER * 10), Reachable::Unknown);
        assert_eq!(s.status(t0 + WARN_AFTER * 10).warning(), None);
    }

    #[test]
    fn on_one_loopback_address_every_other_address_is_remote() {
        let bind = Some(ip("127.0.0.33"));
        assert!(!is_remote(ip("127.0.0.33"), bind));
        assert!(!is_remote(ip("::ffff:127.0.0.33"), bind));
        assert!(is_remote(ip("127.0.0.34"), bind));
        // A host bound to everything: only global addresses.
        assert!(!is_remote(ip("127.0.0.34"), None));
        assert!(!is_remote(ip("10.1.2.3"), None));
        assert!(!is_remote(ip("100.64.0.1"), None));
        assert!(!is_remote(ip("fd00::1"), None));
        assert!(is_remote(ip("8.8.8.8"), None));
        assert!(is_remote(ip("2a00:1450::1"), Some(ip("192.168.1.2"))));
        let (mut s, t0) = state("127.0.0.33:7000");
        s.incoming(ip("127.0.0.33"));
        assert_eq!(s.reachable(t0), Reachable::Unknown);
        s.incoming(ip("127.0.0.34"));
        assert_eq!(s.reachable(t0), Reachable::Yes);
    }
}
