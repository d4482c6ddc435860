//! Parameters of the simulated network and of its hosts.

use std::net::IpAddr;
use std::time::Duration;

use crate::nat::NatKind;

/// Defaults for every host, plus network-wide stream and queue parameters.
///
/// Latency is per host: it is the one-way delay of the host's access link, so a packet from
/// `a` to `b` takes `a.latency + b.latency` (plus jitter) on the wire. Rates are bytes per
/// second; `None` means unlimited.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// One-way delay of each host's access link (default 10 ms, so 20 ms host to host).
    pub latency: Duration,
    /// Extra delay per access link, uniform in `[0, jitter]`, drawn per packet.
    pub jitter: Duration,
    /// Uplink rate of each host in bytes/s (`None` = unlimited).
    pub up_rate: Option<u64>,
    /// Downlink rate of each host in bytes/s (`None` = unlimited).
    pub down_rate: Option<u64>,
    /// Probability that a datagram is lost on each host's access link.
    pub loss: f64,
    /// Datagrams a UDP socket holds before it drops new arrivals.
    pub recv_queue: usize,
    /// A datagram that would wait longer than this in an up- or downlink queue is dropped
    /// (the router buffer is full).
    pub max_queue_delay: Duration,
    /// Bytes a stream may have in flight or unread per direction before the writer blocks
    /// (default 1 MiB, so one stream fills 25 MB/s at a 40 ms round trip).
    pub stream_window: usize,
    /// Bytes of one stream that may wait in its host's uplink queue before the writer
    /// blocks (default 128 KiB: TCP small queues / a cwnd-sized backlog; the rest of the
    /// window stays in the application). Only limits streams on rate-limited uplinks.
    pub stream_queue: usize,
    /// A stream whose data cannot get through (partition) for this long is reset.
    pub stream_timeout: Duration,
    /// A connect whose SYN gets no answer fails with `TimedOut` after this long.
    pub connect_timeout: Duration,
    /// Unaccepted connections a listener holds; beyond that connects are refused.
    pub accept_backlog: usize,
    /// Remote addresses a NATed host remembers as contacted (oldest forgotten first).
    pub nat_table: usize,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            up_rate: None,
            down_rate: None,
            loss: 0.0,
            recv_queue: 1024,
            max_queue_delay: Duration::from_secs(2),
            stream_window: 1024 * 1024,
            stream_queue: 128 * 1024,
            stream_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            accept_backlog: 128,
            nat_table: 4096,
        }
    }
}

/// One host: its addresses and any per-host overrides of the network defaults.
#[derive(Clone, Debug)]
pub struct HostConfig {
    pub(crate) ips: Vec<IpAddr>,
    pub(crate) latency: Option<Duration>,
    pub(crate) jitter: Option<Duration>,
    pub(crate) up_rate: Option<Option<u64>>,
    pub(crate) down_rate: Option<Option<u64>>,
    pub(crate) loss: Option<f64>,
    pub(crate) nat: Option<NatKind>,
    pub(crate) fifo_uplink: bool,
    pub(crate) mtu: Option<usize>,
}

impl HostConfig {
    /// A host with one address and the network's defaults.
    pub fn new(ip: IpAddr) -> Self {
        HostConfig {
            ips: vec![ip],
            latency: None,
            jitter: None,
            up_rate: None,
            down_rate: None,
            loss: None,
            nat: None,
            fifo_uplink: false,
            mtu: None,
        }
    }

    /// Adds another address to the host.
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ips.push(ip);
        self
    }

    /// One-way delay of this host's access link.
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = Some(d);
        self
    }

    pub fn jitter(mut self, d: Duration) -> Self {
        self.jitter = Some(d);
        self
    }

    /// Uplink rate in bytes/s.
    pub fn up_rate(mut self, bytes_per_sec: u64) -> Self {
        self.up_rate = Some(Some(bytes_per_sec.max(1)));
        self
    }

    /// Downlink rate in bytes/s.
    pub fn down_rate(mut self, bytes_per_sec: u64) -> Self {
        self.down_rate = Some(Some(bytes_per_sec.max(1)));
        self
    }

    /// Both rates in bytes/s.
    pub fn rate(self, bytes_per_sec: u64) -> Self {
        self.up_rate(bytes_per_sec).down_rate(bytes_per_sec)
    }

    /// No bandwidth limit in either direction.
    pub fn unlimited(mut self) -> Self {
        self.up_rate = Some(None);
        self.down_rate = Some(None);
        self
    }

    /// Datagram loss probability of this host's access link.
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = Some(p.clamp(0.0, 1.0));
        self
    }

    /// Outbound-only reachability: a port-restricted NAT ([`NatKind::PortRestricted`]), or
    /// none. See `docs/simnet.md`.
    pub fn nat(mut self, nat: bool) -> Self {
        self.nat = nat.then_some(NatKind::PortRestricted);
        self
    }

    /// Puts the host behind a NAT of this kind (see [`NatKind`]).
    pub fn nat_kind(mut self, kind: NatKind) -> Self {
        self.nat = Some(kind);
        self
    }

    /// One drop-tail FIFO for the whole uplink instead of the fair queue: a home router
    /// with a large buffer and no AQM. Every flow then waits behind every other flow's
    /// backlog (bufferbloat), which is the queuing delay LEDBAT measures and yields to.
    pub fn fifo_uplink(mut self, fifo: bool) -> Self {
        self.fifo_uplink = fifo;
        self
    }

    /// The IP MTU of this host's access link: a datagram whose IP packet (payload plus 28
    /// bytes of IPv4+UDP header, 48 for IPv6) exceeds it, sent from or to this host, is
    /// dropped silently, like a path whose ICMP "too big" messages are filtered. Streams
    /// are not affected (TCP segments to the path).
    pub fn mtu(mut self, bytes: usize) -> Self {
        self.mtu = Some(bytes);
        self
    }
}
