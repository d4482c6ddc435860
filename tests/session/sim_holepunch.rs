//! Holepunching (BEP 55) in whole simulated swarms: leechers behind NATs (simnet's NAT
//! models) that only the seed can reach learn of each other through its PEX, fail to dial
//! each other directly, and ask the seed to introduce them; virtual time, no sleeps.

use std::time::Duration;

use magnetfetch::internals::dial::TransportMode;
use magnetfetch::internals::sim::{run, Scenario};
use simnet::NatKind;

/// One public seed with a slow uplink (so the leechers still want pieces from each other
/// when they meet) and two leechers behind NATs, all on uTP, peers from `x.pe` and PEX only.
/// They arrive seconds apart, so the second learns of the first (from the seed's PEX) long
/// before the first hears of it: two dials crossing at once would open both NATs by
/// themselves, which is a punch nobody coordinated.
fn two_natted(kind: NatKind) -> Scenario {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Scenario {
        dht: false,
        seeders: 1,
        leechers: 2,
        nat: 1.0,
        nat_kind: kind,
        transport: TransportMode::Utp,
        size: 4 << 20,
        piece_length: 64 << 10,
        seed_up: Some(64 << 10),
        arrival_rate: Some(0.2),
        latency: Duration::from_millis(20),
        duration: Duration::from_secs(600),
        ..Scenario::default()
    }
}

#[tokio::test(start_paused = true)]
async fn leechers_behind_home_nats_are_punched_together_over_utp() {
    let r = run(&two_natted(NatKind::Home)).await.unwrap();
    assert_eq!((r.nat_leechers, r.nat_completed), (2, 2), "{r:?}");
    // One connection between the two, made by the punch, carried pieces both ways.
    assert_eq!(r.punched_connections, 1, "{r:?}");
    assert!(r.uploaded_by_leechers > 0, "{r:?}");
    assert_eq!(r.transport_bytes.tcp, 0, "{r:?}");
    eprintln!("home NATs: {r:?}");
}

#[tokio::test(start_paused = true)]
async fn symmetric_nats_defeat_the_punch_and_it_fails_cleanly() {
    let r = run(&two_natted(NatKind::Symmetric)).await.unwrap();
    // Each still completes from the seed; the punch was tried and failed, and nothing hung.
    assert_eq!((r.nat_leechers, r.nat_completed), (2, 2), "{r:?}");
    assert_eq!(r.punched_connections, 0, "{r:?}");
    assert!(r.punch_failures >= 1, "{r:?}");
    assert_eq!(r.uploaded_by_leechers, 0, "{r:?}");
    eprintln!("symmetric NATs: {r:?}");
}
