//! The metadata phase of a magnet download (BEP 9 `ut_metadata` across many peers, with
//! BEP 10 extended handshakes and BEP 11 PEX for more peers), and a minimal metadata server.
//!
//! [`fetch_metadata_incoming`] dials candidates (and takes connections peers made to us),
//! drives the pure [`MetadataFetch`] state machine from their answers, and on success can
//! hand the open connections to the swarm ([`HandedConn`]). It lives in `session`, not in
//! `peer`, because it dials through the session's [`Dialer`] (TCP, QUIC or raced): `peer`
//! stays the wire layer that `quic` builds on.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};

use crate::dial::Dialer;
use crate::id::{InfoHash, PeerId};
use crate::net::{Listener, Net, Stream};
use crate::peer::extension::{ExtHandshake, UT_METADATA, UT_METADATA_ID, UT_PEX_ID};
use crate::peer::metadata::{serve_request, MetadataFetch, MetadataMsg, Outcome};
use crate::peer::pex::PexMsg;
use crate::peer::wire::Message;
use crate::peer::{PeerConn, PeerError};

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
    #[error("no metadata for {info_hash} after {secs} s ({tried} peers tried, {connected} connected, {banned} banned for corrupt metadata){}", .last_error.as_ref().map(|e| format!("; last peer error: {e}")).unwrap_or_default())]
    Timeout {
        info_hash: InfoHash,
        secs: u64,
        tried: usize,
        connected: usize,
        banned: usize,
        /// Why the last peer connection failed or ended (e.g. an encryption mismatch).
        last_error: Option<String>,
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
    // Plaintext TCP, as before MSE: no session seed here to draw MSE keys from, and the
    // callers (tests, simulations) count on repeatable runs.
    let tcp = Dialer {
        mse: crate::peer::MsePolicy::new(crate::peer::Encryption::Off, None),
        ..Dialer::default()
    };
    fetch_metadata_incoming(net, &tcp, info_hash, our_id, peers, incoming, cfg).await
}

/// [`fetch_metadata_stats`] that also uses connections peers made to us (handshake done):
/// a peer that learnt our address from a tracker often dials us while we dial it, and keeps
/// only one of the two connections, so the incoming one must be able to serve the fetch.
/// `dialer` picks the transport (the session's, so connections it hands over are the ones
/// its swarm would have made).
pub async fn fetch_metadata_incoming(
    net: Net,
    dialer: &Dialer,
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
    let mut last_error: Option<String> = None;
    let mut first_peer: Option<Instant> = None;
    let mut banned_total: BTreeSet<SocketAddr> = BTreeSet::new();
    // Bound on distinct addresses remembered; beyond it new candidates are ignored.
    let max_seen = cfg.max_candidates * 8;
    // Peers whose connection failed or closed, tried again later (a peer at its
    // connection limit, or a moment's network trouble, must not cost the only source of a
    // rare torrent): when, and how many failures so far.
    let mut later: BTreeSet<(Instant, SocketAddr)> = BTreeSet::new();
    let mut failures: BTreeMap<SocketAddr, u32> = BTreeMap::new();

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
        let wake = later.first().map_or(wake, |(t, _)| (*t).min(wake));
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
                        last_error = Some(why.to_string());
                        fetch.remove_peer(&addr);
                        active.remove(&addr);
                        let n = failures.entry(addr).or_insert(0);
                        *n += 1;
                        if *n <= RETRIES && !fetch.is_banned(&addr) && later.len() < max_seen {
                            later.insert((now + RETRY_FIRST * (1 << (*n - 1)), addr));
                        }
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
                        last_error,
                    });
                }
                let now = Instant::now();
                while let Some(&(t, a)) = later.first() {
                    if t > now {
                        break;
                    }
                    later.pop_first();
                    if !active.contains_key(&a) && !queued.contains(&a) {
                        queued.push_back(a);
                    }
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

/// A peer that failed or closed is tried again this many times, first after
/// [`RETRY_FIRST`], then after twice as long each time (5, 10, 20, 40, 80 s).
const RETRIES: u32 = 5;
const RETRY_FIRST: Duration = Duration::from_secs(5);
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
    dialer: Dialer,
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
    dialer: &Dialer,
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
    let mut kept_bytes: usize = conn.pending_mut().iter().map(approx_size).sum();
    let mut have_msgs = conn.pending_mut().iter().filter(|m| is_have_set(m)).count();
    loop {
        if keep
            && (conn.pending_mut().len() > MAX_HANDED_PENDING
                || kept_bytes > MAX_HANDED_BYTES
                || have_msgs > 1)
        {
            keep = false;
            conn.pending_mut().clear();
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
                        conn.set_ext_done(theirs);
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
                            conn.pending_mut().push_back(Message::Extended { id: UT_PEX_ID, payload });
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
                    conn.pending_mut().push_back(other);
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
