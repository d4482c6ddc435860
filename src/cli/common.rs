//! Flags shared by the networking commands (`fetch`, `seed`) and their small parsers
//! (rates, durations, file indexes), plus session start-up from those flags.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use super::CliError;
use crate::dht::{DhtConfig, DEFAULT_BOOTSTRAP};
use crate::session::{Session, SessionConfig};

/// Default bind address; when its port is taken a free port is used instead.
const DEFAULT_BIND: &str = "0.0.0.0:6881";

#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// TCP listen and UDP DHT address (one port for both). Repeat for dual stack: one
    /// IPv4 and one IPv6 address (IPv6 port 0 = the IPv4 port). Default 0.0.0.0:6881,
    /// falling back to a free port, plus [::] on the same port if the host has IPv6
    #[arg(long, value_name = "IP:PORT")]
    pub bind: Vec<SocketAddr>,
    /// DHT bootstrap nodes (replace the public routers)
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    pub bootstrap: Vec<String>,
    /// State directory (resume data, DHT node id and nodes).
    /// Default $XDG_STATE_HOME/magnetfetch or ~/.local/state/magnetfetch
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Do not use the DHT (peers only from --peer, the magnet link and incoming connections)
    #[arg(long)]
    pub no_dht: bool,
    /// Peer transport: auto = TCP with everyone and uTP when TCP failed, QUIC first with
    /// magnetfetch peers (UDP on the DHT's port); tcp = TCP only; utp = uTP only; quic =
    /// QUIC only
    #[arg(long, value_name = "auto|tcp|utp|quic", default_value = "auto")]
    pub transport: crate::dial::TransportMode,
    /// Happy eyeballs: milliseconds QUIC gets alone before TCP is tried too (--transport auto)
    #[arg(long, value_name = "MS", default_value_t = 250)]
    pub tcp_delay_ms: u64,
    /// Peer encryption (MSE/PE) over TCP: prefer = dial encrypted, retry in plaintext when a
    /// peer drops that, accept both; require = encrypted (RC4) only, both ways; off =
    /// plaintext only. QUIC is always encrypted
    #[arg(long, value_name = "prefer|require|off", default_value = "prefer")]
    pub encryption: crate::dial::Encryption,
    /// Machine-readable output: one JSON object per line on stdout
    #[arg(long)]
    pub json: bool,
    /// No progress display (errors only)
    #[arg(short, long)]
    pub quiet: bool,
    /// More log output on stderr (-v debug, -vv trace); RUST_LOG also works
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Common {
    /// The state directory: `--state-dir`, else XDG.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("magnetfetch");
        }
        match std::env::var_os("HOME").filter(|x| !x.is_empty()) {
            Some(h) => PathBuf::from(h).join(".local/state/magnetfetch"),
            None => PathBuf::from(".magnetfetch-state"),
        }
    }

    /// Logs to stderr: `-v`/`-vv`, else `RUST_LOG`, else warnings only.
    pub fn init_logging(&self) {
        let filter = match self.verbose {
            0 => tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            1 => tracing_subscriber::EnvFilter::new("magnetfetch=debug"),
            _ => tracing_subscriber::EnvFilter::new("magnetfetch=trace"),
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    }

    /// Starts the session: TCP listener and (unless `--no-dht`) the DHT node on one port.
    pub async fn start_session(&self) -> Result<Session, CliError> {
        let dht = if self.no_dht {
            None
        } else {
            let (v4, v6) = if self.bind.is_empty() {
                (true, true)
            } else {
                (
                    self.bind.iter().any(SocketAddr::is_ipv4),
                    self.bind.iter().any(SocketAddr::is_ipv6),
                )
            };
            let names: Vec<String> = self
                .bootstrap
                .iter()
                .filter(|s| !s.trim().is_empty())
                .cloned()
                .collect();
            let names = if names.is_empty() {
                DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect()
            } else {
                names
            };
            let bootstrap = super::dht::resolve_families(names, v4, v6).await;
            if bootstrap.is_empty() {
                eprintln!("warning: no usable DHT bootstrap node");
            }
            Some(DhtConfig {
                bootstrap,
                state_file: Some(self.state_dir().join("dht.json")),
                ..Default::default()
            })
        };
        let binds = super::dht::check_binds(&self.bind).map_err(CliError::msg)?;
        let explicit = !binds.is_empty();
        let bind = binds
            .first()
            .copied()
            .unwrap_or_else(|| DEFAULT_BIND.parse().expect("valid default"));
        // Dual stack (BEP 32): the IPv6 address given, else by default [::] on the same
        // port when the host has IPv6 (silently IPv4-only when it has not).
        let bind6 = match binds.as_slice() {
            [_, b6] => Some(*b6),
            [] => Some(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))),
            _ => None,
        };
        let cfg = |listen: SocketAddr| SessionConfig {
            listen: Some(listen),
            dht: dht.clone(),
            transport: crate::dial::DialConfig {
                mode: self.transport,
                tcp_delay: Duration::from_millis(self.tcp_delay_ms),
                encryption: self.encryption,
                ..Default::default()
            },
            ..SessionConfig::default()
        };
        if explicit {
            return Session::start_dual_stack(cfg(bind), bind6)
                .await
                .map_err(|e| {
                    let list: Vec<String> = binds.iter().map(|b| b.to_string()).collect();
                    CliError::msg(format!("cannot bind {}: {e}", list.join(" and ")))
                });
        }
        // Default: 0.0.0.0:6881 with [::]:6881, then IPv4 alone, then the same on a free
        // port.
        let mut any = bind;
        any.set_port(0);
        let mut first_err = None;
        for (listen, six) in [(bind, bind6), (bind, None), (any, bind6), (any, None)] {
            match Session::start_dual_stack(cfg(listen), six).await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let e = first_err.map_or_else(String::new, |e| e.to_string());
        Err(CliError::msg(format!("cannot bind {bind} or {any}: {e}")))
    }
}

