//! Simulated TCP-like streams: ordered, reliable, flow-controlled by a fixed window.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::core::{ConnId, HostId, Shared};

/// Listens for stream connections on a simulated host.
pub struct TcpListener {
    shared: Arc<Shared>,
    host: HostId,
    local: SocketAddr,
    gen: u64,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("local", &self.local)
            .finish()
    }
}

impl TcpListener {
    pub(crate) fn new(shared: Arc<Shared>, host: HostId, local: SocketAddr, gen: u64) -> Self {
        TcpListener {
            shared,
            host,
            local,
            gen,
        }
    }

    /// Waits for the next connection; returns it with the peer's address.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        let (h, port, gen) = (self.host, self.local.port(), self.gen);
        match self
            .shared
            .with_core(|c| c.accept(h, port, gen, cx.waker()))
        {
            Err(e) => Poll::Ready(Err(e)),
            Ok(None) => Poll::Pending,
            Ok(Some((conn, local, peer))) => {
                let s = TcpStream {
                    shared: self.shared.clone(),
                    conn,
                    end: 1,
                    local,
                    peer,
                };
                Poll::Ready(Ok((s, peer)))
            }
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let (h, port, gen) = (self.host, self.local.port(), self.gen);
        let now = tokio::time::Instant::now();
        self.shared.with(|c, _| c.close_listener(now, h, port, gen));
    }
}

/// A connected stream between two simulated hosts. Dropping it closes it: a FIN if
/// everything received was read, otherwise a reset (as a real kernel does).
pub struct TcpStream {
    shared: Arc<Shared>,
    conn: ConnId,
    end: usize,
    local: SocketAddr,
    peer: SocketAddr,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish()
    }
}

impl TcpStream {
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Cancels the pending connect if the future is dropped before it resolves.
struct ConnectGuard {
    shared: Arc<Shared>,
    id: u64,
    done: bool,
}

impl Drop for ConnectGuard {
    fn drop(&mut self) {
        if !self.done {
            let id = self.id;
            self.shared.with(|c, now| c.cancel_connect(now, id));
        }
    }
}

pub(crate) async fn connect(
    shared: Arc<Shared>,
    host: HostId,
    addr: SocketAddr,
) -> io::Result<TcpStream> {
    let id = shared.with(|c, now| c.start_connect(now, host, addr))?;
    let mut guard = ConnectGuard {
        shared: shared.clone(),
        id,
        done: false,
    };
    let r = poll_fn(
        |cx| match shared.with_core(|c| c.poll_connect(id, cx.waker())) {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        },
    )
    .await;
    guard.done = true;
    let (conn, local, peer) = r?;
    Ok(TcpStream {
        shared,
        conn,
        end: 0,
        local,
        peer,
    })
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (conn, end) = (self.conn, self.end);
        let dst = buf.initialize_unfilled();
        match self
            .shared
            .with(|c, now| c.stream_read(now, conn, end, dst, cx.waker()))
        {
            None => Poll::Pending,
            Some(Err(e)) => Poll::Ready(Err(e)),
            Some(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let (conn, end) = (self.conn, self.end);
        match self
            .shared
            .with(|c, now| c.stream_write(now, conn, end, buf, cx.waker()))
        {
            None => Poll::Pending,
            Some(r) => Poll::Ready(r),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are already on their way (Nagle is not modelled).
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (conn, end) = (self.conn, self.end);
        Poll::Ready(self.shared.with(|c, now| c.stream_shutdown(now, conn, end)))
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let (conn, end) = (self.conn, self.end);
        self.shared.with(|c, now| c.drop_end(now, conn, end));
    }
}
