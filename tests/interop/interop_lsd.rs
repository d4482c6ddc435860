//! Local Service Discovery (BEP 14) with libtorrent on loopback (addresses 127.0.0.220-225):
//! no DHT, no tracker, no peer given on either side. magnetfetch hears libtorrent's
//! announces and downloads from it; libtorrent hears ours and downloads from us. Needs
//! python3-libtorrent (SKIP, or FAIL under `MAGNETFETCH_REQUIRE_INTEROP=1`) and IPv4
//! multicast on `lo` ([`loopback_multicast`], skipped loudly where the kernel refuses).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use magnetfetch::internals::dial::{DialConfig, TransportMode};
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::magnet::Magnet;
use magnetfetch::internals::metainfo::{create, CreateOptions};
use magnetfetch::internals::session::{
    AddTorrent, Phase, Session, SessionConfig, Source, StorageSpec,
};

use crate::support::{loopback_multicast, random_bytes, require_or_skip, LtPeer};

async fn lan_session(ip: [u8; 4]) -> Session {
    Session::start(SessionConfig {
        listen: Some(SocketAddr::from((ip, 0))),
        rng_seed: Some(u64::from(ip[3])),
        dht: None,
        trackers: None,
        transport: DialConfig {
            mode: TransportMode::Tcp,
            ..Default::default()
        },
        ..SessionConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magnetfetch_finds_libtorrent_over_lsd() {
    if !require_or_skip("libtorrent") || !loopback_multicast() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(600_000, 0x15d0_0220);
    let file = dir.path().join("lt-lsd.bin");
    std::fs::write(&file, &data).unwrap();
    let mut lt = LtPeer::spawn("lsd", &["seed", "127.0.0.220", file.to_str().unwrap()]);
    let j = lt.json_line().await;
    assert_eq!(j["seeding"], true, "libtorrent did not start seeding: {j}");
    let ih = Id20::from_hex(j["info_hash"].as_str().unwrap()).unwrap();
    let lt_addr = format!("127.0.0.220:{}", j["port"]);

    let session = lan_session([127, 0, 0, 221]).await;
    let mut add = AddTorrent::new(
        Source::Magnet(Magnet::new(ih)),
        StorageSpec::Disk(dir.path().join("got")),
    );
    add.lsd = true;
    add.metadata_timeout = Duration::from_secs(40);
    // Kept running after completion: the peer sources are published once a second.
    add.swarm.keep_seeding = true;
    let h = session.add(add);
    let mut prog = h.progress();
    let started = std::time::Instant::now();
    let sources = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            {
                let p = prog.borrow_and_update();
                if p.phase == Phase::Seeding && p.sources.lsd >= 1 {
                    return p.sources;
                }
            }
            prog.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no complete download with libtorrent ({lt_addr}) heard over LSD within 60 s: {:?}",
            prog.borrow()
        )
    });
    let got = std::fs::read(dir.path().join("got/lt-lsd.bin")).unwrap();
    assert!(got == data, "downloaded data differs");
    h.stop();
    eprintln!(
        "magnetfetch <- libtorrent over LSD: {sources:?}, {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_finds_magnetfetch_over_lsd() {
    if !require_or_skip("libtorrent") || !loopback_multicast() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(600_000, 0x15d0_0222);
    let file = dir.path().join("mf-lsd.bin");
    std::fs::write(&file, &data).unwrap();
    let meta = Arc::new(
        create(
            &file,
            &CreateOptions {
                piece_length: Some(64 << 10),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    // libtorrent first: its own announce finds nobody, so only ours can bring it to us.
    let lt_dir = dir.path().join("lt");
    std::fs::create_dir_all(&lt_dir).unwrap();
    let mut lt = LtPeer::spawn(
        "lsd",
        &[
            "leech",
            "127.0.0.223",
            &meta.info_hash.to_hex(),
            lt_dir.to_str().unwrap(),
            "40",
        ],
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let session = lan_session([127, 0, 0, 222]).await;
    let mut add = AddTorrent::new(
        Source::Metainfo(meta.clone()),
        StorageSpec::Disk(dir.path().to_path_buf()),
    );
    add.swarm.keep_seeding = true;
    add.lsd = true;
    let seeding = session.add(add);
    let j = lt.json_line().await;
    assert_eq!(j["ok"], true, "libtorrent did not download from us: {j}");
    let ours = format!("127.0.0.222:{}", session.listen_addr().unwrap().port());
    let heard: Vec<&str> = j["lsd_peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(
        heard.contains(&ours.as_str()),
        "libtorrent's LSD peers {heard:?}, we are {ours}"
    );
    let got = std::fs::read(lt_dir.join("mf-lsd.bin")).unwrap();
    assert!(got == data, "libtorrent's copy differs");
    // libtorrent connected to us from another address: we are reachable.
    let st = session.reachability().await;
    assert_eq!(st.reachable.as_str(), "yes", "{st:?}");
    assert_eq!(seeding.progress().borrow().phase, Phase::Seeding);
    seeding.stop();
    eprintln!("libtorrent <- magnetfetch over LSD in {} s", j["secs"]);
}
