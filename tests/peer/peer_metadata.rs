//! Metadata exchange (BEP 9/10) end to end over real loopback sockets via `Net::Tokio`:
//! our fetcher against our metadata server, honest, lying and silent peers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::net::Net;
use magnetfetch::internals::peer::extension::ExtHandshake;
use magnetfetch::internals::peer::PeerConn;
use magnetfetch::internals::session::{
    fetch_metadata, fetch_metadata_stats, serve_metadata, FetchConfig, FetchError,
};
use rand::{RngCore, SeedableRng};
use sha1::{Digest, Sha1};
use tokio::sync::mpsc;

fn make_info(len: usize, seed: u64) -> (Bytes, Id20) {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    let h: [u8; 20] = Sha1::digest(&v).into();
    (Bytes::from(v), Id20(h))
}

fn pid(n: u8) -> Id20 {
    let mut id = *b"-MF0100-000000000000";
    id[19] = n;
    Id20(id)
}

/// Starts a metadata server on `ip` (port chosen by the OS) serving `info` for `ih`.
async fn server(ip: [u8; 4], ih: Id20, info: Bytes, n: u8) -> SocketAddr {
    let l = Net::Tokio
        .listen(SocketAddr::from((ip, 0)))
        .await
        .expect("listen");
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve_metadata(l, ih, pid(n), info, 8));
    addr
}

/// A peer that completes both handshakes, announces the metadata size, then never answers.
async fn silent_peer(ih: Id20, size: u64) -> SocketAddr {
    let l = Net::Tokio
        .listen("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, a)) = l.accept().await {
            let ours = ExtHandshake::ours(None, Some(size), None);
            if let Ok(mut c) =
                PeerConn::accept(s, a, pid(200), |h| *h == ih, Duration::from_secs(5)).await
            {
                if c.exchange_ext_handshake(&ours, Duration::from_secs(5))
                    .await
                    .is_ok()
                {
                    held.push(c); // keep the socket open, read nothing more
                }
            }
        }
    });
    addr
}

