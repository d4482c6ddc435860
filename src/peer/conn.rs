//! The async connection layer (BEP 3 handshake, BEP 10 extended handshake, framed messages)
//! over [`crate::net::Stream`]. The metadata tasks built on it (BEP 9 fetch across many
//! peers, a minimal metadata server) live in `session::metadata`.
//!
//! All waiting is `tokio::time`, all sockets come from [`Net`], so the same code runs on the
//! simulated network. The protocol decisions live in the pure types ([`Decoder`]); this file
//! only moves bytes and events between them and the sockets.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::{timeout, Instant};

use super::extension::{ExtHandshake, HANDSHAKE_ID};
use super::handshake::{self, Handshake, HANDSHAKE_LEN, PREFIX_LEN};
use super::mse::{self, Encryption, MseError, MsePolicy, PeerStream};
use super::wire::{self, Decoder, Message};
use super::PeerError;
use crate::id::{InfoHash, PeerId};
use crate::net::{Net, Stream, Transport};

/// Messages that arrive before the extended handshake and are kept for the caller.
const MAX_PENDING: usize = 64;
/// Bytes asked of the socket per read when no larger message is in progress. Large, so one
/// read on a fast link brings in a dozen 16 KiB blocks that go to the torrent actor as one
/// batch (see `session::peer_task`); the buffer is reused once those blocks are consumed.
const READ_CHUNK: usize = 256 * 1024;
/// Smallest read size: one 16 KiB block with its header. The read size doubles while reads
/// fill it and halves when they do not, so only busy connections hold READ_CHUNK.
const MIN_READ: usize = 16 * 1024 + 13;

/// Raise `SO_RCVLOWAT` only when at least this many requested bytes are still to come.
const LOWAT_MIN: u64 = 64 * 1024;
/// Highest low-water mark: enough that a sender writing 16 KiB blocks one at a time wakes
/// us once per ~8 blocks, small enough to arrive within well under a millisecond on a fast
/// link (and we only raise it on links whose recent reads were this large).
const LOWAT_MAX: u64 = 128 * 1024;
/// A read waiting on a raised low-water mark gives up after this long and lowers it to 1:
/// whatever is queued (a `choke`, a `reject`, a last block) is then read at once.
const LOWAT_WAIT: Duration = Duration::from_millis(20);
/// After such a give-up, the mark stays at 1 this long (the peer is not sending what we
/// counted on: choked, dropped requests, or slow).
const LOWAT_BACKOFF: Duration = Duration::from_secs(1);

/// Capacity of a pooled receive buffer: a full [`READ_CHUNK`] read after a carried partial
/// block (16 KiB + header).
const POOL_BUF: usize = READ_CHUNK + 32 * 1024;
/// Pooled receive buffers kept while unused (process-wide; 16 x 288 KiB).
const POOL_MAX: usize = 16;
/// Reads of at least this size (busy connections) use pooled buffers.
const POOL_MIN_READ: usize = 64 * 1024;

/// Receive buffers of busy connections, recycled. Piece payloads are handed on as slices of
/// the buffer they were read into (no copy) and keep it alive until their piece is hashed
/// and written; without recycling, every 256 KiB read was a fresh allocation that the
/// allocator soon gave back to the kernel, so each read paid page faults on fresh pages
/// (as much CPU as the copy the slices save).
static RECV_POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// An empty buffer with room for `min` bytes: a pooled one when it fits.
fn recv_buf(min: usize) -> Vec<u8> {
    if (POOL_MIN_READ..=POOL_BUF).contains(&min) {
        let pooled = RECV_POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(v) = pooled {
            return v;
        }
        return Vec::with_capacity(POOL_BUF);
    }
    Vec::with_capacity(min)
}

/// Gives a buffer back to the pool (if it is a pool-sized one and the pool has room).
fn recycle(mut v: Vec<u8>) {
    if v.capacity() == POOL_BUF {
        v.clear();
        let mut pool = RECV_POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(v);
        }
    }
}

/// Does `buf` (a receive buffer, starting at a frame boundary) hold a whole frame, or a
/// length the decoder will refuse?
fn frame_ready(buf: &[u8]) -> bool {
    let Some(l) = buf.get(..4) else {
        return false;
    };
    let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]);
    len > wire::MAX_MESSAGE_LEN || buf.len() >= 4 + len as usize
}

