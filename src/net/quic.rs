//! QUIC between magnetfetch peers: a quinn endpoint on the node's UDP port, shared
//! with the DHT (BEP 5) by demultiplexing on the first byte of each datagram.
//!
//! - KRPC datagrams are bencoded dictionaries whose first key is a byte string: they start
//!   with `d` (0x64) followed by an ASCII digit (`d1:a…`, `d1:t…`).
//! - QUIC long headers start with `0b11xxxxxx` (>= 0xC0), never `d`. Short headers start
//!   with `0b01SRRKPP` and *can* be `d`: header protection randomises the low five bits and
//!   quinn sends a random spin bit when spinning is off, so 1 in 64 short-header packets
//!   starts with 0x64. (Routing those to the DHT was the cause of "QUIC is pathologically slow
//!   at 100 ms RTT" bug: a steady 1.6 % loss that QUIC's congestion control answered with a
//!   congestion event each time.) The second byte of a short header is the first byte of
//!   the destination connection ID, which *we* issued: [`HighBitCids`] sets its top bit, so
//!   it is never an ASCII digit. Fixed-bit greasing is off (`grease_quic_bit(false)`) so
//!   peers keep bit 0x40 set.
//!
//! uTP (BEP 29, [`super::utp`]) shares the port too: version 1 in the low nibble of byte 0
//! (0x01..=0x41) and an extension type below 0x80 in byte 1, which no packet above has
//! (see [`super::utp::is_utp`]).
//!
//! The quinn endpoint reads the socket itself (a [`quinn::AsyncUdpSocket`] adapter, several
//! datagrams per poll, straight into quinn's buffers): the bulk of the traffic takes no
//! extra task, copy or channel. Datagrams that [`is_krpc`] are diverted to a bounded channel
//! read by whoever calls [`UdpSocket::recv_from`] (the DHT node, unchanged). Sends from
//! both share the one socket. The endpoint lives as long as the session that owns it, so
//! the DHT is fed as long as it runs.
//!
//! TLS: each node makes a self-signed certificate (rcgen) at start; clients accept any
//! certificate. This buys confidentiality and integrity against passive observers, not
//! authentication: an active man in the middle can terminate both sides. See
//! `docs/architecture.md` ("QUIC transport") for the threat model.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::rustls;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use super::{Net, Stream, UdpSocket};

/// ALPN of the BitTorrent peer wire over one QUIC bidirectional stream.
pub const ALPN: &[u8] = b"magnetfetch-bt/1";
/// QUIC application error code (RFC 9000, CONNECTION_CLOSE): the peer wire on this
/// connection ended (BEP 3 has no goodbye message; closing tells the peer at once).
pub const CLOSE_PEER_WIRE: u32 = 0;
/// QUIC application error code: the node is shutting down ([`QuicEndpoint::shutdown`]).
pub const CLOSE_SHUTDOWN: u32 = 1;
/// Longest a dropped [`QuicStream`] waits for its data in flight to be acknowledged before
/// it closes the connection (see [`QuicStream`]'s `Drop`).
pub const CLOSE_DRAIN_MAX: Duration = Duration::from_millis(500);
/// Longest [`QuicEndpoint::shutdown`] waits for dropped streams to close their connections.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_millis(300);
/// Longest [`QuicEndpoint::shutdown`] then waits for the close frames to go out.
pub const SHUTDOWN_WAIT: Duration = Duration::from_millis(200);
/// Server name the client asks for (certificates are not checked; any name works).
const SERVER_NAME: &str = "magnetfetch";
/// KRPC datagrams queued for the DHT at most; beyond it they are dropped, like a full
/// socket buffer (KRPC retries). KRPC fits in 1.5 KB, so at most ~1.5 MB.
const KRPC_QUEUE: usize = 1024;
/// Bytes of a KRPC datagram kept (the DHT reads into a 4 KiB buffer; longer is garbage).
const KRPC_MAX: usize = 4096;
/// Largest UDP payload probed on a loopback-bound endpoint (loopback MTU 65536 minus IP/UDP
/// headers, rounded down).
const LOOPBACK_UDP_PAYLOAD: u16 = 65000;
/// An Ethernet MTU (1500) less the IPv4 and UDP headers.
const ETHERNET_UDP_PAYLOAD: u16 = 1500 - 28;

