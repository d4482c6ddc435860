//! The one network seam: every socket magnetfetch opens goes through [`Net`].
//!
//! Two back ends sit behind the same API: real tokio sockets, and a [`simnet::Host`] on a
//! simulated network (`Net::Sim`). Protocol code (DHT, peers, trackers) is written once
//! against these types; there is no `#[cfg(test)]` fork. Time always comes from
//! `tokio::time`, which the simulation pauses and advances.

pub mod quic;
pub mod utp;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A network to open sockets on: the real one, or a simulated host.
#[derive(Clone, Debug, Default)]
pub enum Net {
    /// Real sockets through tokio.
    #[default]
    Tokio,
    /// A host on a simulated network (see the `simnet` crate and `docs/simnet.md`).
    Sim(simnet::Host),
}

impl Net {
    /// Whether this is a simulated host.
    pub fn is_sim(&self) -> bool {
        matches!(self, Net::Sim(_))
    }
}

impl From<simnet::Host> for Net {
    fn from(h: simnet::Host) -> Self {
        Net::Sim(h)
    }
}

impl Net {
    /// Binds a UDP socket.
    pub async fn bind_udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        match self {
            Net::Tokio if addr.is_ipv6() => Ok(UdpSocket::Tokio(tokio::net::UdpSocket::from_std(
                v6only(addr, socket2::Type::DGRAM)?.into(),
            )?)),
            Net::Tokio => Ok(UdpSocket::Tokio(tokio::net::UdpSocket::bind(addr).await?)),
            Net::Sim(h) => Ok(UdpSocket::Sim(h.bind_udp(addr).await?)),
        }
    }

    /// Listens for incoming streams.
    pub async fn listen(&self, addr: SocketAddr) -> io::Result<Listener> {
        match self {
            Net::Tokio if addr.is_ipv6() => {
                let s = v6only(addr, socket2::Type::STREAM)?;
                s.listen(1024)?;
                Ok(Listener::Tokio(tokio::net::TcpListener::from_std(
                    s.into(),
                )?))
            }
            Net::Tokio => Ok(Listener::Tokio(tokio::net::TcpListener::bind(addr).await?)),
            Net::Sim(h) => Ok(Listener::Sim(h.listen(addr).await?)),
        }
    }

    /// Connects a stream. Callers wrap this in their own timeout.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<Stream> {
        match self {
            Net::Tokio => {
                let s = tokio::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tokio(s))
            }
            Net::Sim(h) => Ok(Stream::Sim(h.connect(addr).await?)),
        }
    }

    /// Connects a stream from a chosen local IP (port picked by the system), so the remote
    /// end sees that source address on a multi-address host. A simulated host has one
    /// address, so `local_ip` only matters on the real network. An IP of the other family
    /// than `addr` is ignored.
    pub async fn connect_from(
        &self,
        local_ip: Option<std::net::IpAddr>,
        addr: SocketAddr,
    ) -> io::Result<Stream> {
        match (self, local_ip) {
            (Net::Tokio, Some(ip)) if ip.is_ipv6() == addr.is_ipv6() && !ip.is_unspecified() => {
                let sock = if ip.is_ipv6() {
                    tokio::net::TcpSocket::new_v6()?
                } else {
                    tokio::net::TcpSocket::new_v4()?
                };
                sock.bind(SocketAddr::new(ip, 0))?;
                let s = sock.connect(addr).await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tokio(s))
            }
            _ => self.connect(addr).await,
        }
    }
}

/// An IPv6 socket bound with IPV6_V6ONLY, so that `[::]:PORT` and `0.0.0.0:PORT` can be
/// bound side by side (dual stack with one socket per family, as the DHT needs for BEP 32)
/// and an IPv6 socket never sees IPv4-mapped addresses. Non-blocking, ready for tokio.
fn v6only(addr: SocketAddr, ty: socket2::Type) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::IPV6, ty, None)?;
    s.set_only_v6(true)?;
    if ty == socket2::Type::STREAM {
        // As std's TcpListener::bind does: a restarted seeder can reuse its port at once.
        s.set_reuse_address(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// A bound datagram socket.
#[derive(Debug)]
pub enum UdpSocket {
    Tokio(tokio::net::UdpSocket),
    Sim(simnet::UdpSocket),
    /// Shared with a QUIC endpoint: only datagrams starting with `d` (KRPC) are returned by
    /// `recv_from`; the others go to QUIC (see [`quic`]).
    Shared(Arc<quic::SharedUdp>),
}

impl UdpSocket {
    pub async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        match self {
            UdpSocket::Tokio(s) => s.send_to(buf, addr).await,
            UdpSocket::Sim(s) => s.send_to(buf, addr).await,
            UdpSocket::Shared(s) => s.send_to(buf, addr).await,
        }
    }

    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            UdpSocket::Tokio(s) => s.recv_from(buf).await,
            UdpSocket::Sim(s) => s.recv_from(buf).await,
            UdpSocket::Shared(s) => s.recv_from(buf).await,
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            UdpSocket::Tokio(s) => s.local_addr(),
            UdpSocket::Sim(s) => s.local_addr(),
            UdpSocket::Shared(s) => s.local_addr(),
        }
    }
}

