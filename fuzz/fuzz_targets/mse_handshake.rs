//! Arbitrary bytes into both roles of the MSE/PE handshake (`magnetfetch::internals::peer::mse`): the
//! responder (as an incoming connection feeds it: any public key, padding, hashes, lengths)
//! and the initiator (after our key went out), each fed in fuzzer-chosen chunks. Neither may
//! panic, buffer more than its bounds allow (96-byte key + 512 padding + the fixed fields +
//! 65535 of IA), or finish without a method it offered/allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::peer::mse::{Initiator, Responder, CRYPTO_PLAINTEXT, CRYPTO_RC4};
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let chunk = usize::from(data[0]).max(1);
    let allowed = u32::from(data[1] & 3);
    let body = &data[2..];
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let ih = Id20([0x42; 20]);

    let mut r = Responder::new(allowed, vec![ih, Id20([7; 20])], &mut rng);
    for c in body.chunks(chunk) {
        if r.feed(c).is_err() {
            break;
        }
        let _ = r.take_output();
        if let Some(d) = r.take_done() {
            assert!(d.method & allowed != 0 && matches!(d.method, CRYPTO_RC4 | CRYPTO_PLAINTEXT));
            assert!(d.received.len() <= body.len());
            break;
        }
    }

    let provide = u32::from((data[1] >> 2) & 3).max(1);
    let mut i = Initiator::new(ih, provide, b"ia", &mut rng);
    let _ = i.take_output();
    for c in body.chunks(chunk) {
        if i.feed(c).is_err() {
            break;
        }
        let _ = i.take_output();
        if let Some(d) = i.take_done() {
            assert!(d.method & provide != 0);
            break;
        }
    }
});
