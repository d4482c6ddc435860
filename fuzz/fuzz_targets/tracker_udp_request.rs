//! Arbitrary datagrams into the BEP 15 parsers (body in `bodies/tracker.rs`, shared with the
//! stable harness `tests/tracker/tracker_fuzz.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "bodies/tracker.rs"]
#[allow(dead_code)]
mod bodies;

fuzz_target!(|data: &[u8]| bodies::udp_request(data));
