//! The uTP socket: one task per shared UDP socket runs every connection's state machine,
//! routing packets by (remote address, connection id); each connection is a byte stream
//! ([`UtpStream`], an `AsyncRead + AsyncWrite`) for the peer wire.
//!
//! The task gets its datagrams from the socket's demultiplexer (`net::quic`): from the
//! QUIC endpoint's reads when QUIC shares the port, else it reads the socket itself and
//! passes KRPC on to the DHT. Sends go straight to the socket. It runs the same on real
//! sockets and on simnet (time is tokio's, which the simulation drives).
//!
//! Bounds: connections at most [`UtpConfig::max_conns`]; half-open incoming connections
//! (SYN answered, nothing received since) at most [`UtpConfig::max_half_open`], each
//! forgotten after [`UtpConfig::half_open_timeout`]. A half-open connection costs a table
//! entry and no buffer, and no stream is handed out before the initiator's first packet
//! after the handshake, so a flood of SYNs from spoofed sources costs bounded memory and
//! no tasks. Buffers per connection are bounded by [`conn::Config`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::conn::{self, CloseReason, Conn, State};
use super::packet::{is_utp, Packet, Type};
use crate::net::quic::{is_krpc, SharedUdp};

/// Tunables of a uTP socket.
#[derive(Clone, Debug)]
pub struct UtpConfig {
    pub conn: conn::Config,
    /// Connections at most (open, half open, or closing).
    pub max_conns: usize,
    /// Incoming connections whose initiator has not spoken since its SYN, at most.
    pub max_half_open: usize,
    /// How long a half-open incoming connection is kept.
    pub half_open_timeout: Duration,
    /// Connections accepted and not yet taken by [`UtpListener::accept`], at most.
    pub accept_queue: usize,
    /// How long a dropped stream may take to deliver its last bytes and FIN.
    pub linger: Duration,
    /// Seed of connection ids and initial sequence numbers; None: from the OS.
    pub seed: Option<u64>,
}

impl Default for UtpConfig {
    fn default() -> Self {
        UtpConfig {
            conn: conn::Config::default(),
            max_conns: 1024,
            max_half_open: 128,
            half_open_timeout: Duration::from_secs(10),
            accept_queue: 64,
            linger: Duration::from_secs(10),
            seed: None,
        }
    }
}

/// Datagrams queued for the uTP task at most (beyond: dropped like a full socket buffer).
pub const UTP_QUEUE: usize = 4096;

/// Where the task's datagrams come from.
pub enum Feed {
    /// The QUIC endpoint reads the socket and passes uTP datagrams on.
    Channel(mpsc::Receiver<(Bytes, SocketAddr)>),
    /// Nobody else reads the socket: the task does, and passes KRPC to the DHT.
    Raw,
}

type Key = (SocketAddr, u16);

/// What a connection is waiting for before its stream is handed out.
enum Pending {
    None,
    Outgoing(oneshot::Sender<io::Result<UtpStream>>),
    Incoming { since: Instant },
}

struct Shared {
    conn: Conn,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// Queued on the task's dirty channel already.
    queued: bool,
    /// The stream is gone (or was never handed out); the entry only finishes closing.
    dropped_at: Option<Instant>,
    pending: Pending,
}

struct Entry {
    key: Key,
    local: SocketAddr,
    shared: Mutex<Shared>,
}

impl Entry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum Cmd {
    Connect(SocketAddr, oneshot::Sender<io::Result<UtpStream>>),
    Count(oneshot::Sender<(usize, usize)>),
    Close,
}

/// Dials uTP connections from the shared socket. Cheap to clone; the task ends once every
/// clone is dropped (or [`UtpSocket::close`]) and its connections have closed.
#[derive(Clone)]
pub struct UtpSocket {
    cmd: mpsc::Sender<Cmd>,
    local: SocketAddr,
}

impl fmt::Debug for UtpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UtpSocket")
            .field("local", &self.local)
            .finish()
    }
}

