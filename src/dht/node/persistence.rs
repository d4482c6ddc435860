//! Warm restarts: the node id and good nodes of both families saved to a JSON state file
//! and loaded at start (BEP 5 recommends keeping the routing table across restarts; BEP 32:
//! one list holds IPv4 and IPv6 nodes).

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use tokio::time::Instant;

use crate::dht::krpc::NodeInfo;
use crate::id::{Id20, NodeId};

use super::state::NodeState;
use super::*;

/// Saved state: node id and good nodes (for a warm restart).
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SavedState {
    pub(super) id: String,
    pub(super) nodes: Vec<(String, SocketAddr)>,
}

/// Loads a state file (both families' nodes in one list; files written before dual stack
/// hold IPv4 or IPv6 nodes only and load the same way).
pub(super) fn load_state(path: &Path) -> Option<(NodeId, Vec<NodeInfo>)> {
    // A missing or corrupt state file only means a cold start.
    let text = std::fs::read_to_string(path).ok()?;
    if text.len() > 1 << 20 {
        return None;
    }
    let s: SavedState = serde_json::from_str(&text).ok()?;
    let id = Id20::from_hex(&s.id).ok()?;
    let nodes = s
        .nodes
        .into_iter()
        .take(2 * MAX_SAVED_NODES)
        .filter_map(|(id, addr)| {
            Some(NodeInfo {
                id: Id20::from_hex(&id).ok()?,
                addr,
            })
        })
        .collect();
    Some((id, nodes))
}

pub(super) fn save_state(path: &Path, id: &NodeId, nodes: &[NodeInfo]) -> io::Result<()> {
    let s = SavedState {
        id: id.to_hex(),
        nodes: nodes.iter().map(|n| (n.id.to_hex(), n.addr)).collect(),
    };
    let text = serde_json::to_string_pretty(&s).map_err(io::Error::other)?;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    // Write then rename so a crash never leaves a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

impl NodeState {
    pub(super) fn save(&self) {
        let Some(path) = &self.cfg.state_file else {
            return;
        };
        if let Err(e) = self.save_to(path) {
            tracing::warn!("could not save DHT state to {}: {e}", path.display());
        }
    }

    pub(super) fn save_to(&self, path: &Path) -> io::Result<()> {
        let now = Instant::now();
        // Both families in one list (addresses say which table they belong to).
        let mut nodes: Vec<NodeInfo> = Vec::new();
        for t in self.tables() {
            nodes.extend(
                t.good_nodes(now)
                    .into_iter()
                    .take(MAX_SAVED_NODES)
                    .map(|e| NodeInfo {
                        id: e.id,
                        addr: e.addr,
                    }),
            );
        }
        save_state(path, &self.id, &nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::krpc::NodeInfo;
    use crate::dht::node::test_util::*;
    use crate::id::Id20;
    use crate::net::Net;
    use std::collections::BTreeSet;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::time::Instant;

    /// Saved state keeps both families; an old single-family file still loads.
    #[test]
    fn dual_stack_state_saves_both_families() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dht.json");
        // A file as written before dual stack (IPv4 nodes only) loads unchanged.
        std::fs::write(
            &p,
            r#"{"id":"0909090909090909090909090909090909090909","nodes":[["0101010101010101010101010101010101010101","1.2.3.4:5"]]}"#,
        )
        .unwrap();
        let (id, nodes) = load_state(&p).unwrap();
        assert_eq!(id, Id20([9; 20]));
        assert_eq!(nodes.len(), 1);
        let mut st = dual(
            "127.0.0.1:6881",
            "[::1]:6881",
            DhtConfig {
                seed: Some(12),
                state_file: Some(p.clone()),
                ..Default::default()
            },
        );
        let now = Instant::now();
        st.table_mut(false).unwrap().heard_response(
            Id20([1; 20]),
            "127.0.0.2:1".parse().unwrap(),
            now,
        );
        st.table_mut(true).unwrap().heard_response(
            Id20([2; 20]),
            "[fd00::2]:1".parse().unwrap(),
            now,
        );
        st.save();
        let (_, nodes) = load_state(&p).unwrap();
        let fams: Vec<bool> = nodes.iter().map(|n| n.addr.is_ipv6()).collect();
        assert_eq!(fams, vec![false, true]);
        // Reloaded into a dual node, each saved node seeds its own family's lookup.
        let cfg = DhtConfig {
            seed: Some(13),
            ..Default::default()
        };
        let locals = [
            "127.0.0.1:6881".parse().unwrap(),
            "[::1]:6881".parse().unwrap(),
        ];
        let mut st = NodeState::new_multi(cfg, &locals, load_state(&p), now);
        st.tick(now);
        let to: BTreeSet<SocketAddr> = st.outbox.iter().map(|(_, a)| *a).collect();
        assert!(to.contains(&"127.0.0.2:1".parse().unwrap()));
        assert!(to.contains(&"[fd00::2]:1".parse().unwrap()));
    }

    #[test]
    fn state_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/dht.json");
        let nodes = vec![NodeInfo {
            id: Id20([1; 20]),
            addr: "1.2.3.4:5".parse().unwrap(),
        }];
        save_state(&p, &Id20([9; 20]), &nodes).unwrap();
        let (id, n) = load_state(&p).unwrap();
        assert_eq!(id, Id20([9; 20]));
        assert_eq!(n, nodes);
        std::fs::write(&p, "{not json").unwrap();
        assert!(load_state(&p).is_none());
    }

    #[tokio::test]
    async fn restart_is_warm_from_state_file() {
        let t = Duration::from_secs(20);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("dht.json");
        let boot = Dht::start(
            Net::Tokio,
            "127.0.2.1:0".parse().unwrap(),
            loopback_cfg(1, vec![]),
        )
        .await
        .unwrap();
        let mut others = Vec::new();
        for i in 0..5u8 {
            let bind = SocketAddr::from(([127, 0, 2, 10 + i], 0));
            let n = Dht::start(
                Net::Tokio,
                bind,
                loopback_cfg(10 + i as u64, vec![boot.local_addr()]),
            )
            .await
            .unwrap();
            tokio::time::timeout(t, n.bootstrapped()).await.unwrap();
            others.push(n);
        }
        let cfg = DhtConfig {
            state_file: Some(state.clone()),
            ..loopback_cfg(50, vec![boot.local_addr()])
        };
        let a = Dht::start(Net::Tokio, "127.0.2.50:0".parse().unwrap(), cfg)
            .await
            .unwrap();
        tokio::time::timeout(t, a.bootstrapped()).await.unwrap();
        let id = a.node_id();
        a.shutdown().await;
        assert!(state.exists());
        // Restart with no bootstrap at all: the saved nodes are enough.
        let cfg = DhtConfig {
            state_file: Some(state.clone()),
            ..loopback_cfg(51, vec![])
        };
        let b = Dht::start(Net::Tokio, "127.0.2.50:0".parse().unwrap(), cfg)
            .await
            .unwrap();
        assert_eq!(b.node_id(), id);
        tokio::time::timeout(t, b.bootstrapped()).await.unwrap();
        assert!(b.stats().await.table_size >= 5);
        b.shutdown().await;
    }
}
