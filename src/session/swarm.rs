//! The torrent actor: one task per torrent that owns the piece picker, the choker, the
//! in-progress piece buffers and the peer table, and turns peer messages into requests,
//! verified pieces and `have`s (BEP 3 piece exchange, BEP 6 Fast extension).
//!
//! Shape: peer connections run as [`super::peer_task`] tasks and talk to this actor over one
//! bounded channel; connects run in a `JoinSet`; hashing and disk writes of whole pieces run
//! on the blocking pool (or inline in simulation, where the blocking pool would make runs
//! non-deterministic). All decisions happen here, on one task, so the picker and choker stay
//! plain data structures with no locking.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::metadata::HandedConn;
use crate::id::{InfoHash, PeerId};
use crate::net::{Net, Transport};
use crate::peer::wire::BlockRef as WireBlock;
use crate::peer::{Message, PeerConn, PeerError};
use crate::torrent::choker::{Choker, ChokerConfig, PeerStat, WASTE_AFTER};
use crate::torrent::pipeline::{Pipeline, PipelineConfig};
use crate::torrent::ratelimit::{RateEstimator, TokenBucket};
use crate::torrent::storage::{Storage, StorageError};
use crate::torrent::verify::PieceBlocks;
use crate::torrent::{Bitfield, BlockRef, BlockStatus, Layout, PeerKey, Picker, PickerConfig};

use crate::peer::pex::{PexSender, MAX_ADDED};

use super::cands::Candidates;
use super::idle::{eviction_victim, BanList, EvictStat, IdlePeers};
use super::peer_task::{run_peer, PeerCmd, PeerContext, PeerCounters, PeerEvent, PeerExt};
use super::{Phase, Progress};

mod webseeds;
pub use webseeds::WebSeedSetup;

/// Tunables of one torrent's swarm.
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    /// Connected peers we aim for (outgoing connects stop here).
    pub max_peers: usize,
    /// Extra room for incoming connections beyond `max_peers`.
    pub incoming_slack: usize,
    /// Outgoing connects in flight at once.
    pub max_half_open: usize,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Hash and write on tokio's blocking pool (real disks) or inline (simulation).
    pub blocking_io: bool,
    /// Bytes/s; `None` = unlimited.
    pub max_down_rate: Option<u64>,
    pub max_up_rate: Option<u64>,
    /// Keep running after completion (seeding) until stopped.
    pub keep_seeding: bool,
    pub sequential: bool,
    /// Per-file priority (0 = skip); empty = all files wanted.
    pub file_priorities: Vec<u8>,
    /// Candidate addresses remembered at most.
    pub max_candidates: usize,
    /// BEP 27 private torrent: no PEX (peers only from trackers and incoming).
    pub private: bool,
    /// Where to count PEX and incoming peers (see [`super::trackers`]).
    pub sources: Option<Arc<super::SourceCounters>>,
    /// Web seeds (BEP 19) to download from alongside peers.
    pub web_seeds: Option<Arc<WebSeedSetup>>,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            max_peers: 50,
            incoming_slack: 20,
            max_half_open: 16,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            blocking_io: true,
            max_down_rate: None,
            max_up_rate: None,
            keep_seeding: false,
            sequential: false,
            file_priorities: Vec::new(),
            max_candidates: 10_000,
            private: false,
            sources: None,
            web_seeds: None,
        }
    }
}

/// Why a torrent stopped.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    #[error("stopped")]
    Stopped,
}

/// What the actor needs to start.
pub struct SwarmParams {
    pub net: Net,
    pub info_hash: InfoHash,
    pub our_id: PeerId,
    /// Our listen port, advertised in the extended handshake.
    pub our_port: Option<u16>,
    /// Our own addresses: never candidates (PEX and every other source echo us back).
    pub own: Arc<super::own::OwnAddrs>,
    /// Outgoing connections: TCP, QUIC or raced.
    pub dialer: crate::dial::Dialer,
    pub layout: Arc<Layout>,
    pub piece_hashes: Arc<Vec<[u8; 20]>>,
    /// The raw info dictionary (served over ut_metadata).
    pub info: Bytes,
    pub storage: Arc<Storage>,
    /// Pieces already verified (resume data or a recheck).
    pub have: Bitfield,
    pub rng_seed: u64,
    pub cfg: SwarmConfig,
    pub progress: watch::Sender<Progress>,
    /// Pieces verified in this run are reported here (for resume data).
    pub verified_tx: Option<mpsc::UnboundedSender<u32>>,
    /// Source IP for web-seed requests (the session's `--bind` IP; `None`: default route).
    pub bind_ip: Option<std::net::IpAddr>,
}

/// Inputs from the rest of the session.
pub struct SwarmInputs {
    /// Peer addresses from every source (DHT, trackers, x.pe, --peer, PEX).
    pub addrs: mpsc::Receiver<SocketAddr>,
    /// Incoming connections for this torrent, handshake done.
    pub incoming: mpsc::Receiver<PeerConn>,
    /// Stop request (true = stop).
    pub stop: watch::Receiver<bool>,
    /// Connections the metadata fetch handed over (see [`HandedConn`]).
    pub handed: Vec<HandedConn>,
}

/// Summary when the actor ends.
#[derive(Debug, Clone, Default)]
pub struct SwarmSummary {
    pub complete: bool,
    /// Pieces that failed their hash check.
    pub failed_pieces: u64,
    /// Peers banned for corrupt data.
    pub bans: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    /// Payload bytes (received + sent) per transport.
    pub transport_bytes: TransportBytes,
}

