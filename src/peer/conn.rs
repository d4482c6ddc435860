//! The async connection layer (BEP 3 handshake, BEP 10 extended handshake, framed messages)
//! over [`crate::net::Stream`], plus the two metadata tasks built on it: the fetcher
//! ([`fetch_metadata`], BEP 9 across many peers) and a minimal metadata server
//! ([`serve_metadata`]).
//!
//! All waiting is `tokio::time`, all sockets come from [`Net`], so the same code runs on the
//! simulated network. The protocol decisions live in the pure types ([`MetadataFetch`],
//! [`Decoder`]); this file only moves bytes and events between them and the sockets.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use super::extension::{ExtHandshake, HANDSHAKE_ID, UT_METADATA, UT_METADATA_ID, UT_PEX_ID};
use super::handshake::{self, Handshake, HANDSHAKE_LEN, PREFIX_LEN};
use super::metadata::{serve_request, MetadataFetch, MetadataMsg, Outcome};
use super::pex::PexMsg;
use super::wire::{self, Decoder, Message};
use super::PeerError;
use crate::id::{InfoHash, PeerId};
use crate::net::{Listener, Net, Stream};

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
    rd: ReadHalf<Stream>,
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
    wr: WriteHalf<Stream>,
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
    /// TCP or QUIC (issue 9).
    pub transport: crate::net::Transport,
    pub reader: PeerReader,
    pub writer: PeerWriter,
    /// Messages received while waiting for the extended handshake, delivered first by
    /// [`PeerConn::recv`].
    pending: VecDeque<Message>,
    /// The peer's extended handshake when it was exchanged already: a connection handed
    /// over by the metadata fetch (see [`HandedConn`]).
    ext_done: Option<ExtHandshake>,
    /// The torrent's piece count once known ([`PeerConn::set_piece_count`]): messages are
    /// then checked as they arrive, even while kept for later.
    piece_count: Option<u32>,
}

async fn read_exact_timed(s: &mut Stream, buf: &mut [u8], t: Duration) -> Result<(), PeerError> {
    match timeout(t, s.read_exact(buf)).await {
        Err(_) => Err(PeerError::Timeout("waiting for handshake")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(PeerError::Closed),
        Ok(r) => r.map(|_| ()).map_err(PeerError::from),
    }
}

impl PeerConn {
    fn new(stream: Stream, addr: SocketAddr, remote: Handshake) -> Self {
        let transport = stream.transport();
        let lowat = stream.recv_lowat();
        let (rd, wr) = tokio::io::split(stream);
        PeerConn {
            addr,
            transport,
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
        mut s: Stream,
        addr: SocketAddr,
        info_hash: InfoHash,
        our_id: PeerId,
        handshake_timeout: Duration,
    ) -> Result<Self, PeerError> {
        s.write_all(&Handshake::new(info_hash, our_id).encode())
            .await?;
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

    /// Answers an incoming connection: reads the peer's info-hash, accepts it only if
    /// `known` says we have that torrent, then replies with our handshake.
    pub async fn accept(
        mut s: Stream,
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

    /// Splits into independently usable halves (pending messages are returned too).
    pub fn into_parts(self) -> (PeerReader, PeerWriter, Vec<Message>) {
        (self.reader, self.writer, self.pending.into())
    }
}

/// Tuning of [`fetch_metadata`].
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Connections open at once (connecting + connected).
    pub max_peers: usize,
    /// Connections still connecting/handshaking at once.
    pub max_half_open: usize,
    pub connect_timeout: Duration,
    /// Handshake and extended handshake.
    pub handshake_timeout: Duration,
    /// A metadata piece not delivered in this time is asked of another peer.
    pub piece_timeout: Duration,
    /// Give up after this long.
    pub timeout: Duration,
    /// Our listen port, advertised in the extended handshake.
    pub listen_port: Option<u16>,
    /// Most candidate addresses queued (further ones are dropped until the queue drains).
    pub max_candidates: usize,
    /// Return the open connections with the metadata ([`Fetched::conns`]) instead of
    /// closing them: a session downloads over them.
    pub hand_over: bool,
    /// Live counters for a progress display (`None`: nobody watches).
    pub status: Option<Arc<FetchStatus>>,
}

/// What a running metadata fetch has done so far, for a progress display: written by the
/// fetch loop, read by whoever shows progress.
#[derive(Debug, Default)]
pub struct FetchStatus {
    /// Peers dialled (or that dialled us) so far.
    pub tried: AtomicUsize,
    /// Peers connected now that can serve the metadata.
    pub connected: AtomicUsize,
    /// Metadata pieces (16 KiB, BEP 9) received and of how many (0 until a peer says the size).
    pub pieces: AtomicUsize,
    pub pieces_total: AtomicUsize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_peers: 40,
            max_half_open: 16,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            piece_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(60),
            listen_port: None,
            max_candidates: 2000,
            hand_over: false,
            status: None,
        }
    }
}

/// Why [`fetch_metadata`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no metadata for {info_hash} after {secs} s ({tried} peers tried, {connected} connected, {banned} banned for corrupt metadata)")]
    Timeout {
        info_hash: InfoHash,
        secs: u64,
        tried: usize,
        connected: usize,
        banned: usize,
    },
}

