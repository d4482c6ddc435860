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
//!
//! Files: this one holds the [`Scenario`] and the run (arrivals, sampling, the report's
//! arithmetic); [`peers`] starts sessions and DHT nodes, [`leecher`] is one honest
//! leecher's life, [`report`] the measured numbers, [`scenario`] the TOML format and
//! [`misbehave`] the liars. Printing and plotting live with the command (`cli::sim`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::dht::node::LookupSummary;
use crate::magnet::{Magnet, PeerAddr};
use crate::net::Net;
use crate::session::{AddTorrent, Progress, Source, StorageSpec};

mod leecher;
mod misbehave;
mod peers;
mod report;
mod scenario;
pub use peers::make_metainfo;
pub use report::{fluid_bound, Dist, Report, Utilisation};
pub use scenario::ScenarioFile;

use leecher::{leecher, LeecherCtx};
use peers::{host_ip, lookup_into, start_dht, start_peer, LeechResult, Peer};
use report::{round3, secs};

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
    /// Every session limits its uploads to this fraction of its uplink (`None`: no limit).
    /// A sender that fills its uplink queue delays its own requests and the acknowledgements
    /// of what it downloads by seconds (the queue is FIFO), which starves its downloads;
    /// real users cap uploads below the line rate (or use a delay-based transport) for
    /// the same reason. See docs/simulation.md.
    pub up_cap: Option<f64>,
    /// Leecher arrivals: `None` = all at t = 0 (flash crowd); `Some(λ)` = a Poisson process
    /// of λ leechers per simulated second.
    pub arrival_rate: Option<f64>,
    /// Churn: a leecher leaves this long after completing (`None`: it stays and seeds).
    pub leave_after_done: Option<Duration>,
    /// Churn: a leecher leaves this long after arriving, complete or not.
    pub leave_after: Option<Duration>,
    /// Fraction of leechers behind a home NAT (simnet `NatKind::Home`): they dial out, nobody
    /// dials them in, and over uTP they are reached by holepunching (BEP 55) through a peer
    /// both are connected to.
    pub nat: f64,
    /// The NAT those leechers sit behind (default: the common home NAT).
    pub nat_kind: simnet::NatKind,
    /// Peers that serve a forged info dictionary (and data to match it) under our info-hash.
    pub bad_metadata: usize,
    /// DHT nodes that answer every `get_peers` with made-up peers and never store anything.
    pub dht_liars: usize,
    /// Announced peers (and DHT nodes) that accept connections and never answer.
    pub silent: usize,
    /// Peer transport of the seeders and leechers (default TCP).
    pub transport: crate::dial::TransportMode,
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
            up_cap: None,
            arrival_rate: None,
            leave_after_done: None,
            leave_after: None,
            nat: 0.0,
            nat_kind: simnet::NatKind::Home,
            bad_metadata: 0,
            dht_liars: 0,
            silent: 0,
            transport: crate::dial::TransportMode::Tcp,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("bad scenario: {0}")]
    Scenario(String),
    #[error("simulated network: {0}")]
    Io(#[from] std::io::Error),
}

/// What a peer that is not an honest leecher does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Seeder,
    /// Claims every piece, serves data of another content seed.
    Corrupt,
    /// Serves a forged info dictionary under our info-hash.
    BadMetadata,
}

type ProgressSlots = Arc<std::sync::Mutex<Vec<Option<watch::Receiver<Progress>>>>>;

/// One leecher's fate, reported as soon as it completes or gives up.
struct Arrived {
    index: usize,
    arrive: Instant,
    result: LeechResult,
}

/// A leecher after the run: its peer (to stop and collect) and when it left, if it did.
struct Gone {
    index: usize,
    peer: Option<Peer>,
    left: Option<Instant>,
}

