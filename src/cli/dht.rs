//! `magnetfetch dht lookup|serve`: the DHT node (BEP 5) from the command line.
//!
//! No protocol logic here: argument parsing, name resolution of bootstrap hosts, printing.
//!
//! Binding (BEP 32 dual stack): `--bind IP:PORT` may be given once per address family.
//! One IPv4 address: an IPv4-only node; one IPv6 address (e.g. `[::1]:6881`): IPv6 only;
//! one of each: a dual-stack node with a routing table per family. Without `--bind`:
//! 0.0.0.0:6881 (or a free port) plus, when the host has IPv6, [::] on the same port.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use tokio::time::Instant;

use crate::dht::{Dht, DhtConfig, DEFAULT_BOOTSTRAP};
use crate::id::Id20;
use crate::net::Net;

/// Default bind address; when its port is taken a free port is used instead.
const DEFAULT_BIND: &str = "0.0.0.0:6881";
/// Default IPv6 bind (port 0: the IPv4 socket's port), used only when it can be bound.
const DEFAULT_BIND6: &str = "[::]:0";

/// Checks repeated `--bind` values: at most one IPv4 and one IPv6 address; IPv4 first.
pub fn check_binds(binds: &[SocketAddr]) -> Result<Vec<SocketAddr>, String> {
    let mut v = binds.to_vec();
    v.sort_by_key(SocketAddr::is_ipv6);
    match v.as_slice() {
        [] | [_] => Ok(v),
        [a, b] if a.is_ipv6() != b.is_ipv6() => Ok(v),
        _ => Err("--bind: at most one IPv4 and one IPv6 address".to_string()),
    }
}

#[derive(Args, Debug)]
pub struct DhtArgs {
    #[command(subcommand)]
    pub command: DhtCommand,
}

#[derive(Subcommand, Debug)]
pub enum DhtCommand {
    /// Find peers for an info-hash; prints each peer as IP:PORT as it is found.
    Lookup(LookupArgs),
    /// Run a long-lived DHT node (e.g. the bootstrap node of a private swarm).
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
pub struct LookupArgs {
    /// Info-hash: 40 hex or 32 base32 characters.
    pub infohash: String,
    /// Bootstrap nodes HOST:PORT,... (replaces the public routers).
    #[arg(long, value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// UDP address to bind; repeat for dual stack (one IPv4, one IPv6: BEP 32).
    /// Default 0.0.0.0:6881 (falling back to a free port) plus [::] on the same port if
    /// the host has IPv6
    #[arg(long, value_name = "IP:PORT")]
    pub bind: Vec<SocketAddr>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// UDP address to bind; repeat for dual stack (one IPv4, one IPv6: BEP 32).
    /// Default 0.0.0.0:6881 (falling back to a free port) plus [::] on the same port if
    /// the host has IPv6
    #[arg(long, value_name = "IP:PORT")]
    pub bind: Vec<SocketAddr>,
    /// Bootstrap nodes HOST:PORT,... (replaces the public routers).
    #[arg(long, value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Do not bootstrap at all (the first node of a private swarm).
    #[arg(long)]
    pub no_bootstrap: bool,
    /// Directory for the node id and known nodes (dht.json), reused at the next start.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Seconds between table-size log lines.
    #[arg(long, default_value_t = 30)]
    pub log_every: u64,
}

/// Runs `magnetfetch dht ...` and returns the exit code.
pub fn run(args: DhtArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return 1;
        }
    };
    match args.command {
        DhtCommand::Lookup(a) => rt.block_on(lookup(a)),
        DhtCommand::Serve(a) => rt.block_on(serve(a)),
    }
}

/// Parses an info-hash in hex or base32 (as found in magnet links).
pub fn parse_infohash(s: &str) -> Option<Id20> {
    if let Ok(id) = Id20::from_hex(s) {
        return Some(id);
    }
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 20];
    let (mut acc, mut bits, mut n) = (0u64, 0u32, 0usize);
    for c in s.bytes() {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
        }
    }
    (n == 20).then_some(Id20(out))
}

/// Like [`resolve`], keeping the addresses of either wanted family (dual stack: the node
/// uses each with the socket of its family).
pub async fn resolve_families(names: Vec<String>, v4: bool, v6: bool) -> Vec<SocketAddr> {
    let found = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for n in names {
            match n.to_socket_addrs() {
                Ok(addrs) => {
                    let before = out.len();
                    out.extend(addrs.filter(|a: &SocketAddr| if a.is_ipv6() { v6 } else { v4 }));
                    if out.len() == before {
                        eprintln!("warning: bootstrap {n}: no address of the right family");
                    }
                }
                Err(e) => eprintln!("warning: bootstrap {n}: {e}"),
            }
        }
        out
    })
    .await;
    let mut v = found.unwrap_or_default();
    v.sort();
    v.dedup();
    v
}

/// Families the node will run, from the `--bind` list (already checked): (v4, v6).
fn families(binds: &[SocketAddr]) -> (bool, bool) {
    if binds.is_empty() {
        // Default: IPv4, and IPv6 if it can be bound (its bootstrap addresses cost nothing).
        return (true, true);
    }
    (
        binds.iter().any(|b| b.is_ipv4()),
        binds.iter().any(SocketAddr::is_ipv6),
    )
}

