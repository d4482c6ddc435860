//! Mainline DHT (BEP 5, with BEP 32, 33, 42, 43, 51 extensions).
//!
//! Pure cores: [`krpc`] (codec), [`table`] (routing table), [`lookup`] (iterative lookup
//! state machine), [`store`] (tokens and peer store). The node task in [`node`] owns them and
//! does the I/O through [`crate::net`]; its protocol state is split by seam (queries,
//! responses, lookups, maintenance, persistence).
//!
//! IPv6 (BEP 32): a node runs on one socket (IPv4 or IPv6) or on two, one per family (dual
//! stack, [`Dht::start_multi`] / [`Dht::start_on_sockets`]). The IPv4 and IPv6 DHTs are
//! separate: a dual-stack node keeps a routing table per family (same node id), fills its
//! IPv6 table through IPv4 answers while it is thin (`want: [n4, n6]` and `nodes6`), runs
//! every lookup in both families and announces in both. Answers honour the asker's `want`,
//! carry `values` of the asker's family only, and are trimmed to stay small (no
//! amplification, BEP 32's 1024-byte limit).

pub mod krpc;
pub mod lookup;
pub mod node;
pub mod store;
pub mod table;

pub use node::{Dht, DhtConfig, LookupSummary, DEFAULT_BOOTSTRAP};
