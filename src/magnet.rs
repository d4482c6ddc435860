//! Magnet URIs (BEP 9, with BEP 53 file selection): parse and format.
//!
//! Understood parameters:
//! - `xt=urn:btih:<info-hash>` — the v1 info-hash, 40 hex or 32 base32 characters (BEP 9).
//!   `urn:btmh:` (v2 multihash, BEP 52) is recognised but not supported on its own.
//! - `dn` — display name; `tr` — trackers (repeated); `ws` — web seeds (BEP 19);
//! - `x.pe` — peer addresses `host:port` (BEP 9);
//! - `so` — file selection, indices and inclusive ranges like `0,2,4-6` (BEP 53).
//!
//! Numbered variants (`tr.1`, `xt.2`, ...) are accepted. Unknown parameters are kept in
//! [`Magnet::extra`] (in order) and otherwise ignored. Values are percent-decoded; formatting
//! percent-encodes everything but RFC 3986 unreserved characters, so
//! `Magnet::parse(&m.to_uri()) == Ok(m)` for any magnet.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::id::InfoHash;

/// A parsed magnet link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    pub display_name: Option<String>,
    pub trackers: Vec<String>,
    pub web_seeds: Vec<String>,
    pub peers: Vec<PeerAddr>,
    /// BEP 53 `so=`: file indices to download; `None` means all files.
    pub select_only: Option<Vec<RangeInclusive<u32>>>,
    /// Parameters we do not interpret, in their original order (decoded).
    pub extra: Vec<(String, String)>,
}

/// A peer address from `x.pe`: an IP socket address or a host name with a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerAddr {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Ip(a) => write!(f, "{a}"),
            PeerAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for PeerAddr {
    type Err = MagnetError;
    fn from_str(s: &str) -> Result<Self, MagnetError> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(PeerAddr::Ip(a));
        }
        let bad = || MagnetError::BadPeer(s.to_string());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        // A host name: letters, digits, '-', '.'; anything else (spaces, ':', '[') is not an
        // address we could ever connect to.
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_');
        if !valid_host {
            return Err(bad());
        }
        Ok(PeerAddr::Name {
            host: host.to_string(),
            port,
        })
    }
}

/// Why a magnet link was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("not a magnet link (must start with \"magnet:?\")")]
    NotMagnet,
    #[error("magnet link has no btih info-hash")]
    NoInfoHash,
    #[error("magnet link has no btih info-hash (v2-only urn:btmh links are not yet supported)")]
    V2Only,
    #[error("info-hash must be 40 hex or 32 base32 characters (got {0:?})")]
    BadInfoHash(String),
    #[error("magnet link has two different btih info-hashes")]
    ConflictingInfoHash,
    #[error("invalid percent-encoding in magnet link: {0:?}")]
    BadEncoding(String),
    #[error("invalid peer address in x.pe: {0:?} (expected host:port)")]
    BadPeer(String),
    #[error("invalid file selection so={0:?} (expected indices and ranges like 0,2,4-6)")]
    BadSelection(String),
    #[error("magnet link is too long ({0} bytes, limit {MAX_MAGNET_LEN})")]
    TooLong(usize),
}

/// Longest magnet link accepted (they are pasted by users, but may also arrive from files).
pub const MAX_MAGNET_LEN: usize = 1 << 20;

impl Magnet {
    /// A magnet with only an info-hash.
    pub fn new(info_hash: InfoHash) -> Self {
        Magnet {
            info_hash,
            display_name: None,
            trackers: Vec::new(),
            web_seeds: Vec::new(),
            peers: Vec::new(),
            select_only: None,
            extra: Vec::new(),
        }
    }

