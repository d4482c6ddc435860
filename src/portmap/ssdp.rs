//! SSDP discovery of an Internet Gateway Device (UPnP Device Architecture 1.1, section 1.3):
//! the M-SEARCH request multicast to 239.255.255.250:1900 and the unicast replies, whose
//! `LOCATION` header points at the device description. Replies come from any host on the
//! LAN: sizes are bounded and anything malformed is ignored. Pure: no sockets.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Where M-SEARCH requests go.
pub const MULTICAST: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900));

/// The device types searched for: IGD version 1 and 2 (a v2 device answers a v1 search
/// too, but not every one does).
pub const SEARCH_TARGETS: [&str; 2] = [
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
    "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
];

/// A reply larger than this is not SSDP.
pub const MAX_REPLY: usize = 2048;
/// A `LOCATION` longer than this is refused.
pub const MAX_LOCATION: usize = 512;

/// The M-SEARCH request for `target` sent to `to` (its `HOST` header), answered within
/// `mx` seconds.
pub fn m_search(to: SocketAddr, target: &str, mx: u8) -> String {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: {to}\r\nMAN: \"ssdp:discover\"\r\nMX: {mx}\r\nST: {target}\r\nUSER-AGENT: magnetfetch/{} UPnP/1.1\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// What a reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsdpReply {
    /// The device description's URL.
    pub location: String,
    /// The search target answered, if given.
    pub st: Option<String>,
}

/// Parses an M-SEARCH reply: `HTTP/1.1 200 OK` and a `LOCATION` header (case-insensitive
/// names). `None` for anything else (NOTIFY announcements, errors, garbage).
pub fn parse_reply(b: &[u8]) -> Option<SsdpReply> {
    if b.len() > MAX_REPLY {
        return None;
    }
    let text = std::str::from_utf8(b).ok()?;
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let status = lines.next()?;
    let mut parts = status.split_whitespace();
    if !parts.next()?.eq_ignore_ascii_case("HTTP/1.1") || parts.next()? != "200" {
        return None;
    }
    let mut location = None;
    let mut st = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.trim().eq_ignore_ascii_case("location") {
            location = Some(v);
        } else if k.trim().eq_ignore_ascii_case("st") {
            st = Some(v.to_string());
        }
    }
    let location = location?;
    if location.is_empty()
        || location.len() > MAX_LOCATION
        || !location.starts_with("http://")
        || location.chars().any(|c| c.is_control() || c == ' ')
    {
        return None;
    }
    Some(SsdpReply {
        location: location.to_string(),
        st,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_and_reply() {
        let s = m_search(MULTICAST, SEARCH_TARGETS[0], 2);
        assert!(s.starts_with("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"));
        assert!(s.contains("MAN: \"ssdp:discover\"\r\n"));
        assert!(s.ends_with("\r\n\r\n"));
        let r = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nst: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLocation: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n";
        assert_eq!(
            parse_reply(r),
            Some(SsdpReply {
                location: "http://192.168.1.1:5000/rootDesc.xml".into(),
                st: Some(SEARCH_TARGETS[0].into())
            })
        );
    }

    #[test]
    fn other_messages_and_garbage_are_ignored() {
        let long = format!(
            "HTTP/1.1 200 OK\r\nLOCATION: http://1.2.3.4/{}\r\n\r\n",
            "a".repeat(MAX_LOCATION)
        );
        for bad in [
            &b"NOTIFY * HTTP/1.1\r\nLOCATION: http://1.2.3.4/\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\nLOCATION: http://1.2.3.4/\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nLOCATION: https://1.2.3.4/\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nLOCATION: http://1.2.3.4/\x1b[2J\r\n\r\n",
            b"\xff\xfe",
            b"",
            long.as_bytes(),
            &[b'a'; MAX_REPLY + 1],
        ] {
            assert_eq!(parse_reply(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
