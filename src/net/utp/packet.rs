//! uTP packet codec (BEP 29): the 20-byte header and the extension chain (selective ACK).
//!
//! ```text
//! 0       4       8               16              24              32
//! | type  | ver   | extension     | connection_id                 |
//! | timestamp_microseconds                                        |
//! | timestamp_difference_microseconds                             |
//! | wnd_size                                                      |
//! | seq_nr                        | ack_nr                        |
//! ```
//!
//! Parsing never panics and never allocates: a [`Packet`] borrows the datagram.

/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 20;
/// The protocol version we speak (the low nibble of byte 0).
pub const VERSION: u8 = 1;
/// Extension type of a selective ACK bitmask.
pub const EXT_SACK: u8 = 1;
/// Extensions followed at most (a chain longer than this is garbage).
const MAX_EXTENSIONS: usize = 8;

/// The packet type (the high nibble of byte 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// Payload; consumes a sequence number.
    Data,
    /// The sender's last sequence number: end of its stream.
    Fin,
    /// An acknowledgement without payload; does not consume a sequence number.
    State,
    /// Terminates the connection at once.
    Reset,
    /// Opens a connection; its connection id is the initiator's receive id.
    Syn,
}

impl Type {
    pub fn from_nibble(n: u8) -> Option<Type> {
        Some(match n {
            0 => Type::Data,
            1 => Type::Fin,
            2 => Type::State,
            3 => Type::Reset,
            4 => Type::Syn,
            _ => return None,
        })
    }

    pub fn nibble(self) -> u8 {
        match self {
            Type::Data => 0,
            Type::Fin => 1,
            Type::State => 2,
            Type::Reset => 3,
            Type::Syn => 4,
        }
    }
}

/// The fixed header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub ty: Type,
    pub conn_id: u16,
    /// The sender's clock when it sent the packet (microseconds, wrapping).
    pub ts: u32,
    /// The sender's clock minus the `ts` of the last packet it received from us: the
    /// one-way delay from us to it plus a constant clock offset (LEDBAT's input).
    pub ts_diff: u32,
    /// Bytes the sender can still receive (its advertised window).
    pub wnd: u32,
    pub seq: u16,
    pub ack: u16,
}

/// A parsed datagram, borrowing its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header,
    /// The selective ACK bitmask (bit 0 of byte 0 is `ack + 2`), when present.
    pub sack: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// Why a datagram is not a uTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("shorter than a uTP header")]
    Short,
    #[error("not uTP version 1")]
    Version,
    #[error("unknown packet type")]
    Type,
    #[error("extension chain runs past the end")]
    Extension,
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

