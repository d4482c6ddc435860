//! One task pair per connected peer: a reader that decodes messages and a writer that sends
//! them, over an established [`PeerConn`] (BEP 3 wire, BEP 6 Fast, BEP 9 ut_metadata, BEP 10
//! extension protocol, BEP 11 ut_pex, BEP 55 ut_holepunch messages: the actor decides).
//!
//! The torrent actor ([`super::swarm`]) makes every download decision; these tasks only move
//! bytes. Uploads are the exception on purpose: a peer's `request` goes straight from the
//! reader to the writer, which reads the block from storage and sends it while the peer is
//! unchoked. Routing uploads through the actor would put every served block on the actor's
//! queue for no decision it needs to make.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::peer::extension::{
    ExtHandshake, HANDSHAKE_ID, UT_HOLEPUNCH, UT_HOLEPUNCH_ID, UT_METADATA, UT_METADATA_ID, UT_PEX,
    UT_PEX_ID,
};
use crate::peer::holepunch::HolepunchMsg;
use crate::peer::metadata::{serve_request, MetadataMsg};
use crate::peer::pex::FLAG_MF_QUIC;
use crate::peer::wire::{BlockRef as WireBlock, MAX_BLOCK};
use crate::peer::{Message, PeerConn, PeerError, PeerReader, PeerWriter};
use crate::torrent::ratelimit::TokenBucket;
use crate::torrent::storage::Storage;
use crate::torrent::{Bitfield, PeerKey};

/// Requests from one peer we queue for serving; more are ignored (BEP 3 leaves it to us, and
/// we advertise `reqq` in the extended handshake).
pub const MAX_UPLOAD_QUEUE: usize = 500;
/// Blocks read from storage in one blocking call and sent in one socket write.
const SERVE_BATCH: usize = 32;
/// Payload bytes read in one blocking call (bounds the per-peer send buffer).
const SERVE_BATCH_BYTES: usize = 512 * 1024;
/// How long one serve batch may take to write. The writer handles nothing else while a
/// batch is written — not our own requests to this peer, not `choke`, not the peer's
/// `cancel`s — so to a slow peer a 512 KiB batch would hold them for seconds (2.5 s at
/// 200 KiB/s): the batch shrinks to what the link sends in this time (at least one block)
/// and grows back on fast links, where big batches save syscalls.
const SERVE_BATCH_TIME: Duration = Duration::from_millis(50);
/// Messages already decoded from one socket read that go to the actor (or the writer) as
/// one batch: one channel send and one wake-up instead of one per 16 KiB block.
const READ_BATCH: usize = 64;
/// Upload work items (requests, cancels, metadata requests) read but not yet taken by the
/// writer, at most. A peer within our advertised `reqq` never gets near it; beyond it,
/// items are dropped (the peer broke its side of `reqq`). The count, not the number of
/// socket reads they came in, is what is bounded: a bounded channel of batches dropped
/// whole batches when a slow link kept the writer busy while a peer sent its requests one
/// read at a time, and a dropped request is never re-sent (the requester waits for the
/// block until it calls us snubbed, 60 s later).
const MAX_PENDING_UPLOADS: usize = 2 * MAX_UPLOAD_QUEUE;
/// A peer that sends nothing for this long is dropped (BEP 3 keep-alives come every 2 min).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// We send a keep-alive after this long without sending anything.
const KEEPALIVE: Duration = Duration::from_secs(90);
/// Bytes of queued small messages after which the writer stops coalescing and writes.
const MAX_COALESCE: usize = 64 * 1024;

/// What the actor tells a peer's writer.
#[derive(Debug)]
pub enum PeerCmd {
    /// Send these messages in order.
    Send(Vec<Message>),
    /// Stop uploading to the peer (sends `choke`, drops its queued requests).
    Choke,
    /// Start uploading to the peer (sends `unchoke`).
    Unchoke,
    /// Send a ut_pex message (already encoded) if the peer supports it.
    Pex(Vec<u8>),
    /// Send a ut_holepunch message if the peer supports it.
    Holepunch(HolepunchMsg),
    /// Hang up.
    Close,
}

