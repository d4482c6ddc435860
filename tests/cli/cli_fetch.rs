//! The `magnetfetch` binary end to end on loopback (addresses 127.0.0.21-40): DHT-only
//! fetch from a `magnetfetch seed` process bootstrapped from `magnetfetch dht serve`,
//! Ctrl-C then resume, and the usage/error exit codes.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{lines, random_bytes, start_seeder, Proc, BIN};

/// Writes `size` random bytes (from `rng_seed`) to `dir/name` and seeds them from `bind` with
/// DHT off and 64 KiB pieces; returns the seeder, its magnet link and the data.
fn seed_random_file(
    dir: &Path,
    name: &str,
    size: usize,
    rng_seed: u64,
    bind: &str,
) -> (Proc, String, Vec<u8>) {
    let data = random_bytes(size, rng_seed);
    let file = dir.join(name);
    std::fs::write(&file, &data).unwrap();
    let (seeder, magnet) = start_seeder(
        &file,
        &["--bind", bind, "--no-dht", "--piece-length", "64K"],
        &dir.join("state-seed"),
    );
    (seeder, magnet, data)
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// The JSON events of a fetch that must have succeeded: exit code 0, last event `done`.
fn events_of_success(out: &Output) -> Vec<serde_json::Value> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = json_lines(&out.stdout);
    assert_eq!(events.last().expect("no events")["event"], "done");
    events
}

