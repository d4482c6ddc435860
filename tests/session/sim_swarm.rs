//! Whole swarms of real sessions over simnet, on tokio's paused clock (virtual time; the
//! tests never sleep to synchronise). Built on `magnetfetch::internals::sim`, which runs every peer as a
//! real `Session` (and DHT node) on its own simulated host.

use std::time::Duration;

use magnetfetch::internals::sim::{run, Scenario};

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

/// 1 seeder + 30 leechers with asymmetric links (slow uplinks, faster downlinks),
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

/// Three peers serve corrupt blocks for every piece; they are banned and every
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

/// Poisson arrivals: leechers trickle in (not all at t = 0) and all finish; completion
/// times are measured from each leecher's own arrival, and no efficiency is claimed (the
/// fluid bound is for flash crowds).
#[tokio::test(start_paused = true)]
async fn poisson_arrivals_all_finish() {
    let sc = Scenario {
        dht: false,
        arrival_rate: Some(2.0),
        ..small(12)
    };
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let offs = magnetfetch::internals::sim::arrival_offsets(&sc, &mut rng);
    assert_eq!(offs.len(), 12);
    assert!(offs.windows(2).all(|w| w[0] <= w[1]), "{offs:?}");
    // 12 arrivals at 2/s: the last one comes seconds after the first, not at 0.
    assert!(offs[11] > Duration::from_secs(1), "{offs:?}");
    let r = run(&sc).await.unwrap();
    assert_eq!(r.leechers_completed, 12, "{r:?}");
    assert!(r.efficiency.is_none());
    // The swarm ran at least until the last arrival.
    assert!(r.sim_time_s >= r.completion_s.unwrap().min, "{r:?}");
    assert!(!r.progress.is_empty());
}

/// Misbehaving peers of every kind at once: corrupt data (banned), a forged info dictionary,
/// DHT liars and silent peers; every honest leecher still finishes from the magnet link.
#[tokio::test(start_paused = true)]
async fn misbehaving_peers_banned_honest_finish() {
    let sc = Scenario {
        nodes: 40,
        corrupt: 2,
        bad_metadata: 1,
        dht_liars: 3,
        silent: 2,
        ..small(10)
    };
    let r = run(&sc).await.unwrap();
    assert_eq!(r.leechers_completed, 10, "{r:?}");
    assert!(
        r.failed_pieces > 0,
        "the corrupt peers were never used: {r:?}"
    );
    assert!(r.bans >= 2, "{r:?}");
    eprintln!("misbehaving: {r:?}");
}

/// Churn: leechers leave 2 s after completing; the rest still finish, and the report's
/// JSON is byte-identical across two runs apart from the wall time.
#[tokio::test(start_paused = true)]
async fn churn_deterministic_json() {
    let sc = Scenario {
        dht: false,
        seed_up: Some(1 << 20),
        up: Some(512 << 10),
        down: Some(2 << 20),
        leave_after_done: Some(Duration::from_secs(2)),
        nat: 0.3,
        ..small(8)
    };
    let json = |mut r: magnetfetch::internals::sim::Report| {
        r.wall_time_s = 0.0;
        serde_json::to_string(&r).unwrap()
    };
    let a = run(&sc).await.unwrap();
    assert_eq!(a.leechers_completed, 8, "{a:?}");
    assert!(a.upload_utilisation.leechers.is_some());
    assert!(a.share_ratio.is_some());
    let b = run(&sc).await.unwrap();
    assert_eq!(json(a), json(b));
}
