//! Dialling policy for outgoing peer connections: TCP, uTP (BEP 29), QUIC between
//! magnetfetch peers, or several raced ("happy eyeballs").
//!
//! uTP, as libtorrent does it: with `auto`, uTP is tried first and TCP after
//! [`DialConfig::tcp_delay`] (libtorrent tries uTP and falls back to TCP when it fails);
//! the first BitTorrent handshake wins. uTP runs MSE/PE like TCP.
//!
//! Discovery: we advertise QUIC in the BEP 10 extended handshake under our own key
//! [`EXT_KEY`] (value: our UDP port, which is also our TCP port) and in BEP 11 PEX with the
//! otherwise unused flag bit [`crate::peer::pex::FLAG_MF_QUIC`]. Peers learned to be
//! capable (or not) are remembered in a bounded LRU ([`QuicPeers`]). A fresh address (DHT,
//! tracker) is raced: QUIC first, TCP after [`DialConfig::tcp_delay`]; whichever completes
//! the BitTorrent handshake first is kept, the other is dropped (a dropped QUIC stream
//! closes its connection; a dropped TCP stream closes its socket).
//!
//! TCP connections follow the encryption policy ([`Encryption`], MSE/PE): `prefer` dials
//! with MSE and, when the peer drops the attempt (a client without MSE closes on bytes that
//! are not a BitTorrent handshake), dials again in plaintext; `require` never falls back;
//! `off` dials in plaintext only. QUIC is encrypted already and never runs MSE.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;
use tokio::time::timeout;

use crate::id::{InfoHash, PeerId};
use crate::net::quic::QuicEndpoint;
use crate::net::Net;
pub use crate::peer::Encryption;
use crate::peer::{MsePolicy, PeerConn, PeerError};

/// Which transports to use for peer connections (`--transport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportMode {
    /// QUIC with magnetfetch peers, TCP with everyone else (race fresh addresses).
    Auto,
    /// TCP only (no QUIC endpoint).
    #[default]
    Tcp,
    /// QUIC only (non-magnetfetch peers are unreachable).
    Quic,
    /// uTP only (BEP 29).
    Utp,
}

impl TransportMode {
    pub fn uses_quic(self) -> bool {
        matches!(self, TransportMode::Auto | TransportMode::Quic)
    }

    pub fn uses_utp(self) -> bool {
        matches!(self, TransportMode::Auto | TransportMode::Utp)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TransportMode::Auto => "auto",
            TransportMode::Tcp => "tcp",
            TransportMode::Quic => "quic",
            TransportMode::Utp => "utp",
        }
    }
}

impl std::str::FromStr for TransportMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TransportMode::Auto),
            "tcp" => Ok(TransportMode::Tcp),
            "quic" => Ok(TransportMode::Quic),
            "utp" => Ok(TransportMode::Utp),
            _ => Err(format!("unknown transport {s:?} (auto, tcp, utp or quic)")),
        }
    }
}

/// Session-wide transport settings.
#[derive(Clone, Debug)]
pub struct DialConfig {
    pub mode: TransportMode,
    /// Happy eyeballs: how long QUIC gets alone before TCP starts too (~250 ms on real
    /// networks; a loopback handshake takes ~1 ms).
    pub tcp_delay: Duration,
    pub quic: crate::net::quic::QuicConfig,
    /// An endpoint the caller bound already, e.g. on a UDP socket it shares with its own
    /// DHT node (`magnetfetch sim` does this); `None`: the session binds one itself.
    pub endpoint: Option<QuicEndpoint>,
    /// MSE/PE on TCP connections, both ways (`--encryption`).
    pub encryption: Encryption,
    pub utp: crate::net::utp::UtpConfig,
    /// A uTP socket the caller bound already (on the UDP socket of its own DHT node);
    /// `None`: the session binds one itself when the mode uses uTP.
    pub utp_socket: Option<crate::net::utp::UtpBound>,
}

impl Default for DialConfig {
    fn default() -> Self {
        DialConfig {
            mode: TransportMode::default(),
            tcp_delay: Duration::from_millis(250),
            quic: Default::default(),
            endpoint: None,
            encryption: Encryption::default(),
            utp: Default::default(),
            utp_socket: None,
        }
    }
}

/// Peers remembered at most.
const CAPABLE_CACHE: usize = 4096;