/// A bound uTP socket and its listener, to hand to a session (cheap to clone; the
/// listener is taken once).
#[derive(Clone, Debug)]
pub struct UtpBound {
    pub socket: UtpSocket,
    pub listener: Arc<Mutex<Option<UtpListener>>>,
}

impl UtpBound {
    pub fn new(socket: UtpSocket, listener: UtpListener) -> Self {
        UtpBound {
            socket,
            listener: Arc::new(Mutex::new(Some(listener))),
        }
    }

    /// The listener, the first time.
    pub fn take_listener(&self) -> Option<UtpListener> {
        self.listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Incoming uTP connections.
pub struct UtpListener {
    rx: mpsc::Receiver<UtpStream>,
}

impl fmt::Debug for UtpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UtpListener")
    }
}

impl UtpListener {
    /// The next connection whose initiator has spoken after the handshake; `None` once the
    /// socket is closed.
    pub async fn accept(&mut self) -> Option<(UtpStream, SocketAddr)> {
        let s = self.rx.recv().await?;
        let a = s.peer_addr();
        Some((s, a))
    }
}

impl UtpSocket {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connects (SYN, then the peer's STATE). Callers bound this with their own timeout; on
    /// its own it gives up after the SYN retries (15 s).
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<UtpStream> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Connect(addr, tx))
            .await
            .map_err(|_| io::Error::other("uTP socket closed"))?;
        rx.await
            .map_err(|_| io::Error::other("uTP socket closed"))?
    }

    /// Connections in the table, and how many of them are half open.
    pub async fn connections(&self) -> (usize, usize) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Count(tx)).await.is_err() {
            return (0, 0);
        }
        rx.await.unwrap_or((0, 0))
    }

    /// Resets every connection and stops the task; the listener then ends.
    pub fn close(&self) {
        let _ = self.cmd.try_send(Cmd::Close);
    }
}

/// Starts the task for `udp` and returns the dialling handle and the listener.
pub fn start(
    udp: Arc<SharedUdp>,
    feed: Feed,
    cfg: UtpConfig,
) -> io::Result<(UtpSocket, UtpListener)> {
    let local = udp.local_addr()?;
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (acc_tx, acc_rx) = mpsc::channel(cfg.accept_queue.max(1));
    let (dirty_tx, dirty_rx) = mpsc::unbounded_channel();
    let rng = match cfg.seed {
        Some(s) => rand::rngs::StdRng::seed_from_u64(s),
        None => rand::rngs::StdRng::from_os_rng(),
    };
    let task = Task {
        udp,
        local,
        cfg,
        epoch: Instant::now(),
        rng,
        conns: BTreeMap::new(),
        half_open: 0,
        dirty: BTreeSet::new(),
        dirty_tx,
        accept_tx: acc_tx,
        out: Vec::new(),
        next_deadline: None,
    };
    tokio::spawn(task.run(feed, cmd_rx, dirty_rx));
    Ok((UtpSocket { cmd: cmd_tx, local }, UtpListener { rx: acc_rx }))
}

struct Task {
    udp: Arc<SharedUdp>,
    local: SocketAddr,
    cfg: UtpConfig,
    epoch: Instant,
    rng: rand::rngs::StdRng,
    /// Ordered maps, not hashed ones: the order connections are served in must not
    /// depend on a random hash seed, or a simulation would not replay from its seed.
    conns: BTreeMap<Key, Arc<Entry>>,
    half_open: usize,
    dirty: BTreeSet<Key>,
    dirty_tx: mpsc::UnboundedSender<Key>,
    accept_tx: mpsc::Sender<UtpStream>,
    out: Vec<(Vec<u8>, SocketAddr)>,
    next_deadline: Option<Instant>,
}

/// Datagrams handled per wake-up before the task sends what they caused.
const BATCH: usize = 64;

