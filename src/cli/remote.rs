//! `magnetfetch remote add|list|pause|resume|rm`: a small client of a running
//! `magnetfetch daemon` (its HTTP API, docs/api.md), in the manner of `transmission-remote`.

use std::path::Path;
use std::time::Duration;

use indicatif::HumanBytes;
use serde_json::Value;

use super::CliError;
use crate::http::{ConnectOpts, HttpConn, Url};
use crate::net::Net;

const TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read (a list of many torrents).
const MAX_ANSWER: usize = 64 << 20;

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  magnetfetch remote add 'magnet:?xt=urn:btih:...'
  magnetfetch remote add file.torrent https://example.org/other.torrent
  magnetfetch remote list
  magnetfetch remote pause 1 2
  magnetfetch remote rm 1 --delete
  magnetfetch remote --url http://10.0.0.2:7878 --token s3cret list")]
pub struct Args {
    /// The daemon's API
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7878")]
    pub url: String,
    /// The daemon's token, if it has one (also read from MAGNETFETCH_TOKEN)
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Action {
    /// Add magnet links, info-hashes, .torrent files or http(s) URLs of .torrent files
    Add {
        #[arg(required = true, value_name = "MAGNET|FILE.torrent|URL|INFOHASH")]
        sources: Vec<String>,
    },
    /// List the torrents (id, state, progress, rates, peers, name)
    List {
        /// The daemon's JSON as it is
        #[arg(long)]
        json: bool,
    },
    /// Stop torrents, keeping their data
    Pause {
        #[arg(required = true, value_name = "ID|INFOHASH")]
        ids: Vec<String>,
    },
    /// Start paused torrents again
    Resume {
        #[arg(required = true, value_name = "ID|INFOHASH")]
        ids: Vec<String>,
    },
    /// Remove torrents (their data stays unless --delete)
    Rm {
        #[arg(required = true, value_name = "ID|INFOHASH")]
        ids: Vec<String>,
        /// Also delete the downloaded data
        #[arg(long)]
        delete: bool,
    },
}

pub fn run(args: Args) -> i32 {
    let rt = match super::common::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let r = rt.block_on(remote(args));
    rt.shutdown_timeout(Duration::from_millis(100));
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", super::one_line(&e.0));
            1
        }
    }
}

struct Client {
    base: Url,
    token: Option<String>,
}

impl Client {
    /// One request; the JSON answer of a 2xx, else the daemon's `error` as the message.
    async fn call(&self, method: &str, path: &str, body: &[u8]) -> Result<Value, CliError> {
        let reach = |e: &dyn std::fmt::Display| {
            CliError::msg(format!(
                "cannot reach the daemon at {}://{}: {e}",
                self.base.scheme,
                self.base.host_header()
            ))
        };
        let mut conn = HttpConn::open(&Net::Tokio, &self.base, &ConnectOpts::default(), TIMEOUT)
            .await
            .map_err(|e| reach(&e))?;
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let full = format!("{}{path}", self.base.path.trim_end_matches('/'));
        let r = conn
            .request(method, &full, &headers, body, false, MAX_ANSWER, TIMEOUT)
            .await
            .map_err(|e| reach(&e))?;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if !(200..300).contains(&r.status) {
            let why = v["error"]
                .as_str()
                .map_or_else(|| format!("HTTP {}", r.status), str::to_string);
            return Err(CliError::msg(why));
        }
        Ok(v)
    }
}

async fn remote(args: Args) -> Result<(), CliError> {
    let base = Url::parse(&args.url)
        .ok()
        .filter(|u| u.scheme == "http" || u.scheme == "https")
        .ok_or_else(|| CliError::msg(format!("--url {}: not an http(s) URL", args.url)))?;
    let token = args
        .token
        .or_else(|| std::env::var("MAGNETFETCH_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let c = Client { base, token };
    let mut out = String::new();
    match args.action {
        Action::Add { sources } => {
            for s in sources {
                let body = body_of(&s)?;
                let v = c.call("POST", "/torrents", &body).await?;
                out.push_str(&format!(
                    "added {} {}\n",
                    v["id"],
                    v["infohash"].as_str().unwrap_or("")
                ));
            }
        }
        Action::List { json } => {
            let v = c.call("GET", "/torrents", b"").await?;
            if json {
                out = format!("{v}\n");
            } else {
                out = table(&v);
            }
        }
        Action::Pause { ids } => {
            for id in ids {
                let v = c
                    .call("POST", &format!("/torrents/{id}/pause"), b"")
                    .await?;
                out.push_str(&format!("{} {}\n", v["id"], state(&v)));
            }
        }
        Action::Resume { ids } => {
            for id in ids {
                let v = c
                    .call("POST", &format!("/torrents/{id}/resume"), b"")
                    .await?;
                out.push_str(&format!("{} {}\n", v["id"], state(&v)));
            }
        }
        Action::Rm { ids, delete } => {
            for id in ids {
                c.call(
                    "DELETE",
                    &format!("/torrents/{id}?delete_files={delete}"),
                    b"",
                )
                .await?;
                out.push_str(&format!("removed {id}\n"));
            }
        }
    }
    super::print_out(&out)
}

/// What to POST for one source: a local .torrent file's bytes, else the text itself (a
/// magnet, an info-hash or a URL, which the daemon checks).
fn body_of(s: &str) -> Result<Vec<u8>, CliError> {
    let t = s.trim();
    let p = Path::new(t);
    if p.is_file() {
        return super::info::read_torrent_bytes(p);
    }
    if t.to_ascii_lowercase().ends_with(".torrent") && !t.contains("://") {
        return Err(CliError::msg(format!("{t}: no such file")));
    }
    Ok(t.as_bytes().to_vec())
}

fn state(v: &Value) -> &str {
    v["state"].as_str().unwrap_or("?")
}

/// The `list` table.
fn table(v: &Value) -> String {
    let mut out = format!(
        "{:>4}  {:<11}  {:>6}  {:>11}  {:>11}  {:>5}  {}\n",
        "ID", "STATE", "DONE", "DOWN", "UP", "PEERS", "NAME"
    );
    let empty = Vec::new();
    for t in v["torrents"].as_array().unwrap_or(&empty) {
        let rate = |k: &str| format!("{}/s", HumanBytes(t[k].as_u64().unwrap_or(0)));
        let name = t["name"]
            .as_str()
            .map(super::progress::sanitize)
            .unwrap_or_else(|| t["infohash"].as_str().unwrap_or("").into());
        out.push_str(&format!(
            "{:>4}  {:<11}  {:>5.1}%  {:>11}  {:>11}  {:>5}  {}\n",
            t["id"],
            state(t),
            t["progress"].as_f64().unwrap_or(0.0) * 100.0,
            rate("down_rate"),
            rate("up_rate"),
            t["peers"].as_u64().unwrap_or(0),
            name
        ));
    }
    out
}
