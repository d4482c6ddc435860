//! `magnetfetch [fetch] MAGNET|FILE.torrent|URL|INFOHASH...`: download torrents (peers from
//! the DHT, trackers, the magnet's `x.pe` and `--peer`), showing progress; Ctrl-C stops
//! cleanly with the resume state saved. Several inputs (and `-i FILE`) share one session:
//! one DHT node, one port. Exit codes: 0 all complete, 1 error, 2 bad usage, 130
//! interrupted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::common::{self, Common};
use super::progress::Display;
use super::CliError;
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::session::{AddTorrent, FetchError, Phase, Session, Source, StorageSpec, TorrentError};

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  magnetfetch 'magnet:?xt=urn:btih:...' -o ~/Downloads
  magnetfetch fetch file.torrent --only 0,2-3 --max-down-rate 2MiB
  magnetfetch c12fe1c06bba254a9dc9f519b335aa7c1367a88a --seed --seed-ratio 2
  magnetfetch https://example.org/file.torrent -o ~/Downloads
  magnetfetch -i list.txt -o ~/Downloads")]
pub struct Args {
    /// Magnet links, .torrent files, http(s) URLs of .torrent files, or info-hashes (40 hex
    /// / 32 base32 characters): several are fetched at once in one session
    #[arg(value_name = "MAGNET|FILE.torrent|URL|INFOHASH")]
    pub sources: Vec<String>,
    /// Read more of them from FILE, one per line (`-` for stdin is not supported); blank
    /// lines and `#` comments are skipped
    #[arg(short = 'i', long = "input-file", value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// Download directory
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub output: PathBuf,
    /// Keep seeding after completion until Ctrl-C
    #[arg(long)]
    pub seed: bool,
    /// Seed until uploaded/size reaches R, then exit
    #[arg(long, value_name = "R")]
    pub seed_ratio: Option<f64>,
    /// Seed for this long after completion (e.g. 30m, 2h), then exit
    #[arg(long, value_name = "DURATION", value_parser = common::parse_duration)]
    pub seed_time: Option<Duration>,
    /// Download only these files (indexes as shown by `magnetfetch info`), e.g. 0,2,5-7
    #[arg(long, value_name = "INDEXES", value_parser = common::parse_file_indexes)]
    pub only: Option<common::FileIndexes>,
    /// Download pieces in order (for streaming)
    #[arg(long)]
    pub sequential: bool,
    /// Verify the files already on disk from scratch instead of trusting the resume data
    #[arg(long)]
    pub recheck: bool,
    /// Download rate limit, e.g. 2MiB (per second)
    #[arg(long, value_name = "RATE", value_parser = crate::units::parse_rate)]
    pub max_down_rate: Option<u64>,
    /// Upload rate limit, e.g. 500K (per second)
    #[arg(long, value_name = "RATE", value_parser = crate::units::parse_rate)]
    pub max_up_rate: Option<u64>,
    /// Extra peer to connect to (repeatable)
    #[arg(long = "peer", value_name = "IP:PORT")]
    pub peers: Vec<SocketAddr>,
    /// Do not look for peers on the local network (BEP 14 Local Service Discovery; never
    /// used for private torrents anyway)
    #[arg(long)]
    pub no_lsd: bool,
    /// Give up when no metadata arrived after this long
    #[arg(long, value_name = "DURATION", value_parser = common::parse_duration, default_value = "60s")]
    pub metadata_timeout: Duration,
    #[command(flatten)]
    pub port_mapping: super::portmap::PortMapArgs,
    #[command(flatten)]
    pub common: Common,
}

/// Inputs in one `-i` file at most (lines), and its size at most.
const MAX_INPUTS: usize = 10_000;
const MAX_INPUT_FILE: u64 = 4 << 20;
/// A .torrent fetched by URL: redirects followed at most, and how long it may take.
const MAX_REDIRECTS: usize = 5;
const URL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a fetch and returns the exit code.
pub fn run(args: Args) -> i32 {
    args.common.init_logging();
    let mut inputs = args.sources.clone();
    if let Some(f) = &args.input_file {
        match read_input_file(f) {
            Ok(v) => inputs.extend(v),
            Err(e) => {
                eprintln!("error: {}", super::one_line(&e));
                return 1;
            }
        }
    }
    if inputs.is_empty() {
        eprintln!("error: a magnet link, .torrent file, URL or info-hash is required");
        eprintln!("Usage: magnetfetch [fetch] <MAGNET|FILE.torrent|URL|INFOHASH>... [OPTIONS]");
        eprintln!("For more information, try '--help'.");
        return 2;
    }
    let rt = match common::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let code = rt.block_on(fetch_all(args, inputs));
    // Don't wait for lingering connection tasks.
    rt.shutdown_timeout(Duration::from_millis(200));
    code
}

