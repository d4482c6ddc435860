//! The bodies of the two tracker fuzz targets, shared (through `#[path]`) by the cargo-fuzz
//! targets next to this directory and by the stable harness `tests/tracker/tracker_fuzz.rs`, which
//! runs them on mutated inputs without nightly or libFuzzer. Every function must hold for
//! *any* input: no panic, no over-allocation, the stated invariants.

use magnetfetch::internals::id::Id20;
use magnetfetch::internals::tracker::http_proto::{
    self, parse_announce_query, parse_query, parse_scrape_query, MAX_QUERY_PARAMS,
};
use magnetfetch::internals::tracker::udp_proto::{self, parse_request, Request, MAX_SCRAPE_HASHES};
use magnetfetch::internals::tracker::{AnnounceRequest, Event};

/// Arbitrary bytes into the tracker server's HTTP query parsers (`/announce` and `/scrape`
/// query strings, BEP 3/23/48) and the client's reply parsers (announce and scrape bodies,
/// compact v4/v6 peers). An accepted announce must satisfy the invariants the store relies on.
pub fn http_query(data: &[u8]) {
    if let Some(q) = parse_query(data) {
        assert!(q.len() <= MAX_QUERY_PARAMS);
        // Decoding never grows a component.
        for (k, v) in &q {
            assert!(k.len() + v.len() <= data.len());
        }
    }
    if let Ok(a) = parse_announce_query(data) {
        assert_ne!(a.port, 0);
    }
    if let Ok(h) = parse_scrape_query(data) {
        assert!(h.len() <= http_proto::MAX_SCRAPE_HASHES);
    }
    let _ = http_proto::parse_announce_response(data);
    let _ = http_proto::parse_scrape_response(data);
    let mut peers = Vec::new();
    http_proto::parse_compact_v4(data, &mut peers);
    http_proto::parse_compact_v6(data, &mut peers);
    assert!(peers.len() <= data.len() / 6 + data.len() / 18);
}

/// Arbitrary datagrams into the BEP 15 parsers: the server's request parser and the client's
/// connect/announce/scrape reply parsers. A parsed request re-encodes (for the client-side
/// encoders that exist) to a datagram that parses to the same request.
pub fn udp_request(data: &[u8]) {
    match parse_request(data) {
        Some(Request::Connect { tid }) => {
            assert_eq!(
                parse_request(&udp_proto::encode_connect(tid)),
                Some(Request::Connect { tid })
            );
        }
        Some(Request::Announce {
            conn_id,
            tid,
            info_hash,
            peer_id,
            downloaded,
            left,
            uploaded,
            event,
            key,
            numwant,
            port,
        }) => {
            let req = AnnounceRequest {
                info_hash,
                peer_id,
                port,
                uploaded,
                downloaded,
                left,
                event,
                numwant: u32::try_from(numwant).ok(),
                key,
                tracker_id: None,
            };
            let again = parse_request(&udp_proto::encode_announce(conn_id, tid, &req));
            match again {
                Some(Request::Announce {
                    info_hash: h,
                    port: p,
                    event: e,
                    ..
                }) => assert_eq!((h, p, e), (info_hash, port, event)),
                other => panic!("re-encoded announce parsed as {other:?}"),
            }
        }
        Some(Request::Scrape { hashes, .. }) => {
            assert!(!hashes.is_empty() && hashes.len() <= MAX_SCRAPE_HASHES);
        }
        None => {}
    }
    let tid = data.first().map_or(0, |&b| u32::from(b));
    let _ = udp_proto::parse_connect_response(data, tid);
    let _ = udp_proto::parse_announce_response(data, tid, false);
    let _ = udp_proto::parse_announce_response(data, tid, true);
    let hs = [Id20([1; 20]), Id20([2; 20])];
    let _ = udp_proto::parse_scrape_response(data, tid, &hs);
    let _ = Event::from_udp(tid);
}
