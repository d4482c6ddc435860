//! UDP tracker protocol (BEP 15) as pure encoders/decoders, client and server halves, plus the
//! retransmission schedule and connection-id lifetime as plain logic.
//!
//! All integers are big-endian. IPv6 trackers answer announces with 18-byte peer entries.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use super::{AnnounceRequest, AnnounceResponse, Event, ScrapeStats, TrackerError};
use crate::id::Id20;

/// The magic connection id of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
pub const ACTION_CONNECT: u32 = 0;
pub const ACTION_ANNOUNCE: u32 = 1;
pub const ACTION_SCRAPE: u32 = 2;
pub const ACTION_ERROR: u32 = 3;
/// BEP 15: up to about 74 info-hashes fit in one scrape.
pub const MAX_SCRAPE_HASHES: usize = 74;
/// A connection id may be used for one minute after it was received.
pub const CONNECTION_ID_LIFETIME: Duration = Duration::from_secs(60);
/// Largest datagram either side needs to handle.
pub const MAX_PACKET: usize = 2048;

/// BEP 15 back-off: wait `15 * 2^n` seconds for the n-th try, n = 0..=8, then give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    /// 15 s by the BEP; tests may shorten it.
    pub base: Duration,
    /// Last n to try (8 by the BEP).
    pub max_n: u32,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            base: Duration::from_secs(15),
            max_n: 8,
        }
    }
}

impl RetrySchedule {
    /// How long to wait for an answer on try `n`, or `None` once the tracker is given up on.
    pub fn timeout(&self, n: u32) -> Option<Duration> {
        (n <= self.max_n).then(|| self.base.saturating_mul(1u32 << n.min(31)))
    }
}

/// Whether a connection id obtained at `obtained` may still be used at `now`.
pub fn connection_id_valid(obtained: tokio::time::Instant, now: tokio::time::Instant) -> bool {
    now.saturating_duration_since(obtained) < CONNECTION_ID_LIFETIME
}

// ---------------------------------------------------------------- client half

pub fn encode_connect(tid: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    b[12..].copy_from_slice(&tid.to_be_bytes());
    b
}

pub fn encode_announce(conn_id: u64, tid: u32, r: &AnnounceRequest) -> [u8; 98] {
    let mut b = [0u8; 98];
    b[0..8].copy_from_slice(&conn_id.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    b[12..16].copy_from_slice(&tid.to_be_bytes());
    b[16..36].copy_from_slice(r.info_hash.as_bytes());
    b[36..56].copy_from_slice(r.peer_id.as_bytes());
    b[56..64].copy_from_slice(&r.downloaded.to_be_bytes());
    b[64..72].copy_from_slice(&r.left.to_be_bytes());
    b[72..80].copy_from_slice(&r.uploaded.to_be_bytes());
    b[80..84].copy_from_slice(&(r.event as u32).to_be_bytes());
    // 84..88: IP address 0 = use the source address.
    b[88..92].copy_from_slice(&r.key.to_be_bytes());
    let numwant: i32 = r
        .numwant
        .map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
    b[92..96].copy_from_slice(&numwant.to_be_bytes());
    b[96..98].copy_from_slice(&r.port.to_be_bytes());
    b
}

pub fn encode_scrape(conn_id: u64, tid: u32, hashes: &[Id20]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + 20 * hashes.len().min(MAX_SCRAPE_HASHES));
    b.extend_from_slice(&conn_id.to_be_bytes());
    b.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    b.extend_from_slice(&tid.to_be_bytes());
    for h in hashes.iter().take(MAX_SCRAPE_HASHES) {
        b.extend_from_slice(h.as_bytes());
    }
    b
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_be_bytes(a))
}

/// Checks the header of a reply: it must carry our transaction id, and either the expected
/// action or an error (whose message becomes [`TrackerError::Failure`]).
fn check_header(b: &[u8], tid: u32, action: u32) -> Result<(), TrackerError> {
    let a = be32(b, 0).ok_or_else(|| TrackerError::Malformed("short UDP reply".into()))?;
    let t = be32(b, 4).ok_or_else(|| TrackerError::Malformed("short UDP reply".into()))?;
    if t != tid {
        return Err(TrackerError::Malformed("transaction id mismatch".into()));
    }
    if a == ACTION_ERROR {
        let msg = String::from_utf8_lossy(b.get(8..).unwrap_or_default());
        let msg: String = msg.chars().take(256).collect();
        return Err(TrackerError::Failure(msg));
    }
    if a != action {
        return Err(TrackerError::Malformed(format!("unexpected action {a}")));
    }
    Ok(())
}

/// Parses a connect reply, returning the connection id.
pub fn parse_connect_response(b: &[u8], tid: u32) -> Result<u64, TrackerError> {
    check_header(b, tid, ACTION_CONNECT)?;
    be64(b, 8).ok_or_else(|| TrackerError::Malformed("short connect reply".into()))
}