/// A connection the metadata fetch hands to the swarm once the metadata is verified
/// ([`FetchConfig::hand_over`]). Both handshakes are done and the messages the peer sent
/// meanwhile (bitfield, haves, unchoke) are pending on it, so downloading starts at once.
/// Closing them instead made every leecher of a flash crowd dial its peers again, and the
/// seed, whose slots the metadata fetches had filled, sent its first piece ~0.4 s later.
pub struct HandedConn {
    /// [`PeerConn::take_ext_done`] gives the peer's extended handshake.
    pub conn: PeerConn,
    /// We dialled it (its address is the peer's listen address).
    pub outgoing: bool,
}

impl std::fmt::Debug for HandedConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandedConn")
            .field("addr", &self.conn.addr)
            .field("outgoing", &self.outgoing)
            .finish()
    }
}

/// A successful fetch and how it went.
#[derive(Debug)]
pub struct Fetched {
    /// The raw info dictionary; its SHA-1 is the info-hash.
    pub info: Vec<u8>,
    /// Addresses we attempted to connect to.
    pub tried: usize,
    /// Peers that completed both handshakes.
    pub connected: usize,
    /// Peers banned for contributing to metadata that failed verification (sorted).
    pub banned: Vec<SocketAddr>,
    /// From the first peer ready to serve metadata to verified metadata.
    pub since_first_peer: Duration,
    /// Open connections, sorted by address, with [`FetchConfig::hand_over`] (else empty).
    pub conns: Vec<HandedConn>,
}

enum Event {
    Ready {
        addr: SocketAddr,
        size: Option<u64>,
        cmd: mpsc::Sender<Cmd>,
    },
    Meta {
        addr: SocketAddr,
        msg: MetadataMsg,
    },
    Pex {
        addrs: Vec<SocketAddr>,
    },
    Closed {
        addr: SocketAddr,
        why: PeerError,
    },
}

/// Fetches the info dictionary for `info_hash` from the peers arriving on `peers`.
pub async fn fetch_metadata(
    net: Net,
    info_hash: InfoHash,
    our_id: PeerId,
    peers: mpsc::Receiver<SocketAddr>,
    cfg: FetchConfig,
) -> Result<Vec<u8>, FetchError> {
    fetch_metadata_stats(net, info_hash, our_id, peers, cfg)
        .await
        .map(|f| f.info)
}

/// [`fetch_metadata`] with statistics (for the CLI and benchmarks).
pub async fn fetch_metadata_stats(
    net: Net,
    info_hash: InfoHash,
    our_id: PeerId,
    peers: mpsc::Receiver<SocketAddr>,
    cfg: FetchConfig,
) -> Result<Fetched, FetchError> {
    let (_none, incoming) = mpsc::channel(1);
    let tcp = crate::quic::Dialer::default();
    fetch_metadata_incoming(net, &tcp, info_hash, our_id, peers, incoming, cfg).await
}

