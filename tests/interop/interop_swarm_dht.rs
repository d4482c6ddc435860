//! Interop through the DHT only (no --peer, no tracker): the mission's path end to end against
//! libtorrent (python3-libtorrent) on loopback.
//!
//! - a libtorrent seeder whose DHT is bootstrapped from `magnetfetch dht serve`; `magnetfetch
//!   MAGNET` finds it through the DHT, fetches the metadata and the file;
//! - `magnetfetch seed FILE` announces on the DHT; a libtorrent leecher bootstrapped only from
//!   the same `magnetfetch dht serve` node finds it and downloads the file.
//!
//! Skips loudly without libtorrent, fails under `MAGNETFETCH_REQUIRE_INTEROP=1`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::{dht_node, lt_command, lt_json, start_seeder, Proc, BIN};

fn json_field(line: &str, key: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).expect("json line");
    v[key].as_str().unwrap_or_default().to_string()
}

#[test]
fn magnetfetch_downloads_from_libtorrent_via_dht_only() {
    if !crate::support::require_or_skip("libtorrent") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _node = dht_node("127.0.0.141:6881", &dir.path().join("node"));
    let seed_dir = dir.path().join("lt");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let mut seeder = Proc(
        lt_command("swarm-seed")
            .args(["127.0.0.142", "127.0.0.141:6881"])
            .arg(&seed_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start libtorrent seeder"),
    );
    let mut line = String::new();
    BufReader::new(seeder.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let magnet = json_field(&line, "magnet");
    let sha = json_field(&line, "sha256");
    assert!(magnet.starts_with("magnet:?"), "seeder said: {line}");
    let out_dir = dir.path().join("out");
    let out = Command::new(BIN)
        .arg(&magnet)
        .args([
            "--bind",
            "127.0.0.143:6881",
            "--bootstrap",
            "127.0.0.141:6881",
        ])
        .args(["--json", "--metadata-timeout", "40s", "-o"])
        .arg(&out_dir)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("run magnetfetch");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = stdout
        .lines()
        .find(|l| l.contains("\"event\":\"done\""))
        .expect("done event");
    let v: serde_json::Value = serde_json::from_str(done).unwrap();
    assert_eq!(v["total_size"], 3 * 1024 * 1024 + 4321);
    assert_eq!(crate::support::sha256_file(&out_dir.join("lt.bin")), sha);
}

#[test]
fn libtorrent_downloads_from_magnetfetch_seed_via_dht_only() {
    if !crate::support::require_or_skip("libtorrent") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _node = dht_node("127.0.0.145:6881", &dir.path().join("node"));
    let file = dir.path().join("ours.bin");
    let data: Vec<u8> = (0..(2 * 1024 * 1024 + 99u32))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let (_seed, magnet) = start_seeder(
        &file,
        &[
            "--bind",
            "127.0.0.146:6881",
            "--bootstrap",
            "127.0.0.145:6881",
            "-q",
        ],
        &dir.path().join("seedstate"),
    );
    let lt_dir = dir.path().join("lt");
    std::fs::create_dir_all(&lt_dir).unwrap();
    let out = lt_json(
        "dht-fetch",
        &[
            "127.0.0.147",
            "127.0.0.145:6881",
            &magnet,
            lt_dir.to_str().unwrap(),
        ],
    );
    let line = out.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    assert_eq!(v["done"], true, "libtorrent did not finish: {line}");
    assert_eq!(
        v["sha256"].as_str().unwrap(),
        crate::support::sha256_file(&file)
    );
}
