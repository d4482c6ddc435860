//! `magnetfetch sim`: runs a swarm scenario ([`crate::sim`]) over simnet and prints its
//! report (a table, or one JSON object with `--json`, which also echoes the parsed
//! scenario; `--plot` writes the completion CDF and the swarm's progress over time). The
//! scenario comes from a TOML file, flags, or both; sizes and rates are read by
//! [`crate::units`].
//!
//! No protocol logic here: flag parsing and printing.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::sim::{run_blocking, Dist, Scenario, ScenarioFile};
use crate::units::{parse_rate, parse_size};

mod plot;
use plot::report_svg;

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Scenario file (TOML, see docs/simulation.md); flags given as well override its keys.
    pub scenario: Option<PathBuf>,
    /// DHT-only nodes (the first three are the bootstrap nodes) [default: 100].
    #[arg(long)]
    pub nodes: Option<usize>,
    /// [default: 1]
    #[arg(long)]
    pub seeders: Option<usize>,
    /// [default: 20]
    #[arg(long)]
    pub leechers: Option<usize>,
    /// File size (e.g. 16MiB) [default: 16MiB].
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// [default: 256KiB]
    #[arg(long, value_parser = parse_size)]
    pub piece_length: Option<u64>,
    /// Leecher uplink, bytes/s (e.g. 1MiB); unlimited if absent.
    #[arg(long, value_parser = parse_rate)]
    pub up: Option<u64>,
    /// Leecher downlink, bytes/s; unlimited if absent.
    #[arg(long, value_parser = parse_rate)]
    pub down: Option<u64>,
    /// Seeder uplink (default: --up).
    #[arg(long, value_parser = parse_rate)]
    pub seed_up: Option<u64>,
    /// Seeder downlink (default: --down).
    #[arg(long, value_parser = parse_rate)]
    pub seed_down: Option<u64>,
    /// One-way access-link latency of every host, ms (host to host is twice this) [default: 25].
    #[arg(long)]
    pub latency: Option<u64>,
    /// Datagram loss probability per access link (0..1) [default: 0].
    #[arg(long)]
    pub loss: Option<f64>,
    /// RNG seed [default: 1].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Simulated-time limit after the first leecher starts, seconds [default: 3600].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Connected peers each session aims for [default: 50].
    #[arg(long)]
    pub max_peers: Option<usize>,
    /// Leecher arrivals as a Poisson process of this many per second (default: all at 0).
    #[arg(long)]
    pub arrival_rate: Option<f64>,
    /// Churn: leechers leave this many seconds after completing (default: they stay).
    #[arg(long)]
    pub leave_after_done: Option<f64>,
    /// Churn: leechers leave this many seconds after arriving, complete or not.
    #[arg(long)]
    pub leave_after: Option<f64>,
    /// Fraction of leechers behind a NAT (0..1).
    #[arg(long)]
    pub nat: Option<f64>,
    /// Peers that claim every piece and serve corrupt data.
    #[arg(long)]
    pub corrupt: Option<usize>,
    /// Peers that serve a forged info dictionary under the torrent's info-hash.
    #[arg(long)]
    pub bad_metadata: Option<usize>,
    /// DHT nodes that answer get_peers with made-up peers.
    #[arg(long)]
    pub dht_liars: Option<usize>,
    /// Announced peers that accept connections and never answer.
    #[arg(long)]
    pub silent: Option<usize>,
    /// Peer transport of seeders and leechers: tcp, utp, quic or auto [default: tcp].
    #[arg(long)]
    pub transport: Option<crate::dial::TransportMode>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write the completion CDF and swarm progress over time as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

fn secs(key: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && (0.0..=1e7).contains(&v) {
        Ok(Duration::from_millis((v * 1000.0).round() as u64))
    } else {
        Err(format!("--{key} must be a number of seconds"))
    }
}

/// The scenario: the file's (or the defaults, with 100 DHT nodes and 20 leechers), then
/// every flag given.
fn scenario(a: &SimArgs) -> Result<Scenario, String> {
    let mut sc = match &a.scenario {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            ScenarioFile::parse(&text)
                .and_then(|f| f.to_scenario())
                .map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => Scenario {
            nodes: 100,
            leechers: 20,
            size: 16 << 20,
            ..Scenario::default()
        },
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f { sc.$f = v; } )* };
    }
    set!(
        nodes,
        seeders,
        leechers,
        size,
        piece_length,
        loss,
        seed,
        max_peers,
        nat
    );
    set!(corrupt, bad_metadata, dht_liars, silent);
    if a.up.is_some() {
        sc.up = a.up;
        if a.seed_up.is_none() && a.scenario.is_none() {
            sc.seed_up = a.up;
        }
    }
    if a.down.is_some() {
        sc.down = a.down;
        if a.seed_down.is_none() && a.scenario.is_none() {
            sc.seed_down = a.down;
        }
    }
    if a.seed_up.is_some() {
        sc.seed_up = a.seed_up;
    }
    if a.seed_down.is_some() {
        sc.seed_down = a.seed_down;
    }
    if let Some(v) = a.transport {
        sc.transport = v;
    }
    if let Some(v) = a.latency {
        sc.latency = Duration::from_millis(v);
    }
    if let Some(v) = a.duration {
        sc.duration = secs("duration", v)?;
    }
    if let Some(v) = a.arrival_rate {
        sc.arrival_rate = Some(v);
    }
    if let Some(v) = a.leave_after_done {
        sc.leave_after_done = Some(secs("leave-after-done", v)?);
    }
    if let Some(v) = a.leave_after {
        sc.leave_after = Some(secs("leave-after", v)?);
    }
    sc.validate().map_err(|e| e.to_string())?;
    Ok(sc)
}

