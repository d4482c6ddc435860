//! Arbitrary datagrams into the BEP 14 Local Service Discovery announce parser (body in
//! `bodies/lsd.rs`, shared with the stable harness `tests/peer/lsd_fuzz.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "bodies/lsd.rs"]
#[allow(dead_code)]
mod bodies;

fuzz_target!(|data: &[u8]| bodies::announce(data));
