//! The support module of every integration-test binary (each includes it with
//! `#[path = "../support/mod.rs"] mod support;`): real, independent clients, magnetfetch
//! processes, the web seed server, loopback addresses, and simnet set-ups.
//!
//! Interop tests call [`require_or_skip`]: when the tool is missing it prints a loud `SKIP:`
//! line and the test returns early, unless `MAGNETFETCH_REQUIRE_INTEROP=1`, in which case the
//! test fails (CI sets it so that a missing package can never look like a pass).
#![allow(dead_code, unused_imports)] // each test binary uses a different subset

pub mod igd;
pub mod loopback;
pub mod lt;
pub mod multicast;
pub mod pmp;
pub mod procs;
pub mod range_server;
pub mod sessions;

pub use loopback::free_port;
pub use lt::{lt_command, lt_json, lt_script, LtPeer};
pub use multicast::loopback_multicast;
pub use procs::{dht_node, dht_serve, drained_lines, lines, magnetfetch, start_seeder, Proc, BIN};
pub use range_server::{range_server, range_server_logged};
pub use sessions::{
    loopback_session, loopback_session_on, loopback_tcp_session, seed_from_disk, sim_seeding,
    sim_session, sim_session_on,
};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The system python with the libtorrent bindings (never the pyenv python on PATH).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// `/usr/bin/python3` if it can `import libtorrent`.
pub fn python_libtorrent() -> Option<PathBuf> {
    let ok = Command::new(SYSTEM_PYTHON)
        .args(["-c", "import libtorrent"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then(|| PathBuf::from(SYSTEM_PYTHON))
}

/// `mktorrent` from PATH, if installed.
pub fn mktorrent() -> Option<PathBuf> {
    which("mktorrent")
}

/// Finds an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// True when interop tests must not skip.
pub fn interop_required() -> bool {
    std::env::var("MAGNETFETCH_REQUIRE_INTEROP").is_ok_and(|v| v == "1")
}

/// Is `what` available? `"libtorrent"` (or `"python3-libtorrent"`) checks the system python's
/// bindings; anything else is looked up as an executable on PATH (e.g. `"mktorrent"`).
/// When missing: prints a loud SKIP and returns false, or panics when
/// `MAGNETFETCH_REQUIRE_INTEROP=1`. Usage: `if !require_or_skip("libtorrent") { return; }`.
pub fn require_or_skip(what: &str) -> bool {
    let found = match what {
        "libtorrent" | "python3-libtorrent" => python_libtorrent().is_some(),
        // BEP 32 tests need an IPv6 loopback address to bind.
        "ipv6-loopback" => std::net::UdpSocket::bind("[::1]:0").is_ok(),
        tool => which(tool).is_some(),
    };
    if found {
        return true;
    }
    if interop_required() {
        panic!("MAGNETFETCH_REQUIRE_INTEROP=1 but {what} is not available");
    }
    // Written to the stderr handle directly, not with eprintln!: the test harness captures
    // the print macros of passing tests, and a skip must be visible.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIP: {what} is not available; interop test not run (set MAGNETFETCH_REQUIRE_INTEROP=1 to fail instead) ***\n"
    );
    false
}

/// Asserts the error contract: exit 1, exactly one stderr line starting with `error: `,
/// nothing on stdout; returns that line.
pub fn assert_cli_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one stderr line, got: {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr:?}");
    assert!(out.stdout.is_empty(), "stdout should be empty on error");
    lines[0].to_string()
}

/// Deterministic pseudo-random payload (xorshift): incompressible enough for transfer tests,
/// reproducible from its seed.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// SHA-256 of a file, hex (via `sha256sum`, to compare with what a python helper reports).
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
