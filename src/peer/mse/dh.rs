//! The Diffie-Hellman exchange of MSE/PE: the 768-bit prime P of the spec, generator 2, a
//! 160-bit private key; public keys and the shared secret travel as 96 big-endian bytes.

use num_bigint::BigUint;
use rand::Rng;

use super::MseError;

/// Bytes of a public key or of the shared secret.
pub const KEY_LEN: usize = 96;

/// P, the 768-bit prime of the MSE/PE spec.
const P_HEX: &[u8] = b"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";

fn prime() -> BigUint {
    BigUint::parse_bytes(P_HEX, 16).expect("P is valid hex")
}

/// `n` as exactly [`KEY_LEN`] big-endian bytes (n < P < 2^768).
fn to_bytes(n: &BigUint) -> [u8; KEY_LEN] {
    let b = n.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    out[KEY_LEN - b.len()..].copy_from_slice(&b);
    out
}

/// Our side of one exchange.
pub struct KeyPair {
    private: BigUint,
    public: [u8; KEY_LEN],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPair")
    }
}

impl KeyPair {
    /// A fresh key pair; the 160 private bits come from `rng` (seeded in simulations).
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut x = [0u8; 20];
        rng.fill(&mut x[..]);
        // Never 0 or 1 (a public key of 1 or 2 would give the secret away).
        x[0] |= 0x80;
        let private = BigUint::from_bytes_be(&x);
        let public = to_bytes(&BigUint::from(2u32).modpow(&private, &prime()));
        KeyPair { private, public }
    }

    /// Ours to send: 2^x mod P.
    pub fn public(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    /// The shared secret S from the peer's public key. Refuses keys outside 2..=P-2 (0, 1 and
    /// P-1 make S guessable; anything at or above P is not a residue at all).
    pub fn shared(&self, theirs: &[u8; KEY_LEN]) -> Result<[u8; KEY_LEN], MseError> {
        let p = prime();
        let y = BigUint::from_bytes_be(theirs);
        if y < BigUint::from(2u32) || y >= &p - 1u32 {
            return Err(MseError::BadPublicKey);
        }
        Ok(to_bytes(&y.modpow(&self.private, &p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn prime_is_768_bits() {
        assert_eq!(prime().bits(), 768);
        assert_eq!(P_HEX.len(), 2 * KEY_LEN);
    }

    #[test]
    fn both_ends_agree_and_seeded_keys_repeat() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let a = KeyPair::generate(&mut rng);
        let b = KeyPair::generate(&mut rng);
        assert_ne!(a.public(), b.public());
        let s1 = a.shared(b.public()).unwrap();
        let s2 = b.shared(a.public()).unwrap();
        assert_eq!(s1, s2);
        let again = KeyPair::generate(&mut rand::rngs::StdRng::seed_from_u64(1));
        assert_eq!(again.public(), a.public());
    }

    #[test]
    fn weak_and_out_of_range_keys_are_refused() {
        let a = KeyPair::generate(&mut rand::rngs::StdRng::seed_from_u64(2));
        let mut k = [0u8; KEY_LEN];
        assert!(a.shared(&k).is_err());
        k[KEY_LEN - 1] = 1;
        assert!(a.shared(&k).is_err());
        assert!(a.shared(&to_bytes(&(prime() - 1u32))).is_err());
        assert!(a.shared(&[0xff; KEY_LEN]).is_err());
        k[KEY_LEN - 1] = 2;
        assert!(a.shared(&k).is_ok());
    }
}
