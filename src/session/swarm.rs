//! The torrent actor: one task per torrent that owns the piece picker, the choker, the
//! in-progress piece buffers and the peer table, and turns peer messages into requests,
//! verified pieces and `have`s (BEP 3 piece exchange, BEP 6 Fast extension).
//!
//! Shape: every decision is made by a synchronous core ([`core::SwarmCore`], no sockets,
//! tasks or clocks of its own): requests, interest, choking, checks and bans, PEX, which
//! candidate to dial, which connection to keep or refuse, which web seed fetches what. This
//! module is its driver. Peer connections run as [`super::peer_task`] tasks and talk to
//! the actor over one bounded channel; connects, courtesy refusals and web-seed fetches
//! run as tasks the core asks for; hashing and disk writes of whole pieces run on the
//! blocking pool (or inline in simulation, where the blocking pool would make runs
//! non-deterministic). The driver turns events into core calls and carries out the core's
//! actions; everything stays on one task, so the core is plain data with no locking.

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
use crate::peer::{PeerConn, PeerError};
use crate::torrent::choker::{Choker, ChokerConfig};
use crate::torrent::ratelimit::{RateEstimator, TokenBucket};
use crate::torrent::storage::{Storage, StorageError};
use crate::torrent::verify::PieceBlocks;
use crate::torrent::{Bitfield, Layout, PeerKey, Picker, PickerConfig};

use super::peer_task::{run_peer, PeerCmd, PeerContext, PeerCounters, PeerEvent, PeerExt};
use super::{Phase, Progress};

mod core;
use self::core::{Action, Dialled, Incoming, Io, Limits, Peer, SwarmCore};

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
    /// Bytes of complete pieces waiting to be hashed and written, at most: past it no new
    /// blocks are requested until the disk catches up, so a network faster than the disk
    /// does not grow memory (pieces in progress add at most one pipeline per peer).
    pub max_unwritten: u64,
    /// Where to count the bytes waiting for the disk (a gauge to watch; see
    /// [`super::backlog`]); `None`: the swarm keeps its own.
    pub disk_backlog: Option<Arc<super::backlog::DiskBacklog>>,
    /// Model a disk that writes this many bytes/s at most (tests and benchmarks of a disk
    /// slower than the network; see [`crate::torrent::storage::WriteRate`]).
    pub disk_write_rate: Option<u64>,
    /// A complete torrent with no peer, no dial, check or web-seed fetch in flight ticks
    /// this rarely instead of every 0.5 s (a daemon's hundreds of idle seeds would
    /// otherwise wake the process hundreds of times a second). Events (a peer, an address)
    /// are handled at once either way. `None`: always 0.5 s (simulations keep their
    /// schedule).
    pub idle_tick: Option<Duration>,
}

/// Default [`SwarmConfig::max_unwritten`]: 4 MiB, 4 pieces of 1 MiB or 16 of 256 KiB —
/// with steady writeback (`torrent::storage`) enough to keep hashing and the disk busy at
/// loopback speed, and small enough for the memory bound (docs/architecture.md).
pub const DEFAULT_MAX_UNWRITTEN: u64 = 4 << 20;

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
            max_unwritten: DEFAULT_MAX_UNWRITTEN,
            disk_backlog: None,
            disk_write_rate: None,
            idle_tick: None,
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
    /// Where peers' BEP 10 `yourip` votes go (see [`super::reach`]).
    pub reach: Option<Arc<super::reach::Reach>>,
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
    /// Streaming readers' windows: pieces to fetch first (see `Picker::set_focus`).
    pub focus: Option<watch::Receiver<Vec<u32>>>,
    /// Requests for the list of connected peers (see [`PeerInfo`]).
    pub peer_list: Option<mpsc::Receiver<oneshot::Sender<Vec<PeerInfo>>>>,
}

/// One connected peer, for a caller that shows them (the daemon's `/peers`).
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    pub peer_id: PeerId,
    /// Where its address came from first (`None`: we dialled an address no counted source
    /// gave, e.g. handed over by the metadata fetch).
    pub origin: Option<super::PeerOrigin>,
    pub transport: Transport,
    /// RC4 after an MSE/PE handshake.
    pub encrypted: bool,
    /// We dialled it.
    pub outgoing: bool,
    /// Payload bytes per second recently, from it and to it.
    pub down_rate: u64,
    pub up_rate: u64,
    /// Payload bytes sent to it.
    pub uploaded: u64,
    /// Pieces it has, of how many.
    pub pieces: u32,
    pub pieces_total: u32,
    pub am_choking: bool,
    pub peer_choking: bool,
    pub am_interested: bool,
    pub peer_interested: bool,
}

