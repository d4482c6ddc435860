//! Arbitrary payloads into the `ut_holepunch` decoder (`magnetfetch::internals::peer::holepunch`,
//! BEP 55): it may reject them but never panic; what it accepts re-encodes to a message that
//! decodes to the same value, and is exactly 12 (IPv4) or 24 (IPv6) bytes long.
#![no_main]

use libfuzzer_sys::fuzz_target;
use magnetfetch::internals::peer::holepunch::HolepunchMsg;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = HolepunchMsg::decode(data) else {
        return;
    };
    assert!(data.len() == 12 || data.len() == 24);
    let enc = m.encode();
    assert!(enc.len() == 12 || enc.len() == 24);
    assert_eq!(HolepunchMsg::decode(&enc), Ok(m));
});
