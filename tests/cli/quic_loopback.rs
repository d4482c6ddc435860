//! QUIC between magnetfetch processes on loopback, addresses 127.0.0.100-119:
//!
//! - `magnetfetch seed` + `magnetfetch MAGNET` found through the DHT move the payload over
//!   QUIC by default (`transport_bytes.quic` ≈ file size) and over TCP with `--transport tcp`;
//! - a libtorrent leecher in the same swarm still downloads from our seed (over TCP) while
//!   our own leecher uses QUIC. Skips loudly without libtorrent, fails under
//!   `MAGNETFETCH_REQUIRE_INTEROP=1`;
//! - a `magnetfetch seed` that quits on Ctrl-C mid-transfer is dropped by its QUIC leecher
//!   at once, not after the 60 s QUIC idle timeout.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{dht_node, start_seeder, Proc, BIN};

fn data(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// `magnetfetch seed FILE` (default transport) and its magnet link.
fn seed(file: &Path, bind: &str, boot: &str, state: &Path) -> (Proc, String) {
    start_seeder(file, &["--bind", bind, "--bootstrap", boot, "-q"], state)
}

/// `magnetfetch MAGNET --json` through the DHT; returns the `done` event.
fn fetch(magnet: &str, bind: &str, boot: &str, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg(magnet)
        .args(["--bind", bind, "--bootstrap", boot, "--json"])
        .args(["--metadata-timeout", "20s"])
        .args(extra)
        .arg("-o")
        .arg(dir.join("dl"))
        .arg("--state-dir")
        .arg(dir.join("state-dl"))
        .output()
        .expect("run magnetfetch");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let done: serde_json::Value = serde_json::from_str(&last).expect("json done line");
    assert_eq!(done["event"], "done", "{last}");
    done
}

fn quic_tcp(done: &serde_json::Value) -> (u64, u64) {
    let tb = &done["transport_bytes"];
    (
        tb["quic"].as_u64().expect("transport_bytes.quic"),
        tb["tcp"].as_u64().expect("transport_bytes.tcp"),
    )
}

#[test]
fn seed_and_fetch_use_quic_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let payload = data(3 * 1024 * 1024 + 123, 7);
    let file = dir.path().join("q.bin");
    std::fs::write(&file, &payload).unwrap();
    let _boot = dht_node("127.0.0.100:17100", &dir.path().join("boot"));
    let boot = "127.0.0.100:17100";
    let (_seed, magnet) = seed(&file, "127.0.0.101:17101", boot, &dir.path().join("s"));

    let d1 = dir.path().join("auto");
    let done = fetch(&magnet, "127.0.0.102:17102", boot, &d1, &[]);
    let (quic, tcp) = quic_tcp(&done);
    eprintln!("auto: quic {quic} B, tcp {tcp} B");
    let n = payload.len() as u64;
    assert!(
        quic >= n * 95 / 100,
        "payload not over QUIC: quic {quic} tcp {tcp}"
    );
    assert!(
        quic <= n + 4 * 16384,
        "quic bytes count payload once: {quic}"
    );
    assert_eq!(std::fs::read(d1.join("dl/q.bin")).unwrap(), payload);

    let d2 = dir.path().join("tcp");
    let done = fetch(
        &magnet,
        "127.0.0.103:17103",
        boot,
        &d2,
        &["--transport", "tcp"],
    );
    let (quic, tcp) = quic_tcp(&done);
    eprintln!("--transport tcp: quic {quic} B, tcp {tcp} B");
    assert_eq!(quic, 0);
    assert!(tcp >= n);
    assert_eq!(std::fs::read(d2.join("dl/q.bin")).unwrap(), payload);

    // QUIC only, DHT off: the UDP port is bound for QUIC alone.
    let d3 = dir.path().join("quic");
    let out = Command::new(BIN)
        .arg(&magnet)
        .args(["--bind", "127.0.0.104:17104", "--no-dht", "--json"])
        .args(["--transport", "quic", "--peer", "127.0.0.101:17101"])
        .args(["--metadata-timeout", "20s", "-o"])
        .arg(d3.join("dl"))
        .arg("--state-dir")
        .arg(d3.join("st"))
        .output()
        .unwrap();
    // Metadata (BEP 9) still comes over TCP; pieces must come over QUIC.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let done: serde_json::Value = serde_json::from_str(&last).unwrap();
    let (quic, tcp) = quic_tcp(&done);
    eprintln!("--transport quic --no-dht: quic {quic} B, tcp {tcp} B");
    assert!(quic >= n && tcp == 0, "quic {quic} tcp {tcp}");
    assert_eq!(std::fs::read(d3.join("dl/q.bin")).unwrap(), payload);
}

