//! Interop (BEP 9/10 over BEP 3) with libtorrent on loopback: we fetch metadata from a
//! libtorrent seeder, and libtorrent fetches metadata from our metadata server.
//! The libtorrent side is a small embedded Python script run with `/usr/bin/python3`.
//! SKIPs loudly when python3-libtorrent is missing, FAILs then if
//! MAGNETFETCH_REQUIRE_INTEROP=1. uTP, DHT, LSD, UPnP are off: plain TCP between two
//! loopback addresses.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::net::Net;
use magnetfetch::internals::session::{fetch_metadata_stats, serve_metadata, FetchConfig};
use sha1::{Digest, Sha1};
use tokio::sync::mpsc;

use crate::support::{require_or_skip, LtPeer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_metadata_from_libtorrent_seeder() {
    if !require_or_skip("libtorrent") {
        return;
    }
    let mut seeder = LtPeer::spawn("metadata", &["seed", "127.0.0.61", "24000000"]);
    let j = seeder.json_line().await;
    assert_eq!(j["seeding"], true, "libtorrent did not start seeding: {j}");
    let port = j["port"].as_u64().unwrap() as u16;
    let ih = Id20::from_hex(j["info_hash"].as_str().unwrap()).unwrap();
    let expected = hex::decode(j["info"].as_str().unwrap()).unwrap();

    let (tx, rx) = mpsc::channel(1);
    tx.send(SocketAddr::from(([127, 0, 0, 61], port)))
        .await
        .unwrap();
    let cfg = FetchConfig {
        timeout: Duration::from_secs(20),
        ..FetchConfig::default()
    };
    let mut our_id = *b"-MF0100-interop00001";
    our_id[19] = b'7';
    let got = fetch_metadata_stats(Net::Tokio, ih, Id20(our_id), rx, cfg)
        .await
        .expect("metadata from libtorrent");
    let digest: [u8; 20] = Sha1::digest(&got.info).into();
    assert_eq!(Id20(digest), ih);
    assert_eq!(got.info, expected);
    assert!(got.info.len() > 16384, "want a multi-piece info dict");
    eprintln!(
        "libtorrent -> magnetfetch: {} B of metadata, {:?} from connected peer to verified",
        got.info.len(),
        got.since_first_peer
    );
}

/// A valid single-file info dictionary (BEP 3) of `n` 16 KiB pieces. The piece hashes are
/// arbitrary: libtorrent only needs the metadata, it never gets data from us. With 1500
/// pieces the dictionary is ~30 KB, i.e. two ut_metadata pieces.
fn info_dict(n: usize) -> Vec<u8> {
    let mut d = format!(
        "d6:lengthi{}e4:name8:test.bin12:piece lengthi16384e6:pieces{}:",
        n * 16384,
        n * 20
    )
    .into_bytes();
    for i in 0..n {
        let h: [u8; 20] = Sha1::digest((i as u64).to_be_bytes()).into();
        d.extend_from_slice(&h);
    }
    d.push(b'e');
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_fetches_metadata_from_us() {
    if !require_or_skip("libtorrent") {
        return;
    }
    let info = info_dict(1500);
    assert!(info.len() > 16384);
    let ih = Id20(Sha1::digest(&info).into());
    let l = Net::Tokio
        .listen(SocketAddr::from(([127, 0, 0, 62], 0)))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(serve_metadata(
        l,
        ih,
        Id20(*b"-MF0100-interopserve"),
        Bytes::from(info.clone()),
        4,
    ));
    let mut leecher = LtPeer::spawn(
        "metadata",
        &["leech", "127.0.0.63", &ih.to_hex(), &addr.to_string()],
    );
    let j = leecher.json_line().await;
    server.abort();
    assert_eq!(
        j["ok"], true,
        "libtorrent did not get metadata from us: {j}"
    );
    assert_eq!(hex::decode(j["info"].as_str().unwrap()).unwrap(), info);
    eprintln!("magnetfetch -> libtorrent: metadata in {} s", j["secs"]);
}
