//! The BEP 14 announce: an HTTP-like request sent over UDP multicast.
//!
//! ```text
//! BT-SEARCH * HTTP/1.1\r\n
//! Host: 239.192.152.143:6771\r\n
//! Port: 6881\r\n
//! Infohash: <40 hex>\r\n        (one or more, consecutive)
//! cookie: <opaque>\r\n          (optional: lets a sender drop its own announces)
//! \r\n
//! \r\n
//! ```
//!
//! Pure: bytes in, values out. Whatever any host on the LAN sends is parsed here, so the
//! parser bounds everything (datagram size, header lines, info-hashes, cookie length), skips
//! what it does not understand (unknown headers, malformed info-hashes, as HTTP asks) and
//! never panics.

use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::id::InfoHash;

/// Datagrams larger than this are dropped unread. BEP 14 asks senders to stay under 1400
/// bytes; the slack covers other clients' extra headers.
pub const MAX_DATAGRAM: usize = 2048;
/// What [`encode`] puts in one datagram at most (BEP 14: no fragmentation).
pub const MAX_PACKET: usize = 1400;
/// Info-hashes taken from one announce at most; the rest are ignored.
pub const MAX_HASHES: usize = 32;
/// Header lines read at most.
const MAX_LINES: usize = 64;
/// A longer cookie is not ours (we send 16 hex digits) and is ignored.
const MAX_COOKIE: usize = 64;

const REQUEST_LINE: &str = "BT-SEARCH * HTTP/1.1";

/// The BEP 14 multicast groups.
pub const GROUP_V4: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(239, 192, 152, 143),
    6771,
));
pub const GROUP_V6: SocketAddr = SocketAddr::V6(std::net::SocketAddrV6::new(
    std::net::Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0xefc0, 0x988f),
    6771,
    0,
    0,
));

/// A parsed announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// The sender's BitTorrent listen port (its IP is the datagram's source).
    pub port: u16,
    /// At most [`MAX_HASHES`], in the order sent, without repeats.
    pub info_hashes: Vec<InfoHash>,
    pub cookie: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    #[error("datagram of {0} bytes is too large")]
    TooLarge(usize),
    #[error("not a BT-SEARCH request")]
    NotSearch,
    #[error("missing or bad Port header")]
    BadPort,
    #[error("no valid Infohash header")]
    NoInfoHash,
}

/// The `Host` header value for a group (`239.192.152.143:6771`, `[ff15::efc0:988f]:6771`).
fn host_of(group: SocketAddr) -> String {
    group.to_string()
}

