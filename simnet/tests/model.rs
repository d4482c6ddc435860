//! The link model: latency, bandwidth, loss, queueing, stream flow control.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use simnet::{HostConfig, Network, NetworkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, Instant};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn datagram_latency_is_sum_of_access_links() {
    let net = Network::new(1);
    let a = net
        .add_host_with(HostConfig::new(ip("10.0.0.1")).latency(Duration::from_millis(30)))
        .unwrap();
    let b = net
        .add_host_with(HostConfig::new(ip("10.0.0.2")).latency(Duration::from_millis(20)))
        .unwrap();
    let sa_ = a.bind_udp(sa("10.0.0.1:1000")).await.unwrap();
    let sb = b.bind_udp(sa("0.0.0.0:2000")).await.unwrap();
    let t0 = Instant::now();
    sa_.send_to(b"hello", sa("10.0.0.2:2000")).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = sb.recv_from(&mut buf).await.unwrap();
    let dt = t0.elapsed();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from, sa("10.0.0.1:1000"));
    // 50 ms one way; tokio's timer ticks in milliseconds, so allow one tick.
    assert!(
        dt >= Duration::from_millis(50) && dt <= Duration::from_millis(51),
        "{dt:?}"
    );
    // Reply goes back the same way.
    sb.send_to(b"back", from).await.unwrap();
    let (n, _) = sa_.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"back");
    let dt = t0.elapsed();
    assert!(
        dt >= Duration::from_millis(100) && dt <= Duration::from_millis(102),
        "{dt:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn one_mib_over_one_mib_per_sec_takes_about_a_second() {
    let net = Network::new(2);
    let rate = 1024 * 1024;
    let a = net
        .add_host_with(HostConfig::new(ip("10.0.0.1")).rate(rate))
        .unwrap();
    let b = net
        .add_host_with(HostConfig::new(ip("10.0.0.2")).rate(rate))
        .unwrap();
    let l = b.listen(sa("10.0.0.2:80")).await.unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut c = a.connect(sa("10.0.0.2:80")).await.unwrap();
    let t0 = Instant::now();
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    c.write_all(&data).await.unwrap();
    c.shutdown().await.unwrap();
    let got = server.await.unwrap();
    let dt = t0.elapsed();
    assert_eq!(got, data, "stream must be ordered and complete");
    // Serialisation 1.0 s + one chunk store-and-forward (62 ms) + 20 ms latency.
    assert!(
        dt >= Duration::from_millis(1000) && dt <= Duration::from_millis(1200),
        "{dt:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn stream_throughput_is_window_over_rtt() {
    // Unlimited bandwidth, 100 ms one way: 256 KiB per 200 ms round trip = 1.25 MiB/s.
    let cfg = NetworkConfig {
        latency: Duration::from_millis(50),
        stream_window: 256 * 1024,
        ..Default::default()
    };
    let net = Network::with_config(3, cfg);
    let a = net.add_host(ip("10.0.0.1")).unwrap();
    let b = net.add_host(ip("10.0.0.2")).unwrap();
    let l = b.listen(sa("0.0.0.0:80")).await.unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut n = 0usize;
        let mut buf = vec![0u8; 65536];
        loop {
            let k = s.read(&mut buf).await.unwrap();
            if k == 0 {
                break n;
            }
            n += k;
        }
    });
    let mut c = a.connect(sa("10.0.0.2:80")).await.unwrap();
    let t0 = Instant::now();
    c.write_all(&vec![7u8; 10 * 256 * 1024]).await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(server.await.unwrap(), 10 * 256 * 1024);
    let dt = t0.elapsed();
    // Ten windows: about ten round trips (the last one only one way).
    assert!(
        dt >= Duration::from_millis(1800) && dt <= Duration::from_millis(2100),
        "{dt:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn writer_blocks_when_window_is_full() {
    let net = Network::new(4);
    let a = net.add_host(ip("10.0.0.1")).unwrap();
    let b = net.add_host(ip("10.0.0.2")).unwrap();
    let l = b.listen(sa("10.0.0.2:80")).await.unwrap();
    let mut c = a.connect(sa("10.0.0.2:80")).await.unwrap();
    let (mut s, peer) = l.accept().await.unwrap();
    assert_eq!(peer, c.local_addr().unwrap());
    assert_eq!(s.local_addr().unwrap(), c.peer_addr().unwrap());
    let chunk = vec![1u8; 16 * 1024];
    let mut written = 0usize;
    while let Ok(r) = timeout(Duration::from_secs(1), c.write(&chunk)).await {
        written += r.unwrap();
        assert!(written <= 10 * 1024 * 1024, "no backpressure");
    }
    assert_eq!(written, net.config().stream_window);
    // Reading (at least a quarter window, so the credit is sent back) frees the window.
    let mut buf = vec![0u8; net.config().stream_window / 2];
    s.read_exact(&mut buf).await.unwrap();
    let more = timeout(Duration::from_secs(1), c.write(&chunk))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(more, chunk.len());
}

