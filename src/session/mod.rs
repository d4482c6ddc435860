//! The embeddable API: a [`Session`] owns the listening socket, our peer id and every
//! torrent; [`Session::add`] starts one from a magnet link or a .torrent and returns a
//! [`TorrentHandle`] to watch and stop it.
//!
//! A torrent's life: collect peer addresses from every source (magnet `x.pe`, `--peer`, the
//! DHT, trackers, PEX, incoming connections) into one channel → if only the info-hash is
//! known, fetch the info dictionary from peers (BEP 9/10) → check what is already on disk →
//! run the swarm actor ([`swarm`]) until complete → seed if asked.

pub mod backlog;
pub mod cands;
pub mod courtesy;
pub mod idle;
pub mod metadata;
pub mod own;
pub mod peer_task;
pub mod reach;
pub mod swarm;
pub mod trackers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::dht::{Dht, DhtConfig};
use crate::id::{InfoHash, PeerId};
use crate::magnet::{Magnet, PeerAddr};
use crate::metainfo::{Metainfo, MetainfoError};
use crate::net::Net;
use crate::peer::PeerConn;
use crate::torrent::resume::{self, ResumeSaver, ResumeState};
use crate::torrent::storage::{parts_file_name, DiskOptions, Storage, StorageError};
use crate::torrent::{Bitfield, Layout, LayoutError};

pub use metadata::{
    fetch_metadata, fetch_metadata_stats, serve_metadata, FetchConfig, FetchError, FetchStatus,
    Fetched, HandedConn,
};
pub use swarm::PeerInfo;
pub use swarm::{SwarmConfig, SwarmError, SwarmSummary, TransportBytes};
pub use trackers::{PeerOrigin, PeerSources, SourceCounters, TrackerStatus};

/// Where a torrent is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Looking for peers (DHT, trackers, x.pe).
    #[default]
    Searching,
    /// Peers found; fetching the info dictionary from them.
    Metadata,
    /// Verifying data already on disk.
    Checking,
    Downloading,
    /// Complete and serving others.
    Seeding,
    /// Complete; stopped.
    Done,
    /// Stopped before completion.
    Stopped,
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Searching => "searching",
            Phase::Metadata => "metadata",
            Phase::Checking => "checking",
            Phase::Downloading => "downloading",
            Phase::Seeding => "seeding",
            Phase::Done => "done",
            Phase::Stopped => "stopped",
        }
    }
}

/// A snapshot of one torrent, published a few times a second.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Progress {
    pub phase: Phase,
    pub name: Option<String>,
    /// Total bytes of the torrent (0 until the metadata is known).
    pub total: u64,
    /// Bytes in verified pieces.
    pub verified: u64,
    pub pieces: u32,
    pub pieces_have: u32,
    /// Payload bytes received over the wire in this run.
    pub downloaded: u64,
    /// Payload bytes sent in this run.
    pub uploaded: u64,
    pub down_rate: u64,
    pub up_rate: u64,
    /// Connected peers (seeds among them).
    pub peers: usize,
    pub seeds: usize,
    /// Distinct peer addresses heard of.
    pub known_peers: usize,
    /// While fetching metadata: peers tried so far, and metadata pieces (BEP 9, 16 KiB)
    /// received of how many (0 of 0 until a peer says the size).
    pub peers_tried: usize,
    pub metadata_pieces: usize,
    pub metadata_pieces_total: usize,
    /// Milliseconds from start to verified metadata (None until then, or when the torrent
    /// started from a .torrent).
    pub metadata_ms: Option<u64>,
    /// Peer addresses received per source (DHT, trackers, PEX, incoming, web seeds in use).
    pub sources: PeerSources,
    /// Each tracker's last status.
    pub trackers: Vec<TrackerStatus>,
    /// Payload bytes (received + sent) per transport.
    pub transport_bytes: swarm::TransportBytes,
    /// Pieces that failed their hash check, and peers banned for it, in this run.
    pub failed_pieces: u64,
    pub bans: u64,
    /// Bytes of verified pieces written to storage in this run.
    pub disk_written: u64,
}

/// Session-wide settings.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub net: Net,
    /// Where to accept peer connections (`None`: outgoing only).
    pub listen: Option<SocketAddr>,
    /// Seed of every random choice (peer id, picker, choker).
    pub rng_seed: Option<u64>,
    /// Hash and write on tokio's blocking pool (real runs) or inline (simulation).
    pub blocking_io: bool,
    /// Run a DHT node (BEP 5) on the listener's IP and port (UDP), used to find peers for
    /// every non-private torrent and to announce us. Needs `listen`.
    pub dht: Option<DhtConfig>,
    /// Tracker client settings (BEP 3/15); `None`: never announce to trackers.
    pub trackers: Option<crate::tracker::ClientConfig>,
    /// TCP, QUIC or both; QUIC shares the DHT's UDP port. Needs `listen`.
    pub transport: crate::dial::DialConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            net: Net::Tokio,
            listen: None,
            rng_seed: None,
            blocking_io: true,
            dht: None,
            trackers: Some(crate::tracker::ClientConfig::default()),
            transport: crate::dial::DialConfig::default(),
        }
    }
}

