//! The holepunch extension message, `ut_holepunch` (BEP 55): a fixed binary payload of an
//! extended message (BEP 10), not bencoded.
//!
//! ```text
//! msg_type (1) | addr_type (1: 0 = IPv4, 1 = IPv6) | addr (4 or 16) | port (2) | err_code (4)
//! ```
//!
//! All integers big-endian. `rendezvous` asks the relay to introduce us to the endpoint,
//! `connect` tells us to open a uTP connection to it, `error` says why a rendezvous could not
//! be done (its address is the rendezvous's). [`HolepunchMsg::decode`] takes exactly one
//! message: a short, long or unknown-typed payload is an error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a rendezvous failed (BEP 55's error codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HolepunchError {
    /// The target endpoint is invalid.
    NoSuchPeer,
    /// The relay is not connected to the target.
    NotConnected,
    /// The target does not support the holepunch extension.
    NoSupport,
    /// The target endpoint is the relay itself.
    NoSelf,
    /// A code BEP 55 does not define (kept so it can be reported).
    Other(u32),
}

impl HolepunchError {
    pub fn code(self) -> u32 {
        match self {
            HolepunchError::NoSuchPeer => 1,
            HolepunchError::NotConnected => 2,
            HolepunchError::NoSupport => 3,
            HolepunchError::NoSelf => 4,
            HolepunchError::Other(c) => c,
        }
    }

    fn from_code(c: u32) -> Self {
        match c {
            1 => HolepunchError::NoSuchPeer,
            2 => HolepunchError::NotConnected,
            3 => HolepunchError::NoSupport,
            4 => HolepunchError::NoSelf,
            c => HolepunchError::Other(c),
        }
    }
}

/// One `ut_holepunch` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolepunchMsg {
    /// To the relay: send `connect` to us and to this endpoint.
    Rendezvous(SocketAddr),
    /// From the relay: open a uTP connection to this endpoint.
    Connect(SocketAddr),
    /// From the relay: the rendezvous for this endpoint failed.
    Error(SocketAddr, HolepunchError),
}

/// Why a payload is not a holepunch message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("holepunch message has the wrong length")]
    Length,
    #[error("unknown holepunch message type")]
    MsgType,
    #[error("unknown holepunch address type")]
    AddrType,
    #[error("holepunch message carries a non-zero error code")]
    ErrCode,
}

const RENDEZVOUS: u8 = 0;
const CONNECT: u8 = 1;
const ERROR: u8 = 2;

