//! `magnetfetch metadata MAGNET -o OUT.torrent`: resolve a magnet link to a verified .torrent
//! (DHT lookup → peers → BEP 9 ut_metadata over BEP 10), without downloading the content.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::common::{runtime, Common};
use super::{exit_code, print_out, CliError, CliResult};
use crate::magnet::{Magnet, PeerAddr};
use crate::metainfo::Metainfo;
use crate::session::{fetch_metadata_stats, FetchConfig};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  magnetfetch metadata 'magnet:?xt=urn:btih:...' -o file.torrent"
)]
pub struct Args {
    /// The magnet link (or a bare 40-hex / 32-base32 info-hash)
    pub magnet: String,
    /// Where to write the .torrent
    #[arg(short, long, value_name = "OUT.torrent")]
    pub output: PathBuf,
    /// Give up after this many seconds without metadata
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    /// Extra peers to ask (repeatable)
    #[arg(long = "peer", value_name = "IP:PORT")]
    pub peers: Vec<SocketAddr>,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(args: Args) -> i32 {
    args.common.init_logging();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return exit_code(Err(e)),
    };
    exit_code(rt.block_on(fetch(args)))
}

async fn fetch(args: Args) -> CliResult {
    let t = args.magnet.trim();
    let magnet = if t.len() >= 7 && t[..7].eq_ignore_ascii_case("magnet:") {
        Magnet::parse(t).map_err(|e| CliError::msg(format!("bad magnet link: {e}")))?
    } else {
        let ih = super::dht::parse_infohash(t).ok_or_else(|| {
            CliError::msg("expected a magnet link or an info-hash (40 hex or 32 base32 characters)")
        })?;
        Magnet::new(ih)
    };
    let ih = magnet.info_hash;
    let session = args.common.start_session().await?;
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<SocketAddr>(1024);
    for p in &magnet.peers {
        if let PeerAddr::Ip(a) = p {
            let _ = tx.try_send(*a);
        }
    }
    for a in &args.peers {
        let _ = tx.try_send(*a);
    }
    // Feed DHT peers until the fetch ends; a lookup is repeated while none answered.
    if session.dht().is_some() {
        let tx = tx.clone();
        let s = session.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(2);
            loop {
                let Some(dht) = s.dht() else { return };
                let mut h = dht.lookup(ih, None, false).await;
                while let Some(a) = h.peers.recv().await {
                    if tx.send(a).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(15));
            }
        });
    }
    drop(tx);
    let cfg = FetchConfig {
        timeout: Duration::from_secs(args.timeout),
        listen_port: session.listen_addr().map(|a| a.port()),
        ..FetchConfig::default()
    };
    let fetched =
        match fetch_metadata_stats(session.net().clone(), ih, session.peer_id(), rx, cfg).await {
            Ok(f) => f,
            Err(e) => {
                let how = match session.dht() {
                    Some(d) => format!("DHT: {} nodes queried", d.stats().await.nodes_visited),
                    None => "DHT disabled".to_string(),
                };
                let crate::session::FetchError::Timeout { tried, .. } = &e;
                return Err(CliError::msg(if *tried == 0 {
                    format!("no peers found for {ih} after {} s ({how})", args.timeout)
                } else {
                    format!("{e}; {how}")
                }));
            }
        };
    let ms = start.elapsed().as_millis();
    let mut meta = Metainfo::from_info_bytes(&fetched.info)?;
    // Keep the magnet's trackers and web seeds in the .torrent (BEP 12 tiers: one each).
    meta.announce = magnet.trackers.first().cloned();
    if magnet.trackers.len() > 1 {
        meta.announce_list = magnet.trackers.iter().map(|t| vec![t.clone()]).collect();
    }
    meta.url_list = magnet.web_seeds.clone();
    std::fs::write(&args.output, meta.to_bytes())
        .map_err(|e| CliError::msg(format!("{}: {e}", args.output.display())))?;
    print_out(&format!(
        "metadata for {ih} in {ms} ms ({} bytes, {} peers connected) -> {}\n",
        fetched.info.len(),
        fetched.connected,
        args.output.display()
    ))
}
