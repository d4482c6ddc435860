//! Keeping the node healthy over time (BEP 5): bootstrap and re-bootstrap, the periodic
//! tick (timed-out transactions, bucket refresh, pings of questionable nodes, periodic
//! saves), and the BEP 42 node id re-derived once enough responders agree on our external
//! IP.

use std::net::{IpAddr, SocketAddr};

use tokio::time::Instant;

use crate::dht::krpc::{QueryKind, Want};
use crate::dht::lookup::LookupKind;
use crate::dht::table::{bep42_node_id, bep42_valid, is_local, Table};
use crate::id::NodeId;

use super::state::{fi, NodeState, Purpose, Waiter};
use super::*;

impl NodeState {
    pub(super) fn bootstrap(&mut self, now: Instant) {
        self.last_bootstrap = Some(now);
        self.start_lookup(
            self.id,
            LookupKind::FindNode,
            Waiter::Internal,
            None,
            true,
            None,
            now,
        );
    }

    /// Housekeeping and lookup progress; called after every event.
    pub(super) fn tick(&mut self, now: Instant) {
        // Transactions that timed out.
        let timeout = self.cfg.lookup.timeout;
        let expired: Vec<u16> = self
            .txns
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(t.sent) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        for tid in expired {
            if let Some(t) = self.txns.remove(&tid) {
                self.stats.timeouts += 1;
                if let Some(id) = t.expect {
                    if let Some(table) = self.table_mut(t.addr.is_ipv6()) {
                        table.failed(&id, now);
                    }
                }
                self.txn_failed(t.purpose, t.addr);
            }
        }
        if now >= self.next_maintenance {
            self.next_maintenance = now + MAINTENANCE_EVERY;
            self.maintenance(now);
        }
        self.drive_lookups(now);
    }

    pub(super) fn maintenance(&mut self, now: Instant) {
        self.tokens.maybe_rotate(now, &mut self.rng);
        self.store.expire(now);
        let any_empty = self.tables().any(Table::is_empty);
        let all_empty = self.tables().all(Table::is_empty);
        let need_bootstrap = match self.last_bootstrap {
            None => true,
            Some(t) => {
                any_empty
                    && now.saturating_duration_since(t) >= self.rebootstrap_wait
                    && !self.lookups.values().any(|l| l.bootstrap)
            }
        };
        if need_bootstrap
            && (!self.cfg.bootstrap.is_empty() || !self.saved_nodes.is_empty() || !all_empty)
        {
            self.bootstrap(now);
            if self.last_bootstrap.is_some() && !all_empty {
                // One family works and the other stays empty (no IPv6 nodes out there?):
                // try again, but less and less often.
                self.rebootstrap_wait = (self.rebootstrap_wait * 2).min(REBOOTSTRAP_MAX);
            }
        } else if need_bootstrap && !self.bootstrapped {
            // Nothing to bootstrap from: we are the first node (e.g. a private swarm's root).
            self.last_bootstrap = Some(now);
            self.finish_bootstrap(now);
        }
        if !any_empty {
            self.rebootstrap_wait = REBOOTSTRAP_EVERY;
        }
        if self.second_pass_at.is_some_and(|t| now >= t) {
            self.second_pass_at = None;
            self.start_lookup(
                self.id,
                LookupKind::FindNode,
                Waiter::Internal,
                None,
                false,
                None,
                now,
            );
            for v6 in self.families() {
                let targets = match self.tables[fi(v6)].as_mut() {
                    Some(t) => t.all_refresh_targets(now, &mut self.rng),
                    None => Vec::new(),
                };
                for t in targets {
                    self.start_lookup(
                        t,
                        LookupKind::FindNode,
                        Waiter::Internal,
                        None,
                        false,
                        Some(v6),
                        now,
                    );
                }
            }
        }
        for v6 in self.families() {
            // Bucket refresh (BEP 5), per family: a stale IPv6 bucket is refreshed with
            // IPv6 queries.
            let targets = match self.tables[fi(v6)].as_mut() {
                Some(t) if self.bootstrapped => t.refresh_targets(now, &mut self.rng),
                _ => Vec::new(),
            };
            for t in targets {
                self.start_lookup(
                    t,
                    LookupKind::FindNode,
                    Waiter::Internal,
                    None,
                    false,
                    Some(v6),
                    now,
                );
            }
            let pings = match self.tables[fi(v6)].as_mut() {
                Some(t) => t.pings_due(now, 8),
                None => Vec::new(),
            };
            for (id, addr) in pings {
                self.send_query(
                    addr,
                    Some(id),
                    QueryKind::Ping,
                    Want::default(),
                    Purpose::Ping,
                    now,
                );
            }
        }
        if now >= self.next_save {
            self.next_save = now + SAVE_EVERY;
            self.save();
        }
    }

