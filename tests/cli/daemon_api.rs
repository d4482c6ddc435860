//! `magnetfetch daemon` over real HTTP on loopback: a magnet of a loopback `magnetfetch seed`
//! added with `POST /torrents` downloads to the end and seeds; `GET /torrents`, `/metrics`,
//! pause and resume; the daemon killed with SIGKILL and started again finds the torrent
//! complete without downloading a byte; `DELETE ?delete_files=true` removes it and its data.
//! Hostile requests (garbage, a body over the bound, unknown ids, a missing token) get 4xx
//! and change nothing. Addresses from `fresh_ip()`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::loopback::fresh_ip;
use crate::support::procs::{drained_lines, start_seeder, Proc, BIN};
use crate::support::random_bytes;

/// One HTTP/1.1 request on a fresh connection: (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[&str],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !headers.iter().any(|h| h.starts_with("Content-Length:")) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer (and close) before reading all of a refused body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn json(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Value {
    let (status, text) = http(addr, method, path, body, &[]);
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
}

/// Starts `magnetfetch daemon` and returns it with its API address.
pub fn start_daemon(
    ip: std::net::Ipv4Addr,
    out: &Path,
    state: &Path,
    extra: &[&str],
) -> (Proc, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["daemon", "--http", &format!("{ip}:0"), "--no-dht"])
        .args(["--bind", &format!("{ip}:0"), "-o"])
        .arg(out)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn daemon");
    let rx = drained_lines(&mut child);
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("daemon printed its API address");
    let addr = line
        .strip_prefix("api: http://")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    (Proc(child), addr)
}

/// Polls `GET /torrents/{id}` until `done` holds for it (or panics after `limit`).
pub fn wait_torrent(
    api: SocketAddr,
    id: u64,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let end = Instant::now() + limit;
    loop {
        let t = json(api, "GET", &format!("/torrents/{id}"), b"");
        if done(&t) {
            return t;
        }
        assert!(Instant::now() < end, "torrent {id} never got there: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill9(p: &mut Child) {
    let _ = p.kill();
    let _ = p.wait();
}

#[test]
fn a_magnet_added_over_http_downloads_survives_kill_9_and_is_removed_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3 * 1024 * 1024 + 333, 240);
    let file = dir.path().join("daemon_api.bin");
    std::fs::write(&file, &data).unwrap();
    let seed_ip = fresh_ip();
    let seed_bind = format!("{seed_ip}:{}", crate::support::free_port());
    let (_seeder, magnet) = start_seeder(
        &file,
        &["--no-dht", "--bind", &seed_bind, "-q"],
        &dir.path().join("seed-state"),
    );
    let ip = fresh_ip();
    let out = dir.path().join("out");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&out).unwrap();
    let (mut daemon, api) = start_daemon(ip, &out, &state, &[]);

    assert_eq!(
        json(api, "GET", "/torrents", b""),
        serde_json::json!({"torrents": []})
    );
    let link = format!("{magnet}&x.pe={seed_bind}");
    let added = json(api, "POST", "/torrents", link.as_bytes());
    let id = added["id"].as_u64().expect("id");
    let ih = added["infohash"].as_str().expect("infohash").to_string();
    assert!(magnet.contains(&ih), "{added} vs {magnet}");
    // Adding it again answers the same torrent.
    assert_eq!(json(api, "POST", "/torrents", link.as_bytes())["id"], id);

    let t = wait_torrent(api, id, Duration::from_secs(60), |t| {
        t["state"] == "seeding"
    });
    assert_eq!(t["progress"], 1.0, "{t}");
    assert_eq!(t["downloaded"], data.len() as u64);
    assert_eq!(t["total_size"], data.len() as u64);
    assert_eq!(t["name"], "daemon_api.bin");
    assert!(std::fs::read(out.join("daemon_api.bin")).unwrap() == data);
    let list = json(api, "GET", "/torrents", b"");
    let items = list["torrents"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    for k in [
        "id",
        "infohash",
        "name",
        "state",
        "progress",
        "downloaded",
        "total_size",
    ] {
        assert!(!items[0][k].is_null(), "{k} missing in {list}");
    }
    // By info-hash too.
    assert_eq!(json(api, "GET", &format!("/torrents/{ih}"), b"")["id"], id);

    let (status, metrics) = http(api, "GET", "/metrics", b"", &[]);
    assert_eq!(status, 200);
    let sample = format!(
        "magnetfetch_torrent_verified_bytes{{id=\"{id}\",infohash=\"{ih}\"}} {}",
        data.len()
    );
    assert!(metrics.contains(&sample), "{metrics}");
    assert!(
        metrics.contains("magnetfetch_torrents{state=\"seeding\"} 1"),
        "{metrics}"
    );

    let paused = json(api, "POST", &format!("/torrents/{id}/pause"), b"");
    assert_eq!(paused["state"], "paused", "{paused}");
    assert_eq!(
        json(api, "GET", &format!("/torrents/{id}"), b"")["state"],
        "paused"
    );
    json(api, "POST", &format!("/torrents/{id}/resume"), b"");
    wait_torrent(api, id, Duration::from_secs(30), |t| {
        t["state"] == "seeding"
    });

    // kill -9, then the same state directory: the torrent is back, complete, and nothing is
    // received again (the seeder is gone too: there is no one to receive from).
    kill9(&mut daemon.0);
    drop(_seeder);
    let (_daemon2, api) = start_daemon(ip, &out, &state, &[]);
    let t = wait_torrent(api, id, Duration::from_secs(30), |t| {
        t["state"] == "seeding"
    });
    assert_eq!(t["infohash"], ih.as_str());
    assert_eq!(t["progress"], 1.0, "{t}");
    assert_eq!(t["received"], 0, "{t}");

    let removed = json(
        api,
        "DELETE",
        &format!("/torrents/{id}?delete_files=true"),
        b"",
    );
    assert_eq!(removed["deleted_files"], true, "{removed}");
    assert_eq!(
        json(api, "GET", "/torrents", b""),
        serde_json::json!({"torrents": []})
    );
    assert!(!out.join("daemon_api.bin").exists(), "data not deleted");
    assert_eq!(
        http(api, "GET", &format!("/torrents/{id}"), b"", &[]).0,
        404
    );
}

