//! The port mapper against a real router daemon: `miniupnpd` (UPnP IGD, NAT-PMP and PCP)
//! in a network namespace, with a veth pair as its LAN (our side in the test's namespace)
//! and another as its WAN (a public-looking address, which miniupnpd insists on), and the
//! nftables chains its rules go into. The SSDP search goes to its LAN address by unicast
//! (no multicast route needed). `upnpc -l` checks the mappings independently.
//!
//! Needs root and `ip netns`: where the kernel or the user cannot, the test skips loudly
//! even under `MAGNETFETCH_REQUIRE_INTEROP=1`; where it can, a missing `miniupnpd` or `nft`
//! is a skip, or a failure under `MAGNETFETCH_REQUIRE_INTEROP=1`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use magnetfetch::internals::portmap::{MapConfig, PortMapping, Protocol, State};

use super::{nowhere, wait_for};
use crate::support::{require_or_skip, Proc};

const WAN_IP: Ipv4Addr = Ipv4Addr::new(11, 22, 33, 1);
const HTTP_PORT: u16 = 5555;

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn skip(why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIP: miniupnpd interop test not run: {why} ***\n"
    );
}

/// The namespace, its links and the daemon; all removed on drop.
struct Router {
    ns: String,
    ours: String,
    daemon: Option<Proc>,
    lan: Ipv4Addr,
    dir: tempfile::TempDir,
}

impl Drop for Router {
    fn drop(&mut self) {
        self.daemon.take();
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = run(&["ip", "link", "del", &self.ours]);
    }
}