/// A stream listener.
#[derive(Debug)]
pub enum Listener {
    Tokio(tokio::net::TcpListener),
    Sim(simnet::TcpListener),
}

impl Listener {
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Tokio(l) => {
                let (s, a) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Stream::Tokio(s), a))
            }
            Listener::Sim(l) => {
                let (s, a) = l.accept().await?;
                Ok((Stream::Sim(s), a))
            }
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listener::Tokio(l) => l.local_addr(),
            Listener::Sim(l) => l.local_addr(),
        }
    }
}

/// A connected, ordered, reliable byte stream.
#[derive(Debug)]
pub enum Stream {
    Tokio(tokio::net::TcpStream),
    Sim(simnet::TcpStream),
    /// One bidirectional stream of a QUIC connection (real or simulated UDP).
    Quic(Box<quic::QuicStream>),
    /// A uTP connection (BEP 29) on the shared UDP socket.
    Utp(Box<utp::UtpStream>),
}

/// Which transport a peer connection runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// TCP (real, or simnet's stream sockets).
    Tcp,
    Quic,
    /// uTP (BEP 29) over UDP, real or simulated.
    Utp,
}

impl Stream {
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Tokio(s) => s.peer_addr(),
            Stream::Sim(s) => s.peer_addr(),
            Stream::Quic(s) => Ok(s.peer_addr()),
            Stream::Utp(s) => Ok(s.peer_addr()),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Tokio(s) => s.local_addr(),
            Stream::Sim(s) => s.local_addr(),
            Stream::Quic(s) => Ok(s.local_addr()),
            Stream::Utp(s) => Ok(s.local_addr()),
        }
    }

    pub fn transport(&self) -> Transport {
        match self {
            Stream::Tokio(_) | Stream::Sim(_) => Transport::Tcp,
            Stream::Quic(_) => Transport::Quic,
            Stream::Utp(_) => Transport::Utp,
        }
    }

    /// A handle to set `SO_RCVLOWAT` on this stream after it is split into halves; `None`
    /// for streams without a kernel socket (simnet, QUIC), where there is nothing to tune.
    pub fn recv_lowat(&self) -> Option<RecvLowat> {
        match self {
            #[cfg(unix)]
            Stream::Tokio(s) => Some(RecvLowat(std::os::fd::AsRawFd::as_raw_fd(s))),
            _ => None,
        }
    }
}

/// Sets `SO_RCVLOWAT` on a real TCP stream: the kernel then reports the socket readable only
/// once that many bytes are queued (or on FIN/error), so a peer that writes one 16 KiB block
/// per syscall does not wake the reader once per block. A non-blocking read still returns
/// whatever is queued. Only valid while the stream it came from (or a half of it) is alive:
/// keep it next to that half.
#[derive(Clone, Copy, Debug)]
pub struct RecvLowat(#[cfg(unix)] std::os::fd::RawFd);

impl RecvLowat {
    /// Sets the low-water mark to `bytes` (1 = the default: readable as soon as anything
    /// arrives). Lowering it wakes a waiting reader if enough is already queued (Linux).
    pub fn set(&self, bytes: usize) -> io::Result<()> {
        #[cfg(unix)]
        {
            let v: libc::c_int = bytes.clamp(1, i32::MAX as usize) as libc::c_int;
            // SAFETY: `self.0` is the fd of a live socket (see the type's doc); the option
            // value is a c_int on our stack, passed with its exact size.
            let r = unsafe {
                libc::setsockopt(
                    self.0,
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        #[cfg(not(unix))]
        let _ = bytes;
        Ok(())
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tokio(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Sim(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Quic(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Utp(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tokio(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Sim(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Quic(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Utp(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tokio(s) => Pin::new(s).poll_flush(cx),
            Stream::Sim(s) => Pin::new(s).poll_flush(cx),
            Stream::Quic(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Utp(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tokio(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Sim(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Quic(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Utp(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
