//! simnet: an in-process simulated network running on tokio's virtual clock.
//!
//! Knows nothing of BitTorrent. See `docs/simnet.md`.
