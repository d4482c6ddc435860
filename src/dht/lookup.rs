//! Iterative Kademlia lookup (`find_node` / `get_peers`, BEP 5) as a pure state machine.
//!
//! Candidates are kept sorted by XOR distance to the target. Queries go to the closest
//! not-yet-queried candidates with an adaptive parallelism α (3 to 8: it grows while answers
//! come back fast and shrinks on slow answers and timeouts). A query that has not been
//! answered after a short *slow* threshold stops counting against α and stops occupying a
//! place among the k closest, so another query is launched and one dead node never stalls
//! the lookup; after the full timeout it is marked failed. The lookup ends when the k closest
//! live candidates have all answered and no fast query is outstanding.
//!
//! `get_peers` lookups collect peers (streamed to the caller as they arrive: `on_response`
//! returns the new ones) and tokens, so that `announce_peer` can then go to the k closest
//! nodes that gave a token.
//!
//! Pure: the caller sends the queries `next_queries` returns, feeds answers and time in, and
//! wakes up at `next_deadline`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::krpc::NodeInfo;
use crate::id::{Id20, NodeId};

/// What the lookup asks each node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupKind {
    FindNode,
    GetPeers,
}

/// Lookup tuning.
#[derive(Clone, Debug)]
pub struct LookupConfig {
    /// Size of the closest set that must answer (BEP 5: 8).
    pub k: usize,
    pub min_alpha: usize,
    pub max_alpha: usize,
    /// After this long without an answer another query is launched in its place.
    pub slow_after: Duration,
    /// After this long the query is given up.
    pub timeout: Duration,
    /// Bound on candidates kept (farthest unqueried ones are dropped).
    pub max_candidates: usize,
    /// Bound on distinct peers collected.
    pub max_peers: usize,
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig {
            k: 8,
            min_alpha: 3,
            max_alpha: 8,
            slow_after: Duration::from_millis(800),
            timeout: Duration::from_secs(3),
            max_candidates: 200,
            max_peers: 2000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Fresh,
    InFlight { sent: Instant, slow: bool },
    Responded,
    Failed,
}

#[derive(Clone, Debug)]
struct Cand {
    /// None for bootstrap addresses whose id we do not know yet.
    id: Option<NodeId>,
    addr: SocketAddr,
    state: State,
    token: Option<Vec<u8>>,
    /// Hops from the seeds (seeds are 0).
    depth: u32,
}

/// Counters for one lookup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LookupStats {
    pub queries_sent: u64,
    pub responses: u64,
    pub timeouts: u64,
    /// Depth (in hops from the seeds) of the deepest node among the final closest set.
    pub rounds: u32,
}

/// An iterative lookup.
#[derive(Clone, Debug)]
pub struct Lookup {
    target: Id20,
    /// What the lookup is for; read only by `Debug` (lookup traces).
    #[allow(dead_code)]
    kind: LookupKind,
    cfg: LookupConfig,
    alpha: usize,
    /// Unknown-id seeds, queried first.
    seeds: Vec<Cand>,
    /// Known-id candidates sorted by distance to the target.
    cands: Vec<Cand>,
    seen_addrs: BTreeSet<SocketAddr>,
    seen_ids: BTreeSet<NodeId>,
    peers: BTreeSet<SocketAddr>,
    stats: LookupStats,
}

impl Lookup {
    /// Starts a lookup from known nodes (e.g. the routing table's closest) and addresses
    /// with unknown ids (bootstrap routers).
    pub fn new(
        target: Id20,
        kind: LookupKind,
        cfg: LookupConfig,
        known: impl IntoIterator<Item = NodeInfo>,
        unknown: impl IntoIterator<Item = SocketAddr>,
    ) -> Self {
        let alpha = cfg.min_alpha.max(1);
        let mut l = Lookup {
            target,
            kind,
            cfg,
            alpha,
            seeds: Vec::new(),
            cands: Vec::new(),
            seen_addrs: BTreeSet::new(),
            seen_ids: BTreeSet::new(),
            peers: BTreeSet::new(),
            stats: LookupStats::default(),
        };
        for n in known {
            l.add_candidate(n, 0);
        }
        for a in unknown {
            if l.seen_addrs.insert(a) {
                l.seeds.push(Cand {
                    id: None,
                    addr: a,
                    state: State::Fresh,
                    token: None,
                    depth: 0,
                });
            }
        }
        l
    }

