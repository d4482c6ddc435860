//! Download and seed engine (BEP 3 piece exchange, BEP 6 fast extension, BEP 47 padding).
//!
//! Pure cores, each unit-tested without sockets: [`layout`] (piece ↔ file geometry),
//! [`bitfield`], [`picker`] (which blocks to request), [`choker`] (whom to upload to),
//! [`ratelimit`] (token bucket + rate estimator), [`pipeline`] (request depth, snubbing),
//! [`resume`] (saved verified pieces). [`storage`] and [`verify`] do the disk and hashing
//! work and are meant to be called from blocking threads (`tokio::task::spawn_blocking`).

pub mod bitfield;
pub mod layout;

pub use bitfield::Bitfield;
pub use layout::{FileSpec, Layout, LayoutError, Segment, BLOCK_SIZE};
pub mod choker;
pub mod picker;
pub mod pipeline;
pub mod ratelimit;
pub mod resume;

pub use picker::{BlockOutcome, BlockRef, BlockStatus, PeerKey, Picker, PickerConfig};
pub mod storage;
pub mod verify;