/// A pooled buffer shared by the messages split off it; back to the pool when the last
/// one is dropped.
struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.0));
    }
}

/// Turns a filled receive buffer into the decoder's [`Bytes`]. A pooled buffer that a read
/// filled to less than a quarter is copied out (small) and recycled at once, so a block
/// pins at most 4x its share of a pooled buffer.
fn freeze_recv_buf(v: Vec<u8>) -> Bytes {
    if v.capacity() != POOL_BUF {
        return Bytes::from(v);
    }
    if v.len() < POOL_BUF / 4 {
        let b = Bytes::copy_from_slice(&v);
        recycle(v);
        return b;
    }
    Bytes::from_owner(Pooled(v))
}

/// Reading half: decodes framed messages.
pub struct PeerReader {
    rd: ReadHalf<PeerStream>,
    decoder: Decoder,
    read_size: usize,
    /// `SO_RCVLOWAT` of a real TCP stream (valid while `rd` lives); `None` elsewhere.
    lowat: Option<crate::net::RecvLowat>,
    /// The mark currently set on the socket (1 = the kernel default).
    lowat_now: usize,
    lowat_off_until: Option<Instant>,
    /// The receive buffer being filled, while it holds no complete frame yet (its front
    /// repeats the decoder's pending bytes); empty (no capacity) otherwise.
    acc: Vec<u8>,
}

impl PeerReader {
    /// Next message; cancel-safe (bytes read are kept in the decoder).
    pub async fn recv(&mut self) -> Result<Message, PeerError> {
        self.recv_expecting(0).await
    }

    /// Like [`PeerReader::recv`], told that `expect` payload bytes we requested are still to
    /// come. On a busy TCP link the socket is then not reported readable until a good part
    /// of them is queued (`SO_RCVLOWAT`), so each wake-up reads several blocks instead of
    /// one. Never a stall: the mark is only raised while that many bytes are owed, and a
    /// wait on it is bounded by [`LOWAT_WAIT`], after which it drops back to 1.
    pub async fn recv_expecting(&mut self, expect: u64) -> Result<Message, PeerError> {
        loop {
            if let Some(m) = self.decoder.next_message()? {
                return Ok(m);
            }
            if self.acc.capacity() == 0 {
                // A fresh receive buffer: the partial message first (copied once), then
                // the reads. The old one stays alive only through the blocks split off it.
                let carry = self.decoder.buffered();
                self.acc = recv_buf(carry + self.read_size.max(self.decoder.missing()));
                self.acc.extend_from_slice(self.decoder.pending());
            }
            let target = self.lowat_target(expect);
            if let Some(h) = self.lowat {
                if target != self.lowat_now {
                    match h.set(target) {
                        Ok(()) => self.lowat_now = target,
                        // Not supported here: stop trying.
                        Err(_) => self.lowat = None,
                    }
                }
            }
            let n = if self.lowat_now > 1 {
                match timeout(LOWAT_WAIT, self.rd.read_buf(&mut self.acc)).await {
                    Ok(r) => r?,
                    Err(_) => {
                        if let Some(h) = self.lowat {
                            // Lowering the mark makes the kernel report what is queued.
                            let _ = h.set(1);
                        }
                        self.lowat_now = 1;
                        self.lowat_off_until = Some(Instant::now() + LOWAT_BACKOFF);
                        continue;
                    }
                }
            } else {
                self.rd.read_buf(&mut self.acc).await?
            };
            if n == 0 {
                return Err(PeerError::Closed);
            }
            // Hand the buffer to the decoder only once it holds a whole frame (or a bad
            // length, which the decoder reports): a message dribbled in over many reads
            // fills one buffer in place instead of being copied into a new one per read.
            if frame_ready(&self.acc) {
                self.decoder
                    .set_buffer(freeze_recv_buf(std::mem::take(&mut self.acc)));
            }
            self.read_size = if n >= self.read_size {
                (self.read_size * 2).min(READ_CHUNK)
            } else {
                (self.read_size / 2).max(MIN_READ)
            };
        }
    }

