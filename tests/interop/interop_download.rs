//! Interop of the whole download/seed engine (BEP 3 pieces after BEP 9/10 metadata) with
//! libtorrent on loopback, plain TCP (DHT, uTP, LSD, UPnP off; peers given explicitly):
//! (a) our Session fetches a bare magnet from a libtorrent seeder;
//! (b) a libtorrent leecher fetches a magnet from our Session seeding from disk.
//! The libtorrent side is a small embedded Python script run with `/usr/bin/python3`.
//! SKIPs loudly when python3-libtorrent is missing, FAILs then if
//! MAGNETFETCH_REQUIRE_INTEROP=1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use magnetfetch::internals::id::Id20;
use magnetfetch::internals::magnet::Magnet;
use magnetfetch::internals::metainfo::{create, CreateOptions};
use magnetfetch::internals::session::{AddTorrent, Source, StorageSpec};

use crate::support::{loopback_session, random_bytes, require_or_skip, seed_from_disk, LtPeer};

const SIZE: usize = 4 * 1024 * 1024 + 12345;

/// The two tests run one after the other: with both libtorrent sessions up at once the
/// fresh seeder of the first one sometimes stalled (2 of 3 runs on a quiet machine).
pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_from_libtorrent_seeder() {
    let _serial = SERIAL.lock().await;
    if !require_or_skip("libtorrent") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let data = random_bytes(SIZE, 41);
    let path = src.path().join("lt_payload.bin");
    std::fs::write(&path, &data).unwrap();

    let mut seeder = LtPeer::spawn("download", &["seed", "127.0.0.41", path.to_str().unwrap()]);
    let j = seeder.json_line().await;
    assert_eq!(j["seeding"], true, "libtorrent did not start seeding: {j}");
    let port = j["port"].as_u64().unwrap() as u16;
    let ih = Id20::from_hex(j["info_hash"].as_str().unwrap()).unwrap();

    let leecher = loopback_session([127, 0, 0, 42], 42).await;
    let mut add = AddTorrent::new(
        Source::Magnet(Magnet::new(ih)),
        StorageSpec::Disk(dst.path().to_path_buf()),
    );
    add.peers.push(SocketAddr::from(([127, 0, 0, 41], port)));
    let t0 = Instant::now();
    // Generous: a fresh libtorrent seeder sometimes drops its first connection mid-transfer
    // and we reconnect after a back-off (seen once in CI at 20 s); a healthy run takes ~1 s.
    let out = tokio::time::timeout(Duration::from_secs(60), leecher.add(add).wait())
        .await
        .expect("download from libtorrent timed out")
        .expect("download from libtorrent failed");
    assert!(out.summary.complete, "not complete: {:?}", out.summary);
    assert_eq!(out.metainfo.info_hash, ih);
    assert!(
        out.metadata_ms.is_some(),
        "metadata came from the peer (BEP 9)"
    );
    let got = std::fs::read(dst.path().join("lt_payload.bin")).expect("downloaded file");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "downloaded bytes differ from the seeded file");
    eprintln!(
        "libtorrent -> magnetfetch: {} bytes in {:?} (metadata {:?} ms)",
        data.len(),
        t0.elapsed(),
        out.metadata_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_downloads_from_our_seeder() {
    let _serial = SERIAL.lock().await;
    if !require_or_skip("libtorrent") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let data = random_bytes(SIZE, 43);
    let path = src.path().join("mf_payload.bin");
    std::fs::write(&path, &data).unwrap();
    let meta = Arc::new(
        create(
            &path,
            &CreateOptions {
                piece_length: Some(64 * 1024),
                ..Default::default()
            },
        )
        .unwrap(),
    );

    let seeder = loopback_session([127, 0, 0, 43], 43).await;
    let seeding = seed_from_disk(&seeder, &meta, src.path()).await;

    let addr = seeder.listen_addr().unwrap().to_string();
    let dst_s = dst.path().to_str().unwrap().to_string();
    let ih = meta.info_hash.to_hex();
    let mut leecher = LtPeer::spawn("download", &["leech", "127.0.0.44", &ih, &addr, &dst_s]);
    let j = leecher.json_line().await;
    assert_eq!(j["ok"], true, "libtorrent did not download from us: {j}");
    let file = PathBuf::from(j["file"].as_str().unwrap());
    assert!(file.starts_with(dst.path()));
    let got = std::fs::read(&file).expect("libtorrent's file");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "libtorrent's bytes differ from ours");
    seeding.stop();
    let s = seeding.wait().await.unwrap();
    assert!(s.summary.uploaded >= data.len() as u64);
    eprintln!(
        "magnetfetch -> libtorrent: {} bytes in {} s",
        data.len(),
        j["secs"]
    );
}
