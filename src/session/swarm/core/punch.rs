//! Holepunching (BEP 55) decisions: as the relay, introduce two connected peers to each
//! other (`rendezvous` in, `connect` out to both, or an `error`); as either end, dial the
//! endpoint a `connect` names over uTP; as the initiator, ask the peer that told us of an
//! address through PEX (BEP 11, with the holepunch flag) to introduce us when our own dial
//! to it failed.
//!
//! Both ends dial at once, so each end's NAT has sent towards the other before the other's
//! SYN arrives (see docs/simnet.md, NAT). Both uTP connections may complete; the
//! duplicate-connection rule keeps the same one at both ends. A punched connection is
//! counted once, by the end that asked for the rendezvous, when a connection to the target
//! is added while a `connect` for it is fresh.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::{Action, Io, SwarmCore};
use crate::peer::holepunch::{HolepunchError, HolepunchMsg};
use crate::peer::pex::FLAG_HOLEPUNCH;
use crate::session::peer_task::PeerCmd;
use crate::torrent::PeerKey;

/// Rendezvous requests one peer may make of us per [`RELAY_WINDOW`]; more are ignored.
pub(crate) const MAX_RELAYED: u32 = 20;
const RELAY_WINDOW: Duration = Duration::from_secs(60);
/// We ask for the same target at most this often.
const ASK_AGAIN: Duration = Duration::from_secs(60);
/// A connection to a target within this long after its `connect` counts as punched.
const PUNCH_WINDOW: Duration = Duration::from_secs(30);
/// Addresses (PEX relays, asks, punches in flight) remembered at most, each.
const MAX_TRACKED: usize = 1024;

/// What the core remembers for holepunching.
#[derive(Default)]
pub(crate) struct Punch {
    /// We have a uTP socket: advertise ut_holepunch, act on `connect`, ask for rendezvous.
    pub(crate) enabled: bool,
    /// PEX contacts flagged holepunch-capable, and the peer that told us of each.
    relays: BTreeMap<SocketAddr, PeerKey>,
    relay_order: VecDeque<SocketAddr>,
    /// Rendezvous we asked for, by target.
    asked: BTreeMap<SocketAddr, Instant>,
    /// `connect`s we acted on, by target.
    punching: BTreeMap<SocketAddr, Instant>,
    /// Rendezvous served per requesting peer: window start and count.
    relayed: BTreeMap<PeerKey, (Instant, u32)>,
    /// Connections that came of a rendezvous we asked for.
    pub(crate) punched: u64,
    /// Rendezvous answered with an `error`.
    refused: u64,
    /// Targets we asked for whose punch dial failed, while no connection from them came
    /// either (the other end's dial may still get through: then it is a success).
    dial_failed: BTreeSet<SocketAddr>,
    /// The errors relays answered our rendezvous with, by code.
    pub(crate) errors: BTreeMap<HolepunchError, u64>,
    /// `connect`s sent as a relay (two per introduction).
    pub(crate) relayed_connects: u64,
}

impl Punch {
    /// Rendezvous we asked for that failed: refused by the relay, or neither end's uTP
    /// dial got through.
    pub(crate) fn failed(&self) -> u64 {
        self.refused + self.dial_failed.len() as u64
    }

    /// A peer left: its rendezvous allowance goes with it.
    pub(crate) fn forget_peer(&mut self, key: PeerKey) {
        self.relayed.remove(&key);
    }
}

/// Forgets entries older than `age` once the map is full.
fn prune(m: &mut BTreeMap<SocketAddr, Instant>, now: Instant, age: Duration) {
    if m.len() >= MAX_TRACKED {
        m.retain(|_, t| now.saturating_duration_since(*t) < age);
    }
}

impl SwarmCore {
    /// Enables holepunching (the driver has a uTP socket to punch with).
    pub(in crate::session::swarm) fn with_holepunch(mut self, enabled: bool) -> Self {
        self.punch.enabled = enabled;
        self
    }

    pub(in crate::session::swarm) fn punch_stats(&self) -> &Punch {
        &self.punch
    }

    /// The peer sent its extended handshake again: it may announce ut_holepunch now.
    pub(in crate::session::swarm) fn on_ext_update(&mut self, key: PeerKey, holepunch: bool) {
        if let Some(p) = self.peers.get_mut(&key) {
            p.ext.get_or_insert_with(Default::default).holepunch = holepunch;
        }
    }

    /// A PEX message from `from`: its holepunch-capable contacts can be reached through it.
    pub(in crate::session::swarm) fn learn_relays(
        &mut self,
        from: PeerKey,
        addrs: &[(SocketAddr, u8)],
    ) {
        if !self.punch.enabled || self.limits.private {
            return;
        }
        let p = &mut self.punch;
        for (a, _) in addrs.iter().filter(|(_, f)| f & FLAG_HOLEPUNCH != 0) {
            if p.relays.insert(*a, from).is_none() {
                p.relay_order.push_back(*a);
                if p.relay_order.len() > MAX_TRACKED {
                    if let Some(old) = p.relay_order.pop_front() {
                        p.relays.remove(&old);
                    }
                }
            }
        }
    }

