//! Interop on loopback with real libtorrent DHT nodes (BEP 5):
//! 1. our node finds a libtorrent seeder through libtorrent's DHT;
//! 2. a libtorrent session bootstrapped only from our node finds a peer announced through it.
//!
//! Needs `/usr/bin/python3` with the `libtorrent` module: without it the tests print a loud
//! SKIP and pass, unless MAGNETFETCH_REQUIRE_INTEROP=1, where they fail.

use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Duration;

use magnetfetch::internals::dht::{Dht, DhtConfig};
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::net::Net;

use crate::support::{lt_command, require_or_skip, Proc};

fn read_json_line(child: &mut Child) -> serde_json::Value {
    use std::io::BufRead;
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("read seeder line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad seeder output {line:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_lookup_finds_libtorrent_seeder() {
    if !require_or_skip("libtorrent") {
        return;
    }
    let child = lt_command("dht-seed")
        .arg("127.0.4")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn libtorrent");
    let mut child = Proc(child);
    let info = tokio::task::spawn_blocking(move || {
        let v = read_json_line(&mut child.0);
        (v, child)
    })
    .await
    .unwrap();
    let (info, _child) = info;
    let bootstrap: Vec<SocketAddr> = info["bootstrap"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    let seeder: SocketAddr = info["seeder"].as_str().unwrap().parse().unwrap();
    let ih = Id20::from_hex(info["infohash"].as_str().unwrap()).unwrap();
    let cfg = DhtConfig {
        bootstrap: bootstrap[..1].to_vec(),
        seed: Some(7),
        ..Default::default()
    };
    let dht = Dht::start(Net::Tokio, "127.0.4.50:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    // The seeder announces within a few seconds of starting; retry lookups until then.
    let started = std::time::Instant::now();
    let mut found = false;
    while !found && started.elapsed() < Duration::from_secs(30) {
        let h = dht.lookup(ih, None, false).await;
        let mut rx = h.peers;
        while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            if p == seeder {
                found = true;
            }
        }
        if !found {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let st = dht.stats().await;
    eprintln!(
        "lookup vs libtorrent: found={found} after {:?}, stats {st:?}",
        started.elapsed()
    );
    assert!(found, "libtorrent seeder {seeder} not found");
    dht.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_finds_peer_announced_through_our_node() {
    if !require_or_skip("libtorrent") {
        return;
    }
    let root_cfg = DhtConfig {
        seed: Some(1),
        ..Default::default()
    };
    let root = Dht::start(Net::Tokio, "127.0.5.1:0".parse().unwrap(), root_cfg)
        .await
        .unwrap();
    let cfg = DhtConfig {
        seed: Some(2),
        bootstrap: vec![root.local_addr()],
        ..Default::default()
    };
    let announcer = Dht::start(Net::Tokio, "127.0.5.2:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    announcer.bootstrapped().await;
    let ih = Id20([0x5a; 20]);
    let h = announcer.lookup(ih, Some(Some(5555)), false).await;
    let mut rx = h.peers;
    while rx.recv().await.is_some() {}
    let summary = h.done.await.unwrap();
    assert!(summary.announced_to >= 1, "{summary:?}");
    // Give the announce datagram a moment to land before libtorrent asks.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(root.stats().await.peers_stored, 1);

    let root_addr = root.local_addr().to_string();
    let out = tokio::task::spawn_blocking(move || {
        lt_command("dht-find")
            .args([
                "127.0.5.9",
                &root_addr,
                &ih.to_hex(),
                "127.0.5.2:5555",
                "20",
            ])
            .output()
            .expect("run libtorrent")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "libtorrent ({}): {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("FOUND") && !stdout.contains("NOT FOUND"),
        "libtorrent did not find the peer"
    );
    let st = root.stats().await;
    assert!(st.queries_received > 0);
    announcer.shutdown().await;
    root.shutdown().await;
}

/// Measurement for docs/benchmarks.md ("DHT lookups"), not a gate:
/// `MAGNETFETCH_REQUIRE_INTEROP=1 cargo test --release --test interop interop_dht
/// bench_lookups_in_libtorrent_swarm -- --ignored --nocapture`.
/// Our node (127.0.0.80) joins a swarm of 19 libtorrent DHT nodes and looks up each one's
/// announced info-hash: time and queries per lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_lookups_in_libtorrent_swarm() {
    if !require_or_skip("libtorrent") {
        return;
    }
    let child = lt_command("dht-swarm")
        .arg("19")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn libtorrent");
    let mut child = Proc(child);
    let (info, _child) = tokio::task::spawn_blocking(move || {
        let v = read_json_line(&mut child.0);
        (v, child)
    })
    .await
    .unwrap();
    let root: SocketAddr = info["bootstrap"].as_str().unwrap().parse().unwrap();
    let cfg = DhtConfig {
        bootstrap: vec![root],
        seed: Some(80),
        ..Default::default()
    };
    let dht = Dht::start(Net::Tokio, "127.0.0.80:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), dht.bootstrapped())
        .await
        .expect("bootstrap");
    let mut sums = Vec::new();
    let mut found = 0;
    for pair in info["hashes"].as_array().unwrap() {
        let ih = Id20::from_hex(pair[0].as_str().unwrap()).unwrap();
        let want: SocketAddr = pair[1].as_str().unwrap().parse().unwrap();
        let h = dht.lookup(ih, None, false).await;
        let mut rx = h.peers;
        let mut got = false;
        while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            got |= p == want;
        }
        found += usize::from(got);
        sums.push(h.done.await.expect("lookup finished"));
    }
    let n = sums.len();
    sums.sort_by_key(|s| s.queries_sent);
    let (q50, qmax) = (sums[n / 2].queries_sent, sums[n - 1].queries_sent);
    sums.sort_by_key(|s| s.duration);
    eprintln!(
        "libtorrent swarm of {n}: found {found}/{n}; queries/lookup median {q50}, max {qmax}; \
         lookup time median {:?}, max {:?}",
        sums[n / 2].duration,
        sums[n - 1].duration
    );
    assert!(found >= n * 9 / 10, "found {found}/{n}");
    dht.shutdown().await;
}