/// `-i FILE`: one magnet, path, URL or info-hash per line (like `aria2c -i`); blank lines
/// and lines starting with `#` are skipped.
pub fn read_input_file(path: &Path) -> Result<Vec<String>, String> {
    use std::io::Read;
    let shown = path.display();
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut text = String::new();
    f.take(MAX_INPUT_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if text.len() as u64 > MAX_INPUT_FILE {
        return Err(format!("{shown}: larger than {} MiB", MAX_INPUT_FILE >> 20));
    }
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if lines.len() > MAX_INPUTS {
        return Err(format!("{shown}: more than {MAX_INPUTS} torrents"));
    }
    if lines.is_empty() {
        return Err(format!(
            "{shown}: no magnet link, path, URL or info-hash in it"
        ));
    }
    Ok(lines)
}

/// A magnet link, a .torrent file, or a bare info-hash (an http(s) URL is [`fetch_source`]'s).
pub fn parse_source(s: &str) -> Result<Source, CliError> {
    let t = s.trim();
    if super::has_scheme(t, "magnet:") {
        return Ok(Source::Magnet(
            Magnet::parse(t).map_err(|e| CliError::msg(format!("bad magnet link: {e}")))?,
        ));
    }
    let path = Path::new(t);
    if path.is_file() {
        let m = super::info::read_torrent(path)?;
        return Ok(Source::Metainfo(Arc::new(m)));
    }
    if let Some(ih) = super::dht::parse_infohash(t) {
        return Ok(Source::Magnet(Magnet::new(ih)));
    }
    if !path.exists() && (t.ends_with(".torrent") || t.contains('/')) {
        return Err(CliError::msg(format!("{t}: no such file")));
    }
    Err(CliError::msg(format!(
        "{t:?} is not a magnet link, an existing .torrent file, a URL or an info-hash"
    )))
}

/// [`parse_source`], and an `http://` or `https://` URL: the .torrent is downloaded (bounded
/// like a file, redirects followed) and validated like one.
pub async fn fetch_source(s: &str) -> Result<Source, CliError> {
    let t = s.trim();
    if super::has_scheme(t, "http://") || super::has_scheme(t, "https://") {
        let body = download(t).await?;
        let m = Metainfo::from_bytes(&body)
            .map_err(|e| CliError::msg(format!("{t}: not a valid .torrent: {e}")))?;
        return Ok(Source::Metainfo(Arc::new(m)));
    }
    parse_source(t)
}

/// GET of a .torrent URL, following up to [`MAX_REDIRECTS`] redirects.
async fn download(url: &str) -> Result<Vec<u8>, CliError> {
    crate::http::client::get_following_redirects(
        &crate::net::Net::Tokio,
        url,
        crate::metainfo::MAX_TORRENT_SIZE,
        URL_TIMEOUT,
        MAX_REDIRECTS,
    )
    .await
    .map_err(CliError::msg)
}

/// Every input in one session: one DHT node, one listening port, a line each on a
/// terminal, JSON events tagged with the info-hash. Exit 0 only if all completed; 130 if
/// interrupted; else 1.
async fn fetch_all(args: Args, inputs: Vec<String>) -> i32 {
    let multi = inputs.len() > 1;
    let quiet_display = Display::new(args.common.json, args.common.quiet);
    // Before anything goes on the network: a download that cannot be written is known now.
    if let Err(e) = check_output_dir(&args.output) {
        return fail(&quiet_display, &e);
    }
    let mut failed = 0usize;
    let mut sources: Vec<Source> = Vec::new();
    for input in &inputs {
        let source = match fetch_source(input).await {
            Ok(s) => s,
            Err(e) => {
                fail(&quiet_display, &e.0);
                failed += 1;
                continue;
            }
        };
        // A selection a .torrent cannot satisfy is known now too.
        if let (Source::Metainfo(m), Some(only)) = (&source, &args.only) {
            if let Err(e) = crate::session::check_selection(&only.0, m.info.files.len()) {
                fail(&quiet_display, &e.to_string());
                failed += 1;
                continue;
            }
        }
        if sources.iter().any(|s| s.info_hash() == source.info_hash()) {
            continue; // the same torrent twice is fetched once
        }
        sources.push(source);
    }
    if sources.is_empty() {
        return 1;
    }
    let session = match args.common.start_session().await {
        Ok(s) => s,
        Err(e) => return fail(&quiet_display, &e.0),
    };
    if let Some(a) = session.listen_addr() {
        tracing::info!(%a, dht = session.dht().is_some(), "listening");
    }
    let multi_bar =
        (multi && !args.common.json && !args.common.quiet).then(indicatif::MultiProgress::new);
    // A seed after the download: ask the router to forward our port (undone on exit).
    let keep_seeding = args.seed || args.seed_ratio.is_some() || args.seed_time.is_some();
    let mapping = keep_seeding
        .then(|| args.port_mapping.start(&session))
        .flatten();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, source) in sources.into_iter().enumerate() {
        let mut display =
            Display::new(args.common.json, args.common.quiet).tagged(source.info_hash().to_hex());
        // Told once, by the first torrent's display.
        if let (0, Some((m, port))) = (i, &mapping) {
            display = display.with_port_mapping(m.watch(), *port);
        }
        if args.common.no_dht {
            display = display.without_dht();
        }
        if multi {
            display = display.labelled(short_label(&source), multi_bar.clone());
        }
        let (session, args, stop) = (session.clone(), args.clone(), stop_rx.clone());
        tasks.spawn(fetch(session, args, source, display, stop));
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut codes = Vec::new();
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                let _ = stop_tx.send(true);
            }
            r = tasks.join_next() => match r {
                Some(r) => codes.push(r.unwrap_or(1)),
                None => break,
            },
        }
    }
    // Keep the DHT warm for the next run: its id and good nodes go to the state dir.
    if let Some(d) = session.dht() {
        let _ = d.save_state().await;
    }
    if let Some((m, _)) = mapping {
        m.close().await;
    }
    // QUIC peers learn we are gone now, not after their idle timeout (bounded).
    session.shutdown().await;
    if codes.contains(&130) {
        130
    } else if failed > 0 || codes.iter().any(|&c| c != 0) {
        1
    } else {
        0
    }
}

