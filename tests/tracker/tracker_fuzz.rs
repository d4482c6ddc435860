//! A stable-toolchain fuzz harness for the two tracker fuzz targets: the very same bodies as
//! `fuzz/fuzz_targets/tracker_{http_query,udp_request}.rs` (shared file
//! `fuzz/fuzz_targets/bodies/tracker.rs`), run on inputs mutated from valid seeds (bit flips,
//! byte overwrites with interesting values, inserts, deletes, truncation, splices, random
//! tails) with a seeded RNG, so a failure is reproducible from its iteration number.
//!
//! The default test runs a short burst (CI). A long run:
//! `MAGNETFETCH_FUZZ_SECS=120 cargo test --release --test tracker tracker_fuzz -- --ignored --nocapture`

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use magnetfetch::internals::id::Id20;
use magnetfetch::internals::tracker::http_proto;
use magnetfetch::internals::tracker::udp_proto;
use magnetfetch::internals::tracker::{AnnounceRequest, Event, ScrapeStats};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "../../fuzz/fuzz_targets/bodies/tracker.rs"]
mod bodies;

#[path = "../../fuzz/fuzz_targets/bodies/http.rs"]
mod http_bodies;

fn req(port: u16) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: Id20([0xab; 20]),
        peer_id: Id20(*b"-MF0001-abcdefghijkl"),
        port,
        uploaded: 1,
        downloaded: 2,
        left: 3,
        event: Event::Started,
        numwant: Some(50),
        key: 0x1234_5678,
        tracker_id: None,
    }
}

fn udp_seeds() -> Vec<Vec<u8>> {
    let v4: SocketAddr = "10.1.2.3:6881".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:6881".parse().unwrap();
    let mut a4 = Vec::new();
    udp_proto::encode_announce_response(&mut a4, 7, 1800, 1, 2, &[v4, v4], false);
    let mut a6 = Vec::new();
    udp_proto::encode_announce_response(&mut a6, 7, 1800, 1, 2, &[v6], true);
    vec![
        udp_proto::encode_connect(7).to_vec(),
        udp_proto::encode_announce(0x0102_0304_0506_0708, 7, &req(6881)).to_vec(),
        udp_proto::encode_scrape(9, 7, &[Id20([1; 20]), Id20([2; 20])]),
        udp_proto::encode_connect_response(7, 99).to_vec(),
        a4,
        a6,
        udp_proto::encode_scrape_response(7, &[ScrapeStats::default(); 2]),
        udp_proto::encode_error(7, "nope"),
    ]
}

fn http_seeds() -> Vec<Vec<u8>> {
    let v4: SocketAddr = "10.1.2.3:6881".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:6881".parse().unwrap();
    let url = http_proto::announce_url("http://t/announce", &req(6881));
    let query = url.split_once('?').unwrap().1.as_bytes().to_vec();
    let scrape =
        http_proto::scrape_url("http://t/announce", &[Id20([1; 20]), Id20([2; 20])]).unwrap();
    let squery = scrape.split_once('?').unwrap().1.as_bytes().to_vec();
    vec![
        query,
        squery,
        http_proto::encode_announce_reply(1800, 1, 2, &[(v4, None), (v6, None)], true),
        http_proto::encode_announce_reply(
            1800,
            1,
            2,
            &[(v4, Some(Id20([5; 20]))), (v6, Some(Id20([6; 20])))],
            false,
        ),
        http_proto::encode_scrape_reply(&[(Id20([1; 20]), ScrapeStats::default())]),
        http_proto::encode_failure("go away"),
    ]
}

const INTERESTING: [u8; 12] = [
    0, 1, 0x7f, 0x80, 0xff, b'e', b'i', b'd', b'l', b':', b'%', b'&',
];

