//! The torrent actor's decisions, without I/O: which blocks to request from whom, which
//! blocks to keep, when a piece is ready for its hash check, interest (BEP 3), choking
//! rounds, smart bans after failed checks, PEX contacts (BEP 11), the duplicate-connection
//! rule, holepunching (BEP 55, [`punch`]), and blocks from web seeds (BEP 19) on the same
//! path as peers' blocks. BEP 6's
//! `have all` counts like a full bitfield; BEP 10's extended handshake arrives as
//! [`SwarmCore::on_ext`]. Its submodules hold the connection side: [`dial`] (which
//! candidate is dialled next, and when), [`admit`] (which connection is kept, evicted or
//! refused with a courtesy) and [`web`] (which web seed fetches what, and its strikes).
//!
//! The core owns the picker, the choker, the peer table (decision state only: no channels),
//! the candidate table and ban list, the web seeds' schedule, the in-progress piece
//! buffers, idle tracking and the counters. Time comes in as `now`.
//! Effects go out as [`Action`]s through [`Io::act`], one at a time and in the order the
//! decisions are made: the driver ([`super::Swarm`]) sends, spawns and writes as each one
//! arrives, so tasks wake in the same order as before the split and simulations stay
//! byte-identical. `act` answers whether a peer took a command: a peer that is not reading
//! is dropped on the spot, before the next decision, as it always was.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::time::Instant;

use super::TransportBytes;
use crate::id::PeerId;
use crate::net::Transport;
use crate::peer::pex::PexSender;
use crate::peer::wire::BlockRef as WireBlock;
use crate::peer::Message;
use crate::session::cands::Candidates;
use crate::session::courtesy::CourtesySlots;
use crate::session::idle::{BanList, IdlePeers};
use crate::session::own::OwnAddrs;
use crate::session::peer_task::{PeerCmd, PeerCounters, PeerExt};
use crate::torrent::choker::{Choker, ChokerConfig, PeerStat, WASTE_AFTER};
use crate::torrent::pipeline::{Pipeline, PipelineConfig};
use crate::torrent::ratelimit::{RateEstimator, TokenBucket};
use crate::torrent::verify::PieceBlocks;
use crate::torrent::{Bitfield, BlockRef, BlockStatus, Layout, PeerKey, Picker};

/// Why a connection between two seeds is closed (BEP 3: neither has anything for the
/// other; libtorrent's `close_redundant_connections` does the same). A seed's slots go to
/// leechers instead: in a flash crowd the first finishers otherwise stay connected to each
/// other and upload at a third of their capacity while the rest wait (docs/simulation.md).
/// The address goes to the seed queue, which a seed never dials.
pub(super) const BOTH_SEEDS: &str = "both seeds";
/// Why the second of two connections to one peer is closed (see [`SwarmCore::duplicate`]).
pub(super) const DUPLICATE: &str = "duplicate connection";
/// Mutual uninterest this long makes a peer a candidate for dropping at the peer limit.
const IDLE_DROP_AFTER: Duration = Duration::from_secs(60);
/// Banned addresses remembered at most (oldest forgotten first).
const MAX_BANNED: usize = 4096;

mod admit;
mod dial;
mod punch;
mod web;

pub(crate) use admit::Incoming;
pub(crate) use dial::Dialled;
pub(crate) use web::FETCH_BYTES;

/// The connection limits of one torrent (from [`super::SwarmConfig`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Connected peers we aim for (outgoing connects stop here).
    pub max_peers: usize,
    /// Extra room for incoming connections and known seeds beyond `max_peers`.
    pub incoming_slack: usize,
    /// Outgoing connects in flight at once.
    pub max_half_open: usize,
    /// Candidate addresses remembered at most.
    pub max_candidates: usize,
    /// BEP 27 private torrent: no PEX, and no connection handed over by the metadata fetch.
    pub private: bool,
}

impl Limits {
    pub(crate) fn of(cfg: &super::SwarmConfig) -> Self {
        Limits {
            max_peers: cfg.max_peers,
            incoming_slack: cfg.incoming_slack,
            max_half_open: cfg.max_half_open,
            max_candidates: cfg.max_candidates,
            private: cfg.private,
        }
    }

    /// Connections we never exceed: `max_peers` plus the room kept for incoming peers and
    /// known seeds (`incoming_slack`).
    fn hard_limit(&self) -> usize {
        self.max_peers + self.incoming_slack
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::of(&super::SwarmConfig::default())
    }
}

