//! Progress display for `fetch` and `seed`: a live indicatif line on a terminal, plain
//! periodic lines otherwise (no escape codes), or JSON events on stdout (`--json`).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::time::Instant;

use crate::session::{Phase, Progress};

/// Plain lines and JSON progress events at most this often.
pub const PLAIN_EVERY: Duration = Duration::from_secs(2);

enum Mode {
    Json,
    Tty(ProgressBar),
    Plain,
    Quiet,
}

pub struct Display {
    mode: Mode,
    last_phase: Option<Phase>,
    last_periodic: Option<Instant>,
    /// Each tracker's last reported status: a change is shown once, not on every update.
    trackers: std::collections::BTreeMap<String, (String, Option<String>)>,
}

/// A human phase name.
pub fn phase_label(p: Phase) -> &'static str {
    match p {
        Phase::Searching => "searching DHT",
        Phase::Metadata => "fetching metadata",
        Phase::Checking => "checking",
        Phase::Downloading => "downloading",
        Phase::Seeding => "seeding",
        Phase::Done => "done",
        Phase::Stopped => "stopped",
    }
}

fn rate(r: u64) -> String {
    format!("{}/s", HumanBytes(r))
}

fn eta(p: &Progress) -> String {
    let left = p.total.saturating_sub(p.verified);
    if p.total == 0 || p.down_rate == 0 {
        return "-".into();
    }
    let s = left / p.down_rate;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn percent(p: &Progress) -> f64 {
    if p.total == 0 {
        0.0
    } else {
        p.verified as f64 * 100.0 / p.total as f64
    }
}

/// One human line describing `p` (plain mode and the terminal bar's message).
pub fn status_line(p: &Progress) -> String {
    let peers = format!(
        "peers {} ({} seeds, {} leechers){}",
        p.peers,
        p.seeds,
        p.peers.saturating_sub(p.seeds),
        sources_label(p)
    );
    match p.phase {
        Phase::Searching | Phase::Metadata => format!(
            "{}: {} peers known, {peers}",
            phase_label(p.phase),
            p.known_peers
        ),
        Phase::Seeding => format!(
            "seeding {}: up {} ({} sent), {peers}",
            HumanBytes(p.total),
            rate(p.up_rate),
            HumanBytes(p.uploaded)
        ),
        _ => format!(
            "{} {:.1}% {}/{} down {} up {} {peers} eta {}",
            phase_label(p.phase),
            percent(p),
            HumanBytes(p.verified),
            HumanBytes(p.total),
            rate(p.down_rate),
            rate(p.up_rate),
            eta(p)
        ),
    }
}

/// Where peers came from, e.g. ` [dht 12, tracker 3, webseed 1]` (empty when none yet).
pub fn sources_label(p: &Progress) -> String {
    let s = &p.sources;
    let parts: Vec<String> = [
        ("dht", s.dht),
        ("tracker", s.tracker),
        ("pex", s.pex),
        ("incoming", s.incoming),
        ("webseed", s.webseed),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" [{}]", parts.join(", "))
    }
}