/// Why a torrent failed.
#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    #[error(transparent)]
    Metadata(#[from] FetchError),
    #[error("bad metadata: {0}")]
    BadMetadata(#[from] MetainfoError),
    #[error("bad file layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Swarm(#[from] SwarmError),
    #[error("stopped")]
    Stopped,
    /// A file selection (`--only`, a magnet's `so=`, BEP 53) naming files the torrent does
    /// not have: nothing, or not what was meant, would be downloaded.
    #[error("the file selection {selection} is out of range: the torrent has {files} files (indexes 0-{last})", last = files.saturating_sub(1))]
    BadSelection { selection: String, files: usize },
}

/// Checks a file selection against the torrent's file count.
pub fn check_selection(
    sel: &[std::ops::RangeInclusive<u32>],
    files: usize,
) -> Result<(), TorrentError> {
    let out_of_range = sel.is_empty() || sel.iter().any(|r| *r.end() as usize >= files);
    if !out_of_range {
        return Ok(());
    }
    Err(TorrentError::BadSelection {
        selection: crate::magnet::format_selection(sel),
        files,
    })
}

/// Where a torrent's data lives.
#[derive(Clone, Debug)]
pub enum StorageSpec {
    /// Files under this directory (the torrent's name is the file or top directory).
    Disk(PathBuf),
    /// In memory (simulation).
    Memory,
    /// Deterministic generated content (simulation seeders and leechers); `complete` = every
    /// piece present and verified from the start (a seeder; with a seed other than the
    /// torrent's it serves corrupt data, which is how simulations model liars).
    Generated { seed: u64, complete: bool },
}

/// What to start from.
#[derive(Clone, Debug)]
pub enum Source {
    Magnet(Magnet),
    Metainfo(Arc<Metainfo>),
}

impl Source {
    pub fn info_hash(&self) -> InfoHash {
        match self {
            Source::Magnet(m) => m.info_hash,
            Source::Metainfo(m) => m.info_hash,
        }
    }
}

/// Everything needed to add a torrent.
#[derive(Clone, Debug)]
pub struct AddTorrent {
    pub source: Source,
    pub storage: StorageSpec,
    /// Extra peers to try at once (as well as the magnet's `x.pe`).
    pub peers: Vec<SocketAddr>,
    pub swarm: SwarmConfig,
    /// Give up on metadata after this long without it.
    pub metadata_timeout: Duration,
    /// Directory for resume data (`<info-hash>.resume`, see [`crate::torrent::resume`]);
    /// `None`: no resume data, a full recheck of what is on disk at start.
    pub resume_dir: Option<PathBuf>,
    /// Download only these files (indexes as listed by `magnetfetch info`); `None`: the
    /// magnet's `so=` if any, else every file. Applied once the file list is known.
    pub only_files: Option<Vec<std::ops::RangeInclusive<u32>>>,
    /// Hash every piece on disk at start instead of trusting the resume data (which is still
    /// written as pieces verify). For files the user suspects were changed behind our back
    /// without their size or modification time changing.
    pub recheck: bool,
    /// Announce the torrent on the local network and take the peers announcing it there
    /// (BEP 14 Local Service Discovery; see [`crate::lsd`]). Never for a private torrent,
    /// never in simulation, and only with a listen address.
    pub lsd: bool,
}

impl AddTorrent {
    pub fn new(source: Source, storage: StorageSpec) -> Self {
        AddTorrent {
            source,
            storage,
            peers: Vec::new(),
            swarm: SwarmConfig::default(),
            metadata_timeout: Duration::from_secs(60),
            resume_dir: None,
            only_files: None,
            recheck: false,
            lsd: false,
        }
    }
}

/// How a torrent ended.
#[derive(Debug, Clone)]
pub struct TorrentOutcome {
    pub metainfo: Arc<Metainfo>,
    /// Bytes of the selected files when only some were downloaded (`--only`, `so=`).
    pub selected_size: Option<u64>,
    pub summary: SwarmSummary,
    pub metadata_ms: Option<u64>,
    pub elapsed: Duration,
}

/// A running torrent.
pub struct TorrentHandle {
    pub info_hash: InfoHash,
    progress: watch::Receiver<Progress>,
    metainfo: watch::Receiver<Option<Arc<Metainfo>>>,
    pieces: watch::Receiver<Option<Arc<Bitfield>>>,
    focus: watch::Sender<Vec<u32>>,
    stop: watch::Sender<bool>,
    addrs: mpsc::Sender<SocketAddr>,
    peer_list: mpsc::Sender<oneshot::Sender<Vec<PeerInfo>>>,
    join: JoinHandle<Result<TorrentOutcome, TorrentError>>,
}

impl TorrentHandle {
    /// Latest progress; `changed().await` on it to follow along.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// The torrent's metainfo once known: at once for a .torrent, after the metadata
    /// fetch (BEP 9) for a magnet. For callers that keep it (the daemon saves it, so a
    /// restart needs no second fetch) or show files.
    pub fn metainfo(&self) -> watch::Receiver<Option<Arc<Metainfo>>> {
        self.metainfo.clone()
    }

    /// The verified pieces once the swarm runs (after checking what is on disk), updated as
    /// each piece is verified *and written*: a reader may read a piece from the files as
    /// soon as its bit is set.
    pub fn pieces(&self) -> watch::Receiver<Option<Arc<Bitfield>>> {
        self.pieces.clone()
    }

    /// Streaming: where to send the pieces to fetch before any other, in order (the
    /// readers' windows); an empty list ends the focus.
    pub fn focus_sender(&self) -> watch::Sender<Vec<u32>> {
        self.focus.clone()
    }

    /// Asks for the connected peers (see [`PeerInfo`]); none while the torrent fetches
    /// its metadata or checks its data (the swarm answers once it runs).
    pub fn peer_lister(&self) -> PeerLister {
        PeerLister(self.peer_list.clone())
    }

    /// A sender for peer addresses from any source (DHT, tracker, ...).
    pub fn peer_sender(&self) -> mpsc::Sender<SocketAddr> {
        self.addrs.clone()
    }

    /// Asks the torrent to stop (it saves state and ends).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the torrent to end, without consuming the handle (so `stop` stays
    /// usable while waiting, e.g. in a `select!`). Call it no more once it returned.
    pub async fn join(&mut self) -> Result<TorrentOutcome, TorrentError> {
        match (&mut self.join).await {
            Ok(r) => r,
            Err(_) => Err(TorrentError::Stopped),
        }
    }

    /// Waits for the torrent to end.
    pub async fn wait(self) -> Result<TorrentOutcome, TorrentError> {
        match self.join.await {
            Ok(r) => r,
            Err(_) => Err(TorrentError::Stopped),
        }
    }
}

/// Asks a running torrent for its connected peers (see [`TorrentHandle::peer_lister`]).
#[derive(Clone, Debug)]
pub struct PeerLister(mpsc::Sender<oneshot::Sender<Vec<PeerInfo>>>);

impl PeerLister {
    /// The connected peers, or none when the swarm does not answer within `wait` (it
    /// is not running yet, or has ended).
    pub async fn peers(&self, wait: Duration) -> Vec<PeerInfo> {
        let (tx, rx) = oneshot::channel();
        if self.0.try_send(tx).is_err() {
            return Vec::new();
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(v)) => v,
            _ => Vec::new(),
        }
    }
}

struct Slot {
    incoming: mpsc::Sender<PeerConn>,
    /// Announced on the local network while held (dropped when the torrent turns out
    /// private).
    lsd: Option<crate::lsd::Registration>,
}

struct Inner {
    net: Net,
    peer_id: PeerId,
    listen_addr: Option<SocketAddr>,
    /// The IPv6 listener's address when dual-stack (see [`Session::start_dual_stack`]).
    listen_addr6: Option<SocketAddr>,
    torrents: Mutex<BTreeMap<InfoHash, Slot>>,
    rng: Mutex<StdRng>,
    blocking_io: bool,
    dht: Option<Arc<Dht>>,
    trackers: Option<Arc<crate::tracker::TrackerClient>>,
    dialer: crate::dial::Dialer,
    /// Our own addresses: no source makes us count or dial them.
    own: Arc<own::OwnAddrs>,
    /// Our external address and whether peers can reach us.
    reach: Arc<reach::Reach>,
    /// Local Service Discovery, started with the first torrent that wants it (`None`: not
    /// yet; `Some(None)`: it could not start, e.g. no multicast route).
    lsd: Mutex<Option<Option<Arc<crate::lsd::Lsd>>>>,
    /// Seeds LSD's cookie.
    lsd_seed: u64,
}

/// Our client: a peer id, a listening socket, and the torrents.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

/// Incoming connections waiting for their torrent at most. Twice a listen backlog (128):
/// a flash crowd's handshakes can all complete before the torrent runs, and one dropped
/// here is a peer that got neither a slot nor the courtesy of a refusal
/// ([`courtesy`]), only a closed connection.
const INCOMING_QUEUE: usize = 256;
/// How often a torrent's peer-source counters reach its progress.
const GLUE_TICK: Duration = Duration::from_millis(500);
/// The same for torrents that tick rarely when idle ([`SwarmConfig::idle_tick`]).
const GLUE_TICK_IDLE: Duration = Duration::from_secs(5);
/// Peer addresses queued for a torrent at most (senders drop beyond it).
const ADDR_QUEUE: usize = 1024;

