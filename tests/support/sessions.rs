//! The sessions of the integration tests, built one way: on simnet hosts (no DHT, no
//! trackers, hashing inline) or on real loopback sockets, and the seeding torrent of a
//! simnet test.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use magnetfetch::internals::dial::{DialConfig, Encryption, TransportMode};
use magnetfetch::internals::metainfo::Metainfo;
use magnetfetch::internals::net::Net;
use magnetfetch::internals::session::{
    AddTorrent, Phase, Session, SessionConfig, Source, StorageSpec, TorrentHandle,
};

/// A session's torrent that has all of `meta`'s content (synthetic, from `content_seed`)
/// and keeps serving it: the seeder of a simnet test.
pub fn sim_seeding(meta: &Arc<Metainfo>, content_seed: u64) -> AddTorrent {
    let mut add = AddTorrent::new(
        Source::Metainfo(meta.clone()),
        StorageSpec::Generated {
            seed: content_seed,
            complete: true,
        },
    );
    add.swarm.keep_seeding = true;
    add.swarm.blocking_io = false;
    add
}

/// A session on a new simnet host at `ip` (port 6881), no DHT, no trackers, hashing inline:
/// a peer of a simnet test.
pub async fn sim_session(net: &simnet::Network, ip: &str, rng_seed: u64) -> Session {
    let h = net.add_host(ip.parse().unwrap()).unwrap();
    let listen = format!("{ip}:6881").parse().unwrap();
    sim_session_on(h, listen, rng_seed, DialConfig::default()).await
}

/// A session on simnet host `h` listening on `listen`, no DHT, no trackers, hashing inline,
/// dialling peers as `transport` says.
pub async fn sim_session_on(
    h: simnet::Host,
    listen: SocketAddr,
    rng_seed: u64,
    transport: DialConfig,
) -> Session {
    Session::start(SessionConfig {
        net: Net::Sim(h),
        listen: Some(listen),
        rng_seed: Some(rng_seed),
        blocking_io: false,
        dht: None,
        trackers: None,
        transport,
    })
    .await
    .unwrap()
}

/// A session on real loopback sockets at `ip` (port 0), otherwise the defaults.
pub async fn loopback_session(ip: impl Into<IpAddr>, rng_seed: u64) -> Session {
    Session::start(SessionConfig {
        listen: Some(SocketAddr::new(ip.into(), 0)),
        rng_seed: Some(rng_seed),
        ..SessionConfig::default()
    })
    .await
    .unwrap()
}

/// A session on real loopback sockets at `ip` (port 0) that speaks TCP only, with the given
/// MSE/PE policy, and no DHT or trackers: one end of an encryption test.
pub async fn loopback_tcp_session(
    ip: impl Into<IpAddr>,
    rng_seed: u64,
    encryption: Encryption,
) -> Session {
    loopback_session_on(ip, rng_seed, TransportMode::Tcp, encryption).await
}

/// A session on real loopback sockets at `ip` (port 0) with the given transport mode and
/// MSE/PE policy, and no DHT or trackers.
pub async fn loopback_session_on(
    ip: impl Into<IpAddr>,
    rng_seed: u64,
    mode: TransportMode,
    encryption: Encryption,
) -> Session {
    Session::start(SessionConfig {
        listen: Some(SocketAddr::new(ip.into(), 0)),
        rng_seed: Some(rng_seed),
        dht: None,
        trackers: None,
        transport: DialConfig {
            mode,
            encryption,
            ..Default::default()
        },
        ..SessionConfig::default()
    })
    .await
    .unwrap()
}

/// Seeds `meta` from the complete files in `dir` on `session`, once the start-up check has
/// found them complete (at most 20 s): the seeder of a loopback test.
pub async fn seed_from_disk(
    session: &Session,
    meta: &Arc<Metainfo>,
    dir: &std::path::Path,
) -> TorrentHandle {
    let mut add = AddTorrent::new(
        Source::Metainfo(meta.clone()),
        StorageSpec::Disk(dir.to_path_buf()),
    );
    add.swarm.keep_seeding = true;
    let seeding = session.add(add);
    let mut prog = seeding.progress();
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while prog.borrow().phase != Phase::Seeding {
            prog.changed().await.unwrap();
        }
    })
    .await
    .expect("the seeder never reached seeding");
    seeding
}
