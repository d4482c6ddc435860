//! The LSD task: the multicast sockets, our announces on schedule, and the peers heard.
//!
//! Sockets (IPv4 required, IPv6 when the host allows it):
//! - a receiver bound to the group's port 6771 on every address, with `SO_REUSEADDR` and
//!   `SO_REUSEPORT` so that every client on the machine gets every announce (multicast is
//!   delivered to each socket bound to the port), joined to the group on the interface of
//!   our listen address (any when unspecified);
//! - a sender bound to our listen IP, so that the announce's source address, which is
//!   what receivers connect to (BEP 14), is the address we accept connections on; its
//!   multicast interface is that address's, and multicast loop is on (other clients on this
//!   machine must hear us).
//!
//! The IPv6 group often cannot be joined (no IPv6, or `lo` without an IPv6 multicast
//! route): then LSD runs on IPv4 alone and says so once in the log.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::announce::{self, GROUP_V4, GROUP_V6, MAX_DATAGRAM};
use super::limits::{Newcomers, PeerBudget, Schedule};
use crate::id::InfoHash;

/// Peers queued per torrent between the LSD task and the session (the rest are dropped).
const PEER_QUEUE: usize = 64;
/// Hops an announce may travel: above 1, as BEP 14 advises for its org-local group, and
/// small enough to stay in a site.
const MULTICAST_TTL: u32 = 16;

/// Where we listen for peers: the announced port, and the addresses whose interfaces carry
/// the announces (unspecified: the system's choice).
#[derive(Clone, Copy, Debug)]
pub struct LsdConfig {
    pub port: u16,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// Seeds the cookie that marks our own announces.
    pub seed: u64,
}

enum Cmd {
    Add(InfoHash, mpsc::Sender<SocketAddr>),
    Remove(InfoHash),
}

/// The running service; the task ends when this is dropped.
#[derive(Debug)]
pub struct Lsd {
    cmd: mpsc::UnboundedSender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Add(ih, _) => write!(f, "Add({ih})"),
            Cmd::Remove(ih) => write!(f, "Remove({ih})"),
        }
    }
}

/// One torrent announced and listened for; dropping it stops both.
#[derive(Debug)]
pub struct Registration {
    ih: InfoHash,
    cmd: mpsc::UnboundedSender<Cmd>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.cmd.send(Cmd::Remove(self.ih));
    }
}

struct Family {
    recv: UdpSocket,
    send: UdpSocket,
    group: SocketAddr,
}

impl Lsd {
    /// Opens the sockets and starts the task (needs a tokio runtime). Fails when IPv4
    /// multicast is unavailable (no route for the group, `lo` without multicast...).
    pub fn start(cfg: LsdConfig) -> std::io::Result<Lsd> {
        let v4 = match cfg.v4 {
            Some(ip) => Some(open_v4(ip)?),
            None => None,
        };
        let v6 = cfg.v6.and_then(|ip| match open_v6(ip) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::info!(%e, "LSD: no IPv6 multicast, announcing on IPv4 only");
                None
            }
        });
        if v4.is_none() && v6.is_none() {
            return Err(std::io::Error::other("LSD: no multicast socket"));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let cookie = format!("{:016x}", cfg.seed);
        tokio::spawn(run(rx, [v4, v6], cfg.port, cookie));
        Ok(Lsd { cmd: tx })
    }

    /// Announces `ih` from now on; the peers heard announcing it arrive on the receiver.
    pub fn register(&self, ih: InfoHash) -> (Registration, mpsc::Receiver<SocketAddr>) {
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let _ = self.cmd.send(Cmd::Add(ih, tx));
        (
            Registration {
                ih,
                cmd: self.cmd.clone(),
            },
            rx,
        )
    }
}

fn reuse_port(s: &Socket) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own with a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn into_tokio(s: Socket) -> std::io::Result<UdpSocket> {
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

fn open_v4(ip: Ipv4Addr) -> std::io::Result<Family> {
    let SocketAddr::V4(group) = GROUP_V4 else {
        return Err(std::io::Error::other("group"));
    };
    let recv = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    recv.set_reuse_address(true)?;
    reuse_port(&recv)?;
    recv.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, group.port())).into())?;
    recv.join_multicast_v4(group.ip(), &ip)?;
    let send = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    send.bind(&SocketAddr::from((ip, 0)).into())?;
    if !ip.is_unspecified() {
        send.set_multicast_if_v4(&ip)?;
    }
    send.set_multicast_loop_v4(true)?;
    send.set_multicast_ttl_v4(MULTICAST_TTL)?;
    Ok(Family {
        recv: into_tokio(recv)?,
        send: into_tokio(send)?,
        group: GROUP_V4,
    })
}