/// A torrent's name for a line of its own: the name if known, else the info-hash's start.
fn short_label(source: &Source) -> String {
    let name = match source {
        Source::Metainfo(m) => Some(m.info.name.clone()),
        Source::Magnet(m) => m.display_name.clone(),
    };
    let name = name.unwrap_or_else(|| source.info_hash().to_hex()[..8].to_string());
    let name: String = super::progress::sanitize(&name).chars().take(24).collect();
    name
}

/// One torrent of the session, shown on `display`, until it completes (and seeds as asked),
/// fails, or `stop` turns true (Ctrl-C). Returns its exit code.
async fn fetch(
    session: Session,
    args: Args,
    source: Source,
    mut display: Display,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> i32 {
    let state_dir = args.common.state_dir();
    let keep_seeding = args.seed || args.seed_ratio.is_some() || args.seed_time.is_some();
    let mut add = AddTorrent::new(source, StorageSpec::Disk(args.output.clone()));
    add.peers = args.peers.clone();
    add.metadata_timeout = args.metadata_timeout;
    add.resume_dir = Some(state_dir.join("resume"));
    add.only_files = args.only.clone().map(|o| o.0);
    add.recheck = args.recheck;
    add.lsd = !args.no_lsd;
    add.swarm.keep_seeding = keep_seeding;
    add.swarm.sequential = args.sequential;
    add.swarm.max_down_rate = args.max_down_rate;
    add.swarm.max_up_rate = args.max_up_rate;
    let started = Instant::now();
    let mut handle = session.add(add);
    let info_hash = handle.info_hash;
    let mut prog = handle.progress();
    display.update(&prog.borrow_and_update().clone());
    let mut tick = tokio::time::interval(super::progress::PLAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut interrupted = false;
    let mut complete_at: Option<Instant> = None;
    let mut stop_sent = false;
    let result = loop {
        tokio::select! {
            biased;
            r = stop.changed(), if !interrupted => {
                if r.is_err() || *stop.borrow() {
                    interrupted = true;
                    display.message("stopping (saving resume state)...");
                    handle.stop();
                }
            }
            r = handle.join() => break r,
            _ = prog.changed() => {
                let p = prog.borrow_and_update().clone();
                display.update(&p);
                if p.phase == Phase::Seeding && keep_seeding && !stop_sent {
                    let at = *complete_at.get_or_insert_with(Instant::now);
                    let ratio_met = args.seed_ratio.is_some_and(|r| {
                        p.total > 0 && p.uploaded as f64 >= r * p.total as f64
                    });
                    let time_met = args.seed_time.is_some_and(|t| at.elapsed() >= t);
                    if ratio_met || time_met {
                        stop_sent = true;
                        handle.stop();
                    }
                }
            }
            _ = tick.tick() => {
                let p = prog.borrow().clone();
                if let (Some(d), Phase::Searching | Phase::Metadata) = (session.dht(), p.phase) {
                    display.set_dht_nodes(d.stats().await.table_size);
                }
                display.set_reach(session.reachability().await);
                display.update(&p);
                if let (Some(t), Some(at), false) = (args.seed_time, complete_at, stop_sent) {
                    if at.elapsed() >= t {
                        stop_sent = true;
                        handle.stop();
                    }
                }
            }
        }
    };
    let last = prog.borrow().clone();
    match result {
        Ok(out) if out.summary.complete => {
            let name = out.metainfo.info.name.clone();
            let path = args.output.join(&name);
            let path = std::path::absolute(&path).unwrap_or(path);
            let total = out.metainfo.info.total_length();
            if display.is_json() {
                display.emit(&json!({
                    "event": "done",
                    "infohash": info_hash.to_hex(),
                    "name": name,
                    "total_size": total,
                    "selected_size": out.selected_size,
                    "path": path.display().to_string(),
                    "metadata_ms": out.metadata_ms,
                    "elapsed_ms": started.elapsed().as_millis() as u64,
                    "downloaded": out.summary.downloaded,
                    "uploaded": out.summary.uploaded,
                    "transport_bytes": out.summary.transport_bytes,
                }));
            }
            // With --only / so=: "2.89 MiB of 9.54 MiB selected".
            let size = match out.selected_size {
                Some(sel) => format!(
                    "{} of {} selected",
                    indicatif::HumanBytes(sel),
                    indicatif::HumanBytes(total)
                ),
                None => indicatif::HumanBytes(total).to_string(),
            };
            display.finish(&format!(
                "done: {} ({}) in {:.1}s, downloaded {}, uploaded {} -> {}",
                name,
                size,
                started.elapsed().as_secs_f64(),
                indicatif::HumanBytes(out.summary.downloaded),
                indicatif::HumanBytes(out.summary.uploaded),
                path.display()
            ));
            0
        }
        Ok(out) if interrupted => {
            display.clear();
            if display.is_json() {
                display.emit(&json!({
                    "event": "interrupted",
                    "infohash": info_hash.to_hex(),
                    "verified": last.verified,
                    "total": last.total,
                    "downloaded": out.summary.downloaded,
                    "uploaded": out.summary.uploaded,
                }));
            }
            eprintln!(
                "interrupted at {:.1}% ({} of {}); run the same command again to resume",
                if last.total > 0 {
                    last.verified as f64 * 100.0 / last.total as f64
                } else {
                    0.0
                },
                indicatif::HumanBytes(last.verified),
                indicatif::HumanBytes(last.total)
            );
            130
        }
        Err(TorrentError::Stopped) if interrupted => {
            display.clear();
            eprintln!("interrupted before the metadata arrived; run the same command again");
            130
        }
        Ok(_) => fail(&display, "the download stopped before completion"),
        Err(TorrentError::Metadata(FetchError::Timeout { secs, tried, .. }))
            if last.known_peers == 0 && tried == 0 =>
        {
            let nodes = match session.dht() {
                Some(d) => d.stats().await.nodes_visited,
                None => 0,
            };
            let how = if session.dht().is_some() {
                format!("DHT: {nodes} nodes queried")
            } else {
                "DHT disabled".to_string()
            };
            fail(
                &display,
                &format!("no peers found for {info_hash} after {secs} s ({how})"),
            )
        }
        Err(e) => fail(&display, &e.to_string()),
    }
}

/// Creates the download directory if needed and proves it writable (a file created and
/// removed), so that a run does not search, fetch metadata and check only to fail then.
pub fn check_output_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    if dir.exists() && !dir.is_dir() {
        return Err(format!(
            "output directory {shown} is an existing file, not a directory"
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create output directory {shown}: {e}"))?;
    let probe = dir.join(format!(".magnetfetch-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| format!("output directory {shown} is not writable: {e}"))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Prints the one `error:` line (and a JSON error event with `--json`); exit code 1.
fn fail(display: &Display, msg: &str) -> i32 {
    display.clear();
    let msg = super::one_line(msg);
    if display.is_json() {
        display.emit(&json!({"event": "error", "message": msg}));
    }
    eprintln!("error: {msg}");
    1
}
