//! Benchmark, not a test (ignored by default): UDP announce responses per second of our tracker
//! and of opentracker, driven by the same load generator. Run with
//! `cargo test --release --test tracker_bench -- --ignored --nocapture`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use magnetfetch::id::Id20;
use magnetfetch::net::Net;
use magnetfetch::tracker::store::StoreConfig;
use magnetfetch::tracker::udp_proto;
use magnetfetch::tracker::{AnnounceRequest, Event, ServerConfig, TrackerServer};

const SOCKETS: usize = 8;
const WINDOW: usize = 32;
const HASHES: u32 = 1000;
const SECS: u64 = 5;

fn hash(i: u32) -> Id20 {
    let mut b = [0x11u8; 20];
    b[..4].copy_from_slice(&i.to_be_bytes());
    Id20(b)
}

/// Drives `target` from one thread (current-thread runtime) and returns responses/s.
fn load(target: SocketAddr) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let count = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(SECS);
        for s in 0..SOCKETS {
            let count = count.clone();
            tasks.push(tokio::spawn(async move {
                let sock = Net::Tokio
                    .bind_udp("127.0.0.1:0".parse().unwrap())
                    .await
                    .unwrap();
                let mut buf = [0u8; 2048];
                sock.send_to(&udp_proto::encode_connect(s as u32), target)
                    .await
                    .unwrap();
                let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                let conn = udp_proto::parse_connect_response(&buf[..n], s as u32).unwrap();
                let mut i: u32 = s as u32 * 7919;
                while tokio::time::Instant::now() < deadline {
                    for _ in 0..WINDOW {
                        i = i.wrapping_add(1);
                        let req = AnnounceRequest {
                            info_hash: hash(i % HASHES),
                            peer_id: Id20([s as u8; 20]),
                            port: 1024 + (i % 50_000) as u16,
                            uploaded: 0,
                            downloaded: 0,
                            left: u64::from(i % 3),
                            event: Event::None,
                            numwant: Some(50),
                            key: i,
                            tracker_id: None,
                        };
                        let _ = sock
                            .send_to(&udp_proto::encode_announce(conn, i, &req), target)
                            .await;
                    }
                    let mut got = 0;
                    while got < WINDOW {
                        match tokio::time::timeout(
                            Duration::from_millis(50),
                            sock.recv_from(&mut buf),
                        )
                        .await
                        {
                            Ok(Ok((n, _))) if n >= 20 && buf[3] == 1 => {
                                got += 1;
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    })
}

#[test]
#[ignore = "benchmark: run explicitly with --release -- --ignored --nocapture"]
fn udp_announce_throughput() {
    // Ours: the server on its own single-thread runtime (one core), like one opentracker worker.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let cfg = ServerConfig {
                udp: Some("127.0.0.1:0".parse().unwrap()),
                allow: Some((0..HASHES).map(hash).collect()),
                store: StoreConfig {
                    per_ip_rate: 0.0,
                    ..StoreConfig::default()
                },
                conn_key: rand::random(),
                ..ServerConfig::default()
            };
            let s = TrackerServer::start(Net::Tokio, cfg).await.unwrap();
            tx.send(s.udp_addr.unwrap()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let ours = load(rx.recv().unwrap());
    println!("magnetfetch tracker: {ours:.0} UDP announce responses/s");

    if Command::new("opentracker")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        println!("opentracker: not installed, skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let list: String = (0..HASHES).map(|i| hash(i).to_hex() + "\n").collect();
    std::fs::write(dir.path().join("white"), list).unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("opentracker")
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-P",
            &port.to_string(),
        ])
        .args(["-d", dir.path().to_str().unwrap(), "-w", "/white"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let theirs = load(SocketAddr::from(([127, 0, 0, 1], port)));
    let _ = child.kill();
    let _ = child.wait();
    println!("opentracker:         {theirs:.0} UDP announce responses/s");
}
