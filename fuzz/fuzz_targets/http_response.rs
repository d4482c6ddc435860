//! Arbitrary bytes into the HTTP client's response-head parser and chunked-body decoder
//! (body in `bodies/http.rs`, shared with the stable harness `tests/http_fuzz.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "bodies/http.rs"]
mod bodies;

fuzz_target!(|data: &[u8]| bodies::http_response(data));
