//! BEP 32 with the `magnetfetch` binary over real IPv6 loopback (`::1`, ports 261xx; IPv4
//! side on 127.0.0.160-179): `dht serve` as the bootstrap node, a `seed` bound on IPv6 only,
//! then `dht lookup` and `fetch` finding it over IPv6, and a dual-stack `fetch` (one IPv4
//! and one IPv6 `--bind`) that knows only the bootstrap's IPv4 address and still finds the
//! IPv6-only seeder (through `want`/`nodes6` answers) and downloads from it over TCP/IPv6.
//!
//! Skips loudly when the machine has no IPv6 loopback.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{dht_serve, random_bytes, start_seeder, Proc, BIN};

fn serve(binds: &[&str]) -> Proc {
    dht_serve(binds, &["--log-every", "1"])
}

fn have_ipv6_loopback() -> bool {
    crate::support::require_or_skip("ipv6-loopback")
}

fn infohash(magnet: &str) -> String {
    magnet
        .strip_prefix("magnet:?xt=urn:btih:")
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string()
}

/// `dht lookup` until it prints `want` (the seeder announces a moment after it starts).
fn lookup_until(ih: &str, args: &[&str], want: &str) -> String {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new(BIN)
            .args(["dht", "lookup", ih, "--timeout", "5"])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if stdout.lines().any(|l| l == want) {
            assert_eq!(out.status.code(), Some(0));
            return stdout;
        }
        assert!(
            Instant::now() < end,
            "lookup never found {want}: stdout {stdout:?} stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn fetch(magnet: &str, args: &[&str], dir: &Path, name: &str) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("fetch")
        .arg(magnet)
        .args(args)
        .arg("-o")
        .arg(dir.join(name))
        .arg("--state-dir")
        .arg(dir.join(format!("state-{name}")))
        .args(["--json", "--metadata-timeout", "20s"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "fetch {name}: stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str(&last).unwrap()
}

#[test]
fn ipv6_seed_found_and_fetched_over_ipv6_and_dual_stack() {
    if !have_ipv6_loopback() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(512 * 1024 + 33, 61);
    let file = dir.path().join("six.bin");
    std::fs::write(&file, &data).unwrap();

    // Bootstrap node: dual stack.
    let _boot = serve(&["127.0.0.160:26100", "[::1]:26100"]);
    // Seeder: IPv6 only, bootstrapped over IPv6.
    let (_seeder, magnet) = start_seeder(
        &file,
        &["--bind", "[::1]:26101", "--bootstrap", "[::1]:26100"],
        &dir.path().join("state-seed"),
    );
    assert!(
        !magnet.contains("x.pe"),
        "the test must find the seeder through the DHT: {magnet}"
    );
    let ih = infohash(&magnet);

    // An IPv6-only lookup finds it.
    lookup_until(
        &ih,
        &["--bind", "[::1]:26102", "--bootstrap", "[::1]:26100"],
        "[::1]:26101",
    );
    // A dual-stack lookup that knows only the bootstrap's IPv4 address finds it too.
    lookup_until(
        &ih,
        &[
            "--bind",
            "127.0.0.161:26103",
            "--bind",
            "[::1]:26103",
            "--bootstrap",
            "127.0.0.160:26100",
        ],
        "[::1]:26101",
    );
    // An IPv4-only lookup cannot: the two DHTs are separate (BEP 32).
    let out = Command::new(BIN)
        .args(["dht", "lookup", &ih, "--timeout", "5"])
        .args([
            "--bind",
            "127.0.0.162:26104",
            "--bootstrap",
            "127.0.0.160:26100",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "no peer over IPv4");
    assert!(out.stdout.is_empty());

    // Fetch over IPv6 only.
    let done = fetch(
        &magnet,
        &["--bind", "[::1]:26105", "--bootstrap", "[::1]:26100"],
        dir.path(),
        "v6",
    );
    assert_eq!(done["event"], "done");
    assert_eq!(std::fs::read(dir.path().join("v6/six.bin")).unwrap(), data);
    // Dual-stack fetch bootstrapped from the IPv4 address only.
    let done = fetch(
        &magnet,
        &[
            "--bind",
            "127.0.0.163:26106",
            "--bind",
            "[::1]:0",
            "--bootstrap",
            "127.0.0.160:26100",
        ],
        dir.path(),
        "dual",
    );
    assert_eq!(done["event"], "done");
    assert_eq!(
        std::fs::read(dir.path().join("dual/six.bin")).unwrap(),
        data
    );
}

#[test]
fn bad_bind_lists_are_refused() {
    let out = Command::new(BIN)
        .args(["dht", "lookup", "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"])
        .args(["--bind", "127.0.0.164:26107", "--bind", "127.0.0.165:26107"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at most one IPv4 and one IPv6"), "{err}");
}

/// The default dual-stack bind works because IPv6 sockets are IPV6_V6ONLY: `[::]:P` binds
/// beside `0.0.0.0:P` (UDP and TCP). And a dual-stack session listens on both families on
/// one port, with a DHT node running a table per family.
#[tokio::test]
async fn wildcard_v4_and_v6_bind_side_by_side_and_session_dual_stack() {
    use magnetfetch::internals::net::Net;
    use magnetfetch::internals::session::{Session, SessionConfig};
    use std::net::SocketAddr;
    if !have_ipv6_loopback() {
        return;
    }
    let net = Net::Tokio;
    let u4 = net.bind_udp("0.0.0.0:0".parse().unwrap()).await.unwrap();
    let p = u4.local_addr().unwrap().port();
    let u6 = net
        .bind_udp(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, p)))
        .await
        .expect("[::]:P beside 0.0.0.0:P (v6only)");
    assert_eq!(u6.local_addr().unwrap().port(), p);
    let l4 = net.listen("0.0.0.0:0".parse().unwrap()).await.unwrap();
    let p = l4.local_addr().unwrap().port();
    net.listen(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, p)))
        .await
        .expect("TCP [::]:P beside 0.0.0.0:P (v6only)");

    let cfg = SessionConfig {
        listen: Some("127.0.0.166:0".parse().unwrap()),
        dht: Some(Default::default()),
        ..SessionConfig::default()
    };
    let s = Session::start_dual_stack(cfg, Some("[::1]:0".parse().unwrap()))
        .await
        .unwrap();
    let (a4, a6) = (s.listen_addr().unwrap(), s.listen_addr6().unwrap());
    assert!(a4.is_ipv4() && a6.is_ipv6());
    assert_eq!(a4.port(), a6.port(), "one port for both families");
    let dht = s.dht().unwrap();
    assert_eq!(dht.local_addrs().len(), 2);
    assert!(dht.local_addrs().iter().all(|a| a.port() == a4.port()));
    // TCP over IPv6 reaches the session's listener.
    net.connect(a6).await.expect("connect over IPv6");
    // Two addresses of one family are refused.
    let cfg = SessionConfig {
        listen: Some("127.0.0.167:0".parse().unwrap()),
        ..SessionConfig::default()
    };
    assert!(
        Session::start_dual_stack(cfg, Some("127.0.0.168:0".parse().unwrap()))
            .await
            .is_err()
    );
}
