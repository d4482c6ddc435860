//! Port mapping: asks the home router to forward our TCP and UDP ports, so peers outside
//! can connect to a seed. Three protocols: UPnP IGD (SSDP discovery, the device
//! description, SOAP `AddPortMapping` / `GetExternalIPAddress` / `DeletePortMapping` on
//! `WANIPConnection:1/2` or `WANPPPConnection:1`), NAT-PMP (RFC 6886) and PCP (RFC 6887)
//! to the default gateway or a given one (VPN users). No BEP covers this; BitTorrent
//! clients have done it this way for two decades.
//!
//! Pure codecs, one actor: [`ssdp`], [`igd`] (with the bounded [`xml`] reader),
//! [`natpmp`], [`pcp`] and [`gateway`] are plain functions over bytes and text (unit-tested
//! and fuzzed); [`mapper`] is the one task that discovers a gateway, maps, renews before the
//! lease runs out, remaps after a gateway restart, and deletes its mappings on a clean exit.
//!
//! The API is [`PortMapping::start`]: give it the ports, read its [`MapStatus`] (protocol,
//! state, external address and ports) at any time, and [`PortMapping::close`] it on exit
//! (dropping it deletes the mappings too, if the runtime lives long enough).

pub mod gateway;
pub mod igd;
pub mod mapper;
pub mod natpmp;
pub mod pcp;
pub mod ssdp;
pub mod xml;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

/// A transport protocol to map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// UPnP's name (`NewProtocol`).
    pub fn upnp_name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// Which protocol made the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Upnp,
    NatPmp,
    Pcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Upnp => "upnp",
            Protocol::NatPmp => "natpmp",
            Protocol::Pcp => "pcp",
        }
    }

    /// The name people know it by.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Upnp => "UPnP",
            Protocol::NatPmp => "NAT-PMP",
            Protocol::Pcp => "PCP",
        }
    }
}

/// Where the mapping is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Looking for a gateway (SSDP, NAT-PMP/PCP to the gateway).
    #[default]
    Discovering,
    /// Every port is mapped.
    Mapped,
    /// No gateway answered, or it refused (see `error`); tried again later.
    Failed,
    /// Closed: the mappings were deleted.
    Closed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Discovering => "discovering",
            State::Mapped => "mapped",
            State::Failed => "failed",
            State::Closed => "closed",
        }
    }
}

/// What the mapper has achieved so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapStatus {
    pub state: State,
    pub protocol: Option<Protocol>,
    /// The router's external address, as it told us.
    pub external_ip: Option<IpAddr>,
    /// The external ports of the TCP and UDP mappings (usually the internal ones).
    pub tcp_external: Option<u16>,
    pub udp_external: Option<u16>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// Mappings renewed (each renewal of all ports counts once).
    pub renewals: u32,
    /// Gateway restarts noticed (NAT-PMP/PCP epoch), each followed by a remap.
    pub gateway_restarts: u32,
}

impl MapStatus {
    /// The external TCP address peers can connect to, once mapped.
    pub fn external_addr(&self) -> Option<SocketAddr> {
        match (self.state, self.external_ip, self.tcp_external) {
            (State::Mapped, Some(ip), Some(p)) => Some(SocketAddr::new(ip, p)),
            _ => None,
        }
    }
}

/// What to map and where to look for a gateway.
#[derive(Debug, Clone)]
pub struct MapConfig {
    /// The TCP port peers connect to, and the UDP port (DHT, QUIC).
    pub tcp_port: Option<u16>,
    pub udp_port: Option<u16>,
    /// The NAT-PMP/PCP gateway; `None`: the default route's gateway.
    pub gateway: Option<IpAddr>,
    /// Where SSDP searches go ([`ssdp::MULTICAST`]; tests point it at their IGD).
    pub ssdp_target: SocketAddr,
    /// The lease asked for; renewed at half of what was granted.
    pub lease: Duration,
    /// How long SSDP replies are waited for.
    pub ssdp_wait: Duration,
    /// NAT-PMP/PCP retransmissions: the first wait, doubled each time (RFC 6886 section
    /// 3.1 starts at 250 ms), and how many requests at most.
    pub pmp_first_timeout: Duration,
    pub pmp_tries: u32,
    /// After a failure, the next attempt starts this much later.
    pub retry_after: Duration,
    /// The mapping's description on a UPnP router's page.
    pub description: String,
}

impl Default for MapConfig {
    fn default() -> Self {
        MapConfig {
            tcp_port: None,
            udp_port: None,
            gateway: None,
            ssdp_target: ssdp::MULTICAST,
            lease: Duration::from_secs(3600),
            ssdp_wait: Duration::from_secs(3),
            pmp_first_timeout: Duration::from_millis(250),
            // 250 ms + 500 + 1 s + 2 s + 4 s: a gateway that has not answered by then
            // does not speak it (RFC 6886 allows up to 64 s; UPnP is tried meanwhile).
            pmp_tries: 5,
            retry_after: Duration::from_secs(300),
            description: "magnetfetch".to_string(),
        }
    }
}

/// How long a clean exit waits for the deletions at most.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// A running mapper: its status, and the mappings deleted when it is closed or dropped.
pub struct PortMapping {
    status: watch::Receiver<MapStatus>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PortMapping {
    /// Starts mapping `cfg`'s ports (on the current tokio runtime).
    pub fn start(cfg: MapConfig) -> PortMapping {
        let (tx, rx) = watch::channel(MapStatus::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(mapper::run(cfg, tx, stop_rx));
        PortMapping {
            status: rx,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// The status now.
    pub fn status(&self) -> MapStatus {
        self.status.borrow().clone()
    }

    /// The status as it changes.
    pub fn watch(&self) -> watch::Receiver<MapStatus> {
        self.status.clone()
    }

    /// Deletes the mappings (bounded by [`CLOSE_TIMEOUT`]) and stops the mapper.
    pub async fn close(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            if tokio::time::timeout(CLOSE_TIMEOUT, t).await.is_err() {
                tracing::debug!("port mapping: deletions did not finish in time");
            }
        }
    }
}

impl Drop for PortMapping {
    /// Dropping the stop sender tells the task to delete its mappings and end; it does so
    /// as long as the runtime runs (a clean exit calls [`PortMapping::close`] and waits).
    fn drop(&mut self) {
        self.stop.take();
    }
}
