//! Web seed fetcher (BEP 19) against a tiny keep-alive HTTP server with Range support.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use magnetfetch::net::Net;
use magnetfetch::torrent::Layout;
use magnetfetch::webseed::{piece_ranges, WebSeedError, WebSeedFetcher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `files` (URL path -> bytes) with `Range: bytes=a-b`, keeping connections open.
async fn range_server(
    files: BTreeMap<String, Vec<u8>>,
    conns: Arc<AtomicUsize>,
) -> std::net::SocketAddr {
    let l = Net::Tokio
        .listen("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let files = Arc::new(files);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            conns.fetch_add(1, Ordering::SeqCst);
            let files = files.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut tmp = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let range = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Range: bytes="))
                        .and_then(|r| r.split_once('-'))
                        .map(|(a, b)| {
                            (
                                a.parse::<usize>().unwrap(),
                                b.trim().parse::<usize>().unwrap(),
                            )
                        });
                    let reply = match (files.get(&path), range) {
                        (Some(f), Some((a, b))) if b < f.len() => {
                            let body = &f[a..=b];
                            let mut r = format!(
                                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{}\r\n\r\n",
                                body.len(),
                                f.len()
                            )
                            .into_bytes();
                            r.extend_from_slice(body);
                            r
                        }
                        _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                    };
                    if s.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn multi_file_pieces_over_keep_alive() {
    let a: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let b: Vec<u8> = (0..7_000u32).map(|i| (i % 13) as u8).collect();
    let mut files = BTreeMap::new();
    files.insert("/seed/my%20dir/a.bin".to_string(), a.clone());
    files.insert("/seed/my%20dir/sub/b%20c.bin".to_string(), b.clone());
    let conns = Arc::new(AtomicUsize::new(0));
    let addr = range_server(files, conns.clone()).await;
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
        conns.load(Ordering::SeqCst),
        1,
        "one keep-alive connection for all pieces"
    );

    // A missing file is an error, not data.
    let bad = multi("nope");
    let r = f.fetch_piece(&piece_ranges(&base, &bad, 0).unwrap()).await;
    assert!(matches!(r, Err(WebSeedError::Status(404))), "{r:?}");
}
