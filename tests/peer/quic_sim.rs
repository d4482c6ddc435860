//! QUIC over simnet: the same session code with quinn driving simulated UDP.
//!
//! - `peer_wire_over_quic`: a seeder and a leecher with `TransportMode::Quic` (no DHT, the
//!   UDP port bound for QUIC alone) move a torrent over QUIC; the BitTorrent handshake and
//!   info-hash check run on the QUIC stream; every payload byte is counted as QUIC.
//! - `peer_wire_over_utp`: the same with `TransportMode::Utp` (BEP 29) over a lossy link.
//! - `auto_races_and_prefers_quic`: two `Auto` peers; the race keeps QUIC.
//! - `measure_*` (ignored; `cargo test --release --test peer quic_sim -- --ignored --nocapture`):
//!   the numbers in docs/benchmarks.md ("QUIC transport").

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use magnetfetch::internals::dial::{DialConfig, TransportMode};
use magnetfetch::internals::magnet::{Magnet, PeerAddr};
use magnetfetch::internals::session::{AddTorrent, Session, Source, StorageSpec};
use magnetfetch::internals::sim::{make_metainfo, Scenario};

const PORT: u16 = 6881;

fn ip(i: usize) -> IpAddr {
    IpAddr::from([10, 9, (i / 250) as u8, (i % 250 + 1) as u8])
}

struct Link {
    latency: Duration,
    loss: f64,
    rate: Option<u64>,
}

async fn session(net: &simnet::Network, i: usize, l: &Link, mode: TransportMode) -> Session {
    let mut hc = simnet::HostConfig::new(ip(i))
        .latency(l.latency)
        .loss(l.loss);
    if let Some(r) = l.rate {
        hc = hc.rate(r);
    }
    let h = net.add_host_with(hc).unwrap();
    let transport = DialConfig {
        mode,
        tcp_delay: Duration::from_millis(250),
        quic: magnetfetch::internals::net::quic::QuicConfig {
            // Measurements only: MF_QUIC_CC=bbr compares BBR with the default CUBIC.
            bbr: std::env::var("MF_QUIC_CC").is_ok_and(|v| v == "bbr"),
            ..Default::default()
        },
        ..Default::default()
    };
    crate::support::sim_session_on(h, SocketAddr::new(ip(i), PORT), i as u64 + 1, transport).await
}

struct Outcome {
    /// Simulated seconds from start to the last leecher's completion.
    secs: Vec<f64>,
    quic: u64,
    tcp: u64,
    utp: u64,
}