/// Tunables of the QUIC endpoint.
#[derive(Clone, Debug)]
pub struct QuicConfig {
    /// Per-stream receive window (bytes): bounds what one peer can have in flight to us.
    pub stream_receive_window: u32,
    /// Per-connection receive window (bytes).
    pub receive_window: u32,
    /// Per-connection send window (bytes).
    pub send_window: u64,
    /// Largest UDP payload probed by path MTU discovery (loopback allows ~64 KiB).
    pub max_udp_payload: u16,
    /// Seed of quinn's own random choices (connection ids); None: from the OS.
    pub seed: Option<u64>,
    /// Congestion control: BBR (quinn's experimental one) instead of the default CUBIC.
    /// CUBIC, like TCP Reno, reads every loss as congestion; BBR models bandwidth and RTT
    /// and keeps its rate under random loss (see docs/benchmarks.md, "QUIC transport").
    pub bbr: bool,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            // The receive windows are the backpressure: what a peer may send us that we have
            // not read yet sits in quinn's buffers (our memory), and a reader that stops
            // reading while the disk is behind (`session::backlog`) stops granting credit.
            // 2 MiB covers 160 Mbit/s at 100 ms RTT (loopback needs far less). One stream
            // carries the peer wire, so the connection needs no more than the stream.
            stream_receive_window: 2 << 20,
            receive_window: 2 << 20,
            send_window: 8 << 20,
            max_udp_payload: 1452,
            seed: None,
            bbr: false,
        }
    }
}

/// The raw socket under a shared one (tokio or simnet).
enum RawUdp {
    Tokio(tokio::net::UdpSocket),
    Sim(simnet::UdpSocket),
}

/// Whether a datagram on the shared socket is KRPC (for the DHT) rather than QUIC: `d`
/// then an ASCII digit (see the module doc for why no QUIC packet of ours looks like that).
pub fn is_krpc(p: &[u8]) -> bool {
    matches!(p, [b'd', d, ..] if d.is_ascii_digit())
}

/// Connection IDs of [`CID_LEN`] random bytes with the top bit of the first byte set, so
/// short-header QUIC packets sent to us never look like KRPC (see the module doc).
struct HighBitCids(rand::rngs::StdRng);

/// Length of the connection IDs we issue (quinn's default).
const CID_LEN: usize = 8;

impl quinn::ConnectionIdGenerator for HighBitCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        use rand::RngCore;
        let mut b = [0u8; CID_LEN];
        self.0.fill_bytes(&mut b);
        b[0] |= 0x80;
        quinn::ConnectionId::new(&b)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// A UDP socket whose non-KRPC datagrams go to the QUIC endpoint.
pub struct SharedUdp {
    raw: RawUdp,
    krpc_tx: mpsc::Sender<(Bytes, SocketAddr)>,
    krpc_rx: tokio::sync::Mutex<mpsc::Receiver<(Bytes, SocketAddr)>>,
    /// uTP datagrams, when uTP shares the socket and the QUIC endpoint reads it.
    utp_tx: Option<mpsc::Sender<(Bytes, SocketAddr)>>,
}

impl fmt::Debug for SharedUdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedUdp")
            .field("local", &self.local_addr().ok())
            .finish()
    }
}

impl SharedUdp {
    /// Next KRPC datagram (the QUIC endpoint's reads divert them here). Cancel-safe.
    pub(super) async fn recv_from(&self, out: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut rx = self.krpc_rx.lock().await;
        let (d, from) = rx
            .recv()
            .await
            .ok_or_else(|| io::Error::other("QUIC endpoint closed"))?;
        // Truncated like a short read buffer would.
        let m = d.len().min(out.len());
        out[..m].copy_from_slice(&d[..m]);
        Ok((m, from))
    }

