//! Which candidate the swarm dials next, and when (BEP 3 leaves this to the client): the
//! candidate table ([`crate::session::cands`]) fed by every source (DHT, trackers, PEX per
//! BEP 11, incoming peers' listen ports), the half-open limit, the peer limits, and what a
//! dial's outcome does to its address (connected, backed off, forgotten).
//!
//! Dials go out as [`Action::Connect`], in the order they are decided; the driver runs the
//! connect and handshake and reports back through [`SwarmCore::on_dialled`].

use std::net::SocketAddr;

use tokio::time::Instant;

use super::{Action, Io, SwarmCore};
use crate::peer::pex::{FLAG_SEED, MAX_ADDED};

/// How a dial ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialled {
    /// Connected and handshaken: the driver adds the peer next.
    Connected,
    /// The handshake met our own peer id: an address of ours we could not know (e.g. a
    /// NAT's external one). Never dialled again.
    Ourselves,
    /// Connect or handshake failed: backed off, forgotten after a few failures in a row.
    Failed,
}

impl SwarmCore {
    /// An address heard of (`seed`: flagged as a seed). Never our own, a banned one, port 0
    /// or an unspecified IP.
    pub(in crate::session::swarm) fn add_candidate(
        &mut self,
        a: SocketAddr,
        seed: bool,
        now: Instant,
    ) {
        if a.port() == 0
            || a.ip().is_unspecified()
            || self.banned.contains(&a)
            || self.own.is_own(a)
        {
            return;
        }
        self.cands.add(a, seed, now);
    }

    /// An address from the session's sources (DHT, trackers, `x.pe`, `--peer`): a
    /// candidate, dialled at once if there is room.
    pub(in crate::session::swarm) fn on_addr(
        &mut self,
        a: SocketAddr,
        now: Instant,
        io: &mut impl Io,
    ) {
        self.add_candidate(a, false, now);
        self.connect_more(now, io);
    }

    /// A peer's PEX message (BEP 11): its `added` addresses (at most [`MAX_ADDED`] of them)
    /// become candidates, the seed flag decides their queue. False: ignored (a private
    /// torrent takes peers only from trackers and incoming connections, BEP 27).
    pub(in crate::session::swarm) fn on_pex(
        &mut self,
        addrs: Vec<(SocketAddr, u8)>,
        now: Instant,
        io: &mut impl Io,
    ) -> bool {
        if self.limits.private {
            return false;
        }
        for (a, f) in addrs.into_iter().take(MAX_ADDED) {
            self.add_candidate(a, f & FLAG_SEED != 0, now);
        }
        self.connect_more(now, io);
        true
    }

    /// Dials candidates: known seeds first, up to `max_peers` + `incoming_slack` (a leecher
    /// full of other leechers still reaches a seed it learns of: the seed is the one peer
    /// that has every piece, and the slack bounds how far over the limit that takes us);
    /// then everyone else up to `max_peers`.
    pub(in crate::session::swarm) fn connect_more(&mut self, now: Instant, io: &mut impl Io) {
        if self.complete() {
            // A seed dials leechers too, up to half the limit (it needs no more than its
            // upload slots and some choice): leechers that filled their peer lists with
            // each other before it finished never come to it, and in a flash crowd the
            // first finishers then sat idle with no peers while the rest were short of
            // uploaders (docs/simulation.md). Known seeds are never dialled by a seed.
            self.dial_from_queue(false, self.limits.max_peers / 2, now, io);
            return;
        }
        self.dial_from_queue(true, self.limits.hard_limit(), now, io);
        self.dial_from_queue(false, self.limits.max_peers, now, io);
    }

    /// Dials due candidates of one queue while the half-open count and `limit` (connected
    /// plus half-open peers) allow.
    fn dial_from_queue(&mut self, seeds: bool, limit: usize, now: Instant, io: &mut impl Io) {
        let room = self
            .limits
            .max_half_open
            .saturating_sub(self.half_open)
            .min(limit.saturating_sub(self.peers.len() + self.half_open));
        if room == 0 {
            return;
        }
        for a in self.cands.take_due(seeds, room, now) {
            self.half_open += 1;
            io.act(Action::Connect(a));
        }
    }

    /// A dial ([`Action::Connect`]) ended. The driver then adds a connected peer
    /// ([`Self::duplicate`], [`Self::add_peer`]) and calls [`Self::connect_more`]: the slot
    /// this dial held is free.
    pub(in crate::session::swarm) fn on_dialled(
        &mut self,
        addr: SocketAddr,
        how: Dialled,
        now: Instant,
    ) {
        self.half_open = self.half_open.saturating_sub(1);
        match how {
            Dialled::Connected => self.cands.connected(addr),
            Dialled::Ourselves => {
                self.own.learn(addr);
                self.cands.remove(&addr);
            }
            Dialled::Failed => self.cands.failed(addr, now),
        }
    }

    /// A dial's task ended without an outcome (it panicked): its half-open slot is free;
    /// its address stays `connecting` and is not dialled again.
    pub(in crate::session::swarm) fn on_dial_lost(&mut self) {
        self.half_open = self.half_open.saturating_sub(1);
    }

    /// A peer's connection closed (its task ended): it leaves the table, and its slot may
    /// go to a candidate.
    pub(in crate::session::swarm) fn on_closed(
        &mut self,
        key: crate::torrent::PeerKey,
        why: &str,
        now: Instant,
        io: &mut impl Io,
    ) {
        if self.peers.contains_key(&key) {
            self.drop_peer(key, why, now, io);
            self.connect_more(now, io);
        }
    }

    /// Candidate addresses known.
    pub(in crate::session::swarm) fn known_peers(&self) -> usize {
        self.cands.len()
    }
}
