//! Whole swarms of real sessions over simnet, on tokio's paused clock (virtual time; the
//! tests never sleep to synchronise). Built on `magnetfetch::sim`, which runs every peer as a
//! real `Session` (and DHT node) on its own simulated host.

use std::time::Duration;

use magnetfetch::sim::{run, Scenario};

fn small(leechers: usize) -> Scenario {
    Scenario {
        leechers,
        size: 2 << 20,
        piece_length: 64 << 10,
        latency: Duration::from_millis(20),
        duration: Duration::from_secs(600),
        ..Scenario::default()
    }
}

/// Issue 6: 1 seeder + 30 leechers with asymmetric links (slow uplinks, faster downlinks),
/// starting from a magnet with the seeder's address; every leecher verifies every piece
/// (generated storage hash-checks each piece against the torrent).
#[tokio::test(start_paused = true)]
async fn thirty_leechers_asymmetric_all_finish() {
    let sc = Scenario {
        dht: false,
        seed_up: Some(2 << 20),
        up: Some(256 << 10),
        down: Some(2 << 20),
        ..small(30)
    };
    let r = run(&sc).await.unwrap();
    assert_eq!(r.leechers_completed, 30, "{r:?}");
    assert_eq!(r.failed_pieces, 0);
    assert_eq!(r.bans, 0);
    // The leechers traded among themselves: the seeder alone could not have sent 30 copies.
    assert!(r.uploaded_by_leechers > r.uploaded_by_seeders, "{r:?}");
    // Every leecher took at least one full file's worth at its downlink rate.
    let c = r.completion_s.unwrap();
    assert!(c.min >= (2 << 20) as f64 / (2 << 20) as f64, "{c:?}");
    eprintln!("30 leechers: {r:?}");
}

/// Issue 6: three peers serve corrupt blocks for every piece; they are banned and every
/// honest leecher still finishes with verified data.
#[tokio::test(start_paused = true)]
async fn corrupt_peers_banned_everyone_finishes() {
    let sc = Scenario {
        dht: false,
        corrupt: 3,
        ..small(10)
    };
    let r = run(&sc).await.unwrap();
    assert_eq!(r.leechers_completed, 10, "{r:?}");
    assert!(
        r.failed_pieces > 0,
        "the corrupt peers were never used: {r:?}"
    );
    assert!(r.bans >= 3, "{r:?}");
    eprintln!("corrupt: {r:?}");
}

/// Same scenario and seed twice → the same report (wall time aside); another seed differs.
#[tokio::test(start_paused = true)]
async fn same_seed_same_report() {
    let sc = Scenario {
        nodes: 30,
        seed_up: Some(1 << 20),
        up: Some(512 << 10),
        down: Some(2 << 20),
        loss: 0.01,
        ..small(8)
    };
    let mut a = run(&sc).await.unwrap();
    let mut b = run(&sc).await.unwrap();
    a.wall_time_s = 0.0;
    b.wall_time_s = 0.0;
    assert_eq!(a.leechers_completed, 8, "{a:?}");
    assert_eq!(a, b);
    let mut c = run(&Scenario { seed: 2, ..sc }).await.unwrap();
    c.wall_time_s = 0.0;
    assert_ne!(a, c);
}

/// From the magnet link alone: DHT lookup → metadata → pieces, through a 200-node DHT.
#[tokio::test(start_paused = true)]
async fn magnet_only_through_dht() {
    let sc = Scenario {
        nodes: 200,
        ..small(20)
    };
    let r = run(&sc).await.unwrap();
    assert_eq!(r.leechers_completed, 20, "{r:?}");
    assert!(r.lookup_messages_median.unwrap() > 0.0);
    assert!(r.metadata_s.is_some());
    eprintln!("dht swarm: {r:?}");
}
