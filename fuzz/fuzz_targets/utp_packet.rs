//! Arbitrary datagrams into the uTP packet parser (`magnetfetch::internals::net::utp::packet`,
//! BEP 29): it may reject them but never panic; what it accepts re-encodes to a packet that
//! parses to the same header, selective ACK and payload. The shared-port classifier must
//! agree with the parser on the version nibble.
#![no_main]

use libfuzzer_sys::fuzz_target;
use magnetfetch::internals::net::utp::packet::{encode, is_utp, Packet};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::parse(data) else {
        return;
    };
    assert_eq!(data[0] & 0x0F, 1);
    let _ = is_utp(data);
    let mut v = Vec::new();
    encode(&p.header, p.sack, p.payload, &mut v);
    let q = Packet::parse(&v).expect("re-encoded packet parses");
    assert_eq!(q.header, p.header);
    assert_eq!(q.payload, p.payload);
    if p.sack.is_some_and(|s| !s.is_empty()) {
        assert_eq!(q.sack, p.sack.map(|s| &s[..s.len().min(252)]));
    }
});
