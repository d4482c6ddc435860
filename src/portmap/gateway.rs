//! The default gateway, where NAT-PMP (RFC 6886) and PCP (RFC 6887) requests go when no
//! `--gateway` is given: read from Linux's IPv4 routing table, `/proc/net/route`.

use std::net::Ipv4Addr;

/// `RTF_UP | RTF_GATEWAY`: a usable route through a gateway.
const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;

/// The gateway of the default route (destination 0.0.0.0/0) in the text of
/// `/proc/net/route`; the first one when there are several (lowest metric first is the
/// kernel's order of insertion, not a promise, so the smallest metric wins).
pub fn parse_routes(text: &str) -> Option<Ipv4Addr> {
    let mut best: Option<(u32, Ipv4Addr)> = None;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        if f.len() < 8 {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let (Some(dest), Some(gw), Some(flags), Ok(metric), Some(mask)) = (
            hex(f[1]),
            hex(f[2]),
            hex(f[3]),
            f[6].parse::<u32>(),
            hex(f[7]),
        ) else {
            continue;
        };
        if dest != 0 || mask != 0 || flags & (RTF_UP | RTF_GATEWAY) != RTF_UP | RTF_GATEWAY {
            continue;
        }
        // The kernel prints the address in host byte order of a little-endian u32.
        let ip = Ipv4Addr::from(gw.swap_bytes());
        if best.is_none_or(|(m, _)| metric < m) {
            best = Some((metric, ip));
        }
    }
    best.map(|(_, ip)| ip)
}

/// The default IPv4 gateway of this host, if the routing table names one.
pub fn default_gateway() -> Option<Ipv4Addr> {
    parse_routes(&std::fs::read_to_string("/proc/net/route").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_gateway() {
        let t =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                 wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
                 eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n";
        assert_eq!(parse_routes(t), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(parse_routes("Iface\n"), None);
        assert_eq!(parse_routes("h\nx 00000000 zz 0003 0 0 0 00000000\n"), None);
        // Down or not through a gateway: not a default gateway.
        assert_eq!(
            parse_routes("h\neth0 00000000 0101A8C0 0002 0 0 0 00000000\n"),
            None
        );
    }
}