/// Parses an announce reply; `v6` says the tracker was reached over IPv6 (18-byte peers).
pub fn parse_announce_response(
    b: &[u8],
    tid: u32,
    v6: bool,
) -> Result<AnnounceResponse, TrackerError> {
    check_header(b, tid, ACTION_ANNOUNCE)?;
    let short = || TrackerError::Malformed("short announce reply".into());
    let interval = be32(b, 8).ok_or_else(short)?;
    let leechers = be32(b, 12).ok_or_else(short)?;
    let seeders = be32(b, 16).ok_or_else(short)?;
    let mut peers = Vec::new();
    let rest = b.get(20..).unwrap_or_default();
    if v6 {
        super::http_proto::parse_compact_v6(rest, &mut peers);
    } else {
        super::http_proto::parse_compact_v4(rest, &mut peers);
    }
    Ok(AnnounceResponse {
        interval,
        min_interval: None,
        peers,
        warning: None,
        tracker_id: None,
        complete: Some(seeders),
        incomplete: Some(leechers),
    })
}

/// Parses a scrape reply, pairing counters with the hashes asked for, in order.
pub fn parse_scrape_response(
    b: &[u8],
    tid: u32,
    hashes: &[Id20],
) -> Result<Vec<(Id20, ScrapeStats)>, TrackerError> {
    check_header(b, tid, ACTION_SCRAPE)?;
    let mut out = Vec::new();
    for (i, h) in hashes.iter().take(MAX_SCRAPE_HASHES).enumerate() {
        let at = 8 + 12 * i;
        match (be32(b, at), be32(b, at + 4), be32(b, at + 8)) {
            (Some(complete), Some(downloaded), Some(incomplete)) => out.push((
                *h,
                ScrapeStats {
                    complete,
                    downloaded,
                    incomplete,
                },
            )),
            _ => break,
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- server half

/// A request the server understood. Anything else is silently dropped (BEP 15 servers must
/// not amplify garbage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Connect {
        tid: u32,
    },
    Announce {
        conn_id: u64,
        tid: u32,
        info_hash: Id20,
        peer_id: Id20,
        downloaded: u64,
        left: u64,
        uploaded: u64,
        event: Event,
        key: u32,
        numwant: i32,
        port: u16,
    },
    Scrape {
        conn_id: u64,
        tid: u32,
        hashes: Vec<Id20>,
    },
}

/// Parses a datagram sent to the tracker; `None` for anything malformed.
pub fn parse_request(b: &[u8]) -> Option<Request> {
    let conn_id = be64(b, 0)?;
    let action = be32(b, 8)?;
    let tid = be32(b, 12)?;
    match action {
        ACTION_CONNECT if conn_id == PROTOCOL_ID => Some(Request::Connect { tid }),
        ACTION_ANNOUNCE if b.len() >= 98 => Some(Request::Announce {
            conn_id,
            tid,
            info_hash: Id20::from_slice(b.get(16..36)?)?,
            peer_id: Id20::from_slice(b.get(36..56)?)?,
            downloaded: be64(b, 56)?,
            left: be64(b, 64)?,
            uploaded: be64(b, 72)?,
            event: Event::from_udp(be32(b, 80)?)?,
            // 84..88 (IP) is ignored: peers are recorded at their source address only, so a
            // client cannot make us hand out someone else's address.
            key: be32(b, 88)?,
            numwant: be32(b, 92)? as i32,
            port: u16::from_be_bytes([*b.get(96)?, *b.get(97)?]),
        }),
        ACTION_SCRAPE => {
            let body = b.get(16..)?;
            if body.is_empty() || body.len() % 20 != 0 || body.len() / 20 > MAX_SCRAPE_HASHES {
                return None;
            }
            let hashes = body.chunks_exact(20).filter_map(Id20::from_slice).collect();
            Some(Request::Scrape {
                conn_id,
                tid,
                hashes,
            })
        }
        _ => None,
    }
}

pub fn encode_connect_response(tid: u32, conn_id: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    b[4..8].copy_from_slice(&tid.to_be_bytes());
    b[8..].copy_from_slice(&conn_id.to_be_bytes());
    b
}

/// Writes an announce reply into `out` (cleared first). Peers of the wrong family for this
/// reply are skipped: a v4 reply has 6-byte entries, a v6 reply 18-byte ones.
pub fn encode_announce_response(
    out: &mut Vec<u8>,
    tid: u32,
    interval: u32,
    leechers: u32,
    seeders: u32,
    peers: &[SocketAddr],
    v6: bool,
) {
    out.clear();
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(&interval.to_be_bytes());
    out.extend_from_slice(&leechers.to_be_bytes());
    out.extend_from_slice(&seeders.to_be_bytes());
    for p in peers {
        match (p, v6) {
            (SocketAddr::V4(a), false) => {
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            (SocketAddr::V6(a), true) => {
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            _ => {}
        }
    }
}

pub fn encode_scrape_response(tid: u32, stats: &[ScrapeStats]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + 12 * stats.len());
    b.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    b.extend_from_slice(&tid.to_be_bytes());
    for s in stats {
        b.extend_from_slice(&s.complete.to_be_bytes());
        b.extend_from_slice(&s.downloaded.to_be_bytes());
        b.extend_from_slice(&s.incomplete.to_be_bytes());
    }
    b
}

pub fn encode_error(tid: u32, msg: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + msg.len());
    b.extend_from_slice(&ACTION_ERROR.to_be_bytes());
    b.extend_from_slice(&tid.to_be_bytes());
    b.extend_from_slice(msg.as_bytes());
    b
}

/// Maps an IPv4-mapped IPv6 address (from a dual-stack socket) back to IPv4 so v4 and v6 peers
/// are kept apart by their real family.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, v6.port())),
            None => a,
        },
        _ => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: Id20([1; 20]),
            peer_id: Id20([2; 20]),
            port: 51413,
            uploaded: 10,
            downloaded: 20,
            left: 30,
            event: Event::Completed,
            numwant: None,
            key: 77,
            tracker_id: None,
        }
    }

    #[test]
    fn connect_round_trip_and_tid_check() {
        let c = encode_connect(5);
        assert_eq!(parse_request(&c), Some(Request::Connect { tid: 5 }));
        let r = encode_connect_response(5, 0x1122);
        assert_eq!(parse_connect_response(&r, 5).unwrap(), 0x1122);
        assert!(parse_connect_response(&r, 6).is_err());
        assert!(parse_connect_response(&r[..12], 5).is_err());
        // Connect with the wrong magic is not a connect.
        let mut bad = c;
        bad[0] = 9;
        assert_eq!(parse_request(&bad), None);
    }

    #[test]
    fn announce_round_trip_v4_v6() {
        let b = encode_announce(42, 9, &req());
        match parse_request(&b).unwrap() {
            Request::Announce {
                conn_id,
                tid,
                info_hash,
                left,
                event,
                numwant,
                port,
                key,
                ..
            } => {
                assert_eq!((conn_id, tid, info_hash, left), (42, 9, Id20([1; 20]), 30));
                assert_eq!(
                    (event, numwant, port, key),
                    (Event::Completed, -1, 51413, 77)
                );
            }
            other => panic!("{other:?}"),
        }
        let peers = [
            SocketAddr::from(([1, 2, 3, 4], 5)),
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 6)),
        ];
        let mut out = Vec::new();
        encode_announce_response(&mut out, 9, 1800, 2, 3, &peers, false);
        let r = parse_announce_response(&out, 9, false).unwrap();
        assert_eq!(
            (r.interval, r.complete, r.incomplete),
            (1800, Some(3), Some(2))
        );
        assert_eq!(r.peers, vec![peers[0]]);
        encode_announce_response(&mut out, 9, 1800, 2, 3, &peers, true);
        let r = parse_announce_response(&out, 9, true).unwrap();
        assert_eq!(r.peers, vec![peers[1]]);
        assert!(parse_announce_response(&out, 8, true).is_err());
    }

    #[test]
    fn scrape_and_error() {
        let hs = [Id20([1; 20]), Id20([2; 20])];
        let b = encode_scrape(3, 4, &hs);
        assert_eq!(
            parse_request(&b),
            Some(Request::Scrape {
                conn_id: 3,
                tid: 4,
                hashes: hs.to_vec()
            })
        );
        let s = ScrapeStats {
            complete: 1,
            downloaded: 2,
            incomplete: 3,
        };
        let r = encode_scrape_response(4, &[s, s]);
        assert_eq!(
            parse_scrape_response(&r, 4, &hs).unwrap(),
            vec![(hs[0], s), (hs[1], s)]
        );
        let e = encode_error(4, "nope");
        match parse_scrape_response(&e, 4, &hs) {
            Err(TrackerError::Failure(m)) => assert_eq!(m, "nope"),
            other => panic!("{other:?}"),
        }
        // Scrape bodies that are not whole hashes are dropped.
        assert_eq!(parse_request(&b[..30]), None);
    }

    #[test]
    fn retry_schedule_is_bep15() {
        let s = RetrySchedule::default();
        assert_eq!(s.timeout(0), Some(Duration::from_secs(15)));
        assert_eq!(s.timeout(1), Some(Duration::from_secs(30)));
        assert_eq!(s.timeout(8), Some(Duration::from_secs(3840)));
        assert_eq!(s.timeout(9), None);
    }

    #[test]
    fn connection_id_lifetime() {
        let t0 = tokio::time::Instant::now();
        assert!(connection_id_valid(t0, t0 + Duration::from_secs(59)));
        assert!(!connection_id_valid(t0, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn mapped_addresses_become_v4() {
        let a: SocketAddr = "[::ffff:1.2.3.4]:5".parse().unwrap();
        assert_eq!(canonical(a), SocketAddr::from(([1, 2, 3, 4], 5)));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200), tid in 0u32..3) {
            let _ = parse_request(&data);
            let _ = parse_connect_response(&data, tid);
            let _ = parse_announce_response(&data, tid, false);
            let _ = parse_announce_response(&data, tid, true);
            let _ = parse_scrape_response(&data, tid, &[Id20([0; 20]); 3]);
        }
    }
}
