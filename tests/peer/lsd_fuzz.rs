//! A stable-toolchain fuzz harness for the `lsd_announce` fuzz target: the very same body
//! (`fuzz/fuzz_targets/bodies/lsd.rs`) run on announces mutated from valid ones (bit flips,
//! interesting bytes, inserted header lines, truncation, repeats) with a seeded RNG, so a
//! failure is reproducible from its iteration number.

use magnetfetch::internals::id::Id20;
use magnetfetch::internals::lsd::{encode, GROUP_V4, GROUP_V6};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "../../fuzz/fuzz_targets/bodies/lsd.rs"]
mod bodies;

fn seeds() -> Vec<Vec<u8>> {
    let hashes: Vec<Id20> = (0..30u8).map(|i| Id20([i; 20])).collect();
    let mut v = encode(GROUP_V4, 6881, &hashes[..1], "c00k1e");
    v.extend(encode(GROUP_V6, 1, &hashes, ""));
    v.push(b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 44535\r\nInfohash: a5b2cb1aa7163a4fa91b74291e2277617a3f79fc\r\ncookie: 3810f850\r\n\r\n\r\n".to_vec());
    v
}

const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b":",
    b"Port: 0\r\n",
    b"Port: 65536\r\n",
    b"Infohash: ",
    b"cookie: \x00\r\n",
    b"\xff\xfe",
    b" ",
];

fn mutate(rng: &mut StdRng, mut d: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..6) {
        match rng.random_range(0..6) {
            0 if !d.is_empty() => {
                let i = rng.random_range(0..d.len());
                d[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !d.is_empty() => {
                let i = rng.random_range(0..d.len());
                d[i] = [0u8, b'\r', b'\n', b':', b'0', b'f', 0xff][rng.random_range(0..7)];
            }
            2 => {
                let i = rng.random_range(0..=d.len());
                let s = INTERESTING[rng.random_range(0..INTERESTING.len())];
                d.splice(i..i, s.iter().copied());
            }
            3 => {
                let n = rng.random_range(0..=d.len());
                d.truncate(n);
            }
            4 if d.len() < 4096 => {
                let copy = d.clone();
                d.extend_from_slice(&copy);
            }
            _ => {}
        }
    }
    d
}

#[test]
fn lsd_announce_fuzz_burst() {
    let seeds = seeds();
    for s in &seeds {
        bodies::announce(s);
    }
    let mut rng = StdRng::seed_from_u64(0x15d);
    for i in 0..20_000u32 {
        let base = seeds[rng.random_range(0..seeds.len())].clone();
        let input = mutate(&mut rng, base);
        let r = std::panic::catch_unwind(|| bodies::announce(&input));
        assert!(
            r.is_ok(),
            "iteration {i}: input {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}
