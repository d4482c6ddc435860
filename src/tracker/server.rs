//! The tracker server behind `magnetfetch tracker`: HTTP announce/scrape (BEP 3, 23, 48) on
//! the small HTTP/1.1 server pieces of [`crate::http::server`], UDP (BEP 15) with stateless
//! connection ids, and an optional `.torrent` directory served with an index page (file
//! names in request paths are percent-decoded with `+` as a plus, as in any URL path).
//!
//! UDP connection ids are `SipHash-2-4(key, minute window ‖ source IP)` (64 bits, a keyed
//! PRF, far cheaper than the SHA-1 MAC used before), with a key drawn at start: nothing is stored per connect, a spoofed source never sees the
//! id sent to the real owner of that address, and an id is accepted in its window and the
//! next one (1 to 2 minutes, BEP 15 asks for at least 1).
//!
//! HTTP connections are admitted by [`super::conns::ConnTable`] (slowloris defences): at most
//! [`ServerConfig::max_http_conns_per_ip`] (32) per source address or IPv6 /64, refused on
//! arrival beyond it; 10 s to send the request head, 2 s for connections admitted while more
//! than half of [`ServerConfig::max_http_conns`] (256) are open; accepts never wait for a
//! slot: when all are taken, the oldest connection still sending its head from the source
//! with the most connections is closed to make room. A connection gets at most 30 s in all.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use super::conns::{Admit, ConnLimits, ConnTable};
use super::http_proto;
use super::siphash::siphash24;
use super::store::{PeerStore, Refusal, StoreConfig};
use super::torrents::{scan_dir, TorrentEntry};
use super::udp_proto::{self, Request};
use super::ScrapeStats;
use crate::http::head::{request_header, RequestLine};
use crate::http::percent::encode as percent_encode;
use crate::http::server::{read_request_head, write_reply, Reply};
use crate::http::{html, percent};
use crate::id::Id20;
use crate::net::{Net, Stream, UdpSocket};

/// Largest HTTP request head accepted.
pub const MAX_REQUEST: usize = crate::http::server::MAX_REQUEST_HEAD;
/// Time a client gets to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client gets to send its request head when it connects while more than half of the
/// HTTP connection slots are taken (a real client sends its head in one packet).
pub const PRESSURE_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub http: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
    pub torrents_dir: Option<PathBuf>,
    /// Only these info-hashes are tracked when set.
    pub allow: Option<BTreeSet<Id20>>,
    pub store: StoreConfig,
    /// Most HTTP connections open at once; when all are taken, a new one replaces the
    /// oldest still sending its head from the busiest source address.
    pub max_http_conns: usize,
    /// Most HTTP connections open at once from one IPv4 address or IPv6 /64; more are
    /// closed on arrival.
    pub max_http_conns_per_ip: usize,
    /// Secret for UDP connection ids (draw it at random in production).
    pub conn_key: [u8; 16],
    /// Seed for peer sampling.
    pub seed: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http: None,
            udp: None,
            torrents_dir: None,
            allow: None,
            store: StoreConfig::default(),
            max_http_conns: 256,
            max_http_conns_per_ip: 32,
            conn_key: [0; 16],
            seed: 0,
        }
    }
}

struct Shared {
    store: Mutex<PeerStore>,
    key: [u8; 16],
    epoch: Instant,
    torrents_dir: Option<PathBuf>,
    udp_port: Option<u16>,
    /// Last directory listing and when it was taken: a listing reads every file, so it is
    /// refreshed at most every [`LISTING_TTL`] however many requests arrive.
    listing: tokio::sync::Mutex<Option<(Instant, Arc<Vec<TorrentEntry>>)>>,
    http: Mutex<HttpConns>,
}

/// The open HTTP connections and the tasks serving them (to close an evicted one).
struct HttpConns {
    table: ConnTable,
    /// Only for connections in `table`: bounded by it.
    tasks: HashMap<u64, AbortHandle>,
}

impl HttpConns {
    fn new(limits: ConnLimits) -> Self {
        HttpConns {
            table: ConnTable::new(limits),
            tasks: HashMap::new(),
        }
    }
}

/// Frees a connection's slot when its task ends, however it ends (finished, timed out,
/// evicted and aborted).
struct Release<'a> {
    sh: &'a Shared,
    id: u64,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if let Ok(mut c) = self.sh.http.lock() {
            c.table.release(self.id);
            c.tasks.remove(&self.id);
        }
    }
}

/// How long a `--torrents` directory listing is reused.
pub const LISTING_TTL: Duration = Duration::from_secs(5);

