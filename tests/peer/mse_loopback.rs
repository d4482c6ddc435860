//! MSE/PE (message stream encryption) between magnetfetch peers over real loopback TCP:
//! every pair of `--encryption` modes, at the connection layer (which end selected what,
//! and the stream carries messages both ways) and as whole downloads between two sessions.
//! `require` against `off` fails, with the reason on each side.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use magnetfetch::internals::dial::{Dialer, Encryption, TransportMode};
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::magnet::Magnet;
use magnetfetch::internals::metainfo::{create, CreateOptions};
use magnetfetch::internals::net::Net;
use magnetfetch::internals::peer::{Message, MsePolicy, PeerConn, PeerError};
use magnetfetch::internals::session::{AddTorrent, Session, Source, StorageSpec};

use crate::support::loopback::fresh_ip;
use crate::support::{loopback_tcp_session, random_bytes, seed_from_disk};

const T: Duration = Duration::from_secs(5);
const IH: Id20 = Id20([0x5a; 20]);

use Encryption::{Off, Prefer, Require};

/// What each end of one dial saw: the dialler's result, and every incoming attempt's.
struct Outcome {
    dialled: Result<PeerConn, PeerError>,
    answered: Vec<Result<PeerConn, PeerError>>,
}

/// Dials `answer`'s listener on a fresh loopback address with policy `dial`.
async fn dial_pair(dial: Encryption, answer: Encryption) -> Outcome {
    let l = Net::Tokio
        .listen(SocketAddr::from((fresh_ip(), 0)))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let accepted = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn({
        let accepted = accepted.clone();
        async move {
            let policy = MsePolicy::new(answer, Some(1));
            loop {
                let (s, a) = l.accept().await.unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                let torrents = || vec![Id20([1; 20]), IH];
                let r = PeerConn::accept_any(s, a, Id20([2; 20]), &policy, torrents, T).await;
                if tx.send(r).is_err() {
                    return;
                }
            }
        }
    });
    let dialer = Dialer {
        mode: TransportMode::Tcp,
        mse: MsePolicy::new(dial, Some(2)),
        ..Default::default()
    };
    let dialled = dialer
        .connect(&Net::Tokio, addr, IH, Id20([3; 20]), T, T)
        .await;
    // Every connection the dialler made was accepted before its dial returned (it spoke
    // with the answering side, or was refused by it); wait for each one's outcome, which
    // may come just after ours.
    let mut answered = Vec::new();
    while answered.len() < accepted.load(Ordering::SeqCst) {
        match tokio::time::timeout(T, rx.recv()).await {
            Ok(Some(r)) => answered.push(r),
            _ => panic!("the answering side never finished a handshake it accepted"),
        }
    }
    server.abort();
    Outcome { dialled, answered }
}

/// Both ends connected with the same view of the stream; messages (a large one too) pass
/// both ways.
async fn check_connected(mut o: Outcome, rc4: bool) {
    let mut c = o.dialled.expect("dialler connected");
    let mut s = o
        .answered
        .pop()
        .expect("an incoming connection")
        .expect("answering side connected");
    assert_eq!(
        (c.encrypted, s.encrypted),
        (rc4, rc4),
        "RC4 expected: {rc4}"
    );
    assert_eq!(c.remote.peer_id, Id20([2; 20]));
    assert_eq!(s.remote.peer_id, Id20([3; 20]));
    assert_eq!(s.remote.info_hash, IH);
    c.send(&Message::Interested).await.unwrap();
    let block = Bytes::from(random_bytes(100_000, 9));
    s.send(&Message::Piece {
        index: 1,
        begin: 0,
        data: block.clone(),
    })
    .await
    .unwrap();
    assert_eq!(s.recv().await.unwrap(), Message::Interested);
    match c.recv().await.unwrap() {
        Message::Piece { index: 1, data, .. } => assert!(data == block, "block corrupted"),
        m => panic!("expected the piece, got {m:?}"),
    }
}

