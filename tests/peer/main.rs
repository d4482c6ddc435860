//! Peer wire integration tests (BEP 3, 9, 10, QUIC) on loopback and simnet: one test binary
//! for the area. Loopback tests bind port 0 (see `support::loopback`).

#[path = "../support/mod.rs"]
mod support;

mod lsd_fuzz;
mod mse_loopback;
mod peer_conn;
mod peer_metadata;
mod quic_sim;
mod sim_connect;
mod sim_metadata;
mod utp_ledbat_sim;
mod utp_loopback;
