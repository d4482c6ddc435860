//! The DHT at scale over simnet, on tokio's paused clock: 5,000 real DHT nodes (the same
//! `Dht` task that runs on real sockets) bootstrap from 3; then peers announced by random
//! nodes are found by lookups from other random nodes. Also with 20% of the nodes silently
//! dead, and with 10% of the nodes answering garbage or lying about closer nodes.
//!
//! Virtual time: every wait below is on an event (bootstrap finished, lookup finished), never
//! a sleep. The measurements at 1,000 / 10,000 nodes with 50 ms links are the ignored
//! `bench_*` tests (release build; see docs/benchmarks.md, "DHT lookups").

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant as WallInstant};

use magnetfetch::internals::dht::krpc::{Body, Message, NodeInfo, QueryKind, Response};
use magnetfetch::internals::dht::{Dht, DhtConfig, LookupSummary};
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::net::Net;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PORT: u16 = 6881;

/// Node `i`'s address: 10.0.0.0/8, skipping .0 and .255 in every octet.
fn ip_of(i: usize) -> IpAddr {
    let i = i as u32;
    let (a, b, c) = (i / (250 * 250), (i / 250) % 250, i % 250);
    IpAddr::V4(Ipv4Addr::new(10, a as u8 + 1, b as u8 + 1, c as u8 + 1))
}

/// How a node behaves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Honest,
    /// Answers every query with undecodable bytes under the right transaction id.
    Garbage,
    /// Answers with a valid message that claims 8 nodes right next to the target at
    /// addresses where nobody listens, plus fake peers, and never stores anything.
    Liar,
}

struct Swarm {
    net: simnet::Network,
    hosts: Vec<simnet::Host>,
    nodes: Vec<Option<Dht>>,
    roles: Vec<Role>,
}

impl Swarm {
    /// `n` nodes (the first 3 are the bootstrap nodes, always honest), each with one-way
    /// access-link latency `latency` (so `2 * latency` host to host). Returns once every
    /// honest node finished its bootstrap.
    async fn start(n: usize, latency: Duration, seed: u64, roles: Vec<Role>) -> Swarm {
        let net = simnet::Network::with_config(
            seed,
            simnet::NetworkConfig {
                latency,
                ..Default::default()
            },
        );
        let boots: Vec<SocketAddr> = (0..3).map(|i| SocketAddr::new(ip_of(i), PORT)).collect();
        let mut hosts = Vec::with_capacity(n);
        let mut nodes = Vec::with_capacity(n);
        for (i, role) in roles.iter().enumerate().take(n) {
            let h = net.add_host(ip_of(i)).unwrap();
            let addr = SocketAddr::new(ip_of(i), PORT);
            match *role {
                Role::Honest => {
                    let cfg = DhtConfig {
                        seed: Some(seed.wrapping_mul(1_000_003).wrapping_add(i as u64)),
                        bootstrap: if i < 3 { Vec::new() } else { boots.clone() },
                        ..Default::default()
                    };
                    nodes.push(Some(
                        Dht::start(Net::Sim(h.clone()), addr, cfg).await.unwrap(),
                    ));
                }
                bad => {
                    let sock = h.bind_udp(addr).await.unwrap();
                    tokio::spawn(adversary(sock, bad, boots.clone(), seed ^ i as u64));
                    nodes.push(None);
                }
            }
            hosts.push(h);
        }
        for d in nodes.iter().flatten() {
            d.bootstrapped().await;
        }
        Swarm {
            net,
            hosts,
            nodes,
            roles,
        }
    }

    fn live_honest(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.roles[i] == Role::Honest && self.hosts[i].is_up())
            .collect()
    }
}

