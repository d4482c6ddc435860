//! Our tracker client against our tracker server on loopback, over HTTP and UDP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use magnetfetch::internals::id::Id20;
use magnetfetch::internals::net::Net;
use magnetfetch::internals::tracker::client::{AnnounceParams, Progress};
use magnetfetch::internals::tracker::store::StoreConfig;
use magnetfetch::internals::tracker::tier::Tiers;
use magnetfetch::internals::tracker::udp_proto::RetrySchedule;
use magnetfetch::internals::tracker::{
    AnnounceRequest, ClientConfig, Event, ServerConfig, TrackerClient, TrackerError, TrackerEvent,
    TrackerServer, TrackerSet,
};
use rand::SeedableRng;

async fn server(interval: u64, allow: Option<Vec<Id20>>) -> TrackerServer {
    let cfg = ServerConfig {
        http: Some("127.0.0.1:0".parse().unwrap()),
        udp: Some("127.0.0.1:0".parse().unwrap()),
        allow: allow.map(|v| v.into_iter().collect()),
        store: StoreConfig {
            interval: Duration::from_secs(interval),
            per_ip_rate: 0.0,
            ..StoreConfig::default()
        },
        conn_key: [3; 16],
        ..ServerConfig::default()
    };
    TrackerServer::start(Net::Tokio, cfg).await.unwrap()
}

fn client() -> TrackerClient {
    TrackerClient::new(
        Net::Tokio,
        ClientConfig {
            http_timeout: Duration::from_secs(5),
            udp_retry: RetrySchedule {
                base: Duration::from_millis(500),
                max_n: 2,
            },
            bind_ip: Some("127.0.0.1".parse().unwrap()),
            seed: 1,
            ..ClientConfig::default()
        },
    )
}

fn req(h: Id20, id: u8, port: u16, left: u64) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: h,
        peer_id: Id20([id; 20]),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event: Event::Started,
        numwant: Some(50),
        key: u32::from(id),
        tracker_id: None,
    }
}

fn urls(s: &TrackerServer) -> [String; 2] {
    [
        format!("http://{}/announce", s.http_addr.unwrap()),
        format!("udp://{}/announce", s.udp_addr.unwrap()),
    ]
}

#[tokio::test]
async fn announce_and_scrape_over_http_and_udp() {
    let s = server(60, None).await;
    let c = client();
    for (i, url) in urls(&s).iter().enumerate() {
        let h = Id20([i as u8 + 1; 20]);
        let r1 = c.announce(url, &req(h, 1, 1001, 0)).await.unwrap();
        assert!(r1.peers.is_empty(), "{url}");
        assert_eq!(r1.interval, 60);
        let r2 = c.announce(url, &req(h, 2, 1002, 100)).await.unwrap();
        assert_eq!(
            r2.peers,
            vec![SocketAddr::from(([127, 0, 0, 1], 1001))],
            "{url}"
        );
        assert_eq!((r2.complete, r2.incomplete), (Some(1), Some(1)), "{url}");
        let sc = c.scrape(url, &[h, Id20([99; 20])]).await.unwrap();
        assert_eq!(sc[&h].complete, 1, "{url}");
        assert_eq!(sc[&h].incomplete, 1, "{url}");
        assert_eq!(sc[&Id20([99; 20])].complete, 0, "{url}");
        let mut stop = req(h, 2, 1002, 100);
        stop.event = Event::Stopped;
        c.announce(url, &stop).await.unwrap();
        assert_eq!(s.stats(&h).incomplete, 0, "{url}");
    }
}

#[tokio::test]
async fn allow_list_refusal_is_a_failure() {
    let s = server(60, Some(vec![Id20([1; 20])])).await;
    let c = client();
    for url in urls(&s) {
        match c.announce(&url, &req(Id20([2; 20]), 1, 1001, 0)).await {
            Err(TrackerError::Failure(m)) => assert!(m.contains("allow"), "{m}"),
            other => panic!("{url}: {other:?}"),
        }
        assert!(c
            .announce(&url, &req(Id20([1; 20]), 1, 1001, 0))
            .await
            .is_ok());
    }
}

#[tokio::test]
async fn malformed_http_gets_bencoded_failure() {
    let s = server(60, None).await;
    let url = format!(
        "http://{}/announce?info_hash=short&port=1",
        s.http_addr.unwrap()
    );
    let r =
        magnetfetch::internals::http::get_url(&Net::Tokio, &url, 1 << 16, Duration::from_secs(5))
            .await
            .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.body.starts_with(b"d14:failure reason"),
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
}

