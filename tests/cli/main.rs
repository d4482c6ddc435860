//! The `magnetfetch` binary end to end (processes on loopback) and the documented command
//! lines: one test binary for the area. Each module keeps its own block of 127.0.0.x
//! addresses (see `support::loopback`), so tests of different modules run side by side.

#[path = "../support/mod.rs"]
mod support;

mod architecture;
mod cli_fetch;
mod cli_portmap;
mod daemon_api;
mod daemon_peers;
mod daemon_queue;
mod daemon_scale;
mod daemon_ui;
mod dht_v6_cli;
mod docs_examples;
mod formats_cli;
mod lsd_cli;
mod quic_loopback;
mod sim_cli;
mod tracker_cli;
