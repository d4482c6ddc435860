//! KRPC message codec for the Mainline DHT.
//!
//! Implements the wire format of BEP 5 (`ping`, `find_node`, `get_peers`, `announce_peer`
//! with `implied_port`, errors, compact node/peer info), BEP 32 (`nodes6`, `want`, 38-byte
//! IPv6 node info), BEP 42 (`ip` field), BEP 43 (`ro` read-only flag), BEP 33 (`scrape`,
//! `noseed`, `seed`, `BFsd`/`BFpe`) and BEP 51 (`sample_infohashes`).
//!
//! Parsing is hand-written over the crate's bencode [`Value`] (read with [`Limits::KRPC`]):
//! every length is checked against the remaining input before anything is
//! allocated, nesting depth is bounded, unknown keys are ignored and nothing panics on
//! hostile bytes. A message that is recognisably a query but is malformed yields a
//! [`DecodeError`] carrying the transaction id so the node can answer with KRPC error 203.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::bencode::{Limits, Value};
use crate::id::{Id20, NodeId};

/// Maximum transaction id length we accept (clients use 2-4 bytes).
const MAX_TID_LEN: usize = 16;
/// Size of a BEP 33 bloom filter in bytes.
pub const BLOOM_BYTES: usize = 256;

/// KRPC error codes (BEP 5).
pub mod error_code {
    pub const GENERIC: i64 = 201;
    pub const SERVER: i64 = 202;
    pub const PROTOCOL: i64 = 203;
    pub const METHOD_UNKNOWN: i64 = 204;
}

// ---------------------------------------------------------------------------------------
// Compact formats.
// ---------------------------------------------------------------------------------------

