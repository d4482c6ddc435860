//! `magnetfetch daemon`: many torrents in one [`Session`] (one listening port, one DHT node),
//! added, paused, resumed and removed over an HTTP API ([`api`]), kept across restarts
//! ([`store`]).
//!
//! No BEP of its own: the torrents run exactly as `fetch` runs them (BEP 3, 5, 9, 10...),
//! seeding once complete until paused or removed. The daemon owns the registry of torrents
//! (id ↔ info-hash, settings, last progress); one small supervisor task per running torrent
//! waits for it to end and records how it ended. Verified pieces survive a restart through
//! the session's resume data; the list itself through [`store`]. A watch folder
//! (`folder`) adds the .torrent and .magnet files dropped into it.

pub mod api;
mod folder;
mod input;
mod metrics;
mod peers;
pub mod store;
mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::id::InfoHash;
use crate::metainfo::Metainfo;
use crate::session::{AddTorrent, Phase, Progress, Session, Source, StorageSpec};
use crate::torrent::layout::check_component;
pub use store::Settings;
use store::{Saved, SavedList, Store};

pub use folder::spawn as watch_folder;
pub use input::InputError;

/// A torrent's swarm answers a request for its peers within this (else: none).
const PEERS_WAIT: Duration = Duration::from_secs(2);

/// An idle seed (no peer) ticks this often (see `SwarmConfig::idle_tick`).
const IDLE_TICK: Duration = Duration::from_secs(5);

/// How often a seeding torrent's seed ratio and seed time are checked.
const SEED_LIMIT_EVERY: Duration = Duration::from_millis(500);

/// Settings of a daemon.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Where torrents are downloaded unless added with another directory.
    pub download_dir: PathBuf,
    /// Resume data (`resume/`) and the daemon's list (`daemon/`).
    pub state_dir: PathBuf,
    /// Give up on a magnet's metadata after this long (the torrent then shows `error`).
    pub metadata_timeout: Duration,
    /// Rate limits applied to every torrent (bytes/s).
    pub max_down_rate: Option<u64>,
    pub max_up_rate: Option<u64>,
    /// Local Service Discovery (BEP 14) for the torrents (never for private ones).
    pub lsd: bool,
    /// At most this many torrents download (and this many seed) at once; the others wait
    /// in the queue (`queued`), in queue order. `None`: no limit.
    pub queue: QueueLimits,
}

/// Caps on running torrents (`--max-active-downloads`, `--max-active-seeds`, `PATCH /session`).
/// A torrent looking for peers, fetching its metadata or checking counts as a download.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueLimits {
    pub max_active_downloads: Option<usize>,
    pub max_active_seeds: Option<usize>,
}

/// What a torrent is doing, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Searching,
    Metadata,
    Checking,
    Downloading,
    Seeding,
    /// Waiting for a free download or seed slot (see [`QueueLimits`]).
    Queued,
    Paused,
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Searching => "searching",
            State::Metadata => "metadata",
            State::Checking => "checking",
            State::Downloading => "downloading",
            State::Seeding => "seeding",
            State::Queued => "queued",
            State::Paused => "paused",
            State::Error => "error",
        }
    }

    /// Every state, for metrics that list each one.
    pub const ALL: [State; 8] = [
        State::Searching,
        State::Metadata,
        State::Checking,
        State::Downloading,
        State::Seeding,
        State::Queued,
        State::Paused,
        State::Error,
    ];
}

/// One torrent as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TorrentView {
    pub id: u64,
    pub infohash: String,
    /// The torrent's name, once the metadata is known (else the magnet's `dn`, if any).
    pub name: Option<String>,
    pub state: State,
    /// Verified bytes over the total, 0 to 1 (0 while the size is unknown).
    pub progress: f64,
    /// Bytes in verified pieces.
    pub downloaded: u64,
    /// Bytes of the torrent (0 until the metadata is known).
    pub total_size: u64,
    /// Payload bytes received since the torrent last started.
    pub received: u64,
    /// Payload bytes sent since the torrent last started.
    pub uploaded: u64,
    pub down_rate: u64,
    pub up_rate: u64,
    pub peers: usize,
    pub seeds: usize,
    pub known_peers: usize,
    /// Seconds to completion at the current rate (none when unknown or complete).
    pub eta: Option<u64>,
    /// While the metadata is fetched: peers tried, and BEP 9 pieces of how many.
    pub peers_tried: usize,
    pub metadata_pieces: usize,
    pub metadata_pieces_total: usize,
    pub output: PathBuf,
    /// Seconds since the Unix epoch.
    pub added: u64,
    /// Why it stopped, for `state: error`.
    pub error: Option<String>,
    /// Streaming readers now.
    pub stream_readers: usize,
    /// Why the daemon paused it by itself (`seed ratio 2 reached`, `seeded for 3600 s`).
    pub paused_because: Option<String>,
    /// Place in the queue, 0 first (every torrent has one; see `POST /torrents/{id}/queue`).
    pub queue_position: usize,
    pub settings: Settings,
}