/// `magnetfetch MAGNET --json` bound to `bind`, with DHT off and `peer` as its only peer,
/// into `out_dir` with its state in `state`; stdout and stderr piped.
fn fetch_from_peer(
    magnet: &str,
    bind: &str,
    peer: &str,
    out_dir: &Path,
    state: &Path,
    extra: &[&str],
) -> Command {
    let mut c = Command::new(BIN);
    c.arg(magnet)
        .args(["--bind", bind, "--no-dht", "--peer", peer, "--json"])
        .arg("-o")
        .arg(out_dir)
        .arg("--state-dir")
        .arg(state)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn fetch_over_dht_from_seed_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(2 * 1024 * 1024 + 777, 21);
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, &data).unwrap();

    let boot = Proc(
        Command::new(BIN)
            .args([
                "dht",
                "serve",
                "--bind",
                "127.0.0.21:16881",
                "--no-bootstrap",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (_seeder, magnet) = start_seeder(
        &file,
        &[
            "--bind",
            "127.0.0.22:16882",
            "--bootstrap",
            "127.0.0.21:16881",
        ],
        &dir.path().join("state-seed"),
    );
    let out_dir = dir.path().join("dl");
    let started = Instant::now();
    let out = Command::new(BIN)
        .arg(&magnet)
        .args([
            "--bind",
            "127.0.0.23:16883",
            "--bootstrap",
            "127.0.0.21:16881",
        ])
        .arg("-o")
        .arg(&out_dir)
        .arg("--state-dir")
        .arg(dir.path().join("state-dl"))
        .arg("--json")
        .arg("--metadata-timeout")
        .arg("15s")
        .output()
        .unwrap();
    let took = started.elapsed();
    let events = events_of_success(&out);
    assert_eq!(events[0]["event"], "phase");
    assert_eq!(events[0]["phase"], "searching");
    let done = events.last().unwrap();
    let ih = magnet
        .strip_prefix("magnet:?xt=urn:btih:")
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert_eq!(done["infohash"], ih);
    assert_eq!(done["name"], "payload.bin");
    assert_eq!(done["total_size"], data.len() as u64);
    assert!(done["downloaded"].as_u64().unwrap() >= data.len() as u64);
    assert!(done["metadata_ms"].as_u64().is_some());
    assert!(done["elapsed_ms"].as_u64().is_some());
    let path = done["path"].as_str().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
    assert_eq!(std::fs::read(out_dir.join("payload.bin")).unwrap(), data);
    eprintln!(
        "fetch over DHT: metadata {} ms, total {} ms (process {:?})",
        done["metadata_ms"], done["elapsed_ms"], took
    );
    drop(boot);
}

#[test]
fn sigint_then_resume_downloads_less() {
    let dir = tempfile::tempdir().unwrap();
    let size = 3 * 1024 * 1024;
    let (_seeder, magnet, data) =
        seed_random_file(dir.path(), "big.bin", size, 24, "127.0.0.24:16884");
    let out_dir = dir.path().join("dl");
    let state = dir.path().join("state-dl");
    let fetch = |extra: &[&str]| {
        fetch_from_peer(
            &magnet,
            "127.0.0.25:0",
            "127.0.0.24:16884",
            &out_dir,
            &state,
            extra,
        )
    };
    // 512 KiB/s: about 6 s for the whole file; interrupted after a good part is verified.
    let mut child = fetch(&["--max-down-rate", "512K"]).spawn().unwrap();
    let rx = lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut verified = 0;
    while Instant::now() < deadline {
        let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        if v["event"] == "progress" {
            verified = v["verified"].as_u64().unwrap_or(0);
            if verified > 0 {
                break;
            }
        }
        assert_ne!(v["event"], "done", "finished before the interrupt");
    }
    assert!(verified > 0, "no progress before the deadline");
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("run the same command again"), "{stderr}");
    // The `interrupted` event reports what was verified when the session stopped; every
    // piece counted there was handed to the resume saver before the stop, so the restart
    // must not fetch any of it again.
    let mut verified_at_stop = None;
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        if v["event"] == "interrupted" {
            verified_at_stop = v["verified"].as_u64();
            break;
        }
    }
    let verified_at_stop = verified_at_stop.expect("an `interrupted` event with `verified`");
    assert!(
        verified_at_stop >= verified && verified_at_stop < size as u64,
        "verified at stop {verified_at_stop}, seen before {verified}, size {size}"
    );
    // The verified pieces were recorded (resume data), not only left on disk.
    let resume_files: Vec<_> = std::fs::read_dir(state.join("resume"))
        .expect("resume dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "resume"))
        .collect();
    assert_eq!(resume_files.len(), 1);

    let out = fetch(&[]).output().unwrap();
    let events = events_of_success(&out);
    let done = events.last().unwrap();
    let downloaded = done["downloaded"].as_u64().unwrap();
    // Strict: one seeder, so no endgame duplicates; the second run fetches only what was
    // not verified before the stop (partial pieces are fetched again in full, and they are
    // part of the remainder), so not one byte more than the remainder.
    let remaining = size as u64 - verified_at_stop;
    assert!(
        downloaded <= remaining,
        "second run downloaded {downloaded} bytes, but only {remaining} of {size} were \
         not verified before the stop (verified data fetched twice)"
    );
    assert!(downloaded > 0, "the second run had pieces left to fetch");
    assert_eq!(std::fs::read(out_dir.join("big.bin")).unwrap(), data);
    eprintln!("resumed: second run downloaded {downloaded} of {size} bytes");
}

/// A byte changed behind our back (same size, same modification time) fools the resume data;
/// `--recheck` hashes every piece again and fetches only the damaged one.
#[test]
fn recheck_finds_silent_corruption_that_resume_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let size = 1024 * 1024;
    let (_seeder, magnet, data) =
        seed_random_file(dir.path(), "r.bin", size, 29, "127.0.0.29:16885");
    let out_dir = dir.path().join("dl");
    let state = dir.path().join("state-dl");
    let fetch = |extra: &[&str]| {
        let out = fetch_from_peer(
            &magnet,
            "127.0.0.30:0",
            "127.0.0.29:16885",
            &out_dir,
            &state,
            extra,
        )
        .output()
        .unwrap();
        let events = events_of_success(&out);
        events.last().unwrap()["downloaded"].as_u64().unwrap()
    };
    assert_eq!(fetch(&[]), size as u64);
    let got = out_dir.join("r.bin");
    assert_eq!(std::fs::read(&got).unwrap(), data);
    // The first run's last resume save did not wait for the disk, so its pieces are marked
    // unsynced: this run re-hashes them (fetching nothing) and saves them as trusted.
    assert_eq!(fetch(&[]), 0);

    // Flip one byte in piece 3 and put the modification time back.
    let mtime = std::fs::metadata(&got).unwrap().modified().unwrap();
    let mut bad = data.clone();
    bad[3 * 65536 + 100] ^= 0xff;
    std::fs::write(&got, &bad).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&got)
        .unwrap()
        .set_modified(mtime)
        .unwrap();

    // Resume data vouches for every piece: nothing fetched, the damage stays.
    assert_eq!(fetch(&[]), 0);
    assert_eq!(std::fs::read(&got).unwrap(), bad);
    // --recheck: exactly the damaged piece is fetched again.
    assert_eq!(fetch(&["--recheck"]), 65536);
    assert_eq!(std::fs::read(&got).unwrap(), data);
}