/// [`fetch_metadata_stats`] that also uses connections peers made to us (handshake done):
/// a peer that learnt our address from a tracker often dials us while we dial it, and keeps
/// only one of the two connections, so the incoming one must be able to serve the fetch.
/// `dialer` picks the transport (the session's, so connections it hands over are the ones
/// its swarm would have made).
pub async fn fetch_metadata_incoming(
    net: Net,
    dialer: &crate::quic::Dialer,
    info_hash: InfoHash,
    our_id: PeerId,
    mut peers: mpsc::Receiver<SocketAddr>,
    mut incoming: mpsc::Receiver<PeerConn>,
    cfg: FetchConfig,
) -> Result<Fetched, FetchError> {
    let mut incoming_open = true;
    let start = Instant::now();
    let deadline = start + cfg.timeout;
    let mut fetch = MetadataFetch::new(info_hash, cfg.piece_timeout);
    let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(256);
    let mut tasks = JoinSet::new();
    // Per-connection command senders; `None` while still connecting (half-open).
    let mut active: BTreeMap<SocketAddr, Option<mpsc::Sender<Cmd>>> = BTreeMap::new();
    let mut queued: VecDeque<SocketAddr> = VecDeque::new();
    let mut seen: BTreeSet<SocketAddr> = BTreeSet::new();
    let mut peers_open = true;
    let mut tried = 0usize;
    let mut connected = 0usize;
    let mut first_peer: Option<Instant> = None;
    let mut banned_total: BTreeSet<SocketAddr> = BTreeSet::new();
    // Bound on distinct addresses remembered; beyond it new candidates are ignored.
    let max_seen = cfg.max_candidates * 8;

    let add_candidate =
        |a: SocketAddr, queued: &mut VecDeque<SocketAddr>, seen: &mut BTreeSet<SocketAddr>| {
            if a.port() == 0 || seen.len() >= max_seen || queued.len() >= cfg.max_candidates {
                return;
            }
            if seen.insert(a) {
                queued.push_back(a);
            }
        };

    loop {
        // Launch connections within both limits.
        let half_open = active.values().filter(|v| v.is_none()).count();
        let mut room = cfg
            .max_half_open
            .saturating_sub(half_open)
            .min(cfg.max_peers.saturating_sub(active.len()));
        while room > 0 {
            let Some(addr) = queued.pop_front() else {
                break;
            };
            if fetch.is_banned(&addr) {
                continue;
            }
            room -= 1;
            tried += 1;
            active.insert(addr, None);
            tasks.spawn(fetch_peer_task(
                net.clone(),
                dialer.clone(),
                addr,
                info_hash,
                our_id,
                cfg.clone(),
                ev_tx.clone(),
            ));
        }

        let wake = fetch.next_deadline().map_or(deadline, |d| d.min(deadline));
        tokio::select! {
            biased;
            ev = ev_rx.recv() => {
                // We hold a sender, so the channel never closes.
                let Some(ev) = ev else { continue };
                let now = Instant::now();
                match ev {
                    Event::Ready { addr, size, cmd } => {
                        match fetch.add_peer(addr, size) {
                            Ok(()) => {
                                connected += 1;
                                first_peer.get_or_insert(now);
                                active.insert(addr, Some(cmd));
                            }
                            Err(e) => {
                                tracing::debug!(%addr, %e, "peer can't serve metadata");
                                active.remove(&addr); // dropping `cmd` ends the task
                            }
                        }
                    }
                    Event::Meta { addr, msg } => match msg {
                        MetadataMsg::Data { piece, total_size, data } => {
                            match fetch.on_data(addr, piece, total_size, data) {
                                Ok(Outcome::Done(info)) => {
                                    let conns = if cfg.hand_over {
                                        collect_handed(&active, &mut ev_rx).await
                                    } else {
                                        Vec::new()
                                    };
                                    return Ok(Fetched {
                                        conns,
                                        info,
                                        tried,
                                        connected,
                                        banned: banned_total.into_iter().collect(),
                                        since_first_peer: first_peer.map_or(Duration::ZERO, |t| now - t),
                                    });
                                }
                                Ok(Outcome::Corrupt { contributors, banned: bad }) => {
                                    tracing::warn!(%info_hash, ?contributors, ?bad, "metadata failed SHA-1");
                                    for a in bad {
                                        banned_total.insert(a);
                                        active.remove(&a);
                                    }
                                }
                                Ok(Outcome::Progress) => {}
                                Err(e) => {
                                    tracing::debug!(%addr, %e, "dropping peer");
                                    fetch.remove_peer(&addr);
                                    active.remove(&addr);
                                }
                            }
                        }
                        MetadataMsg::Reject { piece } => {
                            fetch.on_reject(addr, piece);
                            fetch.remove_peer(&addr);
                            active.remove(&addr);
                        }
                        MetadataMsg::Request { .. } => {}
                    },
                    Event::Pex { addrs } => {
                        for a in addrs {
                            add_candidate(a, &mut queued, &mut seen);
                        }
                    }
                    Event::Closed { addr, why } => {
                        tracing::debug!(%addr, %why, "metadata peer closed");
                        fetch.remove_peer(&addr);
                        active.remove(&addr);
                    }
                }
            }
            a = peers.recv(), if peers_open => match a {
                Some(a) => add_candidate(a, &mut queued, &mut seen),
                None => peers_open = false,
            },
            c = incoming.recv(), if incoming_open => match c {
                Some(c) if active.len() < cfg.max_peers && !active.contains_key(&c.addr)
                    && !fetch.is_banned(&c.addr) => {
                    let addr = c.addr;
                    active.insert(addr, None);
                    let (ev, cfg) = (ev_tx.clone(), cfg.clone());
                    tasks.spawn(async move {
                        let why = match fetch_on_conn(c, &cfg, &ev, false).await {
                            Ok(()) => PeerError::Closed,
                            Err(e) => e,
                        };
                        let _ = ev.send(Event::Closed { addr, why }).await;
                    });
                }
                Some(_) => {} // full or known: dropping it closes it
                None => incoming_open = false,
            },
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline {
                    return Err(FetchError::Timeout {
                        info_hash,
                        secs: cfg.timeout.as_secs(),
                        tried,
                        connected,
                        banned: banned_total.len(),
                    });
                }
                for slow in fetch.poll_timeouts(Instant::now()) {
                    tracing::debug!(%slow, "metadata request timed out");
                    fetch.remove_peer(&slow);
                    active.remove(&slow);
                }
            }
        }
        if let Some(st) = &cfg.status {
            let (have, total) = fetch.progress();
            st.tried.store(tried, Ordering::Relaxed);
            st.connected.store(
                active.values().filter(|c| c.is_some()).count(),
                Ordering::Relaxed,
            );
            st.pieces.store(have, Ordering::Relaxed);
            st.pieces_total.store(total, Ordering::Relaxed);
        }
        // Give every usable peer its share of requests.
        let now = Instant::now();
        for addr in fetch.usable_peers() {
            let Some(Some(tx)) = active.get(&addr) else {
                continue;
            };
            let tx = tx.clone();
            while let Some(piece) = fetch.next_request(addr, now) {
                if tx.try_send(Cmd::Request(piece)).is_err() {
                    // Task gone or backlogged: the request times out and is reassigned.
                    break;
                }
            }
        }
    }
}

