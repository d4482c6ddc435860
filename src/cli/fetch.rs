//! `magnetfetch [fetch] MAGNET|FILE.torrent|INFOHASH`: download a torrent (peers from the
//! DHT, the magnet's `x.pe` and `--peer`), showing progress; Ctrl-C stops cleanly with the
//! resume state saved. Exit codes: 0 complete, 1 error, 2 bad usage, 130 interrupted.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::common::{self, Common};
use super::progress::{emit, Display};
use super::CliError;
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::peer::FetchError;
use crate::session::{AddTorrent, Phase, Source, StorageSpec, TorrentError};

/// A .torrent larger than this is refused before reading it.
const MAX_TORRENT_FILE: u64 = 64 << 20;

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  magnetfetch 'magnet:?xt=urn:btih:...' -o ~/Downloads
  magnetfetch fetch file.torrent --only 0,2-3 --max-down-rate 2MiB
  magnetfetch c12fe1c06bba254a9dc9f519b335aa7c1367a88a --seed --seed-ratio 2")]
pub struct Args {
    /// Magnet link, .torrent file, or info-hash (40 hex / 32 base32 characters)
    #[arg(value_name = "MAGNET|FILE.torrent|INFOHASH")]
    pub source: Option<String>,
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
    #[arg(long, value_name = "INDEXES", value_parser = common::parse_indexes)]
    pub only: Option<Vec<RangeInclusive<u32>>>,
    /// Download pieces in order (for streaming)
    #[arg(long)]
    pub sequential: bool,
    /// Verify the files already on disk from scratch instead of trusting the resume data
    #[arg(long)]
    pub recheck: bool,
    /// Download rate limit, e.g. 2MiB (per second)
    #[arg(long, value_name = "RATE", value_parser = common::parse_rate)]
    pub max_down_rate: Option<u64>,
    /// Upload rate limit, e.g. 500K (per second)
    #[arg(long, value_name = "RATE", value_parser = common::parse_rate)]
    pub max_up_rate: Option<u64>,
    /// Extra peer to connect to (repeatable)
    #[arg(long = "peer", value_name = "IP:PORT")]
    pub peers: Vec<SocketAddr>,
    /// Give up when no metadata arrived after this long
    #[arg(long, value_name = "DURATION", value_parser = common::parse_duration, default_value = "60s")]
    pub metadata_timeout: Duration,
    #[command(flatten)]
    pub common: Common,
}

/// Runs a fetch and returns the exit code.
pub fn run(args: Args) -> i32 {
    args.common.init_logging();
    let Some(src) = args.source.clone() else {
        eprintln!("error: a magnet link, .torrent file or info-hash is required");
        eprintln!("Usage: magnetfetch [fetch] <MAGNET|FILE.torrent|INFOHASH> [OPTIONS]");
        eprintln!("For more information, try '--help'.");
        return 2;
    };
    let source = match parse_source(&src) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", super::one_line(&e.0));
            return 1;
        }
    };
    let rt = match common::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let code = rt.block_on(fetch(args, source));
    // Don't wait for lingering connection tasks.
    rt.shutdown_timeout(Duration::from_millis(200));
    code
}

/// A magnet link, a .torrent file, or a bare info-hash.
pub fn parse_source(s: &str) -> Result<Source, CliError> {
    let t = s.trim();
    if t.len() >= 7 && t[..7].eq_ignore_ascii_case("magnet:") {
        return Ok(Source::Magnet(
            Magnet::parse(t).map_err(|e| CliError::msg(format!("bad magnet link: {e}")))?,
        ));
    }
    let path = Path::new(t);
    if path.is_file() {
        let f = std::fs::File::open(path)
            .map_err(|e| CliError::msg(format!("{}: {e}", path.display())))?;
        let mut buf = Vec::new();
        use std::io::Read;
        f.take(MAX_TORRENT_FILE + 1)
            .read_to_end(&mut buf)
            .map_err(|e| CliError::msg(format!("{}: {e}", path.display())))?;
        if buf.len() as u64 > MAX_TORRENT_FILE {
            return Err(CliError::msg(format!(
                "{}: larger than {} MiB, not a .torrent",
                path.display(),
                MAX_TORRENT_FILE >> 20
            )));
        }
        let m = Metainfo::from_bytes(&buf)
            .map_err(|e| CliError::msg(format!("{}: {e}", path.display())))?;
        return Ok(Source::Metainfo(Arc::new(m)));
    }
    if let Some(ih) = super::dht::parse_infohash(t) {
        return Ok(Source::Magnet(Magnet::new(ih)));
    }
    Err(CliError::msg(format!(
        "{t:?} is not a magnet link, an existing .torrent file or an info-hash"
    )))
}

