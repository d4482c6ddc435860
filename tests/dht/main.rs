//! DHT integration tests (BEP 5, BEP 32) over simnet: one test binary for the area.
//! Simulated hosts live in each test's own `simnet::Network`, so addresses never collide.

#[path = "../support/mod.rs"]
mod support;

mod dht_sim;
mod dht_v6_sim;
mod net_sim;
