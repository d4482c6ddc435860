//! Which connections the swarm keeps: the duplicate-connection rule, incoming peers at the
//! connection limit (evict a useless peer or refuse), the courtesy a refused peer still
//! gets (our bitfield, BEP 10 handshake, one BEP 11 `ut_pex` message, BEP 9 metadata: see
//! [`crate::session::courtesy`]), and connections handed over by the metadata fetch.

use std::net::SocketAddr;

use tokio::time::Instant;

use super::{keep_new_duplicate, Io, SwarmCore, DUPLICATE};
use crate::id::PeerId;
use crate::peer::pex::MAX_ADDED;
use crate::session::courtesy::{pick_contacts, CourtesySlot, MAX_CONCURRENT};
use crate::session::idle::{eviction_victim, EvictStat};

/// Why a connection is not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The address sent corrupt data before.
    Banned,
    /// At the connection limit, and no connected peer is useless enough to make room.
    Full,
    /// At the limit and every courtesy slot is taken: closed without a word.
    NoCourtesySlot,
    /// A metadata-fetch connection of a private torrent (the fetch offered PEX before it
    /// knew the torrent is private, BEP 27).
    Private,
    /// A metadata-fetch connection while we have pieces: what we have must be the first
    /// thing a peer hears (BEP 3, BEP 6), and the fetch said `have none`.
    HavePieces,
}

/// What becomes of an incoming connection (its handshake done).
#[derive(Debug)]
pub(crate) enum Incoming {
    /// Kept: the driver starts its task.
    Admit,
    /// Closed at once.
    Close(Refusal),
    /// Refused at the connection limit, with a courtesy first (the driver runs it, holding
    /// `slot` until it ends). `pex`: the contacts its `ut_pex` message names (none for a
    /// private torrent).
    Courtesy {
        slot: CourtesySlot,
        pex: Vec<(SocketAddr, u8)>,
    },
}

impl SwarmCore {
    /// A new connection to a peer we are already connected to (same peer id *and* IP: a
    /// peer id alone could be forged to push a real peer out)? `Err(())`: close the new
    /// one. `Ok(alt)`: keep it (an old duplicate was dropped; `alt` is its dialled
    /// address, for the new peer's `alt_dial`).
    ///
    /// Two connections to one peer (both sides dialled, having found each other through the
    /// DHT or PEX at once) would count twice for the choker and the picker: in a 50-leecher
    /// flash crowd 15 of each peer's 65 connections were such duplicates.
    pub(in crate::session::swarm) fn duplicate(
        &mut self,
        peer_id: &PeerId,
        addr: SocketAddr,
        outgoing: bool,
        now: Instant,
        io: &mut impl Io,
    ) -> Result<Option<SocketAddr>, ()> {
        let dup = self
            .peers
            .iter()
            .find(|(_, p)| p.peer_id == *peer_id && p.addr.ip() == addr.ip())
            .map(|(k, p)| (*k, p.outgoing));
        let Some((old, old_outgoing)) = dup else {
            return Ok(None);
        };
        // The address of a dialled duplicate stays "connected" in the candidate table
        // while the kept connection lives; whoever keeps it frees it when it closes.
        if !keep_new_duplicate(&self.our_id, peer_id, outgoing, old_outgoing) {
            tracing::debug!(%addr, "duplicate connection closed");
            if let Some(p) = self.peers.get_mut(&old).filter(|_| outgoing) {
                p.alt_dial = Some(addr);
            }
            return Err(());
        }
        let alt = self.peers.get(&old).filter(|p| p.outgoing).map(|p| p.addr);
        self.drop_peer(old, DUPLICATE, now, io);
        Ok(alt)
    }

    /// An incoming connection from `addr` arrives. Below the hard limit it is admitted; at
    /// the limit only by evicting a peer that is useless to us (rate-limited and never a
    /// recent newcomer, see [`eviction_victim`]). Otherwise it is refused, with a courtesy
    /// while courtesy slots last: in a flash crowd the refused peer learns where the rest
    /// of the swarm is instead of waiting for its next DHT or tracker round.
    pub(in crate::session::swarm) fn on_incoming(
        &mut self,
        addr: SocketAddr,
        now: Instant,
        io: &mut impl Io,
    ) -> Incoming {
        if self.banned.contains(&addr) {
            return Incoming::Close(Refusal::Banned);
        }
        if self.admit_incoming(now, io) {
            return Incoming::Admit;
        }
        let Some(slot) = self.courtesy.try_take(MAX_CONCURRENT) else {
            return Incoming::Close(Refusal::NoCourtesySlot);
        };
        let pex = if self.limits.private {
            Vec::new()
        } else {
            let contacts = self.pex_contacts();
            pick_contacts(&contacts, addr.ip(), MAX_ADDED, &mut self.rng)
        };
        tracing::debug!(%addr, "refused at the peer limit (courtesy)");
        Incoming::Courtesy { slot, pex }
    }

    /// Room for one more incoming peer: below the hard limit, or by evicting a useless one.
    fn admit_incoming(&mut self, now: Instant, io: &mut impl Io) -> bool {
        if self.peers.len() < self.limits.hard_limit() {
            return true;
        }
        let stats: Vec<EvictStat> = self
            .peers
            .iter()
            .map(|(k, p)| EvictStat {
                key: *k,
                connected_at: p.connected_at,
                am_interested: p.am_interested,
                peer_interested: p.peer_interested,
                is_seed: p.has.is_full(),
            })
            .collect();
        let Some(victim) = eviction_victim(&stats, self.complete(), now, self.last_eviction) else {
            return false;
        };
        self.last_eviction = Some(now);
        self.drop_peer(victim, "evicted for an incoming peer", now, io);
        true
    }

    /// A connection from the metadata fetch (handshakes done; `outgoing`: the fetch dialled
    /// it): a peer like any other, if it may be one. `Err`: it is closed, and the driver
    /// makes its listen address a candidate like any other ([`Self::add_candidate`]).
    pub(in crate::session::swarm) fn admit_handed(
        &mut self,
        addr: SocketAddr,
        outgoing: bool,
        now: Instant,
    ) -> Result<(), Refusal> {
        if self.limits.private {
            return Err(Refusal::Private);
        }
        if !self.picker.have().none() {
            return Err(Refusal::HavePieces);
        }
        if self.banned.contains(&addr) {
            return Err(Refusal::Banned);
        }
        if self.peers.len() >= self.limits.hard_limit() {
            return Err(Refusal::Full);
        }
        if outgoing {
            self.cands.mark_connected(addr, now);
        }
        Ok(())
    }
}