/// Payload bytes moved (received + sent) over each transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransportBytes {
    pub tcp: u64,
    pub quic: u64,
}

impl TransportBytes {
    fn add(&mut self, t: Transport, n: u64) {
        match t {
            Transport::Tcp => self.tcp += n,
            Transport::Quic => self.quic += n,
        }
    }
}

struct Peer {
    addr: SocketAddr,
    /// From its handshake (duplicate connections are told apart by it).
    peer_id: PeerId,
    transport: Transport,
    cmd: mpsc::Sender<PeerCmd>,
    has: Bitfield,
    peer_choking: bool,
    am_interested: bool,
    peer_interested: bool,
    am_choking: bool,
    pipeline: Pipeline,
    counters: Arc<PeerCounters>,
    down: RateEstimator,
    up: RateEstimator,
    up_seen: u64,
    /// Last time this peer received payload from us, or was unchoked (whichever is later):
    /// the choker's "wasting a slot" test.
    last_served: Instant,
    /// `counters.uploaded` when we last unchoked it (the choker's quota).
    up_at_unchoke: u64,
    connected_at: Instant,
    ext: Option<PeerExt>,
    ext_rx: Option<oneshot::Receiver<PeerExt>>,
    requested_at: BTreeMap<BlockRef, Instant>,
    /// We dialled this address (so it is one others can dial too).
    outgoing: bool,
    /// An address of this peer we dialled for a duplicate connection that was closed
    /// instead of this one (see `add_peer`).
    alt_dial: Option<SocketAddr>,
    /// BEP 11: what we have told this peer about our other peers.
    pex: PexSender,
}

impl Peer {
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
}

/// Why a connection between two seeds is closed (BEP 3: neither has anything for the
/// other; libtorrent's `close_redundant_connections` does the same). A seed's slots go to
/// leechers instead: in a flash crowd the first finishers otherwise stay connected to each
/// other and upload at a third of their capacity while the rest wait (docs/simulation.md).
/// The address goes to the seed queue, which a seed never dials.
const BOTH_SEEDS: &str = "both seeds";
/// Why the second of two connections to one peer is closed (see `add_peer`).
const DUPLICATE: &str = "duplicate connection";
/// Banned addresses remembered at most (oldest forgotten first).
const MAX_BANNED: usize = 4096;
/// Mutual uninterest this long makes a peer a candidate for dropping at the peer limit.
const IDLE_DROP_AFTER: Duration = Duration::from_secs(60);

/// A hashed piece: index, whether it matched (or the write error), and per-block SHA-1s
/// when the picker needs them to tell honest senders from corrupt ones (smart ban).
type CheckResult = (u32, Result<bool, StorageError>, Option<Vec<[u8; 20]>>);

pub struct Swarm {
    p: SwarmParams,
    picker: Picker,
    choker: Choker,
    peers: BTreeMap<PeerKey, Peer>,
    next_key: u64,
    cands: Candidates,
    /// Connections refused at the peer limit that still get a short courtesy (handshake,
    /// PEX, metadata; see [`super::courtesy`]): at most this many at once.
    courtesy: Arc<tokio::sync::Semaphore>,
    /// Random choices of the connection logic (which contacts a refused peer is told).
    rng: StdRng,
    banned: BanList,
    idle: IdlePeers,
    /// Pieces in progress, as their received blocks (no copy into a piece buffer).
    buffers: BTreeMap<u32, PieceBlocks>,
    /// Inside a [`PeerEvent::Batch`]: `on_block` leaves the pipeline top-up to its end.
    batching: bool,
    connecting: JoinSet<(SocketAddr, Result<PeerConn, PeerError>)>,
    checks: JoinSet<CheckResult>,
    checking: usize,
    ev_tx: mpsc::Sender<(PeerKey, PeerEvent)>,
    ev_rx: mpsc::Receiver<(PeerKey, PeerEvent)>,
    total_uploaded: Arc<AtomicU64>,
    downloaded: u64,
    down_rate: RateEstimator,
    up_rate: RateEstimator,
    up_seen: u64,
    up_limit: Arc<Mutex<TokenBucket>>,
    down_limit: TokenBucket,
    stopping: Arc<AtomicBool>,
    scratch: Vec<BlockRef>,
    complete_announced: bool,
    failed_pieces: u64,
    bans: u64,
    ws: webseeds::WebSeeds,
    transport_bytes: TransportBytes,
    /// Last time a peer was evicted to admit an incoming one (churn guard).
    last_eviction: Option<Instant>,
}

