//! The node's protocol state, [`NodeState`] (BEP 5): a synchronous state machine fed with
//! datagrams, commands and the current time, which queues what it sends in an outbox. This
//! file holds the state itself, its construction (one routing table per bound family, BEP
//! 32; the BEP 42 node id), commands from the [`super::Dht`] handle, transaction ids and the
//! dispatch of incoming datagrams to [`super::queries`] and [`super::responses`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::dht::krpc::{error_code, Body, Message, NodeInfo, Query, QueryKind, Want};
use crate::dht::lookup::LookupKind;
use crate::dht::store::{PeerStore, Tokens};
use crate::dht::table::{bep42_node_id, is_local, Table, TableConfig};
use crate::id::{Id20, NodeId};

use super::lookups::RunningLookup;
use super::*;

#[derive(Clone, Copy, Debug)]
pub(super) enum Purpose {
    Lookup(u64),
    Ping,
    /// An `announce_peer` sent at the end of this lookup.
    Announce(u64),
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Txn {
    pub(super) addr: SocketAddr,
    pub(super) expect: Option<NodeId>,
    pub(super) sent: Instant,
    pub(super) purpose: Purpose,
}

pub(super) enum Waiter {
    Peers {
        peers: Option<mpsc::Sender<SocketAddr>>,
        done: Option<oneshot::Sender<LookupSummary>>,
    },
    Nodes(Option<oneshot::Sender<Vec<NodeInfo>>>),
    Internal,
}

/// Index of a family in the per-family arrays: 0 = IPv4, 1 = IPv6.
pub(super) fn fi(v6: bool) -> usize {
    usize::from(v6)
}

/// Per-IP token bucket for incoming queries.
#[derive(Clone, Copy)]
pub(super) struct RateBucket {
    pub(super) tokens: f64,
    pub(super) at: Instant,
}

/// The node's protocol state: synchronous, driven by the task in [`run`].
pub(crate) struct NodeState {
    pub(super) cfg: DhtConfig,
    pub(super) id: NodeId,
    pub(super) shared_id: Arc<Mutex<NodeId>>,
    /// Set when the id was forced or already re-derived from the external IP.
    pub(super) id_fixed: bool,
    /// Candidate external IP → distinct responder IPs that reported it (BEP 42).
    pub(super) ip_votes: BTreeMap<IpAddr, BTreeSet<IpAddr>>,
    /// The first socket's address (its family decides the BEP 42 id).
    pub(super) local: SocketAddr,
    /// Our address per family (index [`fi`]); None where no socket is bound.
    pub(super) locals: [Option<SocketAddr>; 2],
    /// One routing table per bound family (BEP 32), index [`fi`].
    pub(super) tables: [Option<Table>; 2],
    pub(super) store: PeerStore,
    pub(super) tokens: Tokens,
    pub(super) rng: StdRng,
    pub(super) txns: BTreeMap<u16, Txn>,
    pub(super) next_tid: u16,
    pub(super) lookups: BTreeMap<u64, RunningLookup>,
    pub(super) next_lookup: u64,
    pub(super) rate: LruCache<IpAddr, RateBucket>,
    pub(super) stats: DhtStats,
    pub(super) saved_nodes: Vec<NodeInfo>,
    pub(super) bootstrapped: bool,
    pub(super) bootstrap_waiters: Vec<oneshot::Sender<()>>,
    pub(super) last_bootstrap: Option<Instant>,
    /// Wait before the next re-bootstrap while a table is empty (backs off, see
    /// [`REBOOTSTRAP_MAX`]).
    pub(super) rebootstrap_wait: Duration,
    /// When to repeat the self-lookup once after bootstrap (see `finish_bootstrap`).
    pub(super) second_pass_at: Option<Instant>,
    pub(super) next_maintenance: Instant,
    pub(super) next_save: Instant,
    pub(super) outbox: Vec<(Vec<u8>, SocketAddr)>,
}

impl NodeState {
    #[cfg(test)]
    pub(super) fn new(
        cfg: DhtConfig,
        local: SocketAddr,
        saved: Option<(NodeId, Vec<NodeInfo>)>,
        now: Instant,
    ) -> Self {
        Self::new_multi(cfg, &[local], saved, now)
    }