/// A misbehaving node: it makes itself known (one `find_node` for its own id to each
/// bootstrap node and to the nodes they return, so it lands in many routing tables), then
/// answers every query according to `role`.
async fn adversary(sock: simnet::UdpSocket, role: Role, boots: Vec<SocketAddr>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let id = Id20(rng.random());
    let query = |tid: u16, target: Id20| Message {
        tid: tid.to_be_bytes().to_vec(),
        version: None,
        read_only: false,
        ip: None,
        body: Body::Query(magnetfetch::internals::dht::krpc::Query {
            id,
            kind: QueryKind::FindNode { target },
            want: Default::default(),
        }),
    };
    for b in &boots {
        let _ = sock.send_to(&query(0, id).encode(), *b).await;
    }
    let mut asked = 0usize;
    let mut buf = vec![0u8; 4096];
    let mut fake = 0u32;
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let Ok(m) = Message::decode(&buf[..n]) else {
            continue;
        };
        match m.body {
            Body::Response(r) if asked < 16 => {
                // Join: introduce ourselves to the nodes close to our id.
                for node in r.nodes.iter().take(4) {
                    asked += 1;
                    let _ = sock.send_to(&query(1, id).encode(), node.addr).await;
                }
            }
            Body::Query(q) => {
                let reply = match role {
                    Role::Garbage => {
                        let mut b = b"d1:rd2:id3:xyz5:nodes7:garbagee1:t".to_vec();
                        b.extend_from_slice(m.tid.len().to_string().as_bytes());
                        b.push(b':');
                        b.extend_from_slice(&m.tid);
                        b.extend_from_slice(b"1:y1:re");
                        b
                    }
                    _ => {
                        let target = match q.kind {
                            QueryKind::FindNode { target } => Some(target),
                            QueryKind::GetPeers { info_hash, .. } => Some(info_hash),
                            _ => None,
                        };
                        let mut resp = Response {
                            id,
                            ..Default::default()
                        };
                        if let Some(t) = target {
                            resp.nodes = (0..8u8)
                                .map(|k| {
                                    let mut fid = t;
                                    fid.0[19] ^= k + 1;
                                    fake += 1;
                                    NodeInfo {
                                        id: fid,
                                        addr: SocketAddr::from((
                                            [10, 251, (fake >> 8) as u8, fake as u8],
                                            PORT,
                                        )),
                                    }
                                })
                                .collect();
                        }
                        if let QueryKind::GetPeers { .. } = q.kind {
                            resp.token = Some(b"lie".to_vec());
                            resp.values = vec![SocketAddr::from(([10, 252, 0, 1], 1))];
                        }
                        Message {
                            tid: m.tid,
                            version: None,
                            read_only: false,
                            ip: Some(from),
                            body: Body::Response(resp),
                        }
                        .encode()
                    }
                };
                let _ = sock.send_to(&reply, from).await;
            }
            _ => {}
        }
    }
}

struct Outcome {
    found: usize,
    sums: Vec<LookupSummary>,
}

