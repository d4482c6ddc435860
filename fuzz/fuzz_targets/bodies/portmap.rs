//! The body of the `portmap_replies` fuzz target, shared (through `#[path]`) with the
//! stable harness `tests/portmap/portmap_fuzz.rs`. Everything a LAN host can send the port
//! mapper: SSDP replies, device descriptions, SOAP replies and faults, NAT-PMP and PCP
//! replies, plus the routing table's text. It must hold for *any* input: no panic, bounded
//! output, and the stated invariants.

use std::net::{IpAddr, Ipv4Addr};

use magnetfetch::internals::portmap::{gateway, igd, natpmp, pcp, ssdp, xml};

const IGD: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));

/// The first byte picks the HTTP status a SOAP reply is read with; every parser sees the rest.
/// - SSDP: a reply's location is `http://`, bounded, without control characters;
/// - XML: events are balanced, no deeper than `MAX_DEPTH`, texts within `MAX_TEXT`;
/// - a description's control URL is always on the host that answered;
/// - NAT-PMP and PCP replies parse only from packets long enough to hold them.
pub fn portmap_replies(data: &[u8]) {
    let [status, data @ ..] = data else {
        return;
    };
    if let Some(r) = ssdp::parse_reply(data) {
        assert!(r.location.starts_with("http://"));
        assert!(r.location.len() <= ssdp::MAX_LOCATION);
        assert!(!r.location.chars().any(char::is_control));
    }
    if let Ok(ev) = xml::events(data) {
        let mut depth = 0usize;
        for e in &ev {
            match e {
                xml::Event::Start(_) => {
                    depth += 1;
                    assert!(depth <= xml::MAX_DEPTH);
                }
                xml::Event::End(_) => depth = depth.checked_sub(1).expect("balanced"),
                xml::Event::Text(t) => assert!(t.len() <= xml::MAX_TEXT),
            }
        }
        assert_eq!(depth, 0);
    }
    if let Ok(svc) = igd::parse_description(data, "http://192.168.1.1:5000/rootDesc.xml", IGD) {
        assert_eq!(svc.addr.ip(), IGD);
        assert!(igd::SERVICE_TYPES.contains(&svc.service_type.as_str()));
    }
    let status = if *status < 128 { 200 } else { 500 };
    let _ = igd::parse_soap_reply(status, data, Some("NewExternalIPAddress"));
    match natpmp::parse_reply(data) {
        Ok(natpmp::Reply::External { .. }) => assert!(data.len() >= 12),
        Ok(natpmp::Reply::Map { .. }) => assert!(data.len() >= 16),
        Ok(natpmp::Reply::Error { .. }) => assert!(data.len() >= 8),
        Err(_) => {}
    }
    match pcp::parse_reply(data) {
        Ok(pcp::Reply::Map { .. }) => assert!(data.len() >= 60 && data.len() <= pcp::MAX_MESSAGE),
        Ok(pcp::Reply::Announce { .. } | pcp::Reply::Error { .. }) => assert!(data.len() >= 24),
        Ok(pcp::Reply::NatPmpOnly) | Err(_) => {}
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = gateway::parse_routes(text);
    }
}
