//! magnetfetch: a BitTorrent client that needs nothing but a magnet link.
//!
//! # Embedding API
//!
//! The items re-exported at the crate root are the API for programs that embed the client:
//! a [`Session`] that fetches and seeds torrents ([`AddTorrent`], [`Progress`],
//! [`TorrentOutcome`]), the Mainline DHT node ([`Dht`]), [`Magnet`] links and
//! [`Metainfo`] (.torrent files), the tracker server ([`TrackerServer`]), the network seam
//! ([`Net`]: real sockets or a simnet host) and swarm simulations ([`Scenario`]).
//!
//! # Rooms
//!
//! Dependencies point one way (each room uses only rooms above it; the full table, and a
//! test that checks it against the code, are in `docs/architecture.md`):
//! `id, bencode, units, net → http → magnet, metainfo → torrent, dht, peer, tracker,
//! webseed → dial → session → sim → cli`.
//!
//! The rooms themselves are private. This package's own integration tests, fuzz targets,
//! examples and benchmarks drive the pure codecs and state machines directly through
//! `magnetfetch::internals`, which exists only with the `internals` feature (the test
//! targets turn it on; see `Cargo.toml`) and carries no stability promise.

// Without `internals`, items that only the test surface reaches (the scrape client that
// checks our tracker, the wire codec's incremental decoder...) look unused. Dead code is
// still caught: `cargo clippy --all-targets` and `cargo test` build with the feature on,
// where only truly unreachable code warns.
#![cfg_attr(not(feature = "internals"), allow(dead_code, unused_imports))]

mod bencode;
mod cli;
mod daemon;
mod dht;
mod dial;
mod http;
mod id;
mod lsd;
mod magnet;
mod metainfo;
mod net;
mod peer;
mod portmap;
mod session;
mod sim;
mod torrent;
mod tracker;
mod units;
mod webseed;

pub use dht::{Dht, DhtConfig};
pub use dial::{DialConfig, Encryption, TransportMode};
pub use id::{Id20, InfoHash, PeerId};
pub use magnet::{Magnet, MagnetError};
pub use metainfo::{create, CreateOptions, Metainfo, MetainfoError};
pub use net::Net;
pub use session::{
    AddTorrent, Phase, Progress, Session, SessionConfig, Source, StorageSpec, TorrentError,
    TorrentHandle, TorrentOutcome,
};
pub use sim::{run_blocking as run_simulation, Report as SimReport, Scenario};
pub use tracker::{ServerConfig as TrackerServerConfig, TrackerServer};

/// glibc's malloc hands freed memory at the top of a heap back to the kernel as soon as
/// more than a few hundred KiB are free, and its mmap threshold moves with the sizes it
/// sees. A download frees piece-sized and read-sized buffers at a high rate (blocks are
/// kept as slices of their receive buffers until the piece is written), so the same
/// memory was returned and faulted in again all the time: page faults and zeroing were
/// ~5 % of the downloader's CPU. Fixed thresholds keep it (peak RSS is unchanged: only
/// memory already used is kept).
///
/// One arena (`M_ARENA_MAX`): glibc gives threads their own arenas (8 per core), and each
/// keeps its own high-water mark under that trim threshold, so a receive buffer allocated on
/// one worker and one on another, or a blocking thread's, each left their peak resident:
/// about 10 MB of a 1 GiB download's peak RSS from a fast seeder (35 MB anonymous with the
/// default arenas, 26 MB with one; docs/architecture.md, "Where the memory goes"). Few
/// threads allocate here, so one arena's lock costs nothing measurable.
///
/// Allocator parameters are process-wide, so this is the program's choice, never the
/// library's: nothing in the library calls it. The `magnetfetch` binary (and the loopback
/// benchmark's programs, which measure what the binary does) call it once, first thing in
/// `main`, before any runtime or thread starts.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters (valid parameter numbers, values
        // in bytes); glibc takes its arena locks, so it is sound at any time. Early is
        // better only because every allocation then sees the same thresholds.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// The `magnetfetch` command line (parse `std::env::args`, run, return the exit code).
/// Public so the binary, a thin `main`, can call it; embedders use [`Session`].
pub fn run_cli() -> i32 {
    cli::main()
}

#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals;