/// Summary when the actor ends.
#[derive(Debug, Clone, Default)]
pub struct SwarmSummary {
    pub complete: bool,
    /// Pieces that failed their hash check.
    pub failed_pieces: u64,
    /// Peers banned for corrupt data.
    pub bans: u64,
    /// Bytes of verified pieces written to storage.
    pub written: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    /// Payload bytes (received + sent) per transport.
    pub transport_bytes: TransportBytes,
    /// Connections that came of a holepunch rendezvous we asked for (BEP 55).
    pub punched: u64,
    /// Rendezvous refused with an `error`, and punch dials that failed.
    pub punch_failed: u64,
}

/// Payload bytes moved (received + sent) over each transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransportBytes {
    pub tcp: u64,
    pub quic: u64,
    pub utp: u64,
}

impl TransportBytes {
    fn add(&mut self, t: Transport, n: u64) {
        match t {
            Transport::Tcp => self.tcp += n,
            Transport::Quic => self.quic += n,
            Transport::Utp => self.utp += n,
        }
    }
}

/// A hashed piece: index, whether it matched (or the write error), and per-block SHA-1s
/// when the picker needs them to tell honest senders from corrupt ones (smart ban).
type CheckResult = (u32, Result<bool, StorageError>, Option<Vec<[u8; 20]>>);

/// A peer's task as the driver sees it: where its commands go.
struct Link {
    cmd: mpsc::Sender<PeerCmd>,
    /// Its extended handshake, until it has arrived (then handed to the core).
    ext_rx: Option<oneshot::Receiver<PeerExt>>,
    /// For [`PeerInfo`] only.
    encrypted: bool,
    origin: Option<super::PeerOrigin>,
}

/// What a dial needs (one clone per connect task).
#[derive(Clone)]
struct DialJob {
    net: Net,
    dialer: crate::dial::Dialer,
    info_hash: InfoHash,
    our_id: PeerId,
    connect_timeout: Duration,
    handshake_timeout: Duration,
}

/// The driver's half of [`core::Io`]: carries out the core's actions as they come. Sends,
/// connects, fetches and check spawns happen at once (they wake tasks, whose order
/// simulations depend on); a dropped peer's link is forgotten when the core's call returns
/// (see [`Swarm::settle`]).
struct Effects {
    links: BTreeMap<PeerKey, Link>,
    checks: JoinSet<CheckResult>,
    checking: usize,
    piece_hashes: Arc<Vec<[u8; 20]>>,
    storage: Arc<Storage>,
    blocking_io: bool,
    verified_tx: Option<mpsc::UnboundedSender<u32>>,
    dial: DialJob,
    connecting: JoinSet<(SocketAddr, Result<PeerConn, PeerError>)>,
    /// Holepunch dials (uTP only, BEP 55): not counted as half-open candidate dials.
    punching: JoinSet<(SocketAddr, Result<PeerConn, PeerError>)>,
    ws: webseeds::WebSeeds,
    dropped: Vec<PeerKey>,
    /// Bytes of pieces handed to hashing and writing, until written.
    backlog: Arc<super::backlog::DiskBacklog>,
    /// Bytes of pieces hashed and written (a [`Progress`] counter).
    written: u64,
}

impl Io for Effects {
    fn act(&mut self, a: Action) -> bool {
        match a {
            Action::Send(key, cmd) => self
                .links
                .get(&key)
                .is_some_and(|l| l.cmd.try_send(cmd).is_ok()),
            Action::Check {
                piece,
                blocks,
                want_digests,
            } => {
                self.start_check(piece, blocks, want_digests);
                true
            }
            Action::Verified(piece) => {
                if let Some(tx) = &self.verified_tx {
                    let _ = tx.send(piece);
                }
                true
            }
            Action::Dropped(key) => {
                self.dropped.push(key);
                true
            }
            Action::Connect(a) => {
                let d = self.dial.clone();
                self.connecting.spawn(async move {
                    let r = d
                        .dialer
                        .connect(
                            &d.net,
                            a,
                            d.info_hash,
                            d.our_id,
                            d.connect_timeout,
                            d.handshake_timeout,
                        )
                        .await;
                    (a, r)
                });
                true
            }
            Action::Punch(a) => {
                let d = self.dial.clone();
                self.punching.spawn(async move {
                    let r = d
                        .dialer
                        .punch(
                            a,
                            d.info_hash,
                            d.our_id,
                            d.connect_timeout,
                            d.handshake_timeout,
                        )
                        .await;
                    (a, r)
                });
                true
            }
            Action::Fetch { seed, blocks } => {
                self.ws.fetch(seed, blocks);
                true
            }
        }
    }
}

