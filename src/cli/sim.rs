//! `magnetfetch sim`: runs a swarm scenario ([`crate::sim`]) over simnet and prints its
//! report (a table, or one JSON object with `--json`; `--plot` writes the completion CDF).
//!
//! No protocol logic here: flag parsing and printing.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::sim::{cdf_svg, parse_bytes, run_blocking, Dist, Scenario};

fn bytes_arg(s: &str) -> Result<u64, String> {
    parse_bytes(s)
}

#[derive(Args, Debug)]
pub struct SimArgs {
    /// DHT-only nodes (the first three are the bootstrap nodes).
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    #[arg(long, default_value_t = 1)]
    pub seeders: usize,
    #[arg(long, default_value_t = 20)]
    pub leechers: usize,
    /// Peers that claim every piece and serve corrupt data.
    #[arg(long, default_value_t = 0)]
    pub corrupt: usize,
    /// File size (e.g. 16MiB).
    #[arg(long, default_value = "16MiB", value_parser = bytes_arg)]
    pub size: u64,
    #[arg(long, default_value = "256KiB", value_parser = bytes_arg)]
    pub piece_length: u64,
    /// Leecher uplink, bytes/s (e.g. 1MiB); unlimited if absent.
    #[arg(long, value_parser = bytes_arg)]
    pub up: Option<u64>,
    /// Leecher downlink, bytes/s; unlimited if absent.
    #[arg(long, value_parser = bytes_arg)]
    pub down: Option<u64>,
    /// Seeder uplink (default: --up).
    #[arg(long, value_parser = bytes_arg)]
    pub seed_up: Option<u64>,
    /// Seeder downlink (default: --down).
    #[arg(long, value_parser = bytes_arg)]
    pub seed_down: Option<u64>,
    /// One-way access-link latency of every host, ms (host to host is twice this).
    #[arg(long, default_value_t = 25)]
    pub latency: u64,
    /// Datagram loss probability per access link (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated-time limit after the leechers start, seconds.
    #[arg(long, default_value_t = 3600)]
    pub duration: u64,
    /// Connected peers each session aims for.
    #[arg(long, default_value_t = 50)]
    pub max_peers: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write the completion CDF as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Runs the simulation; returns the exit code (0 = every leecher completed).
pub fn run(a: SimArgs) -> i32 {
    if !(0.0..=1.0).contains(&a.loss) {
        eprintln!("error: --loss must be between 0 and 1");
        return 2;
    }
    let sc = Scenario {
        nodes: a.nodes,
        seeders: a.seeders,
        leechers: a.leechers,
        corrupt: a.corrupt,
        size: a.size,
        piece_length: a.piece_length,
        up: a.up,
        down: a.down,
        seed_up: a.seed_up.or(a.up),
        seed_down: a.seed_down.or(a.down),
        latency: Duration::from_millis(a.latency),
        loss: a.loss,
        seed: a.seed,
        duration: Duration::from_secs(a.duration),
        max_peers: a.max_peers,
        ..Scenario::default()
    };
    let rep = match run_blocking(&sc) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if let Some(p) = &a.plot {
        if let Err(e) = std::fs::write(p, cdf_svg(&rep)) {
            eprintln!("error: cannot write {}: {e}", p.display());
            return 1;
        }
    }
    if a.json {
        match serde_json::to_string(&rep) {
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
    println!("failed pieces / bans {} / {}", r.failed_pieces, r.bans);
    println!(
        "time                 {:.3} s simulated, {:.3} s wall",
        r.sim_time_s, r.wall_time_s
    );
}
