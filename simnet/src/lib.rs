//! simnet: an in-process simulated network running on tokio's virtual clock.
//!
//! Knows nothing of BitTorrent. A [`Network`] holds hosts; each [`Host`] binds UDP sockets,
//! listens for and connects TCP-like streams, with an API shaped like tokio's. Packets pass
//! through a per-host uplink queue (bandwidth), the wire (latency + jitter, loss for
//! datagrams), and the receiver's downlink queue. See `docs/simnet.md` for the model.
//!
//! # Virtual time and determinism
//!
//! Run it on a current-thread runtime with a paused clock (`#[tokio::test(start_paused =
//! true)]`, or `Builder::new_current_thread().start_paused(true)`): tokio then jumps the clock
//! forward whenever every task is idle, so a simulated hour costs only its events. With one
//! seed and a current-thread runtime, runs are identical: all randomness comes from one
//! `StdRng` per network, the event queue is ordered by `(time, sequence)`, and nothing
//! iterates a hash map. A multi-thread runtime works but interleaves tasks nondeterministically.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> std::io::Result<()> {
//! let net = simnet::Network::new(7);
//! let a = net.add_host("10.0.0.1".parse().unwrap())?;
//! let b = net.add_host("10.0.0.2".parse().unwrap())?;
//! let sa = a.bind_udp("10.0.0.1:0".parse().unwrap()).await?;
//! let sb = b.bind_udp("0.0.0.0:6881".parse().unwrap()).await?;
//! sa.send_to(b"ping", "10.0.0.2:6881".parse().unwrap()).await?;
//! let mut buf = [0u8; 16];
//! let (n, from) = sb.recv_from(&mut buf).await?;
//! assert_eq!((&buf[..n], from), (&b"ping"[..], sa.local_addr()?));
//! # Ok(()) }
//! ```

mod config;
mod core;
mod nat;
#[cfg(feature = "quinn")]
mod quinn_socket;
mod stream;
mod udp;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use crate::config::{HostConfig, NetworkConfig};
use crate::core::{HostId, Shared};
pub use crate::nat::NatKind;
#[cfg(feature = "quinn")]
pub use crate::quinn_socket::QuinnSocket;
pub use crate::stream::{TcpListener, TcpStream};
pub use crate::udp::UdpSocket;

/// Packet counters. Stream data counts as packets too (one per chunk of up to 64 KiB).
///
/// For a host: `*_sent` and `*_dropped` count packets this host sent (dropped anywhere on the
/// way: loss, partition, full queue, closed port, host down); `*_delivered` counts packets
/// delivered *to* this host. Network totals sum all hosts, so
/// `sent = delivered + dropped + in flight`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub packets_delivered: u64,
    pub bytes_delivered: u64,
    pub packets_dropped: u64,
    pub bytes_dropped: u64,
}

/// A simulated network. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct Network {
    shared: Arc<Shared>,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network").finish_non_exhaustive()
    }
}

impl Network {
    /// A network with default parameters (see [`NetworkConfig::default`]).
    pub fn new(seed: u64) -> Network {
        Network::with_config(seed, NetworkConfig::default())
    }

    pub fn with_config(seed: u64, cfg: NetworkConfig) -> Network {
        Network {
            shared: Shared::new(seed, cfg),
        }
    }

    /// Adds a host with one address and the network's default link parameters.
    pub fn add_host(&self, ip: IpAddr) -> io::Result<Host> {
        self.add_host_with(HostConfig::new(ip))
    }

    /// Adds a host; fails with `AddrInUse` if one of its addresses is taken.
    pub fn add_host_with(&self, cfg: HostConfig) -> io::Result<Host> {
        let now = tokio::time::Instant::now();
        let id = self.shared.core.lock().add_host(cfg, now)?;
        Ok(Host {
            shared: self.shared.clone(),
            id,
        })
    }

    /// The host owning `ip`, if any.
    pub fn host(&self, ip: IpAddr) -> Option<Host> {
        let id = self.shared.core.lock().host_by_ip(ip)?;
        Some(Host {
            shared: self.shared.clone(),
            id,
        })
    }

    /// Cuts every path between a host in `a` and a host in `b` (both directions) until
    /// [`Network::heal`]. Unknown addresses are ignored. Partitions accumulate.
    pub fn partition(&self, a: &[IpAddr], b: &[IpAddr]) {
        self.shared.with(|c, _| c.partition(a, b));
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.shared.with(|c, _| c.heal());
    }

    /// Totals over all hosts.
    pub fn stats(&self) -> Stats {
        self.shared.core.lock().total
    }

    pub fn config(&self) -> NetworkConfig {
        self.shared.core.lock().cfg.clone()
    }

    pub fn host_count(&self) -> usize {
        self.shared.core.lock().hosts.len()
    }
}

/// A host on a [`Network`]. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    shared: Arc<Shared>,
    id: HostId,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host").field("ip", &self.ip()).finish()
    }
}

impl Host {
    /// The host's first address.
    pub fn ip(&self) -> IpAddr {
        self.shared.core.lock().hosts[self.id].ips[0]
    }

    pub fn ips(&self) -> Vec<IpAddr> {
        self.shared.core.lock().hosts[self.id].ips.clone()
    }

    pub fn network(&self) -> Network {
        Network {
            shared: self.shared.clone(),
        }
    }

    /// Binds a UDP socket. The IP must be unspecified or one of the host's; port 0 picks an
    /// ephemeral port. One socket per port per host.
    pub async fn bind_udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        self.bind_udp_now(addr)
    }

    /// [`Host::bind_udp`] without the `async` (binding never waits).
    pub fn bind_udp_now(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        let id = self.id;
        let (local, gen) = self.shared.with(|c, _| c.bind_udp(id, addr))?;
        Ok(UdpSocket::new(self.shared.clone(), id, local, gen))
    }

    /// Listens for streams on `addr` (port 0 = ephemeral).
    pub async fn listen(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let id = self.id;
        let (local, gen) = self.shared.with(|c, _| c.listen(id, addr))?;
        Ok(TcpListener::new(self.shared.clone(), id, local, gen))
    }

    /// Connects a stream: one round trip on success; `ConnectionRefused` after one round trip
    /// if nothing listens; `TimedOut` after `connect_timeout` if the host is unknown, down,
    /// partitioned away, or behind a NAT.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        stream::connect(self.shared.clone(), self.id, addr).await
    }

    /// Takes the host down: all its sockets, listeners and streams fail (its peers see a
    /// reset one latency later); packets to it are dropped; connects to it time out.
    pub fn down(&self) {
        let id = self.id;
        self.shared.with(|c, now| c.set_up(id, now, false));
    }

    /// Brings the host back up, with no sockets (they must be bound again).
    pub fn up(&self) {
        let id = self.id;
        self.shared.with(|c, now| c.set_up(id, now, true));
    }

    pub fn is_up(&self) -> bool {
        self.shared.core.lock().hosts[self.id].up
    }

    pub fn stats(&self) -> Stats {
        self.shared.core.lock().hosts[self.id].stats
    }
}
