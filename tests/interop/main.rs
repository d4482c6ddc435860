//! Interop with independent implementations (python3-libtorrent via `support/lt.py`,
//! opentracker, mktorrent) on loopback: one test binary for the area. A missing tool prints a
//! loud SKIP, or fails the test under `MAGNETFETCH_REQUIRE_INTEROP=1`.

#[path = "../support/mod.rs"]
mod support;

mod dht_v6_interop;
mod interop_dht;
mod interop_download;
mod interop_formats;
mod interop_lsd;
mod interop_metadata;
mod interop_mse;
mod interop_swarm_dht;
mod interop_utp;
mod other_clients_mse;
mod tracker_interop;
