//! The network seam end to end on the simulated back end: `Net::Sim` runs the same calls
//! protocol code makes on real sockets.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use magnetfetch::internals::net::{Net, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn udp_echo_over_sim() {
    let net = simnet::Network::new(11);
    let server = Net::Sim(net.add_host(ip("10.1.0.1")).unwrap());
    let client: Net = net.add_host(ip("10.1.0.2")).unwrap().into();
    assert!(server.is_sim());
    let ss = server.bind_udp(sa("0.0.0.0:6881")).await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = ss.recv_from(&mut buf).await else {
                break;
            };
            ss.send_to(&buf[..n], from).await.unwrap();
        }
    });
    let cs = client.bind_udp(sa("0.0.0.0:0")).await.unwrap();
    assert_eq!(cs.local_addr().unwrap().port(), 49152);
    let t0 = Instant::now();
    cs.send_to(b"d1:ad2:id20:xe", sa("10.1.0.1:6881"))
        .await
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = cs.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"d1:ad2:id20:xe");
    assert_eq!(from, sa("10.1.0.1:6881"));
    // Default model: 10 ms per access link, so a 40 ms round trip in virtual time.
    assert_eq!(t0.elapsed(), Duration::from_millis(40));
}

#[tokio::test(start_paused = true)]
async fn stream_echo_over_sim() {
    let net = simnet::Network::new(12);
    let server = Net::Sim(net.add_host(ip("10.1.0.1")).unwrap());
    let client = Net::Sim(net.add_host(ip("10.1.0.2")).unwrap());
    let listener = server.listen(sa("10.1.0.1:6881")).await.unwrap();
    assert_eq!(listener.local_addr().unwrap(), sa("10.1.0.1:6881"));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(&mut s);
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    });
    let mut s: Stream = client.connect(sa("10.1.0.1:6881")).await.unwrap();
    assert_eq!(s.peer_addr().unwrap(), sa("10.1.0.1:6881"));
    assert_eq!(s.local_addr().unwrap().ip(), ip("10.1.0.2"));
    let msg: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let (mut r, mut w) = tokio::io::split(&mut s);
    let writer = async {
        w.write_all(&msg).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let reader = async {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::join!(writer, reader);
    assert_eq!(back, msg);
    // Nothing listens here: refused, as on a real host.
    let e = client.connect(sa("10.1.0.1:1")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
}
