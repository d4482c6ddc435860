//! Message Stream Encryption / Protocol Encryption (MSE/PE, the Vuze/Azureus spec that
//! libtorrent, qBittorrent, Transmission and aria2 speak; not a BEP): a Diffie-Hellman
//! exchange that hides the BitTorrent handshake, then RC4 on the whole stream (or
//! plaintext, when both ends agree to only obfuscate the handshake).
//!
//! - [`dh`]: the 768-bit exchange; [`rc4`]: the cipher (first 1024 bytes discarded);
//! - [`handshake`]: the pure, sans-IO handshake of both roles ([`Initiator`],
//!   [`Responder`]), bytes in and bytes out, every length and scan bounded;
//! - [`stream`]: [`PeerStream`], the stream a peer connection runs on (RC4 both ways when
//!   it was selected), and the async drivers that run a handshake on a socket under a
//!   deadline.
//!
//! The policy ([`Encryption`]) is the session's; the dialler and the accept path apply it.

pub mod dh;
pub mod handshake;
pub mod rc4;
pub mod stream;

pub use handshake::{Initiator, Responder};
pub use stream::PeerStream;

/// `crypto_provide` / `crypto_select` bit: plaintext after the handshake.
pub const CRYPTO_PLAINTEXT: u32 = 0x01;
/// `crypto_provide` / `crypto_select` bit: RC4 on the whole stream.
pub const CRYPTO_RC4: u32 = 0x02;

/// The encryption policy for TCP peer connections (`--encryption`). QUIC is encrypted by
/// TLS already and never runs MSE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encryption {
    /// Dial with MSE (offering RC4 and plaintext), retry a peer that drops the attempt in
    /// plaintext; accept both kinds of incoming handshakes. After an MSE handshake the
    /// stream stays plaintext when both ends allow it (libtorrent's default too), RC4 when
    /// the other end requires it.
    #[default]
    Prefer,
    /// MSE with RC4 only, both ways: never a plaintext BitTorrent handshake.
    Require,
    /// Plaintext only: never dial with MSE, refuse incoming MSE.
    Off,
}

impl Encryption {
    pub fn as_str(self) -> &'static str {
        match self {
            Encryption::Prefer => "prefer",
            Encryption::Require => "require",
            Encryption::Off => "off",
        }
    }

    /// `crypto_provide` we send as the initiator, and the methods we accept as responder.
    pub fn methods(self) -> u32 {
        match self {
            Encryption::Prefer => CRYPTO_RC4 | CRYPTO_PLAINTEXT,
            Encryption::Require => CRYPTO_RC4,
            Encryption::Off => 0,
        }
    }
}

impl std::str::FromStr for Encryption {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "prefer" => Ok(Encryption::Prefer),
            "require" => Ok(Encryption::Require),
            "off" => Ok(Encryption::Off),
            _ => Err(format!(
                "unknown encryption mode {s:?} (prefer, require or off)"
            )),
        }
    }
}

/// The encryption policy and the rng every MSE key and pad is drawn from (seeded in
/// simulations, so runs repeat). Cheap to clone; clones share the rng.
#[derive(Clone, Debug)]
pub struct MsePolicy {
    pub mode: Encryption,
    rng: std::sync::Arc<std::sync::Mutex<rand::rngs::StdRng>>,
}

impl Default for MsePolicy {
    fn default() -> Self {
        MsePolicy::new(Encryption::default(), None)
    }
}

impl MsePolicy {
    /// `seed`: `None` draws from the OS.
    pub fn new(mode: Encryption, seed: Option<u64>) -> Self {
        use rand::SeedableRng;
        let rng = match seed {
            Some(s) => rand::rngs::StdRng::seed_from_u64(s),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        MsePolicy {
            mode,
            rng: std::sync::Arc::new(std::sync::Mutex::new(rng)),
        }
    }

    /// An initiator for `skey` offering this mode's methods, `ia` as initial payload.
    pub fn initiator(&self, skey: crate::id::InfoHash, ia: &[u8]) -> Initiator {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        Initiator::new(skey, self.mode.methods(), ia, &mut *rng)
    }

    /// A responder for any of `torrents`, accepting this mode's methods.
    pub fn responder(&self, torrents: Vec<crate::id::InfoHash>) -> Responder {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        Responder::new(self.mode.methods(), torrents, &mut *rng)
    }
}

/// Why an MSE handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum MseError {
    #[error("peer closed the connection during the encryption handshake (MSE)")]
    Closed,
    #[error("timed out in the encryption handshake (MSE)")]
    Timeout,
    #[error("i/o in the encryption handshake (MSE): {0}")]
    Io(#[from] std::io::Error),
    #[error("peer's Diffie-Hellman public key is out of range")]
    BadPublicKey,
    #[error("no {0} within the 512 bytes of padding allowed")]
    NoSync(&'static str),
    #[error("encrypted handshake for a torrent we do not serve")]
    UnknownTorrent,
    #[error("verification constant wrong (not the same key: wrong torrent or garbage)")]
    BadVc,
    #[error("padding of {0} bytes (at most 512 allowed)")]
    PadTooLong(usize),
    #[error("peer selected crypto method {0:#x}, which we did not offer")]
    BadSelect(u32),
    #[error("no common crypto method: peer offers {offered:#x}, we allow {allowed:#x}")]
    NoCommonMethod { offered: u32, allowed: u32 },
    #[error("plaintext handshake refused: --encryption require")]
    PlaintextRefused,
    #[error("encrypted handshake refused: --encryption off")]
    EncryptedRefused,
}
