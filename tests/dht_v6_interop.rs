//! BEP 32 interop on IPv6 loopback (`::1`, ports 261xx): a libtorrent seeder whose DHT runs
//! over IPv6 only, bootstrapped from our node, announces there; our IPv6 lookup (from
//! another of our nodes) finds it.
//!
//! Needs `/usr/bin/python3` with `libtorrent` (skips loudly without it, fails under
//! MAGNETFETCH_REQUIRE_INTEROP=1) and an IPv6 loopback (skips loudly without it).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use magnetfetch::dht::{Dht, DhtConfig};
use magnetfetch::id::Id20;
use magnetfetch::net::Net;

mod common;
use common::{require_or_skip, PyHelper};

const ROOT: &str = "[::1]:26120";
const SEEDER_PORT: u16 = 26121;

/// A libtorrent session on [::1] only (so its DHT is IPv6 only), seeding a fresh file;
/// prints {"infohash": ...} once the torrent is added.
const SEED_SCRIPT: &str = r#"
import json, os, sys, tempfile, time
import libtorrent as lt
root_port, port = int(sys.argv[1]), int(sys.argv[2])
d = tempfile.mkdtemp(prefix="mf-v6-interop-")
path = os.path.join(d, "payload.bin")
with open(path, "wb") as f: f.write(os.urandom(64 * 1024))
fs = lt.file_storage(); lt.add_files(fs, path)
t = lt.create_torrent(fs, 16384); lt.set_piece_hashes(t, d)
info = lt.torrent_info(t.generate())
s = lt.session({"listen_interfaces": f"[::1]:{port}", "enable_dht": True,
    "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
    "dht_bootstrap_nodes": f"[::1]:{root_port}",
    "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
    "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
    "dht_prefer_verified_node_ids": False, "dht_announce_interval": 5,
    "dht_aggressive_lookups": True, "enable_outgoing_utp": False,
    "enable_incoming_utp": False})
try:
    s.add_dht_node(("::1", root_port))
except Exception as e:
    print("add_dht_node:", e, file=sys.stderr)
s.add_torrent({"ti": info, "save_path": d})
print(json.dumps({"infohash": str(info.info_hash())}), flush=True)
time.sleep(120)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_ipv6_lookup_finds_libtorrent_seeder_announced_over_ipv6() {
    if !require_or_skip("libtorrent") {
        return;
    }
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIP: no IPv6 loopback (::1) ***\n"
        );
        return;
    }
    let root_addr: SocketAddr = ROOT.parse().unwrap();
    let root_cfg = DhtConfig {
        seed: Some(61),
        ..Default::default()
    };
    let root = Dht::start(Net::Tokio, root_addr, root_cfg).await.unwrap();
    let mut py = PyHelper::spawn(
        SEED_SCRIPT,
        &[&root_addr.port().to_string(), &SEEDER_PORT.to_string()],
    );
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