impl Shared {
    async fn listing(&self) -> Arc<Vec<TorrentEntry>> {
        let Some(dir) = &self.torrents_dir else {
            return Arc::new(Vec::new());
        };
        let mut g = self.listing.lock().await;
        if let Some((at, l)) = g.as_ref() {
            if at.elapsed() < LISTING_TTL {
                return l.clone();
            }
        }
        let l = Arc::new(scan_dir(dir).await.unwrap_or_default());
        *g = Some((Instant::now(), l.clone()));
        l
    }

    fn conn_id(&self, src: SocketAddr, window: u64) -> u64 {
        // window ‖ family ‖ IP, fixed size: no allocation on the hot path.
        let mut m = [0u8; 25];
        m[..8].copy_from_slice(&window.to_be_bytes());
        match src.ip() {
            IpAddr::V4(ip) => {
                m[8] = 4;
                m[9..13].copy_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                m[8] = 6;
                m[9..].copy_from_slice(&ip.octets());
            }
        }
        // The port is deliberately not bound: libtorrent caches connection ids per tracker for
        // the whole process, so two sessions on one host share an id. Spoofing protection
        // only needs the IP (a spoofer never receives what is sent to it).
        siphash24(&self.key, &m)
    }

    fn window(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / 60
    }

    fn conn_ok(&self, src: SocketAddr, id: u64, now: Instant) -> bool {
        let w = self.window(now);
        id == self.conn_id(src, w) || (w > 0 && id == self.conn_id(src, w - 1))
    }

    fn stats(&self, h: &Id20) -> ScrapeStats {
        self.store
            .lock()
            .map(|mut s| s.scrape(Instant::now(), h))
            .unwrap_or_default()
    }
}

/// A running tracker. Dropping it stops its tasks.
pub struct TrackerServer {
    pub http_addr: Option<SocketAddr>,
    pub udp_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl TrackerServer {
    /// Binds the configured sockets and spawns the server tasks.
    pub async fn start(net: Net, cfg: ServerConfig) -> io::Result<TrackerServer> {
        let udp = match cfg.udp {
            Some(a) => Some(net.bind_udp(a).await?),
            None => None,
        };
        let http = match cfg.http {
            Some(a) => Some(net.listen(a).await?),
            None => None,
        };
        let udp_addr = udp.as_ref().map(UdpSocket::local_addr).transpose()?;
        let http_addr = http.as_ref().map(|l| l.local_addr()).transpose()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(PeerStore::new(
                cfg.store.clone(),
                cfg.allow.clone(),
                cfg.seed,
            )),
            key: cfg.conn_key,
            epoch: Instant::now(),
            torrents_dir: cfg.torrents_dir.clone(),
            udp_port: udp_addr.map(|a| a.port()),
            listing: tokio::sync::Mutex::new(None),
            http: Mutex::new(HttpConns::new(ConnLimits {
                max_conns: cfg.max_http_conns,
                per_addr: cfg.max_http_conns_per_ip,
                head_timeout: REQUEST_TIMEOUT,
                pressure_timeout: PRESSURE_REQUEST_TIMEOUT,
            })),
        });
        let mut tasks = Vec::new();
        if let Some(sock) = udp {
            tasks.push(tokio::spawn(udp_loop(sock, shared.clone())));
        }
        if let Some(l) = http {
            tasks.push(tokio::spawn(http_accept_loop(l, shared.clone())));
        }
        Ok(TrackerServer {
            http_addr,
            udp_addr,
            shared,
            tasks,
        })
    }

    /// Current counters for one torrent.
    pub fn stats(&self, h: &Id20) -> ScrapeStats {
        self.shared.stats(h)
    }

    /// HTTP connections open now.
    pub fn http_connections(&self) -> usize {
        self.shared.http.lock().map_or(0, |c| c.table.len())
    }

    /// Waits until every task ends (they run until aborted; used by the CLI).
    pub async fn join(mut self) {
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for TrackerServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

// ---------------------------------------------------------------- UDP

async fn udp_loop(sock: UdpSocket, sh: Arc<Shared>) {
    let mut buf = vec![0u8; udp_proto::MAX_PACKET];
    let mut out = Vec::with_capacity(udp_proto::MAX_PACKET);
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP errors from earlier sends surface here on some systems: keep serving.
            Err(_) => continue,
        };
        let Some(len) = handle_udp(&sh, &buf[..n], src, Instant::now(), &mut out) else {
            continue;
        };
        let _ = sock.send_to(&out[..len], src).await;
    }
}

