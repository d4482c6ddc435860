//! Faults: partitions, hosts going down, closed ports, NAT; and determinism.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use simnet::{HostConfig, NatKind, Network, NetworkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, Instant};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn partition_blocks_and_heal_restores() {
    let net = Network::new(1);
    let a = net.add_host(ip("10.0.0.1")).unwrap();
    let b = net.add_host(ip("10.0.0.2")).unwrap();
    let c = net.add_host(ip("10.0.0.3")).unwrap();
    let ua = a.bind_udp(sa("0.0.0.0:1")).await.unwrap();
    let ub = b.bind_udp(sa("0.0.0.0:1")).await.unwrap();
    let uc = c.bind_udp(sa("0.0.0.0:1")).await.unwrap();
    let l = b.listen(sa("0.0.0.0:80")).await.unwrap();
    let mut s_ab = a.connect(sa("10.0.0.2:80")).await.unwrap();
    let (mut s_ba, _) = l.accept().await.unwrap();

    net.partition(&[ip("10.0.0.1")], &[ip("10.0.0.2")]);
    let mut buf = [0u8; 16];
    ua.send_to(b"lost", sa("10.0.0.2:1")).await.unwrap();
    assert!(timeout(Duration::from_secs(5), ub.recv_from(&mut buf))
        .await
        .is_err());
    // c is outside the partition.
    ua.send_to(b"ok", sa("10.0.0.3:1")).await.unwrap();
    assert_eq!(uc.recv_from(&mut buf).await.unwrap().0, 2);
    // New connects time out; established streams stall.
    let t0 = Instant::now();
    let e = a.connect(sa("10.0.0.2:80")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    assert_eq!(t0.elapsed(), net.config().connect_timeout);
    s_ab.write_all(b"stalled").await.unwrap();
    assert!(timeout(Duration::from_secs(5), s_ba.read(&mut buf))
        .await
        .is_err());

    net.heal();
    let n = s_ba.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"stalled", "stream resumes after heal");
    ua.send_to(b"again", sa("10.0.0.2:1")).await.unwrap();
    let (n, _) = ub.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"again");
}

#[tokio::test(start_paused = true)]
async fn long_partition_resets_streams() {
    let net = Network::new(2);
    let a = net.add_host(ip("10.0.0.1")).unwrap();
    let b = net.add_host(ip("10.0.0.2")).unwrap();
    let l = b.listen(sa("0.0.0.0:80")).await.unwrap();
    let mut s_ab = a.connect(sa("10.0.0.2:80")).await.unwrap();
    let (mut s_ba, _) = l.accept().await.unwrap();
    net.partition(&[ip("10.0.0.2")], &[ip("10.0.0.1")]);
    let t0 = Instant::now();
    s_ab.write_all(b"never").await.unwrap();
    let mut buf = [0u8; 8];
    let e = s_ba.read(&mut buf).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    let dt = t0.elapsed();
    let limit = net.config().stream_timeout;
    assert!(
        dt >= limit && dt <= limit + Duration::from_secs(1),
        "{dt:?}"
    );
    assert_eq!(
        s_ab.write_all(b"x").await.unwrap_err().kind(),
        ErrorKind::TimedOut
    );
}