#[test]
fn hostile_requests_get_4xx_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let ip = fresh_ip();
    let (_daemon, api) = start_daemon(ip, &out, &dir.path().join("state"), &[]);
    // A body over the bound (a .torrent's largest size) is refused from its length alone.
    let huge = format!("Content-Length: {}", 200u64 << 20);
    let (status, _) = http(api, "POST", "/torrents", &[b'l'; 1 << 20], &[&huge]);
    assert_eq!(status, 413);
    let cases: [(&str, &str, Vec<u8>, u16); 9] = [
        ("POST", "/torrents", b"".to_vec(), 400),
        ("POST", "/torrents", b"not a torrent".to_vec(), 400),
        (
            "POST",
            "/torrents",
            b"magnet:?xt=urn:btih:nothex".to_vec(),
            400,
        ),
        ("POST", "/torrents", b"d4:infoi1ee".to_vec(), 400),
        ("POST", "/torrents", vec![b'l'; 4 << 20], 400),
        ("GET", "/torrents/999", Vec::new(), 404),
        (
            "POST",
            "/torrents/..%2F..%2Fetc%2Fpasswd/pause",
            Vec::new(),
            404,
        ),
        ("DELETE", "/torrents/1?delete_files=maybe", Vec::new(), 400),
        ("GET", "/nothing/here", Vec::new(), 404),
    ];
    for (method, path, body, want) in cases {
        let (status, text) = http(api, method, path, &body, &[]);
        assert_eq!(status, want, "{method} {path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(v["error"].is_string(), "{text}");
    }
    assert_eq!(
        json(api, "GET", "/torrents", b""),
        serde_json::json!({"torrents": []})
    );
    let mut left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "files written: {:?}", left.pop());
}

