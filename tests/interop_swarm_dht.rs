//! Interop through the DHT only (no --peer, no tracker): the mission's path end to end against
//! libtorrent (python3-libtorrent) on loopback.
//!
//! - a libtorrent seeder whose DHT is bootstrapped from `magnetfetch dht serve`; `magnetfetch
//!   MAGNET` finds it through the DHT, fetches the metadata and the file;
//! - `magnetfetch seed FILE` announces on the DHT; a libtorrent leecher bootstrapped only from
//!   the same `magnetfetch dht serve` node finds it and downloads the file.
//!
//! Skips loudly without libtorrent, fails under `MAGNETFETCH_REQUIRE_INTEROP=1`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_magnetfetch");

/// Kills the child when the test ends, pass or fail.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dht_node(bind: &str, state: &std::path::Path) -> Guard {
    let child = Command::new(BIN)
        .args(["dht", "serve", "--bind", bind, "--state-dir"])
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dht serve");
    // Give the socket a moment to bind before others bootstrap from it.
    std::thread::sleep(Duration::from_millis(300));
    Guard(child)
}

const LT_SETTINGS: &str = r#"
import libtorrent as lt, sys, json, os, time, hashlib
def settings(iface, boot):
    return {
        "listen_interfaces": f"{iface}:6881", "outgoing_interfaces": iface,
        "enable_dht": True, "dht_bootstrap_nodes": boot,
        "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False, "dht_announce_interval": 2,
        "dht_aggressive_lookups": True, "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "alert_mask": 0,
    }
"#;

const LT_SEED: &str = r#"
iface, boot, d = sys.argv[1], sys.argv[2], sys.argv[3]
path = os.path.join(d, "lt.bin")
with open(path, "wb") as f:
    f.write(os.urandom(3 * 1024 * 1024 + 4321))
fs = lt.file_storage(); lt.add_files(fs, path)
t = lt.create_torrent(fs, 64 * 1024)
lt.set_piece_hashes(t, d)
ti = lt.torrent_info(t.generate())
s = lt.session(settings(iface, boot))
s.add_torrent({"ti": ti, "save_path": d, "flags": lt.torrent_flags.seed_mode})
ih = str(ti.info_hashes().v1)
sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
print(json.dumps({"magnet": f"magnet:?xt=urn:btih:{ih}&dn=lt.bin", "sha256": sha}), flush=True)
time.sleep(120)
"#;

const LT_FETCH: &str = r#"
iface, boot, magnet, d = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
s = lt.session(settings(iface, boot))
p = lt.parse_magnet_uri(magnet); p.save_path = d
h = s.add_torrent(p)
end = time.time() + 60
while time.time() < end and not h.status().is_seeding:
    time.sleep(0.05)
ok = h.status().is_seeding
out = {"done": ok}
if ok:
    fs = h.torrent_file().files()
    out["sha256"] = hashlib.sha256(open(os.path.join(d, fs.file_path(0)), "rb").read()).hexdigest()
print(json.dumps(out), flush=True)
"#;

fn json_field(line: &str, key: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).expect("json line");
    v[key].as_str().unwrap_or_default().to_string()
}

#[test]
fn magnetfetch_downloads_from_libtorrent_via_dht_only() {
    if !common::require_or_skip("libtorrent") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _node = dht_node("127.0.0.141:6881", &dir.path().join("node"));
    let seed_dir = dir.path().join("lt");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let script = format!("{LT_SETTINGS}{LT_SEED}");
    let mut seeder = Guard(
        Command::new(common::SYSTEM_PYTHON)
            .args(["-c", &script, "127.0.0.142", "127.0.0.141:6881"])
            .arg(&seed_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start libtorrent seeder"),
    );
    let mut line = String::new();
    BufReader::new(seeder.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let magnet = json_field(&line, "magnet");
    let sha = json_field(&line, "sha256");
    assert!(magnet.starts_with("magnet:?"), "seeder said: {line}");
    let out_dir = dir.path().join("out");
    let out = Command::new(BIN)
        .arg(&magnet)
        .args([
            "--bind",
            "127.0.0.143:6881",
            "--bootstrap",
            "127.0.0.141:6881",
        ])
        .args(["--json", "--metadata-timeout", "40s", "-o"])
        .arg(&out_dir)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("run magnetfetch");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = stdout
        .lines()
        .find(|l| l.contains("\"event\":\"done\""))
        .expect("done event");
    let v: serde_json::Value = serde_json::from_str(done).unwrap();
    assert_eq!(v["total_size"], 3 * 1024 * 1024 + 4321);
    assert_eq!(common::sha256_file(&out_dir.join("lt.bin")), sha);
}

#[test]
fn libtorrent_downloads_from_magnetfetch_seed_via_dht_only() {
    if !common::require_or_skip("libtorrent") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _node = dht_node("127.0.0.145:6881", &dir.path().join("node"));
    let file = dir.path().join("ours.bin");
    let data: Vec<u8> = (0..(2 * 1024 * 1024 + 99u32))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let mut seed = Guard(
        Command::new(BIN)
            .arg("seed")
            .arg(&file)
            .args([
                "--bind",
                "127.0.0.146:6881",
                "--bootstrap",
                "127.0.0.145:6881",
            ])
            .arg("--state-dir")
            .arg(dir.path().join("seedstate"))
            .arg("-q")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start magnetfetch seed"),
    );
    let mut magnet = String::new();
    BufReader::new(seed.0.stdout.take().unwrap())
        .read_line(&mut magnet)
        .unwrap();
    let magnet = magnet.trim().to_string();
    assert!(magnet.starts_with("magnet:?xt=urn:btih:"), "{magnet}");
    let lt_dir = dir.path().join("lt");
    std::fs::create_dir_all(&lt_dir).unwrap();
    let script = format!("{LT_SETTINGS}{LT_FETCH}");
    let out = common::run_python(
        std::path::Path::new(common::SYSTEM_PYTHON),
        &script,
        &[
            "127.0.0.147",
            "127.0.0.145:6881",
            &magnet,
            lt_dir.to_str().unwrap(),
        ],
    );
    let line = out.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    assert_eq!(v["done"], true, "libtorrent did not finish: {line}");
    assert_eq!(v["sha256"].as_str().unwrap(), common::sha256_file(&file));
}
