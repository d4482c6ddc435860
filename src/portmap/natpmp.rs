//! NAT-PMP (RFC 6886) messages: the external-address request and TCP/UDP mapping requests
//! (a lifetime of 0 deletes), and the gateway's replies. Pure: no sockets, no clocks.

use std::net::Ipv4Addr;

use super::Proto;

/// The gateway's port for NAT-PMP and PCP requests (RFC 6886 section 3.1, RFC 6887).
pub const SERVER_PORT: u16 = 5351;

const VERSION: u8 = 0;
const OP_EXTERNAL: u8 = 0;
const OP_MAP_UDP: u8 = 1;
const OP_MAP_TCP: u8 = 2;

/// `Public address request`: version 0, opcode 0.
pub fn external_address_request() -> [u8; 2] {
    [VERSION, OP_EXTERNAL]
}

fn opcode(p: Proto) -> u8 {
    match p {
        Proto::Udp => OP_MAP_UDP,
        Proto::Tcp => OP_MAP_TCP,
    }
}

/// A mapping request (section 3.3): `lifetime` seconds, 0 with `external` 0 to delete.
pub fn map_request(p: Proto, internal: u16, external: u16, lifetime: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0] = VERSION;
    b[1] = opcode(p);
    b[4..6].copy_from_slice(&internal.to_be_bytes());
    b[6..8].copy_from_slice(&external.to_be_bytes());
    b[8..12].copy_from_slice(&lifetime.to_be_bytes());
    b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    External {
        epoch: u32,
        ip: Ipv4Addr,
    },
    Map {
        epoch: u32,
        proto: Proto,
        internal: u16,
        external: u16,
        lifetime: u32,
    },
    /// A non-zero result code (1 unsupported version, 2 not authorized, 3 network failure,
    /// 4 out of resources, 5 unsupported opcode) for request `op`.
    Error {
        op: u8,
        code: u16,
        epoch: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatPmpError {
    #[error("NAT-PMP reply too short")]
    Short,
    #[error("not a NAT-PMP reply")]
    NotNatPmp,
}

/// The human meaning of a result code.
pub fn result_text(code: u16) -> &'static str {
    match code {
        1 => "unsupported version",
        2 => "not authorized (NAT-PMP turned off on the router?)",
        3 => "network failure",
        4 => "out of resources",
        5 => "unsupported opcode",
        _ => "unknown result code",
    }
}

/// Parses a reply datagram (section 3.2, 3.3). A reply is version 0 with opcode 128 + the
/// request's; unknown opcodes and short packets are errors.
pub fn parse_reply(b: &[u8]) -> Result<Reply, NatPmpError> {
    if b.len() < 8 {
        return Err(NatPmpError::Short);
    }
    if b[0] != VERSION || b[1] < 128 {
        return Err(NatPmpError::NotNatPmp);
    }
    let op = b[1] - 128;
    let code = u16::from_be_bytes([b[2], b[3]]);
    let epoch = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    if op > OP_MAP_TCP {
        return Err(NatPmpError::NotNatPmp);
    }
    if code != 0 {
        return Ok(Reply::Error { op, code, epoch });
    }
    match op {
        OP_EXTERNAL => {
            let ip: [u8; 4] = b.get(8..12).ok_or(NatPmpError::Short)?.try_into().unwrap();
            Ok(Reply::External {
                epoch,
                ip: Ipv4Addr::from(ip),
            })
        }
        _ => {
            let m = b.get(8..16).ok_or(NatPmpError::Short)?;
            Ok(Reply::Map {
                epoch,
                proto: if op == OP_MAP_TCP {
                    Proto::Tcp
                } else {
                    Proto::Udp
                },
                internal: u16::from_be_bytes([m[0], m[1]]),
                external: u16::from_be_bytes([m[2], m[3]]),
                lifetime: u32::from_be_bytes([m[4], m[5], m[6], m[7]]),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies() {
        assert_eq!(external_address_request(), [0, 0]);
        assert_eq!(
            map_request(Proto::Tcp, 6881, 6881, 7200),
            [0, 2, 0, 0, 0x1a, 0xe1, 0x1a, 0xe1, 0, 0, 0x1c, 0x20]
        );
        assert_eq!(
            parse_reply(&[0, 128, 0, 0, 0, 0, 0, 9, 203, 0, 113, 7]),
            Ok(Reply::External {
                epoch: 9,
                ip: Ipv4Addr::new(203, 0, 113, 7)
            })
        );
        assert_eq!(
            parse_reply(&[0, 129, 0, 0, 0, 0, 1, 0, 0x1a, 0xe1, 0x1a, 0xe2, 0, 0, 0, 60]),
            Ok(Reply::Map {
                epoch: 256,
                proto: Proto::Udp,
                internal: 6881,
                external: 6882,
                lifetime: 60
            })
        );
        assert_eq!(
            parse_reply(&[0, 130, 0, 2, 0, 0, 0, 1]),
            Ok(Reply::Error {
                op: 2,
                code: 2,
                epoch: 1
            })
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &[][..],
            &[0, 128, 0, 0, 0, 0, 0],
            &[0, 128, 0, 0, 0, 0, 0, 0],
            &[0, 130, 0, 0, 0, 0, 0, 0, 1, 2],
            &[2, 128, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[0, 131, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(parse_reply(bad).is_err(), "{bad:?}");
        }
    }
}
