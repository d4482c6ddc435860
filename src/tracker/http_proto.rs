//! HTTP tracker protocol as pure functions: announce URLs (BEP 3), reply parsing with compact
//! peers (BEP 23), `peers6` (BEP 7, 18-byte entries) and dictionary peers, scrape (BEP 48);
//! and the server half: query parsing and bencoded replies.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::{AnnounceRequest, AnnounceResponse, Event, ScrapeStats, TrackerError};
use crate::bencode::{Limits, Value, Writer};
use crate::http::percent::{decode as percent_decode, encode as percent_encode};
use crate::id::Id20;

/// At most this many peers are taken from one reply (a hostile tracker could send millions).
pub const MAX_PEERS_PER_REPLY: usize = 2000;
/// At most this many torrents are read from one scrape reply.
pub const MAX_SCRAPE_FILES: usize = 1000;
/// Length cap for human-readable strings (failure reason, warning) kept from a reply.
pub const MAX_MESSAGE_LEN: usize = 512;

fn join_query(base: &str, query: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{query}")
}

/// Builds the full announce URL (BEP 3) with `compact=1` (BEP 23).
pub fn announce_url(base: &str, req: &AnnounceRequest) -> String {
    let mut q = format!(
        "info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1&key={:08x}",
        percent_encode(req.info_hash.as_bytes()),
        percent_encode(req.peer_id.as_bytes()),
        req.port,
        req.uploaded,
        req.downloaded,
        req.left,
        req.key
    );
    if let Some(e) = req.event.http_name() {
        q.push_str("&event=");
        q.push_str(e);
    }
    if let Some(n) = req.numwant {
        q.push_str(&format!("&numwant={n}"));
    }
    if let Some(t) = &req.tracker_id {
        q.push_str("&trackerid=");
        q.push_str(&percent_encode(t));
    }
    join_query(base, &q)
}

/// BEP 48: the scrape URL replaces a final path component starting with `announce` by
/// `scrape`; a tracker whose URL has no such component does not support scrape.
pub fn scrape_base(announce: &str) -> Option<String> {
    let (path_part, query) = match announce.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (announce, None),
    };
    let slash = path_part.rfind('/')?;
    // The slash must be in the path, not the `//` of the scheme.
    if path_part[..slash].ends_with(':') || path_part[..slash].ends_with(":/") {
        return None;
    }
    let last = &path_part[slash + 1..];
    let rest = last.strip_prefix("announce")?;
    let mut s = format!("{}/scrape{}", &path_part[..slash], rest);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    Some(s)
}

/// The full scrape URL for some info-hashes, or `None` when the tracker has no scrape.
pub fn scrape_url(announce: &str, hashes: &[Id20]) -> Option<String> {
    let base = scrape_base(announce)?;
    let q: Vec<String> = hashes
        .iter()
        .map(|h| format!("info_hash={}", percent_encode(h.as_bytes())))
        .collect();
    Some(if q.is_empty() {
        base
    } else {
        join_query(&base, &q.join("&"))
    })
}

fn clip(s: String) -> String {
    if s.len() <= MAX_MESSAGE_LEN {
        return s;
    }
    let mut end = MAX_MESSAGE_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn u32_field(v: &Value, key: &str) -> Option<u32> {
    v.get(key)
        .and_then(Value::as_int)
        .and_then(|i| u32::try_from(i).ok())
}

/// Compact IPv4 peers: 6 bytes each (BEP 23). A trailing partial entry is ignored.
pub fn parse_compact_v4(b: &[u8], out: &mut Vec<SocketAddr>) {
    for c in b.chunks_exact(6).take(MAX_PEERS_PER_REPLY) {
        let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
        let port = u16::from_be_bytes([c[4], c[5]]);
        out.push(SocketAddr::V4(SocketAddrV4::new(ip, port)));
    }
}

/// Compact IPv6 peers: 18 bytes each (BEP 7).
pub fn parse_compact_v6(b: &[u8], out: &mut Vec<SocketAddr>) {
    for c in b.chunks_exact(18).take(MAX_PEERS_PER_REPLY) {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&c[..16]);
        let port = u16::from_be_bytes([c[16], c[17]]);
        out.push(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            0,
            0,
        )));
    }
}

