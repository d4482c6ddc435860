//! TLS for `https://` trackers (BEP 3 over HTTPS) and web seeds (BEP 19): rustls on the `ring`
//! provider, layered over a [`crate::net::Stream`] so the connection still goes through the
//! one network seam (and runs on simnet too).
//!
//! Trust roots come from the **system store** via `rustls-native-certs` rather than a baked-in
//! list (`webpki-roots`): an administrator's own CA (a private tracker behind a company CA)
//! works, root updates arrive with the OS rather than with a rebuild of magnetfetch, and
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` point the process at other roots (the loopback tests use
//! that for a throw-away CA). Certificates are always verified: there is no insecure mode.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::HttpError;
use crate::net::Stream;

/// A rustls client configuration trusting exactly `roots` (DER certificates). Unparsable
/// certificates are skipped; an empty result is an error (nothing could ever be verified).
pub fn client_config(
    roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<Arc<ClientConfig>, HttpError> {
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(roots);
    if added == 0 {
        return Err(HttpError::Tls(
            "no usable trusted root certificates (check SSL_CERT_FILE / SSL_CERT_DIR)".into(),
        ));
    }
    // An explicit provider: never depend on a process-wide default, which would panic if two
    // providers were ever compiled in.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The default configuration: the system's trusted roots, loaded once per process.
pub fn system_config() -> Result<Arc<ClientConfig>, HttpError> {
    static CFG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CFG.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "skipping unreadable system certificate");
        }
        client_config(found.certs).map_err(|e| e.to_string())
    })
    .clone()
    .map_err(HttpError::Tls)
}

/// Runs the TLS handshake for `host` (a DNS name or an IP literal, matched against the
/// certificate) over an established stream.
pub async fn handshake(
    cfg: Arc<ClientConfig>,
    host: &str,
    stream: Stream,
) -> Result<TlsStream<Stream>, HttpError> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| HttpError::Tls(format!("{host:?} is not a valid TLS server name")))?;
    TlsConnector::from(cfg)
        .connect(name, stream)
        .await
        .map_err(|e| HttpError::Tls(format!("handshake with {host} failed: {}", cause(&e))))
}

/// The rustls error inside an I/O error, when there is one: "invalid peer certificate:
/// UnknownIssuer" is what a user needs to see.
fn cause(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(r) => r.to_string(),
        None => e.to_string(),
    }
}

/// A plain or TLS connection; both are byte streams to the HTTP client.
#[derive(Debug)]
pub enum MaybeTls {
    Plain(Stream),
    Tls(Box<TlsStream<Stream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
