//! A small HTTP/1.1 client over [`crate::net::Net`] streams: enough for tracker announces and
//! scrapes (one request, `Connection: close`), web seeds (BEP 19: keep-alive, `Range`) and
//! `.torrent` downloads. Content-Length, chunked ([`super::chunked`]) and read-to-close bodies;
//! every size is bounded (head: [`MAX_HEAD`], body: the caller's limit). `https://` runs the
//! same client over rustls ([`super::tls`]). The parsing is in [`super::head`]; this is only
//! the reading and writing around it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::chunked::ChunkedDecoder;
use super::head::{parse_response_head, Framing};
use super::tls::{self, MaybeTls};
use super::{HttpError, Url};
use crate::net::Net;

/// How to open connections: source address and TLS trust.
#[derive(Clone, Debug, Default)]
pub struct ConnectOpts {
    /// Local IP to connect from (the port is the system's choice); `None` = the default route.
    pub bind_ip: Option<IpAddr>,
    /// Trust for `https://`; `None` = the system's roots ([`tls::system_config`]).
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Resolves a host to one address. IP literals need no lookup; names go through the system
/// resolver on a blocking thread (the `Net` seam has no resolver yet, so names only work on
/// the real network).
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, HttpError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let h = host.to_string();
    let r = tokio::task::spawn_blocking(move || {
        use std::net::ToSocketAddrs;
        (h.as_str(), port).to_socket_addrs().map(|mut i| i.next())
    })
    .await;
    match r {
        Ok(Ok(Some(a))) => Ok(a),
        _ => Err(HttpError::Resolve(host.to_string())),
    }
}

/// One HTTP connection that can carry several requests in turn.
pub struct HttpConn {
    stream: MaybeTls,
    buf: Vec<u8>,
    pub host: String,
}

impl HttpConn {
    #[cfg(test)]
    pub async fn connect(
        net: &Net,
        addr: SocketAddr,
        host: String,
        timeout: Duration,
    ) -> Result<Self, HttpError> {
        let stream = tokio::time::timeout(timeout, net.connect(addr))
            .await
            .map_err(|_| HttpError::Timeout)??;
        Ok(HttpConn {
            stream: MaybeTls::Plain(stream),
            buf: Vec::new(),
            host,
        })
    }

    /// Opens a connection for `u` (`http` or `https`): resolve, connect from
    /// `opts.bind_ip`, and for `https` a verified TLS handshake with `u.host`.
    pub async fn open(
        net: &Net,
        u: &Url,
        opts: &ConnectOpts,
        timeout: Duration,
    ) -> Result<Self, HttpError> {
        let fut = async {
            let addr = resolve(&u.host, u.port).await?;
            let stream = net.connect_from(opts.bind_ip, addr).await?;
            let stream = match u.scheme.as_str() {
                "http" => MaybeTls::Plain(stream),
                "https" => {
                    let cfg = match &opts.tls {
                        Some(c) => c.clone(),
                        None => tls::system_config()?,
                    };
                    MaybeTls::Tls(Box::new(tls::handshake(cfg, &u.host, stream).await?))
                }
                _ => return Err(HttpError::UnsupportedScheme(u.scheme.clone())),
            };
            Ok(HttpConn {
                stream,
                buf: Vec::new(),
                host: u.host_header(),
            })
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| HttpError::Timeout)?
    }

    /// Sends a GET for `path` with extra headers and reads the whole response.
    pub async fn get(
        &mut self,
        path: &str,
        extra: &[(&str, &str)],
        keep_alive: bool,
        max_body: usize,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        self.request("GET", path, extra, &[], keep_alive, max_body, timeout)
            .await
    }

    /// Sends `method path` with extra headers and `body` and reads the whole response. A
    /// `Content-Length` goes with any method but GET and HEAD (and with any non-empty body).
    #[allow(clippy::too_many_arguments)]
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &[u8],
        keep_alive: bool,
        max_body: usize,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let with_length = !body.is_empty() || !matches!(method, "GET" | "HEAD");
        let fut = self.exchange(
            method,
            path,
            extra,
            with_length.then_some(body),
            keep_alive,
            max_body,
        );
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| HttpError::Timeout)?
    }

    /// Sends a POST of `body` (with `Content-Length`) and reads the whole response; the
    /// connection is closed after it (UPnP's SOAP calls are one request each).
    pub async fn post(
        &mut self,
        path: &str,
        extra: &[(&str, &str)],
        body: &[u8],
        max_body: usize,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        self.request("POST", path, extra, body, false, max_body, timeout)
            .await
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<&[u8]>,
        keep_alive: bool,
        max_body: usize,
    ) -> Result<Response, HttpError> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: magnetfetch/{}\r\nAccept-Encoding: identity\r\nConnection: {}\r\n",
            self.host,
            env!("CARGO_PKG_VERSION"),
            if keep_alive { "keep-alive" } else { "close" }
        );
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut req = req.into_bytes();
        req.extend_from_slice(body.unwrap_or_default());
        self.stream.write_all(&req).await?;
        self.stream.flush().await?;

        let (head, head_len) = loop {
            if let Some(h) = parse_response_head(&self.buf)? {
                break h;
            }
            if self.fill().await? == 0 {
                return Err(HttpError::Closed);
            }
        };
        self.buf.drain(..head_len);
        let mut keep_alive = keep_alive && head.keep_alive();
        let body = match head.framing()? {
            Framing::Empty => Vec::new(),
            Framing::Length(n) => {
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= max_body)
                    .ok_or(HttpError::BodyTooLarge(max_body))?;
                while self.buf.len() < n {
                    if self.fill().await? == 0 {
                        return Err(HttpError::Closed);
                    }
                }
                self.buf.drain(..n).collect()
            }
            Framing::Chunked => {
                let mut dec = ChunkedDecoder::new(max_body);
                let mut body = Vec::new();
                loop {
                    let used = dec.feed(&self.buf, &mut body)?;
                    self.buf.drain(..used);
                    if dec.is_done() {
                        break body;
                    }
                    if self.fill().await? == 0 {
                        return Err(HttpError::Closed);
                    }
                }
            }
            Framing::UntilClose => {
                keep_alive = false;
                while self.fill().await? != 0 {
                    if self.buf.len() > max_body {
                        return Err(HttpError::BodyTooLarge(max_body));
                    }
                }
                std::mem::take(&mut self.buf)
            }
        };
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body,
            keep_alive,
        })
    }

    async fn fill(&mut self) -> Result<usize, HttpError> {
        let mut tmp = [0u8; 8192];
        let n = self.stream.read(&mut tmp).await?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }
}