/// One random mutation of `x` (possibly splicing in part of `other`).
fn mutate(rng: &mut StdRng, x: &mut Vec<u8>, other: &[u8]) {
    match rng.random_range(0..8) {
        0 if !x.is_empty() => {
            let i = rng.random_range(0..x.len());
            x[i] ^= 1 << rng.random_range(0..8);
        }
        1 if !x.is_empty() => {
            let i = rng.random_range(0..x.len());
            x[i] = INTERESTING[rng.random_range(0..INTERESTING.len())];
        }
        2 => {
            let i = rng.random_range(0..=x.len());
            let n = rng.random_range(1..=8);
            for _ in 0..n {
                x.insert(i, rng.random());
            }
        }
        3 if !x.is_empty() => {
            let i = rng.random_range(0..x.len());
            let n = rng.random_range(1..=(x.len() - i).min(16));
            x.drain(i..i + n);
        }
        4 => {
            let n = rng.random_range(0..=x.len());
            x.truncate(n);
        }
        5 if !other.is_empty() => {
            let a = rng.random_range(0..other.len());
            let b = rng.random_range(a..=other.len());
            let i = rng.random_range(0..=x.len());
            x.splice(i..i, other[a..b].iter().copied());
        }
        6 => {
            let n = rng.random_range(0..64);
            x.extend((0..n).map(|_| rng.random::<u8>()));
        }
        _ if x.len() >= 4 => {
            // Overwrite a 32-bit big-endian field with an edge value (lengths, counts, actions).
            let i = rng.random_range(0..x.len() - 3);
            let v: u32 = [0, 1, 2, 3, 0x7fff_ffff, 0x8000_0000, u32::MAX][rng.random_range(0..7)];
            x[i..i + 4].copy_from_slice(&v.to_be_bytes());
        }
        _ => x.push(rng.random()),
    }
}

/// Runs `body` on `iters` mutated inputs (or until `budget` passes); returns inputs run.
fn run(
    name: &str,
    seeds: &[Vec<u8>],
    body: fn(&[u8]),
    seed: u64,
    iters: u64,
    budget: Duration,
) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    for s in seeds {
        body(s);
    }
    let mut n = 0;
    while n < iters && start.elapsed() < budget {
        let mut x = seeds[rng.random_range(0..seeds.len())].clone();
        let other = &seeds[rng.random_range(0..seeds.len())];
        for _ in 0..rng.random_range(1..=6) {
            mutate(&mut rng, &mut x, other);
        }
        if catch_unwind(AssertUnwindSafe(|| body(&x))).is_err() {
            panic!(
                "{name}: crash at iteration {n} (seed {seed}), input {}",
                hex::encode(&x)
            );
        }
        n += 1;
    }
    n
}

/// Response heads and chunked bodies for `http_response` (first two bytes: feed step and
/// body limit, see the body).
fn http_response_seeds() -> Vec<Vec<u8>> {
    let with = |step: u8, limit: u8, rest: &[u8]| [&[step, limit][..], rest].concat();
    vec![
        with(3, 4, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nT: 1\r\n\r\nNEXT"),
        with(1, 1, b"HTTP/1.0 206 Partial Content\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"),
        with(7, 0, b"HTTP/1.1 204 No Content\r\n\r\n"),
        with(2, 255, b"ffffffffffffffff\r\n"),
        with(5, 2, b"10\r\n0123456789abcdef\r\n0\r\n\r\n"),
    ]
}

/// The HTTP client's response-head parser and chunked decoder (`fuzz_targets/http_response.rs`).
#[test]
fn http_response_fuzz_burst() {
    let n = run(
        "http_response",
        &http_response_seeds(),
        http_bodies::http_response,
        3,
        20_000,
        Duration::from_secs(20),
    );
    assert!(n > 0);
}

#[test]
fn short_fuzz_bursts() {
    let n = run(
        "udp_request",
        &udp_seeds(),
        bodies::udp_request,
        1,
        20_000,
        Duration::from_secs(20),
    );
    assert!(n > 0);
    let n = run(
        "http_query",
        &http_seeds(),
        bodies::http_query,
        2,
        20_000,
        Duration::from_secs(20),
    );
    assert!(n > 0);
}

#[test]
#[ignore = "long fuzz run: MAGNETFETCH_FUZZ_SECS=120 ... -- --ignored --nocapture"]
fn long_fuzz_run() {
    let secs: u64 = std::env::var("MAGNETFETCH_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("MAGNETFETCH_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42);
    let budget = Duration::from_secs(secs);
    let t = Instant::now();
    let n = run(
        "udp_request",
        &udp_seeds(),
        bodies::udp_request,
        seed,
        u64::MAX,
        budget,
    );
    println!("udp_request: {n} inputs in {:.0?}, no crash", t.elapsed());
    let t = Instant::now();
    let n = run(
        "http_query",
        &http_seeds(),
        bodies::http_query,
        seed + 1,
        u64::MAX,
        budget,
    );
    println!("http_query: {n} inputs in {:.0?}, no crash", t.elapsed());
    let t = Instant::now();
    let n = run(
        "http_response",
        &http_response_seeds(),
        http_bodies::http_response,
        seed + 2,
        u64::MAX,
        budget,
    );
    println!("http_response: {n} inputs in {:.0?}, no crash", t.elapsed());
}
