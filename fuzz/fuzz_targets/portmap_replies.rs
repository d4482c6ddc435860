//! Arbitrary bytes into every parser of what a LAN host can send the port mapper (SSDP,
//! device description, SOAP, NAT-PMP, PCP, the routing table; body in `bodies/portmap.rs`,
//! shared with the stable harness `tests/portmap/portmap_fuzz.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "bodies/portmap.rs"]
mod bodies;

fuzz_target!(|data: &[u8]| bodies::portmap_replies(data));
