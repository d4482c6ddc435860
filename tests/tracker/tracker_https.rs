//! HTTPS trackers and web seeds, on loopback 127.0.0.180-199, with a throw-away CA
//! made by rcgen. The HTTPS side is a TLS-terminating forwarder (tokio-rustls server) in front
//! of a plain HTTP server (our tracker, or a tiny Range file server); it connects to the
//! backend from the client's own IP, so the tracker still sees the real source address.
//!
//! - in process: announce + scrape over `https://` with the CA trusted; the same tracker with
//!   another CA trusted fails with a TLS error naming the certificate problem;
//! - in process: a web seed over `https://`;
//! - the `magnetfetch` binary, with `SSL_CERT_FILE` pointing at the CA: a seeder and a leecher
//!   that only know an `https://` tracker find each other and the download completes; with
//!   another CA in `SSL_CERT_FILE` the tracker is reported as a certificate error;
//! - `bind_ip`: HTTP and UDP announces come from the configured IP (the tracker hands that
//!   address to other peers).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use magnetfetch::internals::http::{tls, HttpError};
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::net::Net;
use magnetfetch::internals::torrent::Layout;
use magnetfetch::internals::tracker::store::StoreConfig;
use magnetfetch::internals::tracker::{
    AnnounceRequest, ClientConfig, Event, ServerConfig, TrackerClient, TrackerError, TrackerServer,
};
use magnetfetch::internals::webseed::{piece_ranges, WebSeedFetcher};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig as TlsServerConfig};

