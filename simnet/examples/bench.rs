//! simnet benchmark: `cargo run --release -p simnet --example bench`
//!
//! 1. Setup of 10,000 hosts each with a bound UDP socket: wall time and memory (VmRSS/VmHWM).
//! 2. Datagram throughput: delivered datagrams per wall-clock second, (a) 64 sender/receiver
//!    pairs and (b) the 10,000 hosts sending to random peers.
//! 3. Stream sanity: 100 MB over a 10 MB/s link (virtual time should be ~10 s).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use simnet::{HostConfig, Network, NetworkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn status(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time of this (single) thread: the machine is shared, so wall time alone overstates cost.
fn cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

fn host_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i + 1))
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        // ---------------------------------------------------------------- 1. setup
        let rss0 = status("VmRSS:");
        let t = std::time::Instant::now();
        let c0 = cpu();
        let cfg = NetworkConfig { recv_queue: 4096, ..Default::default() };
        let net = Network::with_config(1, cfg);
        let n_hosts = 10_000u32;
        let mut socks = Vec::with_capacity(n_hosts as usize);
        for i in 0..n_hosts {
            let h = net.add_host(host_ip(i)).unwrap();
            socks.push(h.bind_udp(SocketAddr::new(host_ip(i), 6881)).await.unwrap());
        }
        let setup = t.elapsed();
        let setup_cpu = cpu() - c0;
        let rss1 = status("VmRSS:");
        println!(
            "setup: {n_hosts} hosts + bound sockets in {:.1} ms wall / {:.1} ms CPU; VmRSS {:.1} MiB -> {:.1} MiB (+{:.1} MiB), VmHWM {:.1} MiB",
            setup.as_secs_f64() * 1e3,
            setup_cpu.as_secs_f64() * 1e3,
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0,
            (rss1 - rss0) as f64 / 1024.0,
            status("VmHWM:") as f64 / 1024.0
        );

        // ---------------------------------------------------------------- 2b. 10k hosts
        let per_host = 200u32;
        let t = std::time::Instant::now();
        let c0 = cpu();
        let v0 = tokio::time::Instant::now();
        let mut rng = StdRng::seed_from_u64(2);
        let socks: Vec<std::sync::Arc<simnet::UdpSocket>> = socks.into_iter().map(std::sync::Arc::new).collect();
        let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for s in &socks {
            let s = s.clone();
            let received = received.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while s.recv_from(&mut buf).await.is_ok() {
                    received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }));
        }
        for round in 0..per_host {
            for (i, s) in socks.iter().enumerate() {
                // A random peer other than ourselves.
                let to = (i as u32 + 1 + rng.random_range(0..n_hosts - 1)) % n_hosts;
                s.try_send_to(&[round as u8; 100], SocketAddr::new(host_ip(to), 6881)).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sent = (per_host * n_hosts) as u64;
        loop {
            let st = net.stats();
            if st.packets_delivered + st.packets_dropped == sent
                && received.load(std::sync::atomic::Ordering::Relaxed) == st.packets_delivered
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let delivered = received.load(std::sync::atomic::Ordering::Relaxed);
        for t in &tasks {
            t.abort();
        }
        let wall = t.elapsed();
        let c = cpu() - c0;
        println!(
            "10k hosts random: {delivered} datagrams delivered in {:.3} s wall / {:.3} s CPU ({:.2} s virtual): {:.0}/s wall, {:.0}/s CPU; stats {:?}",
            wall.as_secs_f64(),
            c.as_secs_f64(),
            v0.elapsed().as_secs_f64(),
            delivered as f64 / wall.as_secs_f64(),
            delivered as f64 / c.as_secs_f64(),
            net.stats()
        );
        println!("VmHWM after 10k-host run: {:.1} MiB", status("VmHWM:") as f64 / 1024.0);
        drop(socks);

        // ---------------------------------------------------------------- 2a. pairs
        let cfg = NetworkConfig { recv_queue: 1 << 16, ..Default::default() };
        let net = Network::with_config(3, cfg);
        let pairs = 64u32;
        let rounds = 125u32;
        let burst = 256u32;
        let total = (pairs * rounds * burst) as u64;
        let t = std::time::Instant::now();
        let c0 = cpu();
        let mut tasks = Vec::new();
        for p in 0..pairs {
            let a = net.add_host(host_ip(2 * p)).unwrap();
            let b = net.add_host(host_ip(2 * p + 1)).unwrap();
            let sa = a.bind_udp_now(SocketAddr::new(host_ip(2 * p), 1)).unwrap();
            let sb = b.bind_udp_now(SocketAddr::new(host_ip(2 * p + 1), 1)).unwrap();
            let dst = sb.local_addr().unwrap();
            tasks.push(tokio::spawn(async move {
                for _ in 0..rounds {
                    for _ in 0..burst {
                        sa.try_send_to(&[7u8; 100], dst).unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }));
            tasks.push(tokio::spawn(async move {
                let mut buf = [0u8; 256];
                for _ in 0..rounds * burst {
                    sb.recv_from(&mut buf).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let wall = t.elapsed();
        let c = cpu() - c0;
        assert_eq!(net.stats().packets_delivered, total);
        println!(
            "64 pairs: {total} datagrams delivered in {:.3} s wall / {:.3} s CPU: {:.0}/s wall, {:.0}/s CPU",
            wall.as_secs_f64(),
            c.as_secs_f64(),
            total as f64 / wall.as_secs_f64(),
            total as f64 / c.as_secs_f64()
        );

        // ---------------------------------------------------------------- 3. stream
        let net = Network::new(4);
        let a = net.add_host_with(HostConfig::new(host_ip(0)).rate(10_000_000)).unwrap();
        let b = net.add_host_with(HostConfig::new(host_ip(1)).rate(10_000_000)).unwrap();
        let l = b.listen(SocketAddr::new(host_ip(1), 80)).await.unwrap();
        let bytes = 100_000_000usize;
        let t = std::time::Instant::now();
        let v0 = tokio::time::Instant::now();
        let rx = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut n = 0;
            loop {
                let k = s.read(&mut buf).await.unwrap();
                if k == 0 {
                    break n;
                }
                n += k;
            }
        });
        let mut c = a.connect(SocketAddr::new(host_ip(1), 80)).await.unwrap();
        let chunk = vec![1u8; 64 * 1024];
        let mut sent = 0;
        while sent < bytes {
            let k = chunk.len().min(bytes - sent);
            c.write_all(&chunk[..k]).await.unwrap();
            sent += k;
        }
        c.shutdown().await.unwrap();
        let got = rx.await.unwrap();
        assert_eq!(got, bytes);
        let virt = v0.elapsed().as_secs_f64();
        println!(
            "stream: {} MB over a 10 MB/s link, 20 ms one way, default 1 MiB window: {:.3} s virtual ({:.2} MB/s), {:.3} s wall",
            bytes / 1_000_000,
            virt,
            bytes as f64 / virt / 1e6,
            t.elapsed().as_secs_f64()
        );
    });
}
