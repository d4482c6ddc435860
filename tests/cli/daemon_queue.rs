//! The daemon's queue over real HTTP: with `--max-active-downloads 1 --max-active-seeds 1`
//! the torrents after the first wait as `queued` in add order; pausing the running one starts
//! the next, a finished download takes a seed slot (or queues for one), `PATCH /session`
//! changes the limits live and `POST /torrents/{id}/queue` reorders. Loopback seeders;
//! addresses from `fresh_ip()`.

use std::time::Duration;

use serde_json::{json as j, Value};

use crate::daemon_api::{http, json, start_daemon, wait_torrent};
use crate::support::loopback::{free_port, fresh_ip};
use crate::support::procs::{start_seeder, Proc};
use crate::support::random_bytes;

/// A `magnetfetch seed` of `len` random bytes; its magnet link with its address in `x.pe`.
fn seeder(dir: &std::path::Path, name: &str, len: usize, seed: u64) -> (Proc, String) {
    let file = dir.join(name);
    std::fs::write(&file, random_bytes(len, seed)).unwrap();
    let bind = format!("{}:{}", fresh_ip(), free_port());
    let (p, magnet) = start_seeder(
        &file,
        &["--no-dht", "--bind", &bind, "-q"],
        &dir.join(format!("{name}-state")),
    );
    (p, format!("{magnet}&x.pe={bind}"))
}

fn state_of(api: std::net::SocketAddr, id: u64) -> Value {
    json(api, "GET", &format!("/torrents/{id}"), b"")
}

#[test]
fn queued_torrents_start_in_order_when_a_slot_frees_and_limits_change_live() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let (_sa, magnet_a) = seeder(&src, "queue_a.bin", 1 << 20, 300);
    let (_sb, magnet_b) = seeder(&src, "queue_b.bin", (1 << 20) + 77, 301);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (_daemon, api) = start_daemon(
        fresh_ip(),
        &out,
        &dir.path().join("state"),
        &["--max-active-downloads", "1", "--max-active-seeds", "1"],
    );
    let session = json(api, "GET", "/session", b"");
    assert_eq!(
        session["queue"],
        j!({"max_active_downloads": 1, "max_active_seeds": 1}),
        "{session}"
    );

    // A magnet nobody has (no DHT, no peers): it searches forever and holds the one slot.
    let stuck = "magnet:?xt=urn:btih:5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a&dn=nobody";
    let x = json(api, "POST", "/torrents", stuck.as_bytes())["id"]
        .as_u64()
        .unwrap();
    let a = json(api, "POST", "/torrents", magnet_a.as_bytes())["id"]
        .as_u64()
        .unwrap();
    let b = json(api, "POST", "/torrents", magnet_b.as_bytes())["id"]
        .as_u64()
        .unwrap();
    assert_eq!(state_of(api, x)["state"], "searching");
    for (id, pos) in [(a, 1), (b, 2)] {
        let t = state_of(api, id);
        assert_eq!(t["state"], "queued", "{t}");
        assert_eq!(t["queue_position"], pos, "{t}");
    }
    let (_, metrics) = http(api, "GET", "/metrics", b"", &[]);
    assert!(
        metrics.contains("magnetfetch_torrents{state=\"queued\"} 2"),
        "{metrics}"
    );

    // Pausing the running one starts the next in line (A), not B.
    json(api, "POST", &format!("/torrents/{x}/pause"), b"");
    assert_eq!(state_of(api, b)["state"], "queued");
    wait_torrent(api, a, Duration::from_secs(60), |t| t["state"] == "seeding");
    // A finished: B gets the download slot, finishes too, and then waits for a seed slot
    // (A holds the only one), complete.
    let t = wait_torrent(api, b, Duration::from_secs(60), |t| {
        t["state"] == "queued" && t["progress"] == 1.0
    });
    assert_eq!(t["downloaded"], (1 << 20) + 77, "{t}");
    assert_eq!(state_of(api, a)["state"], "seeding");

    // A second seed slot, live: B seeds.
    let s = json(api, "PATCH", "/session", br#"{"max_active_seeds": 2}"#);
    assert_eq!(s["queue"]["max_active_seeds"], 2, "{s}");
    assert_eq!(s["queue"]["max_active_downloads"], 1, "{s}");
    wait_torrent(api, b, Duration::from_secs(30), |t| t["state"] == "seeding");

    // Back to one, and B moved to the front: B keeps seeding, A waits.
    json(api, "PATCH", "/session", br#"{"max_active_seeds": 1}"#);
    let moved = json(
        api,
        "POST",
        &format!("/torrents/{b}/queue"),
        br#"{"position": 0}"#,
    );
    assert_eq!(moved["queue_position"], 0, "{moved}");
    wait_torrent(api, a, Duration::from_secs(30), |t| t["state"] == "queued");
    assert_eq!(state_of(api, b)["state"], "seeding");
    assert_eq!(state_of(api, x)["queue_position"], 1);
    assert_eq!(state_of(api, a)["queue_position"], 2);

    // Bad limits and unknown fields are refused and change nothing.
    for body in [
        &br#"{"max_active_seeds": -1}"#[..],
        br#"{"max_active_seeds": "many"}"#,
        br#"{"max_seeds": 3}"#,
        b"[1]",
    ] {
        let (status, text) = http(
            api,
            "PATCH",
            "/session",
            body,
            &["Content-Type: application/json"],
        );
        assert_eq!(status, 400, "{text}");
    }
    let (status, _) = http(
        api,
        "POST",
        &format!("/torrents/{a}/queue"),
        br#"{"position": "first"}"#,
        &["Content-Type: application/json"],
    );
    assert_eq!(status, 400);
    assert_eq!(
        json(api, "GET", "/session", b"")["queue"],
        j!({"max_active_downloads": 1, "max_active_seeds": 1})
    );
}
