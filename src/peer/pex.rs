//! Peer exchange, `ut_pex` (BEP 11): learn peers from connected peers and tell them ours.
//!
//! [`PexMsg`] is the message codec (`added`/`added.f`/`added6`/`added6.f`/`dropped`/
//! `dropped6`, compact addresses). Decoding keeps at most [`MAX_DECODED`] contacts per list
//! whatever the peer sends. [`PexSender`] is the per-peer rate limiter: at most one message
//! per [`PEX_INTERVAL`], at most [`MAX_ADDED`] added and [`MAX_ADDED`] dropped contacts each,
//! and a contact is only dropped after it was added (BEP 11 compliance).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use super::PeerError;
use crate::bencode::{Limits, Value, Writer};

/// Flag bits of `added.f` (BEP 11), the whole table: uTP is set for peers connected over
/// uTP, holepunch for peers that announced ut_holepunch (BEP 55); encryption is not set.
#[allow(dead_code)]
pub const FLAG_ENCRYPTION: u8 = 0x01;
pub const FLAG_SEED: u8 = 0x02;
pub const FLAG_UTP: u8 = 0x04;
pub const FLAG_HOLEPUNCH: u8 = 0x08;
pub const FLAG_REACHABLE: u8 = 0x10;
/// Not in BEP 11 (unused bit; other clients ignore it): the contact speaks magnetfetch's
/// QUIC on its UDP port = TCP port (see the `quic` module).
pub const FLAG_MF_QUIC: u8 = 0x40;

/// Minimum time between two PEX messages to the same peer.
pub const PEX_INTERVAL: Duration = Duration::from_secs(60);
/// Most contacts added (and, separately, dropped) per message we send.
pub const MAX_ADDED: usize = 50;
/// Most contacts we take from one received list (a hostile peer can't flood our pool).
pub const MAX_DECODED: usize = 200;

/// A ut_pex message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PexMsg {
    /// Newly connected contacts with their flags.
    pub added: Vec<(SocketAddr, u8)>,
    /// Contacts that disconnected.
    pub dropped: Vec<SocketAddr>,
}

fn parse_compact(b: &[u8], v6: bool, out: &mut Vec<SocketAddr>) {
    let step = if v6 { 18 } else { 6 };
    for c in b.chunks_exact(step) {
        if out.len() >= MAX_DECODED {
            break;
        }
        let (ip, port) = c.split_at(step - 2);
        let port = u16::from_be_bytes([port[0], port[1]]);
        let ip = if v6 {
            <[u8; 16]>::try_from(ip).map(|a| IpAddr::V6(Ipv6Addr::from(a)))
        } else {
            <[u8; 4]>::try_from(ip).map(|a| IpAddr::V4(Ipv4Addr::from(a)))
        };
        // Port 0 or an unspecified address cannot be connected to.
        if let Ok(ip) = ip {
            if port != 0 && !ip.is_unspecified() {
                out.push(SocketAddr::new(ip, port));
            }
        }
    }
}