impl Session {
    /// Starts a session; binds the listener when `cfg.listen` is set.
    pub async fn start(cfg: SessionConfig) -> std::io::Result<Session> {
        Self::start_dual_stack(cfg, None).await
    }

    /// Like [`Session::start`], plus a second listen address of the other family than
    /// `cfg.listen` (dual stack; normally `cfg.listen` IPv4 and `listen6` IPv6): TCP listener there too, and the DHT runs an IPv6 socket
    /// and routing table beside the IPv4 ones (BEP 32). Port 0 in `listen6` means the same
    /// port as `cfg.listen` got, so peers of both families learn one port. Fails if that
    /// address cannot be bound (callers wanting "IPv6 if available" retry without it).
    pub async fn start_dual_stack(
        cfg: SessionConfig,
        listen6: Option<SocketAddr>,
    ) -> std::io::Result<Session> {
        if let (Some(a), Some(b)) = (cfg.listen, listen6) {
            if a.is_ipv6() == b.is_ipv6() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "dual stack needs one IPv4 and one IPv6 listen address",
                ));
            }
        }
        let mut rng = match cfg.rng_seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        let peer_id = crate::peer::generate_peer_id(&mut rng);
        let (listener, dht, quic, listener6, utp) = bind(&cfg, listen6).await?;
        let listen_addr = match &listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let listen_addr6 = match &listener6 {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let trackers = cfg.trackers.clone().map(|mut c| {
            c.seed = rng.next_u64();
            // UDP trackers record the source address: send from the IP we listen on
            // (matters on hosts with several addresses, and on 127.0.0.x in tests).
            if c.bind_ip.is_none() {
                c.bind_ip = listen_addr
                    .map(|a| a.ip())
                    .filter(|ip| !ip.is_unspecified());
            }
            Arc::new(crate::tracker::TrackerClient::new(cfg.net.clone(), c))
        });
        let listens: Vec<SocketAddr> = listen_addr.into_iter().chain(listen_addr6).collect();
        let local_ips = if !cfg.net.is_sim() && listens.iter().any(|a| a.ip().is_unspecified()) {
            own::local_interface_ips()
        } else {
            Vec::new()
        };
        // Not drawn from the session's rng: every other random choice stays as it was.
        let lsd_seed = cfg
            .rng_seed
            .map_or_else(rand::random, |s| s ^ 0x6c73_645f_636f_6f6b);
        let inner = Arc::new(Inner {
            own: Arc::new(own::OwnAddrs::new(listens, local_ips)),
            reach: Arc::new(reach::Reach::new(listen_addr)),
            lsd: Mutex::new(None),
            lsd_seed,
            net: cfg.net.clone(),
            peer_id,
            listen_addr,
            listen_addr6,
            torrents: Mutex::new(BTreeMap::new()),
            rng: Mutex::new(rng),
            blocking_io: cfg.blocking_io,
            dht: dht.map(Arc::new),
            trackers,
            dialer: crate::dial::Dialer {
                mode: cfg.transport.mode,
                tcp_delay: cfg.transport.tcp_delay,
                quic: quic.clone(),
                utp: utp.as_ref().map(|u| u.socket.clone()),
                peers: Default::default(),
                // Its own rng, seeded from the session's seed without drawing from the
                // session's rng, so every other random choice stays as it was.
                mse: crate::peer::MsePolicy::new(
                    cfg.transport.encryption,
                    cfg.rng_seed.map(|s| s ^ 0x6d73_655f_7065_5f31),
                ),
            },
        });
        if let Some(l) = listener {
            tokio::spawn(accept_loop(l, Arc::downgrade(&inner)));
        }
        if let Some(l) = listener6 {
            tokio::spawn(accept_loop(l, Arc::downgrade(&inner)));
        }
        if let Some(ep) = quic {
            tokio::spawn(quic_accept_loop(ep, Arc::downgrade(&inner)));
        }
        if let Some(l) = utp.and_then(|u| u.take_listener()) {
            tokio::spawn(utp_accept_loop(l, Arc::downgrade(&inner)));
        }
        Ok(Session { inner })
    }

    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// The address peers connect to (if listening).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.inner.listen_addr
    }

    /// The IPv6 listen address when dual-stack (same port as [`Session::listen_addr`]).
    pub fn listen_addr6(&self) -> Option<SocketAddr> {
        self.inner.listen_addr6
    }

    pub fn net(&self) -> &Net {
        &self.inner.net
    }

    /// The transport policy and QUIC endpoint (if any).
    pub fn dialer(&self) -> &crate::dial::Dialer {
        &self.inner.dialer
    }

    /// Ends the session's network presence before the process exits: closes every QUIC
    /// connection (see [`crate::net::quic::QuicEndpoint::shutdown`]; at most 0.5 s), so QUIC
    /// peers drop us at once instead of after their 60 s idle timeout (TCP peers learn it
    /// from the kernel when the process exits). Call it after the torrents have stopped
    /// (their connections then close gracefully first); the session accepts no QUIC
    /// connection afterwards.
    pub async fn shutdown(&self) {
        if let Some(ep) = &self.inner.dialer.quic {
            ep.shutdown().await;
        }
        if let Some(u) = &self.inner.dialer.utp {
            u.close();
        }
    }

    /// The session's DHT node, when it runs one.
    pub fn dht(&self) -> Option<&Dht> {
        self.inner.dht.as_deref()
    }

    /// Our external address (a port mapping's, else what the DHT's BEP 42 consensus and the
    /// peers' BEP 10 `yourip` agree on) and whether peers can reach us (see [`reach`]).
    pub async fn reachability(&self) -> reach::ReachStatus {
        if let Some(d) = &self.inner.dht {
            self.inner
                .reach
                .dht(d.stats().await.external_addr.map(|a| a.ip()));
        }
        self.inner.reach.status()
    }

    /// A port mapping (UPnP IGD, NAT-PMP, PCP) succeeded with this external address, or was
    /// lost (`None`): the router then forwards to us, so we are reachable.
    pub fn set_port_mapping(&self, external: Option<SocketAddr>) {
        self.inner.reach.set_mapping(external);
    }

    /// Whether Local Service Discovery runs (it starts with the first torrent added with
    /// [`AddTorrent::lsd`]).
    pub fn lsd_running(&self) -> bool {
        matches!(*lock(&self.inner.lsd), Some(Some(_)))
    }

    /// The LSD service, started on first use: not in simulation, not without a listen
    /// address, and not where the host refuses multicast (said once in the log).
    fn lsd(&self) -> Option<Arc<crate::lsd::Lsd>> {
        let mut slot = lock(&self.inner.lsd);
        if let Some(l) = &*slot {
            return l.clone();
        }
        let started = self.start_lsd();
        *slot = Some(started.clone());
        started
    }

    fn start_lsd(&self) -> Option<Arc<crate::lsd::Lsd>> {
        if self.inner.net.is_sim() {
            return None;
        }
        let listen = self.inner.listen_addr?;
        let listens = [Some(listen), self.inner.listen_addr6];
        let v4 = listens.iter().flatten().find_map(|a| match a.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            _ => None,
        });
        let v6 = listens.iter().flatten().find_map(|a| match a.ip() {
            std::net::IpAddr::V6(ip) => Some(ip),
            _ => None,
        });
        let cfg = crate::lsd::LsdConfig {
            port: listen.port(),
            v4,
            v6,
            seed: self.inner.lsd_seed,
        };
        match crate::lsd::Lsd::start(cfg) {
            Ok(l) => {
                tracing::debug!(port = listen.port(), "LSD started");
                Some(Arc::new(l))
            }
            Err(e) => {
                // Info, not a warning: many hosts (containers, loopback-only tests) have
                // no multicast, and a command's stderr is kept to its errors.
                tracing::info!(%e, "local service discovery (LSD) is off: no multicast");
                None
            }
        }
    }

    /// Adds a torrent and starts it.
    pub fn add(&self, add: AddTorrent) -> TorrentHandle {
        let info_hash = add.source.info_hash();
        // A .torrent starts at checking (nothing to search for before the pieces on disk).
        let first = match &add.source {
            Source::Metainfo(m) => Progress {
                phase: Phase::Checking,
                name: Some(m.info.name.clone()),
                total: m.info.total_length(),
                ..Progress::default()
            },
            Source::Magnet(_) => Progress::default(),
        };
        let (progress_tx, progress_rx) = watch::channel(first);
        let (meta_tx, meta_rx) = watch::channel(match &add.source {
            Source::Metainfo(m) => Some(m.clone()),
            Source::Magnet(_) => None,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let (pieces_tx, pieces_rx) = watch::channel(None);
        let (focus_tx, focus_rx) = watch::channel(Vec::new());
        let (addr_tx, addr_rx) = mpsc::channel(ADDR_QUEUE);
        let (list_tx, list_rx) = mpsc::channel(8);
        let (inc_tx, inc_rx) = mpsc::channel(INCOMING_QUEUE);
        lock(&self.inner.torrents).insert(
            info_hash,
            Slot {
                incoming: inc_tx,
                lsd: None,
            },
        );
        let rng_seed = lock(&self.inner.rng).next_u64();
        for a in initial_peers(&add) {
            if self.inner.own.is_own(a) {
                continue;
            }
            let _ = addr_tx.try_send(a);
        }
        let private = matches!(&add.source, Source::Metainfo(m) if m.info.private);
        let counters = Arc::new(SourceCounters::default());
        for a in initial_peers(&add) {
            counters.note(a, PeerOrigin::Given);
        }
        if let (Some(dht), false) = (&self.inner.dht, private) {
            tokio::spawn(discover(
                dht.clone(),
                info_hash,
                self.inner.listen_addr.map(|a| a.port()),
                addr_tx.clone(),
                progress_rx.clone(),
                counters.clone(),
                self.inner.own.clone(),
            ));
        }
        if let (true, false, Some(lsd)) = (add.lsd, private, self.lsd()) {
            let (reg, peers) = lsd.register(info_hash);
            if let Some(slot) = lock(&self.inner.torrents).get_mut(&info_hash) {
                slot.lsd = Some(reg);
            }
            tokio::spawn(lsd_peers(
                peers,
                addr_tx.clone(),
                counters.clone(),
                self.inner.own.clone(),
            ));
        }
        let glue = trackers::start(trackers::GlueParams {
            client: self.inner.trackers.clone(),
            info_hash,
            peer_id: self.inner.peer_id,
            port: self.inner.listen_addr.map_or(0, |a| a.port()),
            tiers: tracker_tiers(&add.source),
            rng_seed: rng_seed ^ 0x7472_6163_6b65_7273,
            counters: counters.clone(),
            progress: progress_tx.clone(),
            peers: addr_tx.clone(),
            own: self.inner.own.clone(),
            // A daemon's idle torrents (see `SwarmConfig::idle_tick`) copy their counters
            // less often too.
            tick: if add.swarm.idle_tick.is_some() {
                GLUE_TICK_IDLE
            } else {
                GLUE_TICK
            },
        });
        let mut add = add;
        add.swarm.private = add.swarm.private || private;
        add.swarm.sources = Some(counters);
        let inner = self.inner.clone();
        let join = tokio::spawn(async move {
            let r = run_torrent(
                &inner,
                add,
                rng_seed,
                (progress_tx, meta_tx),
                TorrentInputs {
                    stop: stop_rx,
                    focus: focus_rx,
                    pieces: pieces_tx,
                    addrs: addr_rx,
                    incoming: inc_rx,
                    seen: Vec::new(),
                    peer_list: list_rx,
                },
            )
            .await;
            lock(&inner.torrents).remove(&info_hash);
            // `stopped` to the trackers (bounded) before the torrent is reported ended.
            glue.stop().await;
            r
        });
        TorrentHandle {
            info_hash,
            progress: progress_rx,
            metainfo: meta_rx,
            pieces: pieces_rx,
            focus: focus_tx,
            stop: stop_tx,
            addrs: addr_tx,
            peer_list: list_tx,
            join,
        }
    }
}

/// What [`bind`] opened: the TCP listener, the DHT node, the QUIC endpoint, the IPv6
/// TCP listener when dual-stack, and the uTP socket.
type Bound = (
    Option<crate::net::Listener>,
    Option<Dht>,
    Option<crate::net::quic::QuicEndpoint>,
    Option<crate::net::Listener>,
    Option<crate::net::utp::UtpBound>,
);

/// Binds the TCP listener and, when asked, the DHT's UDP socket on the same IP and port
/// (peers learn one port for both); QUIC, when on, shares that UDP socket (first-byte
/// demultiplexing, see [`crate::net::quic`]). With port 0 the TCP port is chosen by the
/// system and may be taken for UDP: then a few other ports are tried.
async fn bind(cfg: &SessionConfig, listen6: Option<SocketAddr>) -> std::io::Result<Bound> {
    let Some(addr) = cfg.listen else {
        return Ok((None, None, None, None, None));
    };
    let quic = cfg.transport.mode.uses_quic();
    let utp = cfg.transport.mode.uses_utp();
    let attempts = if addr.port() == 0 { 8 } else { 1 };
    let mut last_err = None;
    for _ in 0..attempts {
        let listener = cfg.net.listen(addr).await?;
        if cfg.transport.endpoint.is_some() || cfg.transport.utp_socket.is_some() {
            // The caller bound QUIC and/or uTP (and runs any DHT on that socket itself).
            let ep = cfg.transport.endpoint.clone().filter(|_| quic);
            let u = cfg.transport.utp_socket.clone().filter(|_| utp);
            return Ok((Some(listener), None, ep, None, u));
        }
        let udp_addr = listener.local_addr()?;
        // Dual stack: TCP (and the DHT's UDP) on the IPv6 address too, by default on the
        // same port. QUIC stays on the first socket only.
        let (listener6, udp6) = match listen6 {
            None => (None, None),
            Some(mut a6) => {
                if a6.port() == 0 {
                    a6.set_port(udp_addr.port());
                }
                let l6 = match cfg.net.listen(a6).await {
                    Ok(l) => l,
                    Err(e) if addr.port() == 0 && listen6.is_some_and(|a| a.port() == 0) => {
                        last_err = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let u6 = if cfg.dht.is_some() {
                    match cfg.net.bind_udp(l6.local_addr()?).await {
                        Ok(u) => Some(u),
                        Err(e) => {
                            last_err = Some(e);
                            continue;
                        }
                    }
                } else {
                    None
                };
                (Some(l6), u6)
            }
        };
        if cfg.dht.is_none() && !quic && !utp {
            return Ok((Some(listener), None, None, listener6, None));
        }
        let (sock, ep, ut) = if quic || utp {
            let mut qcfg = cfg.transport.quic.clone();
            qcfg.seed = qcfg.seed.or(cfg.rng_seed);
            let mut ucfg = cfg.transport.utp.clone();
            ucfg.seed = ucfg.seed.or(cfg.rng_seed.map(|s| s ^ 0x7574_705f));
            let q = quic.then_some(&qcfg);
            match crate::net::quic::bind_stack(&cfg.net, udp_addr, q, utp.then_some(&ucfg)).await {
                Ok(st) => (
                    Some(st.krpc),
                    st.quic,
                    st.utp.map(|(s, l)| crate::net::utp::UtpBound::new(s, l)),
                ),
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            }
        } else {
            (None, None, None)
        };
        let Some(dcfg) = &cfg.dht else {
            if let Some(s) = sock {
                tokio::spawn(crate::net::quic::drain_krpc(s));
            }
            return Ok((Some(listener), None, ep, listener6, ut));
        };
        let sock = match sock {
            Some(s) => s,
            None => match cfg.net.bind_udp(udp_addr).await {
                Ok(s) => s,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            },
        };
        let socks = std::iter::once(sock).chain(udp6).collect();
        match Dht::start_on_sockets(socks, dcfg.clone()) {
            Ok(d) => return Ok((Some(listener), Some(d), ep, listener6, ut)),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("cannot bind the DHT socket")))
}

/// First re-lookup while we have no metadata or no peer yet (doubling up to
/// [`DISCOVER_RETRY`], see [`RelookupBackoff`]).
pub const DISCOVER_FIRST_RETRY: Duration = Duration::from_millis(500);
/// Re-lookup interval while no peer is connected yet.
const DISCOVER_RETRY: Duration = Duration::from_secs(30);
/// Re-announce interval once peers are connected (BEP 5 peers expire after 30 min).
const DISCOVER_REANNOUNCE: Duration = Duration::from_secs(15 * 60);

/// When to look a torrent up on the DHT again while it still lacks metadata or peers.
///
/// Quick at first, then doubling up to a cap. The first lookup ends by announcing us, so
/// everyone who arrived with us (a flash crowd) becomes visible on the DHT only after it:
/// a second lookup half a second later finds them, and the peers among them that already
/// fetched the metadata can serve it, instead of all waiting for the one seed we found
/// first (which may be full). Once the torrent has metadata and peers, lookups go back to
/// the normal interval and the backoff starts over if it loses them.
#[derive(Clone, Debug)]
pub struct RelookupBackoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl RelookupBackoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        let cap = cap.max(first);
        RelookupBackoff {
            first,
            cap,
            next: first,
        }
    }

    /// The wait before the next lookup: `normal` once we are `served` (metadata and at least
    /// one peer), else the next step of the backoff.
    pub fn next_wait(&mut self, served: bool, normal: Duration) -> Duration {
        if served {
            self.next = self.first;
            return normal;
        }
        let w = self.next;
        self.next = (self.next * 2).min(self.cap);
        w.min(normal)
    }
}

/// Peers heard on the local network (BEP 14) into the torrent's peer channel, counted as
/// source `lsd`. Ends when either side does.
async fn lsd_peers(
    mut peers: mpsc::Receiver<SocketAddr>,
    tx: mpsc::Sender<SocketAddr>,
    counters: Arc<SourceCounters>,
    own: Arc<own::OwnAddrs>,
) {
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            p = peers.recv() => match p {
                Some(a) if own.is_own(a) => {}
                Some(a) => {
                    counters.lsd.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    counters.note(a, trackers::PeerOrigin::Lsd);
                    let _ = tx.try_send(a);
                }
                None => return,
            },
        }
    }
}

