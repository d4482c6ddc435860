//! The port-mapping flags of `seed` and `fetch --seed` (`--no-port-mapping`, `--gateway`),
//! starting the mapper for the session's ports, and how its status is told to a person.

use std::net::{IpAddr, SocketAddr};

use crate::portmap::{MapConfig, MapStatus, PortMapping, State};
use crate::session::Session;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct PortMapArgs {
    /// Do not ask the router to forward our port (UPnP IGD, NAT-PMP, PCP); on by default
    /// when seeding
    #[arg(long)]
    pub no_port_mapping: bool,
    /// NAT-PMP/PCP gateway to ask for the port mapping (e.g. a VPN's); default: the
    /// default route's gateway
    #[arg(long, value_name = "IP")]
    pub gateway: Option<IpAddr>,
    /// Where UPnP's SSDP search goes instead of 239.255.255.250:1900 (for tests: an IGD on
    /// a unicast address)
    #[arg(long, value_name = "IP:PORT", hide = true)]
    pub ssdp_target: Option<SocketAddr>,
}

impl PortMapArgs {
    /// Starts mapping the session's TCP port and (with the DHT) its UDP port, unless
    /// turned off or listening on loopback only (nothing outside could connect anyway).
    /// Must run inside the runtime.
    pub fn start(&self, session: &Session) -> Option<(PortMapping, u16)> {
        let listen = session.listen_addr()?;
        if self.no_port_mapping || listen.ip().is_loopback() {
            return None;
        }
        let port = listen.port();
        let mut cfg = MapConfig {
            tcp_port: Some(port),
            // The DHT and QUIC share the TCP port's number on UDP.
            udp_port: session.dht().is_some().then_some(port),
            gateway: self.gateway,
            ..MapConfig::default()
        };
        if let Some(t) = self.ssdp_target {
            cfg.ssdp_target = t;
        }
        let mapping = PortMapping::start(cfg);
        // The session's reachability hears of the mapping: a mapped port makes us
        // reachable and its external address is ours.
        let mut status = mapping.watch();
        let session = session.clone();
        tokio::spawn(async move {
            loop {
                let external = status.borrow_and_update().external_addr();
                session.set_port_mapping(external);
                if status.changed().await.is_err() {
                    session.set_port_mapping(None);
                    return;
                }
            }
        });
        Some((mapping, port))
    }
}

/// A person's line for a status worth telling (mapped, failed, closed); `None` while
/// discovering. `port`: our own port, which a person forwards by hand when nothing worked.
pub fn describe(s: &MapStatus, port: u16) -> Option<String> {
    let proto = s.protocol.map_or("the router", |p| p.label());
    match s.state {
        State::Discovering => None,
        State::Mapped => {
            let ports = match (s.tcp_external, s.udp_external) {
                (Some(t), Some(u)) if t == u => format!("TCP and UDP port {t}"),
                (Some(t), Some(u)) => format!("TCP port {t} and UDP port {u}"),
                (Some(t), None) => format!("TCP port {t}"),
                (None, Some(u)) => format!("UDP port {u}"),
                (None, None) => "no port".into(),
            };
            Some(match s.external_ip {
                Some(ip) => format!("port mapping: {proto} forwards {ports} of {ip} to us"),
                None => format!("port mapping: {proto} forwards {ports} to us"),
            })
        }
        State::Failed => Some(format!(
            "port mapping failed ({}); peers outside your network can only connect if you \
             forward TCP and UDP port {port} to this machine on your router",
            s.error.as_deref().unwrap_or("no gateway")
        )),
        State::Closed => None,
    }
}

/// The `port_mapping` object of JSON progress and events.
pub fn to_json(s: &MapStatus) -> serde_json::Value {
    serde_json::json!({
        "protocol": s.protocol.map(|p| p.as_str()),
        "status": s.state.as_str(),
        "external_port": s.tcp_external,
        "external_udp_port": s.udp_external,
        "external_ip": s.external_ip.map(|ip| ip.to_string()),
        "error": s.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portmap::Protocol;

    #[test]
    fn lines_for_a_person() {
        let mut s = MapStatus::default();
        assert_eq!(describe(&s, 6881), None);
        s.state = State::Mapped;
        s.protocol = Some(Protocol::NatPmp);
        s.external_ip = Some("198.51.100.2".parse().unwrap());
        s.tcp_external = Some(6881);
        s.udp_external = Some(6881);
        assert_eq!(
            describe(&s, 6881).unwrap(),
            "port mapping: NAT-PMP forwards TCP and UDP port 6881 of 198.51.100.2 to us"
        );
        s.udp_external = Some(7000);
        assert!(describe(&s, 6881)
            .unwrap()
            .contains("TCP port 6881 and UDP port 7000"));
        let j = to_json(&s);
        assert_eq!(j["protocol"], "natpmp");
        assert_eq!(j["status"], "mapped");
        assert_eq!(j["external_port"], 6881);
        assert_eq!(j["external_ip"], "198.51.100.2");
        s.state = State::Failed;
        s.error = Some("UPnP: no IGD answered; NAT-PMP/PCP: no answer".into());
        let line = describe(&s, 51413).unwrap();
        assert!(
            line.contains("forward TCP and UDP port 51413 to this machine"),
            "{line}"
        );
    }
}
