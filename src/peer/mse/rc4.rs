//! RC4 as MSE/PE uses it: keyed with a 20-byte SHA-1 digest, and the first 1024 bytes of
//! keystream thrown away (the early bytes of RC4 leak key material).

/// One direction's RC4 state.
#[derive(Clone)]
pub struct Rc4 {
    s: [u8; 256],
    i: u8,
    j: u8,
}

impl std::fmt::Debug for Rc4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key schedule.
        f.write_str("Rc4")
    }
}

/// Keystream bytes MSE discards before the first byte it enciphers.
pub const DISCARD: usize = 1024;

impl Rc4 {
    /// Plain RC4 keyed with `key` (1..=256 bytes; an empty key is treated as one zero byte).
    pub fn new(key: &[u8]) -> Self {
        let key: &[u8] = if key.is_empty() { &[0] } else { key };
        let mut s = [0u8; 256];
        for (i, b) in s.iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut j = 0u8;
        for i in 0..256 {
            j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
            s.swap(i, j as usize);
        }
        Rc4 { s, i: 0, j: 0 }
    }

    /// The MSE cipher: RC4 keyed with `key`, its first [`DISCARD`] bytes skipped.
    pub fn mse(key: &[u8; 20]) -> Self {
        let mut r = Rc4::new(key);
        r.skip(DISCARD);
        r
    }

    /// Advances the keystream by `n` bytes.
    pub fn skip(&mut self, n: usize) {
        for _ in 0..n {
            self.next_byte();
        }
    }

    #[inline(always)]
    fn next_byte(&mut self) -> u8 {
        self.i = self.i.wrapping_add(1);
        let si = self.s[self.i as usize];
        self.j = self.j.wrapping_add(si);
        let sj = self.s[self.j as usize];
        self.s[self.i as usize] = sj;
        self.s[self.j as usize] = si;
        self.s[si.wrapping_add(sj) as usize]
    }

    /// Enciphers (or deciphers: the same operation) `data` in place.
    pub fn apply(&mut self, data: &mut [u8]) {
        for b in data {
            *b ^= self.next_byte();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(key: &[u8], text: &[u8]) -> Vec<u8> {
        let mut v = text.to_vec();
        Rc4::new(key).apply(&mut v);
        v
    }

    #[test]
    fn known_vectors() {
        // The classic published RC4 test vectors.
        assert_eq!(hex::encode(enc(b"Key", b"Plaintext")), "bbf316e8d940af0ad3");
        assert_eq!(hex::encode(enc(b"Wiki", b"pedia")), "1021bf0420");
        assert_eq!(
            hex::encode(enc(b"Secret", b"Attack at dawn")),
            "45a01f645fc35b383552544b9bf5"
        );
    }

    #[test]
    fn split_application_equals_one_pass_and_round_trips() {
        let key = [7u8; 20];
        let text: Vec<u8> = (0..5000u32).map(|i| (i * 31) as u8).collect();
        let mut whole = text.clone();
        Rc4::mse(&key).apply(&mut whole);
        let mut parts = text.clone();
        let mut r = Rc4::mse(&key);
        for c in parts.chunks_mut(333) {
            r.apply(c);
        }
        assert_eq!(whole, parts);
        Rc4::mse(&key).apply(&mut parts);
        assert_eq!(parts, text);
        // The discard: MSE's keystream is plain RC4's from byte 1024 on.
        let mut a = vec![0u8; 1024 + 16];
        Rc4::new(&key).apply(&mut a);
        let mut b = vec![0u8; 16];
        Rc4::mse(&key).apply(&mut b);
        assert_eq!(&a[1024..], &b[..]);
    }
}
