//! Trackers, web seeds and peer-source bookkeeping for one torrent, wired into the session.
//!
//! - Trackers (BEP 3 HTTP, BEP 15 UDP, BEP 12 tiers): every tier of the torrent's
//!   `announce`/`announce-list` (or the magnet's `tr=`, one tier each) is announced to in
//!   parallel by [`crate::tracker::TrackerSet`] with `started`, `completed` and `stopped`
//!   events and live `uploaded`/`downloaded`/`left`. Its peers go into the torrent's one peer
//!   channel, the same one the DHT, PEX and `x.pe` feed, so whichever source answers first
//!   starts the metadata phase.
//! - Peer sources: how many addresses each source gave (DHT, tracker, PEX, incoming, web
//!   seeds, LSD) and each tracker's last status are published in [`super::Progress`].
//! - Private torrents (BEP 27) never reach the DHT or PEX; that is decided by the caller.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::Progress;
use crate::id::{InfoHash, PeerId};
use crate::tracker::client::{AnnounceParams, Progress as TrackerProgress};
use crate::tracker::tier::Tiers;
use crate::tracker::{TrackerClient, TrackerEvent, TrackerSet, TrackerSetHandle};

/// Where peer addresses came from (distinct per source is not tracked: these are counts of
/// addresses received, which is what a user wants to see to know which source works).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeerSources {
    pub dht: u64,
    pub tracker: u64,
    pub pex: u64,
    pub incoming: u64,
    /// Web seeds in use (not given up on).
    pub webseed: u64,
    /// Local Service Discovery (BEP 14).
    pub lsd: u64,
}

/// Where a connected peer's address came from first (shown per peer by the daemon).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerOrigin {
    Dht,
    Tracker,
    Pex,
    Lsd,
    /// It connected to us.
    Incoming,
    /// Given with the torrent (a magnet's `x.pe`, `--peer`) or by the caller.
    Given,
}

impl PeerOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerOrigin::Dht => "dht",
            PeerOrigin::Tracker => "tracker",
            PeerOrigin::Pex => "pex",
            PeerOrigin::Lsd => "lsd",
            PeerOrigin::Incoming => "incoming",
            PeerOrigin::Given => "given",
        }
    }
}

/// Addresses whose origin is remembered at most (the candidate table's size).
const MAX_ORIGINS: usize = 10_000;

/// Counters shared by the tasks that find peers; copied into [`Progress::sources`].
#[derive(Debug, Default)]
pub struct SourceCounters {
    pub dht: AtomicU64,
    pub tracker: AtomicU64,
    pub pex: AtomicU64,
    pub incoming: AtomicU64,
    pub webseed: AtomicU64,
    pub lsd: AtomicU64,
    /// The first source of each address heard of (bounded), for the per-peer view.
    origins: std::sync::Mutex<std::collections::HashMap<SocketAddr, PeerOrigin>>,
}

impl SourceCounters {
    /// Remembers where `addr` came from, unless an earlier source gave it already.
    pub fn note(&self, addr: SocketAddr, origin: PeerOrigin) {
        let mut m = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() < MAX_ORIGINS {
            m.entry(addr).or_insert(origin);
        }
    }

    /// Where `addr` came from first (`None`: from no counted source).
    pub fn origin(&self, addr: SocketAddr) -> Option<PeerOrigin> {
        let m = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&addr).copied()
    }

    pub fn snapshot(&self) -> PeerSources {
        PeerSources {
            dht: self.dht.load(Ordering::Relaxed),
            tracker: self.tracker.load(Ordering::Relaxed),
            pex: self.pex.load(Ordering::Relaxed),
            incoming: self.incoming.load(Ordering::Relaxed),
            webseed: self.webseed.load(Ordering::Relaxed),
            lsd: self.lsd.load(Ordering::Relaxed),
        }
    }
}

/// One tracker's last status, as shown by `--json` and the progress display.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrackerStatus {
    pub url: String,
    /// "ok" or "error".
    pub status: String,
    /// The error (when `status` is "error").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Peers in the last good reply.
    pub peers: usize,
    /// Announces answered, and failed, since the torrent started.
    pub announces: u64,
    pub failures: u64,
    /// When the last answer (or failure) came, in seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_announce: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeders: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leechers: Option<u32>,
    pub interval: u32,
}

