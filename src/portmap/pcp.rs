//! PCP (RFC 6887) messages: ANNOUNCE (to learn whether the gateway speaks PCP) and MAP for
//! TCP and UDP (a lifetime of 0 deletes), and the server's replies, plus the epoch check
//! both PCP and NAT-PMP use to notice a gateway that restarted and lost its mappings
//! (RFC 6887 section 8.5, RFC 6886 section 3.6). Pure: no sockets, no clocks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Proto;

const VERSION: u8 = 2;
const OP_ANNOUNCE: u8 = 0;
const OP_MAP: u8 = 1;
const HEADER: usize = 24;
const MAP_BODY: usize = 36;
/// Largest PCP message (section 7).
pub const MAX_MESSAGE: usize = 1100;

/// PCP carries IPv4 addresses as IPv4-mapped IPv6 (section 5).
fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn ip_from16(b: &[u8]) -> IpAddr {
    let a: [u8; 16] = b.try_into().unwrap_or([0; 16]);
    let v6 = Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn header(op: u8, lifetime: u32, client: IpAddr) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + MAP_BODY);
    b.push(VERSION);
    b.push(op);
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&lifetime.to_be_bytes());
    b.extend_from_slice(&ip16(client));
    b
}

/// ANNOUNCE (section 14.1): a request the server answers with its epoch.
pub fn announce_request(client: IpAddr) -> Vec<u8> {
    header(OP_ANNOUNCE, 0, client)
}

fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

/// MAP (section 11.1): map `internal` on `client` for `lifetime` seconds, suggesting
/// `external` (0: any) on any external address. The same `nonce` renews or deletes it.
pub fn map_request(
    nonce: [u8; 12],
    p: Proto,
    client: IpAddr,
    internal: u16,
    external: u16,
    lifetime: u32,
) -> Vec<u8> {
    let mut b = header(OP_MAP, lifetime, client);
    b.extend_from_slice(&nonce);
    b.push(proto_number(p));
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(&internal.to_be_bytes());
    b.extend_from_slice(&external.to_be_bytes());
    let any = match client {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    b.extend_from_slice(&ip16(any));
    b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Announce {
        epoch: u32,
    },
    Map {
        epoch: u32,
        lifetime: u32,
        nonce: [u8; 12],
        proto: Proto,
        internal: u16,
        external: u16,
        external_ip: IpAddr,
    },
    /// A non-zero result code (section 7.4) for opcode `op`; `lifetime` says how long the
    /// error holds (seconds).
    Error {
        op: u8,
        code: u8,
        lifetime: u32,
        epoch: u32,
    },
    /// A NAT-PMP server's answer to a version it does not know (RFC 6887 section 9): the
    /// gateway speaks NAT-PMP only.
    NatPmpOnly,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcpError {
    #[error("PCP reply too short")]
    Short,
    #[error("PCP reply too long")]
    TooLong,
    #[error("not a PCP reply")]
    NotPcp,
}

/// The human meaning of a result code (section 7.4).
pub fn result_text(code: u8) -> &'static str {
    match code {
        1 => "unsupported version",
        2 => "not authorized",
        3 => "malformed request",
        4 => "unsupported opcode",
        5 => "unsupported option",
        6 => "malformed option",
        7 => "network failure",
        8 => "no resources",
        9 => "unsupported protocol",
        10 => "user exceeded quota",
        11 => "cannot provide external address",
        12 => "address mismatch",
        13 => "excessive remote peers",
        _ => "unknown result code",
    }
}

/// Parses a reply datagram. Options after the opcode's body are skipped (none is needed).
pub fn parse_reply(b: &[u8]) -> Result<Reply, PcpError> {
    if b.len() > MAX_MESSAGE {
        return Err(PcpError::TooLong);
    }
    if b.len() >= 2 && b[0] == 0 && b[1] >= 128 {
        // NAT-PMP's "unsupported version" (result code 1) in its own format.
        if b.len() >= 4 && u16::from_be_bytes([b[2], b[3]]) == 1 {
            return Ok(Reply::NatPmpOnly);
        }
        return Err(PcpError::NotPcp);
    }
    if b.len() < HEADER {
        return Err(PcpError::Short);
    }
    if b[0] != VERSION || b[1] & 0x80 == 0 {
        return Err(PcpError::NotPcp);
    }
    let op = b[1] & 0x7f;
    let code = b[3];
    let lifetime = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let epoch = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    if code != 0 {
        return Ok(Reply::Error {
            op,
            code,
            lifetime,
            epoch,
        });
    }
    match op {
        OP_ANNOUNCE => Ok(Reply::Announce { epoch }),
        OP_MAP => {
            let m = b.get(HEADER..HEADER + MAP_BODY).ok_or(PcpError::Short)?;
            let proto = match m[12] {
                6 => Proto::Tcp,
                17 => Proto::Udp,
                _ => return Err(PcpError::NotPcp),
            };
            Ok(Reply::Map {
                epoch,
                lifetime,
                nonce: m[..12].try_into().unwrap_or([0; 12]),
                proto,
                internal: u16::from_be_bytes([m[16], m[17]]),
                external: u16::from_be_bytes([m[18], m[19]]),
                external_ip: ip_from16(&m[20..36]),
            })
        }
        _ => Err(PcpError::NotPcp),
    }
}

/// What the client remembers of a server's epoch: its last value and the client's clock
/// (seconds) when it arrived.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epoch {
    last: Option<(u32, u64)>,
}

