//! What a simulation measured: the [`Report`], its distributions, upload utilisation and
//! the fluid-model bound T* a flash crowd is compared with.

use std::time::Duration;

use serde::Serialize;

use super::*;

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

/// Upload utilisation: payload bytes sent divided by what the uplinks could have carried
/// while the peers were in the swarm (from their start to the end of the run or their
/// departure). `None` when the class's uplink is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Utilisation {
    pub seeders: Option<f64>,
    pub leechers: Option<f64>,
}

/// What a simulation measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub leechers: usize,
    pub leechers_completed: usize,
    /// Leechers behind a NAT (`--nat`), and how many of them completed.
    pub nat_leechers: usize,
    pub nat_completed: usize,
    /// Leecher connections made by holepunching (BEP 55), each counted once (by the end
    /// that asked for the rendezvous).
    pub punched_connections: u64,
    /// Rendezvous the leechers asked for that a relay refused, or whose uTP dial failed.
    pub punch_failures: u64,
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
    /// Payload bytes the leechers moved (received + sent) over each transport.
    pub transport_bytes: crate::session::TransportBytes,
    /// Sorted completion times (the CDF).
    pub completion_times_s: Vec<f64>,
    /// Swarm progress over time, one sample per simulated second: `[t, fraction]`, the
    /// fraction being verified bytes summed over leechers / (leechers × size).
    pub progress: Vec<[f64; 2]>,
    /// Payload bytes sent / uplink capacity over the run (`None` when unlimited).
    pub upload_utilisation: Utilisation,
    /// Uploaded / file size of each leecher that completed.
    pub share_ratio: Option<Dist>,
    /// Simulated seconds from leecher start to the end (last completion or the limit).
    pub sim_time_s: f64,
    pub wall_time_s: f64,
    pub seed: u64,
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

pub(super) fn secs(d: Duration) -> f64 {
    // Millisecond resolution (the virtual clock's), so reports print exactly.
    d.as_millis() as f64 / 1000.0
}

pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

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
