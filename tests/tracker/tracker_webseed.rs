//! Web seed fetcher (BEP 19) against a tiny keep-alive HTTP server with Range support.

use std::collections::BTreeMap;
use std::time::Duration;

use magnetfetch::internals::net::Net;
use magnetfetch::internals::torrent::Layout;
use magnetfetch::internals::webseed::{piece_ranges, WebSeedError, WebSeedFetcher};

use crate::support::range_server_logged;

#[tokio::test]
async fn multi_file_pieces_over_keep_alive() {
    let a: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let b: Vec<u8> = (0..7_000u32).map(|i| (i % 13) as u8).collect();
    let mut files = BTreeMap::new();
    files.insert("/seed/my%20dir/a.bin".to_string(), a.clone());
    files.insert("/seed/my%20dir/sub/b%20c.bin".to_string(), b.clone());
    let (addr, conns) = range_server_logged("127.0.0.1", files);
    let multi = |name: &str| {
        let mut l = Layout::builder(4096, Some(name)).unwrap();
        l.push(["a.bin"], a.len() as u64, false)
            .push(["sub", "b c.bin"], b.len() as u64, false);
        l.build().unwrap()
    };
    let layout = multi("my dir");
    let whole: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
    let base = format!("http://{addr}/seed/");
    let mut f = WebSeedFetcher::new(Net::Tokio, Duration::from_secs(5));
    let pieces = whole.len().div_ceil(4096) as u32;
    let mut got = Vec::new();
    for p in 0..pieces {
        let ranges = piece_ranges(&base, &layout, p).unwrap();
        got.extend(f.fetch_piece(&ranges).await.unwrap());
    }
    assert_eq!(got, whole);
    assert_eq!(
        conns.lock().unwrap().len(),
        1,
        "one keep-alive connection for all pieces"
    );

    // A missing file is an error, not data.
    let bad = multi("nope");
    let r = f.fetch_piece(&piece_ranges(&base, &bad, 0).unwrap()).await;
    assert!(matches!(r, Err(WebSeedError::Status(404))), "{r:?}");
}