/// What a peer task tells the actor.
#[derive(Debug)]
pub enum PeerEvent {
    /// A message the actor has to act on (everything except uploads and metadata requests).
    Msg(Message),
    /// Several such messages, in order, that arrived in one socket read.
    Batch(Vec<Message>),
    /// Addresses learned from the peer's ut_pex, with their BEP 11 `added.f` flags.
    Pex(Vec<(std::net::SocketAddr, u8)>),
    /// A ut_holepunch message (BEP 55) from the peer.
    Holepunch(HolepunchMsg),
    /// The peer sent its extended handshake again (BEP 10 allows updates; a peer whose
    /// first one came from its metadata fetch does, once it has the torrent): whether it
    /// now announces ut_holepunch.
    ExtUpdate { holepunch: bool },
    /// We sent the peer [`PeerContext::quota`] payload bytes since we last unchoked it
    /// (once per unchoke): the choker may move its slot now instead of at the next tick.
    Quota,
    /// The connection ended.
    Closed(PeerError),
}

/// Counters shared between a peer's tasks and the actor.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Payload bytes we sent this peer.
    pub uploaded: AtomicU64,
}

/// Everything a peer task needs from its torrent.
pub struct PeerContext {
    pub key: PeerKey,
    pub storage: Arc<Storage>,
    /// The raw info dictionary, served over ut_metadata.
    pub info: Bytes,
    pub num_pieces: u32,
    pub counters: Arc<PeerCounters>,
    /// Torrent-wide uploaded payload bytes.
    pub total_uploaded: Arc<AtomicU64>,
    pub up_limit: Arc<Mutex<TokenBucket>>,
    /// Storage reads on tokio's blocking pool (real disks) or inline (in-memory simulation,
    /// where the blocking pool would break determinism).
    pub blocking_io: bool,
    /// Set when the torrent stops: writers stop serving.
    pub stopping: Arc<AtomicBool>,
    /// Our QUIC (UDP) port, advertised as `mf_quic` in the extended handshake.
    pub quic_port: Option<u16>,
    /// QUIC-capable peers learned from PEX flags.
    pub quic_peers: crate::dial::QuicPeers,
    /// BEP 27 private torrent: do not even advertise ut_pex (peers come from trackers only).
    pub private: bool,
    /// Advertise ut_holepunch (BEP 55) and take its messages: we have a uTP socket.
    pub holepunch: bool,
    /// The id the peer takes ut_holepunch on (0: none). Set from its extended handshake,
    /// and again when it re-sends one (the reader sets it, the writer uses it).
    pub their_holepunch: Arc<AtomicU8>,
    /// Payload bytes after an unchoke at which the writer reports [`PeerEvent::Quota`]
    /// (the choker's piece quota).
    pub quota: u64,
    /// Bytes waiting for the disk: the reader reads nothing while the gate is closed.
    pub backlog: Arc<super::backlog::DiskBacklog>,
    /// Where the peer's `yourip` (our address as it sees it, BEP 10) is counted.
    pub reach: Option<Arc<super::reach::Reach>>,
}

/// What we learned from the peer's extended handshake.
#[derive(Debug, Clone, Default)]
pub struct PeerExt {
    pub reqq: Option<u32>,
    pub listen_port: Option<u16>,
    pub pex: bool,
    /// The peer's `mf_quic` (its QUIC UDP port), if it speaks magnetfetch's QUIC.
    pub quic_port: Option<u16>,
    /// It announced ut_holepunch (BEP 55).
    pub holepunch: bool,
}

