//! Local Service Discovery (BEP 14) between `magnetfetch` processes on loopback (addresses
//! 127.0.0.210-219): with no DHT, no tracker and no `--peer`, a fetch finds a seed only
//! through the multicast announces; `--no-lsd` and private torrents stay silent. Needs IPv4
//! multicast on `lo` (set up by [`loopback_multicast`], skipped loudly where refused).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::support::{drained_lines, loopback_multicast, random_bytes, Proc, BIN};

/// `magnetfetch seed FILE --json` on `bind` with DHT off (plus `extra`); its stdout lines.
fn seed_json(file: &Path, bind: &str, extra: &[&str], state: &Path) -> (Proc, Receiver<String>) {
    let mut child: Child = Command::new(BIN)
        .arg("seed")
        .arg(file)
        .args([
            "--bind",
            bind,
            "--no-dht",
            "--json",
            "--piece-length",
            "64K",
        ])
        .args(extra)
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn seeder");
    let rx = drained_lines(&mut child);
    (Proc(child), rx)
}

fn magnet_of(rx: &Receiver<String>) -> String {
    let m = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("seeder printed no magnet link");
    assert!(m.starts_with("magnet:?xt=urn:btih:"), "{m}");
    assert!(!m.contains("x.pe"), "the magnet names no peer: {m}");
    m
}

fn fetch(magnet: &str, bind: &str, dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg(magnet)
        .args(["--bind", bind, "--no-dht", "--json"])
        .arg("-o")
        .arg(dir.join("out"))
        .arg("--state-dir")
        .arg(dir.join("state-fetch"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn events(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn two_processes_find_each_other_over_lsd() {
    if !loopback_multicast() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(1 << 20, 0x15d0_0001);
    let file = dir.path().join("lsd.bin");
    std::fs::write(&file, &data).unwrap();
    let (_seed, seed_out) = seed_json(&file, "127.0.0.210:0", &[], &dir.path().join("state-seed"));
    let magnet = magnet_of(&seed_out);
    let start = Instant::now();
    let out = fetch(
        &magnet,
        "127.0.0.211:0",
        dir.path(),
        &["--metadata-timeout", "100s"],
    )
    .output()
    .unwrap();
    let took = start.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(dir.path().join("out/lsd.bin")).unwrap();
    assert!(got == data, "downloaded data differs");
    let evs = events(&out.stdout);
    assert_eq!(evs.last().unwrap()["event"], "done");
    // Every progress event says what is known of our reachability.
    for e in evs.iter().filter(|e| e["event"] == "progress") {
        assert!(e.get("external_addr").is_some(), "{e}");
        assert!(
            ["yes", "unknown"].contains(&e["reachable"].as_str().unwrap()),
            "{e}"
        );
    }
    // The seeder learned the fetcher from its announce: source `lsd`.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen_lsd = None;
    while Instant::now() < deadline && seen_lsd.is_none() {
        let Ok(l) = seed_out.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        let Ok(e) = serde_json::from_str::<serde_json::Value>(&l) else {
            continue;
        };
        if e["event"] == "progress" && e["sources"]["lsd"].as_u64().unwrap_or(0) > 0 {
            seen_lsd = Some(e);
        }
    }
    let e = seen_lsd.expect("the seeder's progress never counted an LSD peer");
    assert!(e.get("reachable").is_some(), "{e}");
    eprintln!("LSD: fetched 1 MiB in {took:?}; seeder progress: {e}");
}

#[test]
fn no_lsd_and_private_torrents_stay_off_the_lan() {
    if !loopback_multicast() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for (i, extra) in [&["--no-lsd"][..], &["--private"][..]].iter().enumerate() {
        let d = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&d).unwrap();
        let file = d.join("quiet.bin");
        std::fs::write(&file, random_bytes(256 << 10, 0x15d0_0010 + i as u64)).unwrap();
        let (seed, out) = seed_json(
            &file,
            &format!("127.0.0.{}:0", 212 + i),
            extra,
            &d.join("s"),
        );
        let magnet = magnet_of(&out);
        let bind = format!("127.0.0.{}:0", 214 + i);
        let child = fetch(&magnet, &bind, &d, &["--metadata-timeout", "8s"])
            .spawn()
            .unwrap();
        runs.push((seed, out, child));
    }
    for (_seed, _out, child) in runs {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
        assert!(stderr.contains("no peers found"), "{stderr}");
    }
}
