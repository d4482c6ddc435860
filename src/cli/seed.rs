//! `magnetfetch seed PATH`: seeding. Hashes PATH into a torrent in memory (like `create`),
//! prints its magnet link as the first line of stdout, announces it on the DHT (BEP 5; again
//! every 15 min) and, with `--tracker URL`, to those trackers (BEP 3/15; the URLs go into
//! the torrent, one tier each), and serves peers until Ctrl-C. `--no-dht --tracker URL` is
//! a tracker-only seed. `--http IP:PORT` also serves an index page with the magnet link and
//! the .torrent over plain HTTP/1.1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::common::{self, Common};
use super::progress::{emit, Display};
use crate::metainfo::{self, CreateOptions, Metainfo};
use crate::session::{AddTorrent, Source, StorageSpec};

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  magnetfetch seed ./photos                      # prints the magnet link, seeds until Ctrl-C
  magnetfetch seed big.iso -o big.iso.torrent --http 0.0.0.0:8080
  magnetfetch seed big.iso --no-dht --tracker udp://tracker.example:6969  # tracker only")]
pub struct Args {
    /// File or directory to share
    pub path: PathBuf,
    /// Also write the .torrent here
    #[arg(short, long, value_name = "FILE.torrent")]
    pub output: Option<PathBuf>,
    /// Serve an index page with the magnet link and /NAME.torrent over HTTP on this address
    #[arg(long, value_name = "IP:PORT")]
    pub http: Option<SocketAddr>,
    /// Piece length in bytes (power of two, 16 KiB..256 MiB; K/M suffixes allowed)
    #[arg(long, value_name = "BYTES", value_parser = crate::units::parse_size)]
    pub piece_length: Option<u64>,
    /// Tracker announce URL, put in the torrent and announced to (repeatable; one tier each)
    #[arg(long = "tracker", short = 't', value_name = "URL")]
    pub trackers: Vec<String>,
    /// Web seed URL put in the torrent (BEP 19; repeatable)
    #[arg(long = "web-seed", short = 'w', value_name = "URL")]
    pub web_seeds: Vec<String>,
    /// Mark the torrent private (BEP 27: no DHT, no PEX; trackers only)
    #[arg(long)]
    pub private: bool,
    /// Upload rate limit, e.g. 500K (per second)
    #[arg(long, value_name = "RATE", value_parser = crate::units::parse_rate)]
    pub max_up_rate: Option<u64>,
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
    let code = rt.block_on(seed(args));
    rt.shutdown_timeout(Duration::from_millis(200));
    code
}

fn fail(display: &Display, msg: &str) -> i32 {
    display.clear();
    let msg = super::one_line(msg);
    if display.is_json() {
        emit(&json!({"event": "error", "message": msg}));
    }
    eprintln!("error: {msg}");
    1
}

async fn seed(args: Args) -> i32 {
    let mut display = Display::new(args.common.json, args.common.quiet);
    let path = match std::path::absolute(&args.path) {
        Ok(p) => p,
        Err(e) => return fail(&display, &format!("{}: {e}", args.path.display())),
    };
    if !path.exists() {
        return fail(
            &display,
            &format!("{}: no such file or directory", path.display()),
        );
    }
    let opts = CreateOptions {
        piece_length: args.piece_length,
        trackers: args.trackers.clone(),
        web_seeds: args.web_seeds.clone(),
        private: args.private,
        created_by: Some(concat!("magnetfetch/", env!("CARGO_PKG_VERSION")).to_string()),
        threads: 0,
        exclude: args.output.clone(),
        ..Default::default()
    };
    let p2 = path.clone();
    let meta = match tokio::task::spawn_blocking(move || metainfo::create(&p2, &opts)).await {
        Ok(Ok(m)) => Arc::new(m),
        Ok(Err(e)) => return fail(&display, &e.to_string()),
        Err(e) => return fail(&display, &format!("hashing failed: {e}")),
    };
    let magnet = meta.magnet().to_uri();
    // The contract: the magnet link is the first line of stdout, whatever the mode.
    if super::print_out(&format!("{magnet}\n")).is_err() {
        return 1;
    }
    if let Some(out) = &args.output {
        if let Err(e) = std::fs::write(out, meta.to_bytes()) {
            return fail(&display, &format!("{}: {e}", out.display()));
        }
    }
    let session = match args.common.start_session().await {
        Ok(s) => s,
        Err(e) => return fail(&display, &e.0),
    };
    if let Some(http) = args.http {
        let listener = match session.net().listen(http).await {
            Ok(l) => l,
            Err(e) => return fail(&display, &format!("cannot bind HTTP {http}: {e}")),
        };
        let local = listener.local_addr().unwrap_or(http);
        display.message(&format!(
            "http: serving the magnet link and .torrent on http://{local}/"
        ));
        tokio::spawn(http_serve(listener, meta.clone(), magnet.clone()));
    }
    let root = path
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut add = AddTorrent::new(Source::Metainfo(meta.clone()), StorageSpec::Disk(root));
    add.resume_dir = Some(args.common.state_dir().join("resume"));
    add.swarm.keep_seeding = true;
    add.swarm.max_up_rate = args.max_up_rate;
    if let Some(a) = session.listen_addr() {
        display.message(&format!(
            "seeding {} ({}) on {a}{}; Ctrl-C to stop",
            meta.info.name,
            indicatif::HumanBytes(meta.info.total_length()),
            match (
                session.dht().is_some() && !meta.info.private,
                args.trackers.len()
            ) {
                (true, 0) => " (TCP + DHT)".to_string(),
                (false, 0) => " (DHT off)".to_string(),
                (true, n) => format!(" (TCP + DHT + {n} tracker(s))"),
                (false, n) => format!(" (DHT off, {n} tracker(s))"),
            }
        ));
    }
    let started = Instant::now();
    let mut handle = session.add(add);
    let mut prog = handle.progress();
    display.update(&prog.borrow_and_update().clone());
    let mut tick = tokio::time::interval(super::progress::PLAIN_EVERY);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    let result = loop {
        tokio::select! {
            biased;
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                handle.stop();
            }
            r = handle.join() => break r,
            _ = prog.changed() => {
                let p = prog.borrow_and_update().clone();
                display.update(&p);
            }
            _ = tick.tick() => {
                let p = prog.borrow().clone();
                display.update(&p);
            }
        }
    };
    // Keep the DHT warm for the next run: its id and good nodes go to the state dir.
    if let Some(d) = session.dht() {
        let _ = d.save_state().await;
    }
    // QUIC peers learn we are gone now, not after their idle timeout (bounded, 200 ms).
    session.shutdown().await;
    match result {
        Ok(out) => {
            if display.is_json() {
                emit(&json!({
                    "event": "done",
                    "infohash": meta.info_hash.to_hex(),
                    "name": meta.info.name,
                    "total_size": meta.info.total_length(),
                    "path": path.display().to_string(),
                    "metadata_ms": null,
                    "elapsed_ms": started.elapsed().as_millis() as u64,
                    "downloaded": out.summary.downloaded,
                    "uploaded": out.summary.uploaded,
                    "transport_bytes": out.summary.transport_bytes,
                }));
            }
            display.finish(&format!(
                "stopped seeding after {:.0}s: uploaded {}",
                started.elapsed().as_secs_f64(),
                indicatif::HumanBytes(out.summary.uploaded)
            ));
            if out.summary.complete {
                0
            } else {
                fail(
                    &display,
                    "the data on disk does not match (changed while seeding?)",
                )
            }
        }
        Err(e) => fail(&display, &e.to_string()),
    }
}

