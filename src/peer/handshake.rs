//! The 68-byte BitTorrent handshake (BEP 3) with reserved-bit negotiation of the extension
//! protocol (BEP 10), the Fast extension (BEP 6) and DHT (BEP 5), and client peer ids in the
//! Azureus style (BEP 20): `-MF0100-` followed by 12 random characters.

use rand::Rng;

use super::PeerError;
use crate::id::{Id20, InfoHash, PeerId};

/// `\x13BitTorrent protocol`.
pub const PROTOCOL: &[u8; 20] = b"\x13BitTorrent protocol";
/// Total handshake length.
pub const HANDSHAKE_LEN: usize = 68;
/// Length of the part before the peer id: enough to route an incoming connection.
pub const PREFIX_LEN: usize = 48;
/// BEP 20 client prefix: MF = magnetfetch, version 0.1.0.0.
pub const PEER_ID_PREFIX: &[u8; 8] = b"-MF0100-";

/// The 8 reserved bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reserved(pub [u8; 8]);

impl Reserved {
    /// Everything we support: extension protocol, Fast extension, DHT.
    pub fn ours() -> Self {
        let mut r = [0u8; 8];
        r[5] |= 0x10;
        r[7] |= 0x04 | 0x01;
        Reserved(r)
    }
    /// BEP 10: bit 20 from the right.
    pub fn extension_protocol(&self) -> bool {
        self.0[5] & 0x10 != 0
    }
    /// BEP 6: third least significant bit of the last byte.
    pub fn fast(&self) -> bool {
        self.0[7] & 0x04 != 0
    }
    /// BEP 5: last bit; the peer will send a `port` message.
    pub fn dht(&self) -> bool {
        self.0[7] & 0x01 != 0
    }
}

/// A parsed handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: Reserved,
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
}

impl Handshake {
    pub fn new(info_hash: InfoHash, peer_id: PeerId) -> Self {
        Handshake {
            reserved: Reserved::ours(),
            info_hash,
            peer_id,
        }
    }

    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved.0);
        out[28..48].copy_from_slice(self.info_hash.as_bytes());
        out[48..68].copy_from_slice(self.peer_id.as_bytes());
        out
    }

    /// Parses a full handshake.
    pub fn parse(b: &[u8; HANDSHAKE_LEN]) -> Result<Self, PeerError> {
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&b[..PREFIX_LEN]);
        let (reserved, info_hash) = parse_prefix(&prefix)?;
        let mut id = [0u8; 20];
        id.copy_from_slice(&b[PREFIX_LEN..]);
        Ok(Handshake {
            reserved,
            info_hash,
            peer_id: Id20(id),
        })
    }
}

/// Parses the first 48 bytes (protocol string, reserved, info-hash). The receiving side of a
/// connection reads this first so it can check the info-hash before answering (BEP 3).
pub fn parse_prefix(b: &[u8; PREFIX_LEN]) -> Result<(Reserved, InfoHash), PeerError> {
    if &b[..20] != PROTOCOL {
        return Err(PeerError::BadHandshake("not the BitTorrent protocol"));
    }
    let mut r = [0u8; 8];
    r.copy_from_slice(&b[20..28]);
    let mut ih = [0u8; 20];
    ih.copy_from_slice(&b[28..48]);
    Ok((Reserved(r), Id20(ih)))
}

/// Generates a BEP 20 peer id: `-MF0100-` and 12 random alphanumeric characters.
pub fn generate_peer_id<R: Rng + ?Sized>(rng: &mut R) -> PeerId {
    const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut id = [0u8; 20];
    id[..8].copy_from_slice(PEER_ID_PREFIX);
    for b in &mut id[8..] {
        *b = CHARS[rng.random_range(0..CHARS.len())];
    }
    Id20(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn round_trip_and_bits() {
        let h = Handshake::new(Id20([1; 20]), Id20([2; 20]));
        let b = h.encode();
        assert_eq!(b[0], 19);
        assert_eq!(&b[1..20], b"BitTorrent protocol");
        assert_eq!(b[25], 0x10);
        assert_eq!(b[27], 0x05);
        let p = Handshake::parse(&b).unwrap();
        assert_eq!(p, h);
        assert!(p.reserved.extension_protocol() && p.reserved.fast() && p.reserved.dht());
        assert!(!Reserved::default().extension_protocol());
    }

    #[test]
    fn rejects_other_protocols() {
        let mut b = Handshake::new(Id20([1; 20]), Id20([2; 20])).encode();
        b[0] = 18;
        assert!(Handshake::parse(&b).is_err());
        let mut b = Handshake::new(Id20([1; 20]), Id20([2; 20])).encode();
        b[5] = b'X';
        assert!(Handshake::parse(&b).is_err());
    }

    #[test]
    fn peer_ids_are_bep20_and_seeded() {
        let mut a = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = rand::rngs::StdRng::seed_from_u64(7);
        let x = generate_peer_id(&mut a);
        assert_eq!(x, generate_peer_id(&mut b));
        assert_eq!(&x.0[..8], b"-MF0100-");
        assert!(x.0[8..].iter().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(x, generate_peer_id(&mut a));
    }
}