use crate::support::{lines, random_bytes, range_server, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_magnetfetch");

/// A CA and one server certificate it signed for `ip`.
struct Pki {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    server: Arc<TlsServerConfig>,
}

fn pki(ip: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "magnetfetch test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    // `new` turns an IP literal into an iPAddress subjectAltName.
    let leaf = CertificateParams::new(vec![ip.to_string()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = TlsServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    Pki {
        ca_der: ca_cert.der().clone(),
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}

/// Accepts TLS on `listen` and forwards each connection to `backend`, connecting from the
/// client's IP. Runs on the current runtime; returns the bound address.
async fn tls_forwarder(
    listen: SocketAddr,
    backend: SocketAddr,
    cfg: Arc<TlsServerConfig>,
) -> SocketAddr {
    let l = tokio::net::TcpListener::bind(listen).await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    tokio::spawn(async move {
        loop {
            let Ok((s, peer)) = l.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A failed handshake (an untrusting client aborts) just ends this connection.
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.bind(SocketAddr::new(peer.ip(), 0)).unwrap();
                let Ok(mut up) = sock.connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    addr
}

async fn start_tracker(ip: &str) -> TrackerServer {
    let cfg = ServerConfig {
        http: Some(format!("{ip}:0").parse().unwrap()),
        udp: Some(format!("{ip}:0").parse().unwrap()),
        store: StoreConfig {
            per_ip_rate: 0.0,
            ..StoreConfig::default()
        },
        conn_key: [7; 16],
        ..ServerConfig::default()
    };
    TrackerServer::start(Net::Tokio, cfg).await.unwrap()
}

fn client(bind: &str, tls: Option<Arc<rustls::ClientConfig>>) -> TrackerClient {
    TrackerClient::new(
        Net::Tokio,
        ClientConfig {
            bind_ip: Some(bind.parse().unwrap()),
            http_timeout: Duration::from_secs(5),
            tls,
            ..ClientConfig::default()
        },
    )
}

fn req(h: Id20, port: u16, left: u64) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: h,
        peer_id: Id20([port as u8; 20]),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event: Event::Started,
        numwant: Some(50),
        key: u32::from(port),
        tracker_id: None,
    }
}

#[tokio::test]
async fn https_announce_and_scrape_with_trusted_ca() {
    let p = pki("127.0.0.181");
    let tracker = start_tracker("127.0.0.180").await;
    let front = tls_forwarder(
        "127.0.0.181:0".parse().unwrap(),
        tracker.http_addr.unwrap(),
        p.server.clone(),
    )
    .await;
    let url = format!("https://{front}/announce");
    let trust = tls::client_config([p.ca_der.clone()]).unwrap();
    let h = Id20([0x42; 20]);

    let seed = client("127.0.0.182", Some(trust.clone()));
    let r = seed.announce(&url, &req(h, 6001, 0)).await.unwrap();
    assert!(r.peers.is_empty(), "{r:?}");
    let leech = client("127.0.0.183", Some(trust.clone()));
    let r = leech.announce(&url, &req(h, 6002, 100)).await.unwrap();
    // The seeder's address as the tracker saw it: its bind IP, through TLS.
    assert_eq!(r.peers, vec!["127.0.0.182:6001".parse().unwrap()]);
    let sc = leech.scrape(&url, &[h]).await.unwrap();
    assert_eq!((sc[&h].complete, sc[&h].incomplete), (1, 1));

    // Another CA: the handshake fails with a TLS error that says why.
    let other = pki("127.0.0.181");
    let wrong = client(
        "127.0.0.184",
        Some(tls::client_config([other.ca_der]).unwrap()),
    );
    let e = wrong.announce(&url, &req(h, 6003, 100)).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, TrackerError::Http(HttpError::Tls(_))), "{e:?}");
    assert!(msg.contains("certificate"), "{msg}");
    assert_eq!(
        tracker.stats(&h).incomplete,
        1,
        "the untrusted announce never arrived"
    );

    // A certificate for another name is refused even when its CA is trusted.
    let front2 = tls_forwarder(
        "127.0.0.185:0".parse().unwrap(),
        tracker.http_addr.unwrap(),
        p.server.clone(),
    )
    .await;
    let e = leech
        .announce(&format!("https://{front2}/announce"), &req(h, 6002, 100))
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::Http(HttpError::Tls(_))), "{e:?}");
}

#[tokio::test]
async fn announces_come_from_bind_ip() {
    let tracker = start_tracker("127.0.0.186").await;
    let h = Id20([0x43; 20]);
    for (scheme, addr) in [
        ("http", tracker.http_addr.unwrap()),
        ("udp", tracker.udp_addr.unwrap()),
    ] {
        let url = format!("{scheme}://{addr}/announce");
        let a = client("127.0.0.187", None);
        a.announce(&url, &req(h, 7001, 0)).await.unwrap();
        let b = client("127.0.0.188", None);
        let r = b.announce(&url, &req(h, 7002, 5)).await.unwrap();
        assert!(
            r.peers.contains(&"127.0.0.187:7001".parse().unwrap()),
            "{scheme}: {r:?}"
        );
        assert!(
            !r.peers
                .iter()
                .any(|p| p.ip() == "127.0.0.1".parse::<IpAddr>().unwrap()),
            "{scheme}: {r:?}"
        );
    }
}

#[tokio::test]
async fn https_web_seed() {
    let p = pki("127.0.0.190");
    let data = random_bytes(50_000, 3);
    let mut files = BTreeMap::new();
    files.insert("/ws/f.bin".to_string(), data.clone());
    let backend = range_server("127.0.0.189", files);
    let front = tls_forwarder("127.0.0.190:0".parse().unwrap(), backend, p.server.clone()).await;
    let layout = Layout::single("f.bin", data.len() as u64, 16384).unwrap();
    let base = format!("https://{front}/ws/");
    let mut f = WebSeedFetcher::new(Net::Tokio, Duration::from_secs(5))
        .with_tls(tls::client_config([p.ca_der.clone()]).unwrap());
    let mut got = Vec::new();
    for piece in 0..4 {
        got.extend(
            f.fetch_piece(&piece_ranges(&base, &layout, piece).unwrap())
                .await
                .unwrap(),
        );
    }
    assert_eq!(got, data);
    // Untrusted: an error, never data.
    let other = pki("127.0.0.190");
    let mut bad = WebSeedFetcher::new(Net::Tokio, Duration::from_secs(5))
        .with_tls(tls::client_config([other.ca_der]).unwrap());
    let r = bad
        .fetch_piece(&piece_ranges(&base, &layout, 0).unwrap())
        .await;
    assert!(r.is_err(), "{r:?}");
}

/// JSON lines of `magnetfetch ...` until `stop` accepts one (or 40 s pass).
fn json_until(
    rx: &std::sync::mpsc::Receiver<String>,
    stop: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut out = Vec::new();
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) else {
            continue;
        };
        let done = stop(&v);
        out.push(v);
        if done {
            break;
        }
    }
    out
}