/// One file of a torrent, as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct FileView {
    /// The index to use in `/torrents/{id}/stream/{index}`.
    pub index: usize,
    /// Path inside the torrent, `/`-separated.
    pub path: String,
    pub length: u64,
    pub content_type: &'static str,
}

/// Why an API call could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("no torrent {0}")]
    NotFound(String),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("cannot save the daemon's state: {0}")]
    Store(String),
    #[error("{0}")]
    Refused(String),
}

struct Entry {
    id: u64,
    info_hash: InfoHash,
    magnet: Option<String>,
    /// A name to show before the metadata is known (the magnet's `dn`).
    display_name: Option<String>,
    output: PathBuf,
    added: u64,
    paused: bool,
    /// Wants to run but waits for a slot (see [`QueueLimits`]).
    queued: bool,
    /// Queue order: smaller first (the add order unless moved).
    order: u64,
    /// Was complete when last seen running: queued as a seed, not as a download.
    complete: bool,
    settings: Settings,
    /// Why the daemon paused it by itself (seed ratio or time reached).
    paused_because: Option<String>,
    error: Option<String>,
    /// Known metainfo (from a .torrent, or fetched).
    metainfo: Option<Arc<Metainfo>>,
    /// Present while the torrent runs.
    run: Option<Run>,
    /// The last progress of a run that ended (shown while paused or failed).
    last: Progress,
}

struct Run {
    /// Distinguishes this run from a later one of the same entry (a pause then resume).
    generation: u64,
    progress: watch::Receiver<Progress>,
    stop: watch::Sender<bool>,
    /// Becomes true once the run has ended and its end is recorded.
    done: watch::Receiver<bool>,
    /// For streaming: the metainfo once known, the verified pieces, the readers.
    meta: watch::Receiver<Option<Arc<Metainfo>>>,
    pieces: watch::Receiver<Option<Arc<crate::torrent::Bitfield>>>,
    readers: Arc<stream::Readers>,
    lister: crate::session::PeerLister,
}

impl Run {
    /// Asks the run to stop; the returned receiver turns true once it has.
    fn stop(&self) -> watch::Receiver<bool> {
        let _ = self.stop.send(true);
        self.done.clone()
    }
}

/// Waits until a run's `done` turns true (or its supervisor is gone).
async fn ended(mut done: watch::Receiver<bool>) {
    let _ = done.wait_for(|d| *d).await;
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    generation: u64,
    next_order: u64,
    torrents: BTreeMap<u64, Entry>,
}

impl Registry {
    /// Ids in queue order.
    fn queue(&self) -> Vec<u64> {
        let mut ids: Vec<(u64, u64)> = self.torrents.values().map(|e| (e.order, e.id)).collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }
}