    /// Queues a KRPC datagram for the DHT (dropped when the queue is full).
    pub(crate) fn divert_krpc(&self, d: &[u8], from: SocketAddr) {
        let d = Bytes::copy_from_slice(&d[..d.len().min(KRPC_MAX)]);
        let _ = self.krpc_tx.try_send((d, from));
    }

    /// One datagram from the raw socket into `buf`.
    pub(crate) fn poll_recv_raw(
        &self,
        cx: &mut Context,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        match &self.raw {
            RawUdp::Tokio(s) => {
                let mut rb = ReadBuf::new(buf);
                match s.poll_recv_from(cx, &mut rb) {
                    Poll::Ready(Ok(from)) => Poll::Ready(Ok((rb.filled().len(), from))),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            }
            RawUdp::Sim(s) => s.poll_recv_from(cx, buf),
        }
    }

    pub(crate) async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        match &self.raw {
            RawUdp::Tokio(s) => s.send_to(buf, to).await,
            RawUdp::Sim(s) => s.send_to(buf, to).await,
        }
    }

    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        match &self.raw {
            RawUdp::Tokio(s) => s.try_send_to(buf, to),
            RawUdp::Sim(s) => s.try_send_to(buf, to),
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.raw {
            RawUdp::Tokio(s) => s.local_addr(),
            RawUdp::Sim(s) => s.local_addr(),
        }
    }
}

/// Binds `addr` for both the DHT and QUIC. Returns the socket for the DHT (it sees only
/// datagrams starting with `d`) and the QUIC endpoint. Without a DHT, pass the socket to
/// [`drain_krpc`] so QUIC datagrams keep flowing.
pub async fn bind_shared(
    net: &Net,
    addr: SocketAddr,
    cfg: &QuicConfig,
) -> io::Result<(UdpSocket, QuicEndpoint)> {
    let s = bind_stack(net, addr, Some(cfg), None).await?;
    let ep = s.quic.ok_or_else(|| io::Error::other("no QUIC endpoint"))?;
    Ok((s.krpc, ep))
}

/// What shares one UDP port: the DHT's view of it, and the QUIC endpoint and uTP socket
/// when asked for.
pub struct UdpStack {
    /// Only KRPC datagrams arrive here (for the DHT; else pass it to [`drain_krpc`]).
    pub krpc: UdpSocket,
    pub quic: Option<QuicEndpoint>,
    pub utp: Option<(super::utp::UtpSocket, super::utp::UtpListener)>,
}

/// Binds `addr` for the DHT plus QUIC and/or uTP, told apart by their first bytes (KRPC:
/// [`is_krpc`]; uTP: [`super::utp::is_utp`]; the rest is QUIC). The QUIC endpoint reads
/// the socket when there is one and passes uTP datagrams to the uTP task; without QUIC the
/// uTP task reads it and passes KRPC on.
pub async fn bind_stack(
    net: &Net,
    addr: SocketAddr,
    quic: Option<&QuicConfig>,
    utp: Option<&super::utp::UtpConfig>,
) -> io::Result<UdpStack> {
    let raw = match net.bind_udp(addr).await? {
        UdpSocket::Tokio(s) => RawUdp::Tokio(s),
        UdpSocket::Sim(s) => RawUdp::Sim(s),
        UdpSocket::Shared(_) => return Err(io::Error::other("socket already shared")),
    };
    let (krpc_tx, krpc_rx) = mpsc::channel(KRPC_QUEUE);
    let (utp_tx, utp_rx) = match (quic, utp) {
        (Some(_), Some(_)) => {
            let (tx, rx) = mpsc::channel(super::utp::UTP_QUEUE);
            (Some(tx), Some(rx))
        }
        _ => (None, None),
    };
    let shared = Arc::new(SharedUdp {
        raw,
        krpc_tx,
        krpc_rx: tokio::sync::Mutex::new(krpc_rx),
        utp_tx,
    });
    let ep = match quic {
        Some(cfg) => {
            let mut cfg = cfg.clone();
            if addr.ip().is_loopback() {
                // Loopback's MTU is 64 KiB: bigger packets mean far fewer syscalls, crypto
                // calls and wake-ups per byte (1452-byte packets made QUIC ~8x slower than
                // TCP here).
                cfg.max_udp_payload = cfg.max_udp_payload.max(LOOPBACK_UDP_PAYLOAD);
            }
            Some(QuicEndpoint::new(shared.clone(), &cfg)?)
        }
        None => None,
    };
    let utp = match utp {
        Some(ucfg) => {
            let feed = match utp_rx {
                Some(rx) => super::utp::Feed::Channel(rx),
                None => super::utp::Feed::Raw,
            };
            Some(super::utp::start(shared.clone(), feed, ucfg.clone())?)
        }
        None => None,
    };
    Ok(UdpStack {
        krpc: UdpSocket::Shared(shared),
        quic: ep,
        utp,
    })
}

