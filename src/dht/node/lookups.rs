//! Running lookups (BEP 5 iterative `find_node`/`get_peers`, announces with `announce_peer`):
//! each lookup runs one [`Lookup`] state machine per address family (BEP 32), asks for both
//! families' nodes (`want`) while a table is thin, streams peers to its caller and, for an
//! announce, sends `announce_peer` with the tokens it collected to the closest nodes.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use tokio::time::Instant;

use crate::dht::krpc::{NodeInfo, QueryKind, Want};
use crate::dht::lookup::{Lookup, LookupKind};
use crate::id::Id20;

use super::state::{fi, NodeState, Purpose, Waiter};
use super::*;

pub(super) struct RunningLookup {
    pub(super) target: Id20,
    pub(super) kind: LookupKind,
    /// One lookup per address family it runs in (index [`fi`]): both when dual-stack.
    pub(super) parts: [Option<Lookup>; 2],
    pub(super) waiter: Waiter,
    pub(super) announce: Option<(Option<u16>, bool)>,
    pub(super) bootstrap: bool,
    pub(super) started: Instant,
    /// Set once the lookup is done and announcing: (announces outstanding, acknowledged).
    pub(super) announcing: Option<(usize, usize)>,
    /// Something happened since the last drive (saves re-scanning idle lookups).
    pub(super) dirty: bool,
}

impl RunningLookup {
    pub(super) fn part_mut(&mut self, v6: bool) -> Option<&mut Lookup> {
        self.parts[fi(v6)].as_mut()
    }

    pub(super) fn parts(&self) -> impl Iterator<Item = &Lookup> {
        self.parts.iter().flatten()
    }

    pub(super) fn both(&self) -> bool {
        self.parts.iter().all(Option::is_some)
    }

    /// Done when every family's lookup is (a part may be revived by nodes the other
    /// family's answers name, so this is checked again after each event).
    pub(super) fn is_done(&self) -> bool {
        self.parts().all(Lookup::is_done)
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.parts().filter_map(Lookup::next_deadline).min()
    }
}

