//! The libtorrent side of the interop tests: every libtorrent peer is a mode of the one
//! helper script `benches/lt_helper.py` (shared with the benchmark runner), run by the system
//! python that has the python3-libtorrent bindings.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::SYSTEM_PYTHON;

/// The helper script.
pub fn lt_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/lt_helper.py")
}

/// `python3 lt_helper.py MODE`, ready for the mode's arguments.
pub fn lt_command(mode: &str) -> Command {
    let mut c = Command::new(SYSTEM_PYTHON);
    c.args(["-W", "ignore"]).arg(lt_script()).arg(mode);
    c
}

/// Runs a mode to its end; panics with its stderr if it fails, else returns its stdout.
pub fn lt_json(mode: &str, args: &[&str]) -> String {
    let out = lt_command(mode).args(args).output().expect("run python");
    assert!(
        out.status.success(),
        "lt_helper.py {mode} failed: {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A mode running beside the test as a child process (stdin held open, stdout piped, stderr
/// ours); killed on drop so a failing assert never leaves it behind.
pub struct LtPeer {
    pub child: std::process::Child,
}

impl LtPeer {
    pub fn spawn(mode: &str, args: &[&str]) -> LtPeer {
        let child = lt_command(mode)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3");
        LtPeer { child }
    }

    /// Reads the helper's next JSON line (in a blocking thread).
    pub async fn json_line(&mut self) -> serde_json::Value {
        use std::io::{BufRead, BufReader};
        let out = self.child.stdout.take().expect("stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut l = String::new();
            BufReader::new(out).read_line(&mut l).map(|_| l)
        })
        .await
        .unwrap()
        .expect("read helper output");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("helper said {line:?}: {e}"))
    }
}

impl Drop for LtPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
