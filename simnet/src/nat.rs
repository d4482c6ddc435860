//! NAT models for simulated hosts, in RFC 4787's terms (mapping and filtering behaviour).
//!
//! A NATed host keeps its own address as its public one (one device behind its own router),
//! so only ports are translated, and only for datagrams: stream connects into a NATed host
//! are dropped unless it had sent to that exact address (see [`Nat::admits_syn`]), since a
//! stream's SYN goes to a listening port no outbound flow ever mapped.
//!
//! - [`NatKind::Home`]: endpoint-independent mapping (the external port is the local port,
//!   for every destination) and address-dependent filtering: a datagram gets in from any
//!   port of an IP the host has sent to. The common home router.
//! - [`NatKind::PortRestricted`]: endpoint-independent mapping, address- and port-dependent
//!   filtering: only from the exact address (IP and port) the host has sent to.
//! - [`NatKind::Symmetric`]: address- and port-dependent mapping: every (local port,
//!   destination) gets its own fresh external port, and only that destination may answer
//!   on it. An address learned by a third party (a tracker, a relay) is useless to anyone
//!   else, so holepunching fails.
//!
//! The table is bounded (`NetworkConfig::nat_table` mappings; the oldest is forgotten first).

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

/// How a NAT maps and filters (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// Endpoint-independent mapping, address-dependent filtering (the common home NAT).
    Home,
    /// Endpoint-independent mapping, address- and port-dependent filtering (`nat(true)`).
    PortRestricted,
    /// A new external port per destination, filtered to that destination.
    Symmetric,
}

/// First external port a symmetric NAT hands out (then upwards, wrapping back here).
const FIRST_MAPPED: u16 = 30_000;

/// One host's NAT: its mappings and what it lets in.
pub(crate) struct Nat {
    kind: NatKind,
    limit: usize,
    /// Mappings in creation order, oldest first: (local port, remote). Endpoint-independent
    /// kinds key every mapping with local port 0 (the filter is per host, as it always was).
    order: VecDeque<(u16, SocketAddr)>,
    /// (local port, remote) -> external port.
    out: BTreeMap<(u16, SocketAddr), u16>,
    /// Symmetric only: external port -> (local port, the one remote allowed to use it).
    back: BTreeMap<u16, (u16, SocketAddr)>,
    /// Mappings per exact remote address, and per remote IP.
    remotes: BTreeMap<SocketAddr, u32>,
    ips: BTreeMap<IpAddr, u32>,
    next_port: u16,
}

impl Nat {
    pub(crate) fn new(kind: NatKind, limit: usize) -> Self {
        Nat {
            kind,
            limit: limit.max(1),
            order: VecDeque::new(),
            out: BTreeMap::new(),
            back: BTreeMap::new(),
            remotes: BTreeMap::new(),
            ips: BTreeMap::new(),
            next_port: FIRST_MAPPED,
        }
    }

    /// A datagram leaves local port `local` for `remote`: the external port it carries.
    pub(crate) fn outbound(&mut self, local: u16, remote: SocketAddr) -> u16 {
        let key = match self.kind {
            NatKind::Symmetric => (local, remote),
            NatKind::Home | NatKind::PortRestricted => (0, remote),
        };
        if let Some(&ext) = self.out.get(&key) {
            return if self.kind == NatKind::Symmetric {
                ext
            } else {
                local
            };
        }
        let ext = match self.kind {
            NatKind::Symmetric => self.fresh_port(),
            NatKind::Home | NatKind::PortRestricted => local,
        };
        self.out.insert(key, ext);
        if self.kind == NatKind::Symmetric {
            self.back.insert(ext, (local, remote));
        }
        *self.remotes.entry(remote).or_default() += 1;
        *self.ips.entry(remote.ip()).or_default() += 1;
        self.order.push_back(key);
        if self.order.len() > self.limit {
            if let Some(old) = self.order.pop_front() {
                self.forget(old);
            }
        }
        if self.kind == NatKind::Symmetric {
            ext
        } else {
            local
        }
    }

    /// A datagram from `from` reaches external port `ext`: the local port it goes to, or
    /// `None` if the NAT drops it.
    pub(crate) fn inbound(&self, ext: u16, from: SocketAddr) -> Option<u16> {
        match self.kind {
            NatKind::Home => self.ips.contains_key(&from.ip()).then_some(ext),
            NatKind::PortRestricted => self.remotes.contains_key(&from).then_some(ext),
            NatKind::Symmetric => match self.back.get(&ext) {
                Some(&(local, remote)) if remote == from => Some(local),
                _ => None,
            },
        }
    }

    /// A stream connect from `from` gets in only if the host had sent to that exact address.
    pub(crate) fn admits_syn(&self, from: SocketAddr) -> bool {
        self.remotes.contains_key(&from)
    }