    /// The low-water mark for the next wait: 1 unless this is a real TCP stream whose
    /// recent reads were large (`read_size`) and at least [`LOWAT_MIN`] requested bytes
    /// beyond what is already buffered are owed.
    fn lowat_target(&mut self, expect: u64) -> usize {
        if self.lowat.is_none() || expect < LOWAT_MIN {
            return 1;
        }
        if let Some(t) = self.lowat_off_until {
            if Instant::now() < t {
                return 1;
            }
            self.lowat_off_until = None;
        }
        let have = if self.acc.is_empty() {
            self.decoder.buffered()
        } else {
            self.acc.len()
        };
        let coming = expect.saturating_sub(have as u64);
        if coming < LOWAT_MIN || (self.read_size as u64) < LOWAT_MIN {
            return 1;
        }
        // Two levels only, so the mark is not reset on every read.
        let cap = coming.min(self.read_size as u64);
        if cap >= LOWAT_MAX {
            LOWAT_MAX as usize
        } else {
            LOWAT_MIN as usize
        }
    }

    /// The next message if it is already fully buffered (no I/O). Lets the caller take
    /// everything one socket read brought in and hand it on as one batch.
    pub fn try_next(&mut self) -> Result<Option<Message>, PeerError> {
        self.decoder.next_message()
    }
}

/// Writing half: encodes messages into a reusable buffer.
pub struct PeerWriter {
    wr: WriteHalf<PeerStream>,
    buf: BytesMut,
}

impl PeerWriter {
    /// Sends one message now (after anything already queued).
    pub async fn send(&mut self, msg: &Message) -> Result<(), PeerError> {
        wire::encode(msg, &mut self.buf);
        self.write_queued().await
    }

    async fn write_queued(&mut self) -> Result<(), PeerError> {
        self.wr.write_all(&self.buf).await?;
        self.buf.clear();
        // An RC4 stream may hold enciphered bytes back until flushed (a no-op otherwise).
        self.wr.flush().await?;
        Ok(())
    }

    /// Sends an extension message with the id the *peer* assigned.
    pub async fn send_extended(&mut self, id: u8, payload: &[u8]) -> Result<(), PeerError> {
        wire::encode_extended(id, payload, &mut self.buf);
        self.write_queued().await
    }

    /// Sends a block without copying `data` into the message buffer.
    pub async fn send_piece(
        &mut self,
        index: u32,
        begin: u32,
        data: &[u8],
    ) -> Result<(), PeerError> {
        wire::encode_piece_header(index, begin, data.len() as u32, &mut self.buf);
        self.write_queued().await?;
        self.wr.write_all(data).await?;
        self.wr.flush().await?;
        Ok(())
    }

    /// Appends a message to the outgoing buffer without writing; see [`PeerWriter::flush`].
    /// Batching many small messages (and 16 KiB blocks) into one write saves syscalls on
    /// fast links.
    pub fn queue(&mut self, msg: &Message) {
        wire::encode(msg, &mut self.buf);
    }

    /// Appends a `piece` message carrying `data` to the outgoing buffer.
    pub fn queue_piece(&mut self, index: u32, begin: u32, data: &[u8]) {
        wire::encode_piece_header(index, begin, data.len() as u32, &mut self.buf);
        self.buf.extend_from_slice(data);
    }

    /// Writes `data` as it is (already framed, e.g. a batch of `piece` messages built by
    /// the caller), after anything queued.
    pub async fn write_framed(&mut self, data: &[u8]) -> Result<(), PeerError> {
        if !self.buf.is_empty() {
            self.write_queued().await?;
        }
        self.wr.write_all(data).await?;
        self.wr.flush().await?;
        Ok(())
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.buf.len()
    }

    /// Writes everything queued in one go.
    pub async fn flush(&mut self) -> Result<(), PeerError> {
        self.wr.write_all(&self.buf).await?;
        self.buf.clear();
        self.wr.flush().await?;
        Ok(())
    }
}

/// An established connection: handshake done, framed reader and writer ready.
pub struct PeerConn {
    pub addr: SocketAddr,
    /// The peer's handshake (its reserved bits and peer id).
    pub remote: Handshake,
    /// TCP or QUIC.
    pub transport: crate::net::Transport,
    /// Whether the stream is RC4-enciphered (MSE/PE selected RC4).
    pub encrypted: bool,
    /// Whether the connection began with an MSE/PE handshake (RC4 or plaintext after it).
    pub mse: bool,
    pub reader: PeerReader,
    pub writer: PeerWriter,
    /// Messages received while waiting for the extended handshake, delivered first by
    /// [`PeerConn::recv`].
    pending: VecDeque<Message>,
    /// The peer's extended handshake when it was exchanged already: a connection handed
    /// over by the metadata fetch (`session::metadata::HandedConn`).
    ext_done: Option<ExtHandshake>,
    /// The torrent's piece count once known ([`PeerConn::set_piece_count`]): messages are
    /// then checked as they arrive, even while kept for later.
    piece_count: Option<u32>,
}

