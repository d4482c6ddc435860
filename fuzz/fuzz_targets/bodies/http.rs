//! The body of the `http_response` fuzz target, shared (through `#[path]`) with the stable
//! harness `tests/http_fuzz.rs`. It must hold for *any* input: no panic, bounded output, and
//! the stated invariants.

use magnetfetch::internals::http::chunked::{decode_all, ChunkedDecoder};
use magnetfetch::internals::http::head::{parse_response_head, MAX_HEADERS, MAX_RESPONSE_HEAD};

/// Arbitrary bytes into the HTTP client's response-head parser and chunked-body decoder.
/// The first byte picks the slice size the decoder is fed with, the second its body limit.
/// - a parsed head is within its limits, and every shorter prefix is "need more bytes";
/// - the decoder gives the same body, length and verdict fed in slices as fed at once, and
///   never holds more than its limit.
pub fn http_response(data: &[u8]) {
    let [step, limit, data @ ..] = data else {
        return;
    };
    let step = usize::from(*step).max(1);
    let max_body = usize::from(*limit) * 64;
    let body = match parse_response_head(data) {
        Ok(Some((h, n))) => {
            assert!(n <= data.len() && n <= MAX_RESPONSE_HEAD);
            assert!(h.headers.len() <= MAX_HEADERS);
            assert!((100..1000).contains(&h.status));
            assert!(matches!(parse_response_head(&data[..n - 1]), Ok(None)));
            let _ = h.framing();
            let _ = h.keep_alive();
            &data[n..]
        }
        Ok(None) => {
            assert!(data.len() < MAX_RESPONSE_HEAD);
            data
        }
        Err(_) => data,
    };
    let whole = decode_all(body, max_body);
    let mut d = ChunkedDecoder::new(max_body);
    let mut out = Vec::new();
    let mut used = 0;
    let mut failed = false;
    for c in body.chunks(step) {
        match d.feed(c, &mut out) {
            Ok(k) => used += k,
            Err(_) => {
                failed = true;
                break;
            }
        }
        assert!(out.len() <= max_body);
        if d.is_done() {
            break;
        }
    }
    match whole {
        Ok(Some((b, n))) => {
            assert!(!failed && d.is_done());
            assert_eq!((b, n), (out, used));
        }
        Ok(None) => assert!(!failed && !d.is_done() && used == body.len()),
        Err(_) => assert!(failed),
    }
}
