//! uTP (BEP 29) between two magnetfetch sessions on real loopback sockets: a leecher with
//! `TransportMode::Utp` downloads from a uTP-only seeder, in plaintext and with MSE/PE
//! required (the encryption runs over the uTP stream as over TCP). Every payload byte is
//! counted as uTP.

use std::net::SocketAddr;
use std::time::Duration;

use magnetfetch::internals::dial::{Encryption, TransportMode};
use magnetfetch::internals::session::{AddTorrent, Source, StorageSpec};
use magnetfetch::internals::sim::{make_metainfo, Scenario};

use crate::support::loopback::fresh_ip;
use crate::support::sessions::{loopback_session_on, sim_seeding};

async fn download_over_utp(encryption: Encryption) {
    let sc = Scenario {
        size: 4 << 20,
        piece_length: 256 << 10,
        ..Scenario::default()
    };
    let meta = make_metainfo(&sc).unwrap();
    let seeder = loopback_session_on(fresh_ip(), 1, TransportMode::Utp, encryption).await;
    let _seed = seeder.add(sim_seeding(&meta, sc.seed));
    let leecher = loopback_session_on(fresh_ip(), 2, TransportMode::Utp, encryption).await;
    let addr: SocketAddr = seeder.listen_addr().unwrap();
    let mut add = AddTorrent::new(
        Source::Metainfo(meta.clone()),
        StorageSpec::Generated {
            seed: sc.seed,
            complete: false,
        },
    );
    add.peers = vec![addr];
    add.swarm.blocking_io = false;
    let h = leecher.add(add);
    let mut p = h.progress();
    let pr = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let pr = p.borrow_and_update().clone();
            if pr.total > 0 && pr.verified == pr.total {
                return pr;
            }
            p.changed().await.unwrap();
        }
    })
    .await
    .expect("download over uTP did not finish in 60 s");
    let tb = pr.transport_bytes;
    assert!(tb.utp >= sc.size, "utp {} < {}", tb.utp, sc.size);
    assert_eq!((tb.tcp, tb.quic), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_over_utp_plaintext() {
    download_over_utp(Encryption::Off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_over_utp_with_mse_required() {
    download_over_utp(Encryption::Require).await;
}