/// `count` rounds of: a random live honest node announces a random info-hash (port 4242),
/// then another random live honest node looks it up. All rounds run concurrently.
async fn announce_and_find(sw: &Swarm, count: usize, seed: u64) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let live = sw.live_honest();
    let mut pairs = Vec::new();
    for _ in 0..count {
        let a = live[rng.random_range(0..live.len())];
        let b = live[rng.random_range(0..live.len())];
        pairs.push((a, b, Id20(rng.random())));
    }
    let mut announces = Vec::new();
    for &(a, _, ih) in &pairs {
        let d = sw.nodes[a].as_ref().unwrap();
        announces.push(d.lookup(ih, Some(Some(4242)), false).await);
    }
    let mut ann_sums = Vec::new();
    for h in announces {
        let s = h.done.await.expect("announce finished");
        assert!(s.announced_to > 0, "announce reached nobody: {s:?}");
        ann_sums.push(s);
    }
    let mut lookups = Vec::new();
    for &(a, b, ih) in &pairs {
        let d = sw.nodes[b].as_ref().unwrap();
        lookups.push((a, d.lookup(ih, None, false).await));
    }
    let mut found = 0;
    let mut sums = Vec::new();
    for (j, (a, mut h)) in lookups.into_iter().enumerate() {
        let want = SocketAddr::new(ip_of(a), 4242);
        let mut got = false;
        while let Some(p) = h.peers.recv().await {
            got |= p == want;
        }
        found += usize::from(got);
        let s = h.done.await.expect("lookup finished");
        if !got {
            // Diagnostics for a failure: where the closest sets that the announcer and the
            // looker reach rank among all live nodes (0 = closest to the info-hash).
            eprintln!("NOT FOUND: {:?}\n  announce {:?}", s, ann_sums[j]);
            let (_, b, ih) = pairs[j];
            let mut truth: Vec<(Id20, SocketAddr)> = live
                .iter()
                .map(|&i| {
                    (
                        sw.nodes[i].as_ref().unwrap().node_id(),
                        SocketAddr::new(ip_of(i), PORT),
                    )
                })
                .collect();
            truth.sort_by_key(|(id, _)| ih.distance(id));
            let rank = |n: &NodeInfo| truth.iter().position(|t| t.1 == n.addr);
            for (who, i) in [("announcer", a), ("looker", b)] {
                let f = sw.nodes[i].as_ref().unwrap().find_node(ih).await;
                let ranks: Vec<Option<usize>> = f.iter().map(rank).collect();
                eprintln!("  {who} {i} find_node ranks {ranks:?}");
            }
        }
        sums.push(s);
    }
    Outcome { found, sums }
}

/// Medians (rounds, queries) and a printed report.
fn report(label: &str, n: usize, o: &mut Outcome, packets: u64, wall: Duration) -> (u32, u64) {
    let k = o.sums.len();
    o.sums.sort_by_key(|s| s.rounds);
    let rounds = o.sums[k / 2].rounds;
    o.sums.sort_by_key(|s| s.queries_sent);
    let (q50, q90, qmax) = (
        o.sums[k / 2].queries_sent,
        o.sums[k * 9 / 10].queries_sent,
        o.sums[k - 1].queries_sent,
    );
    o.sums.sort_by_key(|s| s.duration);
    let (t50, t90, tmax) = (
        o.sums[k / 2].duration,
        o.sums[k * 9 / 10].duration,
        o.sums[k - 1].duration,
    );
    eprintln!(
        "{label}: {n} nodes; found {}/{k}; median rounds {rounds} (log2 N = {:.1}); \
         queries/lookup median {q50}, p90 {q90}, max {qmax}; lookup time median {t50:?}, \
         p90 {t90:?}, max {tmax:?}; datagrams during the lookups {packets}; wall {wall:?}",
        o.found,
        (n as f64).log2()
    );
    (rounds, q50)
}

fn roles(n: usize, garbage: f64, liars: f64, seed: u64) -> Vec<Role> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let x: f64 = rng.random();
            if i < 3 {
                Role::Honest
            } else if x < garbage {
                Role::Garbage
            } else if x < garbage + liars {
                Role::Liar
            } else {
                Role::Honest
            }
        })
        .collect()
}

fn log2_ceil(n: usize) -> u32 {
    usize::BITS - (n - 1).leading_zeros()
}

#[tokio::test(start_paused = true)]
async fn five_thousand_nodes_find_announced_peers() {
    let n = 5000;
    let wall = WallInstant::now();
    let sw = Swarm::start(n, Duration::from_millis(10), 1, roles(n, 0.0, 0.0, 1)).await;
    eprintln!("bootstrap of {n} nodes: wall {:?}", wall.elapsed());
    let before = sw.net.stats().packets_sent;
    let wall = WallInstant::now();
    let mut o = announce_and_find(&sw, 100, 11).await;
    let packets = sw.net.stats().packets_sent - before;
    let (rounds, q50) = report("healthy", n, &mut o, packets, wall.elapsed());
    assert_eq!(o.found, 100, "every lookup finds the announced peer");
    assert!(rounds <= log2_ceil(n), "median rounds {rounds}");
    // A lookup asks about k * rounds nodes at most; in practice a few dozen.
    assert!(q50 <= 60, "median queries per lookup {q50}");
    let qmax = o.sums.iter().map(|s| s.queries_sent).max().unwrap();
    assert!(qmax <= 200, "max queries per lookup {qmax}");
}