/// Drops the KRPC datagrams of a shared socket no DHT reads (they would only fill the
/// queue). Ends when the endpoint is gone.
pub async fn drain_krpc(sock: UdpSocket) {
    let mut buf = vec![0u8; 65536];
    let mut errors = 0u32;
    loop {
        match sock.recv_from(&mut buf).await {
            Ok(_) => errors = 0,
            Err(_) => {
                errors += 1;
                if errors > 100 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// The quinn side of a shared socket.
struct QuicSocket {
    udp: Arc<SharedUdp>,
    local: SocketAddr,
}

impl fmt::Debug for QuicSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicSocket")
            .field("local", &self.local)
            .finish()
    }
}

struct Writable(Arc<SharedUdp>);

impl fmt::Debug for Writable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Writable")
    }
}

/// Sends a quinn [`Transmit`] with `send` (a `try_send_to`), one datagram per segment: the
/// socket reports `max_transmit_segments() == 1` (no GSO), but a batch handed over anyway
/// is split rather than sent as one oversized datagram.
fn send_transmit(
    t: &Transmit,
    mut send: impl FnMut(&[u8], SocketAddr) -> io::Result<usize>,
) -> io::Result<()> {
    match t.segment_size {
        Some(seg) if seg > 0 && seg < t.contents.len() => {
            for part in t.contents.chunks(seg) {
                send(part, t.destination)?;
            }
        }
        _ => {
            send(t.contents, t.destination)?;
        }
    }
    Ok(())
}

/// quinn's metadata for one whole datagram of `len` bytes from `from`, received on a socket
/// bound to `local` (a wildcard bind reports no destination IP). No ECN, no GRO.
fn recv_meta(from: SocketAddr, len: usize, local: SocketAddr) -> RecvMeta {
    RecvMeta {
        addr: from,
        len,
        stride: len,
        ecn: None,
        dst_ip: (!local.ip().is_unspecified()).then_some(local.ip()),
    }
}

