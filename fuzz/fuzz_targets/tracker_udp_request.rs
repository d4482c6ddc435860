//! Arbitrary datagrams into the BEP 15 parsers: the server's request parser and the client's
//! connect/announce/scrape reply parsers. None may panic; a parsed request re-encodes (for
//! the client-side encoders that exist) to a datagram that parses to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use magnetfetch::id::Id20;
use magnetfetch::tracker::udp_proto::{self, parse_request, Request, MAX_SCRAPE_HASHES};
use magnetfetch::tracker::{AnnounceRequest, Event};

fuzz_target!(|data: &[u8]| {
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
});