#[tokio::test(start_paused = true)]
async fn slow_uplink_queues_datagrams() {
    let net = Network::new(5);
    let a = net
        .add_host_with(HostConfig::new(ip("10.0.0.1")).up_rate(100_000))
        .unwrap();
    let b = net.add_host(ip("10.0.0.2")).unwrap();
    let s1 = a.bind_udp(sa("0.0.0.0:0")).await.unwrap();
    let s2 = b.bind_udp(sa("0.0.0.0:9")).await.unwrap();
    let t0 = Instant::now();
    // 15 x 10 kB = 150 kB at 100 kB/s: 1.5 s of queue (below the 2 s drop threshold).
    for i in 0..15u8 {
        s1.send_to(&[i; 10_000], sa("10.0.0.2:9")).await.unwrap();
    }
    let mut buf = vec![0u8; 20_000];
    let mut last = Duration::ZERO;
    for i in 0..15u8 {
        let (n, _) = s2.recv_from(&mut buf).await.unwrap();
        assert_eq!((n, buf[0]), (10_000, i), "FIFO without jitter");
        last = t0.elapsed();
    }
    assert!(
        last >= Duration::from_millis(1520) && last <= Duration::from_millis(1522),
        "{last:?}"
    );
    // Beyond max_queue_delay (2 s) the queue drops.
    for _ in 0..30 {
        s1.send_to(&[0; 10_000], sa("10.0.0.2:9")).await.unwrap();
    }
    assert!(a.stats().packets_dropped >= 9, "{:?}", a.stats());
}