#[tokio::test(start_paused = true)]
async fn downed_host_peers_see_errors() {
    let net = Network::new(3);
    let a = net.add_host(ip("10.0.0.1")).unwrap();
    let b = net.add_host(ip("10.0.0.2")).unwrap();
    let l = b.listen(sa("0.0.0.0:80")).await.unwrap();
    let ub = b.bind_udp(sa("0.0.0.0:1")).await.unwrap();
    let ua = a.bind_udp(sa("0.0.0.0:1")).await.unwrap();
    let mut s_ab = a.connect(sa("10.0.0.2:80")).await.unwrap();
    let (mut s_ba, _) = l.accept().await.unwrap();

    let waiter = tokio::spawn(async move {
        let mut buf = [0u8; 8];
        ub.recv_from(&mut buf).await.map(|_| ())
    });
    tokio::task::yield_now().await;
    b.down();
    assert!(!b.is_up());
    // b's own sockets fail at once.
    assert_eq!(
        waiter.await.unwrap().unwrap_err().kind(),
        ErrorKind::NetworkDown
    );
    assert_eq!(l.accept().await.unwrap_err().kind(), ErrorKind::NetworkDown);
    let mut buf = [0u8; 8];
    assert_eq!(
        s_ba.read(&mut buf).await.unwrap_err().kind(),
        ErrorKind::ConnectionAborted
    );
    // Its peer sees a reset one latency (20 ms) later.
    let t0 = Instant::now();
    assert_eq!(
        s_ab.read(&mut buf).await.unwrap_err().kind(),
        ErrorKind::ConnectionReset
    );
    assert_eq!(t0.elapsed(), Duration::from_millis(20));
    // Datagrams to it vanish; connects to it time out; it cannot open sockets.
    let before = a.stats().packets_dropped;
    ua.send_to(b"x", sa("10.0.0.2:1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(a.stats().packets_dropped, before + 1);
    assert_eq!(
        a.connect(sa("10.0.0.2:80")).await.unwrap_err().kind(),
        ErrorKind::TimedOut
    );
    assert_eq!(
        b.bind_udp(sa("0.0.0.0:2")).await.unwrap_err().kind(),
        ErrorKind::NetworkDown
    );

    b.up();
    let l2 = b.listen(sa("0.0.0.0:80")).await.unwrap();
    let _c = a.connect(sa("10.0.0.2:80")).await.unwrap();
    l2.accept().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn closed_port_is_refused_after_one_rtt() {
    let net = Network::new(4);
    let a = net.add_host(ip("10.0.0.1")).unwrap();
    let _b = net.add_host(ip("10.0.0.2")).unwrap();
    let t0 = Instant::now();
    let e = a.connect(sa("10.0.0.2:81")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(t0.elapsed(), Duration::from_millis(40));
    // An address with no host behaves like a black hole.
    let e = a.connect(sa("10.9.9.9:81")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_stream_with_unread_data_resets_the_peer() {
    let net = Network::new(5);
    let a = net.add_host(ip("10.0.0.1")).unwrap();
    let b = net.add_host(ip("10.0.0.2")).unwrap();
    let l = b.listen(sa("0.0.0.0:80")).await.unwrap();
    let mut c = a.connect(sa("10.0.0.2:80")).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    c.write_all(b"unread").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    let mut buf = [0u8; 8];
    assert_eq!(
        c.read(&mut buf).await.unwrap_err().kind(),
        ErrorKind::ConnectionReset
    );
}

#[tokio::test(start_paused = true)]
async fn nat_host_is_reachable_only_after_it_sends() {
    let net = Network::new(6);
    let n = net
        .add_host_with(HostConfig::new(ip("192.168.0.2")).nat(true))
        .unwrap();
    let p = net.add_host(ip("10.0.0.1")).unwrap();
    let un = n.bind_udp(sa("0.0.0.0:6881")).await.unwrap();
    let up = p.bind_udp(sa("0.0.0.0:6881")).await.unwrap();
    let _ln = n.listen(sa("0.0.0.0:6881")).await.unwrap();
    let lp = p.listen(sa("0.0.0.0:6881")).await.unwrap();
    let mut buf = [0u8; 16];

    up.send_to(b"unsolicited", sa("192.168.0.2:6881"))
        .await
        .unwrap();
    assert!(timeout(Duration::from_secs(1), un.recv_from(&mut buf))
        .await
        .is_err());
    assert_eq!(
        p.connect(sa("192.168.0.2:6881")).await.unwrap_err().kind(),
        ErrorKind::TimedOut
    );

    // Once n has sent to p's address, p's replies come through.
    un.send_to(b"hi", sa("10.0.0.1:6881")).await.unwrap();
    let (_, from) = up.recv_from(&mut buf).await.unwrap();
    up.send_to(b"reply", from).await.unwrap();
    let (k, _) = un.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..k], b"reply");
    // But only from that address: another port of p is still filtered.
    let up2 = p.bind_udp(sa("0.0.0.0:7000")).await.unwrap();
    up2.send_to(b"other", from).await.unwrap();
    assert!(timeout(Duration::from_secs(1), un.recv_from(&mut buf))
        .await
        .is_err());
    // Outbound streams work.
    let _s = n.connect(sa("10.0.0.1:6881")).await.unwrap();
    lp.accept().await.unwrap();
}

/// What a rendezvous server sees and what a holepunch gets through, per NAT kind: two hosts
/// behind home NATs reach each other once both have sent (the punch); behind symmetric NATs
/// the address the server saw is useless to the other host.
#[tokio::test(start_paused = true)]
async fn home_nats_punch_and_symmetric_nats_do_not() {
    let net = Network::new(8);
    let srv = net.add_host(ip("10.0.0.1")).unwrap();
    let us = srv.bind_udp(sa("0.0.0.0:6881")).await.unwrap();
    let mut buf = [0u8; 16];
    for (kind, punched) in [(NatKind::Home, true), (NatKind::Symmetric, false)] {
        let n = if punched { 2 } else { 4 };
        let a_ip = format!("192.168.0.{n}");
        let c_ip = format!("192.168.0.{}", n + 1);
        let a = net
            .add_host_with(HostConfig::new(ip(&a_ip)).nat_kind(kind))
            .unwrap();
        let c = net
            .add_host_with(HostConfig::new(ip(&c_ip)).nat_kind(kind))
            .unwrap();
        let ua = a.bind_udp(sa("0.0.0.0:6881")).await.unwrap();
        let uc = c.bind_udp(sa("0.0.0.0:6881")).await.unwrap();
        // Both register with the server, which learns their external addresses.
        ua.send_to(b"hello", sa("10.0.0.1:6881")).await.unwrap();
        let (_, seen_a) = us.recv_from(&mut buf).await.unwrap();
        uc.send_to(b"hello", sa("10.0.0.1:6881")).await.unwrap();
        let (_, seen_c) = us.recv_from(&mut buf).await.unwrap();
        assert_eq!(seen_c.ip(), ip(&c_ip));
        assert_eq!(seen_a.ip(), ip(&a_ip));
        assert_eq!(
            seen_a.port() == 6881,
            punched,
            "{kind:?}: external port {seen_a}"
        );
        // The server answers on the mapping.
        us.send_to(b"ok", seen_a).await.unwrap();
        let (k, from) = ua.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..k], from), (&b"ok"[..], sa("10.0.0.1:6881")));
        // Each punches towards the other's listen address (what a relay would report).
        let a_listen = SocketAddr::new(ip(&a_ip), 6881);
        let c_listen = SocketAddr::new(ip(&c_ip), 6881);
        ua.send_to(b"punch", c_listen).await.unwrap();
        uc.send_to(b"punch", a_listen).await.unwrap();
        let got_c = timeout(Duration::from_secs(1), uc.recv_from(&mut buf)).await;
        let got_a = timeout(Duration::from_secs(1), ua.recv_from(&mut buf)).await;
        assert_eq!(got_c.is_ok(), punched, "{kind:?}");
        assert_eq!(got_a.is_ok(), punched, "{kind:?}");
        if punched {
            // Once punched, both ways work and the sender's address is its listen address.
            ua.send_to(b"data", c_listen).await.unwrap();
            let (_, from) = uc.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, a_listen);
        }
        // Streams into a NATed host never get in.
        let _l = c.listen(sa("0.0.0.0:6881")).await.unwrap();
        assert_eq!(
            a.connect(c_listen).await.unwrap_err().kind(),
            ErrorKind::TimedOut
        );
    }
}