    /// Our dial to `a` failed: if a connected peer told us of it and both of us speak
    /// ut_holepunch, ask that peer to introduce us.
    pub(in crate::session::swarm) fn rendezvous_after_failure(
        &mut self,
        a: SocketAddr,
        now: Instant,
        io: &mut impl Io,
    ) {
        if !self.punch.enabled || self.connected_to(a).is_some() {
            return;
        }
        let Some(&relay) = self.punch.relays.get(&a) else {
            return;
        };
        let supports = self
            .peers
            .get(&relay)
            .is_some_and(|p| p.ext.as_ref().is_some_and(|e| e.holepunch));
        if !supports {
            return;
        }
        if let Some(t) = self.punch.asked.get(&a) {
            if now.saturating_duration_since(*t) < ASK_AGAIN {
                return;
            }
        }
        prune(&mut self.punch.asked, now, ASK_AGAIN);
        self.punch.asked.insert(a, now);
        tracing::debug!(target = %a, "asking for a holepunch rendezvous");
        io.act(Action::Send(
            relay,
            PeerCmd::Holepunch(HolepunchMsg::Rendezvous(a)),
        ));
    }

    /// A ut_holepunch message from peer `key`.
    pub(in crate::session::swarm) fn on_holepunch(
        &mut self,
        key: PeerKey,
        m: HolepunchMsg,
        now: Instant,
        io: &mut impl Io,
    ) {
        // BEP 55: messages from a peer that did not announce the extension are ignored.
        let announced = self
            .peers
            .get(&key)
            .is_some_and(|p| p.ext.as_ref().is_some_and(|e| e.holepunch));
        if !self.punch.enabled || !announced {
            return;
        }
        match m {
            HolepunchMsg::Rendezvous(t) => self.relay(key, t, now, io),
            HolepunchMsg::Connect(a) => self.punch_to(a, now, io),
            HolepunchMsg::Error(a, e) => {
                tracing::debug!(target = %a, ?e, "holepunch rendezvous refused");
                if self.punch.asked.contains_key(&a) {
                    self.punch.refused += 1;
                    *self.punch.errors.entry(e).or_default() += 1;
                }
            }
        }
    }

    /// The relay's part: introduce `key` to the peer at `t`, or say why not.
    fn relay(&mut self, key: PeerKey, t: SocketAddr, now: Instant, io: &mut impl Io) {
        let slot = self.punch.relayed.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(slot.0) >= RELAY_WINDOW {
            *slot = (now, 0);
        }
        if slot.1 >= MAX_RELAYED {
            return; // a flood: ignored silently
        }
        slot.1 += 1;
        let Some(from) = self
            .peers
            .get(&key)
            .map(|p| p.dial_addr().unwrap_or(p.addr))
        else {
            return;
        };
        let answer = if t.port() == 0 || t.ip().is_unspecified() {
            Err(HolepunchError::NoSuchPeer)
        } else if self.own.is_own(t) {
            Err(HolepunchError::NoSelf)
        } else {
            match self.connected_to(t).filter(|k| *k != key) {
                None => Err(HolepunchError::NotConnected),
                Some(k) => {
                    let ok = self.peers[&k].ext.as_ref().is_some_and(|e| e.holepunch);
                    if ok {
                        Ok(k)
                    } else {
                        Err(HolepunchError::NoSupport)
                    }
                }
            }
        };
        match answer {
            Ok(target) => {
                tracing::debug!(%from, to = %t, "relaying a holepunch");
                self.punch.relayed_connects += 2;
                io.act(Action::Send(
                    target,
                    PeerCmd::Holepunch(HolepunchMsg::Connect(from)),
                ));
                io.act(Action::Send(
                    key,
                    PeerCmd::Holepunch(HolepunchMsg::Connect(t)),
                ));
            }
            Err(e) => {
                io.act(Action::Send(
                    key,
                    PeerCmd::Holepunch(HolepunchMsg::Error(t, e)),
                ));
            }
        }
    }

    /// An end's part: dial `a` over uTP now (the other end does the same).
    fn punch_to(&mut self, a: SocketAddr, now: Instant, io: &mut impl Io) {
        // BEP 55: already connected, or not a peer we want: ignore silently.
        if a.port() == 0
            || a.ip().is_unspecified()
            || self.connected_to(a).is_some()
            || self.banned.contains(&a)
            || self.own.is_own(a)
            || self.punch.punching.contains_key(&a)
        {
            return;
        }
        prune(&mut self.punch.punching, now, PUNCH_WINDOW);
        if self.punch.punching.len() >= MAX_TRACKED {
            return;
        }
        self.punch.punching.insert(a, now);
        io.act(Action::Punch(a));
    }

    /// A punch dial ended; a connected one is added as a peer next.
    pub(in crate::session::swarm) fn on_punch_dialled(&mut self, a: SocketAddr, ok: bool) {
        let p = &mut self.punch;
        if !ok && p.asked.contains_key(&a) && p.dial_failed.len() < MAX_TRACKED {
            p.dial_failed.insert(a);
        }
    }

    /// A peer at `addr` was added: a punch we asked for succeeded if one was under way.
    pub(super) fn count_punched(&mut self, addr: SocketAddr, now: Instant) {
        let fresh = self
            .punch
            .punching
            .get(&addr)
            .is_some_and(|t| now.saturating_duration_since(*t) < PUNCH_WINDOW);
        if fresh {
            self.punch.punching.remove(&addr);
            self.punch.dial_failed.remove(&addr);
            if self.punch.asked.remove(&addr).is_some() {
                self.punch.punched += 1;
            }
        }
    }

    /// The connected peer reachable at (or connected from) `a`.
    fn connected_to(&self, a: SocketAddr) -> Option<PeerKey> {
        self.peers
            .iter()
            .find(|(_, p)| p.addr == a || p.dial_addr() == Some(a))
            .map(|(k, _)| *k)
    }
}
