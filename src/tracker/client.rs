//! Tracker clients: HTTP (BEP 3/23/48) and UDP (BEP 15) announce and scrape over
//! [`crate::net::Net`], and [`TrackerSet`], the task that keeps announcing to every tier
//! (BEP 12) and feeds discovered peers into the session's peer pool.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::http_proto;
use super::tier::{StatusDedup, Tiers};
use super::udp_proto::{self, RetrySchedule};
use super::{AnnounceRequest, AnnounceResponse, Event, ScrapeStats, TrackerError};
use crate::http::{get_url_with, resolve, ConnectOpts, HttpError, Url};
use crate::id::Id20;
use crate::net::{Net, UdpSocket};

/// Largest HTTP tracker reply read.
pub const MAX_HTTP_REPLY: usize = 1 << 20;
/// Most UDP trackers whose connection id is cached.
const MAX_CONN_CACHE: usize = 256;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Whole-request timeout for HTTP trackers.
    pub http_timeout: Duration,
    /// BEP 15 retransmission schedule (15 s * 2^n); tests shorten it.
    pub udp_retry: RetrySchedule,
    /// Local IP that UDP sockets bind and HTTP(S) connections come from (port chosen by the
    /// system), so the tracker records the right source address; `None` = unspecified of
    /// the tracker's family.
    pub bind_ip: Option<IpAddr>,
    /// Trust for `https://` trackers; `None` = the system's roots (see [`super::tls`]).
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// Seed for transaction ids.
    pub seed: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            http_timeout: Duration::from_secs(30),
            udp_retry: RetrySchedule::default(),
            bind_ip: None,
            tls: None,
            seed: 0,
        }
    }
}

/// Announces and scrapes. Cheap to share behind an `Arc`; caches UDP connection ids.
pub struct TrackerClient {
    net: Net,
    cfg: ClientConfig,
    rng: Mutex<StdRng>,
    conn_ids: Mutex<BTreeMap<SocketAddr, (u64, Instant)>>,
}

impl TrackerClient {
    pub fn new(net: Net, cfg: ClientConfig) -> Self {
        TrackerClient {
            rng: Mutex::new(StdRng::seed_from_u64(cfg.seed)),
            net,
            cfg,
            conn_ids: Mutex::new(BTreeMap::new()),
        }
    }

    fn tid(&self) -> u32 {
        self.rng
            .lock()
            .map(|mut r| r.random())
            .unwrap_or(0x5a5a_5a5a)
    }

    fn http_opts(&self) -> ConnectOpts {
        ConnectOpts {
            bind_ip: self.cfg.bind_ip,
            tls: self.cfg.tls.clone(),
        }
    }

    /// Announces to one tracker (`http://`, `https://` or `udp://`).
    pub async fn announce(
        &self,
        url: &str,
        req: &AnnounceRequest,
    ) -> Result<AnnounceResponse, TrackerError> {
        let u = Url::parse(url)?;
        match u.scheme.as_str() {
            "http" | "https" => {
                let full = http_proto::announce_url(url, req);
                let r = get_url_with(
                    &self.net,
                    &full,
                    &self.http_opts(),
                    MAX_HTTP_REPLY,
                    self.cfg.http_timeout,
                )
                .await?;
                if r.status != 200 {
                    // Trackers often put a bencoded failure in a non-200 body: prefer it.
                    return match http_proto::parse_announce_response(&r.body) {
                        Err(TrackerError::Failure(m)) => Err(TrackerError::Failure(m)),
                        _ => Err(TrackerError::HttpStatus(r.status)),
                    };
                }
                http_proto::parse_announce_response(&r.body)
            }
            "udp" => {
                let addr = resolve(&u.host, u.port).await?;
                let v6 = addr.is_ipv6();
                self.udp_transact(
                    addr,
                    |c, t| udp_proto::encode_announce(c, t, req).to_vec(),
                    |b, t| udp_proto::parse_announce_response(b, t, v6),
                )
                .await
            }
            _ => Err(HttpError::UnsupportedScheme(url.to_string()).into()),
        }
    }