    /// Parses a magnet URI.
    pub fn parse(uri: &str) -> Result<Magnet, MagnetError> {
        let uri = uri.trim();
        if uri.len() > MAX_MAGNET_LEN {
            return Err(MagnetError::TooLong(uri.len()));
        }
        let query = match uri.get(..8) {
            Some(p) if p.eq_ignore_ascii_case("magnet:?") => &uri[8..],
            _ => return Err(MagnetError::NotMagnet),
        };
        let mut info_hash: Option<InfoHash> = None;
        let mut saw_btmh = false;
        let mut m = Magnet::new(InfoHash::default());
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_key, raw_val) = part.split_once('=').unwrap_or((part, ""));
            let key = percent_decode(raw_key, false)?;
            let plus_is_space = base_key(&key) == "dn";
            let val = percent_decode(raw_val, plus_is_space)?;
            match base_key(&key) {
                "xt" => {
                    if let Some(h) = strip_prefix_ci(&val, "urn:btih:") {
                        let h = parse_info_hash(h)?;
                        match info_hash {
                            Some(prev) if prev != h => {
                                return Err(MagnetError::ConflictingInfoHash)
                            }
                            _ => info_hash = Some(h),
                        }
                    } else {
                        if strip_prefix_ci(&val, "urn:btmh:").is_some() {
                            saw_btmh = true;
                        }
                        // Kept so that formatting preserves it.
                        m.extra.push((key, val));
                    }
                }
                "dn" => {
                    if m.display_name.is_none() {
                        m.display_name = Some(val);
                    }
                }
                "tr" => m.trackers.push(val),
                "ws" => m.web_seeds.push(val),
                "x.pe" => m.peers.push(val.parse()?),
                "so" => m.select_only = Some(parse_selection(&val)?),
                _ => m.extra.push((key, val)),
            }
        }
        m.info_hash = match info_hash {
            Some(h) => h,
            None if saw_btmh => return Err(MagnetError::V2Only),
            None => return Err(MagnetError::NoInfoHash),
        };
        Ok(m)
    }

    /// Formats as a URI: `xt`, `dn`, `tr`..., `ws`..., `x.pe`..., `so`, then unknown params.
    pub fn to_uri(&self) -> String {
        let mut s = format!("magnet:?xt=urn:btih:{}", self.info_hash.to_hex());
        if let Some(dn) = &self.display_name {
            s.push_str("&dn=");
            percent_encode_into(&mut s, dn);
        }
        for (k, list) in [("tr", &self.trackers), ("ws", &self.web_seeds)] {
            for v in list {
                s.push('&');
                s.push_str(k);
                s.push('=');
                percent_encode_into(&mut s, v);
            }
        }
        for p in &self.peers {
            s.push_str("&x.pe=");
            percent_encode_into(&mut s, &p.to_string());
        }
        if let Some(sel) = &self.select_only {
            s.push_str("&so=");
            s.push_str(&format_selection(sel));
        }
        for (k, v) in &self.extra {
            s.push('&');
            percent_encode_into(&mut s, k);
            s.push('=');
            percent_encode_into(&mut s, v);
        }
        s
    }

    /// Whether file `index` is wanted according to `so=` (all files when absent).
    pub fn selects(&self, index: u32) -> bool {
        match &self.select_only {
            None => true,
            Some(ranges) => ranges.iter().any(|r| r.contains(&index)),
        }
    }
}

impl fmt::Display for Magnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

impl FromStr for Magnet {
    type Err = MagnetError;
    fn from_str(s: &str) -> Result<Self, MagnetError> {
        Magnet::parse(s)
    }
}

/// `tr.1` -> `tr`: numbered parameters are the same parameter. `x.pe` is itself dotted.
fn base_key(key: &str) -> &str {
    match key.split_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => base,
        _ => key,
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    match s.get(..prefix.len()) {
        Some(p) if p.eq_ignore_ascii_case(prefix) => Some(&s[prefix.len()..]),
        _ => None,
    }
}

/// Parses a btih value: 40 hex characters or 32 base32 (RFC 4648, any case, no padding).
pub fn parse_info_hash(s: &str) -> Result<InfoHash, MagnetError> {
    let bad = || MagnetError::BadInfoHash(s.chars().take(64).collect());
    match s.len() {
        40 => InfoHash::from_hex(s).map_err(|_| bad()),
        32 => base32_decode_20(s).map(InfoHash::new).ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn base32_decode_20(s: &str) -> Option<[u8; 20]> {
    let mut out = [0u8; 20];
    let mut acc: u64 = 0;
    let mut bits = 0;
    let mut n = 0;
    for c in s.bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
        }
    }
    // 32 chars * 5 bits = 160 bits = exactly 20 bytes, nothing left over.
    (n == 20).then_some(out)
}