/// One effect of a decision, for the driver to carry out.
#[derive(Debug)]
pub(crate) enum Action {
    /// A command for the peer's task. The driver answers whether the peer took it.
    Send(PeerKey, PeerCmd),
    /// All blocks of `piece` are in: hash it (and write it when it matches). Digests of
    /// the blocks are wanted back when the picker has to tell senders apart (smart ban).
    Check {
        piece: u32,
        blocks: PieceBlocks,
        want_digests: bool,
    },
    /// `piece` passed its check and is on disk (for resume data).
    Verified(u32),
    /// The peer is gone from the table (its task was told to close): forget its task.
    Dropped(PeerKey),
    /// Dial this candidate (connect and handshake); the driver reports the outcome with
    /// [`SwarmCore::on_dialled`].
    Connect(SocketAddr),
    /// Dial this address over uTP for a holepunch (BEP 55); the driver reports the outcome
    /// with [`SwarmCore::on_punch_dialled`] and adds the peer.
    Punch(SocketAddr),
    /// Fetch these blocks (sorted) from web seed number `seed` over HTTP; the driver reports
    /// the outcome with [`SwarmCore::on_web_fetched`].
    Fetch { seed: usize, blocks: Vec<BlockRef> },
}

/// Where the core's actions go. The driver executes each at once; tests record them.
pub(crate) trait Io {
    /// Carries out `a`; false only for a [`Action::Send`] the peer did not take.
    fn act(&mut self, a: Action) -> bool;
}

/// What the core knows about one connected peer.
pub(crate) struct Peer {
    pub(super) addr: SocketAddr,
    /// From its handshake (duplicate connections are told apart by it).
    pub(super) peer_id: PeerId,
    pub(super) transport: Transport,
    pub(super) has: Bitfield,
    pub(super) peer_choking: bool,
    pub(super) am_interested: bool,
    pub(super) peer_interested: bool,
    pub(super) am_choking: bool,
    pipeline: Pipeline,
    /// Shared with the peer's task, which counts what it uploads.
    pub(super) counters: Arc<PeerCounters>,
    down: RateEstimator,
    up: RateEstimator,
    pub(super) up_seen: u64,
    /// Last time this peer received payload from us, or was unchoked (whichever is later):
    /// the choker's "wasting a slot" test.
    last_served: Instant,
    /// `counters.uploaded` when we last unchoked it (the choker's quota).
    up_at_unchoke: u64,
    pub(super) connected_at: Instant,
    pub(super) ext: Option<PeerExt>,
    requested_at: BTreeMap<BlockRef, Instant>,
    /// We dialled this address (so it is one others can dial too).
    pub(super) outgoing: bool,
    /// An address of this peer we dialled for a duplicate connection that was closed
    /// instead of this one (see [`SwarmCore::duplicate`]).
    alt_dial: Option<SocketAddr>,
    /// BEP 11: what we have told this peer about our other peers.
    pex: PexSender,
}

impl Peer {
    pub(super) fn new(
        addr: SocketAddr,
        peer_id: PeerId,
        transport: Transport,
        outgoing: bool,
        counters: Arc<PeerCounters>,
        num_pieces: u32,
        now: Instant,
    ) -> Self {
        Peer {
            addr,
            peer_id,
            transport,
            has: Bitfield::new(num_pieces),
            peer_choking: true,
            am_interested: false,
            peer_interested: false,
            am_choking: true,
            // At least 8 in flight; the pipeline's slow-start window grows it on fast
            // links (loopback needs hundreds), and a deeper floor would reserve blocks
            // at slow peers that faster ones could deliver (it was 32: flash crowds
            // measured 0.713 vs 0.724 efficiency, loopback no faster).
            pipeline: Pipeline::new(
                PipelineConfig {
                    min_depth: 8,
                    ..PipelineConfig::default()
                },
                now,
            ),
            counters,
            down: RateEstimator::default_at(now),
            up: RateEstimator::default_at(now),
            up_seen: 0,
            last_served: now,
            up_at_unchoke: 0,
            connected_at: now,
            ext: None,
            requested_at: BTreeMap::new(),
            outgoing,
            alt_dial: None,
            pex: PexSender::new(),
        }
    }

    /// Unchoked, yet it has taken nothing from us for [`WASTE_AFTER`] (the choker's
    /// work-conserving rule).
    fn wasting(&self, now: Instant) -> bool {
        !self.am_choking && now.saturating_duration_since(self.last_served) >= WASTE_AFTER
    }

    /// Unchoked, and had its quota (see [`Choker::had_quota`]).
    fn over_quota(&mut self, choker: &Choker, now: Instant, seeding: bool) -> bool {
        !self.am_choking
            && choker.had_quota(self.sent_since_unchoke(), self.down.rate(now), seeding)
    }

    /// Payload bytes sent since we last unchoked it (0 while choked).
    fn sent_since_unchoke(&self) -> u64 {
        if self.am_choking {
            0
        } else {
            self.counters.uploaded.load(Ordering::Relaxed) - self.up_at_unchoke
        }
    }

    /// Payload bytes per second recently: (received from it, sent to it).
    pub(super) fn rates(&mut self, now: Instant) -> (u64, u64) {
        (self.down.rate(now), self.up.rate(now))
    }

