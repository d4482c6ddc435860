//! Peer wire protocol: the message codec (BEP 3, Fast extension BEP 6, DHT port BEP 5),
//! the handshake with reserved bits and BEP 20 peer ids, the extension protocol (BEP 10),
//! metadata exchange `ut_metadata` (BEP 9), peer exchange `ut_pex` (BEP 11), message stream
//! encryption ([`mse`], MSE/PE), and the async connection layer over [`crate::net`]. The multi-peer metadata fetch and the metadata
//! server, which dial through `quic`, are in `session::metadata`.
//!
//! Pure parts (codecs, [`metadata::MetadataFetch`], [`pex::PexSender`]) do no I/O; [`conn`]
//! is the thin async layer that drives them.

pub mod conn;
pub mod extension;
pub mod handshake;
pub mod holepunch;
pub mod metadata;
pub mod mse;
pub mod pex;
pub mod wire;

use crate::id::Id20;
pub use conn::{PeerConn, PeerReader, PeerWriter};
pub use extension::ExtHandshake;
pub use handshake::generate_peer_id;
pub use metadata::MetadataMsg;
pub use mse::{Encryption, MsePolicy};
pub use pex::PexMsg;
pub use wire::{validate, BlockRef, Message};

/// Why a peer connection failed or was dropped. Every variant is a reason we log.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("connection closed by peer")]
    Closed,
    #[error("message too long: id {id:?}, length {len}")]
    MessageTooLong { id: Option<u8>, len: u32 },
    #[error("bad length {len} for message id {id}")]
    BadLength { id: u8, len: u32 },
    #[error("piece index {index} out of range (torrent has {num_pieces})")]
    IndexOutOfRange { index: u32, num_pieces: u32 },
    #[error("bitfield is {got} bytes, expected {expected}")]
    BitfieldLength { got: usize, expected: usize },
    #[error("bitfield has spare bits set")]
    BitfieldSpareBits,
    #[error("block length {0} not in 1..=128 KiB")]
    BadBlockLength(u32),
    #[error("block {0:?} lies outside its piece")]
    BlockOutsidePiece(BlockRef),
    #[error("bad handshake: {0}")]
    BadHandshake(&'static str),
    #[error("info-hash mismatch: expected {expected}, got {got}")]
    InfoHashMismatch { expected: Id20, got: Id20 },
    #[error("no torrent for info-hash {0}")]
    UnknownInfoHash(Id20),
    #[error(transparent)]
    Encryption(#[from] mse::MseError),
    #[error("connected to ourselves")]
    SelfConnection,
    #[error(transparent)]
    Bencode(#[from] crate::bencode::BencodeError),
    #[error(transparent)]
    Metadata(#[from] metadata::MetadataError),
    #[error("bad extension message: {0}")]
    BadExtension(&'static str),
}