/// A peer that accepts TCP and then says nothing at all.
async fn mute_peer() -> SocketAddr {
    let l = Net::Tokio
        .listen("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

fn quick_cfg() -> FetchConfig {
    FetchConfig {
        connect_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_millis(800),
        piece_timeout: Duration::from_millis(500),
        timeout: Duration::from_secs(10),
        ..FetchConfig::default()
    }
}

#[tokio::test]
async fn fetch_from_one_peer() {
    let (info, ih) = make_info(50_000, 1);
    let a = server([127, 0, 0, 1], ih, info.clone(), 1).await;
    let (tx, rx) = mpsc::channel(8);
    tx.send(a).await.unwrap();
    let got = fetch_metadata_stats(Net::Tokio, ih, pid(0), rx, quick_cfg())
        .await
        .expect("fetch");
    assert_eq!(got.info, info.to_vec());
    assert_eq!(got.connected, 1);
    assert!(got.banned.is_empty());
    eprintln!(
        "metadata 50000 B from 1 peer: {:?} from first connected peer to verified",
        got.since_first_peer
    );
    assert!(got.since_first_peer < Duration::from_secs(1));
}

#[tokio::test]
async fn fetch_from_twenty_peers() {
    // 300 KB = 19 pieces, spread over 20 peers on 20 loopback addresses.
    let (info, ih) = make_info(300_000, 2);
    let (tx, rx) = mpsc::channel(32);
    for n in 0..20u8 {
        let a = server([127, 0, 0, 10 + n], ih, info.clone(), n + 1).await;
        tx.send(a).await.unwrap();
    }
    drop(tx);
    let got = fetch_metadata_stats(Net::Tokio, ih, pid(0), rx, quick_cfg())
        .await
        .expect("fetch");
    assert_eq!(got.info, info.to_vec());
    assert_eq!(got.tried, 20);
    assert!(got.connected >= 1);
    eprintln!(
        "metadata 300000 B from 20 peers: {:?} from first peer, {} connected",
        got.since_first_peer, got.connected
    );
}

#[tokio::test]
async fn corrupt_peers_are_banned_and_honest_ones_finish() {
    let (info, ih) = make_info(2 * 16384, 3);
    let mut bad = info.to_vec();
    bad[100] ^= 0xff;
    let bad = Bytes::from(bad);
    let liars = [
        server([127, 0, 1, 1], ih, bad.clone(), 1).await,
        server([127, 0, 1, 2], ih, bad.clone(), 2).await,
    ];
    let honest = [
        server([127, 0, 1, 3], ih, info.clone(), 3).await,
        server([127, 0, 1, 4], ih, info.clone(), 4).await,
    ];
    let (tx, rx) = mpsc::channel(8);
    for a in liars {
        tx.send(a).await.unwrap();
    }
    let feeder = tokio::spawn(async move {
        // Honest peers show up later (as from a slower DHT lookup), after the liars served
        // both pieces of the metadata.
        tokio::time::sleep(Duration::from_millis(400)).await;
        for a in honest {
            tx.send(a).await.unwrap();
        }
    });
    let got = fetch_metadata_stats(Net::Tokio, ih, pid(0), rx, quick_cfg())
        .await
        .expect("fetch despite liars");
    feeder.await.unwrap();
    assert_eq!(got.info, info.to_vec());
    assert!(!got.banned.is_empty(), "a liar must be banned");
    for b in &got.banned {
        assert!(liars.contains(b), "honest peer {b} banned");
    }
}

#[tokio::test]
async fn silent_and_mute_peers_do_not_stall() {
    let (info, ih) = make_info(10_000, 4);
    let silent = silent_peer(ih, info.len() as u64).await;
    let mute = mute_peer().await;
    let honest = server([127, 0, 2, 1], ih, info.clone(), 1).await;
    let (tx, rx) = mpsc::channel(8);
    tx.send(mute).await.unwrap();
    tx.send(silent).await.unwrap();
    let feeder = tokio::spawn(async move {
        // The silent peer gets the only piece first; the honest one arrives afterwards.
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(honest).await.unwrap();
    });
    let t0 = tokio::time::Instant::now();
    let got = fetch_metadata(Net::Tokio, ih, pid(0), rx, quick_cfg())
        .await
        .expect("fetch");
    feeder.await.unwrap();
    assert_eq!(got, info.to_vec());
    let took = t0.elapsed();
    eprintln!("fetch past a silent peer took {took:?}");
    // Piece timeout is 500 ms: the piece was reassigned, not waited on for the 10 s timeout.
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test(start_paused = true)]
async fn timeout_reports_peers_tried() {
    let (_, ih) = make_info(10, 5);
    let (tx, rx) = mpsc::channel::<SocketAddr>(1);
    drop(tx);
    let cfg = FetchConfig {
        timeout: Duration::from_secs(60),
        ..FetchConfig::default()
    };
    let err = fetch_metadata(Net::Tokio, ih, pid(0), rx, cfg)
        .await
        .unwrap_err();
    let FetchError::Timeout { tried, secs, .. } = &err;
    assert_eq!((*tried, *secs), (0, 60));
    assert!(err.to_string().contains("0 peers tried"), "{err}");
}

#[tokio::test]
async fn timeout_counts_dead_peers() {
    let (_, ih) = make_info(10, 6);
    // A port nobody listens on: take one and close it.
    let dead = {
        let l = Net::Tokio
            .listen("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        l.local_addr().unwrap()
    };
    let (tx, rx) = mpsc::channel(2);
    tx.send(dead).await.unwrap();
    let cfg = FetchConfig {
        timeout: Duration::from_secs(1),
        ..quick_cfg()
    };
    let err = fetch_metadata(Net::Tokio, ih, pid(0), rx, cfg)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1 peers tried"), "{err}");
}

#[tokio::test]
async fn liar_mixed_with_honest_peer_does_not_get_the_honest_one_banned() {
    // Both connected at once: the first attempt likely mixes their pieces, which proves
    // nothing; single-source retries must then pin the blame on the liar alone.
    let (info, ih) = make_info(3 * 16384, 7);
    let mut bad = info.to_vec();
    bad[20000] ^= 1;
    let liar = server([127, 0, 4, 1], ih, Bytes::from(bad), 1).await;
    let honest = server([127, 0, 4, 2], ih, info.clone(), 2).await;
    let (tx, rx) = mpsc::channel(2);
    tx.send(liar).await.unwrap();
    tx.send(honest).await.unwrap();
    let got = fetch_metadata_stats(Net::Tokio, ih, pid(0), rx, quick_cfg())
        .await
        .expect("fetch");
    assert_eq!(got.info, info.to_vec());
    assert!(!got.banned.contains(&honest), "honest peer banned");
    eprintln!("banned: {:?}", got.banned);
}
