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
use tokio::time::Instant;

use super::common::{self, Common};
use super::progress::{emit, Display};
use crate::http::head::RequestLine;
use crate::http::server::{read_request_head, write_reply, Reply, MAX_REQUEST_HEAD};
use crate::http::{html, percent, HttpError};
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
    /// Do not announce on the local network (BEP 14 Local Service Discovery; never used
    /// for private torrents anyway)
    #[arg(long)]
    pub no_lsd: bool,
    /// Upload rate limit, e.g. 500K (per second)
    #[arg(long, value_name = "RATE", value_parser = crate::units::parse_rate)]
    pub max_up_rate: Option<u64>,
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
    // Ask the router to forward our port (UPnP, NAT-PMP, PCP); undone on exit below.
    let mapping = args.port_mapping.start(&session);
    if let Some((m, port)) = &mapping {
        display = display.with_port_mapping(m.watch(), *port);
    }
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
    add.lsd = !args.no_lsd;
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
                display.set_reach(session.reachability().await);
                display.update(&p);
            }
        }
    };
    // Keep the DHT warm for the next run: its id and good nodes go to the state dir.
    if let Some(d) = session.dht() {
        let _ = d.save_state().await;
    }
    // The router forgets our port now (bounded), Ctrl-C or not.
    if let Some((m, _)) = mapping {
        m.close().await;
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

/// The response to `GET target`: the index page, the .torrent, or 404.
pub fn http_route(target: &[u8], name: &str, magnet: &str, torrent: &[u8]) -> Reply {
    let raw_path = target.split(|&c| c == b'?').next().unwrap_or_default();
    // A path is not form-encoded: `+` stays `+`. An invalid escape names no file.
    let path = percent::decode(raw_path, false).unwrap_or_default();
    let torrent_name = format!("{name}.torrent");
    if path == b"/" || path == b"/index.html" {
        let body = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{n}</title></head>\n\
             <body><h1>{n}</h1>\n<p><a href=\"{m}\">magnet link</a></p>\n<pre>{m}</pre>\n\
             <p><a href=\"/{t}\">{tn}</a></p>\n</body></html>\n",
            n = html::escape(name),
            m = html::escape(magnet),
            t = percent::encode(torrent_name.as_bytes()),
            tn = html::escape(&torrent_name)
        );
        Reply::new(200, "text/html; charset=utf-8", body)
    } else if path.strip_prefix(b"/") == Some(torrent_name.as_bytes()) {
        Reply::new(200, "application/x-bittorrent", torrent)
    } else {
        Reply::not_found()
    }
}

async fn http_one(
    mut s: crate::net::Stream,
    name: &str,
    magnet: &str,
    torrent: &[u8],
) -> Result<(), HttpError> {
    let mut buf = Vec::with_capacity(1024);
    let head_end = match read_request_head(&mut s, &mut buf, MAX_REQUEST_HEAD).await {
        Ok(n) => n,
        Err(HttpError::HeadTooLarge(_)) => {
            write_reply(&mut s, &Reply::new(431, "text/plain", Vec::new()), false).await?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let line = RequestLine::parse(&buf[..head_end]);
    let method = line.map(|l| l.method).unwrap_or_default();
    let reply = match line {
        Some(l) if matches!(l.method, b"GET" | b"HEAD") => {
            http_route(l.target, name, magnet, torrent)
        }
        _ => Reply::new(405, "text/plain", &b"method not allowed\n"[..]),
    };
    write_reply(&mut s, &reply, method == b"HEAD").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = http_route(b"/", "a b", "magnet:?xt=urn:btih:x&dn=<b>", b"d4:infoe");
        assert_eq!(r.status, 200);
        assert!(r.content_type.starts_with("text/html"));
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains("magnet:?xt=urn:btih:x&amp;dn=&lt;b&gt;"));
        assert!(body.contains("href=\"/a%20b.torrent\""));
        let r = http_route(b"/a%20b.torrent?x=1", "a b", "m", b"d4:infoe");
        assert_eq!(
            (r.status, r.content_type, r.body.as_slice()),
            (200, "application/x-bittorrent", &b"d4:infoe"[..])
        );
        assert_eq!(http_route(b"/index.html", "a", "m", b"").status, 200);
        assert_eq!(http_route(b"/x.torrent", "a b", "m", b"").status, 404);
        assert_eq!(http_route(b"/%zz", "a", "m", b"").status, 404);
        // Invalid escapes are not guessed at ("%4" is not a prefix of anything).
        assert_eq!(http_route(b"/%4", "%4", "m", b"").status, 404);
        // `+` in a path is a plus, not a space.
        assert_eq!(http_route(b"/a+b.torrent", "a+b", "m", b"").status, 200);
        assert_eq!(http_route(b"/a+b.torrent", "a b", "m", b"").status, 404);
    }

    #[tokio::test]
    async fn serves_heads_and_refuses_big_heads() {
        let net = crate::net::Net::Tokio;
        let l = net.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"hello").unwrap();
        let meta = metainfo::create(&dir.path().join("f"), &CreateOptions::default());
        let meta = Arc::new(meta.unwrap());
        tokio::spawn(http_serve(l, meta, "magnet:?xt=x".into()));
        let get = |req: Vec<u8>| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(&req).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            String::from_utf8_lossy(&out).into_owned()
        };
        let r = get(b"HEAD /f.torrent HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "no body for HEAD: {r}");
        let r = get(b"POST / HTTP/1.1\r\n\r\n".to_vec()).await;
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
        let r = get(vec![b'a'; 9000]).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    }
}
