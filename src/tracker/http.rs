//! A minimal HTTP/1.1 client over [`crate::net::Net`] streams: enough for tracker announces and
//! scrapes (one request, `Connection: close`) and for web seeds (keep-alive, Range requests).
//! Content-Length, chunked and read-to-close bodies are supported; every size is bounded.
//! `https://` runs the same client over rustls (see [`super::tls`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::http_proto::Url;
use super::tls::{self, MaybeTls};
use super::TrackerError;
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
pub const MAX_HEAD: usize = 16 * 1024;

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
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, TrackerError> {
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
        _ => Err(TrackerError::Resolve(host.to_string())),
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
    ) -> Result<Self, TrackerError> {
        let stream = tokio::time::timeout(timeout, net.connect(addr))
            .await
            .map_err(|_| TrackerError::Timeout)??;
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
    ) -> Result<Self, TrackerError> {
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
                _ => return Err(TrackerError::UnsupportedScheme(u.scheme.clone())),
            };
            Ok(HttpConn {
                stream,
                buf: Vec::new(),
                host: u.host_header(),
            })
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| TrackerError::Timeout)?
    }

    /// Sends a GET for `path` with extra headers and reads the whole response.
    pub async fn get(
        &mut self,
        path: &str,
        extra: &[(&str, &str)],
        keep_alive: bool,
        max_body: usize,
        timeout: Duration,
    ) -> Result<Response, TrackerError> {
        tokio::time::timeout(timeout, self.get_inner(path, extra, keep_alive, max_body))
            .await
            .map_err(|_| TrackerError::Timeout)?
    }

    async fn get_inner(
        &mut self,
        path: &str,
        extra: &[(&str, &str)],
        keep_alive: bool,
        max_body: usize,
    ) -> Result<Response, TrackerError> {
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

        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(TrackerError::Malformed("HTTP head too large".into()));
            }
            if self.fill().await? == 0 {
                return Err(TrackerError::Malformed(
                    "connection closed before HTTP head".into(),
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(TrackerError::Malformed("not an HTTP/1.x reply".into()));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| TrackerError::Malformed("bad HTTP status line".into()))?;
        let mut headers = Vec::new();
        for l in lines.filter(|l| !l.is_empty()) {
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut resp = Response {
            status,
            keep_alive: keep_alive && version != "HTTP/1.0",
            headers,
            body: Vec::new(),
        };
        if resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            resp.keep_alive = false;
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if status == 204 || status == 304 || (100..200).contains(&status) {
            // No body.
        } else if chunked {
            resp.body = self.read_chunked(max_body).await?;
        } else if let Some(cl) = resp.header("content-length") {
            let n: usize = cl
                .parse()
                .map_err(|_| TrackerError::Malformed("bad Content-Length".into()))?;
            if n > max_body {
                return Err(TrackerError::Malformed(format!(
                    "HTTP body of {n} bytes too large"
                )));
            }
            while self.buf.len() < n {
                if self.fill().await? == 0 {
                    return Err(TrackerError::Malformed("HTTP body truncated".into()));
                }
            }
            resp.body = self.buf.drain(..n).collect();
        } else {
            resp.keep_alive = false;
            while self.fill().await? != 0 {
                if self.buf.len() > max_body {
                    return Err(TrackerError::Malformed("HTTP body too large".into()));
                }
            }
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    async fn read_chunked(&mut self, max_body: usize) -> Result<Vec<u8>, TrackerError> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if self.buf.len() > 1024 || self.fill().await? == 0 {
                    return Err(TrackerError::Malformed("bad chunk header".into()));
                }
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            self.buf.drain(..line_end + 2);
            let size_str = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_str, 16)
                .map_err(|_| TrackerError::Malformed("bad chunk size".into()))?;
            if size == 0 {
                // Skip trailers up to the empty line.
                loop {
                    let end = loop {
                        if let Some(i) = find(&self.buf, b"\r\n") {
                            break i;
                        }
                        if self.buf.len() > MAX_HEAD || self.fill().await? == 0 {
                            return Err(TrackerError::Malformed("bad chunk trailer".into()));
                        }
                    };
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        return Ok(body);
                    }
                }
            }
            if body.len().saturating_add(size) > max_body {
                return Err(TrackerError::Malformed("HTTP body too large".into()));
            }
            while self.buf.len() < size + 2 {
                if self.fill().await? == 0 {
                    return Err(TrackerError::Malformed("chunk truncated".into()));
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    async fn fill(&mut self) -> Result<usize, TrackerError> {
        let mut tmp = [0u8; 8192];
        let n = self.stream.read(&mut tmp).await?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One-shot GET of an `http://` or `https://` URL (default route, system trust roots).
pub async fn get_url(
    net: &Net,
    url: &str,
    max_body: usize,
    timeout: Duration,
) -> Result<Response, TrackerError> {
    get_url_with(net, url, &ConnectOpts::default(), max_body, timeout).await
}

/// [`get_url`] with a source address and TLS trust of the caller's choosing.
pub async fn get_url_with(
    net: &Net,
    url: &str,
    opts: &ConnectOpts,
    max_body: usize,
    timeout: Duration,
) -> Result<Response, TrackerError> {
    let u = Url::parse(url)?;
    if u.scheme != "http" && u.scheme != "https" {
        return Err(TrackerError::UnsupportedScheme(url.to_string()));
    }
    let fut = async {
        let mut c = HttpConn::open(net, &u, opts, timeout).await?;
        c.get(&u.path, &[], false, max_body, timeout).await
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| TrackerError::Timeout)?
}
