//! The connected peers and trackers of a torrent as the API shows them
//! (`GET /torrents/{id}/peers`, `/trackers`), and the client a peer id names.
//!
//! Client names read the two peer-id conventions BEP 20 describes: Azureus style
//! (`-qB4650-…`: two letters of client, four of version) and Shadow style (`T03I--…`:
//! one letter, then the version). Anything else is shown as `unknown`. Pure.

use std::net::SocketAddr;

use serde::Serialize;

use crate::id::PeerId;
use crate::net::Transport;
use crate::session::{PeerInfo, TrackerStatus};

/// One connected peer, as `GET /torrents/{id}/peers` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PeerView {
    pub address: SocketAddr,
    /// The client its peer id names (`qBittorrent 4.6.5.0`, `unknown`).
    pub client: String,
    /// Where its address came from first: `dht`, `tracker`, `pex`, `lsd`, `incoming`,
    /// `given` (the magnet's `x.pe`), or `other`.
    pub source: &'static str,
    /// `tcp`, `utp` or `quic`.
    pub transport: &'static str,
    /// RC4 after an MSE/PE handshake.
    pub encrypted: bool,
    /// We dialled it (else it connected to us).
    pub outgoing: bool,
    /// Payload bytes per second recently, from it and to it.
    pub down_rate: u64,
    pub up_rate: u64,
    /// Payload bytes sent to it.
    pub uploaded: u64,
    /// Its pieces over the torrent's, 0 to 1.
    pub progress: f64,
    pub choked: bool,
    pub choking_us: bool,
    pub interested: bool,
    pub interesting: bool,
}

pub fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Tcp => "tcp",
        Transport::Quic => "quic",
        Transport::Utp => "utp",
    }
}

impl From<&PeerInfo> for PeerView {
    fn from(p: &PeerInfo) -> Self {
        PeerView {
            address: p.addr,
            client: client_name(&p.peer_id),
            source: p.origin.map_or("other", |o| o.as_str()),
            transport: transport_name(p.transport),
            encrypted: p.encrypted,
            outgoing: p.outgoing,
            down_rate: p.down_rate,
            up_rate: p.up_rate,
            uploaded: p.uploaded,
            progress: if p.pieces_total == 0 {
                0.0
            } else {
                f64::from(p.pieces) / f64::from(p.pieces_total)
            },
            choked: p.am_choking,
            choking_us: p.peer_choking,
            interested: p.peer_interested,
            interesting: p.am_interested,
        }
    }
}

/// One tracker of a torrent, as `GET /torrents/{id}/trackers` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TrackerView {
    pub url: String,
    /// `ok`, `error`, or `waiting` before its first answer.
    pub status: String,
    /// Seconds since the Unix epoch of its last answer or failure.
    pub last_announce: Option<u64>,
    /// Peers in its last good answer.
    pub peers: usize,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    /// Seconds it asks between announces.
    pub interval: u32,
    pub announces: u64,
    pub failures: u64,
    pub error: Option<String>,
}

impl From<&TrackerStatus> for TrackerView {
    fn from(t: &TrackerStatus) -> Self {
        TrackerView {
            url: t.url.clone(),
            status: if t.status.is_empty() {
                "waiting".into()
            } else {
                t.status.clone()
            },
            last_announce: t.last_announce,
            peers: t.peers,
            seeders: t.seeders,
            leechers: t.leechers,
            interval: t.interval,
            announces: t.announces,
            failures: t.failures,
            error: t.error.clone(),
        }
    }
}

/// Azureus-style client codes (BEP 20 lists them; these are the common ones today).
const AZUREUS: [(&str, &str); 16] = [
    ("MF", "magnetfetch"),
    ("qB", "qBittorrent"),
    ("TR", "Transmission"),
    ("LT", "libtorrent"),
    ("lt", "rTorrent"),
    ("UT", "µTorrent"),
    ("UM", "µTorrent Mac"),
    ("BT", "BitTorrent"),
    ("DE", "Deluge"),
    ("AZ", "Vuze"),
    ("BI", "BiglyBT"),
    ("KT", "KTorrent"),
    ("FD", "Free Download Manager"),
    ("AG", "Ares"),
    ("WW", "WebTorrent"),
    ("rQ", "rqbit"),
];

/// Shadow-style client letters.
const SHADOW: [(u8, &str); 5] = [
    (b'A', "ABC"),
    (b'M', "Mainline"),
    (b'O', "Osprey"),
    (b'S', "Shadow"),
    (b'T', "BitTornado"),
];

/// The client a peer id names, with its version (`unknown` when it follows no convention).
pub fn client_name(id: &PeerId) -> String {
    let b = &id.0;
    if b[0] == b'-' && b[7] == b'-' && b[1..7].iter().all(u8::is_ascii_alphanumeric) {
        let code = std::str::from_utf8(&b[1..3]).unwrap_or("");
        let name = AZUREUS
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(code, |(_, n)| n);
        let version: Vec<String> = b[3..7].iter().map(|&c| version_digit(c)).collect();
        return format!("{name} {}", version.join("."));
    }
    if let Some((_, name)) = SHADOW.iter().find(|(c, _)| *c == b[0]) {
        let version: String = b[1..6]
            .iter()
            .take_while(|&&c| c != b'-')
            .map(|&c| version_digit(c))
            .collect::<Vec<_>>()
            .join(".");
        if !version.is_empty()
            && b[1..6]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        {
            return format!("{name} {version}");
        }
    }
    "unknown".into()
}

/// One version character: `0-9`, then `A-Z` for 10-35, `a-z` for 36-61 (BEP 20).
fn version_digit(c: u8) -> String {
    match c {
        b'0'..=b'9' => (c - b'0').to_string(),
        b'A'..=b'Z' => (c - b'A' + 10).to_string(),
        b'a'..=b'z' => (c - b'a' + 36).to_string(),
        _ => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id20;

    fn id(prefix: &[u8]) -> PeerId {
        let mut b = [b'x'; 20];
        b[..prefix.len()].copy_from_slice(prefix);
        Id20(b)
    }

    #[test]
    fn clients_are_named_from_azureus_and_shadow_style_ids() {
        assert_eq!(client_name(&id(b"-qB4650-")), "qBittorrent 4.6.5.0");
        assert_eq!(client_name(&id(b"-MF0100-")), "magnetfetch 0.1.0.0");
        assert_eq!(client_name(&id(b"-ZZ1A00-")), "ZZ 1.10.0.0");
        assert_eq!(client_name(&id(b"T03I--")), "BitTornado 0.3.18");
        assert_eq!(client_name(&id(b"\x00\x01garbage")), "unknown");
        assert_eq!(client_name(&Id20([0xff; 20])), "unknown");
    }
}
