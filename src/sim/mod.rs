//! Swarm simulations: whole swarms of real magnetfetch sessions (DHT BEP 5, metadata BEP 9/10,
//! piece exchange BEP 3, PEX BEP 11) running over `simnet` on tokio's paused clock.
//!
//! Every simulated peer is a real [`Session`] plus a real [`Dht`] node on its own simnet host
//! (addresses 127.x.y.z). Leechers start from a bare magnet link: DHT lookup → metadata →
//! pieces; they keep seeding after completion until the scenario ends (flash-crowd model).
//! Payload is [`crate::torrent::storage::generate`]d, so no RAM or disk is spent on data.
//!
//! Determinism: one `simnet::Network` seed, per-session and per-node seeds derived from the
//! scenario seed, inline hashing (`blocking_io: false`), and a current-thread runtime. The
//! same [`Scenario`] gives the same [`Report`] (except `wall_time_s`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::dht::node::{Dht, DhtConfig, LookupSummary};
use crate::id::InfoHash;
use crate::magnet::{Magnet, PeerAddr};
use crate::metainfo::{FileEntry, Info, Metainfo};
use crate::net::Net;
use crate::session::{
    AddTorrent, Phase, Session, SessionConfig, Source, StorageSpec, TorrentHandle,
};
use crate::torrent::storage::generated_hashes;
use crate::torrent::{FileSpec, Layout};

/// The port every simulated peer listens on (TCP for peers, UDP for its DHT node).
const PORT: u16 = 6881;

/// A swarm to simulate.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// DHT-only nodes (the first three are everyone's bootstrap nodes).
    pub nodes: usize,
    pub seeders: usize,
    pub leechers: usize,
    /// Peers that claim every piece but serve corrupt data (a wrong content seed).
    pub corrupt: usize,
    /// File size in bytes.
    pub size: u64,
    pub piece_length: u64,
    /// Leecher uplink / downlink in bytes/s (`None`: unlimited).
    pub up: Option<u64>,
    pub down: Option<u64>,
    /// Seeder uplink / downlink (`None`: unlimited).
    pub seed_up: Option<u64>,
    pub seed_down: Option<u64>,
    /// One-way latency of every host's access link (host to host is twice this).
    pub latency: Duration,
    /// Datagram loss probability per access link.
    pub loss: f64,
    pub seed: u64,
    /// Simulated-time limit after the leechers start.
    pub duration: Duration,
    /// Find peers through the DHT (true) or start leechers with the seeders in `x.pe`.
    pub dht: bool,
    /// Interval between a leecher's DHT re-lookups (announcing itself each time).
    pub relookup: Duration,
    /// Connected peers each session aims for.
    pub max_peers: usize,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            nodes: 0,
            seeders: 1,
            leechers: 10,
            corrupt: 0,
            size: 4 << 20,
            piece_length: 256 << 10,
            up: None,
            down: None,
            seed_up: None,
            seed_down: None,
            latency: Duration::from_millis(25),
            loss: 0.0,
            seed: 1,
            duration: Duration::from_secs(3600),
            dht: true,
            relookup: Duration::from_secs(15),
            max_peers: 50,
        }
    }
}

/// min / median / p90 / max of a sample, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Dist {
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

impl Dist {
    /// None for an empty sample. Nearest-rank percentiles.
    pub fn of(mut v: Vec<f64>) -> Option<Dist> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Dist {
            min: v[0],
            median: rank(0.5),
            p90: rank(0.9),
            max: v[v.len() - 1],
        })
    }
}

