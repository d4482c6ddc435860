//! MSE/PE interop with two more independent clients on loopback:
//! (a) `transmission-daemon` with `"encryption": 2` (required) seeds; `magnetfetch` with
//!     `--encryption require` downloads from it, and with `--encryption off` it cannot (so
//!     the first transfer really was encrypted);
//! (b) `aria2c --bt-require-crypto=true --bt-min-crypto-level=arc4` downloads from
//!     `magnetfetch seed --encryption require`, found through `magnetfetch tracker`; a seeder
//!     with `--encryption off` gets nothing to aria2.
//! Addresses come from `fresh_ip()`. SKIPs loudly without the clients, FAILs then under
//! MAGNETFETCH_REQUIRE_INTEROP=1.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::loopback::fresh_ip;
use crate::support::procs::{start_seeder, Proc, BIN};
use crate::support::{free_port, random_bytes, require_or_skip};

const SIZE: usize = 1024 * 1024 + 12_345;

/// Waits for `child` up to `limit`; kills it on timeout. `Some(success)` when it exited.
fn wait_for(child: &mut Child, limit: Duration) -> Option<bool> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st.success());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Polls `probe` every 200 ms until it is true or `limit` passes.
fn eventually(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if probe() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// A `magnetfetch MAGNET` download from one peer, from our own source address `ip`.
fn fetch(magnet: &str, peer: SocketAddr, ip: Ipv4Addr, enc: &str, out: &Path) -> Child {
    Command::new(BIN)
        .arg(magnet)
        .args(["--no-dht", "--peer", &peer.to_string(), "--encryption", enc])
        .args(["--bind", &format!("{ip}:0"), "-q", "-o"])
        .arg(out)
        .arg("--state-dir")
        .arg(out.join(".state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn magnetfetch")
}

#[test]
fn we_download_from_a_transmission_seeder_that_requires_encryption() {
    if !require_or_skip("transmission-daemon") || !require_or_skip("transmission-remote") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    let data = random_bytes(SIZE, 236);
    let file = data_dir.join("tr_required.bin");
    std::fs::write(&file, &data).unwrap();
    let torrent = dir.path().join("tr_required.torrent");
    let out = Command::new(BIN)
        .arg("create")
        .arg(&file)
        .arg("-o")
        .arg(&torrent)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let magnet = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let ip = fresh_ip();
    let (peer_port, rpc_port) = (free_port(), free_port());
    // Everything but the TCP peer port off: the transfer must go over that one socket.
    let settings = serde_json::json!({
        "encryption": 2,
        "dht-enabled": false,
        "lpd-enabled": false,
        "pex-enabled": false,
        "utp-enabled": false,
        "port-forwarding-enabled": false,
        "peer-port": peer_port,
        "peer-port-random-on-start": false,
        "bind-address-ipv4": ip.to_string(),
        "rpc-enabled": true,
        "rpc-bind-address": ip.to_string(),
        "rpc-port": rpc_port,
        "rpc-authentication-required": false,
        "rpc-whitelist-enabled": false,
        "rpc-host-whitelist-enabled": false,
        "download-dir": data_dir,
        "incomplete-dir-enabled": false,
    });
    std::fs::write(conf.join("settings.json"), settings.to_string()).unwrap();
    let _daemon = Proc(
        Command::new("transmission-daemon")
            .arg("-f")
            .arg("-g")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn transmission-daemon"),
    );
    let rpc = format!("{ip}:{rpc_port}");
    let remote = |args: &[&str]| {
        Command::new("transmission-remote")
            .arg(&rpc)
            .args(args)
            .output()
            .expect("run transmission-remote")
    };
    assert!(
        eventually(Duration::from_secs(20), || remote(&["-l"]).status.success()),
        "transmission-daemon's RPC never answered on {rpc}"
    );
    let add = remote(&[
        "-a",
        torrent.to_str().unwrap(),
        "-w",
        data_dir.to_str().unwrap(),
    ]);
    assert!(add.status.success(), "transmission-remote -a: {add:?}");
    // Transmission checks the file it was given, then seeds it.
    assert!(
        eventually(Duration::from_secs(30), || {
            String::from_utf8_lossy(&remote(&["-l"]).stdout).contains("100%")
        }),
        "transmission never finished checking: {}",
        String::from_utf8_lossy(&remote(&["-l"]).stdout)
    );
    let peer = SocketAddr::from((ip, peer_port));

    let got = tempfile::tempdir().unwrap();
    let mut child = fetch(&magnet, peer, fresh_ip(), "require", got.path());
    let done = wait_for(&mut child, Duration::from_secs(120));
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert_eq!(
        done,
        Some(true),
        "fetch with --encryption require: {stderr}"
    );
    assert!(
        std::fs::read(got.path().join("tr_required.bin")).unwrap() == data,
        "downloaded bytes differ"
    );

    // Plaintext only: Transmission drops it, so nothing completes.
    let plain = tempfile::tempdir().unwrap();
    let mut child = fetch(&magnet, peer, fresh_ip(), "off", plain.path());
    assert_eq!(
        wait_for(&mut child, Duration::from_secs(10)),
        None,
        "a plaintext-only fetch finished against a seeder that requires encryption"
    );
    let partial = std::fs::read(plain.path().join("tr_required.bin")).unwrap_or_default();
    assert!(partial != data, "plaintext fetch got the whole file");
}

#[test]
fn aria2_requiring_encryption_downloads_from_our_seeder() {
    if !require_or_skip("aria2c") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(SIZE, 237);
    let file = dir.path().join("aria2_required.bin");
    std::fs::write(&file, &data).unwrap();

    let tracker_addr = SocketAddr::from((fresh_ip(), free_port()));
    let _tracker = Proc(
        Command::new(BIN)
            .args(["tracker", "--http", &tracker_addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn magnetfetch tracker"),
    );
    assert!(
        eventually(Duration::from_secs(10), || TcpStream::connect(tracker_addr)
            .is_ok()),
        "tracker never listened on {tracker_addr}"
    );
    let announce = format!("http://{tracker_addr}/announce");
    let torrent = dir.path().join("aria2_required.torrent");

    let aria2 = |out: &Path, stop_after: u64| {
        Command::new("aria2c")
            .args([
                "--bt-require-crypto=true",
                "--bt-min-crypto-level=arc4",
                "--enable-dht=false",
                "--enable-dht6=false",
                "--bt-enable-lpd=false",
                "--enable-peer-exchange=false",
                "--seed-time=0",
                "--summary-interval=0",
                "--console-log-level=warn",
                &format!("--bt-stop-timeout={stop_after}"),
                "-d",
            ])
            .arg(out)
            .arg(&torrent)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn aria2c")
    };

    {
        let ip = fresh_ip();
        let bind = format!("{ip}:{}", free_port());
        let state = dir.path().join("state-require");
        let (_seeder, _magnet) = start_seeder(
            &file,
            &[
                "--no-dht",
                "--tracker",
                &announce,
                "-o",
                torrent.to_str().unwrap(),
                "--bind",
                &bind,
                "--encryption",
                "require",
                "-q",
            ],
            &state,
        );
        let got = tempfile::tempdir().unwrap();
        let mut child = aria2(got.path(), 60);
        assert_eq!(
            wait_for(&mut child, Duration::from_secs(90)),
            Some(true),
            "aria2c with --bt-require-crypto failed to download from our seeder"
        );
        assert!(
            std::fs::read(got.path().join("aria2_required.bin")).unwrap() == data,
            "aria2c's bytes differ"
        );
    }

    // A plaintext-only seeder refuses aria2's encrypted handshake: nothing is transferred.
    let ip = fresh_ip();
    let bind = format!("{ip}:{}", free_port());
    let state = dir.path().join("state-off");
    let (_seeder, _magnet) = start_seeder(
        &file,
        &[
            "--no-dht",
            "--tracker",
            &announce,
            "--bind",
            &bind,
            "--encryption",
            "off",
            "-q",
        ],
        &state,
    );
    let got = tempfile::tempdir().unwrap();
    let mut child = aria2(got.path(), 6);
    let finished = wait_for(&mut child, Duration::from_secs(30));
    assert_ne!(finished, Some(true), "aria2c reported success");
    let partial = std::fs::read(got.path().join("aria2_required.bin")).unwrap_or_default();
    assert!(
        partial != data,
        "aria2c got the file from a plaintext-only seeder"
    );
}
