//! `magnetfetch create PATH -o OUT.torrent`: hash a file or directory into a .torrent
//! (see [`crate::metainfo::create`]) and print its magnet link on stdout.

use std::io::IsTerminal;
use std::path::PathBuf;

use super::{print_out, CliError, CliResult};
use crate::metainfo::{self, CreateOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// File or directory to share
    pub path: PathBuf,
    /// Where to write the .torrent file
    #[arg(short, long, value_name = "OUT.torrent")]
    pub output: PathBuf,
    /// Piece length in bytes (power of two, 16 KiB..256 MiB; K/M suffixes allowed).
    /// Default: chosen for about 1000-2000 pieces
    #[arg(long, value_name = "BYTES", value_parser = crate::units::parse_size)]
    pub piece_length: Option<u64>,
    /// Tracker announce URL (repeatable; each gets its own tier)
    #[arg(long = "tracker", short = 't', value_name = "URL")]
    pub trackers: Vec<String>,
    /// Web seed URL (BEP 19; repeatable)
    #[arg(long = "web-seed", short = 'w', value_name = "URL")]
    pub web_seeds: Vec<String>,
    /// Mark the torrent private (BEP 27: no DHT, no PEX)
    #[arg(long)]
    pub private: bool,
    /// Free-text comment stored in the torrent
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
}

pub fn run(args: Args) -> CliResult {
    let opts = CreateOptions {
        piece_length: args.piece_length,
        trackers: args.trackers,
        web_seeds: args.web_seeds,
        private: args.private,
        comment: args.comment,
        created_by: Some(concat!("magnetfetch/", env!("CARGO_PKG_VERSION")).to_string()),
        creation_date: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs() as i64),
        threads: 0,
        exclude: Some(args.output.clone()),
    };
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let pb = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "hashing {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            pb.set_style(style);
        }
        Some(pb)
    } else {
        None
    };
    let progress = |done: u64, total: u64| {
        if let Some(pb) = &bar {
            pb.set_length(total);
            pb.set_position(done);
        }
    };
    let result = metainfo::create_with_progress(&args.path, &opts, &progress);
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    let m = result?;
    write_atomically(&args.output, &m.to_bytes())?;
    if tty {
        eprintln!(
            "wrote {}: {} file(s), {} bytes, {} pieces of {} bytes, info-hash {}",
            args.output.display(),
            m.info.files.len(),
            m.info.total_length(),
            m.info.piece_count(),
            m.info.piece_length,
            m.info_hash
        );
    }
    print_out(&format!("{}\n", m.magnet()))
}

/// Writes via a temporary file in the same directory, so a failed or interrupted run never
/// leaves a truncated .torrent behind.
fn write_atomically(out: &std::path::Path, bytes: &[u8]) -> CliResult {
    let err = |e: std::io::Error| CliError::msg(format!("cannot write {}: {e}", out.display()));
    let file_name = out
        .file_name()
        .ok_or_else(|| CliError::msg(format!("cannot write {}: not a file name", out.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = out.with_file_name(tmp_name);
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}
