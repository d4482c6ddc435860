//! Interop on loopback: a libtorrent seeder (DHT off) announcing to `magnetfetch tracker` over
//! HTTP and UDP is seen by our scrape and handed out by our announce; our client announcing to
//! opentracker over HTTP and UDP. Missing tools print a loud SKIP, and fail under
//! MAGNETFETCH_REQUIRE_INTEROP=1.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use magnetfetch::id::Id20;
use magnetfetch::net::Net;
use magnetfetch::tracker::store::StoreConfig;
use magnetfetch::tracker::udp_proto::RetrySchedule;
use magnetfetch::tracker::{
    AnnounceRequest, ClientConfig, Event, ServerConfig, TrackerClient, TrackerServer,
};

const PY: &str = "/usr/bin/python3";

/// Local helper (tests/common is owned by another helper): skip loudly or fail when required.
fn skip_or_fail(why: &str) {
    if std::env::var("MAGNETFETCH_REQUIRE_INTEROP").as_deref() == Ok("1") {
        panic!("interop required but unavailable: {why}");
    }
    eprintln!("\n*** SKIP: {why} ***\n");
}

fn have_libtorrent() -> bool {
    Command::new(PY)
        .args(["-c", "import libtorrent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Seeds a fresh random file with libtorrent, announcing only to `url`. Prints
/// "<infohash hex> <listen port>" and then seeds for up to 60 s.
const SEEDER: &str = r#"
import libtorrent as lt, sys, os, time
d, url = sys.argv[1], sys.argv[2]
p = os.path.join(d, 'payload.bin')
with open(p, 'wb') as f:
    f.write(os.urandom(65536 + 1234))
fs = lt.file_storage()
lt.add_files(fs, p)
t = lt.create_torrent(fs, 16384)
t.add_tracker(url)
lt.set_piece_hashes(t, d)
ti = lt.torrent_info(t.generate())
s = lt.session({'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False,
                'enable_natpmp': False, 'listen_interfaces': '127.0.0.1:0',
                'alert_mask': lt.alert.category_t.tracker_notification | lt.alert.category_t.error_notification})
h = s.add_torrent({'ti': ti, 'save_path': d})
h.force_recheck()
deadline = time.time() + 60
printed = False
while time.time() < deadline:
    st = h.status()
    if not printed and st.is_seeding:
        print(str(ti.info_hashes().v1), s.listen_port(), flush=True)
        h.force_reannounce()
        printed = True
    for a in s.pop_alerts():
        sys.stderr.write('lt: %s\n' % a.message())
    time.sleep(0.1)
"#;

struct Killer(Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client() -> TrackerClient {
    TrackerClient::new(
        Net::Tokio,
        ClientConfig {
            http_timeout: Duration::from_secs(5),
            udp_retry: RetrySchedule {
                base: Duration::from_millis(500),
                max_n: 3,
            },
            bind_ip: Some("127.0.0.1".parse().unwrap()),
            seed: 9,
            ..ClientConfig::default()
        },
    )
}

fn req(h: Id20, port: u16, left: u64) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: h,
        peer_id: Id20(*b"-MF0001-interoptest1"),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event: Event::Started,
        numwant: Some(50),
        key: 1,
        tracker_id: None,
    }
}

async fn libtorrent_seeder_is_tracked(scheme: &str) {
    if !have_libtorrent() {
        return skip_or_fail("python3-libtorrent not importable by /usr/bin/python3");
    }
    let server = TrackerServer::start(
        Net::Tokio,
        ServerConfig {
            http: Some("127.0.0.1:0".parse().unwrap()),
            udp: Some("127.0.0.1:0".parse().unwrap()),
            store: StoreConfig {
                interval: Duration::from_secs(60),
                per_ip_rate: 0.0,
                ..StoreConfig::default()
            },
            conn_key: rand::random(),
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let url = match scheme {
        "http" => format!("http://{}/announce", server.http_addr.unwrap()),
        _ => format!("udp://{}/announce", server.udp_addr.unwrap()),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(PY)
        .args(["-c", SEEDER, dir.path().to_str().unwrap(), &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _k = Killer(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut l = String::new();
        BufReader::new(stdout).read_line(&mut l).map(|_| l)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), line)
        .await
        .expect("seeder start")
        .unwrap()
        .unwrap();
    let mut parts = line.split_whitespace();
    let h = Id20::from_hex(parts.next().expect("info-hash")).unwrap();
    let lt_port: u16 = parts.next().expect("port").parse().unwrap();

    let c = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let sc = c.scrape(&url, &[h]).await.unwrap();
        if sc.get(&h).is_some_and(|s| s.complete == 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "libtorrent seeder never showed up in scrape over {scheme}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Our own leecher's announce gets the libtorrent seeder back.
    let r = c.announce(&url, &req(h, 40000, 100)).await.unwrap();
    assert!(
        r.peers
            .contains(&SocketAddr::from(([127, 0, 0, 1], lt_port))),
        "{:?} lacks {lt_port}",
        r.peers
    );
    assert_eq!(r.complete, Some(1));
}

#[tokio::test]
async fn libtorrent_seeder_announces_to_us_over_http() {
    libtorrent_seeder_is_tracked("http").await;
}

#[tokio::test]
async fn libtorrent_seeder_announces_to_us_over_udp() {
    libtorrent_seeder_is_tracked("udp").await;
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn our_client_announces_to_opentracker() {
    if Command::new("opentracker")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        return skip_or_fail("opentracker not installed (apt-get install -y opentracker)");
    }
    let dir = tempfile::tempdir().unwrap();
    // opentracker drops to user nobody and chroots: the directory must be world-readable.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let h = Id20([0x42; 20]);
    std::fs::write(dir.path().join("white"), format!("{}\n", h.to_hex())).unwrap();
    let port = free_port();
    let child = Command::new("opentracker")
        .current_dir(dir.path())
        // It chroots into -d before reading the whitelist, so the path is chroot-relative.
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-P",
            &port.to_string(),
            "-d",
            dir.path().to_str().unwrap(),
            "-w",
            "/white",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _k = Killer(child);
    let c = client();
    for (i, url) in [
        format!("http://127.0.0.1:{port}/announce"),
        format!("udp://127.0.0.1:{port}/announce"),
    ]
    .iter()
    .enumerate()
    {
        let seed_port = 41000 + i as u16 * 10;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // opentracker needs a moment to bind.
        let r1 = loop {
            match c.announce(url, &req(h, seed_port, 0)).await {
                Ok(r) => break r,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("waiting for opentracker: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{url}: {e}"),
            }
        };
        assert!(r1.interval > 0);
        let mut leech = req(h, seed_port + 1, 100);
        leech.peer_id = Id20(*b"-MF0001-interoptest2");
        let r2 = c.announce(url, &leech).await.unwrap();
        assert!(
            r2.peers
                .contains(&SocketAddr::from(([127, 0, 0, 1], seed_port))),
            "{url}: {:?}",
            r2.peers
        );
        let sc = c.scrape(url, &[h]).await.unwrap();
        assert!(sc[&h].complete >= 1, "{url}: {:?}", sc);
    }
    // Not on the allow-list: opentracker refuses, and we surface its reason.
    let r = c
        .announce(
            &format!("http://127.0.0.1:{port}/announce"),
            &req(Id20([1; 20]), 1, 0),
        )
        .await;
    assert!(r.is_err(), "{r:?}");
}

/// Two libtorrent sessions (seeder, leecher) that find each other only through our tracker.
const SWARM: &str = r#"
import libtorrent as lt, sys, os, time
d, url = sys.argv[1], sys.argv[2]
sd, ld = os.path.join(d, 's'), os.path.join(d, 'l')
os.makedirs(sd); os.makedirs(ld)
p = os.path.join(sd, 'payload.bin')
data = os.urandom(300000)
with open(p, 'wb') as f:
    f.write(data)
fs = lt.file_storage()
lt.add_files(fs, p)
t = lt.create_torrent(fs, 16384)
t.add_tracker(url)
lt.set_piece_hashes(t, sd)
ti = lt.torrent_info(t.generate())
def sess():
    return lt.session({'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False,
                       'enable_natpmp': False, 'listen_interfaces': '127.0.0.1:0',
                       'alert_mask': lt.alert.category_t.tracker_notification | lt.alert.category_t.error_notification | lt.alert.category_t.peer_notification | lt.alert.category_t.connect_notification})
s1, s2 = sess(), sess()
seed = s1.add_torrent({'ti': ti, 'save_path': sd})
seed.force_recheck()
while not seed.status().is_seeding:
    time.sleep(0.05)
seed.force_reannounce()
leech = s2.add_torrent({'ti': lt.torrent_info(ti), 'save_path': ld})
deadline = time.time() + 40
while time.time() < deadline and not leech.status().is_seeding:
    time.sleep(0.1)
st = leech.status()
sys.stderr.write('leecher: peers=%d list_peers=%d state=%s progress=%.2f\n' % (st.num_peers, st.list_peers, st.state, st.progress))
for a in s2.pop_alerts() + s1.pop_alerts():
    sys.stderr.write('lt: %s\n' % a.message())
ok = leech.status().is_seeding and open(os.path.join(ld, 'payload.bin'), 'rb').read() == data
print(str(ti.info_hashes().v1), 'ok' if ok else 'fail', flush=True)
time.sleep(1)
"#;

#[tokio::test]
async fn libtorrent_leecher_finds_libtorrent_seeder_through_us() {
    if !have_libtorrent() {
        return skip_or_fail("python3-libtorrent not importable by /usr/bin/python3");
    }
    let server = TrackerServer::start(
        Net::Tokio,
        ServerConfig {
            udp: Some("127.0.0.1:0".parse().unwrap()),
            store: StoreConfig {
                interval: Duration::from_secs(60),
                per_ip_rate: 0.0,
                ..StoreConfig::default()
            },
            conn_key: rand::random(),
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let url = format!("udp://{}/announce", server.udp_addr.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(PY)
            .args(["-c", SWARM, &d, &url])
            .stderr(Stdio::inherit())
            .output()
    });
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("swarm finished")
        .unwrap()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = line.split_whitespace();
    let h = Id20::from_hex(parts.next().expect("info-hash")).unwrap();
    assert_eq!(
        parts.next(),
        Some("ok"),
        "libtorrent leecher did not complete: {line}"
    );
    // The seeder announced to us; the leecher was tracked too.
    let st = server.stats(&h);
    assert!(st.complete >= 1, "{st:?}");
    assert!(st.complete + st.incomplete >= 2, "{st:?}");
}
