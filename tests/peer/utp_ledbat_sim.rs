//! uTP's LEDBAT congestion control (BEP 29, RFC 6817) on simnet, in virtual time: one uTP
//! flow fills an idle rate-limited uplink, and yields to a TCP-like stream sharing that
//! uplink's router buffer. Throughput is bytes read by the receiving application per
//! virtual second.
//!
//! The bottleneck is a FIFO uplink (`HostConfig::fifo_uplink`): a home router with a large
//! drop-tail buffer and no fair queuing, where a loss-based TCP flow keeps a standing queue.
//! That queue is the delay LEDBAT measures; under a fair queue (simnet's default) the flows
//! are isolated and the question does not arise.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use magnetfetch::internals::net::quic::bind_stack;
use magnetfetch::internals::net::utp::{UtpConfig, UtpListener, UtpSocket, UtpStream};
use magnetfetch::internals::net::Net;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The uplink under test: 1 MB/s.
const RATE: u64 = 1_000_000;

/// The sender (rate-limited FIFO uplink, 10 ms access latency: 40 ms round trip) and the
/// receiver (unlimited). Router buffer: 500 ms of the uplink. A TCP stream keeps up to
/// 256 KiB (~260 ms) queued in it, as a loss-based TCP keeps a standing queue of a good
/// part of the buffer.
fn network(seed: u64) -> (simnet::Network, Net, Net) {
    let cfg = simnet::NetworkConfig {
        latency: Duration::from_millis(10),
        max_queue_delay: Duration::from_millis(500),
        stream_queue: 256 * 1024,
        ..simnet::NetworkConfig::default()
    };
    let net = simnet::Network::with_config(seed, cfg);
    let a = net
        .add_host_with(
            simnet::HostConfig::new(IpAddr::from([10, 0, 0, 1]))
                .up_rate(RATE)
                .fifo_uplink(true),
        )
        .unwrap();
    let b = net.add_host(IpAddr::from([10, 0, 0, 2])).unwrap();
    (net, Net::Sim(a), Net::Sim(b))
}

async fn utp_on(net: &Net, addr: &str) -> (UtpSocket, UtpListener, impl Sized) {
    let cfg = UtpConfig {
        seed: Some(7),
        ..UtpConfig::default()
    };
    let s = bind_stack(net, addr.parse().unwrap(), None, Some(&cfg))
        .await
        .unwrap();
    let (u, l) = s.utp.unwrap();
    (u, l, s.krpc)
}

/// A connected uTP pair, sender on `a`.
async fn utp_pair(a: &Net, b: &Net) -> (UtpStream, UtpStream, impl Sized) {
    let (ua, _la, ka) = utp_on(a, "10.0.0.1:6881").await;
    let (ub, mut lb, kb) = utp_on(b, "10.0.0.2:6881").await;
    let sa = ua.connect(ub.local_addr()).await.unwrap();
    let mut sa = sa;
    // The responder hands its stream out once the initiator has spoken.
    sa.write_all(b"x").await.unwrap();
    let (mut sb, _) = lb.accept().await.unwrap();
    let mut one = [0u8; 1];
    sb.read_exact(&mut one).await.unwrap();
    (sa, sb, (ua, ub, ka, kb, _la, lb))
}

/// Writes until `stop` (forever: None) or the stream fails, then shuts it down.
fn pump<W: AsyncWrite + Unpin + Send + 'static>(mut w: W, stop: Option<Instant>) {
    tokio::spawn(async move {
        let chunk = vec![0x5Au8; 64 * 1024];
        let write = async { while w.write_all(&chunk).await.is_ok() {} };
        match stop {
            Some(t) => {
                let _ = tokio::time::timeout_at(t, write).await;
            }
            None => write.await,
        }
        let _ = w.shutdown().await;
    });
}

/// Reads forever, counting bytes.
fn count<R: AsyncRead + Unpin + Send + 'static>(mut r: R) -> Arc<AtomicU64> {
    let n = Arc::new(AtomicU64::new(0));
    let c = n.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(k) = r.read(&mut buf).await {
            if k == 0 {
                break;
            }
            c.fetch_add(k as u64, Ordering::Relaxed);
        }
    });
    n
}