/// RFC 4648 base32 (upper case, no padding) of 20 bytes: 32 characters.
#[cfg(test)]
pub fn base32_encode_20(b: &[u8; 20]) -> String {
    const ALPHA: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut s = String::with_capacity(32);
    let mut acc: u64 = 0;
    let mut bits = 0;
    for &byte in b {
        acc = (acc << 8) | u64::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            s.push(ALPHA[((acc >> bits) & 31) as usize] as char);
        }
    }
    s
}

fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, MagnetError> {
    let bad = || MagnetError::BadEncoding(s.chars().take(80).collect());
    let out = crate::http::percent::decode(s.as_bytes(), plus_is_space).ok_or_else(bad)?;
    String::from_utf8(out).map_err(|_| bad())
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
pub fn percent_encode_into(out: &mut String, s: &str) {
    crate::http::percent::encode_into(out, s.as_bytes());
}

fn parse_selection(s: &str) -> Result<Vec<RangeInclusive<u32>>, MagnetError> {
    let bad = || MagnetError::BadSelection(s.chars().take(80).collect());
    let mut out = Vec::new();
    for item in s.split(',') {
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (a, b),
            None => (item, item),
        };
        let a: u32 = parse_index(a).ok_or_else(bad)?;
        let b: u32 = parse_index(b).ok_or_else(bad)?;
        if a > b {
            return Err(bad());
        }
        out.push(a..=b);
    }
    Ok(out)
}