    /// Scrapes one tracker for some info-hashes (BEP 48 over HTTP, BEP 15 over UDP).
    pub async fn scrape(
        &self,
        url: &str,
        hashes: &[Id20],
    ) -> Result<BTreeMap<Id20, ScrapeStats>, TrackerError> {
        let u = Url::parse(url)?;
        match u.scheme.as_str() {
            "http" | "https" => {
                let s = http_proto::scrape_url(url, hashes)
                    .ok_or_else(|| TrackerError::NoScrape(url.to_string()))?;
                let r = get_url_with(
                    &self.net,
                    &s,
                    &self.http_opts(),
                    MAX_HTTP_REPLY,
                    self.cfg.http_timeout,
                )
                .await?;
                if r.status != 200 {
                    return Err(TrackerError::HttpStatus(r.status));
                }
                http_proto::parse_scrape_response(&r.body)
            }
            "udp" => {
                let hs: Vec<Id20> = hashes
                    .iter()
                    .take(udp_proto::MAX_SCRAPE_HASHES)
                    .copied()
                    .collect();
                let addr = resolve(&u.host, u.port).await?;
                let v = self
                    .udp_transact(
                        addr,
                        |c, t| udp_proto::encode_scrape(c, t, &hs),
                        |b, t| udp_proto::parse_scrape_response(b, t, &hs),
                    )
                    .await?;
                Ok(v.into_iter().collect())
            }
            _ => Err(HttpError::UnsupportedScheme(url.to_string()).into()),
        }
    }

    fn cached_conn(&self, addr: SocketAddr) -> Option<u64> {
        let now = Instant::now();
        let m = self.conn_ids.lock().ok()?;
        m.get(&addr)
            .filter(|(_, t)| udp_proto::connection_id_valid(*t, now))
            .map(|(c, _)| *c)
    }

    fn store_conn(&self, addr: SocketAddr, id: u64) {
        if let Ok(mut m) = self.conn_ids.lock() {
            let now = Instant::now();
            m.retain(|_, (_, t)| udp_proto::connection_id_valid(*t, now));
            if m.len() < MAX_CONN_CACHE || m.contains_key(&addr) {
                m.insert(addr, (id, now));
            }
        }
    }

    fn forget_conn(&self, addr: SocketAddr) {
        if let Ok(mut m) = self.conn_ids.lock() {
            m.remove(&addr);
        }
    }

    /// Runs one BEP 15 exchange: (re)connect when needed, send, wait with back-off.
    async fn udp_transact<T>(
        &self,
        addr: SocketAddr,
        build: impl Fn(u64, u32) -> Vec<u8>,
        parse: impl Fn(&[u8], u32) -> Result<T, TrackerError>,
    ) -> Result<T, TrackerError> {
        // A configured address of the other family cannot reach this tracker: use any.
        let bind_ip = match self.cfg.bind_ip {
            Some(ip) if ip.is_ipv6() == addr.is_ipv6() => ip,
            _ if addr.is_ipv6() => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let sock = self.net.bind_udp(SocketAddr::new(bind_ip, 0)).await?;
        let mut n = 0u32;
        loop {
            let Some(wait) = self.cfg.udp_retry.timeout(n) else {
                return Err(TrackerError::Timeout);
            };
            let conn = match self.cached_conn(addr) {
                Some(c) => c,
                None => {
                    let tid = self.tid();
                    sock.send_to(&udp_proto::encode_connect(tid), addr).await?;
                    match recv_matching(&sock, addr, wait, |b| {
                        udp_proto::parse_connect_response(b, tid)
                    })
                    .await
                    {
                        Some(Ok(c)) => {
                            self.store_conn(addr, c);
                            c
                        }
                        Some(Err(e)) => return Err(e),
                        None => {
                            n += 1;
                            continue;
                        }
                    }
                }
            };
            let tid = self.tid();
            sock.send_to(&build(conn, tid), addr).await?;
            match recv_matching(&sock, addr, wait, |b| parse(b, tid)).await {
                Some(r) => return r,
                None => {
                    // The id may have been rejected silently (expired on the tracker's side).
                    self.forget_conn(addr);
                    n += 1;
                }
            }
        }
    }
}

/// Waits up to `wait` for a datagram from `from` that `parse` accepts as ours. Replies with a
/// foreign transaction id or from another source are ignored; `None` on timeout.
async fn recv_matching<T>(
    sock: &UdpSocket,
    from: SocketAddr,
    wait: Duration,
    parse: impl Fn(&[u8]) -> Result<T, TrackerError>,
) -> Option<Result<T, TrackerError>> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; udp_proto::MAX_PACKET];
    loop {
        let r = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await;
        let (len, src) = match r {
            Err(_) => return None,
            Ok(Err(e)) => return Some(Err(e.into())),
            Ok(Ok(x)) => x,
        };
        if udp_proto::canonical(src) != udp_proto::canonical(from) {
            continue;
        }
        match parse(&buf[..len]) {
            Err(TrackerError::Malformed(_)) => continue,
            other => return Some(other),
        }
    }
}