/// Runs one peer until it closes or is told to. `have` is our bitfield at connection time:
/// sent first (BEP 3 allows a bitfield only right after the handshake); later pieces arrive
/// as `Have` commands in order behind it.
pub async fn run_peer(
    mut conn: PeerConn,
    ctx: PeerContext,
    have: Bitfield,
    our_port: Option<u16>,
    cmd_rx: mpsc::Receiver<PeerCmd>,
    ev_tx: mpsc::Sender<(PeerKey, PeerEvent)>,
    ext_tx: tokio::sync::oneshot::Sender<PeerExt>,
) {
    let key = ctx.key;
    let r = setup(&mut conn, &ctx, &have, our_port).await;
    let theirs = match r {
        Ok(t) => t,
        Err(e) => {
            let _ = ev_tx.send((key, PeerEvent::Closed(e))).await;
            return;
        }
    };
    let ext = PeerExt {
        reqq: theirs.as_ref().and_then(|t| t.reqq),
        listen_port: theirs.as_ref().and_then(|t| t.p),
        pex: theirs.as_ref().and_then(|t| t.id_of(UT_PEX)).is_some(),
        quic_port: theirs.as_ref().and_then(|t| t.mf_quic),
        holepunch: theirs
            .as_ref()
            .and_then(|t| t.id_of(UT_HOLEPUNCH))
            .is_some(),
    };
    let _ = ext_tx.send(ext);
    if let (Some(r), Some(ip)) = (&ctx.reach, theirs.as_ref().and_then(|t| t.yourip)) {
        r.vote(conn.addr.ip(), ip);
    }
    let their_meta = theirs.as_ref().and_then(|t| t.id_of(UT_METADATA));
    let their_pex = theirs.as_ref().and_then(|t| t.id_of(UT_PEX));
    let their_holepunch = ctx.their_holepunch.clone();
    if let Some(id) = theirs.as_ref().and_then(|t| t.id_of(UT_HOLEPUNCH)) {
        their_holepunch.store(id, Ordering::Relaxed);
    }
    let (reader, writer, pending) = conn.into_parts();
    let (up_tx, up_rx) = mpsc::unbounded_channel::<Vec<Upload>>();
    let up_pending = Arc::new(AtomicUsize::new(0));
    let ctx = Arc::new(ctx);
    let owed = Arc::new(AtomicU64::new(0));
    let st = WriterState {
        ev_tx: ev_tx.clone(),
        since_unchoke: None,
        serve_buf: Vec::new(),
        choking: true,
        deferred: None,
        queue: VecDeque::new(),
        batch_bytes: SERVE_BATCH_BYTES / 8,
        their_meta,
        their_pex,
        their_holepunch,
        owed: owed.clone(),
    };
    let mut writer_task = tokio::spawn(write_loop(
        writer,
        ctx.clone(),
        cmd_rx,
        up_rx,
        st,
        up_pending.clone(),
    ));
    // The connection ends with whichever half ends first. The writer ends on `Close` (the
    // actor dropped the peer, or the torrent stopped) and on a write error; the reader alone
    // held the connection open until the peer next sent something it forwards, which a
    // peer waiting for blocks (or sending only keep-alives) never does: a dropped peer stayed
    // connected, and over QUIC it went on counting us as a peer.
    let why = tokio::select! {
        why = read_loop(reader, pending, &ctx, up_tx, &ev_tx, &owed, &up_pending) => why,
        w = &mut writer_task => match w {
            Ok(Err(e)) => e,
            _ => PeerError::Closed,
        },
    };
    writer_task.abort();
    let _ = ev_tx.send((key, PeerEvent::Closed(why))).await;
}

