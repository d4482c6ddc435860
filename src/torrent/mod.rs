//! Download and seed engine (BEP 3 piece exchange, BEP 6 fast extension, BEP 47 padding).
//!
//! Pure cores, each unit-tested without sockets: [`layout`] (piece ↔ file geometry),
//! [`bitfield`], [`picker`] (which blocks to request), [`choker`] (whom to upload to),
//! [`ratelimit`] (token bucket + rate estimator), [`pipeline`] (request depth, snubbing),
//! [`resume`] (saved verified pieces). [`storage`] and [`verify`] do the disk and hashing
//! work and are meant to be called from blocking threads (`tokio::task::spawn_blocking`).
//!
//! How the torrent task drives them (one task per torrent owns the cores):
//! 1. Start: build a [`Layout`], a [`storage::Storage`] and a [`Picker`]; load
//!    [`resume::ResumeState`], mark its `plan().trusted` pieces with
//!    `Picker::on_piece_verified(i, None)` and re-hash `plan().recheck` with
//!    [`verify::recheck_blocking`] (or everything for `--recheck`, or when there is no
//!    resume file but the files exist).
//! 2. Peer messages: `bitfield`/`have`/`have_all` → `add_peer_bitfield`/`add_have`/
//!    `add_seed`; `interested` when `Picker::interesting`. When unchoked, keep
//!    [`pipeline::Pipeline::depth`] requests in flight with `pick_blocks`; `choke` →
//!    `on_peer_choked`; BEP 6 `reject_request` → `on_reject`; disconnect →
//!    `on_peer_disconnected` plus `remove_peer_bitfield`/`remove_seed`.
//! 3. `piece` message: `on_block_received`; write `Accepted` blocks; send the returned
//!    cancels. When `piece_complete`, hash off the executor ([`verify::hash_blocking`]),
//!    then `on_piece_verified` (send `have` to everyone, tell the [`resume::ResumeSaver`])
//!    or `on_piece_failed`; ban the peers either returns. Pass per-block SHA-1s when
//!    `needs_block_digests` (verified) or always on failure (smart ban).
//! 4. Every 10 s: [`choker::Choker::tick`] with each peer's rates; apply the unchoked set.
//!    Check `Pipeline::check_snub` and release a snubbed peer's requests.
//! 5. Upload: `Storage::read_block` for requests of verified pieces, paced by the global
//!    [`ratelimit::TokenBucket`].

pub mod bitfield;
pub mod choker;
pub mod layout;
pub mod picker;
pub mod pipeline;
pub mod ratelimit;
pub mod resume;
pub mod storage;
pub mod verify;

pub use bitfield::Bitfield;
pub use layout::{FileSpec, Layout, LayoutError, Segment, BLOCK_SIZE};
pub use picker::{BlockRef, BlockStatus, PeerKey, Picker, PickerConfig};