impl Swarm {
    pub fn new(p: SwarmParams) -> Self {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(p.rng_seed);
        let picker_rng = StdRng::from_rng(&mut rng);
        let choker_rng = StdRng::from_rng(&mut rng);
        let conn_rng = StdRng::from_rng(&mut rng);
        let mut picker = Picker::new(&p.layout, PickerConfig::default(), picker_rng);
        if !p.cfg.file_priorities.is_empty() {
            picker.set_priorities(&p.layout.piece_priorities(&p.cfg.file_priorities));
        }
        picker.set_sequential(p.cfg.sequential);
        for i in p.have.iter_set() {
            picker.on_piece_verified(i, None);
        }
        let up_limit = match p.cfg.max_up_rate {
            Some(r) => TokenBucket::new(r, r.max(256 * 1024), now),
            None => TokenBucket::unlimited(now),
        };
        let down_limit = match p.cfg.max_down_rate {
            Some(r) => TokenBucket::new(r, r.max(256 * 1024), now),
            None => TokenBucket::unlimited(now),
        };
        let (ev_tx, ev_rx) = mpsc::channel(4096);
        Swarm {
            picker,
            choker: Choker::new(ChokerConfig::default(), choker_rng),
            peers: BTreeMap::new(),
            next_key: 0,
            cands: Candidates::new(p.cfg.max_candidates),
            courtesy: Arc::new(tokio::sync::Semaphore::new(super::courtesy::MAX_CONCURRENT)),
            rng: conn_rng,
            banned: BanList::new(MAX_BANNED),
            idle: IdlePeers::default(),
            buffers: BTreeMap::new(),
            batching: false,
            connecting: JoinSet::new(),
            checks: JoinSet::new(),
            checking: 0,
            ev_tx,
            ev_rx,
            total_uploaded: Arc::new(AtomicU64::new(0)),
            downloaded: 0,
            down_rate: RateEstimator::default_at(now),
            up_rate: RateEstimator::default_at(now),
            up_seen: 0,
            up_limit: Arc::new(Mutex::new(up_limit)),
            down_limit,
            stopping: Arc::new(AtomicBool::new(false)),
            scratch: Vec::new(),
            complete_announced: false,
            failed_pieces: 0,
            bans: 0,
            ws: webseeds::WebSeeds::new(p.cfg.web_seeds.clone(), p.net.clone(), p.bind_ip),
            transport_bytes: TransportBytes::default(),
            last_eviction: None,
            p,
        }
    }

    fn complete(&self) -> bool {
        self.picker.is_complete()
    }

    /// Runs until complete (or forever when seeding) or until stopped.
    pub async fn run(mut self, mut inputs: SwarmInputs) -> Result<SwarmSummary, SwarmError> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut addrs_open = true;
        let mut incoming_open = true;
        let mut stop_open = true;
        self.publish(if self.complete() {
            Phase::Seeding
        } else {
            Phase::Downloading
        });
        for h in std::mem::take(&mut inputs.handed) {
            self.on_handed(h);
        }
        loop {
            if self.complete() && self.checking == 0 {
                if !self.complete_announced {
                    self.complete_announced = true;
                    self.on_complete().await?;
                }
                if !self.p.cfg.keep_seeding {
                    break;
                }
            }
            tokio::select! {
                biased;
                // A dropped handle (Err) leaves the torrent running; stop polling it, or
                // this branch would be ready forever and spin.
                r = inputs.stop.changed(), if stop_open => {
                    stop_open = r.is_ok();
                    if *inputs.stop.borrow() {
                        break;
                    }
                }
                Some(r) = self.checks.join_next(), if self.checking > 0 => {
                    self.checking -= 1;
                    if let Ok((piece, res, digests)) = r {
                        self.on_checked(piece, res, digests)?;
                    }
                }
                Some((key, ev)) = self.ev_rx.recv() => self.on_peer_event(key, ev),
                Some(r) = self.ws.tasks.join_next(), if !self.ws.tasks.is_empty() => {
                    if let Ok(done) = r {
                        self.on_ws_done(done);
                    }
                }
                Some(r) = self.connecting.join_next(), if !self.connecting.is_empty() => {
                    if let Ok((addr, res)) = r {
                        self.on_connected(addr, res);
                    }
                }
                a = inputs.addrs.recv(), if addrs_open => match a {
                    Some(a) => {
                        self.add_candidate(a, false);
                        self.connect_more();
                    }
                    None => addrs_open = false,
                },
                c = inputs.incoming.recv(), if incoming_open => match c {
                    Some(c) => self.on_incoming(c),
                    None => incoming_open = false,
                },
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.stopping.store(true, Ordering::Relaxed);
        for p in self.peers.values() {
            let _ = p.cmd.try_send(PeerCmd::Close);
        }
        self.publish(if self.complete() {
            Phase::Done
        } else {
            Phase::Stopped
        });
        Ok(SwarmSummary {
            complete: self.complete(),
            failed_pieces: self.failed_pieces,
            bans: self.bans,
            downloaded: self.downloaded,
            uploaded: self.total_uploaded.load(Ordering::Relaxed),
            transport_bytes: self.transport_bytes_now(),
        })
    }

    // No fdatasync here: waiting for the disk (seconds for a big file) would delay every
    // completed download. Durability is the resume saver's business (`session::save_resume`
    // flushes before vouching for pieces, and marks the rest for a recheck).
    async fn on_complete(&mut self) -> Result<(), SwarmError> {
        // Two seeds have nothing to say to each other; tell the rest we want nothing.
        let seeds: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.has.is_full())
            .map(|(k, _)| *k)
            .collect();
        for k in seeds {
            self.drop_peer(k, BOTH_SEEDS);
        }
        for p in self.peers.values_mut() {
            if p.am_interested {
                p.am_interested = false;
                let _ = p.cmd.try_send(PeerCmd::Send(vec![Message::NotInterested]));
            }
        }
        self.choker.force_round();
        self.run_choker(Instant::now());
        self.publish(if self.p.cfg.keep_seeding {
            Phase::Seeding
        } else {
            Phase::Done
        });
        Ok(())
    }

    // ---- peers: connecting ---------------------------------------------------------

    fn add_candidate(&mut self, a: SocketAddr, seed: bool) {
        if a.port() == 0
            || a.ip().is_unspecified()
            || self.banned.contains(&a)
            || self.p.own.is_own(a)
        {
            return;
        }
        self.cands.add(a, seed, Instant::now());
    }