#[test]
fn a_token_is_required_off_loopback_and_checked_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "daemon",
            "--http",
            "0.0.0.0:0",
            "--no-dht",
            "--bind",
            "127.0.0.1:0",
        ])
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = crate::support::assert_cli_error(&out);
    assert!(err.contains("--token"), "{err}");

    let ip = fresh_ip();
    let (_daemon, api) = start_daemon(
        ip,
        dir.path(),
        &dir.path().join("state"),
        &["--token", "s3cret"],
    );
    assert_eq!(http(api, "GET", "/torrents", b"", &[]).0, 401);
    assert_eq!(
        http(
            api,
            "GET",
            "/torrents",
            b"",
            &["Authorization: Bearer wrong"]
        )
        .0,
        401
    );
    let (status, body) = http(
        api,
        "GET",
        "/torrents",
        b"",
        &["Authorization: Bearer s3cret"],
    );
    assert_eq!((status, body.as_str()), (200, "{\"torrents\":[]}"));
    // Basic auth, any user, the token as password ("u:s3cret").
    let (status, _) = http(
        api,
        "GET",
        "/metrics",
        b"",
        &["Authorization: Basic dTpzM2NyZXQ="],
    );
    assert_eq!(status, 200);
}

/// Lines of docs/api.md's code blocks that start with `prefix`.
fn documented(prefix: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
    let mut in_block = false;
    let mut out = Vec::new();
    for line in doc.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block && line.starts_with(prefix) {
            out.push(line.to_string());
        }
    }
    out
}

/// The documented info-hash, replaced by the test torrent's.
const DOC_IH: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

fn run_sh(line: &str, cwd: &Path) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(cwd)
        .output()
        .unwrap();
    // An event stream never ends by itself: `--max-time` ends it (curl's exit 28).
    let stream_timed_out = line.contains("--max-time") && out.status.code() == Some(28);
    assert!(
        out.status.success() || stream_timed_out,
        "documented command failed: {line}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_curl_and_remote_example_of_the_api_docs_works() {
    if !crate::support::require_or_skip("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file.bin"), random_bytes(100_000, 241)).unwrap();
    let made = Command::new(BIN)
        .args(["create", "file.bin", "-o", "file.torrent"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let magnet = String::from_utf8(made.stdout).unwrap();
    let ih = magnet.trim().strip_prefix("magnet:?xt=urn:btih:").unwrap()[..40].to_string();
    let fix = |line: &str, api: SocketAddr| {
        line.replace("http://127.0.0.1:7878", &format!("http://{api}"))
            .replace(DOC_IH, &ih)
    };

    let curls = documented("curl ");
    assert!(curls.len() >= 12, "{curls:?}");
    let ip = fresh_ip();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Downloading into the directory that holds file.bin: the torrent checks complete at
    // once, so the documented stream calls have bytes to read.
    let (_plain, api) = start_daemon(ip, dir.path(), &dir.path().join("state-a"), &[]);
    let (_locked, locked_api) = start_daemon(
        fresh_ip(),
        &out,
        &dir.path().join("state-b"),
        &["--token", "s3cret"],
    );
    let original = std::fs::read(dir.path().join("file.bin")).unwrap();
    for line in &curls {
        let target = if line.contains("s3cret") {
            locked_api
        } else {
            api
        };
        run_sh(&fix(line, target), dir.path());
    }
    // The documented stream call copied the file; the delete removed the original.
    assert!(std::fs::read(dir.path().join("file.copy")).unwrap() == original);
    assert!(!dir.path().join("file.bin").exists());
    // The documented calls did what they say: the torrent was added, then removed.
    assert_eq!(
        json(api, "GET", "/torrents", b""),
        serde_json::json!({"torrents": []})
    );

    let remotes = documented("magnetfetch remote ");
    assert!(remotes.len() >= 5, "{remotes:?}");
    let (_fresh, api) = start_daemon(fresh_ip(), &out, &dir.path().join("state-c"), &[]);
    for line in &remotes {
        let line = fix(line, api).replacen(
            "magnetfetch remote ",
            &format!("{BIN} remote --url http://{api} "),
            1,
        );
        run_sh(&line, dir.path());
    }
    assert_eq!(
        json(api, "GET", "/torrents", b""),
        serde_json::json!({"torrents": []})
    );
}

#[test]
fn remote_lists_what_it_added_and_reports_the_daemons_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, api) = start_daemon(fresh_ip(), dir.path(), &dir.path().join("state"), &[]);
    let url = format!("http://{api}");
    let remote = |args: &[&str]| {
        Command::new(BIN)
            .args(["remote", "--url", &url])
            .args(args)
            .output()
            .unwrap()
    };
    let ih = "0123456789abcdef0123456789abcdef01234567";
    let added = remote(&["add", ih]);
    assert!(added.status.success(), "{added:?}");
    assert_eq!(
        String::from_utf8_lossy(&added.stdout),
        format!("added 1 {ih}\n")
    );
    let list = remote(&["list"]);
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(text.starts_with("  ID  STATE"), "{text}");
    assert!(text.contains(ih) && text.contains("searching"), "{text}");
    let json_list = remote(&["list", "--json"]);
    let v: Value = serde_json::from_slice(&json_list.stdout).unwrap();
    assert_eq!(v["torrents"][0]["infohash"], ih);
    // The daemon's refusal, as one error line.
    let bad = remote(&["pause", "7"]);
    let err = crate::support::assert_cli_error(&bad);
    assert_eq!(err, "error: no torrent 7");
    let junk = remote(&["add", "not-a-torrent"]);
    let err = crate::support::assert_cli_error(&junk);
    assert!(err.contains("not a magnet link"), "{err}");
    // No daemon there.
    let gone = Command::new(BIN)
        .args(["remote", "--url", "http://127.0.0.1:9", "list"])
        .output()
        .unwrap();
    let err = crate::support::assert_cli_error(&gone);
    assert!(err.contains("cannot reach the daemon"), "{err}");
}

