//! The body of the `lsd_announce` fuzz target, shared (through `#[path]`) by the cargo-fuzz
//! target and by the stable harness `tests/peer/lsd_fuzz.rs`. It must hold for *any*
//! datagram a host on the LAN can send: no panic, and an accepted announce within bounds.

use magnetfetch::internals::lsd::{encode, parse, GROUP_V4, MAX_DATAGRAM, MAX_HASHES};

/// Arbitrary bytes into the BEP 14 announce parser; what it accepts re-encodes and parses
/// back to the same announce.
pub fn announce(data: &[u8]) {
    let Ok(a) = parse(data) else { return };
    assert!(data.len() <= MAX_DATAGRAM);
    assert_ne!(a.port, 0);
    assert!(!a.info_hashes.is_empty() && a.info_hashes.len() <= MAX_HASHES);
    for (i, h) in a.info_hashes.iter().enumerate() {
        assert!(!a.info_hashes[..i].contains(h), "repeated info-hash");
    }
    let cookie = a.cookie.clone().unwrap_or_default();
    if cookie.chars().any(|c| c.is_control()) || cookie.trim() != cookie {
        return; // not re-encodable as is (a header value is trimmed)
    }
    let mut back = Vec::new();
    for pkt in encode(GROUP_V4, a.port, &a.info_hashes, &cookie) {
        let b = parse(&pkt).expect("our own announce parses");
        assert_eq!(b.port, a.port);
        assert_eq!(b.cookie, a.cookie.clone().filter(|c| !c.is_empty()));
        back.extend(b.info_hashes);
    }
    assert_eq!(back, a.info_hashes);
}
