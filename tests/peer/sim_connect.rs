//! The connection phase of a flash crowd: a seed at its connection limit still
//! gives refused peers its metadata and a PEX list (`session::courtesy`), so nobody waits
//! for a DHT round to find another source. And a peer whose bitfield has the wrong length
//! is dropped as it arrives (BEP 3), also on a connection handed over by the metadata
//! fetch. Virtual time, no sleeps.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::magnet::{Magnet, PeerAddr};
use magnetfetch::internals::net::Net;
use magnetfetch::internals::peer::extension::{ExtHandshake, UT_METADATA, UT_METADATA_ID};
use magnetfetch::internals::peer::metadata::serve_request;
use magnetfetch::internals::peer::{Message, MetadataMsg, PeerConn};
use magnetfetch::internals::session::{AddTorrent, Source, StorageSpec};
use magnetfetch::internals::sim::{make_metainfo, run, Scenario};
use tokio::time::Instant;

/// 40 leechers find only the seed (DHT), whose limit is 2 + 20 slack: 18 are refused at
/// once. With the courtesy they get the metadata from the refusing seed in the same
/// round trip as the admitted ones; without it they waited for a second DHT lookup and a
/// leecher that already had the metadata (≥ 1.3 s here).
#[tokio::test(start_paused = true)]
async fn refused_peers_still_get_metadata_at_once() {
    let sc = Scenario {
        nodes: 50,
        leechers: 40,
        max_peers: 2,
        size: 1 << 20,
        piece_length: 64 << 10,
        latency: Duration::from_millis(20),
        duration: Duration::from_secs(300),
        ..Scenario::default()
    };
    let r = run(&sc).await.unwrap();
    assert_eq!(r.leechers_completed, 40, "{r:?}");
    let m = r.metadata_s.unwrap();
    assert!(m.max < 1.0, "refused peers waited for metadata: {m:?}");
}

/// 1 MiB in 64 pieces of 16 KiB (a correct bitfield is 8 bytes).
fn torrent_of_64_pieces() -> (
    Scenario,
    std::sync::Arc<magnetfetch::internals::metainfo::Metainfo>,
) {
    let sc = Scenario {
        size: 1 << 20,
        piece_length: 16 << 10,
        ..Scenario::default()
    };
    let meta = make_metainfo(&sc).unwrap();
    (sc, meta)
}

/// Reads from `conn` until the other side closes it; returns when that happened.
async fn closed_at(conn: &mut PeerConn) -> Instant {
    while conn.recv().await.is_ok() {}
    Instant::now()
}

/// BEP 3: a bitfield of the wrong length drops the connection. A peer that says it speaks
/// the extension protocol but sends a one-byte bitfield (the torrent has 64 pieces: 8 bytes)
/// and no extended handshake was dropped only when our 10 s wait for its extended handshake
/// ran out; now the bitfield is checked as it arrives.
#[tokio::test(start_paused = true)]
async fn short_bitfield_drops_the_peer_at_once() {
    let net = simnet::Network::new(7);
    let (sc, meta) = torrent_of_64_pieces();
    let seeder = crate::support::sim_session(&net, "10.0.0.1", 1).await;
    let _seeding = seeder.add(crate::support::sim_seeding(&meta, sc.seed));
    let fake = Net::Sim(net.add_host("10.0.0.2".parse().unwrap()).unwrap());
    let t = Duration::from_secs(5);
    let to = seeder.listen_addr().unwrap();
    let mut conn = PeerConn::connect(&fake, to, meta.info_hash, Id20([7; 20]), t, t)
        .await
        .unwrap();
    assert!(conn.extensions());
    let sent = Instant::now();
    conn.send(&Message::Bitfield(Bytes::from_static(&[0xff])))
        .await
        .unwrap();
    let after = closed_at(&mut conn).await - sent;
    eprintln!("short bitfield: dropped after {after:?}");
    assert!(after < Duration::from_secs(1), "dropped after {after:?}");
}

/// The same for a connection the metadata fetch hands to the swarm: the fake peer serves the
/// metadata and meanwhile sends a one-byte bitfield, which the fetch cannot check (it does
/// not know the piece count yet) and keeps for the swarm. The swarm must drop the peer as
/// soon as it takes the connection, not keep it.
#[tokio::test(start_paused = true)]
async fn handed_connection_with_short_bitfield_is_dropped() {
    let net = simnet::Network::new(7);
    let (sc, meta) = torrent_of_64_pieces();
    let fake_addr: SocketAddr = "10.0.0.2:6881".parse().unwrap();
    let fake = Net::Sim(net.add_host(fake_addr.ip()).unwrap());
    let listener = fake.listen(fake_addr).await.unwrap();
    let leecher = crate::support::sim_session(&net, "10.0.0.3", 3).await;
    let mut magnet = Magnet::new(meta.info_hash);
    magnet.peers = vec![PeerAddr::Ip(fake_addr)];
    let mut add = AddTorrent::new(
        Source::Magnet(magnet),
        StorageSpec::Generated {
            seed: sc.seed,
            complete: false,
        },
    );
    add.swarm.blocking_io = false;
    let _leeching = leecher.add(add);
    let (stream, from) = listener.accept().await.unwrap();
    let t = Duration::from_secs(5);
    // The leecher dials with MSE (`--encryption prefer`): answer it as a session would.
    let policy = magnetfetch::internals::peer::MsePolicy::new(
        magnetfetch::internals::peer::Encryption::Prefer,
        Some(7),
    );
    let mut conn = PeerConn::accept_any(
        stream,
        from,
        Id20([7; 20]),
        &policy,
        || vec![meta.info_hash],
        t,
    )
    .await
    .unwrap();
    let info = Bytes::from(meta.raw_info.clone());
    let ours = ExtHandshake::ours(None, Some(info.len() as u64), None);
    let theirs = conn.exchange_ext_handshake(&ours, t).await.unwrap();
    let ut = theirs.id_of(UT_METADATA).unwrap();
    conn.send(&Message::Bitfield(Bytes::from_static(&[0xff])))
        .await
        .unwrap();
    let mut served = None;
    let closed = loop {
        let Ok(m) = conn.recv().await else {
            break Instant::now();
        };
        if let Message::Extended {
            id: UT_METADATA_ID,
            payload,
        } = m
        {
            if let Ok(MetadataMsg::Request { piece }) = MetadataMsg::decode(&payload) {
                let reply = serve_request(&info, piece).encode();
                conn.writer.send_extended(ut, &reply).await.unwrap();
                served = Some(Instant::now());
            }
        }
    };
    let served = served.expect("the leecher never asked for the metadata");
    let after = closed - served;
    eprintln!("handed connection closed {after:?} after the metadata");
    assert!(
        after < Duration::from_secs(1),
        "dropped {after:?} after the metadata"
    );
}