#[test]
fn sigterm_stops_the_daemon_cleanly_and_its_list_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ip = fresh_ip();
    let (mut daemon, api) = start_daemon(ip, dir.path(), &state, &[]);
    let ih = "89abcdef0123456789abcdef0123456789abcdef";
    assert_eq!(json(api, "POST", "/torrents", ih.as_bytes())["id"], 1);
    json(api, "POST", "/torrents/1/pause", b"");
    // SAFETY: plain kill(2) on our own child's pid.
    let r = unsafe { libc::kill(daemon.0.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(r, 0);
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < end,
            "daemon still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let (_again, api) = start_daemon(ip, dir.path(), &state, &[]);
    let t = json(api, "GET", "/torrents/1", b"");
    assert_eq!(
        (t["infohash"].as_str(), t["state"].as_str()),
        (Some(ih), Some("paused")),
        "{t}"
    );
}

#[test]
fn a_file_streams_with_ranges_while_it_downloads_middle_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(6 * 1024 * 1024 + 77, 242);
    let file = dir.path().join("movie.mkv");
    std::fs::write(&file, &data).unwrap();
    // A slow seeder (1 MiB/s): the whole file takes about 6 s, a piece a quarter second.
    let (_seeder, _daemon, api, id) = slow_seeder_and_daemon(dir.path(), &file, "256K", "1M");

    // A range from the middle, asked at once (the stream waits for the metadata).
    let (start, end) = (4_000_000usize, 4_299_999usize);
    let (status, head, body) = http_raw(
        api,
        &format!("/torrents/{id}/stream/0"),
        &[&format!("Range: bytes={start}-{end}")],
    );
    let t = json(api, "GET", &format!("/torrents/{id}"), b"");
    assert_eq!(status, 206, "{head}");
    assert!(body == data[start..=end], "the range's bytes differ");
    assert!(
        head.contains(&format!(
            "content-range: bytes {start}-{end}/{}",
            data.len()
        )),
        "{head}"
    );
    assert!(head.contains("content-type: video/x-matroska"), "{head}");
    assert!(head.contains("accept-ranges: bytes"), "{head}");
    assert!(
        t["progress"].as_f64().unwrap() < 0.75,
        "the middle came first, not after most of the file: {t}"
    );
    let pieces = json(api, "GET", &format!("/torrents/{id}/pieces"), b"");
    assert_eq!(pieces["pieces"], 25, "{pieces}"); // 6 MiB + 77 bytes in 256 KiB pieces
    let have = hex::decode(pieces["have"].as_str().unwrap()).unwrap();
    // The pieces of the range just read are there.
    for p in [start / 262_144, end / 262_144] {
        assert!(
            have[p / 8] & (0x80 >> (p % 8)) != 0,
            "piece {p} missing: {pieces}"
        );
    }
    let files = json(api, "GET", &format!("/torrents/{id}/files"), b"");
    assert_eq!(files["files"][0]["path"], "movie.mkv", "{files}");
    assert_eq!(files["files"][0]["length"], data.len() as u64);

    // The whole file, from the start, while the rest downloads.
    let (status, _, whole) = http_raw(api, &format!("/torrents/{id}/stream/0"), &[]);
    assert_eq!(status, 200);
    assert!(
        whole == data,
        "streamed file differs ({} bytes)",
        whole.len()
    );
    // Out of range, and no such file.
    let past = format!("Range: bytes={}-", data.len());
    assert_eq!(
        http_raw(api, &format!("/torrents/{id}/stream/0"), &[&past]).0,
        416
    );
    assert_eq!(
        http(api, "GET", &format!("/torrents/{id}/stream/1"), b"", &[]).0,
        404
    );
    assert_eq!(
        http(
            api,
            "GET",
            &format!("/torrents/{id}/stream/..%2f"),
            b"",
            &[]
        )
        .0,
        404
    );
}

