//! The one web seed server of the tests (BEP 19's side of HTTP): a tiny HTTP/1.1 file server
//! with `Range: bytes=a-b` and keep-alive, on plain threads so that sync and async tests
//! alike can use it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Source IPs of the connections a [`range_server_logged`] accepted, in order.
pub type Sources = Arc<Mutex<Vec<IpAddr>>>;

/// Serves `files` (URL path -> bytes) on `ip`, port 0; returns the address.
pub fn range_server(ip: &str, files: BTreeMap<String, Vec<u8>>) -> SocketAddr {
    range_server_logged(ip, files).0
}

/// [`range_server`], also recording the source IP of every connection it accepts (their
/// count is the number of connections: keep-alive tests check it).
pub fn range_server_logged(ip: &str, files: BTreeMap<String, Vec<u8>>) -> (SocketAddr, Sources) {
    let l = std::net::TcpListener::bind(format!("{ip}:0")).unwrap();
    let addr = l.local_addr().unwrap();
    let files = Arc::new(files);
    let sources = Arc::new(Mutex::new(Vec::new()));
    let log = sources.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            if let Ok(peer) = s.peer_addr() {
                log.lock().unwrap().push(peer.ip());
            }
            let files = files.clone();
            std::thread::spawn(move || serve_connection(s, &files));
        }
    });
    (addr, sources)
}

/// Answers requests on one keep-alive connection until the client closes it.
fn serve_connection(mut s: std::net::TcpStream, files: &BTreeMap<String, Vec<u8>>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut tmp = [0u8; 4096];
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let range = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("range: bytes=")
                    .map(str::to_string)
            })
            .and_then(|r| {
                let (a, b) = r.split_once('-')?;
                Some((a.trim().parse::<usize>().ok()?, b.trim().parse().ok()?))
            });
        let reply = match (files.get(&path), range) {
            (Some(f), Some((a, b))) if a <= b && b < f.len() => {
                let mut r = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{}\r\n\r\n",
                    b + 1 - a,
                    f.len()
                )
                .into_bytes();
                r.extend_from_slice(&f[a..=b]);
                r
            }
            (Some(f), None) => {
                let mut r =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", f.len()).into_bytes();
                r.extend_from_slice(f);
                r
            }
            _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        };
        if s.write_all(&reply).is_err() {
            return;
        }
    }
}
