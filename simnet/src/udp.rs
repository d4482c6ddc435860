//! Simulated UDP sockets.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::core::{HostId, Shared};

/// A bound datagram socket on a simulated host. Sending never blocks (a full uplink queue
/// drops, as a router would); receiving waits for the next datagram. Several tasks may share
/// one socket behind an `Arc`.
pub struct UdpSocket {
    shared: Arc<Shared>,
    host: HostId,
    local: SocketAddr,
    gen: u64,
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("local", &self.local)
            .finish()
    }
}

impl UdpSocket {
    pub(crate) fn new(shared: Arc<Shared>, host: HostId, local: SocketAddr, gen: u64) -> Self {
        UdpSocket {
            shared,
            host,
            local,
            gen,
        }
    }

    /// Queues `buf` for `addr`; returns its length. Errors if the socket's host went down or
    /// the datagram exceeds 65,507 bytes.
    pub async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        self.try_send_to(buf, addr)
    }

    /// [`UdpSocket::send_to`] without the `async` (sending never waits).
    pub fn try_send_to(&self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        let (h, port, gen) = (self.host, self.local.port(), self.gen);
        self.shared
            .with(|c, now| c.udp_send(now, h, port, gen, buf, addr))
    }

    /// Receives one datagram; a datagram longer than `buf` is truncated.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        poll_fn(|cx| self.poll_recv_from(cx, buf)).await
    }

    /// Poll form of [`UdpSocket::recv_from`].
    pub fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let (h, port, gen) = (self.host, self.local.port(), self.gen);
        match self
            .shared
            .with_core(|c| c.udp_recv(h, port, gen, cx.waker()))
        {
            Err(e) => Poll::Ready(Err(e)),
            Ok(None) => Poll::Pending,
            Ok(Some((from, data))) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Poll::Ready(Ok((n, from)))
            }
        }
    }

    /// The bound address (a wildcard IP stays a wildcard, as with real sockets).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let (h, port, gen) = (self.host, self.local.port(), self.gen);
        self.shared.core.lock().close_udp(h, port, gen);
    }
}
