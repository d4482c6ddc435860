//! Mainline DHT (BEP 5, with BEP 32, 33, 42, 43, 51 extensions).
//!
//! Pure cores: [`krpc`] (codec), [`table`] (routing table), [`lookup`] (iterative lookup
//! state machine), [`store`] (tokens and peer store). The node task in [`node`] owns them and
//! does the I/O through [`crate::net`].

pub mod krpc;
pub mod lookup;
pub mod node;
pub mod store;
pub mod table;

pub use node::{Dht, DhtConfig, DhtStats, LookupHandle, LookupSummary, DEFAULT_BOOTSTRAP};
