//! Interop on loopback: a libtorrent seeder (DHT off) announcing to `magnetfetch tracker` over
//! HTTP and UDP is seen by our scrape and handed out by our announce; our client announcing to
//! opentracker over HTTP and UDP. Missing tools print a loud SKIP, and fail under
//! MAGNETFETCH_REQUIRE_INTEROP=1.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use magnetfetch::internals::id::Id20;
use magnetfetch::internals::net::Net;
use magnetfetch::internals::tracker::store::StoreConfig;
use magnetfetch::internals::tracker::udp_proto::RetrySchedule;
use magnetfetch::internals::tracker::{
    AnnounceRequest, ClientConfig, Event, ServerConfig, TrackerClient, TrackerServer,
};

use crate::support::{free_port, lt_command, require_or_skip, Proc};

fn client() -> TrackerClient {
    TrackerClient::new(
        Net::Tokio,
        ClientConfig {
            http_timeout: Duration::from_secs(5),
            udp_retry: RetrySchedule {
                base: Duration::from_millis(500),
                max_n: 3,
            },
            bind_ip: Some("127.0.0.1".parse().unwrap()),
            seed: 9,
            ..ClientConfig::default()
        },
    )
}

fn req(h: Id20, port: u16, left: u64) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: h,
        peer_id: Id20(*b"-MF0001-interoptest1"),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event: Event::Started,
        numwant: Some(50),
        key: 1,
        tracker_id: None,
    }
}

async fn libtorrent_seeder_is_tracked(scheme: &str) {
    if !require_or_skip("libtorrent") {
        return;
    }
    let server = TrackerServer::start(
        Net::Tokio,
        ServerConfig {
            http: Some("127.0.0.1:0".parse().unwrap()),
            udp: Some("127.0.0.1:0".parse().unwrap()),
            store: StoreConfig {
                interval: Duration::from_secs(60),
                per_ip_rate: 0.0,
                ..StoreConfig::default()
            },
            conn_key: rand::random(),
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let url = match scheme {
        "http" => format!("http://{}/announce", server.http_addr.unwrap()),
        _ => format!("udp://{}/announce", server.udp_addr.unwrap()),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut child = lt_command("tracker-announce-seed")
        .args([dir.path().to_str().unwrap(), &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _k = Proc(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut l = String::new();
        BufReader::new(stdout).read_line(&mut l).map(|_| l)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), line)
        .await
        .expect("seeder start")
        .unwrap()
        .unwrap();
    let mut parts = line.split_whitespace();
    let h = Id20::from_hex(parts.next().expect("info-hash")).unwrap();
    let lt_port: u16 = parts.next().expect("port").parse().unwrap();

    let c = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let sc = c.scrape(&url, &[h]).await.unwrap();
        if sc.get(&h).is_some_and(|s| s.complete == 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "libtorrent seeder never showed up in scrape over {scheme}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Our own leecher's announce gets the libtorrent seeder back.
    let r = c.announce(&url, &req(h, 40000, 100)).await.unwrap();
    assert!(
        r.peers
            .contains(&SocketAddr::from(([127, 0, 0, 1], lt_port))),
        "{:?} lacks {lt_port}",
        r.peers
    );
    assert_eq!(r.complete, Some(1));
}

#[tokio::test]
async fn libtorrent_seeder_announces_to_us_over_http() {
    libtorrent_seeder_is_tracked("http").await;
}

#[tokio::test]
async fn libtorrent_seeder_announces_to_us_over_udp() {
    libtorrent_seeder_is_tracked("udp").await;
}

#[tokio::test]
async fn our_client_announces_to_opentracker() {
    if !require_or_skip("opentracker") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // opentracker drops to user nobody and chroots: the directory must be world-readable.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let h = Id20([0x42; 20]);
    std::fs::write(dir.path().join("white"), format!("{}\n", h.to_hex())).unwrap();
    let port = free_port();
    let child = Command::new("opentracker")
        .current_dir(dir.path())
        // It chroots into -d before reading the whitelist, so the path is chroot-relative.
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-P",
            &port.to_string(),
            "-d",
            dir.path().to_str().unwrap(),
            "-w",
            "/white",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _k = Proc(child);
    let c = client();
    for (i, url) in [
        format!("http://127.0.0.1:{port}/announce"),
        format!("udp://127.0.0.1:{port}/announce"),
    ]
    .iter()
    .enumerate()
    {
        let seed_port = 41000 + i as u16 * 10;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // opentracker needs a moment to bind.
        let r1 = loop {
            match c.announce(url, &req(h, seed_port, 0)).await {
                Ok(r) => break r,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("waiting for opentracker: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{url}: {e}"),
            }
        };
        assert!(r1.interval > 0);
        let mut leech = req(h, seed_port + 1, 100);
        leech.peer_id = Id20(*b"-MF0001-interoptest2");
        let r2 = c.announce(url, &leech).await.unwrap();
        assert!(
            r2.peers
                .contains(&SocketAddr::from(([127, 0, 0, 1], seed_port))),
            "{url}: {:?}",
            r2.peers
        );
        let sc = c.scrape(url, &[h]).await.unwrap();
        assert!(sc[&h].complete >= 1, "{url}: {:?}", sc);
    }
    // Not on the allow-list: opentracker refuses, and we surface its reason.
    let r = c
        .announce(
            &format!("http://127.0.0.1:{port}/announce"),
            &req(Id20([1; 20]), 1, 0),
        )
        .await;
    assert!(r.is_err(), "{r:?}");
}

#[tokio::test]
async fn libtorrent_leecher_finds_libtorrent_seeder_through_us() {
    if !require_or_skip("libtorrent") {
        return;
    }
    let server = TrackerServer::start(
        Net::Tokio,
        ServerConfig {
            udp: Some("127.0.0.1:0".parse().unwrap()),
            store: StoreConfig {
                interval: Duration::from_secs(60),
                per_ip_rate: 0.0,
                ..StoreConfig::default()
            },
            conn_key: rand::random(),
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let url = format!("udp://{}/announce", server.udp_addr.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        lt_command("tracker-swarm")
            .args([&d, &url])
            .stderr(Stdio::inherit())
            .output()
    });
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("swarm finished")
        .unwrap()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = line.split_whitespace();
    let h = Id20::from_hex(parts.next().expect("info-hash")).unwrap();
    assert_eq!(
        parts.next(),
        Some("ok"),
        "libtorrent leecher did not complete: {line}"
    );
    // The seeder announced to us; the leecher was tracked too.
    let st = server.stats(&h);
    assert!(st.complete >= 1, "{st:?}");
    assert!(st.complete + st.incomplete >= 2, "{st:?}");
}