/// Runs a scenario on the current runtime (which must be a current-thread runtime with a
/// paused clock for determinism; [`run_blocking`] builds one).
pub async fn run(sc: &Scenario) -> Result<Report, SimError> {
    sc.validate()?;
    let meta = make_metainfo(sc)?;
    let ih = meta.info_hash;
    // Listen backlog as the real client's (`net::Net::listen` asks the kernel for 1024):
    // simnet's default 128 refused most of a flash crowd's simultaneous connects to the seed.
    let net = simnet::Network::with_config(
        sc.seed,
        simnet::NetworkConfig {
            accept_backlog: 1024,
            ..Default::default()
        },
    );
    // Scenario-level random choices (arrival times, who is NATed): their own stream, so
    // adding one does not shift every session's seed.
    let mut rng = StdRng::seed_from_u64(sc.seed ^ 0x5ce7_a810_0000_0000);
    let mut next_ip = 0usize;
    let mut new_host = |up: Option<u64>,
                        down: Option<u64>,
                        nat: bool|
     -> Result<(simnet::Host, IpAddr), SimError> {
        let ip = host_ip(next_ip);
        next_ip += 1;
        let mut cfg = simnet::HostConfig::new(ip)
            .latency(sc.latency)
            .loss(sc.loss);
        if nat {
            cfg = cfg.nat_kind(sc.nat_kind);
        }
        if let Some(u) = up {
            cfg = cfg.up_rate(u);
        }
        if let Some(d) = down {
            cfg = cfg.down_rate(d);
        }
        Ok((net.add_host_with(cfg)?, ip))
    };
    let sub = |k: u64, i: usize| sc.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (k << 56) ^ i as u64;

    // 1. The DHT: plain nodes, all bootstrapped before the torrent exists; then the liars,
    //    which make themselves known to the bootstrap nodes.
    let mut dht_nodes = Vec::new();
    let mut bootstrap: Vec<SocketAddr> = Vec::new();
    let mut background = tokio::task::JoinSet::new();
    if sc.dht {
        for i in 0..sc.nodes {
            let (h, ip) = new_host(None, None, false)?;
            if i < 3 {
                bootstrap.push(SocketAddr::new(ip, PORT));
            }
            dht_nodes.push(start_dht(&h, ip, &bootstrap, sub(1, i)).await?);
        }
        for d in &dht_nodes {
            d.bootstrapped().await;
        }
        let liars = (0..sc.dht_liars)
            .map(|_| new_host(None, None, false))
            .collect::<Result<Vec<_>, _>>()?;
        let liar_ips: Vec<IpAddr> = liars.iter().map(|(_, ip)| *ip).collect();
        for (i, (h, ip)) in liars.into_iter().enumerate() {
            let sock = Net::Sim(h).bind_udp(SocketAddr::new(ip, PORT)).await?;
            background.spawn(misbehave::dht_liar(
                sock,
                bootstrap.clone(),
                liar_ips.clone(),
                sub(6, i),
            ));
        }
    }

    // 2. Seeders and misbehaving "seeders": complete from the start, announced.
    let mut seeds: Vec<(Role, Peer)> = Vec::new();
    let mut seed_addrs = Vec::new();
    let roles = std::iter::repeat_n(Role::Seeder, sc.seeders)
        .chain(std::iter::repeat_n(Role::Corrupt, sc.corrupt))
        .chain(std::iter::repeat_n(Role::BadMetadata, sc.bad_metadata));
    for (i, role) in roles.enumerate() {
        let (h, ip) = new_host(sc.seed_up, sc.seed_down, false)?;
        if sc.dht && bootstrap.len() < 3 {
            bootstrap.push(SocketAddr::new(ip, PORT));
        }
        let boot = sc.dht.then_some(bootstrap.as_slice());
        let (dht, session) = start_peer(sc, &h, ip, boot, sub(2, i), sub(3, i)).await?;
        let (source, content) = match role {
            Role::Seeder => (meta.clone(), sc.seed),
            Role::Corrupt => (meta.clone(), !sc.seed),
            Role::BadMetadata => (misbehave::forged_metainfo(sc, ih)?, !sc.seed),
        };
        let mut add = AddTorrent::new(
            Source::Metainfo(source),
            StorageSpec::Generated {
                seed: content,
                complete: true,
            },
        );
        add.swarm.keep_seeding = true;
        add.swarm.blocking_io = false;
        add.swarm.max_peers = sc.max_peers;
        add.swarm.max_up_rate = upload_cap(sc.seed_up, sc.up_cap);
        let handle = session.add(add);
        if let Some(d) = &dht {
            d.bootstrapped().await;
            let _ = lookup_into(d, ih, handle.peer_sender()).await.await;
        }
        seed_addrs.push(SocketAddr::new(ip, PORT));
        seeds.push((
            role,
            Peer {
                _dht: dht,
                _session: session,
                handle,
                host: h,
            },
        ));
    }

    // 2b. Silent peers: announce themselves through a real DHT node, then go quiet (the
    //     node is dropped; connections are accepted and never answered).
    for i in 0..sc.silent {
        let (h, ip) = new_host(None, None, false)?;
        if sc.dht {
            let d = start_dht(&h, ip, &bootstrap, sub(7, i)).await?;
            d.bootstrapped().await;
            let (tx, _rx) = mpsc::channel(1);
            let _ = lookup_into(&d, ih, tx).await.await;
        }
        let listener = Net::Sim(h).listen(SocketAddr::new(ip, PORT)).await?;
        background.spawn(misbehave::silent_peer(listener));
        seed_addrs.push(SocketAddr::new(ip, PORT));
    }

    // 3. The leechers: all at t0 (flash crowd) or Poisson arrivals, each from the magnet.
    let t0 = Instant::now();
    let deadline = t0 + sc.duration;
    let mut magnet = Magnet::new(ih);
    if !sc.dht {
        magnet.peers = seed_addrs.iter().map(|a| PeerAddr::Ip(*a)).collect();
    }
    let arrivals = arrival_offsets(sc, &mut rng);
    let natted = choose(
        sc.leechers,
        (sc.nat * sc.leechers as f64).round() as usize,
        &mut rng,
    );
    let slots: ProgressSlots = Arc::new(std::sync::Mutex::new(vec![None; sc.leechers]));
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel::<Arrived>();
    let (end_tx, end_rx) = watch::channel(false);
    let (sample_tx, sample_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample(
        seeds.iter().map(|(_, p)| p.handle.progress()).collect(),
        slots.clone(),
        t0,
        sc.size,
        sample_rx,
    ));
    let mut tasks = Vec::new();
    for (i, offset) in arrivals.iter().copied().enumerate() {
        let (h, ip) = new_host(sc.up, sc.down, natted.contains(&i))?;
        let ctx = LeecherCtx {
            index: i,
            host: h,
            ip,
            bootstrap: sc.dht.then(|| bootstrap.clone()),
            magnet: magnet.clone(),
            ih,
            dht_seed: sub(4, i),
            session_seed: sub(5, i),
            arrive: t0 + offset,
            deadline,
            content: sc.seed,
            sc: sc.clone(),
            slots: slots.clone(),
            arrived: arrived_tx.clone(),
            end: end_rx.clone(),
        };
        tasks.push(tokio::spawn(leecher(ctx)));
    }
    drop(arrived_tx);
    let mut results: Vec<Option<(Instant, LeechResult)>> = (0..sc.leechers).map(|_| None).collect();
    let mut pending = sc.leechers;
    let mut last = t0;
    while pending > 0 {
        tokio::select! {
            biased;
            a = arrived_rx.recv() => match a {
                Some(a) => {
                    pending -= 1;
                    last = last.max(Instant::now());
                    if let Some(r) = results.get_mut(a.index) {
                        *r = Some((a.arrive, a.result));
                    }
                }
                None => break,
            },
            // Leechers give up at the deadline themselves; this is a backstop.
            _ = tokio::time::sleep_until(deadline + Duration::from_secs(1)) => break,
        }
    }
    let end = Instant::now().min(deadline).max(last);
    let sim_time = end.saturating_duration_since(t0);
    let _ = sample_tx.send(true);
    let progress = sampler.await.unwrap_or_default();
    let _ = end_tx.send(true);
    let mut gone = Vec::new();
    for t in tasks {
        if let Ok(g) = t.await {
            gone.push(g);
        }
    }

    // 4. Stop everyone and collect the counters.
    for (_, p) in &seeds {
        p.handle.stop();
    }
    for g in &gone {
        if let Some(p) = &g.peer {
            p.handle.stop();
        }
    }
    let mut rep = Report {
        leechers: sc.leechers,
        seed: sc.seed,
        sim_time_s: secs(sim_time),
        progress,
        ..Report::default()
    };
    for (role, p) in seeds {
        if let Ok(o) = p.handle.wait().await {
            if role == Role::Seeder {
                rep.uploaded_by_seeders += o.summary.uploaded;
            }
        }
    }
    let mut leecher_capacity = 0f64;
    let mut ratios = Vec::new();
    for g in gone {
        let Some(p) = g.peer else { continue };
        let arrive = t0 + arrivals.get(g.index).copied().unwrap_or_default();
        let until = g.left.unwrap_or(end).min(end);
        if let Some(u) = sc.up {
            leecher_capacity += u as f64 * until.saturating_duration_since(arrive).as_secs_f64();
        }
        if let Ok(o) = p.handle.wait().await {
            rep.uploaded_by_leechers += o.summary.uploaded;
            rep.failed_pieces += o.summary.failed_pieces;
            rep.bans += o.summary.bans;
            rep.transport_bytes.tcp += o.summary.transport_bytes.tcp;
            rep.transport_bytes.quic += o.summary.transport_bytes.quic;
            rep.transport_bytes.utp += o.summary.transport_bytes.utp;
            rep.punched_connections += o.summary.punched;
            rep.punch_failures += o.summary.punch_failed;
            if o.summary.complete {
                ratios.push(round3(o.summary.uploaded as f64 / sc.size as f64));
            }
        }
    }
    rep.share_ratio = Dist::of(ratios);
    let seed_capacity = sc
        .seed_up
        .map(|u| u as f64 * sc.seeders as f64 * sim_time.as_secs_f64());
    rep.upload_utilisation = Utilisation {
        seeders: seed_capacity
            .filter(|c| *c > 0.0)
            .map(|c| round3(rep.uploaded_by_seeders as f64 / c)),
        leechers: (sc.up.is_some() && leecher_capacity > 0.0)
            .then(|| round3(rep.uploaded_by_leechers as f64 / leecher_capacity)),
    };
    rep.nat_leechers = natted.len();
    rep.nat_completed = natted
        .iter()
        .filter(|i| {
            results
                .get(**i)
                .is_some_and(|r| r.as_ref().is_some_and(|(_, r)| r.done.is_some()))
        })
        .count();
    let results: Vec<LeechResult> = results.into_iter().flatten().map(|(_, r)| r).collect();
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
    if sc.arrival_rate.is_none() {
        rep.t_star_s = fluid_bound(sc);
    }
    if let (Some(t), Some(c)) = (rep.t_star_s, rep.completion_s) {
        if rep.leechers_completed == sc.leechers && c.max > 0.0 {
            rep.efficiency = Some(round3(t / c.max));
        }
    }
    background.abort_all();
    drop(dht_nodes);
    Ok(rep)
}