/// What we know of peers' QUIC support, keyed by the address we dial (IP + TCP port):
/// `Some(udp_port)` capable, `None` known not to be. Bounded LRU.
#[derive(Clone)]
pub struct QuicPeers(Arc<Mutex<LruCache<SocketAddr, Option<u16>>>>);

impl Default for QuicPeers {
    fn default() -> Self {
        QuicPeers(Arc::new(Mutex::new(LruCache::new(
            NonZeroUsize::new(CAPABLE_CACHE).unwrap_or(NonZeroUsize::MIN),
        ))))
    }
}

impl QuicPeers {
    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<SocketAddr, Option<u16>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what a peer's extended handshake said (`quic_port` None: no QUIC).
    pub fn learn(&self, dial: SocketAddr, quic_port: Option<u16>) {
        self.lock().put(dial, quic_port.filter(|&p| p != 0));
    }

    /// Only raises knowledge to "capable" (PEX flags are hearsay: never mark "not capable"
    /// from them).
    pub fn learn_capable(&self, dial: SocketAddr) {
        let mut c = self.lock();
        if c.peek(&dial).is_none_or(|v| v.is_none()) {
            c.put(dial, Some(dial.port()));
        }
    }

    /// `Some(Some(port))` capable, `Some(None)` not, `None` unknown.
    pub fn get(&self, dial: SocketAddr) -> Option<Option<u16>> {
        self.lock().get(&dial).copied()
    }
}

/// How to dial one address, decided from the mode and what we know of the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialPlan {
    Tcp,
    Quic(SocketAddr),
    /// QUIC at once, TCP after the delay; first handshake wins.
    Race(SocketAddr),
}

/// Pure decision: which transport(s) to try for `addr`.
pub fn plan(
    mode: TransportMode,
    have_quic: bool,
    known: Option<Option<u16>>,
    addr: SocketAddr,
) -> DialPlan {
    if !have_quic {
        return DialPlan::Tcp;
    }
    let quic_addr = |p: u16| SocketAddr::new(addr.ip(), p);
    match (mode, known) {
        (TransportMode::Tcp | TransportMode::Utp, _) => DialPlan::Tcp,
        (TransportMode::Quic, Some(Some(p))) => DialPlan::Quic(quic_addr(p)),
        (TransportMode::Quic, _) => DialPlan::Quic(addr),
        // Known magnetfetch peer: still race, TCP as the fallback if UDP is blocked.
        (TransportMode::Auto, Some(Some(p))) => DialPlan::Race(quic_addr(p)),
        (TransportMode::Auto, Some(None)) => DialPlan::Tcp,
        // Fresh address: our peers share one port for TCP and UDP.
        (TransportMode::Auto, None) => DialPlan::Race(addr),
    }
}

/// Dials peers according to the transport policy. Cheap to clone.
#[derive(Clone, Default)]
pub struct Dialer {
    pub mode: TransportMode,
    pub tcp_delay: Duration,
    pub quic: Option<QuicEndpoint>,
    /// The uTP socket, when the mode uses uTP.
    pub utp: Option<crate::net::utp::UtpSocket>,
    pub peers: QuicPeers,
    /// The encryption policy for TCP, dialled and accepted (with its seeded rng).
    pub mse: MsePolicy,
}

impl Dialer {
    /// The UDP port to advertise in the extended handshake, when QUIC is on.
    pub fn advertised_port(&self) -> Option<u16> {
        self.quic.as_ref().map(|q| q.local_addr().port())
    }

    /// Connects to `addr` and completes the BitTorrent handshake over the chosen
    /// transport(s). `connect_timeout` bounds each transport's connect, `handshake_timeout`
    /// the handshake after it.
    pub async fn connect(
        &self,
        net: &Net,
        addr: SocketAddr,
        info_hash: InfoHash,
        our_id: PeerId,
        connect_timeout: Duration,
        handshake_timeout: Duration,
    ) -> Result<PeerConn, PeerError> {
        if let Some(u) = self.utp.as_ref().filter(|_| self.mode.uses_utp()) {
            let utp = self.connect_utp(
                u,
                addr,
                info_hash,
                our_id,
                connect_timeout,
                handshake_timeout,
            );
            if self.mode == TransportMode::Utp {
                return utp.await;
            }
            // Auto: TCP (QUIC first to a peer QUIC is tried with) and, only when that
            // failed, uTP, so a peer only uTP reaches is still reached. Not raced and not
            // uTP first as libtorrent does: two connections to one peer at once make it
            // drop one (libtorrent resets the TCP one when our uTP SYN arrives while the
            // TCP handshake is under way), and libtorrent refuses our outgoing uTP today
            // (it answers the SYN with a FIN).
            let first = self
                .connect_no_utp(
                    net,
                    addr,
                    info_hash,
                    our_id,
                    connect_timeout,
                    handshake_timeout,
                )
                .await;
            return match first {
                Ok(c) => Ok(c),
                Err(e) => utp.await.map_err(|_| e),
            };
        }
        self.connect_no_utp(
            net,
            addr,
            info_hash,
            our_id,
            connect_timeout,
            handshake_timeout,
        )
        .await
    }

