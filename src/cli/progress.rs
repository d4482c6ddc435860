//! Progress display for `fetch` and `seed`: a live indicatif line on a terminal, plain
//! periodic lines otherwise (no escape codes), or JSON events on stdout (`--json`).
//!
//! Until the size is known (searching, fetching metadata) the terminal shows a spinner with
//! what the phase waits for, never a bar: an empty bar at "100% 0 B/0 B" means nothing.
//! Text from a torrent or a peer (names, paths, tracker errors) reaches the terminal only
//! through [`sanitize`].

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::time::Instant;

use crate::portmap::MapStatus;
use crate::session::reach::{ReachStatus, Reachable};
use crate::session::{Phase, Progress};

/// Plain lines and JSON progress events at most this often.
pub const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// A connected swarm that sent no payload for this long is shown as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

enum Mode {
    Json,
    /// The live line, created at the first update (so nothing is drawn before, e.g., the
    /// magnet link `seed` prints first); `bool`: it has its bar style (size known).
    Tty(Option<(ProgressBar, bool)>),
    Plain,
    Quiet,
}

pub struct Display {
    mode: Mode,
    last_phase: Option<Phase>,
    last_periodic: Option<Instant>,
    /// Each tracker's last reported status: a change is shown once, not on every update.
    trackers: std::collections::BTreeMap<String, (String, Option<String>)>,
    /// Whether peers are searched on the DHT (else `searching` waits for other sources).
    dht: bool,
    /// Nodes in the DHT routing table, as last told ([`Display::set_dht_nodes`]).
    dht_nodes: Option<usize>,
    /// Payload bytes received at the last change, and when (for the stall hint).
    last_data: Option<(u64, Instant)>,
    /// The info-hash every JSON event carries (several torrents share stdout).
    tag: Option<String>,
    /// With several torrents: this one's name before each human line, and the terminal's
    /// shared set of live lines.
    label: Option<String>,
    multi: Option<indicatif::MultiProgress>,
    /// The port mapper's status and our port (told on each change; in JSON progress).
    port_mapping: Option<(tokio::sync::watch::Receiver<MapStatus>, u16)>,
    last_port_mapping: Option<MapStatus>,
    /// Our external address and reachability, as last told ([`Display::set_reach`]).
    reach: Option<ReachStatus>,
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

/// The phase name as shown: without the DHT, `searching` waits for peers from elsewhere.
fn shown_label(p: Phase, dht: bool) -> &'static str {
    match p {
        Phase::Searching if !dht => "waiting for peers",
        _ => phase_label(p),
    }
}

