//! Ten thousand hosts, each with a bound socket, pass a datagram around a ring.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use simnet::Network;

#[tokio::test(start_paused = true)]
async fn ten_thousand_hosts_ring() {
    let net = Network::new(9);
    let n = 10_000u32;
    let addr = |i: u32| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0001 + i)), 6881);
    let wall = std::time::Instant::now();
    let mut socks = Vec::new();
    for i in 0..n {
        let h = net.add_host(addr(i).ip()).unwrap();
        socks.push(h.bind_udp(addr(i)).await.unwrap());
    }
    // Generous bound for an unoptimised test build on a loaded machine (release: ~20 ms).
    assert!(
        wall.elapsed() < Duration::from_secs(5),
        "setup took {:?}",
        wall.elapsed()
    );
    assert_eq!(net.host_count(), n as usize);
    for (i, s) in socks.iter().enumerate() {
        s.send_to(&(i as u32).to_be_bytes(), addr((i as u32 + 1) % n))
            .await
            .unwrap();
    }
    let mut buf = [0u8; 4];
    for (i, s) in socks.iter().enumerate() {
        let (len, from) = s.recv_from(&mut buf).await.unwrap();
        let prev = (i as u32 + n - 1) % n;
        assert_eq!((len, from, u32::from_be_bytes(buf)), (4, addr(prev), prev));
    }
    let st = net.stats();
    assert_eq!(
        (st.packets_sent, st.packets_delivered, st.packets_dropped),
        (10_000, 10_000, 0)
    );
}