    /// Dials candidates: known seeds first, up to `max_peers` + `incoming_slack` (a leecher
    /// full of other leechers still reaches a seed it learns of: the seed is the one peer
    /// that has every piece, and the slack bounds how far over the limit that takes us);
    /// then everyone else up to `max_peers`.
    fn connect_more(&mut self) {
        if self.complete() {
            // A seed dials leechers too, up to half the limit (it needs no more than its
            // upload slots and some choice): leechers that filled their peer lists with
            // each other before it finished never come to it, and in a flash crowd the
            // first finishers then sat idle with no peers while the rest were short of
            // uploaders (docs/simulation.md). Known seeds are never dialled by a seed.
            self.dial_from_queue(false, self.p.cfg.max_peers / 2);
            return;
        }
        self.dial_from_queue(true, self.hard_limit());
        self.dial_from_queue(false, self.p.cfg.max_peers);
    }

    fn dial_from_queue(&mut self, seeds: bool, limit: usize) {
        let room = self
            .p
            .cfg
            .max_half_open
            .saturating_sub(self.connecting.len())
            .min(limit.saturating_sub(self.peers.len() + self.connecting.len()));
        if room == 0 {
            return;
        }
        for a in self.cands.take_due(seeds, room, Instant::now()) {
            let net = self.p.net.clone();
            let dialer = self.p.dialer.clone();
            let (ih, id) = (self.p.info_hash, self.p.our_id);
            let (ct, ht) = (self.p.cfg.connect_timeout, self.p.cfg.handshake_timeout);
            self.connecting.spawn(async move {
                let r = dialer.connect(&net, a, ih, id, ct, ht).await;
                (a, r)
            });
        }
    }

    fn on_connected(&mut self, addr: SocketAddr, res: Result<PeerConn, PeerError>) {
        match res {
            Ok(conn) => {
                tracing::debug!(%addr, "connected");
                self.cands.connected(addr);
                self.add_peer(conn, true);
            }
            Err(PeerError::SelfConnection) => {
                // An address of ours we could not know (e.g. a NAT's external one).
                self.p.own.learn(addr);
                self.cands.remove(&addr);
            }
            Err(e) => {
                tracing::debug!(%addr, %e, "connect failed");
                self.candidate_failed(addr);
            }
        }
        self.connect_more();
    }

    /// A connection from the metadata fetch: a peer like any other, with its handshakes
    /// done. Taken only while we have no piece (what we have must be the first thing a peer
    /// hears, BEP 3 and BEP 6, and the fetch said `have none`) and for a public torrent (the
    /// fetch offered PEX before it knew). The others are closed; their peers' listen
    /// addresses become candidates.
    fn on_handed(&mut self, mut h: HandedConn) {
        let addr = h.conn.addr;
        if self.p.cfg.private
            || !self.picker.have().none()
            || self.banned.contains(&addr)
            || self.peers.len() >= self.hard_limit()
        {
            // Closed; its listen address is a candidate like any other.
            let listen = if h.outgoing {
                Some(addr)
            } else {
                h.conn
                    .take_ext_done()
                    .and_then(|e| e.p)
                    .map(|p| SocketAddr::new(addr.ip(), p))
            };
            if let Some(a) = listen {
                self.add_candidate(a, false);
            }
            return;
        }
        if h.outgoing {
            self.cands.mark_connected(addr, Instant::now());
        } else if let Some(c) = &self.p.cfg.sources {
            c.incoming.fetch_add(1, Ordering::Relaxed);
        }
        self.add_peer(h.conn, h.outgoing);
    }

    /// Connections we never exceed: `max_peers` plus the room kept for incoming peers and
    /// known seeds (`incoming_slack`).
    fn hard_limit(&self) -> usize {
        self.p.cfg.max_peers + self.p.cfg.incoming_slack
    }

    fn candidate_failed(&mut self, addr: SocketAddr) {
        self.cands.failed(addr, Instant::now());
    }

    fn on_incoming(&mut self, conn: PeerConn) {
        if self.banned.contains(&conn.addr) {
            return; // dropping the connection closes it
        }
        if self.peers.len() >= self.hard_limit() {
            // Full: make room only by evicting a peer that is useless to us (rate-limited
            // and never a recent newcomer, see `idle::eviction_victim`); else refuse.
            let now = Instant::now();
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
            let Some(victim) = eviction_victim(&stats, self.complete(), now, self.last_eviction)
            else {
                self.refuse(conn);
                return;
            };
            self.last_eviction = Some(now);
            self.drop_peer(victim, "evicted for an incoming peer");
        }
        if let Some(c) = &self.p.cfg.sources {
            c.incoming.fetch_add(1, Ordering::Relaxed);
        }
        self.add_peer(conn, false);
    }

    /// Refuses an incoming peer at the connection limit. While courtesy slots last it first
    /// gets what costs us nothing: our bitfield, extended handshake, one PEX message with
    /// some of our peers (so it finds the rest of the swarm instead of waiting for its next
    /// DHT or tracker round) and the metadata if it asks within a moment; then we close.
    fn refuse(&mut self, conn: PeerConn) {
        let Ok(permit) = self.courtesy.clone().try_acquire_owned() else {
            return; // dropping the connection closes it
        };
        let pex = if self.p.cfg.private {
            None
        } else {
            let contacts = self.pex_contacts();
            let sample =
                super::courtesy::pick_contacts(&contacts, conn.addr.ip(), MAX_ADDED, &mut self.rng);
            (!sample.is_empty()).then(|| {
                crate::peer::PexMsg {
                    added: sample,
                    dropped: Vec::new(),
                }
                .encode()
            })
        };
        tracing::debug!(addr = %conn.addr, "refused at the peer limit (courtesy)");
        let ctx = super::courtesy::Courtesy {
            info: self.p.info.clone(),
            have: self.picker.have().clone(),
            our_port: self.p.our_port,
            pex,
        };
        tokio::spawn(super::courtesy::refuse(conn, ctx, permit));
    }