/// Commands queued per peer task (requests in flight per peer are at most 8).
const CMD_QUEUE: usize = 16;
/// Messages and bytes kept per connection for the swarm while the metadata is fetched; a
/// peer that says more than that before we can use it is not handed over.
const MAX_HANDED_PENDING: usize = 1024;
const MAX_HANDED_BYTES: usize = 256 << 10;
/// How long the hand-over waits for connection tasks (they answer at once unless a send
/// is stuck on a full socket; those are left to close).
const HAND_OVER_WAIT: Duration = Duration::from_secs(1);

/// What the fetch loop tells a connection task.
enum Cmd {
    /// Ask for this metadata piece.
    Request(u32),
    /// The metadata is verified: send the connection here and end.
    HandOver(mpsc::UnboundedSender<HandedConn>),
}

/// Asks every connection that is ready to hand itself over; collects them, sorted by
/// address so a simulation stays deterministic.
async fn collect_handed(
    active: &BTreeMap<SocketAddr, Option<mpsc::Sender<Cmd>>>,
    ev_rx: &mut mpsc::Receiver<Event>,
) -> Vec<HandedConn> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // A full command queue (requests not yet sent) loses that connection: it closes.
    for cmd in active.values().flatten() {
        let _ = cmd.try_send(Cmd::HandOver(tx.clone()));
    }
    // Connections whose `Ready` is still queued are ready too: ask them as well (a task
    // whose command sender is dropped unasked closes its connection).
    while let Ok(ev) = ev_rx.try_recv() {
        if let Event::Ready { cmd, .. } = ev {
            let _ = cmd.try_send(Cmd::HandOver(tx.clone()));
        }
    }
    drop(tx);
    let until = Instant::now() + HAND_OVER_WAIT;
    let mut out = Vec::new();
    loop {
        tokio::select! {
            biased;
            // `None` once every task has answered or ended.
            c = rx.recv() => match c {
                Some(c) => out.push(c),
                None => break,
            },
            // Keep draining events so no task waits on a full channel instead of answering.
            Some(_) = ev_rx.recv() => {}
            _ = tokio::time::sleep_until(until) => break,
        }
    }
    out.sort_by_key(|h: &HandedConn| h.conn.addr);
    out
}