impl Epoch {
    /// Records the epoch `server` seen at client time `now` (seconds); `false` when it shows
    /// the server lost its state since the last one (went backwards, or moved too
    /// differently from our own clock: RFC 6887 section 8.5), so every mapping must be made
    /// again.
    pub fn observe(&mut self, server: u32, now: u64) -> bool {
        let ok = match self.last {
            None => true,
            Some((s_prev, c_prev)) => {
                if u64::from(server) + 1 < u64::from(s_prev) {
                    false
                } else {
                    let c_delta = now.saturating_sub(c_prev);
                    let s_delta = u64::from(server.saturating_sub(s_prev));
                    !(c_delta + 2 < s_delta - s_delta / 16 || s_delta + 2 < c_delta - c_delta / 16)
                }
            }
        };
        self.last = Some((server, now));
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_round_trip_through_a_reply() {
        let client = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2));
        let req = map_request([7; 12], Proto::Udp, client, 6881, 6881, 7200);
        assert_eq!(req.len(), HEADER + MAP_BODY);
        assert_eq!((req[0], req[1]), (2, 1));
        assert_eq!(ip_from16(&req[8..24]), client);
        // A server's reply is the request with the R bit, a result, the epoch.
        let mut rep = req.clone();
        rep[1] |= 0x80;
        rep[3] = 0;
        rep[8..12].copy_from_slice(&42u32.to_be_bytes());
        rep[12..24].fill(0);
        rep[HEADER + 18..HEADER + 20].copy_from_slice(&7000u16.to_be_bytes());
        rep[HEADER + 20..].copy_from_slice(&ip16(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))));
        rep.extend_from_slice(&[0; 8]); // an option, skipped
        assert_eq!(
            parse_reply(&rep),
            Ok(Reply::Map {
                epoch: 42,
                lifetime: 7200,
                nonce: [7; 12],
                proto: Proto::Udp,
                internal: 6881,
                external: 7000,
                external_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
            })
        );
        let mut ann = announce_request(client);
        ann[1] |= 0x80;
        assert_eq!(parse_reply(&ann), Ok(Reply::Announce { epoch: 0 }));
        ann[3] = 2;
        assert!(matches!(
            parse_reply(&ann),
            Ok(Reply::Error { op: 0, code: 2, .. })
        ));
        assert_eq!(
            parse_reply(&[0, 128, 0, 1, 0, 0, 0, 0]),
            Ok(Reply::NatPmpOnly)
        );
    }

    #[test]
    fn garbage_is_an_error() {
        let mut map = map_request([0; 12], Proto::Tcp, Ipv4Addr::LOCALHOST.into(), 1, 1, 1);
        map[1] |= 0x80;
        let mut bad_proto = map.clone();
        bad_proto[HEADER + 12] = 99;
        for bad in [
            vec![],
            vec![2; 23],
            map[..30].to_vec(),
            bad_proto,
            vec![2, 1, 0, 0].into_iter().chain([0; 20]).collect(),
            vec![2, 0x85].into_iter().chain([0; 22]).collect(),
            vec![0; MAX_MESSAGE + 1],
            vec![0, 128, 0, 0],
        ] {
            assert!(parse_reply(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn epoch_going_back_or_drifting_means_lost_state() {
        let mut e = Epoch::default();
        assert!(e.observe(1000, 50));
        assert!(e.observe(1060, 110));
        assert!(!e.observe(3, 120), "restarted");
        assert!(e.observe(63, 180));
        // The server's clock advanced far less than ours: it restarted in between.
        assert!(!e.observe(70, 1180));
        // Far more than ours: also lost state.
        assert!(!e.observe(10_000, 1190));
    }
}
