//! BEP 32 interop on IPv6 loopback (`::1`, ports 261xx): a libtorrent seeder whose DHT runs
//! over IPv6 only, bootstrapped from our node, announces there; our IPv6 lookup (from
//! another of our nodes) finds it. And the other way: a libtorrent session bootstrapped
//! only from our IPv6 node finds a peer we announced (our `nodes6`/18-byte `values`).
//! And dual stack: a libtorrent seeder on 127.0.0.171 and ::1 is found in both families by
//! one lookup of our dual-stack node.
//!
//! Needs `/usr/bin/python3` with `libtorrent` (skips loudly without it, fails under
//! MAGNETFETCH_REQUIRE_INTEROP=1) and an IPv6 loopback (skips loudly without it).

use std::net::SocketAddr;
use std::time::Duration;

use magnetfetch::internals::dht::{Dht, DhtConfig};
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::net::Net;

use crate::support::{require_or_skip, LtPeer};

const ROOT: &str = "[::1]:26120";
const SEEDER_PORT: u16 = 26121;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_ipv6_lookup_finds_libtorrent_seeder_announced_over_ipv6() {
    if !require_or_skip("libtorrent") || !require_or_skip("ipv6-loopback") {
        return;
    }
    let root_addr: SocketAddr = ROOT.parse().unwrap();
    let root_cfg = DhtConfig {
        seed: Some(61),
        ..Default::default()
    };
    let root = Dht::start(Net::Tokio, root_addr, root_cfg).await.unwrap();
    let listen = format!("[::1]:{SEEDER_PORT}");
    let mut py = LtPeer::spawn("dht6-seed", &[&listen, ROOT]);
    let info = py.json_line().await;
    let ih = Id20::from_hex(info["infohash"].as_str().unwrap()).unwrap();
    let seeder: SocketAddr = format!("[::1]:{SEEDER_PORT}").parse().unwrap();

    let cfg = DhtConfig {
        seed: Some(62),
        bootstrap: vec![root_addr],
        ..Default::default()
    };
    let dht = Dht::start(Net::Tokio, "[::1]:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    // libtorrent announces a few seconds after it starts; retry lookups until then.
    let started = std::time::Instant::now();
    let mut found = false;
    let mut seen = Vec::new();
    while !found && started.elapsed() < Duration::from_secs(40) {
        let h = dht.lookup(ih, None, false).await;
        let mut rx = h.peers;
        while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            found |= p == seeder;
            seen.push(p);
        }
        if !found {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let st = dht.stats().await;
    let rst = root.stats().await;
    eprintln!(
        "IPv6 lookup vs libtorrent: found={found} after {:?}; ours {st:?}; root {rst:?}",
        started.elapsed()
    );
    assert!(
        found,
        "libtorrent seeder {seeder} not found; peers seen {seen:?}"
    );
    assert!(rst.table_v6 >= 1 && rst.table_v4 == 0, "{rst:?}");
    dht.shutdown().await;
    root.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_finds_peer_announced_through_our_ipv6_node() {
    if !require_or_skip("libtorrent") || !require_or_skip("ipv6-loopback") {
        return;
    }
    let root_addr: SocketAddr = "[::1]:26123".parse().unwrap();
    let root_cfg = DhtConfig {
        seed: Some(63),
        ..Default::default()
    };
    let root = Dht::start(Net::Tokio, root_addr, root_cfg).await.unwrap();
    let cfg = DhtConfig {
        seed: Some(64),
        bootstrap: vec![root_addr],
        ..Default::default()
    };
    let announcer = Dht::start(Net::Tokio, "[::1]:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    announcer.bootstrapped().await;
    let ih = Id20([0x5e; 20]);
    let h = announcer.lookup(ih, Some(Some(7777)), false).await;
    let mut rx = h.peers;
    while rx.recv().await.is_some() {}
    let s = h.done.await.unwrap();
    assert!(s.announced_to >= 1, "{s:?}");
    let ih_hex = ih.to_hex();
    let out = tokio::task::spawn_blocking(move || {
        crate::support::lt_command("dht6-find")
            .args(["26123", "26124", &ih_hex])
            .args(["::1:7777", "30"])
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rst = root.stats().await;
    eprintln!("libtorrent over IPv6: {stdout:?}; root {rst:?}");
    assert!(
        stdout.contains("FOUND"),
        "libtorrent did not find our peer: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    announcer.shutdown().await;
    root.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_dual_stack_lookup_finds_libtorrent_in_both_families() {
    if !require_or_skip("libtorrent") || !require_or_skip("ipv6-loopback") {
        return;
    }
    let roots: Vec<SocketAddr> = vec![
        "127.0.0.170:26125".parse().unwrap(),
        "[::1]:26125".parse().unwrap(),
    ];
    let root_cfg = DhtConfig {
        seed: Some(65),
        ..Default::default()
    };
    let root = Dht::start_multi(Net::Tokio, &roots, root_cfg)
        .await
        .unwrap();
    let mut py = LtPeer::spawn(
        "dht6-seed",
        &[
            "127.0.0.171:26126,[::1]:26126",
            "127.0.0.170:26125,[::1]:26125",
        ],
    );
    let info = py.json_line().await;
    let ih = Id20::from_hex(info["infohash"].as_str().unwrap()).unwrap();
    let want: Vec<SocketAddr> = vec![
        "127.0.0.171:26126".parse().unwrap(),
        "[::1]:26126".parse().unwrap(),
    ];
    let cfg = DhtConfig {
        seed: Some(66),
        bootstrap: roots.clone(),
        ..Default::default()
    };
    let binds: Vec<SocketAddr> = vec!["127.0.0.172:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
    let dht = Dht::start_multi(Net::Tokio, &binds, cfg).await.unwrap();
    let started = std::time::Instant::now();
    let mut found = std::collections::BTreeSet::new();
    while found.len() < 2 && started.elapsed() < Duration::from_secs(40) {
        let h = dht.lookup(ih, None, false).await;
        let mut rx = h.peers;
        while let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            if want.contains(&p) {
                found.insert(p);
            }
        }
        if found.len() < 2 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let st = dht.stats().await;
    eprintln!(
        "dual-stack lookup vs libtorrent: found {found:?} after {:?}; stats {st:?}",
        started.elapsed()
    );
    assert_eq!(found.len(), 2, "found {found:?} of {want:?}");
    assert!(st.table_v4 >= 1 && st.table_v6 >= 1, "{st:?}");
    dht.shutdown().await;
    root.shutdown().await;
}
