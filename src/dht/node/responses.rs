//! Answers to our queries (BEP 5): matched to their transaction by id and source address,
//! fed to the routing table (BEP 42 id checks, BEP 43 read-only nodes kept out) and to the
//! lookup that asked; errors and timeouts count against the node.

use std::net::SocketAddr;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::dht::krpc::{NodeInfo, Response};

use super::state::{fi, NodeState, Purpose, Waiter};

impl NodeState {
    pub(super) fn on_error(&mut self, tid: &[u8], from: SocketAddr) {
        let Some(t) = self.take_txn(tid, from) else {
            return;
        };
        self.txn_failed(t.purpose, from);
    }

    /// A query got an error reply or timed out.
    pub(super) fn txn_failed(&mut self, purpose: Purpose, addr: SocketAddr) {
        match purpose {
            Purpose::Lookup(l) => {
                if let Some(rl) = self.lookups.get_mut(&l) {
                    if let Some(part) = rl.part_mut(addr.is_ipv6()) {
                        part.on_failure(addr);
                    }
                    rl.dirty = true;
                }
            }
            Purpose::Announce(l) => {
                if let Some(rl) = self.lookups.get_mut(&l) {
                    rl.dirty = true;
                }
                if let Some((outstanding, _)) = self
                    .lookups
                    .get_mut(&l)
                    .and_then(|rl| rl.announcing.as_mut())
                {
                    *outstanding = outstanding.saturating_sub(1);
                }
            }
            Purpose::Ping => {}
        }
    }

    pub(super) fn on_response(
        &mut self,
        tid: &[u8],
        ip: Option<SocketAddr>,
        r: Response,
        from: SocketAddr,
        now: Instant,
    ) {
        let Some(t) = self.take_txn(tid, from) else {
            return;
        };
        self.stats.responses += 1;
        if let Some(ip) = ip {
            self.vote_external(ip, from.ip(), now);
        }
        if r.id != self.id {
            if let Some(table) = self.table_mut(from.is_ipv6()) {
                table.heard_response(r.id, from, now);
            }
        }
        if let Purpose::Announce(l) = t.purpose {
            if let Some(rl) = self.lookups.get_mut(&l) {
                rl.dirty = true;
            }
            if let Some((outstanding, acked)) = self
                .lookups
                .get_mut(&l)
                .and_then(|rl| rl.announcing.as_mut())
            {
                *outstanding = outstanding.saturating_sub(1);
                *acked += 1;
            }
            return;
        }
        let Purpose::Lookup(lid) = t.purpose else {
            return;
        };
        let from_v6 = from.is_ipv6();
        // BEP 32: `nodes` feed the IPv4 lookup, `nodes6` the IPv6 one, whichever family
        // the answer came in on; a family we do not run (or whose lookup this is not part
        // of) ignores them. Nodes named by the other family only enter its table once
        // they answer a query of their own family.
        let usable = |v6: bool, list: &[NodeInfo]| -> Vec<NodeInfo> {
            let Some(table) = self.table(v6) else {
                return Vec::new();
            };
            let own = self.locals[fi(v6)];
            list.iter()
                .filter(|n| n.id != self.id && Some(n.addr) != own && table.addr_ok(&n.addr))
                .copied()
                .collect()
        };
        let (nodes, nodes6) = (usable(false, &r.nodes), usable(true, &r.nodes6));
        let (same, other) = if from_v6 {
            (nodes6, nodes)
        } else {
            (nodes, nodes6)
        };
        let values: Vec<SocketAddr> = r
            .values
            .iter()
            .filter(|a| a.port() != 0 && !a.ip().is_unspecified())
            .copied()
            .collect();
        let Some(rl) = self.lookups.get_mut(&lid) else {
            return;
        };
        rl.dirty = true;
        let Some(part) = rl.part_mut(from_v6) else {
            return;
        };
        let new_peers = part.on_response(from, r.id, &same, r.token, &values, now);
        if !other.is_empty() {
            if let Some(o) = rl.part_mut(!from_v6) {
                o.add_nodes(&other, 1);
            }
        }
        if let Waiter::Peers { peers, .. } = &mut rl.waiter {
            if let Some(tx) = peers {
                for p in new_peers {
                    match tx.try_send(p) {
                        Ok(()) => {}
                        // Bounded: a slow consumer loses peers rather than growing memory.
                        Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            *peers = None;
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::krpc::{Body, Message, Response};
    use crate::dht::node::*;
    use crate::id::Id20;
    use tokio::time::Instant;

    #[test]
    fn response_from_wrong_address_is_ignored() {
        let cfg = DhtConfig {
            seed: Some(5),
            bootstrap: vec!["127.0.0.9:1".parse().unwrap()],
            ..Default::default()
        };
        let mut st = NodeState::new(cfg, "127.0.0.1:6881".parse().unwrap(), None, Instant::now());
        let now = Instant::now();
        st.tick(now);
        let (b, _) = st.outbox.pop().unwrap();
        let q = Message::decode(&b).unwrap();
        let resp = Message {
            tid: q.tid.clone(),
            version: None,
            read_only: false,
            ip: None,
            body: Body::Response(Response {
                id: Id20([3; 20]),
                ..Default::default()
            }),
        }
        .encode();
        st.packet(&resp, "127.0.0.8:1".parse().unwrap(), now);
        assert_eq!(st.stats().table_size, 0);
        st.packet(&resp, "127.0.0.9:1".parse().unwrap(), now);
        assert_eq!(st.stats().table_size, 1);
        assert_eq!(st.stats.responses, 1);
    }
}