    /// A node on the given addresses: one, or one per family (dual stack, BEP 32).
    pub(super) fn new_multi(
        cfg: DhtConfig,
        locals: &[SocketAddr],
        saved: Option<(NodeId, Vec<NodeInfo>)>,
        now: Instant,
    ) -> Self {
        let local = locals
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut rng = StdRng::seed_from_u64(cfg.seed.unwrap_or_else(rand::random));
        let (saved_id, saved_nodes) = match saved {
            Some((id, nodes)) => (Some(id), nodes),
            None => (None, Vec::new()),
        };
        let id = cfg.node_id.or(saved_id).unwrap_or_else(|| {
            let ip = local.ip();
            if !ip.is_unspecified() && !is_local(ip) {
                bep42_node_id(ip, &mut rng)
            } else {
                Id20(rng.random())
            }
        });
        let mut tables = [None, None];
        let mut local_by_fam = [None, None];
        for l in locals {
            let ip = l.ip();
            // Bound to loopback/private (tests, LANs): accept such peers in the table.
            let allow_private = ip.is_loopback() || is_local(ip);
            let tcfg = TableConfig {
                allow_private,
                enforce_node_id: cfg.enforce_node_id,
                v6: Some(l.is_ipv6()),
                ..Default::default()
            };
            tables[fi(l.is_ipv6())] = Some(Table::new(id, tcfg, now));
            local_by_fam[fi(l.is_ipv6())] = Some(*l);
        }
        let tokens = Tokens::new(now, &mut rng);
        let next_tid = rng.random();
        NodeState {
            tables,
            locals: local_by_fam,
            rebootstrap_wait: REBOOTSTRAP_EVERY,
            store: PeerStore::new(cfg.store.clone()),
            tokens,
            rng,
            txns: BTreeMap::new(),
            next_tid,
            lookups: BTreeMap::new(),
            next_lookup: 0,
            rate: LruCache::new(NonZeroUsize::new(8192).unwrap_or(NonZeroUsize::MIN)),
            stats: DhtStats::default(),
            saved_nodes,
            bootstrapped: false,
            bootstrap_waiters: Vec::new(),
            last_bootstrap: None,
            second_pass_at: None,
            next_maintenance: now,
            next_save: now + SAVE_EVERY,
            outbox: Vec::new(),
            id_fixed: cfg.node_id.is_some(),
            cfg,
            id,
            shared_id: Arc::new(Mutex::new(id)),
            ip_votes: BTreeMap::new(),
            local,
        }
    }

    /// The primary family (the first socket's).
    pub(super) fn v6(&self) -> bool {
        self.local.is_ipv6()
    }

    pub(super) fn table(&self, v6: bool) -> Option<&Table> {
        self.tables[fi(v6)].as_ref()
    }

    pub(super) fn table_mut(&mut self, v6: bool) -> Option<&mut Table> {
        self.tables[fi(v6)].as_mut()
    }

    /// The bound families' tables.
    pub(super) fn tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.iter().flatten()
    }

    /// The bound families, IPv4 first.
    pub(super) fn families(&self) -> Vec<bool> {
        [false, true]
            .into_iter()
            .filter(|v6| self.tables[fi(*v6)].is_some())
            .collect()
    }

    pub(super) fn next_wake(&self) -> Instant {
        let mut t = self.next_maintenance;
        for l in self.lookups.values() {
            if let Some(d) = l.next_deadline() {
                t = t.min(d);
            }
        }
        if let Some(oldest) = self.txns.values().map(|x| x.sent).min() {
            t = t.min(oldest + self.cfg.lookup.timeout);
        }
        t
    }