#[tokio::test(start_paused = true)]
async fn lookups_survive_twenty_percent_silent_dead_nodes() {
    let n = 5000;
    let sw = Swarm::start(n, Duration::from_millis(10), 2, roles(n, 0.0, 0.0, 2)).await;
    // 20% of the nodes (never the bootstrap ones) vanish without a word: their hosts drop
    // every packet, so queries to them time out.
    let mut rng = StdRng::seed_from_u64(22);
    let mut dead = 0;
    for h in sw.hosts.iter().skip(3) {
        if rng.random_bool(0.2) {
            h.down();
            dead += 1;
        }
    }
    let before = sw.net.stats().packets_sent;
    let wall = WallInstant::now();
    let mut o = announce_and_find(&sw, 100, 12).await;
    let packets = sw.net.stats().packets_sent - before;
    let (rounds, q50) = report(
        &format!("{dead} silently dead"),
        n,
        &mut o,
        packets,
        wall.elapsed(),
    );
    assert_eq!(o.found, 100);
    assert!(rounds <= log2_ceil(n), "median rounds {rounds}");
    assert!(q50 <= 80, "median queries per lookup {q50}");
    // Dead nodes cost a timeout each, but never stall a lookup.
    let tmax = o.sums.iter().map(|s| s.duration).max().unwrap();
    assert!(tmax < Duration::from_secs(15), "slowest lookup {tmax:?}");
}

#[tokio::test(start_paused = true)]
async fn lookups_survive_ten_percent_garbage_and_liars() {
    let n = 5000;
    let sw = Swarm::start(n, Duration::from_millis(10), 3, roles(n, 0.05, 0.05, 3)).await;
    let bad = sw.roles.iter().filter(|r| **r != Role::Honest).count();
    let before = sw.net.stats().packets_sent;
    let wall = WallInstant::now();
    let mut o = announce_and_find(&sw, 100, 13).await;
    let packets = sw.net.stats().packets_sent - before;
    let (_, q50) = report(
        &format!("{bad} garbage/liars"),
        n,
        &mut o,
        packets,
        wall.elapsed(),
    );
    assert_eq!(o.found, 100);
    assert!(q50 <= 120, "median queries per lookup {q50}");
    let tmax = o.sums.iter().map(|s| s.duration).max().unwrap();
    assert!(tmax < Duration::from_secs(20), "slowest lookup {tmax:?}");
}

/// Measurement for docs/benchmarks.md ("DHT lookups"): 50 ms links (25 ms per access link),
/// 100 announce + lookup pairs, all running at once. Run with
/// `cargo test --release --test dht dht_sim::bench -- --ignored --nocapture --test-threads 1`.
async fn bench(n: usize) {
    let wall = WallInstant::now();
    let t0 = tokio::time::Instant::now();
    let sw = Swarm::start(n, Duration::from_millis(25), 7, roles(n, 0.0, 0.0, 7)).await;
    eprintln!(
        "bootstrap of {n} nodes: {:?} virtual, wall {:?}",
        t0.elapsed(),
        wall.elapsed()
    );
    let before = sw.net.stats().packets_sent;
    let wall = WallInstant::now();
    let mut o = announce_and_find(&sw, 100, 17).await;
    let packets = sw.net.stats().packets_sent - before;
    let (rounds, _) = report("50 ms links", n, &mut o, packets, wall.elapsed());
    assert_eq!(o.found, 100);
    assert!(rounds <= log2_ceil(n));
}

#[tokio::test(start_paused = true)]
#[ignore]
async fn bench_1000_nodes_50ms_links() {
    bench(1000).await;
}

#[tokio::test(start_paused = true)]
#[ignore]
async fn bench_10000_nodes_50ms_links() {
    bench(10_000).await;
}