/// Finds peers for one torrent on the DHT and announces us (BEP 5 `get_peers` then
/// `announce_peer`), feeding every peer to the torrent; again after 0.5, 1, 2, ... 30 s
/// while it has no metadata or no peer ([`RelookupBackoff`]), every 15 min after. Ends when the torrent ends (its address channel closes).
async fn discover(
    dht: Arc<Dht>,
    info_hash: InfoHash,
    port: Option<u16>,
    tx: mpsc::Sender<SocketAddr>,
    progress: watch::Receiver<Progress>,
    counters: Arc<SourceCounters>,
    own: Arc<own::OwnAddrs>,
) {
    let mut watch_end = progress.clone();
    let ended = async move { while watch_end.changed().await.is_ok() {} };
    tokio::pin!(ended);
    let mut backoff = RelookupBackoff::new(DISCOVER_FIRST_RETRY, DISCOVER_RETRY);
    loop {
        // Our address as the DHT sees it (BEP 42 votes) is ours too: behind a NAT that
        // forwards our port, it is the one our own announce comes back with.
        if let (Some(p), Some(ext)) = (port, dht.stats().await.external_addr) {
            own.learn(SocketAddr::new(ext.ip(), p));
        }
        let seeding = matches!(progress.borrow().phase, Phase::Seeding);
        let announce = port.map(Some);
        let mut h = dht.lookup(info_hash, announce, seeding).await;
        loop {
            tokio::select! {
                biased;
                _ = tx.closed() => return,
                _ = &mut ended => return,
                p = h.peers.recv() => match p {
                    // A full queue only drops this one address; the torrent has plenty.
                    // Our own announce comes back from the DHT: not a peer.
                    Some(a) if own.is_own(a) => {}
                    Some(a) => {
                        counters.dht.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        counters.note(a, trackers::PeerOrigin::Dht);
                        let _ = tx.try_send(a);
                    }
                    None => break,
                },
            }
        }
        let served = {
            let p = progress.borrow();
            p.peers > 0 && p.total > 0
        };
        let wait = backoff.next_wait(served, DISCOVER_REANNOUNCE);
        tokio::select! {
            biased;
            _ = tx.closed() => return,
            _ = &mut ended => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The torrent's tracker tiers: `announce-list` (BEP 12) else `announce`; a magnet's `tr=`
/// one tier each (BEP 9 gives them no order).
fn tracker_tiers(source: &Source) -> Vec<Vec<String>> {
    match source {
        Source::Magnet(m) => m.trackers.iter().map(|t| vec![t.clone()]).collect(),
        Source::Metainfo(m) if !m.announce_list.is_empty() => m.announce_list.clone(),
        Source::Metainfo(m) => m.announce.iter().map(|t| vec![t.clone()]).collect(),
    }
}

fn initial_peers(add: &AddTorrent) -> Vec<SocketAddr> {
    let mut v = add.peers.clone();
    if let Source::Magnet(m) = &add.source {
        for p in &m.peers {
            if let PeerAddr::Ip(a) = p {
                v.push(*a);
            }
        }
    }
    v
}

async fn accept_loop(listener: crate::net::Listener, inner: std::sync::Weak<Inner>) {
    loop {
        let Ok((stream, addr)) = listener.accept().await else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if inner.strong_count() == 0 {
            return;
        }
        tokio::spawn(accept_peer(stream, addr, inner.clone()));
    }
}

/// Incoming QUIC connections: the QUIC handshake and the peer's stream, then the same
/// BitTorrent handshake as over TCP.
async fn quic_accept_loop(ep: crate::net::quic::QuicEndpoint, inner: std::sync::Weak<Inner>) {
    while let Some(inc) = ep.accept().await {
        if inner.strong_count() == 0 {
            ep.close();
            return;
        }
        let weak = inner.clone();
        tokio::spawn(async move {
            let addr = inc.remote_addr();
            match tokio::time::timeout(Duration::from_secs(10), inc.stream()).await {
                Ok(Ok((stream, addr))) => accept_peer(stream, addr, weak).await,
                Ok(Err(e)) => tracing::debug!(%addr, %e, "incoming QUIC failed"),
                Err(_) => tracing::debug!(%addr, "incoming QUIC timed out"),
            }
        });
    }
}

/// Incoming uTP connections: the same handshakes as over TCP (MSE/PE included).
async fn utp_accept_loop(mut l: crate::net::utp::UtpListener, inner: std::sync::Weak<Inner>) {
    while let Some((s, addr)) = l.accept().await {
        if inner.strong_count() == 0 {
            return;
        }
        let stream = crate::net::Stream::Utp(Box::new(s));
        tokio::spawn(accept_peer(stream, addr, inner.clone()));
    }
}

/// The handshakes of an incoming connection (any transport; MSE/PE or plaintext over TCP
/// as the encryption policy allows); hands it to its torrent.
async fn accept_peer(stream: crate::net::Stream, addr: SocketAddr, weak: std::sync::Weak<Inner>) {
    let Some((our_id, policy)) = weak.upgrade().map(|i| (i.peer_id, i.dialer.mse.clone())) else {
        return;
    };
    let torrents = || {
        weak.upgrade()
            .map(|i| lock(&i.torrents).keys().copied().collect())
            .unwrap_or_default()
    };
    let t = Duration::from_secs(10);
    let conn = match PeerConn::accept_any(stream, addr, our_id, &policy, torrents, t).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%addr, %e, "incoming handshake failed");
            return;
        }
    };
    let Some(i) = weak.upgrade() else { return };
    i.reach.incoming(addr.ip());
    let tx = lock(&i.torrents)
        .get(&conn.remote.info_hash)
        .map(|s| s.incoming.clone());
    if let Some(tx) = tx {
        let _ = tx.try_send(conn);
    }
}