/// One connection of a metadata fetch: handshakes, then forwards ut_metadata requests from
/// the fetch loop and answers/PEX to it until the loop drops its command sender.
async fn fetch_peer_task(
    net: Net,
    dialer: crate::quic::Dialer,
    addr: SocketAddr,
    info_hash: InfoHash,
    our_id: PeerId,
    cfg: FetchConfig,
    ev: mpsc::Sender<Event>,
) {
    let why = match fetch_peer(&net, &dialer, addr, info_hash, our_id, &cfg, &ev).await {
        Ok(()) => PeerError::Closed,
        Err(e) => e,
    };
    let _ = ev.send(Event::Closed { addr, why }).await;
}

async fn fetch_peer(
    net: &Net,
    dialer: &crate::quic::Dialer,
    addr: SocketAddr,
    info_hash: InfoHash,
    our_id: PeerId,
    cfg: &FetchConfig,
    ev: &mpsc::Sender<Event>,
) -> Result<(), PeerError> {
    let conn = dialer
        .connect(
            net,
            addr,
            info_hash,
            our_id,
            cfg.connect_timeout,
            cfg.handshake_timeout,
        )
        .await?;
    fetch_on_conn(conn, cfg, ev, true).await
}

/// The metadata exchange over an established connection (ours: `outgoing`, or the peer's).
/// Everything else the peer says is kept on the connection for the swarm it may be handed
/// to ([`Cmd::HandOver`]).
async fn fetch_on_conn(
    mut conn: PeerConn,
    cfg: &FetchConfig,
    ev: &mpsc::Sender<Event>,
    outgoing: bool,
) -> Result<(), PeerError> {
    let addr = conn.addr;
    // BEP 6: with the fast extension exactly one of bitfield, have all and have none comes
    // first. We have nothing yet (and the swarm takes a handed connection only then).
    if conn.remote.reserved.fast() {
        conn.writer.send(&Message::HaveNone).await?;
    }
    let ours = ExtHandshake::ours(cfg.listen_port, None, Some(addr.ip()));
    let theirs = conn
        .exchange_ext_handshake(&ours, cfg.handshake_timeout)
        .await?;
    let Some(ut_id) = theirs.id_of(UT_METADATA) else {
        return Err(PeerError::BadExtension("peer lacks ut_metadata"));
    };
    let (tx, mut cmds) = mpsc::channel(CMD_QUEUE);
    if ev
        .send(Event::Ready {
            addr,
            size: theirs.metadata_size,
            cmd: tx,
        })
        .await
        .is_err()
    {
        return Ok(());
    }
    // What the peer says besides metadata is kept for the swarm: only when there is a swarm
    // to hand it to, within bounds, and while the peer said what it has at most once (BEP 3
    // and BEP 6 allow one bitfield, `have all` or `have none`, first).
    let mut keep = cfg.hand_over;
    let mut kept_bytes: usize = conn.pending.iter().map(approx_size).sum();
    let mut have_msgs = conn.pending.iter().filter(|m| is_have_set(m)).count();
    loop {
        if keep
            && (conn.pending.len() > MAX_HANDED_PENDING
                || kept_bytes > MAX_HANDED_BYTES
                || have_msgs > 1)
        {
            keep = false;
            conn.pending.clear();
        }
        tokio::select! {
            biased;
            cmd = cmds.recv() => match cmd {
                None => return Ok(()),
                Some(Cmd::Request(piece)) => {
                    let req = MetadataMsg::Request { piece }.encode();
                    conn.writer.send_extended(ut_id, &req).await?;
                }
                Some(Cmd::HandOver(to)) => {
                    if keep {
                        conn.ext_done = Some(theirs);
                        let _ = to.send(HandedConn { conn, outgoing });
                    }
                    return Ok(());
                }
            },
            m = conn.reader.recv() => match m? {
                Message::Extended { id: UT_METADATA_ID, payload } => {
                    match MetadataMsg::decode(&payload)? {
                        // We have no metadata to give yet.
                        MetadataMsg::Request { piece } => {
                            let rej = MetadataMsg::Reject { piece }.encode();
                            conn.writer.send_extended(ut_id, &rej).await?;
                        }
                        msg => {
                            if ev.send(Event::Meta { addr, msg }).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
                Message::Extended { id: UT_PEX_ID, payload } => {
                    // PEX is advisory: a malformed one is ignored, not fatal. The swarm gets
                    // it too: the peer sends its full list only once.
                    if let Ok(p) = PexMsg::decode(&payload) {
                        if keep {
                            kept_bytes += payload.len();
                            conn.pending.push_back(Message::Extended { id: UT_PEX_ID, payload });
                        }
                        let addrs = p.added.into_iter().map(|(a, _)| a).collect();
                        if ev.send(Event::Pex { addrs }).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                // Nothing was requested or offered yet: these mean nothing to the swarm.
                Message::KeepAlive
                | Message::Request(_)
                | Message::Cancel(_)
                | Message::Piece { .. }
                | Message::Reject(_)
                | Message::Extended { .. } => {}
                // Its pieces and choke state: the swarm needs them (bounded, above).
                other if keep => {
                    kept_bytes += approx_size(&other);
                    have_msgs += usize::from(is_have_set(&other));
                    conn.pending.push_back(other);
                }
                _ => {}
            }
        }
    }
}

/// Bytes a kept message holds, roughly (the payload of those that carry one).
fn approx_size(m: &Message) -> usize {
    match m {
        Message::Bitfield(b) => b.len(),
        Message::Extended { payload, .. } => payload.len(),
        Message::Piece { data, .. } => data.len(),
        _ => 16,
    }
}

/// A message that says which pieces the peer has (BEP 3, BEP 6: once, and first).
fn is_have_set(m: &Message) -> bool {
    matches!(
        m,
        Message::Bitfield(_) | Message::HaveAll | Message::HaveNone
    )
}

/// Serves ut_metadata for one torrent to every peer that connects to `listener`, at most
/// `max_conns` at a time. Runs until the listener fails.
pub async fn serve_metadata(
    listener: Listener,
    info_hash: InfoHash,
    our_id: PeerId,
    info: Bytes,
    max_conns: usize,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(max_conns.max(1)));
    let mut conns = JoinSet::new();
    loop {
        let (stream, addr) = listener.accept().await?;
        // Reap finished connections so the set stays bounded.
        while conns.try_join_next().is_some() {}
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // full: drop the connection
        };
        let info = info.clone();
        conns.spawn(async move {
            let r = serve_metadata_conn(stream, addr, info_hash, our_id, info).await;
            if let Err(e) = r {
                tracing::debug!(%addr, %e, "metadata server connection ended");
            }
            drop(permit);
        });
    }
}

/// Idle time after which the metadata server hangs up.
const SERVE_IDLE: Duration = Duration::from_secs(120);

/// Serves ut_metadata to one incoming connection. `info` is sent as-is (its hash is not
/// checked here, so a test can run a lying peer).
pub async fn serve_metadata_conn(
    stream: Stream,
    addr: SocketAddr,
    info_hash: InfoHash,
    our_id: PeerId,
    info: Bytes,
) -> Result<(), PeerError> {
    let mut conn = PeerConn::accept(
        stream,
        addr,
        our_id,
        |h| *h == info_hash,
        Duration::from_secs(10),
    )
    .await?;
    if conn.remote.reserved.fast() {
        // We hold no pieces, only metadata.
        conn.send(&Message::HaveNone).await?;
    }
    if !conn.extensions() {
        return Err(PeerError::BadExtension("peer lacks the extension protocol"));
    }
    let ours = ExtHandshake::ours(None, Some(info.len() as u64), Some(addr.ip()));
    let theirs = conn
        .exchange_ext_handshake(&ours, Duration::from_secs(10))
        .await?;
    let their_id = theirs.id_of(UT_METADATA);
    loop {
        let m = timeout(SERVE_IDLE, conn.recv())
            .await
            .map_err(|_| PeerError::Timeout("idle"))??;
        if let Message::Extended {
            id: UT_METADATA_ID,
            payload,
        } = m
        {
            if let MetadataMsg::Request { piece } = MetadataMsg::decode(&payload)? {
                let Some(id) = their_id else {
                    return Err(PeerError::BadExtension("request without ut_metadata id"));
                };
                conn.writer
                    .send_extended(id, &serve_request(&info, piece).encode())
                    .await?;
            }
        }
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
        (PeerConn::new(c, addr, remote).reader, s)
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
