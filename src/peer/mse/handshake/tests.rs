use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::*;
use crate::id::Id20;

const IH: Id20 = Id20([0x11; 20]);
const IA: &[u8] = b"\x13BitTorrent protocol, or whatever the initial payload is";

fn initiator(seed: u64, provide: u32) -> Initiator {
    Initiator::new(IH, provide, IA, &mut StdRng::seed_from_u64(seed))
}

fn responder(seed: u64, allowed: u32) -> Responder {
    let torrents = vec![Id20([0x22; 20]), IH, Id20([0x33; 20])];
    Responder::new(allowed, torrents, &mut StdRng::seed_from_u64(seed))
}

/// Runs both ends against each other, delivering each flight in chunks of `chunk` bytes.
/// Returns both results and the bytes each side sent (A→B, B→A).
#[allow(clippy::type_complexity)]
fn run(
    mut a: Initiator,
    mut b: Responder,
    chunk: usize,
) -> (
    Result<Done, MseError>,
    Result<Done, MseError>,
    Vec<u8>,
    Vec<u8>,
) {
    let (mut ab, mut ba) = (Vec::new(), Vec::new());
    let (mut da, mut db) = (None, None);
    for _ in 0..10 {
        let out = a.take_output();
        ab.extend_from_slice(&out);
        for c in out.chunks(chunk) {
            if let Err(e) = b.feed(c) {
                return (Err(MseError::Closed), Err(e), ab, ba);
            }
        }
        db = db.or(b.take_done());
        let out = b.take_output();
        ba.extend_from_slice(&out);
        for c in out.chunks(chunk) {
            if let Err(e) = a.feed(c) {
                return (Err(e), Err(MseError::Closed), ab, ba);
            }
        }
        da = da.or(a.take_done());
        if da.is_some() && db.is_some() {
            break;
        }
    }
    (
        da.ok_or(MseError::Timeout),
        db.ok_or(MseError::Timeout),
        ab,
        ba,
    )
}

/// What `prefer` offers and allows: both methods.
fn both_rc4() -> u32 {
    CRYPTO_RC4 | CRYPTO_PLAINTEXT
}

/// The two ends' ciphers fit each other: what one enciphers the other deciphers.
fn check_pair(a: &mut Done, b: &mut Done) {
    let (ca, cb) = (a.ciphers.as_mut().unwrap(), b.ciphers.as_mut().unwrap());
    let msg = b"interested, then a request".to_vec();
    let mut x = msg.clone();
    ca.enc.apply(&mut x);
    assert_ne!(x, msg);
    cb.dec.apply(&mut x);
    assert_eq!(x, msg);
    let mut y = msg.clone();
    cb.enc.apply(&mut y);
    ca.dec.apply(&mut y);
    assert_eq!(y, msg);
}

#[test]
fn both_roles_agree_on_rc4_for_every_chunk_size() {
    for (i, chunk) in [1usize, 2, 3, 7, 19, 20, 64, 95, 96, 97, 500, 4096]
        .into_iter()
        .enumerate()
    {
        let (a, b, _, _) = run(
            initiator(i as u64, both_rc4()),
            responder(100 + i as u64, CRYPTO_RC4),
            chunk,
        );
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        assert_eq!((a.method, b.method), (CRYPTO_RC4, CRYPTO_RC4));
        assert_eq!(b.info_hash, IH, "the responder found the torrent");
        assert_eq!(b.received, IA, "the initial payload, deciphered");
        assert!(a.received.is_empty());
        check_pair(&mut a, &mut b);
    }
}

#[test]
fn every_split_of_each_flight_gives_the_same_result() {
    let (a, b, ab, ba) = run(initiator(1, both_rc4()), responder(2, both_rc4()), 4096);
    let (a, b) = (a.unwrap(), b.unwrap());
    // Replay the recorded flights into fresh machines (same seeds: same keys and pads),
    // cut in two at every position.
    for cut in 0..=ab.len() {
        let mut r = responder(2, both_rc4());
        r.feed(&ab[..cut]).unwrap();
        r.feed(&ab[cut..]).unwrap();
        let d = r.take_done().expect("responder done");
        assert_eq!(
            (d.method, d.info_hash, &d.received[..]),
            (b.method, b.info_hash, IA)
        );
    }
    // The initiator sends its second flight only after reading Yb: feed B's bytes.
    let first = initiator(1, both_rc4()).take_output().len();
    for cut in 0..=ba.len() {
        let mut i = initiator(1, both_rc4());
        i.take_output();
        i.feed(&ba[..cut]).unwrap();
        i.feed(&ba[cut..]).unwrap();
        let d = i.take_done().expect("initiator done");
        assert_eq!(d.method, a.method);
        assert_eq!(i.take_output(), &ab[first..], "the same step 3");
    }
}