impl HolepunchMsg {
    /// The endpoint the message is about.
    pub fn addr(&self) -> SocketAddr {
        match *self {
            HolepunchMsg::Rendezvous(a) | HolepunchMsg::Connect(a) | HolepunchMsg::Error(a, _) => a,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let (ty, err) = match *self {
            HolepunchMsg::Rendezvous(_) => (RENDEZVOUS, 0),
            HolepunchMsg::Connect(_) => (CONNECT, 0),
            HolepunchMsg::Error(_, e) => (ERROR, e.code()),
        };
        let a = self.addr();
        let mut out = Vec::with_capacity(24);
        out.push(ty);
        match a.ip() {
            IpAddr::V4(ip) => {
                out.push(0);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(1);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&a.port().to_be_bytes());
        out.extend_from_slice(&err.to_be_bytes());
        out
    }

    /// Exactly one message. A `rendezvous` or `connect` with a non-zero error code is
    /// refused (BEP 55: 0 in non-error messages); an IPv4-mapped IPv6 address is taken as
    /// the IPv4 address it is.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let (&ty, rest) = b.split_first().ok_or(DecodeError::Length)?;
        let (&at, rest) = rest.split_first().ok_or(DecodeError::Length)?;
        let ip_len = match at {
            0 => 4,
            1 => 16,
            _ => return Err(DecodeError::AddrType),
        };
        if rest.len() != ip_len + 6 {
            return Err(DecodeError::Length);
        }
        let (ip, rest) = rest.split_at(ip_len);
        let ip = match <[u8; 4]>::try_from(ip) {
            Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
            Err(_) => {
                let v6 = <[u8; 16]>::try_from(ip).map_err(|_| DecodeError::Length)?;
                IpAddr::V6(Ipv6Addr::from(v6)).to_canonical()
            }
        };
        let port = u16::from_be_bytes([rest[0], rest[1]]);
        let err = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]);
        let a = SocketAddr::new(ip, port);
        match ty {
            RENDEZVOUS | CONNECT if err != 0 => Err(DecodeError::ErrCode),
            RENDEZVOUS => Ok(HolepunchMsg::Rendezvous(a)),
            CONNECT => Ok(HolepunchMsg::Connect(a)),
            ERROR => Ok(HolepunchMsg::Error(a, HolepunchError::from_code(err))),
            _ => Err(DecodeError::MsgType),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bep55_layout_and_round_trip() {
        let m = HolepunchMsg::Connect(sa("1.2.3.4:6881"));
        assert_eq!(m.encode(), [1, 0, 1, 2, 3, 4, 0x1a, 0xe1, 0, 0, 0, 0]);
        let e = HolepunchMsg::Error(sa("[2001:db8::1]:80"), HolepunchError::NoSupport);
        let enc = e.encode();
        assert_eq!(enc.len(), 1 + 1 + 16 + 2 + 4);
        assert_eq!(&enc[..2], &[2, 1]);
        assert_eq!(&enc[20..], &[0, 0, 0, 3]);
        for m in [
            m,
            e,
            HolepunchMsg::Rendezvous(sa("10.0.0.1:1")),
            HolepunchMsg::Error(sa("10.0.0.1:1"), HolepunchError::NoSuchPeer),
            HolepunchMsg::Error(sa("10.0.0.1:1"), HolepunchError::NotConnected),
            HolepunchMsg::Error(sa("10.0.0.1:1"), HolepunchError::NoSelf),
            HolepunchMsg::Error(sa("10.0.0.1:1"), HolepunchError::Other(77)),
        ] {
            assert_eq!(HolepunchMsg::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn hostile_payloads_are_errors() {
        let good = HolepunchMsg::Rendezvous(sa("1.2.3.4:5")).encode();
        for n in 0..good.len() {
            assert_eq!(
                HolepunchMsg::decode(&good[..n]),
                Err(DecodeError::Length),
                "{n}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(HolepunchMsg::decode(&long), Err(DecodeError::Length));
        let mut ty = good.clone();
        ty[0] = 3;
        assert_eq!(HolepunchMsg::decode(&ty), Err(DecodeError::MsgType));
        let mut at = good.clone();
        at[1] = 2;
        assert_eq!(HolepunchMsg::decode(&at), Err(DecodeError::AddrType));
        // An IPv6 address type with an IPv4-sized body (and vice versa) is a length error.
        let mut v6 = good.clone();
        v6[1] = 1;
        assert_eq!(HolepunchMsg::decode(&v6), Err(DecodeError::Length));
        let mut err = good.clone();
        err[11] = 1;
        assert_eq!(HolepunchMsg::decode(&err), Err(DecodeError::ErrCode));
        // IPv4-mapped IPv6 is the IPv4 address.
        let mapped = HolepunchMsg::Connect(sa("[::ffff:1.2.3.4]:5")).encode();
        assert_eq!(
            HolepunchMsg::decode(&mapped),
            Ok(HolepunchMsg::Connect(sa("1.2.3.4:5")))
        );
    }

    /// The fuzz target's property on stable: random and mutated payloads never panic, and
    /// whatever decodes re-encodes to the same message.
    #[test]
    fn random_payloads_never_panic_and_round_trip() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(55);
        let seeds = [
            HolepunchMsg::Rendezvous(sa("1.2.3.4:5")).encode(),
            HolepunchMsg::Error(sa("[::1]:9"), HolepunchError::NoSelf).encode(),
        ];
        for i in 0..20_000 {
            let mut b = if i % 2 == 0 {
                seeds[i % 4 / 2].clone()
            } else {
                let n = rng.random_range(0..30);
                (0..n).map(|_| rng.random()).collect()
            };
            if !b.is_empty() {
                let k = rng.random_range(0..b.len());
                b[k] = rng.random_range(0..4u8);
            }
            if let Ok(m) = HolepunchMsg::decode(&b) {
                assert_eq!(HolepunchMsg::decode(&m.encode()), Ok(m));
            }
        }
    }
}
