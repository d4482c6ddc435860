//! A compact set of piece indexes in the BEP 3 `bitfield` wire format.
//!
//! BEP 3: "The high bit in the first byte corresponds to piece index 0 ... Spare bits at the
//! end are set to zero." A bitfield from a peer with the wrong length or with spare bits set
//! is invalid and is refused by [`Bitfield::from_bytes`]. The count of set bits is kept up
//! to date so `count`/`is_full` are O(1).

/// Why wire bytes are not a valid bitfield for this torrent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    #[error("bitfield is {got} bytes, expected {expected}")]
    WrongLength { got: usize, expected: usize },
    #[error("bitfield has spare bits set")]
    SpareBits,
}

/// A fixed-length set of bits (one per piece).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bitfield {
    bits: Vec<u8>,
    len: u32,
    ones: u32,
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

impl Bitfield {
    /// All bits clear.
    pub fn new(len: u32) -> Self {
        Bitfield {
            bits: vec![0; (len as usize).div_ceil(8)],
            len,
            ones: 0,
        }
    }

    /// All bits set (a seed; BEP 6 `have_all`).
    pub fn full(len: u32) -> Self {
        let mut b = Bitfield {
            bits: vec![0xff; (len as usize).div_ceil(8)],
            len,
            ones: len,
        };
        b.clear_spare();
        b
    }

    /// Parses wire bytes for a torrent of `len` pieces. The caller has already bounded the
    /// message length; this checks the exact size and the spare bits.
    pub fn from_bytes(bytes: &[u8], len: u32) -> Result<Self, BitfieldError> {
        let expected = (len as usize).div_ceil(8);
        if bytes.len() != expected {
            return Err(BitfieldError::WrongLength {
                got: bytes.len(),
                expected,
            });
        }
        let spare = (expected * 8 - len as usize) as u32;
        if spare > 0 {
            let mask = (1u8 << spare) - 1;
            if bytes[expected - 1] & mask != 0 {
                return Err(BitfieldError::SpareBits);
            }
        }
        let ones = bytes.iter().map(|b| b.count_ones()).sum();
        Ok(Bitfield {
            bits: bytes.to_vec(),
            len,
            ones,
        })
    }

    /// Wire bytes (spare bits zero).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn clear_spare(&mut self) {
        let spare = self.bits.len() * 8 - self.len as usize;
        if spare > 0 {
            if let Some(last) = self.bits.last_mut() {
                *last &= !((1u8 << spare) - 1);
            }
        }
    }

    pub fn len(&self) -> u32 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Number of set bits.
    pub fn count(&self) -> u32 {
        self.ones
    }
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }
    pub fn none(&self) -> bool {
        self.ones == 0
    }

    /// Bit `i` (false when out of range).
    #[inline]
    pub fn get(&self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        self.bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Sets bit `i`; returns true if it changed. Out of range is ignored (false).
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    /// Clears bit `i`; returns true if it changed.
    pub fn clear(&mut self, i: u32) -> bool {
        if !self.get(i) {
            return false;
        }
        self.bits[(i / 8) as usize] &= !(0x80 >> (i % 8));
        self.ones -= 1;
        true
    }

    /// Indexes of set bits, ascending (skips zero bytes quickly).
    pub fn iter_set(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits.iter().enumerate().flat_map(|(bi, &byte)| {
            let mut b = byte;
            std::iter::from_fn(move || {
                if b == 0 {
                    return None;
                }
                let lz = b.leading_zeros();
                b &= !(0x80 >> lz);
                Some(bi as u32 * 8 + lz)
            })
        })
    }

    /// Indexes of clear bits, ascending.
    pub fn iter_unset(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(move |&i| !self.get(i))
    }

    /// Is there a bit set in `self` that is clear in `other` (do they have something we
    /// lack)? Lengths must match; extra bits are ignored.
    pub fn has_any_not_in(&self, other: &Bitfield) -> bool {
        self.bits
            .iter()
            .zip(other.bits.iter())
            .any(|(a, b)| a & !b != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_and_spare_bits() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(b.set(9));
        assert!(!b.set(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        let c = Bitfield::from_bytes(b.as_bytes(), 10).unwrap();
        assert_eq!(c, b);
        assert_eq!(
            Bitfield::from_bytes(&[0x80, 0x60], 10),
            Err(BitfieldError::SpareBits)
        );
        assert_eq!(
            Bitfield::from_bytes(&[0x80], 10),
            Err(BitfieldError::WrongLength {
                got: 1,
                expected: 2
            })
        );
        assert!(Bitfield::from_bytes(&[0xff], 8).unwrap().is_full());
    }

    #[test]
    fn iterators_and_counts() {
        let full = Bitfield::full(13);
        assert_eq!(full.count(), 13);
        assert_eq!(full.as_bytes(), &[0xff, 0xf8]);
        assert_eq!(full.iter_set().count(), 13);
        let mut b = Bitfield::new(20);
        for i in [1, 7, 8, 19] {
            b.set(i);
        }
        assert_eq!(b.iter_set().collect::<Vec<_>>(), vec![1, 7, 8, 19]);
        assert_eq!(b.iter_unset().count(), 16);
        assert!(b.clear(7));
        assert!(!b.clear(7));
        assert_eq!(b.count(), 3);
        assert!(!b.get(100));
        assert!(b.has_any_not_in(&Bitfield::new(20)));
        assert!(!b.has_any_not_in(&Bitfield::full(20)));
    }
}