/// What a simulation measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub leechers: usize,
    pub leechers_completed: usize,
    /// Leecher start (t = 0) to verified completion.
    pub completion_s: Option<Dist>,
    /// Leecher start to verified metadata.
    pub metadata_s: Option<Dist>,
    /// Queries sent by each leecher's first DHT lookup (median).
    pub lookup_messages_median: Option<f64>,
    pub lookup_rounds_median: Option<f64>,
    pub lookup_time_s_median: Option<f64>,
    /// Fluid-model lower bound on the last completion (needs every rate set).
    pub t_star_s: Option<f64>,
    /// `t_star_s / completion_s.max` (1 = as fast as physically possible).
    pub efficiency: Option<f64>,
    pub uploaded_by_seeders: u64,
    pub uploaded_by_leechers: u64,
    pub failed_pieces: u64,
    pub bans: u64,
    /// Sorted completion times (the CDF).
    pub completion_times_s: Vec<f64>,
    /// Simulated seconds from leecher start to the end (last completion or the limit).
    pub sim_time_s: f64,
    pub wall_time_s: f64,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("bad scenario: {0}")]
    Scenario(String),
    #[error("simulated network: {0}")]
    Io(#[from] std::io::Error),
}

fn host_ip(i: usize) -> IpAddr {
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

/// `T* = max(F/U_seed, F/D_leecher, N·F/(U_seed + N·U_leecher))` (all seeders' uplinks
/// summed); None unless every rate it needs is set.
pub fn fluid_bound(sc: &Scenario) -> Option<f64> {
    let f = sc.size as f64;
    let n = sc.leechers as f64;
    let us = sc.seed_up? as f64 * sc.seeders.max(1) as f64;
    let ul = sc.up? as f64;
    let dl = sc.down? as f64;
    Some((f / us).max(f / dl).max(n * f / (us + n * ul)))
}

struct Peer {
    _dht: Option<Dht>,
    _session: Session,
    handle: TorrentHandle,
}

#[derive(Default)]
struct LeechResult {
    metadata_ms: Option<u64>,
    done: Option<Duration>,
    first_lookup: Option<LookupSummary>,
}

fn session_cfg(host: &simnet::Host, ip: IpAddr, seed: u64) -> SessionConfig {
    SessionConfig {
        net: Net::Sim(host.clone()),
        listen: Some(SocketAddr::new(ip, PORT)),
        rng_seed: Some(seed),
        blocking_io: false,
        dht: None,
        trackers: None,
        transport: Default::default(),
    }
}

async fn start_dht(
    host: &simnet::Host,
    ip: IpAddr,
    bootstrap: &[SocketAddr],
    seed: u64,
) -> Result<Dht, SimError> {
    let cfg = DhtConfig {
        bootstrap: bootstrap.iter().copied().filter(|a| a.ip() != ip).collect(),
        seed: Some(seed),
        ..DhtConfig::default()
    };
    Ok(Dht::start(Net::Sim(host.clone()), SocketAddr::new(ip, PORT), cfg).await?)
}

/// Starts a lookup that announces us and forwards the peers it finds to the torrent.
async fn lookup_into(
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

/// Runs a scenario on the current runtime (which must be a current-thread runtime with a
/// paused clock for determinism; [`run_blocking`] builds one).
pub async fn run(sc: &Scenario) -> Result<Report, SimError> {
    if sc.seeders == 0 {
        return Err(SimError::Scenario("need at least one seeder".into()));
    }
    if sc.size == 0 || sc.piece_length == 0 {
        return Err(SimError::Scenario(
            "size and piece length must be > 0".into(),
        ));
    }
    let meta = make_metainfo(sc)?;
    let ih = meta.info_hash;
    let net = simnet::Network::new(sc.seed);
    let mut next_ip = 0usize;
    let mut new_host =
        |up: Option<u64>, down: Option<u64>| -> Result<(simnet::Host, IpAddr), SimError> {
            let ip = host_ip(next_ip);
            next_ip += 1;
            let mut cfg = simnet::HostConfig::new(ip)
                .latency(sc.latency)
                .loss(sc.loss);
            if let Some(u) = up {
                cfg = cfg.up_rate(u);
            }
            if let Some(d) = down {
                cfg = cfg.down_rate(d);
            }
            Ok((net.add_host_with(cfg)?, ip))
        };
    let sub = |k: u64, i: usize| sc.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (k << 56) ^ i as u64;

    // 1. The DHT: plain nodes, all bootstrapped before the torrent exists.
    let mut dht_nodes = Vec::new();
    let mut bootstrap: Vec<SocketAddr> = Vec::new();
    if sc.dht {
        for i in 0..sc.nodes {
            let (h, ip) = new_host(None, None)?;
            if i < 3 {
                bootstrap.push(SocketAddr::new(ip, PORT));
            }
            dht_nodes.push(start_dht(&h, ip, &bootstrap, sub(1, i)).await?);
        }
        for d in &dht_nodes {
            d.bootstrapped().await;
        }
    }

    // 2. Seeders (and corrupt "seeders"): complete from the start, announced.
    let mut seeds: Vec<Peer> = Vec::new();
    let mut seed_addrs = Vec::new();
    for i in 0..sc.seeders + sc.corrupt {
        let (h, ip) = new_host(sc.seed_up, sc.seed_down)?;
        if sc.dht && bootstrap.len() < 3 {
            bootstrap.push(SocketAddr::new(ip, PORT));
        }
        let dht = if sc.dht {
            Some(start_dht(&h, ip, &bootstrap, sub(2, i)).await?)
        } else {
            None
        };
        let session = Session::start(session_cfg(&h, ip, sub(3, i))).await?;
        let content = if i < sc.seeders { sc.seed } else { !sc.seed };
        let mut add = AddTorrent::new(
            Source::Metainfo(meta.clone()),
            StorageSpec::Generated {
                seed: content,
                complete: true,
            },
        );
        add.swarm.keep_seeding = true;
        add.swarm.blocking_io = false;
        add.swarm.max_peers = sc.max_peers;
        let handle = session.add(add);
        if let Some(d) = &dht {
            d.bootstrapped().await;
            let _ = lookup_into(d, ih, handle.peer_sender()).await.await;
        }
        seed_addrs.push(SocketAddr::new(ip, PORT));
        seeds.push(Peer {
            _dht: dht,
            _session: session,
            handle,
        });
    }

    // 3. The flash crowd: every leecher starts at t0 from the magnet link.
    let t0 = Instant::now();
    let deadline = t0 + sc.duration;
    let mut magnet = Magnet::new(ih);
    if !sc.dht {
        magnet.peers = seed_addrs.iter().map(|a| PeerAddr::Ip(*a)).collect();
    }
    let mut tasks = Vec::new();
    for i in 0..sc.leechers {
        let (h, ip) = new_host(sc.up, sc.down)?;
        let dht = if sc.dht {
            Some(start_dht(&h, ip, &bootstrap, sub(4, i)).await?)
        } else {
            None
        };
        let session = Session::start(session_cfg(&h, ip, sub(5, i))).await?;
        let mut add = AddTorrent::new(
            Source::Magnet(magnet.clone()),
            StorageSpec::Generated {
                seed: sc.seed,
                complete: false,
            },
        );
        add.swarm.keep_seeding = true;
        add.swarm.blocking_io = false;
        add.swarm.max_peers = sc.max_peers;
        add.metadata_timeout = sc.duration;
        let handle = session.add(add);
        let relookup = sc.relookup;
        tasks.push(tokio::spawn(async move {
            let r = leech(dht.as_ref(), &handle, ih, t0, deadline, relookup).await;
            (
                r,
                Peer {
                    _dht: dht,
                    _session: session,
                    handle,
                },
            )
        }));
    }
    let mut results = Vec::new();
    let mut leechers = Vec::new();
    for t in tasks {
        if let Ok((r, p)) = t.await {
            results.push(r);
            leechers.push(p);
        }
    }
    let sim_time = t0.elapsed();

    // 4. Stop everyone and collect the counters.
    for p in seeds.iter().chain(leechers.iter()) {
        p.handle.stop();
    }
    let mut rep = Report {
        leechers: sc.leechers,
        seed: sc.seed,
        sim_time_s: secs(sim_time),
        ..Report::default()
    };
    for (i, p) in seeds.into_iter().enumerate() {
        if let Ok(o) = p.handle.wait().await {
            if i < sc.seeders {
                rep.uploaded_by_seeders += o.summary.uploaded;
            }
        }
    }
    for p in leechers {
        if let Ok(o) = p.handle.wait().await {
            rep.uploaded_by_leechers += o.summary.uploaded;
            rep.failed_pieces += o.summary.failed_pieces;
            rep.bans += o.summary.bans;
        }
    }
    let mut done: Vec<f64> = results.iter().filter_map(|r| r.done.map(secs)).collect();
    done.sort_by(f64::total_cmp);
    rep.leechers_completed = done.len();
    rep.completion_s = Dist::of(done.clone());
    rep.completion_times_s = done;
    rep.metadata_s = Dist::of(
        results
            .iter()
            .filter_map(|r| r.metadata_ms.map(|m| m as f64 / 1000.0))
            .collect(),
    );
    let lookups: Vec<&LookupSummary> = results
        .iter()
        .filter_map(|r| r.first_lookup.as_ref())
        .collect();
    rep.lookup_messages_median =
        Dist::of(lookups.iter().map(|l| l.queries_sent as f64).collect()).map(|d| d.median);
    rep.lookup_rounds_median =
        Dist::of(lookups.iter().map(|l| l.rounds as f64).collect()).map(|d| d.median);
    rep.lookup_time_s_median =
        Dist::of(lookups.iter().map(|l| secs(l.duration)).collect()).map(|d| d.median);
    rep.t_star_s = fluid_bound(sc);
    if let (Some(t), Some(c)) = (rep.t_star_s, rep.completion_s) {
        if rep.leechers_completed == sc.leechers && c.max > 0.0 {
            rep.efficiency = Some(round3(t / c.max));
        }
    }
    drop(dht_nodes);
    Ok(rep)
}

fn secs(d: Duration) -> f64 {
    // Millisecond resolution (the virtual clock's), so reports print exactly.
    d.as_millis() as f64 / 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One leecher: looks peers up (re-announcing every `relookup`) until its download is
/// verified complete or the deadline passes.
async fn leech(
    dht: Option<&Dht>,
    handle: &TorrentHandle,
    ih: InfoHash,
    t0: Instant,
    deadline: Instant,
    relookup: Duration,
) -> LeechResult {
    let mut res = LeechResult::default();
    let mut prog = handle.progress();
    let tx = handle.peer_sender();
    let mut pending = match dht {
        Some(d) => Some(lookup_into(d, ih, tx.clone()).await),
        None => None,
    };
    let mut next_lookup = Instant::now() + relookup;
    loop {
        {
            let p = prog.borrow_and_update();
            if res.metadata_ms.is_none() {
                res.metadata_ms = p.metadata_ms;
            }
            if matches!(p.phase, Phase::Seeding | Phase::Done) && p.total > 0 {
                res.done = Some(t0.elapsed());
                return res;
            }
            if p.phase == Phase::Stopped {
                return res;
            }
        }
        tokio::select! {
            biased;
            c = prog.changed() => if c.is_err() { return res; },
            s = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                pending = None;
                if res.first_lookup.is_none() {
                    res.first_lookup = s.ok();
                }
                // Without metadata we may know only a seeder whose connection slots are
                // full: ask again soon (announcing us, so the crowd finds itself).
                let wait = if prog.borrow().total == 0 {
                    relookup.min(Duration::from_secs(2))
                } else {
                    relookup
                };
                next_lookup = Instant::now() + wait;
            }
            _ = tokio::time::sleep_until(next_lookup), if pending.is_none() && dht.is_some() => {
                if let Some(d) = dht {
                    pending = Some(lookup_into(d, ih, tx.clone()).await);
                }
            }
            _ = tokio::time::sleep_until(deadline) => return res,
        }
    }
}

/// Runs a scenario on a fresh current-thread runtime with a paused clock and fills in the
/// wall time.
pub fn run_blocking(sc: &Scenario) -> Result<Report, SimError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    let wall = std::time::Instant::now();
    let mut rep = rt.block_on(run(sc))?;
    rep.wall_time_s = round3(wall.elapsed().as_secs_f64());
    Ok(rep)
}

/// Parses `16MiB`, `10MB`, `512k`, `1.5GiB`, `1MiB/s` or a plain number of bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "unknown unit in {s:?} (use B, KiB, MiB, GiB, kB, MB, GB)"
            ))
        }
    };
    let v = n * mult;
    if !v.is_finite() || !(0.0..=1e15).contains(&v) {
        return Err(format!("size out of range: {s:?}"));
    }
    Ok(v.round() as u64)
}

