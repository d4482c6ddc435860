//! `quinn::AsyncUdpSocket` over a simnet UDP socket, so QUIC endpoints run on the simulated
//! network (feature `quinn`). Use it with `quinn::TokioRuntime`: that runtime takes its
//! clock and timers from `tokio::time`, which the simulation pauses and advances.
//!
//! ```ignore
//! let sock = simnet::QuinnSocket::new(host.bind_udp(addr).await?);
//! let ep = quinn::Endpoint::new_with_abstract_socket(
//!     quinn::EndpointConfig::default(), Some(server_config),
//!     std::sync::Arc::new(sock), std::sync::Arc::new(quinn::TokioRuntime))?;
//! ```

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::UdpSocket;

/// Sends a quinn [`Transmit`] with `send` (a `try_send_to`), one datagram per segment:
/// adapters report `max_transmit_segments() == 1` (no GSO), but split defensively if quinn
/// hands over a batch anyway.
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

/// A simnet [`UdpSocket`] usable as a quinn endpoint socket.
pub struct QuinnSocket {
    inner: UdpSocket,
}

impl QuinnSocket {
    pub fn new(inner: UdpSocket) -> Self {
        QuinnSocket { inner }
    }
}

impl fmt::Debug for QuinnSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("QuinnSocket").field(&self.inner).finish()
    }
}

/// Simnet sends never block (a full uplink queue drops instead, like a router), so the
/// socket is always writable.
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for QuinnSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        send_transmit(transmit, |d, to| self.inner.try_send_to(d, to))
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        match self.inner.poll_recv_from(cx, buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok((n, from))) => {
                *m = recv_meta(from, n, self.inner.local_addr()?);
                Poll::Ready(Ok(1))
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn may_fragment(&self) -> bool {
        // Datagrams are delivered whole or not at all.
        false
    }
}
