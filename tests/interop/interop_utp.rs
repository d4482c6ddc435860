//! uTP (BEP 29) interop with libtorrent over loopback, libtorrent with TCP disabled (mode
//! `download` of `benches/lt_helper.py` with `ENC:utp`), in the clear and with libtorrent's
//! encryption **forced** (`forced`: RC4 only both ways, a plaintext handshake is dropped), so
//! MSE/PE runs over uTP too:
//! (a) our uTP-only session downloads from a uTP-only libtorrent seeder;
//! (b) a uTP-only libtorrent leecher downloads from our seeder.
//! Small files: libtorrent's own uTP is slow on loopback.
//! SKIPs loudly without python3-libtorrent, FAILs then under MAGNETFETCH_REQUIRE_INTEROP=1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use magnetfetch::internals::dial::{Encryption, TransportMode};
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::magnet::Magnet;
use magnetfetch::internals::metainfo::{create, CreateOptions};
use magnetfetch::internals::session::{AddTorrent, Source, StorageSpec};

use crate::interop_download::SERIAL;
use crate::support::{loopback_session_on, random_bytes, require_or_skip, seed_from_disk, LtPeer};

const SIZE: usize = 512 * 1024 + 77;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_download_from_a_utp_only_libtorrent_seeder() {
    from_utp_lt_seeder("default", Encryption::Prefer, 29).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_download_from_a_utp_only_libtorrent_seeder_that_forces_encryption() {
    from_utp_lt_seeder("forced", Encryption::Require, 31).await;
}

/// Our uTP-only session with `ours` fetches from a uTP-only libtorrent seeder whose
/// encryption policy is `lt_enc`.
async fn from_utp_lt_seeder(lt_enc: &str, ours: Encryption, seed: u64) {
    let _serial = SERIAL.lock().await;
    if !require_or_skip("libtorrent") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let data = random_bytes(SIZE, seed);
    let path = src.path().join("lt_utp.bin");
    std::fs::write(&path, &data).unwrap();
    let enc = format!("{lt_enc}:utp");
    let mut seeder = LtPeer::spawn(
        "download",
        &["seed", "127.0.0.229", path.to_str().unwrap(), &enc],
    );
    let j = seeder.json_line().await;
    assert_eq!(j["seeding"], true, "libtorrent did not start seeding: {j}");
    let port = j["port"].as_u64().unwrap() as u16;
    let ih = Id20::from_hex(j["info_hash"].as_str().unwrap()).unwrap();
    let dst = tempfile::tempdir().unwrap();
    let leecher = loopback_session_on([127, 0, 0, 230], 230, TransportMode::Utp, ours).await;
    let mut add = AddTorrent::new(
        Source::Magnet(Magnet::new(ih)),
        StorageSpec::Disk(dst.path().to_path_buf()),
    );
    add.peers.push(SocketAddr::from(([127, 0, 0, 229], port)));
    let out = tokio::time::timeout(Duration::from_secs(80), leecher.add(add).wait())
        .await
        .unwrap_or_else(|_| panic!("{enc}: download from uTP-only libtorrent timed out"))
        .unwrap_or_else(|e| panic!("{enc}: download from uTP-only libtorrent failed: {e}"));
    assert!(out.summary.complete, "not complete: {:?}", out.summary);
    assert!(out.summary.transport_bytes.utp >= SIZE as u64);
    assert_eq!(out.summary.transport_bytes.tcp, 0);
    let got = std::fs::read(dst.path().join("lt_utp.bin")).expect("downloaded file");
    assert!(got == data, "downloaded bytes differ from the seeded file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utp_only_libtorrent_downloads_from_our_seeder() {
    to_utp_lt_leecher("default", Encryption::Prefer, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utp_only_libtorrent_forcing_encryption_downloads_from_our_seeder() {
    to_utp_lt_leecher("forced", Encryption::Require, 32).await;
}

/// A uTP-only libtorrent leecher with policy `lt_enc` fetches from our uTP-only seeder
/// with `ours`.
async fn to_utp_lt_leecher(lt_enc: &str, ours: Encryption, seed: u64) {
    let _serial = SERIAL.lock().await;
    if !require_or_skip("libtorrent") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let data = random_bytes(SIZE, seed);
    let path = src.path().join("mf_utp.bin");
    std::fs::write(&path, &data).unwrap();
    let opts = CreateOptions {
        piece_length: Some(64 * 1024),
        ..Default::default()
    };
    let meta = Arc::new(create(&path, &opts).unwrap());
    let seeder = loopback_session_on([127, 0, 0, 231], 231, TransportMode::Utp, ours).await;
    let seeding = seed_from_disk(&seeder, &meta, src.path()).await;
    let addr = seeder.listen_addr().unwrap().to_string();
    let dst = tempfile::tempdir().unwrap();
    let dst_s = dst.path().to_str().unwrap().to_string();
    let ih = meta.info_hash.to_hex();
    let enc = format!("{lt_enc}:utp");
    let mut leecher = LtPeer::spawn(
        "download",
        &["leech", "127.0.0.232", &ih, &addr, &dst_s, &enc],
    );
    let j = leecher.json_line().await;
    assert_eq!(
        j["ok"], true,
        "{enc} libtorrent did not download from us: {j}"
    );
    let file = PathBuf::from(j["file"].as_str().unwrap());
    let got = std::fs::read(&file).expect("libtorrent's file");
    assert!(got == data, "libtorrent's bytes differ");
    seeding.stop();
    let s = seeding.wait().await.unwrap();
    assert!(s.summary.uploaded >= data.len() as u64);
    assert!(
        s.summary.transport_bytes.utp >= data.len() as u64,
        "not sent over uTP: {:?}",
        s.summary.transport_bytes
    );
    assert_eq!(s.summary.transport_bytes.tcp, 0);
}