    /// (we choke it, it chokes us, we are interested, it is interested).
    pub(super) fn flags(&self) -> (bool, bool, bool, bool) {
        (
            self.am_choking,
            self.peer_choking,
            self.am_interested,
            self.peer_interested,
        )
    }

    /// The address others could dial to reach this peer, if known.
    pub(super) fn dial_addr(&self) -> Option<SocketAddr> {
        if self.outgoing {
            return Some(self.addr);
        }
        match self.ext.as_ref()?.listen_port {
            Some(port) if port != 0 => Some(SocketAddr::new(self.addr.ip(), port)),
            _ => None,
        }
    }
}

/// The torrent's decision state; see the module docs.
pub(crate) struct SwarmCore {
    layout: Arc<Layout>,
    our_id: PeerId,
    pub(super) picker: Picker,
    pub(super) choker: Choker,
    pub(super) peers: BTreeMap<PeerKey, Peer>,
    idle: IdlePeers,
    /// Pieces in progress, as their received blocks (no copy into a piece buffer).
    buffers: BTreeMap<u32, PieceBlocks>,
    /// Inside a batch of messages: `on_block` leaves the pipeline top-up to its end.
    batching: bool,
    /// Reused by `fill_requests` (no allocation per top-up).
    scratch: Vec<BlockRef>,
    down_limit: TokenBucket,
    pub(super) downloaded: u64,
    pub(super) down_rate: RateEstimator,
    pub(super) failed_pieces: u64,
    pub(super) bans: u64,
    /// Payload per transport, uploads collected at ticks and drops.
    pub(super) transport_bytes: TransportBytes,
    /// Last time a peer was evicted to admit an incoming one (churn guard).
    last_eviction: Option<Instant>,
    limits: Limits,
    /// Addresses to dial, their state and retry times.
    cands: Candidates,
    /// Addresses that sent corrupt data: never dialled or admitted again.
    banned: BanList,
    /// Our own addresses (shared with the session, which learns them too): never dialled.
    own: Arc<OwnAddrs>,
    /// Dials in flight (connect and handshake): the half-open count.
    half_open: usize,
    /// Courtesy connections running (see [`crate::session::courtesy`]).
    courtesy: CourtesySlots,
    /// Random choices of the connection logic (which contacts a refused peer is told).
    rng: StdRng,
    web: web::WebSeeds,
    /// Bytes of pieces handed out in `Action::Check` whose result has not come back.
    unwritten: u64,
    /// Past this many `unwritten` bytes no blocks are requested (disk backpressure).
    max_unwritten: u64,
    /// Holepunching state and counters (BEP 55).
    punch: punch::Punch,
}

impl SwarmCore {
    pub(super) fn new(
        layout: Arc<Layout>,
        our_id: PeerId,
        picker: Picker,
        choker: Choker,
        down_limit: TokenBucket,
        now: Instant,
    ) -> Self {
        SwarmCore {
            layout,
            our_id,
            picker,
            choker,
            peers: BTreeMap::new(),
            idle: IdlePeers::default(),
            buffers: BTreeMap::new(),
            batching: false,
            scratch: Vec::new(),
            down_limit,
            downloaded: 0,
            down_rate: RateEstimator::default_at(now),
            failed_pieces: 0,
            bans: 0,
            transport_bytes: TransportBytes::default(),
            last_eviction: None,
            limits: Limits::default(),
            cands: Candidates::new(Limits::default().max_candidates),
            banned: BanList::new(MAX_BANNED),
            own: Arc::new(OwnAddrs::default()),
            half_open: 0,
            courtesy: CourtesySlots::default(),
            rng: StdRng::seed_from_u64(0),
            web: web::WebSeeds::default(),
            unwritten: 0,
            max_unwritten: u64::MAX,
            punch: punch::Punch::default(),
        }
    }

    /// Connection limits, our own addresses (never dialled) and the RNG of the connection
    /// logic.
    pub(super) fn with_connections(
        mut self,
        limits: Limits,
        own: Arc<OwnAddrs>,
        rng: StdRng,
    ) -> Self {
        self.cands = Candidates::new(limits.max_candidates);
        self.limits = limits;
        self.own = own;
        self.rng = rng;
        self
    }

    /// Bounds the bytes waiting for hashing and writing ([`super::SwarmConfig::max_unwritten`]).
    pub(super) fn with_max_unwritten(mut self, bytes: u64) -> Self {
        self.max_unwritten = bytes.max(1);
        self
    }

    /// The disk is behind: no new requests until checks come back.
    fn disk_behind(&self) -> bool {
        self.unwritten >= self.max_unwritten
    }

    pub(super) fn complete(&self) -> bool {
        self.picker.is_complete()
    }

    // ---- the peer table ----------------------------------------------------------

    /// A connection the driver has started a task for (after [`SwarmCore::duplicate`]).
    pub(super) fn add_peer(&mut self, key: PeerKey, mut peer: Peer, alt: Option<SocketAddr>) {
        peer.alt_dial = alt;
        self.count_punched(peer.addr, peer.connected_at);
        self.peers.insert(key, peer);
    }

