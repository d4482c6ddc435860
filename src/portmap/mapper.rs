//! The port-mapping task: finds a gateway (UPnP's SSDP search and NAT-PMP/PCP to the
//! gateway, at the same time; the first that answers is used), maps every port, renews at
//! half the granted lease, remaps when a NAT-PMP/PCP gateway's epoch shows it restarted,
//! starts over after a failure, and deletes its mappings when told to stop.
//!
//! The sockets are tokio's own, not the `Net` seam's: port mapping only exists on a real
//! LAN (there is no router in the simulator), SSDP must receive from any host, and the
//! NAT-PMP/PCP socket is connected to the gateway so that an ICMP "port unreachable" ends
//! the attempt at once instead of after every retransmission.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::igd::{self, IgdError, Service};
use super::{gateway, natpmp, pcp, ssdp, xml};
use super::{MapConfig, MapStatus, Proto, Protocol, State};
use crate::http::{ConnectOpts, HttpConn, Url};
use crate::net::Net;

/// An HTTP exchange with the IGD takes at most this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// SOAP replies larger than this are refused (they are a few hundred bytes).
const MAX_SOAP_REPLY: usize = 16 * 1024;
/// Device descriptions tried per search at most (each is one HTTP fetch).
const MAX_LOCATIONS: usize = 8;
/// Other external ports tried after a UPnP conflict (error 718).
const CONFLICT_TRIES: usize = 4;

/// One port to map and what it became.
#[derive(Debug, Clone, Copy)]
struct Port {
    proto: Proto,
    internal: u16,
    /// The external port granted (also what a renewal asks for again).
    external: Option<u16>,
    /// The lease granted, seconds (0: permanent).
    lease: u32,
}

/// A gateway that answered.
enum Gateway {
    Upnp(Upnp),
    Pmp(Pmp),
}

struct Upnp {
    svc: Service,
    /// Our address as the IGD sees it (`NewInternalClient`).
    local: IpAddr,
    /// The IGD refused leases with a time (725): ask for permanent ones.
    permanent: bool,
}

struct Pmp {
    sock: UdpSocket,
    pcp: bool,
    /// Our address towards the gateway (PCP's client address).
    client: IpAddr,
    /// One nonce per run: it names our PCP mappings for renewal and deletion.
    nonce: [u8; 12],
    epoch: pcp::Epoch,
    started: Instant,
    external_ip: Option<IpAddr>,
    /// Restarts noticed since the last look.
    restarts: u32,
}

fn set(tx: &watch::Sender<MapStatus>, f: impl FnOnce(&mut MapStatus)) {
    tx.send_modify(f);
}