async fn setup(
    conn: &mut PeerConn,
    ctx: &PeerContext,
    have: &Bitfield,
    our_port: Option<u16>,
) -> Result<Option<ExtHandshake>, PeerError> {
    // What the peer sent before we knew the piece count (a handed-over connection) and
    // whatever arrives while we wait for its extended handshake is checked at once.
    conn.set_piece_count(ctx.num_pieces)?;
    let mut ours = ExtHandshake::ours(our_port, Some(ctx.info.len() as u64), Some(conn.addr.ip()));
    if ctx.private {
        ours.m.remove(UT_PEX);
    }
    if ctx.holepunch && !ctx.private {
        ours.m.insert(UT_HOLEPUNCH.to_string(), UT_HOLEPUNCH_ID);
    }
    ours.mf_quic = ctx.quic_port;
    if let Some(theirs) = conn.take_ext_done() {
        // Handed over by the metadata fetch, which told the peer `have none` (or nothing,
        // without the fast extension) and sent a first extended handshake. The swarm takes
        // such a connection only while we have no piece, so what changed is that we can
        // serve the metadata now: BEP 10 lets us send the handshake again to say so.
        conn.writer
            .send_extended(HANDSHAKE_ID, &ours.encode())
            .await?;
        return Ok(Some(theirs));
    }
    let fast = conn.remote.reserved.fast();
    let first = if fast && have.is_full() {
        Message::HaveAll
    } else if fast && have.none() {
        Message::HaveNone
    } else if have.none() {
        Message::KeepAlive
    } else {
        Message::Bitfield(Bytes::copy_from_slice(have.as_bytes()))
    };
    if first != Message::KeepAlive {
        conn.writer.send(&first).await?;
    }
    if !conn.extensions() {
        return Ok(None);
    }
    // A peer that never answers the extended handshake is still a peer for pieces.
    match conn
        .exchange_ext_handshake(&ours, Duration::from_secs(10))
        .await
    {
        Ok(t) => Ok(Some(t)),
        Err(PeerError::Timeout(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Work for the writer that comes from the peer itself.
#[derive(Debug)]
enum Upload {
    Request(WireBlock),
    Cancel(WireBlock),
    Metadata(u32),
}

async fn read_loop(
    mut reader: PeerReader,
    pending: Vec<Message>,
    ctx: &PeerContext,
    up_tx: mpsc::UnboundedSender<Vec<Upload>>,
    ev_tx: &mpsc::Sender<(PeerKey, PeerEvent)>,
    owed: &AtomicU64,
    up_pending: &AtomicUsize,
) -> PeerError {
    let key = ctx.key;
    let mut backlog: VecDeque<Message> = pending.into();
    let mut msgs: Vec<Message> = Vec::new();
    let mut ups: Vec<Upload> = Vec::new();
    loop {
        let first = match backlog.pop_front() {
            Some(m) => m,
            None => {
                // While the disk is behind, leave what the peer sends in the socket (TCP's
                // window closes; QUIC's stream credit runs out): requesting nothing new is
                // not enough, blocks already requested would pile up here.
                ctx.backlog.wait_room().await;
                match tokio::time::timeout(
                    IDLE_TIMEOUT,
                    reader.recv_expecting(owed.load(Ordering::Relaxed)),
                )
                .await
                {
                    Err(_) => return PeerError::Timeout("peer idle"),
                    Ok(Err(e)) => return e,
                    Ok(Ok(m)) => m,
                }
            }
        };
        // Take everything the last read already brought in (without waiting for more), so
        // a burst of blocks costs the actor one wake-up.
        let mut next = Some(first);
        let mut n = 0;
        while let Some(m) = next.take() {
            n += 1;
            if let Err(e) = crate::peer::validate(&m, ctx.num_pieces) {
                return e;
            }
            match m {
                Message::KeepAlive => {}
                Message::Request(b) => {
                    if b.length > MAX_BLOCK {
                        return PeerError::BadBlockLength(b.length);
                    }
                    push_upload(&mut ups, up_pending, Upload::Request(b));
                }
                Message::Cancel(b) => push_upload(&mut ups, up_pending, Upload::Cancel(b)),
                Message::Extended {
                    id: UT_METADATA_ID,
                    payload,
                } => {
                    if let Ok(MetadataMsg::Request { piece }) = MetadataMsg::decode(&payload) {
                        push_upload(&mut ups, up_pending, Upload::Metadata(piece));
                    }
                }
                Message::Extended {
                    id: UT_PEX_ID,
                    payload,
                } => {
                    if let Ok(p) = crate::peer::PexMsg::decode(&payload) {
                        for (a, _) in p.added.iter().filter(|(_, f)| f & FLAG_MF_QUIC != 0) {
                            ctx.quic_peers.learn_capable(*a);
                        }
                        // Keep the order of events: what came before the PEX goes first.
                        if !send_msgs(ev_tx, key, &mut msgs).await {
                            return PeerError::Closed;
                        }
                        let ev = PeerEvent::Pex(p.added);
                        if ev_tx.send((key, ev)).await.is_err() {
                            return PeerError::Closed;
                        }
                    }
                }
                Message::Extended {
                    id: UT_HOLEPUNCH_ID,
                    payload,
                } if ctx.holepunch => {
                    if let Ok(m) = HolepunchMsg::decode(&payload) {
                        if !send_msgs(ev_tx, key, &mut msgs).await {
                            return PeerError::Closed;
                        }
                        if ev_tx.send((key, PeerEvent::Holepunch(m))).await.is_err() {
                            return PeerError::Closed;
                        }
                    }
                }
                Message::Extended {
                    id: HANDSHAKE_ID,
                    payload,
                } => {
                    if let Ok(hs) = ExtHandshake::decode(&payload) {
                        if !send_msgs(ev_tx, key, &mut msgs).await {
                            return PeerError::Closed;
                        }
                        let id = hs.id_of(UT_HOLEPUNCH);
                        ctx.their_holepunch
                            .store(id.unwrap_or(0), Ordering::Relaxed);
                        let holepunch = id.is_some();
                        if ev_tx
                            .send((key, PeerEvent::ExtUpdate { holepunch }))
                            .await
                            .is_err()
                        {
                            return PeerError::Closed;
                        }
                    }
                }
                Message::Extended { .. } => {}
                other => {
                    match &other {
                        Message::Piece { data, .. } => owed_sub(owed, data.len() as u64),
                        Message::Reject(b) => owed_sub(owed, u64::from(b.length)),
                        // BEP 3: a choke voids our outstanding requests.
                        Message::Choke => owed.store(0, Ordering::Relaxed),
                        _ => {}
                    }
                    msgs.push(other)
                }
            }
            if n < READ_BATCH {
                next = match backlog.pop_front() {
                    Some(m) => Some(m),
                    None => match reader.try_next() {
                        Ok(m) => m,
                        Err(e) => return e,
                    },
                };
            }
        }
        if !ups.is_empty() {
            up_pending.fetch_add(ups.len(), Ordering::Relaxed);
            if up_tx.send(std::mem::take(&mut ups)).is_err() {
                return PeerError::Closed;
            }
        }
        if !send_msgs(ev_tx, key, &mut msgs).await {
            return PeerError::Closed;
        }
    }
}

/// Queues one item of upload work unless [`MAX_PENDING_UPLOADS`] are already waiting.
fn push_upload(ups: &mut Vec<Upload>, pending: &AtomicUsize, up: Upload) {
    if pending.load(Ordering::Relaxed) + ups.len() < MAX_PENDING_UPLOADS {
        ups.push(up);
    }
}

/// Payload bytes we requested that the peer still owes us: the writer adds each `request`
/// it sends and takes off each `cancel`, the reader takes off each `piece` and `reject` and
/// clears it on `choke`. Only a hint for the reader's wake-up batching
/// ([`crate::peer::PeerReader::recv_expecting`]), so it errs low: never below zero.
fn owed_sub(owed: &AtomicU64, n: u64) {
    let _ = owed.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

/// Hands the collected messages to the actor (one event); false if the actor is gone.
async fn send_msgs(
    ev_tx: &mpsc::Sender<(PeerKey, PeerEvent)>,
    key: PeerKey,
    msgs: &mut Vec<Message>,
) -> bool {
    let ev = match msgs.len() {
        0 => return true,
        1 => match msgs.pop() {
            Some(m) => PeerEvent::Msg(m),
            None => return true,
        },
        _ => PeerEvent::Batch(std::mem::take(msgs)),
    };
    ev_tx.send((key, ev)).await.is_ok()
}

async fn write_loop(
    mut writer: PeerWriter,
    ctx: Arc<PeerContext>,
    mut cmd_rx: mpsc::Receiver<PeerCmd>,
    mut up_rx: mpsc::UnboundedReceiver<Vec<Upload>>,
    mut st: WriterState,
    up_pending: Arc<AtomicUsize>,
) -> Result<(), PeerError> {
    let mut last_send = Instant::now();
    loop {
        if let Some(cmd) = st.deferred.take() {
            if !on_cmd(&mut writer, &mut st, &mut cmd_rx, cmd).await? {
                return Ok(());
            }
            last_send = Instant::now();
            continue;
        }
        if !st.choking && !st.queue.is_empty() && !ctx.stopping.load(Ordering::Relaxed) {
            // Take in whatever arrived (cancels, chokes) without blocking, then serve one
            // batch to completion. Serving is never a `select!` branch: cancelling it halfway
            // would lose drained requests or cut a `piece` message in two.
            loop {
                if let Some(cmd) = st.deferred.take() {
                    if !on_cmd(&mut writer, &mut st, &mut cmd_rx, cmd).await? {
                        return Ok(());
                    }
                } else if let Ok(cmd) = cmd_rx.try_recv() {
                    if !on_cmd(&mut writer, &mut st, &mut cmd_rx, cmd).await? {
                        return Ok(());
                    }
                } else if let Ok(ups) = up_rx.try_recv() {
                    up_pending.fetch_sub(ups.len(), Ordering::Relaxed);
                    for up in ups {
                        on_upload(&mut writer, &ctx, &mut st, up).await?;
                    }
                } else {
                    break;
                }
            }
            if !st.choking && !st.queue.is_empty() {
                serve(&mut writer, &ctx, &mut st).await?;
            }
            last_send = Instant::now();
            continue;
        }
        tokio::select! {
            biased;
            cmd = cmd_rx.recv() => {
                let Some(cmd) = cmd else { return Ok(()) };
                if !on_cmd(&mut writer, &mut st, &mut cmd_rx, cmd).await? {
                    return Ok(());
                }
                last_send = Instant::now();
            }
            up = up_rx.recv() => {
                let Some(ups) = up else { return Ok(()) };
                up_pending.fetch_sub(ups.len(), Ordering::Relaxed);
                for up in ups {
                    on_upload(&mut writer, &ctx, &mut st, up).await?;
                }
            }
            _ = tokio::time::sleep_until(last_send + KEEPALIVE) => {
                writer.send(&Message::KeepAlive).await?;
                last_send = Instant::now();
            }
        }
    }
}

struct WriterState {
    /// Framed `piece` messages of one serve batch; reused (capacity ≤ one batch).
    serve_buf: Vec<u8>,
    choking: bool,
    /// A non-`Send` command taken off the channel while coalescing `Send`s; handled next,
    /// before anything else from the channel, so command order is kept.
    deferred: Option<PeerCmd>,
    queue: VecDeque<WireBlock>,
    /// Current serve batch size in bytes (adapted to the link, see [`SERVE_BATCH_TIME`]).
    batch_bytes: usize,
    their_meta: Option<u8>,
    their_pex: Option<u8>,
    their_holepunch: Arc<AtomicU8>,
    /// See [`owed_sub`].
    owed: Arc<AtomicU64>,
    ev_tx: mpsc::Sender<(PeerKey, PeerEvent)>,
    /// Payload bytes sent since the last unchoke, until [`PeerEvent::Quota`] went out.
    since_unchoke: Option<u64>,
}

impl WriterState {
    fn count_owed(&self, m: &Message) {
        match m {
            Message::Request(b) => {
                self.owed.fetch_add(u64::from(b.length), Ordering::Relaxed);
            }
            Message::Cancel(b) => owed_sub(&self.owed, u64::from(b.length)),
            _ => {}
        }
    }
}

/// Applies one actor command; false means close.
async fn on_cmd(
    writer: &mut PeerWriter,
    st: &mut WriterState,
    cmd_rx: &mut mpsc::Receiver<PeerCmd>,
    cmd: PeerCmd,
) -> Result<bool, PeerError> {
    match cmd {
        PeerCmd::Send(msgs) => {
            for m in &msgs {
                st.count_owed(m);
                writer.queue(m);
            }
            // The actor sends a request or two per arriving block; on a fast link many such
            // commands are already waiting. Coalesce them into one write instead of one
            // syscall each (bounded so a flood cannot grow the buffer without limit).
            while writer.queued() < MAX_COALESCE {
                match cmd_rx.try_recv() {
                    Ok(PeerCmd::Send(more)) => {
                        for m in &more {
                            st.count_owed(m);
                            writer.queue(m);
                        }
                    }
                    Ok(other) => {
                        st.deferred = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            writer.flush().await?;
        }
        PeerCmd::Choke => {
            if !st.choking {
                st.choking = true;
                st.queue.clear();
                writer.send(&Message::Choke).await?;
            }
        }
        PeerCmd::Unchoke => {
            if st.choking {
                st.choking = false;
                st.since_unchoke = Some(0);
                writer.send(&Message::Unchoke).await?;
            }
        }
        PeerCmd::Pex(payload) => {
            if let Some(id) = st.their_pex {
                writer.send_extended(id, &payload).await?;
            }
        }
        PeerCmd::Holepunch(m) => {
            let id = st.their_holepunch.load(Ordering::Relaxed);
            if id != 0 {
                writer.send_extended(id, &m.encode()).await?;
            }
        }
        PeerCmd::Close => return Ok(false),
    }
    Ok(true)
}

async fn on_upload(
    writer: &mut PeerWriter,
    ctx: &PeerContext,
    st: &mut WriterState,
    up: Upload,
) -> Result<(), PeerError> {
    match up {
        Upload::Request(b) => {
            if !st.choking && st.queue.len() < MAX_UPLOAD_QUEUE && !st.queue.contains(&b) {
                st.queue.push_back(b);
            }
        }
        Upload::Cancel(b) => st.queue.retain(|q| *q != b),
        Upload::Metadata(piece) => {
            if let Some(id) = st.their_meta {
                writer
                    .send_extended(id, &serve_request(&ctx.info, piece).encode())
                    .await?;
            }
        }
    }
    Ok(())
}

/// Reads up to [`SERVE_BATCH`] queued blocks ([`SERVE_BATCH_BYTES`]) straight into one
/// buffer of framed `piece` messages (header, then the block read in place: no per-block
/// allocation or copy) and sends it with one write, honouring the upload limit.
async fn serve(
    writer: &mut PeerWriter,
    ctx: &PeerContext,
    st: &mut WriterState,
) -> Result<(), PeerError> {
    let queue = &mut st.queue;
    let serve_buf = &mut st.serve_buf;
    let mut n = 0;
    let mut bytes = 0usize;
    for b in queue.iter() {
        if n == SERVE_BATCH || (n > 0 && bytes + b.length as usize > st.batch_bytes) {
            break;
        }
        n += 1;
        bytes += b.length as usize;
    }
    let batch: Vec<WireBlock> = queue.drain(..n).collect();
    let wait = {
        let mut tb = ctx.up_limit.lock().unwrap_or_else(|p| p.into_inner());
        tb.reserve(Instant::now(), bytes as u64)
    };
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let storage = ctx.storage.clone();
    let mut buf = std::mem::take(serve_buf);
    // Each request's length was checked (≤ MAX_BLOCK) by the reader, so the buffer is
    // bounded by SERVE_BATCH_BYTES + one block.
    let read = move || -> (Vec<u8>, usize, u64) {
        // `used` bytes of `buf` are this batch; the Vec's length only ever grows to the
        // largest batch, so its bytes are zeroed once, not before every read.
        let mut used = 0usize;
        let mut sent = 0u64;
        for b in batch {
            let data = used + 13;
            let end = data + b.length as usize;
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[used..used + 4].copy_from_slice(&(9 + b.length).to_be_bytes());
            buf[used + 4] = crate::peer::wire::ID_PIECE;
            buf[used + 5..used + 9].copy_from_slice(&b.index.to_be_bytes());
            buf[used + 9..data].copy_from_slice(&b.begin.to_be_bytes());
            // Not ours to serve (out of range or unreadable): skip the block.
            if storage
                .read_into(b.index, b.begin, &mut buf[data..end])
                .is_ok()
            {
                used = end;
                sent += u64::from(b.length);
            }
        }
        (buf, used, sent)
    };
    let (buf, used, sent) = if ctx.blocking_io {
        tokio::task::spawn_blocking(read)
            .await
            .unwrap_or_else(|_| (Vec::new(), 0, 0))
    } else {
        read()
    };
    tracing::trace!(bytes = sent, "serving");
    let t0 = Instant::now();
    writer.write_framed(&buf[..used]).await?;
    // Aim the next batch at SERVE_BATCH_TIME of this link's speed; a write that returned
    // at once (fast link, room in the socket buffer) lets the batch double.
    let took = t0.elapsed();
    st.batch_bytes = if took.is_zero() {
        st.batch_bytes * 2
    } else {
        (used as f64 * SERVE_BATCH_TIME.as_secs_f64() / took.as_secs_f64()) as usize
    }
    .clamp(crate::torrent::BLOCK_SIZE as usize, SERVE_BATCH_BYTES);
    ctx.counters.uploaded.fetch_add(sent, Ordering::Relaxed);
    ctx.total_uploaded.fetch_add(sent, Ordering::Relaxed);
    if let Some(n) = st.since_unchoke.as_mut() {
        *n += sent;
        if *n >= ctx.quota {
            st.since_unchoke = None;
            // Full channel: the actor is busy, and its tick checks quotas anyway.
            let _ = st.ev_tx.try_send((ctx.key, PeerEvent::Quota));
        }
    }
    // Keep the (up to 512 KiB) buffer only while more is queued: an idle connection must
    // not pin it (a simulation holds tens of thousands of connections).
    if !queue.is_empty() {
        *serve_buf = buf;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_uploads_are_bounded_by_count() {
        let pending = AtomicUsize::new(MAX_PENDING_UPLOADS - 3);
        let mut ups = Vec::new();
        let b = WireBlock {
            index: 0,
            begin: 0,
            length: 16384,
        };
        for _ in 0..10 {
            push_upload(&mut ups, &pending, Upload::Request(b));
        }
        assert_eq!(ups.len(), 3);
        // Once the writer took them, requests are accepted again, one read at a time or
        // many: what counts is how many wait, not in how many reads they came.
        pending.store(0, Ordering::Relaxed);
        let mut ups = Vec::new();
        for _ in 0..MAX_PENDING_UPLOADS + 5 {
            push_upload(&mut ups, &pending, Upload::Cancel(b));
        }
        assert_eq!(ups.len(), MAX_PENDING_UPLOADS);
    }
}
