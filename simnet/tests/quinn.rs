//! A QUIC connection (quinn) between two simnet hosts carries data both ways.
//! simnet dev-depends on itself with feature `quinn`, so plain `cargo test` runs this.
#![cfg(feature = "quinn")]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::{ClientConfig, Endpoint, EndpointConfig, ServerConfig, TokioRuntime};
use simnet::{HostConfig, Network, QuinnSocket};
use tokio::time::Instant;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn quinn_bidirectional_stream_over_simnet() {
    let cert = rcgen::generate_simple_self_signed(vec!["sim.test".into()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key = quinn::rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
    let server_cfg = ServerConfig::with_single_cert(vec![cert_der.clone()], key.into()).unwrap();
    let mut roots = quinn::rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let client_cfg = ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();

    let net = Network::new(21);
    // 25 ms per access link (50 ms one way) and 1 MB/s: QUIC has real work to do.
    let a = net
        .add_host_with(
            HostConfig::new(ip("10.0.0.1"))
                .latency(Duration::from_millis(25))
                .rate(1_000_000),
        )
        .unwrap();
    let b = net
        .add_host_with(
            HostConfig::new(ip("10.0.0.2"))
                .latency(Duration::from_millis(25))
                .rate(1_000_000),
        )
        .unwrap();
    let server_sock = QuinnSocket::new(b.bind_udp(sa("10.0.0.2:4433")).await.unwrap());
    let client_sock = QuinnSocket::new(a.bind_udp(sa("10.0.0.1:0")).await.unwrap());
    let server = Endpoint::new_with_abstract_socket(
        EndpointConfig::default(),
        Some(server_cfg),
        Arc::new(server_sock),
        Arc::new(TokioRuntime),
    )
    .unwrap();
    let mut client = Endpoint::new_with_abstract_socket(
        EndpointConfig::default(),
        None,
        Arc::new(client_sock),
        Arc::new(TokioRuntime),
    )
    .unwrap();
    client.set_default_client_config(client_cfg);

    let srv = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        assert_eq!(conn.remote_address().ip(), ip("10.0.0.1"));
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let got = recv.read_to_end(1 << 20).await.unwrap();
        let reply: Vec<u8> = got.iter().rev().copied().collect();
        send.write_all(&reply).await.unwrap();
        send.finish().unwrap();
        // Keep the connection until the client has everything.
        conn.closed().await;
    });

    let t0 = Instant::now();
    let conn = client
        .connect(sa("10.0.0.2:4433"), "sim.test")
        .unwrap()
        .await
        .unwrap();
    let handshake = t0.elapsed();
    // The handshake needs at least one round trip (100 ms) of virtual time.
    assert!(handshake >= Duration::from_millis(100), "{handshake:?}");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let msg: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    send.write_all(&msg).await.unwrap();
    send.finish().unwrap();
    let back = recv.read_to_end(1 << 20).await.unwrap();
    let expect: Vec<u8> = msg.iter().rev().copied().collect();
    assert_eq!(back, expect);
    // 200 kB each way at 1 MB/s: at least 0.2 s (the two directions use different links).
    let total = t0.elapsed();
    assert!(total >= Duration::from_millis(200), "{total:?}");
    conn.close(0u32.into(), b"done");
    srv.await.unwrap();
    assert!(net.stats().packets_delivered > 100);
}
