//! HTTP/1.1 (RFC 9112) for everything in magnetfetch that speaks it: the client behind HTTP
//! and HTTPS trackers (BEP 3, BEP 48) and web seeds (BEP 19: keep-alive, `Range`), TLS for
//! `https://`, URLs and percent-encoding (RFC 3986), and the server-side pieces (request
//! head, replies, HTML escaping) shared by the tracker server and `seed --http`.
//!
//! It sits below `tracker` and `webseed` and imports neither. Pure cores, thin tasks:
//! [`head`], [`chunked`], [`url`], [`percent`] and [`html`] are plain functions and state
//! machines with no I/O (unit-tested, and fuzzed by `fuzz/fuzz_targets/http_response.rs`);
//! [`client`], [`server`] and [`tls`] are the async layers over [`crate::net::Net`] streams.
//! Why this is hand-written rather than hyper: docs/architecture.md, "HTTP (`src/http`)".

pub mod chunked;
pub mod client;
pub mod head;
pub mod html;
pub mod percent;
pub mod server;
pub mod tls;
pub mod url;

pub use client::{get_url, get_url_with, resolve, ConnectOpts, HttpConn};
pub use url::Url;

/// Everything that can go wrong in an HTTP exchange, whoever asked for it (a tracker
/// announce, a web seed range, a `.torrent` download).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad URL {0:?}")]
    BadUrl(String),
    #[error("unsupported URL scheme in {0:?}")]
    UnsupportedScheme(String),
    #[error("malformed HTTP: {0}")]
    Malformed(&'static str),
    #[error("HTTP head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("HTTP body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("connection closed before the HTTP response was complete")]
    Closed,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP request timed out")]
    Timeout,
    #[error("could not resolve host {0:?}")]
    Resolve(String),
    #[error("HTTP I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl HttpError {
    /// Errors a kept-alive connection produces when the server had already closed it (or
    /// its end was garbled): worth one retry on a fresh connection.
    pub fn is_stale_connection(&self) -> bool {
        matches!(
            self,
            HttpError::Io(_)
                | HttpError::Closed
                | HttpError::Malformed(_)
                | HttpError::HeadTooLarge(_)
                | HttpError::BodyTooLarge(_)
        )
    }
}
