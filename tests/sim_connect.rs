//! The connection phase of a flash crowd (issue 8): a seed at its connection limit still
//! gives refused peers its metadata and a PEX list (`session::courtesy`), so nobody waits
//! for a DHT round to find another source. Virtual time, no sleeps.

use std::time::Duration;

use magnetfetch::sim::{run, Scenario};

/// 40 leechers find only the seed (DHT), whose limit is 2 + 20 slack: 18 are refused at
/// once. With the courtesy they get the metadata from the refusing seed in the same
/// round trip as the admitted ones; without it they waited for a second DHT lookup and a
/// leecher that already had the metadata (≥ 1.3 s here).
#[tokio::test(start_paused = true)]
async fn refused_peers_still_get_metadata_at_once() {
    let sc = Scenario {
        nodes: 50,
        leechers: 40,
        max_peers: 2,
        size: 1 << 20,
        piece_length: 64 << 10,
        latency: Duration::from_millis(20),
        duration: Duration::from_secs(300),
        ..Scenario::default()
    };
    let r = run(&sc).await.unwrap();
    assert_eq!(r.leechers_completed, 40, "{r:?}");
    let m = r.metadata_s.unwrap();
    assert!(m.max < 1.0, "refused peers waited for metadata: {m:?}");
}
