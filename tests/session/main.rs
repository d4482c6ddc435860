//! Session and torrent-engine integration tests (storage, picker, resume, whole swarms): one
//! test binary for the area. `torrent_picker_bench` holds ignored benchmarks.

#[path = "../support/mod.rs"]
mod support;

mod metadata_retry;
mod reach_loopback;
mod session_loopback;
mod sim_holepunch;
mod sim_swarm;
mod slow_disk;
mod torrent_cores;
mod torrent_picker_bench;
mod torrent_storage;