    /// A holepunch dial (BEP 55): uTP whatever the mode, as the relay's `connect` asks.
    pub async fn punch(
        &self,
        addr: SocketAddr,
        info_hash: InfoHash,
        our_id: PeerId,
        connect_timeout: Duration,
        handshake_timeout: Duration,
    ) -> Result<PeerConn, PeerError> {
        let u = self.utp.as_ref().ok_or(PeerError::Closed)?;
        self.connect_utp(
            u,
            addr,
            info_hash,
            our_id,
            connect_timeout,
            handshake_timeout,
        )
        .await
    }

    /// A uTP connection under the encryption policy (as for TCP).
    async fn connect_utp(
        &self,
        u: &crate::net::utp::UtpSocket,
        addr: SocketAddr,
        info_hash: InfoHash,
        our_id: PeerId,
        connect_timeout: Duration,
        handshake_timeout: Duration,
    ) -> Result<PeerConn, PeerError> {
        let dial = || async {
            let s = timeout(connect_timeout, u.connect(addr))
                .await
                .map_err(|_| PeerError::Timeout("connecting"))??;
            Ok::<_, PeerError>(crate::net::Stream::Utp(Box::new(s)))
        };
        let plain = || async {
            PeerConn::handshake_outgoing(dial().await?, addr, info_hash, our_id, handshake_timeout)
                .await
        };
        let mse = || async {
            PeerConn::handshake_outgoing_encrypted(
                dial().await?,
                addr,
                info_hash,
                our_id,
                &self.mse,
                handshake_timeout,
            )
            .await
        };
        by_policy(self.mse.mode, addr, plain, mse).await
    }

    /// TCP and/or QUIC as the mode and what we know of the peer say.
    async fn connect_no_utp(
        &self,
        net: &Net,
        addr: SocketAddr,
        info_hash: InfoHash,
        our_id: PeerId,
        connect_timeout: Duration,
        handshake_timeout: Duration,
    ) -> Result<PeerConn, PeerError> {
        let known = self.peers.get(addr);
        let tcp = || {
            self.connect_tcp(
                net,
                addr,
                info_hash,
                our_id,
                connect_timeout,
                handshake_timeout,
            )
        };
        let quic = |qa: SocketAddr| async move {
            let ep = self.quic.as_ref().ok_or(PeerError::Closed)?;
            let s = timeout(connect_timeout, ep.connect(qa))
                .await
                .map_err(|_| PeerError::Timeout("connecting"))??;
            // The swarm keys peers by the address it dialled: report `addr`, not `qa`.
            PeerConn::handshake_outgoing(s, addr, info_hash, our_id, handshake_timeout).await
        };
        match plan(self.mode, self.quic.is_some(), known, addr) {
            DialPlan::Tcp => tcp().await,
            DialPlan::Quic(qa) => quic(qa).await,
            DialPlan::Race(qa) => {
                let q = quic(qa);
                let t = async {
                    tokio::time::sleep(self.tcp_delay).await;
                    tcp().await
                };
                tokio::pin!(q, t);
                let (mut q_err, mut t_err) = (None, None);
                loop {
                    tokio::select! {
                        biased;
                        r = &mut q, if q_err.is_none() => match r {
                            Ok(c) => return Ok(c),
                            Err(e) => q_err = Some(e),
                        },
                        r = &mut t, if t_err.is_none() => match r {
                            Ok(c) => return Ok(c),
                            Err(e) => t_err = Some(e),
                        },
                    }
                    if q_err.is_some() {
                        if let Some(e) = t_err.take() {
                            // Both failed: report TCP's reason (what any client would see).
                            return Err(e);
                        }
                    }
                }
            }
        }
    }
}