/// One-shot announce with a fresh client.
pub async fn announce(
    net: &Net,
    url: &str,
    req: &AnnounceRequest,
) -> Result<AnnounceResponse, TrackerError> {
    TrackerClient::new(net.clone(), ClientConfig::default())
        .announce(url, req)
        .await
}

/// One-shot scrape with a fresh client.
pub async fn scrape(
    net: &Net,
    url: &str,
    hashes: &[Id20],
) -> Result<BTreeMap<Id20, ScrapeStats>, TrackerError> {
    TrackerClient::new(net.clone(), ClientConfig::default())
        .scrape(url, hashes)
        .await
}

// ---------------------------------------------------------------- TrackerSet

/// The fixed part of every announce of one torrent.
#[derive(Clone, Debug)]
pub struct AnnounceParams {
    pub info_hash: Id20,
    pub peer_id: Id20,
    pub port: u16,
    pub key: u32,
    pub numwant: Option<u32>,
}

/// Transfer counters, updated by the torrent through a `watch` channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
}

/// A tracker's answer or failure, sent on every announce (the log only hears of a new status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackerEvent {
    Ok {
        url: String,
        peers: usize,
        interval: u32,
        seeders: Option<u32>,
        leechers: Option<u32>,
    },
    Error {
        url: String,
        error: String,
    },
}

/// Floor and default for re-announce intervals and failure back-off.
const MIN_INTERVAL: Duration = Duration::from_secs(30);
const RETRY_START: Duration = Duration::from_secs(60);
const RETRY_MAX: Duration = Duration::from_secs(1800);

/// Keeps announcing one torrent to all its tiers.
pub struct TrackerSet;

pub struct TrackerSetHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl TrackerSet {
    /// Spawns one task per tier. Each tier tries its trackers in order (BEP 12), promotes the
    /// one that answered, and re-announces on its interval; peers go to `peers`.
    pub fn spawn(
        client: Arc<TrackerClient>,
        tiers: Tiers,
        params: AnnounceParams,
        progress: watch::Receiver<Progress>,
        peers: mpsc::Sender<SocketAddr>,
        events: Option<mpsc::Sender<TrackerEvent>>,
    ) -> TrackerSetHandle {
        let (stop_tx, stop_rx) = watch::channel(false);
        let dedup = Arc::new(Mutex::new(StatusDedup::default()));
        let mut tasks = Vec::new();
        for t in 0..tiers.len() {
            let tier = tiers.tier(t).to_vec();
            let ctx = TierTask {
                client: client.clone(),
                // A one-tier `Tiers` keeps the BEP 12 promote logic in one place; no shuffle
                // happens here because the tier was shuffled when `tiers` was built.
                order: tier,
                params: params.clone(),
                progress: progress.clone(),
                peers: peers.clone(),
                events: events.clone(),
                dedup: dedup.clone(),
                stop: stop_rx.clone(),
            };
            tasks.push(tokio::spawn(ctx.run()));
        }
        TrackerSetHandle {
            stop: stop_tx,
            tasks,
        }
    }
}