impl Effects {
    fn start_check(&mut self, piece: u32, buf: PieceBlocks, want_digests: bool) {
        let expected = self.piece_hashes.get(piece as usize).copied();
        let storage = self.storage.clone();
        let len: u64 = buf.slices().map(|b| b.len() as u64).sum();
        let backlog = self.backlog.clone();
        backlog.add(len);
        let slow = storage.write_rate().cloned();
        let check = move |buf: &PieceBlocks| -> CheckResult {
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
        if self.blocking_io {
            self.checks.spawn_blocking(move || {
                let r = check(&buf);
                if let Some(w) = slow {
                    let now = tokio::time::Instant::now();
                    std::thread::sleep(w.finish_at(now, len) - now);
                }
                drop(buf);
                backlog.done(len);
                r
            });
        } else {
            let r = check(&buf);
            // A modelled slow disk holds the piece until its write is done (virtual time).
            match slow.map(|w| w.finish_at(tokio::time::Instant::now(), len)) {
                Some(until) => self.checks.spawn(async move {
                    tokio::time::sleep_until(until).await;
                    drop(buf);
                    backlog.done(len);
                    r
                }),
                None => {
                    drop(buf);
                    backlog.done(len);
                    self.checks.spawn(async move { r })
                }
            };
        }
    }
}

pub struct Swarm {
    p: SwarmParams,
    /// Every decision (see [`core`]).
    core: SwarmCore,
    fx: Effects,
    next_key: u64,
    ev_tx: mpsc::Sender<(PeerKey, PeerEvent)>,
    ev_rx: mpsc::Receiver<(PeerKey, PeerEvent)>,
    total_uploaded: Arc<AtomicU64>,
    up_rate: RateEstimator,
    up_seen: u64,
    up_limit: Arc<Mutex<TokenBucket>>,
    stopping: Arc<AtomicBool>,
    complete_announced: bool,
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
        let choker = Choker::new(ChokerConfig::default(), choker_rng);
        let ws = webseeds::WebSeeds::new(p.cfg.web_seeds.clone(), p.net.clone(), p.bind_ip);
        Swarm {
            core: SwarmCore::new(p.layout.clone(), p.our_id, picker, choker, down_limit, now)
                .with_max_unwritten(p.cfg.max_unwritten)
                .with_connections(Limits::of(&p.cfg), p.own.clone(), conn_rng)
                .with_web_seeds(ws.urls(), now)
                .with_holepunch(p.dialer.utp.is_some()),
            fx: Effects {
                links: BTreeMap::new(),
                checks: JoinSet::new(),
                checking: 0,
                piece_hashes: p.piece_hashes.clone(),
                storage: p.storage.clone(),
                blocking_io: p.cfg.blocking_io,
                backlog: {
                    let b = p.cfg.disk_backlog.clone().unwrap_or_default();
                    b.set_bound(p.cfg.max_unwritten);
                    b
                },
                verified_tx: p.verified_tx.clone(),
                dial: DialJob {
                    net: p.net.clone(),
                    dialer: p.dialer.clone(),
                    info_hash: p.info_hash,
                    our_id: p.our_id,
                    connect_timeout: p.cfg.connect_timeout,
                    handshake_timeout: p.cfg.handshake_timeout,
                },
                connecting: JoinSet::new(),
                punching: JoinSet::new(),
                ws,
                dropped: Vec::new(),
                written: 0,
            },
            next_key: 0,
            ev_tx,
            ev_rx,
            total_uploaded: Arc::new(AtomicU64::new(0)),
            up_rate: RateEstimator::default_at(now),
            up_seen: 0,
            up_limit: Arc::new(Mutex::new(up_limit)),
            stopping: Arc::new(AtomicBool::new(false)),
            complete_announced: false,
            p,
        }
    }

