//! Arbitrary bytes into every peer-wire parser: the framed message Decoder (fed in chunks,
//! each message validated and re-encoded), the BEP 10 handshake, BEP 9 ut_metadata and
//! BEP 11 ut_pex decoders, and the bencode reader. None may panic or over-allocate.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use magnetfetch::internals::peer::wire::{self, Decoder, Geometry, Message};
use magnetfetch::internals::bencode::{Limits, Value};
use magnetfetch::internals::peer::{ExtHandshake, MetadataMsg, PexMsg};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let chunk = usize::from(data[0]).max(1);
    let num_pieces = u32::from(u16::from_be_bytes([data[1], data[2]]));
    let body = &data[3..];

    let g = Geometry {
        num_pieces,
        piece_length: 32768,
        total_length: (u64::from(num_pieces) * 32768).saturating_sub(100),
    };
    let mut d = Decoder::new();
    'outer: for c in body.chunks(chunk) {
        d.feed(c);
        loop {
            match d.next_message() {
                Ok(Some(m)) => {
                    let _ = wire::validate(&m, num_pieces);
                    let _ = wire::validate_in(&m, &g);
                    if !matches!(m, Message::Unknown { .. }) {
                        let mut out = BytesMut::new();
                        wire::encode(&m, &mut out);
                        let mut d2 = Decoder::new();
                        d2.feed(&out);
                        assert_eq!(d2.next_message().ok().flatten().as_ref(), Some(&m));
                    }
                }
                Ok(None) => break,
                Err(_) => break 'outer,
            }
        }
        // The buffer never holds more than one maximal message plus one chunk.
        assert!(d.buffered() <= 4 + wire::MAX_MESSAGE_LEN as usize + chunk);
    }

    let _ = ExtHandshake::decode(body).map(|h| ExtHandshake::decode(&h.encode()).unwrap());
    let _ = MetadataMsg::decode(&Bytes::copy_from_slice(body));
    let _ = PexMsg::decode(body).map(|p| PexMsg::decode(&p.encode()).unwrap());
    let _ = Value::decode_prefix(body, Limits::PEER);
});
