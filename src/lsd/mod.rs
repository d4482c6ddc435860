//! Local Service Discovery (BEP 14): finding peers of our torrents on the local network
//! with no DHT or tracker, by announcing `BT-SEARCH` datagrams to the multicast groups
//! 239.192.152.143:6771 and [ff15::efc0:988f]:6771 and listening to everyone else's.
//!
//! [`announce`] is the codec and [`limits`] the rate limits (both pure); [`service`] is the
//! one task that owns the multicast sockets. The session registers each non-private torrent
//! and gets the peers heard for it; a peer's address is the announce's source IP with the
//! announced port.

pub mod announce;
pub mod limits;
pub mod service;

pub use service::{Lsd, LsdConfig, Registration};