/// A GET with raw bytes back: (status, lowercased head, body).
fn http_raw(api: SocketAddr, path: &str, headers: &[&str]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[split..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        b = &b[eol + 2..];
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[..n]);
        b = &b[n + 2..];
    }
}

/// Runs `ffprobe` with `args` on `url`; its trimmed stdout.
fn ffprobe(args: &[&str], url: &str) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(url)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn ffprobe_reads_a_video_from_the_stream_long_before_the_download_completes() {
    if !crate::support::require_or_skip("ffmpeg") || !crate::support::require_or_skip("ffprobe") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("clip.mp4");
    // 80 s of test pattern, about 3.3 MB; MP4 without faststart, so its index (`moov`) is at
    // the end: a player must seek there first, then back.
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=80:size=320x240:rate=25",
        ])
        .args(["-c:v", "mpeg4", "-b:v", "800k", "-y"])
        .arg(&video)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let size = std::fs::metadata(&video).unwrap().len();
    // The seeder sends 150 KiB/s: the whole file (about 3.3 MB) takes about 22 s.
    let (_seeder, _daemon, api, id) = slow_seeder_and_daemon(dir.path(), &video, "64K", "150K");
    let url = format!("http://{api}/torrents/{id}/stream/0");

    let t0 = Instant::now();
    let duration = ffprobe(
        &["-show_entries", "format=duration", "-of", "csv=p=0"],
        &url,
    );
    let to_duration = t0.elapsed();
    let secs: f64 = duration.parse().unwrap_or_else(|_| panic!("{duration:?}"));
    assert!((79.0..=81.0).contains(&secs), "duration {secs}");
    // One frame from the middle: a seek to 40 s.
    let t1 = Instant::now();
    let frame = ffprobe(
        &[
            "-read_intervals",
            "40%+#1",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=pts_time",
            "-of",
            "csv=p=0",
        ],
        &url,
    );
    let to_frame = t1.elapsed();
    let pts: f64 = frame
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches(',')
        .parse()
        .unwrap_or_else(|_| panic!("{frame:?}"));
    assert!((39.0..=41.0).contains(&pts), "frame at {pts}");
    let t = json(api, "GET", &format!("/torrents/{id}"), b"");
    let progress = t["progress"].as_f64().unwrap();
    let _ = writeln_stderr(&format!(
        "ffprobe over the stream of a {size}-byte video: duration after {to_duration:?}, \
         mid-file frame {to_frame:?} later, torrent at {:.0} %",
        progress * 100.0
    ));
    assert!(
        progress < 0.6,
        "the download was nearly complete already: {t}"
    );
}

fn writeln_stderr(s: &str) -> std::io::Result<()> {
    writeln!(std::io::stderr(), "{s}")
}

