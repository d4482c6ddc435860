//! A stable-toolchain fuzz harness for the `portmap_replies` fuzz target: the same body
//! (`fuzz/fuzz_targets/bodies/portmap.rs`), run on inputs mutated from valid SSDP replies,
//! device descriptions, SOAP replies and faults, NAT-PMP and PCP replies (bit flips,
//! interesting bytes, inserts, deletes, truncation, splices, duplicated spans) with a seeded
//! RNG, so a failure is reproducible from its iteration number.
//!
//! The default test runs a short burst. A long run:
//! `MAGNETFETCH_FUZZ_SECS=120 cargo test --release --test portmap portmap_fuzz -- --ignored --nocapture`

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "../../fuzz/fuzz_targets/bodies/portmap.rs"]
mod bodies;

fn seeds() -> Vec<Vec<u8>> {
    let desc = br#"<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><URLBase>http://192.168.1.1:5000/</URLBase><device><deviceList><device><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>/ctl/IPConn</controlURL></service><service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType><controlURL>ctl/PPP</controlURL></service></serviceList></device></deviceList></device></root>"#;
    let ok = br#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewExternalIPAddress>203.0.113.5</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>"#;
    let fault = br#"<s:Envelope><s:Body><s:Fault><faultcode>s:Client</faultcode><detail><UPnPError><errorCode>718</errorCode><errorDescription>Conflict &amp; more &#x41;</errorDescription></UPnPError></detail></s:Fault></s:Body><!-- c --><![CDATA[x]]></s:Envelope>"#;
    let ssdp = b"HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n";
    let mut pcp_map = vec![2, 0x81, 0, 0, 0, 0, 0x1c, 0x20, 0, 0, 0, 9];
    pcp_map.extend_from_slice(&[0; 12]);
    pcp_map.extend_from_slice(&[7; 12]);
    pcp_map.extend_from_slice(&[6, 0, 0, 0, 0x1a, 0xe1, 0x1a, 0xe1]);
    pcp_map.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 9]);
    let routes = b"Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\neth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n";
    let mut out: Vec<Vec<u8>> = vec![
        desc.to_vec(),
        ok.to_vec(),
        fault.to_vec(),
        ssdp.to_vec(),
        pcp_map,
        vec![0, 128, 0, 0, 0, 0, 0, 9, 203, 0, 113, 7],
        vec![
            0, 130, 0, 0, 0, 0, 1, 0, 0x1a, 0xe1, 0x1a, 0xe2, 0, 0, 0, 60,
        ],
        vec![0, 128, 0, 1, 0, 0, 0, 0],
        routes.to_vec(),
    ];
    // Every seed once read as a SOAP fault (status byte >= 128), once as a 200.
    out = out
        .into_iter()
        .flat_map(|s| {
            let mut a = vec![0u8];
            a.extend_from_slice(&s);
            let mut b = vec![200u8];
            b.extend_from_slice(&s);
            [a, b]
        })
        .collect();
    out
}

const INTERESTING: [u8; 12] = [
    0, 1, 0x7f, 0x80, 0xff, b'<', b'>', b'/', b'&', b';', b'"', b':',
];

fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..6) {
        let len = d.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                d[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                d[i] = INTERESTING[rng.random_range(0..INTERESTING.len())];
            }
            2 => {
                let i = rng.random_range(0..=len);
                d.insert(i, INTERESTING[rng.random_range(0..INTERESTING.len())]);
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(16));
                d.drain(i..i + n);
            }
            4 => d.truncate(rng.random_range(0..=len)),
            5 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let cut = rng.random_range(0..=len);
                let from = rng.random_range(0..=other.len());
                d.truncate(cut);
                d.extend_from_slice(&other[from..]);
            }
            6 if len > 1 => {
                // A duplicated span: nests elements deeper, repeats headers.
                let i = rng.random_range(0..len);
                let n = rng.random_range(1..=(len - i).min(64));
                let span = d[i..i + n].to_vec();
                for _ in 0..rng.random_range(1..40) {
                    d.splice(i..i, span.iter().copied());
                }
            }
            _ => {
                let n = rng.random_range(0..8);
                d.extend((0..n).map(|_| rng.random::<u8>()));
            }
        }
    }
    d
}

fn run(iterations: u64, budget: Duration) -> u64 {
    let seeds = seeds();
    for s in &seeds {
        bodies::portmap_replies(s);
    }
    let start = Instant::now();
    let mut n = 0;
    while n < iterations && start.elapsed() < budget {
        let mut rng = StdRng::seed_from_u64(n);
        let input = mutate(&mut rng, &seeds);
        let r = catch_unwind(AssertUnwindSafe(|| bodies::portmap_replies(&input)));
        assert!(r.is_ok(), "iteration {n}: input {input:?}");
        n += 1;
    }
    n
}

#[test]
fn portmap_replies_short_burst() {
    let n = run(30_000, Duration::from_secs(20));
    assert!(n >= 1_000, "only {n} iterations");
}

#[test]
#[ignore]
fn portmap_replies_long_run() {
    let secs = std::env::var("MAGNETFETCH_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let n = run(u64::MAX, Duration::from_secs(secs));
    println!("portmap_replies: {n} inputs, clean");
}
