//! BEP 32 over simnet, on tokio's paused clock: IPv4-only, IPv6-only and dual-stack DHT
//! nodes (the same `Dht` task as on real sockets) in one network.
//!
//! The dual-stack nodes bootstrap from the root's IPv4 address only, so their IPv6 tables
//! can only fill through `want: [n4, n6]` answers over IPv4 (`nodes6`). Then a lookup from a
//! dual-stack node finds a peer announced by an IPv6-only node (and one announced by an
//! IPv4-only node, streamed in the same lookup), while an IPv4-only node cannot see the
//! IPv6 peer (BEP 32: two separate DHTs).
//!
//! simnet keys UDP sockets by (host, port), so a dual-stack host binds its IPv6 socket on
//! another port than its IPv4 one (real sockets could share the port number).
//!
//! Virtual time: every wait is on an event (bootstrap finished, lookup finished).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use magnetfetch::internals::dht::{Dht, DhtConfig};
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::net::Net;

const PORT4: u16 = 6881;
const PORT6: u16 = 6882;

fn v4(group: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, group, 0, i as u8 + 1))
}

fn v6(group: u16, i: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, group, 0, 0, 0, i as u16 + 1))
}

fn cfg(seed: u64, bootstrap: Vec<SocketAddr>) -> DhtConfig {
    DhtConfig {
        seed: Some(seed),
        bootstrap,
        ..Default::default()
    }
}

async fn drain(mut rx: tokio::sync::mpsc::Receiver<SocketAddr>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    while let Some(p) = rx.recv().await {
        out.push(p);
    }
    out.sort();
    out
}

#[tokio::test(start_paused = true)]
async fn dual_stack_nodes_fill_both_tables_and_find_ipv6_only_peers() {
    let net = simnet::Network::with_config(
        32,
        simnet::NetworkConfig {
            latency: Duration::from_millis(20),
            ..Default::default()
        },
    );
    const N: usize = 16;
    // The root: dual stack, bootstraps from nobody.
    let root_h = net
        .add_host_with(simnet::HostConfig::new(v4(0, 0)).ip(v6(0, 0)))
        .unwrap();
    let root4 = SocketAddr::new(v4(0, 0), PORT4);
    let root6 = SocketAddr::new(v6(0, 0), PORT6);
    let root = Dht::start_multi(Net::Sim(root_h), &[root4, root6], cfg(1, vec![]))
        .await
        .unwrap();
    assert_eq!(root.local_addrs(), &[root4, root6]);
    // Single-stack nodes of each family.
    let mut only4 = Vec::new();
    let mut only6 = Vec::new();
    for i in 0..N {
        let h4 = net.add_host(v4(1, i)).unwrap();
        let a4 = SocketAddr::new(v4(1, i), PORT4);
        only4.push(
            Dht::start(Net::Sim(h4), a4, cfg(100 + i as u64, vec![root4]))
                .await
                .unwrap(),
        );
        let h6 = net.add_host(v6(1, i)).unwrap();
        let a6 = SocketAddr::new(v6(1, i), PORT4);
        only6.push(
            Dht::start(Net::Sim(h6), a6, cfg(200 + i as u64, vec![root6]))
                .await
                .unwrap(),
        );
    }
    for d in only4.iter().chain(&only6) {
        d.bootstrapped().await;
    }
    // Dual-stack nodes that know only the root's IPv4 address.
    let mut dual = Vec::new();
    for i in 0..N {
        let h = net
            .add_host_with(simnet::HostConfig::new(v4(2, i)).ip(v6(2, i)))
            .unwrap();
        let binds = [
            SocketAddr::new(v4(2, i), PORT4),
            SocketAddr::new(v6(2, i), PORT6),
        ];
        dual.push(
            Dht::start_multi(Net::Sim(h), &binds, cfg(300 + i as u64, vec![root4]))
                .await
                .unwrap(),
        );
    }
    for d in &dual {
        d.bootstrapped().await;
    }

    // Tables: separate per family, both filled on dual-stack nodes.
    for d in &dual {
        let s = d.stats().await;
        assert!(s.table_v4 >= 8, "dual node's IPv4 table: {s:?}");
        assert!(
            s.table_v6 >= 8,
            "dual node's IPv6 table, filled through IPv4 answers: {s:?}"
        );
    }
    for d in &only4 {
        let s = d.stats().await;
        assert_eq!(s.table_v6, 0, "{s:?}");
        assert!(s.table_v4 > 0, "{s:?}");
    }
    for d in &only6 {
        let s = d.stats().await;
        assert_eq!(s.table_v4, 0, "{s:?}");
        assert!(s.table_v6 > 0, "{s:?}");
    }
    let rs = root.stats().await;
    assert!(rs.table_v4 > 0 && rs.table_v6 > 0, "{rs:?}");

    // An IPv6-only node announces; a dual-stack node finds it, an IPv4-only node cannot.
    let ih = Id20([0x6a; 20]);
    let h = only6[3].lookup(ih, Some(Some(7777)), false).await;
    drain(h.peers).await;
    let s = h.done.await.unwrap();
    assert!(s.announced_to >= 1, "{s:?}");
    let peer6 = SocketAddr::new(v6(1, 3), 7777);
    let h = dual[5].lookup(ih, None, false).await;
    let found = drain(h.peers).await;
    let sum = h.done.await.unwrap();
    assert_eq!(found, vec![peer6], "dual-stack lookup: {sum:?}");
    eprintln!("dual-stack lookup of an IPv6-only peer: {sum:?}");
    assert!(drain(only4[7].get_peers(ih).await).await.is_empty());

    // Peers of both families for one hash: a dual lookup streams both; each single-stack
    // node sees its own family only.
    let ih2 = Id20([0x2b; 20]);
    drain(only4[2].announce(ih2, Some(4444)).await).await;
    drain(only6[9].announce(ih2, Some(6666)).await).await;
    let peer4 = SocketAddr::new(v4(1, 2), 4444);
    let peer6 = SocketAddr::new(v6(1, 9), 6666);
    assert_eq!(
        drain(dual[11].get_peers(ih2).await).await,
        vec![peer4, peer6]
    );
    assert_eq!(drain(only4[13].get_peers(ih2).await).await, vec![peer4]);
    assert_eq!(drain(only6[13].get_peers(ih2).await).await, vec![peer6]);

    // A dual-stack node announces in both families: single-stack nodes of each find it.
    let ih3 = Id20([0x3c; 20]);
    let h = dual[1].lookup(ih3, Some(Some(5555)), false).await;
    drain(h.peers).await;
    h.done.await.unwrap();
    assert_eq!(
        drain(only4[4].get_peers(ih3).await).await,
        vec![SocketAddr::new(v4(2, 1), 5555)]
    );
    assert_eq!(
        drain(only6[4].get_peers(ih3).await).await,
        vec![SocketAddr::new(v6(2, 1), 5555)]
    );
}