fn open_v6(ip: Ipv6Addr) -> std::io::Result<Family> {
    let SocketAddr::V6(group) = GROUP_V6 else {
        return Err(std::io::Error::other("group"));
    };
    let recv = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    recv.set_only_v6(true)?;
    recv.set_reuse_address(true)?;
    reuse_port(&recv)?;
    recv.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, group.port())).into())?;
    recv.join_multicast_v6(group.ip(), 0)?;
    let send = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    send.set_only_v6(true)?;
    send.bind(&SocketAddr::from((ip, 0)).into())?;
    send.set_multicast_loop_v6(true)?;
    send.set_multicast_hops_v6(MULTICAST_TTL)?;
    // A route to the group must exist (`lo` often has no IPv6 multicast route): connecting
    // a spare socket asks the routing table without sending anything.
    let probe = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    probe.bind(&SocketAddr::from((ip, 0)).into())?;
    probe.connect(&GROUP_V6.into())?;
    Ok(Family {
        recv: into_tokio(recv)?,
        send: into_tokio(send)?,
        group: GROUP_V6,
    })
}

async fn recv_on(f: &Option<Family>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match f {
        Some(f) => f.recv.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn run(
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    fams: [Option<Family>; 2],
    port: u16,
    cookie: String,
) {
    let mut schedule = Schedule::default();
    let mut budget = PeerBudget::default();
    let mut newcomers = Newcomers::default();
    let mut torrents: BTreeMap<InfoHash, mpsc::Sender<SocketAddr>> = BTreeMap::new();
    let mut buf4 = vec![0u8; MAX_DATAGRAM + 1];
    let mut buf6 = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let now = Instant::now();
        loop {
            let due = schedule.due(now);
            if due.is_empty() {
                break;
            }
            for f in fams.iter().flatten() {
                for pkt in announce::encode(f.group, port, &due, &cookie) {
                    if let Err(e) = f.send.send_to(&pkt, f.group).await {
                        tracing::debug!(%e, group = %f.group, "LSD announce not sent");
                    }
                }
            }
            tracing::debug!(n = due.len(), "LSD announced");
        }
        let wake = schedule
            .next_wake(now)
            .unwrap_or(now + Duration::from_secs(3600));
        let [f4, f6] = &fams;
        let (got, from, buf) = tokio::select! {
            c = cmds.recv() => {
                match c {
                    Some(Cmd::Add(ih, tx)) => {
                        schedule.add(ih, Instant::now());
                        torrents.insert(ih, tx);
                    }
                    Some(Cmd::Remove(ih)) => {
                        schedule.remove(&ih);
                        torrents.remove(&ih);
                    }
                    None => return,
                }
                continue;
            }
            _ = tokio::time::sleep_until(wake) => continue,
            r = recv_on(f4, &mut buf4) => match r {
                Ok((n, from)) => (n, from, &buf4),
                Err(_) => continue,
            },
            r = recv_on(f6, &mut buf6) => match r {
                Ok((n, from)) => (n, from, &buf6),
                Err(_) => continue,
            },
        };
        let a = match announce::parse(&buf[..got]) {
            Ok(a) => a,
            Err(e) => {
                tracing::trace!(%from, %e, "LSD: bad announce");
                continue;
            }
        };
        if a.cookie.as_deref() == Some(cookie.as_str()) {
            continue; // our own, looped back
        }
        let peer = SocketAddr::new(canonical(from.ip()), a.port);
        let now = Instant::now();
        for ih in &a.info_hashes {
            let Some(tx) = torrents.get(ih) else { continue };
            if newcomers.is_new(peer, *ih, now) {
                schedule.heard(ih, now);
            }
            if budget.admit(peer, *ih, now) {
                tracing::debug!(%peer, %ih, "LSD peer");
                let _ = tx.try_send(peer);
            }
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