/// Most tracker statuses shown (tiers are capped at 32x32 anyway; the display needs few).
const MAX_STATUSES: usize = 64;
/// Tracker peers queued between the announce tasks and the torrent.
const PEER_QUEUE: usize = 512;
/// `left` reported while the size is unknown (magnet before metadata): non-zero, so the
/// tracker counts us as a leecher.
const LEFT_UNKNOWN: u64 = 1 << 30;

/// The running glue of one torrent: stop it when the torrent ends.
pub struct TorrentGlue {
    trackers: Option<TrackerSetHandle>,
    done: Option<oneshot::Sender<()>>,
}

impl TorrentGlue {
    /// Sends `stopped` to the trackers that answered (bounded wait), then ends the glue task.
    pub async fn stop(mut self) {
        if let Some(t) = self.trackers.take() {
            t.stop().await;
        }
        if let Some(d) = self.done.take() {
            let _ = d.send(());
        }
    }
}

/// Everything the glue needs.
pub struct GlueParams {
    pub client: Option<Arc<TrackerClient>>,
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// Our listen port (trackers need one; 0 is sent when not listening).
    pub port: u16,
    /// Tiers in BEP 12 order (not yet shuffled).
    pub tiers: Vec<Vec<String>>,
    pub rng_seed: u64,
    pub counters: Arc<SourceCounters>,
    pub progress: watch::Sender<Progress>,
    /// The torrent's peer channel.
    pub peers: mpsc::Sender<SocketAddr>,
    /// Our own addresses: a tracker lists us among the peers.
    pub own: Arc<super::own::OwnAddrs>,
    /// How often the source counters are copied into the progress.
    pub tick: Duration,
}

/// Starts announcing (when there are trackers) and publishing peer-source counts.
pub fn start(p: GlueParams) -> TorrentGlue {
    let mut rng = StdRng::seed_from_u64(p.rng_seed);
    let tiers = Tiers::new(p.tiers, &mut rng);
    let (tprog_tx, tprog_rx) = watch::channel(tracker_progress(&p.progress.borrow()));
    let (peer_tx, peer_rx) = mpsc::channel(PEER_QUEUE);
    let (ev_tx, ev_rx) = mpsc::channel(64);
    let trackers = match (&p.client, tiers.is_empty()) {
        (Some(client), false) => Some(TrackerSet::spawn(
            client.clone(),
            tiers,
            AnnounceParams {
                info_hash: p.info_hash,
                peer_id: p.peer_id,
                port: p.port,
                key: rng.random(),
                numwant: Some(200),
            },
            tprog_rx,
            peer_tx,
            Some(ev_tx),
        )),
        _ => None,
    };
    let (done_tx, done_rx) = oneshot::channel();
    // Without trackers nobody reads the announce progress: not woken by every update.
    let tprog_tx = trackers.as_ref().map(|_| tprog_tx);
    tokio::spawn(run(
        p.progress, p.peers, p.counters, p.own, tprog_tx, peer_rx, ev_rx, done_rx, p.tick,
    ));
    TorrentGlue {
        trackers,
        done: Some(done_tx),
    }
}