#[tokio::test]
async fn prefer_to_prefer_hides_the_handshake_and_keeps_the_payload_plaintext() {
    let o = dial_pair(Prefer, Prefer).await;
    assert_eq!(o.answered.len(), 1, "one MSE attempt, no plaintext retry");
    let (c, s) = (o.dialled.as_ref().unwrap(), o.answered[0].as_ref().unwrap());
    assert!(c.mse && s.mse, "both ends ran the MSE handshake");
    check_connected(o, false).await;
}

#[tokio::test]
async fn require_on_either_end_gives_rc4() {
    for (d, a) in [(Prefer, Require), (Require, Prefer), (Require, Require)] {
        let o = dial_pair(d, a).await;
        assert_eq!(o.answered.len(), 1, "{d:?} -> {a:?}: one attempt");
        check_connected(o, true).await;
    }
}

#[tokio::test]
async fn off_connects_in_plaintext_and_prefer_falls_back_to_it() {
    for (d, a) in [(Off, Off), (Off, Prefer)] {
        let o = dial_pair(d, a).await;
        assert_eq!(o.answered.len(), 1);
        check_connected(o, false).await;
    }
    // `prefer` dials an `off` peer with MSE, which it refuses; the plaintext retry works.
    let mut o = dial_pair(Prefer, Off).await;
    assert_eq!(
        o.answered.len(),
        2,
        "the MSE attempt, then the plaintext one"
    );
    let first = o
        .answered
        .remove(0)
        .err()
        .expect("the MSE attempt was refused");
    assert_eq!(
        first.to_string(),
        "encrypted handshake refused: --encryption off"
    );
    check_connected(o, false).await;
}

#[tokio::test]
async fn require_and_off_never_connect_and_say_why() {
    // `require` dials `off`: the peer drops our MSE handshake, and there is no plaintext retry.
    let o = dial_pair(Require, Off).await;
    let e = o.dialled.err().expect("require must not connect to off");
    assert!(matches!(e, PeerError::Encryption(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "peer closed the connection during the encryption handshake (MSE)"
    );
    assert_eq!(o.answered.len(), 1, "no second (plaintext) attempt");
    let refused = o.answered.into_iter().next().unwrap().err().unwrap();
    assert_eq!(
        refused.to_string(),
        "encrypted handshake refused: --encryption off"
    );
    // `off` dials `require`: our plaintext handshake is refused.
    let o = dial_pair(Off, Require).await;
    assert!(o.dialled.is_err(), "off must not connect to require");
    let refused = o.answered.into_iter().next().unwrap().err().unwrap();
    assert_eq!(
        refused.to_string(),
        "plaintext handshake refused: --encryption require"
    );
}

#[tokio::test]
async fn an_mse_handshake_for_another_torrent_is_refused() {
    let l = Net::Tokio
        .listen(SocketAddr::from((fresh_ip(), 0)))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, a) = l.accept().await.unwrap();
        let policy = MsePolicy::new(Prefer, Some(1));
        PeerConn::accept_any(s, a, Id20([2; 20]), &policy, || vec![IH], T).await
    });
    let other = Id20([0x77; 20]);
    let policy = MsePolicy::new(Require, Some(5));
    let r =
        PeerConn::connect_encrypted(&Net::Tokio, addr, other, Id20([3; 20]), &policy, T, T).await;
    assert!(r.is_err());
    let e = server.await.unwrap().err().unwrap();
    assert_eq!(
        e.to_string(),
        "encrypted handshake for a torrent we do not serve"
    );
}

/// A session on a fresh loopback address with the given policy, TCP only; `ip` seeds it.
async fn session(ip: u8, enc: Encryption) -> Session {
    loopback_tcp_session(fresh_ip(), u64::from(ip), enc).await
}