impl UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        match &self.0.raw {
            RawUdp::Tokio(s) => s.poll_send_ready(cx),
            // Simnet sends never block (a full uplink drops, like a router).
            RawUdp::Sim(_) => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncUdpSocket for QuicSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable(self.udp.clone()))
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        send_transmit(t, |d, to| self.udp.try_send_to(d, to))
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        // Fill as many of quinn's buffers as the socket has datagrams for; KRPC datagrams
        // met on the way go to the DHT's queue (dropped when full).
        let mut n = 0;
        for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()) {
            loop {
                let (len, from) = match self.udp.poll_recv_raw(cx, buf) {
                    Poll::Ready(Ok(x)) => x,
                    // Errors (e.g. ICMP unreachable on Linux) after some datagrams: report
                    // those first; the error comes back on the next poll.
                    Poll::Ready(Err(e)) if n == 0 => return Poll::Ready(Err(e)),
                    Poll::Ready(Err(_)) | Poll::Pending if n > 0 => return Poll::Ready(Ok(n)),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                };
                let d = buf.get(..len).unwrap_or_default();
                if is_krpc(d) {
                    let d = Bytes::copy_from_slice(&d[..len.min(KRPC_MAX)]);
                    let _ = self.udp.krpc_tx.try_send((d, from));
                    continue;
                }
                if let Some(tx) = self.udp.utp_tx.as_ref().filter(|_| super::utp::is_utp(d)) {
                    // A datagram that filled the buffer may have been cut short: a uTP
                    // packet with part of its payload missing would corrupt the stream.
                    // Dropped, it is only a loss (and a failed path MTU probe).
                    if len < buf.len() {
                        let _ = tx.try_send((Bytes::copy_from_slice(d), from));
                    }
                    continue;
                }
                if len == 0 {
                    continue;
                }
                *m = recv_meta(from, len, self.local);
                n += 1;
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

/// A quinn endpoint (client and server) on a shared UDP socket.
#[derive(Clone, Debug)]
pub struct QuicEndpoint {
    ep: quinn::Endpoint,
    local: SocketAddr,
    /// Peer-wire streams whose connection is not closed yet (open, or closing after their
    /// drop): [`QuicEndpoint::shutdown`] lets them finish first.
    unclosed: Arc<AtomicUsize>,
}

fn tls_err(e: impl fmt::Display) -> io::Error {
    io::Error::other(format!("QUIC/TLS setup: {e}"))
}

/// Accepts any server certificate: no PKI between BitTorrent peers. The handshake
/// signature is still checked against the presented certificate's key, so the peer holds
/// that key — which proves nothing about who it is (see the module doc).
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn transport_config(cfg: &QuicConfig) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // Spin bit off keeps short headers in 0x40..=0x5F (never `d`, see the module doc).
    t.allow_spin(false);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(2));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.stream_receive_window(quinn::VarInt::from_u32(cfg.stream_receive_window));
    t.receive_window(quinn::VarInt::from_u32(cfg.receive_window));
    t.send_window(cfg.send_window);
    // BitTorrent peers can be idle for minutes (keep-alives every 2 min); QUIC's own
    // keep-alive stops the idle timeout from closing them.
    t.keep_alive_interval(Some(Duration::from_secs(10)));
    t.max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_secs(60)).ok());
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(cfg.max_udp_payload.max(1200));
    t.mtu_discovery_config(Some(mtu));
    if cfg.bbr {
        t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    }
    t
}