    /// Forgets the peer (its task is told to close): its requests go back to the picker,
    /// its pieces leave the availability counts, and a slot it held is given out again.
    pub(super) fn drop_peer(&mut self, key: PeerKey, why: &str, now: Instant, io: &mut impl Io) {
        let Some(p) = self.peers.remove(&key) else {
            return;
        };
        tracing::debug!(addr = %p.addr, why, "peer dropped");
        self.punch.forget_peer(key);
        let up = p.counters.uploaded.load(Ordering::Relaxed);
        self.transport_bytes.add(p.transport, up - p.up_seen);
        io.act(Action::Send(key, PeerCmd::Close));
        self.picker.on_peer_disconnected(key);
        self.picker.remove_peer_bitfield(&p.has);
        self.idle.remove(key);
        // The address we would dial (an incoming peer's listen address was marked
        // connected; it must become dialable again, or we would never reach it later).
        // A seed that closed us (usually: it was full) is retried sooner. A duplicate's
        // address stays with the connection that was kept.
        let a = p.dial_addr().unwrap_or(p.addr);
        let seed = p.has.is_full() || why == BOTH_SEEDS;
        io.act(Action::Dropped(key));
        if why != DUPLICATE {
            for a in [Some(a), p.alt_dial.filter(|alt| *alt != a)]
                .into_iter()
                .flatten()
            {
                self.cands.closed(a, seed, now);
            }
        }
        if !p.am_choking {
            self.choker.force_round();
        }
    }

    /// The peer's extended handshake (BEP 10) arrived. Returns its dialable address. An
    /// incoming peer's listen address is then connected: it is not dialled when DHT or PEX
    /// mention it.
    pub(super) fn on_ext(
        &mut self,
        key: PeerKey,
        ext: PeerExt,
        now: Instant,
    ) -> Option<SocketAddr> {
        let peer = self.peers.get_mut(&key)?;
        if let Some(q) = ext.reqq {
            peer.pipeline.set_reqq(q as usize);
        }
        let port = ext.listen_port;
        peer.ext = Some(ext);
        let listen = match (peer.outgoing, port) {
            (false, Some(p)) if p != 0 => Some(SocketAddr::new(peer.addr.ip(), p)),
            _ => None,
        };
        let dial = peer.dial_addr();
        if let Some(a) = listen {
            self.cands.mark_connected(a, now);
        }
        dial
    }

    // ---- messages ----------------------------------------------------------------

    /// Messages that arrived together: blocks among them top up the pipeline once, at the
    /// end (one request command, one socket write, per batch instead of per block).
    pub(super) fn on_batch(
        &mut self,
        key: PeerKey,
        ms: Vec<Message>,
        now: Instant,
        io: &mut impl Io,
    ) {
        self.batching = true;
        for m in ms {
            if let Err(why) = self.on_message(key, m, now, io) {
                self.batching = false;
                self.drop_peer(key, why, now, io);
                return;
            }
        }
        self.batching = false;
        self.fill_requests(key, now, io);
    }

