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

/// Largest response head (status line + headers) accepted.
pub const MAX_HEAD: usize = super::head::MAX_RESPONSE_HEAD;

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
        tokio::time::timeout(timeout, self.get_inner(path, extra, keep_alive, max_body))
            .await
            .map_err(|_| HttpError::Timeout)?
    }

    async fn get_inner(
        &mut self,
        path: &str,
        extra: &[(&str, &str)],
        keep_alive: bool,
        max_body: usize,
    ) -> Result<Response, HttpError> {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: magnetfetch/{}\r\nAccept-Encoding: identity\r\nConnection: {}\r\n",
            self.host,
            env!("CARGO_PKG_VERSION"),
            if keep_alive { "keep-alive" } else { "close" }
        );
        for (k, v) in extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).await?;
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
