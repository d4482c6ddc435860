//! Extension protocol handshake (BEP 10): the bencoded dictionary sent as extended message 0
//! right after the BitTorrent handshake when both sides set reserved bit 20.
//!
//! Our extension ids are stable ([`UT_METADATA_ID`], [`UT_PEX_ID`], [`UT_HOLEPUNCH_ID`]): peers send us messages
//! tagged with these ids; we send to a peer with the ids *it* announced in its `m`.
//! Every field from the network is bounded: at most [`MAX_EXTENSIONS`] names of at most
//! [`MAX_NAME_LEN`] bytes, a client name of at most [`MAX_CLIENT_LEN`] bytes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::PeerError;
use crate::bencode::{Limits, Value, Writer};

/// Extended message id 0 is the handshake itself.
pub const HANDSHAKE_ID: u8 = 0;
/// The id peers use to send us ut_metadata (BEP 9) messages.
pub const UT_METADATA_ID: u8 = 1;
/// The id peers use to send us ut_pex (BEP 11) messages.
pub const UT_PEX_ID: u8 = 2;
/// The id peers use to send us ut_holepunch (BEP 55) messages.
pub const UT_HOLEPUNCH_ID: u8 = 3;
pub const UT_METADATA: &str = "ut_metadata";
pub const UT_PEX: &str = "ut_pex";
pub const UT_HOLEPUNCH: &str = "ut_holepunch";
/// Our `v` string.
pub const CLIENT_NAME: &str = "magnetfetch 0.1.0";
/// Requests we let a peer queue with us (`reqq`).
pub const OUR_REQQ: u32 = 500;

pub const MAX_EXTENSIONS: usize = 64;
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_CLIENT_LEN: usize = 64;
/// We clamp a peer's `reqq` to this; beyond it a peer cannot usefully use more.
pub const MAX_REQQ: u32 = 4096;

/// The extended handshake dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtHandshake {
    /// Extension name -> message id the sender wants to receive it on. Id 0 is kept in the
    /// map and means "disabled" (BEP 10); use [`ExtHandshake::id_of`].
    pub m: BTreeMap<String, u8>,
    /// The sender's listen port.
    pub p: Option<u16>,
    /// Client name and version.
    pub v: Option<String>,
    /// Our address as the sender sees it.
    pub yourip: Option<IpAddr>,
    /// How many outstanding requests the sender accepts (clamped to [`MAX_REQQ`]).
    pub reqq: Option<u32>,
    /// Size of the info dictionary in bytes (BEP 9); unchecked here, see `metadata`.
    pub metadata_size: Option<u64>,
    /// magnetfetch's own key `mf_quic`: the sender's QUIC (UDP) port (see the `quic` module).
    pub mf_quic: Option<u16>,
}

impl ExtHandshake {
    /// What we send: our stable ids, and `metadata_size` when we have the metadata.
    pub fn ours(
        listen_port: Option<u16>,
        metadata_size: Option<u64>,
        yourip: Option<IpAddr>,
    ) -> Self {
        let mut m = BTreeMap::new();
        m.insert(UT_METADATA.to_string(), UT_METADATA_ID);
        m.insert(UT_PEX.to_string(), UT_PEX_ID);
        ExtHandshake {
            m,
            p: listen_port,
            v: Some(CLIENT_NAME.to_string()),
            yourip,
            reqq: Some(OUR_REQQ),
            metadata_size,
            mf_quic: None,
        }
    }

    /// The id to use when sending extension `name` to this peer, if it supports it.
    pub fn id_of(&self, name: &str) -> Option<u8> {
        self.m.get(name).copied().filter(|&id| id != 0)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.dict();
        // Keys in sorted order: m, metadata_size, mf_quic, p, reqq, v, yourip.
        w.bytes(b"m").dict();
        for (name, id) in &self.m {
            w.kv_int(name, i64::from(*id));
        }
        w.end();
        if let Some(n) = self.metadata_size {
            w.kv_int("metadata_size", n as i64);
        }
        if let Some(p) = self.mf_quic {
            w.kv_int("mf_quic", i64::from(p));
        }
        if let Some(p) = self.p {
            w.kv_int("p", i64::from(p));
        }
        if let Some(q) = self.reqq {
            w.kv_int("reqq", i64::from(q));
        }
        if let Some(v) = &self.v {
            w.kv_bytes("v", v.as_bytes());
        }
        match self.yourip {
            Some(IpAddr::V4(a)) => {
                w.kv_bytes("yourip", &a.octets());
            }
            Some(IpAddr::V6(a)) => {
                w.kv_bytes("yourip", &a.octets());
            }
            None => {}
        }
        w.end();
        w.out
    }

