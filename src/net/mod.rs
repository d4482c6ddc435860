//! The one network seam: every socket magnetfetch opens goes through [`Net`].
//!
//! Two back ends sit behind the same API: real tokio sockets, and `simnet` (added by the
//! simnet issue). Protocol code (DHT, peers, trackers) is written once against these types;
//! there is no `#[cfg(test)]` fork. Time always comes from `tokio::time`, which the simulation
//! pauses and advances.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A network to open sockets on: the real one, or a simulated host.
#[derive(Clone, Debug, Default)]
pub enum Net {
    /// Real sockets through tokio.
    #[default]
    Tokio,
}

impl Net {
    /// Binds a UDP socket.
    pub async fn bind_udp(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        match self {
            Net::Tokio => Ok(UdpSocket::Tokio(tokio::net::UdpSocket::bind(addr).await?)),
        }
    }

    /// Listens for incoming streams.
    pub async fn listen(&self, addr: SocketAddr) -> io::Result<Listener> {
        match self {
            Net::Tokio => Ok(Listener::Tokio(tokio::net::TcpListener::bind(addr).await?)),
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
        }
    }
}

/// A bound datagram socket.
#[derive(Debug)]
pub enum UdpSocket {
    Tokio(tokio::net::UdpSocket),
}

impl UdpSocket {
    pub async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        match self {
            UdpSocket::Tokio(s) => s.send_to(buf, addr).await,
        }
    }

    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self {
            UdpSocket::Tokio(s) => s.recv_from(buf).await,
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            UdpSocket::Tokio(s) => s.local_addr(),
        }
    }
}

/// A stream listener.
#[derive(Debug)]
pub enum Listener {
    Tokio(tokio::net::TcpListener),
}

impl Listener {
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Tokio(l) => {
                let (s, a) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok((Stream::Tokio(s), a))
            }
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listener::Tokio(l) => l.local_addr(),
        }
    }
}

/// A connected, ordered, reliable byte stream.
#[derive(Debug)]
pub enum Stream {
    Tokio(tokio::net::TcpStream),
}

impl Stream {
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Tokio(s) => s.peer_addr(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Stream::Tokio(s) => s.local_addr(),
        }
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
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tokio(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tokio(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