/// A node as it appears in `nodes`/`nodes6`: id plus address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeInfo {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// Compact peer/address info: 6 bytes for IPv4, 18 for IPv6 (BEP 5, BEP 32).
pub fn encode_addr(addr: &SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Parses a 6- or 18-byte compact address.
pub fn decode_addr(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => {
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = u16::from_be_bytes([b[4], b[5]]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        18 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[..16]);
            let port = u16::from_be_bytes([b[16], b[17]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(o),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

fn encode_nodes(nodes: &[NodeInfo], v6: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(nodes.len() * if v6 { 38 } else { 26 });
    for n in nodes {
        if n.addr.is_ipv6() == v6 {
            out.extend_from_slice(n.id.as_bytes());
            encode_addr(&n.addr, &mut out);
        }
    }
    out
}

/// Parses concatenated compact node infos (26 bytes each for IPv4, 38 for IPv6). A trailing
/// partial entry is ignored rather than failing the whole message.
fn decode_nodes(b: &[u8], v6: bool) -> Vec<NodeInfo> {
    let size = if v6 { 38 } else { 26 };
    b.chunks_exact(size)
        .filter_map(|c| {
            let id = Id20::from_slice(&c[..20])?;
            let addr = decode_addr(&c[20..])?;
            Some(NodeInfo { id, addr })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Messages.
// ---------------------------------------------------------------------------------------

/// Address families a requester wants nodes for (BEP 32 `want`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Want {
    pub n4: bool,
    pub n6: bool,
}

/// A query method with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryKind {
    Ping,
    FindNode {
        target: Id20,
    },
    GetPeers {
        info_hash: Id20,
        /// BEP 33: prefer non-seeds in `values`.
        noseed: bool,
        /// BEP 33: ask for `BFsd`/`BFpe`.
        scrape: bool,
    },
    AnnouncePeer {
        info_hash: Id20,
        port: u16,
        /// BEP 5: use the UDP source port instead of `port`.
        implied_port: bool,
        token: Vec<u8>,
        /// BEP 33: the announcer is a seed.
        seed: bool,
    },
    /// BEP 51.
    SampleInfohashes {
        target: Id20,
    },
    /// A method we do not know. If it carries a `target` or `info_hash`, libtorrent-style
    /// forward compatibility says to answer it like `find_node`.
    Unknown {
        method: Vec<u8>,
        target: Option<Id20>,
    },
}

/// A query (`y` = `q`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub id: NodeId,
    pub kind: QueryKind,
    pub want: Want,
}

/// A response (`y` = `r`). Responses do not name their method, so every optional field of
/// every method lives here; the receiver knows which query it sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub id: NodeId,
    pub nodes: Vec<NodeInfo>,
    pub nodes6: Vec<NodeInfo>,
    pub values: Vec<SocketAddr>,
    pub token: Option<Vec<u8>>,
    /// BEP 33 seed bloom filter.
    pub bf_seeds: Option<Box<[u8; BLOOM_BYTES]>>,
    /// BEP 33 peer bloom filter.
    pub bf_peers: Option<Box<[u8; BLOOM_BYTES]>>,
    /// BEP 51.
    pub samples: Option<Vec<Id20>>,
    pub num: Option<i64>,
    pub interval: Option<i64>,
}

/// The body of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Query(Query),
    Response(Response),
    Error { code: i64, message: String },
}

/// A complete KRPC message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Transaction id, echoed by the responder.
    pub tid: Vec<u8>,
    /// Client version (`v`), free-form.
    pub version: Option<Vec<u8>>,
    /// BEP 43: the sender is read-only and must not be added to routing tables.
    pub read_only: bool,
    /// BEP 42: the requester's address as seen by the responder.
    pub ip: Option<SocketAddr>,
    pub body: Body,
}

/// Why a datagram could not be decoded as a KRPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad KRPC message: {reason}")]
pub struct DecodeError {
    pub reason: &'static str,
    /// The transaction id, when one could be read: lets the node send error 203.
    pub tid: Option<Vec<u8>>,
    /// True when the message was a query (`y` = `q`), i.e. it deserves an error reply.
    pub is_query: bool,
}

fn id_arg(a: &BTreeMap<Vec<u8>, Value>, key: &[u8]) -> Option<Id20> {
    a.get(key)
        .and_then(Value::as_bytes)
        .and_then(Id20::from_slice)
}

fn flag(a: &BTreeMap<Vec<u8>, Value>, key: &[u8]) -> bool {
    a.get(key).and_then(Value::as_int).is_some_and(|i| i != 0)
}

fn bloom(r: &BTreeMap<Vec<u8>, Value>, key: &[u8]) -> Option<Box<[u8; BLOOM_BYTES]>> {
    let b = r.get(key)?.as_bytes()?;
    let arr: [u8; BLOOM_BYTES] = b.try_into().ok()?;
    Some(Box::new(arr))
}

impl Message {
    /// Decodes one datagram.
    pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
        let err = |reason| DecodeError {
            reason,
            tid: None,
            is_query: false,
        };
        let (v, _) = Value::decode_prefix(buf, Limits::KRPC).map_err(|_| err("not bencode"))?;
        let d = v.as_dict().ok_or(err("not a dictionary"))?;
        let tid = d
            .get(&b"t"[..])
            .and_then(Value::as_bytes)
            .map(<[u8]>::to_vec);
        let y = d.get(&b"y"[..]).and_then(Value::as_bytes);
        let is_query = y == Some(b"q");
        let err = |reason| DecodeError {
            reason,
            tid: tid.clone(),
            is_query,
        };
        let t = match &tid {
            Some(t) if t.len() <= MAX_TID_LEN => t.clone(),
            Some(_) => return Err(err("transaction id too long")),
            None => return Err(err("missing transaction id")),
        };
        let version = d
            .get(&b"v"[..])
            .and_then(Value::as_bytes)
            .map(<[u8]>::to_vec);
        let read_only = flag(d, b"ro");
        let ip = d
            .get(&b"ip"[..])
            .and_then(Value::as_bytes)
            .and_then(decode_addr);
        let body = match y {
            Some(b"q") => Body::Query(Self::decode_query(d).map_err(err)?),
            Some(b"r") => Body::Response(Self::decode_response(d).map_err(err)?),
            Some(b"e") => {
                let l = match d.get(&b"e"[..]) {
                    Some(Value::List(l)) => l,
                    _ => return Err(err("error without list")),
                };
                let code = l
                    .first()
                    .and_then(Value::as_int)
                    .ok_or(err("error without code"))?;
                let message = l
                    .get(1)
                    .and_then(Value::as_bytes)
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(256)]).into_owned())
                    .unwrap_or_default();
                Body::Error { code, message }
            }
            _ => return Err(err("unknown message type")),
        };
        Ok(Message {
            tid: t,
            version,
            read_only,
            ip,
            body,
        })
    }

    fn decode_query(d: &BTreeMap<Vec<u8>, Value>) -> Result<Query, &'static str> {
        let method = d
            .get(&b"q"[..])
            .and_then(Value::as_bytes)
            .ok_or("missing method")?;
        let a = d
            .get(&b"a"[..])
            .and_then(Value::as_dict)
            .ok_or("missing arguments")?;
        let id = id_arg(a, b"id").ok_or("missing or bad id")?;
        let mut want = Want::default();
        if let Some(Value::List(l)) = a.get(&b"want"[..]) {
            for w in l {
                match w.as_bytes() {
                    Some(b"n4") => want.n4 = true,
                    Some(b"n6") => want.n6 = true,
                    _ => {}
                }
            }
        }
        let kind = match method {
            b"ping" => QueryKind::Ping,
            b"find_node" => QueryKind::FindNode {
                target: id_arg(a, b"target").ok_or("bad target")?,
            },
            b"get_peers" => QueryKind::GetPeers {
                info_hash: id_arg(a, b"info_hash").ok_or("bad info_hash")?,
                noseed: flag(a, b"noseed"),
                scrape: flag(a, b"scrape"),
            },
            b"announce_peer" => {
                let info_hash = id_arg(a, b"info_hash").ok_or("bad info_hash")?;
                let implied_port = flag(a, b"implied_port");
                let port = match a.get(&b"port"[..]).and_then(Value::as_int) {
                    Some(p) => u16::try_from(p).map_err(|_| "bad port")?,
                    // The port may be absent only when the source port is to be used.
                    None if implied_port => 0,
                    None => return Err("missing port"),
                };
                let token = a
                    .get(&b"token"[..])
                    .and_then(Value::as_bytes)
                    .filter(|t| t.len() <= 64)
                    .ok_or("bad token")?
                    .to_vec();
                QueryKind::AnnouncePeer {
                    info_hash,
                    port,
                    implied_port,
                    token,
                    seed: flag(a, b"seed"),
                }
            }
            b"sample_infohashes" => QueryKind::SampleInfohashes {
                target: id_arg(a, b"target").ok_or("bad target")?,
            },
            other => QueryKind::Unknown {
                method: other[..other.len().min(32)].to_vec(),
                target: id_arg(a, b"target").or_else(|| id_arg(a, b"info_hash")),
            },
        };
        Ok(Query { id, kind, want })
    }

    fn decode_response(d: &BTreeMap<Vec<u8>, Value>) -> Result<Response, &'static str> {
        let r = d
            .get(&b"r"[..])
            .and_then(Value::as_dict)
            .ok_or("missing response dict")?;
        let id = id_arg(r, b"id").ok_or("missing or bad id")?;
        let nodes = r
            .get(&b"nodes"[..])
            .and_then(Value::as_bytes)
            .map(|b| decode_nodes(b, false));
        let nodes6 = r
            .get(&b"nodes6"[..])
            .and_then(Value::as_bytes)
            .map(|b| decode_nodes(b, true));
        let values = match r.get(&b"values"[..]) {
            // Entries of the wrong size are skipped, not fatal: one bad entry should not
            // hide the good ones.
            Some(Value::List(l)) => l
                .iter()
                .filter_map(Value::as_bytes)
                .filter_map(decode_addr)
                .collect(),
            _ => Vec::new(),
        };
        let token = r
            .get(&b"token"[..])
            .and_then(Value::as_bytes)
            .filter(|t| t.len() <= 64)
            .map(<[u8]>::to_vec);
        let samples = r
            .get(&b"samples"[..])
            .and_then(Value::as_bytes)
            .map(|b| b.chunks_exact(20).filter_map(Id20::from_slice).collect());
        Ok(Response {
            id,
            nodes: nodes.unwrap_or_default(),
            nodes6: nodes6.unwrap_or_default(),
            values,
            token,
            bf_seeds: bloom(r, b"BFsd"),
            bf_peers: bloom(r, b"BFpe"),
            samples,
            num: r.get(&b"num"[..]).and_then(Value::as_int),
            interval: r.get(&b"interval"[..]).and_then(Value::as_int),
        })
    }

    /// Encodes the message as a bencoded dictionary.
    pub fn encode(&self) -> Vec<u8> {
        let mut d: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        let b = |s: &[u8]| Value::Bytes(s.to_vec());
        d.insert(b"t".to_vec(), Value::Bytes(self.tid.clone()));
        if let Some(v) = &self.version {
            d.insert(b"v".to_vec(), Value::Bytes(v.clone()));
        }
        if self.read_only {
            d.insert(b"ro".to_vec(), Value::Int(1));
        }
        if let Some(ip) = &self.ip {
            let mut o = Vec::new();
            encode_addr(ip, &mut o);
            d.insert(b"ip".to_vec(), Value::Bytes(o));
        }
        match &self.body {
            Body::Query(q) => {
                d.insert(b"y".to_vec(), b(b"q"));
                let mut a: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
                a.insert(b"id".to_vec(), b(q.id.as_bytes()));
                let method: &[u8] = match &q.kind {
                    QueryKind::Ping => b"ping",
                    QueryKind::FindNode { target } => {
                        a.insert(b"target".to_vec(), b(target.as_bytes()));
                        b"find_node"
                    }
                    QueryKind::GetPeers {
                        info_hash,
                        noseed,
                        scrape,
                    } => {
                        a.insert(b"info_hash".to_vec(), b(info_hash.as_bytes()));
                        if *noseed {
                            a.insert(b"noseed".to_vec(), Value::Int(1));
                        }
                        if *scrape {
                            a.insert(b"scrape".to_vec(), Value::Int(1));
                        }
                        b"get_peers"
                    }
                    QueryKind::AnnouncePeer {
                        info_hash,
                        port,
                        implied_port,
                        token,
                        seed,
                    } => {
                        a.insert(b"info_hash".to_vec(), b(info_hash.as_bytes()));
                        a.insert(b"port".to_vec(), Value::Int(i64::from(*port)));
                        if *implied_port {
                            a.insert(b"implied_port".to_vec(), Value::Int(1));
                        }
                        a.insert(b"token".to_vec(), Value::Bytes(token.clone()));
                        if *seed {
                            a.insert(b"seed".to_vec(), Value::Int(1));
                        }
                        b"announce_peer"
                    }
                    QueryKind::SampleInfohashes { target } => {
                        a.insert(b"target".to_vec(), b(target.as_bytes()));
                        b"sample_infohashes"
                    }
                    QueryKind::Unknown { method, target } => {
                        if let Some(t) = target {
                            a.insert(b"target".to_vec(), b(t.as_bytes()));
                        }
                        method
                    }
                };
                let mut want = Vec::new();
                if q.want.n4 {
                    want.push(b(b"n4"));
                }
                if q.want.n6 {
                    want.push(b(b"n6"));
                }
                if !want.is_empty() {
                    a.insert(b"want".to_vec(), Value::List(want));
                }
                d.insert(b"q".to_vec(), b(method));
                d.insert(b"a".to_vec(), Value::Dict(a));
            }
            Body::Response(r) => {
                d.insert(b"y".to_vec(), b(b"r"));
                let mut m: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
                m.insert(b"id".to_vec(), b(r.id.as_bytes()));
                if !r.nodes.is_empty() {
                    m.insert(
                        b"nodes".to_vec(),
                        Value::Bytes(encode_nodes(&r.nodes, false)),
                    );
                }
                if !r.nodes6.is_empty() {
                    m.insert(
                        b"nodes6".to_vec(),
                        Value::Bytes(encode_nodes(&r.nodes6, true)),
                    );
                }
                if !r.values.is_empty() {
                    let vals = r
                        .values
                        .iter()
                        .map(|a| {
                            let mut o = Vec::new();
                            encode_addr(a, &mut o);
                            Value::Bytes(o)
                        })
                        .collect();
                    m.insert(b"values".to_vec(), Value::List(vals));
                }
                if let Some(t) = &r.token {
                    m.insert(b"token".to_vec(), Value::Bytes(t.clone()));
                }
                if let Some(bf) = &r.bf_seeds {
                    m.insert(b"BFsd".to_vec(), b(&bf[..]));
                }
                if let Some(bf) = &r.bf_peers {
                    m.insert(b"BFpe".to_vec(), b(&bf[..]));
                }
                if let Some(s) = &r.samples {
                    let mut o = Vec::with_capacity(s.len() * 20);
                    for id in s {
                        o.extend_from_slice(id.as_bytes());
                    }
                    m.insert(b"samples".to_vec(), Value::Bytes(o));
                }
                if let Some(n) = r.num {
                    m.insert(b"num".to_vec(), Value::Int(n));
                }
                if let Some(i) = r.interval {
                    m.insert(b"interval".to_vec(), Value::Int(i));
                }
                d.insert(b"r".to_vec(), Value::Dict(m));
            }
            Body::Error { code, message } => {
                d.insert(b"y".to_vec(), b(b"e"));
                d.insert(
                    b"e".to_vec(),
                    Value::List(vec![
                        Value::Int(*code),
                        Value::Bytes(message.as_bytes().to_vec()),
                    ]),
                );
            }
        }
        Value::Dict(d).encode()
    }

    /// Builds an error reply for `tid`.
    pub fn error(tid: Vec<u8>, code: i64, message: &str) -> Message {
        Message {
            tid,
            version: None,
            read_only: false,
            ip: None,
            body: Body::Error {
                code,
                message: message.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(b: u8) -> Id20 {
        Id20([b; 20])
    }

    #[test]
    fn decodes_bep5_ping_example() {
        let m =
            Message::decode(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe").unwrap();
        assert_eq!(m.tid, b"aa");
        match m.body {
            Body::Query(q) => {
                assert_eq!(q.kind, QueryKind::Ping);
                assert_eq!(&q.id.0, b"abcdefghij0123456789");
            }
            _ => panic!("not a query"),
        }
        // Encoding the same message gives BEP 5's exact bytes (keys sorted).
        let again =
            Message::decode(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe").unwrap();
        assert_eq!(
            again.encode(),
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
        );
    }

    #[test]
    fn decodes_bep5_get_peers_response_with_values() {
        let raw = b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re";
        let m = Message::decode(raw).unwrap();
        let Body::Response(r) = m.body else { panic!() };
        assert_eq!(r.token.as_deref(), Some(&b"aoeusnth"[..]));
        assert_eq!(r.values.len(), 2);
        assert_eq!(r.values[0], "97.120.106.101:11893".parse().unwrap());
    }

    #[test]
    fn error_message() {
        let m = Message::decode(b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee").unwrap();
        assert_eq!(
            m.body,
            Body::Error {
                code: 201,
                message: "A Generic Error Ocurred".into()
            }
        );
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn malformed_query_keeps_tid_for_error_203() {
        // find_node without a target.
        let e = Message::decode(b"d1:ad2:id20:abcdefghij0123456789e1:q9:find_node1:t2:xy1:y1:qe")
            .unwrap_err();
        assert!(e.is_query);
        assert_eq!(e.tid.as_deref(), Some(&b"xy"[..]));
        // Short id.
        let e = Message::decode(b"d1:ad2:id3:abce1:q4:ping1:t2:xy1:y1:qe").unwrap_err();
        assert!(e.is_query);
        // A response with garbage is not a query: no reply is owed.
        let e = Message::decode(b"d1:rd2:id3:abce1:t2:xy1:y1:re").unwrap_err();
        assert!(!e.is_query);
    }

    #[test]
    fn announce_implied_port_and_unknown_keys() {
        let q = Message {
            tid: b"t1".to_vec(),
            version: Some(b"MF01".to_vec()),
            read_only: true,
            ip: None,
            body: Body::Query(Query {
                id: id(1),
                kind: QueryKind::AnnouncePeer {
                    info_hash: id(2),
                    port: 0,
                    implied_port: true,
                    token: b"tok".to_vec(),
                    seed: true,
                },
                want: Want { n4: true, n6: true },
            }),
        };
        let enc = q.encode();
        assert_eq!(Message::decode(&enc).unwrap(), q);
        // Insert an unknown key into the top-level dict: still decodes the same.
        let mut with_extra = b"d3:zzzi5e".to_vec();
        with_extra.extend_from_slice(&enc[1..]);
        // keys are then out of order; we tolerate that.
        assert_eq!(Message::decode(&with_extra).unwrap(), q);
    }

    #[test]
    fn compact_nodes_v4_and_v6_and_partial_entries() {
        let r = Response {
            id: id(9),
            nodes: vec![NodeInfo {
                id: id(3),
                addr: "1.2.3.4:5".parse().unwrap(),
            }],
            nodes6: vec![NodeInfo {
                id: id(4),
                addr: "[2001:db8::1]:6881".parse().unwrap(),
            }],
            ..Default::default()
        };
        assert_eq!(encode_nodes(&r.nodes, false).len(), 26);
        assert_eq!(encode_nodes(&r.nodes6, true).len(), 38);
        let m = Message {
            tid: vec![0, 1],
            version: None,
            read_only: false,
            ip: None,
            body: Body::Response(r.clone()),
        };
        assert_eq!(
            Message::decode(&m.encode()).unwrap().body,
            Body::Response(r)
        );
        // 26 + 5 bytes: the partial trailing entry is dropped.
        let mut b = encode_nodes(
            &[NodeInfo {
                id: id(3),
                addr: "1.2.3.4:5".parse().unwrap(),
            }],
            false,
        );
        b.extend_from_slice(&[1, 2, 3, 4, 5]);
        assert_eq!(decode_nodes(&b, false).len(), 1);
    }

    #[test]
    fn bep42_ip_field() {
        let m = Message {
            tid: vec![7],
            version: None,
            read_only: false,
            ip: Some("9.8.7.6:4321".parse().unwrap()),
            body: Body::Response(Response {
                id: id(1),
                ..Default::default()
            }),
        };
        let d = Message::decode(&m.encode()).unwrap();
        assert_eq!(d.ip, m.ip);
    }

    #[test]
    fn rejects_huge_claimed_lengths_and_deep_nesting() {
        let krpc = |b: &[u8]| Value::decode_prefix(b, Limits::KRPC);
        assert!(krpc(b"99999999999:abc").is_err());
        assert!(krpc(b"18446744073709551616:abc").is_err());
        let deep = "l".repeat(100) + &"e".repeat(100);
        assert!(matches!(
            krpc(deep.as_bytes()),
            Err(crate::bencode::BencodeError::TooDeep(_))
        ));
        assert!(krpc(b"i-e").is_err());
        assert!(krpc(b"ie").is_err());
        assert!(krpc(b"di1ei2ee").is_err());
        // The same through the message decoder.
        assert!(Message::decode(deep.as_bytes()).is_err());
        assert!(Message::decode(b"d1:t99999999999:abc").is_err());
    }

    #[test]
    fn accepts_unsorted_keys_sloppy_ints_and_trailing_bytes() {
        // What real clients send and this codec has always accepted: keys out of order, a
        // non-canonical integer, bytes after the message.
        let mut b = b"d1:y1:q1:t2:aa1:q13:announce_peer1:ad4:porti06881e2:id20:".to_vec();
        b.extend_from_slice(&[7u8; 20]);
        b.extend_from_slice(b"9:info_hash20:");
        b.extend_from_slice(&[9u8; 20]);
        b.extend_from_slice(b"5:token2:tk12:implied_porti-0eeejunk");
        let m = Message::decode(&b).unwrap();
        assert_eq!(m.tid, b"aa");
        match m.body {
            Body::Query(Query {
                kind:
                    QueryKind::AnnouncePeer {
                        port, implied_port, ..
                    },
                ..
            }) => assert_eq!((port, implied_port), (6881, false)),
            other => panic!("{other:?}"),
        }
    }

    fn arb_id() -> impl Strategy<Value = Id20> {
        any::<[u8; 20]>().prop_map(Id20)
    }

    fn arb_addr(v6: bool) -> BoxedStrategy<SocketAddr> {
        if v6 {
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), p, 0, 0)))
                .boxed()
        } else {
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::from((ip, p)))
                .boxed()
        }
    }

    fn arb_query() -> impl Strategy<Value = Query> {
        let kind = prop_oneof![
            Just(QueryKind::Ping),
            arb_id().prop_map(|target| QueryKind::FindNode { target }),
            (arb_id(), any::<bool>(), any::<bool>()).prop_map(|(info_hash, noseed, scrape)| {
                QueryKind::GetPeers {
                    info_hash,
                    noseed,
                    scrape,
                }
            }),
            (
                arb_id(),
                any::<u16>(),
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..20),
                any::<bool>()
            )
                .prop_map(|(info_hash, port, implied_port, token, seed)| {
                    QueryKind::AnnouncePeer {
                        info_hash,
                        port,
                        implied_port,
                        token,
                        seed,
                    }
                }),
            arb_id().prop_map(|target| QueryKind::SampleInfohashes { target }),
        ];
        (arb_id(), kind, any::<bool>(), any::<bool>()).prop_map(|(id, kind, n4, n6)| Query {
            id,
            kind,
            want: Want { n4, n6 },
        })
    }

    fn arb_response() -> impl Strategy<Value = Response> {
        (
            arb_id(),
            proptest::collection::vec((arb_id(), arb_addr(false)), 0..8),
            proptest::collection::vec((arb_id(), arb_addr(true)), 0..8),
            proptest::collection::vec(prop_oneof![arb_addr(false), arb_addr(true)], 0..10),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            any::<bool>(),
            proptest::option::of(proptest::collection::vec(arb_id(), 0..5)),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(id, n4, n6, values, token, bf, samples, num)| Response {
                id,
                nodes: n4
                    .into_iter()
                    .map(|(id, addr)| NodeInfo { id, addr })
                    .collect(),
                nodes6: n6
                    .into_iter()
                    .map(|(id, addr)| NodeInfo { id, addr })
                    .collect(),
                values,
                token,
                bf_seeds: bf.then(|| Box::new([0xA5; BLOOM_BYTES])),
                bf_peers: bf.then(|| Box::new([0x5A; BLOOM_BYTES])),
                samples,
                num,
                interval: num.map(|n| n / 2),
            })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let body = prop_oneof![
            arb_query().prop_map(Body::Query),
            arb_response().prop_map(Body::Response),
            (any::<i64>(), "[a-zA-Z ]{0,30}")
                .prop_map(|(code, message)| Body::Error { code, message }),
        ];
        (
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 4)),
            any::<bool>(),
            proptest::option::of(prop_oneof![arb_addr(false), arb_addr(true)]),
            body,
        )
            .prop_map(|(tid, version, read_only, ip, body)| Message {
                tid,
                version,
                read_only,
                ip,
                body,
            })
    }

    proptest! {
        #[test]
        fn round_trip(m in arb_message()) {
            let enc = m.encode();
            prop_assert_eq!(Message::decode(&enc).unwrap(), m);
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Message::decode(&b);
        }

        #[test]
        fn mutated_messages_never_panic(m in arb_message(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
            let mut enc = m.encode();
            for (i, x) in flips {
                let n = enc.len();
                enc[i % n] = x;
            }
            let cut = cut % (enc.len() + 1);
            let _ = Message::decode(&enc[..cut]);
            let _ = Message::decode(&enc);
        }
    }
}
