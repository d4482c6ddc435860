//! Helpers shared by the node's unit tests: states, hand-made queries, replies.

use std::net::SocketAddr;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::dht::krpc::{Body, Message, Query, QueryKind, Response, Want};
use crate::id::NodeId;

use super::state::NodeState;
use super::*;

pub(super) fn state(addr: &str, seed: u64) -> NodeState {
    let cfg = DhtConfig {
        seed: Some(seed),
        ..Default::default()
    };
    NodeState::new(cfg, addr.parse().unwrap(), None, Instant::now())
}

pub(super) fn query(id: NodeId, kind: QueryKind) -> Vec<u8> {
    Message {
        tid: b"qq".to_vec(),
        version: None,
        read_only: false,
        ip: None,
        body: Body::Query(Query {
            id,
            kind,
            want: Want::default(),
        }),
    }
    .encode()
}

pub(super) fn reply(st: &mut NodeState) -> Message {
    let (b, _) = st.outbox.pop().expect("a reply");
    Message::decode(&b).unwrap()
}

pub(super) fn query_want(id: NodeId, kind: QueryKind, want: Want) -> Vec<u8> {
    Message {
        tid: b"qq".to_vec(),
        version: None,
        read_only: false,
        ip: None,
        body: Body::Query(Query { id, kind, want }),
    }
    .encode()
}

pub(super) fn dual(v4: &str, v6: &str, cfg: DhtConfig) -> NodeState {
    let locals = [v4.parse().unwrap(), v6.parse().unwrap()];
    NodeState::new_multi(cfg, &locals, None, Instant::now())
}

pub(super) fn response(m: Message) -> Response {
    match m.body {
        Body::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

pub(super) const BOTH: Want = Want { n4: true, n6: true };

pub(super) fn loopback_cfg(seed: u64, bootstrap: Vec<SocketAddr>) -> DhtConfig {
    DhtConfig {
        seed: Some(seed),
        bootstrap,
        ..Default::default()
    }
}

pub(super) async fn drain(mut rx: mpsc::Receiver<SocketAddr>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    while let Some(p) = rx.recv().await {
        out.push(p);
    }
    out
}
