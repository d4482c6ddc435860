//! Loopback addresses and ports for tests that share one test binary (and so run in parallel
//! threads of one process).
//!
//! Rules: a test that needs a fixed address takes it from its module's block below (the
//! block is named in the module docs); anything else binds port 0 and reads the real port,
//! or asks [`fresh_ip`] for an address no other test of the binary uses.
//!
//! Blocks of 127.0.0.x held by modules (same octets in different binaries are fine: the
//! binaries run one after another):
//! - cli: cli_fetch 21-40 and 120-139, tracker_cli 60-79, quic_loopback 100-119,
//!   dht_v6_cli 160-169 (+ `[::1]` ports 26100-26109), lsd_cli 210-219
//! - interop: interop_download 41-49, interop_metadata 61-63, interop_dht 80-99 (+ 127.0.4.x,
//!   127.0.5.x), interop_swarm_dht 141-149, dht_v6_interop 170-179 (+ `[::1]` ports
//!   26120-26129), tracker_interop 127.0.0.1 port 0
//! - tracker: tracker_loopback 1-5 port 0, tracker_https 180-199, tracker_webseed 127.0.0.1
//!   port 0
//! - interop: interop_mse 226-229, interop_lsd 220-225; other_clients_mse uses [`fresh_ip`] and
//!   [`free_port`]
//! - peer, session: 127.0.0.1 port 0 or [`fresh_ip`] port 0 (mse_loopback); simnet tests
//!   use their own `simnet::Network`
//! - portmap, cli_portmap: [`fresh_ip`] (the in-test NAT-PMP/PCP gateway on its port 5351,
//!   the in-test IGD on port 0); miniupnpd: 10.77.x.0/24 on a veth pair of its own

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// A port that was free on `127.0.0.1` a moment ago (bound to 0, then released): for
/// processes that must be told their port on the command line.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// First address handed out by [`fresh_ip`]: 127.0.200.1 and up are no module's block.
const FRESH_BASE: u32 = u32::from_be_bytes([127, 0, 200, 1]);

/// A loopback address no other caller in this test binary gets (127.0.200.1, .2, ...).
pub fn fresh_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(n < 50 * 256, "fresh_ip: block of 127.0.200-249.x exhausted");
    Ipv4Addr::from(FRESH_BASE + n)
}