/// `--only`: the unselected files of a multi-file torrent are not created in the download
/// directory (their bytes in boundary pieces sit in a hidden parts file), the selected one
/// is complete, the summary reports the selected size, and a second run resumes (the
/// boundary pieces verify from the parts file: nothing is fetched again). The executable
/// selected file keeps its execute bit (BEP 47 `x`).
#[test]
fn only_creates_selected_files_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let album = dir.path().join("album");
    std::fs::create_dir(&album).unwrap();
    let sizes = [100_000usize, 150_000, 90_000];
    let files: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| random_bytes(n, 40 + i as u64))
        .collect();
    for (name, data) in ["a.bin", "b.bin", "c.bin"].iter().zip(&files) {
        std::fs::write(album.join(name), data).unwrap();
    }
    // b.bin is executable: the torrent says so (BEP 47 `x`), the copy must be too.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(album.join("b.bin"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    let (_seeder, magnet) = start_seeder(
        &album,
        &[
            "--bind",
            "127.0.0.35:16887",
            "--no-dht",
            "--piece-length",
            "64K",
        ],
        &dir.path().join("state-seed"),
    );
    let out_dir = dir.path().join("dl");
    let state = dir.path().join("state-dl");
    let fetch = || {
        let out = fetch_from_peer(
            &magnet,
            "127.0.0.36:0",
            "127.0.0.35:16887",
            &out_dir,
            &state,
            &["--only", "1"],
        )
        .output()
        .unwrap();
        events_of_success(&out).last().unwrap().clone()
    };
    let done = fetch();
    assert_eq!(done["total_size"], 340_000);
    assert_eq!(done["selected_size"], 150_000);
    // b.bin covers pieces 1..=3 (100000..250000), sharing pieces 1 and 3.
    assert_eq!(done["downloaded"], 3 * 65_536);
    let got = out_dir.join("album");
    assert_eq!(std::fs::read(got.join("b.bin")).unwrap(), files[1]);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(got.join("b.bin"))
            .unwrap()
            .permissions()
            .mode();
        assert_ne!(mode & 0o100, 0, "b.bin lost its execute bit: {mode:o}");
    }
    assert!(!got.join("a.bin").exists(), "unselected a.bin created");
    assert!(!got.join("c.bin").exists(), "unselected c.bin created");
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[1], "album");
    assert!(
        names[0].starts_with(".magnetfetch-") && names[0].ends_with(".parts"),
        "{names:?}"
    );
    // Restart: the boundary pieces are read back from the parts file; nothing fetched.
    assert_eq!(fetch()["downloaded"], 0);
}