#[test]
fn libtorrent_in_the_same_swarm_uses_tcp() {
    if !crate::support::require_or_skip("libtorrent") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let payload = data(2 * 1024 * 1024 + 55, 11);
    let file = dir.path().join("mixed.bin");
    std::fs::write(&file, &payload).unwrap();
    let boot = "127.0.0.110:17110";
    let _boot = dht_node(boot, &dir.path().join("boot"));
    let (_seed, magnet) = seed(&file, "127.0.0.111:17111", boot, &dir.path().join("s"));

    // Our leecher (QUIC with our seed) and libtorrent (TCP only) at the same time.
    let lt_dir = dir.path().join("lt");
    std::fs::create_dir_all(&lt_dir).unwrap();
    let lt = crate::support::lt_command("dht-fetch")
        .args(["127.0.0.112", boot, &magnet])
        .arg(&lt_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start libtorrent");
    let lt = Proc(lt);
    let ours = dir.path().join("ours");
    let done = fetch(&magnet, "127.0.0.113:17113", boot, &ours, &[]);
    let (quic, tcp) = quic_tcp(&done);
    eprintln!("ours in a mixed swarm: quic {quic} B, tcp {tcp} B");
    assert!(quic + tcp >= payload.len() as u64);
    assert!(quic > 0, "no QUIC between our two peers");
    assert_eq!(std::fs::read(ours.join("dl/mixed.bin")).unwrap(), payload);

    let mut lt = lt;
    let out = std::mem::replace(&mut lt.0, Command::new("true").spawn().unwrap())
        .wait_with_output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "libtorrent: {line} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["done"], true, "libtorrent did not finish: {line}");
    assert_eq!(
        v["sha256"].as_str().unwrap(),
        crate::support::sha256_file(&file)
    );
}

/// `magnetfetch seed --transport quic` serving a leecher (our library session,
/// QUIC only) gets Ctrl-C mid-transfer and exits. The leecher must stop counting it at
/// once: before, the exiting process never sent CONNECTION_CLOSE and the leecher counted
/// it until its 60 s QUIC idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeder_that_quits_is_dropped_by_its_quic_leecher_at_once() {
    use magnetfetch::internals::dial::{DialConfig, TransportMode};
    use magnetfetch::internals::magnet::{Magnet, PeerAddr};
    use magnetfetch::internals::net::Net;
    use magnetfetch::internals::session::{
        AddTorrent, Session, SessionConfig, Source, StorageSpec,
    };

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quit.bin");
    std::fs::write(&file, data(8 << 20, 11)).unwrap();
    let seeder_addr: std::net::SocketAddr = "127.0.0.105:17105".parse().unwrap();
    let mut seeder = Proc(
        Command::new(BIN)
            .arg("seed")
            .arg(&file)
            .args([
                "--bind",
                "127.0.0.105:17105",
                "--no-dht",
                "--transport",
                "quic",
            ])
            // Slow enough that the leecher is mid-transfer when the seeder quits.
            .args(["--max-up-rate", "1M", "-q", "--state-dir"])
            .arg(dir.path().join("s"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start magnetfetch seed"),
    );
    let mut line = String::new();
    BufReader::new(seeder.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut magnet = Magnet::parse(line.trim()).expect("magnet link");
    magnet.peers = vec![PeerAddr::Ip(seeder_addr)];

    let leecher = Session::start(SessionConfig {
        net: Net::Tokio,
        listen: Some("127.0.0.106:0".parse().unwrap()),
        rng_seed: Some(1),
        blocking_io: true,
        dht: None,
        trackers: None,
        transport: DialConfig {
            mode: TransportMode::Quic,
            ..Default::default()
        },
    })
    .await
    .unwrap();
    let handle = leecher.add(AddTorrent::new(Source::Magnet(magnet), StorageSpec::Memory));
    let mut p = handle.progress();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let pr = p.borrow_and_update().clone();
            if pr.peers == 1 && pr.transport_bytes.quic > 0 {
                assert!(
                    pr.verified < pr.total || pr.total == 0,
                    "finished too early"
                );
                return;
            }
            p.changed().await.unwrap();
        }
    })
    .await
    .expect("the leecher never downloaded from the seeder over QUIC");

    let t0 = std::time::Instant::now();
    // SAFETY: kill(2) on our own child's pid; SIGINT is what Ctrl-C sends.
    unsafe {
        libc::kill(seeder.0.id() as libc::pid_t, libc::SIGINT);
    }
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if p.borrow_and_update().peers == 0 {
                return;
            }
            p.changed().await.unwrap();
        }
    })
    .await;
    let after = t0.elapsed();
    let exited = seeder.0.wait().unwrap();
    eprintln!("seeder quit ({exited}); the leecher dropped it after {after:?}");
    handle.stop();
    assert!(
        gone.is_ok(),
        "the leecher still counts the seeder after {after:?}"
    );
    assert!(
        after < Duration::from_secs(3),
        "dropped only after {after:?}"
    );
}