    #[cfg(test)]
    pub fn target(&self) -> Id20 {
        self.target
    }

    #[cfg(test)]
    pub fn stats(&self) -> LookupStats {
        self.stats
    }

    /// Current parallelism.
    #[cfg(test)]
    pub fn alpha(&self) -> usize {
        self.alpha
    }

    /// Number of distinct nodes that answered.
    pub fn nodes_visited(&self) -> usize {
        self.cands
            .iter()
            .filter(|c| c.state == State::Responded)
            .count()
    }

    fn add_candidate(&mut self, n: NodeInfo, depth: u32) {
        if self.seen_addrs.contains(&n.addr) || self.seen_ids.contains(&n.id) {
            return;
        }
        let d = self.target.distance(&n.id);
        let pos = self
            .cands
            .partition_point(|c| c.id.map(|id| self.target.distance(&id)) <= Some(d));
        if pos >= self.cfg.max_candidates {
            return;
        }
        self.seen_addrs.insert(n.addr);
        self.seen_ids.insert(n.id);
        self.cands.insert(
            pos,
            Cand {
                id: Some(n.id),
                addr: n.addr,
                state: State::Fresh,
                token: None,
                depth,
            },
        );
        if self.cands.len() > self.cfg.max_candidates {
            // Drop the farthest candidate we have not talked to yet.
            if let Some(i) = self.cands.iter().rposition(|c| c.state == State::Fresh) {
                self.cands.remove(i);
            }
        }
    }

    fn active(&self) -> usize {
        self.seeds
            .iter()
            .chain(self.cands.iter())
            .filter(|c| matches!(c.state, State::InFlight { slow: false, .. }))
            .count()
    }

    fn in_window(c: &Cand) -> bool {
        !matches!(c.state, State::Failed | State::InFlight { slow: true, .. })
    }

    fn expire(&mut self, now: Instant) {
        let (slow_after, timeout) = (self.cfg.slow_after, self.cfg.timeout);
        let mut shrink = 0;
        for c in self.seeds.iter_mut().chain(self.cands.iter_mut()) {
            if let State::InFlight { sent, slow } = c.state {
                let age = now.saturating_duration_since(sent);
                if age >= timeout {
                    c.state = State::Failed;
                    self.stats.timeouts += 1;
                    if !slow {
                        shrink += 1;
                    }
                } else if !slow && age >= slow_after {
                    c.state = State::InFlight { sent, slow: true };
                    shrink += 1;
                }
            }
        }
        self.alpha = self
            .alpha
            .saturating_sub(shrink)
            .max(self.cfg.min_alpha.max(1));
    }

    /// Queries to send now: (expected id if known, address). Each is marked in flight.
    pub fn next_queries(&mut self, now: Instant) -> Vec<(Option<NodeId>, SocketAddr)> {
        self.expire(now);
        let mut out = Vec::new();
        let mut active = self.active();
        for c in &mut self.seeds {
            if active >= self.alpha {
                break;
            }
            if c.state == State::Fresh {
                c.state = State::InFlight {
                    sent: now,
                    slow: false,
                };
                out.push((None, c.addr));
                active += 1;
            }
        }
        let mut window = 0;
        for c in &mut self.cands {
            if window >= self.cfg.k || active >= self.alpha {
                break;
            }
            if !Self::in_window(c) {
                continue;
            }
            window += 1;
            if c.state == State::Fresh {
                c.state = State::InFlight {
                    sent: now,
                    slow: false,
                };
                out.push((c.id, c.addr));
                active += 1;
            }
        }
        self.stats.queries_sent += out.len() as u64;
        out
    }

