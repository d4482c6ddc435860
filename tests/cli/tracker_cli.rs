//! Trackers and web seeds through the `magnetfetch` binary, against libtorrent and
//! opentracker, on loopback addresses 127.0.0.60-79 (plus libtorrent
//! on 127.0.0.1 with ephemeral ports):
//! - a libtorrent seeder (DHT off) announcing to `magnetfetch tracker` over UDP and over HTTP
//!   is found and downloaded from by `magnetfetch MAGNET --no-dht`, the magnet carrying only
//!   `tr=`;
//! - a libtorrent leecher downloads from `magnetfetch seed --no-dht --tracker udp://...`, and
//!   an HTTP scrape of our tracker reports that seeder;
//! - a .torrent whose only source is a web seed on a local Range-capable HTTP server;
//! - `magnetfetch MAGNET --no-dht` announcing to opentracker over UDP and HTTP finds a
//!   libtorrent seeder there and downloads from it.
//!
//! Missing tools print a loud SKIP, and fail under MAGNETFETCH_REQUIRE_INTEROP=1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{
    lines, lt_command, random_bytes, range_server, range_server_logged, require_or_skip, Proc, BIN,
};

fn line_matching(rx: &mpsc::Receiver<String>, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if f(&l) => return l,
            Ok(_) => {}
            Err(e) => panic!("no {what} line: {e}"),
        }
    }
}

