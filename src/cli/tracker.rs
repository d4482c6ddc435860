//! `magnetfetch tracker`: run an open or allow-listed BitTorrent tracker (HTTP + UDP), and
//! optionally publish a directory of `.torrent` files with an index page.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::id::Id20;
use crate::net::Net;
use crate::tracker::store::StoreConfig;
use crate::tracker::{ServerConfig, TrackerServer};

#[derive(clap::Args, Debug, Clone)]
pub struct TrackerArgs {
    /// Serve HTTP announce/scrape (and --torrents) on IP:PORT.
    #[arg(long, value_name = "IP:PORT")]
    pub http: Option<SocketAddr>,
    /// Serve UDP (BEP 15) announce/scrape on IP:PORT.
    #[arg(long, value_name = "IP:PORT")]
    pub udp: Option<SocketAddr>,
    /// Publish every .torrent file in DIR over HTTP, with an index page at `/`.
    #[arg(long, value_name = "DIR")]
    pub torrents: Option<PathBuf>,
    /// Only track the info-hashes listed in FILE (40 hex characters per line, `#` comments).
    #[arg(long, value_name = "FILE")]
    pub allow_list: Option<PathBuf>,
    /// Announce interval in seconds handed to clients (peers expire after two).
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub interval: u64,
    /// Requests per second allowed per source IP (0 = unlimited).
    #[arg(long, value_name = "N", default_value_t = 20.0)]
    pub per_ip_rate: f64,
    /// HTTP connections open at once; when all are taken, the oldest one still sending its
    /// request from the busiest address is closed to make room.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_http_conns: u32,
    /// HTTP connections open at once from one IP address (IPv6: one /64); more are closed on
    /// arrival.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_http_conns_per_ip: u32,
}

/// Parses an allow-list file: one hex info-hash per line; blank lines and `#` comments skipped.
pub fn parse_allow_list(text: &str) -> Result<BTreeSet<Id20>, String> {
    let mut out = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.split('#').next().unwrap_or_default().trim();
        if l.is_empty() {
            continue;
        }
        let h = Id20::from_hex(l)
            .map_err(|_| format!("line {}: not a 40-character hex info-hash", i + 1))?;
        out.insert(h);
    }
    Ok(out)
}

/// Runs the tracker until Ctrl-C. Returns the process exit code.
pub fn run(args: TrackerArgs) -> i32 {
    if args.http.is_none() && args.udp.is_none() {
        eprintln!("error: give --http IP:PORT and/or --udp IP:PORT");
        return 2;
    }
    if args.torrents.is_some() && args.http.is_none() {
        eprintln!("error: --torrents needs --http");
        return 2;
    }
    if args.interval == 0 || args.interval > 86_400 {
        eprintln!("error: --interval must be between 1 and 86400 seconds");
        return 2;
    }
    let allow = match &args.allow_list {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => match parse_allow_list(&t) {
                Ok(a) => Some(a),
                Err(e) => {
                    eprintln!("error: {}: {e}", p.display());
                    return 2;
                }
            },
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", p.display());
                return 1;
            }
        },
        None => None,
    };
    if let Some(d) = &args.torrents {
        if !d.is_dir() {
            eprintln!("error: {} is not a directory", d.display());
            return 2;
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let cfg = ServerConfig {
            http: args.http,
            udp: args.udp,
            torrents_dir: args.torrents.clone(),
            allow,
            store: StoreConfig {
                interval: Duration::from_secs(args.interval),
                per_ip_rate: args.per_ip_rate.max(0.0),
                ..StoreConfig::default()
            },
            // The connection-id key must be unpredictable to remote hosts.
            conn_key: rand::random(),
            seed: rand::random(),
            max_http_conns: args.max_http_conns as usize,
            max_http_conns_per_ip: args.max_http_conns_per_ip as usize,
        };
        let server = match TrackerServer::start(Net::Tokio, cfg).await {
            Ok(s) => s,
            Err(e) => {
                let addrs: Vec<String> = [("HTTP", args.http), ("UDP", args.udp)]
                    .iter()
                    .filter_map(|(k, a)| a.map(|a| format!("{k} {a}")))
                    .collect();
                eprintln!("error: cannot bind {}: {e}", addrs.join(" and "));
                return 1;
            }
        };
        if let Some(a) = server.http_addr {
            println!("HTTP tracker: http://{a}/announce");
            if args.torrents.is_some() {
                println!("torrent index: http://{a}/");
            }
        }
        if let Some(a) = server.udp_addr {
            println!("UDP tracker:  udp://{a}/announce");
        }
        let _ = tokio::signal::ctrl_c().await;
        drop(server);
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_parsing() {
        let a = parse_allow_list("# c\n\n0123456789abcdef0123456789abcdef01234567 # x\n").unwrap();
        assert_eq!(a.len(), 1);
        assert!(parse_allow_list("nothex").unwrap_err().contains("line 1"));
    }
}
