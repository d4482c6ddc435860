//! magnetfetch: a BitTorrent client that needs nothing but a magnet link.
//!
//! Layers (dependencies point one way):
//! `cli → session → torrent → peer → (dht, net) → formats (bencode, metainfo, magnet)`.
//! See `docs/architecture.md`.

pub mod bencode;
pub mod cli;
pub mod dht;
pub mod dial;
pub mod http;
pub mod id;
pub mod magnet;
pub mod metainfo;
pub mod net;
pub mod peer;
pub mod session;
pub mod sim;
pub mod torrent;
pub mod tracker;
pub mod units;
pub mod webseed;
