//! Lookup cost measured on a deterministic in-process network of pure [`NodeState`]s (tests
//! only): the exact node logic the task runs (BEP 5 lookups, BEP 42 ids), without sockets
//! or real time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::dht::krpc::{Body, Message, NodeInfo};
use crate::id::Id20;

use super::state::NodeState;
use super::*;

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
/// `cargo test --lib dht::node::pure_net::pure_net_1000 -- --ignored --nocapture`.
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