    fn find_mut(&mut self, addr: &SocketAddr) -> Option<&mut Cand> {
        self.cands
            .iter_mut()
            .chain(self.seeds.iter_mut())
            .find(|c| c.addr == *addr)
    }

    /// A node answered. Returns the peers not seen before in this lookup.
    pub fn on_response(
        &mut self,
        addr: SocketAddr,
        id: NodeId,
        nodes: &[NodeInfo],
        token: Option<Vec<u8>>,
        values: &[SocketAddr],
        now: Instant,
    ) -> Vec<SocketAddr> {
        let (slow_after, max_alpha) = (self.cfg.slow_after, self.cfg.max_alpha);
        let Some(c) = self.find_mut(&addr) else {
            return Vec::new();
        };
        let was_fast = match c.state {
            State::InFlight { sent, slow } => {
                !slow && now.saturating_duration_since(sent) < slow_after / 2
            }
            // A late answer after a timeout is still welcome.
            State::Failed => false,
            State::Fresh | State::Responded => return Vec::new(),
        };
        c.state = State::Responded;
        c.token = token;
        let depth = c.depth;
        let seed = c.id.is_none();
        self.stats.responses += 1;
        if was_fast {
            self.alpha = (self.alpha + 1).min(max_alpha.max(1));
        }
        if seed {
            // Now that the bootstrap node told us its id, it joins the ranked candidates.
            if let Some(i) = self.seeds.iter().position(|c| c.addr == addr) {
                let mut s = self.seeds.remove(i);
                if !self.seen_ids.contains(&id) {
                    s.id = Some(id);
                    self.seen_ids.insert(id);
                    let d = self.target.distance(&id);
                    let pos = self
                        .cands
                        .partition_point(|c| c.id.map(|x| self.target.distance(&x)) <= Some(d));
                    self.cands.insert(pos, s);
                }
            }
        }
        for n in nodes {
            self.add_candidate(*n, depth + 1);
        }
        let mut new = Vec::new();
        for p in values {
            if self.peers.len() >= self.cfg.max_peers {
                break;
            }
            if self.peers.insert(*p) {
                new.push(*p);
            }
        }
        new
    }

    /// Nodes learned elsewhere than from an answer of this lookup: a dual-stack node's
    /// lookup in one family feeds the `nodes`/`nodes6` of the other family's answers here
    /// (BEP 32). They rank like any candidate, `depth` hops from the seeds.
    pub fn add_nodes(&mut self, nodes: &[NodeInfo], depth: u32) {
        for n in nodes {
            self.add_candidate(*n, depth);
        }
    }

    /// A query failed (timeout reported by the caller, or an error reply).
    pub fn on_failure(&mut self, addr: SocketAddr) {
        let min = self.cfg.min_alpha.max(1);
        if let Some(c) = self.find_mut(&addr) {
            if let State::InFlight { slow, .. } = c.state {
                c.state = State::Failed;
                self.stats.timeouts += 1;
                if !slow {
                    self.alpha = self.alpha.saturating_sub(1).max(min);
                }
            }
        }
    }

    /// Finished: the k closest live candidates all answered and nothing fast is pending.
    pub fn is_done(&self) -> bool {
        if self
            .seeds
            .iter()
            .any(|c| matches!(c.state, State::Fresh | State::InFlight { slow: false, .. }))
        {
            return false;
        }
        if self.active() > 0 {
            return false;
        }
        self.cands
            .iter()
            .filter(|c| Self::in_window(c))
            .take(self.cfg.k)
            .all(|c| c.state == State::Responded)
    }

