//! The DHT node task (BEP 5, with BEP 32/33/42/43/51 answers): one task owns the UDP
//! socket(s), the routing table(s), the peer store, the tokens, the outstanding
//! transactions and the running lookups.
//!
//! Dual stack (BEP 32): a node may run on one IPv4 and one IPv6 socket at once. It then
//! keeps one routing table per family (same node id in both, as BEP 32 recommends); IPv6
//! nodes only enter the IPv6 table and vice versa. Lookups for a hash run in both families
//! in parallel, peers from both streamed to the caller, and announces go to the closest
//! nodes of each family. While the other family's table is thin (and during bootstrap) our
//! `find_node`/`get_peers` carry `want: [n4, n6]`, so answers over IPv4 can fill the IPv6
//! table (the nodes they name are queried in their own family before entering its table).
//! Incoming `want` is honoured (`nodes` and/or `nodes6`, default: the family of the socket
//! the query came in on); `values` are always peers of the querying family, and every
//! answer is trimmed to stay under 1000 bytes and 9x its query (no amplification).
//!
//! The protocol logic lives in [`NodeState`], a synchronous state machine fed with packets,
//! commands and the current time, which queues outgoing datagrams in an outbox. The task
//! around it only moves bytes between the socket (through [`crate::net`]) and that state,
//! and sleeps with `tokio::time` until the next deadline, so the same code runs on real
//! sockets and on the simulated network with paused time.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::krpc::{error_code, Body, Message, NodeInfo, Query, QueryKind, Response, Want};
use super::lookup::{Lookup, LookupConfig, LookupKind};
use super::store::{PeerStore, StoreConfig, Tokens};
use super::table::{bep42_node_id, bep42_valid, is_local, Table, TableConfig};
use crate::id::{Id20, InfoHash, NodeId};
use crate::net::{Net, UdpSocket};

/// The usual public bootstrap routers.
pub const DEFAULT_BOOTSTRAP: &[&str] = &[
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
    "dht.libtorrent.org:25401",
];

/// Our client version in the `v` key: "MF" + version 0.1.
const VERSION: &[u8] = b"MF\x00\x01";
/// Values returned per `get_peers` answer. 32 compact IPv4 peers plus 8 nodes keep the
/// answer around 550 bytes, so a ~100-byte query buys at most a ~5x bigger answer.
const MAX_VALUES: usize = 32;
/// BEP 51 samples per answer (20 bytes each).
const MAX_SAMPLES: usize = 20;
/// Receive buffer: one MTU-sized datagram with room to spare.
const RECV_BUF: usize = 4096;
/// How often housekeeping runs.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);
/// How often the state file is rewritten while running.
const SAVE_EVERY: Duration = Duration::from_secs(10 * 60);
/// Retry bootstrap this often while the table is empty.
const REBOOTSTRAP_EVERY: Duration = Duration::from_secs(30);
/// Delay of the second self-lookup after bootstrap.
const SECOND_PASS_AFTER: Duration = Duration::from_secs(10);
/// Nodes saved in the state file.
const MAX_SAVED_NODES: usize = 200;
/// While the other family's table holds fewer nodes than this, a dual-stack node's
/// lookups ask for both families' nodes (BEP 32 `want`); once it is healthy, only for the
/// queried family (BEP 32 "steady-state operation").
const WANT_BOTH_BELOW: usize = 32;
/// Largest answer we send: BEP 32 caps UDP payloads at 1024 bytes.
const MAX_REPLY: usize = 1000;
/// An answer is always smaller than this many times its query (no amplification).
const MAX_AMPLIFICATION: usize = 9;
/// Longest wait between re-bootstraps while one family's table stays empty and the other
/// is not (e.g. a dual-stack node on a network without IPv6 nodes).
const REBOOTSTRAP_MAX: Duration = Duration::from_secs(10 * 60);
/// Distinct responders that must report the same external IP before we believe it.
const EXTERNAL_IP_VOTES: usize = 3;
/// Bound on candidate external IPs tracked (a liar can only waste these slots).
const MAX_IP_CANDIDATES: usize = 16;

/// Node settings.
#[derive(Clone, Debug)]
pub struct DhtConfig {
    /// Bootstrap addresses (already resolved; see [`DEFAULT_BOOTSTRAP`] for names).
    pub bootstrap: Vec<SocketAddr>,
    /// Where the node id and good nodes are saved and loaded.
    pub state_file: Option<PathBuf>,
    /// BEP 43: never answer queries, ask others not to add us.
    pub read_only: bool,
    /// BEP 42: refuse (true) or only de-prioritise (false) nodes with non-conforming ids.
    pub enforce_node_id: bool,
    /// Seed of every random choice (ids, tokens, transaction ids). None: from the OS.
    pub seed: Option<u64>,
    /// Force a node id (else: state file, else BEP 42 id for a public bind IP, else random).
    /// Unless forced, the id is re-derived once (BEP 42) when responders agree on an
    /// external IP our id does not match.
    pub node_id: Option<NodeId>,
    pub lookup: LookupConfig,
    pub store: StoreConfig,
    /// Per-IP rate limit on incoming queries (sustained per second; burst is twice that).
    pub queries_per_sec_per_ip: u32,
    /// Bound on outstanding queries we sent.
    pub max_transactions: usize,
    /// Bound on concurrently running lookups (more wait in the command queue).
    pub max_lookups: usize,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            bootstrap: Vec::new(),
            state_file: None,
            read_only: false,
            enforce_node_id: false,
            seed: None,
            node_id: None,
            lookup: LookupConfig::default(),
            store: StoreConfig::default(),
            queries_per_sec_per_ip: 20,
            max_transactions: 2048,
            max_lookups: 64,
        }
    }
}

/// Counters for the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DhtStats {
    pub queries_sent: u64,
    pub responses: u64,
    pub timeouts: u64,
    pub queries_received: u64,
    pub queries_dropped: u64,
    /// Distinct nodes that answered, summed over finished lookups.
    pub nodes_visited: u64,
    pub lookups_done: u64,
    pub table_size: usize,
    pub peers_stored: usize,
    /// Our address as others see it (BEP 42 `ip`), last reported.
    pub external_addr: Option<SocketAddr>,
    /// Nodes in the IPv4 and IPv6 routing tables (`table_size` is their sum; BEP 32).
    pub table_v4: usize,
    pub table_v6: usize,
}

/// The result of one lookup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LookupSummary {
    pub peers: usize,
    pub queries_sent: u64,
    pub responses: u64,
    pub timeouts: u64,
    pub nodes_visited: usize,
    pub rounds: u32,
    /// Nodes `announce_peer` was sent to.
    pub announced_to: usize,
    pub duration: Duration,
}

/// A running lookup as seen by the caller: peers stream in, the summary comes at the end.
pub struct LookupHandle {
    /// Closed when the lookup (and its announce, if any) is finished.
    pub peers: mpsc::Receiver<SocketAddr>,
    pub done: oneshot::Receiver<LookupSummary>,
}

enum Cmd {
    Lookup {
        info_hash: InfoHash,
        /// Some(port) to announce afterwards; Some(None) = implied port.
        announce: Option<(Option<u16>, bool)>,
        peers: mpsc::Sender<SocketAddr>,
        done: oneshot::Sender<LookupSummary>,
    },
    FindNode {
        target: NodeId,
        done: oneshot::Sender<Vec<NodeInfo>>,
    },
    Bootstrapped(oneshot::Sender<()>),
    Stats(oneshot::Sender<DhtStats>),
    Save(oneshot::Sender<io::Result<()>>),
    Shutdown(oneshot::Sender<()>),
}

/// Handle to a running DHT node. Dropping every handle stops the node.
pub struct Dht {
    cmd: mpsc::Sender<Cmd>,
    /// The first socket's address, then the other family's when dual-stack.
    local_addrs: Vec<SocketAddr>,
    node_id: Arc<Mutex<NodeId>>,
}

/// Saved state: node id and good nodes (for a warm restart).
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedState {
    id: String,
    nodes: Vec<(String, SocketAddr)>,
}

/// Loads a state file (both families' nodes in one list; files written before dual stack
/// hold IPv4 or IPv6 nodes only and load the same way).
fn load_state(path: &Path) -> Option<(NodeId, Vec<NodeInfo>)> {
    // A missing or corrupt state file only means a cold start.
    let text = std::fs::read_to_string(path).ok()?;
    if text.len() > 1 << 20 {
        return None;
    }
    let s: SavedState = serde_json::from_str(&text).ok()?;
    let id = Id20::from_hex(&s.id).ok()?;
    let nodes = s
        .nodes
        .into_iter()
        .take(2 * MAX_SAVED_NODES)
        .filter_map(|(id, addr)| {
            Some(NodeInfo {
                id: Id20::from_hex(&id).ok()?,
                addr,
            })
        })
        .collect();
    Some((id, nodes))
}

