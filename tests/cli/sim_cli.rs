//! `magnetfetch sim` end to end: the binary runs a simulated swarm (virtual time, no network)
//! and reports it; here the NAT line and keys (`--nat`, holepunching over uTP, BEP 55).

use std::process::Command;

use crate::support::procs::BIN;

/// The command line docs/guide.md and docs/simulation.md show.
const NAT_SIM: &[&str] = &[
    "sim",
    "--nat",
    "0.5",
    "--transport",
    "utp",
    "--arrival-rate",
    "0.5",
    "--leechers",
    "10",
    "--size",
    "8MiB",
    "--seed-up",
    "256KiB/s",
];

#[test]
fn sim_with_natted_leechers_reports_completions_and_punches() {
    let out = Command::new(BIN).args(NAT_SIM).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("NATed completed"))
        .unwrap_or_else(|| panic!("no NAT line in:\n{text}"));
    assert!(line.contains("5 / 5"), "{line}");
    assert!(line.contains("punched connections"), "{line}");

    let out = Command::new(BIN)
        .args(NAT_SIM)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nat_leechers"], 5, "{v}");
    assert_eq!(v["nat_completed"], 5, "{v}");
    assert_eq!(v["scenario"]["nat"], 0.5, "{v}");
    // NATed leechers meet through the seed or other peers as relays: some pairs punched.
    let punched = v["punched_connections"].as_u64().unwrap();
    assert!(punched >= 1, "{v}");
    assert!(v["punch_failures"].as_u64().is_some(), "{v}");
    // The same count the table printed.
    assert!(
        line.contains(&format!(", {punched} punched connections")),
        "{line}"
    );
}