/// `magnetfetch tracker --udp IP:0 --http IP:0`: (process, udp URL, http URL).
fn start_tracker(ip: &str) -> (Proc, String, String) {
    let mut child = Command::new(BIN)
        .args(["tracker", "--udp", &format!("{ip}:0"), "--http"])
        .arg(format!("{ip}:0"))
        .args(["--interval", "60", "--per-ip-rate", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn magnetfetch tracker");
    let rx = lines(&mut child);
    let mut http = None;
    let mut udp = None;
    while http.is_none() || udp.is_none() {
        let l = line_matching(&rx, "tracker address", |l| l.contains("://"));
        let url = l.split_whitespace().last().unwrap().to_string();
        if url.starts_with("http://") {
            http = Some(url);
        } else {
            udp = Some(url);
        }
    }
    (Proc(child), udp.unwrap(), http.unwrap())
}

/// `magnetfetch create FILE -o OUT --tracker ...`: the info-hash (hex) of the new torrent.
fn create_torrent(file: &Path, out: &Path, extra: &[&str]) -> String {
    let o = Command::new(BIN)
        .arg("create")
        .arg(file)
        .arg("-o")
        .arg(out)
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .expect("run magnetfetch create");
    assert!(o.status.success(), "create failed");
    let magnet = String::from_utf8_lossy(&o.stdout).into_owned();
    let i = magnet.find("btih:").expect("magnet link") + 5;
    magnet[i..i + 40].to_ascii_lowercase()
}

fn start_lt_seeder(torrent: &Path, dir: &Path, ip: &str) -> Proc {
    let mut child = lt_command("tracker-seed")
        .arg(torrent)
        .arg(dir)
        .arg(ip)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn libtorrent seeder");
    let rx = lines(&mut child);
    line_matching(&rx, "libtorrent seeding", |l| l.starts_with("seeding"));
    Proc(child)
}

/// Runs `magnetfetch SOURCE --no-dht -o OUT --bind IP:0 --json` to completion (bounded);
/// returns its JSON lines.
fn fetch(source: &str, out: &Path, bind_ip: &str, state: &Path) -> Vec<serde_json::Value> {
    let mut child = Command::new(BIN)
        .arg(source)
        .arg("--no-dht")
        .arg("-o")
        .arg(out)
        .args(["--bind", &format!("{bind_ip}:0"), "--json"])
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn magnetfetch fetch");
    let rx = lines(&mut child);
    let p = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut events = Vec::new();
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let v: serde_json::Value = serde_json::from_str(&l).expect("JSON line");
        let done = matches!(v["event"].as_str(), Some("done" | "error"));
        events.push(v);
        if done {
            break;
        }
    }
    let mut p = p;
    let status = wait_exit(&mut p.0, Duration::from_secs(10));
    assert_eq!(status, Some(0), "fetch of {source} failed: {events:#?}");
    events
}

fn wait_exit(c: &mut Child, t: Duration) -> Option<i32> {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = c.try_wait() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn last_progress(events: &[serde_json::Value]) -> Option<&serde_json::Value> {
    events
        .iter()
        .rev()
        .find(|e| e["event"] == "progress" && e["sources"].is_object())
}

struct Fixture {
    dir: tempfile::TempDir,
    data: Vec<u8>,
    file: PathBuf,
}

fn fixture(name: &str, len: usize, seed: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = random_bytes(len, seed);
    let file = src.join(name);
    std::fs::write(&file, &data).unwrap();
    Fixture { dir, data, file }
}

/// (a) + (c): libtorrent seeder found through `magnetfetch tracker`, magnet with only `tr=`.
fn lt_seeder_via_our_tracker(udp: bool, bind_ip: &str, tracker_ip: &str, lt_ip: &str) {
    if !require_or_skip("libtorrent") {
        return;
    }
    let fx = fixture("payload.bin", 700_000, 7 + udp as u64);
    let (_tracker, udp_url, http_url) = start_tracker(tracker_ip);
    let url = if udp { &udp_url } else { &http_url };
    let torrent = fx.dir.path().join("t.torrent");
    let ih = create_torrent(
        &fx.file,
        &torrent,
        &["--tracker", url, "--piece-length", "32K"],
    );
    let _seeder = start_lt_seeder(&torrent, fx.file.parent().unwrap(), lt_ip);
    // HTTP scrape (BEP 48) of our tracker reports the seeder, whichever way it announced.
    let c = magnetfetch::internals::tracker::TrackerClient::new(
        magnetfetch::internals::net::Net::Tokio,
        magnetfetch::internals::tracker::ClientConfig::default(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let h = magnetfetch::internals::id::Id20::from_hex(&ih).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sc = rt.block_on(c.scrape(&http_url, &[h])).expect("HTTP scrape");
        if sc.get(&h).is_some_and(|s| s.complete >= 1) {
            break;
        }
        assert!(Instant::now() < deadline, "seeder never in scrape: {sc:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let magnet = format!(
        "magnet:?xt=urn:btih:{ih}&tr={}",
        url.replace(':', "%3A").replace('/', "%2F")
    );
    let out = fx.dir.path().join("out");
    let events = fetch(&magnet, &out, bind_ip, &fx.dir.path().join("state"));
    assert_eq!(std::fs::read(out.join("payload.bin")).unwrap(), fx.data);
    let done = events.iter().find(|e| e["event"] == "done").unwrap();
    assert_eq!(done["infohash"], ih);
    // The tracker was reported, and it was the source of the peer.
    let tr = events
        .iter()
        .find(|e| e["event"] == "tracker")
        .expect("a tracker event");
    assert_eq!(tr["url"].as_str(), Some(url.as_str()));
    assert_eq!(tr["status"], "ok", "{tr}");
    if let Some(p) = last_progress(&events) {
        assert_eq!(p["sources"]["dht"], 0, "{p}");
    }
}

#[test]
fn lt_seeder_found_through_our_udp_tracker() {
    lt_seeder_via_our_tracker(true, "127.0.0.61", "127.0.0.60", "127.0.0.72");
}

#[test]
fn lt_seeder_found_through_our_http_tracker() {
    lt_seeder_via_our_tracker(false, "127.0.0.63", "127.0.0.62", "127.0.0.73");
}

/// (b) + (c): libtorrent leecher downloads from `magnetfetch seed --no-dht --tracker udp://`.
#[test]
fn lt_leecher_downloads_from_tracker_only_seed() {
    if !require_or_skip("libtorrent") {
        return;
    }
    let fx = fixture("seeded.bin", 600_000, 21);
    let (_tracker, udp_url, http_url) = start_tracker("127.0.0.64");
    let torrent = fx.dir.path().join("seeded.torrent");
    let mut child = Command::new(BIN)
        .arg("seed")
        .arg(&fx.file)
        .args(["--no-dht", "--tracker", &udp_url, "--bind", "127.0.0.65:0"])
        .arg("-o")
        .arg(&torrent)
        .arg("--state-dir")
        .arg(fx.dir.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn magnetfetch seed");
    let rx = lines(&mut child);
    let _seed = Proc(child);
    let magnet = line_matching(&rx, "magnet", |l| l.starts_with("magnet:"));
    assert!(magnet.contains("&tr="), "{magnet}");
    let ih = magnet[magnet.find("btih:").unwrap() + 5..][..40].to_ascii_lowercase();
    let h = magnetfetch::internals::id::Id20::from_hex(&ih).unwrap();
    // HTTP scrape of the tracker reports our seeder (it announced over UDP; one store).
    let c = magnetfetch::internals::tracker::TrackerClient::new(
        magnetfetch::internals::net::Net::Tokio,
        magnetfetch::internals::tracker::ClientConfig::default(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sc = rt.block_on(c.scrape(&http_url, &[h])).expect("HTTP scrape");
        if sc.get(&h).is_some_and(|s| s.complete == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "seed never in scrape: {sc:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    while !torrent.exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = fx.dir.path().join("lt");
    std::fs::create_dir_all(&out).unwrap();
    let o = lt_command("tracker-leech")
        .arg(&torrent)
        .arg(&out)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ok");
    assert_eq!(std::fs::read(out.join("seeded.bin")).unwrap(), fx.data);
}

/// (d): the only source is a web seed (BEP 19) on a local HTTP server; single- and
/// multi-file torrents.
#[test]
fn web_seed_only_download_via_cli() {
    let fx = fixture("web.bin", 900_000, 33);
    // Multi-file: a directory with two files (one spanning pieces, one small).
    let multi = fx.dir.path().join("src/album");
    std::fs::create_dir_all(multi.join("sub")).unwrap();
    let a = random_bytes(300_001, 34);
    let b = random_bytes(77_777, 35);
    std::fs::write(multi.join("a.dat"), &a).unwrap();
    std::fs::write(multi.join("sub/b c.dat"), &b).unwrap();
    let mut files = BTreeMap::new();
    files.insert("/files/web.bin".to_string(), fx.data.clone());
    files.insert("/files/album/a.dat".to_string(), a.clone());
    files.insert("/files/album/sub/b%20c.dat".to_string(), b.clone());
    let (http, sources) = range_server_logged("127.0.0.66", files);
    let base = format!("http://{http}/files/");
    for (src, check) in [
        (fx.file.clone(), vec![("web.bin", fx.data.clone())]),
        (
            multi.clone(),
            vec![("album/a.dat", a.clone()), ("album/sub/b c.dat", b.clone())],
        ),
    ] {
        let name = src.file_name().unwrap().to_str().unwrap().to_string();
        let torrent = fx.dir.path().join(format!("{name}.torrent"));
        create_torrent(
            &src,
            &torrent,
            &["--web-seed", &base, "--piece-length", "64K"],
        );
        let out = fx.dir.path().join(format!("out-{name}"));
        let events = fetch(
            torrent.to_str().unwrap(),
            &out,
            "127.0.0.67",
            &fx.dir.path().join("state"),
        );
        for (p, want) in check {
            assert_eq!(std::fs::read(out.join(p)).unwrap(), want, "{p}");
        }
        let done = events.iter().find(|e| e["event"] == "done").unwrap();
        assert!(done["downloaded"].as_u64().unwrap() > 0, "{done}");
    }
    // Web-seed requests leave from the `--bind` IP, like tracker announces.
    let sources = sources.lock().unwrap().clone();
    assert!(!sources.is_empty());
    assert!(
        sources.iter().all(|ip| ip.to_string() == "127.0.0.67"),
        "web-seed connections came from {sources:?}"
    );
}

/// (e): opentracker (allow-listed) over UDP and HTTP; a libtorrent seeder found that way.
#[test]
fn fetch_from_lt_seeder_found_through_opentracker() {
    if !require_or_skip("libtorrent") {
        return;
    }
    if !require_or_skip("opentracker") {
        return;
    }
    let fx = fixture("ot.bin", 500_000, 44);
    let port = {
        let u = std::net::UdpSocket::bind("127.0.0.68:0").unwrap();
        u.local_addr().unwrap().port()
    };
    let udp_url = format!("udp://127.0.0.68:{port}/announce");
    let http_url = format!("http://127.0.0.68:{port}/announce");
    let torrent = fx.dir.path().join("ot.torrent");
    let ih = create_torrent(
        &fx.file,
        &torrent,
        &["--tracker", &udp_url, "--tracker", &http_url],
    );
    let otdir = fx.dir.path().join("ot");
    std::fs::create_dir_all(&otdir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    // opentracker drops to `nobody` and chroots into -d: world-readable, chroot-relative -w.
    std::fs::set_permissions(fx.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&otdir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(otdir.join("white"), format!("{ih}\n")).unwrap();
    let ot = Command::new("opentracker")
        .args(["-i", "127.0.0.68", "-p", &port.to_string()])
        .args(["-P", &port.to_string(), "-d"])
        .arg(&otdir)
        .args(["-w", "/white"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn opentracker");
    let _ot = Proc(ot);
    std::thread::sleep(Duration::from_millis(300));
    let _seeder = start_lt_seeder(&torrent, fx.file.parent().unwrap(), "127.0.0.71");
    for (i, url) in [&udp_url, &http_url].into_iter().enumerate() {
        let magnet = format!(
            "magnet:?xt=urn:btih:{ih}&tr={}",
            url.replace(':', "%3A").replace('/', "%2F")
        );
        let out = fx.dir.path().join(format!("out{i}"));
        let events = fetch(
            &magnet,
            &out,
            &format!("127.0.0.{}", 69 + i),
            &fx.dir.path().join(format!("state{i}")),
        );
        assert_eq!(std::fs::read(out.join("ot.bin")).unwrap(), fx.data, "{url}");
        let tr = events.iter().find(|e| e["event"] == "tracker").unwrap();
        assert_eq!(tr["status"], "ok", "{url}: {tr}");
    }
}

/// A web seed serving wrong bytes is dropped; a good one (listed after it) completes the
/// download, and the result verifies.
#[test]
fn bad_web_seed_dropped_good_one_completes() {
    let fx = fixture("mixed.bin", 800_000, 51);
    let mut bad = fx.data.clone();
    for b in bad.iter_mut().step_by(1000) {
        *b ^= 0xff;
    }
    let bad_srv = range_server(
        "127.0.0.66",
        BTreeMap::from([("/m/mixed.bin".to_string(), bad)]),
    );
    let good_srv = range_server(
        "127.0.0.66",
        BTreeMap::from([("/m/mixed.bin".to_string(), fx.data.clone())]),
    );
    let torrent = fx.dir.path().join("mixed.torrent");
    create_torrent(
        &fx.file,
        &torrent,
        &[
            "--web-seed",
            &format!("http://{bad_srv}/m/"),
            "--web-seed",
            &format!("http://{good_srv}/m/"),
            "--piece-length",
            "32K",
        ],
    );
    let out = fx.dir.path().join("out");
    fetch(
        torrent.to_str().unwrap(),
        &out,
        "127.0.0.67",
        &fx.dir.path().join("state"),
    );
    assert_eq!(std::fs::read(out.join("mixed.bin")).unwrap(), fx.data);
}