/// A multi-threaded runtime for a command.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::msg(format!("cannot start runtime: {e}")))
}

/// A duration: `90` (seconds), `90s`, `10m`, `2h`, `1d`, or combinations like `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?} (e.g. 90s, 10m, 2h, 1h30m)");
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| err())?;
        num.clear();
        let mult = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(err()),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    if !num.is_empty() {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

/// A file selection as `--only` takes it: one value holding a list of index ranges. A
/// newtype, because clap reads `Option<Vec<T>>` as "many values of T" and a parser that
/// returns a `Vec` for one value would not match that shape (it panicked at first use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileIndexes(pub Vec<RangeInclusive<u32>>);

/// `--only`'s value parser: [`parse_indexes`] wrapped in [`FileIndexes`].
pub fn parse_file_indexes(s: &str) -> Result<FileIndexes, String> {
    parse_indexes(s).map(FileIndexes)
}

/// File indexes: `0,2,5-7`.
pub fn parse_indexes(s: &str) -> Result<Vec<RangeInclusive<u32>>, String> {
    let err = || format!("invalid file indexes {s:?} (e.g. 0,2,5-7)");
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let r = match part.split_once('-') {
            Some((a, b)) => {
                let a: u32 = a.trim().parse().map_err(|_| err())?;
                let b: u32 = b.trim().parse().map_err(|_| err())?;
                if a > b {
                    return Err(err());
                }
                a..=b
            }
            None => {
                let a: u32 = part.parse().map_err(|_| err())?;
                a..=a
            }
        };
        out.push(r);
    }
    if out.is_empty() {
        return Err(err());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5m3").is_err());
    }

    #[test]
    fn indexes() {
        assert_eq!(parse_indexes("0,2,5-7"), Ok(vec![0..=0, 2..=2, 5..=7]));
        assert!(parse_indexes("7-5").is_err());
        assert!(parse_indexes("a").is_err());
        assert!(parse_indexes("").is_err());
    }
}