impl<'a> Packet<'a> {
    /// Parses one datagram.
    pub fn parse(b: &'a [u8]) -> Result<Packet<'a>, ParseError> {
        if b.len() < HEADER_LEN {
            return Err(ParseError::Short);
        }
        if b[0] & 0x0F != VERSION {
            return Err(ParseError::Version);
        }
        let ty = Type::from_nibble(b[0] >> 4).ok_or(ParseError::Type)?;
        let header = Header {
            ty,
            conn_id: be16(b, 2),
            ts: be32(b, 4),
            ts_diff: be32(b, 8),
            wnd: be32(b, 12),
            seq: be16(b, 16),
            ack: be16(b, 18),
        };
        let mut ext = b[1];
        let mut i = HEADER_LEN;
        let mut sack = None;
        let mut seen = 0;
        while ext != 0 {
            seen += 1;
            if seen > MAX_EXTENSIONS || i + 2 > b.len() {
                return Err(ParseError::Extension);
            }
            let (next, len) = (b[i], b[i + 1] as usize);
            let data = b.get(i + 2..i + 2 + len).ok_or(ParseError::Extension)?;
            if ext == EXT_SACK && sack.is_none() {
                sack = Some(data);
            }
            ext = next;
            i += 2 + len;
        }
        Ok(Packet {
            header,
            sack,
            payload: &b[i..],
        })
    }
}

/// Appends one packet to `out`. A `sack` longer than 252 bytes is cut (it never is).
pub fn encode(h: &Header, sack: Option<&[u8]>, payload: &[u8], out: &mut Vec<u8>) {
    encode_padded(h, sack, 0, payload, out);
}

/// The largest padding extension: a selective ACK of this many zero bytes (a multiple of
/// 4, as BEP 29 asks of a bitmask, under the one-byte length).
const PAD_MAX: usize = 252;

/// [`encode`], made up to `pad` bytes longer (0 to 5 bytes short of it) by selective-ACK
/// extensions full of zeros, after the real one. A zero bitmask acknowledges nothing, and
/// BEP 29 receivers read or skip every extension in the chain, so the padding changes
/// nothing but the datagram's size: path MTU probes are padded, and the data they carry
/// goes again unpadded when a probe is lost.
pub fn encode_padded(
    h: &Header,
    sack: Option<&[u8]>,
    pad: usize,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let sack = sack
        .filter(|s| !s.is_empty())
        .map(|s| &s[..s.len().min(252)]);
    let mut pads = Vec::new();
    let mut left = pad;
    while left >= 6 && pads.len() + 1 < MAX_EXTENSIONS {
        let len = (left - 2).min(PAD_MAX) / 4 * 4;
        pads.push(len);
        left -= 2 + len;
    }
    let exts = sack.iter().map(|s| s.len()).chain(pads.iter().copied());
    let ext_bytes: usize = exts.clone().map(|l| l + 2).sum();
    out.reserve(HEADER_LEN + ext_bytes + payload.len());
    let first = if sack.is_some() || !pads.is_empty() {
        EXT_SACK
    } else {
        0
    };
    out.push(h.ty.nibble() << 4 | VERSION);
    out.push(first);
    out.extend_from_slice(&h.conn_id.to_be_bytes());
    out.extend_from_slice(&h.ts.to_be_bytes());
    out.extend_from_slice(&h.ts_diff.to_be_bytes());
    out.extend_from_slice(&h.wnd.to_be_bytes());
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.ack.to_be_bytes());
    let n = exts.clone().count();
    for (i, len) in exts.enumerate() {
        out.push(if i + 1 < n { EXT_SACK } else { 0 });
        out.push(len as u8);
        match (i, sack) {
            (0, Some(s)) => out.extend_from_slice(s),
            _ => out.resize(out.len() + len, 0),
        }
    }
    out.extend_from_slice(payload);
}

/// Whether a datagram on the shared UDP port looks like uTP rather than KRPC or QUIC:
/// version 1 with a known type in byte 0 (0x01, 0x11, 0x21, 0x31, 0x41) and a small
/// extension type in byte 1, at least a header long.
///
/// KRPC starts with `d` (0x64). QUIC long headers start at 0xC0. A QUIC short header
/// (0x40..=0x5F with the fixed bit set and the spin bit off) can be 0x41, but its byte 1 is
/// the first byte of a connection id we issued, whose top bit is set (>= 0x80); uTP's
/// extension types are 0 (none), 1 (selective ACK) and 2 (libtorrent's close reason).
pub fn is_utp(d: &[u8]) -> bool {
    d.len() >= HEADER_LEN && matches!(d[0], 0x01 | 0x11 | 0x21 | 0x31 | 0x41) && d[1] < 0x80
}