/// Runs until `stop` fires or its sender is dropped; then deletes what it mapped.
pub async fn run(cfg: MapConfig, tx: watch::Sender<MapStatus>, mut stop: oneshot::Receiver<()>) {
    let mut ports: Vec<Port> = [(Proto::Tcp, cfg.tcp_port), (Proto::Udp, cfg.udp_port)]
        .into_iter()
        .filter_map(|(proto, p)| {
            p.filter(|&p| p != 0).map(|internal| Port {
                proto,
                internal,
                external: None,
                lease: 0,
            })
        })
        .collect();
    if ports.is_empty() {
        set(&tx, |s| {
            s.state = State::Closed;
            s.error = Some("no port to map".into());
        });
        return;
    }
    loop {
        set(&tx, |s| s.state = State::Discovering);
        let found = tokio::select! {
            _ = &mut stop => break,
            r = discover(&cfg) => r,
        };
        let mut gw = match found {
            Ok(gw) => gw,
            Err(e) => {
                tracing::debug!(%e, "port mapping: no gateway");
                set(&tx, |s| {
                    s.state = State::Failed;
                    s.error = Some(e);
                });
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(cfg.retry_after) => continue,
                }
            }
        };
        for p in &mut ports {
            p.external = None;
        }
        // Mapping is not interrupted by a stop: what it maps is deleted right after.
        let mut result = map_all(&mut gw, &cfg, &mut ports).await;
        let mut renewals = 0;
        loop {
            match result {
                Ok(ip) => set(&tx, |s| {
                    s.state = State::Mapped;
                    s.protocol = Some(gw.protocol());
                    s.external_ip = ip.or(s.external_ip);
                    s.tcp_external = ports
                        .iter()
                        .find(|p| p.proto == Proto::Tcp)
                        .and_then(|p| p.external);
                    s.udp_external = ports
                        .iter()
                        .find(|p| p.proto == Proto::Udp)
                        .and_then(|p| p.external);
                    s.error = None;
                    s.renewals = renewals;
                }),
                Err(e) => {
                    tracing::debug!(%e, "port mapping failed");
                    set(&tx, |s| {
                        s.state = State::Failed;
                        s.protocol = Some(gw.protocol());
                        s.error = Some(e);
                    });
                    break;
                }
            }
            let granted = ports.iter().map(|p| p.lease).filter(|&l| l > 0).min();
            let renew_in = match granted {
                Some(l) => Duration::from_secs(u64::from(l)) / 2,
                // Permanent: added again now and then (a router that rebooted forgets).
                None => cfg.lease / 2,
            };
            tokio::select! {
                _ = &mut stop => {
                    delete_all(&mut gw, &ports).await;
                    set(&tx, |s| s.state = State::Closed);
                    return;
                }
                _ = tokio::time::sleep(renew_in) => {}
            }
            result = map_all(&mut gw, &cfg, &mut ports).await;
            renewals += 1;
            let restarts = gw.take_restarts();
            if restarts > 0 {
                set(&tx, |s| s.gateway_restarts += restarts);
            }
        }
        // Deleted what is left (a half-made mapping) before starting over.
        delete_all(&mut gw, &ports).await;
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(cfg.retry_after) => {}
        }
    }
    set(&tx, |s| s.state = State::Closed);
}

impl Gateway {
    fn protocol(&self) -> Protocol {
        match self {
            Gateway::Upnp(_) => Protocol::Upnp,
            Gateway::Pmp(p) if p.pcp => Protocol::Pcp,
            Gateway::Pmp(_) => Protocol::NatPmp,
        }
    }

    fn take_restarts(&mut self) -> u32 {
        match self {
            Gateway::Upnp(_) => 0,
            Gateway::Pmp(p) => std::mem::take(&mut p.restarts),
        }
    }
}

/// UPnP and NAT-PMP/PCP at the same time: the first gateway that answers. Nothing is mapped
/// yet, so the other search is simply dropped.
async fn discover(cfg: &MapConfig) -> Result<Gateway, String> {
    let upnp = discover_upnp(cfg);
    let pmp = discover_pmp(cfg);
    tokio::pin!(upnp, pmp);
    let (mut upnp_err, mut pmp_err) = (None, None);
    loop {
        tokio::select! {
            r = &mut pmp, if pmp_err.is_none() => match r {
                Ok(g) => return Ok(Gateway::Pmp(g)),
                Err(e) => pmp_err = Some(e),
            },
            r = &mut upnp, if upnp_err.is_none() => match r {
                Ok(g) => return Ok(Gateway::Upnp(g)),
                Err(e) => upnp_err = Some(e),
            },
        }
        if let (Some(u), Some(p)) = (&upnp_err, &pmp_err) {
            return Err(format!("UPnP: {u}; NAT-PMP/PCP: {p}"));
        }
    }
}

/// Our own address on the way to `to` (a connected UDP socket sends nothing).
fn local_ip_towards(to: SocketAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = match to {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(any)?;
    s.connect(to)?;
    Ok(s.local_addr()?.ip())
}

async fn discover_upnp(cfg: &MapConfig) -> Result<Upnp, String> {
    let any: SocketAddr = match cfg.ssdp_target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(any).await.map_err(|e| e.to_string())?;
    for st in ssdp::SEARCH_TARGETS {
        let msg = ssdp::m_search(cfg.ssdp_target, st, 2);
        sock.send_to(msg.as_bytes(), cfg.ssdp_target)
            .await
            .map_err(|e| format!("SSDP search: {e}"))?;
    }
    let deadline = Instant::now() + cfg.ssdp_wait;
    let mut tried: Vec<String> = Vec::new();
    let mut last_err = "no IGD answered the SSDP search".to_string();
    let mut buf = vec![0u8; ssdp::MAX_REPLY + 1];
    while tried.len() < MAX_LOCATIONS {
        let (n, from) = match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
            Ok(Ok(r)) => r,
            // A stray ICMP error on an unconnected socket: keep listening.
            Ok(Err(_)) => continue,
            Err(_) => break,
        };
        let Some(reply) = ssdp::parse_reply(&buf[..n]) else {
            continue;
        };
        if tried.contains(&reply.location) {
            continue;
        }
        tried.push(reply.location.clone());
        match describe(&reply.location, from.ip()).await {
            Ok(svc) => {
                let local = local_ip_towards(svc.addr).map_err(|e| e.to_string())?;
                return Ok(Upnp {
                    svc,
                    local,
                    permanent: false,
                });
            }
            Err(e) => {
                tracing::debug!(location = %reply.location, %e, "not a usable IGD");
                last_err = format!("{}: {e}", reply.location);
            }
        }
    }
    Err(last_err)
}