/// An SVG of the completion CDF (fraction of leechers done against simulated seconds).
pub fn cdf_svg(rep: &Report) -> String {
    let (w, h, m) = (640.0, 400.0, 50.0);
    let tmax = rep
        .completion_times_s
        .last()
        .copied()
        .unwrap_or(1.0)
        .max(rep.t_star_s.unwrap_or(0.0))
        .max(0.001);
    let n = rep.leechers.max(1) as f64;
    let x = |t: f64| m + t / tmax * (w - 2.0 * m);
    let y = |f: f64| h - m - f * (h - 2.0 * m);
    let mut pts = format!("{:.1},{:.1}", x(0.0), y(0.0));
    for (i, t) in rep.completion_times_s.iter().enumerate() {
        pts += &format!(
            " {:.1},{:.1} {:.1},{:.1}",
            x(*t),
            y(i as f64 / n),
            x(*t),
            y((i + 1) as f64 / n)
        );
    }
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\">completion CDF: {} of {} leechers, seed {}</text>\n\
         <line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n",
        w / 2.0,
        rep.leechers_completed,
        rep.leechers,
        rep.seed,
        h - m,
        w - m,
        h - m,
        h - m
    );
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}%</text>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.1}</text>\n",
            m - 5.0,
            y(f) + 4.0,
            f * 100.0,
            x(f * tmax),
            h - m + 16.0,
            f * tmax
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">simulated seconds since leecher start</text>\n",
        w / 2.0,
        h - 10.0
    );
    if let Some(t) = rep.t_star_s {
        s += &format!(
            "<line x1=\"{0:.1}\" y1=\"{m}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"gray\" stroke-dasharray=\"4\"/>\n<text x=\"{0:.1}\" y=\"{2}\" fill=\"gray\">T*</text>\n",
            x(t),
            h - m,
            m - 5.0
        );
    }
    s += &format!("<polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"2\" points=\"{pts}\"/>\n</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_bytes("10MiB/s").unwrap(), 10 << 20);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1500);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("1e300").is_err());
    }

    #[test]
    fn dist_percentiles() {
        let d = Dist::of((1..=10).map(f64::from).collect()).unwrap();
        assert_eq!((d.min, d.median, d.p90, d.max), (1.0, 5.0, 9.0, 10.0));
        assert!(Dist::of(Vec::new()).is_none());
    }

    #[test]
    fn fluid_bound_flash_crowd() {
        let sc = Scenario {
            leechers: 200,
            size: 16 << 20,
            seed_up: Some(10 << 20),
            up: Some(1 << 20),
            down: Some(10 << 20),
            ..Scenario::default()
        };
        // N·F/(Us + N·Ul) = 200·16/(10+200) s.
        let t = fluid_bound(&sc).unwrap();
        assert!((t - 200.0 * 16.0 / 210.0).abs() < 1e-9);
        assert!(fluid_bound(&Scenario::default()).is_none());
    }
}