/// One seeder, `leechers` leechers starting together from a magnet with the seeder in
/// `x.pe`; returns completion times (simulated) and payload bytes per transport.
async fn swarm(
    size: u64,
    leechers: usize,
    l: &Link,
    mode: TransportMode,
    limit: Duration,
) -> Outcome {
    let net = simnet::Network::new(7);
    let sc = Scenario {
        size,
        piece_length: 256 << 10,
        ..Scenario::default()
    };
    let meta = make_metainfo(&sc).unwrap();
    let seeder = session(&net, 0, l, mode).await;
    let seed_handle = seeder.add(crate::support::sim_seeding(&meta, sc.seed));
    let mut magnet = Magnet::new(meta.info_hash);
    magnet.peers = vec![PeerAddr::Ip(SocketAddr::new(ip(0), PORT))];
    let t0 = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 1..=leechers {
        let s = session(&net, i, l, mode).await;
        let mut add = AddTorrent::new(
            Source::Magnet(magnet.clone()),
            StorageSpec::Generated {
                seed: sc.seed,
                complete: false,
            },
        );
        add.swarm.keep_seeding = true;
        add.swarm.blocking_io = false;
        add.metadata_timeout = limit;
        let h = s.add(add);
        tasks.push(tokio::spawn(async move {
            let mut p = h.progress();
            let done = tokio::time::timeout(limit, async {
                loop {
                    let pr = p.borrow_and_update().clone();
                    if pr.total > 0 && pr.verified == pr.total {
                        return pr;
                    }
                    if p.changed().await.is_err() {
                        return pr;
                    }
                }
            })
            .await;
            let at = t0.elapsed().as_secs_f64();
            let r = done.ok().map(|pr| (at, pr.transport_bytes));
            (r, s, h)
        }));
    }
    let mut out = Outcome {
        secs: Vec::new(),
        quic: 0,
        tcp: 0,
        utp: 0,
    };
    let mut keep = Vec::new();
    for t in tasks {
        let (r, s, h) = t.await.unwrap();
        if let Some((at, tb)) = r {
            out.secs.push(at);
            out.quic += tb.quic;
            out.tcp += tb.tcp;
            out.utp += tb.utp;
        }
        keep.push((s, h));
    }
    out.secs.sort_by(f64::total_cmp);
    if std::env::var_os("MF_QUIC_STATS").is_some() {
        eprintln!("simnet totals: {:?}", net.stats());
    }
    // Stop every torrent so nothing of this swarm keeps running (in virtual time) while the
    // next measurement runs on the same runtime.
    seed_handle.stop();
    for (_, h) in &keep {
        h.stop();
    }
    out
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn peer_wire_over_quic() {
    let l = Link {
        latency: Duration::from_millis(20),
        loss: 0.0,
        rate: Some(4 << 20),
    };
    let size = 2 << 20;
    let o = swarm(size, 1, &l, TransportMode::Quic, Duration::from_secs(120)).await;
    assert_eq!(o.secs.len(), 1, "leecher did not complete");
    // Metadata (BEP 9) comes over TCP in the metadata phase; pieces only over QUIC.
    assert!(o.quic >= size, "quic bytes {} < {size}", o.quic);
    assert_eq!(o.tcp, 0);
}

/// uTP (BEP 29) between two magnetfetch sessions on simnet, through a lossy link: every
/// payload byte over uTP, none over TCP or QUIC.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn peer_wire_over_utp() {
    let l = Link {
        latency: Duration::from_millis(20),
        loss: 0.01,
        rate: Some(4 << 20),
    };
    let size = 2 << 20;
    let o = swarm(size, 2, &l, TransportMode::Utp, Duration::from_secs(120)).await;
    assert_eq!(o.secs.len(), 2, "leechers did not complete");
    assert!(o.utp >= 2 * size, "utp bytes {} < {}", o.utp, 2 * size);
    assert_eq!((o.tcp, o.quic), (0, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn auto_races_and_prefers_quic() {
    let l = Link {
        latency: Duration::from_millis(20),
        loss: 0.0,
        rate: Some(4 << 20),
    };
    let size = 1 << 20;
    let o = swarm(size, 2, &l, TransportMode::Auto, Duration::from_secs(120)).await;
    assert_eq!(o.secs.len(), 2, "leechers did not complete");
    assert!(o.quic >= size, "quic {} tcp {}", o.quic, o.tcp);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn tcp_mode_never_uses_quic() {
    let l = Link {
        latency: Duration::from_millis(20),
        loss: 0.0,
        rate: Some(4 << 20),
    };
    let o = swarm(1 << 20, 1, &l, TransportMode::Tcp, Duration::from_secs(120)).await;
    assert_eq!(o.secs.len(), 1);
    assert_eq!(o.quic, 0);
    assert!(o.tcp >= 1 << 20);
}

/// `magnetfetch sim --transport quic`: a small DHT swarm where every seeder and
/// leecher runs its DHT node and QUIC on one UDP port; the payload moves over QUIC only.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sim_scenario_over_quic_with_dht() {
    let sc = Scenario {
        nodes: 20,
        leechers: 4,
        size: 1 << 20,
        piece_length: 64 << 10,
        latency: Duration::from_millis(20),
        duration: Duration::from_secs(600),
        transport: TransportMode::Quic,
        ..Scenario::default()
    };
    let r = magnetfetch::internals::sim::run(&sc).await.unwrap();
    assert_eq!(r.leechers_completed, 4, "{r:?}");
    assert!(r.transport_bytes.quic >= 4 << 20, "{:?}", r.transport_bytes);
    assert_eq!(r.transport_bytes.tcp, 0, "{:?}", r.transport_bytes);
    // The DHT worked on the shared socket: the leechers found the seeder through it.
    assert!(r.lookup_messages_median.is_some_and(|m| m > 0.0), "{r:?}");
}

/// `magnetfetch sim --transport utp`: the DHT and uTP share each node's UDP port (the uTP
/// task reads the socket and passes KRPC on); every payload byte goes over uTP.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sim_scenario_over_utp_with_dht() {
    let sc = Scenario {
        nodes: 20,
        leechers: 4,
        size: 1 << 20,
        piece_length: 64 << 10,
        latency: Duration::from_millis(20),
        duration: Duration::from_secs(600),
        transport: TransportMode::Utp,
        ..Scenario::default()
    };
    let r = magnetfetch::internals::sim::run(&sc).await.unwrap();
    assert_eq!(r.leechers_completed, 4, "{r:?}");
    assert!(r.transport_bytes.utp >= 4 << 20, "{:?}", r.transport_bytes);
    assert_eq!((r.transport_bytes.tcp, r.transport_bytes.quic), (0, 0));
    assert!(r.lookup_messages_median.is_some_and(|m| m > 0.0), "{r:?}");
}

/// The same swarm over TCP reports its bytes as TCP (the default transport).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sim_scenario_over_tcp_counts_tcp() {
    let sc = Scenario {
        nodes: 20,
        leechers: 4,
        size: 1 << 20,
        piece_length: 64 << 10,
        latency: Duration::from_millis(20),
        duration: Duration::from_secs(600),
        ..Scenario::default()
    };
    let r = magnetfetch::internals::sim::run(&sc).await.unwrap();
    assert_eq!(r.leechers_completed, 4, "{r:?}");
    assert_eq!(r.transport_bytes.quic, 0, "{:?}", r.transport_bytes);
    assert!(r.transport_bytes.tcp >= 4 << 20, "{:?}", r.transport_bytes);
}

/// A seeder that quits mid-transfer (`magnetfetch seed` on Ctrl-C: stop the
/// torrent, shut the session down, exit) is dropped by its QUIC leecher at once. Before,
/// nothing told the leecher (no kernel closes a QUIC connection for a dead process) and it
/// counted the seeder until its 60 s idle timeout. Now the stopped torrent's peer tasks end
/// (their writer's end ends the connection), each dropped stream resets its send half and
/// closes the connection once the data in flight is acknowledged, and `Session::shutdown`
/// waits (≤ 0.5 s) for that and closes what is left.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stopped_seeder_is_dropped_by_its_quic_leecher_at_once() {
    let l = Link {
        latency: Duration::from_millis(20),
        loss: 0.0,
        // 4 MiB at 256 KiB/s: the leecher is mid-download when the seeder stops.
        rate: Some(256 << 10),
    };
    let net = simnet::Network::new(7);
    let sc = Scenario {
        size: 4 << 20,
        piece_length: 64 << 10,
        ..Scenario::default()
    };
    let meta = make_metainfo(&sc).unwrap();
    let seeder = session(&net, 0, &l, TransportMode::Quic).await;
    let mut seeding = seeder.add(crate::support::sim_seeding(&meta, sc.seed));
    let leecher = session(&net, 1, &l, TransportMode::Quic).await;
    let mut magnet = Magnet::new(meta.info_hash);
    magnet.peers = vec![PeerAddr::Ip(SocketAddr::new(ip(0), PORT))];
    let mut add = AddTorrent::new(
        Source::Magnet(magnet),
        StorageSpec::Generated {
            seed: sc.seed,
            complete: false,
        },
    );
    add.swarm.blocking_io = false;
    let leeching = leecher.add(add);
    let mut p = leeching.progress();
    let downloading = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let pr = p.borrow_and_update().clone();
            if pr.peers == 1 && pr.verified > 0 && pr.transport_bytes.quic > 0 {
                return pr;
            }
            p.changed().await.unwrap();
        }
    })
    .await
    .expect("the leecher never downloaded from the seeder");
    assert!(
        downloading.verified < downloading.total,
        "finished too early"
    );
    let t0 = tokio::time::Instant::now();
    // What `magnetfetch seed` does on Ctrl-C, then the process exits: its host goes down
    // (packets to it are dropped, it sends nothing more).
    seeding.stop();
    seeding.join().await.unwrap();
    seeder.shutdown().await;
    drop(seeder);
    net.host(ip(0)).unwrap().down();
    let gone = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if p.borrow_and_update().peers == 0 {
                return;
            }
            p.changed().await.unwrap();
        }
    })
    .await;
    let after = t0.elapsed();
    eprintln!("stopped QUIC seeder dropped by the leecher after {after:?}");
    assert!(
        gone.is_ok(),
        "the leecher still counts the seeder after {after:?}"
    );
    assert!(
        after <= Duration::from_secs(2),
        "dropped only after {after:?}"
    );
    leeching.stop();
}