/// Runs the simulation; returns the exit code (0 = every leecher completed, 1 = some did
/// not or the run failed, 2 = a bad scenario).
pub fn run(a: SimArgs) -> i32 {
    // RUST_LOG=magnetfetch::sim=debug logs the per-second swarm samples.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let sc = match scenario(&a) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let rep = match run_blocking(&sc) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if let Some(p) = &a.plot {
        if let Err(e) = std::fs::write(p, report_svg(&rep)) {
            eprintln!("error: cannot write {}: {e}", p.display());
            return 1;
        }
    }
    if a.json {
        let out = JsonReport {
            report: &rep,
            scenario: ScenarioEcho::of(&sc),
        };
        match serde_json::to_string(&out) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        }
    } else {
        print_table(&rep);
    }
    if rep.leechers_completed == rep.leechers {
        0
    } else {
        1
    }
}

/// `sim --json`: the report's keys, then `scenario`, the scenario as parsed (defaults, file
/// and flags merged), so a user sees what was simulated.
#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    report: &'a crate::sim::Report,
    scenario: ScenarioEcho,
}

/// A [`Scenario`] in plain units: sizes in bytes, rates in bytes/s (`null`: unlimited),
/// times in seconds (latency in milliseconds, as the flag takes it).
#[derive(Serialize)]
struct ScenarioEcho {
    nodes: usize,
    seeders: usize,
    leechers: usize,
    size: u64,
    piece_length: u64,
    up: Option<u64>,
    down: Option<u64>,
    seed_up: Option<u64>,
    seed_down: Option<u64>,
    latency_ms: u128,
    loss: f64,
    seed: u64,
    duration_s: f64,
    max_peers: usize,
    arrival_rate: Option<f64>,
    leave_after_done_s: Option<f64>,
    leave_after_s: Option<f64>,
    nat: f64,
    corrupt: usize,
    bad_metadata: usize,
    dht_liars: usize,
    silent: usize,
    transport: &'static str,
}

impl ScenarioEcho {
    fn of(sc: &Scenario) -> Self {
        ScenarioEcho {
            nodes: sc.nodes,
            seeders: sc.seeders,
            leechers: sc.leechers,
            size: sc.size,
            piece_length: sc.piece_length,
            up: sc.up,
            down: sc.down,
            seed_up: sc.seed_up,
            seed_down: sc.seed_down,
            latency_ms: sc.latency.as_millis(),
            loss: sc.loss,
            seed: sc.seed,
            duration_s: sc.duration.as_secs_f64(),
            max_peers: sc.max_peers,
            arrival_rate: sc.arrival_rate,
            leave_after_done_s: sc.leave_after_done.map(|d| d.as_secs_f64()),
            leave_after_s: sc.leave_after.map(|d| d.as_secs_f64()),
            nat: sc.nat,
            corrupt: sc.corrupt,
            bad_metadata: sc.bad_metadata,
            dht_liars: sc.dht_liars,
            silent: sc.silent,
            transport: sc.transport.as_str(),
        }
    }
}

fn dist(d: &Option<Dist>) -> String {
    match d {
        Some(d) => format!(
            "{:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            d.min, d.median, d.p90, d.max
        ),
        None => "       -".to_string(),
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".to_string(), |v| format!("{v:.3}"))
}

fn print_table(r: &crate::sim::Report) {
    println!("seed {}", r.seed);
    println!(
        "leechers completed   {} / {}",
        r.leechers_completed, r.leechers
    );
    if r.nat_leechers > 0 {
        println!(
            "NATed completed      {} / {}, {} punched connections",
            r.nat_completed, r.nat_leechers, r.punched_connections
        );
    }
    println!("                          min   median      p90      max  (simulated s)");
    println!("metadata             {}", dist(&r.metadata_s));
    println!("completion           {}", dist(&r.completion_s));
    println!(
        "DHT lookup           {} messages, {} rounds, {} s (medians of first lookups)",
        opt(r.lookup_messages_median),
        opt(r.lookup_rounds_median),
        opt(r.lookup_time_s_median)
    );
    println!(
        "efficiency           {}  (T* = {} s)",
        opt(r.efficiency),
        opt(r.t_star_s)
    );
    println!(
        "uploaded             seeders {} B, leechers {} B",
        r.uploaded_by_seeders, r.uploaded_by_leechers
    );
    println!(
        "upload utilisation   seeders {}, leechers {}",
        opt(r.upload_utilisation.seeders),
        opt(r.upload_utilisation.leechers)
    );
    println!("share ratio          {}", dist(&r.share_ratio));
    println!("failed pieces / bans {} / {}", r.failed_pieces, r.bans);
    println!(
        "leecher payload      tcp {} B, quic {} B, utp {} B",
        r.transport_bytes.tcp, r.transport_bytes.quic, r.transport_bytes.utp
    );
    println!(
        "time                 {:.3} s simulated, {:.3} s wall",
        r.sim_time_s, r.wall_time_s
    );
}
