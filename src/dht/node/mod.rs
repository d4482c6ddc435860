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
//!
//! Files, one per seam of the protocol: [`state`] (the state, commands, dispatch),
//! [`queries`] (answering other nodes), [`responses`] (answers to our queries), [`lookups`]
//! (iterative lookups and announces), [`maintenance`] (bootstrap, refresh, BEP 42 id) and
//! [`persistence`] (the state file). This file holds the public handle [`Dht`], its
//! configuration and the task that moves bytes.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::dht::krpc::NodeInfo;
use crate::dht::lookup::LookupConfig;
use crate::dht::store::StoreConfig;
use crate::id::{InfoHash, NodeId};
use crate::net::{Net, UdpSocket};

mod lookups;
mod maintenance;
mod persistence;
#[cfg(test)]
mod pure_net;
mod queries;
mod responses;
mod state;
#[cfg(test)]
mod test_util;

use persistence::load_state;
use state::NodeState;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::node::test_util::*;
    use crate::id::Id20;
    use crate::net::Net;
    use std::net::SocketAddr;
    use std::time::Duration;

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
}
