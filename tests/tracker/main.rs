//! Tracker (BEP 3, 15, 48) and web seed (BEP 19) integration tests on loopback: one test
//! binary for the area. `tracker_bench` holds the ignored load benchmark.

#[path = "../support/mod.rs"]
mod support;

mod tracker_bench;
mod tracker_fuzz;
mod tracker_https;
mod tracker_loopback;
mod tracker_webseed;