fn write_compact(addrs: &[SocketAddr], v6: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for a in addrs {
        match (a.ip(), v6) {
            (IpAddr::V4(ip), false) => out.extend_from_slice(&ip.octets()),
            (IpAddr::V6(ip), true) => out.extend_from_slice(&ip.octets()),
            _ => continue,
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
    out
}

impl PexMsg {
    /// Decodes a ut_pex payload. Lists whose length is not a multiple of the contact size
    /// are truncated to whole contacts; missing flags read as 0.
    pub fn decode(payload: &[u8]) -> Result<Self, PeerError> {
        let v = Value::decode_exact(payload, Limits::PEER)?;
        if v.as_dict().is_none() {
            return Err(PeerError::BadExtension("ut_pex is not a dict"));
        }
        let bytes = |k: &str| v.get(k).and_then(Value::as_bytes).unwrap_or(&[]);
        let mut msg = PexMsg::default();
        for (key, fkey, v6) in [("added", "added.f", false), ("added6", "added6.f", true)] {
            let mut addrs = Vec::new();
            // Flags are positional, so parse without filtering first, then pair up.
            let raw = bytes(key);
            let step = if v6 { 18 } else { 6 };
            let flags = bytes(fkey);
            for (i, c) in raw.chunks_exact(step).enumerate() {
                if msg.added.len() >= MAX_DECODED {
                    break;
                }
                addrs.clear();
                parse_compact(c, v6, &mut addrs);
                if let Some(a) = addrs.first() {
                    msg.added.push((*a, flags.get(i).copied().unwrap_or(0)));
                }
            }
        }
        parse_compact(bytes("dropped"), false, &mut msg.dropped);
        parse_compact(bytes("dropped6"), true, &mut msg.dropped);
        Ok(msg)
    }

    pub fn encode(&self) -> Vec<u8> {
        let (a4, a6): (Vec<_>, Vec<_>) = self.added.iter().partition(|(a, _)| a.is_ipv4());
        let addrs = |l: &[(SocketAddr, u8)]| l.iter().map(|(a, _)| *a).collect::<Vec<_>>();
        let flags = |l: &[(SocketAddr, u8)]| l.iter().map(|(_, f)| *f).collect::<Vec<_>>();
        let mut w = Writer::new();
        w.dict();
        w.kv_bytes("added", &write_compact(&addrs(&a4), false));
        w.kv_bytes("added.f", &flags(&a4));
        if !a6.is_empty() {
            w.kv_bytes("added6", &write_compact(&addrs(&a6), true));
            w.kv_bytes("added6.f", &flags(&a6));
        }
        w.kv_bytes("dropped", &write_compact(&self.dropped, false));
        if self.dropped.iter().any(|a| a.is_ipv6()) {
            w.kv_bytes("dropped6", &write_compact(&self.dropped, true));
        }
        w.end();
        w.out
    }
}

/// Per-peer PEX sending state (pure).
#[derive(Debug, Default)]
pub struct PexSender {
    advertised: BTreeSet<SocketAddr>,
    last_sent: Option<Instant>,
}

impl PexSender {
    pub fn new() -> Self {
        Self::default()
    }

    /// The message to send to this peer now, if one is due and there is a change.
    /// `connected` is our current set of connected peers (excluding the recipient) with
    /// their flags.
    pub fn poll(&mut self, now: Instant, connected: &BTreeMap<SocketAddr, u8>) -> Option<PexMsg> {
        if let Some(t) = self.last_sent {
            if now.saturating_duration_since(t) < PEX_INTERVAL {
                return None;
            }
        }
        let added: Vec<(SocketAddr, u8)> = connected
            .iter()
            .filter(|(a, _)| !self.advertised.contains(a))
            .take(MAX_ADDED)
            .map(|(a, f)| (*a, *f))
            .collect();
        let dropped: Vec<SocketAddr> = self
            .advertised
            .iter()
            .filter(|a| !connected.contains_key(a))
            .take(MAX_ADDED)
            .copied()
            .collect();
        if added.is_empty() && dropped.is_empty() {
            return None;
        }
        for (a, _) in &added {
            self.advertised.insert(*a);
        }
        for a in &dropped {
            self.advertised.remove(a);
        }
        self.last_sent = Some(now);
        Some(PexMsg { added, dropped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn round_trip_v4_v6() {
        let m = PexMsg {
            added: vec![(a("1.2.3.4:5"), FLAG_SEED), (a("[::1]:80"), FLAG_UTP)],
            dropped: vec![a("9.9.9.9:9"), a("[2001:db8::1]:7")],
        };
        let enc = m.encode();
        assert!(enc.starts_with(b"d5:added6:\x01\x02\x03\x04\x00\x057:added.f1:\x02"));
        let d = PexMsg::decode(&enc).unwrap();
        assert_eq!(d.added, m.added);
        assert_eq!(d.dropped, m.dropped);
    }

    #[test]
    fn hostile_lists_are_bounded() {
        let n = 1000usize;
        let mut raw = Vec::new();
        for i in 0..n {
            raw.extend_from_slice(&[10, 0, (i >> 8) as u8, i as u8, 0, 1]);
        }
        raw.extend_from_slice(&[1, 2, 3]); // trailing partial contact
        let mut w = Writer::new();
        w.dict()
            .kv_bytes("added", &raw)
            .kv_bytes("added.f", b"\x02")
            .end();
        let d = PexMsg::decode(&w.out).unwrap();
        assert_eq!(d.added.len(), MAX_DECODED);
        assert_eq!(d.added[0].1, FLAG_SEED);
        assert_eq!(d.added[1].1, 0);
        // Port 0 dropped.
        let mut w = Writer::new();
        w.dict().kv_bytes("added", &[1, 1, 1, 1, 0, 0]).end();
        assert!(PexMsg::decode(&w.out).unwrap().added.is_empty());
        assert!(PexMsg::decode(b"i1e").is_err());
    }

    #[test]
    fn sender_rate_limits_and_drops_only_added() {
        let t0 = Instant::now();
        let mut s = PexSender::new();
        let mut peers: BTreeMap<SocketAddr, u8> = (0..80u16)
            .map(|i| (SocketAddr::from(([10, 0, 0, 1], 1000 + i)), 0))
            .collect();
        let m1 = s.poll(t0, &peers).unwrap();
        assert_eq!(m1.added.len(), MAX_ADDED);
        assert!(s.poll(t0 + Duration::from_secs(59), &peers).is_none());
        let gone = m1.added[0].0;
        peers.remove(&gone);
        let never_sent = SocketAddr::from(([10, 0, 0, 1], 1079));
        peers.remove(&never_sent);
        let m2 = s.poll(t0 + PEX_INTERVAL, &peers).unwrap();
        assert_eq!(m2.dropped, vec![gone]);
        assert_eq!(m2.added.len(), 80 - MAX_ADDED - 1);
        assert!(
            s.poll(t0 + 3 * PEX_INTERVAL, &peers).is_none(),
            "nothing changed"
        );
    }
}