/// Fetches and reads the device description at `location`, which must be on `host` (the
/// address that answered the search).
async fn describe(location: &str, host: IpAddr) -> Result<Service, String> {
    let (addr, path) = igd::url_on_host(location, host).map_err(|e| e.to_string())?;
    let url = Url {
        scheme: "http".into(),
        host: addr.ip().to_string(),
        port: addr.port(),
        path: path.clone(),
    };
    let net = Net::Tokio;
    let mut c = HttpConn::open(&net, &url, &ConnectOpts::default(), HTTP_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let r = c
        .get(&path, &[], false, xml::MAX_DOC, HTTP_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("HTTP {}", r.status));
    }
    igd::parse_description(&r.body, location, host).map_err(|e| e.to_string())
}

/// One SOAP action on the IGD's control URL; `want`: the output argument to return.
async fn soap(
    svc: &Service,
    action: &str,
    args: &[(&str, String)],
    want: Option<&'static str>,
) -> Result<Option<String>, IgdError> {
    let (soap_action, body) = igd::soap_request(&svc.service_type, action, args);
    let url = Url {
        scheme: "http".into(),
        host: svc.addr.ip().to_string(),
        port: svc.addr.port(),
        path: svc.path.clone(),
    };
    let net = Net::Tokio;
    let http = |e: crate::http::HttpError| IgdError::Fault {
        code: 0,
        description: format!("HTTP: {e}"),
    };
    let mut c = HttpConn::open(&net, &url, &ConnectOpts::default(), HTTP_TIMEOUT)
        .await
        .map_err(http)?;
    let r = c
        .post(
            &svc.path,
            &[
                ("Content-Type", "text/xml; charset=\"utf-8\""),
                ("SOAPAction", &soap_action),
            ],
            body.as_bytes(),
            MAX_SOAP_REPLY,
            HTTP_TIMEOUT,
        )
        .await
        .map_err(http)?;
    igd::parse_soap_reply(r.status, &r.body, want)
}