/// Request head limit: anything larger is refused.
const MAX_REQUEST: usize = 8 * 1024;
/// Connections served at once at most (more wait in the accept queue).
const MAX_HTTP_CONNS: usize = 32;

async fn http_serve(listener: crate::net::Listener, meta: Arc<Metainfo>, magnet: String) {
    let torrent = Arc::new(meta.to_bytes());
    let name = meta.info.name.clone();
    let sem = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNS));
    loop {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let torrent = torrent.clone();
        let name = name.clone();
        let magnet = magnet.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                http_one(stream, &name, &magnet, &torrent),
            )
            .await;
        });
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Decodes `%XX` escapes of a request path (invalid escapes stay as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The response to `GET target`: (status, content type, body).
pub fn http_route(
    target: &str,
    name: &str,
    magnet: &str,
    torrent: &[u8],
) -> (u16, String, Vec<u8>) {
    let path = percent_decode(target.split('?').next().unwrap_or(""));
    let torrent_name = format!("{name}.torrent");
    if path == "/" || path == "/index.html" {
        let mut enc = String::new();
        crate::magnet::percent_encode_into(&mut enc, &torrent_name);
        let body = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{n}</title></head>\n\
             <body><h1>{n}</h1>\n<p><a href=\"{m}\">magnet link</a></p>\n<pre>{m}</pre>\n\
             <p><a href=\"/{t}\">{tn}</a></p>\n</body></html>\n",
            n = html_escape(name),
            m = html_escape(magnet),
            t = enc,
            tn = html_escape(&torrent_name)
        );
        (200, "text/html; charset=utf-8".into(), body.into_bytes())
    } else if path.strip_prefix('/') == Some(torrent_name.as_str()) {
        (200, "application/x-bittorrent".into(), torrent.to_vec())
    } else {
        (404, "text/plain".into(), b"not found\n".to_vec())
    }
}

async fn http_one(
    mut s: crate::net::Stream,
    name: &str,
    magnet: &str,
    torrent: &[u8],
) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut n = 0;
    let head_end = loop {
        if n == buf.len() {
            s.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
            return Ok(());
        }
        let k = s.read(&mut buf[n..]).await?;
        if k == 0 {
            return Ok(());
        }
        n += k;
        if let Some(i) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (status, ctype, body) = if method == "GET" || method == "HEAD" {
        http_route(target, name, magnet, torrent)
    } else {
        (405, "text/plain".into(), b"method not allowed\n".to_vec())
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let mut resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        resp.extend_from_slice(&body);
    }
    s.write_all(&resp).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let (st, ct, body) = http_route("/", "a b", "magnet:?xt=urn:btih:x", b"d4:infoe");
        assert_eq!(st, 200);
        assert!(ct.starts_with("text/html"));
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains("magnet:?xt=urn:btih:x"));
        let (st, ct, body) = http_route("/a%20b.torrent", "a b", "m", b"d4:infoe");
        assert_eq!(
            (st, ct.as_str(), body.as_slice()),
            (200, "application/x-bittorrent", &b"d4:infoe"[..])
        );
        assert_eq!(http_route("/x.torrent", "a b", "m", b"").0, 404);
        assert_eq!(http_route("/%zz", "a", "m", b"").0, 404);
        assert_eq!(percent_decode("%4"), "%4");
    }
}
