//! `magnetfetch seed` and `fetch --seed` behind the in-test UPnP IGD (`support::igd`): the
//! JSON progress shows the mapping and the external address, the human progress says it in
//! one line, Ctrl-C deletes the mappings, and `--no-port-mapping` searches for nothing. The SSDP
//! search goes to the IGD's unicast address through the hidden `--ssdp-target` flag; the
//! NAT-PMP/PCP gateway is a loopback address where nothing listens (`--gateway`). The seed
//! listens on 0.0.0.0 (a loopback-bound seed never maps) with [`fresh_ip`] addresses for
//! the rest.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::igd::{IgdOptions, TestIgd};
use crate::support::loopback::fresh_ip;
use crate::support::{free_port, lines, Proc, BIN};

/// Starts `magnetfetch seed` on 0.0.0.0:PORT behind `igd`; returns it and its port.
fn seed_behind(igd: &TestIgd, dir: &std::path::Path, extra: &[&str]) -> (Proc, u16) {
    let file = dir.join("shared.bin");
    std::fs::write(&file, crate::support::random_bytes(100_000, 23)).unwrap();
    let port = free_port();
    let child = Command::new(BIN)
        .arg("seed")
        .arg(&file)
        .args(["--bind", &format!("0.0.0.0:{port}")])
        .args(["--bootstrap", &format!("{}:1", fresh_ip())])
        .args(["--ssdp-target", &igd.ssdp.to_string()])
        .args(["--gateway", &fresh_ip().to_string()])
        .args(extra)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn seed");
    (Proc(child), port)
}

fn interrupt(p: &mut Proc) -> Option<i32> {
    let st = Command::new("kill")
        .args(["-INT", &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    p.0.wait().unwrap().code()
}

#[test]
fn seed_json_shows_the_mapping_and_ctrl_c_deletes_it() {
    let igd = TestIgd::start(fresh_ip(), IgdOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (mut seed, port) = seed_behind(&igd, dir.path(), &["--json"]);
    let rx = lines(&mut seed.0);
    let magnet = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(magnet.starts_with("magnet:?"), "{magnet}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut event, mut progress, mut reach) = (None, None, None);
    let mut seen = Vec::new();
    let ip = igd.external_ip.to_string();
    while (event.is_none() || progress.is_none() || reach.is_none()) && Instant::now() < deadline {
        let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        match v["event"].as_str() {
            Some("port_mapping") if v["status"] == "mapped" => event = Some(v.clone()),
            Some("progress") if v["port_mapping"]["status"] == "mapped" => {
                progress = Some(v["port_mapping"].clone());
                // The mapping is also our external address, and makes us reachable.
                if v["external_addr"] == ip.as_str() && v["reachable"] == "yes" {
                    reach = Some(());
                }
            }
            _ => {}
        }
        seen.push(l);
    }
    let event = event.unwrap_or_else(|| panic!("no port_mapping event: {seen:#?}"));
    let pm = progress.unwrap_or_else(|| panic!("no mapped progress: {seen:#?}"));
    assert!(
        reach.is_some(),
        "no external_addr {ip} / reachable yes: {seen:#?}"
    );
    for v in [&event, &pm] {
        assert_eq!(v["protocol"], "upnp", "{v}");
        assert_eq!(v["external_ip"], ip.as_str(), "{v}");
        assert_eq!(v["external_port"], port, "{v}");
        assert_eq!(v["external_udp_port"], port, "{v}");
    }
    let maps = igd.mappings();
    assert!(maps.contains_key(&("TCP".to_string(), port)), "{maps:?}");
    assert!(maps.contains_key(&("UDP".to_string(), port)), "{maps:?}");
    assert_eq!(interrupt(&mut seed), Some(0));
    assert!(
        igd.mappings().is_empty(),
        "left after Ctrl-C: {:?}",
        igd.log()
    );
    let log = igd.log();
    assert!(
        log.contains(&format!("DeletePortMapping TCP {port}")),
        "{log:?}"
    );
}

#[test]
fn seed_says_what_the_router_forwards() {
    let igd = TestIgd::start(fresh_ip(), IgdOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (mut seed, port) = seed_behind(&igd, dir.path(), &[]);
    let err = BufReader::new(seed.0.stderr.take().unwrap());
    let want = format!(
        "port mapping: UPnP forwards TCP and UDP port {port} of {} to us",
        igd.external_ip
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            if l == want {
                assert_eq!(interrupt(&mut seed), Some(0));
                return;
            }
            seen.push(l);
        }
    }
    panic!("no {want:?} in {seen:#?}");
}

#[test]
fn no_port_mapping_searches_for_nothing() {
    let igd = TestIgd::start(fresh_ip(), IgdOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let (mut seed, _) = seed_behind(&igd, dir.path(), &["--json", "--no-port-mapping"]);
    let rx = lines(&mut seed.0);
    // Two progress events (~4 s): every one says no mapping, and no search arrived.
    let mut progress = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress < 2 && Instant::now() < deadline {
        let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) else {
            continue; // the magnet link
        };
        assert_ne!(v["event"], "port_mapping", "{v}");
        if v["event"] == "progress" {
            assert!(v["port_mapping"].is_null(), "{v}");
            progress += 1;
        }
    }
    assert_eq!(progress, 2);
    assert_eq!(igd.state.lock().unwrap().searches, 0);
    assert_eq!(interrupt(&mut seed), Some(0));
}

#[test]
fn fetch_seed_maps_the_port_and_deletes_it_on_ctrl_c() {
    let igd = TestIgd::start(fresh_ip(), IgdOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dl");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f.bin"), crate::support::random_bytes(70_000, 5)).unwrap();
    let torrent = dir.path().join("f.torrent");
    let st = Command::new(BIN)
        .arg("create")
        .arg(data.join("f.bin"))
        .arg("-o")
        .arg(&torrent)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    // The data is already there: checked, then seeded (--seed) behind the IGD.
    let port = free_port();
    let mut fetch = Proc(
        Command::new(BIN)
            .arg(&torrent)
            .arg("-o")
            .arg(&data)
            .args(["--seed", "--json", "--no-dht"])
            .args(["--bind", &format!("0.0.0.0:{port}")])
            .args(["--ssdp-target", &igd.ssdp.to_string()])
            .args(["--gateway", &fresh_ip().to_string()])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rx = lines(&mut fetch.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut mapped = None;
    while mapped.is_none() && Instant::now() < deadline {
        let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        if v["event"] == "port_mapping" && v["status"] == "mapped" {
            mapped = Some(v);
        }
        seen.push(l);
    }
    let v = mapped.unwrap_or_else(|| panic!("no mapping: {seen:#?}"));
    assert_eq!(v["external_port"], port, "{v}");
    // --no-dht: no UDP port to map.
    assert!(v["external_udp_port"].is_null(), "{v}");
    assert_eq!(igd.mappings().len(), 1, "{:?}", igd.log());
    interrupt(&mut fetch);
    assert!(
        igd.mappings().is_empty(),
        "left after Ctrl-C: {:?}",
        igd.log()
    );
}