/// A leecher with `leech` fetches a 3 MiB file by magnet from a seeder with `seed`.
async fn download(
    seed: Encryption,
    leech: Encryption,
    ip: u8,
    wait: Duration,
) -> Result<(), String> {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    let data = random_bytes(3 * 1024 * 1024 + 777, u64::from(ip));
    let path = src.path().join("enc.bin");
    std::fs::write(&path, &data).unwrap();
    let opts = CreateOptions {
        piece_length: Some(64 * 1024),
        ..Default::default()
    };
    let meta = Arc::new(create(&path, &opts).unwrap());
    let seeder = session(ip, seed).await;
    let seeding = seed_from_disk(&seeder, &meta, src.path()).await;
    let leecher = session(ip + 1, leech).await;
    let mut add = AddTorrent::new(
        Source::Magnet(Magnet::new(meta.info_hash)),
        StorageSpec::Disk(dst.path().to_path_buf()),
    );
    add.peers.push(seeder.listen_addr().unwrap());
    add.metadata_timeout = wait;
    let r = tokio::time::timeout(wait + T, leecher.add(add).wait())
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    seeding.stop();
    assert!(r.summary.complete);
    let got = std::fs::read(dst.path().join("enc.bin")).unwrap();
    assert!(got == data, "downloaded bytes differ");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_download_under_every_compatible_pair() {
    let pairs = [
        (Require, Require),
        (Prefer, Require),
        (Require, Prefer),
        (Prefer, Prefer),
        (Off, Prefer),
        (Prefer, Off),
    ];
    for (i, (s, l)) in pairs.into_iter().enumerate() {
        let ip = 210 + 2 * i as u8;
        download(s, l, ip, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("seeder {s:?}, leecher {l:?}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_with_require_and_off_find_no_common_ground() {
    for (i, (s, l)) in [(Off, Require), (Require, Off)].into_iter().enumerate() {
        let e = download(s, l, 222 + 2 * i as u8, Duration::from_secs(3))
            .await
            .expect_err("require and off must not connect");
        assert!(e.contains("no metadata"), "{e}");
        assert!(e.contains("0 connected"), "{e}");
        // The reason is in the error, as the dialling side saw it (a plaintext dialler only
        // sees the connection closed or reset).
        if l == Require {
            let why = "peer closed the connection during the encryption handshake (MSE)";
            assert!(e.contains(&format!("last peer error: {why}")), "{e}");
        } else {
            assert!(e.contains("last peer error: "), "{e}");
        }
    }
}

#[tokio::test]
async fn a_silent_peer_times_the_handshake_out_on_either_side() {
    let short = Duration::from_millis(300);
    // We dial a peer that accepts and then says nothing.
    let l = Net::Tokio
        .listen(SocketAddr::from((fresh_ip(), 0)))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let quiet = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(s);
    });
    let policy = MsePolicy::new(Require, Some(5));
    let t0 = std::time::Instant::now();
    let e = PeerConn::connect_encrypted(&Net::Tokio, addr, IH, Id20([3; 20]), &policy, T, short)
        .await
        .err()
        .expect("no answer, no connection");
    assert_eq!(e.to_string(), "timed out in the encryption handshake (MSE)");
    assert!(t0.elapsed() < Duration::from_secs(1));
    quiet.abort();
    // A peer dials us, sends the start of a public key and stalls.
    let l = Net::Tokio
        .listen(SocketAddr::from((fresh_ip(), 0)))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let stalling = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut s = Net::Tokio.connect(addr).await.unwrap();
        s.write_all(&[0x55; 60]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let (s, a) = l.accept().await.unwrap();
    let policy = MsePolicy::new(Prefer, Some(6));
    let t0 = std::time::Instant::now();
    let e = PeerConn::accept_any(s, a, Id20([2; 20]), &policy, || vec![IH], short)
        .await
        .err()
        .expect("a stalled handshake never connects");
    assert_eq!(e.to_string(), "timed out in the encryption handshake (MSE)");
    assert!(t0.elapsed() < Duration::from_secs(1));
    stalling.abort();
}