/// A small busy scenario: 20 hosts with jitter and loss gossiping datagrams and streams.
/// Returns every observation with its virtual timestamp.
fn scenario(seed: u64) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let cfg = NetworkConfig {
            jitter: Duration::from_millis(15),
            loss: 0.05,
            up_rate: Some(200_000),
            ..Default::default()
        };
        let net = Network::with_config(seed, cfg);
        let log = std::sync::Arc::new(parking_lot_free::Log::default());
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..20u32 {
            let h = net.add_host(IpAddr::from([10, 0, 0, i as u8 + 1])).unwrap();
            let sock = h.bind_udp(sa("0.0.0.0:5000")).await.unwrap();
            let listener = h.listen(sa("0.0.0.0:6000")).await.unwrap();
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 64];
                for k in 0..30u32 {
                    let to = IpAddr::from([10, 0, 0, ((i + k * 7) % 20) as u8 + 1]);
                    sock.send_to(&k.to_be_bytes(), SocketAddr::new(to, 5000))
                        .await
                        .unwrap();
                }
                while let Ok(Ok((n, from))) =
                    timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await
                {
                    log.push(format!("{:?} {i} udp {from} {:?}", t0.elapsed(), &buf[..n]));
                }
                let to = IpAddr::from([10, 0, 0, ((i + 3) % 20) as u8 + 1]);
                let connector = h.clone();
                let w = tokio::spawn(async move {
                    let mut s = connector.connect(SocketAddr::new(to, 6000)).await.unwrap();
                    s.write_all(&vec![i as u8; 100_000]).await.unwrap();
                });
                let (mut s, from) = listener.accept().await.unwrap();
                let mut v = Vec::new();
                s.read_to_end(&mut v).await.unwrap();
                log.push(format!("{:?} {i} tcp {from} {}", t0.elapsed(), v.len()));
                w.await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut out = log.take();
        out.push(format!("{:?}", net.stats()));
        out
    })
}

mod parking_lot_free {
    #[derive(Default)]
    pub struct Log(std::sync::Mutex<Vec<String>>);
    impl Log {
        pub fn push(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
        pub fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }
}

#[test]
fn same_seed_same_events_different_seed_differs() {
    let a = scenario(42);
    let b = scenario(42);
    let c = scenario(43);
    assert!(a.len() > 400, "scenario too small: {}", a.len());
    assert_eq!(a, b, "same seed must replay identically");
    assert_ne!(a, c, "a different seed must change something");
}
