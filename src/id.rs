//! 20-byte identifiers shared by every layer: info-hashes (BEP 3), peer ids (BEP 20) and DHT
//! node ids (BEP 5). Pure values: no I/O.

use std::fmt;

/// A 20-byte identifier. `InfoHash`, `PeerId` and `NodeId` are aliases of it because they
/// live in the same 160-bit space (the DHT measures XOR distance between node ids and
/// info-hashes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id20(pub [u8; 20]);

/// SHA-1 of a torrent's bencoded info dictionary (v1).
pub type InfoHash = Id20;
/// A peer id sent in the wire handshake.
pub type PeerId = Id20;
/// A DHT node id.
pub type NodeId = Id20;

/// Error for an id given in text form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("info-hash must be 40 hex or 32 base32 characters")]
pub struct BadId;

impl Id20 {
    pub const fn new(b: [u8; 20]) -> Self {
        Id20(b)
    }

    /// Parses 40 hex characters (either case).
    pub fn from_hex(s: &str) -> Result<Self, BadId> {
        if s.len() != 40 {
            return Err(BadId);
        }
        let mut out = [0u8; 20];
        hex::decode_to_slice(s, &mut out).map_err(|_| BadId)?;
        Ok(Id20(out))
    }

    /// Takes exactly 20 bytes from a slice.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 20]>::try_from(b).ok().map(Id20)
    }

    /// Lowercase hex, 40 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// XOR distance (BEP 5), comparable as a big-endian number via `Ord`.
    pub fn distance(&self, other: &Id20) -> Id20 {
        let mut d = [0u8; 20];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        Id20(d)
    }

    /// Number of leading zero bits (160 for the zero id).
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros();
            }
        }
        n
    }
}

impl fmt::Display for Id20 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id20 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id20({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects() {
        let h = "0123456789abcdef0123456789ABCDEF01234567";
        let id = Id20::from_hex(h).unwrap();
        assert_eq!(id.to_hex(), h.to_lowercase());
        assert!(Id20::from_hex("abc").is_err());
        assert!(Id20::from_hex(&"zz".repeat(20)).is_err());
    }

    #[test]
    fn distance_and_leading_zeros() {
        let a = Id20([0; 20]);
        let mut b = [0u8; 20];
        b[1] = 0x10;
        let b = Id20(b);
        assert_eq!(a.distance(&b), b);
        assert_eq!(b.leading_zeros(), 11);
        assert_eq!(a.leading_zeros(), 160);
    }
}
