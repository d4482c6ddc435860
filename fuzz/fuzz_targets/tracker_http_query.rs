//! Arbitrary bytes into the tracker server's HTTP query parsers (`/announce` and `/scrape`
//! query strings, BEP 3/23/48) and the client's reply parsers (announce and scrape bodies,
//! compact v4/v6 peers). None may panic or over-allocate; an accepted announce must satisfy
//! the invariants the store relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use magnetfetch::tracker::http_proto::{
    self, parse_announce_query, parse_query, parse_scrape_query, MAX_QUERY_PARAMS,
    MAX_SCRAPE_HASHES,
};

fuzz_target!(|data: &[u8]| {
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
        assert!(h.len() <= MAX_SCRAPE_HASHES);
    }
    let _ = http_proto::parse_announce_response(data);
    let _ = http_proto::parse_scrape_response(data);
    let mut peers = Vec::new();
    http_proto::parse_compact_v4(data, &mut peers);
    http_proto::parse_compact_v6(data, &mut peers);
    assert!(peers.len() <= data.len() / 6 + data.len() / 18);
});