async fn start(binds: Vec<SocketAddr>, config: DhtConfig) -> Result<Dht, String> {
    let net = Net::Tokio;
    if !binds.is_empty() {
        return Dht::start_multi(net, &binds, config).await.map_err(|e| {
            let list: Vec<String> = binds.iter().map(|b| b.to_string()).collect();
            format!("cannot bind {}: {e}", list.join(" and "))
        });
    }
    let bind: SocketAddr = DEFAULT_BIND.parse().expect("valid default");
    let sock = match net.bind_udp(bind).await {
        Ok(s) => s,
        Err(e) => {
            let mut any = bind;
            any.set_port(0);
            net.bind_udp(any)
                .await
                .map_err(|e2| format!("cannot bind {bind} ({e}) or {any}: {e2}"))?
        }
    };
    let mut socks = vec![sock];
    // IPv6 on the same port when the host has it; silently IPv4-only otherwise.
    if let Ok(port) = socks[0].local_addr().map(|a| a.port()) {
        let mut b6: SocketAddr = DEFAULT_BIND6.parse().expect("valid default");
        b6.set_port(port);
        let mut s6 = net.bind_udp(b6).await;
        if s6.is_err() {
            b6.set_port(0);
            s6 = net.bind_udp(b6).await;
        }
        if let Ok(s6) = s6 {
            socks.push(s6);
        }
    }
    Dht::start_on_sockets(socks, config).map_err(|e| format!("cannot start the DHT: {e}"))
}

fn bootstrap_names(given: Vec<String>) -> Vec<String> {
    let given: Vec<String> = given.into_iter().filter(|s| !s.trim().is_empty()).collect();
    if given.is_empty() {
        DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect()
    } else {
        given
    }
}

async fn lookup(a: LookupArgs) -> i32 {
    let Some(ih) = parse_infohash(a.infohash.trim()) else {
        eprintln!("error: info-hash must be 40 hex or 32 base32 characters");
        return 2;
    };
    let binds = match check_binds(&a.bind) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let (v4, v6) = families(&binds);
    let bootstrap = resolve_families(bootstrap_names(a.bootstrap), v4, v6).await;
    if bootstrap.is_empty() {
        eprintln!("error: no usable bootstrap node");
        return 1;
    }
    let config = DhtConfig {
        bootstrap,
        ..Default::default()
    };
    // Binding is a runtime failure (exit 1), not a usage error.
    let dht = match start(binds, config).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {}", super::one_line(&e));
            return 1;
        }
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.timeout);
    let mut h = dht.lookup(ih, None, false).await;
    let mut found = 0usize;
    loop {
        match tokio::time::timeout_at(deadline, h.peers.recv()).await {
            Ok(Some(p)) => {
                println!("{p}");
                found += 1;
            }
            Ok(None) => break,
            Err(_) => {
                eprintln!("timeout after {}s", a.timeout);
                break;
            }
        }
    }
    let st = dht.stats().await;
    let visited = match h.done.try_recv() {
        Ok(s) => s.nodes_visited as u64,
        Err(_) => st.responses,
    };
    eprintln!(
        "peers: {found}, queries sent: {}, responses: {}, nodes visited: {visited}, time: {:.2}s",
        st.queries_sent,
        st.responses,
        started.elapsed().as_secs_f64()
    );
    dht.shutdown().await;
    if found > 0 {
        0
    } else {
        1
    }
}

async fn serve(a: ServeArgs) -> i32 {
    let binds = match check_binds(&a.bind) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let (v4, v6) = families(&binds);
    let bootstrap = if a.no_bootstrap {
        Vec::new()
    } else {
        resolve_families(bootstrap_names(a.bootstrap), v4, v6).await
    };
    let state_file = a.state_dir.map(|d| d.join("dht.json"));
    let config = DhtConfig {
        bootstrap,
        state_file,
        ..Default::default()
    };
    // Binding is a runtime failure (exit 1), not a usage error.
    let dht = match start(binds, config).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {}", super::one_line(&e));
            return 1;
        }
    };
    println!("node id: {}", dht.node_id());
    for a in dht.local_addrs() {
        println!("listening on: {a}");
    }
    let every = Duration::from_secs(a.log_every.max(1));
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                let s = dht.stats().await;
                eprintln!(
                    "table: {} nodes (IPv4 {}, IPv6 {}), stored peers: {}, queries in: {}, out: {}, responses: {}",
                    s.table_size, s.table_v4, s.table_v6, s.peers_stored, s.queries_received,
                    s.queries_sent, s.responses
                );
            }
        }
    }
    eprintln!("saving state and stopping");
    dht.shutdown().await;
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infohash_hex_and_base32() {
        let hex = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
        let id = parse_infohash(hex).unwrap();
        assert_eq!(id.to_hex(), hex);
        // Same hash in base32.
        assert_eq!(parse_infohash("YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK"), Some(id));
        assert_eq!(parse_infohash("yex6dqdlxisuvhoj6um3gnnkpqjwpkek"), Some(id));
        assert!(parse_infohash("YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKE1").is_none());
        assert!(parse_infohash("abc").is_none());
    }

    #[test]
    fn binds_one_per_family() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            check_binds(&[a("[::1]:1"), a("127.0.0.1:1")]),
            Ok(vec![a("127.0.0.1:1"), a("[::1]:1")])
        );
        assert_eq!(check_binds(&[a("[::1]:1")]), Ok(vec![a("[::1]:1")]));
        assert!(check_binds(&[a("127.0.0.1:1"), a("127.0.0.2:1")]).is_err());
        assert_eq!(families(&[]), (true, true));
        assert_eq!(families(&[a("[::1]:1")]), (false, true));
    }
}
