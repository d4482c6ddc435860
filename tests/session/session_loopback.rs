//! End to end on real loopback sockets: a magnetfetch seeder and a magnetfetch leecher that
//! starts from a bare magnet link (metadata over BEP 9, pieces over BEP 3).

use std::sync::Arc;
use std::time::Duration;

use magnetfetch::internals::magnet::Magnet;
use magnetfetch::internals::metainfo::{create, CreateOptions};
use magnetfetch::internals::session::{AddTorrent, Source, StorageSpec};

use crate::support::{loopback_session, random_bytes, seed_from_disk};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magnet_to_file_from_our_seeder() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let data = random_bytes(3 * 1024 * 1024 + 12345, 7);
    let dir = src.path().join("payload");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.bin"), &data[..1_000_000]).unwrap();
    std::fs::write(dir.join("b.bin"), &data[1_000_000..]).unwrap();
    let meta = create(
        &dir,
        &CreateOptions {
            piece_length: Some(64 * 1024),
            ..Default::default()
        },
    )
    .unwrap();
    let meta = Arc::new(meta);

    let seeder = loopback_session([127, 0, 0, 1], 1).await;
    let seeding = seed_from_disk(&seeder, &meta, src.path()).await;

    let leecher = loopback_session([127, 0, 0, 1], 2).await;
    let mut add = AddTorrent::new(
        Source::Magnet(Magnet::new(meta.info_hash)),
        StorageSpec::Disk(dst.path().to_path_buf()),
    );
    add.peers.push(seeder.listen_addr().unwrap());
    let h = leecher.add(add);
    let out = tokio::time::timeout(Duration::from_secs(20), h.wait())
        .await
        .expect("download timed out")
        .expect("download failed");
    assert!(out.summary.complete);
    assert!(out.metadata_ms.is_some());
    assert_eq!(out.metainfo.info_hash, meta.info_hash);
    assert!(out.summary.downloaded >= data.len() as u64);
    let a = std::fs::read(dst.path().join("payload/a.bin")).unwrap();
    let b = std::fs::read(dst.path().join("payload/b.bin")).unwrap();
    assert_eq!(a, &data[..1_000_000]);
    assert_eq!(b, &data[1_000_000..]);
    seeding.stop();
    let s = seeding.wait().await.unwrap();
    assert!(s.summary.uploaded >= data.len() as u64);
}
