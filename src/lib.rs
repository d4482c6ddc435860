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
//! The modules below the root are hidden from the documentation: they are reachable so
//! that integration tests, fuzz targets and benchmarks can drive the pure codecs and state
//! machines directly, and carry no stability promise.

#[doc(hidden)]
pub mod bencode;
#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod dht;
#[doc(hidden)]
pub mod dial;
#[doc(hidden)]
pub mod http;
#[doc(hidden)]
pub mod id;
#[doc(hidden)]
pub mod magnet;
#[doc(hidden)]
pub mod metainfo;
#[doc(hidden)]
pub mod net;
#[doc(hidden)]
pub mod peer;
#[doc(hidden)]
pub mod session;
#[doc(hidden)]
pub mod sim;
#[doc(hidden)]
pub mod torrent;
#[doc(hidden)]
pub mod tracker;
pub(crate) mod units;
#[doc(hidden)]
pub mod webseed;

pub use dht::{Dht, DhtConfig};
pub use dial::{DialConfig, TransportMode};
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