    fn complete(&self) -> bool {
        self.core.complete()
    }

    /// Runs one core call, then settles what it left.
    fn with_core<R>(&mut self, f: impl FnOnce(&mut SwarmCore, &mut Effects) -> R) -> R {
        let r = f(&mut self.core, &mut self.fx);
        self.settle();
        r
    }

    /// Peers the core dropped: their tasks are forgotten (each was told to close). Not
    /// before the call returns, so every command of that call reaches the task it was for.
    fn settle(&mut self) {
        for key in self.fx.dropped.drain(..) {
            self.fx.links.remove(&key);
        }
    }

    /// Runs until complete (or forever when seeding) or until stopped.
    pub async fn run(mut self, mut inputs: SwarmInputs) -> Result<SwarmSummary, SwarmError> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut addrs_open = true;
        let mut incoming_open = true;
        let mut stop_open = true;
        let mut focus = inputs.focus.take();
        let mut peer_list = inputs.peer_list.take();
        self.publish(if self.complete() {
            Phase::Seeding
        } else {
            Phase::Downloading
        });
        for h in std::mem::take(&mut inputs.handed) {
            self.on_handed(h);
        }
        loop {
            if self.complete() && self.fx.checking == 0 {
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
                Some(r) = self.fx.checks.join_next(), if self.fx.checking > 0 => {
                    self.fx.checking -= 1;
                    if let Ok((piece, res, digests)) = r {
                        if matches!(res, Ok(true)) {
                            self.fx.written += self.p.layout.piece_len(piece);
                        }
                        self.on_checked(piece, res, digests)?;
                    }
                }
                Some((key, ev)) = self.ev_rx.recv() => self.on_peer_event(key, ev),
                Some(r) = self.fx.ws.tasks.join_next(), if !self.fx.ws.tasks.is_empty() => {
                    if let Ok(done) = r {
                        self.on_ws_done(done);
                    }
                }
                Some(r) = self.fx.connecting.join_next(), if !self.fx.connecting.is_empty() => {
                    match r {
                        Ok((addr, res)) => self.on_connected(addr, res),
                        Err(_) => self.core.on_dial_lost(),
                    }
                }
                Some(r) = self.fx.punching.join_next(), if !self.fx.punching.is_empty() => {
                    if let Ok((addr, res)) = r {
                        self.on_punched(addr, res);
                    }
                }
                a = inputs.addrs.recv(), if addrs_open => match a {
                    Some(a) => {
                        let now = Instant::now();
                        self.with_core(|c, io| c.on_addr(a, now, io));
                    }
                    None => addrs_open = false,
                },
                c = inputs.incoming.recv(), if incoming_open => match c {
                    Some(c) => self.on_incoming(c),
                    None => incoming_open = false,
                },
                r = async { focus.as_mut().expect("guarded").changed().await },
                    if focus.is_some() =>
                {
                    match r {
                        Ok(()) => {
                            let pieces = focus.as_mut().expect("guarded").borrow_and_update().clone();
                            let now = Instant::now();
                            self.with_core(|c, io| c.set_focus(pieces, now, io));
                        }
                        Err(_) => focus = None,
                    }
                }
                r = async { peer_list.as_mut().expect("guarded").recv().await },
                    if peer_list.is_some() =>
                {
                    match r {
                        Some(reply) => {
                            let _ = reply.send(self.peer_list());
                        }
                        None => peer_list = None,
                    }
                }
                _ = tick.tick() => {
                    self.on_tick();
                    if let Some(d) = self.p.cfg.idle_tick.filter(|_| self.idle()) {
                        tick.reset_after(d);
                    }
                }
            }
        }
        self.stopping.store(true, Ordering::Relaxed);
        for l in self.fx.links.values() {
            let _ = l.cmd.try_send(PeerCmd::Close);
        }
        self.publish(if self.complete() {
            Phase::Done
        } else {
            Phase::Stopped
        });
        Ok(SwarmSummary {
            complete: self.complete(),
            failed_pieces: self.core.failed_pieces,
            bans: self.core.bans,
            written: self.fx.written,
            downloaded: self.core.downloaded,
            uploaded: self.total_uploaded.load(Ordering::Relaxed),
            transport_bytes: self.transport_bytes_now(),
            punched: self.core.punch_stats().punched,
            punch_failed: self.core.punch_stats().failed(),
        })
    }

    // No fdatasync here: waiting for the disk (seconds for a big file) would delay every
    // completed download. Durability is the resume saver's business (`session::save_resume`
    // flushes before vouching for pieces, and marks the rest for a recheck).
    async fn on_complete(&mut self) -> Result<(), SwarmError> {
        let now = Instant::now();
        self.with_core(|c, io| c.on_complete(now, io));
        self.publish(if self.p.cfg.keep_seeding {
            Phase::Seeding
        } else {
            Phase::Done
        });
        Ok(())
    }

    // ---- peers: connecting ---------------------------------------------------------

    fn connect_more(&mut self, now: Instant) {
        self.with_core(|c, io| c.connect_more(now, io));
    }

    fn on_connected(&mut self, addr: SocketAddr, res: Result<PeerConn, PeerError>) {
        let now = Instant::now();
        match res {
            Ok(conn) => {
                tracing::debug!(%addr, "connected");
                self.core.on_dialled(addr, Dialled::Connected, now);
                self.add_peer(conn, true);
            }
            Err(PeerError::SelfConnection) => {
                self.core.on_dialled(addr, Dialled::Ourselves, now);
            }
            Err(e) => {
                tracing::debug!(%addr, %e, "connect failed");
                self.core.on_dialled(addr, Dialled::Failed, now);
                self.with_core(|c, io| c.rendezvous_after_failure(addr, now, io));
            }
        }
        self.connect_more(now);
    }

    /// A holepunch dial (BEP 55) ended: a connection is a peer like a dialled one.
    fn on_punched(&mut self, addr: SocketAddr, res: Result<PeerConn, PeerError>) {
        match res {
            Ok(conn) => {
                tracing::debug!(%addr, "punched through");
                self.core.on_punch_dialled(addr, true);
                self.add_peer(conn, true);
            }
            Err(e) => {
                tracing::debug!(%addr, %e, "holepunch dial failed");
                self.core.on_punch_dialled(addr, false);
            }
        }
    }

    /// A connection from the metadata fetch: a peer like any other, with its handshakes
    /// done, if the core takes it (see [`SwarmCore::admit_handed`]). The others are closed;
    /// their peers' listen addresses become candidates.
    fn on_handed(&mut self, mut h: HandedConn) {
        let addr = h.conn.addr;
        let now = Instant::now();
        if let Err(why) = self.core.admit_handed(addr, h.outgoing, now) {
            tracing::debug!(%addr, ?why, "handed connection closed");
            let listen = if h.outgoing {
                Some(addr)
            } else {
                h.conn
                    .take_ext_done()
                    .and_then(|e| e.p)
                    .map(|p| SocketAddr::new(addr.ip(), p))
            };
            if let Some(a) = listen {
                self.core.add_candidate(a, false, now);
            }
            return;
        }
        if !h.outgoing {
            self.count_incoming(addr);
        }
        self.add_peer(h.conn, h.outgoing);
    }

    fn count_incoming(&self, addr: SocketAddr) {
        if let Some(c) = &self.p.cfg.sources {
            c.incoming.fetch_add(1, Ordering::Relaxed);
            c.note(addr, super::PeerOrigin::Incoming);
        }
    }

    /// The connected peers now.
    fn peer_list(&mut self) -> Vec<PeerInfo> {
        let now = Instant::now();
        let total = self.p.layout.piece_count();
        let links = &self.fx.links;
        self.core
            .peers
            .iter_mut()
            .map(|(key, p)| {
                let link = links.get(key);
                let (down_rate, up_rate) = p.rates(now);
                let (am_choking, peer_choking, am_interested, peer_interested) = p.flags();
                PeerInfo {
                    addr: p.addr,
                    peer_id: p.peer_id,
                    origin: link.and_then(|l| l.origin),
                    transport: p.transport,
                    encrypted: link.is_some_and(|l| l.encrypted),
                    outgoing: p.outgoing,
                    down_rate,
                    up_rate,
                    uploaded: p.counters.uploaded.load(Ordering::Relaxed),
                    pieces: p.has.count(),
                    pieces_total: total,
                    am_choking,
                    peer_choking,
                    am_interested,
                    peer_interested,
                }
            })
            .collect()
    }

    /// An incoming peer: admitted, closed, or refused with a courtesy (our bitfield,
    /// extended handshake, one PEX message with some of our peers, and the metadata if it
    /// asks within a moment; see [`super::courtesy`]) — the core decides which.
    fn on_incoming(&mut self, conn: PeerConn) {
        let now = Instant::now();
        match self.with_core(|c, io| c.on_incoming(conn.addr, now, io)) {
            Incoming::Admit => {
                self.count_incoming(conn.addr);
                self.add_peer(conn, false);
            }
            // Dropping the connection closes it.
            Incoming::Close(why) => tracing::trace!(addr = %conn.addr, ?why, "refused"),
            Incoming::Courtesy { slot, pex } => {
                let pex = (!pex.is_empty()).then(|| {
                    crate::peer::PexMsg {
                        added: pex,
                        dropped: Vec::new(),
                    }
                    .encode()
                });
                let ctx = super::courtesy::Courtesy {
                    info: self.p.info.clone(),
                    have: self.core.picker.have().clone(),
                    our_port: self.p.our_port,
                    pex,
                };
                tokio::spawn(super::courtesy::refuse(conn, ctx, slot));
            }
        }
    }

    fn add_peer(&mut self, conn: PeerConn, outgoing: bool) {
        let peer_id = conn.remote.peer_id;
        let addr = conn.addr;
        let now = Instant::now();
        let Ok(alt) = self.with_core(|c, io| c.duplicate(&peer_id, addr, outgoing, now, io)) else {
            return; // dropping the connection closes it
        };
        let key = PeerKey(self.next_key);
        self.next_key += 1;
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
            holepunch: self.p.dialer.utp.is_some(),
            their_holepunch: Default::default(),
            quota: self.core.choker.quota(),
            backlog: self.fx.backlog.clone(),
            reach: self.p.reach.clone(),
        };
        let transport = conn.transport;
        let encrypted = conn.encrypted;
        let origin = self.p.cfg.sources.as_ref().and_then(|c| c.origin(addr));
        tokio::spawn(run_peer(
            conn,
            ctx,
            self.core.picker.have().clone(),
            self.p.our_port,
            cmd_rx,
            self.ev_tx.clone(),
            ext_tx,
        ));
        self.fx.links.insert(
            key,
            Link {
                cmd: cmd_tx,
                ext_rx: Some(ext_rx),
                encrypted,
                origin,
            },
        );
        let peer = Peer::new(addr, peer_id, transport, outgoing, counters, n, now);
        self.core.add_peer(key, peer, alt);
    }

    // ---- peers: messages -----------------------------------------------------------

    fn on_peer_event(&mut self, key: PeerKey, ev: PeerEvent) {
        let now = Instant::now();
        match ev {
            PeerEvent::Closed(e) => {
                self.with_core(|c, io| c.on_closed(key, &e.to_string(), now, io));
            }
            PeerEvent::Pex(addrs) => {
                self.core.learn_relays(key, &addrs);
                let n = addrs.len() as u64;
                if let Some(c) = &self.p.cfg.sources {
                    for (a, _) in &addrs {
                        c.note(*a, super::PeerOrigin::Pex);
                    }
                }
                if self.with_core(|c, io| c.on_pex(addrs, now, io)) {
                    if let Some(c) = &self.p.cfg.sources {
                        c.pex.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
            PeerEvent::Quota => self.with_core(|c, io| c.on_quota(key, now, io)),
            PeerEvent::ExtUpdate { holepunch } => {
                self.poll_ext(key);
                self.core.on_ext_update(key, holepunch);
            }
            PeerEvent::Holepunch(m) => {
                self.poll_ext(key);
                self.with_core(|c, io| c.on_holepunch(key, m, now, io));
            }
            PeerEvent::Msg(m) => {
                self.poll_ext(key);
                self.with_core(|c, io| {
                    if let Err(why) = c.on_message(key, m, now, io) {
                        c.drop_peer(key, why, now, io);
                    }
                });
            }
            PeerEvent::Batch(ms) => {
                self.poll_ext(key);
                self.with_core(|c, io| c.on_batch(key, ms, now, io));
            }
        }
    }

    /// Hands the peer's extended handshake to the core once it has arrived.
    fn poll_ext(&mut self, key: PeerKey) {
        let Some(link) = self.fx.links.get_mut(&key) else {
            return;
        };
        let Some(ext) = link.ext_rx.as_mut().and_then(|rx| rx.try_recv().ok()) else {
            return;
        };
        link.ext_rx = None;
        let quic_port = ext.quic_port;
        if let Some(d) = self.core.on_ext(key, ext, Instant::now()) {
            self.p.dialer.peers.learn(d, quic_port);
        }
    }

    fn on_checked(
        &mut self,
        piece: u32,
        res: Result<bool, StorageError>,
        digests: Option<Vec<[u8; 20]>>,
    ) -> Result<(), SwarmError> {
        let ok = res?;
        let now = Instant::now();
        self.with_core(|c, io| c.on_checked(piece, ok, digests.as_deref(), now, io));
        Ok(())
    }

    // ---- web seeds -----------------------------------------------------------------

    /// A web-seed fetch ended: the core takes the bytes (or the error); a connection that
    /// delivered fetches again.
    fn on_ws_done(&mut self, d: webseeds::WsDone) {
        let now = Instant::now();
        let webseeds::WsDone {
            seed,
            fetcher,
            blocks,
            result,
        } = d;
        let data = result.map(Bytes::from);
        let delivered = self.with_core(|c, io| {
            let data = match &data {
                Ok(b) => Ok(b.clone()),
                Err(e) => Err(e as &dyn std::fmt::Display),
            };
            c.on_web_fetched(seed, blocks, data, now, io)
        });
        if delivered {
            self.fx.ws.keep(seed, fetcher);
            self.count_web_seeds();
            self.with_core(|c, io| c.web_fill(now, io));
        }
    }

    /// Web seeds not given up, for the session's source counters.
    fn count_web_seeds(&self) {
        if let Some(c) = self
            .p
            .cfg
            .sources
            .as_ref()
            .filter(|_| !self.fx.ws.urls().is_empty())
        {
            c.webseed
                .store(self.core.web_seeds_alive(), Ordering::Relaxed);
        }
    }

    // ---- periodic work -------------------------------------------------------------

    fn on_tick(&mut self) {
        let now = Instant::now();
        let keys: Vec<PeerKey> = self.core.peers.keys().copied().collect();
        for k in keys {
            self.poll_ext(k);
        }
        self.count_web_seeds();
        self.with_core(|c, io| c.tick(now, io));
        let up = self.total_uploaded.load(Ordering::Relaxed);
        self.up_rate.record(now, up - self.up_seen);
        self.up_seen = up;
        let phase = self.progress_phase();
        self.publish(phase);
    }

    /// Complete, and nothing to look after: no peer, dial, check or web-seed fetch.
    fn idle(&self) -> bool {
        self.complete()
            && self.core.peers.is_empty()
            && self.fx.connecting.is_empty()
            && self.fx.checking == 0
            && self.fx.ws.tasks.is_empty()
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

    /// Transport bytes including uploads not yet collected by the tick.
    fn transport_bytes_now(&self) -> TransportBytes {
        let mut t = self.core.transport_bytes;
        for p in self.core.peers.values() {
            let up = p.counters.uploaded.load(Ordering::Relaxed);
            t.add(p.transport, up - p.up_seen);
        }
        t
    }

    fn publish(&mut self, phase: Phase) {
        let now = Instant::now();
        let layout = &self.p.layout;
        let have = self.core.picker.have();
        let verified: u64 = have.iter_set().map(|i| layout.piece_len(i)).sum();
        let seeds = self.core.peers.values().filter(|p| p.has.is_full()).count();
        let down_rate = self.core.down_rate.rate(now);
        let up_rate = self.up_rate.rate(now);
        let downloaded = self.core.downloaded;
        let uploaded = self.total_uploaded.load(Ordering::Relaxed);
        let peers = self.core.peers.len();
        let known = self.core.known_peers();
        let transport_bytes = self.transport_bytes_now();
        let (failed_pieces, bans, written) =
            (self.core.failed_pieces, self.core.bans, self.fx.written);
        self.p.progress.send_modify(|pr| {
            pr.failed_pieces = failed_pieces;
            pr.bans = bans;
            pr.disk_written = written;
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