/// A symlink planted in the download directory at the torrent's file name, pointing
/// outside it, is neither read nor written through: the fetch fails with one error line
/// naming it, and the link's target keeps its content.
#[test]
fn symlink_in_the_download_dir_is_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let (_seeder, magnet, _data) =
        seed_random_file(dir.path(), "s.bin", 300_000, 33, "127.0.0.33:16888");
    let out_dir = dir.path().join("dl");
    std::fs::create_dir(&out_dir).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, out_dir.join("s.bin")).unwrap();
    let out = fetch_from_peer(
        &magnet,
        "127.0.0.34:0",
        "127.0.0.33:16888",
        &out_dir,
        &dir.path().join("state-dl"),
        &[],
    )
    .output()
    .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("s.bin") && all.contains("symbolic link"),
        "{all}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn bad_usage_exits_2_with_hint() {
    let out = Command::new(BIN).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Usage"), "{err}");
    let out = Command::new(BIN)
        .args(["fetch", "x", "--max-down-rate", "fast"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
    // --help lists the subcommands and exits 0.
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for c in ["fetch", "seed", "create", "dht", "completions"] {
        assert!(help.contains(c), "{help}");
    }
}

#[test]
fn bad_magnet_exits_1_with_one_error_line() {
    let out = Command::new(BIN)
        .args([
            "magnet:?xt=urn:btih:nothex",
            "--no-dht",
            "--bind",
            "127.0.0.26:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let l: Vec<&str> = err.lines().collect();
    assert_eq!(l.len(), 1, "{err}");
    assert!(l[0].starts_with("error: "), "{err}");
}

#[test]
fn no_peers_times_out_with_clear_message() {
    let out = Command::new(BIN)
        .args([
            "c12fe1c06bba254a9dc9f519b335aa7c1367a88a",
            "--no-dht",
            "--bind",
            "127.0.0.27:0",
            "--metadata-timeout",
            "1s",
        ])
        .arg("--state-dir")
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "error: no peers found for c12fe1c06bba254a9dc9f519b335aa7c1367a88a after 1 s"
        ),
        "{err}"
    );
}

#[test]
fn completions_script() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("magnetfetch"));
}

#[test]
fn seed_http_serves_index_and_torrent() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small file.txt");
    std::fs::write(&file, b"hello over http").unwrap();
    let (_seeder, magnet) = start_seeder(
        &file,
        &[
            "--bind",
            "127.0.0.28:0",
            "--no-dht",
            "--http",
            "127.0.0.28:16888",
        ],
        &dir.path().join("state"),
    );
    let get = |path: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut s = loop {
            match std::net::TcpStream::connect("127.0.0.28:16888") {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("http connect: {e}"),
            }
        };
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        buf
    };
    let index = String::from_utf8_lossy(&get("/")).into_owned();
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    assert!(index.contains(&magnet.replace('&', "&amp;")), "{index}");
    let t = get("/small%20file.txt.torrent");
    let head_end = t.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&t[..head_end]);
    assert!(
        head.contains("Content-Type: application/x-bittorrent"),
        "{head}"
    );
    let meta = magnetfetch::internals::metainfo::Metainfo::from_bytes(&t[head_end + 4..]).unwrap();
    assert_eq!(meta.magnet().to_uri(), magnet);
    assert!(String::from_utf8_lossy(&get("/nope")).starts_with("HTTP/1.1 404"));
}