/// Parses an announce reply. A `failure reason` becomes [`TrackerError::Failure`].
pub fn parse_announce_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let v = Value::decode_exact(body, Limits::TRACKER)?;
    if v.as_dict().is_none() {
        return Err(TrackerError::Malformed("reply is not a dictionary".into()));
    }
    if let Some(f) = v.get("failure reason").and_then(Value::as_text) {
        return Err(TrackerError::Failure(clip(f)));
    }
    let interval = u32_field(&v, "interval")
        .ok_or_else(|| TrackerError::Malformed("missing interval".into()))?;
    let mut peers = Vec::new();
    match v.get("peers") {
        Some(Value::Bytes(b)) => parse_compact_v4(b, &mut peers),
        Some(Value::List(l)) => {
            for p in l.iter().take(MAX_PEERS_PER_REPLY) {
                let ip = p
                    .get("ip")
                    .and_then(Value::as_bytes)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|s| s.parse::<IpAddr>().ok());
                let port = p
                    .get("port")
                    .and_then(Value::as_int)
                    .and_then(|i| u16::try_from(i).ok());
                // Entries with host names or bad ports are skipped, not fatal.
                if let (Some(ip), Some(port)) = (ip, port) {
                    peers.push(SocketAddr::new(ip, port));
                }
            }
        }
        _ => {}
    }
    if let Some(Value::Bytes(b)) = v.get("peers6") {
        let room = MAX_PEERS_PER_REPLY.saturating_sub(peers.len());
        let mut p6 = Vec::new();
        parse_compact_v6(b, &mut p6);
        peers.extend(p6.into_iter().take(room));
    }
    Ok(AnnounceResponse {
        interval,
        min_interval: u32_field(&v, "min interval"),
        peers,
        warning: v.get("warning message").and_then(Value::as_text).map(clip),
        tracker_id: v
            .get("tracker id")
            .and_then(Value::as_bytes)
            .filter(|b| b.len() <= MAX_MESSAGE_LEN)
            .map(<[u8]>::to_vec),
        complete: u32_field(&v, "complete"),
        incomplete: u32_field(&v, "incomplete"),
    })
}

/// Parses a scrape reply: `files` maps raw 20-byte info-hashes to counters.
pub fn parse_scrape_response(body: &[u8]) -> Result<BTreeMap<Id20, ScrapeStats>, TrackerError> {
    let v = Value::decode_exact(body, Limits::TRACKER)?;
    if let Some(f) = v.get("failure reason").and_then(Value::as_text) {
        return Err(TrackerError::Failure(clip(f)));
    }
    let files = v
        .get("files")
        .and_then(Value::as_dict)
        .ok_or_else(|| TrackerError::Malformed("scrape reply without files".into()))?;
    let mut out = BTreeMap::new();
    for (k, st) in files.iter().take(MAX_SCRAPE_FILES) {
        let Some(h) = Id20::from_slice(k) else {
            continue;
        };
        out.insert(
            h,
            ScrapeStats {
                complete: u32_field(st, "complete").unwrap_or(0),
                downloaded: u32_field(st, "downloaded").unwrap_or(0),
                incomplete: u32_field(st, "incomplete").unwrap_or(0),
            },
        );
    }
    Ok(out)
}

// ---------------------------------------------------------------- server side

/// Most `info_hash` values accepted in one scrape request.
pub const MAX_SCRAPE_HASHES: usize = 74;
/// Most query parameters looked at in one request.
pub const MAX_QUERY_PARAMS: usize = 128;

/// A request query split into decoded `(key, value)` pairs, bounded.
pub fn parse_query(query: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for part in query.split(|&c| c == b'&').filter(|p| !p.is_empty()) {
        if out.len() >= MAX_QUERY_PARAMS {
            return None;
        }
        let (k, v) = match part.iter().position(|&c| c == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &b""[..]),
        };
        out.push((percent_decode(k, true)?, percent_decode(v, true)?));
    }
    Some(out)
}

/// An announce as the server sees it, before the source address is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAnnounce {
    pub info_hash: Id20,
    pub peer_id: Id20,
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    pub numwant: Option<u32>,
    pub compact: bool,
    pub no_peer_id: bool,
}

/// Why an HTTP announce query was rejected (the text goes into `failure reason`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub &'static str);