    fn add_peer(&mut self, conn: PeerConn, outgoing: bool) {
        // Two connections to one peer (both sides dialled, having found each other through
        // the DHT or PEX at once) would count twice for the choker and the picker: in a
        // 50-leecher flash crowd 15 of each peer's 65 connections were such duplicates.
        // Same peer id *and* IP: a peer id alone could be forged to push a real peer out.
        let peer_id = conn.remote.peer_id;
        let dup = self
            .peers
            .iter()
            .find(|(_, p)| p.peer_id == peer_id && p.addr.ip() == conn.addr.ip())
            .map(|(k, p)| (*k, p.outgoing));
        // The address of a dialled duplicate stays "connected" in the candidate table while
        // the kept connection lives; whoever keeps it frees it when it closes.
        let mut alt_dial = None;
        if let Some((old, old_outgoing)) = dup {
            if !keep_new_duplicate(&self.p.our_id, &peer_id, outgoing, old_outgoing) {
                tracing::debug!(addr = %conn.addr, "duplicate connection closed");
                if let Some(p) = self.peers.get_mut(&old).filter(|_| outgoing) {
                    p.alt_dial = Some(conn.addr);
                }
                return; // dropping the connection closes it
            }
            if let Some(p) = self.peers.get(&old).filter(|p| p.outgoing) {
                alt_dial = Some(p.addr);
            }
            self.drop_peer(old, DUPLICATE);
        }
        let key = PeerKey(self.next_key);
        self.next_key += 1;
        let now = Instant::now();
        let n = self.p.layout.piece_count();
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (ext_tx, ext_rx) = oneshot::channel();
        let counters = Arc::new(PeerCounters::default());
        let ctx = PeerContext {
            key,
            storage: self.p.storage.clone(),
            info: self.p.info.clone(),
            num_pieces: n,
            counters: counters.clone(),
            total_uploaded: self.total_uploaded.clone(),
            up_limit: self.up_limit.clone(),
            blocking_io: self.p.cfg.blocking_io,
            stopping: self.stopping.clone(),
            quic_port: self.p.dialer.advertised_port(),
            quic_peers: self.p.dialer.peers.clone(),
            private: self.p.cfg.private,
            quota: self.choker.quota(),
        };
        let addr = conn.addr;
        let transport = conn.transport;
        tokio::spawn(run_peer(
            conn,
            ctx,
            self.picker.have().clone(),
            self.p.our_port,
            cmd_rx,
            self.ev_tx.clone(),
            ext_tx,
        ));
        self.peers.insert(
            key,
            Peer {
                addr,
                peer_id,
                transport,
                cmd: cmd_tx,
                has: Bitfield::new(n),
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
                ext_rx: Some(ext_rx),
                requested_at: BTreeMap::new(),
                outgoing,
                alt_dial,
                pex: PexSender::new(),
            },
        );
    }

    fn drop_peer(&mut self, key: PeerKey, why: &str) {
        let Some(p) = self.peers.remove(&key) else {
            return;
        };
        tracing::debug!(addr = %p.addr, why, "peer dropped");
        let up = p.counters.uploaded.load(Ordering::Relaxed);
        self.transport_bytes.add(p.transport, up - p.up_seen);
        let _ = p.cmd.try_send(PeerCmd::Close);
        self.picker.on_peer_disconnected(key);
        self.picker.remove_peer_bitfield(&p.has);
        self.idle.remove(key);
        // The address we would dial (an incoming peer's listen address was marked
        // connected; it must become dialable again, or we would never reach it later).
        // A seed that closed us (usually: it was full) is retried sooner.
        let a = dial_addr(&p).unwrap_or(p.addr);
        if why != DUPLICATE {
            let seed = p.has.is_full() || why == BOTH_SEEDS;
            self.cands.closed(a, seed, Instant::now());
            if let Some(alt) = p.alt_dial.filter(|alt| *alt != a) {
                self.cands.closed(alt, seed, Instant::now());
            }
        }
        if !p.am_choking {
            self.choker.force_round();
        }
    }

    // ---- peers: messages -----------------------------------------------------------

    fn on_peer_event(&mut self, key: PeerKey, ev: PeerEvent) {
        match ev {
            PeerEvent::Closed(e) => {
                if self.peers.contains_key(&key) {
                    self.drop_peer(key, &e.to_string());
                    self.connect_more();
                }
            }
            PeerEvent::Pex(_) if self.p.cfg.private => {}
            PeerEvent::Pex(addrs) => {
                if let Some(c) = &self.p.cfg.sources {
                    c.pex.fetch_add(addrs.len() as u64, Ordering::Relaxed);
                }
                for (a, f) in addrs.into_iter().take(MAX_ADDED) {
                    self.add_candidate(a, f & crate::peer::pex::FLAG_SEED != 0);
                }
                self.connect_more();
            }
            PeerEvent::Quota => self.on_quota(key),
            PeerEvent::Msg(m) => {
                if let Err(why) = self.on_message(key, m) {
                    self.drop_peer(key, why);
                }
            }
            PeerEvent::Batch(ms) => {
                // Blocks in a batch top up the pipeline once, at the end: one request
                // command (one socket write) per batch instead of one per block.
                self.batching = true;
                for m in ms {
                    if let Err(why) = self.on_message(key, m) {
                        self.batching = false;
                        self.drop_peer(key, why);
                        return;
                    }
                }
                self.batching = false;
                self.fill_requests(key);
            }
        }
    }