    /// One message; `Err`: drop the peer for this reason.
    pub(super) fn on_message(
        &mut self,
        key: PeerKey,
        m: Message,
        now: Instant,
        io: &mut impl Io,
    ) -> Result<(), &'static str> {
        let n = self.layout.piece_count();
        let Some(peer) = self.peers.get_mut(&key) else {
            return Ok(());
        };
        if !matches!(m, Message::Piece { .. }) {
            tracing::trace!(addr = %peer.addr, msg = ?m, "message");
        }
        match m {
            Message::Bitfield(bytes) => {
                let bf = Bitfield::from_bytes(&bytes, n).map_err(|_| "bad bitfield")?;
                self.picker.remove_peer_bitfield(&peer.has);
                peer.has = bf;
                self.picker.add_peer_bitfield(&peer.has);
                if self.picker.is_complete() && peer.has.is_full() {
                    return Err(BOTH_SEEDS);
                }
                self.update_interest(key, now, io);
            }
            Message::HaveAll => {
                self.picker.remove_peer_bitfield(&peer.has);
                peer.has = Bitfield::full(n);
                self.picker.add_peer_bitfield(&peer.has);
                if self.picker.is_complete() {
                    return Err(BOTH_SEEDS);
                }
                self.update_interest(key, now, io);
            }
            Message::HaveNone => {}
            Message::Have(i) => {
                if i >= n {
                    return Err("have out of range");
                }
                if !peer.has.set(i) {
                    return Ok(()); // known already: nothing changes
                }
                self.picker.add_have(i);
                if self.picker.is_complete() && peer.has.is_full() {
                    return Err(BOTH_SEEDS);
                }
                // Only piece i is new: no scan of the peer's other pieces.
                if peer.am_interested {
                    self.fill_requests(key, now, io);
                } else if self.picker.requestable_piece(i) {
                    self.update_interest(key, now, io);
                }
            }
            // A repeated `choke` changes nothing (and must not cost a scan of every peer).
            Message::Choke if peer.peer_choking => {}
            Message::Choke => {
                peer.peer_choking = true;
                peer.requested_at.clear();
                self.picker.on_peer_choked(key);
                self.request_everywhere(now, io);
            }
            Message::Unchoke => {
                peer.peer_choking = false;
                self.fill_requests(key, now, io);
            }
            Message::Interested => {
                peer.peer_interested = true;
                let cfg = ChokerConfig::default();
                let slots = if self.picker.is_complete() {
                    cfg.seed_slots
                } else {
                    cfg.slots
                };
                if self.choker.current().peers.len() < slots + 1 {
                    self.choker.force_round();
                    self.run_choker(now, io);
                }
            }
            Message::NotInterested => {
                peer.peer_interested = false;
                if !peer.am_choking {
                    // An unchoked peer that wants nothing more wastes an upload slot until
                    // the next round: give the slot to someone who can use it now.
                    self.choker.force_round();
                    self.run_choker(now, io);
                }
            }
            Message::Piece { index, begin, data } => {
                self.on_block(key, index, begin, data, now, io);
            }
            Message::Reject(b) => {
                let r = to_block(b);
                peer.requested_at.remove(&r);
                self.picker.on_reject(key, r);
                self.fill_requests(key, now, io);
            }
            // Suggest, AllowedFast, Port, Request/Cancel (handled by the peer task): nothing
            // for the actor to decide yet.
            _ => {}
        }
        Ok(())
    }

    fn on_block(
        &mut self,
        key: PeerKey,
        index: u32,
        begin: u32,
        data: Bytes,
        now: Instant,
        io: &mut impl Io,
    ) {
        let len = data.len() as u64;
        self.downloaded += len;
        self.down_rate.record(now, len);
        let r = BlockRef {
            piece: index,
            offset: begin,
            len: data.len() as u32,
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        self.transport_bytes.add(peer.transport, len);
        let outstanding = peer.requested_at.len();
        let sent = peer.requested_at.remove(&r);
        peer.pipeline.on_block(now, len, sent, outstanding);
        peer.down.record(now, len);
        self.accept_block(key, r, data, io);
        if !self.batching {
            self.fill_requests(key, now, io);
        }
    }

    /// A block from a web seed (its `key` is the picker's name for the seed). Returns
    /// whether it was kept.
    pub(super) fn on_web_block(
        &mut self,
        key: PeerKey,
        r: BlockRef,
        data: Bytes,
        now: Instant,
        io: &mut impl Io,
    ) -> bool {
        let len = data.len() as u64;
        self.downloaded += len;
        self.down_rate.record(now, len);
        self.accept_block(key, r, data, io)
    }

    /// A block from `key` (a peer or a web seed; one path for both): kept if the picker
    /// asked `key` for it, the same block asked of others cancelled (endgame), and a
    /// complete piece handed to hashing. Returns whether the block was kept.
    fn accept_block(&mut self, key: PeerKey, r: BlockRef, data: Bytes, io: &mut impl Io) -> bool {
        let out = self.picker.on_block_received(key, r);
        tracing::trace!(?r, ?out.status, complete = out.piece_complete, "block");
        let accepted = out.status == BlockStatus::Accepted;
        if accepted {
            let plen = self.layout.piece_len(r.piece) as u32;
            self.buffers
                .entry(r.piece)
                .or_insert_with(|| PieceBlocks::new(plen, crate::torrent::BLOCK_SIZE))
                .insert(r.offset, data);
        }
        for (other, cr) in out.cancels {
            if let Some(o) = self.peers.get_mut(&other) {
                o.requested_at.remove(&cr);
                io.act(Action::Send(
                    other,
                    PeerCmd::Send(vec![Message::Cancel(to_wire(cr))]),
                ));
            }
        }
        if out.piece_complete {
            if let Some(blocks) = self.buffers.remove(&r.piece) {
                self.unwritten += self.layout.piece_len(r.piece);
                let want_digests = self.picker.needs_block_digests(r.piece);
                io.act(Action::Check {
                    piece: r.piece,
                    blocks,
                    want_digests,
                });
            }
        }
        accepted
    }

    // ---- checks and bans ---------------------------------------------------------

    /// A piece's check came back (storage errors never get here: they end the run).
    /// `digests`: per-block SHA-1s, when they were wanted or the piece failed.
    pub(super) fn on_checked(
        &mut self,
        piece: u32,
        ok: bool,
        digests: Option<&[[u8; 20]]>,
        now: Instant,
        io: &mut impl Io,
    ) {
        self.web_on_checked(piece, ok, now);
        let was_behind = self.disk_behind();
        self.unwritten = self.unwritten.saturating_sub(self.layout.piece_len(piece));
        if ok {
            let flagged = self.picker.on_piece_verified(piece, digests);
            self.ban(flagged, now, io);
            io.act(Action::Verified(piece));
            // `have` goes to every peer, also those that have the piece (BEP 3): only
            // then can a peer see that we became a seed — with the suppression other
            // clients use, two seeds that finished one after the other never learn it
            // and keep each other's slots (seen in flash crowds, docs/simulation.md).
            let mut dead = Vec::new();
            for k in self.peers.keys() {
                if !io.act(Action::Send(*k, PeerCmd::Send(vec![Message::Have(piece)]))) {
                    dead.push(*k);
                }
            }
            for k in dead {
                self.drop_peer(k, "not reading", now, io);
            }
            if was_behind && !self.disk_behind() {
                self.request_everywhere(now, io);
            }
        } else {
            tracing::warn!(piece, "piece failed its hash check");
            self.failed_pieces += 1;
            let flagged = self.picker.on_piece_failed(piece, digests);
            self.ban(flagged, now, io);
            self.request_everywhere(now, io);
        }
    }

    /// Smart ban: the picker names the peers whose blocks differed from the good copy of a
    /// piece that failed before, twice.
    fn ban(&mut self, flagged: Vec<PeerKey>, now: Instant, io: &mut impl Io) {
        for k in flagged {
            if let Some(p) = self.peers.get(&k) {
                tracing::warn!(addr = %p.addr, "banning peer: sent data for 2+ failed pieces");
                // Its listen address too (an incoming peer's differs from `addr`).
                for a in [Some(p.addr), p.dial_addr()].into_iter().flatten() {
                    self.banned.insert(a);
                    self.cands.remove(&a);
                }
                self.bans += 1;
            }
            self.drop_peer(k, "banned", now, io);
        }
    }

    // ---- interest and requests ---------------------------------------------------

    pub(super) fn update_interest(&mut self, key: PeerKey, now: Instant, io: &mut impl Io) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        // Interested while the peer has a piece we want *and could request now*, or still
        // owes us blocks. BEP 3 only asks for "has a piece we lack"; the narrower test
        // frees the peer's upload slot when everything it has for us is already on its way
        // from others (a flash crowd's first pieces: docs/simulation.md item 7).
        let want = !self.picker.is_complete()
            && (self.picker.outstanding(key) > 0 || self.picker.requestable(&p.has));
        if want != p.am_interested {
            p.am_interested = want;
            let m = if want {
                Message::Interested
            } else {
                Message::NotInterested
            };
            io.act(Action::Send(key, PeerCmd::Send(vec![m])));
        }
        if want {
            self.fill_requests(key, now, io);
        }
    }

    pub(super) fn request_everywhere(&mut self, now: Instant, io: &mut impl Io) {
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            // Requests were released (choke, failure): peers we lost interest in may have
            // something to request again.
            if self.peers.get(&k).is_some_and(|p| !p.am_interested) {
                self.update_interest(k, now, io);
            } else {
                self.fill_requests(k, now, io);
            }
        }
    }

    /// Streaming readers' windows (see [`Picker::set_focus`]): every pipeline is topped up
    /// at once, so an idle peer starts on them now.
    pub(super) fn set_focus(&mut self, pieces: Vec<u32>, now: Instant, io: &mut impl Io) {
        self.picker.set_focus(pieces);
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            // A reader waits for a piece nobody has asked for yet (a seek, or the window
            // moved): requests for other pieces give way, or it waits behind them.
            let waits = self
                .peers
                .get(&k)
                .is_some_and(|p| !p.peer_choking && self.picker.focus_waits(&p.has));
            if waits {
                let released = self.picker.release_outside_focus(k);
                if !released.is_empty() {
                    if let Some(p) = self.peers.get_mut(&k) {
                        for r in &released {
                            p.requested_at.remove(r);
                        }
                    }
                    tracing::trace!(n = released.len(), "requests cancelled for a reader");
                    let msgs = released
                        .iter()
                        .map(|&r| Message::Cancel(to_wire(r)))
                        .collect();
                    io.act(Action::Send(k, PeerCmd::Send(msgs)));
                }
            }
            self.fill_requests(k, now, io);
        }
    }

    /// Tops up `key`'s outstanding requests to its pipeline depth.
    pub(super) fn fill_requests(&mut self, key: PeerKey, now: Instant, io: &mut impl Io) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.peer_choking || !p.am_interested || self.unwritten >= self.max_unwritten {
            return;
        }
        let depth = p.pipeline.depth(now);
        let cur = self.picker.outstanding(key);
        if cur >= depth {
            return;
        }
        let mut want = depth - cur;
        // Top up in chunks of a quarter of the pipeline (at most 8 blocks): a peer that
        // sends one block per socket write would otherwise cost one request command and
        // one socket write per block. The pipeline stays at least 3/4 full.
        if cur > 0 && want < (depth / 4).min(8) {
            return;
        }
        if !self.down_limit.is_unlimited() {
            // Ask only for what the download limit lets in now.
            let mut n = 0;
            while n < want
                && self
                    .down_limit
                    .try_take(now, crate::torrent::BLOCK_SIZE as u64)
            {
                n += 1;
            }
            want = n;
            if want == 0 {
                return;
            }
        }
        self.scratch.clear();
        let mut out = std::mem::take(&mut self.scratch);
        self.picker.pick_blocks(key, &p.has, want, &mut out);
        if out.is_empty() {
            tracing::trace!(addr = %p.addr, want, "nothing to request");
            self.scratch = out;
            // Nothing owed and nothing to ask for: say so, so its slot goes to someone else.
            if cur == 0 && !self.picker.requestable(&self.peers[&key].has) {
                self.update_interest(key, now, io);
            }
            return;
        }
        tracing::trace!(addr = %p.addr, n = out.len(), "requesting");
        p.pipeline.on_requests_sent(now, cur > 0);
        let mut msgs = Vec::with_capacity(out.len());
        for r in &out {
            p.requested_at.insert(*r, now);
            msgs.push(Message::Request(to_wire(*r)));
        }
        if !io.act(Action::Send(key, PeerCmd::Send(msgs))) {
            self.scratch = out;
            self.drop_peer(key, "not reading", now, io);
            return;
        }
        out.clear();
        self.scratch = out;
    }

    // ---- choking -----------------------------------------------------------------

    /// A peer had its quota since its unchoke: when someone is waiting, the choker moves
    /// the slot now (it would at the next tick; a 256 KiB piece takes 0.2 s at a seed).
    pub(super) fn on_quota(&mut self, key: PeerKey, now: Instant, io: &mut impl Io) {
        let seeding = self.complete();
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.over_quota(&self.choker, now, seeding) && self.someone_waits() {
            self.choker.force_round();
            self.run_choker(now, io);
        }
    }

    /// A choked peer is interested: a slot that moves has somewhere to go.
    fn someone_waits(&self) -> bool {
        self.peers
            .values()
            .any(|p| p.am_choking && p.peer_interested)
    }

    pub(super) fn run_choker(&mut self, now: Instant, io: &mut impl Io) {
        let mut stats = Vec::with_capacity(self.peers.len());
        for (k, p) in self.peers.iter_mut() {
            stats.push(PeerStat {
                key: *k,
                interested: p.peer_interested,
                down_rate: p.down.rate(now),
                up_rate: p.up.rate(now),
                connected_at: p.connected_at,
                snubbed: p.pipeline.is_snubbed(),
                wasting: p.wasting(now),
                sent_since_unchoke: p.sent_since_unchoke(),
                pieces: p.has.count(),
                sent_total: p.counters.uploaded.load(Ordering::Relaxed),
            });
        }
        let seeding = self.complete();
        let Some(decision) = self.choker.tick(now, &stats, seeding) else {
            return;
        };
        let unchoked = decision.peers.clone();
        for (k, p) in self.peers.iter_mut() {
            let should_choke = !unchoked.contains(k);
            if should_choke != p.am_choking {
                p.am_choking = should_choke;
                p.last_served = now;
                p.up_at_unchoke = p.counters.uploaded.load(Ordering::Relaxed);
                io.act(Action::Send(
                    *k,
                    if should_choke {
                        PeerCmd::Choke
                    } else {
                        PeerCmd::Unchoke
                    },
                ));
            }
        }
    }

    /// We became a seed: two seeds have nothing to say to each other; tell the rest we want
    /// nothing, and give the upload slots out again at once (a seed ranks peers
    /// differently).
    pub(super) fn on_complete(&mut self, now: Instant, io: &mut impl Io) {
        let seeds: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.has.is_full())
            .map(|(k, _)| *k)
            .collect();
        for k in seeds {
            self.drop_peer(k, BOTH_SEEDS, now, io);
        }
        for (k, p) in self.peers.iter_mut() {
            if p.am_interested {
                p.am_interested = false;
                io.act(Action::Send(
                    *k,
                    PeerCmd::Send(vec![Message::NotInterested]),
                ));
            }
        }
        self.choker.force_round();
        self.run_choker(now, io);
    }

    // ---- periodic work -----------------------------------------------------------

    /// The periodic tick (every 500 ms): PEX messages, web-seed fetches, the peers'
    /// periodic decisions, then dialling.
    pub(super) fn tick(&mut self, now: Instant, io: &mut impl Io) {
        if !self.limits.private {
            self.send_pex(now, io);
        }
        self.web_fill(now, io);
        self.on_tick(now, io);
        self.connect_more(now, io);
    }

    /// The tick's decisions: snubbed peers' blocks go to others, uploads are collected,
    /// interest is renewed, idle peers are dropped at the limit, a choking round runs and
    /// every pipeline is topped up.
    fn on_tick(&mut self, now: Instant, io: &mut impl Io) {
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        // Snubbed peers: give their blocks to others.
        for k in &keys {
            let out = self.picker.outstanding(*k);
            if let Some(p) = self.peers.get_mut(k) {
                if p.pipeline.check_snub(now, out) {
                    p.requested_at.clear();
                    self.picker.release_requests(*k);
                }
                let up = p.counters.uploaded.load(Ordering::Relaxed);
                if up > p.up_seen {
                    p.last_served = now;
                }
                p.up.record(now, up - p.up_seen);
                self.transport_bytes.add(p.transport, up - p.up_seen);
                p.up_seen = up;
            }
        }
        // Interest follows what can be requested, which moves with every request elsewhere.
        for k in &keys {
            self.update_interest(*k, now, io);
        }
        self.drop_idle(now, self.limits.max_peers, io);
        // Work-conserving choker: a slot whose peer requests nothing moves now, not at the
        // next round, when someone else is waiting for one.
        let seeding = self.complete();
        let choker = &self.choker;
        let wasting = self
            .peers
            .values_mut()
            .any(|p| p.wasting(now) || p.over_quota(choker, now, seeding));
        if wasting && self.someone_waits() {
            self.choker.force_round();
        }
        self.run_choker(now, io);
        self.request_everywhere(now, io);
    }

    /// At the connection limit, a peer with which neither side has been interested for
    /// [`IDLE_DROP_AFTER`] only holds a slot another peer could use: drop it (a few per
    /// tick). Below the limit idle peers stay: they may get pieces we want later.
    fn drop_idle(&mut self, now: Instant, limit: usize, io: &mut impl Io) {
        for (k, p) in &self.peers {
            self.idle
                .observe(*k, !p.am_interested && !p.peer_interested, now);
        }
        if self.peers.len() < limit {
            return;
        }
        let excess = (self.peers.len() + 1 - limit).min(4);
        for k in self.idle.victims(now, IDLE_DROP_AFTER, excess) {
            self.drop_peer(k, "neither side interested", now, io);
        }
    }

    // ---- PEX ---------------------------------------------------------------------

    /// BEP 11: tell each PEX-capable peer the dialable addresses of our other peers (first
    /// message as soon as its extended handshake is known, then at most once a minute), so
    /// a flash crowd that only knows the seeder finds itself within a tick or two.
    pub(super) fn send_pex(&mut self, now: Instant, io: &mut impl Io) {
        let mut connected = self.pex_contacts();
        for (k, p) in self.peers.iter_mut() {
            if !p.ext.as_ref().is_some_and(|e| e.pex) {
                continue;
            }
            let me = p.dial_addr();
            let removed = me.and_then(|a| connected.remove(&a).map(|f| (a, f)));
            if let Some(m) = p.pex.poll(now, &connected) {
                io.act(Action::Send(*k, PeerCmd::Pex(m.encode())));
            }
            if let Some((a, f)) = removed {
                connected.insert(a, f);
            }
        }
    }

    /// Our connected peers as PEX contacts: dialable address and BEP 11 flags.
    pub(super) fn pex_contacts(&self) -> BTreeMap<SocketAddr, u8> {
        let mut connected: BTreeMap<SocketAddr, u8> = BTreeMap::new();
        for p in self.peers.values() {
            let Some(a) = p.dial_addr() else { continue };
            let mut f = 0u8;
            if p.has.is_full() {
                f |= crate::peer::pex::FLAG_SEED;
            }
            if p.outgoing {
                f |= crate::peer::pex::FLAG_REACHABLE;
            }
            if p.transport == Transport::Utp {
                f |= crate::peer::pex::FLAG_UTP;
            }
            if p.ext.as_ref().is_some_and(|e| e.holepunch) {
                f |= crate::peer::pex::FLAG_HOLEPUNCH;
            }
            // Our QUIC is on the same port as TCP: only then is the flag meaningful.
            if p.ext.as_ref().and_then(|e| e.quic_port) == Some(a.port()) {
                f |= crate::peer::pex::FLAG_MF_QUIC;
            }
            connected.insert(a, f);
        }
        connected
    }
}

/// Of two connections to one peer (we dialled each other at once), is the new one kept?
/// Both ends must keep the same one: the connection dialled by the side whose peer id is
/// smaller. `new_outgoing`/`old_outgoing`: we dialled that connection.
fn keep_new_duplicate(
    ours: &PeerId,
    theirs: &PeerId,
    new_outgoing: bool,
    old_outgoing: bool,
) -> bool {
    let keep_outgoing = ours < theirs;
    new_outgoing == keep_outgoing && old_outgoing != keep_outgoing
}

fn to_wire(r: BlockRef) -> WireBlock {
    WireBlock {
        index: r.piece,
        begin: r.offset,
        length: r.len,
    }
}

fn to_block(b: WireBlock) -> BlockRef {
    BlockRef {
        piece: b.index,
        offset: b.begin,
        len: b.length,
    }
}

#[cfg(test)]
mod tests;