fn num<T: std::str::FromStr>(v: &[u8]) -> Option<T> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses the query string of `/announce`.
pub fn parse_announce_query(query: &[u8]) -> Result<ServerAnnounce, QueryError> {
    let params = parse_query(query).ok_or(QueryError("malformed query"))?;
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let (mut uploaded, mut downloaded, mut left) = (0u64, 0u64, None);
    let mut event = Event::None;
    let mut numwant = None;
    let mut compact = false;
    let mut no_peer_id = false;
    for (k, v) in &params {
        match k.as_slice() {
            b"info_hash" => {
                info_hash = Some(Id20::from_slice(v).ok_or(QueryError("bad info_hash"))?)
            }
            b"peer_id" => peer_id = Some(Id20::from_slice(v).ok_or(QueryError("bad peer_id"))?),
            b"port" => port = Some(num::<u16>(v).ok_or(QueryError("bad port"))?),
            b"uploaded" => uploaded = num(v).ok_or(QueryError("bad uploaded"))?,
            b"downloaded" => downloaded = num(v).ok_or(QueryError("bad downloaded"))?,
            b"left" => left = Some(num(v).ok_or(QueryError("bad left"))?),
            b"event" => event = Event::from_http(v).ok_or(QueryError("bad event"))?,
            b"numwant" => numwant = num(v),
            b"compact" => compact = v.as_slice() == b"1",
            b"no_peer_id" => no_peer_id = v.as_slice() == b"1",
            _ => {}
        }
    }
    let port = port.ok_or(QueryError("missing port"))?;
    if port == 0 {
        return Err(QueryError("bad port"));
    }
    Ok(ServerAnnounce {
        info_hash: info_hash.ok_or(QueryError("missing info_hash"))?,
        peer_id: peer_id.ok_or(QueryError("missing peer_id"))?,
        port,
        uploaded,
        downloaded,
        // A client that omits `left` is treated as a leecher with unknown size.
        left: left.unwrap_or(1),
        event,
        numwant,
        compact,
        no_peer_id,
    })
}

/// Parses the `info_hash` list of `/scrape` (empty means "all", which we refuse to list).
pub fn parse_scrape_query(query: &[u8]) -> Result<Vec<Id20>, QueryError> {
    let params = parse_query(query).ok_or(QueryError("malformed query"))?;
    let mut out = Vec::new();
    for (k, v) in params {
        if k == b"info_hash" {
            if out.len() >= MAX_SCRAPE_HASHES {
                return Err(QueryError("too many info_hash"));
            }
            out.push(Id20::from_slice(&v).ok_or(QueryError("bad info_hash"))?);
        }
    }
    Ok(out)
}

/// A bencoded `failure reason` reply.
pub fn encode_failure(msg: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.dict()
        .bytes(b"failure reason")
        .bytes(msg.as_bytes())
        .end();
    w.finish()
}

/// A bencoded announce reply; compact (BEP 23/7) or a dictionary list (BEP 3).
pub fn encode_announce_reply(
    interval: u32,
    complete: u32,
    incomplete: u32,
    peers: &[(SocketAddr, Option<Id20>)],
    compact: bool,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.dict();
    w.bytes(b"complete").int(i64::from(complete));
    w.bytes(b"incomplete").int(i64::from(incomplete));
    w.bytes(b"interval").int(i64::from(interval));
    w.bytes(b"min interval").int(i64::from(interval / 2));
    if compact {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (a, _) in peers {
            match a {
                SocketAddr::V4(a) => {
                    v4.extend_from_slice(&a.ip().octets());
                    v4.extend_from_slice(&a.port().to_be_bytes());
                }
                SocketAddr::V6(a) => {
                    v6.extend_from_slice(&a.ip().octets());
                    v6.extend_from_slice(&a.port().to_be_bytes());
                }
            }
        }
        w.bytes(b"peers").bytes(&v4);
        if !v6.is_empty() {
            w.bytes(b"peers6").bytes(&v6);
        }
    } else {
        w.bytes(b"peers").list();
        for (a, id) in peers {
            w.dict();
            w.bytes(b"ip").bytes(a.ip().to_string().as_bytes());
            if let Some(id) = id {
                w.bytes(b"peer id").bytes(id.as_bytes());
            }
            w.bytes(b"port").int(i64::from(a.port()));
            w.end();
        }
        w.end();
    }
    w.end();
    w.finish()
}