/// `magnetfetch metadata`: a magnet becomes a .torrent with the same info-hash, found through
/// the DHT only; an unknown info-hash times out with the contract's message.
#[test]
fn metadata_command_writes_the_torrent() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_magnetfetch");
    let mut node = std::process::Command::new(bin)
        .args(["dht", "serve", "--bind", "127.0.0.38:16881", "--state-dir"])
        .arg(dir.path().join("n"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let file = dir.path().join("m.bin");
    std::fs::write(&file, vec![7u8; 700_000]).unwrap();
    let mut seed = std::process::Command::new(bin)
        .arg("seed")
        .arg(&file)
        .args([
            "--bind",
            "127.0.0.39:16881",
            "--bootstrap",
            "127.0.0.38:16881",
            "-q",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut magnet = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(seed.stdout.take().unwrap()),
        &mut magnet,
    )
    .unwrap();
    let out_torrent = dir.path().join("out.torrent");
    let out = std::process::Command::new(bin)
        .args(["metadata", magnet.trim(), "-o"])
        .arg(&out_torrent)
        .args([
            "--bind",
            "127.0.0.40:16881",
            "--bootstrap",
            "127.0.0.38:16881",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("f"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let missing = std::process::Command::new(bin)
        .args(["metadata", &"ab".repeat(20), "-o"])
        .arg(dir.path().join("none.torrent"))
        .args([
            "--bind",
            "127.0.0.40:16882",
            "--bootstrap",
            "127.0.0.38:16881",
        ])
        .args(["--timeout", "1", "--state-dir"])
        .arg(dir.path().join("g"))
        .output()
        .unwrap();
    let _ = seed.kill();
    let _ = node.kill();
    let _ = seed.wait();
    let _ = node.wait();
    assert_eq!(out.status.code(), Some(0), "{stdout} {:?}", out.stderr);
    assert!(
        stdout.contains(" ms "),
        "prints the time to metadata: {stdout}"
    );
    let info = std::process::Command::new(bin)
        .arg("info")
        .arg(&out_torrent)
        .arg("--json")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let ih = magnet.split("btih:").nth(1).unwrap()[..40].to_string();
    assert_eq!(v["infohash"], ih.as_str());
    assert_eq!(v["total_size"], 700_000);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.starts_with("error: no peers found for abababab") && err.contains("DHT: "),
        "{err}"
    );
}

/// The client never finds itself: its own announce comes back from the DHT on the re-lookup
/// (3 s after the first), and must not count as a peer nor be dialled. The run ends with
/// the documented `no peers found`, not with "no metadata (1 peers tried)".
#[test]
fn own_announce_is_not_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Command::new(BIN)
        .args([
            "dht",
            "serve",
            "--bind",
            "127.0.0.120:16881",
            "--no-bootstrap",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("n"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new(BIN)
        .arg("cd".repeat(20))
        .args([
            "--bind",
            "127.0.0.121:16881",
            "--bootstrap",
            "127.0.0.120:16881",
            "--metadata-timeout",
            "5s",
            "--json",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("f"))
        .arg("-o")
        .arg(dir.path().join("dl"))
        .output()
        .unwrap();
    let _ = node.kill();
    let _ = node.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: no peers found for cdcdcdcd"),
        "our own address was taken for a peer: {err}"
    );
    let phases: Vec<String> = json_lines(&out.stdout)
        .iter()
        .filter(|e| e["event"] == "phase")
        .map(|e| e["phase"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(phases, ["searching"], "{phases:?}");
}

/// Runs `cmd` in a detached tmux pane (a real terminal) and returns the screen once it
/// shows `want` (or after 8 s), then ends the pane.
fn tmux_screen(name: &str, cmd: &str, want: &str) -> String {
    let s = format!("mf-{name}-{}", std::process::id());
    let ok = Command::new("tmux")
        .args(["new-session", "-d", "-s", &s, "-x", "160", "-y", "12", cmd])
        .status()
        .unwrap();
    assert!(ok.success());
    let start = Instant::now();
    let mut screen = String::new();
    while start.elapsed() < Duration::from_secs(8) {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &s])
            .output()
            .unwrap();
        screen = String::from_utf8_lossy(&out.stdout).into_owned();
        if screen.contains(want) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &s])
        .status();
    screen
}

/// On a terminal, before the size is known, a spinner says what the phase waits for: no
/// bar at "100% 0 B/0 B", and without the DHT no "searching DHT".
#[test]
fn terminal_shows_what_the_search_waits_for() {
    if !crate::support::require_or_skip("tmux") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cmd = format!(
        "{BIN} {} --no-dht --bind 127.0.0.122:0 --metadata-timeout 6s --state-dir {} -o {}; sleep 9",
        "ef".repeat(20),
        dir.path().join("s").display(),
        dir.path().join("dl").display()
    );
    let screen = tmux_screen("search", &cmd, "peers found");
    assert!(screen.contains("waiting for peers"), "{screen}");
    assert!(screen.contains("0 peers found"), "{screen}");
    assert!(!screen.contains("searching DHT"), "{screen}");
    assert!(!screen.contains("100%"), "{screen}");
    assert!(!screen.contains("0 B/0 B"), "{screen}");
}

/// `seed` on a terminal: the magnet link is the first thing on the screen, with no stray
/// bar drawn above it.
#[test]
fn terminal_seed_prints_the_magnet_first() {
    if !crate::support::require_or_skip("tmux") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.bin");
    std::fs::write(&file, random_bytes(100_000, 5)).unwrap();
    let cmd = format!(
        "{BIN} seed {} --no-dht --bind 127.0.0.123:0 --state-dir {}; sleep 9",
        file.display(),
        dir.path().join("s").display()
    );
    let screen = tmux_screen("seed", &cmd, "seeding");
    let first = screen.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(first.starts_with("magnet:?xt=urn:btih:"), "{screen}");
    assert!(screen.contains("seeding"), "{screen}");
}

/// `--only` works end to end (it panicked at first use), and a selection naming files the
/// torrent does not have is an error naming the file count, from a .torrent and from a
/// magnet's `so=` alike; a missing .torrent says so.
#[test]
fn file_selection_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one.bin");
    std::fs::write(&file, random_bytes(300_000, 9)).unwrap();
    let torrent = dir.path().join("one.torrent");
    let made = Command::new(BIN)
        .arg("create")
        .arg(&file)
        .arg("-o")
        .arg(&torrent)
        .output()
        .unwrap();
    assert!(made.status.success());
    let out = Command::new(BIN)
        .arg(&torrent)
        .args(["--only", "3", "--no-dht", "--bind", "127.0.0.124:0"])
        .arg("-o")
        .arg(dir.path().join("dl"))
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    let line = crate::support::assert_cli_error(&out);
    assert!(
        line.contains("file selection 3 is out of range: the torrent has 1 files"),
        "{line}"
    );
    // The same through a magnet's so=, once the metadata says how many files there are.
    let (_seeder, magnet) = start_seeder(
        &file,
        &["--bind", "127.0.0.125:16881", "--no-dht"],
        &dir.path().join("seed-state"),
    );
    let out = fetch_from_peer(
        &format!("{magnet}&so=2-4"),
        "127.0.0.126:0",
        "127.0.0.125:16881",
        &dir.path().join("dl2"),
        &dir.path().join("s2"),
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("file selection 2-4 is out of range"), "{err}");
    let missing = Command::new(BIN)
        .arg("nosuchfile.torrent")
        .output()
        .unwrap();
    let line = crate::support::assert_cli_error(&missing);
    assert_eq!(line, "error: nosuchfile.torrent: no such file");
}

/// An output directory that cannot be written is reported before anything goes on the
/// network; `-o` naming a file says so.
#[test]
fn output_directory_is_checked_first() {
    let dir = tempfile::tempdir().unwrap();
    // /sys is read-only even for root.
    let started = Instant::now();
    let out = Command::new(BIN)
        .arg("ab".repeat(20))
        .args(["--bind", "127.0.0.127:0", "--bootstrap", "127.0.0.127:1"])
        .args(["-o", "/sys", "--json"])
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: output directory /sys is not writable"),
        "{err}"
    );
    let events = json_lines(&out.stdout);
    assert!(
        events.iter().all(|e| e["event"] != "phase"),
        "searched before checking: {events:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let out = Command::new(BIN)
        .arg("ab".repeat(20))
        .args(["--no-dht", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    let line = crate::support::assert_cli_error(&out);
    assert!(
        line.contains("is an existing file, not a directory"),
        "{line}"
    );
}

/// `magnetfetch A B` and `magnetfetch -i FILE`: one session fetches every torrent, each JSON
/// event carries its info-hash, and the exit code is 0 only if all completed.
#[test]
fn several_torrents_in_one_session() {
    let dir = tempfile::tempdir().unwrap();
    let (_s1, m1, d1) = seed_random_file(dir.path(), "first.bin", 300_000, 31, "127.0.0.128:16881");
    let (_s2, m2, d2) =
        seed_random_file(dir.path(), "second.bin", 200_000, 32, "127.0.0.129:16881");
    let hash = |m: &str| m.split("btih:").nth(1).unwrap()[..40].to_string();
    let run = |inputs: &[&str], out: &str, extra: &[&str]| {
        Command::new(BIN)
            .args(inputs)
            .args(["--bind", "127.0.0.130:0", "--no-dht", "--json"])
            .args(["--peer", "127.0.0.128:16881", "--peer", "127.0.0.129:16881"])
            .args(extra)
            .arg("-o")
            .arg(dir.path().join(out))
            .arg("--state-dir")
            .arg(dir.path().join(format!("state-{out}")))
            .output()
            .unwrap()
    };
    let out = run(&[&m1, &m2], "both", &["--metadata-timeout", "10s"]);
    let events = json_lines(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for e in &events {
        assert!(e["infohash"].is_string(), "untagged event {e}");
        assert!(e["t"].is_number(), "event without t {e}");
    }
    let done: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|e| e["event"] == "done")
        .map(|e| e["infohash"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(done, [hash(&m1), hash(&m2)].into_iter().collect());
    assert_eq!(
        std::fs::read(dir.path().join("both/first.bin")).unwrap(),
        d1
    );
    assert_eq!(
        std::fs::read(dir.path().join("both/second.bin")).unwrap(),
        d2
    );

    // The same from a list file, with a comment, a blank line and one torrent nobody has:
    // the others complete, the exit code says not all did.
    let list = dir.path().join("list.txt");
    let nobody = "ef".repeat(20);
    std::fs::write(&list, format!("# my list\n{m1}\n\n{nobody}\n{m2}\n")).unwrap();
    let out = run(
        &["-i", list.to_str().unwrap()],
        "listed",
        &["--metadata-timeout", "3s"],
    );
    assert_eq!(out.status.code(), Some(1));
    let events = json_lines(&out.stdout);
    let done = events.iter().filter(|e| e["event"] == "done").count();
    assert_eq!(done, 2, "{events:?}");
    assert!(events
        .iter()
        .any(|e| e["event"] == "error" && e["infohash"] == nobody.as_str()));
    assert_eq!(
        std::fs::read(dir.path().join("listed/second.bin")).unwrap(),
        d2
    );
}

/// `magnetfetch http://HOST/x.torrent`: the .torrent is downloaded (a redirect followed) and
/// fetched; a URL that is not a torrent is a clear error.
#[test]
fn torrent_by_url() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let (_seeder, _magnet, data) =
        seed_random_file(dir.path(), "web.bin", 250_000, 41, "127.0.0.131:16881");
    let torrent = dir.path().join("web.torrent");
    let made = Command::new(BIN)
        .arg("create")
        .arg(dir.path().join("web.bin"))
        .args(["--piece-length", "64K", "-o"])
        .arg(&torrent)
        .output()
        .unwrap();
    assert!(made.status.success());
    let body = std::fs::read(&torrent).unwrap();
    // A tiny web server: /old redirects to /web.torrent; anything else is 404.
    let listener = std::net::TcpListener::bind("127.0.0.132:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                    break;
                }
            }
            let mut s = s;
            let path = first.split(' ').nth(1).unwrap_or("").to_string();
            let _ = match path.as_str() {
                "/old" => s.write_all(
                    b"HTTP/1.1 302 Found\r\nLocation: /web.torrent\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
                "/web.torrent" => s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/x-bittorrent\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|_| s.write_all(&body)),
                _ => s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    let out = fetch_from_peer(
        &format!("http://127.0.0.132:{port}/old"),
        "127.0.0.133:0",
        "127.0.0.131:16881",
        &dir.path().join("dl"),
        &dir.path().join("s"),
        &[],
    )
    .output()
    .unwrap();
    events_of_success(&out);
    assert_eq!(std::fs::read(dir.path().join("dl/web.bin")).unwrap(), data);
    let out = Command::new(BIN)
        .arg(format!("http://127.0.0.132:{port}/missing.torrent"))
        .args(["--no-dht", "-o"])
        .arg(dir.path().join("dl2"))
        .output()
        .unwrap();
    let line = crate::support::assert_cli_error(&out);
    assert!(line.contains("missing.torrent: HTTP 404"), "{line}");
}
