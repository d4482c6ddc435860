//! Scenario files: a [`Scenario`] written as TOML (`magnetfetch sim scenario.toml`).
//!
//! Every key is optional (missing keys keep [`Scenario::default`]); unknown keys are an error
//! so a typo never silently runs a different experiment. Sizes and rates are numbers of bytes
//! or strings with a unit, read by [`crate::units`] like every flag (`"16MiB"`, `"256K"`,
//! `"1MiB/s"`; K/M/G binary, kB/MB/GB decimal); times are seconds. Misbehaving peers are a
//! count (`corrupt = 3`) or, written with a decimal point, a fraction of the leechers (of the
//! DHT nodes for `dht_liars`): `corrupt = 0.05`.
//!
//! ```toml
//! seed = 7
//! nodes = 1000
//! seeders = 1
//! leechers = 200
//! size = "16MiB"
//! duration = 600
//! [seeder]
//! up = "10MiB"
//! [leecher]
//! up = "1MiB"
//! down = "10MiB"
//! [arrival]
//! rate = 5.0
//! [churn]
//! leave_after_done = 30
//! [misbehave]
//! corrupt = 2
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::{Scenario, SimError};
use crate::units::{parse_rate, parse_size};

/// A byte count: a number or a string with a unit.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum Bytes {
    N(u64),
    S(String),
}

impl Bytes {
    /// A size in bytes.
    fn size(&self, key: &str) -> Result<u64, SimError> {
        self.parse(key, parse_size)
    }

    /// A rate in bytes/s.
    fn rate(&self, key: &str) -> Result<u64, SimError> {
        self.parse(key, parse_rate)
    }

    fn parse(
        &self,
        key: &str,
        parse: fn(&str) -> Result<u64, crate::units::UnitError>,
    ) -> Result<u64, SimError> {
        match self {
            Bytes::N(n) => Ok(*n),
            Bytes::S(s) => parse(s).map_err(|e| SimError::Scenario(format!("{key}: {e}"))),
        }
    }
}

/// A count (integer) or a fraction of a population (float in [0, 1]).
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(untagged)]
enum Count {
    N(u64),
    F(f64),
}

