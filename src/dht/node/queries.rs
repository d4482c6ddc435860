//! Answering other nodes' queries (BEP 5 `ping`, `find_node`, `get_peers`,
//! `announce_peer`; BEP 51 `sample_infohashes`; BEP 33 scrape filters; BEP 32 `want` and
//! `nodes6`): per-IP rate limits, tokens, and answers trimmed to stay under 1000 bytes and
//! 9x their query (no amplification). A read-only node (BEP 43) answers nothing.

use std::net::{IpAddr, SocketAddr};

use tokio::time::Instant;

use crate::dht::krpc::{error_code, Body, Message, NodeInfo, Query, QueryKind, Response, Want};
use crate::id::Id20;

use super::state::{NodeState, RateBucket};
use super::*;

impl NodeState {
    /// Token bucket per IP: true if this query may be answered.
    pub(super) fn rate_ok(&mut self, ip: IpAddr, now: Instant) -> bool {
        let rate = f64::from(self.cfg.queries_per_sec_per_ip.max(1));
        let burst = rate * 2.0;
        let b = self.rate.get_or_insert_mut(ip, || RateBucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The k closest nodes of one family's table (empty when we do not run it).
    pub(super) fn closest_nodes(&self, target: &Id20, v6: bool, now: Instant) -> Vec<NodeInfo> {
        let Some(table) = self.table(v6) else {
            return Vec::new();
        };
        table
            .closest(target, self.cfg.lookup.k, now)
            .into_iter()
            .map(|e| NodeInfo {
                id: e.id,
                addr: e.addr,
            })
            .collect()
    }

    /// Fills `nodes`/`nodes6` as the querier wants them (BEP 32).
    pub(super) fn put_nodes(&self, resp: &mut Response, target: &Id20, want: Want, now: Instant) {
        if want.n4 {
            resp.nodes = self.closest_nodes(target, false, now);
        }
        if want.n6 {
            resp.nodes6 = self.closest_nodes(target, true, now);
        }
    }

    /// Sends an answer, trimmed until it is at most [`MAX_REPLY`] bytes and smaller than
    /// [`MAX_AMPLIFICATION`] times the query (`qlen` bytes): the other family's nodes go
    /// first (a BEP 32 bonus), then values, the BEP 33 filters, samples, and last the
    /// asker's own family's nodes.
    pub(super) fn send_reply(&mut self, mut msg: Message, to: SocketAddr, qlen: usize) {
        let limit = MAX_REPLY.min((qlen * MAX_AMPLIFICATION).saturating_sub(1));
        loop {
            let bytes = msg.encode();
            if bytes.len() <= limit {
                self.outbox.push((bytes, to));
                return;
            }
            let excess = bytes.len() - limit;
            let trimmed = match &mut msg.body {
                Body::Response(r) => trim_response(r, excess, to.is_ipv6()),
                _ => false,
            };
            if !trimmed {
                // Nothing left to cut (an absurd transaction id?): silence, not amplification.
                return;
            }
        }
    }

    pub(super) fn on_query(
        &mut self,
        tid: Vec<u8>,
        ro: bool,
        q: Query,
        from: SocketAddr,
        qlen: usize,
        now: Instant,
    ) {
        self.stats.queries_received += 1;
        if !self.rate_ok(from.ip(), now) {
            self.stats.queries_dropped += 1;
            return;
        }
        // BEP 43: read-only nodes are not added to tables; and we, if read-only, stay silent.
        if !ro && q.id != self.id {
            if let Some(table) = self.table_mut(from.is_ipv6()) {
                table.heard_query(q.id, from, now);
            }
        }
        if self.cfg.read_only {
            return;
        }
        let mut resp = Response {
            id: self.id,
            ..Default::default()
        };
        let v6 = from.is_ipv6();
        // BEP 32: `want` decides which families' nodes; without it (or with only flags we
        // do not know), the family the query came in on.
        let want = if q.want.n4 || q.want.n6 {
            q.want
        } else {
            Want { n4: !v6, n6: v6 }
        };
        match q.kind {
            QueryKind::Ping => {}
            QueryKind::FindNode { target } => self.put_nodes(&mut resp, &target, want, now),
            QueryKind::GetPeers {
                info_hash,
                noseed,
                scrape,
            } => {
                resp.token = Some(self.tokens.token(from.ip()));
                let mut max = MAX_VALUES;
                if scrape {
                    if let Some((seeds, peers)) = self.store.scrape(&info_hash, now) {
                        resp.bf_seeds = Some(Box::new(seeds.0));
                        resp.bf_peers = Some(Box::new(peers.0));
                        // The filters take 512 bytes: send fewer values (BEP 33).
                        max = 8;
                    }
                }
                // Peers of the querying family only (BEP 32: `want` governs nodes only).
                resp.values = self
                    .store
                    .get(&info_hash, v6, max, noseed, now, &mut self.rng);
                self.put_nodes(&mut resp, &info_hash, want, now);
            }
            QueryKind::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
                seed,
            } => {
                if !self.tokens.verify(&token, from.ip()) {
                    self.send(
                        &Message::error(tid, error_code::PROTOCOL, "bad token"),
                        from,
                    );
                    return;
                }
                let port = if implied_port { from.port() } else { port };
                if port == 0 {
                    self.send(&Message::error(tid, error_code::PROTOCOL, "bad port"), from);
                    return;
                }
                self.store
                    .announce(info_hash, SocketAddr::new(from.ip(), port), seed, now);
            }
            QueryKind::SampleInfohashes { target } => {
                let (samples, num) = self.store.samples(MAX_SAMPLES, &mut self.rng);
                resp.samples = Some(samples);
                resp.num = Some(num as i64);
                // Samples are drawn afresh for each request; ask indexers to wait a minute.
                resp.interval = Some(60);
                self.put_nodes(&mut resp, &target, want, now);
            }
            QueryKind::Unknown {
                target: Some(target),
                ..
            } => self.put_nodes(&mut resp, &target, want, now),
            QueryKind::Unknown { target: None, .. } => {
                self.send(
                    &Message::error(tid, error_code::METHOD_UNKNOWN, "method unknown"),
                    from,
                );
                return;
            }
        }
        let msg = Message {
            tid,
            version: Some(VERSION.to_vec()),
            read_only: false,
            ip: Some(from),
            body: Body::Response(resp),
        };
        self.send_reply(msg, from, qlen);
    }
}

/// Removes about `excess` bytes from an answer, least useful part first; false when
/// nothing is left to remove. `v6`: the family of the asker.
pub(super) fn trim_response(r: &mut Response, excess: usize, v6: bool) -> bool {
    fn cut<T>(v: &mut Vec<T>, excess: usize, each: usize) {
        let n = excess.div_ceil(each).clamp(1, v.len());
        v.truncate(v.len() - n);
    }
    let (own, other) = if v6 {
        (&mut r.nodes6, &mut r.nodes)
    } else {
        (&mut r.nodes, &mut r.nodes6)
    };
    if !other.is_empty() {
        other.clear();
        return true;
    }
    if !r.values.is_empty() {
        // "6:" + 6 bytes, or "18:" + 18.
        cut(&mut r.values, excess, if v6 { 21 } else { 8 });
        return true;
    }
    if r.bf_seeds.is_some() || r.bf_peers.is_some() {
        r.bf_seeds = None;
        r.bf_peers = None;
        return true;
    }
    if let Some(s) = r.samples.as_mut().filter(|s| !s.is_empty()) {
        cut(s, excess, 20);
        return true;
    }
    if !own.is_empty() {
        cut(own, excess, if v6 { 38 } else { 26 });
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::krpc::{Body, Message, QueryKind, Want};
    use crate::dht::node::test_util::*;
    use crate::dht::store::StoreConfig;
    use crate::id::Id20;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::time::Instant;

    /// BEP 32: one table per family, filled only by its own family; `want` decides which
    /// nodes an answer carries (default: the family the query came in on); `values` are
    /// always peers of the asker's family; a single-stack node has no `nodes6` to give.
    #[test]
    fn dual_stack_tables_and_want_handling() {
        let mut st = dual(
            "127.0.0.1:6881",
            "[::1]:6881",
            DhtConfig {
                seed: Some(7),
                ..Default::default()
            },
        );
        let now = Instant::now();
        let a4 = |i: u8| SocketAddr::from(([127, 0, 0, 10 + i], 1000));
        let a6 = |i: u8| -> SocketAddr { format!("[fd00::{}]:1000", 10 + i).parse().unwrap() };
        for i in 0..5u8 {
            st.packet(&query(Id20([i + 1; 20]), QueryKind::Ping), a4(i), now);
            st.packet(&query(Id20([i + 101; 20]), QueryKind::Ping), a6(i), now);
        }
        st.outbox.clear();
        let s = st.stats();
        assert_eq!((s.table_v4, s.table_v6, s.table_size), (5, 5, 10));
        assert!(st.table(false).unwrap().entries().all(|e| e.addr.is_ipv4()));
        assert!(st.table(true).unwrap().entries().all(|e| e.addr.is_ipv6()));
        let fnq = |want| {
            query_want(
                Id20([1; 20]),
                QueryKind::FindNode {
                    target: Id20([9; 20]),
                },
                want,
            )
        };
        // Over IPv4, no want: IPv4 nodes only.
        st.packet(&fnq(Want::default()), a4(0), now);
        let r = response(reply(&mut st));
        assert_eq!((r.nodes.len(), r.nodes6.len()), (5, 0));
        // Over IPv4, want n6: IPv6 nodes only; want both: both.
        st.packet(
            &fnq(Want {
                n4: false,
                n6: true,
            }),
            a4(0),
            now,
        );
        let r = response(reply(&mut st));
        assert_eq!((r.nodes.len(), r.nodes6.len()), (0, 5));
        assert!(r.nodes6.iter().all(|n| n.addr.is_ipv6()));
        st.packet(&fnq(BOTH), a4(0), now);
        let r = response(reply(&mut st));
        assert_eq!((r.nodes.len(), r.nodes6.len()), (5, 5));
        // Over IPv6, no want: IPv6 nodes.
        st.packet(&fnq(Want::default()), a6(0), now);
        let r = response(reply(&mut st));
        assert_eq!((r.nodes.len(), r.nodes6.len()), (0, 5));
        // announce_peer stores by family; get_peers values are the asker's family only.
        let ih = Id20([0x33; 20]);
        let gp = |want| {
            query_want(
                Id20([1; 20]),
                QueryKind::GetPeers {
                    info_hash: ih,
                    noseed: false,
                    scrape: false,
                },
                want,
            )
        };
        for from in [a4(1), a6(1)] {
            st.packet(&gp(Want::default()), from, now);
            let token = response(reply(&mut st)).token.unwrap();
            let ann = query(
                Id20([2; 20]),
                QueryKind::AnnouncePeer {
                    info_hash: ih,
                    port: 7000,
                    implied_port: false,
                    token,
                    seed: false,
                },
            );
            st.packet(&ann, from, now);
            assert!(matches!(reply(&mut st).body, Body::Response(_)));
        }
        st.packet(&gp(BOTH), a4(2), now);
        let r = response(reply(&mut st));
        assert_eq!(r.values, vec![SocketAddr::new(a4(1).ip(), 7000)]);
        assert_eq!((r.nodes.len(), r.nodes6.len()), (5, 5));
        st.packet(&gp(BOTH), a6(2), now);
        let r = response(reply(&mut st));
        assert_eq!(r.values, vec![SocketAddr::new(a6(1).ip(), 7000)]);

        // A single-stack IPv4 node: no IPv6 table, no `nodes6` even when asked, and IPv6
        // datagrams are not its business.
        let mut v4only = state("127.0.0.1:6881", 8);
        for i in 0..3u8 {
            v4only.packet(&query(Id20([i + 1; 20]), QueryKind::Ping), a4(i), now);
        }
        v4only.outbox.clear();
        v4only.packet(&fnq(BOTH), a4(0), now);
        let r = response(reply(&mut v4only));
        assert_eq!((r.nodes.len(), r.nodes6.len()), (3, 0));
        v4only.packet(&fnq(BOTH), a6(0), now);
        assert!(v4only.outbox.is_empty());
    }

    /// The flood rule (answers < 1024 bytes and < 9x the query) holds for a dual-stack node
    /// asked for both families' nodes, with full tables, BEP 33 filters and many stored
    /// IPv6 peers (18-byte values): answers are trimmed, never amplified.
    #[test]
    fn dual_stack_answers_with_want_both_stay_bounded() {
        let mut st = dual(
            "1.2.3.4:6881",
            "[2001:db8::1]:6881",
            DhtConfig {
                seed: Some(21),
                ..Default::default()
            },
        );
        let mut rng = StdRng::seed_from_u64(5);
        let now = Instant::now();
        for _ in 0..400 {
            let ip4 = std::net::Ipv4Addr::from(rng.random::<u32>() | 0x0100_0000);
            st.table_mut(false).unwrap().heard_response(
                Id20(rng.random()),
                SocketAddr::from((ip4, 1)),
                now,
            );
            let ip6 = std::net::Ipv6Addr::from(rng.random::<u128>() | (0x2001u128 << 112));
            st.table_mut(true).unwrap().heard_response(
                Id20(rng.random()),
                SocketAddr::from((ip6, 1)),
                now,
            );
        }
        assert!(st.stats().table_v4 >= 8 && st.stats().table_v6 >= 8);
        let ih = Id20([0x44; 20]);
        for i in 0..100u16 {
            let ip6 = std::net::Ipv6Addr::new(0x2001, 0xdb9, 0, 0, 0, 0, 0, i + 1);
            st.store
                .announce(ih, SocketAddr::from((ip6, 1000 + i)), i % 2 == 0, now);
            let ip4 = std::net::Ipv4Addr::new(9, 9, (i >> 8) as u8, i as u8);
            st.store
                .announce(ih, SocketAddr::from((ip4, 1000 + i)), i % 2 == 0, now);
        }
        let (mut max_len, mut max_ratio) = (0usize, 0.0f64);
        let mut values6 = 0;
        let mut t = now;
        for (k, from) in ["5.6.7.8:1", "[2001:db8::99]:1"].iter().enumerate() {
            let from: SocketAddr = from.parse().unwrap();
            for scrape in [false, true] {
                for want in [
                    Want::default(),
                    Want {
                        n4: false,
                        n6: true,
                    },
                    BOTH,
                ] {
                    t += Duration::from_secs(1);
                    let kinds = [
                        QueryKind::GetPeers {
                            info_hash: ih,
                            noseed: false,
                            scrape,
                        },
                        QueryKind::FindNode { target: ih },
                        QueryKind::SampleInfohashes { target: ih },
                    ];
                    for kind in kinds {
                        let q = query_want(Id20([k as u8 + 1; 20]), kind.clone(), want);
                        st.packet(&q, from, t);
                        let (b, to) = st.outbox.pop().expect("an answer");
                        assert_eq!(to, from);
                        max_len = max_len.max(b.len());
                        max_ratio = max_ratio.max(b.len() as f64 / q.len() as f64);
                        let r = response(Message::decode(&b).unwrap());
                        assert!(r.values.iter().all(|v| v.is_ipv6() == from.is_ipv6()));
                        if from.is_ipv6() && !scrape && matches!(kind, QueryKind::GetPeers { .. }) {
                            values6 = values6.max(r.values.len());
                            assert!(!r.nodes6.is_empty(), "own family's nodes kept");
                        }
                    }
                }
            }
        }
        assert!(max_len <= MAX_REPLY, "largest answer {max_len} bytes");
        assert!(max_ratio < 9.0, "largest answer/query ratio {max_ratio:.1}");
        assert!(
            values6 >= 10,
            "trimmed, but still useful: {values6} IPv6 values"
        );
    }

    #[test]
    fn answers_malformed_query_with_203_and_unknown_with_204() {
        let mut st = state("127.0.0.1:6881", 1);
        let from: SocketAddr = "127.0.0.2:1000".parse().unwrap();
        let now = Instant::now();
        st.packet(b"d1:ad2:id3:abce1:q4:ping1:t2:xy1:y1:qe", from, now);
        let m = reply(&mut st);
        assert_eq!(m.tid, b"xy");
        assert!(matches!(m.body, Body::Error { code: 203, .. }));
        st.packet(
            &query(
                Id20([1; 20]),
                QueryKind::Unknown {
                    method: b"frob".to_vec(),
                    target: None,
                },
            ),
            from,
            now,
        );
        assert!(matches!(reply(&mut st).body, Body::Error { code: 204, .. }));
        // Garbage that is not a query: silence.
        st.packet(b"\xff\x00garbage", from, now);
        assert!(st.outbox.is_empty());
    }

    #[test]
    fn announce_needs_token_from_same_ip_and_implied_port_works() {
        let mut st = state("127.0.0.1:6881", 2);
        let a: SocketAddr = "127.0.0.2:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:1000".parse().unwrap();
        let now = Instant::now();
        let ih = Id20([7; 20]);
        st.packet(
            &query(
                Id20([1; 20]),
                QueryKind::GetPeers {
                    info_hash: ih,
                    noseed: false,
                    scrape: false,
                },
            ),
            a,
            now,
        );
        let Body::Response(r) = reply(&mut st).body else {
            panic!()
        };
        let token = r.token.unwrap();
        assert!(r.values.is_empty());
        // Token from another IP is refused.
        let ann = |token: Vec<u8>| {
            query(
                Id20([1; 20]),
                QueryKind::AnnouncePeer {
                    info_hash: ih,
                    port: 9,
                    implied_port: true,
                    token,
                    seed: false,
                },
            )
        };
        st.packet(&ann(token.clone()), b, now);
        assert!(matches!(reply(&mut st).body, Body::Error { code: 203, .. }));
        st.packet(&ann(token), a, now);
        assert!(matches!(reply(&mut st).body, Body::Response(_)));
        st.packet(
            &query(
                Id20([2; 20]),
                QueryKind::GetPeers {
                    info_hash: ih,
                    noseed: false,
                    scrape: true,
                },
            ),
            b,
            now,
        );
        let m = reply(&mut st);
        assert_eq!(m.ip, Some(b), "BEP 42 ip field");
        let Body::Response(r) = m.body else { panic!() };
        assert_eq!(r.values, vec![a], "implied port: the UDP source port");
        assert!(r.bf_peers.is_some() && r.bf_seeds.is_some());
        // BEP 51.
        st.packet(
            &query(Id20([2; 20]), QueryKind::SampleInfohashes { target: ih }),
            b,
            now,
        );
        let Body::Response(r) = reply(&mut st).body else {
            panic!()
        };
        assert_eq!(r.samples, Some(vec![ih]));
        assert_eq!(r.num, Some(1));
    }

    #[test]
    fn rate_limit_drops_floods() {
        let mut st = state("127.0.0.1:6881", 3);
        let a: SocketAddr = "127.0.0.2:1000".parse().unwrap();
        let now = Instant::now();
        for _ in 0..1000 {
            st.packet(&query(Id20([1; 20]), QueryKind::Ping), a, now);
        }
        assert_eq!(st.outbox.len(), 40, "burst of 2x the per-second rate");
        assert_eq!(st.stats.queries_dropped, 960);
        st.outbox.clear();
        st.packet(
            &query(Id20([1; 20]), QueryKind::Ping),
            a,
            now + Duration::from_secs(1),
        );
        assert_eq!(st.outbox.len(), 1);
    }

    /// A flood from 20,000 random IPs with random ids: every get_peers followed by a
    /// valid-token announce for a fresh info-hash. Memory stays bounded (rate-limit map,
    /// table, peer store, transactions) and no answer is more than a few times the size of
    /// its query (no amplification).
    #[test]
    fn flood_from_random_ips_stays_bounded_and_never_amplifies() {
        let cfg = DhtConfig {
            seed: Some(9),
            store: StoreConfig {
                max_per_hash: 50,
                max_total: 5_000,
            },
            ..Default::default()
        };
        let mut st = NodeState::new(cfg, "1.2.3.4:6881".parse().unwrap(), None, Instant::now());
        let mut rng = StdRng::seed_from_u64(99);
        let mut now = Instant::now();
        let (mut max_ratio, mut max_len) = (0.0f64, 0usize);
        let mut answer = |st: &mut NodeState, q: &[u8], from: SocketAddr, now: Instant| {
            st.packet(q, from, now);
            let out = std::mem::take(&mut st.outbox);
            assert!(out.len() <= 1, "one answer per query at most");
            let (b, to) = out.into_iter().next()?;
            assert_eq!(to, from, "answers go only to the asker");
            max_ratio = max_ratio.max(b.len() as f64 / q.len() as f64);
            max_len = max_len.max(b.len());
            Message::decode(&b).ok()
        };
        for i in 0..20_000u32 {
            now += Duration::from_micros(100);
            let ip = std::net::Ipv4Addr::from(rng.random::<u32>() | 0x0100_0000);
            let from = SocketAddr::from((ip, 1 + (i % 60_000) as u16));
            let ih = Id20(rng.random());
            let id = Id20(rng.random());
            let gp = query(
                id,
                QueryKind::GetPeers {
                    info_hash: ih,
                    noseed: false,
                    scrape: true,
                },
            );
            let Some(Message {
                body: Body::Response(r),
                ..
            }) = answer(&mut st, &gp, from, now)
            else {
                continue;
            };
            let ann = query(
                id,
                QueryKind::AnnouncePeer {
                    info_hash: ih,
                    port: 0,
                    implied_port: true,
                    token: r.token.unwrap_or_default(),
                    seed: false,
                },
            );
            answer(&mut st, &ann, from, now);
            let fnq = query(id, QueryKind::FindNode { target: ih });
            answer(&mut st, &fnq, from, now);
        }
        st.tick(now);
        assert!(st.rate.len() <= 8192, "rate map {}", st.rate.len());
        assert!(st.store.len() <= 5_000, "stored peers {}", st.store.len());
        assert!(
            st.store.len() >= 4_000,
            "the store did fill: {}",
            st.store.len()
        );
        assert!(
            st.stats().table_size <= 160 * 8,
            "table {}",
            st.stats().table_size
        );
        assert!(st.txns.len() <= st.cfg.max_transactions);
        // get_peers with scrape: id, token, 8 nodes, 8 values, two 256-byte bloom filters
        // against a ~110-byte query. That is the worst case; find_node is ~3x.
        assert!(max_len < 1024, "largest answer {max_len} bytes");
        assert!(max_ratio < 9.0, "largest answer/query ratio {max_ratio:.1}");
    }

    #[test]
    fn read_only_node_stays_silent_and_flags_queries() {
        let cfg = DhtConfig {
            seed: Some(4),
            read_only: true,
            bootstrap: vec!["127.0.0.9:1".parse().unwrap()],
            ..Default::default()
        };
        let mut st = NodeState::new(cfg, "127.0.0.1:6881".parse().unwrap(), None, Instant::now());
        let now = Instant::now();
        st.packet(
            &query(Id20([1; 20]), QueryKind::Ping),
            "127.0.0.2:1".parse().unwrap(),
            now,
        );
        assert!(st.outbox.is_empty());
        st.tick(now);
        let to: SocketAddr = "127.0.0.9:1".parse().unwrap();
        let (b, _) = st
            .outbox
            .iter()
            .find(|(_, a)| *a == to)
            .expect("bootstrap query");
        assert!(Message::decode(b).unwrap().read_only);
    }
}