async fn discover_pmp(cfg: &MapConfig) -> Result<Pmp, String> {
    let gw = match cfg.gateway {
        Some(g) => g,
        None => IpAddr::V4(gateway::default_gateway().ok_or("no default gateway")?),
    };
    let any: SocketAddr = match gw {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(any).await.map_err(|e| e.to_string())?;
    sock.connect((gw, natpmp::SERVER_PORT))
        .await
        .map_err(|e| e.to_string())?;
    let client = sock.local_addr().map_err(|e| e.to_string())?.ip();
    let mut p = Pmp {
        sock,
        pcp: true,
        client,
        nonce: rand::random(),
        epoch: pcp::Epoch::default(),
        started: Instant::now(),
        external_ip: None,
        restarts: 0,
    };
    let reply = exchange(cfg, &p.sock, &pcp::announce_request(client), |b| {
        pcp::parse_reply(b)
            .ok()
            .filter(|r| !matches!(r, pcp::Reply::Map { .. }))
    })
    .await
    .map_err(|e| format!("{gw}: {e}"))?;
    match reply {
        pcp::Reply::NatPmpOnly => {
            p.pcp = false;
            p.external_ip = Some(pmp_external(cfg, &mut p).await?);
        }
        pcp::Reply::Announce { epoch } | pcp::Reply::Error { epoch, .. } => {
            p.epoch.observe(epoch, p.started.elapsed().as_secs());
        }
        pcp::Reply::Map { .. } => unreachable!("filtered out"),
    }
    Ok(p)
}

/// NAT-PMP's external address request.
async fn pmp_external(cfg: &MapConfig, p: &mut Pmp) -> Result<IpAddr, String> {
    let r =
        exchange(
            cfg,
            &p.sock,
            &natpmp::external_address_request(),
            |b| match natpmp::parse_reply(b) {
                Ok(r @ natpmp::Reply::External { .. }) => Some(r),
                Ok(r @ natpmp::Reply::Error { op: 0, .. }) => Some(r),
                _ => None,
            },
        )
        .await?;
    match r {
        natpmp::Reply::External { epoch, ip } => {
            if !p.epoch.observe(epoch, p.started.elapsed().as_secs()) {
                p.restarts += 1;
            }
            Ok(IpAddr::V4(ip))
        }
        natpmp::Reply::Error { code, .. } => Err(format!(
            "NAT-PMP error {code} ({})",
            natpmp::result_text(code)
        )),
        natpmp::Reply::Map { .. } => Err("unexpected reply".into()),
    }
}

/// Sends `req` and waits for a datagram `accept` takes, retransmitting with doubling
/// timeouts (RFC 6886 section 3.1, RFC 6887 section 8.1.1). Other datagrams are ignored.
async fn exchange<R>(
    cfg: &MapConfig,
    sock: &UdpSocket,
    req: &[u8],
    accept: impl Fn(&[u8]) -> Option<R>,
) -> Result<R, String> {
    let mut wait = cfg.pmp_first_timeout;
    let mut buf = [0u8; pcp::MAX_MESSAGE + 1];
    for _ in 0..cfg.pmp_tries.max(1) {
        sock.send(req).await.map_err(|e| e.to_string())?;
        let deadline = Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    if let Some(r) = accept(&buf[..n]) {
                        return Ok(r);
                    }
                }
                // ICMP port unreachable: nothing listens there.
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => break,
            }
        }
        wait *= 2;
    }
    Err("no answer".into())
}

/// Maps (or renews) every port; returns the external address when the gateway said it.
async fn map_all(
    gw: &mut Gateway,
    cfg: &MapConfig,
    ports: &mut [Port],
) -> Result<Option<IpAddr>, String> {
    match gw {
        Gateway::Upnp(u) => {
            for p in ports.iter_mut() {
                upnp_map(u, cfg, p).await?;
            }
            let ip = soap(
                &u.svc,
                "GetExternalIPAddress",
                &[],
                Some("NewExternalIPAddress"),
            )
            .await
            .ok()
            .flatten()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified());
            Ok(ip)
        }
        Gateway::Pmp(g) => {
            let before = g.restarts;
            for p in ports.iter_mut() {
                pmp_map(
                    g,
                    cfg,
                    p,
                    cfg.lease.as_secs().min(u64::from(u32::MAX)) as u32,
                )
                .await?;
            }
            if !g.pcp && (g.external_ip.is_none() || g.restarts > before) {
                // The address may have changed with the restart.
                g.external_ip = Some(pmp_external(cfg, g).await?);
            }
            Ok(g.external_ip)
        }
    }
}

async fn upnp_map(u: &mut Upnp, cfg: &MapConfig, p: &mut Port) -> Result<(), String> {
    let mut external = p.external.unwrap_or(p.internal);
    let mut conflicts = 0;
    loop {
        let lease = if u.permanent {
            0
        } else {
            cfg.lease.as_secs().clamp(1, u64::from(u32::MAX)) as u32
        };
        let args = igd::add_port_mapping_args(
            p.proto.upnp_name(),
            external,
            p.internal,
            u.local,
            &cfg.description,
            lease,
        );
        match soap(&u.svc, "AddPortMapping", &args, None).await {
            Ok(_) => {
                p.external = Some(external);
                p.lease = lease;
                return Ok(());
            }
            // "OnlyPermanentLeasesSupported": the spec's answer is a lease of 0.
            Err(IgdError::Fault { code, .. })
                if code == igd::ERR_ONLY_PERMANENT_LEASES && !u.permanent =>
            {
                u.permanent = true;
            }
            // "ConflictInMappingEntry": another host has that external port.
            Err(IgdError::Fault { code, .. })
                if code == igd::ERR_CONFLICT && conflicts < CONFLICT_TRIES =>
            {
                conflicts += 1;
                external = rand::random_range(10_000..60_000);
            }
            Err(e) => {
                return Err(format!(
                    "UPnP AddPortMapping {} {external}: {e}",
                    p.proto.upnp_name()
                ))
            }
        }
    }
}

