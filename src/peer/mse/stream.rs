//! [`PeerStream`]: the byte stream a peer connection runs on, a [`Stream`] with the bytes a
//! handshake read ahead put back in front and, when MSE selected RC4, RC4 both ways. And the
//! async drivers that run the pure handshakes of [`super::handshake`] on a socket, every
//! wait bounded by the handshake's deadline.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{timeout_at, Instant};

use super::handshake::{Ciphers, Done, Initiator, Responder};
use super::MseError;
use crate::id::InfoHash;
use crate::net::{RecvLowat, Stream, Transport};

/// Bytes enciphered per `poll_write` at most (one socket write's worth).
const WRITE_CHUNK: usize = 256 * 1024;

/// RC4 state of a connection and the enciphered bytes not yet taken by the socket.
struct Cipher {
    c: Ciphers,
    out: Vec<u8>,
    out_pos: usize,
}

/// A peer connection's stream: plaintext, or RC4 in both directions after MSE.
pub struct PeerStream {
    inner: Stream,
    /// Payload bytes read with the handshake (deciphered already): served before the socket.
    head: Vec<u8>,
    head_pos: usize,
    cipher: Option<Box<Cipher>>,
    /// The connection began with an MSE handshake (whatever it selected).
    mse: bool,
}

impl std::fmt::Debug for PeerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerStream")
            .field("inner", &self.inner)
            .field("head", &(self.head.len() - self.head_pos))
            .field("rc4", &self.cipher.is_some())
            .finish()
    }
}

impl From<Stream> for PeerStream {
    fn from(inner: Stream) -> Self {
        PeerStream::with_head(inner, Vec::new())
    }
}

impl PeerStream {
    /// A plaintext stream whose first bytes, `head`, were read from `inner` already.
    pub fn with_head(inner: Stream, head: Vec<u8>) -> Self {
        PeerStream {
            inner,
            head,
            head_pos: 0,
            cipher: None,
            mse: false,
        }
    }

    /// The stream after a finished MSE handshake.
    pub fn after_mse(inner: Stream, done: Done) -> Self {
        PeerStream {
            inner,
            head: done.received,
            head_pos: 0,
            cipher: done.ciphers.map(|c| {
                Box::new(Cipher {
                    c,
                    out: Vec::new(),
                    out_pos: 0,
                })
            }),
            mse: true,
        }
    }

    /// Whether the connection began with an MSE handshake (RC4 or plaintext after it).
    pub fn is_mse(&self) -> bool {
        self.mse
    }

    /// Whether RC4 runs on this stream.
    pub fn is_rc4(&self) -> bool {
        self.cipher.is_some()
    }

    pub fn transport(&self) -> Transport {
        self.inner.transport()
    }

    /// See [`Stream::recv_lowat`]: RC4 keeps byte counts, so the mark means the same.
    pub fn recv_lowat(&self) -> Option<RecvLowat> {
        self.inner.recv_lowat()
    }

