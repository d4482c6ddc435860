//! `magnetfetch magnet FILE.torrent`: print the torrent's magnet link (xt, dn, tr..., ws...).

use std::path::PathBuf;

use super::{print_out, CliResult};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The .torrent file
    #[arg(value_name = "FILE.torrent")]
    pub torrent: PathBuf,
}

pub fn run(args: Args) -> CliResult {
    let m = super::info::read_torrent(&args.torrent)?;
    print_out(&format!("{}\n", m.magnet()))
}
