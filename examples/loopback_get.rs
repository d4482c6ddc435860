//! Benchmark helper: download one torrent from explicit peers with a [`Session`], no DHT.
//!
//! `loopback_get MAGNET_OR_INFOHASH PEER_ADDR OUT_DIR [BIND_IP]`
//!
//! Prints one JSON line `{"metadata_ms":..,"total_ms":..,"bytes":..,"complete":..}` and
//! exits 0 when the download completed. Used by `benches/loopback.py` so that the OS can
//! account this process's CPU time and peak RSS on its own.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use magnetfetch::internals::id::Id20;
use magnetfetch::internals::magnet::Magnet;
use magnetfetch::internals::session::{AddTorrent, Session, SessionConfig, Source, StorageSpec};

fn main() -> ExitCode {
    // The same process tuning as the `magnetfetch` binary, so the benchmark measures what
    // a user runs; before the runtime starts its threads.
    magnetfetch::tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run())
}

async fn run() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: loopback_get MAGNET_OR_INFOHASH PEER_ADDR OUT_DIR [BIND_IP]");
        return ExitCode::from(2);
    }
    let magnet = if args[0].starts_with("magnet:") {
        Magnet::parse(&args[0]).map_err(|e| e.to_string())
    } else {
        Id20::from_hex(&args[0])
            .map(Magnet::new)
            .map_err(|e| format!("{e:?}"))
    };
    let magnet = match magnet {
        Ok(m) => m,
        Err(e) => {
            eprintln!("bad magnet/infohash: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(peer) = args[1].parse::<SocketAddr>() else {
        eprintln!("bad peer address {}", args[1]);
        return ExitCode::from(2);
    };
    let bind: IpAddr = match args.get(3).map(|s| s.parse()) {
        Some(Ok(ip)) => ip,
        Some(Err(_)) => {
            eprintln!("bad bind ip");
            return ExitCode::from(2);
        }
        None => IpAddr::from([127, 0, 0, 1]),
    };
    let session = match Session::start(SessionConfig {
        listen: Some(SocketAddr::new(bind, 0)),
        ..SessionConfig::default()
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("session: {e}");
            return ExitCode::from(1);
        }
    };
    let mut add = AddTorrent::new(
        Source::Magnet(magnet),
        StorageSpec::Disk(PathBuf::from(&args[2])),
    );
    add.peers.push(peer);
    let t0 = Instant::now();
    match session.add(add).wait().await {
        Ok(out) => {
            println!(
                "{{\"metadata_ms\":{},\"total_ms\":{},\"bytes\":{},\"complete\":{}}}",
                out.metadata_ms.unwrap_or(0),
                t0.elapsed().as_millis(),
                out.summary.downloaded,
                out.summary.complete
            );
            if out.summary.complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("download failed: {e}");
            ExitCode::from(1)
        }
    }
}