#[tokio::test(start_paused = true)]
async fn loss_drops_the_expected_fraction() {
    let cfg = NetworkConfig {
        recv_queue: 100_000,
        ..Default::default()
    };
    let net = Network::with_config(6, cfg);
    let a = net
        .add_host_with(HostConfig::new(ip("10.0.0.1")).loss(0.1))
        .unwrap();
    let b = net.add_host(ip("10.0.0.2")).unwrap();
    let s1 = a.bind_udp(sa("0.0.0.0:0")).await.unwrap();
    let s2 = b.bind_udp(sa("0.0.0.0:9")).await.unwrap();
    let n = 10_000u64;
    for _ in 0..n {
        s1.send_to(b"x", sa("10.0.0.2:9")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = net.stats();
    assert_eq!(st.packets_sent, n);
    assert_eq!(st.packets_delivered + st.packets_dropped, n);
    // Binomial(10000, 0.1): mean 1000, sd 30; allow 5 sd.
    assert!((850..=1150).contains(&st.packets_dropped), "{st:?}");
    assert_eq!(b.stats().packets_delivered, st.packets_delivered);
    let mut got = 0;
    let mut buf = [0u8; 4];
    while let Ok(r) = timeout(Duration::from_millis(1), s2.recv_from(&mut buf)).await {
        r.unwrap();
        got += 1;
    }
    assert_eq!(got, st.packets_delivered);
}

#[tokio::test(start_paused = true)]
async fn full_receive_queue_drops() {
    let cfg = NetworkConfig {
        recv_queue: 10,
        ..Default::default()
    };
    let net = Network::with_config(7, cfg);
    let a = net.add_host(ip("10.0.0.1")).unwrap();
    let b = net.add_host(ip("10.0.0.2")).unwrap();
    let s1 = a.bind_udp(sa("0.0.0.0:0")).await.unwrap();
    let _s2 = b.bind_udp(sa("0.0.0.0:9")).await.unwrap();
    for _ in 0..25 {
        s1.send_to(b"x", sa("10.0.0.2:9")).await.unwrap();
    }
    // Nothing listens on port 10: dropped too.
    s1.send_to(b"x", sa("10.0.0.2:10")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.stats().packets_delivered, 10);
    assert_eq!(a.stats().packets_dropped, 16);
}

#[tokio::test(start_paused = true)]
async fn fin_gives_eof_and_bytes_flow_both_ways() {
    let net = Network::new(8);
    let a = net.add_host(ip("10.0.0.1")).unwrap();
    let b = net.add_host(ip("10.0.0.2")).unwrap();
    let l = b.listen(sa("10.0.0.2:80")).await.unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
        // Dropping the stream sends FIN.
    });
    let mut c = a.connect(sa("10.0.0.2:80")).await.unwrap();
    c.write_all(b"echo me").await.unwrap();
    c.shutdown().await.unwrap();
    assert!(c.write_all(b"more").await.is_err(), "write after shutdown");
    let mut back = Vec::new();
    c.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"echo me");
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn bind_rules() {
    let net = Network::new(9);
    let a = net
        .add_host_with(HostConfig::new(ip("10.0.0.1")).ip(ip("10.0.1.1")))
        .unwrap();
    assert_eq!(
        net.add_host(ip("10.0.1.1")).unwrap_err().kind(),
        ErrorKind::AddrInUse
    );
    let s = a.bind_udp(sa("10.0.1.1:0")).await.unwrap();
    assert_eq!(s.local_addr().unwrap(), sa("10.0.1.1:49152"));
    assert_eq!(
        a.bind_udp(sa("0.0.0.0:49152")).await.unwrap_err().kind(),
        ErrorKind::AddrInUse
    );
    assert_eq!(
        a.bind_udp(sa("10.9.9.9:1")).await.unwrap_err().kind(),
        ErrorKind::AddrNotAvailable
    );
    drop(s);
    a.bind_udp(sa("0.0.0.0:49152")).await.unwrap();
    let l = a.listen(sa("0.0.0.0:0")).await.unwrap();
    assert_eq!(
        l.local_addr().unwrap().port(),
        49152,
        "TCP and UDP ports are separate"
    );
    assert_eq!(
        net.host(ip("10.0.1.1")).unwrap().ips(),
        vec![ip("10.0.0.1"), ip("10.0.1.1")]
    );
}

/// The uplink is fair-queued (DRR with new-flow priority, like fq_codel) and each stream
/// keeps at most `stream_queue` bytes in it: a small message on an idle flow leaves after at
/// most the chunk being serialised, not after seconds of other flows' bulk data.
#[tokio::test(start_paused = true)]
async fn small_message_does_not_wait_behind_bulk_streams() {
    let net = Network::new(9);
    // 1 MB/s up, 10 ms one way per link.
    let a = net
        .add_host_with(HostConfig::new(ip("10.0.0.1")).up_rate(1_000_000))
        .unwrap();
    let b = net.add_host(ip("10.0.0.2")).unwrap();
    let l = b.listen(sa("0.0.0.0:80")).await.unwrap();
    // Four bulk streams, each with far more than a window to send, drained by b.
    for _ in 0..4 {
        let mut c = a.connect(sa("10.0.0.2:80")).await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = c.write_all(&vec![1u8; 8 << 20]).await;
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
    }
    // A thin flow on the same uplink.
    let mut thin = a.connect(sa("10.0.0.2:80")).await.unwrap();
    let (mut thin_rx, _) = l.accept().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    thin.write_all(b"request").await.unwrap();
    let mut buf = [0u8; 7];
    thin_rx.read_exact(&mut buf).await.unwrap();
    let dt = t0.elapsed();
    // FIFO would make it wait behind up to 4 x 1 MiB windows (4 s). Fair queueing: at most
    // one 64 KiB chunk (66 ms) + 20 ms wire + 1 ms clock granularity.
    assert!(dt <= Duration::from_millis(100), "{dt:?}");
    // The bulk streams still use the whole link: 2 s at 1 MB/s delivered to b, roughly.
    let got = b.stats().bytes_delivered;
    assert!(got >= 1_800_000, "uplink underused: {got}");
}