fn fetch_cmd(magnet: &str, out: &Path, state: &Path, bind: &str, ca: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg(magnet)
        .arg("--no-dht")
        .arg("-o")
        .arg(out)
        .args(["--bind", &format!("{bind}:0"), "--json"])
        .arg("--state-dir")
        .arg(state)
        .env("SSL_CERT_FILE", ca)
        .env_remove("SSL_CERT_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
}

#[test]
fn cli_seed_and_fetch_through_https_tracker() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let p = pki("127.0.0.192");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &p.ca_pem).unwrap();
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, pki("127.0.0.192").ca_pem).unwrap();

    let tracker = rt.block_on(start_tracker("127.0.0.191"));
    let front = rt.block_on(tls_forwarder(
        "127.0.0.192:0".parse().unwrap(),
        tracker.http_addr.unwrap(),
        p.server.clone(),
    ));
    let url = format!("https://{front}/announce");

    let data = random_bytes(300_000, 11);
    let file = dir.path().join("secure.bin");
    std::fs::write(&file, &data).unwrap();
    let mut child = Command::new(BIN)
        .arg("seed")
        .arg(&file)
        .args(["--no-dht", "--tracker", &url, "--bind", "127.0.0.193:0"])
        .arg("--state-dir")
        .arg(dir.path().join("seed-state"))
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn magnetfetch seed");
    let rx = lines(&mut child);
    let _seed = Proc(child);
    let magnet = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("seed prints its magnet");
        if l.starts_with("magnet:") {
            break l;
        }
    };
    assert!(magnet.contains("&tr=https"), "{magnet}");
    let ih = Id20::from_hex(&magnet[magnet.find("btih:").unwrap() + 5..][..40]).unwrap();
    // The seeder announced over HTTPS (the only way it could reach the tracker).
    let deadline = Instant::now() + Duration::from_secs(15);
    while tracker.stats(&ih).complete == 0 {
        assert!(Instant::now() < deadline, "seed never announced over https");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Untrusted CA: the tracker is reported with the certificate error, nothing is found.
    let mut bad = fetch_cmd(
        &magnet,
        &dir.path().join("bad-out"),
        &dir.path().join("bad-state"),
        "127.0.0.194",
        &other_ca,
    )
    .spawn()
    .unwrap();
    let brx = lines(&mut bad);
    let bad = Proc(bad);
    let ev = json_until(&brx, |v| v["event"] == "tracker" || v["event"] == "done");
    drop(bad);
    let tr = ev
        .iter()
        .find(|v| v["event"] == "tracker")
        .unwrap_or_else(|| panic!("no tracker event: {ev:#?}"));
    assert_eq!(tr["status"], "error", "{tr}");
    let err = tr["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("TLS") && err.contains("certificate"),
        "unclear error: {err}"
    );

    // Trusted CA: found through the https tracker, downloaded, verified.
    let out = dir.path().join("out");
    let mut leech = fetch_cmd(&magnet, &out, &dir.path().join("state"), "127.0.0.195", &ca)
        .spawn()
        .unwrap();
    let lrx = lines(&mut leech);
    let _leech = Proc(leech);
    let ev = json_until(&lrx, |v| v["event"] == "done" || v["event"] == "error");
    assert!(
        ev.iter().any(|v| v["event"] == "done"),
        "no done event: {ev:#?}"
    );
    assert_eq!(std::fs::read(out.join("secure.bin")).unwrap(), data);
    let tr = ev.iter().find(|v| v["event"] == "tracker").unwrap();
    assert_eq!(tr["status"], "ok", "{tr}");
    assert_eq!(tr["url"].as_str(), Some(url.as_str()));
    drop(tracker);
}
