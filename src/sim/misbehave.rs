//! Misbehaving peers for simulations: what honest sessions must survive.
//!
//! - *bad metadata*: a seeder whose info dictionary is forged but announced (BEP 5) and
//!   handshaken (BEP 3) under the real info-hash; a leecher must reject the metadata because
//!   its SHA-1 does not match (BEP 9) and fetch it from someone else;
//! - *DHT liars*: KRPC responders (BEP 5) that answer `get_peers` with made-up peers and
//!   `find_node` with each other, and store nothing;
//! - *silent peers*: announced addresses that accept connections and never say a word.
//!
//! Corrupt-data peers need no code here: they are seeders of another content seed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{make_metainfo, Scenario, SimError, PORT};
use crate::dht::krpc::{Body, Message, NodeInfo, Query, QueryKind, Response, Want};
use crate::id::{Id20, InfoHash};
use crate::metainfo::Metainfo;
use crate::net::{Listener, UdpSocket};

/// Connections a silent peer holds open at once (oldest dropped beyond this).
const SILENT_MAX_HELD: usize = 256;

/// The torrent's metainfo with another name (so another info dictionary) but wearing the
/// real info-hash.
pub(super) fn forged_metainfo(sc: &Scenario, ih: InfoHash) -> Result<Arc<Metainfo>, SimError> {
    let real = make_metainfo(sc)?;
    let mut info = real.info.clone();
    info.name = "forged.bin".to_string();
    let mut m = Metainfo::from_info(info);
    m.info_hash = ih;
    Ok(Arc::new(m))
}

/// Accepts connections and holds them without reading or writing.
pub(super) async fn silent_peer(listener: Listener) {
    let mut held = std::collections::VecDeque::new();
    while let Ok((s, _)) = listener.accept().await {
        if held.len() >= SILENT_MAX_HELD {
            held.pop_front();
        }
        held.push_back(s);
    }
}

/// A lying DHT node. It pings the bootstrap nodes (so they add it to their tables and
/// hand it out), then answers every query: `get_peers` with 8 peers that do not exist (in
/// 127.255.0.0/16, which no simulated host uses) plus a token, `find_node` with the other
/// liars, and `announce_peer` with an acknowledgement it does not act on.
pub(super) async fn dht_liar(
    sock: UdpSocket,
    bootstrap: Vec<SocketAddr>,
    liars: Vec<IpAddr>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut id = [0u8; 20];
    rng.fill(&mut id[..]);
    let id = Id20::new(id);
    let others: Vec<NodeInfo> = liars
        .iter()
        .map(|ip| {
            let mut b = [0u8; 20];
            if let IpAddr::V4(v4) = ip {
                b[..4].copy_from_slice(&v4.octets());
            }
            b[4..12].copy_from_slice(&seed.to_be_bytes());
            NodeInfo {
                id: Id20::new(b),
                addr: SocketAddr::new(*ip, PORT),
            }
        })
        .take(8)
        .collect();
    for (i, b) in bootstrap.iter().enumerate() {
        let q = Message {
            tid: vec![b'l', i as u8],
            version: None,
            read_only: false,
            ip: None,
            body: Body::Query(Query {
                id,
                kind: QueryKind::FindNode { target: id },
                want: Want::default(),
            }),
        };
        let _ = sock.send_to(&q.encode(), *b).await;
    }
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            // Closed: the simulation is over.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        };
        let Some(data) = buf.get(..n) else { continue };
        let Ok(m) = Message::decode(data) else {
            continue;
        };
        let Body::Query(q) = m.body else { continue };
        let mut r = Response {
            id,
            ..Response::default()
        };
        match q.kind {
            QueryKind::GetPeers { .. } => {
                r.token = Some(vec![rng.random(), rng.random()]);
                r.values = (0..8)
                    .map(|_| {
                        let ip = Ipv4Addr::new(127, 255, rng.random(), rng.random());
                        SocketAddr::new(IpAddr::V4(ip), PORT)
                    })
                    .collect();
                r.nodes = others.clone();
            }
            QueryKind::FindNode { .. } => r.nodes = others.clone(),
            _ => {}
        }
        let reply = Message {
            tid: m.tid,
            version: None,
            read_only: false,
            ip: None,
            body: Body::Response(r),
        };
        let _ = sock.send_to(&reply.encode(), from).await;
    }
}
