//! A torrent's peers, trackers and the daemon's metrics over real HTTP: a magnet with a
//! loopback `magnetfetch tracker` (`tr=`) and a rate-limited loopback seeder (`x.pe=`).
//! While it downloads, `/peers` shows the seeder (source `given`, its transport and client,
//! all its pieces) and `/metrics` counts it by source and transport; `/trackers` shows the tracker
//! answering; once complete the disk and announce counters have moved. Addresses from
//! `fresh_ip()`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon_api::{http, json, start_daemon, wait_torrent};
use crate::support::loopback::{free_port, fresh_ip};
use crate::support::procs::{drained_lines, start_seeder, Proc, BIN};
use crate::support::random_bytes;

/// `magnetfetch tracker --http IP:0`: (process, announce URL).
fn start_tracker() -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args(["tracker", "--http", &format!("{}:0", fresh_ip())])
        .args(["--interval", "60", "--per-ip-rate", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn magnetfetch tracker");
    let rx = drained_lines(&mut child);
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let l = rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .expect("the tracker printed its address");
        if let Some(url) = l.split_whitespace().find(|w| w.starts_with("http://")) {
            return (Proc(child), url.to_string());
        }
    }
}

/// Polls `path` until `done` holds for its JSON (or panics after `limit`).
fn poll(api: SocketAddr, path: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + limit;
    loop {
        let v = json(api, "GET", path, b"");
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < end, "{path} never got there: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(page: &str, sample: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn peers_trackers_and_metrics_show_a_download_from_a_loopback_seeder() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3 * 1024 * 1024 + 5, 310);
    let file = dir.path().join("peers.bin");
    std::fs::write(&file, &data).unwrap();
    let (_tracker, announce) = start_tracker();
    let seed_bind = format!("{}:{}", fresh_ip(), free_port());
    // 1 MiB/s: the download takes about 3 s, time enough to see the peer connected.
    let (_seeder, magnet) = start_seeder(
        &file,
        &[
            "--no-dht",
            "--bind",
            &seed_bind,
            "--max-up-rate",
            "1M",
            "-q",
        ],
        &dir.path().join("seed-state"),
    );
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (_daemon, api) = start_daemon(fresh_ip(), &out, &dir.path().join("state"), &[]);
    let link = format!(
        "{magnet}&x.pe={seed_bind}&tr={}",
        announce.replace(':', "%3A").replace('/', "%2F")
    );
    let id = json(api, "POST", "/torrents", link.as_bytes())["id"]
        .as_u64()
        .unwrap();

    let peers = poll(
        api,
        &format!("/torrents/{id}/peers"),
        Duration::from_secs(30),
        |v| v["peers"].as_array().is_some_and(|p| !p.is_empty()),
    );
    let p = &peers["peers"][0];
    assert_eq!(p["address"], seed_bind.as_str(), "{peers}");
    assert_eq!(p["source"], "given", "{peers}");
    // magnetfetch to magnetfetch: QUIC, or TCP (uTP comes after a failed TCP).
    let transport = p["transport"].as_str().unwrap().to_string();
    assert!(transport == "quic" || transport == "tcp", "{peers}");
    assert_eq!(p["outgoing"], true, "{peers}");
    assert!(p["encrypted"].is_boolean(), "{peers}");
    assert!(
        p["client"].as_str().unwrap().starts_with("magnetfetch "),
        "{peers}"
    );
    assert_eq!(p["progress"], 1.0, "{peers}");
    // The same peer in the metrics, by source and by transport.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, page) = http(api, "GET", "/metrics", b"", &[]);
        let given = metric(&page, "magnetfetch_peers_by_source{source=\"given\"}");
        let by = metric(
            &page,
            &format!("magnetfetch_peers_by_transport{{transport=\"{transport}\"}}"),
        );
        if given == Some(1) && by == Some(1) {
            break;
        }
        assert!(Instant::now() < end, "{page}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let trackers = poll(
        api,
        &format!("/torrents/{id}/trackers"),
        Duration::from_secs(30),
        |v| v["trackers"][0]["status"] == "ok",
    );
    let t = &trackers["trackers"][0];
    assert_eq!(t["url"], announce.as_str(), "{trackers}");
    assert!(t["announces"].as_u64().unwrap() >= 1, "{trackers}");
    assert!(
        t["last_announce"].as_u64().unwrap() > 1_700_000_000,
        "{trackers}"
    );
    assert_eq!(t["failures"], 0, "{trackers}");
    assert!(t["error"].is_null(), "{trackers}");

    wait_torrent(api, id, Duration::from_secs(60), |t| {
        t["state"] == "seeding"
    });
    let (_, page) = http(api, "GET", "/metrics", b"", &[]);
    assert_eq!(
        metric(&page, "magnetfetch_disk_write_bytes_total"),
        Some(data.len() as u64),
        "{page}"
    );
    assert!(
        metric(&page, "magnetfetch_tracker_announces_total{status=\"ok\"}").unwrap() >= 1,
        "{page}"
    );
    for name in [
        "magnetfetch_hash_failures_total",
        "magnetfetch_bans_total",
        "magnetfetch_disk_read_bytes_total",
        "magnetfetch_stream_readers",
        "magnetfetch_peers_encrypted",
        "magnetfetch_tracker_announces_total{status=\"error\"}",
        "magnetfetch_peer_addresses_total{source=\"tracker\"}",
    ] {
        assert!(metric(&page, name).is_some(), "{name} in {page}");
    }
    assert_eq!(metric(&page, "magnetfetch_hash_failures_total"), Some(0));
    // The DHT is off: `/dht` says so.
    assert_eq!(
        json(api, "GET", "/dht", b""),
        serde_json::json!({"dht": null})
    );
    // Unknown torrents: 404.
    assert_eq!(http(api, "GET", "/torrents/99/peers", b"", &[]).0, 404);
    assert_eq!(http(api, "GET", "/torrents/99/trackers", b"", &[]).0, 404);
}