    /// The host went down: the router forgets every mapping.
    pub(crate) fn clear(&mut self) {
        self.order.clear();
        self.out.clear();
        self.back.clear();
        self.remotes.clear();
        self.ips.clear();
    }

    fn forget(&mut self, key: (u16, SocketAddr)) {
        let Some(ext) = self.out.remove(&key) else {
            return;
        };
        if self.kind == NatKind::Symmetric {
            self.back.remove(&ext);
        }
        let remote = key.1;
        dec(&mut self.remotes, remote);
        dec(&mut self.ips, remote.ip());
    }

    /// The next external port no live mapping uses.
    fn fresh_port(&mut self) -> u16 {
        loop {
            let p = self.next_port;
            self.next_port = if p == u16::MAX { FIRST_MAPPED } else { p + 1 };
            if !self.back.contains_key(&p) {
                return p;
            }
        }
    }
}

fn dec<K: Ord>(m: &mut BTreeMap<K, u32>, k: K) {
    if let Some(n) = m.get_mut(&k) {
        *n -= 1;
        if *n == 0 {
            m.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn home_nat_keeps_the_port_and_filters_by_ip() {
        let mut n = Nat::new(NatKind::Home, 16);
        assert_eq!(n.inbound(6881, sa("10.0.0.1:6881")), None, "unsolicited");
        assert_eq!(n.outbound(6881, sa("10.0.0.1:6881")), 6881);
        assert_eq!(n.inbound(6881, sa("10.0.0.1:6881")), Some(6881));
        // Any port of that IP gets in (address-dependent filtering)...
        assert_eq!(n.inbound(6881, sa("10.0.0.1:7000")), Some(6881));
        // ...but no other IP.
        assert_eq!(n.inbound(6881, sa("10.0.0.2:6881")), None);
        // Streams: only the exact address.
        assert!(n.admits_syn(sa("10.0.0.1:6881")));
        assert!(!n.admits_syn(sa("10.0.0.1:7000")));
    }

    #[test]
    fn port_restricted_nat_filters_by_address_and_port() {
        let mut n = Nat::new(NatKind::PortRestricted, 16);
        assert_eq!(n.outbound(6881, sa("10.0.0.1:6881")), 6881);
        assert_eq!(n.outbound(5000, sa("10.0.0.3:1")), 5000);
        assert_eq!(n.inbound(6881, sa("10.0.0.1:6881")), Some(6881));
        assert_eq!(n.inbound(6881, sa("10.0.0.1:7000")), None);
    }

    #[test]
    fn symmetric_nat_maps_each_destination_to_its_own_port() {
        let mut n = Nat::new(NatKind::Symmetric, 16);
        let a = n.outbound(6881, sa("10.0.0.1:6881"));
        let b = n.outbound(6881, sa("10.0.0.2:6881"));
        assert_ne!(a, 6881);
        assert_ne!(a, b, "a new external port per destination");
        assert_eq!(
            n.outbound(6881, sa("10.0.0.1:6881")),
            a,
            "the mapping is kept"
        );
        assert_eq!(n.inbound(a, sa("10.0.0.1:6881")), Some(6881));
        // Only that destination may use it; the local port itself is closed.
        assert_eq!(n.inbound(a, sa("10.0.0.2:6881")), None);
        assert_eq!(n.inbound(a, sa("10.0.0.1:7000")), None);
        assert_eq!(n.inbound(6881, sa("10.0.0.1:6881")), None);
        assert_eq!(n.inbound(b, sa("10.0.0.2:6881")), Some(6881));
    }

    #[test]
    fn the_table_is_bounded_oldest_first_and_cleared() {
        let mut n = Nat::new(NatKind::Symmetric, 2);
        let a = n.outbound(1, sa("10.0.0.1:1"));
        let b = n.outbound(1, sa("10.0.0.2:1"));
        let c = n.outbound(1, sa("10.0.0.3:1"));
        assert_eq!(n.inbound(a, sa("10.0.0.1:1")), None, "forgotten");
        assert_eq!(n.inbound(b, sa("10.0.0.2:1")), Some(1));
        assert_eq!(n.inbound(c, sa("10.0.0.3:1")), Some(1));
        let mut h = Nat::new(NatKind::Home, 1);
        h.outbound(1, sa("10.0.0.1:1"));
        h.outbound(1, sa("10.0.0.2:1"));
        assert_eq!(h.inbound(1, sa("10.0.0.1:9")), None);
        assert_eq!(h.inbound(1, sa("10.0.0.2:9")), Some(1));
        h.clear();
        assert_eq!(h.inbound(1, sa("10.0.0.2:9")), None);
    }
}