#[test]
fn methods_are_selected_as_offered_and_allowed() {
    // Plaintext-only offer: plaintext after the handshake, the IA still deciphered.
    let (a, b, _, _) = run(initiator(3, CRYPTO_PLAINTEXT), responder(4, both_rc4()), 97);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.method, b.method), (CRYPTO_PLAINTEXT, CRYPTO_PLAINTEXT));
    assert!(a.ciphers.is_none() && b.ciphers.is_none());
    assert_eq!(b.received, IA);
    // RC4 only against a plaintext-only responder: refused by the responder.
    let (_, b, _, _) = run(initiator(5, CRYPTO_RC4), responder(6, CRYPTO_PLAINTEXT), 97);
    assert!(matches!(
        b,
        Err(MseError::NoCommonMethod {
            offered: 2,
            allowed: 1
        })
    ));
    // Both offered and allowed (`prefer` on both ends): plaintext, as libtorrent chooses.
    let (a, b, _, _) = run(initiator(9, both_rc4()), responder(10, both_rc4()), 97);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.method, b.method), (CRYPTO_PLAINTEXT, CRYPTO_PLAINTEXT));
    // `prefer` dialling a responder that requires RC4.
    let (a, b, _, _) = run(initiator(11, both_rc4()), responder(12, CRYPTO_RC4), 97);
    assert_eq!(
        (a.unwrap().method, b.unwrap().method),
        (CRYPTO_RC4, CRYPTO_RC4)
    );
    // Require (RC4 only) on both ends.
    let (a, b, _, _) = run(initiator(7, CRYPTO_RC4), responder(8, CRYPTO_RC4), 97);
    assert_eq!(a.unwrap().method, CRYPTO_RC4);
    assert_eq!(b.unwrap().method, CRYPTO_RC4);
}

#[test]
fn unknown_torrent_is_refused() {
    let a = Initiator::new(
        Id20([0x99; 20]),
        both_rc4(),
        IA,
        &mut StdRng::seed_from_u64(9),
    );
    let (_, b, _, _) = run(a, responder(10, both_rc4()), 64);
    assert!(matches!(b, Err(MseError::UnknownTorrent)), "{b:?}");
}

/// A's cipher state right after its step 3 (what its payload continues with).
fn a_enc_after_ia(a: &Initiator) -> Rc4 {
    match &a.state {
        IState::SyncVc { enc, .. } => enc.clone(),
        other => panic!("not waiting for the VC: {other:?}"),
    }
}

#[test]
fn payload_sent_right_after_the_handshake_is_kept_and_deciphered() {
    let mut a = initiator(11, both_rc4());
    let mut b = responder(12, CRYPTO_RC4);
    b.feed(&a.take_output()).unwrap();
    a.feed(&b.take_output()).unwrap();
    // A's step 3 and its first payload bytes in one segment (A sends payload before it
    // knows the method; the responder requires RC4, so it is RC4, continuing A's keystream).
    let mut flight = a.take_output();
    let mut extra = b"have 7".to_vec();
    a_enc_after_ia(&a).apply(&mut extra);
    flight.extend_from_slice(&extra);
    b.feed(&flight).unwrap();
    let mut db = b.take_done().unwrap();
    assert_eq!(&db.received[..IA.len()], IA);
    assert_eq!(&db.received[IA.len()..], b"have 7");
    // B's step 4 and its first payload in one segment.
    let mut step4 = b.take_output();
    let mut bitfield = b"bitfield".to_vec();
    db.ciphers.as_mut().unwrap().enc.apply(&mut bitfield);
    step4.extend_from_slice(&bitfield);
    a.feed(&step4).unwrap();
    let da = a.take_done().unwrap();
    assert_eq!(da.received, b"bitfield");
}

#[test]
fn truncated_input_waits_and_garbage_fails_within_the_bounds() {
    // Truncated: a partial first flight is no error and no result.
    let mut a = initiator(15, both_rc4());
    let out = a.take_output();
    let mut b = responder(16, both_rc4());
    b.feed(&out[..50]).unwrap();
    assert!(b.take_done().is_none() && b.take_output().is_empty());
    b.feed(&out[50..]).unwrap();
    assert!(b.take_output().len() >= 96, "Yb after a whole Ya");
    // Garbage after a valid key: no req1 within 512 + 20 bytes.
    let mut rng = StdRng::seed_from_u64(17);
    let mut junk = vec![0u8; 2000];
    rng.fill_bytes(&mut junk);
    let mut b = responder(18, both_rc4());
    let r = b.feed(&junk);
    assert!(
        matches!(r, Err(MseError::NoSync(_)) | Err(MseError::BadPublicKey)),
        "{r:?}"
    );
    // Exactly at the bound: 96 + 531 bytes without req1 still waits, one more fails.
    let ya = initiator(19, both_rc4()).take_output()[..96].to_vec();
    let mut b = responder(20, both_rc4());
    b.feed(&ya).unwrap();
    b.feed(&junk[..MAX_PAD + 19]).unwrap();
    assert!(matches!(b.feed(&junk[..1]), Err(MseError::NoSync(_))));
    // The initiator: garbage instead of step 2 never syncs on the VC.
    let mut a = initiator(21, both_rc4());
    let yb = responder(22, both_rc4());
    let mut yb = yb;
    yb.feed(&a.take_output()).unwrap();
    let yb = yb.take_output()[..96].to_vec();
    a.feed(&yb).unwrap();
    a.feed(&junk[..MAX_PAD + 7]).unwrap();
    assert!(matches!(a.feed(&junk[..1]), Err(MseError::NoSync(_))));
    // A public key of all ones is out of range.
    let mut b = responder(23, both_rc4());
    assert!(matches!(b.feed(&[0xff; 96]), Err(MseError::BadPublicKey)));
}