/// Handles one datagram; writes the reply into `out` and returns its length, or `None` to stay
/// silent (garbage, bad connection id, rate-limited).
fn handle_udp(
    sh: &Shared,
    pkt: &[u8],
    src: SocketAddr,
    now: Instant,
    out: &mut Vec<u8>,
) -> Option<usize> {
    let req = udp_proto::parse_request(pkt)?;
    let csrc = udp_proto::canonical(src);
    match req {
        Request::Connect { tid } => {
            let id = sh.conn_id(src, sh.window(now));
            out.clear();
            out.extend_from_slice(&udp_proto::encode_connect_response(tid, id));
        }
        Request::Announce {
            conn_id,
            tid,
            info_hash,
            peer_id,
            left,
            event,
            numwant,
            port,
            ..
        } => {
            if !sh.conn_ok(src, conn_id, now) {
                return None;
            }
            let mut store = sh.store.lock().ok()?;
            if !store.rate_ok(now, csrc.ip()) {
                return None;
            }
            let port = if port == 0 { csrc.port() } else { port };
            let addr = SocketAddr::new(csrc.ip(), port);
            let numwant = usize::try_from(numwant).ok();
            // The header first (counts patched in below), then the peers' compact bytes
            // straight from the store: no allocation, no per-peer encoding.
            udp_proto::encode_announce_response(
                out,
                tid,
                store.interval_secs(),
                0,
                0,
                &[],
                csrc.is_ipv6(),
            );
            let r =
                store.announce_compact(now, info_hash, addr, peer_id, left, event, numwant, out);
            match r {
                Ok((complete, incomplete)) => {
                    if let Some(h) = out.get_mut(12..20) {
                        h[..4].copy_from_slice(&incomplete.to_be_bytes());
                        h[4..].copy_from_slice(&complete.to_be_bytes());
                    }
                }
                Err(r) => {
                    *out = udp_proto::encode_error(tid, &r.to_string());
                }
            }
        }
        Request::Scrape {
            conn_id,
            tid,
            hashes,
        } => {
            if !sh.conn_ok(src, conn_id, now) {
                return None;
            }
            let mut store = sh.store.lock().ok()?;
            if !store.rate_ok(now, csrc.ip()) {
                return None;
            }
            let stats: Vec<ScrapeStats> = hashes.iter().map(|h| store.scrape(now, h)).collect();
            *out = udp_proto::encode_scrape_response(tid, &stats);
        }
    }
    Some(out.len())
}

// ---------------------------------------------------------------- HTTP

fn bencode_reply(body: Vec<u8>) -> Reply {
    Reply::new(200, "text/plain", body)
}

/// Accepts HTTP connections for as long as the server runs. Never waits for a free slot:
/// see [`super::conns`] for who is refused or evicted instead.
async fn http_accept_loop(l: crate::net::Listener, sh: Arc<Shared>) {
    loop {
        let (stream, peer) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = sh.http.lock().ok().map(|mut c| {
            let a = c.table.admit(peer.ip(), Instant::now());
            let evicted = match &a {
                Admit::Accept {
                    evicted: Some(v), ..
                } => c.tasks.remove(v),
                _ => None,
            };
            (a, evicted)
        });
        let Some((
            Admit::Accept {
                id, head_deadline, ..
            },
            evicted,
        )) = admitted
        else {
            tracing::debug!(%peer, "HTTP connection refused: too many from its address");
            continue; // dropping the stream closes it
        };
        // Outside the lock: the evicted task's slot guard takes it when the task is dropped.
        if let Some(h) = evicted {
            h.abort();
        }
        let task_sh = sh.clone();
        let task = tokio::spawn(async move {
            let _release = Release { sh: &task_sh, id };
            let _ = tokio::time::timeout(
                REQUEST_TIMEOUT * 3,
                handle_http(stream, peer, &task_sh, id, head_deadline),
            )
            .await;
        });
        if let Ok(mut c) = sh.http.lock() {
            // A task that has already ended released its slot: nothing to remember.
            if c.table.contains(id) {
                c.tasks.insert(id, task.abort_handle());
            }
        }
    }
}

async fn handle_http(
    mut stream: Stream,
    peer: SocketAddr,
    sh: &Shared,
    id: u64,
    head_deadline: Instant,
) {
    let mut buf = Vec::with_capacity(1024);
    let read = read_request_head(&mut stream, &mut buf, MAX_REQUEST);
    let head_end = match tokio::time::timeout_at(head_deadline, read).await {
        Ok(Ok(e)) => e,
        _ => {
            let body = http_proto::encode_failure("malformed or oversized request");
            let _ = write_reply(&mut stream, &Reply::new(400, "text/plain", body), false).await;
            return;
        }
    };
    if let Ok(mut c) = sh.http.lock() {
        c.table.head_done(id);
    }
    let head = &buf[..head_end];
    let reply = route(head, peer, sh).await;
    let head_only = head.starts_with(b"HEAD ");
    let _ = write_reply(&mut stream, &reply, head_only).await;
}

