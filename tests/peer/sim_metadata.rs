//! Over simnet: metadata (BEP 9) from 1 and from 20 peers, and a peer that accepts
//! the connection but never answers does not stall the fetch, and peers serving corrupt
//! metadata do not stop it. Virtual time, no sleeps.

use std::net::SocketAddr;
use std::time::Duration;

use magnetfetch::internals::magnet::Magnet;
use magnetfetch::internals::metainfo::Metainfo;
use magnetfetch::internals::net::Net;
use magnetfetch::internals::session::{AddTorrent, Source, StorageSpec};
use magnetfetch::internals::sim::{make_metainfo, Scenario};

/// A download of `meta` from its magnet link only, from `peers`.
fn leeching(meta: &std::sync::Arc<Metainfo>, sc: &Scenario, peers: Vec<SocketAddr>) -> AddTorrent {
    let mut add = AddTorrent::new(
        Source::Magnet(Magnet::new(meta.info_hash)),
        StorageSpec::Generated {
            seed: sc.seed,
            complete: false,
        },
    );
    add.peers = peers;
    add.swarm.blocking_io = false;
    add
}

/// Starts `seeders` seeders and one leecher that knows them (and `silent` first); returns
/// the leecher's time to metadata in ms.
async fn fetch(seeders: usize, silent: bool) -> u64 {
    fetch_with(seeders, silent, 0).await
}

/// Like [`fetch`], with `liars` peers (listed first) serving metadata of the right size whose
/// bytes are corrupt: its SHA-1 cannot match the info-hash.
async fn fetch_with(seeders: usize, silent: bool, liars: usize) -> u64 {
    let net = simnet::Network::new(7);
    let sc = Scenario {
        size: 20 << 20,
        piece_length: 16 << 10, // 1280 pieces: a 25 KB info dict, two metadata pieces
        ..Scenario::default()
    };
    let meta = make_metainfo(&sc).unwrap();
    assert!(meta.raw_info.len() > 16 << 10);
    let mut peers: Vec<SocketAddr> = Vec::new();
    let mut keep = Vec::new();
    if silent {
        // Accepts TCP connections and holds them without a byte in reply.
        let h = net.add_host("127.1.0.1".parse().unwrap()).unwrap();
        let l = h.listen("127.1.0.1:6881".parse().unwrap()).await.unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        peers.push("127.1.0.1:6881".parse().unwrap());
    }
    for i in 0..liars {
        let ip = format!("127.3.0.{}", i + 1);
        let h = net.add_host(ip.parse().unwrap()).unwrap();
        let addr: SocketAddr = format!("{ip}:6881").parse().unwrap();
        let l = Net::Sim(h).listen(addr).await.unwrap();
        let mut bad = meta.raw_info.clone();
        for b in bad.iter_mut().skip(100).step_by(997) {
            *b ^= 0x5a;
        }
        let id = magnetfetch::internals::id::Id20([0x42 + i as u8; 20]);
        tokio::spawn(magnetfetch::internals::session::serve_metadata(
            l,
            meta.info_hash,
            id,
            bytes::Bytes::from(bad),
            8,
        ));
        peers.push(addr);
    }
    for i in 0..seeders {
        let ip = format!("127.0.0.{}", i + 1);
        let s = crate::support::sim_session(&net, &ip, i as u64).await;
        keep.push((
            s.clone(),
            s.add(crate::support::sim_seeding(&meta, sc.seed)),
        ));
        peers.push(s.listen_addr().unwrap());
    }
    let leecher = crate::support::sim_session(&net, "127.2.0.1", 99).await;
    let mut add = leeching(&meta, &sc, peers);
    add.metadata_timeout = Duration::from_secs(60);
    let out = leecher.add(add).wait().await.expect("download failed");
    assert!(out.summary.complete);
    assert_eq!(out.metainfo.info_hash, meta.info_hash);
    out.metadata_ms.expect("started from a magnet")
}

#[tokio::test(start_paused = true)]
async fn metadata_from_one_peer() {
    let ms = fetch(1, false).await;
    // A few round trips of 40 ms (connect, handshakes, pieces), nothing more.
    assert!(ms < 1000, "{ms} ms");
}

#[tokio::test(start_paused = true)]
async fn metadata_from_twenty_peers() {
    let ms = fetch(20, false).await;
    assert!(ms < 1000, "{ms} ms");
}

#[tokio::test(start_paused = true)]
async fn silent_peer_does_not_stall_metadata() {
    let ms = fetch(3, true).await;
    // Well below the handshake timeout (10 s) a silent peer would cost if it blocked us.
    assert!(ms < 2000, "{ms} ms");
}

#[tokio::test(start_paused = true)]
async fn corrupt_metadata_peers_do_not_stop_the_fetch() {
    // Two liars are asked first; the fetch must detect the SHA-1 mismatch, drop them and
    // finish from the honest seeders (and the download then completes from them).
    let ms = fetch_with(3, false, 2).await;
    assert!(ms < 5000, "{ms} ms");
}

/// The download goes over the connection the metadata came on (the fetch hands it to the
/// swarm, with the seeder's `have all` it received meanwhile): the seeder accepts the
/// leecher once, where re-dialling after the metadata made it twice.
#[tokio::test(start_paused = true)]
async fn download_reuses_the_metadata_connection() {
    let net = simnet::Network::new(7);
    let sc = Scenario {
        size: 1 << 20,
        piece_length: 16 << 10,
        ..Scenario::default()
    };
    let meta = make_metainfo(&sc).unwrap();
    let seeder = crate::support::sim_session(&net, "127.0.0.1", 1).await;
    let seeding = seeder.add(crate::support::sim_seeding(&meta, sc.seed));
    let leecher = crate::support::sim_session(&net, "127.2.0.1", 99).await;
    let add = leeching(&meta, &sc, vec![seeder.listen_addr().unwrap()]);
    let out = leecher.add(add).wait().await.expect("download failed");
    assert!(out.summary.complete);
    // The seeder publishes its counters every tick: read them at the first one after.
    let mut p = seeding.progress();
    p.borrow_and_update();
    p.changed().await.unwrap();
    assert_eq!(
        p.borrow().sources.incoming,
        1,
        "the leecher connected again"
    );
}