async fn read_exact_timed(
    s: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
    t: Duration,
) -> Result<(), PeerError> {
    match timeout(t, s.read_exact(buf)).await {
        Err(_) => Err(PeerError::Timeout("waiting for handshake")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(PeerError::Closed),
        Ok(r) => r.map(|_| ()).map_err(PeerError::from),
    }
}

impl PeerConn {
    fn new(stream: PeerStream, addr: SocketAddr, remote: Handshake) -> Self {
        let transport = stream.transport();
        let encrypted = stream.is_rc4();
        let mse = stream.is_mse();
        let lowat = stream.recv_lowat();
        let (rd, wr) = tokio::io::split(stream);
        PeerConn {
            addr,
            transport,
            encrypted,
            mse,
            remote,
            reader: PeerReader {
                rd,
                decoder: Decoder::new(),
                read_size: MIN_READ,
                lowat,
                lowat_now: 1,
                lowat_off_until: None,
                acc: Vec::new(),
            },
            writer: PeerWriter {
                wr,
                buf: BytesMut::with_capacity(256),
            },
            pending: VecDeque::new(),
            ext_done: None,
            piece_count: None,
        }
    }

    /// Connects (bounded by `connect_timeout`) and performs the handshake (bounded by
    /// `handshake_timeout`); checks the info-hash and that we didn't reach ourselves.
    pub async fn connect(
        net: &Net,
        addr: SocketAddr,
        info_hash: InfoHash,
        our_id: PeerId,
        connect_timeout: Duration,
        handshake_timeout: Duration,
    ) -> Result<Self, PeerError> {
        let s = timeout(connect_timeout, net.connect(addr))
            .await
            .map_err(|_| PeerError::Timeout("connecting"))??;
        Self::handshake_outgoing(s, addr, info_hash, our_id, handshake_timeout).await
    }

    /// The outgoing BitTorrent handshake on an already connected stream (TCP or QUIC).
    pub async fn handshake_outgoing(
        s: Stream,
        addr: SocketAddr,
        info_hash: InfoHash,
        our_id: PeerId,
        handshake_timeout: Duration,
    ) -> Result<Self, PeerError> {
        Self::finish_outgoing(s.into(), addr, info_hash, our_id, handshake_timeout, false).await
    }

    /// Connects over TCP and runs the MSE/PE handshake as the initiator (offering the
    /// methods `policy` allows), our BitTorrent handshake riding in its initial payload;
    /// then reads the peer's handshake through the negotiated stream. Failures before the
    /// BitTorrent handshake are [`PeerError::Encryption`] (the dialler may retry those in
    /// plaintext).
    pub async fn connect_encrypted(
        net: &Net,
        addr: SocketAddr,
        info_hash: InfoHash,
        our_id: PeerId,
        policy: &MsePolicy,
        connect_timeout: Duration,
        handshake_timeout: Duration,
    ) -> Result<Self, PeerError> {
        let s = timeout(connect_timeout, net.connect(addr))
            .await
            .map_err(|_| PeerError::Timeout("connecting"))??;
        Self::handshake_outgoing_encrypted(s, addr, info_hash, our_id, policy, handshake_timeout)
            .await
    }

    /// The MSE/PE initiator's handshake, then the BitTorrent one, on a connected stream
    /// (TCP or uTP).
    pub async fn handshake_outgoing_encrypted(
        s: Stream,
        addr: SocketAddr,
        info_hash: InfoHash,
        our_id: PeerId,
        policy: &MsePolicy,
        handshake_timeout: Duration,
    ) -> Result<Self, PeerError> {
        let start = Instant::now();
        let ours = Handshake::new(info_hash, our_id).encode();
        let initiator = policy.initiator(info_hash, &ours);
        let ps = mse::stream::initiate(s, initiator, start + handshake_timeout).await?;
        let left = handshake_timeout.saturating_sub(start.elapsed());
        Self::finish_outgoing(ps, addr, info_hash, our_id, left, true).await
    }

    /// Sends our handshake (unless it went out already, as MSE's initial payload) and
    /// checks the peer's.
    async fn finish_outgoing(
        mut s: PeerStream,
        addr: SocketAddr,
        info_hash: InfoHash,
        our_id: PeerId,
        handshake_timeout: Duration,
        sent: bool,
    ) -> Result<Self, PeerError> {
        if !sent {
            s.write_all(&Handshake::new(info_hash, our_id).encode())
                .await?;
            s.flush().await?;
        }
        let mut b = [0u8; HANDSHAKE_LEN];
        read_exact_timed(&mut s, &mut b, handshake_timeout).await?;
        let remote = Handshake::parse(&b)?;
        if remote.info_hash != info_hash {
            return Err(PeerError::InfoHashMismatch {
                expected: info_hash,
                got: remote.info_hash,
            });
        }
        if remote.peer_id == our_id {
            return Err(PeerError::SelfConnection);
        }
        Ok(Self::new(s, addr, remote))
    }

    /// Answers an incoming plaintext connection: reads the peer's info-hash, accepts it
    /// only if `known` says we have that torrent, then replies with our handshake.
    pub async fn accept(
        s: Stream,
        addr: SocketAddr,
        our_id: PeerId,
        known: impl Fn(&InfoHash) -> bool,
        handshake_timeout: Duration,
    ) -> Result<Self, PeerError> {
        Self::accept_on(s.into(), addr, our_id, known, handshake_timeout).await
    }

    /// Answers an incoming connection of any kind under the encryption policy: over TCP the
    /// first bytes tell a plaintext handshake from MSE/PE (whose obfuscated info-hash may
    /// name any of `torrents()`); `require` refuses plaintext, `off` refuses MSE. QUIC
    /// (encrypted by TLS) is always answered in plaintext.
    pub async fn accept_any(
        mut s: Stream,
        addr: SocketAddr,
        our_id: PeerId,
        policy: &MsePolicy,
        torrents: impl Fn() -> Vec<InfoHash>,
        handshake_timeout: Duration,
    ) -> Result<Self, PeerError> {
        let known = |ih: &InfoHash| torrents().contains(ih);
        if s.transport() == Transport::Quic {
            return Self::accept_on(s.into(), addr, our_id, known, handshake_timeout).await;
        }
        let start = Instant::now();
        let deadline = start + handshake_timeout;
        let (ps, skey) = match mse::stream::sniff(&mut s, deadline).await? {
            mse::stream::Incoming::Plaintext(_) if policy.mode == Encryption::Require => {
                return Err(MseError::PlaintextRefused.into());
            }
            mse::stream::Incoming::Plaintext(head) => (PeerStream::with_head(s, head), None),
            mse::stream::Incoming::Encrypted(_) if policy.mode == Encryption::Off => {
                return Err(MseError::EncryptedRefused.into());
            }
            mse::stream::Incoming::Encrypted(head) => {
                let responder = policy.responder(torrents());
                let (ps, ih) = mse::stream::respond(s, &head, responder, deadline).await?;
                (ps, Some(ih))
            }
        };
        let left = handshake_timeout.saturating_sub(start.elapsed());
        // After MSE the BitTorrent handshake must name the torrent the MSE one did.
        let fits = |ih: &InfoHash| skey.is_none_or(|k| k == *ih) && known(ih);
        Self::accept_on(ps, addr, our_id, fits, left).await
    }

    async fn accept_on(
        mut s: PeerStream,
        addr: SocketAddr,
        our_id: PeerId,
        known: impl Fn(&InfoHash) -> bool,
        handshake_timeout: Duration,
    ) -> Result<Self, PeerError> {
        let mut prefix = [0u8; PREFIX_LEN];
        read_exact_timed(&mut s, &mut prefix, handshake_timeout).await?;
        let (reserved, info_hash) = handshake::parse_prefix(&prefix)?;
        if !known(&info_hash) {
            return Err(PeerError::UnknownInfoHash(info_hash));
        }
        s.write_all(&Handshake::new(info_hash, our_id).encode())
            .await?;
        s.flush().await?;
        let mut id = [0u8; 20];
        read_exact_timed(&mut s, &mut id, handshake_timeout).await?;
        let remote = Handshake {
            reserved,
            info_hash,
            peer_id: crate::id::Id20(id),
        };
        if remote.peer_id == our_id {
            return Err(PeerError::SelfConnection);
        }
        Ok(Self::new(s, addr, remote))
    }

    /// Whether both sides negotiated the extension protocol (BEP 10).
    pub fn extensions(&self) -> bool {
        self.remote.reserved.extension_protocol()
    }

    /// The torrent has `n` pieces: checks the messages already kept (a connection handed
    /// over by the metadata fetch, which could not check them) and from now on every one
    /// [`PeerConn::exchange_ext_handshake`] keeps, with [`crate::peer::validate`]. BEP 3: a
    /// bitfield of the wrong length or with spare bits set drops the connection; checking
    /// only once the message is handed on left such a peer connected for the whole wait
    /// for its extended handshake (10 s).
    pub fn set_piece_count(&mut self, n: u32) -> Result<(), PeerError> {
        self.piece_count = Some(n);
        self.pending
            .iter()
            .try_for_each(|m| crate::peer::validate(m, n))
    }

    /// Sends our extended handshake and waits (bounded) for the peer's. Other messages
    /// received meanwhile are kept (up to [`MAX_PENDING`]) for [`PeerConn::recv`]; with a
    /// piece count set ([`PeerConn::set_piece_count`]) an invalid one ends the wait with
    /// its error.
    pub async fn exchange_ext_handshake(
        &mut self,
        ours: &ExtHandshake,
        wait: Duration,
    ) -> Result<ExtHandshake, PeerError> {
        if !self.extensions() {
            return Err(PeerError::BadExtension("peer lacks the extension protocol"));
        }
        self.writer
            .send_extended(HANDSHAKE_ID, &ours.encode())
            .await?;
        let deadline = Instant::now() + wait;
        loop {
            let m = tokio::time::timeout_at(deadline, self.reader.recv())
                .await
                .map_err(|_| PeerError::Timeout("waiting for extended handshake"))??;
            match m {
                Message::Extended {
                    id: HANDSHAKE_ID,
                    payload,
                } => return ExtHandshake::decode(&payload),
                other => {
                    if let Some(n) = self.piece_count {
                        crate::peer::validate(&other, n)?;
                    }
                    if self.pending.len() >= MAX_PENDING {
                        return Err(PeerError::BadExtension("no extended handshake"));
                    }
                    self.pending.push_back(other);
                }
            }
        }
    }

    /// Next message (pending ones first).
    pub async fn recv(&mut self) -> Result<Message, PeerError> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(m);
        }
        self.reader.recv().await
    }

    pub async fn send(&mut self, msg: &Message) -> Result<(), PeerError> {
        self.writer.send(msg).await
    }

    /// The peer's extended handshake if it was exchanged before this connection was handed
    /// over (taken: the next call returns `None`).
    pub fn take_ext_done(&mut self) -> Option<ExtHandshake> {
        self.ext_done.take()
    }

    /// The peer's extended handshake if it was exchanged before this connection was handed
    /// over (left in place).
    pub fn ext_done(&self) -> Option<&ExtHandshake> {
        self.ext_done.as_ref()
    }

    /// Records the extended handshake exchanged before the hand-over (see
    /// [`PeerConn::take_ext_done`]).
    pub fn set_ext_done(&mut self, theirs: ExtHandshake) {
        self.ext_done = Some(theirs);
    }

    /// Messages received and kept for whoever reads the connection next (delivered first by
    /// [`PeerConn::recv`]); the metadata fetch keeps what a swarm needs here.
    pub fn pending_mut(&mut self) -> &mut VecDeque<Message> {
        &mut self.pending
    }

    /// Splits into independently usable halves (pending messages are returned too).
    pub fn into_parts(self) -> (PeerReader, PeerWriter, Vec<Message>) {
        (self.reader, self.writer, self.pending.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Net;

    /// A real loopback TCP pair: our reader, and the raw other end.
    async fn pair() -> (PeerReader, Stream) {
        let net = Net::Tokio;
        let l = net.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(net.connect(addr), l.accept());
        let c = c.unwrap();
        let (s, _) = s.unwrap();
        let remote = Handshake::new(crate::id::Id20([1; 20]), crate::id::Id20([2; 20]));
        (PeerConn::new(c.into(), addr, remote).reader, s)
    }

    fn piece(index: u32, len: usize) -> Vec<u8> {
        let mut out = BytesMut::new();
        wire::encode(
            &Message::Piece {
                index,
                begin: 0,
                data: Bytes::from(vec![index as u8; len]),
            },
            &mut out,
        );
        out.to_vec()
    }

    #[tokio::test]
    async fn raised_low_water_mark_never_hides_a_short_message() {
        let (mut r, mut s) = pair().await;
        assert!(r.lowat.is_some(), "real TCP streams can batch wake-ups");
        // Warm up: large reads make the reader willing to raise the mark.
        for i in 0..40u32 {
            s.write_all(&piece(i, 16 * 1024)).await.unwrap();
        }
        for i in 0..40u32 {
            let m = r.recv().await.unwrap();
            assert!(matches!(m, Message::Piece { index, .. } if index == i));
        }
        // We claim 1 MiB is owed, but the peer only sends a choke (it dropped our requests),
        // after we are already waiting.
        let t0 = std::time::Instant::now();
        let (m, s) = tokio::join!(
            timeout(Duration::from_secs(2), r.recv_expecting(1 << 20)),
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                s.write_all(&[0, 0, 0, 1, wire::ID_CHOKE]).await.unwrap();
                s
            }
        );
        let mut s = s;
        let m = m
            .expect("the choke must be seen, not wait for a low-water mark")
            .unwrap();
        assert_eq!(m, Message::Choke);
        // It waited on a raised mark (the bounded wait), and not for long.
        assert!(t0.elapsed() >= LOWAT_WAIT, "{:?}", t0.elapsed());
        assert!(t0.elapsed() < Duration::from_millis(500));
        // The mark is back at 1 (and stays there a while): small messages arrive at once.
        assert_eq!(r.lowat_now, 1);
        s.write_all(&[0, 0, 0, 1, wire::ID_UNCHOKE]).await.unwrap();
        let m = timeout(Duration::from_millis(15), r.recv_expecting(1 << 20))
            .await
            .expect("no low-water wait during the back-off")
            .unwrap();
        assert_eq!(m, Message::Unchoke);
    }

    #[tokio::test]
    async fn a_dribbled_block_fills_one_buffer_in_place() {
        let (mut r, mut s) = pair().await;
        let frame = piece(7, 16 * 1024);
        let sender = tokio::spawn(async move {
            for c in frame.chunks(1000) {
                s.write_all(c).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            s
        });
        // Peek at the buffer being filled between reads: it is the same allocation
        // throughout (no copy of what came so far per read).
        let mut bufs = std::collections::BTreeSet::new();
        let m = loop {
            tokio::select! {
                biased;
                m = r.recv() => break m.unwrap(),
                _ = tokio::time::sleep(Duration::from_micros(300)) => {
                    if r.acc.capacity() > 0 {
                        bufs.insert(r.acc.as_ptr() as usize);
                    }
                }
            }
        };
        let Message::Piece { index, data, .. } = m else {
            panic!("expected a piece");
        };
        assert_eq!(index, 7);
        assert!(data.iter().all(|&b| b == 7));
        assert!(
            bufs.len() <= 1,
            "{} receive buffers for one block",
            bufs.len()
        );
        drop(sender.await.unwrap());
    }

    #[tokio::test]
    async fn blocks_split_across_reads_decode_intact() {
        let (mut r, mut s) = pair().await;
        let n = 64u32;
        let sender = tokio::spawn(async move {
            let mut all = Vec::new();
            for i in 0..n {
                all.extend_from_slice(&piece(i, 16 * 1024));
            }
            // Odd-sized writes, so frames straddle reads and pooled buffers.
            for c in all.chunks(7_777) {
                s.write_all(c).await.unwrap();
            }
            s
        });
        let mut kept = Vec::new();
        for i in 0..n {
            let m = r
                .recv_expecting(u64::from(n - i) * 16 * 1024)
                .await
                .unwrap();
            let Message::Piece { index, data, .. } = m else {
                panic!("expected a piece");
            };
            assert_eq!(index, i);
            // Kept alive past later reads (as a piece in progress keeps its blocks).
            kept.push(data);
        }
        for (i, d) in kept.iter().enumerate() {
            assert_eq!(d.len(), 16 * 1024);
            assert!(d.iter().all(|&b| b == i as u8), "block {i} corrupted");
        }
        drop(sender.await.unwrap());
    }
}