/// Announces of `hashes` from a client listening on `port`, to `group`: as few datagrams
/// as fit [`MAX_PACKET`] each (several `Infohash` headers per datagram, BEP 14 allows
/// it). Empty when `hashes` is.
pub fn encode(group: SocketAddr, port: u16, hashes: &[InfoHash], cookie: &str) -> Vec<Vec<u8>> {
    let mut head = String::new();
    let _ = write!(
        head,
        "{REQUEST_LINE}\r\nHost: {}\r\nPort: {port}\r\n",
        host_of(group)
    );
    let tail = if cookie.is_empty() {
        "\r\n\r\n".to_string()
    } else {
        format!("cookie: {cookie}\r\n\r\n\r\n")
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    for h in hashes {
        let line = format!("Infohash: {}\r\n", h.to_hex());
        if !cur.is_empty() && head.len() + cur.len() + line.len() + tail.len() > MAX_PACKET {
            out.push(format!("{head}{cur}{tail}").into_bytes());
            cur.clear();
        }
        cur.push_str(&line);
    }
    if !cur.is_empty() {
        out.push(format!("{head}{cur}{tail}").into_bytes());
    }
    out
}

/// Parses one datagram.
pub fn parse(buf: &[u8]) -> Result<Announce, AnnounceError> {
    if buf.len() > MAX_DATAGRAM {
        return Err(AnnounceError::TooLarge(buf.len()));
    }
    let mut lines = buf
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take(MAX_LINES);
    let first = lines.next().ok_or(AnnounceError::NotSearch)?;
    if first.trim_ascii() != REQUEST_LINE.as_bytes() {
        return Err(AnnounceError::NotSearch);
    }
    let mut port = None;
    let mut hashes: Vec<InfoHash> = Vec::new();
    let mut cookie = None;
    for line in lines {
        if line.is_empty() {
            break; // end of the headers
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"port") {
            port = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u16>().ok())
                .filter(|&p| p != 0);
            if port.is_none() {
                return Err(AnnounceError::BadPort);
            }
        } else if name.eq_ignore_ascii_case(b"infohash") {
            let h = std::str::from_utf8(value)
                .ok()
                .and_then(|v| InfoHash::from_hex(v).ok());
            if let Some(h) = h {
                if hashes.len() < MAX_HASHES && !hashes.contains(&h) {
                    hashes.push(h);
                }
            }
        } else if name.eq_ignore_ascii_case(b"cookie") && value.len() <= MAX_COOKIE {
            cookie = std::str::from_utf8(value).ok().map(str::to_string);
        }
    }
    let port = port.ok_or(AnnounceError::BadPort)?;
    if hashes.is_empty() {
        return Err(AnnounceError::NoInfoHash);
    }
    Ok(Announce {
        port,
        info_hashes: hashes,
        cookie,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ih(n: u8) -> InfoHash {
        InfoHash::new([n; 20])
    }

    #[test]
    fn round_trip_one_hash() {
        let pkts = encode(GROUP_V4, 6881, &[ih(1)], "c00k1e");
        assert_eq!(pkts.len(), 1);
        let text = String::from_utf8(pkts[0].clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\nInfohash: {}\r\ncookie: c00k1e\r\n\r\n\r\n",
                ih(1).to_hex()
            )
        );
        let a = parse(&pkts[0]).unwrap();
        assert_eq!(a.port, 6881);
        assert_eq!(a.info_hashes, vec![ih(1)]);
        assert_eq!(a.cookie.as_deref(), Some("c00k1e"));
    }

    #[test]
    fn the_v6_host_is_bracketed() {
        let pkts = encode(GROUP_V6, 1, &[ih(1)], "");
        let text = String::from_utf8(pkts[0].clone()).unwrap();
        assert!(text.contains("Host: [ff15::efc0:988f]:6771\r\n"), "{text}");
        assert_eq!(parse(&pkts[0]).unwrap().cookie, None);
    }

    #[test]
    fn many_hashes_split_under_the_mtu_and_all_arrive() {
        let hashes: Vec<InfoHash> = (0..100).map(ih).collect();
        let pkts = encode(GROUP_V6, 65535, &hashes, "0123456789abcdef");
        assert!(pkts.len() >= 4, "{}", pkts.len());
        let mut back = Vec::new();
        for p in &pkts {
            assert!(p.len() <= MAX_PACKET, "{}", p.len());
            back.extend(parse(p).unwrap().info_hashes);
        }
        assert_eq!(back, hashes);
        assert!(encode(GROUP_V4, 1, &[], "x").is_empty());
    }

    #[test]
    fn libtorrent_announce_parses() {
        let pkt = b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 44535\r\nInfohash: a5b2cb1aa7163a4fa91b74291e2277617a3f79fc\r\ncookie: 3810f850\r\n\r\n\r\n";
        let a = parse(pkt).unwrap();
        assert_eq!(a.port, 44535);
        assert_eq!(
            a.info_hashes[0].to_hex(),
            "a5b2cb1aa7163a4fa91b74291e2277617a3f79fc"
        );
        assert_eq!(a.cookie.as_deref(), Some("3810f850"));
    }

    #[test]
    fn lenient_where_http_is_strict_where_it_matters() {
        // Bare LF, any header case, unknown headers and junk lines are fine.
        let pkt = format!(
            "BT-SEARCH * HTTP/1.1\nhOsT: whatever\nX-Other: 1\njunk line\nPORT:  7000 \ninfohash: {}\ninfohash: nothex\n\n",
            ih(9).to_hex().to_uppercase()
        );
        let a = parse(pkt.as_bytes()).unwrap();
        assert_eq!((a.port, a.info_hashes.clone()), (7000, vec![ih(9)]));
        // Headers after the blank line are the body: ignored.
        let late = format!(
            "BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n\r\nInfohash: {}\r\n",
            ih(1).to_hex()
        );
        assert_eq!(parse(late.as_bytes()), Err(AnnounceError::NoInfoHash));
    }

    #[test]
    fn hostile_input_is_bounded() {
        let big = vec![b'a'; MAX_DATAGRAM + 1];
        assert_eq!(parse(&big), Err(AnnounceError::TooLarge(MAX_DATAGRAM + 1)));
        assert_eq!(parse(b""), Err(AnnounceError::NotSearch));
        assert_eq!(
            parse(b"M-SEARCH * HTTP/1.1\r\n\r\n"),
            Err(AnnounceError::NotSearch)
        );
        for bad in ["0", "65536", "-1", "x", ""] {
            let p = format!(
                "BT-SEARCH * HTTP/1.1\r\nPort: {bad}\r\nInfohash: {}\r\n\r\n",
                ih(1).to_hex()
            );
            assert_eq!(parse(p.as_bytes()), Err(AnnounceError::BadPort), "{bad}");
        }
        let no_port = format!(
            "BT-SEARCH * HTTP/1.1\r\nInfohash: {}\r\n\r\n",
            ih(1).to_hex()
        );
        assert_eq!(parse(no_port.as_bytes()), Err(AnnounceError::BadPort));
        // 36 info-hashes (each twice) in one datagram: the first MAX_HASHES distinct ones.
        let mut p = String::from("BT-SEARCH * HTTP/1.1\r\nPort: 5\r\n");
        for i in 0..36u8 {
            let _ = write!(p, "Infohash: {}\r\n", ih(i / 2 * 2).to_hex());
        }
        let a = parse(p.as_bytes()).unwrap();
        assert_eq!(a.info_hashes.len(), 18);
        let mut p = String::from("BT-SEARCH * HTTP/1.1\r\nPort: 5\r\n");
        for i in 0..36u8 {
            let _ = write!(p, "Infohash: {}\r\n", ih(i).to_hex());
        }
        assert_eq!(parse(p.as_bytes()).unwrap().info_hashes.len(), MAX_HASHES);
        // A cookie too long to be anyone's is ignored, not truncated.
        let c = format!(
            "BT-SEARCH * HTTP/1.1\r\nPort: 5\r\nInfohash: {}\r\ncookie: {}\r\n\r\n",
            ih(1).to_hex(),
            "c".repeat(65)
        );
        assert_eq!(parse(c.as_bytes()).unwrap().cookie, None);
        // Not UTF-8 anywhere: no panic.
        let _ = parse(b"BT-SEARCH * HTTP/1.1\r\nPort: \xff\xfe\r\nInfohash: \xff\r\n\r\n");
        let _ = parse(b"BT-SEARCH * HTTP/1.1\r\n\xff:\xff\r\n:\r\n");
    }
}