impl QuicEndpoint {
    fn new(udp: Arc<SharedUdp>, cfg: &QuicConfig) -> io::Result<Self> {
        let local = udp.local_addr()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let transport = Arc::new(transport_config(cfg));

        let cert =
            rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()]).map_err(tls_err)?;
        let cert_der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key.into())
            .map_err(tls_err)?;
        server_tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(server_tls).map_err(tls_err)?,
        ));
        server.transport_config(transport.clone());
        // Handshakes in progress at most; more are refused (a flood costs us little).
        server.max_incoming(256);

        let mut client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth();
        client_tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut client = quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(client_tls).map_err(tls_err)?,
        ));
        client.transport_config(transport);

        let mut ep_cfg = quinn::EndpointConfig::default();
        // Tell peers not to grease the fixed bit: our short headers must stay < 0x60.
        ep_cfg.grease_quic_bit(false);
        if let Some(s) = cfg.seed {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&s.to_le_bytes());
            ep_cfg.rng_seed(Some(seed));
        }
        // The endpoint reads the shared socket for uTP too, into buffers of this size: they
        // must hold an Ethernet-sized datagram (uTP peers send up to 1472 bytes over IPv4).
        let _ = ep_cfg.max_udp_payload_size(cfg.max_udp_payload.max(ETHERNET_UDP_PAYLOAD));
        // Seeded (simulation) or from the OS; one generator per connection, each its own stream.
        let cid_seed = cfg.seed.unwrap_or_else(rand::random);
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        ep_cfg.cid_generator(move || {
            use rand::SeedableRng;
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let seed = cid_seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            Box::new(HighBitCids(rand::rngs::StdRng::seed_from_u64(seed)))
        });
        let sock = Arc::new(QuicSocket { udp, local });
        let mut ep = quinn::Endpoint::new_with_abstract_socket(
            ep_cfg,
            Some(server),
            sock,
            Arc::new(quinn::TokioRuntime),
        )?;
        ep.set_default_client_config(client);
        Ok(QuicEndpoint {
            ep,
            local,
            unclosed: Arc::default(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connects and opens the one bidirectional stream the peer wire runs on. The stream
    /// only reaches the peer with the first bytes written (the BitTorrent handshake).
    /// Callers bound this with their own timeout.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<Stream> {
        let conn = self
            .ep
            .connect(addr, SERVER_NAME)
            .map_err(io::Error::other)?
            .await
            .map_err(io::Error::other)?;
        let (send, recv) = conn.open_bi().await.map_err(io::Error::other)?;
        Ok(Stream::Quic(Box::new(QuicStream::new(
            conn,
            send,
            recv,
            self.local,
            &self.unclosed,
        ))))
    }

    /// Next incoming connection attempt; `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<QuicIncoming> {
        let inc = self.ep.accept().await?;
        Some(QuicIncoming {
            inc,
            local: self.local,
            unclosed: self.unclosed.clone(),
        })
    }

    /// Closes every connection at once (CONNECTION_CLOSE with [`CLOSE_SHUTDOWN`]); the
    /// close frames go out only while the endpoint's driver task runs.
    pub fn close(&self) {
        self.ep
            .close(quinn::VarInt::from_u32(CLOSE_SHUTDOWN), b"shutdown");
    }

    /// Closes every connection before the process exits, so that peers learn of it now: a
    /// process that exits without this leaves its QUIC peers to find out by their idle
    /// timeout (60 s), counting it as a peer all that time (unlike TCP, no kernel closes a
    /// QUIC connection for a dead process). First waits (at most [`SHUTDOWN_DRAIN`]) for
    /// the peer-wire streams already dropped to close their connections gracefully (see
    /// [`QuicStream`]), then closes the rest with [`CLOSE_SHUTDOWN`] and waits (at most
    /// [`SHUTDOWN_WAIT`]) for the close frames to go out.
    pub async fn shutdown(&self) {
        let drained = tokio::time::Instant::now() + SHUTDOWN_DRAIN;
        while self.unclosed.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < drained {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.close();
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, self.ep.wait_idle()).await;
    }
}

/// A connection attempt from a peer, not yet accepted.
pub struct QuicIncoming {
    inc: quinn::Incoming,
    local: SocketAddr,
    unclosed: Arc<AtomicUsize>,
}

impl QuicIncoming {
    pub fn remote_addr(&self) -> SocketAddr {
        self.inc.remote_address()
    }

    /// Completes the QUIC handshake and waits for the peer's stream (it opens it by sending
    /// its BitTorrent handshake). Callers bound this with their own timeout.
    pub async fn stream(self) -> io::Result<(Stream, SocketAddr)> {
        let addr = self.inc.remote_address();
        let conn = self
            .inc
            .accept()
            .map_err(io::Error::other)?
            .await
            .map_err(io::Error::other)?;
        let (send, recv) = conn.accept_bi().await.map_err(io::Error::other)?;
        Ok((
            Stream::Quic(Box::new(QuicStream::new(
                conn,
                send,
                recv,
                self.local,
                &self.unclosed,
            ))),
            addr,
        ))
    }
}