impl NodeState {
    /// Starts a lookup in every bound family (`only` None) or in one (`only` = Some(v6):
    /// bucket refreshes, which concern one table).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_lookup(
        &mut self,
        target: Id20,
        kind: LookupKind,
        waiter: Waiter,
        announce: Option<(Option<u16>, bool)>,
        bootstrap: bool,
        only: Option<bool>,
        now: Instant,
    ) {
        if self.lookups.len() >= self.cfg.max_lookups {
            // Bounded: refuse rather than grow without limit; dropping the waiter closes
            // the caller's channels, so it sees an empty result.
            drop(waiter);
            return;
        }
        let k = self.cfg.lookup.k;
        let mut parts = [None, None];
        for v6 in self.families() {
            if only.is_some_and(|o| o != v6) {
                continue;
            }
            let Some(table) = self.table(v6) else {
                continue;
            };
            let mut known: Vec<NodeInfo> = table
                .closest(&target, k * 2, now)
                .into_iter()
                .map(|e| NodeInfo {
                    id: e.id,
                    addr: e.addr,
                })
                .collect();
            known.extend(
                self.saved_nodes
                    .iter()
                    .filter(|n| n.addr.is_ipv6() == v6)
                    .copied(),
            );
            // Bootstrap routers are asked too while our table is thin, and when we know
            // nobody in the target's bucket (no known node shares more prefix bits with the
            // target than we do). Without the latter, a group of nodes whose far buckets
            // happen to be empty (all 5,000 nodes of a simulation joining at once) answer
            // every query about the other half of the id space with each other, forever: a
            // lookup started there ends in that group, and so do its refreshes. Found by
            // tests/dht_sim.rs.
            let ours = target.distance(&self.id).leading_zeros();
            let blind = ours < 160
                && !known
                    .iter()
                    .any(|n| target.distance(&n.id).leading_zeros() > ours);
            let unknown: Vec<SocketAddr> = if table.len() < k || bootstrap || blind {
                self.cfg
                    .bootstrap
                    .iter()
                    .filter(|a| a.is_ipv6() == v6)
                    .copied()
                    .collect()
            } else {
                Vec::new()
            };
            parts[fi(v6)] = Some(Lookup::new(
                target,
                kind,
                self.cfg.lookup.clone(),
                known,
                unknown,
            ));
        }
        if parts.iter().all(Option::is_none) {
            return;
        }
        let id = self.next_lookup;
        self.next_lookup += 1;
        self.lookups.insert(
            id,
            RunningLookup {
                target,
                kind,
                parts,
                waiter,
                announce,
                bootstrap,
                started: now,
                announcing: None,
                dirty: true,
            },
        );
    }

    /// BEP 32 `want` for a query of a lookup running in both families: both while the
    /// other family's table is thin or we bootstrap (its answers then feed the other
    /// family's lookup), else nothing (the default: the queried family's nodes).
    pub(super) fn want_for(&self, v6: bool, both: bool, bootstrap: bool) -> Want {
        let thin = self.table(!v6).is_none_or(|t| t.len() < WANT_BOTH_BELOW);
        if both && (bootstrap || thin) {
            Want { n4: true, n6: true }
        } else {
            Want::default()
        }
    }

    pub(super) fn drive_lookups(&mut self, now: Instant) {
        let ids: Vec<u64> = self.lookups.keys().copied().collect();
        for lid in ids {
            let Some(rl) = self.lookups.get_mut(&lid) else {
                continue;
            };
            if !rl.dirty && rl.next_deadline().is_none_or(|d| d > now) {
                continue;
            }
            rl.dirty = false;
            if let Some((outstanding, _)) = rl.announcing {
                // Finished once every announce was answered or timed out, so that callers
                // who see the end of the lookup can rely on the peer being stored.
                if outstanding == 0 {
                    if let Some(rl) = self.lookups.remove(&lid) {
                        self.finish_lookup(rl, now);
                    }
                }
                continue;
            }
            let (target, kind, both, bootstrap) = (rl.target, rl.kind, rl.both(), rl.bootstrap);
            let mut queries = Vec::new();
            for part in rl.parts.iter_mut().flatten() {
                queries.extend(part.next_queries(now));
            }
            for (expect, addr) in queries {
                let q = match kind {
                    LookupKind::FindNode => QueryKind::FindNode { target },
                    LookupKind::GetPeers => QueryKind::GetPeers {
                        info_hash: target,
                        noseed: false,
                        scrape: false,
                    },
                };
                let want = self.want_for(addr.is_ipv6(), both, bootstrap);
                self.send_query(addr, expect, q, want, Purpose::Lookup(lid), now);
            }
            let done = self.lookups.get(&lid).is_some_and(RunningLookup::is_done);
            let wants_announce = self
                .lookups
                .get(&lid)
                .is_some_and(|rl| rl.announce.is_some());
            if done && wants_announce && self.start_announce(lid, now) > 0 {
                continue;
            }
            if done {
                if let Some(rl) = self.lookups.remove(&lid) {
                    self.finish_lookup(rl, now);
                }
            }
        }
    }

    /// Sends `announce_peer` to the k closest nodes that gave a token, in each family the
    /// lookup ran in (BEP 32: an announce over IPv6 announces our IPv6 address); returns
    /// how many.
    pub(super) fn start_announce(&mut self, lid: u64, now: Instant) -> usize {
        let Some(rl) = self.lookups.get(&lid) else {
            return 0;
        };
        let mut sent = 0;
        let target = rl.target;
        let targets: Vec<(NodeInfo, Vec<u8>)> =
            rl.parts().flat_map(Lookup::announce_targets).collect();
        if let Some((port, seed)) = rl.announce {
            for (n, token) in targets {
                let own_port =
                    self.locals[fi(n.addr.is_ipv6())].map_or(self.local.port(), |a| a.port());
                let kind = QueryKind::AnnouncePeer {
                    info_hash: target,
                    port: port.unwrap_or(own_port),
                    implied_port: port.is_none(),
                    token,
                    seed,
                };
                self.send_query(
                    n.addr,
                    Some(n.id),
                    kind,
                    Want::default(),
                    Purpose::Announce(lid),
                    now,
                );
                sent += 1;
            }
        }
        if let Some(rl) = self.lookups.get_mut(&lid) {
            rl.announcing = Some((sent, 0));
        }
        sent
    }

    pub(super) fn finish_lookup(&mut self, rl: RunningLookup, now: Instant) {
        let mut s = crate::dht::lookup::LookupStats::default();
        let mut visited = 0;
        let mut peers = BTreeSet::new();
        for part in rl.parts() {
            let ps = part.finish_stats();
            s.queries_sent += ps.queries_sent;
            s.responses += ps.responses;
            s.timeouts += ps.timeouts;
            s.rounds = s.rounds.max(ps.rounds);
            visited += part.nodes_visited();
            peers.extend(part.peers().iter().copied());
        }
        self.stats.nodes_visited += visited as u64;
        self.stats.lookups_done += 1;
        let announced_to = rl.announcing.map_or(0, |(_, acked)| acked);
        let summary = LookupSummary {
            peers: peers.len(),
            queries_sent: s.queries_sent,
            responses: s.responses,
            timeouts: s.timeouts,
            nodes_visited: visited,
            rounds: s.rounds,
            announced_to,
            duration: now.saturating_duration_since(rl.started),
        };
        let closest: Vec<NodeInfo> = match rl.waiter {
            // IPv4 nodes first, then IPv6 (each closest first).
            Waiter::Nodes(_) => rl.parts().flat_map(Lookup::closest_responded).collect(),
            _ => Vec::new(),
        };
        match rl.waiter {
            Waiter::Peers { done, .. } => {
                if let Some(d) = done {
                    let _ = d.send(summary);
                }
            }
            Waiter::Nodes(tx) => {
                if let Some(tx) = tx {
                    let _ = tx.send(closest);
                }
            }
            Waiter::Internal => {}
        }
        if rl.bootstrap && !self.bootstrapped {
            self.finish_bootstrap(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::krpc::{Body, Message, NodeInfo, Response};
    use crate::dht::node::test_util::*;
    use crate::id::Id20;
    use std::net::SocketAddr;
    use tokio::sync::oneshot;
    use tokio::time::Instant;

    /// A dual-stack node bootstrapping from an IPv4 router asks it for both families
    /// (`want`); the IPv6 nodes in the answer are queried over IPv6 and enter only the IPv6
    /// table once they answer.
    #[test]
    fn dual_stack_lookup_fills_the_ipv6_table_through_ipv4_answers() {
        let router: SocketAddr = "127.0.0.9:1".parse().unwrap();
        let mut st = dual(
            "127.0.0.1:6881",
            "[::1]:6881",
            DhtConfig {
                seed: Some(11),
                bootstrap: vec![router],
                ..Default::default()
            },
        );
        let now = Instant::now();
        st.tick(now);
        let sent: Vec<(Vec<u8>, SocketAddr)> = st.outbox.drain(..).collect();
        assert_eq!(sent.len(), 1, "one bootstrap query: {sent:?}");
        let q = Message::decode(&sent[0].0).unwrap();
        let Body::Query(query) = &q.body else {
            panic!()
        };
        assert_eq!(query.want, BOTH, "bootstrap asks for both families");
        let v6node = NodeInfo {
            id: Id20([0x77; 20]),
            addr: "[fd00::77]:6881".parse().unwrap(),
        };
        let resp = Message {
            tid: q.tid.clone(),
            version: None,
            read_only: false,
            ip: None,
            body: Body::Response(Response {
                id: Id20([0x55; 20]),
                nodes6: vec![v6node],
                ..Default::default()
            }),
        };
        st.packet(&resp.encode(), router, now);
        st.tick(now);
        let out: Vec<(Vec<u8>, SocketAddr)> = st.outbox.drain(..).collect();
        let (b, _) = out
            .iter()
            .find(|(_, to)| *to == v6node.addr)
            .expect("the IPv6 node named over IPv4 is queried over IPv6");
        let s = st.stats();
        assert_eq!(
            (s.table_v4, s.table_v6),
            (1, 0),
            "not in a table before it answers"
        );
        let q6 = Message::decode(b).unwrap();
        let resp6 = Message {
            tid: q6.tid,
            version: None,
            read_only: false,
            ip: None,
            body: Body::Response(Response {
                id: v6node.id,
                ..Default::default()
            }),
        };
        st.packet(&resp6.encode(), v6node.addr, now);
        let s = st.stats();
        assert_eq!((s.table_v4, s.table_v6), (1, 1));
        assert_eq!(
            st.table(true).unwrap().get(&v6node.id).unwrap().addr,
            v6node.addr
        );
    }

    /// A lookup for a target in a bucket where we know nobody also asks the bootstrap
    /// routers, even with a full table; one where we know a closer node does not.
    #[test]
    fn lookup_into_an_empty_bucket_also_asks_the_bootstrap_routers() {
        let router: SocketAddr = "10.9.9.9:6881".parse().unwrap();
        let cfg = DhtConfig {
            seed: Some(5),
            node_id: Some(Id20([0; 20])),
            bootstrap: vec![router],
            ..Default::default()
        };
        let now = Instant::now();
        let mut st = NodeState::new(cfg, "10.0.0.1:6881".parse().unwrap(), None, now);
        // 20 nodes, all in our half of the id space (first bit 0).
        for i in 0..20u8 {
            let mut id = Id20([0; 20]);
            id.0[0] = 1 + i;
            let addr = SocketAddr::from(([10, 0, 1, 1 + i], 6881));
            st.table_mut(false).unwrap().heard_response(id, addr, now);
        }
        assert!(st.stats().table_size >= 8);
        let sent_to = |st: &mut NodeState, target: Id20| {
            let (tx, _rx) = oneshot::channel();
            st.command(Cmd::FindNode { target, done: tx }, now);
            st.drive_lookups(now);
            let to: Vec<SocketAddr> = st.outbox.drain(..).map(|(_, a)| a).collect();
            st.lookups.clear();
            st.txns.clear();
            to
        };
        // Far half: nobody known there.
        assert!(sent_to(&mut st, Id20([0xf0; 20])).contains(&router));
        // Our half: known nodes share more prefix with the target than we do.
        let mut near = Id20([0; 20]);
        near.0[0] = 3;
        assert!(!sent_to(&mut st, near).contains(&router));
    }
}