/// The daemon: a session and its torrents.
pub struct Daemon {
    session: Session,
    cfg: DaemonConfig,
    store: Store,
    reg: Mutex<Registry>,
    /// Serialises writes of the list so an older snapshot never overwrites a newer one.
    save_lock: Mutex<()>,
    /// The port mapping's status as JSON, when one runs (shown by `GET /session`).
    port_mapping: Mutex<Option<watch::Receiver<serde_json::Value>>>,
    queue: Mutex<QueueLimits>,
    /// Bytes the HTTP streams read from disk.
    stream_read: Arc<std::sync::atomic::AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Daemon {
    /// Starts a daemon on `session` and brings back the torrents saved in the state
    /// directory (paused ones stay paused).
    pub fn start(session: Session, cfg: DaemonConfig) -> Result<Arc<Daemon>, String> {
        let store = Store::new(&cfg.state_dir);
        let saved = store.load()?;
        let cfg_queue = cfg.queue;
        let d = Arc::new(Daemon {
            session,
            cfg,
            store,
            reg: Mutex::new(Registry {
                next_id: saved.next_id.max(1),
                ..Registry::default()
            }),
            save_lock: Mutex::new(()),
            port_mapping: Mutex::new(None),
            queue: Mutex::new(cfg_queue),
            stream_read: Default::default(),
        });
        for s in saved.torrents {
            if let Err(e) = d.restore(&s) {
                tracing::warn!(id = s.id, info_hash = %s.info_hash, "cannot restore torrent: {e}");
            }
        }
        d.schedule();
        Ok(d)
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Where the port mapping's status (as JSON) can be read.
    pub fn set_port_mapping(&self, status: watch::Receiver<serde_json::Value>) {
        *lock(&self.port_mapping) = Some(status);
    }

    /// The port mapping's status as JSON (`null` when none runs).
    pub fn port_mapping(&self) -> serde_json::Value {
        lock(&self.port_mapping)
            .as_ref()
            .map_or(serde_json::Value::Null, |r| r.borrow().clone())
    }

    fn restore(self: &Arc<Self>, s: &Saved) -> Result<(), String> {
        let ih = InfoHash::from_hex(&s.info_hash).map_err(|e| e.to_string())?;
        let magnet = match &s.magnet {
            Some(m) => Some(crate::magnet::Magnet::parse(m).map_err(|e| e.to_string())?),
            None => None,
        };
        let metainfo = match std::fs::read(self.store.torrent_path(&ih)) {
            Ok(b) => Some(Arc::new(
                Metainfo::from_bytes(&b).map_err(|e| e.to_string())?,
            )),
            Err(_) => None,
        };
        let source = match (metainfo, magnet) {
            (Some(m), _) => Source::Metainfo(m),
            (None, Some(m)) => Source::Magnet(m),
            (None, None) => return Err("neither a .torrent nor a magnet link saved".into()),
        };
        if source.info_hash() != ih {
            return Err("saved source is for another info-hash".into());
        }
        self.insert(
            s.id,
            source,
            s.magnet.clone(),
            (s.output.clone(), s.added, s.paused),
            s.settings.clone(),
        );
        let mut reg = lock(&self.reg);
        let order = s.queue_order.unwrap_or(s.id);
        reg.next_order = reg.next_order.max(order + 1);
        if let Some(e) = reg.torrents.get_mut(&s.id) {
            e.order = order;
            e.complete = s.complete;
        }
        Ok(())
    }

    /// Adds a torrent (or finds it: adding one twice answers the first one's id; a
    /// .torrent added for a magnet still waiting for its metadata gives it the metadata).
    /// `raw_torrent` is the .torrent's bytes when the source is a .torrent.
    pub async fn add(
        self: &Arc<Self>,
        source: Source,
        raw_torrent: Option<&[u8]>,
        magnet_text: Option<String>,
    ) -> Result<(u64, InfoHash), DaemonError> {
        let ih = source.info_hash();
        let existing = {
            let mut reg = lock(&self.reg);
            reg.torrents
                .values_mut()
                .find(|e| e.info_hash == ih)
                .map(|e| match (&source, &e.metainfo) {
                    (Source::Metainfo(m), None) => {
                        e.metainfo = Some(m.clone());
                        (e.id, true, e.run.as_ref().map(Run::stop))
                    }
                    _ => (e.id, false, None),
                })
        };
        if let Some((id, upgraded, restart)) = existing {
            if let (true, Some(b)) = (upgraded, raw_torrent) {
                self.store
                    .save_torrent(&ih, b)
                    .map_err(|e| DaemonError::Store(e.to_string()))?;
            }
            if let Some(done) = restart {
                ended(done).await;
                self.schedule();
            }
            return Ok((id, ih));
        }
        if let Some(b) = raw_torrent {
            self.store
                .save_torrent(&ih, b)
                .map_err(|e| DaemonError::Store(e.to_string()))?;
        }
        let id = {
            let mut reg = lock(&self.reg);
            let id = reg.next_id;
            reg.next_id += 1;
            id
        };
        let output = self.cfg.download_dir.clone();
        self.insert(
            id,
            source,
            magnet_text,
            (output, now_secs(), false),
            Settings::default(),
        );
        self.schedule();
        self.save()?;
        Ok((id, ih))
    }

    fn insert(
        self: &Arc<Self>,
        id: u64,
        source: Source,
        magnet: Option<String>,
        (output, added, paused): (PathBuf, u64, bool),
        settings: Settings,
    ) {
        let (display_name, metainfo) = match &source {
            Source::Magnet(m) => (m.display_name.clone(), None),
            Source::Metainfo(m) => (Some(m.info.name.clone()), Some(m.clone())),
        };
        let entry = Entry {
            id,
            info_hash: source.info_hash(),
            magnet,
            display_name,
            output,
            added,
            paused,
            queued: false,
            order: 0,
            complete: false,
            settings,
            paused_because: None,
            error: None,
            metainfo,
            run: None,
            last: Progress::default(),
        };
        let mut reg = lock(&self.reg);
        reg.next_id = reg.next_id.max(id + 1);
        let mut entry = entry;
        entry.order = reg.next_order;
        reg.next_order += 1;
        reg.torrents.insert(id, entry);
    }

    /// The queue limits now.
    pub fn queue_limits(&self) -> QueueLimits {
        *lock(&self.queue)
    }

    /// Changes the queue limits (not saved: the command line's apply again after a restart).
    pub fn set_queue_limits(self: &Arc<Self>, q: QueueLimits) {
        *lock(&self.queue) = q;
        self.schedule();
    }

    /// Moves torrent `key` to `position` in the queue (0 first; past the end: last).
    pub fn move_in_queue(
        self: &Arc<Self>,
        key: &str,
        position: usize,
    ) -> Result<TorrentView, DaemonError> {
        let id = self.find_id(key)?;
        {
            let mut reg = lock(&self.reg);
            let mut ids = reg.queue();
            ids.retain(|&i| i != id);
            ids.insert(position.min(ids.len()), id);
            for (n, i) in ids.iter().enumerate() {
                if let Some(e) = reg.torrents.get_mut(i) {
                    e.order = n as u64;
                }
            }
            reg.next_order = ids.len() as u64;
        }
        self.schedule();
        self.save()?;
        self.view(id)
    }

    /// Starts and stops torrents so that, in queue order, at most the allowed number
    /// download and seed; the rest show `queued`. Called whenever that may change: a
    /// torrent added, paused, resumed, removed, complete or ended, and new limits. A torrent
    /// still stopping is left alone: its end calls this again.
    fn schedule(self: &Arc<Self>) {
        let limits = self.queue_limits();
        let mut start = Vec::new();
        {
            let mut reg = lock(&self.reg);
            let (mut downloads, mut seeds) = (0usize, 0usize);
            for id in reg.queue() {
                let e = reg.torrents.get_mut(&id).expect("listed");
                if e.paused || e.error.is_some() {
                    e.queued = false;
                    continue;
                }
                if e.run.as_ref().is_some_and(|r| *r.stop.borrow()) {
                    continue;
                }
                let seeding = e.complete
                    || e.run.as_ref().is_some_and(|r| {
                        matches!(r.progress.borrow().phase, Phase::Seeding | Phase::Done)
                    });
                let (count, cap) = if seeding {
                    (&mut seeds, limits.max_active_seeds)
                } else {
                    (&mut downloads, limits.max_active_downloads)
                };
                if cap.is_none_or(|c| *count < c) {
                    *count += 1;
                    e.queued = false;
                    if e.run.is_none() {
                        start.push(id);
                    }
                } else {
                    e.queued = true;
                    if let Some(r) = &e.run {
                        tracing::debug!(id, "queued: no free slot");
                        let _ = r.stop.send(true);
                    }
                }
            }
        }
        for id in start {
            let source = lock(&self.reg).torrents.get(&id).and_then(source_of);
            match source {
                Some(s) => self.start_run(id, s),
                None => {
                    if let Some(e) = lock(&self.reg).torrents.get_mut(&id) {
                        e.error = Some("nothing to start from".into());
                    }
                }
            }
        }
    }

    /// A running torrent became complete: it now takes a seed slot, not a download slot.
    fn became_complete(self: &Arc<Self>, id: u64) {
        let changed = match lock(&self.reg).torrents.get_mut(&id) {
            Some(e) if !e.complete => {
                e.complete = true;
                true
            }
            _ => false,
        };
        if changed {
            if let Err(e) = self.save() {
                tracing::warn!(id, "{e}");
            }
            self.schedule();
        }
    }

    /// Starts (or restarts) the torrent `id` from `source`.
    fn start_run(self: &Arc<Self>, id: u64, source: Source) {
        let mut reg = lock(&self.reg);
        reg.generation += 1;
        let generation = reg.generation;
        let Some(e) = reg.torrents.get_mut(&id) else {
            return;
        };
        let mut add = AddTorrent::new(source, StorageSpec::Disk(e.output.clone()));
        add.resume_dir = Some(self.cfg.state_dir.join("resume"));
        add.metadata_timeout = self.cfg.metadata_timeout;
        add.swarm.keep_seeding = true;
        add.swarm.idle_tick = Some(IDLE_TICK);
        add.lsd = self.cfg.lsd;
        add.swarm.max_down_rate = e.settings.max_down_rate.or(self.cfg.max_down_rate);
        add.swarm.max_up_rate = e.settings.max_up_rate.or(self.cfg.max_up_rate);
        add.swarm.sequential = e.settings.sequential;
        add.only_files = e
            .settings
            .files
            .as_ref()
            .map(|f| f.iter().map(|&i| i..=i).collect());
        let mut handle = self.session.add(add);
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(false);
        e.error = None;
        e.run = Some(Run {
            generation,
            progress: handle.progress(),
            stop: stop_tx,
            done: done_rx,
            meta: handle.metainfo(),
            pieces: handle.pieces(),
            readers: stream::Readers::new(handle.focus_sender()),
            lister: handle.peer_lister(),
        });
        drop(reg);

        let me = Arc::downgrade(self);
        let mut meta_rx = handle.metainfo();
        tokio::spawn(async move {
            let mut meta_known = meta_rx.borrow().is_some();
            let mut limits = tokio::time::interval(SEED_LIMIT_EVERY);
            // Once it seeds, the tick is only needed for a seed ratio or time.
            let seed_limits = me.upgrade().is_some_and(|d| {
                lock(&d.reg).torrents.get(&id).is_some_and(|e| {
                    e.settings.seed_ratio.is_some() || e.settings.seed_time.is_some()
                })
            });
            let mut ticking = true;
            let mut seeding_since: Option<tokio::time::Instant> = None;
            let ended = loop {
                tokio::select! {
                    r = handle.join() => break Some(r),
                    _ = stop_rx.changed() => break None,
                    _ = limits.tick(), if ticking => {
                        let p = handle.progress().borrow().clone();
                        let Some(d) = me.upgrade() else { continue };
                        if p.phase != Phase::Seeding {
                            seeding_since = None;
                            continue;
                        }
                        if seeding_since.is_none() {
                            d.became_complete(id);
                            ticking = seed_limits;
                        }
                        let since = *seeding_since.get_or_insert_with(tokio::time::Instant::now);
                        if let Some(why) = d.seed_limit_reached(id, &p, since.elapsed()) {
                            d.pause_for(id, why);
                            break None;
                        }
                    }
                    ch = meta_rx.changed(), if !meta_known => {
                        if ch.is_err() {
                            meta_known = true;
                            continue;
                        }
                        let m = meta_rx.borrow_and_update().clone();
                        if let (Some(m), Some(d)) = (m, me.upgrade()) {
                            meta_known = true;
                            d.metadata_known(id, m);
                        }
                    }
                }
            };
            let last = handle.progress().borrow().clone();
            let result = match ended {
                Some(r) => r,
                None => {
                    handle.stop();
                    handle.join().await
                }
            };
            if let Some(d) = me.upgrade() {
                d.run_ended(id, generation, last, result.err().map(|e| e.to_string()));
            }
            let _ = done_tx.send(true);
        });
    }

    /// Has torrent `id`, seeding for `seeding` with progress `p`, reached its seed ratio or
    /// seed time? The reason, if so.
    fn seed_limit_reached(&self, id: u64, p: &Progress, seeding: Duration) -> Option<String> {
        let reg = lock(&self.reg);
        let st = &reg.torrents.get(&id)?.settings;
        if let Some(r) = st.seed_ratio {
            if p.total > 0 && p.uploaded as f64 >= r * p.total as f64 {
                return Some(format!("seed ratio {r} reached"));
            }
        }
        if let Some(t) = st.seed_time {
            if seeding.as_secs() >= t {
                return Some(format!("seeded for {t} s"));
            }
        }
        None
    }

    /// The daemon pauses torrent `id` by itself (its run is ending).
    fn pause_for(&self, id: u64, why: String) {
        if let Some(e) = lock(&self.reg).torrents.get_mut(&id) {
            tracing::info!(id, "{why}: paused");
            e.paused = true;
            e.paused_because = Some(why);
        }
        if let Err(e) = self.save() {
            tracing::warn!(id, "{e}");
        }
    }

    /// Changes torrent `key`'s settings; a running torrent restarts with them (its
    /// verified pieces stay).
    pub async fn set_settings(
        self: &Arc<Self>,
        key: &str,
        settings: Settings,
    ) -> Result<TorrentView, DaemonError> {
        let id = self.find_id(key)?;
        if settings
            .seed_ratio
            .is_some_and(|r| !r.is_finite() || r < 0.0)
        {
            return Err(DaemonError::Refused("seed_ratio must be 0 or more".into()));
        }
        let restart = {
            let mut reg = lock(&self.reg);
            let e = reg.torrents.get_mut(&id).expect("found above");
            if let (Some(files), Some(m)) = (&settings.files, known_meta(e)) {
                let n = m.info.files.len();
                if files.is_empty() || files.iter().any(|&i| i as usize >= n) {
                    return Err(DaemonError::Refused(format!(
                        "files: indexes 0 to {} (see /torrents/{id}/files), at least one",
                        n.saturating_sub(1)
                    )));
                }
            }
            if e.settings.files != settings.files {
                // A new file selection may want pieces a complete torrent lacks.
                e.complete = false;
            }
            e.settings = settings;
            e.run.as_ref().map(Run::stop)
        };
        self.save()?;
        if let Some(done) = restart {
            ended(done).await;
            self.schedule();
        }
        self.view(id)
    }

    /// A magnet's metadata arrived: keep it (the .torrent survives a restart).
    fn metadata_known(&self, id: u64, m: Arc<Metainfo>) {
        if let Err(e) = self.store.save_torrent(&m.info_hash, &m.to_bytes()) {
            tracing::warn!(id, "cannot save the fetched .torrent: {e}");
        }
        if let Some(e) = lock(&self.reg).torrents.get_mut(&id) {
            e.metainfo = Some(m);
        }
    }

    fn run_ended(
        self: &Arc<Self>,
        id: u64,
        generation: u64,
        last: Progress,
        error: Option<String>,
    ) {
        {
            let mut reg = lock(&self.reg);
            let Some(e) = reg.torrents.get_mut(&id) else {
                return;
            };
            if e.run.as_ref().map(|r| r.generation) != Some(generation) {
                return;
            }
            let asked_to_stop = e.run.as_ref().is_some_and(|r| *r.stop.borrow());
            e.run = None;
            e.last = last;
            if !e.paused && !asked_to_stop {
                e.error = Some(error.unwrap_or_else(|| "stopped".into()));
            }
        }
        self.schedule();
    }

    fn find_id(&self, key: &str) -> Result<u64, DaemonError> {
        let reg = lock(&self.reg);
        if let Ok(id) = key.parse::<u64>() {
            if reg.torrents.contains_key(&id) {
                return Ok(id);
            }
        }
        if let Ok(ih) = InfoHash::from_hex(key) {
            if let Some(e) = reg.torrents.values().find(|e| e.info_hash == ih) {
                return Ok(e.id);
            }
        }
        Err(DaemonError::NotFound(key.chars().take(64).collect()))
    }

    /// Stops a torrent, keeping its data and verified pieces.
    pub async fn pause(&self, key: &str) -> Result<TorrentView, DaemonError> {
        let id = self.find_id(key)?;
        let stopped = {
            let mut reg = lock(&self.reg);
            let e = reg.torrents.get_mut(&id).expect("found above");
            e.paused = true;
            e.error = None;
            e.run.as_ref().map(Run::stop)
        };
        self.save()?;
        if let Some(done) = stopped {
            ended(done).await;
        }
        self.view(id)
    }

    /// Starts a paused (or failed) torrent again; a running one is left alone.
    pub fn resume(self: &Arc<Self>, key: &str) -> Result<TorrentView, DaemonError> {
        let id = self.find_id(key)?;
        {
            let mut reg = lock(&self.reg);
            let e = reg.torrents.get_mut(&id).expect("found above");
            if e.run.is_none() && source_of(e).is_none() {
                return Err(DaemonError::Refused("nothing to start from".into()));
            }
            e.paused = false;
            e.paused_because = None;
            e.error = None;
        }
        self.schedule();
        self.save()?;
        self.view(id)
    }

    /// Removes a torrent; with `delete_files` also its data (only what the torrent itself
    /// names, inside its download directory).
    pub async fn remove(
        self: &Arc<Self>,
        key: &str,
        delete_files: bool,
    ) -> Result<(), DaemonError> {
        let id = self.find_id(key)?;
        let (run, entry_meta, output, ih) = {
            let mut reg = lock(&self.reg);
            let e = reg.torrents.remove(&id).expect("found above");
            (e.run, e.metainfo, e.output, e.info_hash)
        };
        if let Some(r) = run {
            ended(r.stop()).await;
        }
        self.schedule();
        self.store.remove_torrent(&ih);
        let _ = std::fs::remove_file(
            self.cfg
                .state_dir
                .join("resume")
                .join(format!("{}.resume", ih.to_hex())),
        );
        self.save()?;
        if delete_files {
            if let Some(m) = entry_meta {
                delete_data(&output, &m);
            }
        }
        Ok(())
    }

    /// What a stream of file `file` of torrent `key` reads from: waits (up to `wait`) for a
    /// magnet's metadata.
    pub async fn stream_source(
        &self,
        key: &str,
        file: usize,
        wait: Duration,
    ) -> Result<(stream::Source, &'static str), DaemonError> {
        let id = self.find_id(key)?;
        let (mut meta, pieces, readers, root) = {
            let reg = lock(&self.reg);
            let e = reg.torrents.get(&id).expect("found above");
            let r = e
                .run
                .as_ref()
                .ok_or_else(|| DaemonError::Refused(format!("torrent {id} is not running")))?;
            (
                r.meta.clone(),
                r.pieces.clone(),
                r.readers.clone(),
                e.output.clone(),
            )
        };
        let m = match tokio::time::timeout(wait, meta.wait_for(Option::is_some)).await {
            Ok(Ok(m)) => m.clone().expect("waited for it"),
            _ => {
                return Err(DaemonError::Refused(format!(
                    "torrent {id}: metadata not known yet"
                )))
            }
        };
        let span = stream::FileSpan::of(&m, file)
            .ok_or_else(|| DaemonError::NotFound(format!("file {file} of torrent {id}")))?;
        let ty = stream::content_type(&span.name);
        Ok((
            stream::Source {
                span,
                root,
                pieces,
                readers,
                read_bytes: self.stream_read.clone(),
            },
            ty,
        ))
    }

    /// The verified pieces of torrent `key`: (piece count, bitfield as hex, BEP 3 order:
    /// piece 0 is the high bit of the first byte); `None` until its swarm has run.
    pub fn pieces(&self, key: &str) -> Result<Option<(u32, String)>, DaemonError> {
        let id = self.find_id(key)?;
        let reg = lock(&self.reg);
        let e = reg.torrents.get(&id).expect("found above");
        let bits = e.run.as_ref().and_then(|r| r.pieces.borrow().clone());
        Ok(bits.map(|b| (b.len(), hex::encode(b.as_bytes()))))
    }

    /// The connected peers of torrent `key` (none unless it runs).
    pub async fn peers(&self, key: &str) -> Result<Vec<peers::PeerView>, DaemonError> {
        let id = self.find_id(key)?;
        let lister = {
            let reg = lock(&self.reg);
            let e = reg.torrents.get(&id).expect("found above");
            e.run
                .as_ref()
                .filter(|r| r.progress.borrow().peers > 0)
                .map(|r| r.lister.clone())
        };
        let Some(l) = lister else {
            return Ok(Vec::new());
        };
        Ok(l.peers(PEERS_WAIT).await.iter().map(Into::into).collect())
    }

    /// Connected peers of every running torrent that has some: (by source, by transport).
    pub async fn peer_counts(&self) -> metrics::PeerCounts {
        let listers: Vec<_> = {
            let reg = lock(&self.reg);
            reg.torrents
                .values()
                .filter_map(|e| e.run.as_ref())
                .filter(|r| r.progress.borrow().peers > 0)
                .map(|r| r.lister.clone())
                .collect()
        };
        let mut c = metrics::PeerCounts::default();
        for l in listers {
            for p in l.peers(PEERS_WAIT).await {
                let v = peers::PeerView::from(&p);
                *c.by_source.entry(v.source).or_default() += 1;
                *c.by_transport.entry(v.transport).or_default() += 1;
                if v.encrypted {
                    c.encrypted += 1;
                }
            }
        }
        c
    }

    /// Counters summed over every torrent (see [`metrics::Totals`]).
    pub fn totals(&self) -> metrics::Totals {
        let reg = lock(&self.reg);
        let mut t = metrics::Totals {
            stream_read: self.stream_read.load(std::sync::atomic::Ordering::Relaxed),
            ..Default::default()
        };
        for e in reg.torrents.values() {
            let p = match &e.run {
                Some(r) => r.progress.borrow().clone(),
                None => e.last.clone(),
            };
            t.hash_failures += p.failed_pieces;
            t.bans += p.bans;
            t.disk_written += p.disk_written;
            t.uploaded += p.uploaded;
            for s in &p.trackers {
                t.announces_ok += s.announces;
                t.announces_failed += s.failures;
            }
            let a = p.sources;
            for (k, v) in [
                ("dht", a.dht),
                ("tracker", a.tracker),
                ("pex", a.pex),
                ("lsd", a.lsd),
                ("incoming", a.incoming),
            ] {
                *t.addresses.entry(k).or_default() += v;
            }
        }
        t
    }

    /// The trackers of torrent `key`: each one it names, with its last status once it has
    /// one (`waiting` before).
    pub fn trackers(&self, key: &str) -> Result<Vec<peers::TrackerView>, DaemonError> {
        let id = self.find_id(key)?;
        let reg = lock(&self.reg);
        let e = reg.torrents.get(&id).expect("found above");
        let statuses = match &e.run {
            Some(r) => r.progress.borrow().trackers.clone(),
            None => e.last.trackers.clone(),
        };
        let mut urls: Vec<String> = match &e.metainfo {
            Some(m) if !m.announce_list.is_empty() => m.announce_list.concat(),
            Some(m) => m.announce.iter().cloned().collect(),
            None => Vec::new(),
        };
        if let Some(m) = e
            .magnet
            .as_deref()
            .and_then(|m| crate::magnet::Magnet::parse(m).ok())
        {
            urls.extend(m.trackers);
        }
        let mut out: Vec<peers::TrackerView> = Vec::new();
        for u in urls {
            if out.iter().any(|t| t.url == u) {
                continue;
            }
            let st = statuses.iter().find(|s| s.url == u).cloned().unwrap_or(
                crate::session::TrackerStatus {
                    url: u,
                    ..Default::default()
                },
            );
            out.push((&st).into());
        }
        for s in &statuses {
            if !out.iter().any(|t| t.url == s.url) {
                out.push(s.into());
            }
        }
        Ok(out)
    }

    /// The files of torrent `key` (empty until the metadata is known).
    pub fn files(&self, key: &str) -> Result<Vec<FileView>, DaemonError> {
        let id = self.find_id(key)?;
        let reg = lock(&self.reg);
        let e = reg.torrents.get(&id).expect("found above");
        let Some(m) = known_meta(e) else {
            return Ok(Vec::new());
        };
        Ok(m.info
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.pad)
            .map(|(index, f)| FileView {
                index,
                path: f.path.join("/"),
                length: f.length,
                content_type: stream::content_type(f.path.last().map_or("", String::as_str)),
            })
            .collect())
    }

    /// Every torrent, by id.
    pub fn list(&self) -> Vec<TorrentView> {
        let reg = lock(&self.reg);
        let mut position: BTreeMap<u64, usize> = BTreeMap::new();
        for (n, id) in reg.queue().into_iter().enumerate() {
            position.insert(id, n);
        }
        reg.torrents
            .values()
            .map(|e| view_of(e, position[&e.id]))
            .collect()
    }

    pub fn view(&self, id: u64) -> Result<TorrentView, DaemonError> {
        let reg = lock(&self.reg);
        let e = reg
            .torrents
            .get(&id)
            .ok_or_else(|| DaemonError::NotFound(id.to_string()))?;
        let position = reg.torrents.values().filter(|o| o.order < e.order).count();
        Ok(view_of(e, position))
    }

    /// One torrent by id or info-hash.
    pub fn get(&self, key: &str) -> Result<TorrentView, DaemonError> {
        let id = self.find_id(key)?;
        self.view(id)
    }

    /// Saves the list (see [`store`]).
    fn save(&self) -> Result<(), DaemonError> {
        let _g = lock(&self.save_lock);
        let list = {
            let reg = lock(&self.reg);
            SavedList {
                next_id: reg.next_id,
                torrents: reg
                    .torrents
                    .values()
                    .map(|e| Saved {
                        id: e.id,
                        info_hash: e.info_hash.to_hex(),
                        magnet: e.magnet.clone(),
                        output: e.output.clone(),
                        paused: e.paused,
                        added: e.added,
                        settings: e.settings.clone(),
                        queue_order: Some(e.order),
                        complete: e.complete,
                    })
                    .collect(),
            }
        };
        self.store
            .save(&list)
            .map_err(|e| DaemonError::Store(e.to_string()))
    }

    /// Stops every torrent (their resume data is written) and waits for them.
    pub async fn shutdown(&self) {
        let runs: Vec<watch::Receiver<bool>> = {
            let reg = lock(&self.reg);
            reg.torrents
                .values()
                .filter_map(|e| e.run.as_ref())
                .map(Run::stop)
                .collect()
        };
        for done in runs {
            let _ = tokio::time::timeout(Duration::from_secs(10), ended(done)).await;
        }
        self.session.shutdown().await;
    }
}

/// Torrent `e`'s metainfo if known. The run knows it a moment before the supervisor
/// records it in the entry.
fn known_meta(e: &Entry) -> Option<Arc<Metainfo>> {
    e.metainfo
        .clone()
        .or_else(|| e.run.as_ref().and_then(|r| r.meta.borrow().clone()))
}

/// What torrent `e` starts from: its metainfo once known, else its magnet link.
fn source_of(e: &Entry) -> Option<Source> {
    match (&e.metainfo, &e.magnet) {
        (Some(m), _) => Some(Source::Metainfo(m.clone())),
        (None, Some(m)) => crate::magnet::Magnet::parse(m).ok().map(Source::Magnet),
        (None, None) => None,
    }
}

fn view_of(e: &Entry, queue_position: usize) -> TorrentView {
    let p = match &e.run {
        Some(r) => r.progress.borrow().clone(),
        None => e.last.clone(),
    };
    let state = if e.error.is_some() {
        State::Error
    } else if e.paused {
        State::Paused
    } else if e.queued {
        State::Queued
    } else if e.run.is_none() {
        State::Paused
    } else {
        match p.phase {
            Phase::Searching => State::Searching,
            Phase::Metadata => State::Metadata,
            Phase::Checking => State::Checking,
            Phase::Downloading => State::Downloading,
            Phase::Seeding | Phase::Done => State::Seeding,
            Phase::Stopped => State::Paused,
        }
    };
    let total = p
        .total
        .max(e.metainfo.as_ref().map_or(0, |m| m.info.total_length()));
    let progress = if total == 0 {
        0.0
    } else {
        (p.verified as f64 / total as f64).clamp(0.0, 1.0)
    };
    let eta = (state == State::Downloading && p.down_rate > 0)
        .then(|| total.saturating_sub(p.verified) / p.down_rate);
    TorrentView {
        id: e.id,
        infohash: e.info_hash.to_hex(),
        name: p
            .name
            .clone()
            .or_else(|| e.metainfo.as_ref().map(|m| m.info.name.clone()))
            .or_else(|| e.display_name.clone()),
        state,
        progress,
        downloaded: p.verified,
        total_size: total,
        received: p.downloaded,
        uploaded: p.uploaded,
        down_rate: p.down_rate,
        up_rate: p.up_rate,
        peers: p.peers,
        seeds: p.seeds,
        known_peers: p.known_peers,
        eta,
        peers_tried: p.peers_tried,
        metadata_pieces: p.metadata_pieces,
        metadata_pieces_total: p.metadata_pieces_total,
        output: e.output.clone(),
        added: e.added,
        error: e.error.clone(),
        stream_readers: e.run.as_ref().map_or(0, |r| r.readers.count()),
        paused_because: e.paused_because.clone(),
        queue_position,
        settings: e.settings.clone(),
    }
}

/// Deletes a torrent's file or top directory under `output`, and its partial-pieces file.
/// The name was checked when the metainfo was parsed; it is checked again here because this
/// deletes: one plain path component, never `..` or a path.
fn delete_data(output: &Path, m: &Metainfo) {
    if check_component(&m.info.name).is_err() {
        tracing::warn!(name = %m.info.name, "not deleting: unsafe torrent name");
        return;
    }
    let p = output.join(&m.info.name);
    let r = match std::fs::symlink_metadata(&p) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(&p),
        Ok(_) => std::fs::remove_file(&p),
        Err(_) => Ok(()),
    };
    if let Err(e) = r {
        tracing::warn!(path = %p.display(), "cannot delete: {e}");
    }
    let _ =
        std::fs::remove_file(output.join(crate::torrent::storage::parts_file_name(&m.info_hash)));
}
