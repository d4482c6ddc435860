//! Benchmark helper: seed one file with a [`Session`] until killed.
//!
//! `loopback_seed FILE LISTEN_ADDR [PIECE_LENGTH]`
//!
//! Hashes FILE into a torrent (BEP 3), seeds it from FILE's directory and prints one JSON
//! line `{"info_hash":..,"addr":..}` once seeding. Used by `benches/loopback.py`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use magnetfetch::internals::metainfo::{create, CreateOptions};
use magnetfetch::internals::session::{
    AddTorrent, Phase, Session, SessionConfig, Source, StorageSpec,
};

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
    if args.len() < 2 {
        eprintln!("usage: loopback_seed FILE LISTEN_ADDR [PIECE_LENGTH]");
        return ExitCode::from(2);
    }
    let file = PathBuf::from(&args[0]);
    let Some(dir) = file.parent().map(|p| p.to_path_buf()) else {
        eprintln!("FILE has no parent directory");
        return ExitCode::from(2);
    };
    let Ok(listen) = args[1].parse::<SocketAddr>() else {
        eprintln!("bad listen address {}", args[1]);
        return ExitCode::from(2);
    };
    let piece_length = match args.get(2).map(|s| s.parse::<u64>()) {
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            eprintln!("bad piece length");
            return ExitCode::from(2);
        }
        None => Some(256 * 1024),
    };
    let meta = match create(
        &file,
        &CreateOptions {
            piece_length,
            ..Default::default()
        },
    ) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("create: {e}");
            return ExitCode::from(1);
        }
    };
    let session = match Session::start(SessionConfig {
        listen: Some(listen),
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
    let mut add = AddTorrent::new(Source::Metainfo(meta.clone()), StorageSpec::Disk(dir));
    add.swarm.keep_seeding = true;
    let h = session.add(add);
    let mut prog = h.progress();
    while prog.borrow().phase != Phase::Seeding {
        if prog.changed().await.is_err() {
            eprintln!("seeder stopped before seeding");
            return ExitCode::from(1);
        }
    }
    println!(
        "{{\"info_hash\":\"{}\",\"addr\":\"{}\"}}",
        meta.info_hash.to_hex(),
        session
            .listen_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    match h.wait().await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seeder: {e}");
            ExitCode::from(1)
        }
    }
}
