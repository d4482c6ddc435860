//! Our external address and reachability, end to end on loopback ([`fresh_ip`] addresses):
//! the peers' BEP 10 `yourip` reaches the seeder's vote count (one peer is not enough,
//! three are), and an incoming connection from another address makes a session reachable.
//! A session bound to one loopback address treats the other loopback addresses as the
//! outside world (see `session::reach`).
//!
//! The seeder dials each leecher: a TCP connect leaves from 127.0.0.1 whatever the listen
//! address, so the seeder's address as the leechers see it is 127.0.0.1, and each leecher
//! (reached at its own listen address) is a voter of its own.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use magnetfetch::internals::metainfo::{create, CreateOptions, Metainfo};
use magnetfetch::internals::session::{AddTorrent, Session, Source, StorageSpec, TorrentHandle};

use crate::support::loopback::fresh_ip;
use crate::support::{loopback_session, random_bytes, seed_from_disk};

/// A leecher with no peer of its own, dialled by the seeder; returns once complete.
async fn leech(seeding: &TorrentHandle, meta: &Arc<Metainfo>, rng_seed: u64) -> Session {
    let dst = tempfile::tempdir().unwrap();
    let leecher = loopback_session(fresh_ip(), rng_seed).await;
    let add = AddTorrent::new(
        Source::Metainfo(meta.clone()),
        StorageSpec::Disk(dst.path().to_path_buf()),
    );
    let h = leecher.add(add);
    seeding
        .peer_sender()
        .send(leecher.listen_addr().unwrap())
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), h.wait())
        .await
        .expect("leecher timed out")
        .expect("leecher failed");
    assert!(out.summary.complete);
    leecher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_tell_the_seeder_its_address_and_incoming_means_reachable() {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("reach.bin");
    std::fs::write(&file, random_bytes(200_000, 0x5eac)).unwrap();
    let meta = Arc::new(
        create(
            &file,
            &CreateOptions {
                piece_length: Some(64 * 1024),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let seeder = loopback_session(fresh_ip(), 0x5eac).await;
    let seeding = seed_from_disk(&seeder, &meta, src.path()).await;
    let st = seeder.reachability().await;
    assert_eq!((st.external_addr, st.reachable.as_str()), (None, "unknown"));

    let first = leech(&seeding, &meta, 1).await;
    let st = first.reachability().await;
    assert_eq!(
        st.reachable.as_str(),
        "yes",
        "dialled by the seeder: {st:?}"
    );
    let st = seeder.reachability().await;
    assert_eq!(
        st.external_addr, None,
        "one peer's word moved our address: {st:?}"
    );
    // Nobody dialled the seeder: it does not know whether it can be reached.
    assert_eq!(st.reachable.as_str(), "unknown");

    let _second = leech(&seeding, &meta, 2).await;
    let _third = leech(&seeding, &meta, 3).await;
    let st = seeder.reachability().await;
    let seen: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(st.external_addr, Some(seen), "{st:?}");
}