/// Sequence-number arithmetic modulo 2^16: whether `a` comes before `b`.
pub fn seq_lt(a: u16, b: u16) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(ty: Type) -> Header {
        Header {
            ty,
            conn_id: 0x1234,
            ts: 0xDEAD_BEEF,
            ts_diff: 7,
            wnd: 1 << 20,
            seq: 65535,
            ack: 3,
        }
    }

    #[test]
    fn round_trip_with_and_without_sack() {
        for ty in [Type::Data, Type::Fin, Type::State, Type::Reset, Type::Syn] {
            let mut v = Vec::new();
            encode(&hdr(ty), None, b"hello", &mut v);
            assert_eq!(v.len(), HEADER_LEN + 5);
            let p = Packet::parse(&v).unwrap();
            assert_eq!(p.header, hdr(ty));
            assert_eq!(p.sack, None);
            assert_eq!(p.payload, b"hello");
            assert!(is_utp(&v));

            let mut v = Vec::new();
            encode(&hdr(ty), Some(&[0b101, 0, 0, 0x80]), b"", &mut v);
            let p = Packet::parse(&v).unwrap();
            assert_eq!(p.sack, Some(&[0b101, 0, 0, 0x80][..]));
            assert!(p.payload.is_empty());
        }
    }

    #[test]
    fn header_layout_is_bep29() {
        let mut v = Vec::new();
        encode(&hdr(Type::Syn), None, b"", &mut v);
        assert_eq!(v[0], 0x41);
        assert_eq!(v[1], 0);
        assert_eq!(&v[2..4], &[0x12, 0x34]);
        assert_eq!(&v[16..20], &[0xFF, 0xFF, 0, 3]);
    }

    #[test]
    fn padding_is_zero_sacks_after_the_real_one() {
        for pad in [0usize, 5, 6, 7, 100, 254, 255, 256, 600, 1000] {
            for sack in [None, Some(&[0b1u8, 0, 0, 0][..])] {
                let mut plain = Vec::new();
                encode(&hdr(Type::Data), sack, b"payload", &mut plain);
                let mut v = Vec::new();
                encode_padded(&hdr(Type::Data), sack, pad, b"payload", &mut v);
                let grown = v.len() - plain.len();
                assert!(grown <= pad && grown + 5 >= pad, "pad {pad}: grew {grown}");
                let p = Packet::parse(&v).unwrap();
                assert_eq!(p.payload, b"payload");
                assert!(is_utp(&v));
                match sack {
                    Some(s) => assert_eq!(p.sack, Some(s)),
                    None if grown > 0 => assert!(p.sack.unwrap().iter().all(|b| *b == 0)),
                    None => assert_eq!(p.sack, None),
                }
            }
        }
    }

    #[test]
    fn unknown_extensions_are_skipped() {
        let mut v = Vec::new();
        encode(&hdr(Type::Data), None, b"", &mut v);
        v[1] = 2; // libtorrent's close reason, then a SACK
        v.extend_from_slice(&[EXT_SACK, 4, 0, 0, 0, 1]);
        v.extend_from_slice(&[0, 4, 1, 0, 0, 0]);
        v.extend_from_slice(b"xy");
        let p = Packet::parse(&v).unwrap();
        assert_eq!(p.sack, Some(&[1, 0, 0, 0][..]));
        assert_eq!(p.payload, b"xy");
    }

    #[test]
    fn garbage_is_rejected_not_panicked_on() {
        assert_eq!(Packet::parse(&[0x41; 19]), Err(ParseError::Short));
        let mut v = vec![0u8; HEADER_LEN];
        v[0] = 0x42;
        assert_eq!(Packet::parse(&v), Err(ParseError::Version));
        v[0] = 0x51;
        assert_eq!(Packet::parse(&v), Err(ParseError::Type));
        v[0] = 0x01;
        v[1] = 1;
        assert_eq!(Packet::parse(&v), Err(ParseError::Extension));
        v.extend_from_slice(&[0, 200]);
        assert_eq!(Packet::parse(&v), Err(ParseError::Extension));
        // A chain that loops on itself ends at the bound.
        let mut v = vec![0x01, 9];
        v.extend_from_slice(&[0; 18]);
        for _ in 0..20 {
            v.extend_from_slice(&[9, 0]);
        }
        assert_eq!(Packet::parse(&v), Err(ParseError::Extension));
    }

    #[test]
    fn classifier_tells_utp_from_krpc_and_quic() {
        let mut syn = Vec::new();
        encode(&hdr(Type::Syn), None, b"", &mut syn);
        assert!(is_utp(&syn));
        // KRPC.
        assert!(!is_utp(
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:aa1:y1:qe"
        ));
        // QUIC long headers (Initial, Handshake, 0-RTT, Retry; version negotiation).
        for b0 in [0xC0u8, 0xC3, 0xD1, 0xE2, 0xF0, 0xFF, 0x80] {
            let mut p = vec![b0, 0, 0, 0, 1];
            p.resize(1200, 0x41);
            assert!(!is_utp(&p), "{b0:#x}");
        }
        // QUIC short headers to us: fixed bit, no spin, any protected low bits, then one
        // of our connection ids (top bit set).
        for b0 in 0x40u8..=0x5F {
            for cid0 in 0x80u8..=0xFF {
                let mut p = vec![b0, cid0];
                p.resize(40, 0);
                assert!(!is_utp(&p), "{b0:#x} {cid0:#x}");
            }
        }
        // Every uTP type with each extension type we know.
        for b0 in [0x01u8, 0x11, 0x21, 0x31, 0x41] {
            for ext in [0u8, 1, 2] {
                let mut p = vec![b0, ext];
                p.resize(HEADER_LEN, 0);
                assert!(is_utp(&p));
                assert!(!crate::net::quic::is_krpc(&p));
            }
        }
    }

    #[test]
    fn sequence_numbers_wrap() {
        assert!(seq_lt(1, 2));
        assert!(seq_lt(65535, 0));
        assert!(!seq_lt(0, 65535));
        assert!(!seq_lt(5, 5));
    }
}
