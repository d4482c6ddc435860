//! Command-line interface: one file per subcommand, no protocol logic here.
//!
//! Contract (checked from outside): a usage error exits 2 (clap's message); any other failure
//! exits 1 with exactly one line on stderr starting with `error: `; never a panic trace.

use clap::{Parser, Subcommand};
use std::fmt;
use std::io::Write;

pub mod common;
pub mod create;
pub mod daemon;
pub mod dht;
pub mod fetch;
pub mod info;
pub mod magnet;
pub mod metadata;
pub mod portmap;
pub mod progress;
pub mod remote;
pub mod seed;
pub mod sim;
pub mod tracker;

#[derive(Parser, Debug)]
#[command(
    name = "magnetfetch",
    version,
    about = "A BitTorrent client that needs nothing but a magnet link",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Without a subcommand, the arguments are those of `fetch`:
  magnetfetch 'magnet:?xt=urn:btih:...' -o ~/Downloads"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `magnetfetch MAGNET ...` is `magnetfetch fetch MAGNET ...`.
    #[command(flatten)]
    pub fetch: fetch::Args,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Download a magnet link, .torrent file or info-hash (the default command)
    Fetch(fetch::Args),
    /// Share a file or directory over the DHT: prints its magnet link, seeds until Ctrl-C
    Seed(seed::Args),
    /// Create a .torrent from a file or directory and print its magnet link
    Create(create::Args),
    /// Show what a .torrent file or a magnet link contains
    Info(info::Args),
    /// Print the magnet link of a .torrent file
    Magnet(magnet::Args),
    /// Mainline DHT tools: look up peers for an info-hash, or run a DHT node
    Dht(dht::DhtArgs),
    /// Run a BitTorrent tracker (HTTP and UDP) and serve .torrent files
    Tracker(tracker::TrackerArgs),
    /// Resolve a magnet link to a .torrent (DHT + BEP 9 metadata), without the content
    Metadata(metadata::Args),
    /// Simulate a whole swarm of magnetfetch peers over an in-process network
    Sim(sim::SimArgs),
    /// Run many torrents in one process, driven over an HTTP API (docs/api.md)
    Daemon(daemon::Args),
    /// Control a running daemon: add, list, pause, resume, rm
    Remote(remote::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    progress::mark_start();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    // `magnetfetch WORD` where WORD is neither a subcommand nor anything fetchable is a typo'd
    // subcommand far more often than a missing file: report it as a usage error (exit 2).
    if cli.command.is_none() {
        for src in &cli.fetch.sources {
            // A path that names a file (`x.torrent`, `dir/x`) that is not there is a
            // missing file, not a typo'd subcommand.
            if looks_like_a_path(src) && !std::path::Path::new(src.trim()).exists() {
                eprintln!("error: {}: no such file", one_line(src.trim()));
                return 1;
            }
            if !looks_fetchable(src) {
                eprintln!(
                    "error: '{}' is not a subcommand, a magnet link, a .torrent file, a URL or an info-hash\n\n\
                     Usage: magnetfetch [OPTIONS] <MAGNET|FILE.torrent|URL|INFOHASH>...\n       \
                     magnetfetch <COMMAND>\n\nFor more information, try '--help'.",
                    one_line(src)
                );
                return 2;
            }
        }
    }
    // A bug must still look like an error, not a backtrace: the hook prints one line and
    // catch_unwind turns the panic into exit code 1.
    std::panic::set_hook(Box::new(|p| {
        let msg = p
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("error: internal error: {}", one_line(&msg));
    }));
    let result = std::panic::catch_unwind(|| match cli.command {
        None => fetch::run(cli.fetch),
        Some(c) => run_command(c),
    });
    result.unwrap_or(1)
}

fn run_command(c: Command) -> i32 {
    match c {
        Command::Fetch(a) => fetch::run(a),
        Command::Seed(a) => seed::run(a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "magnetfetch", &mut buf);
            exit_code(print_out(&String::from_utf8_lossy(&buf)))
        }
        Command::Create(a) => exit_code(create::run(a)),
        Command::Info(a) => exit_code(info::run(a)),
        Command::Magnet(a) => exit_code(magnet::run(a)),
        Command::Dht(a) => dht::run(a),
        Command::Tracker(a) => tracker::run(a),
        Command::Sim(a) => sim::run(a),
        Command::Metadata(a) => metadata::run(a),
        Command::Daemon(a) => daemon::run(a),
        Command::Remote(a) => remote::run(a),
    }
}

/// Could `s` be what `fetch` takes: a magnet link, an http(s) URL of a .torrent, an
/// existing file, or an info-hash?
fn looks_fetchable(s: &str) -> bool {
    let t = s.trim();
    has_scheme(t, "magnet:")
        || has_scheme(t, "http://")
        || has_scheme(t, "https://")
        || std::path::Path::new(t).exists()
        || dht::parse_infohash(t).is_some()
}

/// Does `s` start with `scheme` (ASCII case-insensitive)?
pub(crate) fn has_scheme(s: &str, scheme: &str) -> bool {
    s.get(..scheme.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
}

/// A word that can only mean a file: it ends in `.torrent` or names a directory.
fn looks_like_a_path(s: &str) -> bool {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    !has_scheme(t, "magnet:")
        && !lower.starts_with("http://")
        && !lower.starts_with("https://")
        && (lower.ends_with(".torrent") || t.contains('/'))
}

/// 0 on success; otherwise prints the one `error:` line and gives 1.
fn exit_code(r: CliResult) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", one_line(&e.0));
            1
        }
    }
}

/// A user-facing error: one line of text. Any `std::error::Error` converts into it, so
/// subcommands can use `?` on library errors (whose messages already name the problem).
#[derive(Debug)]
pub struct CliError(pub String);

impl CliError {
    pub fn msg(m: impl fmt::Display) -> Self {
        CliError(m.to_string())
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type CliResult = Result<(), CliError>;

/// An error message as one terminal-safe line: line breaks become `; `, other control
/// characters are escaped (messages may quote a torrent's paths or a peer's words).
pub(crate) fn one_line(s: &str) -> String {
    let joined = s
        .split(['\n', '\r'])
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    progress::sanitize(&joined).into_owned()
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth reporting.
pub fn print_out(text: &str) -> CliResult {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::msg(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}