    /// Writes what is left of the enciphered buffer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(c) = self.cipher.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while c.out_pos < c.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &c.out[c.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            c.out_pos += n;
        }
        c.out.clear();
        c.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.head_pos < this.head.len() {
            let n = (this.head.len() - this.head_pos).min(buf.remaining());
            buf.put_slice(&this.head[this.head_pos..this.head_pos + n]);
            this.head_pos += n;
            if this.head_pos == this.head.len() {
                this.head = Vec::new();
                this.head_pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(c) = this.cipher.as_mut() {
            c.c.dec.apply(&mut buf.filled_mut()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

/// With RC4, `poll_write` takes the bytes once they are enciphered into the stream's buffer
/// and writes as much as the socket takes; the rest goes out on the next write, flush or
/// shutdown. So writers of a `PeerStream` flush before they wait for the peer (a plain
/// `Stream`'s flush is a no-op).
impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.cipher.is_none() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        ready!(this.poll_drain(cx))?;
        let Some(c) = this.cipher.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let n = buf.len().min(WRITE_CHUNK);
        c.out.extend_from_slice(&buf[..n]);
        c.c.enc.apply(&mut c.out);
        // Start the write now; whatever the socket does not take waits in `out`.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// One of the two roles, for the driver.
trait Machine {
    fn take_output(&mut self) -> Vec<u8>;
    fn take_done(&mut self) -> Option<Done>;
    fn feed(&mut self, data: &[u8]) -> Result<(), MseError>;
}

impl Machine for Initiator {
    fn take_output(&mut self) -> Vec<u8> {
        Initiator::take_output(self)
    }
    fn take_done(&mut self) -> Option<Done> {
        Initiator::take_done(self)
    }
    fn feed(&mut self, data: &[u8]) -> Result<(), MseError> {
        Initiator::feed(self, data)
    }
}

impl Machine for Responder {
    fn take_output(&mut self) -> Vec<u8> {
        Responder::take_output(self)
    }
    fn take_done(&mut self) -> Option<Done> {
        Responder::take_done(self)
    }
    fn feed(&mut self, data: &[u8]) -> Result<(), MseError> {
        Responder::feed(self, data)
    }
}

/// Sends what the machine queued and feeds it what arrives until it is done. Each step's
/// wait for the peer ends at `deadline`.
async fn drive(s: &mut Stream, m: &mut impl Machine, deadline: Instant) -> Result<Done, MseError> {
    let mut buf = vec![0u8; 2048];
    loop {
        let out = m.take_output();
        if !out.is_empty() {
            match timeout_at(deadline, s.write_all(&out)).await {
                Err(_) => return Err(MseError::Timeout),
                Ok(Err(e)) if hung_up(&e) => return Err(MseError::Closed),
                Ok(r) => r?,
            }
        }
        if let Some(done) = m.take_done() {
            return Ok(done);
        }
        let n = match timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Err(MseError::Timeout),
            // A reset is how a peer that refuses MSE usually hangs up (it closed with our
            // unread key in its buffer): report it as the hang-up it is.
            Ok(Err(e)) if hung_up(&e) => return Err(MseError::Closed),
            Ok(r) => r?,
        };
        if n == 0 {
            return Err(MseError::Closed);
        }
        m.feed(&buf[..n])?;
    }
}

fn hung_up(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// The dialling side's MSE handshake on a connected stream; `initiator` carries the torrent,
/// the offered methods and the initial payload.
pub async fn initiate(
    mut s: Stream,
    mut initiator: Initiator,
    deadline: Instant,
) -> Result<PeerStream, MseError> {
    let done = drive(&mut s, &mut initiator, deadline).await?;
    Ok(PeerStream::after_mse(s, done))
}

/// The answering side's MSE handshake; `head` is what was read to tell MSE from plaintext
/// (the first bytes of the peer's public key). Returns the stream and the torrent the
/// initiator asked for.
pub async fn respond(
    mut s: Stream,
    head: &[u8],
    mut responder: Responder,
    deadline: Instant,
) -> Result<(PeerStream, InfoHash), MseError> {
    responder.feed(head)?;
    let done = drive(&mut s, &mut responder, deadline).await?;
    let info_hash = done.info_hash;
    Ok((PeerStream::after_mse(s, done), info_hash))
}

/// Bytes read from an incoming stream to tell a plaintext BitTorrent handshake
/// (`\x13BitTorrent protocol`) from MSE (a 96-byte public key).
pub const SNIFF_LEN: usize = 20;

/// What an incoming connection starts with.
pub enum Incoming {
    /// `\x13BitTorrent protocol`: the bytes read, to be put back in front.
    Plaintext(Vec<u8>),
    /// Anything else: the first bytes of an MSE public key.
    Encrypted(Vec<u8>),
}

/// Reads the first [`SNIFF_LEN`] bytes of an incoming stream (bounded by `deadline`).
pub async fn sniff(s: &mut Stream, deadline: Instant) -> Result<Incoming, MseError> {
    let mut b = vec![0u8; SNIFF_LEN];
    match timeout_at(deadline, s.read_exact(&mut b)).await {
        Err(_) => return Err(MseError::Timeout),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(MseError::Closed),
        Ok(r) => r?,
    };
    Ok(if &b[..] == crate::peer::handshake::PROTOCOL {
        Incoming::Plaintext(b)
    } else {
        Incoming::Encrypted(b)
    })
}