impl TrackerSetHandle {
    /// Sends `stopped` to the trackers that answered and waits (bounded) for the tasks.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

impl Drop for TrackerSetHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

struct TierTask {
    client: Arc<TrackerClient>,
    order: Vec<String>,
    params: AnnounceParams,
    progress: watch::Receiver<Progress>,
    peers: mpsc::Sender<SocketAddr>,
    events: Option<mpsc::Sender<TrackerEvent>>,
    dedup: Arc<Mutex<StatusDedup>>,
    stop: watch::Receiver<bool>,
}

impl TierTask {
    fn request(&self, event: Event, tracker_id: Option<Vec<u8>>) -> AnnounceRequest {
        let p = *self.progress.borrow();
        AnnounceRequest {
            info_hash: self.params.info_hash,
            peer_id: self.params.peer_id,
            port: self.params.port,
            uploaded: p.uploaded,
            downloaded: p.downloaded,
            left: p.left,
            event,
            numwant: if event == Event::Stopped {
                Some(0)
            } else {
                self.params.numwant
            },
            key: self.params.key,
            tracker_id,
        }
    }

    fn report(&self, url: &str, r: &Result<AnnounceResponse, TrackerError>) {
        let status = r.as_ref().err().map(ToString::to_string);
        // Every answer goes out (it counts announces and dates the last one); the log only
        // hears of a status that changed.
        let changed = self
            .dedup
            .lock()
            .map(|mut d| d.changed(url, status.as_deref()))
            .unwrap_or(false);
        let ev = match r {
            Ok(a) => TrackerEvent::Ok {
                url: url.to_string(),
                peers: a.peers.len(),
                interval: a.interval,
                seeders: a.complete,
                leechers: a.incomplete,
            },
            Err(e) => {
                if changed {
                    tracing::info!(tracker = url, error = %e, "tracker error");
                }
                TrackerEvent::Error {
                    url: url.to_string(),
                    error: e.to_string(),
                }
            }
        };
        if let Some(tx) = &self.events {
            // Status is informational: drop it rather than block announcing.
            let _ = tx.try_send(ev);
        }
    }

    async fn run(mut self) {
        let mut started = false;
        let mut tracker_ids: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut retry = RETRY_START;
        let mut was_complete = self.progress.borrow().left == 0;
        let mut pending_completed = false;
        let mut answered: Option<String> = None;
        loop {
            if *self.stop.borrow() {
                break;
            }
            let event = if !started {
                Event::Started
            } else if pending_completed {
                Event::Completed
            } else {
                Event::None
            };
            let mut wait = retry;
            let mut ok = false;
            for url in self.order.clone() {
                let req = self.request(event, tracker_ids.get(&url).cloned());
                let r = tokio::select! {
                    biased;
                    _ = self.stop.changed() => break,
                    r = self.client.announce(&url, &req) => r,
                };
                self.report(&url, &r);
                if let Ok(resp) = r {
                    if let Some(id) = resp.tracker_id.clone() {
                        tracker_ids.insert(url.clone(), id);
                    }
                    let secs = resp.interval.max(resp.min_interval.unwrap_or(0));
                    wait = Duration::from_secs(u64::from(secs)).max(MIN_INTERVAL);
                    // BEP 12: the tracker that answered moves to the front of its tier.
                    let mut t = Tiers::from_ordered(std::mem::take(&mut self.order));
                    t.promote(&url);
                    self.order = t.tier(0).to_vec();
                    for p in resp.peers {
                        if self.peers.send(p).await.is_err() {
                            return;
                        }
                    }
                    started = true;
                    pending_completed = false;
                    answered = Some(url);
                    ok = true;
                    break;
                }
            }
            if ok {
                retry = RETRY_START;
            } else {
                retry = (retry * 2).min(RETRY_MAX);
            }
            if *self.stop.borrow() {
                break;
            }
            // Sleep until the next announce, waking early when the download completes.
            let deadline = Instant::now() + wait;
            loop {
                tokio::select! {
                    biased;
                    r = self.stop.changed() => {
                        if r.is_err() || *self.stop.borrow() { break; }
                    }
                    r = self.progress.changed(), if !was_complete => {
                        if r.is_err() {
                            // The torrent dropped its sender: no completion will come.
                            was_complete = true;
                        } else if self.progress.borrow().left == 0 {
                            was_complete = true;
                            pending_completed = started;
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        if let Some(url) = answered {
            let req = self.request(Event::Stopped, tracker_ids.get(&url).cloned());
            let _ = tokio::time::timeout(Duration::from_secs(5), self.client.announce(&url, &req))
                .await;
        }
    }
}