fn mode_name(m: TransportMode) -> &'static str {
    m.as_str()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
#[ignore = "measurement; see docs/benchmarks.md"]
async fn measure_two_peers_100ms_rtt() {
    // 25 ms per access link: 50 ms one way host to host, 100 ms RTT. 5 MiB/s links.
    let size: u64 = std::env::var("MF_SIZE_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
        << 20;
    let rate: u64 = std::env::var("MF_RATE_KIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5120)
        << 10;
    let modes: Vec<TransportMode> = std::env::var("MF_MODES")
        .unwrap_or_else(|_| "quic,tcp".into())
        .split(',')
        .filter_map(|m| m.parse().ok())
        .collect();
    let losses: Vec<f64> = std::env::var("MF_LOSS_PCT")
        .unwrap_or_else(|_| "0,1,3".into())
        .split(',')
        .filter_map(|m| m.parse::<f64>().ok().map(|p| p / 100.0))
        .collect();
    for &loss in &losses {
        for &mode in &modes {
            let l = Link {
                latency: Duration::from_millis(25),
                loss,
                rate: (rate > 0).then_some(rate),
            };
            let wall = std::time::Instant::now();
            let o = swarm(size, 1, &l, mode, Duration::from_secs(900)).await;
            let t = o.secs.first().copied();
            println!(
                "two peers, 100 ms RTT, loss {:.0}%, {}: {} (quic {} B, tcp {} B, wall {:.1}s)",
                loss * 100.0,
                mode_name(mode),
                t.map_or("did not finish".to_string(), |t| format!(
                    "{t:.2} s simulated, {:.2} MiB/s",
                    size as f64 / t / 1048576.0
                )),
                o.quic,
                o.tcp,
                wall.elapsed().as_secs_f64()
            );
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
#[ignore = "measurement; see docs/benchmarks.md"]
async fn measure_50_leechers() {
    let size = 16 << 20;
    for mode in [TransportMode::Tcp, TransportMode::Quic] {
        let l = Link {
            latency: Duration::from_millis(25),
            loss: 0.0,
            rate: Some(2 << 20),
        };
        let wall = std::time::Instant::now();
        let o = swarm(size, 50, &l, mode, Duration::from_secs(1800)).await;
        let med = o.secs.get(o.secs.len() / 2).copied().unwrap_or(f64::NAN);
        let last = o.secs.last().copied().unwrap_or(f64::NAN);
        println!(
            "50 leechers, 16 MiB, 2 MiB/s links, 50 ms RTT, {}: {}/50 done, median {med:.1} s, last {last:.1} s (quic {} B, tcp {} B, wall {:.1}s)",
            mode_name(mode),
            o.secs.len(),
            o.quic,
            o.tcp,
            wall.elapsed().as_secs_f64()
        );
    }
}
