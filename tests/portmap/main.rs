//! Port mapping against in-test gateways on loopback (no real router): the UPnP IGD of
//! `support::igd` and the NAT-PMP/PCP gateway of `support::pmp`. Each test takes its own
//! [`support::loopback::fresh_ip`] addresses; SSDP searches go to the test IGD's unicast
//! address, so no multicast route is needed.

#[path = "../support/mod.rs"]
mod support;

mod miniupnpd;
mod portmap_fuzz;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use magnetfetch::internals::portmap::{MapConfig, MapStatus, PortMapping, Protocol, State};
use support::igd::{IgdOptions, TestIgd};
use support::loopback::fresh_ip;
use support::pmp::{PmpOptions, TestPmp};

/// A config for loopback: quick retransmissions, a short lease (renewed at half of it).
fn config(ssdp: SocketAddr, gateway: IpAddr) -> MapConfig {
    MapConfig {
        tcp_port: Some(6881),
        udp_port: Some(6882),
        gateway: Some(gateway),
        ssdp_target: ssdp,
        lease: Duration::from_secs(2),
        ssdp_wait: Duration::from_secs(2),
        pmp_first_timeout: Duration::from_millis(100),
        pmp_tries: 3,
        retry_after: Duration::from_secs(60),
        ..MapConfig::default()
    }
}

/// An address where nothing answers: a gateway there refuses at once (ICMP), an SSDP
/// search there gets no reply.
fn nowhere() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(fresh_ip()), 9)
}

/// Waits (at most 15 s) until the status satisfies `f`.
async fn wait_for(m: &PortMapping, what: &str, f: impl Fn(&MapStatus) -> bool) -> MapStatus {
    let mut rx = m.watch();
    let r = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let s = rx.borrow_and_update().clone();
            if f(&s) {
                return s;
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone();
            }
        }
    })
    .await;
    match r {
        Ok(s) if f(&s) => s,
        _ => panic!("{what}: never happened; status {:?}", m.status()),
    }
}

#[tokio::test]
async fn upnp_discovery_mapping_renewal_and_removal_on_close() {
    let igd = TestIgd::start(fresh_ip(), IgdOptions::default());
    let m = PortMapping::start(config(igd.ssdp, nowhere().ip()));
    let s = wait_for(&m, "mapped", |s| s.state == State::Mapped).await;
    assert_eq!(s.protocol, Some(Protocol::Upnp));
    assert_eq!(s.external_ip, Some(IpAddr::V4(igd.external_ip)));
    assert_eq!((s.tcp_external, s.udp_external), (Some(6881), Some(6882)));
    assert_eq!(
        s.external_addr(),
        Some(SocketAddr::new(IpAddr::V4(igd.external_ip), 6881))
    );
    let maps = igd.mappings();
    assert_eq!(maps.len(), 2, "{maps:?}");
    let tcp = &maps[&("TCP".to_string(), 6881)];
    assert_eq!((tcp.internal_port, tcp.lease), (6881, 2));
    assert_eq!(tcp.description, "magnetfetch");
    assert!(
        tcp.client.parse::<IpAddr>().unwrap().is_loopback(),
        "{tcp:?}"
    );
    assert_eq!(maps[&("UDP".to_string(), 6882)].internal_port, 6882);
    // Renewed at half the lease: AddPortMapping again for both.
    wait_for(&m, "renewed", |s| {
        s.renewals >= 1 && s.state == State::Mapped
    })
    .await;
    let adds = igd
        .log()
        .iter()
        .filter(|l| l.starts_with("AddPortMapping TCP 6881"))
        .count();
    assert!(adds >= 2, "{:?}", igd.log());
    m.close().await;
    assert!(igd.mappings().is_empty(), "{:?}", igd.log());
    let log = igd.log();
    assert!(
        log.contains(&"DeletePortMapping TCP 6881".to_string()),
        "{log:?}"
    );
    assert!(
        log.contains(&"DeletePortMapping UDP 6882".to_string()),
        "{log:?}"
    );
}

#[tokio::test]
async fn ip_connection_v2_and_ppp_connection_services_are_driven_too() {
    for service in [
        "urn:schemas-upnp-org:service:WANIPConnection:2",
        "urn:schemas-upnp-org:service:WANPPPConnection:1",
    ] {
        let igd = TestIgd::start(
            fresh_ip(),
            IgdOptions {
                service: Some(service.to_string()),
                ..IgdOptions::default()
            },
        );
        let m = PortMapping::start(config(igd.ssdp, nowhere().ip()));
        let s = wait_for(&m, "mapped", |s| s.state == State::Mapped).await;
        assert_eq!(
            s.external_ip,
            Some(IpAddr::V4(igd.external_ip)),
            "{service}"
        );
        assert_eq!(igd.mappings().len(), 2, "{service}");
        m.close().await;
        assert!(igd.mappings().is_empty(), "{service}");
        let used = igd.state.lock().unwrap().soap_services.clone();
        assert!(
            used.len() >= 5 && used.iter().all(|u| u == service),
            "{used:?}"
        );
    }
}

