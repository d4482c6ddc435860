//! One task pair per connected peer: a reader that decodes messages and a writer that sends
//! them, over an established [`PeerConn`] (BEP 3 wire, BEP 6 Fast, BEP 9 ut_metadata, BEP 10
//! extension protocol, BEP 11 ut_pex).
//!
//! The torrent actor ([`super::swarm`]) makes every download decision; these tasks only move
//! bytes. Uploads are the exception on purpose: a peer's `request` goes straight from the
//! reader to the writer, which reads the block from storage and sends it while the peer is
//! unchoked. Routing uploads through the actor would put every served block on the actor's
//! queue for no decision it needs to make.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::peer::extension::{ExtHandshake, UT_METADATA, UT_METADATA_ID, UT_PEX, UT_PEX_ID};
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
/// Blocks read from storage in one blocking call.
const SERVE_BATCH: usize = 16;
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
    /// Hang up.
    Close,
}

/// What a peer task tells the actor.
#[derive(Debug)]
pub enum PeerEvent {
    /// A message the actor has to act on (everything except uploads and metadata requests).
    Msg(Message),
    /// Addresses learned from the peer's ut_pex.
    Pex(Vec<std::net::SocketAddr>),
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
    /// QUIC-capable peers learned from PEX flags (issue 9).
    pub quic_peers: crate::quic::QuicPeers,
}

/// What we learned from the peer's extended handshake.
#[derive(Debug, Clone, Default)]
pub struct PeerExt {
    pub reqq: Option<u32>,
    pub listen_port: Option<u16>,
    pub client: Option<String>,
    pub pex: bool,
    /// The peer's `mf_quic` (its QUIC UDP port), if it speaks magnetfetch's QUIC.
    pub quic_port: Option<u16>,
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
        client: theirs.as_ref().and_then(|t| t.v.clone()),
        pex: theirs.as_ref().and_then(|t| t.id_of(UT_PEX)).is_some(),
        quic_port: theirs.as_ref().and_then(|t| t.mf_quic),
    };
    let _ = ext_tx.send(ext);
    let their_meta = theirs.as_ref().and_then(|t| t.id_of(UT_METADATA));
    let their_pex = theirs.as_ref().and_then(|t| t.id_of(UT_PEX));
    let (reader, writer, pending) = conn.into_parts();
    let (up_tx, up_rx) = mpsc::channel::<Upload>(MAX_UPLOAD_QUEUE);
    let ctx = Arc::new(ctx);
    let writer_task = tokio::spawn(write_loop(
        writer,
        ctx.clone(),
        cmd_rx,
        up_rx,
        their_meta,
        their_pex,
    ));
    let why = read_loop(reader, pending, &ctx, up_tx, &ev_tx).await;
    writer_task.abort();
    let _ = ev_tx.send((key, PeerEvent::Closed(why))).await;
}

async fn setup(
    conn: &mut PeerConn,
    ctx: &PeerContext,
    have: &Bitfield,
    our_port: Option<u16>,
) -> Result<Option<ExtHandshake>, PeerError> {
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
    let mut ours = ExtHandshake::ours(our_port, Some(ctx.info.len() as u64), Some(conn.addr.ip()));
    ours.mf_quic = ctx.quic_port;
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
    up_tx: mpsc::Sender<Upload>,
    ev_tx: &mpsc::Sender<(PeerKey, PeerEvent)>,
) -> PeerError {
    let key = ctx.key;
    let mut backlog: VecDeque<Message> = pending.into();
    loop {
        let m = match backlog.pop_front() {
            Some(m) => m,
            None => match tokio::time::timeout(IDLE_TIMEOUT, reader.recv()).await {
                Err(_) => return PeerError::Timeout("peer idle"),
                Ok(Err(e)) => return e,
                Ok(Ok(m)) => m,
            },
        };
        if let Err(e) = crate::peer::validate(&m, ctx.num_pieces) {
            return e;
        }
        let ev = match m {
            Message::KeepAlive => continue,
            Message::Request(b) => {
                if b.length > MAX_BLOCK {
                    return PeerError::BadBlockLength(b.length);
                }
                // Full queue: the peer ignored our reqq; drop the request (it will re-ask).
                let _ = up_tx.try_send(Upload::Request(b));
                continue;
            }
            Message::Cancel(b) => {
                let _ = up_tx.try_send(Upload::Cancel(b));
                continue;
            }
            Message::Extended {
                id: UT_METADATA_ID,
                payload,
            } => {
                if let Ok(MetadataMsg::Request { piece }) = MetadataMsg::decode(&payload) {
                    let _ = up_tx.try_send(Upload::Metadata(piece));
                }
                continue;
            }
            Message::Extended {
                id: UT_PEX_ID,
                payload,
            } => match crate::peer::PexMsg::decode(&payload) {
                Ok(p) => {
                    for (a, _) in p.added.iter().filter(|(_, f)| f & FLAG_MF_QUIC != 0) {
                        ctx.quic_peers.learn_capable(*a);
                    }
                    PeerEvent::Pex(p.added.into_iter().map(|(a, _)| a).collect())
                }
                Err(_) => continue,
            },
            Message::Extended { .. } => continue,
            other => PeerEvent::Msg(other),
        };
        if ev_tx.send((key, ev)).await.is_err() {
            return PeerError::Closed;
        }
    }
}

