//! The connection layer over real loopback (`Net::Tokio`): handshakes in both directions,
//! info-hash checks, self-connection detection, message framing and block throughput.

use std::net::SocketAddr;
use std::time::Duration;

use magnetfetch::internals::id::Id20;
use magnetfetch::internals::net::Net;
use magnetfetch::internals::peer::extension::{ExtHandshake, UT_METADATA, UT_METADATA_ID};
use magnetfetch::internals::peer::{BlockRef, Message, PeerConn, PeerError};

const T: Duration = Duration::from_secs(5);

fn id(b: u8) -> Id20 {
    Id20([b; 20])
}

/// Listens on `ip`, accepts one connection for info-hash `ih` as peer `me`.
async fn accept_one(
    ip: [u8; 4],
    ih: Id20,
    me: Id20,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<Result<PeerConn, PeerError>>,
) {
    let l = Net::Tokio.listen(SocketAddr::from((ip, 0))).await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let (s, a) = l.accept().await?;
        PeerConn::accept(s, a, me, |h| *h == ih, T).await
    });
    (addr, h)
}

#[tokio::test]
async fn handshake_ext_handshake_and_messages() {
    let ih = id(1);
    let (addr, server) = accept_one([127, 0, 3, 1], ih, id(2)).await;
    let mut c = PeerConn::connect(&Net::Tokio, addr, ih, id(3), T, T)
        .await
        .unwrap();
    let mut s = server.await.unwrap().unwrap();
    assert_eq!(c.remote.peer_id, id(2));
    assert_eq!(s.remote.peer_id, id(3));
    assert!(c.extensions() && c.remote.reserved.fast() && c.remote.reserved.dht());

    // Server sends a bitfield before its extended handshake: it must not be lost.
    s.send(&Message::Bitfield(bytes::Bytes::from_static(&[0x80])))
        .await
        .unwrap();
    let (co, so) = (
        ExtHandshake::ours(Some(6881), None, None),
        ExtHandshake::ours(None, Some(1234), None),
    );
    let (ch, sh) = tokio::join!(
        c.exchange_ext_handshake(&co, T),
        s.exchange_ext_handshake(&so, T),
    );
    let (ch, sh) = (ch.unwrap(), sh.unwrap());
    assert_eq!(ch.metadata_size, Some(1234));
    assert_eq!(sh.p, Some(6881));
    assert_eq!(ch.id_of(UT_METADATA), Some(UT_METADATA_ID));
    assert!(matches!(c.recv().await.unwrap(), Message::Bitfield(_)));

    let req = BlockRef {
        index: 0,
        begin: 0,
        length: 16384,
    };
    c.send(&Message::Request(req)).await.unwrap();
    assert_eq!(s.recv().await.unwrap(), Message::Request(req));
    let block = vec![9u8; 16384];
    s.writer.queue(&Message::Unchoke);
    s.writer.queue_piece(0, 0, &block);
    s.writer.flush().await.unwrap();
    assert_eq!(c.recv().await.unwrap(), Message::Unchoke);
    match c.recv().await.unwrap() {
        Message::Piece { index, begin, data } => {
            assert_eq!((index, begin), (0, 0));
            assert_eq!(&data[..], &block[..]);
        }
        m => panic!("{m:?}"),
    }
}

#[tokio::test]
async fn wrong_info_hash_is_refused() {
    let (addr, server) = accept_one([127, 0, 3, 2], id(1), id(2)).await;
    let r = PeerConn::connect(&Net::Tokio, addr, id(9), id(3), T, T).await;
    assert!(r.is_err(), "client must not get a connection");
    match server.await.unwrap() {
        Err(PeerError::UnknownInfoHash(h)) => assert_eq!(h, id(9)),
        other => panic!("expected UnknownInfoHash, got {:?}", other.map(|c| c.addr)),
    }
}

#[tokio::test]
async fn connecting_to_ourselves_is_detected() {
    let (addr, server) = accept_one([127, 0, 3, 3], id(1), id(7)).await;
    let r = PeerConn::connect(&Net::Tokio, addr, id(1), id(7), T, T).await;
    assert!(matches!(r, Err(PeerError::SelfConnection)));
    assert!(matches!(
        server.await.unwrap(),
        Err(PeerError::SelfConnection)
    ));
}

#[tokio::test]
async fn garbage_instead_of_handshake_is_rejected() {
    use tokio::io::AsyncWriteExt;
    let (addr, server) = accept_one([127, 0, 3, 4], id(1), id(2)).await;
    let mut s = Net::Tokio.connect(addr).await.unwrap();
    s.write_all(&[0x13; 68]).await.unwrap();
    assert!(matches!(
        server.await.unwrap(),
        Err(PeerError::BadHandshake(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_throughput_on_loopback() {
    let ih = id(1);
    let (addr, server) = accept_one([127, 0, 3, 5], ih, id(2)).await;
    let c = PeerConn::connect(&Net::Tokio, addr, ih, id(3), T, T)
        .await
        .unwrap();
    let s = server.await.unwrap().unwrap();
    let (_, mut w, _) = s.into_parts();
    let (mut r, _, _) = c.into_parts();
    const BLOCKS: u32 = 16 * 1024; // 256 MiB
    let t0 = std::time::Instant::now();
    let sender = tokio::spawn(async move {
        let block = vec![5u8; 16384];
        for i in 0..BLOCKS {
            w.queue_piece(i / 64, (i % 64) * 16384, &block);
            if w.queued() >= 256 * 1024 {
                w.flush().await.unwrap();
            }
        }
        w.flush().await.unwrap();
        w
    });
    let mut got = 0u64;
    while got < u64::from(BLOCKS) * 16384 {
        match r.recv().await.unwrap() {
            Message::Piece { data, .. } => got += data.len() as u64,
            m => panic!("{m:?}"),
        }
    }
    let _w = sender.await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "wire throughput: {} MiB in {:.3} s = {:.0} MB/s (test profile)",
        got >> 20,
        secs,
        got as f64 / secs / 1e6
    );
    assert_eq!(got, u64::from(BLOCKS) * 16384);
}
