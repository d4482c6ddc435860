//! The embeddable API: a [`Session`] owns the listening socket, our peer id and every
//! torrent; [`Session::add`] starts one from a magnet link or a .torrent and returns a
//! [`TorrentHandle`] to watch and stop it.
//!
//! A torrent's life: collect peer addresses from every source (magnet `x.pe`, `--peer`, the
//! DHT, trackers, PEX, incoming connections) into one channel → if only the info-hash is
//! known, fetch the info dictionary from peers (BEP 9/10) → check what is already on disk →
//! run the swarm actor ([`swarm`]) until complete → seed if asked.

pub mod peer_task;
pub mod swarm;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::id::{InfoHash, PeerId};
use crate::magnet::{Magnet, PeerAddr};
use crate::metainfo::{Metainfo, MetainfoError};
use crate::net::Net;
use crate::peer::{FetchConfig, FetchError, PeerConn};
use crate::torrent::storage::{Storage, StorageError};
use crate::torrent::{Bitfield, FileSpec, Layout, LayoutError};

pub use swarm::{SwarmConfig, SwarmError, SwarmSummary};

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
    /// Milliseconds from start to verified metadata (None until then, or when the torrent
    /// started from a .torrent).
    pub metadata_ms: Option<u64>,
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
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            net: Net::Tokio,
            listen: None,
            rng_seed: None,
            blocking_io: true,
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
}

impl AddTorrent {
    pub fn new(source: Source, storage: StorageSpec) -> Self {
        AddTorrent {
            source,
            storage,
            peers: Vec::new(),
            swarm: SwarmConfig::default(),
            metadata_timeout: Duration::from_secs(60),
        }
    }
}

/// How a torrent ended.
#[derive(Debug, Clone)]
pub struct TorrentOutcome {
    pub metainfo: Arc<Metainfo>,
    pub summary: SwarmSummary,
    pub metadata_ms: Option<u64>,
    pub elapsed: Duration,
}

/// A running torrent.
pub struct TorrentHandle {
    pub info_hash: InfoHash,
    progress: watch::Receiver<Progress>,
    stop: watch::Sender<bool>,
    addrs: mpsc::Sender<SocketAddr>,
    join: JoinHandle<Result<TorrentOutcome, TorrentError>>,
}

impl TorrentHandle {
    /// Latest progress; `changed().await` on it to follow along.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// A sender for peer addresses from any source (DHT, tracker, ...).
    pub fn peer_sender(&self) -> mpsc::Sender<SocketAddr> {
        self.addrs.clone()
    }

    /// Asks the torrent to stop (it saves state and ends).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the torrent to end.
    pub async fn wait(self) -> Result<TorrentOutcome, TorrentError> {
        match self.join.await {
            Ok(r) => r,
            Err(_) => Err(TorrentError::Stopped),
        }
    }
}

struct Slot {
    incoming: mpsc::Sender<PeerConn>,
}

struct Inner {
    net: Net,
    peer_id: PeerId,
    listen_addr: Option<SocketAddr>,
    torrents: Mutex<BTreeMap<InfoHash, Slot>>,
    rng: Mutex<StdRng>,
    blocking_io: bool,
}

/// Our client: a peer id, a listening socket, and the torrents.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

/// Incoming connections waiting for their torrent at most.
const INCOMING_QUEUE: usize = 64;
/// Peer addresses queued for a torrent at most (senders drop beyond it).
const ADDR_QUEUE: usize = 1024;

