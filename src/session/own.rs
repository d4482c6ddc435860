//! Our own addresses, so that no peer source makes us count or dial ourselves.
//!
//! A DHT lookup returns the announce we just made (BEP 5 records the source address of
//! `announce_peer`), a tracker lists us among its peers (BEP 3/15), PEX (BEP 11) echoes us
//! back. Dialling that address ends in a handshake with our own peer id (BEP 3), after a
//! connect and a handshake wasted, and a "peer known" that is no peer. Every source asks
//! [`OwnAddrs::is_own`] first.
//!
//! What is ours: each listen address; with an unspecified bind (`0.0.0.0`, `[::]`), every
//! loopback address and every address of a local interface on that port; and every address
//! where a handshake met our own peer id (learned, bounded), which covers an external
//! address behind a NAT that forwards back to us.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

/// Addresses learned from self-connections, at most (oldest forgotten first is not worth
/// the bookkeeping: past the cap new ones are simply not remembered).
const MAX_LEARNED: usize = 64;

#[derive(Debug, Default)]
pub struct OwnAddrs {
    /// The listen addresses (IPv4 and IPv6 when dual-stack).
    listen: Vec<SocketAddr>,
    /// Addresses of local interfaces, used when a listen address is unspecified.
    local_ips: Vec<IpAddr>,
    learned: Mutex<BTreeSet<SocketAddr>>,
}

impl OwnAddrs {
    /// `listen`: the bound addresses; `local_ips`: this host's interface addresses (asked
    /// only when a bind is unspecified; empty in simulations, where a node has one address).
    pub fn new(listen: Vec<SocketAddr>, local_ips: Vec<IpAddr>) -> Self {
        OwnAddrs {
            listen,
            local_ips,
            learned: Mutex::new(BTreeSet::new()),
        }
    }

    /// Is `a` one of our own addresses?
    pub fn is_own(&self, a: SocketAddr) -> bool {
        let ip = canonical(a.ip());
        let matches_listen = self.listen.iter().any(|l| {
            l.port() == a.port()
                && (canonical(l.ip()) == ip
                    || (l.ip().is_unspecified()
                        && l.is_ipv4() == ip.is_ipv4()
                        && (ip.is_loopback()
                            || ip.is_unspecified()
                            || self.local_ips.contains(&ip))))
        });
        matches_listen || lock(&self.learned).contains(&a)
    }

    /// A handshake at `a` answered with our own peer id: never again.
    pub fn learn(&self, a: SocketAddr) {
        let mut l = lock(&self.learned);
        if l.len() < MAX_LEARNED {
            l.insert(a);
        }
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// This host's interface addresses (`getifaddrs(3)`); empty if that fails.
pub fn local_interface_ips() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we only read and then free with
    // freeifaddrs; each node's `ifa_addr` is null or points to a sockaddr of the family it
    // names.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() && out.len() < 1024 {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        // s_addr holds the address in network order.
                        out.push(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_specific_bind_is_only_itself() {
        let own = OwnAddrs::new(vec![sa("127.0.0.33:7103")], vec![]);
        assert!(own.is_own(sa("127.0.0.33:7103")));
        assert!(own.is_own(sa("[::ffff:127.0.0.33]:7103")));
        assert!(!own.is_own(sa("127.0.0.34:7103")));
        assert!(!own.is_own(sa("127.0.0.33:7104")));
    }

    #[test]
    fn an_unspecified_bind_is_every_local_address_on_its_port() {
        let own = OwnAddrs::new(
            vec![sa("0.0.0.0:6881"), sa("[::]:6881")],
            vec![
                "192.168.1.7".parse().unwrap(),
                "2001:db8::7".parse().unwrap(),
            ],
        );
        assert!(own.is_own(sa("127.0.0.1:6881")));
        assert!(own.is_own(sa("127.9.9.9:6881")));
        assert!(own.is_own(sa("192.168.1.7:6881")));
        assert!(own.is_own(sa("[::1]:6881")));
        assert!(own.is_own(sa("[2001:db8::7]:6881")));
        assert!(!own.is_own(sa("192.168.1.8:6881")));
        assert!(!own.is_own(sa("127.0.0.1:6882")));
    }

    #[test]
    fn a_self_connection_is_learned_and_bounded() {
        let own = OwnAddrs::new(vec![sa("10.0.0.1:1")], vec![]);
        assert!(!own.is_own(sa("203.0.113.5:6881")));
        own.learn(sa("203.0.113.5:6881"));
        assert!(own.is_own(sa("203.0.113.5:6881")));
        for i in 0..1000u32 {
            own.learn(SocketAddr::from((i.to_be_bytes(), 9)));
        }
        assert_eq!(lock(&own.learned).len(), MAX_LEARNED);
    }

    #[test]
    fn interfaces_include_loopback() {
        let ips = local_interface_ips();
        assert!(ips.iter().any(IpAddr::is_loopback), "{ips:?}");
    }
}
