//! A magnet's only peer drops our first connection: the metadata fetch tries it again
//! (after 5 s) instead of giving up on it, and the download completes. Real loopback
//! sockets: a proxy in front of the seeder closes the first connection it accepts and
//! relays the later ones. Addresses from `fresh_ip()`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use magnetfetch::internals::dial::Encryption;
use magnetfetch::internals::magnet::Magnet;
use magnetfetch::internals::metainfo::{create, CreateOptions};
use magnetfetch::internals::session::{AddTorrent, Source, StorageSpec};

use crate::support::loopback::fresh_ip;
use crate::support::{loopback_tcp_session, random_bytes, seed_from_disk};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_peer_is_tried_again_after_it_dropped_the_first_connection() {
    let src = tempfile::tempdir().unwrap();
    let data = random_bytes(300_000, 250);
    std::fs::write(src.path().join("retry.bin"), &data).unwrap();
    let meta = Arc::new(create(&src.path().join("retry.bin"), &CreateOptions::default()).unwrap());
    let seeder = loopback_tcp_session(fresh_ip(), 1, Encryption::Off).await;
    let _seeding = seed_from_disk(&seeder, &meta, src.path()).await;
    let target = seeder.listen_addr().unwrap();

    let proxy = tokio::net::TcpListener::bind((fresh_ip(), 0))
        .await
        .unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = proxy.accept().await {
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                drop(inbound); // the first connection: closed at once
                continue;
            }
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });

    let leecher = loopback_tcp_session(fresh_ip(), 2, Encryption::Off).await;
    let dst = tempfile::tempdir().unwrap();
    let mut add = AddTorrent::new(
        Source::Magnet(Magnet::new(meta.info_hash)),
        StorageSpec::Disk(dst.path().to_path_buf()),
    );
    add.peers = vec![proxy_addr];
    add.metadata_timeout = Duration::from_secs(30);
    let out = tokio::time::timeout(Duration::from_secs(40), leecher.add(add).wait())
        .await
        .expect("no outcome in 40 s")
        .expect("the download failed");
    assert!(out.summary.complete);
    assert!(accepted.load(Ordering::SeqCst) >= 2, "never dialled again");
    assert!(std::fs::read(dst.path().join("retry.bin")).unwrap() == data);
}
