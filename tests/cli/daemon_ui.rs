//! The daemon's web UI in a real browser: headless Chromium driven by selenium
//! (`tests/support/ui_browser.py`; apt: chromium, chromium-driver, python3-selenium) adds a
//! magnet of a loopback `magnetfetch seed` (a directory of two files, 512 KiB/s) from the
//! page, unticks the second file in the detail's files tab while it downloads (the daemon
//! then has the selection `[0]`), opens the peers, trackers and pieces tabs, sees it reach
//! `seeding`, pauses and resumes it from the page. SKIPs loudly without the browser, FAILs then under
//! MAGNETFETCH_REQUIRE_INTEROP=1. Addresses from `fresh_ip()`.

use std::process::Command;

use crate::support::loopback::fresh_ip;
use crate::support::procs::start_seeder;
use crate::support::{random_bytes, require_or_skip};

fn selenium() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok || require_or_skip("python3-selenium (import selenium)")
}

#[test]
fn a_magnet_added_in_the_browser_downloads_and_is_paused_and_resumed_there() {
    if !require_or_skip("chromium") || !require_or_skip("chromedriver") || !selenium() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ui");
    std::fs::create_dir_all(&file).unwrap();
    std::fs::write(file.join("a.bin"), random_bytes(2 * 1024 * 1024 + 5, 244)).unwrap();
    std::fs::write(file.join("b.bin"), random_bytes(300_000, 246)).unwrap();
    let seed_bind = format!("{}:{}", fresh_ip(), crate::support::free_port());
    let (_seeder, magnet) = start_seeder(
        &file,
        &[
            "--no-dht",
            "--bind",
            &seed_bind,
            "--max-up-rate",
            "512K",
            "-q",
        ],
        &dir.path().join("seed-state"),
    );
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (_daemon, api) =
        crate::daemon_api::start_daemon(fresh_ip(), &out, &dir.path().join("state"), &[]);
    let link = format!("{magnet}&x.pe={seed_bind}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/ui_browser.py");
    let run = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(format!("http://{api}/"))
        .arg(&link)
        .output()
        .expect("run the browser script");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "browser script failed: {}\n{stdout}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("browser steps: {}", v["steps"]);
    assert_eq!(v["title"], "magnetfetch", "{v}");
    let states: Vec<&str> = v["states"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    // Seeding, then paused, then seeding again, as the page showed them.
    let seeding = states.iter().position(|s| *s == "seeding").unwrap();
    let paused = states.iter().rposition(|s| *s == "paused").unwrap();
    assert!(
        seeding < paused && states.last() == Some(&"seeding"),
        "{states:?}"
    );
    assert_eq!(v["selected"], "0", "{v}");
    assert_eq!(
        v["tabs"],
        serde_json::json!(["peers", "trackers", "pieces", "files"])
    );
    let t = crate::daemon_api::json(api, "GET", "/torrents/1", b"");
    assert_eq!(t["settings"]["files"], serde_json::json!([0]), "{t}");
    assert!(
        std::fs::read(out.join("ui/a.bin")).unwrap() == std::fs::read(file.join("a.bin")).unwrap()
    );
}