impl Router {
    /// A namespace with its links; `Err` when this machine cannot make one.
    fn namespace() -> Result<Router, String> {
        let id = std::process::id() % 100_000;
        let subnet = (std::process::id() % 250) as u8;
        let r = Router {
            ns: format!("mf-upnp-{id}"),
            ours: format!("mfu{id}a"),
            daemon: None,
            lan: Ipv4Addr::new(10, 77, subnet, 2),
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
        };
        let ns = r.ns.as_str();
        let theirs = format!("mfu{id}b");
        let exec = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", ns];
            v.extend_from_slice(args);
            run(&v)
        };
        run(&["ip", "netns", "add", ns])?;
        run(&[
            "ip", "link", "add", &r.ours, "type", "veth", "peer", "name", &theirs,
        ])?;
        run(&["ip", "link", "set", &theirs, "netns", ns])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("10.77.{subnet}.1/24"),
            "dev",
            &r.ours,
        ])?;
        run(&["ip", "link", "set", &r.ours, "up"])?;
        exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", r.lan),
            "dev",
            &theirs,
        ])?;
        exec(&["ip", "link", "set", &theirs, "up"])?;
        exec(&["ip", "link", "set", "lo", "up"])?;
        exec(&[
            "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan1",
        ])?;
        exec(&["ip", "addr", "add", &format!("{WAN_IP}/24"), "dev", "wan0"])?;
        exec(&["ip", "link", "set", "wan0", "up"])?;
        exec(&["ip", "link", "set", "wan1", "up"])?;
        Ok(r)
    }

    /// The nftables chains and the daemon (UPnP on `lan`:5555, NAT-PMP/PCP on 5351).
    fn start(&mut self, lan_if: &str) -> Result<(), String> {
        let nft = self.dir.path().join("t.nft");
        std::fs::write(
            &nft,
            "table inet miniupnpd {\n chain miniupnpd {\n }\n chain prerouting_miniupnpd {\n }\n \
             chain postrouting_miniupnpd {\n }\n chain forward {\n  type filter hook forward priority 0; policy drop;\n  jump miniupnpd\n }\n \
             chain prerouting {\n  type nat hook prerouting priority -100; policy accept;\n  jump prerouting_miniupnpd\n }\n \
             chain postrouting {\n  type nat hook postrouting priority 100; policy accept;\n  jump postrouting_miniupnpd\n }\n}\n",
        )
        .map_err(|e| e.to_string())?;
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns,
            "nft",
            "-f",
            nft.to_str().unwrap(),
        ])?;
        let conf = self.dir.path().join("miniupnpd.conf");
        let subnet = self.lan.octets()[2];
        std::fs::write(
            &conf,
            format!(
                "ext_ifname=wan0\nlistening_ip={lan_if}\nhttp_port={HTTP_PORT}\nenable_natpmp=yes\n\
                 enable_upnp=yes\nsecure_mode=yes\nsystem_uptime=yes\n\
                 uuid=3e5f1c1e-8a1b-4d5e-9a35-0123456789ab\n\
                 upnp_table_name=miniupnpd\nupnp_nat_table_name=miniupnpd\n\
                 upnp_forward_chain=miniupnpd\nupnp_nat_chain=prerouting_miniupnpd\n\
                 upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
                 allow 1024-65535 10.77.{subnet}.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "miniupnpd", "-d", "-f"])
            .arg(&conf)
            .arg("-P")
            .arg(self.dir.path().join("pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.daemon = Some(Proc(child));
        // Up when its HTTP port answers.
        for _ in 0..100 {
            let a = SocketAddr::new(IpAddr::V4(self.lan), HTTP_PORT);
            if std::net::TcpStream::connect_timeout(&a, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("miniupnpd did not start".into())
    }

    /// `upnpc -l`: the mappings as miniupnpd lists them.
    fn listed(&self) -> String {
        let url = format!("http://{}:{HTTP_PORT}/rootDesc.xml", self.lan);
        let out = Command::new("upnpc").args(["-u", &url, "-l"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

fn config(ssdp: SocketAddr, gateway: IpAddr) -> MapConfig {
    MapConfig {
        tcp_port: Some(16881),
        udp_port: Some(16882),
        gateway: Some(gateway),
        ssdp_target: ssdp,
        lease: Duration::from_secs(4),
        ssdp_wait: Duration::from_secs(3),
        pmp_first_timeout: Duration::from_millis(200),
        pmp_tries: 3,
        ..MapConfig::default()
    }
}

#[tokio::test]
async fn miniupnpd_upnp_and_pcp() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !is_root {
        return skip("not root (network namespaces need it)");
    }
    let mut router = match Router::namespace() {
        Ok(r) => r,
        Err(e) => return skip(&format!("cannot make a network namespace here: {e}")),
    };
    for tool in ["miniupnpd", "nft", "upnpc"] {
        if !require_or_skip(tool) {
            return;
        }
    }
    let lan_if = format!("mfu{}b", std::process::id() % 100_000);
    router.start(&lan_if).expect("start miniupnpd");
    let lan = IpAddr::V4(router.lan);

    // UPnP IGD: the search by unicast to its LAN address, NAT-PMP/PCP nowhere.
    let m = PortMapping::start(config(SocketAddr::new(lan, 1900), nowhere().ip()));
    let s = wait_for(&m, "mapped by UPnP", |s| s.state == State::Mapped).await;
    assert_eq!(s.protocol, Some(Protocol::Upnp));
    assert_eq!(s.external_ip, Some(IpAddr::V4(WAN_IP)));
    assert_eq!((s.tcp_external, s.udp_external), (Some(16881), Some(16882)));
    let listed = router.listed();
    assert!(listed.contains("TCP 16881->10.77."), "{listed}");
    assert!(listed.contains("UDP 16882->10.77."), "{listed}");
    wait_for(&m, "renewed", |s| s.renewals >= 1).await;
    m.close().await;
    let listed = router.listed();
    assert!(!listed.contains("16881->"), "left after close: {listed}");

    // PCP to the gateway (miniupnpd answers PCP), no UPnP.
    let m = PortMapping::start(config(nowhere(), lan));
    let s = wait_for(&m, "mapped by PCP", |s| s.state == State::Mapped).await;
    assert_eq!(s.protocol, Some(Protocol::Pcp));
    assert_eq!(s.external_ip, Some(IpAddr::V4(WAN_IP)));
    assert_eq!(s.tcp_external, Some(16881));
    let listed = router.listed();
    assert!(listed.contains("TCP 16881->10.77."), "{listed}");
    m.close().await;
    let listed = router.listed();
    assert!(!listed.contains("16881->"), "left after close: {listed}");
}