    /// Decodes a peer's handshake. Unknown keys are ignored; malformed optional fields are
    /// treated as absent (clients disagree on details), but the payload must be a dict.
    pub fn decode(payload: &[u8]) -> Result<Self, PeerError> {
        let v = Value::decode_exact(payload, Limits::PEER)?;
        let d = v
            .as_dict()
            .ok_or(PeerError::BadExtension("handshake is not a dict"))?;
        let mut hs = ExtHandshake::default();
        if let Some(Value::Dict(m)) = d.get(&b"m"[..]) {
            for (name, id) in m.iter() {
                if hs.m.len() >= MAX_EXTENSIONS {
                    break;
                }
                let (Ok(name), Some(id)) = (std::str::from_utf8(name), id.as_int()) else {
                    continue;
                };
                let Ok(id) = u8::try_from(id) else { continue };
                if name.len() <= MAX_NAME_LEN {
                    hs.m.insert(name.to_string(), id);
                }
            }
        }
        hs.p = d
            .get(&b"p"[..])
            .and_then(Value::as_int)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0);
        hs.mf_quic = d
            .get(&b"mf_quic"[..])
            .and_then(Value::as_int)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0);
        hs.v = d.get(&b"v"[..]).and_then(Value::as_bytes).map(|b| {
            let b = &b[..b.len().min(MAX_CLIENT_LEN)];
            String::from_utf8_lossy(b).into_owned()
        });
        hs.yourip = d
            .get(&b"yourip"[..])
            .and_then(Value::as_bytes)
            .and_then(|b| match b.len() {
                4 => <[u8; 4]>::try_from(b)
                    .ok()
                    .map(|a| IpAddr::V4(Ipv4Addr::from(a))),
                16 => <[u8; 16]>::try_from(b)
                    .ok()
                    .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
                _ => None,
            });
        hs.reqq = d
            .get(&b"reqq"[..])
            .and_then(Value::as_int)
            .filter(|&q| q > 0)
            .map(|q| q.min(i64::from(MAX_REQQ)) as u32);
        hs.metadata_size = d
            .get(&b"metadata_size"[..])
            .and_then(Value::as_int)
            .and_then(|n| u64::try_from(n).ok());
        Ok(hs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let hs = ExtHandshake::ours(Some(6881), Some(31235), Some("1.2.3.4".parse().unwrap()));
        let enc = hs.encode();
        assert!(enc.starts_with(b"d1:md11:ut_metadatai1e6:ut_pexi2ee13:metadata_sizei31235e"));
        assert_eq!(ExtHandshake::decode(&enc).unwrap(), hs);
        assert_eq!(hs.id_of(UT_PEX), Some(UT_PEX_ID));
        let mut q = hs.clone();
        q.mf_quic = Some(6881);
        assert_eq!(ExtHandshake::decode(&q.encode()).unwrap(), q);
    }

    #[test]
    fn bep10_example_and_hostile_fields() {
        let hs = ExtHandshake::decode(b"d1:md11:LT_metadatai1e6:ut_pexi0e3:badi999e3:negi-1ee1:pi70000e4:reqqi-5e1:v4:\xff\xfeab6:yourip3:abce").unwrap();
        assert_eq!(hs.id_of("LT_metadata"), Some(1));
        assert_eq!(hs.id_of(UT_PEX), None, "id 0 disables");
        assert_eq!(hs.m.get("bad"), None);
        assert_eq!(hs.p, None);
        assert_eq!(hs.reqq, None);
        assert_eq!(hs.yourip, None);
        assert!(hs.v.is_some());
        assert!(ExtHandshake::decode(b"le").is_err());
        assert!(ExtHandshake::decode(b"d1:m").is_err());
        let q = ExtHandshake::decode(b"d7:mf_quici6881ee").unwrap();
        assert_eq!(q.mf_quic, Some(6881));
        let bad = ExtHandshake::decode(b"d7:mf_quici70000ee").unwrap();
        assert_eq!(bad.mf_quic, None, "out of range port");
        let big = ExtHandshake::decode(b"d4:reqqi99999999999ee").unwrap();
        assert_eq!(big.reqq, Some(MAX_REQQ));
    }
}