#[test]
fn the_watch_folder_adds_each_dropped_file_once_even_when_written_slowly() {
    let dir = tempfile::tempdir().unwrap();
    let watch = dir.path().join("watch");
    std::fs::create_dir_all(&watch).unwrap();
    std::fs::write(dir.path().join("w.bin"), random_bytes(50_000, 243)).unwrap();
    let made = Command::new(BIN)
        .args(["create", "w.bin", "-o", "w.torrent"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success());
    let torrent = std::fs::read(dir.path().join("w.torrent")).unwrap();
    let (_daemon, api) = start_daemon(
        fresh_ip(),
        dir.path(),
        &dir.path().join("state"),
        &["--watch", watch.to_str().unwrap()],
    );
    // Half of it, a pause longer than two polls, then the rest.
    let target = watch.join("w.torrent");
    std::fs::write(&target, &torrent[..torrent.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&target)
        .unwrap()
        .write_all(&torrent[torrent.len() / 2..])
        .unwrap();
    let ih = "fedcba9876543210fedcba9876543210fedcba98";
    std::fs::write(
        watch.join("x.magnet"),
        format!("magnet:?xt=urn:btih:{ih}\n"),
    )
    .unwrap();
    std::fs::write(watch.join("junk.magnet"), "not a magnet\n").unwrap();
    std::fs::write(watch.join("notes.txt"), "left alone").unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while !(watch.join("w.torrent.added").exists()
        && watch.join("x.magnet.added").exists()
        && watch.join("junk.magnet.invalid").exists())
    {
        assert!(
            Instant::now() < end,
            "{:?}",
            std::fs::read_dir(&watch).unwrap().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let list = json(api, "GET", "/torrents", b"");
    let items = list["torrents"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert!(items.iter().any(|t| t["infohash"] == ih), "{list}");
    assert!(items.iter().any(|t| t["name"] == "w.bin"), "{list}");
    assert!(watch.join("notes.txt").exists());
    assert!(!target.exists());
}

/// A `magnetfetch seed` of `file` (`--piece-length piece`, `--max-up-rate rate`) and a
/// daemon that was given its magnet (with the seeder in `x.pe`): (seeder, daemon, API, id).
fn slow_seeder_and_daemon(
    dir: &Path,
    file: &Path,
    piece: &str,
    rate: &str,
) -> (Proc, Proc, SocketAddr, u64) {
    let seed_bind = format!("{}:{}", fresh_ip(), crate::support::free_port());
    let args = [
        "--no-dht",
        "--bind",
        &seed_bind,
        "--piece-length",
        piece,
        "--max-up-rate",
        rate,
        "-q",
    ];
    let (seeder, magnet) = start_seeder(file, &args, &dir.join("seed-state"));
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (daemon, api) = start_daemon(fresh_ip(), &out, &dir.join("state"), &[]);
    let link = format!("{magnet}&x.pe={seed_bind}");
    let id = json(api, "POST", "/torrents", link.as_bytes())["id"]
        .as_u64()
        .unwrap();
    (seeder, daemon, api, id)
}

#[test]
fn settings_are_checked_applied_and_a_seed_ratio_pauses_the_torrent() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("settings.bin");
    std::fs::write(&file, random_bytes(1024 * 1024 + 9, 245)).unwrap();
    let (_seeder, _daemon, api, id) = slow_seeder_and_daemon(dir.path(), &file, "64K", "4M");
    let path = format!("/torrents/{id}");
    let patch = |body: &str| {
        http(
            api,
            "PATCH",
            &path,
            body.as_bytes(),
            &["Content-Type: application/json"],
        )
    };
    // Refused: a file that does not exist (once the metadata is known), a bad field, bad JSON.
    wait_torrent(api, id, Duration::from_secs(30), |t| t["total_size"] != 0);
    assert_eq!(patch(r#"{"files": [3]}"#).0, 409);
    assert_eq!(patch(r#"{"colour": "red"}"#).0, 400);
    assert_eq!(patch("{").0, 400);
    assert_eq!(patch(r#"{"seed_ratio": -1}"#).0, 409);
    // Accepted: the torrent restarts with them and keeps going.
    let (status, body) = patch(r#"{"sequential": true, "files": [0], "max_down_rate": 8000000}"#);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["settings"]["sequential"], true, "{v}");
    assert_eq!(v["settings"]["max_down_rate"], 8_000_000u64);
    let t = wait_torrent(api, id, Duration::from_secs(60), |t| {
        t["state"] == "seeding"
    });
    assert_eq!(t["progress"], 1.0);
    // Ratio 0: reached as soon as it seeds, so the daemon pauses it and says why.
    let (status, body) = patch(r#"{"seed_ratio": 0}"#);
    assert_eq!(status, 200, "{body}");
    let t = wait_torrent(api, id, Duration::from_secs(30), |t| t["state"] == "paused");
    assert_eq!(t["paused_because"], "seed ratio 0 reached", "{t}");
    // Resuming clears the reason (and with the ratio still 0 it pauses again).
    let r = json(api, "POST", &format!("/torrents/{id}/resume"), b"");
    assert!(r["paused_because"].is_null(), "{r}");
}