    pub(super) fn finish_bootstrap(&mut self, now: Instant) {
        self.bootstrapped = true;
        // Nodes that joined after our self-lookup (e.g. a whole swarm starting at once) do
        // not know us and we do not know them, and a self-lookup leaves the far buckets
        // thin. A little later: one more self-lookup (finds our true neighbours, puts us in
        // their tables) and one lookup per bucket (fills the far buckets).
        if !self.cfg.bootstrap.is_empty() || !self.saved_nodes.is_empty() {
            self.second_pass_at = Some(now + SECOND_PASS_AFTER);
        }
        // Saved nodes have served their purpose once we have a table.
        if self.tables().any(|t| !t.is_empty()) {
            self.saved_nodes.clear();
        }
        for w in self.bootstrap_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    /// BEP 42: learn our external IP from the `ip` field of responses; once enough distinct
    /// responders agree and our id does not match that IP, derive a conforming id (once).
    pub(super) fn vote_external(&mut self, reported: SocketAddr, voter: IpAddr, now: Instant) {
        let ip = reported.ip();
        if ip.is_unspecified() || ip.is_ipv6() != self.v6() {
            return;
        }
        if !self.ip_votes.contains_key(&ip) && self.ip_votes.len() >= MAX_IP_CANDIDATES {
            return;
        }
        let voters = self.ip_votes.entry(ip).or_default();
        if voters.len() < EXTERNAL_IP_VOTES * 4 {
            voters.insert(voter);
        }
        if voters.len() < EXTERNAL_IP_VOTES {
            return;
        }
        self.stats.external_addr = Some(reported);
        if self.id_fixed || is_local(ip) || bep42_valid(&self.id, ip) {
            return;
        }
        self.id_fixed = true;
        let new_id = bep42_node_id(ip, &mut self.rng);
        tracing::info!("external IP {ip}: node id {} -> {new_id} (BEP 42)", self.id);
        self.change_id(new_id, now);
    }

    pub(super) fn change_id(&mut self, new_id: NodeId, now: Instant) {
        // One id for both families (BEP 32 recommends it): both tables are rebuilt.
        for slot in self.tables.iter_mut() {
            let Some(old) = slot.take() else { continue };
            let mut fresh = Table::new(new_id, old.config().clone(), now);
            for e in old.good_nodes(now) {
                fresh.heard_response(e.id, e.addr, now);
            }
            *slot = Some(fresh);
        }
        self.id = new_id;
        *self.shared_id.lock().unwrap_or_else(|e| e.into_inner()) = new_id;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::krpc::{Body, Message, Response};
    use crate::dht::table::bep42_valid;
    use crate::id::Id20;
    use std::net::SocketAddr;
    use tokio::time::Instant;

    #[test]
    fn bep42_id_rederived_from_agreeing_external_ip() {
        let boots: Vec<SocketAddr> = (1..=4u8)
            .map(|i| SocketAddr::from(([127, 0, 0, 10 + i], 1)))
            .collect();
        let cfg = DhtConfig {
            seed: Some(6),
            bootstrap: boots.clone(),
            ..Default::default()
        };
        let mut st = NodeState::new(cfg, "127.0.0.1:6881".parse().unwrap(), None, Instant::now());
        let old = st.id;
        let now = Instant::now();
        st.tick(now);
        let sent: Vec<(Vec<u8>, SocketAddr)> = st.outbox.drain(..).collect();
        assert_eq!(sent.len(), 3, "alpha = 3 bootstrap queries");
        let external: SocketAddr = "203.0.113.7:6881".parse().unwrap();
        for (i, (b, to)) in sent.iter().enumerate() {
            let q = Message::decode(b).unwrap();
            let resp = Message {
                tid: q.tid,
                version: None,
                read_only: false,
                ip: Some(external),
                body: Body::Response(Response {
                    id: Id20([i as u8 + 1; 20]),
                    ..Default::default()
                }),
            };
            st.packet(&resp.encode(), *to, now);
            if i < 2 {
                assert_eq!(st.id, old, "two votes are not enough");
            }
        }
        assert_ne!(st.id, old);
        assert!(bep42_valid(&st.id, external.ip()));
        assert_eq!(*st.shared_id.lock().unwrap(), st.id);
        assert_eq!(st.stats.external_addr, Some(external));
        assert_eq!(st.stats().table_size, 3, "table carried over");
    }
}
