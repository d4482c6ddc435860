//! Interop on loopback with real libtorrent DHT nodes (BEP 5):
//! 1. our node finds a libtorrent seeder through libtorrent's DHT;
//! 2. a libtorrent session bootstrapped only from our node finds a peer announced through it.
//!
//! Needs `/usr/bin/python3` with the `libtorrent` module: without it the tests print a loud
//! SKIP and pass, unless MAGNETFETCH_REQUIRE_INTEROP=1, where they fail.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use magnetfetch::dht::{Dht, DhtConfig};
use magnetfetch::id::Id20;
use magnetfetch::net::Net;

const PYTHON: &str = "/usr/bin/python3";

/// Local helper (tests/common is owned by someone else): is libtorrent usable?
fn libtorrent_available(test: &str) -> bool {
    let ok = Command::new(PYTHON)
        .args(["-c", "import libtorrent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("MAGNETFETCH_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("{test}: python3-libtorrent is required (MAGNETFETCH_REQUIRE_INTEROP=1)");
        }
        eprintln!("\n==== SKIP: {test}: /usr/bin/python3 cannot import libtorrent ====\n");
    }
    ok
}

/// Kills the child process when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts libtorrent DHT nodes and a seeder (`/work/shared/tools/swarm.py`-style, inline so
/// the test is self-contained) and returns (bootstrap addrs, seeder addr, info-hash).
const SEED_SCRIPT: &str = r#"
import json, os, sys, tempfile, time
import libtorrent as lt
base = sys.argv[1]
def settings(iface, port, bootstrap=""):
    return {"listen_interfaces": f"{iface}:{port}", "enable_dht": True, "enable_lsd": False,
        "enable_upnp": False, "enable_natpmp": False, "dht_bootstrap_nodes": bootstrap,
        "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False, "allow_multiple_connections_per_ip": True,
        "outgoing_interfaces": iface, "dht_announce_interval": 5, "dht_aggressive_lookups": True,
        "enable_outgoing_utp": False, "enable_incoming_utp": False}
d = tempfile.mkdtemp(prefix="mf-interop-")
path = os.path.join(d, "payload.bin")
with open(path, "wb") as f: f.write(os.urandom(256 * 1024))
fs = lt.file_storage(); lt.add_files(fs, path)
t = lt.create_torrent(fs, 16384); lt.set_piece_hashes(t, d)
info = lt.torrent_info(t.generate())
nodes = []
sessions = []
for i in range(3):
    ip = f"{base}.{10 + i}"
    sessions.append(lt.session(settings(ip, 6881)))
    nodes.append(f"{ip}:6881")
for s in sessions:
    s.apply_settings({"dht_bootstrap_nodes": ",".join(nodes)})
seeder = lt.session(settings(f"{base}.2", 6881, ",".join(nodes)))
seeder.add_torrent({"ti": info, "save_path": d})
print(json.dumps({"bootstrap": nodes, "seeder": f"{base}.2:6881",
                  "infohash": str(info.info_hash())}), flush=True)
time.sleep(120)
"#;

/// A libtorrent session that knows only `bootstrap`; prints FOUND when get_peers for the
/// info-hash returns `expect`.
const FIND_SCRIPT: &str = r#"
import sys, time
import libtorrent as lt
iface, bootstrap, ih, expect, timeout = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
s = lt.session({"listen_interfaces": f"{iface}:6881", "enable_dht": True, "enable_lsd": False,
    "enable_upnp": False, "enable_natpmp": False, "dht_bootstrap_nodes": bootstrap,
    "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
    "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
    "dht_prefer_verified_node_ids": False, "outgoing_interfaces": iface,
    "alert_mask": lt.alert.category_t.all_categories})
h = lt.sha1_hash(bytes.fromhex(ih))
end = time.time() + timeout
last = 0
while time.time() < end:
    if time.time() - last > 1.0:
        s.dht_get_peers(h); last = time.time()
    s.wait_for_alert(200)
    for a in s.pop_alerts():
        if isinstance(a, lt.dht_get_peers_reply_alert):
            peers = [f"{ip}:{port}" for ip, port in a.peers()]
            print("reply", peers, file=sys.stderr, flush=True)
            if expect in peers:
                print("FOUND", flush=True); sys.exit(0)
print("NOT FOUND", flush=True); sys.exit(1)
"#;

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
    if !libtorrent_available("our_lookup_finds_libtorrent_seeder") {
        return;
    }
    let child = Command::new(PYTHON)
        .args(["-c", SEED_SCRIPT, "127.0.4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn libtorrent");
    let mut child = KillOnDrop(child);
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
    if !libtorrent_available("libtorrent_finds_peer_announced_through_our_node") {
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
        Command::new(PYTHON)
            .args([
                "-c",
                FIND_SCRIPT,
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
        "libtorrent: {stdout} {}",
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

/// 19 libtorrent DHT nodes on 127.0.0.81–99 (bootstrapping from the first); each announces
/// its own random info-hash (a magnet added to the session: libtorrent announces it). Prints one JSON line once the announces had
/// time to land, then stays up.
const SWARM_SCRIPT: &str = r#"
import json, os, sys, tempfile, time
import libtorrent as lt
n = int(sys.argv[1])
def settings(iface, bootstrap):
    return {"listen_interfaces": f"{iface}:6881", "enable_dht": True, "enable_lsd": False,
        "enable_upnp": False, "enable_natpmp": False, "dht_bootstrap_nodes": bootstrap,
        "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False, "outgoing_interfaces": iface,
        "dht_announce_interval": 5, "enable_outgoing_utp": False, "enable_incoming_utp": False}
root = "127.0.0.81:6881"
sessions = [lt.session(settings(f"127.0.0.{81 + i}", root)) for i in range(n)]
time.sleep(6)
hashes = []
for i, s in enumerate(sessions):
    ih = os.urandom(20)
    # (this binding's dht_announce cannot be called: its flags type is not exported)
    p = lt.parse_magnet_uri(f"magnet:?xt=urn:btih:{ih.hex()}")
    p.save_path = tempfile.mkdtemp(prefix="mf-dht-bench-")
    s.add_torrent(p)
    hashes.append([ih.hex(), f"127.0.0.{81 + i}:6881"])
time.sleep(8)
print(json.dumps({"bootstrap": root, "hashes": hashes}), flush=True)
time.sleep(120)
"#;

/// Measurement for docs/benchmarks.md ("DHT lookups"), not a gate:
/// `MAGNETFETCH_REQUIRE_INTEROP=1 cargo test --release --test interop_dht
/// bench_lookups_in_libtorrent_swarm -- --ignored --nocapture`.
/// Our node (127.0.0.80) joins a swarm of 19 libtorrent DHT nodes and looks up each one's
/// announced info-hash: time and queries per lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_lookups_in_libtorrent_swarm() {
    if !libtorrent_available("bench_lookups_in_libtorrent_swarm") {
        return;
    }
    let child = Command::new(PYTHON)
        .args(["-c", SWARM_SCRIPT, "19"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn libtorrent");
    let mut child = KillOnDrop(child);
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