impl Session {
    /// Starts a session; binds the listener when `cfg.listen` is set.
    pub async fn start(cfg: SessionConfig) -> std::io::Result<Session> {
        let mut rng = match cfg.rng_seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        let peer_id = crate::peer::generate_peer_id(&mut rng);
        let listener = match cfg.listen {
            Some(a) => Some(cfg.net.listen(a).await?),
            None => None,
        };
        let listen_addr = match &listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let inner = Arc::new(Inner {
            net: cfg.net.clone(),
            peer_id,
            listen_addr,
            torrents: Mutex::new(BTreeMap::new()),
            rng: Mutex::new(rng),
            blocking_io: cfg.blocking_io,
        });
        if let Some(l) = listener {
            tokio::spawn(accept_loop(l, Arc::downgrade(&inner)));
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

    pub fn net(&self) -> &Net {
        &self.inner.net
    }

    /// Adds a torrent and starts it.
    pub fn add(&self, add: AddTorrent) -> TorrentHandle {
        let info_hash = add.source.info_hash();
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let (addr_tx, addr_rx) = mpsc::channel(ADDR_QUEUE);
        let (inc_tx, inc_rx) = mpsc::channel(INCOMING_QUEUE);
        lock(&self.inner.torrents).insert(info_hash, Slot { incoming: inc_tx });
        let rng_seed = lock(&self.inner.rng).next_u64();
        for a in initial_peers(&add) {
            let _ = addr_tx.try_send(a);
        }
        let inner = self.inner.clone();
        let join = tokio::spawn(async move {
            let r = run_torrent(&inner, add, rng_seed, progress_tx, stop_rx, addr_rx, inc_rx).await;
            lock(&inner.torrents).remove(&info_hash);
            r
        });
        TorrentHandle {
            info_hash,
            progress: progress_rx,
            stop: stop_tx,
            addrs: addr_tx,
            join,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let our_id = strong.peer_id;
        let weak = inner.clone();
        drop(strong);
        tokio::spawn(async move {
            let known = |ih: &InfoHash| {
                weak.upgrade()
                    .is_some_and(|i| lock(&i.torrents).contains_key(ih))
            };
            let conn =
                match PeerConn::accept(stream, addr, our_id, known, Duration::from_secs(10)).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(%addr, %e, "incoming handshake failed");
                        return;
                    }
                };
            let Some(i) = weak.upgrade() else { return };
            let tx = lock(&i.torrents)
                .get(&conn.remote.info_hash)
                .map(|s| s.incoming.clone());
            if let Some(tx) = tx {
                let _ = tx.try_send(conn);
            }
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_torrent(
    inner: &Arc<Inner>,
    add: AddTorrent,
    rng_seed: u64,
    progress: watch::Sender<Progress>,
    mut stop: watch::Receiver<bool>,
    mut addrs: mpsc::Receiver<SocketAddr>,
    incoming: mpsc::Receiver<PeerConn>,
) -> Result<TorrentOutcome, TorrentError> {
    let start = Instant::now();
    let info_hash = add.source.info_hash();
    let mut seen: Vec<SocketAddr> = Vec::new();
    let (metainfo, metadata_ms) = match add.source {
        Source::Metainfo(m) => (m, None),
        Source::Magnet(m) => {
            progress.send_modify(|p| {
                p.phase = Phase::Searching;
                p.name = m.display_name.clone();
            });
            let (meta_tx, meta_rx) = mpsc::channel(ADDR_QUEUE);
            let cfg = FetchConfig {
                timeout: add.metadata_timeout,
                listen_port: inner.listen_addr.map(|a| a.port()),
                ..FetchConfig::default()
            };
            let fetch = crate::peer::fetch_metadata_stats(
                inner.net.clone(),
                info_hash,
                inner.peer_id,
                meta_rx,
                cfg,
            );
            tokio::pin!(fetch);
            let fetched = loop {
                tokio::select! {
                    biased;
                    _ = stop.changed() => {
                        if *stop.borrow() {
                            return Err(TorrentError::Stopped);
                        }
                    }
                    r = &mut fetch => break r?,
                    Some(a) = addrs.recv() => {
                        if seen.len() < 10_000 && !seen.contains(&a) {
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
            let meta = Metainfo::from_info_bytes(&fetched.info)?;
            let ms = start.elapsed().as_millis() as u64;
            (Arc::new(meta), Some(ms))
        }
    };
    let info = &metainfo.info;
    let files: Vec<FileSpec> = info
        .files
        .iter()
        .map(|f| {
            let mut path = Vec::with_capacity(f.path.len() + 1);
            if info.multi_file {
                path.push(info.name.clone());
            }
            path.extend(f.path.iter().cloned());
            FileSpec {
                path,
                length: f.length,
                pad: f.pad,
            }
        })
        .collect();
    let layout = Arc::new(Layout::new(info.piece_length, files)?);
    let hashes = Arc::new(info.pieces.clone());
    let storage = Arc::new(match &add.storage {
        StorageSpec::Disk(dir) => Storage::disk(layout.clone(), dir.clone()),
        StorageSpec::Memory => Storage::memory(layout.clone()),
        StorageSpec::Generated { seed, complete } => {
            Storage::generated(layout.clone(), *seed, *complete)
        }
    });
    progress.send_modify(|p| {
        p.phase = Phase::Checking;
        p.name = Some(info.name.clone());
        p.total = layout.total_length();
        p.pieces = layout.piece_count();
        p.metadata_ms = metadata_ms;
    });
    // Whatever is already there is verified, never overwritten blindly: only pieces that
    // fail their hash are downloaded (and only those are written).
    let have = match &add.storage {
        StorageSpec::Disk(_) => {
            crate::torrent::verify::recheck_blocking(storage.clone(), hashes.clone(), None)
                .await?
        }
        StorageSpec::Generated { complete: true, .. } => Bitfield::full(layout.piece_count()),
        _ => Bitfield::new(layout.piece_count()),
    };
    let params = swarm::SwarmParams {
        net: inner.net.clone(),
        info_hash,
        our_id: inner.peer_id,
        our_port: inner.listen_addr.map(|a| a.port()),
        layout,
        piece_hashes: hashes,
        info: Bytes::from(metainfo.raw_info.clone()),
        storage,
        have,
        rng_seed,
        cfg: SwarmConfig {
            blocking_io: inner.blocking_io && add.swarm.blocking_io,
            ..add.swarm.clone()
        },
        progress,
        verified_tx: None,
    };
    tracing::debug!(%info_hash, have = params.have.count(), "swarm starting");
    let sw = swarm::Swarm::new(params);
    // Peers heard of during the metadata phase are this swarm's first candidates.
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
    let summary = sw
        .run(swarm::SwarmInputs {
            addrs: fwd_rx,
            incoming,
            stop,
        })
        .await?;
    Ok(TorrentOutcome {
        metainfo,
        summary,
        metadata_ms,
        elapsed: start.elapsed(),
    })
}
