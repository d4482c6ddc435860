//! Drives the ut_metadata (BEP 9) fetch state machine with arbitrary peer behaviour: peers
//! announcing any size, sending any piece with any length, rejecting, timing out. It must
//! never panic, and anything it returns as done must hash to the info-hash.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::peer::metadata::{MetadataFetch, Outcome};

fuzz_target!(|data: &[u8]| {
    // Info-hash of "d1:ai0ee" is irrelevant: a random-looking fixed hash almost never matches,
    // so `Done` is (correctly) rare; `Corrupt` paths get exercised.
    let ih = Id20([0x5a; 20]);
    let t0 = tokio::time::Instant::now();
    let mut f = MetadataFetch::new(ih, Duration::from_secs(2));
    let mut it = data.chunks(4);
    let mut now = t0;
    while let Some(op) = it.next() {
        if op.len() < 4 {
            break;
        }
        let peer = SocketAddr::from(([127, 0, 0, op[1] % 8], 1000));
        let arg = u16::from_be_bytes([op[2], op[3]]);
        match op[0] % 6 {
            0 => {
                let _ = f.add_peer(peer, Some(u64::from(arg) * 97));
            }
            1 => {
                let _ = f.next_request(peer, now);
            }
            2 => {
                let len = usize::from(arg) % (16384 + 2);
                let piece = u32::from(op[3] % 8);
                if let Ok(Outcome::Done(_)) =
                    f.on_data(peer, piece, None, Bytes::from(vec![op[2]; len]))
                {
                    panic!("unverifiable metadata accepted");
                }
            }
            3 => {
                f.on_reject(peer, u32::from(arg));
            }
            4 => {
                now += Duration::from_millis(u64::from(arg));
                let _ = f.poll_timeouts(now);
            }
            _ => f.remove_peer(&peer),
        }
        let (have, total) = f.progress();
        assert!(have <= total);
    }
});