#[tokio::test]
async fn dropping_the_handle_deletes_the_mappings_too() {
    let igd = TestIgd::start(fresh_ip(), IgdOptions::default());
    let m = PortMapping::start(config(igd.ssdp, nowhere().ip()));
    wait_for(&m, "mapped", |s| s.state == State::Mapped).await;
    assert_eq!(igd.mappings().len(), 2);
    drop(m);
    for _ in 0..100 {
        if igd.mappings().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("mappings left after drop: {:?}", igd.log());
}

#[tokio::test]
async fn an_igd_that_refuses_lease_times_gets_permanent_mappings() {
    let igd = TestIgd::start(
        fresh_ip(),
        IgdOptions {
            permanent_only: true,
            ..IgdOptions::default()
        },
    );
    let m = PortMapping::start(config(igd.ssdp, nowhere().ip()));
    let s = wait_for(&m, "mapped", |s| s.state == State::Mapped).await;
    assert_eq!(s.tcp_external, Some(6881));
    let log = igd.log();
    assert_eq!(log[0], "AddPortMapping TCP 6881 lease=2 -> 725", "{log:?}");
    assert_eq!(log[1], "AddPortMapping TCP 6881 lease=0", "{log:?}");
    // Once refused, the next port asks for a permanent lease straight away.
    assert_eq!(log[2], "AddPortMapping UDP 6882 lease=0", "{log:?}");
    assert!(igd.mappings().values().all(|m| m.lease == 0));
    m.close().await;
    assert!(igd.mappings().is_empty(), "{:?}", igd.log());
}

#[tokio::test]
async fn a_port_another_host_holds_is_mapped_elsewhere() {
    let igd = TestIgd::start(
        fresh_ip(),
        IgdOptions {
            taken: vec![6881],
            ..IgdOptions::default()
        },
    );
    let m = PortMapping::start(config(igd.ssdp, nowhere().ip()));
    let s = wait_for(&m, "mapped", |s| s.state == State::Mapped).await;
    let ext = s.tcp_external.unwrap();
    assert_ne!(ext, 6881);
    assert!(igd.log()[0].ends_with("-> 718"), "{:?}", igd.log());
    assert_eq!(
        igd.mappings()[&("TCP".to_string(), ext)].internal_port,
        6881
    );
    // The renewal asks for the port it got, not the taken one again.
    wait_for(&m, "renewed", |s| s.renewals >= 1).await;
    assert_eq!(m.status().tcp_external, Some(ext));
    m.close().await;
    assert!(igd.mappings().is_empty(), "{:?}", igd.log());
}

#[tokio::test]
async fn garbage_and_foreign_ssdp_replies_are_ignored() {
    // A second host that must never be contacted.
    let foreign = std::net::TcpListener::bind((fresh_ip(), 0)).unwrap();
    foreign.set_nonblocking(true).unwrap();
    let igd = TestIgd::start(
        fresh_ip(),
        IgdOptions {
            hostile_ssdp: Some(foreign.local_addr().unwrap()),
            ..IgdOptions::default()
        },
    );
    let m = PortMapping::start(config(igd.ssdp, nowhere().ip()));
    let s = wait_for(&m, "mapped", |s| s.state == State::Mapped).await;
    assert_eq!(s.protocol, Some(Protocol::Upnp));
    assert!(foreign.accept().is_err(), "the foreign host was contacted");
    m.close().await;
}

#[tokio::test]
async fn a_control_url_on_another_host_is_refused() {
    let foreign = std::net::TcpListener::bind((fresh_ip(), 0)).unwrap();
    foreign.set_nonblocking(true).unwrap();
    let igd = TestIgd::start(
        fresh_ip(),
        IgdOptions {
            control_url: Some(format!(
                "http://{}/ctl/IPConn",
                foreign.local_addr().unwrap()
            )),
            ..IgdOptions::default()
        },
    );
    let m = PortMapping::start(config(igd.ssdp, nowhere().ip()));
    let s = wait_for(&m, "failed", |s| s.state == State::Failed).await;
    let err = s.error.unwrap();
    assert!(err.contains("not on the host that answered"), "{err}");
    assert!(foreign.accept().is_err(), "the foreign host was contacted");
    assert!(igd.log().is_empty(), "{:?}", igd.log());
    m.close().await;
}

/// NAT-PMP or PCP: mapping, the external address, renewal, a gateway restart noticed by
/// its epoch and remapped, and deletion on close.
async fn pmp_lifecycle(pcp: bool) {
    let gw = TestPmp::start(
        fresh_ip(),
        PmpOptions {
            pcp,
            garbage_first: true,
            ..PmpOptions::default()
        },
    );
    let m = PortMapping::start(config(nowhere(), gw.addr.ip()));
    let s = wait_for(&m, "mapped", |s| s.state == State::Mapped).await;
    let want = if pcp { Protocol::Pcp } else { Protocol::NatPmp };
    assert_eq!(s.protocol, Some(want));
    assert_eq!(s.external_ip, Some(IpAddr::V4(gw.external_ip)));
    assert_eq!((s.tcp_external, s.udp_external), (Some(6881), Some(6882)));
    assert_eq!(
        gw.mappings().into_iter().collect::<Vec<_>>(),
        vec![((6, 6881), (6881, 2)), ((17, 6882), (6882, 2))]
    );
    wait_for(&m, "renewed", |s| s.renewals >= 1).await;
    gw.restart();
    assert!(gw.mappings().is_empty());
    let s = wait_for(&m, "restart noticed", |s| s.gateway_restarts >= 1).await;
    assert_eq!(s.state, State::Mapped);
    assert_eq!(gw.mappings().len(), 2, "{:?}", gw.log());
    m.close().await;
    assert!(gw.mappings().is_empty(), "{:?}", gw.log());
    let log = gw.log();
    let kind = if pcp { "pcp" } else { "natpmp" };
    assert!(
        log.contains(&format!("{kind} map 6 6881 lifetime=0")),
        "{log:?}"
    );
    assert!(
        log.contains(&format!("{kind} map 17 6882 lifetime=0")),
        "{log:?}"
    );
    if !pcp {
        assert!(log.contains(&"pcp refused".to_string()), "{log:?}");
    }
}

#[tokio::test]
async fn natpmp_lifecycle() {
    pmp_lifecycle(false).await;
}

#[tokio::test]
async fn pcp_lifecycle() {
    pmp_lifecycle(true).await;
}

#[tokio::test]
async fn a_gateway_that_refuses_or_talks_garbage_fails_cleanly() {
    for opts in [
        PmpOptions {
            pcp: false,
            error: Some(2),
            ..PmpOptions::default()
        },
        PmpOptions {
            pcp: true,
            error: Some(2),
            ..PmpOptions::default()
        },
        PmpOptions {
            only_garbage: true,
            ..PmpOptions::default()
        },
    ] {
        let gw = TestPmp::start(fresh_ip(), opts.clone());
        let m = PortMapping::start(config(nowhere(), gw.addr.ip()));
        let s = wait_for(&m, "failed", |s| s.state == State::Failed).await;
        let err = s.error.clone().unwrap();
        if opts.only_garbage {
            assert!(err.contains("no answer"), "{err}");
        } else {
            assert!(err.contains("not authorized"), "{opts:?}: {err}");
        }
        assert!(gw.mappings().is_empty());
        m.close().await;
    }
}

#[tokio::test]
async fn nothing_to_find_is_a_failure_with_both_reasons() {
    let m = PortMapping::start(config(nowhere(), nowhere().ip()));
    let s = wait_for(&m, "failed", |s| s.state == State::Failed).await;
    let err = s.error.unwrap();
    assert!(
        err.contains("UPnP: ") && err.contains("NAT-PMP/PCP: "),
        "{err}"
    );
    m.close().await;
}

/// `natpmpc` and `upnpc` (miniupnpc), independent clients, against the in-test gateways:
/// the test servers speak the protocols as others understand them.
#[tokio::test]
async fn independent_clients_agree_with_the_test_servers() {
    if !support::require_or_skip("natpmpc") || !support::require_or_skip("upnpc") {
        return;
    }
    let gw = TestPmp::start(fresh_ip(), PmpOptions::default());
    let ip = gw.addr.ip().to_string();
    let out = tokio::process::Command::new("natpmpc")
        .args(["-g", &ip, "-a", "7001", "7000", "tcp", "60"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("Public IP address : {}", gw.external_ip)),
        "{text}"
    );
    assert!(
        text.contains("Mapped public port 7001 protocol TCP to local port 7000"),
        "{text}"
    );
    assert_eq!(gw.mappings()[&(6, 7000)], (7001, 60));

    let igd = TestIgd::start(fresh_ip(), IgdOptions::default());
    let url = format!("http://{}/rootDesc.xml", igd.http);
    let out = tokio::process::Command::new("upnpc")
        .args(["-u", &url, "-a", "127.0.0.1", "7002", "7003", "UDP"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("ExternalIPAddress = {}", igd.external_ip)),
        "{text}"
    );
    let m = &igd.mappings()[&("UDP".to_string(), 7003)];
    assert_eq!((m.internal_port, m.client.as_str()), (7002, "127.0.0.1"));
}