/// Untrusted text made safe for a terminal: control characters (C0, DEL, C1: escape
/// sequences that clear the screen or set the title) are shown escaped, e.g. `\u{1b}`.
pub fn sanitize(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// What a phase before the size is known waits for: DHT nodes, peers found / tried /
/// connected, metadata pieces.
fn waiting_for(p: &Progress, dht_nodes: Option<usize>) -> String {
    let mut parts = Vec::new();
    if let Some(n) = dht_nodes {
        parts.push(format!("{n} DHT nodes"));
    }
    parts.push(format!("{} peers found", p.known_peers));
    if p.phase == Phase::Metadata {
        parts.push(format!("{} tried", p.peers_tried));
        parts.push(format!("{} connected", p.peers));
        if p.metadata_pieces_total > 0 {
            parts.push(format!(
                "metadata {}/{} pieces",
                p.metadata_pieces, p.metadata_pieces_total
            ));
        }
    }
    parts.join(", ")
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

/// One human line describing `p` (plain mode). `dht`: peers are searched on the DHT;
/// `dht_nodes`: its routing table's size, when known; `stalled`: see [`STALL_AFTER`].
pub fn status_line(p: &Progress, dht: bool, dht_nodes: Option<usize>, stalled: bool) -> String {
    let peers = format!(
        "peers {} ({} seeds, {} leechers){}",
        p.peers,
        p.seeds,
        p.peers.saturating_sub(p.seeds),
        sources_label(p)
    );
    match p.phase {
        Phase::Searching | Phase::Metadata => format!(
            "{}: {}{}",
            shown_label(p.phase, dht),
            waiting_for(p, dht_nodes),
            sources_label(p)
        ),
        Phase::Seeding => format!(
            "seeding {}: up {} ({} sent), {peers}",
            HumanBytes(p.total),
            rate(p.up_rate),
            HumanBytes(p.uploaded)
        ),
        _ => format!(
            "{} {:.1}% {}/{} down {} up {} {peers} eta {}{}",
            phase_label(p.phase),
            percent(p),
            HumanBytes(p.verified),
            HumanBytes(p.total),
            rate(p.down_rate),
            rate(p.up_rate),
            eta(p),
            if stalled {
                stall_hint(p)
            } else {
                String::new()
            }
        ),
    }
}

fn stall_hint(p: &Progress) -> String {
    format!(
        " (stalled: {} connected, none sent data for {} s)",
        if p.peers == 1 {
            "1 peer".to_string()
        } else {
            format!("{} peers", p.peers)
        },
        STALL_AFTER.as_secs()
    )
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
        ("lsd", s.lsd),
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

/// While seeding, whether others can reach us, e.g. `; reachable: yes (203.0.113.5)`:
/// a seed nobody can connect to serves only the peers it dials itself.
fn reach_note(phase: Phase, reach: Option<ReachStatus>) -> String {
    match (phase, reach) {
        (Phase::Seeding, Some(r)) => match r.external_addr {
            Some(ip) => format!("; reachable: {} ({ip})", r.reachable.as_str()),
            None => format!("; reachable: {}", r.reachable.as_str()),
        },
        _ => String::new(),
    }
}

const SPINNER_STYLE: &str = "{spinner} {prefix}: {msg}";
const BAR_STYLE: &str =
    "{spinner} {prefix:>17} [{bar:30}] {percent:>3}% {bytes}/{total_bytes} {msg}";

fn tty_bar(bar_style: bool) -> ProgressBar {
    let pb = ProgressBar::new(0);
    set_style(&pb, bar_style);
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

fn set_style(pb: &ProgressBar, bar_style: bool) {
    let template = if bar_style { BAR_STYLE } else { SPINNER_STYLE };
    if let Ok(st) = ProgressStyle::with_template(template) {
        pb.set_style(st.progress_chars("=> "));
    }
}

impl Display {
    /// JSON when `json`; nothing when `quiet`; else a live line when stderr is a terminal.
    pub fn new(json: bool, quiet: bool) -> Display {
        let mode = if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Tty(None)
        } else {
            Mode::Plain
        };
        Display {
            mode,
            last_phase: None,
            last_periodic: None,
            trackers: std::collections::BTreeMap::new(),
            dht: true,
            dht_nodes: None,
            last_data: None,
            tag: None,
            label: None,
            multi: None,
            reach: None,
            port_mapping: None,
            last_port_mapping: None,
        }
    }

    /// Shows the port mapper's status: a line (or JSON `port_mapping` event) when it
    /// changes, and `port_mapping` in JSON progress. `port`: ours, for the advice when
    /// nothing could be mapped.
    pub fn with_port_mapping(
        mut self,
        status: tokio::sync::watch::Receiver<MapStatus>,
        port: u16,
    ) -> Display {
        self.port_mapping = Some((status, port));
        self
    }

    /// Reports a change of the port mapping's state, protocol or addresses.
    fn port_mapping_changes(&mut self) {
        let Some((rx, port)) = &self.port_mapping else {
            return;
        };
        let (now, port) = (rx.borrow().clone(), *port);
        let key = |s: &MapStatus| {
            (
                s.state,
                s.protocol,
                s.external_ip,
                s.tcp_external,
                s.udp_external,
            )
        };
        if self.last_port_mapping.as_ref().map(key) == Some(key(&now)) {
            return;
        }
        self.last_port_mapping = Some(now.clone());
        match &self.mode {
            Mode::Json => {
                let mut ev = json!({"event": "port_mapping"});
                if let (Some(o), serde_json::Value::Object(m)) =
                    (ev.as_object_mut(), super::portmap::to_json(&now))
                {
                    o.extend(m);
                }
                self.emit(&ev);
            }
            Mode::Quiet => {}
            _ => {
                if let Some(line) = super::portmap::describe(&now, port) {
                    self.message(&line);
                }
            }
        }
    }

    /// Every JSON event carries `infohash`.
    pub fn tagged(mut self, info_hash: String) -> Display {
        self.tag = Some(info_hash);
        self
    }

    /// One of several torrents: human lines start with `[label]`, and on a terminal its live
    /// line joins `multi`.
    pub fn labelled(mut self, label: String, multi: Option<indicatif::MultiProgress>) -> Display {
        self.label = Some(label);
        self.multi = multi;
        self
    }

    /// `text` with this torrent's label in front (several torrents), as is otherwise.
    fn labelled_text(&self, text: &str) -> String {
        match &self.label {
            Some(l) => format!("[{l}] {text}"),
            None => text.to_string(),
        }
    }

    /// One JSON event on stdout, with this torrent's info-hash (see [`emit`]).
    pub fn emit(&self, v: &serde_json::Value) {
        match (&self.tag, v) {
            (Some(tag), serde_json::Value::Object(o)) if !o.contains_key("infohash") => {
                let mut o = o.clone();
                o.insert("infohash".into(), json!(tag));
                emit(&serde_json::Value::Object(o));
            }
            _ => emit(v),
        }
    }

    /// Peers are not searched on the DHT (`--no-dht`): never say `searching DHT`.
    pub fn without_dht(mut self) -> Display {
        self.dht = false;
        self
    }

    /// The DHT routing table's size, shown while searching.
    pub fn set_dht_nodes(&mut self, n: usize) {
        self.dht_nodes = Some(n);
    }

    /// The session's external address and reachability, shown in JSON progress events
    /// (`external_addr`, `reachable`); the first time nobody could reach us, the warning
    /// that says which port to forward.
    pub fn set_reach(&mut self, st: ReachStatus) {
        let was = self.reach.map(|r| r.reachable);
        self.reach = Some(st);
        if st.reachable == Reachable::No && was != Some(Reachable::No) {
            if let Some(w) = st.warning() {
                match &self.mode {
                    Mode::Json => self.emit(&json!({"event": "warning", "message": w})),
                    _ => self.message(&w),
                }
            }
        }
    }

    pub fn is_json(&self) -> bool {
        matches!(self.mode, Mode::Json)
    }

    fn show_phase(&mut self, phase: Phase) {
        self.last_phase = Some(phase);
        match &self.mode {
            Mode::Json => self.emit(&json!({"event": "phase", "phase": phase.as_str()})),
            Mode::Plain => eprintln!("{}", self.labelled_text(shown_label(phase, self.dht))),
            _ => {}
        }
    }

    /// Has a connected swarm sent nothing for [`STALL_AFTER`]? Tracks the last time the
    /// downloaded byte count moved.
    fn stalled(&mut self, p: &Progress, now: Instant) -> bool {
        let moved = self.last_data.is_none_or(|(b, _)| b != p.downloaded);
        if moved || p.phase != Phase::Downloading || p.peers == 0 {
            self.last_data = Some((p.downloaded, now));
            return false;
        }
        self.last_data
            .is_some_and(|(_, t)| now.saturating_duration_since(t) >= STALL_AFTER)
    }

    /// Shows `p`: phase changes at once, the rest live (terminal) or every
    /// [`PLAIN_EVERY`] (plain lines, JSON progress events).
    pub fn update(&mut self, p: &Progress) {
        self.tracker_changes(p);
        self.port_mapping_changes();
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
        let stalled = self.stalled(p, now);
        let (dht, dht_nodes) = (self.dht, self.dht_nodes);
        let prefix = self.labelled_text(shown_label(p.phase, dht));
        let multi = self.multi.clone();
        if let Mode::Tty(live) = &mut self.mode {
            let sized = p.total > 0 && !matches!(p.phase, Phase::Searching | Phase::Metadata);
            let (pb, bar_style) = live.get_or_insert_with(|| {
                let pb = tty_bar(sized);
                (multi.map_or(pb.clone(), |m| m.add(pb)), sized)
            });
            if *bar_style != sized {
                set_style(pb, sized);
                *bar_style = sized;
            }
            pb.set_prefix(prefix);
            pb.set_length(p.total);
            pb.set_position(p.verified);
            let msg = match p.phase {
                Phase::Searching | Phase::Metadata => waiting_for(p, dht_nodes),
                _ => format!(
                    "↓ {} ↑ {} peers {} ({} seeds/{} leechers) eta {}{}",
                    rate(p.down_rate),
                    rate(p.up_rate),
                    p.peers,
                    p.seeds,
                    p.peers.saturating_sub(p.seeds),
                    eta(p),
                    if stalled {
                        stall_hint(p)
                    } else {
                        String::new()
                    }
                ),
            };
            pb.set_message(format!("{msg}{}", reach_note(p.phase, self.reach)));
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
            Mode::Json => self.emit(&json!({
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
                "known_peers": p.known_peers,
                "peers_tried": p.peers_tried,
                "metadata_pieces": p.metadata_pieces,
                "metadata_pieces_total": p.metadata_pieces_total,
                "dht_nodes": dht_nodes,
                "stalled": stalled,
                "sources": p.sources,
                "trackers": p.trackers,
                "port_mapping": self
                    .port_mapping
                    .as_ref()
                    .map(|(rx, _)| super::portmap::to_json(&rx.borrow())),
                "external_addr": self.reach.and_then(|r| r.external_addr).map(|a| a.to_string()),
                "reachable": self.reach.map_or(Reachable::Unknown, |r| r.reachable).as_str(),
            })),
            Mode::Plain => eprintln!(
                "{}{}",
                self.labelled_text(&status_line(p, dht, dht_nodes, stalled)),
                reach_note(p.phase, self.reach)
            ),
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
                Mode::Json => self.emit(&json!({
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

    /// A human message (not in JSON or quiet mode), above the live line if there is one.
    /// Control characters are escaped: messages carry text from trackers and torrents.
    pub fn message(&self, m: &str) {
        let m = self.labelled_text(&sanitize(m));
        match &self.mode {
            Mode::Tty(Some((pb, _))) => pb.println(m),
            Mode::Tty(None) | Mode::Plain => eprintln!("{m}"),
            _ => {}
        }
    }

    /// Removes the live line and prints the summary line (human modes).
    pub fn finish(&mut self, summary: &str) {
        self.clear();
        let summary = sanitize(summary);
        match (&self.mode, &self.multi) {
            // Printed through the set of live lines, so the others are not torn.
            (Mode::Tty(_), Some(m)) => {
                let _ = m.println(summary);
            }
            (Mode::Tty(_) | Mode::Plain, _) => eprintln!("{summary}"),
            _ => {}
        }
    }

    /// Removes the live line without a summary.
    pub fn clear(&self) {
        if let Mode::Tty(Some((pb, _))) = &self.mode {
            pb.finish_and_clear();
        }
    }
}

/// When the process started, for the `t` of JSON events.
static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Marks the start of the run (the `t` of JSON events counts from here; the first event
/// marks it otherwise).
pub fn mark_start() {
    START.get_or_init(std::time::Instant::now);
}

/// One JSON object on its own line on stdout (a closed pipe is ignored), with `t`: seconds
/// since the start of the run.
pub fn emit(v: &serde_json::Value) {
    let t = START.get_or_init(std::time::Instant::now).elapsed();
    let line = match v {
        serde_json::Value::Object(o) => {
            let mut o = o.clone();
            let t = (t.as_secs_f64() * 1000.0).round() / 1000.0;
            o.insert("t".into(), json!(t));
            serde_json::Value::Object(o).to_string()
        }
        other => other.to_string(),
    };
    let _ = super::print_out(&format!("{line}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downloading(peers: usize, downloaded: u64) -> Progress {
        Progress {
            phase: Phase::Downloading,
            peers,
            downloaded,
            total: 1000,
            ..Progress::default()
        }
    }

    #[test]
    fn a_connected_swarm_that_sends_nothing_is_stalled() {
        let mut d = Display::new(false, true);
        let t0 = Instant::now();
        let p = downloading(2, 100);
        assert!(!d.stalled(&p, t0));
        assert!(!d.stalled(&p, t0 + Duration::from_secs(29)));
        assert!(d.stalled(&p, t0 + STALL_AFTER));
        // Data again: not stalled, and the clock starts over.
        let p = downloading(2, 200);
        assert!(!d.stalled(&p, t0 + Duration::from_secs(31)));
        assert!(!d.stalled(&p, t0 + Duration::from_secs(60)));
        // No peer connected is not a stall (the search goes on).
        let p = downloading(0, 200);
        assert!(!d.stalled(&p, t0 + Duration::from_secs(200)));
        let line = status_line(&downloading(2, 200), true, None, true);
        assert!(
            line.ends_with("(stalled: 2 peers connected, none sent data for 30 s)"),
            "{line}"
        );
    }

    #[test]
    fn before_the_size_the_line_says_what_it_waits_for() {
        let mut p = Progress {
            phase: Phase::Metadata,
            known_peers: 3,
            peers_tried: 2,
            peers: 1,
            metadata_pieces: 1,
            metadata_pieces_total: 3,
            ..Progress::default()
        };
        assert_eq!(
            status_line(&p, true, Some(143), false),
            "fetching metadata: 143 DHT nodes, 3 peers found, 2 tried, 1 connected, metadata 1/3 pieces"
        );
        p.phase = Phase::Searching;
        p.known_peers = 0;
        assert_eq!(
            status_line(&p, false, None, false),
            "waiting for peers: 0 peers found"
        );
    }

    #[test]
    fn seeding_says_whether_peers_can_reach_us() {
        let st = |reachable, ip: Option<&str>| {
            Some(ReachStatus {
                external_addr: ip.map(|i| i.parse().unwrap()),
                reachable,
                port: Some(6881),
            })
        };
        assert_eq!(reach_note(Phase::Downloading, st(Reachable::Yes, None)), "");
        assert_eq!(reach_note(Phase::Seeding, None), "");
        assert_eq!(
            reach_note(Phase::Seeding, st(Reachable::Unknown, None)),
            "; reachable: unknown"
        );
        assert_eq!(
            reach_note(Phase::Seeding, st(Reachable::Yes, Some("203.0.113.5"))),
            "; reachable: yes (203.0.113.5)"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(sanitize("plain name"), "plain name");
        assert_eq!(
            sanitize("a\u{1b}[2Jb\u{1b}]0;title\u{7}\u{9b}c"),
            "a\\u{1b}[2Jb\\u{1b}]0;title\\u{7}\\u{9b}c"
        );
    }
}