async fn fetch(args: Args, source: Source) -> i32 {
    let mut display = Display::new(args.common.json, args.common.quiet);
    let session = match args.common.start_session().await {
        Ok(s) => s,
        Err(e) => return fail(&display, &e.0),
    };
    if let Err(e) = std::fs::create_dir_all(&args.output) {
        return fail(&display, &format!("{}: {e}", args.output.display()));
    }
    let state_dir = args.common.state_dir();
    let keep_seeding = args.seed || args.seed_ratio.is_some() || args.seed_time.is_some();
    let mut add = AddTorrent::new(source, StorageSpec::Disk(args.output.clone()));
    add.peers = args.peers.clone();
    add.metadata_timeout = args.metadata_timeout;
    add.resume_dir = Some(state_dir.join("resume"));
    add.only_files = args.only.clone();
    add.recheck = args.recheck;
    add.swarm.keep_seeding = keep_seeding;
    add.swarm.sequential = args.sequential;
    add.swarm.max_down_rate = args.max_down_rate;
    add.swarm.max_up_rate = args.max_up_rate;
    if let Some(a) = session.listen_addr() {
        tracing::info!(%a, dht = session.dht().is_some(), "listening");
    }
    let started = Instant::now();
    let mut handle = session.add(add);
    let info_hash = handle.info_hash;
    let mut prog = handle.progress();
    display.update(&prog.borrow_and_update().clone());
    let mut tick = tokio::time::interval(super::progress::PLAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    let mut complete_at: Option<Instant> = None;
    let mut stop_sent = false;
    let result = loop {
        tokio::select! {
            biased;
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                display.message("stopping (saving resume state)...");
                handle.stop();
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
    // Keep the DHT warm for the next run: its id and good nodes go to the state dir.
    if let Some(d) = session.dht() {
        let _ = d.save_state().await;
    }
    // QUIC peers learn we are gone now, not after their idle timeout (bounded, 200 ms).
    session.shutdown().await;
    let last = prog.borrow().clone();
    match result {
        Ok(out) if out.summary.complete => {
            let name = out.metainfo.info.name.clone();
            let path = args.output.join(&name);
            let path = std::path::absolute(&path).unwrap_or(path);
            let total = out.metainfo.info.total_length();
            if display.is_json() {
                emit(&json!({
                    "event": "done",
                    "infohash": info_hash.to_hex(),
                    "name": name,
                    "total_size": total,
                    "path": path.display().to_string(),
                    "metadata_ms": out.metadata_ms,
                    "elapsed_ms": started.elapsed().as_millis() as u64,
                    "downloaded": out.summary.downloaded,
                    "uploaded": out.summary.uploaded,
                    "transport_bytes": out.summary.transport_bytes,
                }));
            }
            display.finish(&format!(
                "done: {} ({}) in {:.1}s, downloaded {}, uploaded {} -> {}",
                name,
                indicatif::HumanBytes(total),
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
                emit(&json!({
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

/// Prints the one `error:` line (and a JSON error event with `--json`); exit code 1.
fn fail(display: &Display, msg: &str) -> i32 {
    display.clear();
    let msg = super::one_line(msg);
    if display.is_json() {
        emit(&json!({"event": "error", "message": msg}));
    }
    eprintln!("error: {msg}");
    1
}
