//! The daemon at scale, measured on its process: 1,000 idle magnets (no peer will ever
//! come: `--no-dht`, no trackers) stay under [`IDLE_MAGNETS_RSS_MIB`] of resident memory,
//! and 100 complete torrents seeding to nobody use under 1 % of a core (user + system
//! time from `/proc/PID/stat` over 10 s). docs/api.md states the bound, docs/benchmarks.md
//! the measurement. Addresses from `fresh_ip()`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::daemon_api::{http, json, start_daemon};
use crate::support::loopback::fresh_ip;
use crate::support::procs::BIN;

/// Resident memory allowed with 1,000 idle magnets (docs/api.md, "Scale").
const IDLE_MAGNETS_RSS_MIB: u64 = 200;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// User + system CPU time of `pid` so far, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn count_in(api: SocketAddr, state: &str) -> usize {
    json(api, "GET", "/torrents", b"")["torrents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == state)
        .count()
}

#[test]
fn a_thousand_idle_magnets_stay_within_the_stated_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, api) = start_daemon(fresh_ip(), dir.path(), &dir.path().join("state"), &[]);
    let pid = daemon.0.id();
    let before = rss_kib(pid);
    let t0 = Instant::now();
    for i in 0..1000u32 {
        let link = format!(
            "magnet:?xt=urn:btih:{:040x}&dn=idle-{i}",
            0xabc0_0000u64 + u64::from(i)
        );
        let (status, body) = http(api, "POST", "/torrents", link.as_bytes(), &[]);
        assert_eq!(status, 200, "{body}");
    }
    let added = t0.elapsed();
    assert_eq!(count_in(api, "searching"), 1000);
    // A few seconds of running: every torrent's tasks have started and ticked.
    std::thread::sleep(Duration::from_secs(3));
    let after = rss_kib(pid);
    eprintln!(
        "1000 idle magnets: added in {added:?}; RSS {} MiB before, {} MiB after",
        before / 1024,
        after / 1024
    );
    assert!(
        after < IDLE_MAGNETS_RSS_MIB * 1024,
        "RSS {after} KiB with 1000 idle magnets"
    );
}

#[test]
fn a_hundred_idle_seeds_use_under_one_percent_of_a_core() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut torrents = Vec::new();
    for i in 0..100u64 {
        let name = format!("seed{i:03}.bin");
        std::fs::write(
            data.join(&name),
            crate::support::random_bytes(64 * 1024, 400 + i),
        )
        .unwrap();
        let t = dir.path().join(format!("seed{i:03}.torrent"));
        let made = Command::new(BIN)
            .arg("create")
            .arg(data.join(&name))
            .arg("-o")
            .arg(&t)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        torrents.push(std::fs::read(&t).unwrap());
    }
    let (daemon, api) = start_daemon(fresh_ip(), &data, &dir.path().join("state"), &[]);
    let pid = daemon.0.id();
    for t in &torrents {
        let (status, body) = http(api, "POST", "/torrents", t, &[]);
        assert_eq!(status, 200, "{body}");
    }
    let end = Instant::now() + Duration::from_secs(60);
    while count_in(api, "seeding") < 100 {
        assert!(Instant::now() < end, "not all seeding");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Settle, then measure over 10 s with no request to the API.
    std::thread::sleep(Duration::from_secs(2));
    let (c0, t0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let (c1, el) = (cpu_ticks(pid), t0.elapsed());
    let share = (c1 - c0) as f64 / 100.0 / el.as_secs_f64();
    eprintln!(
        "100 idle seeds: {} ticks of CPU in {el:?} = {:.2} % of a core",
        c1 - c0,
        share * 100.0
    );
    assert!(share < 0.01, "{:.2} % of a core", share * 100.0);
    assert_eq!(http(api, "GET", "/torrents", b"", &[]).0, 200);
}