/// The inputs a torrent task reads: stop requests, peer addresses and incoming connections.
struct TorrentInputs {
    stop: watch::Receiver<bool>,
    focus: watch::Receiver<Vec<u32>>,
    /// Where the verified pieces are published (see [`TorrentHandle::pieces`]).
    pieces: watch::Sender<Option<Arc<Bitfield>>>,
    addrs: mpsc::Receiver<SocketAddr>,
    incoming: mpsc::Receiver<PeerConn>,
    /// Peer addresses heard of during the metadata phase (the swarm's first candidates).
    seen: Vec<SocketAddr>,
    peer_list: mpsc::Receiver<oneshot::Sender<Vec<PeerInfo>>>,
}

/// The phases of one torrent: metadata (magnets only), storage and check/resume, swarm.
async fn run_torrent(
    inner: &Arc<Inner>,
    add: AddTorrent,
    rng_seed: u64,
    (progress, meta_out): (
        watch::Sender<Progress>,
        watch::Sender<Option<Arc<Metainfo>>>,
    ),
    mut inputs: TorrentInputs,
) -> Result<TorrentOutcome, TorrentError> {
    let start = Instant::now();
    let only = add.only_files.clone().or_else(|| match &add.source {
        Source::Magnet(m) => m.select_only.clone(),
        Source::Metainfo(_) => None,
    });
    let web_seeds: Vec<String> = match &add.source {
        Source::Magnet(m) => m.web_seeds.clone(),
        Source::Metainfo(m) => m.url_list.clone(),
    };
    let (metainfo, metadata_ms, handed) = match &add.source {
        Source::Metainfo(m) => (m.clone(), None, Vec::new()),
        Source::Magnet(m) => {
            let fetched =
                metadata_phase(inner, m, add.metadata_timeout, &progress, &mut inputs).await?;
            let mut meta = Metainfo::from_info_bytes(&fetched.info)?;
            // The magnet's trackers and web seeds, so a .torrent written from this one
            // (the daemon keeps one) names them too.
            meta.announce = m.trackers.first().cloned();
            meta.announce_list = m.trackers.iter().map(|t| vec![t.clone()]).collect();
            meta.url_list = m.web_seeds.clone();
            let ms = start.elapsed().as_millis() as u64;
            let meta = Arc::new(meta);
            meta_out.send_replace(Some(meta.clone()));
            (meta, Some(ms), fetched.conns)
        }
    };
    if metainfo.info.private {
        // A magnet says nothing of BEP 27: once the info dictionary does, no more LSD.
        if let Some(slot) = lock(&inner.torrents).get_mut(&metainfo.info_hash) {
            slot.lsd = None;
        }
    }
    if let Some(sel) = &only {
        check_selection(sel, metainfo.info.files.len())?;
    }
    let files = open_storage(&add, &metainfo, only.as_deref())?;
    progress.send_modify(|p| {
        p.phase = Phase::Checking;
        p.name = Some(metainfo.info.name.clone());
        p.total = files.layout.total_length();
        p.pieces = files.layout.piece_count();
        p.metadata_ms = metadata_ms;
    });
    let (have, resume_path) = check_phase(&add, &files).await?;
    let selected_size = files.selected_size;
    let summary = swarm_phase(
        inner,
        &add,
        &metainfo,
        files,
        have,
        resume_path,
        web_seeds,
        rng_seed,
        progress,
        inputs,
        handed,
    )
    .await?;
    Ok(TorrentOutcome {
        metainfo,
        selected_size,
        summary,
        metadata_ms,
        elapsed: start.elapsed(),
    })
}