async fn route(head: &[u8], peer: SocketAddr, sh: &Shared) -> Reply {
    let line =
        RequestLine::parse(head).filter(|l| matches!(l.method, b"GET" | b"HEAD") && l.is_http1());
    let Some(line) = line else {
        let body = http_proto::encode_failure("only GET is supported");
        return Reply::new(400, "text/plain", body);
    };
    let (path, query) = line.path_and_query();
    let now = Instant::now();
    let src = udp_proto::canonical(peer);
    match path {
        b"/announce" => bencode_reply(http_announce(sh, query, src, now)),
        b"/scrape" => bencode_reply(http_scrape(sh, query, src, now)),
        b"/" | b"/index.html" => match &sh.torrents_dir {
            Some(_) => {
                let host = request_header(head, "host")
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .filter(|h| {
                        h.chars()
                            .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
                    })
                    .unwrap_or("localhost")
                    .to_string();
                let list = sh.listing().await;
                let page = index_page(&list, &host, sh.udp_port, |h| sh.stats(h));
                Reply::new(200, "text/html; charset=utf-8", page)
            }
            None => Reply::new(200, "text/plain", &b"magnetfetch tracker\n"[..]),
        },
        p => {
            if sh.torrents_dir.is_none() {
                return Reply::not_found();
            }
            let name = p.strip_prefix(b"/").and_then(|n| percent::decode(n, false));
            let Some(name) = name.and_then(|n| String::from_utf8(n).ok()) else {
                return Reply::not_found();
            };
            // Only names found by listing the directory are served: no path ever comes from
            // the request itself.
            let list = sh.listing().await;
            match list.iter().find(|t| t.file_name == name) {
                Some(t) => match tokio::fs::read(&t.path).await {
                    Ok(body) => Reply::new(200, "application/x-bittorrent", body),
                    Err(_) => Reply::not_found(),
                },
                None => Reply::not_found(),
            }
        }
    }
}

fn http_announce(sh: &Shared, query: &[u8], src: SocketAddr, now: Instant) -> Vec<u8> {
    let a = match http_proto::parse_announce_query(query) {
        Ok(a) => a,
        Err(e) => return http_proto::encode_failure(&e.to_string()),
    };
    let Ok(mut store) = sh.store.lock() else {
        return http_proto::encode_failure("internal error");
    };
    if !store.rate_ok(now, src.ip()) {
        return http_proto::encode_failure(&Refusal::RateLimited.to_string());
    }
    let addr = SocketAddr::new(src.ip(), a.port);
    let numwant = a.numwant.map(|n| n as usize);
    match store.announce(now, a.info_hash, addr, a.peer_id, a.left, a.event, numwant) {
        Ok(o) => {
            let peers: Vec<(SocketAddr, Option<Id20>)> = o
                .peers
                .iter()
                .map(|(p, id)| (*p, (!a.no_peer_id).then_some(*id)))
                .collect();
            // BEP 23: compact is the default reply; a dictionary list only when asked with
            // compact=0.
            let compact = a.compact || !query_has(query, b"compact=0");
            http_proto::encode_announce_reply(
                store.interval_secs(),
                o.complete,
                o.incomplete,
                &peers,
                compact,
            )
        }
        Err(r) => http_proto::encode_failure(&r.to_string()),
    }
}

fn query_has(query: &[u8], kv: &[u8]) -> bool {
    query.split(|&c| c == b'&').any(|p| p == kv)
}

fn http_scrape(sh: &Shared, query: &[u8], src: SocketAddr, now: Instant) -> Vec<u8> {
    let hashes = match http_proto::parse_scrape_query(query) {
        Ok(h) if h.is_empty() => return http_proto::encode_failure("full scrape is not supported"),
        Ok(h) => h,
        Err(e) => return http_proto::encode_failure(&e.to_string()),
    };
    let Ok(mut store) = sh.store.lock() else {
        return http_proto::encode_failure("internal error");
    };
    if !store.rate_ok(now, src.ip()) {
        return http_proto::encode_failure(&Refusal::RateLimited.to_string());
    }
    let files: Vec<(Id20, ScrapeStats)> =
        hashes.iter().map(|h| (*h, store.scrape(now, h))).collect();
    http_proto::encode_scrape_reply(&files)
}

