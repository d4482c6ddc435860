//! MSE/PE interop with libtorrent over loopback TCP, libtorrent's encryption **forced**
//! (`out_enc_policy`/`in_enc_policy` forced, `allowed_enc_level` RC4): libtorrent drops any
//! plaintext handshake, so these transfers run RC4 end to end.
//! (a) our session (`--encryption require`, then `prefer`) fetches a magnet from a forced
//!     libtorrent seeder;
//! (b) a forced libtorrent leecher fetches from our seeder (`require`);
//! (c) libtorrent forcing the MSE handshake but a plaintext stream after it
//!     (`allowed_enc_level` plaintext): our `prefer` seeder and leecher agree on that.
//! SKIPs loudly without python3-libtorrent, FAILs then under MAGNETFETCH_REQUIRE_INTEROP=1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use magnetfetch::internals::dial::Encryption;
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::magnet::Magnet;
use magnetfetch::internals::metainfo::{create, CreateOptions};
use magnetfetch::internals::session::{AddTorrent, Session, Source, StorageSpec};

use crate::interop_download::SERIAL;
use crate::support::{loopback_tcp_session, random_bytes, require_or_skip, seed_from_disk, LtPeer};

const SIZE: usize = 3 * 1024 * 1024 + 4321;

async fn session(ip: [u8; 4], enc: Encryption) -> Session {
    loopback_tcp_session(ip, u64::from(ip[3]), enc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_download_from_a_libtorrent_seeder_that_forces_encryption() {
    let _serial = SERIAL.lock().await;
    if !require_or_skip("libtorrent") {
        return;
    }
    from_lt_seeder("forced", &[Encryption::Require, Encryption::Prefer]).await;
}

/// Our sessions with each of `modes` fetch from one libtorrent seeder with policy `lt_enc`.
async fn from_lt_seeder(lt_enc: &str, modes: &[Encryption]) {
    let src = tempfile::tempdir().unwrap();
    let data = random_bytes(SIZE, 226);
    let path = src.path().join("lt_forced.bin");
    std::fs::write(&path, &data).unwrap();
    let mut seeder = LtPeer::spawn(
        "download",
        &["seed", "127.0.0.226", path.to_str().unwrap(), lt_enc],
    );
    let j = seeder.json_line().await;
    assert_eq!(j["seeding"], true, "libtorrent did not start seeding: {j}");
    let port = j["port"].as_u64().unwrap() as u16;
    let ih = Id20::from_hex(j["info_hash"].as_str().unwrap()).unwrap();
    for &enc in modes {
        let dst = tempfile::tempdir().unwrap();
        let leecher = session([127, 0, 0, 227], enc).await;
        let mut add = AddTorrent::new(
            Source::Magnet(Magnet::new(ih)),
            StorageSpec::Disk(dst.path().to_path_buf()),
        );
        add.peers.push(SocketAddr::from(([127, 0, 0, 226], port)));
        let t0 = Instant::now();
        let out = tokio::time::timeout(Duration::from_secs(60), leecher.add(add).wait())
            .await
            .unwrap_or_else(|_| panic!("{enc:?}: download from forced libtorrent timed out"))
            .unwrap_or_else(|e| panic!("{enc:?}: download from forced libtorrent failed: {e}"));
        assert!(out.summary.complete, "not complete: {:?}", out.summary);
        let got = std::fs::read(dst.path().join("lt_forced.bin")).expect("downloaded file");
        assert!(got == data, "downloaded bytes differ from the seeded file");
        eprintln!(
            "{lt_enc} libtorrent -> magnetfetch ({}): {} bytes in {:?}",
            enc.as_str(),
            data.len(),
            t0.elapsed()
        );
        // The second leecher takes the same address: this one goes first.
        drop(leecher);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_libtorrent_leecher_that_forces_encryption_downloads_from_us() {
    let _serial = SERIAL.lock().await;
    if !require_or_skip("libtorrent") {
        return;
    }
    to_lt_leecher("forced", Encryption::Require).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_forcing_mse_with_a_plaintext_stream_works_with_prefer() {
    let _serial = SERIAL.lock().await;
    if !require_or_skip("libtorrent") {
        return;
    }
    from_lt_seeder("forced-plaintext", &[Encryption::Prefer]).await;
    to_lt_leecher("forced-plaintext", Encryption::Prefer).await;
}

/// A libtorrent leecher with policy `lt_enc` fetches from our seeder with `ours`.
async fn to_lt_leecher(lt_enc: &str, ours: Encryption) {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let data = random_bytes(SIZE, 228);
    let path = src.path().join("mf_forced.bin");
    std::fs::write(&path, &data).unwrap();
    let opts = CreateOptions {
        piece_length: Some(64 * 1024),
        ..Default::default()
    };
    let meta = Arc::new(create(&path, &opts).unwrap());
    let seeder = session([127, 0, 0, 228], ours).await;
    let seeding = seed_from_disk(&seeder, &meta, src.path()).await;
    let addr = seeder.listen_addr().unwrap().to_string();
    let dst_s = dst.path().to_str().unwrap().to_string();
    let ih = meta.info_hash.to_hex();
    let mut leecher = LtPeer::spawn(
        "download",
        &["leech", "127.0.0.229", &ih, &addr, &dst_s, lt_enc],
    );
    let j = leecher.json_line().await;
    assert_eq!(
        j["ok"], true,
        "forced libtorrent did not download from us: {j}"
    );
    let file = PathBuf::from(j["file"].as_str().unwrap());
    let got = std::fs::read(&file).expect("libtorrent's file");
    assert!(got == data, "libtorrent's bytes differ from ours");
    seeding.stop();
    let s = seeding.wait().await.unwrap();
    assert!(s.summary.uploaded >= data.len() as u64);
    eprintln!(
        "magnetfetch ({}) -> {lt_enc} libtorrent: {} bytes in {} s",
        ours.as_str(),
        data.len(),
        j["secs"]
    );
}