async fn write_loop(
    mut writer: PeerWriter,
    ctx: Arc<PeerContext>,
    mut cmd_rx: mpsc::Receiver<PeerCmd>,
    mut up_rx: mpsc::Receiver<Upload>,
    their_meta: Option<u8>,
    their_pex: Option<u8>,
) -> Result<(), PeerError> {
    let mut st = WriterState {
        choking: true,
        deferred: None,
        queue: VecDeque::new(),
        their_meta,
        their_pex,
    };
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
                } else if let Ok(up) = up_rx.try_recv() {
                    on_upload(&mut writer, &ctx, &mut st, up).await?;
                } else {
                    break;
                }
            }
            if !st.choking && !st.queue.is_empty() {
                serve(&mut writer, &ctx, &mut st.queue).await?;
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
                let Some(up) = up else { return Ok(()) };
                on_upload(&mut writer, &ctx, &mut st, up).await?;
            }
            _ = tokio::time::sleep_until(last_send + KEEPALIVE) => {
                writer.send(&Message::KeepAlive).await?;
                last_send = Instant::now();
            }
        }
    }
}

struct WriterState {
    choking: bool,
    /// A non-`Send` command taken off the channel while coalescing `Send`s; handled next,
    /// before anything else from the channel, so command order is kept.
    deferred: Option<PeerCmd>,
    queue: VecDeque<WireBlock>,
    their_meta: Option<u8>,
    their_pex: Option<u8>,
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
                writer.queue(m);
            }
            // The actor sends a request or two per arriving block; on a fast link many such
            // commands are already waiting. Coalesce them into one write instead of one
            // syscall each (bounded so a flood cannot grow the buffer without limit).
            while writer.queued() < MAX_COALESCE {
                match cmd_rx.try_recv() {
                    Ok(PeerCmd::Send(more)) => {
                        for m in &more {
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
                writer.send(&Message::Unchoke).await?;
            }
        }
        PeerCmd::Pex(payload) => {
            if let Some(id) = st.their_pex {
                writer.send_extended(id, &payload).await?;
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

/// Reads up to [`SERVE_BATCH`] queued blocks and sends them, honouring the upload limit.
async fn serve(
    writer: &mut PeerWriter,
    ctx: &PeerContext,
    queue: &mut VecDeque<WireBlock>,
) -> Result<(), PeerError> {
    let batch: Vec<WireBlock> = queue.drain(..queue.len().min(SERVE_BATCH)).collect();
    let bytes: u64 = batch.iter().map(|b| b.length as u64).sum();
    let wait = {
        let mut tb = ctx.up_limit.lock().unwrap_or_else(|p| p.into_inner());
        tb.reserve(Instant::now(), bytes)
    };
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let storage = ctx.storage.clone();
    let read = move || -> Vec<Option<(WireBlock, Vec<u8>)>> {
        batch
            .into_iter()
            .map(|b| {
                storage
                    .read_block(b.index, b.begin, b.length)
                    .ok()
                    .map(|d| (b, d))
            })
            .collect()
    };
    let blocks = if ctx.blocking_io {
        tokio::task::spawn_blocking(read).await.unwrap_or_default()
    } else {
        read()
    };
    tracing::trace!(n = blocks.len(), "serving");
    for (b, data) in blocks.into_iter().flatten() {
        writer.queue_piece(b.index, b.begin, &data);
        ctx.counters
            .uploaded
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        ctx.total_uploaded
            .fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    writer.flush().await
}