#[test]
fn hostile_lengths_are_refused() {
    // A hand-made initiator whose PadC claims 513 bytes.
    let mut rng = StdRng::seed_from_u64(24);
    let keys = KeyPair::generate(&mut rng);
    let mut b = responder(25, both_rc4());
    b.feed(keys.public()).unwrap();
    let yb: [u8; 96] = b.take_output()[..96].try_into().unwrap();
    let s = keys.shared(&yb).unwrap();
    let (mut enc, _) = keys_for(&s);
    let mut msg = sha1(&[b"req1", &s]).to_vec();
    let r3 = sha1(&[b"req3", &s]);
    msg.extend(req2(&IH).iter().zip(r3).map(|(a, b)| a ^ b));
    let mut tail = VC.to_vec();
    tail.extend_from_slice(&CRYPTO_RC4.to_be_bytes());
    tail.extend_from_slice(&513u16.to_be_bytes());
    enc.apply(&mut tail);
    msg.extend_from_slice(&tail);
    assert!(matches!(b.feed(&msg), Err(MseError::PadTooLong(513))));
    // Wrong key material: the VC does not decipher to zeros.
    let mut b = responder(26, both_rc4());
    b.feed(keys.public()).unwrap();
    let _ = b.take_output();
    let mut msg = sha1(&[b"req1", &s]).to_vec();
    msg.extend(req2(&IH).iter().zip(r3).map(|(a, b)| a ^ b));
    msg.extend_from_slice(&[0u8; 14]);
    // (The responder's S differs from `s` here: a fresh responder has a fresh key, so
    // `req1` does not even sync within the window; either refusal is fine.)
    let mut long = msg.clone();
    long.extend_from_slice(&[0u8; 600]);
    assert!(b.feed(&long).is_err());
}

fn keys_for(s: &[u8; KEY_LEN]) -> (Rc4, Rc4) {
    keys(s, &IH)
}

/// A stable-toolchain fuzz pass (the libFuzzer target is `fuzz/fuzz_targets/mse_handshake.rs`):
/// valid flights of both directions, mutated (bytes flipped, cut, inserted, lengths set to
/// edge values) and fed in random chunks into fresh machines. None may panic, and a finished
/// handshake has a method both ends allow.
#[test]
fn mutated_handshakes_never_panic() {
    use rand::Rng;
    let (_, _, ab, ba) = run(initiator(1, both_rc4()), responder(2, both_rc4()), 4096);
    let mut rng = StdRng::seed_from_u64(99);
    let mutate = |src: &[u8], rng: &mut StdRng| {
        let mut v = src.to_vec();
        for _ in 0..rng.random_range(1..4) {
            if v.is_empty() {
                break;
            }
            let at = rng.random_range(0..v.len());
            match rng.random_range(0..5) {
                0 => v[at] ^= 1 << rng.random_range(0..8),
                1 => v.truncate(at),
                2 => {
                    let n = rng.random_range(1..600);
                    let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                    v.splice(at..at, junk);
                }
                3 => v[at] = [0, 0xff, 0x02, 0x01][rng.random_range(0..4)],
                _ => {
                    let e = (at + 2).min(v.len());
                    v[at..e].fill(0xff);
                }
            }
        }
        v
    };
    for n in 0..600 {
        let input = mutate(&ab, &mut rng);
        let allowed = rng.random_range(0..4u32);
        let mut r = Responder::new(allowed, vec![IH], &mut StdRng::seed_from_u64(2));
        let chunk = rng.random_range(1..700);
        for c in input.chunks(chunk) {
            if r.feed(c).is_err() {
                break;
            }
            if let Some(d) = r.take_done() {
                assert!(d.method & allowed != 0, "case {n}");
                break;
            }
        }
        let input = mutate(&ba, &mut rng);
        let mut i = initiator(1, both_rc4());
        i.take_output();
        for c in input.chunks(chunk) {
            if i.feed(c).is_err() {
                break;
            }
            if let Some(d) = i.take_done() {
                assert!(
                    matches!(d.method, CRYPTO_RC4 | CRYPTO_PLAINTEXT),
                    "case {n}"
                );
                break;
            }
        }
    }
}