/// Bytes per second `counter` grew by over `span`, starting now.
async fn rate_over(counters: &[&Arc<AtomicU64>], span: Duration) -> Vec<f64> {
    let before: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    tokio::time::sleep(span).await;
    counters
        .iter()
        .zip(before)
        .map(|(c, b)| (c.load(Ordering::Relaxed) - b) as f64 / span.as_secs_f64())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn utp_alone_fills_an_idle_uplink() {
    let (_net, a, b) = network(1);
    let (sa, sb, _keep) = utp_pair(&a, &b).await;
    pump(sa, None);
    let got = count(sb);
    // Slow start and the first LEDBAT rounds, then the steady state.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = rate_over(&[&got], Duration::from_secs(20)).await[0];
    println!("uTP alone: {r:.0} B/s of {RATE}");
    assert!(
        r >= 0.9 * RATE as f64,
        "uTP alone: {r:.0} B/s of {RATE} ({:.1} %)",
        100.0 * r / RATE as f64
    );
}

#[tokio::test(start_paused = true)]
async fn utp_yields_to_tcp_on_a_shared_uplink_and_takes_it_back() {
    let (_net, a, b) = network(2);
    let (sa, sb, _keep) = utp_pair(&a, &b).await;
    pump(sa, None);
    let utp = count(sb);
    // uTP alone first: it learns the base delay on the idle link, as it would in life.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let Net::Sim(ha) = &a else { unreachable!() };
    let Net::Sim(hb) = &b else { unreachable!() };
    let listener = hb.listen("10.0.0.2:7000".parse().unwrap()).await.unwrap();
    let to: SocketAddr = "10.0.0.2:7000".parse().unwrap();
    let (tcp_a, accepted) = tokio::join!(ha.connect(to), listener.accept());
    let started = Instant::now();
    let tcp_ends = started + Duration::from_secs(30);
    pump(tcp_a.unwrap(), Some(tcp_ends));
    let tcp = count(accepted.unwrap().0);
    // LEDBAT reacts within a few round trips of the queue building up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = rate_over(&[&utp, &tcp], Duration::from_secs(20)).await;
    let (u, t) = (r[0], r[1]);
    let share = u / (u + t);
    println!("with TCP: uTP {u:.0} B/s, TCP {t:.0} B/s, uTP share {share:.3}");
    assert!(
        share <= 0.25,
        "uTP {u:.0} B/s, TCP {t:.0} B/s: uTP's share {:.1} % (> 25 %)",
        100.0 * share
    );
    assert!(
        u + t >= 0.9 * RATE as f64,
        "the link stays full: {:.0} B/s",
        u + t
    );
    // The TCP flow ends: uTP takes the link back.
    tokio::time::sleep_until(tcp_ends + Duration::from_secs(10)).await;
    let back = rate_over(&[&utp], Duration::from_secs(10)).await[0];
    println!("uTP after TCP left: {back:.0} B/s");
    assert!(
        back >= 0.9 * RATE as f64,
        "uTP after TCP left: {back:.0} B/s"
    );
}

/// Path MTU on simnet: the sender's access link carries IP packets of at most 1400 bytes
/// (1372-byte UDP payloads over IPv4) and drops bigger ones without an ICMP error. The
/// connection's packet size settles just under that, and every byte arrives.
#[tokio::test(start_paused = true)]
async fn utp_packets_fit_a_smaller_path_mtu() {
    let net = simnet::Network::new(3);
    let a = net
        .add_host_with(simnet::HostConfig::new(IpAddr::from([10, 0, 0, 1])).mtu(1400))
        .unwrap();
    let b = net.add_host(IpAddr::from([10, 0, 0, 2])).unwrap();
    let (a, b) = (Net::Sim(a), Net::Sim(b));
    let (mut sa, mut sb, _keep) = utp_pair(&a, &b).await;
    let len = 4 << 20;
    let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 977) as u8).collect();
    let send = data.clone();
    let w = tokio::spawn(async move {
        sa.write_all(&send).await.unwrap();
        sa.shutdown().await.unwrap();
        sa
    });
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), sb.read_to_end(&mut got))
        .await
        .expect("transfer stalled")
        .unwrap();
    assert!(got == data, "bytes differ");
    let sa = w.await.unwrap();
    let size = sa.packet_size();
    println!("packet size {size} (path: 1372)");
    assert!(
        (1372 - 16..=1372).contains(&size),
        "packet size {size}, path allows 1372"
    );
    let dropped = net.host(IpAddr::from([10, 0, 0, 1])).unwrap().stats();
    assert!(dropped.packets_dropped < 20, "{dropped:?}");
}