/// A magnet's metadata phase: the BEP 9 fetch from the peers arriving on `inputs` (and
/// those dialling us), with its progress shown while the size is unknown. The fetch's open
/// connections come back with the metadata, for the swarm.
async fn metadata_phase(
    inner: &Arc<Inner>,
    m: &Magnet,
    timeout: Duration,
    progress: &watch::Sender<Progress>,
    inputs: &mut TorrentInputs,
) -> Result<Fetched, TorrentError> {
    let info_hash = m.info_hash;
    progress.send_modify(|p| {
        p.phase = Phase::Searching;
        p.name = m.display_name.clone();
    });
    let (meta_tx, meta_rx) = mpsc::channel(ADDR_QUEUE);
    let status = Arc::new(FetchStatus::default());
    // What the fetch has done, shown while the size is still unknown.
    let mut show = tokio::time::interval(Duration::from_millis(250));
    show.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cfg = FetchConfig {
        timeout,
        listen_port: inner.listen_addr.map(|a| a.port()),
        // The swarm downloads over the fetch's connections: no re-dial.
        hand_over: true,
        status: Some(status.clone()),
        ..FetchConfig::default()
    };
    // Peers that dial us meanwhile (they heard of us from a tracker) serve it too.
    let (inc_tx, inc_rx) = mpsc::channel(INCOMING_QUEUE);
    let fetch = metadata::fetch_metadata_incoming(
        inner.net.clone(),
        &inner.dialer,
        info_hash,
        inner.peer_id,
        meta_rx,
        inc_rx,
        cfg,
    );
    tokio::pin!(fetch);
    let mut stop_open = true;
    let TorrentInputs {
        stop,
        addrs,
        incoming,
        seen,
        ..
    } = inputs;
    let fetched = loop {
        tokio::select! {
            biased;
            // A dropped handle (Err) leaves the torrent running; stop polling it, or this
            // branch would be ready forever and spin.
            r = stop.changed(), if stop_open => {
                stop_open = r.is_ok();
                if *stop.borrow() {
                    return Err(TorrentError::Stopped);
                }
            }
            r = &mut fetch => break r?,
            _ = show.tick() => show_fetch_status(progress, &status),
            Some(c) = incoming.recv() => {
                let _ = inc_tx.try_send(c);
            }
            Some(a) = addrs.recv() => {
                if seen.len() < 10_000 && !seen.contains(&a) && !inner.own.is_own(a) {
                    seen.push(a);
                    if seen.len() == 1 {
                        progress.send_modify(|p| p.phase = Phase::Metadata);
                    }
                    progress.send_modify(|p| p.known_peers = seen.len());
                    let _ = meta_tx.try_send(a);
                }
            }
        }
    };
    tracing::debug!(%info_hash, peers = fetched.connected, "metadata fetched");
    Ok(fetched)
}

