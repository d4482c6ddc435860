//! SipHash-2-4 (Aumasson & Bernstein, 2012) with a caller-supplied 128-bit key: a fast keyed
//! PRF for the UDP tracker's stateless connection ids (BEP 15). `std`'s `DefaultHasher` is
//! SipHash too, but its key cannot be set (and `RandomState` cannot be seeded), which would
//! make ids differ between runs of a seeded simulation; this is the plain algorithm, written
//! from the paper, checked against its reference test vectors.

#[inline(always)]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 of `msg` under `key` (the key's two halves little-endian, as in the paper).
pub fn siphash24(key: &[u8; 16], msg: &[u8]) -> u64 {
    let mut k0b = [0u8; 8];
    let mut k1b = [0u8; 8];
    k0b.copy_from_slice(&key[..8]);
    k1b.copy_from_slice(&key[8..]);
    let (k0, k1) = (u64::from_le_bytes(k0b), u64::from_le_bytes(k1b));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = msg.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        let m = u64::from_le_bytes(b);
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    // Last block: the remaining bytes, and the message length (mod 256) in the top byte.
    let rest = chunks.remainder();
    let mut b = [0u8; 8];
    b[..rest.len()].copy_from_slice(rest);
    let m = u64::from_le_bytes(b) | ((msg.len() as u64) << 56);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        // The paper's appendix: key 00..0f, messages 00..(n-1).
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let msg: Vec<u8> = (0u8..64).collect();
        assert_eq!(siphash24(&key, &[]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(&key, &msg[..1]), 0x74f8_39c5_93dc_67fd);
        assert_eq!(siphash24(&key, &msg[..8]), 0x93f5_f579_9a93_2462);
        // Also the paper's worked example (message 00..0e).
        assert_eq!(siphash24(&key, &msg[..15]), 0xa129_ca61_49be_45e5);
        assert_ne!(siphash24(&[0; 16], &msg[..15]), 0xa129_ca61_49be_45e5);
    }
}