impl Display {
    /// JSON when `json`; nothing when `quiet`; else a live bar when stderr is a terminal.
    pub fn new(json: bool, quiet: bool) -> Display {
        let mode = if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            let pb = ProgressBar::new(0);
            if let Ok(st) = ProgressStyle::with_template(
                "{spinner} {prefix:>17} [{bar:30}] {percent:>3}% {bytes}/{total_bytes} {msg}",
            ) {
                pb.set_style(st.progress_chars("=> "));
            }
            pb.enable_steady_tick(Duration::from_millis(200));
            Mode::Tty(pb)
        } else {
            Mode::Plain
        };
        Display {
            mode,
            last_phase: None,
            last_periodic: None,
            trackers: std::collections::BTreeMap::new(),
        }
    }

    pub fn is_json(&self) -> bool {
        matches!(self.mode, Mode::Json)
    }

    fn show_phase(&mut self, phase: Phase) {
        self.last_phase = Some(phase);
        match &self.mode {
            Mode::Json => emit(&json!({"event": "phase", "phase": phase.as_str()})),
            Mode::Plain => eprintln!("{}", phase_label(phase)),
            _ => {}
        }
    }

    /// Shows `p`: phase changes at once, the rest live (terminal) or every
    /// [`PLAIN_EVERY`] (plain lines, JSON progress events).
    pub fn update(&mut self, p: &Progress) {
        self.tracker_changes(p);
        let now = Instant::now();
        // A magnet's first phase is `searching`; a quick DHT answer can move it on before
        // the first look, and a phase stream must still start there.
        let magnet = p.phase == Phase::Metadata || p.metadata_ms.is_some();
        if self.last_phase.is_none() && magnet && p.phase != Phase::Searching {
            self.show_phase(Phase::Searching);
        }
        let phase_changed = self.last_phase != Some(p.phase);
        if phase_changed {
            self.show_phase(p.phase);
        }
        if let Mode::Tty(pb) = &self.mode {
            pb.set_prefix(phase_label(p.phase));
            pb.set_length(p.total);
            pb.set_position(p.verified);
            let msg = match p.phase {
                Phase::Searching | Phase::Metadata => {
                    format!("{} peers known, {} connected", p.known_peers, p.peers)
                }
                _ => format!(
                    "↓ {} ↑ {} peers {} ({} seeds/{} leechers) eta {}",
                    rate(p.down_rate),
                    rate(p.up_rate),
                    p.peers,
                    p.seeds,
                    p.peers.saturating_sub(p.seeds),
                    eta(p)
                ),
            };
            pb.set_message(msg);
            return;
        }
        let due = self
            .last_periodic
            .is_none_or(|t| now.saturating_duration_since(t) >= PLAIN_EVERY);
        if !due {
            return;
        }
        self.last_periodic = Some(now);
        match &self.mode {
            Mode::Json => emit(&json!({
                "event": "progress",
                "phase": p.phase.as_str(),
                "downloaded": p.downloaded,
                "uploaded": p.uploaded,
                "verified": p.verified,
                "total": p.total,
                "down_rate": p.down_rate,
                "up_rate": p.up_rate,
                "peers": p.peers,
                "seeds": p.seeds,
                "sources": p.sources,
                "trackers": p.trackers,
            })),
            Mode::Plain => eprintln!("{}", status_line(p)),
            _ => {}
        }
    }

    /// Reports a tracker whose status changed (first answer, a new error, recovery): a JSON
    /// `tracker` event or one human line. The same error again is not repeated.
    fn tracker_changes(&mut self, p: &Progress) {
        for t in &p.trackers {
            let now = (t.status.clone(), t.error.clone());
            if self.trackers.get(&t.url) == Some(&now) {
                continue;
            }
            if self.trackers.len() >= 256 && !self.trackers.contains_key(&t.url) {
                continue;
            }
            self.trackers.insert(t.url.clone(), now);
            match &self.mode {
                Mode::Json => emit(&json!({
                    "event": "tracker",
                    "url": t.url,
                    "status": t.status,
                    "error": t.error,
                    "peers": t.peers,
                    "seeders": t.seeders,
                    "leechers": t.leechers,
                })),
                Mode::Quiet => {}
                _ => self.message(&match &t.error {
                    Some(e) => format!("tracker {}: {e}", t.url),
                    None => format!("tracker {}: ok, {} peers", t.url, t.peers),
                }),
            }
        }
    }

    /// A human message (not in JSON or quiet mode), above the live bar if there is one.
    pub fn message(&self, m: &str) {
        match &self.mode {
            Mode::Tty(pb) => pb.println(m),
            Mode::Plain => eprintln!("{m}"),
            _ => {}
        }
    }

    /// Removes the live bar and prints the summary line (human modes).
    pub fn finish(&mut self, summary: &str) {
        match &self.mode {
            Mode::Tty(pb) => {
                pb.finish_and_clear();
                eprintln!("{summary}");
            }
            Mode::Plain => eprintln!("{summary}"),
            _ => {}
        }
    }

    /// Removes the live bar without a summary.
    pub fn clear(&self) {
        if let Mode::Tty(pb) = &self.mode {
            pb.finish_and_clear();
        }
    }
}

/// One JSON object on its own line on stdout (a closed pipe is ignored).
pub fn emit(v: &serde_json::Value) {
    let _ = super::print_out(&format!("{v}\n"));
}
