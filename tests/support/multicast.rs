//! IPv4 multicast on the loopback interface, for the Local Service Discovery tests (BEP 14
//! announces go to 239.192.152.143:6771). Linux's `lo` carries multicast only with its
//! `multicast` flag and a route for 239.0.0.0/8: [`loopback_multicast`] sets both up when it
//! can (as root; idempotent, a route that exists is fine) and then proves the path with a
//! datagram to the group.

use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::Duration;

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 192, 152, 143);

fn ip(args: &[&str]) -> String {
    match Command::new("ip").args(args).output() {
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => e.to_string(),
    }
}

/// Can processes on loopback exchange IPv4 multicast? Sets it up first; prints a loud SKIP
/// and returns false where the kernel (or a lack of privileges) refuses.
pub fn loopback_multicast() -> bool {
    let e1 = ip(&["link", "set", "lo", "multicast", "on"]);
    let e2 = ip(&["route", "add", "239.0.0.0/8", "dev", "lo"]);
    match probe() {
        Ok(()) => true,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIP: no IPv4 multicast on lo ({e}; `ip link set lo multicast on`: {e1:?}; \
                 `ip route add 239.0.0.0/8 dev lo`: {e2:?}); LSD test not run ***\n"
            );
            false
        }
    }
}

fn probe() -> std::io::Result<()> {
    let rx = UdpSocket::bind("0.0.0.0:0")?;
    rx.join_multicast_v4(&GROUP, &Ipv4Addr::LOCALHOST)?;
    rx.set_read_timeout(Some(Duration::from_secs(2)))?;
    let port = rx.local_addr()?.port();
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    tx.set_multicast_loop_v4(true)?;
    let token = format!("probe {}", std::process::id());
    tx.send_to(token.as_bytes(), (GROUP, port))?;
    let mut buf = [0u8; 64];
    loop {
        let (n, _) = rx.recv_from(&mut buf)?;
        if &buf[..n] == token.as_bytes() {
            return Ok(());
        }
    }
}
