//! Starting the simulated peers: the torrent they share, a [`Session`] and a DHT node (BEP 5)
//! per simnet host, and DHT lookups streamed into a leecher (BEP 5 `get_peers`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::dht::node::{Dht, DhtConfig, LookupSummary};
use crate::id::InfoHash;
use crate::metainfo::{FileEntry, Info, Metainfo};
use crate::net::Net;
use crate::session::{Session, SessionConfig, TorrentHandle};
use crate::torrent::storage::generated_hashes;
use crate::torrent::{FileSpec, Layout};

use super::*;

pub(super) struct Peer {
    pub(super) _dht: Option<Dht>,
    pub(super) _session: Session,
    pub(super) handle: TorrentHandle,
    #[allow(dead_code)]
    pub(super) host: simnet::Host,
}

#[derive(Default)]
pub(super) struct LeechResult {
    pub(super) metadata_ms: Option<u64>,
    pub(super) done: Option<Duration>,
    pub(super) first_lookup: Option<LookupSummary>,
}

pub(super) fn host_ip(i: usize) -> IpAddr {
    // 127.0.0.1, 127.0.0.2, ... (a /8 has room for 16M hosts).
    IpAddr::V4(Ipv4Addr::from(0x7f00_0001u32 + i as u32))
}

/// The simulated torrent: one file of generated content.
pub fn make_metainfo(sc: &Scenario) -> Result<Arc<Metainfo>, SimError> {
    let files = vec![FileSpec {
        path: vec!["sim.bin".to_string()],
        length: sc.size,
        pad: false,
    }];
    let layout =
        Layout::new(sc.piece_length, files).map_err(|e| SimError::Scenario(e.to_string()))?;
    let info = Info {
        name: "sim.bin".to_string(),
        piece_length: sc.piece_length,
        pieces: generated_hashes(sc.seed, &layout),
        files: vec![FileEntry {
            path: vec!["sim.bin".to_string()],
            length: sc.size,
            offset: 0,
            pad: false,
            executable: false,
            hidden: false,
            symlink: false,
        }],
        multi_file: false,
        private: false,
        hybrid: false,
    };
    Ok(Arc::new(Metainfo::from_info(info)))
}

pub(super) fn session_cfg(
    host: &simnet::Host,
    ip: IpAddr,
    seed: u64,
    transport: crate::dial::DialConfig,
) -> SessionConfig {
    SessionConfig {
        net: Net::Sim(host.clone()),
        listen: Some(SocketAddr::new(ip, PORT)),
        rng_seed: Some(seed),
        blocking_io: false,
        dht: None,
        trackers: None,
        transport,
    }
}

/// A seeder's or leecher's DHT node (when `boot` is given) and session. With QUIC both share
/// the one UDP port, as in the real client (`crate::net::quic::bind_shared`).
pub(super) async fn start_peer(
    sc: &Scenario,
    host: &simnet::Host,
    ip: IpAddr,
    boot: Option<&[SocketAddr]>,
    dht_seed: u64,
    session_seed: u64,
) -> Result<(Option<Dht>, Session), SimError> {
    let mut transport = crate::dial::DialConfig {
        mode: sc.transport,
        ..Default::default()
    };
    let dht = match boot {
        Some(b) if sc.transport.uses_quic() || sc.transport.uses_utp() => {
            let qcfg = crate::net::quic::QuicConfig {
                seed: Some(session_seed),
                ..Default::default()
            };
            let ucfg = crate::net::utp::UtpConfig {
                seed: Some(session_seed),
                ..Default::default()
            };
            let addr = SocketAddr::new(ip, PORT);
            let st = crate::net::quic::bind_stack(
                &Net::Sim(host.clone()),
                addr,
                sc.transport.uses_quic().then_some(&qcfg),
                sc.transport.uses_utp().then_some(&ucfg),
            )
            .await?;
            transport.endpoint = st.quic;
            transport.utp_socket = st.utp.map(|(s, l)| crate::net::utp::UtpBound::new(s, l));
            Some(Dht::start_on(st.krpc, dht_cfg(ip, b, dht_seed))?)
        }
        Some(b) => Some(start_dht(host, ip, b, dht_seed).await?),
        None => None,
    };
    let session = Session::start(session_cfg(host, ip, session_seed, transport)).await?;
    Ok((dht, session))
}

pub(super) fn dht_cfg(ip: IpAddr, bootstrap: &[SocketAddr], seed: u64) -> DhtConfig {
    DhtConfig {
        bootstrap: bootstrap.iter().copied().filter(|a| a.ip() != ip).collect(),
        seed: Some(seed),
        ..DhtConfig::default()
    }
}

pub(super) async fn start_dht(
    host: &simnet::Host,
    ip: IpAddr,
    bootstrap: &[SocketAddr],
    seed: u64,
) -> Result<Dht, SimError> {
    let cfg = dht_cfg(ip, bootstrap, seed);
    Ok(Dht::start(Net::Sim(host.clone()), SocketAddr::new(ip, PORT), cfg).await?)
}

/// Starts a lookup that announces us and forwards the peers it finds to the torrent.
pub(super) async fn lookup_into(
    dht: &Dht,
    ih: InfoHash,
    tx: mpsc::Sender<SocketAddr>,
) -> oneshot::Receiver<LookupSummary> {
    let mut h = dht.lookup(ih, Some(Some(PORT)), false).await;
    tokio::spawn(async move {
        while let Some(a) = h.peers.recv().await {
            let _ = tx.try_send(a);
        }
    });
    h.done
}