impl Task {
    async fn run(
        mut self,
        mut feed: Feed,
        mut cmd_rx: mpsc::Receiver<Cmd>,
        mut dirty_rx: mpsc::UnboundedReceiver<Key>,
    ) {
        let mut buf = vec![0u8; 65536];
        let mut cmd_open = true;
        let mut raw_errors = 0u32;
        loop {
            let deadline = self.next_deadline;
            tokio::select! {
                biased;
                c = cmd_rx.recv(), if cmd_open => match c {
                    Some(Cmd::Connect(addr, tx)) => self.connect(addr, tx),
                    Some(Cmd::Count(tx)) => {
                        let _ = tx.send((self.conns.len(), self.half_open));
                    }
                    Some(Cmd::Close) => {
                        self.close_all();
                        self.send_out().await;
                        return;
                    }
                    None => cmd_open = false,
                },
                Some(k) = dirty_rx.recv() => {
                    self.dirty.insert(k);
                    while let Ok(k) = dirty_rx.try_recv() {
                        self.dirty.insert(k);
                    }
                }
                d = recv(&mut feed, &self.udp, &mut buf) => match d {
                    Ok(Some((len, from))) => {
                        raw_errors = 0;
                        self.datagram(&buf[..len], from);
                        for _ in 1..BATCH {
                            match try_recv(&mut feed, &self.udp, &mut buf) {
                                Some((len, from)) => self.datagram(&buf[..len], from),
                                None => break,
                            }
                        }
                    }
                    // The demultiplexer is gone (the QUIC endpoint closed).
                    Ok(None) => feed = Feed::Channel(mpsc::channel(1).1),
                    Err(_) => {
                        raw_errors += 1;
                        if raw_errors > 100 {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                },
                _ = sleep_until_opt(deadline) => {
                    self.next_deadline = None;
                    self.due();
                }
            }
            self.process_dirty();
            self.send_out().await;
            if !cmd_open && self.conns.is_empty() {
                return;
            }
        }
    }

    fn datagram(&mut self, d: &[u8], from: SocketAddr) {
        if is_krpc(d) {
            self.udp.divert_krpc(d, from);
            return;
        }
        if !is_utp(d) {
            return;
        }
        let Ok(p) = Packet::parse(d) else { return };
        let now = Instant::now();
        if p.header.ty == Type::Syn {
            let key = (from, p.header.conn_id.wrapping_add(1));
            if let Some(e) = self.conns.get(&key) {
                e.lock().conn.on_packet(&p, now);
                self.dirty.insert(key);
                return;
            }
            if self.conns.len() >= self.cfg.max_conns || self.half_open >= self.cfg.max_half_open {
                return;
            }
            let conn = Conn::accept(
                self.conn_cfg(from),
                self.epoch,
                now,
                &p.header,
                self.rng.random(),
            );
            self.half_open += 1;
            self.insert(key, conn, Pending::Incoming { since: now });
            return;
        }
        let key = (from, p.header.conn_id);
        if let Some(e) = self.conns.get(&key) {
            e.lock().conn.on_packet(&p, now);
            self.dirty.insert(key);
        }
    }

    /// A connection's tunables for this peer: IPv4's headers are 20 bytes shorter than
    /// IPv6's, so an IPv4 path MTU search goes 20 bytes higher.
    fn conn_cfg(&self, peer: SocketAddr) -> conn::Config {
        let mut c = self.cfg.conn.clone();
        let v4 = match peer.ip() {
            std::net::IpAddr::V4(_) => true,
            std::net::IpAddr::V6(a) => a.to_ipv4_mapped().is_some(),
        };
        if v4 && c.mtu_ceiling == conn::Config::default().mtu_ceiling {
            c.mtu_ceiling += 20;
        }
        c
    }

    fn insert(&mut self, key: Key, conn: Conn, pending: Pending) {
        let e = Arc::new(Entry {
            key,
            local: self.local,
            shared: Mutex::new(Shared {
                conn,
                read_waker: None,
                write_waker: None,
                queued: false,
                dropped_at: None,
                pending,
            }),
        });
        self.conns.insert(key, e);
        self.dirty.insert(key);
    }

    fn connect(&mut self, addr: SocketAddr, tx: oneshot::Sender<io::Result<UtpStream>>) {
        if self.conns.len() >= self.cfg.max_conns {
            let _ = tx.send(Err(io::Error::other("too many uTP connections")));
            return;
        }
        // A receive id not in use with this peer (as either side's id).
        let id = loop {
            let id: u16 = self.rng.random();
            if !self.conns.contains_key(&(addr, id))
                && !self.conns.contains_key(&(addr, id.wrapping_add(1)))
            {
                break id;
            }
        };
        let now = Instant::now();
        let conn = Conn::connect(self.conn_cfg(addr), self.epoch, now, id);
        self.insert((addr, id), conn, Pending::Outgoing(tx));
    }

    fn close_all(&mut self) {
        let now = Instant::now();
        for (k, e) in std::mem::take(&mut self.conns) {
            let mut s = e.lock();
            s.conn.reset(now);
            for d in s.conn.take_out() {
                self.out.push((d, k.0));
            }
            wake(&mut s);
        }
    }

    /// Marks every connection whose timer is due.
    fn due(&mut self) {
        let now = Instant::now();
        for (k, e) in &self.conns {
            let s = e.lock();
            if entry_deadline(&s, &self.cfg).is_some_and(|d| d <= now) {
                self.dirty.insert(*k);
            }
        }
        // Recomputed in full: deadlines only ever move later without us seeing it.
        self.next_deadline = None;
        for e in self.conns.values() {
            let s = e.lock();
            self.next_deadline = min_opt(self.next_deadline, entry_deadline(&s, &self.cfg));
        }
    }

    fn process_dirty(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let now = Instant::now();
        let keys: Vec<Key> = std::mem::take(&mut self.dirty).into_iter().collect();
        for key in keys {
            let Some(e) = self.conns.get(&key).cloned() else {
                continue;
            };
            let mut s = e.lock();
            s.queued = false;
            if s.conn.deadline().is_some_and(|d| d <= now) {
                s.conn.on_timer(now);
            }
            s.conn.transmit(now);
            let state = s.conn.state();
            // Hand out streams that became ready; fail dials that could not.
            match std::mem::replace(&mut s.pending, Pending::None) {
                Pending::Outgoing(tx) if state == State::Connected => {
                    let st = UtpStream::new(e.clone(), self.dirty_tx.clone());
                    if let Err(Ok(st)) = tx.send(Ok(st)) {
                        // The dialler gave up meanwhile.
                        st.forget(&mut s);
                        s.conn.reset(now);
                    }
                }
                Pending::Outgoing(tx) if s.conn.is_closed() => {
                    let _ = tx.send(Err(close_error(state)));
                    s.dropped_at = Some(now);
                }
                Pending::Incoming { .. } if state == State::Connected => {
                    self.half_open -= 1;
                    let st = UtpStream::new(e.clone(), self.dirty_tx.clone());
                    if let Err(
                        mpsc::error::TrySendError::Full(st) | mpsc::error::TrySendError::Closed(st),
                    ) = self.accept_tx.try_send(st)
                    {
                        st.forget(&mut s);
                        s.conn.reset(now);
                    }
                }
                Pending::Incoming { since } => {
                    if s.conn.is_closed() || now >= since + self.cfg.half_open_timeout {
                        self.half_open -= 1;
                        s.conn.reset(now);
                        s.dropped_at = Some(now);
                    } else {
                        s.pending = Pending::Incoming { since };
                    }
                }
                p => s.pending = p,
            }
            // A dropped stream's connection finishes its FIN exchange, within the linger.
            if let Some(at) = s.dropped_at {
                if !s.conn.is_closed() && now >= at + self.cfg.linger {
                    s.conn.reset(now);
                }
            }
            for d in s.conn.take_out() {
                self.out.push((d, key.0));
            }
            wake(&mut s);
            let gone = s.dropped_at.is_some()
                && (s.conn.is_closed() || s.conn.finished())
                && matches!(s.pending, Pending::None);
            let d = entry_deadline(&s, &self.cfg);
            drop(s);
            if gone {
                self.conns.remove(&key);
            } else {
                self.next_deadline = min_opt(self.next_deadline, d);
            }
        }
    }

    async fn send_out(&mut self) {
        for (d, to) in std::mem::take(&mut self.out) {
            // A failed send is a lost packet: retransmission recovers.
            let _ = self.udp.send_to(&d, to).await;
        }
    }
}

fn wake(s: &mut Shared) {
    if s.conn.readable() {
        if let Some(w) = s.read_waker.take() {
            w.wake();
        }
    }
    if s.conn.write_room() > 0 || s.conn.is_closed() {
        if let Some(w) = s.write_waker.take() {
            w.wake();
        }
    }
}

fn entry_deadline(s: &Shared, cfg: &UtpConfig) -> Option<Instant> {
    let mut d = s.conn.deadline();
    if let Pending::Incoming { since } = s.pending {
        d = min_opt(d, Some(since + cfg.half_open_timeout));
    }
    if let Some(at) = s.dropped_at {
        d = min_opt(d, Some(at + cfg.linger));
    }
    d
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

async fn sleep_until_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn close_error(state: State) -> io::Error {
    match state {
        State::Closed(CloseReason::Reset) => io::ErrorKind::ConnectionRefused.into(),
        State::Closed(CloseReason::TimedOut) => io::ErrorKind::TimedOut.into(),
        _ => io::ErrorKind::ConnectionAborted.into(),
    }
}

/// The next datagram for the task: `Ok(None)` when the channel closed.
async fn recv(
    feed: &mut Feed,
    udp: &SharedUdp,
    buf: &mut [u8],
) -> io::Result<Option<(usize, SocketAddr)>> {
    match feed {
        Feed::Channel(rx) => Ok(rx.recv().await.map(|(d, from)| {
            let n = d.len().min(buf.len());
            buf[..n].copy_from_slice(&d[..n]);
            (n, from)
        })),
        Feed::Raw => std::future::poll_fn(|cx| udp.poll_recv_raw(cx, buf))
            .await
            .map(Some),
    }
}

/// A datagram already waiting, without blocking.
fn try_recv(feed: &mut Feed, udp: &SharedUdp, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match feed {
        Feed::Channel(rx) => rx.try_recv().ok().map(|(d, from)| {
            let n = d.len().min(buf.len());
            buf[..n].copy_from_slice(&d[..n]);
            (n, from)
        }),
        Feed::Raw => {
            let mut cx = Context::from_waker(Waker::noop());
            match udp.poll_recv_raw(&mut cx, buf) {
                Poll::Ready(Ok(x)) => Some(x),
                _ => None,
            }
        }
    }
}

/// One uTP connection as a byte stream. Dropping it sends a FIN after the bytes written
/// (reset if that takes longer than [`UtpConfig::linger`]).
pub struct UtpStream {
    entry: Arc<Entry>,
    dirty: mpsc::UnboundedSender<Key>,
    live: bool,
}

impl fmt::Debug for UtpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UtpStream")
            .field("local", &self.entry.local)
            .field("remote", &self.entry.key.0)
            .finish()
    }
}

impl UtpStream {
    fn new(entry: Arc<Entry>, dirty: mpsc::UnboundedSender<Key>) -> Self {
        UtpStream {
            entry,
            dirty,
            live: true,
        }
    }

