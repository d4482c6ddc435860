//! `magnetfetch` processes of a test: the one guard that kills a child when the test ends,
//! a `magnetfetch seed` and a `magnetfetch dht serve` (BEP 5 bootstrap node) started the same
//! way by every test that needs one, and line readers for their output.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The magnetfetch binary built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_magnetfetch");

/// Runs the magnetfetch binary built for this test run.
pub fn magnetfetch(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run magnetfetch")
}

/// Kills the child when dropped (a failing assert must not leave processes behind).
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stdout, read on a thread (which stops when the receiver is dropped).
pub fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

/// Lines of a child's stdout, read on a thread that keeps draining the pipe after the
/// receiver is gone: a long-running process that logs must never write to a closed pipe.
pub fn drained_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { return };
            let _ = tx.send(l);
        }
    });
    rx
}

/// Starts `magnetfetch seed FILE` and returns it with its magnet link (first stdout line).
pub fn start_seeder(file: &Path, extra: &[&str], state: &Path) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .arg("seed")
        .arg(file)
        .args(extra)
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn seeder");
    let rx = drained_lines(&mut child);
    let magnet = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("seeder printed no magnet link");
    assert!(magnet.starts_with("magnet:?xt=urn:btih:"), "{magnet}");
    (Proc(child), magnet)
}

/// `magnetfetch dht serve --no-bootstrap` bound on every address of `binds` (plus `extra`
/// arguments), returned once it says it listens on each of them: the bootstrap node of a
/// loopback DHT.
pub fn dht_serve(binds: &[&str], extra: &[&str]) -> Proc {
    let mut c = Command::new(BIN);
    c.args(["dht", "serve", "--no-bootstrap"]);
    for b in binds {
        c.args(["--bind", b]);
    }
    let mut child = c
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dht serve");
    let rx = drained_lines(&mut child);
    // "node id: ..." then one "listening on: ..." line per socket.
    let mut listening = Vec::new();
    while listening.len() < binds.len() {
        let l = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("dht serve printed its addresses");
        if let Some(a) = l.strip_prefix("listening on: ") {
            listening.push(a.to_string());
        }
    }
    for b in binds {
        assert!(listening.iter().any(|l| l == b), "{listening:?} vs {b}");
    }
    Proc(child)
}

/// A bootstrap DHT node on `bind` keeping its state in `state`.
pub fn dht_node(bind: &str, state: &Path) -> Proc {
    let state = state.to_str().expect("utf-8 state dir");
    dht_serve(&[bind], &["--state-dir", state])
}