    /// When the caller should call `next_queries` again even if nothing arrives.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.seeds
            .iter()
            .chain(self.cands.iter())
            .filter_map(|c| match c.state {
                State::InFlight { sent, slow: false } => Some(sent + self.cfg.slow_after),
                State::InFlight { sent, slow: true } => Some(sent + self.cfg.timeout),
                _ => None,
            })
            .min()
    }

    /// The k closest nodes that answered, closest first.
    pub fn closest_responded(&self) -> Vec<NodeInfo> {
        self.cands
            .iter()
            .filter(|c| c.state == State::Responded)
            .filter_map(|c| c.id.map(|id| NodeInfo { id, addr: c.addr }))
            .take(self.cfg.k)
            .collect()
    }

    /// Where to `announce_peer`: the k closest answering nodes that gave a token.
    pub fn announce_targets(&self) -> Vec<(NodeInfo, Vec<u8>)> {
        self.cands
            .iter()
            .filter(|c| c.state == State::Responded)
            .filter_map(|c| {
                Some((
                    NodeInfo {
                        id: c.id?,
                        addr: c.addr,
                    },
                    c.token.clone()?,
                ))
            })
            .take(self.cfg.k)
            .collect()
    }

    /// Every distinct peer found so far.
    pub fn peers(&self) -> &BTreeSet<SocketAddr> {
        &self.peers
    }

    /// Final statistics, with `rounds` computed from the closest set.
    pub fn finish_stats(&self) -> LookupStats {
        let mut s = self.stats;
        s.rounds = self
            .cands
            .iter()
            .filter(|c| c.state == State::Responded)
            .take(self.cfg.k)
            .map(|c| c.depth + 1)
            .max()
            .unwrap_or(0);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    /// An in-process fake network: every node knows its `k` closest among a random subset
    /// plus some random far nodes, like a real routing table.
    struct FakeNet {
        nodes: BTreeMap<SocketAddr, (NodeId, Vec<NodeInfo>)>,
        dead: BTreeSet<SocketAddr>,
        /// Liars answer with nodes that do not exist.
        liars: BTreeSet<SocketAddr>,
        peers_at: BTreeMap<SocketAddr, Vec<SocketAddr>>,
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881))
    }

    impl FakeNet {
        fn new(n: usize, rng: &mut StdRng) -> (FakeNet, Vec<NodeInfo>) {
            let all: Vec<NodeInfo> = (0..n)
                .map(|i| NodeInfo {
                    id: Id20(rng.random()),
                    addr: addr(i),
                })
                .collect();
            let mut nodes = BTreeMap::new();
            for me in &all {
                // A crude Kademlia table: for each prefix length, up to 8 nodes.
                let mut by_bucket: BTreeMap<u32, Vec<NodeInfo>> = BTreeMap::new();
                for o in &all {
                    if o.id == me.id {
                        continue;
                    }
                    let b = me.id.distance(&o.id).leading_zeros();
                    let v = by_bucket.entry(b).or_default();
                    if v.len() < 8 {
                        v.push(*o);
                    }
                }
                nodes.insert(
                    me.addr,
                    (me.id, by_bucket.into_values().flatten().collect()),
                );
            }
            (
                FakeNet {
                    nodes,
                    dead: BTreeSet::new(),
                    liars: BTreeSet::new(),
                    peers_at: BTreeMap::new(),
                },
                all,
            )
        }

        fn answer(
            &self,
            addr: &SocketAddr,
            target: &Id20,
            rng: &mut StdRng,
        ) -> Option<(NodeId, Vec<NodeInfo>)> {
            if self.dead.contains(addr) {
                return None;
            }
            let (id, table) = self.nodes.get(addr)?;
            if self.liars.contains(addr) {
                let fake = (0..8)
                    .map(|_| {
                        let mut id = *target;
                        id.0[19] ^= rng.random::<u8>() | 1;
                        NodeInfo {
                            id,
                            addr: SocketAddr::from((
                                [11, rng.random(), rng.random(), rng.random()],
                                1,
                            )),
                        }
                    })
                    .collect();
                return Some((*id, fake));
            }
            let mut t = table.clone();
            t.sort_by_key(|n| target.distance(&n.id));
            t.truncate(8);
            Some((*id, t))
        }
    }

    /// Drives a lookup to completion. Answers take `rtt`; unanswered queries simply never
    /// come back. Returns the lookup and the virtual time used.
    fn run(
        net: &FakeNet,
        mut l: Lookup,
        rtt: Duration,
        rng: &mut StdRng,
    ) -> (Lookup, Duration, usize) {
        let start = Instant::now();
        let mut now = start;
        let mut pending: Vec<(Instant, SocketAddr)> = Vec::new();
        let mut max_active = 0;
        for _ in 0..10_000 {
            for (_, a) in l.next_queries(now) {
                pending.push((now + rtt, a));
            }
            max_active = max_active.max(l.active());
            if l.is_done() {
                break;
            }
            // Advance to the next event: an answer or a lookup deadline.
            let next_answer = pending.iter().map(|p| p.0).min();
            let next = match (next_answer, l.next_deadline()) {
                (Some(a), Some(d)) => a.min(d),
                (Some(a), None) => a,
                (None, Some(d)) => d,
                (None, None) => break,
            };
            now = now.max(next);
            let due: Vec<SocketAddr> = pending.iter().filter(|p| p.0 <= now).map(|p| p.1).collect();
            pending.retain(|p| p.0 > now);
            for a in due {
                if let Some((id, nodes)) = net.answer(&a, &l.target(), rng) {
                    let peers = net.peers_at.get(&a).cloned().unwrap_or_default();
                    let token = Some(vec![1, 2, 3]);
                    l.on_response(a, id, &nodes, token, &peers, now);
                }
            }
        }
        (l, now - start, max_active)
    }

    fn true_closest(
        all: &[NodeInfo],
        target: &Id20,
        k: usize,
        exclude: &BTreeSet<SocketAddr>,
    ) -> Vec<NodeId> {
        let mut v: Vec<&NodeInfo> = all.iter().filter(|n| !exclude.contains(&n.addr)).collect();
        v.sort_by_key(|n| target.distance(&n.id));
        v.into_iter().take(k).map(|n| n.id).collect()
    }

    #[test]
    fn finds_true_closest_on_healthy_network() {
        let mut rng = StdRng::seed_from_u64(1);
        let (net, all) = FakeNet::new(2000, &mut rng);
        for _ in 0..5 {
            let target = Id20(rng.random());
            let l = Lookup::new(
                target,
                LookupKind::FindNode,
                LookupConfig::default(),
                [],
                [addr(0), addr(1), addr(2)],
            );
            let (l, took, max_active) = run(&net, l, Duration::from_millis(50), &mut rng);
            assert!(l.is_done());
            let got: Vec<NodeId> = l.closest_responded().iter().map(|n| n.id).collect();
            assert_eq!(got, true_closest(&all, &target, 8, &BTreeSet::new()));
            assert!(max_active <= 8);
            let s = l.finish_stats();
            assert!(s.rounds <= 11, "rounds {}", s.rounds); // log2(2000) ≈ 11
            assert!(s.queries_sent < 120, "queries {}", s.queries_sent);
            assert!(took < Duration::from_secs(2), "took {took:?}");
        }
    }

    #[test]
    fn dead_nodes_do_not_stall() {
        let mut rng = StdRng::seed_from_u64(2);
        let (mut net, all) = FakeNet::new(1000, &mut rng);
        for n in &all[3..] {
            if rng.random_bool(0.3) {
                net.dead.insert(n.addr);
            }
        }
        let target = Id20(rng.random());
        let l = Lookup::new(
            target,
            LookupKind::FindNode,
            LookupConfig::default(),
            [],
            [addr(0), addr(1), addr(2)],
        );
        let (l, took, _) = run(&net, l, Duration::from_millis(50), &mut rng);
        assert!(l.is_done());
        let got: Vec<NodeId> = l.closest_responded().iter().map(|n| n.id).collect();
        assert_eq!(got, true_closest(&all, &target, 8, &net.dead));
        // Dead nodes cost about one slow threshold per round, never a full timeout each.
        assert!(took < Duration::from_secs(12), "took {took:?}");
    }

    #[test]
    fn single_dead_closest_node_costs_only_slow_threshold() {
        // Hand-built: one seed knowing 9 nodes; the closest of them is dead.
        let target = Id20([0; 20]);
        let mut nodes = Vec::new();
        for i in 1..=9u8 {
            let mut id = [0u8; 20];
            id[19] = i;
            nodes.push(NodeInfo {
                id: Id20(id),
                addr: addr(i as usize),
            });
        }
        let cfg = LookupConfig {
            min_alpha: 3,
            max_alpha: 3,
            ..Default::default()
        };
        let mut l = Lookup::new(target, LookupKind::FindNode, cfg.clone(), nodes.clone(), []);
        let t0 = Instant::now();
        let q = l.next_queries(t0);
        assert_eq!(q.len(), 3);
        assert_eq!(q[0].1, addr(1));
        // Nodes 2 and 3 answer, node 1 stays silent.
        for n in &nodes[1..3] {
            l.on_response(n.addr, n.id, &[], None, &[], t0 + Duration::from_millis(10));
        }
        let t1 = t0 + Duration::from_millis(10);
        let q: Vec<_> = l.next_queries(t1).into_iter().map(|q| q.1).collect();
        assert_eq!(q, vec![addr(4), addr(5)]);
        for n in &nodes[3..5] {
            l.on_response(n.addr, n.id, &[], None, &[], t1);
        }
        let q: Vec<_> = l.next_queries(t1).into_iter().map(|q| q.1).collect();
        assert_eq!(q, vec![addr(6), addr(7)]);
        for n in &nodes[5..7] {
            l.on_response(n.addr, n.id, &[], None, &[], t1);
        }
        let q: Vec<_> = l.next_queries(t1).into_iter().map(|q| q.1).collect();
        assert_eq!(q, vec![addr(8)]);
        l.on_response(nodes[7].addr, nodes[7].id, &[], None, &[], t1);
        assert!(!l.is_done(), "node 1 still counts until slow");
        assert_eq!(l.next_deadline(), Some(t0 + cfg.slow_after));
        // At the slow threshold node 1 leaves the window and node 9 is queried.
        let q: Vec<_> = l
            .next_queries(t0 + cfg.slow_after)
            .into_iter()
            .map(|q| q.1)
            .collect();
        assert_eq!(q, vec![addr(9)]);
        l.on_response(
            nodes[8].addr,
            nodes[8].id,
            &[],
            None,
            &[],
            t0 + cfg.slow_after,
        );
        assert!(l.is_done());
        assert_eq!(l.closest_responded().len(), 8);
    }

    #[test]
    fn liars_do_not_prevent_success() {
        let mut rng = StdRng::seed_from_u64(3);
        let (mut net, all) = FakeNet::new(1000, &mut rng);
        for n in &all[3..] {
            if rng.random_bool(0.1) {
                net.liars.insert(n.addr);
            }
        }
        let target = all[500].id;
        net.peers_at
            .insert(all[500].addr, vec!["1.2.3.4:5".parse().unwrap()]);
        let l = Lookup::new(
            target,
            LookupKind::GetPeers,
            LookupConfig::default(),
            [],
            [addr(0), addr(1), addr(2)],
        );
        let (l, _, _) = run(&net, l, Duration::from_millis(50), &mut rng);
        assert!(l.is_done());
        if !net.liars.contains(&all[500].addr) {
            assert!(l.peers().contains(&"1.2.3.4:5".parse().unwrap()));
        }
    }

    #[test]
    fn peers_streamed_once_and_tokens_collected() {
        let target = Id20([0; 20]);
        let n1 = NodeInfo {
            id: Id20([1; 20]),
            addr: addr(1),
        };
        let n2 = NodeInfo {
            id: Id20([2; 20]),
            addr: addr(2),
        };
        let mut l = Lookup::new(
            target,
            LookupKind::GetPeers,
            LookupConfig::default(),
            [n1, n2],
            [],
        );
        let now = Instant::now();
        assert_eq!(l.next_queries(now).len(), 2);
        let p: SocketAddr = "5.6.7.8:9".parse().unwrap();
        assert_eq!(
            l.on_response(n1.addr, n1.id, &[], Some(b"t1".to_vec()), &[p], now),
            vec![p]
        );
        assert_eq!(l.on_response(n2.addr, n2.id, &[], None, &[p], now), vec![]);
        // A duplicate answer is ignored.
        assert_eq!(l.on_response(n1.addr, n1.id, &[], None, &[p], now), vec![]);
        assert!(l.is_done());
        let ann = l.announce_targets();
        assert_eq!(ann.len(), 1);
        assert_eq!(ann[0].0, n1);
        assert_eq!(ann[0].1, b"t1".to_vec());
    }

    #[test]
    fn unknown_address_and_timeouts() {
        let target = Id20([0; 20]);
        let n1 = NodeInfo {
            id: Id20([1; 20]),
            addr: addr(1),
        };
        let mut l = Lookup::new(
            target,
            LookupKind::FindNode,
            LookupConfig::default(),
            [n1],
            [],
        );
        let now = Instant::now();
        l.next_queries(now);
        assert!(l
            .on_response(addr(77), Id20([7; 20]), &[n1], None, &[], now)
            .is_empty());
        assert!(!l.is_done());
        l.next_queries(now + Duration::from_secs(3));
        assert!(l.is_done(), "only candidate timed out: exhausted");
        assert_eq!(l.stats().timeouts, 1);
        assert!(l.closest_responded().is_empty());
    }

    #[test]
    fn candidates_are_bounded() {
        let target = Id20([0; 20]);
        let mut rng = StdRng::seed_from_u64(9);
        let cfg = LookupConfig {
            max_candidates: 50,
            ..Default::default()
        };
        let seed = NodeInfo {
            id: Id20([0xff; 20]),
            addr: addr(0),
        };
        let mut l = Lookup::new(target, LookupKind::FindNode, cfg, [seed], []);
        let now = Instant::now();
        l.next_queries(now);
        let flood: Vec<NodeInfo> = (1..5000)
            .map(|i| NodeInfo {
                id: Id20(rng.random()),
                addr: addr(i),
            })
            .collect();
        l.on_response(seed.addr, seed.id, &flood, None, &[], now);
        assert!(l.cands.len() <= 50);
        // The kept ones are the closest.
        let mut ids: Vec<Id20> = flood.iter().map(|n| n.id).collect();
        ids.sort_by_key(|id| target.distance(id));
        assert_eq!(l.cands[0].id, Some(ids[0]));
    }

    #[test]
    fn alpha_adapts() {
        let target = Id20([0; 20]);
        let nodes: Vec<NodeInfo> = (1..=30u8)
            .map(|i| NodeInfo {
                id: Id20([i; 20]),
                addr: addr(i as usize),
            })
            .collect();
        let mut l = Lookup::new(
            target,
            LookupKind::FindNode,
            LookupConfig::default(),
            nodes[..1].to_vec(),
            [],
        );
        let now = Instant::now();
        l.next_queries(now);
        assert_eq!(l.alpha(), 3);
        l.on_response(
            nodes[0].addr,
            nodes[0].id,
            &nodes[1..],
            None,
            &[],
            now + Duration::from_millis(5),
        );
        assert_eq!(l.alpha(), 4);
        let q = l.next_queries(now + Duration::from_millis(5));
        assert_eq!(q.len(), 4);
        // All four go slow: alpha falls back to the minimum and four new ones are launched.
        let later = now + Duration::from_secs(1);
        let q = l.next_queries(later);
        assert_eq!(l.alpha(), 3);
        assert_eq!(q.len(), 3);
    }
}