/// One-shot GET of an `http://` or `https://` URL (default route, system trust roots).
pub async fn get_url(
    net: &Net,
    url: &str,
    max_body: usize,
    timeout: Duration,
) -> Result<Response, HttpError> {
    get_url_with(net, url, &ConnectOpts::default(), max_body, timeout).await
}

/// [`get_url`] with a source address and TLS trust of the caller's choosing.
pub async fn get_url_with(
    net: &Net,
    url: &str,
    opts: &ConnectOpts,
    max_body: usize,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let u = Url::parse(url)?;
    if !u.is_http() {
        return Err(HttpError::UnsupportedScheme(url.to_string()));
    }
    let fut = async {
        let mut c = HttpConn::open(net, &u, opts, timeout).await?;
        c.get(&u.path, &[], false, max_body, timeout).await
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| HttpError::Timeout)?
}

/// GET of `url` (http or https), following up to `max_redirects` redirects: the body of
/// the final `200`. Errors are messages naming the URL that failed (for the user).
pub async fn get_following_redirects(
    net: &Net,
    url: &str,
    max_body: usize,
    timeout: Duration,
    max_redirects: usize,
) -> Result<Vec<u8>, String> {
    let mut at = url.to_string();
    for _ in 0..=max_redirects {
        let r = get_url(net, &at, max_body, timeout)
            .await
            .map_err(|e| format!("{at}: {e}"))?;
        match r.status {
            200 => return Ok(r.body),
            301 | 302 | 303 | 307 | 308 => {
                let loc = r
                    .header("location")
                    .ok_or_else(|| format!("{at}: HTTP {} without a Location", r.status))?;
                at = redirect_target(&at, loc);
            }
            s => return Err(format!("{at}: HTTP {s}")),
        }
    }
    Err(format!("{url}: more than {max_redirects} redirects"))
}

/// Where a `Location` header points: an absolute URL, or a path on the same host.
fn redirect_target(from: &str, loc: &str) -> String {
    if loc.contains("://") {
        return loc.to_string();
    }
    let scheme_end = from.find("://").map_or(0, |i| i + 3);
    let host_end = from[scheme_end..]
        .find('/')
        .map_or(from.len(), |i| scheme_end + i);
    if loc.starts_with('/') {
        format!("{}{loc}", &from[..host_end])
    } else {
        let dir_end = from
            .rfind('/')
            .filter(|&i| i >= host_end)
            .unwrap_or(host_end);
        format!("{}/{loc}", &from[..dir_end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A server that answers each request on one connection with the next canned reply,
    /// written a few bytes at a time; returns its address.
    async fn canned(replies: Vec<&'static [u8]>) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            for r in replies {
                // Wait for one whole request head.
                let mut tmp = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut tmp).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                buf.clear();
                for c in r.chunks(7) {
                    s.write_all(c).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn chunked_length_and_close_bodies_on_one_connection() {
        let addr = canned(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x\r\n world\r\n0\r\n\r\n",
            b"HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        ])
        .await;
        let net = Net::Tokio;
        let t = Duration::from_secs(5);
        let mut c = HttpConn::connect(&net, addr, "h".into(), t).await.unwrap();
        let r = c.get("/a", &[], true, 1 << 10, t).await.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.keep_alive),
            (200, &b"hello world"[..], true)
        );
        let r = c
            .get("/b", &[("Range", "bytes=0-2")], true, 1 << 10, t)
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.keep_alive),
            (206, &b"abc"[..], true)
        );
        let r = c.get("/c", &[], true, 1 << 10, t).await.unwrap();
        assert_eq!(
            (r.body.as_slice(), r.keep_alive),
            (&b"until close"[..], false)
        );
    }

    #[tokio::test]
    async fn body_limits_hold() {
        let net = Net::Tokio;
        let t = Duration::from_secs(5);
        for (reply, limit) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"[..], 10),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 10),
            (b"HTTP/1.1 200 OK\r\n\r\nhello world", 10),
        ] {
            let addr = canned(vec![reply]).await;
            let mut c = HttpConn::connect(&net, addr, "h".into(), t).await.unwrap();
            let r = c.get("/", &[], false, limit, t).await;
            assert!(matches!(r, Err(HttpError::BodyTooLarge(10))), "{r:?}");
        }
        // A server that closes mid-body.
        let addr = canned(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort"]).await;
        let mut c = HttpConn::connect(&net, addr, "h".into(), t).await.unwrap();
        let r = c.get("/", &[], false, 1 << 10, t).await;
        assert!(matches!(r, Err(HttpError::Closed)), "{r:?}");
    }
}