/// A stream on a rate-limited uplink keeps at most `stream_queue` bytes queued there.
#[tokio::test(start_paused = true)]
async fn stream_queue_bounds_bytes_in_the_uplink() {
    let net = Network::new(10);
    let a = net
        .add_host_with(HostConfig::new(ip("10.0.0.1")).up_rate(100_000))
        .unwrap();
    let b = net.add_host(ip("10.0.0.2")).unwrap();
    let l = b.listen(sa("0.0.0.0:80")).await.unwrap();
    let mut c = a.connect(sa("10.0.0.2:80")).await.unwrap();
    let (_s, _) = l.accept().await.unwrap();
    let chunk = vec![1u8; 16 * 1024];
    let mut written = 0usize;
    while let Ok(r) = timeout(Duration::from_millis(1), c.write(&chunk)).await {
        written += r.unwrap();
        assert!(written <= 1 << 20, "no backpressure");
    }
    // The queue cap (128 KiB) plus the chunk already on the wire, not the 1 MiB window.
    let cap = net.config().stream_queue;
    assert!(written >= cap && written <= cap + 64 * 1024, "{written}");
}

/// A FIFO uplink (`fifo_uplink`): a datagram waits behind the bytes every flow has queued
/// (a stream's `stream_queue`), where the fair queue sends it next.
#[tokio::test(start_paused = true)]
async fn fifo_uplink_makes_datagrams_wait_behind_a_stream() {
    for fifo in [false, true] {
        let net = Network::new(11);
        let a = net
            .add_host_with(
                HostConfig::new(ip("10.0.0.1"))
                    .up_rate(1_000_000)
                    .fifo_uplink(fifo),
            )
            .unwrap();
        let b = net.add_host(ip("10.0.0.2")).unwrap();
        let l = b.listen(sa("0.0.0.0:80")).await.unwrap();
        let mut c = a.connect(sa("10.0.0.2:80")).await.unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = c.write_all(&vec![1u8; 8 << 20]).await;
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ua = a.bind_udp(sa("10.0.0.1:1000")).await.unwrap();
        let ub = b.bind_udp(sa("10.0.0.2:2000")).await.unwrap();
        let t0 = Instant::now();
        ua.send_to(b"ping", sa("10.0.0.2:2000")).await.unwrap();
        let mut buf = [0u8; 8];
        ub.recv_from(&mut buf).await.unwrap();
        let dt = t0.elapsed();
        if fifo {
            // Behind ~128 KiB of stream data at 1 MB/s: ~130 ms, + 20 ms wire.
            assert!(dt >= Duration::from_millis(140), "{dt:?}");
        } else {
            // At most the 64 KiB chunk being serialised (66 ms) + 20 ms wire.
            assert!(dt <= Duration::from_millis(95), "{dt:?}");
        }
    }
}

/// `mtu`: datagrams over the path MTU (the smaller of both ends', IP and UDP headers
/// counted) vanish; smaller ones and streams pass.
#[tokio::test(start_paused = true)]
async fn datagrams_over_the_path_mtu_are_dropped() {
    let net = Network::new(12);
    let a = net
        .add_host_with(HostConfig::new(ip("10.0.0.1")).mtu(1400))
        .unwrap();
    let b = net.add_host(ip("10.0.0.2")).unwrap();
    let ua = a.bind_udp(sa("10.0.0.1:1000")).await.unwrap();
    let ub = b.bind_udp(sa("10.0.0.2:2000")).await.unwrap();
    for len in [1373usize, 1372] {
        ub.send_to(&vec![7u8; len], sa("10.0.0.1:1000"))
            .await
            .unwrap();
        ua.send_to(&vec![7u8; len], sa("10.0.0.2:2000"))
            .await
            .unwrap();
    }
    let mut buf = vec![0u8; 4096];
    let (n, _) = ua.recv_from(&mut buf).await.unwrap();
    assert_eq!(n, 1372);
    let (n, _) = ub.recv_from(&mut buf).await.unwrap();
    assert_eq!(n, 1372);
    assert_eq!(a.stats().packets_dropped, 1);
    assert_eq!(b.stats().packets_dropped, 1);
    let l = b.listen(sa("0.0.0.0:80")).await.unwrap();
    let mut c = a.connect(sa("10.0.0.2:80")).await.unwrap();
    let (mut s, _) = l.accept().await.unwrap();
    c.write_all(&vec![1u8; 100_000]).await.unwrap();
    c.shutdown().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), 100_000);
}
