//! `magnetfetch daemon`: one session for many torrents, driven over the HTTP API
//! (`crate::daemon::api`, docs/api.md). Prints `api: http://ADDR` once it listens; Ctrl-C or
//! SIGTERM stops every torrent (resume data written) and exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::common::{self, Common};
use super::CliError;
use crate::daemon::{api, Daemon, DaemonConfig};

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  magnetfetch daemon -o ~/Downloads                    # API on http://127.0.0.1:7878
  magnetfetch daemon -o ~/Downloads --watch ~/torrents  # adds .torrent/.magnet files dropped there
  magnetfetch daemon --http 127.0.0.1:7979 --no-dht --state-dir /var/lib/magnetfetch
  magnetfetch daemon --max-active-downloads 3 --max-active-seeds 20  # the rest queue
  magnetfetch daemon --http 0.0.0.0:7878 --token s3cret   # any other address needs a token")]
pub struct Args {
    /// Address of the HTTP API. Any address other than loopback requires --token
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:7878")]
    pub http: SocketAddr,
    /// Download directory of added torrents
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub output: PathBuf,
    /// Add every .torrent and .magnet file dropped into DIR (then renamed *.added, or
    /// *.invalid when it could not be added)
    #[arg(long, value_name = "DIR")]
    pub watch: Option<PathBuf>,
    /// Secret every API request must carry (`Authorization: Bearer TOKEN`, or basic auth
    /// with it as the password). Also read from MAGNETFETCH_TOKEN
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Give up on a magnet's metadata after this long (the torrent shows `error`)
    #[arg(long, value_name = "DURATION", value_parser = common::parse_duration, default_value = "10m")]
    pub metadata_timeout: Duration,
    /// Download rate limit per torrent, e.g. 2MiB (per second)
    #[arg(long, value_name = "RATE", value_parser = crate::units::parse_rate)]
    pub max_down_rate: Option<u64>,
    /// Upload rate limit per torrent, e.g. 500K (per second)
    #[arg(long, value_name = "RATE", value_parser = crate::units::parse_rate)]
    pub max_up_rate: Option<u64>,
    /// At most N torrents download at once (looking for peers, fetching metadata and
    /// checking count too); the others wait in the queue, in the order they were added
    #[arg(long, value_name = "N")]
    pub max_active_downloads: Option<usize>,
    /// At most N complete torrents seed at once; the others wait in the queue
    #[arg(long, value_name = "N")]
    pub max_active_seeds: Option<usize>,
    /// Do not announce on the local network (BEP 14 Local Service Discovery; never used
    /// for private torrents anyway)
    #[arg(long)]
    pub no_lsd: bool,
    #[command(flatten)]
    pub port_mapping: super::portmap::PortMapArgs,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(args: Args) -> i32 {
    args.common.init_logging();
    let rt = match common::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let code = match rt.block_on(serve(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", super::one_line(&e.0));
            1
        }
    };
    rt.shutdown_timeout(Duration::from_millis(200));
    code
}

async fn serve(args: Args) -> Result<(), CliError> {
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("MAGNETFETCH_TOKEN").ok())
        .filter(|t| !t.is_empty());
    if !args.http.ip().is_loopback() && token.is_none() {
        return Err(CliError::msg(format!(
            "--http {} is reachable from other hosts: set --token (or MAGNETFETCH_TOKEN)",
            args.http
        )));
    }
    super::fetch::check_output_dir(&args.output).map_err(CliError::msg)?;
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .map_err(|e| CliError::msg(format!("cannot listen on {}: {e}", args.http)))?;
    let api_addr = listener
        .local_addr()
        .map_err(|e| CliError::msg(e.to_string()))?;
    let session = args.common.start_session().await?;
    let daemon = Daemon::start(
        session.clone(),
        DaemonConfig {
            download_dir: args.output.clone(),
            state_dir: args.common.state_dir(),
            metadata_timeout: args.metadata_timeout,
            max_down_rate: args.max_down_rate,
            max_up_rate: args.max_up_rate,
            lsd: !args.no_lsd,
            queue: crate::daemon::QueueLimits {
                max_active_downloads: args.max_active_downloads,
                max_active_seeds: args.max_active_seeds,
            },
        },
    )
    .map_err(CliError::msg)?;
    if let Some(dir) = &args.watch {
        if !dir.is_dir() {
            return Err(CliError::msg(format!(
                "--watch {}: not a directory",
                dir.display()
            )));
        }
        crate::daemon::watch_folder(&daemon, dir.clone());
    }
    super::print_out(&format!("api: http://{api_addr}\n"))
        .map_err(|e| CliError::msg(e.to_string()))?;
    if let Some(a) = session.listen_addr() {
        tracing::info!(%a, "peers connect to");
    }
    // Ask the router to forward our port (UPnP, NAT-PMP, PCP); undone on exit below. Its
    // status is logged as it changes and shown by `GET /session`.
    let mapping = args.port_mapping.start(&session);
    if let Some((m, port)) = &mapping {
        let (tx, rx) = tokio::sync::watch::channel(serde_json::Value::Null);
        daemon.set_port_mapping(rx);
        let mut st = m.watch();
        let port = *port;
        tokio::spawn(async move {
            loop {
                let s = st.borrow_and_update().clone();
                if let Some(line) = super::portmap::describe(&s, port) {
                    eprintln!("{line}");
                }
                tx.send_replace(super::portmap::to_json(&s));
                if st.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let app = api::router(daemon.clone(), token);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await;
    daemon.shutdown().await;
    if let Some((m, _)) = mapping {
        m.close().await;
    }
    if let Some(d) = session.dht() {
        let _ = d.save_state().await;
    }
    served.map_err(|e| CliError::msg(format!("HTTP API: {e}")))
}

/// Ctrl-C, or SIGTERM (what `systemctl stop` and `kill` send).
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