    /// Drops a stream that was never handed out, while its entry is locked.
    fn forget(mut self, s: &mut Shared) {
        self.live = false;
        s.dropped_at = Some(Instant::now());
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.entry.key.0
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.entry.local
    }

    /// The congestion window and smoothed RTT (for tests and measurements).
    pub fn cc_state(&self) -> (usize, Option<Duration>) {
        let s = self.entry.lock();
        (s.conn.cwnd(), s.conn.rtt())
    }

    /// The datagram size path MTU discovery has reached (uTP header included).
    pub fn packet_size(&self) -> usize {
        self.entry.lock().conn.packet_size()
    }

    fn kick(&self, s: &mut Shared) {
        if !s.queued {
            s.queued = true;
            let _ = self.dirty.send(self.entry.key);
        }
    }
}

impl Drop for UtpStream {
    fn drop(&mut self) {
        if !self.live {
            return;
        }
        let mut s = self.entry.lock();
        s.conn.shutdown();
        s.dropped_at = Some(Instant::now());
        s.read_waker = None;
        s.write_waker = None;
        self.kick(&mut s);
    }
}

fn stream_error(state: State) -> io::Error {
    match state {
        State::Closed(CloseReason::TimedOut) => io::ErrorKind::TimedOut.into(),
        State::Closed(CloseReason::Done) => io::ErrorKind::BrokenPipe.into(),
        _ => io::ErrorKind::ConnectionReset.into(),
    }
}

impl AsyncRead for UtpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut s = this.entry.lock();
        let n = s.conn.read(buf.initialize_unfilled());
        if n > 0 {
            buf.advance(n);
            if s.conn.wants_ack() {
                this.kick(&mut s);
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() == 0 || s.conn.fin_received() {
            return Poll::Ready(Ok(()));
        }
        match s.conn.state() {
            State::Closed(CloseReason::Done) => Poll::Ready(Ok(())),
            st @ State::Closed(_) => Poll::Ready(Err(stream_error(st))),
            _ => {
                s.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for UtpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut s = this.entry.lock();
        let st = s.conn.state();
        if matches!(st, State::Closed(_)) {
            return Poll::Ready(Err(stream_error(st)));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = s.conn.write(buf);
        if n == 0 {
            if s.conn.fin_wanted() {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        this.kick(&mut s);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes go out as soon as the task runs; there is no buffer of ours to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut s = this.entry.lock();
        s.conn.shutdown();
        this.kick(&mut s);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::quic::{bind_stack, QuicConfig, QuicEndpoint};
    use crate::net::{Net, UdpSocket};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pattern(n: usize, salt: u8) -> Vec<u8> {
        (0..n).map(|i| (i * 13 + i / 509) as u8 ^ salt).collect()
    }

    /// Both ends write `len` bytes and read the other's, at once; then both shut down.
    async fn exchange(a: UtpStream, b: UtpStream, len: usize) {
        let run = |mut s: UtpStream, out: Vec<u8>, want: Vec<u8>| async move {
            let (mut r, mut w) = tokio::io::split(&mut s);
            let wr = async {
                w.write_all(&out).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let rd = async {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                got
            };
            let (_, got) = tokio::join!(wr, rd);
            assert!(
                got == want,
                "bytes differ ({} of {})",
                got.len(),
                want.len()
            );
        };
        let (da, db) = (pattern(len, 1), pattern(len, 2));
        tokio::join!(run(a, da.clone(), db.clone()), run(b, db, da));
    }

    fn cfg() -> UtpConfig {
        UtpConfig {
            seed: Some(1),
            ..Default::default()
        }
    }

    /// The DHT's socket (and the QUIC endpoint, which reads the socket while it lives),
    /// the uTP socket and listener.
    async fn stack(
        net: &Net,
        addr: SocketAddr,
        quic: bool,
    ) -> ((UdpSocket, Option<QuicEndpoint>), UtpSocket, UtpListener) {
        let q = QuicConfig::default();
        let s = bind_stack(net, addr, quic.then_some(&q), Some(&cfg()))
            .await
            .unwrap();
        let (u, l) = s.utp.unwrap();
        ((s.krpc, s.quic), u, l)
    }

    async fn connect_pair(
        a: &UtpSocket,
        lb: &mut UtpListener,
        b_addr: SocketAddr,
    ) -> (UtpStream, UtpStream) {
        let mut sa = a.connect(b_addr).await.unwrap();
        // The responder hands the stream out once the initiator has spoken.
        sa.write_all(b"hi").await.unwrap();
        let (mut sb, from) = lb.accept().await.unwrap();
        assert_eq!(from, a.local_addr());
        let mut hi = [0u8; 2];
        sb.read_exact(&mut hi).await.unwrap();
        assert_eq!(&hi, b"hi");
        (sa, sb)
    }

    #[tokio::test]
    async fn loopback_streams_with_and_without_quic_and_krpc_still_flows() {
        for quic in [false, true] {
            let net = Net::Tokio;
            let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let (ka, a, _la) = stack(&net, lo, quic).await;
            let (kb, _b, mut lb) = stack(&net, lo, quic).await;
            let (sa, sb) = connect_pair(&a, &mut lb, _b.local_addr()).await;
            exchange(sa, sb, 3 << 20).await;
            // KRPC on the same port still reaches the DHT's socket.
            ka.0.send_to(
                b"d1:ad2:id20:xxxxxxxxxxxxxxxxxxxxe1:q4:ping1:t2:aa1:y1:qe",
                _b.local_addr(),
            )
            .await
            .unwrap();
            let mut buf = [0u8; 256];
            let (n, from) = tokio::time::timeout(Duration::from_secs(5), kb.0.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 10 && from == a.local_addr(), "quic={quic}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn simnet_streams_over_a_lossy_link() {
        let net = simnet::Network::new(3);
        let mk = |i: u8| {
            simnet::HostConfig::new(std::net::IpAddr::from([10, 0, 0, i]))
                .latency(Duration::from_millis(20))
                .loss(0.02)
                .rate(2_000_000)
        };
        let ha = Net::Sim(net.add_host_with(mk(1)).unwrap());
        let hb = Net::Sim(net.add_host_with(mk(2)).unwrap());
        let (_ka, a, _la) = stack(&ha, "10.0.0.1:6881".parse().unwrap(), false).await;
        let (_kb, b, mut lb) = stack(&hb, "10.0.0.2:6881".parse().unwrap(), true).await;
        let (sa, sb) = connect_pair(&a, &mut lb, b.local_addr()).await;
        let t0 = Instant::now();
        exchange(sa, sb, 2 << 20).await;
        // 2 MiB each way over 2 MB/s links with 2 % loss: not pathologically slow.
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
        // Both closed cleanly and left the tables.
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(a.connections().await, (0, 0));
        assert_eq!(b.connections().await, (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn syn_flood_is_bounded_and_real_peers_still_get_in() {
        let net = simnet::Network::new(4);
        let hv = Net::Sim(net.add_host(std::net::IpAddr::from([10, 0, 0, 1])).unwrap());
        let (_kv, v, mut lv) = stack(&hv, "10.0.0.1:6881".parse().unwrap(), false).await;
        // Spoofed sources: many addresses, SYNs only.
        for i in 0..40u16 {
            let h = net
                .add_host(std::net::IpAddr::from([10, 0, 1, i as u8 + 1]))
                .unwrap();
            let s = h.bind_udp("0.0.0.0:0".parse().unwrap()).await.unwrap();
            for id in 0..50u16 {
                let mut syn = Vec::new();
                crate::net::utp::packet::encode(
                    &crate::net::utp::packet::Header {
                        ty: Type::Syn,
                        conn_id: id * 2,
                        ts: 1,
                        ts_diff: 0,
                        wnd: 1 << 20,
                        seq: 1,
                        ack: 0,
                    },
                    None,
                    &[],
                    &mut syn,
                );
                s.send_to(&syn, v.local_addr()).await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (n, half) = v.connections().await;
        assert_eq!((n, half), (cfg().max_half_open, cfg().max_half_open));
        // Half-open entries expire; a real peer then connects.
        tokio::time::sleep(cfg().half_open_timeout + Duration::from_secs(1)).await;
        assert_eq!(v.connections().await, (0, 0));
        let hp = Net::Sim(net.add_host(std::net::IpAddr::from([10, 0, 0, 2])).unwrap());
        let (_kp, p, _lp) = stack(&hp, "10.0.0.2:6881".parse().unwrap(), false).await;
        let (sa, sb) = connect_pair(&p, &mut lv, v.local_addr()).await;
        exchange(sa, sb, 100_000).await;
    }

    #[tokio::test(start_paused = true)]
    async fn dial_to_nobody_fails_and_dropped_streams_reset_after_linger() {
        let net = simnet::Network::new(5);
        let ha = Net::Sim(net.add_host(std::net::IpAddr::from([10, 0, 0, 1])).unwrap());
        let (_k, a, _l) = stack(&ha, "10.0.0.1:6881".parse().unwrap(), false).await;
        let e = a
            .connect("10.0.0.9:6881".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(a.connections().await, (0, 0));
    }
}