#[tokio::test]
async fn udp_to_dead_tracker_times_out_with_backoff() {
    // Bind a socket that never answers.
    let sock = Net::Tokio
        .bind_udp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("udp://{}/announce", sock.local_addr().unwrap());
    let t0 = tokio::time::Instant::now();
    let r = client().announce(&url, &req(Id20([1; 20]), 1, 1, 0)).await;
    assert!(matches!(r, Err(TrackerError::Timeout)), "{r:?}");
    // 0.5 + 1 + 2 seconds of back-off.
    assert!(
        t0.elapsed() >= Duration::from_millis(3400),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn tracker_set_feeds_peers_and_reports_errors_once() {
    let s = server(60, None).await;
    let h = Id20([7; 20]);
    let c = Arc::new(client());
    // A peer already in the swarm.
    c.announce(&urls(&s)[0], &req(h, 1, 2001, 0)).await.unwrap();
    let dead = "http://127.0.0.1:1/announce".to_string();
    let tiers = Tiers::new(
        vec![vec![dead.clone()], vec![urls(&s)[1].clone()]],
        &mut rand::rngs::StdRng::seed_from_u64(0),
    );
    let (ptx, mut prx) = tokio::sync::mpsc::channel(16);
    let (etx, mut erx) = tokio::sync::mpsc::channel(16);
    let (_progress_tx, progress) = tokio::sync::watch::channel(Progress {
        uploaded: 0,
        downloaded: 0,
        left: 10,
    });
    let params = AnnounceParams {
        info_hash: h,
        peer_id: Id20([2; 20]),
        port: 2002,
        key: 5,
        numwant: None,
    };
    let handle = TrackerSet::spawn(c, tiers, params, progress, ptx, Some(etx));
    let p = tokio::time::timeout(Duration::from_secs(10), prx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p, SocketAddr::from(([127, 0, 0, 1], 2001)));
    let mut got_err = false;
    let mut got_ok = false;
    while !(got_err && got_ok) {
        match tokio::time::timeout(Duration::from_secs(10), erx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            TrackerEvent::Error { url, .. } => {
                assert_eq!(url, dead);
                got_err = true;
            }
            TrackerEvent::Ok { seeders, .. } => {
                assert_eq!(seeders, Some(1));
                got_ok = true;
            }
        }
    }
    assert_eq!(s.stats(&h).incomplete, 1);
    handle.stop().await;
    assert_eq!(s.stats(&h).incomplete, 0, "stopped was sent");
}

#[tokio::test]
async fn torrents_dir_is_served_with_index() {
    let dir = tempfile::tempdir().unwrap();
    let info =
        b"d6:lengthi12345e4:name8:<b>x.iso12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
    let mut file = b"d8:announce4:none4:info".to_vec();
    file.extend_from_slice(info);
    file.push(b'e');
    std::fs::write(dir.path().join("x.torrent"), &file).unwrap();
    std::fs::write(dir.path().join("junk.torrent"), b"not bencode").unwrap();
    let h = {
        use sha1::Digest;
        Id20(sha1::Sha1::digest(info).into())
    };
    let cfg = ServerConfig {
        http: Some("127.0.0.1:0".parse().unwrap()),
        udp: Some("127.0.0.1:0".parse().unwrap()),
        torrents_dir: Some(dir.path().to_path_buf()),
        store: StoreConfig {
            per_ip_rate: 0.0,
            ..StoreConfig::default()
        },
        ..ServerConfig::default()
    };
    let s = TrackerServer::start(Net::Tokio, cfg).await.unwrap();
    client()
        .announce(&urls(&s)[0], &req(h, 1, 3001, 0))
        .await
        .unwrap();
    let base = format!("http://{}", s.http_addr.unwrap());
    let get = |p: &str| {
        let u = format!("{base}{p}");
        async move {
            magnetfetch::internals::http::get_url(&Net::Tokio, &u, 1 << 20, Duration::from_secs(5))
                .await
                .unwrap()
        }
    };
    let idx = get("/").await;
    let page = String::from_utf8(idx.body).unwrap();
    assert!(page.contains("&lt;b&gt;x.iso"), "{page}");
    assert!(
        page.contains("<td>12345</td><td>1</td><td>0</td>"),
        "{page}"
    );
    assert!(
        page.contains(&format!("xt=urn:btih:{}", h.to_hex())),
        "{page}"
    );
    assert!(!page.contains("junk"), "{page}");
    let t = get("/x.torrent").await;
    assert_eq!(t.status, 200);
    assert_eq!(t.header("content-type"), Some("application/x-bittorrent"));
    assert_eq!(t.body, file);
    assert_eq!(get("/..%2Fx.torrent").await.status, 404);
    assert_eq!(get("/junk.torrent").await.status, 404);
}

/// Slowloris attackers: `n` connections spread over `sources`, each sending a request head
/// one byte every 100 ms that never ends, and coming back when closed. Dropping the handle
/// stops them.
struct Slowloris(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Slowloris {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn slowloris(target: SocketAddr, sources: &[std::net::Ipv4Addr], n: usize) -> Slowloris {
    use tokio::io::AsyncWriteExt;
    Slowloris(
        (0..n)
            .map(|i| {
                let src = sources[i % sources.len()];
                tokio::spawn(async move {
                    loop {
                        let sock = tokio::net::TcpSocket::new_v4().unwrap();
                        sock.bind(SocketAddr::new(src.into(), 0)).unwrap();
                        let since = std::time::Instant::now();
                        if let Ok(mut c) = sock.connect(target).await {
                            let mut open = c.write_all(b"GET /announce?info_hash=").await.is_ok();
                            while open {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                open = c.write_all(b"a").await.is_ok();
                            }
                        }
                        // A closed attacker comes back at once, but not in a busy loop when
                        // it is turned away on arrival (2 cores).
                        if since.elapsed() < Duration::from_secs(1) {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                })
            })
            .collect(),
    )
}

/// Waits (at most 5 s) until the server holds `n` HTTP connections: the attack took hold.
async fn attack_holds(s: &TrackerServer, n: usize) {
    let t = std::time::Instant::now();
    while s.http_connections() < n && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Attackers turned away keep coming back meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The longest of 10 announces from 127.0.0.1 (each must succeed within 2 s).
async fn worst_announce(http: SocketAddr) -> Duration {
    let c = TrackerClient::new(
        Net::Tokio,
        ClientConfig {
            http_timeout: Duration::from_secs(2),
            bind_ip: Some("127.0.0.1".parse().unwrap()),
            seed: 1,
            ..ClientConfig::default()
        },
    );
    let url = format!("http://{http}/announce");
    let mut worst = Duration::ZERO;
    for i in 0..10u8 {
        let t = std::time::Instant::now();
        let r = c
            .announce(&url, &req(Id20([9; 20]), i, 2000 + u16::from(i), 0))
            .await;
        let took = t.elapsed();
        assert!(r.is_ok(), "announce {i} under attack: {r:?} after {took:?}");
        worst = worst.max(took);
    }
    worst
}

/// Slowloris: 500 connections from four other loopback addresses
/// (127.0.0.2–127.0.0.5). Announces from 127.0.0.1 must still be answered at once: the
/// per-address cap keeps the four attackers to 4 × 32 of the 256 slots. Before the cap they
/// held every slot for the whole 10 s head timeout and an announce waited ~9 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announces_answered_under_slowloris() {
    let s = server(60, None).await;
    let http = s.http_addr.unwrap();
    let sources: Vec<std::net::Ipv4Addr> = (2..6).map(|i| [127, 0, 0, i].into()).collect();
    let attack = slowloris(http, &sources, 500);
    attack_holds(&s, 4 * 32).await;
    let worst = worst_announce(http).await;
    let conns = s.http_connections();
    drop(attack);
    eprintln!("slowloris: worst announce {worst:?}, {conns} connections held by the server");
    assert!(
        worst < Duration::from_millis(100),
        "worst announce {worst:?}"
    );
    // The attack was real: the attackers held every slot the cap allows them.
    assert!(conns >= 4 * 32, "only {conns} connections held");
    assert!(
        conns <= 4 * 32 + 1,
        "{conns} connections: per-address cap not applied"
    );
}

/// The same with 300 connections from 30 addresses, 10 each: under the per-address cap, they
/// fill all 256 slots. A new connection then evicts the oldest one still sending its head
/// from the busiest address, so announces are still answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announces_answered_when_slowloris_fills_every_slot() {
    let s = server(60, None).await;
    let http = s.http_addr.unwrap();
    let sources: Vec<std::net::Ipv4Addr> = (1..31).map(|i| [127, 0, 1, i].into()).collect();
    let attack = slowloris(http, &sources, 300);
    attack_holds(&s, 256).await;
    let full = s.http_connections();
    let worst = worst_announce(http).await;
    drop(attack);
    eprintln!("slowloris from 30 addresses: worst announce {worst:?}, {full} connections held");
    assert_eq!(full, 256, "the attack did not fill the table");
    assert!(
        worst < Duration::from_millis(100),
        "worst announce {worst:?}"
    );
}