/// The peer wire's byte stream over QUIC: one bidirectional stream of one connection.
///
/// Dropping it ends the connection (the peer wire has no graceful end), in two steps. The
/// send half is reset at once: the unsent rest of the stream is discarded and the peer's
/// read fails as soon as the RESET_STREAM arrives. The connection is closed a moment later
/// (two round trips, at most [`CLOSE_DRAIN_MAX`]), once the data in flight is
/// acknowledged: quinn 0.11.19 does not send CONNECTION_CLOSE while the congestion window
/// is full and stream data is pending, and a closed connection processes no more ACKs, so
/// a connection closed mid-transfer never told the peer, which counted us until its 60 s
/// idle timeout (quinn issue 2785, fixed after that release).
pub struct QuicStream {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    local: SocketAddr,
    unclosed: Arc<AtomicUsize>,
}

impl fmt::Debug for QuicStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicStream")
            .field("remote", &self.conn.remote_address())
            .finish()
    }
}

impl QuicStream {
    fn new(
        conn: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        local: SocketAddr,
        unclosed: &Arc<AtomicUsize>,
    ) -> Self {
        unclosed.fetch_add(1, Ordering::Relaxed);
        QuicStream {
            conn,
            send,
            recv,
            local,
            unclosed: unclosed.clone(),
        }
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Closes `conn` once the data it has in flight is acknowledged (see [`QuicStream`]).
async fn close_when_drained(conn: quinn::Connection, unclosed: Arc<AtomicUsize>) {
    let wait = (conn.rtt() * 2 + Duration::from_millis(10)).min(CLOSE_DRAIN_MAX);
    // The peer may close first.
    let _ = tokio::time::timeout(wait, conn.closed()).await;
    conn.close(quinn::VarInt::from_u32(CLOSE_PEER_WIRE), b"closed");
    unclosed.fetch_sub(1, Ordering::Relaxed);
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        // Connection statistics for measurements (`RUST_LOG=magnetfetch::net::quic=debug`).
        if tracing::enabled!(tracing::Level::DEBUG) {
            let s = self.conn.stats();
            tracing::debug!(
                local = %self.local,
                remote = %self.conn.remote_address(),
                rtt = ?s.path.rtt,
                cwnd = s.path.cwnd,
                lost = s.path.lost_packets,
                sent_pkts = s.udp_tx.datagrams,
                recv_pkts = s.udp_rx.datagrams,
                congestion_events = s.path.congestion_events,
                "QUIC connection closed"
            );
        }
        let code = quinn::VarInt::from_u32(CLOSE_PEER_WIRE);
        let _ = self.send.reset(code);
        let (conn, unclosed) = (self.conn.clone(), self.unclosed.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(close_when_drained(conn, unclosed));
            }
            // No runtime (its shutdown drops us): close now, as well as quinn can.
            Err(_) => {
                conn.close(code, b"closed");
                unclosed.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.get_mut().send), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().send), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.get_mut().send), cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::ConnectionIdGenerator;
    use rand::SeedableRng;

    #[test]
    fn krpc_is_d_then_digit() {
        assert!(is_krpc(b"d1:ad2:id20:"));
        assert!(is_krpc(b"d2:ip6:"));
        assert!(!is_krpc(b"d"));
        assert!(!is_krpc(b""));
        assert!(!is_krpc(b"de"));
        // A short header with the spin bit and protected bits landing on 0x64.
        assert!(!is_krpc(&[0x64, 0x80, 1, 2]));
        assert!(!is_krpc(&[0xC3, b'1']));
    }

    #[test]
    fn our_short_headers_never_look_like_krpc() {
        let mut g = HighBitCids(rand::rngs::StdRng::seed_from_u64(1));
        for _ in 0..1000 {
            let cid = g.generate_cid();
            assert_eq!(cid.len(), CID_LEN);
            // Worst case first byte: 0x64 ('d').
            let mut pkt = vec![0x64];
            pkt.extend_from_slice(&cid);
            assert!(!is_krpc(&pkt));
        }
    }
}