/// The index page: one row per torrent with its name, size, magnet link and live counts.
pub fn index_page(
    list: &[TorrentEntry],
    host: &str,
    udp_port: Option<u16>,
    stats: impl Fn(&Id20) -> ScrapeStats,
) -> String {
    let mut trs = vec![format!("http://{host}/announce")];
    if let Some(p) = udp_port {
        let h = match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        };
        trs.push(format!("udp://{h}:{p}/announce"));
    }
    let mut s = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>magnetfetch tracker</title></head><body>\n\
         <h1>Torrents</h1>\n<table>\n<tr><th>Name</th><th>Size</th><th>Seeders</th><th>Leechers</th><th>Magnet</th><th>.torrent</th></tr>\n",
    );
    for t in list {
        let st = stats(&t.info_hash);
        let mut magnet = format!(
            "magnet:?xt=urn:btih:{}&dn={}",
            t.info_hash.to_hex(),
            percent_encode(t.name.as_bytes())
        );
        for tr in &trs {
            magnet.push_str("&tr=");
            magnet.push_str(&percent_encode(tr.as_bytes()));
        }
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"{}\">magnet</a></td><td><a href=\"/{}\">{}</a></td></tr>",
            html::escape(&t.name),
            t.size,
            st.complete,
            st.incomplete,
            html::escape(&magnet),
            percent_encode(t.file_name.as_bytes()),
            html::escape(&t.file_name),
        );
    }
    s.push_str("</table>\n</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            store: Mutex::new(PeerStore::new(StoreConfig::default(), None, 0)),
            key: [7; 16],
            epoch: Instant::now(),
            torrents_dir: None,
            udp_port: None,
            listing: tokio::sync::Mutex::new(None),
            http: Mutex::new(HttpConns::new(ConnLimits::default())),
        }
    }

    #[test]
    fn udp_connection_ids_are_per_source_and_expire() {
        let sh = shared();
        let a: SocketAddr = "10.0.0.1:5".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5".parse().unwrap();
        let now = sh.epoch;
        let id = sh.conn_id(a, sh.window(now));
        assert!(sh.conn_ok(a, id, now));
        assert!(!sh.conn_ok(b, id, now), "another source cannot use it");
        assert!(sh.conn_ok(a, id, now + Duration::from_secs(119)));
        assert!(!sh.conn_ok(a, id, now + Duration::from_secs(120)));
        let other = Shared {
            key: [8; 16],
            ..shared()
        };
        assert_ne!(other.conn_id(a, 0), sh.conn_id(a, 0), "keyed");
    }

    #[test]
    fn udp_announce_needs_valid_connection_id() {
        let sh = shared();
        let src: SocketAddr = "10.0.0.1:6881".parse().unwrap();
        let now = Instant::now();
        let mut out = Vec::new();
        let req = super::super::AnnounceRequest {
            info_hash: Id20([1; 20]),
            peer_id: Id20([2; 20]),
            port: 6881,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: super::super::Event::Started,
            numwant: None,
            key: 0,
            tracker_id: None,
        };
        assert!(handle_udp(
            &sh,
            &udp_proto::encode_announce(1234, 1, &req),
            src,
            now,
            &mut out
        )
        .is_none());
        let n = handle_udp(&sh, &udp_proto::encode_connect(9), src, now, &mut out).unwrap();
        let id = udp_proto::parse_connect_response(&out[..n], 9).unwrap();
        let n = handle_udp(
            &sh,
            &udp_proto::encode_announce(id, 2, &req),
            src,
            now,
            &mut out,
        )
        .unwrap();
        let r = udp_proto::parse_announce_response(&out[..n], 2, false).unwrap();
        assert_eq!(r.complete, Some(1));
        assert!(handle_udp(&sh, b"garbage garbage garbage", src, now, &mut out).is_none());
    }

    #[test]
    fn index_escapes_and_links() {
        let t = TorrentEntry {
            file_name: "a b.torrent".into(),
            path: PathBuf::from("/x"),
            name: "<script>".into(),
            size: 9,
            info_hash: Id20([0xab; 20]),
        };
        let p = index_page(&[t], "127.0.0.1:8000", Some(6969), |_| ScrapeStats {
            complete: 3,
            downloaded: 0,
            incomplete: 4,
        });
        assert!(p.contains("&lt;script&gt;"));
        assert!(!p.contains("<script>"));
        assert!(p.contains("xt=urn:btih:abababab"));
        assert!(p.contains("udp%3A%2F%2F127.0.0.1%3A6969%2Fannounce"));
        assert!(p.contains("<td>3</td><td>4</td>"));
        assert!(p.contains("href=\"/a%20b.torrent\""));
    }
}
