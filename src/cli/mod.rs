//! Command-line interface: one file per subcommand, no protocol logic here.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "magnetfetch",
    version,
    about = "A BitTorrent client that needs nothing but a magnet link"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {}
}