impl Count {
    fn of(self, population: usize, key: &str) -> Result<usize, SimError> {
        match self {
            Count::N(n) => usize::try_from(n)
                .ok()
                .filter(|&n| n <= 1_000_000)
                .ok_or_else(|| SimError::Scenario(format!("{key}: too many"))),
            Count::F(f) if (0.0..=1.0).contains(&f) => Ok((f * population as f64).round() as usize),
            Count::F(f) => Err(SimError::Scenario(format!(
                "{key}: a fraction must be in [0, 1], got {f}"
            ))),
        }
    }
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Link {
    up: Option<Bytes>,
    down: Option<Bytes>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Arrival {
    /// Leechers per simulated second (Poisson); absent = flash crowd.
    rate: Option<f64>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Churn {
    leave_after_done: Option<f64>,
    leave_after: Option<f64>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Misbehave {
    corrupt: Option<Count>,
    bad_metadata: Option<Count>,
    dht_liars: Option<Count>,
    silent: Option<Count>,
}

/// The TOML model of a scenario (see the module docs for the format).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    seed: Option<u64>,
    nodes: Option<usize>,
    seeders: Option<usize>,
    leechers: Option<usize>,
    size: Option<Bytes>,
    piece_length: Option<Bytes>,
    /// One-way access-link latency, milliseconds.
    latency_ms: Option<u64>,
    loss: Option<f64>,
    /// Simulated-time limit, seconds.
    duration: Option<f64>,
    max_peers: Option<usize>,
    /// Fraction of leechers behind a NAT.
    nat: Option<f64>,
    seeder: Option<Link>,
    leecher: Option<Link>,
    arrival: Option<Arrival>,
    churn: Option<Churn>,
    misbehave: Option<Misbehave>,
    /// Peer transport: "tcp" (default), "quic" or "auto".
    transport: Option<String>,
}

fn secs(key: &str, v: f64) -> Result<Duration, SimError> {
    if v.is_finite() && (0.0..=1e7).contains(&v) {
        Ok(Duration::from_millis((v * 1000.0).round() as u64))
    } else {
        Err(SimError::Scenario(format!(
            "{key}: {v} is not a time in seconds"
        )))
    }
}

impl ScenarioFile {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<ScenarioFile, SimError> {
        toml::from_str(text).map_err(|e| SimError::Scenario(e.to_string()))
    }

    /// The scenario: [`Scenario::default`] with every key the file sets.
    pub fn to_scenario(&self) -> Result<Scenario, SimError> {
        let mut sc = Scenario::default();
        if let Some(v) = self.seed {
            sc.seed = v;
        }
        if let Some(v) = self.nodes {
            sc.nodes = v;
        }
        if let Some(v) = self.seeders {
            sc.seeders = v;
        }
        if let Some(v) = self.leechers {
            sc.leechers = v;
        }
        if let Some(v) = &self.size {
            sc.size = v.size("size")?;
        }
        if let Some(v) = &self.piece_length {
            sc.piece_length = v.size("piece_length")?;
        }
        if let Some(v) = self.latency_ms {
            sc.latency = Duration::from_millis(v);
        }
        if let Some(v) = self.loss {
            sc.loss = v;
        }
        if let Some(v) = self.duration {
            sc.duration = secs("duration", v)?;
        }
        if let Some(v) = self.max_peers {
            sc.max_peers = v;
        }
        if let Some(v) = self.nat {
            sc.nat = v;
        }
        if let Some(l) = &self.seeder {
            sc.seed_up = l.up.as_ref().map(|b| b.rate("seeder.up")).transpose()?;
            sc.seed_down = l.down.as_ref().map(|b| b.rate("seeder.down")).transpose()?;
        }
        if let Some(l) = &self.leecher {
            sc.up = l.up.as_ref().map(|b| b.rate("leecher.up")).transpose()?;
            sc.down = l
                .down
                .as_ref()
                .map(|b| b.rate("leecher.down"))
                .transpose()?;
        }
        if let Some(a) = &self.arrival {
            sc.arrival_rate = a.rate;
        }
        if let Some(c) = &self.churn {
            sc.leave_after_done = c
                .leave_after_done
                .map(|v| secs("churn.leave_after_done", v))
                .transpose()?;
            sc.leave_after = c
                .leave_after
                .map(|v| secs("churn.leave_after", v))
                .transpose()?;
        }
        if let Some(t) = &self.transport {
            sc.transport = t
                .parse()
                .map_err(|e| SimError::Scenario(format!("transport: {e}")))?;
        }
        if let Some(m) = &self.misbehave {
            let n = sc.leechers;
            if let Some(c) = m.corrupt {
                sc.corrupt = c.of(n, "misbehave.corrupt")?;
            }
            if let Some(c) = m.bad_metadata {
                sc.bad_metadata = c.of(n, "misbehave.bad_metadata")?;
            }
            if let Some(c) = m.dht_liars {
                sc.dht_liars = c.of(sc.nodes, "misbehave.dht_liars")?;
            }
            if let Some(c) = m.silent {
                sc.silent = c.of(n, "misbehave.silent")?;
            }
        }
        sc.validate()?;
        Ok(sc)
    }
}

impl Scenario {
    /// Rejects scenarios that cannot run (before any host is created).
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: &str| Err(SimError::Scenario(m.to_string()));
        if self.seeders == 0 {
            return bad("need at least one seeder");
        }
        if self.size == 0 || self.piece_length == 0 {
            return bad("size and piece length must be > 0");
        }
        if !(0.0..=1.0).contains(&self.loss) {
            return bad("loss must be in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.nat) {
            return bad("nat must be a fraction in [0, 1]");
        }
        if let Some(r) = self.arrival_rate {
            if !(r.is_finite() && r > 0.0) {
                return bad("arrival rate must be > 0 leechers/s");
            }
        }
        let hosts = self.nodes
            + self.seeders
            + self.leechers
            + self.corrupt
            + self.bad_metadata
            + self.dht_liars
            + self.silent;
        if hosts > 4_000_000 {
            return bad("too many hosts (at most 4,000,000)");
        }
        if self.up == Some(0) || self.down == Some(0) || self.seed_up == Some(0) {
            return bad("a link rate of 0 would never finish");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_parses() {
        let f = ScenarioFile::parse(
            r#"
seed = 7
nodes = 1000
seeders = 2
leechers = 200
size = "16MiB"
piece_length = 262144
latency_ms = 40
loss = 0.01
duration = 90.5
nat = 0.25
[seeder]
up = "10MiB"
[leecher]
up = "1MiB/s"
down = "10MiB"
[arrival]
rate = 5.0
[churn]
leave_after_done = 30
[misbehave]
corrupt = 3
silent = 0.1
dht_liars = 0.05
"#,
        )
        .unwrap();
        let sc = f.to_scenario().unwrap();
        assert_eq!(sc.seed, 7);
        assert_eq!((sc.nodes, sc.seeders, sc.leechers), (1000, 2, 200));
        assert_eq!((sc.size, sc.piece_length), (16 << 20, 262144));
        assert_eq!(sc.latency, Duration::from_millis(40));
        assert_eq!(sc.duration, Duration::from_millis(90_500));
        assert_eq!(sc.seed_up, Some(10 << 20));
        assert_eq!(sc.seed_down, None);
        assert_eq!((sc.up, sc.down), (Some(1 << 20), Some(10 << 20)));
        assert_eq!(sc.arrival_rate, Some(5.0));
        assert_eq!(sc.leave_after_done, Some(Duration::from_secs(30)));
        assert_eq!(sc.leave_after, None);
        assert_eq!((sc.corrupt, sc.silent, sc.dht_liars), (3, 20, 50));
        assert_eq!(sc.nat, 0.25);
    }

    #[test]
    fn empty_file_is_the_default() {
        let sc = ScenarioFile::parse("").unwrap().to_scenario().unwrap();
        let d = Scenario::default();
        assert_eq!(
            (sc.leechers, sc.size, sc.seed),
            (d.leechers, d.size, d.seed)
        );
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        for bad in [
            "leechres = 5",
            "[leecher]\nupp = 1",
            "size = \"12 parsecs\"",
            "loss = 2.0",
            "nat = -0.5",
            "[arrival]\nrate = 0.0",
            "[misbehave]\ncorrupt = 1.5",
            "duration = -1",
            "seeders = 0",
            "size = -3",
        ] {
            let r = ScenarioFile::parse(bad).and_then(|f| f.to_scenario());
            assert!(r.is_err(), "{bad:?} accepted");
        }
    }
}