/// Copies the fetch's counters into the progress (when they changed).
fn show_fetch_status(progress: &watch::Sender<Progress>, status: &FetchStatus) {
    use std::sync::atomic::Ordering::Relaxed;
    progress.send_if_modified(|p| {
        let now = (
            status.tried.load(Relaxed),
            status.connected.load(Relaxed),
            status.pieces.load(Relaxed),
            status.pieces_total.load(Relaxed),
        );
        let was = (
            p.peers_tried,
            p.peers,
            p.metadata_pieces,
            p.metadata_pieces_total,
        );
        (
            p.peers_tried,
            p.peers,
            p.metadata_pieces,
            p.metadata_pieces_total,
        ) = now;
        now != was
    });
}

/// A torrent's files: layout, storage and the selection.
struct TorrentFiles {
    layout: Arc<Layout>,
    storage: Arc<Storage>,
    /// SHA-1 of every piece (from the info dictionary).
    hashes: Arc<Vec<[u8; 20]>>,
    /// Per-file priority (0 = skip); empty = all files.
    file_priorities: Vec<u8>,
    /// Bytes of the selected files when only some are downloaded.
    selected_size: Option<u64>,
}

/// The layout of the info dictionary's files and the storage behind it.
fn open_storage(
    add: &AddTorrent,
    metainfo: &Metainfo,
    only: Option<&[std::ops::RangeInclusive<u32>]>,
) -> Result<TorrentFiles, TorrentError> {
    let info = &metainfo.info;
    let info_hash = add.source.info_hash();
    // No path is copied per file: the layout keeps the components in one arena and the
    // torrent's name once (a million-file torrent would otherwise cost ~250 B per file).
    let mut builder = Layout::builder(
        info.piece_length,
        info.multi_file.then_some(info.name.as_str()),
    )?;
    for f in &info.files {
        builder.push(f.path.iter().map(String::as_str), f.length, f.pad);
    }
    let layout = Arc::new(builder.build()?);
    let file_priorities: Vec<u8> = match only {
        Some(sel) => (0..info.files.len() as u32)
            .map(|i| u8::from(sel.iter().any(|r| r.contains(&i))))
            .collect(),
        None => add.swarm.file_priorities.clone(),
    };
    // With a selection, only selected files are created; boundary pieces' bytes of the
    // others go to a hidden parts file (see `torrent::storage`).
    let selected_size = {
        let selected = layout.selected_length(&file_priorities);
        (selected < layout.selected_length(&[])).then_some(selected)
    };
    let storage = match &add.storage {
        StorageSpec::Disk(dir) => Storage::disk_with(
            layout.clone(),
            dir.clone(),
            DiskOptions {
                selected: file_priorities.iter().map(|&p| p > 0).collect(),
                parts_name: parts_file_name(&info_hash),
                // BEP 47 `x`: executable files get their execute bits back.
                executable: info.files.iter().map(|f| f.executable).collect(),
            },
        ),
        StorageSpec::Memory => Storage::memory(layout.clone()),
        StorageSpec::Generated { seed, complete } => {
            Storage::generated(layout.clone(), *seed, *complete)
        }
    };
    let storage = Arc::new(storage.with_write_rate(add.swarm.disk_write_rate));
    Ok(TorrentFiles {
        layout,
        storage,
        hashes: Arc::new(info.pieces.clone()),
        file_priorities,
        selected_size,
    })
}

/// What is already there, verified (resume data or a recheck), and where resume data
/// goes. Whatever is on disk is never overwritten blindly: only pieces that fail their
/// hash are downloaded (and only those are written).
async fn check_phase(
    add: &AddTorrent,
    files: &TorrentFiles,
) -> Result<(Bitfield, Option<PathBuf>), TorrentError> {
    let info_hash = add.source.info_hash();
    let resume_path = match (&add.storage, &add.resume_dir) {
        (StorageSpec::Disk(_), Some(d)) => Some(resume::resume_path(d, &info_hash)),
        _ => None,
    };
    let n = files.layout.piece_count();
    let have = match &add.storage {
        StorageSpec::Disk(_) => {
            // --recheck: load no resume data, so every piece on disk is hashed.
            let trusted = resume_path.as_deref().filter(|_| !add.recheck);
            initial_have(&files.storage, &files.hashes, info_hash, trusted).await?
        }
        StorageSpec::Generated { complete: true, .. } => Bitfield::full(n),
        _ => Bitfield::new(n),
    };
    Ok((have, resume_path))
}