impl Dialer {
    /// A TCP connection under the encryption policy.
    async fn connect_tcp(
        &self,
        net: &Net,
        addr: SocketAddr,
        info_hash: InfoHash,
        our_id: PeerId,
        connect_timeout: Duration,
        handshake_timeout: Duration,
    ) -> Result<PeerConn, PeerError> {
        let plain = || {
            PeerConn::connect(
                net,
                addr,
                info_hash,
                our_id,
                connect_timeout,
                handshake_timeout,
            )
        };
        let mse = || {
            PeerConn::connect_encrypted(
                net,
                addr,
                info_hash,
                our_id,
                &self.mse,
                connect_timeout,
                handshake_timeout,
            )
        };
        by_policy(self.mse.mode, addr, plain, mse).await
    }
}

/// One outgoing connection under an encryption policy, over any transport: plaintext
/// only, MSE only, or MSE and, when MSE failed, plaintext.
async fn by_policy<P, M>(
    mode: Encryption,
    addr: SocketAddr,
    plain: impl Fn() -> P,
    mse: impl Fn() -> M,
) -> Result<PeerConn, PeerError>
where
    P: std::future::Future<Output = Result<PeerConn, PeerError>>,
    M: std::future::Future<Output = Result<PeerConn, PeerError>>,
{
    match mode {
        Encryption::Off => plain().await,
        Encryption::Require => mse().await,
        Encryption::Prefer => match mse().await {
            // Whatever went wrong in MSE (the peer hung up, reset, went quiet or answered
            // with something else), a plaintext handshake may still work.
            Err(PeerError::Encryption(e)) => {
                tracing::debug!(%addr, %e, "MSE attempt failed; retrying in plaintext");
                plain().await
            }
            r => r,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn plans() {
        let x = a("10.0.0.1:6881");
        assert_eq!(plan(TransportMode::Auto, false, None, x), DialPlan::Tcp);
        assert_eq!(
            plan(TransportMode::Tcp, true, Some(Some(1)), x),
            DialPlan::Tcp
        );
        assert_eq!(plan(TransportMode::Auto, true, None, x), DialPlan::Race(x));
        assert_eq!(
            plan(TransportMode::Auto, true, Some(None), x),
            DialPlan::Tcp
        );
        assert_eq!(
            plan(TransportMode::Auto, true, Some(Some(7000)), x),
            DialPlan::Race(a("10.0.0.1:7000"))
        );
        assert_eq!(
            plan(TransportMode::Quic, true, Some(None), x),
            DialPlan::Quic(x)
        );
        assert_eq!(
            plan(TransportMode::Quic, true, Some(Some(7000)), x),
            DialPlan::Quic(a("10.0.0.1:7000"))
        );
    }

    #[test]
    fn cache_is_bounded_and_pex_never_downgrades() {
        let c = QuicPeers::default();
        let x = a("10.0.0.1:6881");
        c.learn(x, Some(7000));
        c.learn_capable(x);
        assert_eq!(c.get(x), Some(Some(7000)));
        c.learn(x, None);
        assert_eq!(c.get(x), Some(None));
        c.learn_capable(x);
        assert_eq!(c.get(x), Some(Some(6881)));
        for i in 0..(CAPABLE_CACHE as u32 + 10) {
            c.learn(SocketAddr::from((i.to_be_bytes(), 1)), None);
        }
        assert_eq!(c.lock().len(), CAPABLE_CACHE);
        assert_eq!(c.get(x), None, "oldest evicted");
    }

    #[test]
    fn mode_parse() {
        assert_eq!("auto".parse::<TransportMode>(), Ok(TransportMode::Auto));
        assert_eq!("quic".parse::<TransportMode>(), Ok(TransportMode::Quic));
        assert_eq!("utp".parse::<TransportMode>(), Ok(TransportMode::Utp));
        assert!("udp".parse::<TransportMode>().is_err());
        assert!(!TransportMode::Utp.uses_quic() && TransportMode::Utp.uses_utp());
        assert!(TransportMode::Auto.uses_quic() && TransportMode::Auto.uses_utp());
        assert!(!TransportMode::Tcp.uses_utp());
    }
}