fn tracker_progress(p: &Progress) -> TrackerProgress {
    TrackerProgress {
        uploaded: p.uploaded,
        downloaded: p.downloaded,
        left: if p.total == 0 {
            LEFT_UNKNOWN
        } else {
            p.total.saturating_sub(p.verified)
        },
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    progress: watch::Sender<Progress>,
    peers: mpsc::Sender<SocketAddr>,
    counters: Arc<SourceCounters>,
    own: Arc<super::own::OwnAddrs>,
    tprog: Option<watch::Sender<TrackerProgress>>,
    mut tracker_peers: mpsc::Receiver<SocketAddr>,
    mut events: mpsc::Receiver<TrackerEvent>,
    mut done: oneshot::Receiver<()>,
    every: Duration,
) {
    let mut prog_rx = progress.subscribe();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peers_open = true;
    let mut events_open = true;
    loop {
        tokio::select! {
            biased;
            _ = &mut done => return,
            a = tracker_peers.recv(), if peers_open => match a {
                // The tracker lists us too: not a peer.
                Some(a) if own.is_own(a) => {}
                Some(a) => {
                    counters.tracker.fetch_add(1, Ordering::Relaxed);
                    counters.note(a, PeerOrigin::Tracker);
                    // A full queue drops this one address; the torrent has plenty then.
                    let _ = peers.try_send(a);
                }
                None => peers_open = false,
            },
            e = events.recv(), if events_open => match e {
                Some(e) => progress.send_modify(|p| apply_event(&mut p.trackers, e)),
                None => events_open = false,
            },
            r = prog_rx.changed(), if tprog.is_some() => {
                if r.is_err() {
                    return;
                }
                let t = tracker_progress(&prog_rx.borrow_and_update());
                tprog.as_ref().expect("guarded").send_if_modified(|old| {
                    let changed = *old != t;
                    *old = t;
                    changed
                });
            }
            _ = tick.tick() => {
                let s = counters.snapshot();
                progress.send_if_modified(|p| {
                    let changed = p.sources != s;
                    p.sources = s;
                    changed
                });
            }
        }
    }
}

/// Records a tracker's new status (the tracker set sends one per announce).
pub fn apply_event(list: &mut Vec<TrackerStatus>, e: TrackerEvent) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let url = match &e {
        TrackerEvent::Ok { url, .. } | TrackerEvent::Error { url, .. } => url.clone(),
    };
    let i = match list.iter().position(|s| s.url == url) {
        Some(i) => i,
        None if list.len() < MAX_STATUSES => {
            list.push(TrackerStatus {
                url,
                ..Default::default()
            });
            list.len() - 1
        }
        None => return,
    };
    let s = &mut list[i];
    s.last_announce = Some(now);
    match e {
        TrackerEvent::Ok {
            peers,
            interval,
            seeders,
            leechers,
            ..
        } => {
            s.status = "ok".into();
            s.announces += 1;
            s.error = None;
            s.peers = peers;
            s.interval = interval;
            s.seeders = seeders;
            s.leechers = leechers;
        }
        TrackerEvent::Error { error, .. } => {
            s.status = "error".into();
            s.failures += 1;
            s.error = Some(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_update_in_place() {
        let mut l = Vec::new();
        apply_event(
            &mut l,
            TrackerEvent::Error {
                url: "udp://a".into(),
                error: "timed out".into(),
            },
        );
        apply_event(
            &mut l,
            TrackerEvent::Ok {
                url: "http://b".into(),
                peers: 3,
                interval: 60,
                seeders: Some(1),
                leechers: None,
            },
        );
        apply_event(
            &mut l,
            TrackerEvent::Ok {
                url: "udp://a".into(),
                peers: 1,
                interval: 30,
                seeders: None,
                leechers: None,
            },
        );
        assert_eq!(l.len(), 2);
        assert_eq!((l[0].announces, l[0].failures), (1, 1));
        assert!(l[0].last_announce.is_some());
        assert_eq!(l[0].status, "ok");
        assert_eq!(l[0].error, None);
        assert_eq!(l[1].peers, 3);
        for i in 0..100 {
            apply_event(
                &mut l,
                TrackerEvent::Error {
                    url: format!("udp://x{i}"),
                    error: "e".into(),
                },
            );
        }
        assert_eq!(l.len(), MAX_STATUSES);
    }

    #[test]
    fn left_unknown_until_size_known() {
        let mut p = Progress::default();
        assert_eq!(tracker_progress(&p).left, LEFT_UNKNOWN);
        p.total = 100;
        p.verified = 40;
        p.uploaded = 7;
        let t = tracker_progress(&p);
        assert_eq!((t.left, t.uploaded), (60, 7));
        p.verified = 100;
        assert_eq!(tracker_progress(&p).left, 0);
    }
}