    pub(super) fn command(&mut self, c: Cmd, now: Instant) {
        match c {
            Cmd::Lookup {
                info_hash,
                announce,
                peers,
                done,
            } => {
                let waiter = Waiter::Peers {
                    peers: Some(peers),
                    done: Some(done),
                };
                self.start_lookup(
                    info_hash,
                    LookupKind::GetPeers,
                    waiter,
                    announce,
                    false,
                    None,
                    now,
                );
            }
            Cmd::FindNode { target, done } => {
                self.start_lookup(
                    target,
                    LookupKind::FindNode,
                    Waiter::Nodes(Some(done)),
                    None,
                    false,
                    None,
                    now,
                );
            }
            Cmd::Bootstrapped(tx) => {
                if self.bootstrapped {
                    let _ = tx.send(());
                } else {
                    self.bootstrap_waiters.push(tx);
                }
            }
            Cmd::Stats(tx) => {
                let _ = tx.send(self.stats());
            }
            Cmd::Save(tx) => {
                let r = match &self.cfg.state_file {
                    Some(p) => self.save_to(p),
                    None => Ok(()),
                };
                let _ = tx.send(r);
            }
            Cmd::Shutdown(_) => {}
        }
    }

    pub(super) fn stats(&self) -> DhtStats {
        let len = |v6| self.table(v6).map_or(0, Table::len);
        DhtStats {
            table_size: len(false) + len(true),
            table_v4: len(false),
            table_v6: len(true),
            peers_stored: self.store.len(),
            ..self.stats
        }
    }

    pub(super) fn alloc_tid(&mut self) -> Option<u16> {
        if self.txns.len() >= self.cfg.max_transactions {
            return None;
        }
        loop {
            let t = self.next_tid;
            self.next_tid = self.next_tid.wrapping_add(1);
            if !self.txns.contains_key(&t) {
                return Some(t);
            }
        }
    }

    pub(super) fn send(&mut self, msg: &Message, to: SocketAddr) {
        self.outbox.push((msg.encode(), to));
    }

    pub(super) fn send_query(
        &mut self,
        to: SocketAddr,
        expect: Option<NodeId>,
        kind: QueryKind,
        want: Want,
        purpose: Purpose,
        now: Instant,
    ) {
        let Some(tid) = self.alloc_tid() else { return };
        self.txns.insert(
            tid,
            Txn {
                addr: to,
                expect,
                sent: now,
                purpose,
            },
        );
        let msg = Message {
            tid: tid.to_be_bytes().to_vec(),
            version: Some(VERSION.to_vec()),
            read_only: self.cfg.read_only,
            ip: None,
            body: Body::Query(Query {
                id: self.id,
                kind,
                want,
            }),
        };
        self.stats.queries_sent += 1;
        self.send(&msg, to);
    }

    /// One incoming datagram.
    pub(super) fn packet(&mut self, buf: &[u8], from: SocketAddr, now: Instant) {
        // Only families we run (a datagram of another family cannot be answered right).
        if self.table(from.is_ipv6()).is_none() || from.port() == 0 {
            return;
        }
        let msg = match Message::decode(buf) {
            Ok(m) => m,
            Err(e) => {
                if e.is_query && !self.cfg.read_only {
                    if let Some(tid) = e.tid.filter(|t| t.len() <= 16) {
                        if self.rate_ok(from.ip(), now) {
                            let reply = Message::error(tid, error_code::PROTOCOL, e.reason);
                            self.send(&reply, from);
                        }
                    }
                }
                return;
            }
        };
        match msg.body {
            Body::Query(q) => self.on_query(msg.tid, msg.read_only, q, from, buf.len(), now),
            Body::Response(r) => self.on_response(&msg.tid, msg.ip, r, from, now),
            Body::Error { .. } => self.on_error(&msg.tid, from),
        }
    }

    pub(super) fn take_txn(&mut self, tid: &[u8], from: SocketAddr) -> Option<Txn> {
        let t = u16::from_be_bytes(<[u8; 2]>::try_from(tid).ok()?);
        // Only the address we asked may answer (no spoofed answers from elsewhere).
        if self.txns.get(&t)?.addr != from {
            return None;
        }
        self.txns.remove(&t)
    }
}