fn save_state(path: &Path, id: &NodeId, nodes: &[NodeInfo]) -> io::Result<()> {
    let s = SavedState {
        id: id.to_hex(),
        nodes: nodes.iter().map(|n| (n.id.to_hex(), n.addr)).collect(),
    };
    let text = serde_json::to_string_pretty(&s).map_err(io::Error::other)?;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    // Write then rename so a crash never leaves a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

impl Dht {
    /// Binds the socket and starts the node task (which bootstraps at once).
    pub async fn start(net: Net, bind: SocketAddr, config: DhtConfig) -> io::Result<Dht> {
        Self::start_on(net.bind_udp(bind).await?, config)
    }

    /// Dual stack (BEP 32): binds one socket per address (at most one IPv4 and one IPv6)
    /// and runs one node with a routing table per family.
    pub async fn start_multi(net: Net, binds: &[SocketAddr], config: DhtConfig) -> io::Result<Dht> {
        let mut socks = Vec::new();
        for b in binds {
            socks.push(net.bind_udp(*b).await?);
        }
        Self::start_on_sockets(socks, config)
    }

    /// Starts the node on a socket bound by the caller (e.g. shared with QUIC:
    /// `crate::net::quic::bind_shared` hands the node only datagrams starting with `d`).
    pub fn start_on(sock: UdpSocket, config: DhtConfig) -> io::Result<Dht> {
        Self::start_on_sockets(vec![sock], config)
    }

    /// Starts the node on one or two sockets bound by the caller: one per address family
    /// (BEP 32 dual stack). The first one's family is primary (it decides the BEP 42 id).
    pub fn start_on_sockets(socks: Vec<UdpSocket>, config: DhtConfig) -> io::Result<Dht> {
        let mut local_addrs = Vec::new();
        for s in &socks {
            local_addrs.push(s.local_addr()?);
        }
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
        match local_addrs.as_slice() {
            [_] => {}
            [a, b] if a.is_ipv6() != b.is_ipv6() => {}
            [] => return Err(bad("DHT: no socket")),
            _ => return Err(bad("DHT: at most one IPv4 and one IPv6 socket")),
        }
        let saved = config.state_file.as_deref().and_then(load_state);
        let now = Instant::now();
        let state = NodeState::new_multi(config, &local_addrs, saved, now);
        let node_id = state.shared_id.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(run(socks, state, rx));
        Ok(Dht {
            cmd: tx,
            local_addrs,
            node_id,
        })
    }

    /// The (first) socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    /// Every socket's address: one, or one per family when dual-stack (BEP 32).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Our current node id (it may change once, see [`DhtConfig::node_id`]).
    pub fn node_id(&self) -> NodeId {
        *self.node_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a `get_peers` lookup; optionally announces afterwards (`announce` =
    /// Some(port), port None = implied port, i.e. our UDP port as seen by the receiver).
    pub async fn lookup(
        &self,
        info_hash: InfoHash,
        announce: Option<Option<u16>>,
        seed: bool,
    ) -> LookupHandle {
        let (ptx, prx) = mpsc::channel(256);
        let (dtx, drx) = oneshot::channel();
        let cmd = Cmd::Lookup {
            info_hash,
            announce: announce.map(|p| (p, seed)),
            peers: ptx,
            done: dtx,
        };
        // If the node is gone, the channels simply close.
        let _ = self.cmd.send(cmd).await;
        LookupHandle {
            peers: prx,
            done: drx,
        }
    }

    /// Streams peers for `info_hash` as they are found; the channel closes at the end.
    pub async fn get_peers(&self, info_hash: InfoHash) -> mpsc::Receiver<SocketAddr> {
        self.lookup(info_hash, None, false).await.peers
    }

    /// Like [`Dht::get_peers`], then announces us (`port` None = implied port).
    pub async fn announce(
        &self,
        info_hash: InfoHash,
        port: Option<u16>,
    ) -> mpsc::Receiver<SocketAddr> {
        self.lookup(info_hash, Some(port), false).await.peers
    }

    /// An iterative `find_node`; returns the closest nodes that answered.
    pub async fn find_node(&self, target: NodeId) -> Vec<NodeInfo> {
        let (tx, rx) = oneshot::channel();
        if self
            .cmd
            .send(Cmd::FindNode { target, done: tx })
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Resolves once the initial bootstrap lookup has finished.
    pub async fn bootstrapped(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Bootstrapped(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub async fn stats(&self) -> DhtStats {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Stats(tx)).await.is_err() {
            return DhtStats::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Writes the state file now (no-op without one).
    pub async fn save_state(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Save(tx))
            .await
            .map_err(|_| io::Error::other("DHT node stopped"))?;
        rx.await.map_err(|_| io::Error::other("DHT node stopped"))?
    }

    /// Saves state and stops the node.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Receives on the second (other family) socket, or never when there is none.
async fn recv_second(sock: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn run(socks: Vec<UdpSocket>, mut st: NodeState, mut cmds: mpsc::Receiver<Cmd>) {
    let mut socks = socks.into_iter();
    let Some(sock) = socks.next() else { return };
    let second = socks.next();
    // KRPC messages (and anything else sharing the port) fit in one MTU; a bigger datagram
    // is truncated and then fails to decode. A small buffer matters in a simulation of
    // thousands of nodes: 64 KiB each was most of the memory of a 5,000-node swarm.
    let mut buf = vec![0u8; RECV_BUF];
    let mut buf2 = if second.is_some() {
        vec![0u8; RECV_BUF]
    } else {
        Vec::new()
    };
    // Back-off for a socket that keeps failing (its host went away in a simulation, or
    // ICMP errors): up to 1 s between attempts instead of a wake-up every 10 ms.
    let mut err_wait = Duration::from_millis(10);
    st.tick(Instant::now());
    let first_v6 = st.local.is_ipv6();
    loop {
        for (bytes, to) in st.outbox.drain(..) {
            // Each datagram leaves by the socket of its destination's family (BEP 32).
            let s = match &second {
                Some(s2) if to.is_ipv6() != first_v6 => s2,
                _ => &sock,
            };
            // UDP send errors (unreachable host etc.) are just lost packets.
            let _ = s.send_to(&bytes, to).await;
        }
        let wake = st.next_wake();
        // Which socket a datagram (or a receive error) came from: `true` for the second.
        let got = tokio::select! {
            biased;
            cmd = cmds.recv() => {
                match cmd {
                    None => {
                        st.save();
                        return;
                    }
                    Some(Cmd::Shutdown(tx)) => {
                        st.save();
                        let _ = tx.send(());
                        return;
                    }
                    Some(c) => st.command(c, Instant::now()),
                }
                None
            }
            r = sock.recv_from(&mut buf) => Some((r, false)),
            r = recv_second(second.as_ref(), &mut buf2) => Some((r, true)),
            _ = tokio::time::sleep_until(wake) => None,
        };
        if let Some((r, on_second)) = got {
            match r {
                Ok((n, from)) => {
                    err_wait = Duration::from_millis(10);
                    let b = if on_second { &buf2 } else { &buf };
                    if let Some(pkt) = b.get(..n) {
                        st.packet(pkt, from, Instant::now());
                    }
                }
                Err(e) => {
                    tracing::debug!(second_socket = on_second, "dht recv error: {e}");
                    // Avoid a hot loop if the socket keeps failing.
                    tokio::time::sleep(err_wait).await;
                    err_wait = (err_wait * 2).min(Duration::from_secs(1));
                }
            }
        }
        st.tick(Instant::now());
    }
}

#[derive(Clone, Copy, Debug)]
enum Purpose {
    Lookup(u64),
    Ping,
    /// An `announce_peer` sent at the end of this lookup.
    Announce(u64),
}

#[derive(Clone, Copy, Debug)]
struct Txn {
    addr: SocketAddr,
    expect: Option<NodeId>,
    sent: Instant,
    purpose: Purpose,
}

enum Waiter {
    Peers {
        peers: Option<mpsc::Sender<SocketAddr>>,
        done: Option<oneshot::Sender<LookupSummary>>,
    },
    Nodes(Option<oneshot::Sender<Vec<NodeInfo>>>),
    Internal,
}

/// Index of a family in the per-family arrays: 0 = IPv4, 1 = IPv6.
fn fi(v6: bool) -> usize {
    usize::from(v6)
}

struct RunningLookup {
    target: Id20,
    kind: LookupKind,
    /// One lookup per address family it runs in (index [`fi`]): both when dual-stack.
    parts: [Option<Lookup>; 2],
    waiter: Waiter,
    announce: Option<(Option<u16>, bool)>,
    bootstrap: bool,
    started: Instant,
    /// Set once the lookup is done and announcing: (announces outstanding, acknowledged).
    announcing: Option<(usize, usize)>,
    /// Something happened since the last drive (saves re-scanning idle lookups).
    dirty: bool,
}

impl RunningLookup {
    fn part_mut(&mut self, v6: bool) -> Option<&mut Lookup> {
        self.parts[fi(v6)].as_mut()
    }

    fn parts(&self) -> impl Iterator<Item = &Lookup> {
        self.parts.iter().flatten()
    }

    fn both(&self) -> bool {
        self.parts.iter().all(Option::is_some)
    }

    /// Done when every family's lookup is (a part may be revived by nodes the other
    /// family's answers name, so this is checked again after each event).
    fn is_done(&self) -> bool {
        self.parts().all(Lookup::is_done)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.parts().filter_map(Lookup::next_deadline).min()
    }
}

/// Per-IP token bucket for incoming queries.
#[derive(Clone, Copy)]
struct RateBucket {
    tokens: f64,
    at: Instant,
}

/// The node's protocol state: synchronous, driven by the task in [`run`].
pub(crate) struct NodeState {
    cfg: DhtConfig,
    id: NodeId,
    shared_id: Arc<Mutex<NodeId>>,
    /// Set when the id was forced or already re-derived from the external IP.
    id_fixed: bool,
    /// Candidate external IP → distinct responder IPs that reported it (BEP 42).
    ip_votes: BTreeMap<IpAddr, BTreeSet<IpAddr>>,
    /// The first socket's address (its family decides the BEP 42 id).
    local: SocketAddr,
    /// Our address per family (index [`fi`]); None where no socket is bound.
    locals: [Option<SocketAddr>; 2],
    /// One routing table per bound family (BEP 32), index [`fi`].
    tables: [Option<Table>; 2],
    store: PeerStore,
    tokens: Tokens,
    rng: StdRng,
    txns: BTreeMap<u16, Txn>,
    next_tid: u16,
    lookups: BTreeMap<u64, RunningLookup>,
    next_lookup: u64,
    rate: LruCache<IpAddr, RateBucket>,
    stats: DhtStats,
    saved_nodes: Vec<NodeInfo>,
    bootstrapped: bool,
    bootstrap_waiters: Vec<oneshot::Sender<()>>,
    last_bootstrap: Option<Instant>,
    /// Wait before the next re-bootstrap while a table is empty (backs off, see
    /// [`REBOOTSTRAP_MAX`]).
    rebootstrap_wait: Duration,
    /// When to repeat the self-lookup once after bootstrap (see `finish_bootstrap`).
    second_pass_at: Option<Instant>,
    next_maintenance: Instant,
    next_save: Instant,
    outbox: Vec<(Vec<u8>, SocketAddr)>,
}

impl NodeState {
    #[cfg(test)]
    fn new(
        cfg: DhtConfig,
        local: SocketAddr,
        saved: Option<(NodeId, Vec<NodeInfo>)>,
        now: Instant,
    ) -> Self {
        Self::new_multi(cfg, &[local], saved, now)
    }

    /// A node on the given addresses: one, or one per family (dual stack, BEP 32).
    fn new_multi(
        cfg: DhtConfig,
        locals: &[SocketAddr],
        saved: Option<(NodeId, Vec<NodeInfo>)>,
        now: Instant,
    ) -> Self {
        let local = locals
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut rng = StdRng::seed_from_u64(cfg.seed.unwrap_or_else(rand::random));
        let (saved_id, saved_nodes) = match saved {
            Some((id, nodes)) => (Some(id), nodes),
            None => (None, Vec::new()),
        };
        let id = cfg.node_id.or(saved_id).unwrap_or_else(|| {
            let ip = local.ip();
            if !ip.is_unspecified() && !is_local(ip) {
                bep42_node_id(ip, &mut rng)
            } else {
                Id20(rng.random())
            }
        });
        let mut tables = [None, None];
        let mut local_by_fam = [None, None];
        for l in locals {
            let ip = l.ip();
            // Bound to loopback/private (tests, LANs): accept such peers in the table.
            let allow_private = ip.is_loopback() || is_local(ip);
            let tcfg = TableConfig {
                allow_private,
                enforce_node_id: cfg.enforce_node_id,
                v6: Some(l.is_ipv6()),
                ..Default::default()
            };
            tables[fi(l.is_ipv6())] = Some(Table::new(id, tcfg, now));
            local_by_fam[fi(l.is_ipv6())] = Some(*l);
        }
        let tokens = Tokens::new(now, &mut rng);
        let next_tid = rng.random();
        NodeState {
            tables,
            locals: local_by_fam,
            rebootstrap_wait: REBOOTSTRAP_EVERY,
            store: PeerStore::new(cfg.store.clone()),
            tokens,
            rng,
            txns: BTreeMap::new(),
            next_tid,
            lookups: BTreeMap::new(),
            next_lookup: 0,
            rate: LruCache::new(NonZeroUsize::new(8192).unwrap_or(NonZeroUsize::MIN)),
            stats: DhtStats::default(),
            saved_nodes,
            bootstrapped: false,
            bootstrap_waiters: Vec::new(),
            last_bootstrap: None,
            second_pass_at: None,
            next_maintenance: now,
            next_save: now + SAVE_EVERY,
            outbox: Vec::new(),
            id_fixed: cfg.node_id.is_some(),
            cfg,
            id,
            shared_id: Arc::new(Mutex::new(id)),
            ip_votes: BTreeMap::new(),
            local,
        }
    }

    /// The primary family (the first socket's).
    fn v6(&self) -> bool {
        self.local.is_ipv6()
    }

    fn table(&self, v6: bool) -> Option<&Table> {
        self.tables[fi(v6)].as_ref()
    }

    fn table_mut(&mut self, v6: bool) -> Option<&mut Table> {
        self.tables[fi(v6)].as_mut()
    }

    /// The bound families' tables.
    fn tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.iter().flatten()
    }

    /// The bound families, IPv4 first.
    fn families(&self) -> Vec<bool> {
        [false, true]
            .into_iter()
            .filter(|v6| self.tables[fi(*v6)].is_some())
            .collect()
    }

    fn save(&self) {
        let Some(path) = &self.cfg.state_file else {
            return;
        };
        if let Err(e) = self.save_to(path) {
            tracing::warn!("could not save DHT state to {}: {e}", path.display());
        }
    }

    fn save_to(&self, path: &Path) -> io::Result<()> {
        let now = Instant::now();
        // Both families in one list (addresses say which table they belong to).
        let mut nodes: Vec<NodeInfo> = Vec::new();
        for t in self.tables() {
            nodes.extend(
                t.good_nodes(now)
                    .into_iter()
                    .take(MAX_SAVED_NODES)
                    .map(|e| NodeInfo {
                        id: e.id,
                        addr: e.addr,
                    }),
            );
        }
        save_state(path, &self.id, &nodes)
    }

    fn next_wake(&self) -> Instant {
        let mut t = self.next_maintenance;
        for l in self.lookups.values() {
            if let Some(d) = l.next_deadline() {
                t = t.min(d);
            }
        }
        if let Some(oldest) = self.txns.values().map(|x| x.sent).min() {
            t = t.min(oldest + self.cfg.lookup.timeout);
        }
        t
    }

    fn command(&mut self, c: Cmd, now: Instant) {
        match c {
            Cmd::Lookup {
                info_hash,
                announce,
                peers,
                done,
            } => {
                let waiter = Waiter::Peers {
                    peers: Some(peers),
                    done: Some(done),
                };
                self.start_lookup(
                    info_hash,
                    LookupKind::GetPeers,
                    waiter,
                    announce,
                    false,
                    None,
                    now,
                );
            }
            Cmd::FindNode { target, done } => {
                self.start_lookup(
                    target,
                    LookupKind::FindNode,
                    Waiter::Nodes(Some(done)),
                    None,
                    false,
                    None,
                    now,
                );
            }
            Cmd::Bootstrapped(tx) => {
                if self.bootstrapped {
                    let _ = tx.send(());
                } else {
                    self.bootstrap_waiters.push(tx);
                }
            }
            Cmd::Stats(tx) => {
                let _ = tx.send(self.stats());
            }
            Cmd::Save(tx) => {
                let r = match &self.cfg.state_file {
                    Some(p) => self.save_to(p),
                    None => Ok(()),
                };
                let _ = tx.send(r);
            }
            Cmd::Shutdown(_) => {}
        }
    }

    fn stats(&self) -> DhtStats {
        let len = |v6| self.table(v6).map_or(0, Table::len);
        DhtStats {
            table_size: len(false) + len(true),
            table_v4: len(false),
            table_v6: len(true),
            peers_stored: self.store.len(),
            ..self.stats
        }
    }

    /// Starts a lookup in every bound family (`only` None) or in one (`only` = Some(v6):
    /// bucket refreshes, which concern one table).
    #[allow(clippy::too_many_arguments)]
    fn start_lookup(
        &mut self,
        target: Id20,
        kind: LookupKind,
        waiter: Waiter,
        announce: Option<(Option<u16>, bool)>,
        bootstrap: bool,
        only: Option<bool>,
        now: Instant,
    ) {
        if self.lookups.len() >= self.cfg.max_lookups {
            // Bounded: refuse rather than grow without limit; dropping the waiter closes
            // the caller's channels, so it sees an empty result.
            drop(waiter);
            return;
        }
        let k = self.cfg.lookup.k;
        let mut parts = [None, None];
        for v6 in self.families() {
            if only.is_some_and(|o| o != v6) {
                continue;
            }
            let Some(table) = self.table(v6) else {
                continue;
            };
            let mut known: Vec<NodeInfo> = table
                .closest(&target, k * 2, now)
                .into_iter()
                .map(|e| NodeInfo {
                    id: e.id,
                    addr: e.addr,
                })
                .collect();
            known.extend(
                self.saved_nodes
                    .iter()
                    .filter(|n| n.addr.is_ipv6() == v6)
                    .copied(),
            );
            // Bootstrap routers are asked too while our table is thin, and when we know
            // nobody in the target's bucket (no known node shares more prefix bits with the
            // target than we do). Without the latter, a group of nodes whose far buckets
            // happen to be empty (all 5,000 nodes of a simulation joining at once) answer
            // every query about the other half of the id space with each other, forever: a
            // lookup started there ends in that group, and so do its refreshes. Found by
            // tests/dht_sim.rs.
            let ours = target.distance(&self.id).leading_zeros();
            let blind = ours < 160
                && !known
                    .iter()
                    .any(|n| target.distance(&n.id).leading_zeros() > ours);
            let unknown: Vec<SocketAddr> = if table.len() < k || bootstrap || blind {
                self.cfg
                    .bootstrap
                    .iter()
                    .filter(|a| a.is_ipv6() == v6)
                    .copied()
                    .collect()
            } else {
                Vec::new()
            };
            parts[fi(v6)] = Some(Lookup::new(
                target,
                kind,
                self.cfg.lookup.clone(),
                known,
                unknown,
            ));
        }
        if parts.iter().all(Option::is_none) {
            return;
        }
        let id = self.next_lookup;
        self.next_lookup += 1;
        self.lookups.insert(
            id,
            RunningLookup {
                target,
                kind,
                parts,
                waiter,
                announce,
                bootstrap,
                started: now,
                announcing: None,
                dirty: true,
            },
        );
    }

    fn bootstrap(&mut self, now: Instant) {
        self.last_bootstrap = Some(now);
        self.start_lookup(
            self.id,
            LookupKind::FindNode,
            Waiter::Internal,
            None,
            true,
            None,
            now,
        );
    }

    fn alloc_tid(&mut self) -> Option<u16> {
        if self.txns.len() >= self.cfg.max_transactions {
            return None;
        }
        loop {
            let t = self.next_tid;
            self.next_tid = self.next_tid.wrapping_add(1);
            if !self.txns.contains_key(&t) {
                return Some(t);
            }
        }
    }

    fn send(&mut self, msg: &Message, to: SocketAddr) {
        self.outbox.push((msg.encode(), to));
    }

    fn send_query(
        &mut self,
        to: SocketAddr,
        expect: Option<NodeId>,
        kind: QueryKind,
        want: Want,
        purpose: Purpose,
        now: Instant,
    ) {
        let Some(tid) = self.alloc_tid() else { return };
        self.txns.insert(
            tid,
            Txn {
                addr: to,
                expect,
                sent: now,
                purpose,
            },
        );
        let msg = Message {
            tid: tid.to_be_bytes().to_vec(),
            version: Some(VERSION.to_vec()),
            read_only: self.cfg.read_only,
            ip: None,
            body: Body::Query(Query {
                id: self.id,
                kind,
                want,
            }),
        };
        self.stats.queries_sent += 1;
        self.send(&msg, to);
    }

    /// Housekeeping and lookup progress; called after every event.
    fn tick(&mut self, now: Instant) {
        // Transactions that timed out.
        let timeout = self.cfg.lookup.timeout;
        let expired: Vec<u16> = self
            .txns
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(t.sent) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        for tid in expired {
            if let Some(t) = self.txns.remove(&tid) {
                self.stats.timeouts += 1;
                if let Some(id) = t.expect {
                    if let Some(table) = self.table_mut(t.addr.is_ipv6()) {
                        table.failed(&id, now);
                    }
                }
                self.txn_failed(t.purpose, t.addr);
            }
        }
        if now >= self.next_maintenance {
            self.next_maintenance = now + MAINTENANCE_EVERY;
            self.maintenance(now);
        }
        self.drive_lookups(now);
    }

    fn maintenance(&mut self, now: Instant) {
        self.tokens.maybe_rotate(now, &mut self.rng);
        self.store.expire(now);
        let any_empty = self.tables().any(Table::is_empty);
        let all_empty = self.tables().all(Table::is_empty);
        let need_bootstrap = match self.last_bootstrap {
            None => true,
            Some(t) => {
                any_empty
                    && now.saturating_duration_since(t) >= self.rebootstrap_wait
                    && !self.lookups.values().any(|l| l.bootstrap)
            }
        };
        if need_bootstrap
            && (!self.cfg.bootstrap.is_empty() || !self.saved_nodes.is_empty() || !all_empty)
        {
            self.bootstrap(now);
            if self.last_bootstrap.is_some() && !all_empty {
                // One family works and the other stays empty (no IPv6 nodes out there?):
                // try again, but less and less often.
                self.rebootstrap_wait = (self.rebootstrap_wait * 2).min(REBOOTSTRAP_MAX);
            }
        } else if need_bootstrap && !self.bootstrapped {
            // Nothing to bootstrap from: we are the first node (e.g. a private swarm's root).
            self.last_bootstrap = Some(now);
            self.finish_bootstrap(now);
        }
        if !any_empty {
            self.rebootstrap_wait = REBOOTSTRAP_EVERY;
        }
        if self.second_pass_at.is_some_and(|t| now >= t) {
            self.second_pass_at = None;
            self.start_lookup(
                self.id,
                LookupKind::FindNode,
                Waiter::Internal,
                None,
                false,
                None,
                now,
            );
            for v6 in self.families() {
                let targets = match self.tables[fi(v6)].as_mut() {
                    Some(t) => t.all_refresh_targets(now, &mut self.rng),
                    None => Vec::new(),
                };
                for t in targets {
                    self.start_lookup(
                        t,
                        LookupKind::FindNode,
                        Waiter::Internal,
                        None,
                        false,
                        Some(v6),
                        now,
                    );
                }
            }
        }
        for v6 in self.families() {
            // Bucket refresh (BEP 5), per family: a stale IPv6 bucket is refreshed with
            // IPv6 queries.
            let targets = match self.tables[fi(v6)].as_mut() {
                Some(t) if self.bootstrapped => t.refresh_targets(now, &mut self.rng),
                _ => Vec::new(),
            };
            for t in targets {
                self.start_lookup(
                    t,
                    LookupKind::FindNode,
                    Waiter::Internal,
                    None,
                    false,
                    Some(v6),
                    now,
                );
            }
            let pings = match self.tables[fi(v6)].as_mut() {
                Some(t) => t.to_ping(now, 8),
                None => Vec::new(),
            };
            for (id, addr) in pings {
                self.send_query(
                    addr,
                    Some(id),
                    QueryKind::Ping,
                    Want::default(),
                    Purpose::Ping,
                    now,
                );
            }
        }
        if now >= self.next_save {
            self.next_save = now + SAVE_EVERY;
            self.save();
        }
    }

    fn finish_bootstrap(&mut self, now: Instant) {
        self.bootstrapped = true;
        // Nodes that joined after our self-lookup (e.g. a whole swarm starting at once) do
        // not know us and we do not know them, and a self-lookup leaves the far buckets
        // thin. A little later: one more self-lookup (finds our true neighbours, puts us in
        // their tables) and one lookup per bucket (fills the far buckets).
        if !self.cfg.bootstrap.is_empty() || !self.saved_nodes.is_empty() {
            self.second_pass_at = Some(now + SECOND_PASS_AFTER);
        }
        // Saved nodes have served their purpose once we have a table.
        if self.tables().any(|t| !t.is_empty()) {
            self.saved_nodes.clear();
        }
        for w in self.bootstrap_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    /// BEP 32 `want` for a query of a lookup running in both families: both while the
    /// other family's table is thin or we bootstrap (its answers then feed the other
    /// family's lookup), else nothing (the default: the queried family's nodes).
    fn want_for(&self, v6: bool, both: bool, bootstrap: bool) -> Want {
        let thin = self.table(!v6).is_none_or(|t| t.len() < WANT_BOTH_BELOW);
        if both && (bootstrap || thin) {
            Want { n4: true, n6: true }
        } else {
            Want::default()
        }
    }

    fn drive_lookups(&mut self, now: Instant) {
        let ids: Vec<u64> = self.lookups.keys().copied().collect();
        for lid in ids {
            let Some(rl) = self.lookups.get_mut(&lid) else {
                continue;
            };
            if !rl.dirty && rl.next_deadline().is_none_or(|d| d > now) {
                continue;
            }
            rl.dirty = false;
            if let Some((outstanding, _)) = rl.announcing {
                // Finished once every announce was answered or timed out, so that callers
                // who see the end of the lookup can rely on the peer being stored.
                if outstanding == 0 {
                    if let Some(rl) = self.lookups.remove(&lid) {
                        self.finish_lookup(rl, now);
                    }
                }
                continue;
            }
            let (target, kind, both, bootstrap) = (rl.target, rl.kind, rl.both(), rl.bootstrap);
            let mut queries = Vec::new();
            for part in rl.parts.iter_mut().flatten() {
                queries.extend(part.next_queries(now));
            }
            for (expect, addr) in queries {
                let q = match kind {
                    LookupKind::FindNode => QueryKind::FindNode { target },
                    LookupKind::GetPeers => QueryKind::GetPeers {
                        info_hash: target,
                        noseed: false,
                        scrape: false,
                    },
                };
                let want = self.want_for(addr.is_ipv6(), both, bootstrap);
                self.send_query(addr, expect, q, want, Purpose::Lookup(lid), now);
            }
            let done = self.lookups.get(&lid).is_some_and(RunningLookup::is_done);
            let wants_announce = self
                .lookups
                .get(&lid)
                .is_some_and(|rl| rl.announce.is_some());
            if done && wants_announce && self.start_announce(lid, now) > 0 {
                continue;
            }
            if done {
                if let Some(rl) = self.lookups.remove(&lid) {
                    self.finish_lookup(rl, now);
                }
            }
        }
    }

    /// Sends `announce_peer` to the k closest nodes that gave a token, in each family the
    /// lookup ran in (BEP 32: an announce over IPv6 announces our IPv6 address); returns
    /// how many.
    fn start_announce(&mut self, lid: u64, now: Instant) -> usize {
        let Some(rl) = self.lookups.get(&lid) else {
            return 0;
        };
        let mut sent = 0;
        let target = rl.target;
        let targets: Vec<(NodeInfo, Vec<u8>)> =
            rl.parts().flat_map(Lookup::announce_targets).collect();
        if let Some((port, seed)) = rl.announce {
            for (n, token) in targets {
                let own_port =
                    self.locals[fi(n.addr.is_ipv6())].map_or(self.local.port(), |a| a.port());
                let kind = QueryKind::AnnouncePeer {
                    info_hash: target,
                    port: port.unwrap_or(own_port),
                    implied_port: port.is_none(),
                    token,
                    seed,
                };
                self.send_query(
                    n.addr,
                    Some(n.id),
                    kind,
                    Want::default(),
                    Purpose::Announce(lid),
                    now,
                );
                sent += 1;
            }
        }
        if let Some(rl) = self.lookups.get_mut(&lid) {
            rl.announcing = Some((sent, 0));
        }
        sent
    }

    fn finish_lookup(&mut self, rl: RunningLookup, now: Instant) {
        let mut s = super::lookup::LookupStats::default();
        let mut visited = 0;
        let mut peers = BTreeSet::new();
        for part in rl.parts() {
            let ps = part.finish_stats();
            s.queries_sent += ps.queries_sent;
            s.responses += ps.responses;
            s.timeouts += ps.timeouts;
            s.rounds = s.rounds.max(ps.rounds);
            visited += part.nodes_visited();
            peers.extend(part.peers().iter().copied());
        }
        self.stats.nodes_visited += visited as u64;
        self.stats.lookups_done += 1;
        let announced_to = rl.announcing.map_or(0, |(_, acked)| acked);
        let summary = LookupSummary {
            peers: peers.len(),
            queries_sent: s.queries_sent,
            responses: s.responses,
            timeouts: s.timeouts,
            nodes_visited: visited,
            rounds: s.rounds,
            announced_to,
            duration: now.saturating_duration_since(rl.started),
        };
        let closest: Vec<NodeInfo> = match rl.waiter {
            // IPv4 nodes first, then IPv6 (each closest first).
            Waiter::Nodes(_) => rl.parts().flat_map(Lookup::closest_responded).collect(),
            _ => Vec::new(),
        };
        match rl.waiter {
            Waiter::Peers { done, .. } => {
                if let Some(d) = done {
                    let _ = d.send(summary);
                }
            }
            Waiter::Nodes(tx) => {
                if let Some(tx) = tx {
                    let _ = tx.send(closest);
                }
            }
            Waiter::Internal => {}
        }
        if rl.bootstrap && !self.bootstrapped {
            self.finish_bootstrap(now);
        }
    }

    /// Token bucket per IP: true if this query may be answered.
    fn rate_ok(&mut self, ip: IpAddr, now: Instant) -> bool {
        let rate = f64::from(self.cfg.queries_per_sec_per_ip.max(1));
        let burst = rate * 2.0;
        let b = self.rate.get_or_insert_mut(ip, || RateBucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// One incoming datagram.
    fn packet(&mut self, buf: &[u8], from: SocketAddr, now: Instant) {
        // Only families we run (a datagram of another family cannot be answered right).
        if self.table(from.is_ipv6()).is_none() || from.port() == 0 {
            return;
        }
        let msg = match Message::decode(buf) {
            Ok(m) => m,
            Err(e) => {
                if e.is_query && !self.cfg.read_only {
                    if let Some(tid) = e.tid.filter(|t| t.len() <= 16) {
                        if self.rate_ok(from.ip(), now) {
                            let reply = Message::error(tid, error_code::PROTOCOL, e.reason);
                            self.send(&reply, from);
                        }
                    }
                }
                return;
            }
        };
        match msg.body {
            Body::Query(q) => self.on_query(msg.tid, msg.read_only, q, from, buf.len(), now),
            Body::Response(r) => self.on_response(&msg.tid, msg.ip, r, from, now),
            Body::Error { .. } => self.on_error(&msg.tid, from),
        }
    }

    fn take_txn(&mut self, tid: &[u8], from: SocketAddr) -> Option<Txn> {
        let t = u16::from_be_bytes(<[u8; 2]>::try_from(tid).ok()?);
        // Only the address we asked may answer (no spoofed answers from elsewhere).
        if self.txns.get(&t)?.addr != from {
            return None;
        }
        self.txns.remove(&t)
    }

    fn on_error(&mut self, tid: &[u8], from: SocketAddr) {
        let Some(t) = self.take_txn(tid, from) else {
            return;
        };
        self.txn_failed(t.purpose, from);
    }

    /// A query got an error reply or timed out.
    fn txn_failed(&mut self, purpose: Purpose, addr: SocketAddr) {
        match purpose {
            Purpose::Lookup(l) => {
                if let Some(rl) = self.lookups.get_mut(&l) {
                    if let Some(part) = rl.part_mut(addr.is_ipv6()) {
                        part.on_failure(addr);
                    }
                    rl.dirty = true;
                }
            }
            Purpose::Announce(l) => {
                if let Some(rl) = self.lookups.get_mut(&l) {
                    rl.dirty = true;
                }
                if let Some((outstanding, _)) = self
                    .lookups
                    .get_mut(&l)
                    .and_then(|rl| rl.announcing.as_mut())
                {
                    *outstanding = outstanding.saturating_sub(1);
                }
            }
            Purpose::Ping => {}
        }
    }

    fn on_response(
        &mut self,
        tid: &[u8],
        ip: Option<SocketAddr>,
        r: Response,
        from: SocketAddr,
        now: Instant,
    ) {
        let Some(t) = self.take_txn(tid, from) else {
            return;
        };
        self.stats.responses += 1;
        if let Some(ip) = ip {
            self.vote_external(ip, from.ip(), now);
        }
        if r.id != self.id {
            if let Some(table) = self.table_mut(from.is_ipv6()) {
                table.heard_response(r.id, from, now);
            }
        }
        if let Purpose::Announce(l) = t.purpose {
            if let Some(rl) = self.lookups.get_mut(&l) {
                rl.dirty = true;
            }
            if let Some((outstanding, acked)) = self
                .lookups
                .get_mut(&l)
                .and_then(|rl| rl.announcing.as_mut())
            {
                *outstanding = outstanding.saturating_sub(1);
                *acked += 1;
            }
            return;
        }
        let Purpose::Lookup(lid) = t.purpose else {
            return;
        };
        let from_v6 = from.is_ipv6();
        // BEP 32: `nodes` feed the IPv4 lookup, `nodes6` the IPv6 one, whichever family
        // the answer came in on; a family we do not run (or whose lookup this is not part
        // of) ignores them. Nodes named by the other family only enter its table once
        // they answer a query of their own family.
        let usable = |v6: bool, list: &[NodeInfo]| -> Vec<NodeInfo> {
            let Some(table) = self.table(v6) else {
                return Vec::new();
            };
            let own = self.locals[fi(v6)];
            list.iter()
                .filter(|n| n.id != self.id && Some(n.addr) != own && table.addr_ok(&n.addr))
                .copied()
                .collect()
        };
        let (nodes, nodes6) = (usable(false, &r.nodes), usable(true, &r.nodes6));
        let (same, other) = if from_v6 {
            (nodes6, nodes)
        } else {
            (nodes, nodes6)
        };
        let values: Vec<SocketAddr> = r
            .values
            .iter()
            .filter(|a| a.port() != 0 && !a.ip().is_unspecified())
            .copied()
            .collect();
        let Some(rl) = self.lookups.get_mut(&lid) else {
            return;
        };
        rl.dirty = true;
        let Some(part) = rl.part_mut(from_v6) else {
            return;
        };
        let new_peers = part.on_response(from, r.id, &same, r.token, &values, now);
        if !other.is_empty() {
            if let Some(o) = rl.part_mut(!from_v6) {
                o.add_nodes(&other, 1);
            }
        }
        if let Waiter::Peers { peers, .. } = &mut rl.waiter {
            if let Some(tx) = peers {
                for p in new_peers {
                    match tx.try_send(p) {
                        Ok(()) => {}
                        // Bounded: a slow consumer loses peers rather than growing memory.
                        Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            *peers = None;
                            break;
                        }
                    }
                }
            }
        }
    }

    /// BEP 42: learn our external IP from the `ip` field of responses; once enough distinct
    /// responders agree and our id does not match that IP, derive a conforming id (once).
    fn vote_external(&mut self, reported: SocketAddr, voter: IpAddr, now: Instant) {
        let ip = reported.ip();
        if ip.is_unspecified() || ip.is_ipv6() != self.v6() {
            return;
        }
        if !self.ip_votes.contains_key(&ip) && self.ip_votes.len() >= MAX_IP_CANDIDATES {
            return;
        }
        let voters = self.ip_votes.entry(ip).or_default();
        if voters.len() < EXTERNAL_IP_VOTES * 4 {
            voters.insert(voter);
        }
        if voters.len() < EXTERNAL_IP_VOTES {
            return;
        }
        self.stats.external_addr = Some(reported);
        if self.id_fixed || is_local(ip) || bep42_valid(&self.id, ip) {
            return;
        }
        self.id_fixed = true;
        let new_id = bep42_node_id(ip, &mut self.rng);
        tracing::info!("external IP {ip}: node id {} -> {new_id} (BEP 42)", self.id);
        self.change_id(new_id, now);
    }

    fn change_id(&mut self, new_id: NodeId, now: Instant) {
        // One id for both families (BEP 32 recommends it): both tables are rebuilt.
        for slot in self.tables.iter_mut() {
            let Some(old) = slot.take() else { continue };
            let mut fresh = Table::new(new_id, old.config().clone(), now);
            for e in old.good_nodes(now) {
                fresh.heard_response(e.id, e.addr, now);
            }
            *slot = Some(fresh);
        }
        self.id = new_id;
        *self.shared_id.lock().unwrap_or_else(|e| e.into_inner()) = new_id;
    }

    /// The k closest nodes of one family's table (empty when we do not run it).
    fn closest_nodes(&self, target: &Id20, v6: bool, now: Instant) -> Vec<NodeInfo> {
        let Some(table) = self.table(v6) else {
            return Vec::new();
        };
        table
            .closest(target, self.cfg.lookup.k, now)
            .into_iter()
            .map(|e| NodeInfo {
                id: e.id,
                addr: e.addr,
            })
            .collect()
    }

    /// Fills `nodes`/`nodes6` as the querier wants them (BEP 32).
    fn put_nodes(&self, resp: &mut Response, target: &Id20, want: Want, now: Instant) {
        if want.n4 {
            resp.nodes = self.closest_nodes(target, false, now);
        }
        if want.n6 {
            resp.nodes6 = self.closest_nodes(target, true, now);
        }
    }

    /// Sends an answer, trimmed until it is at most [`MAX_REPLY`] bytes and smaller than
    /// [`MAX_AMPLIFICATION`] times the query (`qlen` bytes): the other family's nodes go
    /// first (a BEP 32 bonus), then values, the BEP 33 filters, samples, and last the
    /// asker's own family's nodes.
    fn send_reply(&mut self, mut msg: Message, to: SocketAddr, qlen: usize) {
        let limit = MAX_REPLY.min((qlen * MAX_AMPLIFICATION).saturating_sub(1));
        loop {
            let bytes = msg.encode();
            if bytes.len() <= limit {
                self.outbox.push((bytes, to));
                return;
            }
            let excess = bytes.len() - limit;
            let trimmed = match &mut msg.body {
                Body::Response(r) => trim_response(r, excess, to.is_ipv6()),
                _ => false,
            };
            if !trimmed {
                // Nothing left to cut (an absurd transaction id?): silence, not amplification.
                return;
            }
        }
    }

    fn on_query(
        &mut self,
        tid: Vec<u8>,
        ro: bool,
        q: Query,
        from: SocketAddr,
        qlen: usize,
        now: Instant,
    ) {
        self.stats.queries_received += 1;
        if !self.rate_ok(from.ip(), now) {
            self.stats.queries_dropped += 1;
            return;
        }
        // BEP 43: read-only nodes are not added to tables; and we, if read-only, stay silent.
        if !ro && q.id != self.id {
            if let Some(table) = self.table_mut(from.is_ipv6()) {
                table.heard_query(q.id, from, now);
            }
        }
        if self.cfg.read_only {
            return;
        }
        let mut resp = Response {
            id: self.id,
            ..Default::default()
        };
        let v6 = from.is_ipv6();
        // BEP 32: `want` decides which families' nodes; without it (or with only flags we
        // do not know), the family the query came in on.
        let want = if q.want.n4 || q.want.n6 {
            q.want
        } else {
            Want { n4: !v6, n6: v6 }
        };
        match q.kind {
            QueryKind::Ping => {}
            QueryKind::FindNode { target } => self.put_nodes(&mut resp, &target, want, now),
            QueryKind::GetPeers {
                info_hash,
                noseed,
                scrape,
            } => {
                resp.token = Some(self.tokens.token(from.ip()));
                let mut max = MAX_VALUES;
                if scrape {
                    if let Some((seeds, peers)) = self.store.scrape(&info_hash, now) {
                        resp.bf_seeds = Some(Box::new(seeds.0));
                        resp.bf_peers = Some(Box::new(peers.0));
                        // The filters take 512 bytes: send fewer values (BEP 33).
                        max = 8;
                    }
                }
                // Peers of the querying family only (BEP 32: `want` governs nodes only).
                resp.values = self
                    .store
                    .get(&info_hash, v6, max, noseed, now, &mut self.rng);
                self.put_nodes(&mut resp, &info_hash, want, now);
            }
            QueryKind::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
                seed,
            } => {
                if !self.tokens.verify(&token, from.ip()) {
                    self.send(
                        &Message::error(tid, error_code::PROTOCOL, "bad token"),
                        from,
                    );
                    return;
                }
                let port = if implied_port { from.port() } else { port };
                if port == 0 {
                    self.send(&Message::error(tid, error_code::PROTOCOL, "bad port"), from);
                    return;
                }
                self.store
                    .announce(info_hash, SocketAddr::new(from.ip(), port), seed, now);
            }
            QueryKind::SampleInfohashes { target } => {
                let (samples, num) = self.store.samples(MAX_SAMPLES, &mut self.rng);
                resp.samples = Some(samples);
                resp.num = Some(num as i64);
                // Samples are drawn afresh for each request; ask indexers to wait a minute.
                resp.interval = Some(60);
                self.put_nodes(&mut resp, &target, want, now);
            }
            QueryKind::Unknown {
                target: Some(target),
                ..
            } => self.put_nodes(&mut resp, &target, want, now),
            QueryKind::Unknown { target: None, .. } => {
                self.send(
                    &Message::error(tid, error_code::METHOD_UNKNOWN, "method unknown"),
                    from,
                );
                return;
            }
        }
        let msg = Message {
            tid,
            version: Some(VERSION.to_vec()),
            read_only: false,
            ip: Some(from),
            body: Body::Response(resp),
        };
        self.send_reply(msg, from, qlen);
    }
}

/// Removes about `excess` bytes from an answer, least useful part first; false when
/// nothing is left to remove. `v6`: the family of the asker.
fn trim_response(r: &mut Response, excess: usize, v6: bool) -> bool {
    fn cut<T>(v: &mut Vec<T>, excess: usize, each: usize) {
        let n = excess.div_ceil(each).clamp(1, v.len());
        v.truncate(v.len() - n);
    }
    let (own, other) = if v6 {
        (&mut r.nodes6, &mut r.nodes)
    } else {
        (&mut r.nodes, &mut r.nodes6)
    };
    if !other.is_empty() {
        other.clear();
        return true;
    }
    if !r.values.is_empty() {
        // "6:" + 6 bytes, or "18:" + 18.
        cut(&mut r.values, excess, if v6 { 21 } else { 8 });
        return true;
    }
    if r.bf_seeds.is_some() || r.bf_peers.is_some() {
        r.bf_seeds = None;
        r.bf_peers = None;
        return true;
    }
    if let Some(s) = r.samples.as_mut().filter(|s| !s.is_empty()) {
        cut(s, excess, 20);
        return true;
    }
    if !own.is_empty() {
        cut(own, excess, if v6 { 38 } else { 26 });
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn state(addr: &str, seed: u64) -> NodeState {
        let cfg = DhtConfig {
            seed: Some(seed),
            ..Default::default()
        };
        NodeState::new(cfg, addr.parse().unwrap(), None, Instant::now())
    }

    fn query(id: NodeId, kind: QueryKind) -> Vec<u8> {
        Message {
            tid: b"qq".to_vec(),
            version: None,
            read_only: false,
            ip: None,
            body: Body::Query(Query {
                id,
                kind,
                want: Want::default(),
            }),
        }
        .encode()
    }

    fn reply(st: &mut NodeState) -> Message {
        let (b, _) = st.outbox.pop().expect("a reply");
        Message::decode(&b).unwrap()
    }

    fn query_want(id: NodeId, kind: QueryKind, want: Want) -> Vec<u8> {
        Message {
            tid: b"qq".to_vec(),
            version: None,
            read_only: false,
            ip: None,
            body: Body::Query(Query { id, kind, want }),
        }
        .encode()
    }

    fn dual(v4: &str, v6: &str, cfg: DhtConfig) -> NodeState {
        let locals = [v4.parse().unwrap(), v6.parse().unwrap()];
        NodeState::new_multi(cfg, &locals, None, Instant::now())
    }

    fn response(m: Message) -> Response {
        match m.body {
            Body::Response(r) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    const BOTH: Want = Want { n4: true, n6: true };

    /// BEP 32: one table per family, filled only by its own family; `want` decides which
    /// nodes an answer carries (default: the family the query came in on); `values` are
    /// always peers of the asker's family; a single-stack node has no `nodes6` to give.
    #[test]
    fn dual_stack_tables_and_want_handling() {
        let mut st = dual(
            "127.0.0.1:6881",
            "[::1]:6881",
            DhtConfig {
                seed: Some(7),
                ..Default::default()
            },
        );
        let now = Instant::now();
        let a4 = |i: u8| SocketAddr::from(([127, 0, 0, 10 + i], 1000));
        let a6 = |i: u8| -> SocketAddr { format!("[fd00::{}]:1000", 10 + i).parse().unwrap() };
        for i in 0..5u8 {
            st.packet(&query(Id20([i + 1; 20]), QueryKind::Ping), a4(i), now);
            st.packet(&query(Id20([i + 101; 20]), QueryKind::Ping), a6(i), now);
        }
        st.outbox.clear();
        let s = st.stats();
        assert_eq!((s.table_v4, s.table_v6, s.table_size), (5, 5, 10));
        assert!(st.table(false).unwrap().entries().all(|e| e.addr.is_ipv4()));
        assert!(st.table(true).unwrap().entries().all(|e| e.addr.is_ipv6()));
        let fnq = |want| {
            query_want(
                Id20([1; 20]),
                QueryKind::FindNode {
                    target: Id20([9; 20]),
                },
                want,
            )
        };
        // Over IPv4, no want: IPv4 nodes only.
        st.packet(&fnq(Want::default()), a4(0), now);
        let r = response(reply(&mut st));
        assert_eq!((r.nodes.len(), r.nodes6.len()), (5, 0));
        // Over IPv4, want n6: IPv6 nodes only; want both: both.
        st.packet(
            &fnq(Want {
                n4: false,
                n6: true,
            }),
            a4(0),
            now,
        );
        let r = response(reply(&mut st));
        assert_eq!((r.nodes.len(), r.nodes6.len()), (0, 5));
        assert!(r.nodes6.iter().all(|n| n.addr.is_ipv6()));
        st.packet(&fnq(BOTH), a4(0), now);
        let r = response(reply(&mut st));
        assert_eq!((r.nodes.len(), r.nodes6.len()), (5, 5));
        // Over IPv6, no want: IPv6 nodes.
        st.packet(&fnq(Want::default()), a6(0), now);
        let r = response(reply(&mut st));
        assert_eq!((r.nodes.len(), r.nodes6.len()), (0, 5));
        // announce_peer stores by family; get_peers values are the asker's family only.
        let ih = Id20([0x33; 20]);
        let gp = |want| {
            query_want(
                Id20([1; 20]),
                QueryKind::GetPeers {
                    info_hash: ih,
                    noseed: false,
                    scrape: false,
                },
                want,
            )
        };
        for from in [a4(1), a6(1)] {
            st.packet(&gp(Want::default()), from, now);
            let token = response(reply(&mut st)).token.unwrap();
            let ann = query(
                Id20([2; 20]),
                QueryKind::AnnouncePeer {
                    info_hash: ih,
                    port: 7000,
                    implied_port: false,
                    token,
                    seed: false,
                },
            );
            st.packet(&ann, from, now);
            assert!(matches!(reply(&mut st).body, Body::Response(_)));
        }
        st.packet(&gp(BOTH), a4(2), now);
        let r = response(reply(&mut st));
        assert_eq!(r.values, vec![SocketAddr::new(a4(1).ip(), 7000)]);
        assert_eq!((r.nodes.len(), r.nodes6.len()), (5, 5));
        st.packet(&gp(BOTH), a6(2), now);
        let r = response(reply(&mut st));
        assert_eq!(r.values, vec![SocketAddr::new(a6(1).ip(), 7000)]);

        // A single-stack IPv4 node: no IPv6 table, no `nodes6` even when asked, and IPv6
        // datagrams are not its business.
        let mut v4only = state("127.0.0.1:6881", 8);
        for i in 0..3u8 {
            v4only.packet(&query(Id20([i + 1; 20]), QueryKind::Ping), a4(i), now);
        }
        v4only.outbox.clear();
        v4only.packet(&fnq(BOTH), a4(0), now);
        let r = response(reply(&mut v4only));
        assert_eq!((r.nodes.len(), r.nodes6.len()), (3, 0));
        v4only.packet(&fnq(BOTH), a6(0), now);
        assert!(v4only.outbox.is_empty());
    }

    /// A dual-stack node bootstrapping from an IPv4 router asks it for both families
    /// (`want`); the IPv6 nodes in the answer are queried over IPv6 and enter only the IPv6
    /// table once they answer.
    #[test]
    fn dual_stack_lookup_fills_the_ipv6_table_through_ipv4_answers() {
        let router: SocketAddr = "127.0.0.9:1".parse().unwrap();
        let mut st = dual(
            "127.0.0.1:6881",
            "[::1]:6881",
            DhtConfig {
                seed: Some(11),
                bootstrap: vec![router],
                ..Default::default()
            },
        );
        let now = Instant::now();
        st.tick(now);
        let sent: Vec<(Vec<u8>, SocketAddr)> = st.outbox.drain(..).collect();
        assert_eq!(sent.len(), 1, "one bootstrap query: {sent:?}");
        let q = Message::decode(&sent[0].0).unwrap();
        let Body::Query(query) = &q.body else {
            panic!()
        };
        assert_eq!(query.want, BOTH, "bootstrap asks for both families");
        let v6node = NodeInfo {
            id: Id20([0x77; 20]),
            addr: "[fd00::77]:6881".parse().unwrap(),
        };
        let resp = Message {
            tid: q.tid.clone(),
            version: None,
            read_only: false,
            ip: None,
            body: Body::Response(Response {
                id: Id20([0x55; 20]),
                nodes6: vec![v6node],
                ..Default::default()
            }),
        };
        st.packet(&resp.encode(), router, now);
        st.tick(now);
        let out: Vec<(Vec<u8>, SocketAddr)> = st.outbox.drain(..).collect();
        let (b, _) = out
            .iter()
            .find(|(_, to)| *to == v6node.addr)
            .expect("the IPv6 node named over IPv4 is queried over IPv6");
        let s = st.stats();
        assert_eq!(
            (s.table_v4, s.table_v6),
            (1, 0),
            "not in a table before it answers"
        );
        let q6 = Message::decode(b).unwrap();
        let resp6 = Message {
            tid: q6.tid,
            version: None,
            read_only: false,
            ip: None,
            body: Body::Response(Response {
                id: v6node.id,
                ..Default::default()
            }),
        };
        st.packet(&resp6.encode(), v6node.addr, now);
        let s = st.stats();
        assert_eq!((s.table_v4, s.table_v6), (1, 1));
        assert_eq!(
            st.table(true).unwrap().get(&v6node.id).unwrap().addr,
            v6node.addr
        );
    }

    /// Saved state keeps both families; an old single-family file still loads.
    #[test]
    fn dual_stack_state_saves_both_families() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dht.json");
        // A file as written before dual stack (IPv4 nodes only) loads unchanged.
        std::fs::write(
            &p,
            r#"{"id":"0909090909090909090909090909090909090909","nodes":[["0101010101010101010101010101010101010101","1.2.3.4:5"]]}"#,
        )
        .unwrap();
        let (id, nodes) = load_state(&p).unwrap();
        assert_eq!(id, Id20([9; 20]));
        assert_eq!(nodes.len(), 1);
        let mut st = dual(
            "127.0.0.1:6881",
            "[::1]:6881",
            DhtConfig {
                seed: Some(12),
                state_file: Some(p.clone()),
                ..Default::default()
            },
        );
        let now = Instant::now();
        st.table_mut(false).unwrap().heard_response(
            Id20([1; 20]),
            "127.0.0.2:1".parse().unwrap(),
            now,
        );
        st.table_mut(true).unwrap().heard_response(
            Id20([2; 20]),
            "[fd00::2]:1".parse().unwrap(),
            now,
        );
        st.save();
        let (_, nodes) = load_state(&p).unwrap();
        let fams: Vec<bool> = nodes.iter().map(|n| n.addr.is_ipv6()).collect();
        assert_eq!(fams, vec![false, true]);
        // Reloaded into a dual node, each saved node seeds its own family's lookup.
        let cfg = DhtConfig {
            seed: Some(13),
            ..Default::default()
        };
        let locals = [
            "127.0.0.1:6881".parse().unwrap(),
            "[::1]:6881".parse().unwrap(),
        ];
        let mut st = NodeState::new_multi(cfg, &locals, load_state(&p), now);
        st.tick(now);
        let to: BTreeSet<SocketAddr> = st.outbox.iter().map(|(_, a)| *a).collect();
        assert!(to.contains(&"127.0.0.2:1".parse().unwrap()));
        assert!(to.contains(&"[fd00::2]:1".parse().unwrap()));
    }

    /// The flood rule (answers < 1024 bytes and < 9x the query) holds for a dual-stack node
    /// asked for both families' nodes, with full tables, BEP 33 filters and many stored
    /// IPv6 peers (18-byte values): answers are trimmed, never amplified.
    #[test]
    fn dual_stack_answers_with_want_both_stay_bounded() {
        let mut st = dual(
            "1.2.3.4:6881",
            "[2001:db8::1]:6881",
            DhtConfig {
                seed: Some(21),
                ..Default::default()
            },
        );
        let mut rng = StdRng::seed_from_u64(5);
        let now = Instant::now();
        for _ in 0..400 {
            let ip4 = std::net::Ipv4Addr::from(rng.random::<u32>() | 0x0100_0000);
            st.table_mut(false).unwrap().heard_response(
                Id20(rng.random()),
                SocketAddr::from((ip4, 1)),
                now,
            );
            let ip6 = std::net::Ipv6Addr::from(rng.random::<u128>() | (0x2001u128 << 112));
            st.table_mut(true).unwrap().heard_response(
                Id20(rng.random()),
                SocketAddr::from((ip6, 1)),
                now,
            );
        }
        assert!(st.stats().table_v4 >= 8 && st.stats().table_v6 >= 8);
        let ih = Id20([0x44; 20]);
        for i in 0..100u16 {
            let ip6 = std::net::Ipv6Addr::new(0x2001, 0xdb9, 0, 0, 0, 0, 0, i + 1);
            st.store
                .announce(ih, SocketAddr::from((ip6, 1000 + i)), i % 2 == 0, now);
            let ip4 = std::net::Ipv4Addr::new(9, 9, (i >> 8) as u8, i as u8);
            st.store
                .announce(ih, SocketAddr::from((ip4, 1000 + i)), i % 2 == 0, now);
        }
        let (mut max_len, mut max_ratio) = (0usize, 0.0f64);
        let mut values6 = 0;
        let mut t = now;
        for (k, from) in ["5.6.7.8:1", "[2001:db8::99]:1"].iter().enumerate() {
            let from: SocketAddr = from.parse().unwrap();
            for scrape in [false, true] {
                for want in [
                    Want::default(),
                    Want {
                        n4: false,
                        n6: true,
                    },
                    BOTH,
                ] {
                    t += Duration::from_secs(1);
                    let kinds = [
                        QueryKind::GetPeers {
                            info_hash: ih,
                            noseed: false,
                            scrape,
                        },
                        QueryKind::FindNode { target: ih },
                        QueryKind::SampleInfohashes { target: ih },
                    ];
                    for kind in kinds {
                        let q = query_want(Id20([k as u8 + 1; 20]), kind.clone(), want);
                        st.packet(&q, from, t);
                        let (b, to) = st.outbox.pop().expect("an answer");
                        assert_eq!(to, from);
                        max_len = max_len.max(b.len());
                        max_ratio = max_ratio.max(b.len() as f64 / q.len() as f64);
                        let r = response(Message::decode(&b).unwrap());
                        assert!(r.values.iter().all(|v| v.is_ipv6() == from.is_ipv6()));
                        if from.is_ipv6() && !scrape && matches!(kind, QueryKind::GetPeers { .. }) {
                            values6 = values6.max(r.values.len());
                            assert!(!r.nodes6.is_empty(), "own family's nodes kept");
                        }
                    }
                }
            }
        }
        assert!(max_len <= MAX_REPLY, "largest answer {max_len} bytes");
        assert!(max_ratio < 9.0, "largest answer/query ratio {max_ratio:.1}");
        assert!(
            values6 >= 10,
            "trimmed, but still useful: {values6} IPv6 values"
        );
    }

    #[test]
    fn answers_malformed_query_with_203_and_unknown_with_204() {
        let mut st = state("127.0.0.1:6881", 1);
        let from: SocketAddr = "127.0.0.2:1000".parse().unwrap();
        let now = Instant::now();
        st.packet(b"d1:ad2:id3:abce1:q4:ping1:t2:xy1:y1:qe", from, now);
        let m = reply(&mut st);
        assert_eq!(m.tid, b"xy");
        assert!(matches!(m.body, Body::Error { code: 203, .. }));
        st.packet(
            &query(
                Id20([1; 20]),
                QueryKind::Unknown {
                    method: b"frob".to_vec(),
                    target: None,
                },
            ),
            from,
            now,
        );
        assert!(matches!(reply(&mut st).body, Body::Error { code: 204, .. }));
        // Garbage that is not a query: silence.
        st.packet(b"\xff\x00garbage", from, now);
        assert!(st.outbox.is_empty());
    }

    #[test]
    fn announce_needs_token_from_same_ip_and_implied_port_works() {
        let mut st = state("127.0.0.1:6881", 2);
        let a: SocketAddr = "127.0.0.2:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:1000".parse().unwrap();
        let now = Instant::now();
        let ih = Id20([7; 20]);
        st.packet(
            &query(
                Id20([1; 20]),
                QueryKind::GetPeers {
                    info_hash: ih,
                    noseed: false,
                    scrape: false,
                },
            ),
            a,
            now,
        );
        let Body::Response(r) = reply(&mut st).body else {
            panic!()
        };
        let token = r.token.unwrap();
        assert!(r.values.is_empty());
        // Token from another IP is refused.
        let ann = |token: Vec<u8>| {
            query(
                Id20([1; 20]),
                QueryKind::AnnouncePeer {
                    info_hash: ih,
                    port: 9,
                    implied_port: true,
                    token,
                    seed: false,
                },
            )
        };
        st.packet(&ann(token.clone()), b, now);
        assert!(matches!(reply(&mut st).body, Body::Error { code: 203, .. }));
        st.packet(&ann(token), a, now);
        assert!(matches!(reply(&mut st).body, Body::Response(_)));
        st.packet(
            &query(
                Id20([2; 20]),
                QueryKind::GetPeers {
                    info_hash: ih,
                    noseed: false,
                    scrape: true,
                },
            ),
            b,
            now,
        );
        let m = reply(&mut st);
        assert_eq!(m.ip, Some(b), "BEP 42 ip field");
        let Body::Response(r) = m.body else { panic!() };
        assert_eq!(r.values, vec![a], "implied port: the UDP source port");
        assert!(r.bf_peers.is_some() && r.bf_seeds.is_some());
        // BEP 51.
        st.packet(
            &query(Id20([2; 20]), QueryKind::SampleInfohashes { target: ih }),
            b,
            now,
        );
        let Body::Response(r) = reply(&mut st).body else {
            panic!()
        };
        assert_eq!(r.samples, Some(vec![ih]));
        assert_eq!(r.num, Some(1));
    }

    #[test]
    fn rate_limit_drops_floods() {
        let mut st = state("127.0.0.1:6881", 3);
        let a: SocketAddr = "127.0.0.2:1000".parse().unwrap();
        let now = Instant::now();
        for _ in 0..1000 {
            st.packet(&query(Id20([1; 20]), QueryKind::Ping), a, now);
        }
        assert_eq!(st.outbox.len(), 40, "burst of 2x the per-second rate");
        assert_eq!(st.stats.queries_dropped, 960);
        st.outbox.clear();
        st.packet(
            &query(Id20([1; 20]), QueryKind::Ping),
            a,
            now + Duration::from_secs(1),
        );
        assert_eq!(st.outbox.len(), 1);
    }

    /// A flood from 20,000 random IPs with random ids: every get_peers followed by a
    /// valid-token announce for a fresh info-hash. Memory stays bounded (rate-limit map,
    /// table, peer store, transactions) and no answer is more than a few times the size of
    /// its query (no amplification).
    #[test]
    fn flood_from_random_ips_stays_bounded_and_never_amplifies() {
        let cfg = DhtConfig {
            seed: Some(9),
            store: StoreConfig {
                max_per_hash: 50,
                max_total: 5_000,
            },
            ..Default::default()
        };
        let mut st = NodeState::new(cfg, "1.2.3.4:6881".parse().unwrap(), None, Instant::now());
        let mut rng = StdRng::seed_from_u64(99);
        let mut now = Instant::now();
        let (mut max_ratio, mut max_len) = (0.0f64, 0usize);
        let mut answer = |st: &mut NodeState, q: &[u8], from: SocketAddr, now: Instant| {
            st.packet(q, from, now);
            let out = std::mem::take(&mut st.outbox);
            assert!(out.len() <= 1, "one answer per query at most");
            let (b, to) = out.into_iter().next()?;
            assert_eq!(to, from, "answers go only to the asker");
            max_ratio = max_ratio.max(b.len() as f64 / q.len() as f64);
            max_len = max_len.max(b.len());
            Message::decode(&b).ok()
        };
        for i in 0..20_000u32 {
            now += Duration::from_micros(100);
            let ip = std::net::Ipv4Addr::from(rng.random::<u32>() | 0x0100_0000);
            let from = SocketAddr::from((ip, 1 + (i % 60_000) as u16));
            let ih = Id20(rng.random());
            let id = Id20(rng.random());
            let gp = query(
                id,
                QueryKind::GetPeers {
                    info_hash: ih,
                    noseed: false,
                    scrape: true,
                },
            );
            let Some(Message {
                body: Body::Response(r),
                ..
            }) = answer(&mut st, &gp, from, now)
            else {
                continue;
            };
            let ann = query(
                id,
                QueryKind::AnnouncePeer {
                    info_hash: ih,
                    port: 0,
                    implied_port: true,
                    token: r.token.unwrap_or_default(),
                    seed: false,
                },
            );
            answer(&mut st, &ann, from, now);
            let fnq = query(id, QueryKind::FindNode { target: ih });
            answer(&mut st, &fnq, from, now);
        }
        st.tick(now);
        assert!(st.rate.len() <= 8192, "rate map {}", st.rate.len());
        assert!(st.store.len() <= 5_000, "stored peers {}", st.store.len());
        assert!(
            st.store.len() >= 4_000,
            "the store did fill: {}",
            st.store.len()
        );
        assert!(
            st.stats().table_size <= 160 * 8,
            "table {}",
            st.stats().table_size
        );
        assert!(st.txns.len() <= st.cfg.max_transactions);
        // get_peers with scrape: id, token, 8 nodes, 8 values, two 256-byte bloom filters
        // against a ~110-byte query. That is the worst case; find_node is ~3x.
        assert!(max_len < 1024, "largest answer {max_len} bytes");
        assert!(max_ratio < 9.0, "largest answer/query ratio {max_ratio:.1}");
    }

    /// A lookup for a target in a bucket where we know nobody also asks the bootstrap
    /// routers, even with a full table; one where we know a closer node does not.
    #[test]
    fn lookup_into_an_empty_bucket_also_asks_the_bootstrap_routers() {
        let router: SocketAddr = "10.9.9.9:6881".parse().unwrap();
        let cfg = DhtConfig {
            seed: Some(5),
            node_id: Some(Id20([0; 20])),
            bootstrap: vec![router],
            ..Default::default()
        };
        let now = Instant::now();
        let mut st = NodeState::new(cfg, "10.0.0.1:6881".parse().unwrap(), None, now);
        // 20 nodes, all in our half of the id space (first bit 0).
        for i in 0..20u8 {
            let mut id = Id20([0; 20]);
            id.0[0] = 1 + i;
            let addr = SocketAddr::from(([10, 0, 1, 1 + i], 6881));
            st.table_mut(false).unwrap().heard_response(id, addr, now);
        }
        assert!(st.stats().table_size >= 8);
        let sent_to = |st: &mut NodeState, target: Id20| {
            let (tx, _rx) = oneshot::channel();
            st.command(Cmd::FindNode { target, done: tx }, now);
            st.drive_lookups(now);
            let to: Vec<SocketAddr> = st.outbox.drain(..).map(|(_, a)| a).collect();
            st.lookups.clear();
            st.txns.clear();
            to
        };
        // Far half: nobody known there.
        assert!(sent_to(&mut st, Id20([0xf0; 20])).contains(&router));
        // Our half: known nodes share more prefix with the target than we do.
        let mut near = Id20([0; 20]);
        near.0[0] = 3;
        assert!(!sent_to(&mut st, near).contains(&router));
    }

    #[test]
    fn read_only_node_stays_silent_and_flags_queries() {
        let cfg = DhtConfig {
            seed: Some(4),
            read_only: true,
            bootstrap: vec!["127.0.0.9:1".parse().unwrap()],
            ..Default::default()
        };
        let mut st = NodeState::new(cfg, "127.0.0.1:6881".parse().unwrap(), None, Instant::now());
        let now = Instant::now();
        st.packet(
            &query(Id20([1; 20]), QueryKind::Ping),
            "127.0.0.2:1".parse().unwrap(),
            now,
        );
        assert!(st.outbox.is_empty());
        st.tick(now);
        let to: SocketAddr = "127.0.0.9:1".parse().unwrap();
        let (b, _) = st
            .outbox
            .iter()
            .find(|(_, a)| *a == to)
            .expect("bootstrap query");
        assert!(Message::decode(b).unwrap().read_only);
    }

    #[test]
    fn response_from_wrong_address_is_ignored() {
        let cfg = DhtConfig {
            seed: Some(5),
            bootstrap: vec!["127.0.0.9:1".parse().unwrap()],
            ..Default::default()
        };
        let mut st = NodeState::new(cfg, "127.0.0.1:6881".parse().unwrap(), None, Instant::now());
        let now = Instant::now();
        st.tick(now);
        let (b, _) = st.outbox.pop().unwrap();
        let q = Message::decode(&b).unwrap();
        let resp = Message {
            tid: q.tid.clone(),
            version: None,
            read_only: false,
            ip: None,
            body: Body::Response(Response {
                id: Id20([3; 20]),
                ..Default::default()
            }),
        }
        .encode();
        st.packet(&resp, "127.0.0.8:1".parse().unwrap(), now);
        assert_eq!(st.stats().table_size, 0);
        st.packet(&resp, "127.0.0.9:1".parse().unwrap(), now);
        assert_eq!(st.stats().table_size, 1);
        assert_eq!(st.stats.responses, 1);
    }

    #[test]
    fn bep42_id_rederived_from_agreeing_external_ip() {
        let boots: Vec<SocketAddr> = (1..=4u8)
            .map(|i| SocketAddr::from(([127, 0, 0, 10 + i], 1)))
            .collect();
        let cfg = DhtConfig {
            seed: Some(6),
            bootstrap: boots.clone(),
            ..Default::default()
        };
        let mut st = NodeState::new(cfg, "127.0.0.1:6881".parse().unwrap(), None, Instant::now());
        let old = st.id;
        let now = Instant::now();
        st.tick(now);
        let sent: Vec<(Vec<u8>, SocketAddr)> = st.outbox.drain(..).collect();
        assert_eq!(sent.len(), 3, "alpha = 3 bootstrap queries");
        let external: SocketAddr = "203.0.113.7:6881".parse().unwrap();
        for (i, (b, to)) in sent.iter().enumerate() {
            let q = Message::decode(b).unwrap();
            let resp = Message {
                tid: q.tid,
                version: None,
                read_only: false,
                ip: Some(external),
                body: Body::Response(Response {
                    id: Id20([i as u8 + 1; 20]),
                    ..Default::default()
                }),
            };
            st.packet(&resp.encode(), *to, now);
            if i < 2 {
                assert_eq!(st.id, old, "two votes are not enough");
            }
        }
        assert_ne!(st.id, old);
        assert!(bep42_valid(&st.id, external.ip()));
        assert_eq!(*st.shared_id.lock().unwrap(), st.id);
        assert_eq!(st.stats.external_addr, Some(external));
        assert_eq!(st.stats().table_size, 3, "table carried over");
    }

    #[test]
    fn state_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/dht.json");
        let nodes = vec![NodeInfo {
            id: Id20([1; 20]),
            addr: "1.2.3.4:5".parse().unwrap(),
        }];
        save_state(&p, &Id20([9; 20]), &nodes).unwrap();
        let (id, n) = load_state(&p).unwrap();
        assert_eq!(id, Id20([9; 20]));
        assert_eq!(n, nodes);
        std::fs::write(&p, "{not json").unwrap();
        assert!(load_state(&p).is_none());
    }

    fn loopback_cfg(seed: u64, bootstrap: Vec<SocketAddr>) -> DhtConfig {
        DhtConfig {
            seed: Some(seed),
            bootstrap,
            ..Default::default()
        }
    }

    async fn drain(mut rx: mpsc::Receiver<SocketAddr>) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        while let Some(p) = rx.recv().await {
            out.push(p);
        }
        out
    }

    #[tokio::test]
    async fn twenty_nodes_on_loopback_find_an_announced_peer() {
        let t = Duration::from_secs(20);
        let boot = Dht::start(
            Net::Tokio,
            "127.0.1.1:0".parse().unwrap(),
            loopback_cfg(100, vec![]),
        )
        .await
        .unwrap();
        let mut nodes = Vec::new();
        for i in 0..20u8 {
            let bind = SocketAddr::from(([127, 0, 1, 10 + i], 0));
            nodes.push(
                Dht::start(
                    Net::Tokio,
                    bind,
                    loopback_cfg(i as u64, vec![boot.local_addr()]),
                )
                .await
                .unwrap(),
            );
        }
        for n in &nodes {
            tokio::time::timeout(t, n.bootstrapped())
                .await
                .expect("bootstrap");
        }
        let ih = Id20([0x42; 20]);
        let found = tokio::time::timeout(t, drain(nodes[5].announce(ih, Some(7777)).await))
            .await
            .unwrap();
        assert!(found.is_empty(), "nobody announced yet: {found:?}");
        let announcer: SocketAddr = "127.0.1.15:7777".parse().unwrap();
        let h = nodes[15].lookup(ih, None, false).await;
        let found = tokio::time::timeout(t, drain(h.peers)).await.unwrap();
        assert_eq!(found, vec![announcer]);
        let summary = h.done.await.unwrap();
        assert_eq!(summary.peers, 1);
        assert!(summary.nodes_visited >= 8, "{summary:?}");
        // Implied port: the announcer's UDP port is stored.
        let udp_port = nodes[3].local_addr().port();
        drain(nodes[3].announce(ih, None).await).await;
        let found = tokio::time::timeout(t, drain(nodes[9].get_peers(ih).await))
            .await
            .unwrap();
        assert!(
            found.contains(&SocketAddr::from(([127, 0, 1, 13], udp_port))),
            "{found:?}"
        );
        let st = nodes[15].stats().await;
        assert!(st.table_size >= 8, "{st:?}");
        assert!(st.queries_sent > 0 && st.responses > 0);
        let bst = boot.stats().await;
        assert!(bst.queries_received >= 20, "{bst:?}");
        for n in nodes {
            n.shutdown().await;
        }
        boot.shutdown().await;
    }

    #[tokio::test]
    async fn ipv6_loopback_announce_and_find() {
        let t = Duration::from_secs(10);
        let Ok(root) = Dht::start(
            Net::Tokio,
            "[::1]:0".parse().unwrap(),
            loopback_cfg(1, vec![]),
        )
        .await
        else {
            eprintln!("SKIP: no IPv6 loopback");
            return;
        };
        let a = Dht::start(
            Net::Tokio,
            "[::1]:0".parse().unwrap(),
            loopback_cfg(2, vec![root.local_addr()]),
        )
        .await
        .unwrap();
        let b = Dht::start(
            Net::Tokio,
            "[::1]:0".parse().unwrap(),
            loopback_cfg(3, vec![root.local_addr()]),
        )
        .await
        .unwrap();
        tokio::time::timeout(t, a.bootstrapped()).await.unwrap();
        tokio::time::timeout(t, b.bootstrapped()).await.unwrap();
        let ih = Id20([0x66; 20]);
        let h = a.lookup(ih, Some(Some(6000)), false).await;
        tokio::time::timeout(t, drain(h.peers)).await.unwrap();
        assert!(h.done.await.unwrap().announced_to >= 1);
        let found = tokio::time::timeout(t, drain(b.get_peers(ih).await))
            .await
            .unwrap();
        assert_eq!(found, vec!["[::1]:6000".parse::<SocketAddr>().unwrap()]);
    }

    #[tokio::test]
    async fn restart_is_warm_from_state_file() {
        let t = Duration::from_secs(20);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("dht.json");
        let boot = Dht::start(
            Net::Tokio,
            "127.0.2.1:0".parse().unwrap(),
            loopback_cfg(1, vec![]),
        )
        .await
        .unwrap();
        let mut others = Vec::new();
        for i in 0..5u8 {
            let bind = SocketAddr::from(([127, 0, 2, 10 + i], 0));
            let n = Dht::start(
                Net::Tokio,
                bind,
                loopback_cfg(10 + i as u64, vec![boot.local_addr()]),
            )
            .await
            .unwrap();
            tokio::time::timeout(t, n.bootstrapped()).await.unwrap();
            others.push(n);
        }
        let cfg = DhtConfig {
            state_file: Some(state.clone()),
            ..loopback_cfg(50, vec![boot.local_addr()])
        };
        let a = Dht::start(Net::Tokio, "127.0.2.50:0".parse().unwrap(), cfg)
            .await
            .unwrap();
        tokio::time::timeout(t, a.bootstrapped()).await.unwrap();
        let id = a.node_id();
        a.shutdown().await;
        assert!(state.exists());
        // Restart with no bootstrap at all: the saved nodes are enough.
        let cfg = DhtConfig {
            state_file: Some(state.clone()),
            ..loopback_cfg(51, vec![])
        };
        let b = Dht::start(Net::Tokio, "127.0.2.50:0".parse().unwrap(), cfg)
            .await
            .unwrap();
        assert_eq!(b.node_id(), id);
        tokio::time::timeout(t, b.bootstrapped()).await.unwrap();
        assert!(b.stats().await.table_size >= 5);
        b.shutdown().await;
    }

    /// Measurement, not a gate: `cargo test --lib dht::node::tests::loopback_lookup_cost --
    /// --ignored --nocapture`. 200 nodes on real loopback UDP, 20 lookups of announced hashes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn loopback_lookup_cost() {
        let t = Duration::from_secs(30);
        let boot = Dht::start(
            Net::Tokio,
            "127.0.3.1:0".parse().unwrap(),
            loopback_cfg(1, vec![]),
        )
        .await
        .unwrap();
        let mut nodes = Vec::new();
        for i in 0..200u32 {
            let bind =
                SocketAddr::from(([127, 0, 3 + (i / 200) as u8 + 1, (i % 200) as u8 + 10], 0));
            nodes.push(
                Dht::start(
                    Net::Tokio,
                    bind,
                    loopback_cfg(1000 + u64::from(i), vec![boot.local_addr()]),
                )
                .await
                .unwrap(),
            );
        }
        for n in &nodes {
            tokio::time::timeout(t, n.bootstrapped()).await.unwrap();
        }
        let (mut queries, mut rounds, mut times, mut found) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        for j in 0..20usize {
            let ih = Id20([j as u8 + 1; 20]);
            drain(nodes[j * 7 % 200].announce(ih, Some(4000)).await).await;
            let h = nodes[(j * 13 + 100) % 200].lookup(ih, None, false).await;
            let peers = tokio::time::timeout(t, drain(h.peers)).await.unwrap();
            let s = h.done.await.unwrap();
            found += usize::from(!peers.is_empty());
            queries.push(s.queries_sent);
            rounds.push(s.rounds);
            times.push(s.duration);
        }
        queries.sort();
        rounds.sort();
        times.sort();
        eprintln!(
            "200 loopback nodes: found {found}/20; median queries/lookup {}, max {}; median rounds {}; median time {:?}, max {:?}",
            queries[10], queries[19], rounds[10], times[10], times[19]
        );
        assert_eq!(found, 20);
    }

    /// A deterministic in-process network of pure `NodeState`s: datagrams are delivered
    /// after a fixed one-way latency on a virtual clock; every node is ticked every 50 ms.
    /// This exercises the exact node logic the task runs, without sockets or real time.
    /// (delivery time, sequence for a stable order, destination index, source, bytes).
    type Datagram = (Instant, u64, usize, SocketAddr, Vec<u8>);

    struct PureNet {
        nodes: Vec<NodeState>,
        index: BTreeMap<SocketAddr, usize>,
        queue: std::collections::BinaryHeap<std::cmp::Reverse<Datagram>>,
        dead: BTreeSet<usize>,
        /// Nodes whose answers are replaced by garbage or by lies about closer nodes.
        liars: BTreeSet<usize>,
        latency: Duration,
        now: Instant,
        next_tick: Instant,
        seq: u64,
        packets: u64,
    }

    impl PureNet {
        fn new(n: usize, latency: Duration, seed: u64) -> PureNet {
            let now = Instant::now();
            let addr =
                |i: usize| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881));
            let boots: Vec<SocketAddr> = (0..3).map(addr).collect();
            let mut nodes = Vec::new();
            let mut index = BTreeMap::new();
            for i in 0..n {
                let bootstrap = if i < 3 { Vec::new() } else { boots.clone() };
                let cfg = DhtConfig {
                    seed: Some(seed * 1_000_003 + i as u64),
                    bootstrap,
                    ..Default::default()
                };
                nodes.push(NodeState::new(cfg, addr(i), None, now));
                index.insert(addr(i), i);
            }
            PureNet {
                nodes,
                index,
                queue: Default::default(),
                dead: BTreeSet::new(),
                liars: BTreeSet::new(),
                latency,
                now,
                next_tick: now,
                seq: 0,
                packets: 0,
            }
        }

        fn flush(&mut self, i: usize) {
            let from = self.nodes[i].local;
            let liar = self.liars.contains(&i);
            for (b, to) in std::mem::take(&mut self.nodes[i].outbox) {
                let b = if liar { self.lie(i, b) } else { b };
                if let Some(&j) = self.index.get(&to) {
                    self.seq += 1;
                    self.packets += 1;
                    self.queue.push(std::cmp::Reverse((
                        self.now + self.latency,
                        self.seq,
                        j,
                        from,
                        b,
                    )));
                }
            }
        }

        /// Half the liars answer garbage; the others claim 8 nodes right next to their own
        /// id (so they look closer to the target) at addresses where nobody listens.
        fn lie(&mut self, i: usize, b: Vec<u8>) -> Vec<u8> {
            let Ok(mut m) = Message::decode(&b) else {
                return b;
            };
            let Body::Response(r) = &mut m.body else {
                return b;
            };
            if i.is_multiple_of(2) {
                return b"d1:rd2:id3:xyz5:nodes7:garbagee1:t2:aa1:y1:re".to_vec();
            }
            r.nodes = (0..8u8)
                .map(|k| {
                    let mut id = r.id;
                    id.0[19] ^= k + 1;
                    self.seq += 1;
                    let a = SocketAddr::from(([10, 250, (self.seq >> 8) as u8, self.seq as u8], 1));
                    NodeInfo { id, addr: a }
                })
                .collect();
            m.encode()
        }

        /// Runs the network until `stop` returns true or `limit` of virtual time passes.
        fn run(&mut self, limit: Duration, mut stop: impl FnMut(&mut PureNet) -> bool) -> bool {
            let end = self.now + limit;
            while self.now < end {
                let next_pkt = self.queue.peek().map(|r| r.0 .0);
                if next_pkt.is_some_and(|t| t < self.next_tick) {
                    let std::cmp::Reverse((t, _, j, from, b)) = self.queue.pop().unwrap();
                    self.now = t;
                    if !self.dead.contains(&j) {
                        self.nodes[j].packet(&b, from, t);
                        self.nodes[j].tick(t);
                        self.flush(j);
                    }
                } else {
                    // `stop` is checked on the 50 ms ticks only: checking it per packet
                    // would make the harness quadratic.
                    if stop(self) {
                        return true;
                    }
                    self.now = self.next_tick;
                    self.next_tick = self.now + Duration::from_millis(50);
                    for i in 0..self.nodes.len() {
                        if !self.dead.contains(&i) && self.nodes[i].next_wake() <= self.now {
                            self.nodes[i].tick(self.now);
                            self.flush(i);
                        }
                    }
                }
            }
            stop(self)
        }

        fn bootstrap(&mut self) {
            let ok = self.run(Duration::from_secs(60), |net| {
                net.nodes
                    .iter()
                    .enumerate()
                    .all(|(i, n)| n.bootstrapped || net.dead.contains(&i))
            });
            assert!(ok, "bootstrap did not finish");
            // Let the second self-lookup (10 s after bootstrap) run.
            self.run(Duration::from_secs(15), |_| false);
        }

        /// Starts a lookup on node `i`; returns its channels.
        fn lookup(
            &mut self,
            i: usize,
            ih: Id20,
            announce: Option<(Option<u16>, bool)>,
        ) -> (mpsc::Receiver<SocketAddr>, oneshot::Receiver<LookupSummary>) {
            let (ptx, prx) = mpsc::channel(256);
            let (dtx, drx) = oneshot::channel();
            let now = self.now;
            self.nodes[i].command(
                Cmd::Lookup {
                    info_hash: ih,
                    announce,
                    peers: ptx,
                    done: dtx,
                },
                now,
            );
            self.nodes[i].tick(now);
            self.flush(i);
            (prx, drx)
        }

        fn finish(&mut self, mut done: oneshot::Receiver<LookupSummary>) -> LookupSummary {
            let mut out = None;
            self.run(Duration::from_secs(60), |_| {
                if let Ok(s) = done.try_recv() {
                    out = Some(s);
                    true
                } else {
                    false
                }
            });
            out.expect("lookup finished")
        }
    }

    /// Announces from random live nodes, looks up from others; returns (found, summaries).
    fn lookups(net: &mut PureNet, count: usize, rng: &mut StdRng) -> (usize, Vec<LookupSummary>) {
        let n = net.nodes.len();
        let live: Vec<usize> = (0..n).filter(|i| !net.dead.contains(i)).collect();
        let mut found = 0;
        let mut sums = Vec::new();
        for _ in 0..count {
            let ih = Id20(rng.random());
            let a = live[rng.random_range(0..live.len())];
            let b = live[rng.random_range(0..live.len())];
            let (_, d) = net.lookup(a, ih, Some((Some(4242), false)));
            net.finish(d);
            let (mut peers, d) = net.lookup(b, ih, None);
            let s = net.finish(d);
            let want = SocketAddr::new(net.nodes[a].local.ip(), 4242);
            let mut got = false;
            while let Ok(p) = peers.try_recv() {
                got |= p == want;
            }
            found += usize::from(got);
            sums.push(s);
        }
        (found, sums)
    }

    fn report(label: &str, found: usize, sums: &mut [LookupSummary]) -> (u32, u64) {
        let n = sums.len();
        sums.sort_by_key(|s| s.rounds);
        let rounds = sums[n / 2].rounds;
        sums.sort_by_key(|s| s.queries_sent);
        let queries = sums[n / 2].queries_sent;
        let qmax = sums[n - 1].queries_sent;
        sums.sort_by_key(|s| s.duration);
        eprintln!(
            "{label}: found {found}/{n}; median rounds {rounds}; median queries/lookup {queries} (max {qmax}); \
             median time {:?} (max {:?})",
            sums[n / 2].duration,
            sums[n - 1].duration
        );
        (rounds, queries)
    }

    /// Measurement (about 15 s of CPU in a debug build), run with
    /// `cargo test --lib dht::node::tests::pure_net_1000 -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn pure_net_1000_nodes_50ms_links() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut net = PureNet::new(1000, Duration::from_millis(50), 1);
        net.bootstrap();
        let (found, mut sums) = lookups(&mut net, 20, &mut rng);
        let (rounds, _) = report("1000 nodes, 50 ms links", found, &mut sums);
        assert_eq!(found, 20);
        assert!(rounds <= 10, "median rounds {rounds} > log2(1000)");
    }

    #[test]
    fn pure_net_10_percent_liars() {
        let mut rng = StdRng::seed_from_u64(44);
        let mut net = PureNet::new(500, Duration::from_millis(50), 3);
        for i in 3..500 {
            if rng.random_bool(0.1) {
                net.liars.insert(i);
            }
        }
        net.bootstrap();
        let (found, mut sums) = lookups(&mut net, 20, &mut rng);
        report("500 nodes, 10% liars", found, &mut sums);
        assert_eq!(found, 20);
    }

    #[test]
    fn pure_net_20_percent_dead() {
        let mut rng = StdRng::seed_from_u64(43);
        let mut net = PureNet::new(500, Duration::from_millis(50), 2);
        net.bootstrap();
        // Then 20% of the nodes (not the bootstrap ones) die silently.
        for i in 3..500 {
            if rng.random_bool(0.2) {
                net.dead.insert(i);
            }
        }
        let (found, mut sums) = lookups(&mut net, 20, &mut rng);
        let (rounds, _) = report("500 nodes, 20% dead", found, &mut sums);
        assert_eq!(found, 20);
        assert!(rounds <= 9, "median rounds {rounds} > log2(500)");
    }
}