async fn pmp_map(g: &mut Pmp, cfg: &MapConfig, p: &mut Port, lifetime: u32) -> Result<(), String> {
    let suggested = p.external.unwrap_or(p.internal);
    let now = g.started.elapsed().as_secs();
    if g.pcp {
        let req = pcp::map_request(g.nonce, p.proto, g.client, p.internal, suggested, lifetime);
        let (nonce, proto, internal) = (g.nonce, p.proto, p.internal);
        let r = exchange(cfg, &g.sock, &req, |b| match pcp::parse_reply(b) {
            Ok(
                r @ pcp::Reply::Map {
                    nonce: n,
                    proto: pr,
                    internal: i,
                    ..
                },
            ) if n == nonce && pr == proto && i == internal => Some(r),
            Ok(r @ pcp::Reply::Error { op: 1, .. }) => Some(r),
            _ => None,
        })
        .await?;
        match r {
            pcp::Reply::Map {
                epoch,
                lifetime: granted,
                external,
                external_ip,
                ..
            } => {
                if !g.epoch.observe(epoch, now) {
                    g.restarts += 1;
                }
                if lifetime > 0 {
                    p.external = Some(external);
                    p.lease = granted.max(1);
                    if !external_ip.is_unspecified() {
                        g.external_ip = Some(external_ip);
                    }
                }
                Ok(())
            }
            pcp::Reply::Error { code, .. } => Err(format!(
                "PCP MAP {}: error {code} ({})",
                p.proto.upnp_name(),
                pcp::result_text(code)
            )),
            _ => Err("unexpected PCP reply".into()),
        }
    } else {
        let req = natpmp::map_request(
            p.proto,
            p.internal,
            if lifetime == 0 { 0 } else { suggested },
            lifetime,
        );
        let (proto, internal) = (p.proto, p.internal);
        let r = exchange(cfg, &g.sock, &req, |b| match natpmp::parse_reply(b) {
            Ok(
                r @ natpmp::Reply::Map {
                    proto: pr,
                    internal: i,
                    ..
                },
            ) if pr == proto && i == internal => Some(r),
            Ok(r @ natpmp::Reply::Error { op: 1 | 2, .. }) => Some(r),
            _ => None,
        })
        .await?;
        match r {
            natpmp::Reply::Map {
                epoch,
                external,
                lifetime: granted,
                ..
            } => {
                if !g.epoch.observe(epoch, now) {
                    g.restarts += 1;
                }
                if lifetime > 0 {
                    p.external = Some(external);
                    p.lease = granted.max(1);
                }
                Ok(())
            }
            natpmp::Reply::Error { code, .. } => Err(format!(
                "NAT-PMP map {}: error {code} ({})",
                p.proto.upnp_name(),
                natpmp::result_text(code)
            )),
            _ => Err("unexpected NAT-PMP reply".into()),
        }
    }
}

/// Deletes every mapping made (errors are only logged: we are leaving).
async fn delete_all(gw: &mut Gateway, ports: &[Port]) {
    for p in ports {
        let Some(external) = p.external else {
            continue;
        };
        let r = match gw {
            Gateway::Upnp(u) => {
                let args = igd::delete_port_mapping_args(p.proto.upnp_name(), external);
                soap(&u.svc, "DeletePortMapping", &args, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Gateway::Pmp(g) => {
                // One quick try each: a clean exit must not hang on a silent gateway.
                let cfg = MapConfig {
                    pmp_tries: 2,
                    ..MapConfig::default()
                };
                let mut q = *p;
                pmp_map(g, &cfg, &mut q, 0).await
            }
        };
        if let Err(e) = r {
            tracing::debug!(%e, port = external, "port mapping: delete failed");
        }
    }
}