fn parse_index(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A file selection as BEP 53 writes it: `0,2,4-6`.
pub fn format_selection(sel: &[RangeInclusive<u32>]) -> String {
    sel.iter()
        .map(|r| {
            if r.start() == r.end() {
                r.start().to_string()
            } else {
                format!("{}-{}", r.start(), r.end())
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &str = "c9e15763f722f23e98a29decdfae341b98d53056";

    #[test]
    fn parses_full_magnet() {
        let uri = format!(
            "magnet:?xt=urn:btih:{}&dn=Some+Name%20x&tr=udp%3A%2F%2Ft.example%3A80&tr.1=http://b/announce\
             &ws=http%3A%2F%2Fw%2Ff&x.pe=127.0.0.1:6881&x.pe=[::1]:7000&x.pe=peer.example:51413&so=0,2,4-6&foo=bar",
            HEX.to_uppercase()
        );
        let m = Magnet::parse(&uri).unwrap();
        assert_eq!(m.info_hash.to_hex(), HEX);
        assert_eq!(m.display_name.as_deref(), Some("Some Name x"));
        assert_eq!(m.trackers, vec!["udp://t.example:80", "http://b/announce"]);
        assert_eq!(m.web_seeds, vec!["http://w/f"]);
        assert_eq!(
            m.peers,
            vec![
                PeerAddr::Ip("127.0.0.1:6881".parse().unwrap()),
                PeerAddr::Ip("[::1]:7000".parse().unwrap()),
                PeerAddr::Name {
                    host: "peer.example".into(),
                    port: 51413
                },
            ]
        );
        assert_eq!(m.select_only, Some(vec![0..=0, 2..=2, 4..=6]));
        assert!(m.selects(5) && !m.selects(3) && !m.selects(7));
        assert_eq!(m.extra, vec![("foo".to_string(), "bar".to_string())]);
        assert_eq!(Magnet::parse(&m.to_uri()).unwrap(), m);
    }

    #[test]
    fn base32_info_hash() {
        let id = InfoHash::from_hex(HEX).unwrap();
        let b32 = base32_encode_20(id.as_bytes());
        assert_eq!(b32.len(), 32);
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{}", b32.to_lowercase())).unwrap();
        assert_eq!(m.info_hash, id);
        // Known vector: 20 zero bytes.
        assert_eq!(base32_encode_20(&[0; 20]), "A".repeat(32));
    }

    #[test]
    fn rejections() {
        assert_eq!(Magnet::parse("http://x"), Err(MagnetError::NotMagnet));
        assert_eq!(Magnet::parse("magnet:?dn=x"), Err(MagnetError::NoInfoHash));
        assert_eq!(Magnet::parse("magnet:?"), Err(MagnetError::NoInfoHash));
        assert_eq!(
            Magnet::parse("magnet:?xt=urn:btmh:1220abcd")
                .unwrap_err()
                .to_string(),
            "magnet link has no btih info-hash (v2-only urn:btmh links are not yet supported)"
        );
        for bad in ["abc", &"g".repeat(40), &"1".repeat(32), &"A".repeat(33), ""] {
            let e = Magnet::parse(&format!("magnet:?xt=urn:btih:{bad}")).unwrap_err();
            assert!(matches!(e, MagnetError::BadInfoHash(_)), "{bad}: {e}");
            assert!(e
                .to_string()
                .starts_with("info-hash must be 40 hex or 32 base32 characters"));
        }
        let other = "0".repeat(40);
        assert_eq!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{other}")),
            Err(MagnetError::ConflictingInfoHash)
        );
        let base = format!("magnet:?xt=urn:btih:{HEX}");
        assert!(matches!(
            Magnet::parse(&format!("{base}&dn=%zz")),
            Err(MagnetError::BadEncoding(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("{base}&dn=%4")),
            Err(MagnetError::BadEncoding(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("{base}&dn=%ff")),
            Err(MagnetError::BadEncoding(_))
        ));
        for p in ["1.2.3.4", "host:99999", "a b:1", ":80", "[::1]"] {
            assert!(
                matches!(
                    Magnet::parse(&format!("{base}&x.pe={p}")),
                    Err(MagnetError::BadPeer(_))
                ),
                "{p}"
            );
        }
        for so in ["", "a", "3-1", "1,,2", "-1", "1-", "99999999999"] {
            assert!(
                matches!(
                    Magnet::parse(&format!("{base}&so={so}")),
                    Err(MagnetError::BadSelection(_))
                ),
                "{so}"
            );
        }
        let long = format!("{base}&dn={}", "a".repeat(MAX_MAGNET_LEN));
        assert!(matches!(Magnet::parse(&long), Err(MagnetError::TooLong(_))));
    }

    #[test]
    fn same_hash_twice_is_fine_and_scheme_case_insensitive() {
        let m = Magnet::parse(&format!(
            "MAGNET:?xt=urn:btih:{HEX}&xt=URN:BTIH:{}",
            HEX.to_uppercase()
        ))
        .unwrap();
        assert_eq!(m.info_hash.to_hex(), HEX);
        assert!(m.extra.is_empty());
    }

    fn arb_text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ -~\u{e9}\u{4e2d}&=%+#?]{0,12}").unwrap()
    }

    fn arb_magnet() -> impl Strategy<Value = Magnet> {
        let peer = prop_oneof![
            (any::<std::net::IpAddr>(), any::<u16>())
                .prop_map(|(ip, port)| PeerAddr::Ip(SocketAddr::new(ip, port))),
            ("[a-z0-9.-]{1,10}", any::<u16>())
                .prop_map(|(host, port)| PeerAddr::Name { host, port }),
        ];
        let sel = proptest::collection::vec((0u32..1000, 0u32..10), 1..4)
            .prop_map(|v| v.into_iter().map(|(a, n)| a..=a + n).collect::<Vec<_>>());
        (
            any::<[u8; 20]>(),
            proptest::option::of(arb_text()),
            proptest::collection::vec(arb_text(), 0..3),
            proptest::collection::vec(arb_text(), 0..3),
            proptest::collection::vec(peer, 0..3),
            proptest::option::of(sel),
            proptest::collection::vec(("[a-z]{1,5}_[a-z]{0,3}", arb_text()), 0..3),
        )
            .prop_map(|(h, dn, tr, ws, peers, so, extra)| Magnet {
                info_hash: InfoHash::new(h),
                display_name: dn,
                trackers: tr,
                web_seeds: ws,
                peers,
                select_only: so,
                extra,
            })
    }

    proptest! {
        #[test]
        fn magnet_round_trip(m in arb_magnet()) {
            let uri = m.to_uri();
            prop_assert_eq!(Magnet::parse(&uri).unwrap(), m);
        }

        #[test]
        fn parse_never_panics(s in "magnet:\\?[ -~]{0,80}") {
            let _ = Magnet::parse(&s);
        }

        #[test]
        fn base32_round_trip(b in any::<[u8; 20]>()) {
            prop_assert_eq!(base32_decode_20(&base32_encode_20(&b)), Some(b));
        }
    }
}