/// The session upload limit for a host whose uplink carries `line` bytes/s.
fn upload_cap(line: Option<u64>, frac: Option<f64>) -> Option<u64> {
    let (l, f) = (line?, frac?);
    Some(((l as f64 * f).round() as u64).max(1))
}

/// Each leecher's arrival after t0: all zero (flash crowd) or the partial sums of
/// exponential gaps with mean 1/λ (a Poisson process of rate λ).
pub fn arrival_offsets(sc: &Scenario, rng: &mut StdRng) -> Vec<Duration> {
    match sc.arrival_rate {
        None => vec![Duration::ZERO; sc.leechers],
        Some(rate) => {
            let mut t = 0f64;
            (0..sc.leechers)
                .map(|_| {
                    // Inverse-CDF sampling; 1 - u is in (0, 1] so the log is finite.
                    let u: f64 = rng.random();
                    t += -(1.0 - u).ln() / rate;
                    Duration::from_millis((t * 1000.0).round() as u64)
                })
                .collect()
        }
    }
}

/// `k` distinct indices out of `0..n`, drawn from `rng`.
fn choose(n: usize, k: usize, rng: &mut StdRng) -> BTreeSet<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    all.shuffle(rng);
    all.into_iter().take(k.min(n)).collect()
}

/// Samples the swarm once per simulated second from `t0` until `stop`: returns the swarm
/// progress series; with `RUST_LOG=magnetfetch::sim=debug` also logs upload rates (the
/// instrument used to find where the flash crowd loses time).
async fn sample(
    mut seeds: Vec<watch::Receiver<Progress>>,
    slots: ProgressSlots,
    t0: Instant,
    size: u64,
    mut stop: watch::Receiver<bool>,
) -> Vec<[f64; 2]> {
    let mut out = Vec::new();
    let n = slots.lock().map(|s| s.len()).unwrap_or(0);
    let want = (n as f64 * size as f64).max(1.0);
    let mut last_up: Vec<u64> = vec![0; seeds.len() + n];
    let mut k = 0u32;
    loop {
        let t = t0 + Duration::from_secs(u64::from(k));
        tokio::select! {
            biased;
            _ = stop.changed() => return out,
            _ = tokio::time::sleep_until(t) => {}
        }
        let mut verified = 0u64;
        let mut up_now: Vec<u64> = Vec::with_capacity(last_up.len());
        let (mut peers, mut done, mut seed_peers, mut meta) = (0usize, 0usize, 0usize, 0usize);
        for r in seeds.iter_mut() {
            let p = r.borrow();
            up_now.push(p.uploaded);
            peers += p.peers;
            seed_peers += p.peers;
        }
        if let Ok(mut ls) = slots.lock() {
            for r in ls.iter_mut() {
                let Some(r) = r else {
                    up_now.push(0);
                    continue;
                };
                let p = r.borrow();
                up_now.push(p.uploaded);
                peers += p.peers;
                verified += p.verified;
                meta += usize::from(p.total > 0);
                if p.total > 0 && p.verified >= p.total {
                    done += 1;
                }
            }
        }
        let frac = verified as f64 / want;
        out.push([f64::from(k), round3(frac)]);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let ns = seeds.len();
            let d = |i: usize| up_now[i].saturating_sub(last_up[i]);
            let seed_up: u64 = (0..ns).map(d).sum();
            let mut lu: Vec<u64> = (ns..up_now.len()).map(d).collect();
            lu.sort_unstable();
            let sum: u64 = lu.iter().sum();
            let med = lu.get(lu.len() / 2).copied().unwrap_or(0);
            let idle = lu.iter().filter(|&&x| x < 100_000).count();
            tracing::debug!(
                t = k,
                progress = round3(frac),
                done,
                meta,
                seed_up_mb = seed_up as f64 / 1e6,
                seed_peers,
                leech_up_mb = sum as f64 / 1e6,
                leech_up_median_kb = med / 1000,
                leech_idle = idle,
                avg_peers = peers / up_now.len().max(1),
                "sample"
            );
        }
        last_up = up_now;
        k += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_offsets_have_the_right_mean() {
        let sc = Scenario {
            leechers: 4000,
            arrival_rate: Some(4.0),
            ..Scenario::default()
        };
        let offs = arrival_offsets(&sc, &mut StdRng::seed_from_u64(1));
        // 4000 arrivals at 4/s span ~1000 s (std of the sum ~16 s).
        let last = offs[3999].as_secs_f64();
        assert!((900.0..1100.0).contains(&last), "{last}");
        assert!(offs.windows(2).all(|w| w[0] <= w[1]));
        let flash = arrival_offsets(&Scenario::default(), &mut StdRng::seed_from_u64(1));
        assert!(flash.iter().all(|d| d.is_zero()));
    }
}