    /// A peer had its quota since its unchoke: when someone is waiting, the choker moves
    /// the slot now (it would at the next tick; a 256 KiB piece takes 0.2 s at a seed).
    fn on_quota(&mut self, key: PeerKey) {
        let now = Instant::now();
        let seeding = self.complete();
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.over_quota(&self.choker, now, seeding) && self.someone_waits() {
            self.choker.force_round();
            self.run_choker(now);
        }
    }

    /// A choked peer is interested: a slot that moves has somewhere to go.
    fn someone_waits(&self) -> bool {
        self.peers
            .values()
            .any(|p| p.am_choking && p.peer_interested)
    }

    fn on_message(&mut self, key: PeerKey, m: Message) -> Result<(), &'static str> {
        let n = self.p.layout.piece_count();
        let now = Instant::now();
        let Some(peer) = self.peers.get_mut(&key) else {
            return Ok(());
        };
        if !matches!(m, Message::Piece { .. }) {
            tracing::trace!(addr = %peer.addr, msg = ?m, "message");
        }
        if let Some(a) = poll_ext(peer, &self.p.dialer.peers) {
            self.mark_connected(a);
        }
        let Some(peer) = self.peers.get_mut(&key) else {
            return Ok(());
        };
        match m {
            Message::Bitfield(bytes) => {
                let bf = Bitfield::from_bytes(&bytes, n).map_err(|_| "bad bitfield")?;
                self.picker.remove_peer_bitfield(&peer.has);
                peer.has = bf;
                self.picker.add_peer_bitfield(&peer.has);
                if self.picker.is_complete() && peer.has.is_full() {
                    return Err(BOTH_SEEDS);
                }
                self.update_interest(key);
            }
            Message::HaveAll => {
                self.picker.remove_peer_bitfield(&peer.has);
                peer.has = Bitfield::full(n);
                self.picker.add_peer_bitfield(&peer.has);
                if self.picker.is_complete() {
                    return Err(BOTH_SEEDS);
                }
                self.update_interest(key);
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
                    self.fill_requests(key);
                } else if self.picker.requestable_piece(i) {
                    self.update_interest(key);
                }
            }
            // A repeated `choke` changes nothing (and must not cost a scan of every peer).
            Message::Choke if peer.peer_choking => {}
            Message::Choke => {
                peer.peer_choking = true;
                peer.requested_at.clear();
                self.picker.on_peer_choked(key);
                self.request_everywhere();
            }
            Message::Unchoke => {
                peer.peer_choking = false;
                self.fill_requests(key);
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
                    self.run_choker(now);
                }
            }
            Message::NotInterested => {
                peer.peer_interested = false;
                if !peer.am_choking {
                    // An unchoked peer that wants nothing more wastes an upload slot until
                    // the next round: give the slot to someone who can use it now.
                    self.choker.force_round();
                    self.run_choker(now);
                }
            }
            Message::Piece { index, begin, data } => {
                self.on_block(key, index, begin, data, now);
            }
            Message::Reject(b) => {
                let r = to_block(b);
                peer.requested_at.remove(&r);
                self.picker.on_reject(key, r);
                self.fill_requests(key);
            }
            // Suggest, AllowedFast, Port, Request/Cancel (handled by the peer task): nothing
            // for the actor to decide yet.
            _ => {}
        }
        Ok(())
    }

    fn on_block(&mut self, key: PeerKey, index: u32, begin: u32, data: Bytes, now: Instant) {
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
        self.accept_block(key, r, data);
        if !self.batching {
            self.fill_requests(key);
        }
    }

    /// A block from `key` (a peer or a web seed; one path for both): kept if the picker
    /// asked `key` for it, the same block asked of others cancelled (endgame), and a
    /// complete piece handed to hashing. Returns whether the block was kept.
    fn accept_block(&mut self, key: PeerKey, r: BlockRef, data: Bytes) -> bool {
        let out = self.picker.on_block_received(key, r);
        tracing::trace!(?r, ?out.status, complete = out.piece_complete, "block");
        let accepted = out.status == BlockStatus::Accepted;
        if accepted {
            let plen = self.p.layout.piece_len(r.piece) as u32;
            self.buffers
                .entry(r.piece)
                .or_insert_with(|| PieceBlocks::new(plen, crate::torrent::BLOCK_SIZE))
                .insert(r.offset, data);
        }
        for (other, cr) in out.cancels {
            if let Some(o) = self.peers.get_mut(&other) {
                o.requested_at.remove(&cr);
                let _ = o
                    .cmd
                    .try_send(PeerCmd::Send(vec![Message::Cancel(to_wire(cr))]));
            }
        }
        if out.piece_complete {
            self.start_check(r.piece);
        }
        accepted
    }

    fn start_check(&mut self, piece: u32) {
        let Some(buf) = self.buffers.remove(&piece) else {
            return;
        };
        let expected = self.p.piece_hashes.get(piece as usize).copied();
        let storage = self.p.storage.clone();
        let want_digests = self.picker.needs_block_digests(piece);
        let work = move || -> CheckResult {
            let Some(expected) = expected else {
                return (piece, Ok(false), None);
            };
            if buf.sha1() != expected {
                return (piece, Ok(false), Some(buf.block_digests()));
            }
            let digests = want_digests.then(|| buf.block_digests());
            // One vectored positional write for the whole verified piece.
            let parts: Vec<&[u8]> = buf.slices().collect();
            let res = storage.write_blocks(piece, &parts).map(|_| true);
            (piece, res, digests)
        };
        self.checking += 1;
        if self.p.cfg.blocking_io {
            self.checks.spawn_blocking(work);
        } else {
            let r = work();
            self.checks.spawn(async move { r });
        }
    }

    fn on_checked(
        &mut self,
        piece: u32,
        res: Result<bool, StorageError>,
        digests: Option<Vec<[u8; 20]>>,
    ) -> Result<(), SwarmError> {
        if let Ok(ok) = &res {
            self.ws_on_checked(piece, *ok);
        }
        match res? {
            true => {
                let flagged = self.picker.on_piece_verified(piece, digests.as_deref());
                self.ban(flagged);
                if let Some(tx) = &self.p.verified_tx {
                    let _ = tx.send(piece);
                }
                // `have` goes to every peer, also those that have the piece (BEP 3): only
                // then can a peer see that we became a seed — with the suppression other
                // clients use, two seeds that finished one after the other never learn it
                // and keep each other's slots (seen in flash crowds, docs/simulation.md).
                let mut dead = Vec::new();
                for (k, p) in &self.peers {
                    if p.cmd
                        .try_send(PeerCmd::Send(vec![Message::Have(piece)]))
                        .is_err()
                    {
                        dead.push(*k);
                    }
                }
                for k in dead {
                    self.drop_peer(k, "not reading");
                }
            }
            false => {
                tracing::warn!(piece, "piece failed its hash check");
                self.failed_pieces += 1;
                let flagged = self.picker.on_piece_failed(piece, digests.as_deref());
                self.ban(flagged);
                self.request_everywhere();
            }
        }
        Ok(())
    }

    fn ban(&mut self, flagged: Vec<PeerKey>) {
        for k in flagged {
            if let Some(p) = self.peers.get(&k) {
                tracing::warn!(addr = %p.addr, "banning peer: sent data for 2+ failed pieces");
                self.banned.insert(p.addr);
                self.cands.remove(&p.addr);
                // Its listen address too (an incoming peer's differs from `addr`).
                if let Some(d) = dial_addr(p) {
                    self.banned.insert(d);
                    self.cands.remove(&d);
                }
                self.bans += 1;
            }
            self.drop_peer(k, "banned");
        }
    }

    fn update_interest(&mut self, key: PeerKey) {
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
            let _ = p.cmd.try_send(PeerCmd::Send(vec![m]));
        }
        if want {
            self.fill_requests(key);
        }
    }

    fn request_everywhere(&mut self) {
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            // Requests were released (choke, failure): peers we lost interest in may have
            // something to request again.
            if self.peers.get(&k).is_some_and(|p| !p.am_interested) {
                self.update_interest(k);
            } else {
                self.fill_requests(k);
            }
        }
    }

    /// Tops up `key`'s outstanding requests to its pipeline depth.
    fn fill_requests(&mut self, key: PeerKey) {
        let now = Instant::now();
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if p.peer_choking || !p.am_interested {
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
                self.update_interest(key);
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
        if p.cmd.try_send(PeerCmd::Send(msgs)).is_err() {
            self.scratch = out;
            self.drop_peer(key, "not reading");
            return;
        }
        out.clear();
        self.scratch = out;
    }

    // ---- periodic work -------------------------------------------------------------

    /// An incoming peer's listen address (from its extended handshake) is already
    /// connected: don't dial it again when DHT or PEX mention it.
    fn mark_connected(&mut self, a: SocketAddr) {
        self.cands.mark_connected(a, Instant::now());
    }

    /// BEP 11: tell each PEX-capable peer the dialable addresses of our other peers (first
    /// message as soon as its extended handshake is known, then at most once a minute), so
    /// a flash crowd that only knows the seeder finds itself within a tick or two.
    fn send_pex(&mut self, now: Instant) {
        let mut connected = self.pex_contacts();
        for p in self.peers.values_mut() {
            if !p.ext.as_ref().is_some_and(|e| e.pex) {
                continue;
            }
            let me = dial_addr(p);
            let removed = me.and_then(|a| connected.remove(&a).map(|f| (a, f)));
            if let Some(m) = p.pex.poll(now, &connected) {
                let _ = p.cmd.try_send(PeerCmd::Pex(m.encode()));
            }
            if let Some((a, f)) = removed {
                connected.insert(a, f);
            }
        }
    }

    /// Our connected peers as PEX contacts: dialable address and BEP 11 flags.
    fn pex_contacts(&self) -> BTreeMap<SocketAddr, u8> {
        let mut connected: BTreeMap<SocketAddr, u8> = BTreeMap::new();
        for p in self.peers.values() {
            let Some(a) = dial_addr(p) else { continue };
            let mut f = 0u8;
            if p.has.is_full() {
                f |= crate::peer::pex::FLAG_SEED;
            }
            if p.outgoing {
                f |= crate::peer::pex::FLAG_REACHABLE;
            }
            // Our QUIC is on the same port as TCP: only then is the flag meaningful.
            if p.ext.as_ref().and_then(|e| e.quic_port) == Some(a.port()) {
                f |= crate::peer::pex::FLAG_MF_QUIC;
            }
            connected.insert(a, f);
        }
        connected
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in &keys {
            let quic = &self.p.dialer.peers;
            let a = self.peers.get_mut(k).and_then(|p| poll_ext(p, quic));
            if let Some(a) = a {
                self.mark_connected(a);
            }
        }
        if !self.p.cfg.private {
            self.send_pex(now);
        }
        self.ws_fill(now);
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
            self.update_interest(*k);
        }
        self.drop_idle(now);
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
        self.run_choker(now);
        self.request_everywhere();
        self.connect_more();
        let up = self.total_uploaded.load(Ordering::Relaxed);
        self.up_rate.record(now, up - self.up_seen);
        self.up_seen = up;
        let phase = self.progress_phase();
        self.publish(phase);
    }

    /// At the connection limit, a peer with which neither side has been interested for
    /// [`IDLE_DROP_AFTER`] only holds a slot another peer could use: drop it (a few per
    /// tick). Below the limit idle peers stay: they may get pieces we want later.
    fn drop_idle(&mut self, now: Instant) {
        for (k, p) in &self.peers {
            self.idle
                .observe(*k, !p.am_interested && !p.peer_interested, now);
        }
        let limit = self.p.cfg.max_peers;
        if self.peers.len() < limit {
            return;
        }
        let excess = (self.peers.len() + 1 - limit).min(4);
        for k in self.idle.victims(now, IDLE_DROP_AFTER, excess) {
            self.drop_peer(k, "neither side interested");
        }
    }

    fn progress_phase(&self) -> Phase {
        if self.complete() {
            if self.p.cfg.keep_seeding {
                Phase::Seeding
            } else {
                Phase::Done
            }
        } else {
            Phase::Downloading
        }
    }

    fn run_choker(&mut self, now: Instant) {
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
                let _ = p.cmd.try_send(if should_choke {
                    PeerCmd::Choke
                } else {
                    PeerCmd::Unchoke
                });
            }
        }
    }

    /// Transport bytes including uploads not yet collected by the tick.
    fn transport_bytes_now(&self) -> TransportBytes {
        let mut t = self.transport_bytes;
        for p in self.peers.values() {
            let up = p.counters.uploaded.load(Ordering::Relaxed);
            t.add(p.transport, up - p.up_seen);
        }
        t
    }

    fn publish(&mut self, phase: Phase) {
        let now = Instant::now();
        let layout = &self.p.layout;
        let have = self.picker.have();
        let verified: u64 = have.iter_set().map(|i| layout.piece_len(i)).sum();
        let seeds = self.peers.values().filter(|p| p.has.is_full()).count();
        let down_rate = self.down_rate.rate(now);
        let up_rate = self.up_rate.rate(now);
        let downloaded = self.downloaded;
        let uploaded = self.total_uploaded.load(Ordering::Relaxed);
        let peers = self.peers.len();
        let known = self.cands.len();
        let transport_bytes = self.transport_bytes_now();
        self.p.progress.send_modify(|pr| {
            pr.transport_bytes = transport_bytes;
            pr.phase = phase;
            pr.total = layout.total_length();
            pr.verified = verified;
            pr.pieces_have = have.count();
            pr.pieces = layout.piece_count();
            pr.downloaded = downloaded;
            pr.uploaded = uploaded;
            pr.down_rate = down_rate;
            pr.up_rate = up_rate;
            pr.peers = peers;
            pr.seeds = seeds;
            pr.known_peers = known;
        });
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

/// Takes the peer's extended handshake once it has arrived; returns its listen address when
/// the peer came to us (that address is then connected, too).
fn poll_ext(peer: &mut Peer, quic: &crate::dial::QuicPeers) -> Option<SocketAddr> {
    if peer.ext.is_some() {
        return None;
    }
    let ext = peer.ext_rx.as_mut()?.try_recv().ok()?;
    if let Some(q) = ext.reqq {
        peer.pipeline.set_reqq(q as usize);
    }
    let port = ext.listen_port;
    let quic_port = ext.quic_port;
    peer.ext = Some(ext);
    if let Some(d) = dial_addr(peer) {
        quic.learn(d, quic_port);
    }
    peer.ext_rx = None;
    match (peer.outgoing, port) {
        (false, Some(p)) if p != 0 => Some(SocketAddr::new(peer.addr.ip(), p)),
        _ => None,
    }
}

/// The address others could dial to reach this peer, if known.
fn dial_addr(p: &Peer) -> Option<SocketAddr> {
    if p.outgoing {
        return Some(p.addr);
    }
    match p.ext.as_ref()?.listen_port {
        Some(port) if port != 0 => Some(SocketAddr::new(p.addr.ip(), port)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ends_keep_the_same_duplicate() {
        let (a, b) = (crate::id::Id20([1; 20]), crate::id::Id20([2; 20]));
        // a dialled b and b dialled a. At a, "outgoing" is a->b; at b, it is b->a.
        // Whichever arrived second at each end, both keep a->b (a's id is smaller).
        // Is the connection an end keeps the one it dialled, given which came first?
        let keeps_outgoing = |ours, theirs, first_outgoing: bool| {
            let new_kept = keep_new_duplicate(ours, theirs, !first_outgoing, first_outgoing);
            new_kept != first_outgoing
        };
        for first_outgoing in [true, false] {
            assert!(
                keeps_outgoing(&a, &b, first_outgoing),
                "a keeps what it dialled"
            );
            assert!(
                !keeps_outgoing(&b, &a, first_outgoing),
                "b keeps what a dialled"
            );
        }
        // Two connections in the same direction (dialled twice): the old one stays.
        assert!(!keep_new_duplicate(&a, &b, true, true));
        assert!(!keep_new_duplicate(&a, &b, false, false));
    }
}