/// A bencoded scrape reply (BEP 48).
pub fn encode_scrape_reply(files: &[(Id20, ScrapeStats)]) -> Vec<u8> {
    let mut sorted = files.to_vec();
    sorted.sort_by_key(|(h, _)| *h);
    sorted.dedup_by_key(|(h, _)| *h);
    let mut w = Writer::new();
    w.dict().bytes(b"files").dict();
    for (h, s) in &sorted {
        w.bytes(h.as_bytes()).dict();
        w.bytes(b"complete").int(i64::from(s.complete));
        w.bytes(b"downloaded").int(i64::from(s.downloaded));
        w.bytes(b"incomplete").int(i64::from(s.incomplete));
        w.end();
    }
    w.end().end();
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: Id20([0xAB; 20]),
            peer_id: Id20(*b"-MF0001-abcdefghijkl"),
            port: 6881,
            uploaded: 1,
            downloaded: 2,
            left: 3,
            event: Event::Started,
            numwant: Some(50),
            key: 0xdeadbeef,
            tracker_id: Some(b"t i".to_vec()),
        }
    }

    #[test]
    fn announce_url_encodes_raw_bytes_and_round_trips() {
        let u = announce_url("http://t.example:8080/announce", &req());
        assert!(u.starts_with("http://t.example:8080/announce?info_hash=%AB%AB"));
        assert!(
            u.contains("&peer_id=-MF0001-abcdefghijkl&port=6881&uploaded=1&downloaded=2&left=3")
        );
        assert!(u.contains("&compact=1&key=deadbeef&event=started&numwant=50&trackerid=t%20i"));
        let q = u.split_once('?').unwrap().1;
        let s = parse_announce_query(q.as_bytes()).unwrap();
        assert_eq!(s.info_hash, req().info_hash);
        assert_eq!(s.peer_id, req().peer_id);
        assert_eq!(
            (s.port, s.left, s.event, s.numwant),
            (6881, 3, Event::Started, Some(50))
        );
        assert!(s.compact);
        // A base URL with its own query gets `&`.
        assert!(announce_url("http://x/a?passkey=1", &req())
            .starts_with("http://x/a?passkey=1&info_hash="));
    }

    #[test]
    fn scrape_urls_per_bep48() {
        let cases = [
            (
                "http://example.com/announce",
                Some("http://example.com/scrape"),
            ),
            (
                "http://example.com/x/announce",
                Some("http://example.com/x/scrape"),
            ),
            (
                "http://example.com/announce.php",
                Some("http://example.com/scrape.php"),
            ),
            ("http://example.com/a", None),
            (
                "http://example.com/announce?x2%0644",
                Some("http://example.com/scrape?x2%0644"),
            ),
            (
                "http://example.com/announce?x=2/4",
                Some("http://example.com/scrape?x=2/4"),
            ),
            ("http://example.com/x%064announce", None),
            ("http://announce", None),
        ];
        for (a, s) in cases {
            assert_eq!(scrape_base(a).as_deref(), s, "{a}");
        }
        let u = scrape_url("http://h/announce", &[Id20([1; 20]), Id20([2; 20])]).unwrap();
        assert_eq!(u.matches("info_hash=").count(), 2);
        assert_eq!(
            parse_scrape_query(u.split_once('?').unwrap().1.as_bytes())
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn parses_compact_dict_and_v6_replies() {
        let p = vec![
            (SocketAddr::from(([10, 0, 0, 1], 1)), Some(Id20([7; 20]))),
            (SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 2)), None),
        ];
        for compact in [true, false] {
            let body = encode_announce_reply(1800, 3, 4, &p, compact);
            let r = parse_announce_response(&body).unwrap();
            assert_eq!(r.interval, 1800);
            assert_eq!(r.min_interval, Some(900));
            assert_eq!((r.complete, r.incomplete), (Some(3), Some(4)));
            assert_eq!(r.peers, vec![p[0].0, p[1].0]);
        }
        let body = b"d8:intervali60e5:peers7:\x01\x02\x03\x04\x00\x50X15:warning message2:hi10:tracker id2:abe";
        let r = parse_announce_response(body).unwrap();
        assert_eq!(r.peers, vec![SocketAddr::from(([1, 2, 3, 4], 80))]);
        assert_eq!(r.warning.as_deref(), Some("hi"));
        assert_eq!(r.tracker_id.as_deref(), Some(&b"ab"[..]));
    }

    #[test]
    fn failure_and_malformed() {
        match parse_announce_response(&encode_failure("go away")) {
            Err(TrackerError::Failure(m)) => assert_eq!(m, "go away"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_announce_response(b"de"),
            Err(TrackerError::Malformed(_))
        ));
        assert!(matches!(
            parse_announce_response(b"<html>"),
            Err(TrackerError::Malformed(_))
        ));
        assert!(parse_announce_query(b"info_hash=abc&peer_id=x&port=1").is_err());
        assert!(parse_announce_query(b"%zz").is_err());
    }

    #[test]
    fn scrape_reply_round_trip() {
        let s = ScrapeStats {
            complete: 1,
            downloaded: 2,
            incomplete: 3,
        };
        let body = encode_scrape_reply(&[(Id20([9; 20]), s)]);
        let m = parse_scrape_response(&body).unwrap();
        assert_eq!(m.get(&Id20([9; 20])), Some(&s));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_announce_response(&data);
            let _ = parse_scrape_response(&data);
            let _ = parse_announce_query(&data);
            let _ = parse_scrape_query(&data);
            if let Ok(s) = std::str::from_utf8(&data) {
                let _ = scrape_base(s);
            }
        }
    }
}