/// Downloads (and seeds) with the swarm actor until it ends; resume data is saved as
/// pieces verify.
#[allow(clippy::too_many_arguments)]
async fn swarm_phase(
    inner: &Arc<Inner>,
    add: &AddTorrent,
    metainfo: &Metainfo,
    files: TorrentFiles,
    have: Bitfield,
    resume_path: Option<PathBuf>,
    web_seeds: Vec<String>,
    rng_seed: u64,
    progress: watch::Sender<Progress>,
    inputs: TorrentInputs,
    handed: Vec<HandedConn>,
) -> Result<SwarmSummary, TorrentError> {
    let info_hash = add.source.info_hash();
    let info = &metainfo.info;
    let (resume_tx, resume_task) = match &resume_path {
        Some(path) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(save_resume(
                path.clone(),
                info_hash,
                files.storage.clone(),
                have.clone(),
                rx,
            ));
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    // Verified pieces go to the resume saver and to whoever reads the pieces watch
    // (streaming). A forwarder rather than a second channel in the swarm: the swarm sends
    // each verified piece once, after its write.
    let verified_tx = {
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        let mut bits = have.clone();
        inputs.pieces.send_replace(Some(Arc::new(bits.clone())));
        let pieces_out = inputs.pieces.clone();
        tokio::spawn(async move {
            while let Some(piece) = rx.recv().await {
                if let Some(r) = &resume_tx {
                    let _ = r.send(piece);
                }
                if piece < bits.len() && !bits.get(piece) {
                    bits.set(piece);
                    pieces_out.send_replace(Some(Arc::new(bits.clone())));
                }
            }
        });
        Some(tx)
    };
    let params = swarm::SwarmParams {
        bind_ip: inner
            .listen_addr
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified()),
        net: inner.net.clone(),
        info_hash,
        our_id: inner.peer_id,
        our_port: inner.listen_addr.map(|a| a.port()),
        own: inner.own.clone(),
        dialer: inner.dialer.clone(),
        layout: files.layout,
        piece_hashes: files.hashes,
        info: Bytes::from(metainfo.raw_info.clone()),
        storage: files.storage,
        have,
        rng_seed,
        cfg: SwarmConfig {
            blocking_io: inner.blocking_io && add.swarm.blocking_io,
            file_priorities: files.file_priorities,
            web_seeds: swarm::WebSeedSetup::new(metainfo, web_seeds),
            // A magnet says nothing of BEP 27: the fetched info dictionary does.
            private: add.swarm.private || info.private,
            ..add.swarm.clone()
        },
        progress,
        verified_tx,
        reach: Some(inner.reach.clone()),
    };
    tracing::debug!(%info_hash, have = params.have.count(), "swarm starting");
    let sw = swarm::Swarm::new(params);
    // Peers heard of during the metadata phase are this swarm's first candidates.
    let TorrentInputs {
        stop,
        focus,
        pieces: _,
        mut addrs,
        incoming,
        seen,
        peer_list,
    } = inputs;
    let (fwd_tx, fwd_rx) = mpsc::channel(ADDR_QUEUE);
    tokio::spawn(async move {
        for a in seen {
            if fwd_tx.send(a).await.is_err() {
                return;
            }
        }
        while let Some(a) = addrs.recv().await {
            if fwd_tx.send(a).await.is_err() {
                return;
            }
        }
    });
    let result = sw
        .run(swarm::SwarmInputs {
            addrs: fwd_rx,
            incoming,
            stop,
            handed,
            focus: Some(focus),
            peer_list: Some(peer_list),
        })
        .await;
    // The swarm is gone, so is its sender: the saver writes the final state and ends.
    if let Some(t) = resume_task {
        let _ = t.await;
    }
    Ok(result?)
}

/// Pieces already on disk: the resume data's trusted pieces plus a re-hash of the pieces it
/// cannot vouch for (files changed since); without usable resume data, a full recheck.
async fn initial_have(
    storage: &Arc<Storage>,
    hashes: &Arc<Vec<[u8; 20]>>,
    info_hash: InfoHash,
    resume_path: Option<&std::path::Path>,
) -> Result<Bitfield, StorageError> {
    let layout = storage.layout().clone();
    let state = match resume_path {
        Some(p) => match ResumeState::load(p, &info_hash, &layout) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%e, "resume data ignored; rechecking");
                None
            }
        },
        None => None,
    };
    let Some(state) = state else {
        return crate::torrent::verify::recheck_blocking(storage.clone(), hashes.clone(), None)
            .await;
    };
    let plan = state.plan(&layout, &resume::file_stamps(storage));
    tracing::debug!(
        trusted = plan.trusted.count(),
        recheck = plan.recheck.count(),
        "resume data loaded"
    );
    let mut have = plan.trusted;
    if !plan.recheck.none() {
        let ok = crate::torrent::verify::recheck_blocking(
            storage.clone(),
            hashes.clone(),
            Some(plan.recheck),
        )
        .await?;
        for p in ok.iter_set() {
            have.set(p);
        }
    }
    Ok(have)
}

/// Saves resume data as pieces verify (batched by [`ResumeSaver`]), and once more when the
/// swarm ends. During the download the data is flushed (`fdatasync`, on the blocking pool)
/// before the state that vouches for it is written. The last save does not flush: pieces
/// verified since the previous flush are recorded as `unsynced` (re-hashed at the next start
/// instead of trusted), so a finished download does not wait seconds for the disk.
async fn save_resume(
    path: PathBuf,
    info_hash: InfoHash,
    storage: Arc<Storage>,
    mut have: Bitfield,
    mut verified: mpsc::UnboundedReceiver<u32>,
) {
    // Every 2 s, or after 256 new pieces (a flush costs an fdatasync: not per few MiB).
    let mut saver = ResumeSaver::new(Duration::from_secs(2), 256, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Pieces whose data was on disk (flushed) at the last save. What we start with was read
    // back from disk (trusted or re-hashed), so it counts as durable; saving it once at the
    // end turns a previous run's `unsynced` pieces, now re-hashed, into trusted ones.
    let mut durable = have.clone();
    let mut dirty = !have.none();
    // Pieces verified since the last save: only then is the tick needed (an idle seed
    // would otherwise wake every second for nothing).
    let mut pending = false;
    loop {
        let open = tokio::select! {
            biased;
            p = verified.recv() => match p {
                Some(p) => {
                    if have.set(p) {
                        saver.on_verified();
                        dirty = true;
                        pending = true;
                    }
                    true
                }
                None => false,
            },
            _ = tick.tick(), if pending => true,
        };
        if (!open && dirty) || saver.due(Instant::now()) {
            let state = have.clone();
            let flush = open;
            let unsynced = (!flush).then(|| {
                let mut u = Bitfield::new(state.len());
                for p in state.iter_set().filter(|&p| !durable.get(p)) {
                    u.set(p);
                }
                u
            });
            let st = storage.clone();
            let p = path.clone();
            let saved = state.clone();
            let r = tokio::task::spawn_blocking(move || {
                if flush {
                    st.flush().map_err(|e| e.to_string())?;
                }
                ResumeState {
                    info_hash,
                    have: state,
                    unsynced,
                    files: resume::file_stamps(&st),
                }
                .save(&p)
                .map_err(|e| e.to_string())
            })
            .await;
            match r {
                Ok(Ok(())) => {
                    if flush {
                        durable = saved;
                    }
                }
                Ok(Err(e)) => tracing::warn!(%e, "cannot save resume data"),
                Err(e) => tracing::warn!(%e, "resume save task failed"),
            }
            saver.saved(Instant::now());
            dirty = false;
            pending = false;
        }
        if !open {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selection_must_name_existing_files() {
        assert!(check_selection(&[0..=0, 2..=2], 3).is_ok());
        let e = check_selection(&[5..=7], 3).unwrap_err().to_string();
        assert_eq!(
            e,
            "the file selection 5-7 is out of range: the torrent has 3 files (indexes 0-2)"
        );
        assert!(check_selection(&[0..=3], 3).is_err());
        assert!(check_selection(&[], 3).is_err());
    }

    #[test]
    fn relookup_backoff_is_quick_then_doubles_and_resets_once_served() {
        let ms = Duration::from_millis;
        let normal = Duration::from_secs(900);
        let mut b = RelookupBackoff::new(ms(500), Duration::from_secs(2));
        let waits: Vec<Duration> = (0..5).map(|_| b.next_wait(false, normal)).collect();
        assert_eq!(waits, vec![ms(500), ms(1000), ms(2000), ms(2000), ms(2000)]);
        // Served: the normal interval, and the backoff starts over if we lose our peers.
        assert_eq!(b.next_wait(true, normal), normal);
        assert_eq!(b.next_wait(false, normal), ms(500));
        // Never longer than the normal interval.
        let mut b = RelookupBackoff::new(ms(500), Duration::from_secs(30));
        for _ in 0..10 {
            assert!(b.next_wait(false, Duration::from_secs(1)) <= Duration::from_secs(1));
        }
    }
}
