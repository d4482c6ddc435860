//! Trackers: HTTP and HTTPS (BEP 3, compact peers BEP 23, `peers6` BEP 7, scrape BEP 48) and UDP (BEP 15)
//! announce/scrape clients, multitracker tiers (BEP 12), and the tracker server behind
//! `magnetfetch tracker`. HTTP itself (client, TLS, URLs, request heads) is [`crate::http`].
//!
//! Layout follows the "pure cores, thin tasks" rule: [`http_proto`], [`udp_proto`], [`tier`],
//! [`store`], [`conns`] are plain data and codecs with no I/O; [`client`] and [`server`] are the thin async
//! layers over [`crate::net::Net`].

pub mod client;
pub mod conns;
pub mod http_proto;
pub mod server;
pub mod siphash;
pub mod store;
pub mod tier;
pub mod torrents;
pub mod udp_proto;

use std::net::SocketAddr;

use crate::id::Id20;

/// The `event` of an announce. Numbering is BEP 15's (UDP) wire value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Event {
    #[default]
    None = 0,
    Completed = 1,
    Started = 2,
    Stopped = 3,
}

impl Event {
    /// The HTTP query value (BEP 3); `None` means the parameter is omitted.
    pub fn http_name(self) -> Option<&'static str> {
        match self {
            Event::None => None,
            Event::Completed => Some("completed"),
            Event::Started => Some("started"),
            Event::Stopped => Some("stopped"),
        }
    }
    pub fn from_http(s: &[u8]) -> Option<Event> {
        match s {
            b"" | b"empty" | b"paused" => Some(Event::None),
            b"completed" => Some(Event::Completed),
            b"started" => Some(Event::Started),
            b"stopped" => Some(Event::Stopped),
            _ => None,
        }
    }
    pub fn from_udp(v: u32) -> Option<Event> {
        match v {
            0 => Some(Event::None),
            1 => Some(Event::Completed),
            2 => Some(Event::Started),
            3 => Some(Event::Stopped),
            _ => None,
        }
    }
}

/// What a client tells a tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: Id20,
    pub peer_id: Id20,
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    /// Peers wanted; `None` lets the tracker choose.
    pub numwant: Option<u32>,
    /// Random value identifying this client across IP changes (BEP 3 `key`, BEP 15 `key`).
    pub key: u32,
    /// Opaque `tracker id` from an earlier reply, echoed back (HTTP only).
    pub tracker_id: Option<Vec<u8>>,
}

/// What a tracker answers to an announce.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AnnounceResponse {
    /// Seconds until the next regular announce.
    pub interval: u32,
    pub min_interval: Option<u32>,
    /// IPv4 and IPv6 peers together, in the tracker's order (v4 first).
    pub peers: Vec<SocketAddr>,
    pub warning: Option<String>,
    pub tracker_id: Option<Vec<u8>>,
    /// Seeders.
    pub complete: Option<u32>,
    /// Leechers.
    pub incomplete: Option<u32>,
}

/// Scrape counters for one torrent (BEP 48 / BEP 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ScrapeStats {
    /// Seeders.
    pub complete: u32,
    /// Completed downloads ever reported.
    pub downloaded: u32,
    /// Leechers.
    pub incomplete: u32,
}

/// Everything that can go wrong talking to a tracker.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("tracker refused: {0}")]
    Failure(String),
    #[error("tracker does not support scrape: {0:?}")]
    NoScrape(String),
    #[error("malformed tracker reply: {0}")]
    Malformed(String),
    #[error("tracker HTTP status {0}")]
    HttpStatus(u16),
    /// The HTTP(S) exchange itself failed (connect, TLS, a broken reply, its timeout).
    #[error("tracker {0}")]
    Http(#[from] crate::http::HttpError),
    /// A UDP tracker (BEP 15) did not answer in time.
    #[error("tracker timed out")]
    Timeout,
    #[error("tracker I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<crate::bencode::BencodeError> for TrackerError {
    fn from(e: crate::bencode::BencodeError) -> Self {
        TrackerError::Malformed(e.to_string())
    }
}

pub use client::{ClientConfig, TrackerClient, TrackerEvent, TrackerSet, TrackerSetHandle};
pub use server::{ServerConfig, TrackerServer};
