//! The simulation core: one lock-protected state holding every host, socket, connection
//! and the time-ordered event queue. Handles (`Host`, `UdpSocket`, ...) are thin references
//! into it. A single driver task delivers due events; there is no task or timer per packet.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::task::Waker;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{HostConfig, NetworkConfig};
use crate::nat::Nat;
use crate::Stats;

pub(crate) type HostId = usize;
pub(crate) type ConnId = u64;

/// Largest datagram payload accepted (the IPv4 UDP maximum).
pub(crate) const MAX_DATAGRAM: usize = 65_507;
/// Streams are cut into chunks of at most this many bytes, each scheduled like a packet.
pub(crate) const MAX_CHUNK: usize = 64 * 1024;
/// A stalled stream probes the path this often (a fixed retransmission timeout).
const STREAM_RTO: Duration = Duration::from_secs(1);
const EPHEMERAL_FIRST: u16 = 49152;

/// A small multiplicative hasher for the lookup maps (keys are host ids, ports, addresses
/// we created ourselves, so hash flooding is not a concern; SipHash showed up in profiles).
#[derive(Default)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // murmur3's fmix64: hashbrown takes buckets from the low bits and tags from the top
        // bits, so every input bit must reach both ends.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64);
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

pub(crate) struct Shared {
    pub(crate) core: Mutex<Core>,
    notify: Arc<Notify>,
}

impl Shared {
    pub(crate) fn new(seed: u64, cfg: NetworkConfig) -> Arc<Shared> {
        Arc::new(Shared {
            core: Mutex::new(Core::new(seed, cfg)),
            notify: Arc::new(Notify::new()),
        })
    }

    /// Runs `f` on the core, then (outside the lock) wakes whatever it made ready and
    /// nudges the driver if the earliest event moved. Spawns the driver on first use.
    pub(crate) fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut Core, Instant) -> R) -> R {
        let now = Instant::now();
        self.with_core(|c| f(c, now))
    }

    /// [`Shared::with`] for operations that do not read the clock (receives): tokio's
    /// test clock takes a lock on every `now()`.
    pub(crate) fn with_core<R>(self: &Arc<Self>, f: impl FnOnce(&mut Core) -> R) -> R {
        let (r, wakers, notify, spawn) = {
            let mut core = self.core.lock();
            let r = f(&mut core);
            let spawn = !core.driver_started && tokio::runtime::Handle::try_current().is_ok();
            if spawn {
                core.driver_started = true;
            }
            let notify = std::mem::take(&mut core.needs_notify);
            (r, std::mem::take(&mut core.wake), notify, spawn)
        };
        if spawn {
            tokio::spawn(driver(Arc::downgrade(self), self.notify.clone()));
        }
        if notify {
            self.notify.notify_one();
        }
        for w in wakers {
            w.wake();
        }
        r
    }
}

/// The only task the simulation runs: sleep until the earliest event, deliver everything due.
async fn driver(shared: Weak<Shared>, notify: Arc<Notify>) {
    loop {
        let next = {
            let Some(sh) = shared.upgrade() else { return };
            let now = Instant::now();
            let (next, wakers) = {
                let mut core = sh.core.lock();
                core.run_due(now);
                let next = core.next_event();
                core.driver_deadline = next;
                core.needs_notify = false;
                (next, std::mem::take(&mut core.wake))
            };
            for w in wakers {
                w.wake();
            }
            next
        };
        match next {
            Some(at) => {
                tokio::select! {
                    biased;
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => notify.notified().await,
        }
    }
}

/// Heap entry: kept small (24 bytes) so sifting is cheap; the payload waits in a slab.
/// Ordered by time, then by sequence number (FIFO among simultaneous events).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    at_ns: u64,
    seq: u64,
    slot: u32,
}

enum Payload {
    Datagram {
        src: SocketAddr,
        dst: SocketAddr,
        data: Vec<u8>,
    },
    /// Stream bytes from end `from` of `conn`; `fin` marks the end of that direction.
    Chunk {
        conn: ConnId,
        from: usize,
        data: Vec<u8>,
        fin: bool,
    },
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Payload::Datagram { data, .. } | Payload::Chunk { data, .. } => data.len(),
        }
    }
}

enum EventKind {
    /// Packet reached the destination's downlink (after uplink and latency).
    Arrive {
        src_host: HostId,
        dst_host: HostId,
        payload: Payload,
    },
    /// Packet leaves the destination's downlink queue into the socket.
    Deliver {
        src_host: HostId,
        dst_host: HostId,
        payload: Payload,
    },
    Syn {
        connect: u64,
    },
    ConnectDone {
        connect: u64,
        result: Result<ConnId, io::ErrorKind>,
    },
    ConnectTimeout {
        connect: u64,
    },
    /// Receiver of direction `from -> 1-from` consumed up to `consumed` bytes.
    Ack {
        conn: ConnId,
        from: usize,
        consumed: u64,
    },
    Reset {
        conn: ConnId,
        end: usize,
    },
    Retry {
        conn: ConnId,
        from: usize,
    },
    /// The packet serialising on `host`'s uplink has left: start the next one.
    UplinkFree {
        host: HostId,
    },
}

/// A flow in a host's uplink scheduler: one direction of a stream, or one UDP socket.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum FlowKey {
    Stream(ConnId, usize),
    Dgram(u16),
    /// The one queue of a FIFO uplink (`HostConfig::fifo_uplink`).
    Fifo,
}

struct Flow {
    /// Each packet keeps its own flow's key: a FIFO uplink queues every flow in one.
    q: VecDeque<(FlowKey, HostId, Payload)>,
    bytes: u64,
    deficit: i64,
}

/// The uplink qdisc: deficit round robin over flows with fq_codel's new-flow priority
/// (RFC 8290 §4.2): a flow that had nothing queued is served before the backlogged ones,
/// so a request or a DHT query never waits behind another flow's bulk data.
#[derive(Default)]
struct Uplink {
    /// A packet is serialising; an `UplinkFree` event is pending.
    busy: bool,
    flows: BTreeMap<FlowKey, Flow>,
    new_flows: VecDeque<FlowKey>,
    old_flows: VecDeque<FlowKey>,
    /// Every flow shares one drop-tail queue (no fair queuing).
    fifo: bool,
}

/// DRR quantum: one maximal stream chunk per round.
const QUANTUM: i64 = MAX_CHUNK as i64;

impl Uplink {
    /// The scheduler's queue a packet of `key` joins.
    fn queue_of(&self, key: FlowKey) -> FlowKey {
        if self.fifo {
            FlowKey::Fifo
        } else {
            key
        }
    }

    fn enqueue(&mut self, flow: FlowKey, dst: HostId, payload: Payload) {
        let key = self.queue_of(flow);
        // A flow absent from the map is in neither list: it (re)starts as a new flow.
        let fresh = !self.flows.contains_key(&key);
        let f = self.flows.entry(key).or_insert_with(|| Flow {
            q: VecDeque::new(),
            bytes: 0,
            deficit: QUANTUM,
        });
        f.bytes += payload.len() as u64;
        f.q.push_back((flow, dst, payload));
        if fresh {
            self.new_flows.push_back(key);
        }
    }

    /// Bytes queued in the queue `key` joins (the whole uplink's, for a FIFO).
    fn flow_bytes(&self, key: FlowKey) -> u64 {
        self.flows.get(&self.queue_of(key)).map_or(0, |f| f.bytes)
    }

    /// Next packet to put on the wire, by DRR.
    fn dequeue(&mut self) -> Option<(FlowKey, HostId, Payload)> {
        loop {
            let (key, from_new) = match self.new_flows.front() {
                Some(k) => (*k, true),
                None => (*self.old_flows.front()?, false),
            };
            let pop = |u: &mut Uplink| {
                if from_new {
                    u.new_flows.pop_front();
                } else {
                    u.old_flows.pop_front();
                }
            };
            let Some(f) = self.flows.get_mut(&key) else {
                pop(self);
                continue;
            };
            if f.deficit <= 0 {
                f.deficit += QUANTUM;
                pop(self);
                self.old_flows.push_back(key);
                continue;
            }
            match f.q.pop_front() {
                Some((flow, dst, payload)) => {
                    let len = payload.len() as u64;
                    f.bytes -= len;
                    // An empty packet (FIN) still costs a little, so a FIN-only flow ends.
                    f.deficit -= len.max(1) as i64;
                    return Some((flow, dst, payload));
                }
                None => {
                    pop(self);
                    if from_new {
                        // RFC 8290: an emptied new flow goes to the old list once, so it
                        // cannot regain priority by emptying and refilling at once.
                        self.old_flows.push_back(key);
                    } else {
                        self.flows.remove(&key);
                    }
                }
            }
        }
    }

    fn clear(&mut self) {
        self.flows.clear();
        self.new_flows.clear();
        self.old_flows.clear();
    }
}

pub(crate) struct HostState {
    pub(crate) ips: Vec<IpAddr>,
    pub(crate) up: bool,
    nat: Option<Nat>,
    latency: Duration,
    jitter: Duration,
    up_rate: Option<u64>,
    down_rate: Option<u64>,
    loss: f64,
    /// IP MTU of the access link (`HostConfig::mtu`).
    mtu: Option<usize>,
    uplink: Uplink,
    downlink_free: Instant,
    pub(crate) stats: Stats,
    next_udp_port: u16,
    next_tcp_port: u16,
}

pub(crate) struct UdpState {
    pub(crate) gen: u64,
    ip: IpAddr,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    wakers: Vec<Waker>,
}

pub(crate) struct ListenerState {
    pub(crate) gen: u64,
    ip: IpAddr,
    backlog: VecDeque<(ConnId, SocketAddr)>,
    wakers: Vec<Waker>,
}

/// One end of a stream connection. Receive fields describe data *arriving at* this end;
/// send fields describe data this end writes.
pub(crate) struct End {
    pub(crate) host: HostId,
    pub(crate) addr: SocketAddr,
    rbuf: VecDeque<Vec<u8>>,
    rbuf_off: usize,
    consumed: u64,
    last_ack: u64,
    fin_recv: bool,
    reader: Option<Waker>,
    sent: u64,
    acked: u64,
    /// Bytes of this end's chunks waiting in its host's uplink queue.
    queued: u64,
    fin_sent: bool,
    writer: Option<Waker>,
    last_arrival: Instant,
    stall: VecDeque<(Vec<u8>, bool)>,
    stall_since: Option<Instant>,
    retry_pending: bool,
    error: Option<io::ErrorKind>,
    dropped: bool,
}

impl End {
    fn new(host: HostId, addr: SocketAddr, now: Instant) -> End {
        End {
            host,
            addr,
            rbuf: VecDeque::new(),
            rbuf_off: 0,
            consumed: 0,
            last_ack: 0,
            fin_recv: false,
            reader: None,
            sent: 0,
            acked: 0,
            queued: 0,
            fin_sent: false,
            writer: None,
            last_arrival: now,
            stall: VecDeque::new(),
            stall_since: None,
            retry_pending: false,
            error: None,
            dropped: false,
        }
    }
}

pub(crate) struct Conn {
    pub(crate) ends: [End; 2],
}

struct PendingConnect {
    host: HostId,
    local: SocketAddr,
    remote: SocketAddr,
    dst_host: Option<HostId>,
    result: Option<Result<ConnId, io::ErrorKind>>,
    waker: Option<Waker>,
}

pub(crate) struct Core {
    pub(crate) cfg: NetworkConfig,
    rng: StdRng,
    seq: u64,
    next_id: u64,
    /// Virtual-time origin: event times are nanoseconds since this instant.
    epoch: Instant,
    events: BinaryHeap<Reverse<Key>>,
    slab: Vec<Option<EventKind>>,
    free: Vec<u32>,
    pub(crate) hosts: Vec<HostState>,
    by_ip: FastMap<IpAddr, HostId>,
    // Lookup-only maps (never iterated), so HashMap order cannot leak into behaviour.
    udp: FastMap<(HostId, u16), UdpState>,
    listeners: FastMap<(HostId, u16), ListenerState>,
    // Iterated on host down: ordered by id for determinism.
    pub(crate) conns: BTreeMap<ConnId, Conn>,
    connects: BTreeMap<u64, PendingConnect>,
    partitions: Vec<(BTreeSet<HostId>, BTreeSet<HostId>)>,
    pub(crate) total: Stats,
    wake: Vec<Waker>,
    driver_started: bool,
    driver_deadline: Option<Instant>,
    needs_notify: bool,
}

fn err(kind: io::ErrorKind, msg: &'static str) -> io::Error {
    io::Error::new(kind, msg)
}

fn ser_time(bytes: usize, rate: Option<u64>) -> Duration {
    match rate {
        None => Duration::ZERO,
        Some(r) => {
            Duration::from_nanos(((bytes as u128 * 1_000_000_000) / r.max(1) as u128) as u64)
        }
    }
}

impl Core {
    fn new(seed: u64, cfg: NetworkConfig) -> Core {
        Core {
            cfg,
            rng: StdRng::seed_from_u64(seed),
            seq: 0,
            next_id: 1,
            epoch: Instant::now(),
            events: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            hosts: Vec::new(),
            by_ip: FastMap::default(),
            udp: FastMap::default(),
            listeners: FastMap::default(),
            conns: BTreeMap::new(),
            connects: BTreeMap::new(),
            partitions: Vec::new(),
            total: Stats::default(),
            wake: Vec::new(),
            driver_started: false,
            driver_deadline: None,
            needs_notify: false,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn push(&mut self, at: Instant, kind: EventKind) {
        self.seq += 1;
        if self.driver_deadline.is_none_or(|d| at < d) {
            self.driver_deadline = Some(at);
            self.needs_notify = true;
        }
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(kind);
                i
            }
            None => {
                self.slab.push(Some(kind));
                (self.slab.len() - 1) as u32
            }
        };
        let at_ns = at.saturating_duration_since(self.epoch).as_nanos() as u64;
        self.events.push(Reverse(Key {
            at_ns,
            seq: self.seq,
            slot,
        }));
    }

    fn time_of(&self, at_ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(at_ns)
    }

    pub(crate) fn next_event(&self) -> Option<Instant> {
        self.events.peek().map(|Reverse(k)| self.time_of(k.at_ns))
    }

    // ---------------------------------------------------------------- hosts

    pub(crate) fn add_host(&mut self, hc: HostConfig, now: Instant) -> io::Result<HostId> {
        if hc.ips.is_empty() {
            return Err(err(
                io::ErrorKind::InvalidInput,
                "simnet: host needs an address",
            ));
        }
        let mut seen = BTreeSet::new();
        for ip in &hc.ips {
            if ip.is_unspecified() || self.by_ip.contains_key(ip) || !seen.insert(*ip) {
                return Err(err(
                    io::ErrorKind::AddrInUse,
                    "simnet: host address taken or invalid",
                ));
            }
        }
        let id = self.hosts.len();
        for ip in &hc.ips {
            self.by_ip.insert(*ip, id);
        }
        self.hosts.push(HostState {
            ips: hc.ips,
            up: true,
            nat: hc.nat.map(|k| Nat::new(k, self.cfg.nat_table)),
            latency: hc.latency.unwrap_or(self.cfg.latency),
            jitter: hc.jitter.unwrap_or(self.cfg.jitter),
            up_rate: hc.up_rate.unwrap_or(self.cfg.up_rate),
            down_rate: hc.down_rate.unwrap_or(self.cfg.down_rate),
            loss: hc.loss.unwrap_or(self.cfg.loss),
            mtu: hc.mtu,
            uplink: Uplink {
                fifo: hc.fifo_uplink,
                ..Uplink::default()
            },
            downlink_free: now,
            stats: Stats::default(),
            next_udp_port: EPHEMERAL_FIRST,
            next_tcp_port: EPHEMERAL_FIRST,
        });
        Ok(id)
    }

    pub(crate) fn host_by_ip(&self, ip: IpAddr) -> Option<HostId> {
        self.by_ip.get(&ip).copied()
    }

    pub(crate) fn set_up(&mut self, h: HostId, now: Instant, up: bool) {
        let Some(host) = self.hosts.get_mut(h) else {
            return;
        };
        if host.up == up {
            return;
        }
        host.up = up;
        if up {
            let host = &mut self.hosts[h];
            host.downlink_free = now;
            return;
        }
        // Queued packets die with the host (a pending `UplinkFree` finds nothing to send).
        host.uplink.clear();
        if let Some(n) = &mut host.nat {
            n.clear();
        }
        // Every socket of the host dies. Wake their waiters so they observe the error.
        let ports: Vec<(HostId, u16)> = self.udp.keys().filter(|k| k.0 == h).copied().collect();
        for k in ports {
            if let Some(s) = self.udp.remove(&k) {
                self.wake.extend(s.wakers);
            }
        }
        let ports: Vec<(HostId, u16)> = self
            .listeners
            .keys()
            .filter(|k| k.0 == h)
            .copied()
            .collect();
        for k in ports {
            if let Some(l) = self.listeners.remove(&k) {
                self.wake.extend(l.wakers);
            }
        }
        // Connections: our end aborts now, the peer sees a reset one latency later.
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(hosts) = self
                .conns
                .get(&id)
                .map(|c| [c.ends[0].host, c.ends[1].host])
            else {
                continue;
            };
            for e in 0..2 {
                if hosts[e] == h {
                    let peer_host = hosts[1 - e];
                    self.fail_end(id, e, io::ErrorKind::ConnectionAborted);
                    if peer_host != h {
                        let at = now + self.base_latency(h, peer_host);
                        self.push(
                            at,
                            EventKind::Reset {
                                conn: id,
                                end: 1 - e,
                            },
                        );
                    }
                }
            }
        }
        let ids: Vec<u64> = self
            .connects
            .iter()
            .filter(|(_, p)| p.host == h)
            .map(|(k, _)| *k)
            .collect();
        for id in ids {
            self.finish_connect(id, Err(io::ErrorKind::NetworkDown));
        }
    }

    pub(crate) fn partition(&mut self, a: &[IpAddr], b: &[IpAddr]) {
        let sa: BTreeSet<HostId> = a.iter().filter_map(|ip| self.host_by_ip(*ip)).collect();
        let sb: BTreeSet<HostId> = b.iter().filter_map(|ip| self.host_by_ip(*ip)).collect();
        self.partitions.push((sa, sb));
    }

    pub(crate) fn heal(&mut self) {
        self.partitions.clear();
    }

    fn blocked(&self, a: HostId, b: HostId) -> bool {
        self.partitions
            .iter()
            .any(|(x, y)| (x.contains(&a) && y.contains(&b)) || (x.contains(&b) && y.contains(&a)))
    }

    fn base_latency(&self, a: HostId, b: HostId) -> Duration {
        self.hosts[a].latency + self.hosts[b].latency
    }

    fn jitter(&mut self, h: HostId) -> Duration {
        let j = self.hosts[h].jitter;
        if j.is_zero() {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.rng.random_range(0..=j.as_nanos() as u64))
    }

    /// The source port a datagram from local `port` to `remote` carries past the host's NAT.
    fn nat_outbound(&mut self, h: HostId, port: u16, remote: SocketAddr) -> u16 {
        if self.host_by_ip(remote.ip()) == Some(h) {
            return port; // to itself: never through the router
        }
        match &mut self.hosts[h].nat {
            Some(n) => n.outbound(port, remote),
            None => port,
        }
    }

    /// The address a host's packets carry when its socket is bound to the wildcard address.
    fn source_ip(&self, h: HostId, bound: IpAddr, dst: IpAddr) -> IpAddr {
        if !bound.is_unspecified() {
            return bound;
        }
        let ips = &self.hosts[h].ips;
        ips.iter()
            .find(|ip| ip.is_ipv4() == dst.is_ipv4())
            .or(ips.first())
            .copied()
            .unwrap_or(bound)
    }

    fn check_local(&self, h: HostId, addr: SocketAddr) -> io::Result<()> {
        let host = &self.hosts[h];
        if !host.up {
            return Err(err(io::ErrorKind::NetworkDown, "simnet: host is down"));
        }
        if !addr.ip().is_unspecified() && !host.ips.contains(&addr.ip()) {
            return Err(err(
                io::ErrorKind::AddrNotAvailable,
                "simnet: address not on this host",
            ));
        }
        Ok(())
    }

    fn pick_port(&mut self, h: HostId, tcp: bool) -> io::Result<u16> {
        for _ in 0..=(u16::MAX - EPHEMERAL_FIRST) {
            let host = &mut self.hosts[h];
            let next = if tcp {
                &mut host.next_tcp_port
            } else {
                &mut host.next_udp_port
            };
            let p = *next;
            *next = if p == u16::MAX {
                EPHEMERAL_FIRST
            } else {
                p + 1
            };
            let taken = if tcp {
                self.listeners.contains_key(&(h, p))
            } else {
                self.udp.contains_key(&(h, p))
            };
            if !taken {
                return Ok(p);
            }
        }
        Err(err(
            io::ErrorKind::AddrInUse,
            "simnet: no free ephemeral port",
        ))
    }

    // ---------------------------------------------------------------- UDP

    pub(crate) fn bind_udp(
        &mut self,
        h: HostId,
        addr: SocketAddr,
    ) -> io::Result<(SocketAddr, u64)> {
        self.check_local(h, addr)?;
        let port = if addr.port() == 0 {
            self.pick_port(h, false)?
        } else {
            addr.port()
        };
        if self.udp.contains_key(&(h, port)) {
            return Err(err(io::ErrorKind::AddrInUse, "simnet: UDP port in use"));
        }
        let gen = self.id();
        self.udp.insert(
            (h, port),
            UdpState {
                gen,
                ip: addr.ip(),
                queue: VecDeque::new(),
                wakers: Vec::new(),
            },
        );
        Ok((SocketAddr::new(addr.ip(), port), gen))
    }

    pub(crate) fn udp_state(
        &mut self,
        h: HostId,
        port: u16,
        gen: u64,
    ) -> io::Result<&mut UdpState> {
        match self.udp.get_mut(&(h, port)) {
            Some(s) if s.gen == gen => Ok(s),
            _ => Err(err(
                io::ErrorKind::NetworkDown,
                "simnet: socket closed (host went down)",
            )),
        }
    }

    pub(crate) fn close_udp(&mut self, h: HostId, port: u16, gen: u64) {
        if self.udp.get(&(h, port)).is_some_and(|s| s.gen == gen) {
            self.udp.remove(&(h, port));
        }
    }

    /// Takes the next datagram for a socket, or registers `waker`.
    pub(crate) fn udp_recv(
        &mut self,
        h: HostId,
        port: u16,
        gen: u64,
        waker: &Waker,
    ) -> io::Result<Option<(SocketAddr, Vec<u8>)>> {
        let s = self.udp_state(h, port, gen)?;
        if let Some(d) = s.queue.pop_front() {
            return Ok(Some(d));
        }
        if !s.wakers.iter().any(|w| w.will_wake(waker)) {
            s.wakers.push(waker.clone());
        }
        Ok(None)
    }

    pub(crate) fn udp_send(
        &mut self,
        now: Instant,
        h: HostId,
        port: u16,
        gen: u64,
        buf: &[u8],
        dst: SocketAddr,
    ) -> io::Result<usize> {
        if buf.len() > MAX_DATAGRAM {
            return Err(err(
                io::ErrorKind::InvalidInput,
                "simnet: datagram too large",
            ));
        }
        let bound_ip = self.udp_state(h, port, gen)?.ip;
        let src_port = self.nat_outbound(h, port, dst);
        let src = SocketAddr::new(self.source_ip(h, bound_ip, dst.ip()), src_port);
        let len = buf.len() as u64;
        let host = &mut self.hosts[h];
        host.stats.packets_sent += 1;
        host.stats.bytes_sent += len;
        self.total.packets_sent += 1;
        self.total.bytes_sent += len;
        let Some(dst_host) = self.host_by_ip(dst.ip()) else {
            self.count_drop(h, buf.len());
            return Ok(buf.len());
        };
        // Too big for the path MTU: dropped, with no ICMP error (a black hole).
        let ip_header = if dst.is_ipv4() { 28 } else { 48 };
        let path_mtu = match (self.hosts[h].mtu, self.hosts[dst_host].mtu) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if path_mtu.is_some_and(|m| buf.len() + ip_header > m) {
            self.count_drop(h, buf.len());
            return Ok(buf.len());
        }
        let loss = 1.0 - (1.0 - self.hosts[h].loss) * (1.0 - self.hosts[dst_host].loss);
        if loss > 0.0 && self.rng.random::<f64>() < loss {
            self.count_drop(h, buf.len());
            return Ok(buf.len());
        }
        let payload = Payload::Datagram {
            src,
            dst,
            data: buf.to_vec(),
        };
        self.transmit(now, h, dst_host, FlowKey::Dgram(port), payload);
        Ok(buf.len())
    }

    fn count_drop(&mut self, h: HostId, len: usize) {
        let s = &mut self.hosts[h].stats;
        s.packets_dropped += 1;
        s.bytes_dropped += len as u64;
        self.total.packets_dropped += 1;
        self.total.bytes_dropped += len as u64;
    }

    fn count_delivered(&mut self, h: HostId, len: usize) {
        let s = &mut self.hosts[h].stats;
        s.packets_delivered += 1;
        s.bytes_delivered += len as u64;
        self.total.packets_delivered += 1;
        self.total.bytes_delivered += len as u64;
    }

    /// Hands a packet to the sender's uplink. Unlimited uplinks put it on the wire at once;
    /// otherwise it joins its flow's queue and the DRR scheduler sends it in turn.
    /// Returns false if the queue dropped it (a datagram flow over its buffer).
    fn transmit(
        &mut self,
        now: Instant,
        src: HostId,
        dst: HostId,
        key: FlowKey,
        payload: Payload,
    ) -> bool {
        let host = &mut self.hosts[src];
        let Some(rate) = host.up_rate else {
            self.wire(now, now, src, dst, payload);
            return true;
        };
        if let FlowKey::Dgram(_) = key {
            // Router/qdisc buffer per flow (the whole buffer on a FIFO uplink): what the
            // link sends in `max_queue_delay`.
            let limit = (rate as u128 * self.cfg.max_queue_delay.as_nanos() / 1_000_000_000) as u64;
            if host.uplink.flow_bytes(key) + payload.len() as u64 > limit {
                self.count_drop(src, payload.len());
                return false;
            }
        }
        host.uplink.enqueue(key, dst, payload);
        if !host.uplink.busy {
            self.uplink_next(now, src);
        }
        true
    }

    /// The uplink of `src` is idle at `now`: start serialising the next packet, if any.
    fn uplink_next(&mut self, now: Instant, src: HostId) {
        let host = &mut self.hosts[src];
        let Some((key, dst, payload)) = host.uplink.dequeue() else {
            host.uplink.busy = false;
            return;
        };
        let depart = now + ser_time(payload.len(), host.up_rate);
        host.uplink.busy = true;
        self.push(depart, EventKind::UplinkFree { host: src });
        if let FlowKey::Stream(conn, from) = key {
            // The chunk left the socket's send queue: its writer may queue more.
            if let Some(c) = self.conns.get_mut(&conn) {
                let e = &mut c.ends[from];
                e.queued = e.queued.saturating_sub(payload.len() as u64);
                if let Some(w) = e.writer.take() {
                    self.wake.push(w);
                }
            }
        }
        self.wire(now, depart, src, dst, payload);
    }

    /// The packet leaves `src`'s uplink at `depart`: latency and jitter to `dst`'s downlink.
    fn wire(&mut self, _now: Instant, depart: Instant, src: HostId, dst: HostId, payload: Payload) {
        let lat = self.base_latency(src, dst) + self.jitter(src) + self.jitter(dst);
        let mut at = depart + lat;
        if let Payload::Chunk { conn, from, .. } = payload {
            if let Some(c) = self.conns.get_mut(&conn) {
                // Stream bytes never overtake each other.
                let e = &mut c.ends[from];
                at = at.max(e.last_arrival);
                e.last_arrival = at;
            }
        }
        self.push(
            at,
            EventKind::Arrive {
                src_host: src,
                dst_host: dst,
                payload,
            },
        );
    }

    fn on_arrive(&mut self, now: Instant, src: HostId, dst: HostId, mut payload: Payload) {
        let size = payload.len();
        let is_dgram = matches!(payload, Payload::Datagram { .. });
        if is_dgram {
            let ok = self.hosts[dst].up && !self.blocked(src, dst);
            let nat_ok = match (&mut payload, &self.hosts[dst].nat) {
                (
                    Payload::Datagram {
                        src: from, dst: to, ..
                    },
                    Some(n),
                ) if src != dst => {
                    // The router translates the external port back to the local one.
                    n.inbound(to.port(), *from)
                        .map(|p| to.set_port(p))
                        .is_some()
                }
                _ => true,
            };
            if !ok || !nat_ok {
                self.count_drop(src, size);
                return;
            }
        }
        let max_q = self.cfg.max_queue_delay;
        let host = &mut self.hosts[dst];
        if host.down_rate.is_none() {
            self.deliver(src, dst, payload);
            return;
        }
        let start = host.downlink_free.max(now);
        if is_dgram && start - now > max_q {
            self.count_drop(src, size);
            return;
        }
        let at = start + ser_time(size, host.down_rate);
        host.downlink_free = at;
        self.push(
            at,
            EventKind::Deliver {
                src_host: src,
                dst_host: dst,
                payload,
            },
        );
    }

    fn deliver(&mut self, src: HostId, dst: HostId, payload: Payload) {
        let size = payload.len();
        match payload {
            Payload::Datagram {
                src: from,
                dst: to,
                data,
            } => {
                let limit = self.cfg.recv_queue;
                let ok = self.hosts[dst].up;
                let sock = self
                    .udp
                    .get_mut(&(dst, to.port()))
                    .filter(|s| ok && (s.ip.is_unspecified() || s.ip == to.ip()));
                match sock {
                    Some(s) if s.queue.len() < limit => {
                        s.queue.push_back((from, data));
                        self.wake.append(&mut s.wakers);
                        self.count_delivered(dst, size);
                    }
                    _ => self.count_drop(src, size),
                }
            }
            Payload::Chunk {
                conn,
                from,
                data,
                fin,
            } => {
                let to = 1 - from;
                let Some(c) = self.conns.get_mut(&conn) else {
                    self.count_drop(src, size);
                    return;
                };
                let e = &mut c.ends[to];
                if e.error.is_some() {
                    self.count_drop(src, size);
                    return;
                }
                if e.dropped {
                    // Data for a closed socket: the kernel answers with a reset.
                    self.count_drop(src, size);
                    if !data.is_empty() {
                        self.fail_end(conn, from, io::ErrorKind::ConnectionReset);
                    }
                    return;
                }
                if !data.is_empty() {
                    e.rbuf.push_back(data);
                }
                if fin {
                    e.fin_recv = true;
                }
                if let Some(w) = e.reader.take() {
                    self.wake.push(w);
                }
                self.count_delivered(dst, size);
            }
        }
    }

    // ---------------------------------------------------------------- streams

    pub(crate) fn listen(&mut self, h: HostId, addr: SocketAddr) -> io::Result<(SocketAddr, u64)> {
        self.check_local(h, addr)?;
        let port = if addr.port() == 0 {
            self.pick_port(h, true)?
        } else {
            addr.port()
        };
        if self.listeners.contains_key(&(h, port)) {
            return Err(err(io::ErrorKind::AddrInUse, "simnet: TCP port in use"));
        }
        let gen = self.id();
        self.listeners.insert(
            (h, port),
            ListenerState {
                gen,
                ip: addr.ip(),
                backlog: VecDeque::new(),
                wakers: Vec::new(),
            },
        );
        Ok((SocketAddr::new(addr.ip(), port), gen))
    }

    pub(crate) fn accept(
        &mut self,
        h: HostId,
        port: u16,
        gen: u64,
        waker: &Waker,
    ) -> io::Result<Option<(ConnId, SocketAddr, SocketAddr)>> {
        let l = match self.listeners.get_mut(&(h, port)) {
            Some(l) if l.gen == gen => l,
            _ => {
                return Err(err(
                    io::ErrorKind::NetworkDown,
                    "simnet: listener closed (host went down)",
                ))
            }
        };
        if let Some((conn, peer)) = l.backlog.pop_front() {
            let local = self
                .conns
                .get(&conn)
                .map(|c| c.ends[1].addr)
                .unwrap_or(peer);
            return Ok(Some((conn, local, peer)));
        }
        if !l.wakers.iter().any(|w| w.will_wake(waker)) {
            l.wakers.push(waker.clone());
        }
        Ok(None)
    }

    pub(crate) fn close_listener(&mut self, now: Instant, h: HostId, port: u16, gen: u64) {
        if self.listeners.get(&(h, port)).is_none_or(|l| l.gen != gen) {
            return;
        }
        if let Some(l) = self.listeners.remove(&(h, port)) {
            for (conn, _) in l.backlog {
                self.drop_end(now, conn, 1);
            }
        }
    }

    pub(crate) fn start_connect(
        &mut self,
        now: Instant,
        h: HostId,
        remote: SocketAddr,
    ) -> io::Result<u64> {
        let host = &self.hosts[h];
        if !host.up {
            return Err(err(io::ErrorKind::NetworkDown, "simnet: host is down"));
        }
        let ip = self.source_ip(h, IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), remote.ip());
        let port = self.pick_port(h, true)?;
        let id = self.id();
        let dst_host = self.host_by_ip(remote.ip());
        self.connects.insert(
            id,
            PendingConnect {
                host: h,
                local: SocketAddr::new(ip, port),
                remote,
                dst_host,
                result: None,
                waker: None,
            },
        );
        self.push(
            now + self.cfg.connect_timeout,
            EventKind::ConnectTimeout { connect: id },
        );
        let reachable = dst_host.is_some_and(|d| self.hosts[d].up && !self.blocked(h, d));
        if let (Some(d), true) = (dst_host, reachable) {
            let at = now + self.base_latency(h, d) + self.jitter(h) + self.jitter(d);
            self.push(at, EventKind::Syn { connect: id });
        }
        Ok(id)
    }

    pub(crate) fn poll_connect(
        &mut self,
        id: u64,
        waker: &Waker,
    ) -> Option<io::Result<(ConnId, SocketAddr, SocketAddr)>> {
        let p = self.connects.get_mut(&id)?;
        match p.result.take() {
            Some(r) => {
                let p = self.connects.remove(&id)?;
                Some(match r {
                    Ok(c) => Ok((c, p.local, p.remote)),
                    Err(kind) => Err(io::Error::new(kind, connect_msg(kind))),
                })
            }
            None => {
                p.waker = Some(waker.clone());
                None
            }
        }
    }

    /// The connect future was dropped before completing.
    pub(crate) fn cancel_connect(&mut self, now: Instant, id: u64) {
        if let Some(p) = self.connects.remove(&id) {
            if let Some(Ok(conn)) = p.result {
                self.drop_end(now, conn, 0);
            }
        }
    }

    fn finish_connect(&mut self, id: u64, r: Result<ConnId, io::ErrorKind>) {
        if let Some(p) = self.connects.get_mut(&id) {
            if p.result.is_none() {
                p.result = Some(r);
                if let Some(w) = p.waker.take() {
                    self.wake.push(w);
                }
            }
        }
    }

    fn on_syn(&mut self, now: Instant, id: u64) {
        let Some(p) = self.connects.get(&id) else {
            return;
        };
        let (src, local, remote) = (p.host, p.local, p.remote);
        let Some(dst) = p.dst_host else { return };
        if !self.hosts[dst].up {
            return; // SYN lost: the connect times out.
        }
        if self.hosts[dst]
            .nat
            .as_ref()
            .is_some_and(|n| !n.admits_syn(local))
        {
            return; // A NAT drops unsolicited SYNs: the connect times out.
        }
        let back = now + self.base_latency(src, dst);
        let backlog = self.cfg.accept_backlog;
        let ok = self.listeners.get(&(dst, remote.port())).is_some_and(|l| {
            (l.ip.is_unspecified() || l.ip == remote.ip()) && l.backlog.len() < backlog
        });
        if !ok {
            self.push(
                back,
                EventKind::ConnectDone {
                    connect: id,
                    result: Err(io::ErrorKind::ConnectionRefused),
                },
            );
            return;
        }
        let conn = self.id();
        self.conns.insert(
            conn,
            Conn {
                ends: [End::new(src, local, now), End::new(dst, remote, now)],
            },
        );
        if let Some(l) = self.listeners.get_mut(&(dst, remote.port())) {
            l.backlog.push_back((conn, local));
            self.wake.append(&mut l.wakers);
        }
        self.push(
            back,
            EventKind::ConnectDone {
                connect: id,
                result: Ok(conn),
            },
        );
    }

    fn on_connect_done(&mut self, now: Instant, id: u64, r: Result<ConnId, io::ErrorKind>) {
        if self.connects.contains_key(&id) {
            self.finish_connect(id, r);
        } else if let Ok(conn) = r {
            // Nobody waits for this connection any more (cancelled, or host went down).
            self.drop_end(now, conn, 0);
        }
    }

    /// Marks an end failed and wakes its reader and writer.
    fn fail_end(&mut self, conn: ConnId, end: usize, kind: io::ErrorKind) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let e = &mut c.ends[end];
        if e.error.is_none() {
            e.error = Some(kind);
        }
        e.stall.clear();
        if let Some(w) = e.reader.take() {
            self.wake.push(w);
        }
        if let Some(w) = e.writer.take() {
            self.wake.push(w);
        }
        self.maybe_remove(conn);
    }

    fn maybe_remove(&mut self, conn: ConnId) {
        if self
            .conns
            .get(&conn)
            .is_some_and(|c| c.ends.iter().all(|e| e.dropped))
        {
            self.conns.remove(&conn);
        }
    }

    /// A stream handle was dropped: graceful FIN if its receive side is drained, else reset.
    pub(crate) fn drop_end(&mut self, now: Instant, conn: ConnId, end: usize) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let e = &mut c.ends[end];
        e.dropped = true;
        e.reader = None;
        e.writer = None;
        let failed = e.error.is_some();
        let unread = !e.rbuf.is_empty();
        let fin_sent = e.fin_sent;
        let (h, peer) = (e.host, c.ends[1 - end].host);
        if !failed {
            if unread {
                let at = now + self.base_latency(h, peer);
                self.push(at, EventKind::Reset { conn, end: 1 - end });
            } else if !fin_sent {
                self.send_chunk(now, conn, end, Vec::new(), true);
            }
        }
        self.maybe_remove(conn);
    }

    pub(crate) fn stream_read(
        &mut self,
        now: Instant,
        conn: ConnId,
        end: usize,
        buf: &mut [u8],
        waker: &Waker,
    ) -> Option<io::Result<usize>> {
        let window = self.cfg.stream_window as u64;
        let Some(c) = self.conns.get_mut(&conn) else {
            return Some(Err(err(
                io::ErrorKind::NotConnected,
                "simnet: stream closed",
            )));
        };
        let peer_host = c.ends[1 - end].host;
        let e = &mut c.ends[end];
        if let Some(kind) = e.error {
            return Some(Err(io::Error::new(kind, stream_msg(kind))));
        }
        if e.rbuf.is_empty() {
            if e.fin_recv || buf.is_empty() {
                return Some(Ok(0));
            }
            e.reader = Some(waker.clone());
            return None;
        }
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = e.rbuf.front() else { break };
            let avail = &front[e.rbuf_off..];
            let k = avail.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&avail[..k]);
            n += k;
            e.rbuf_off += k;
            if e.rbuf_off == front.len() {
                e.rbuf.pop_front();
                e.rbuf_off = 0;
            }
        }
        e.consumed += n as u64;
        // Window updates travel back to the writer. Coalesced: once a quarter window has
        // been read, or whenever the buffer drains (so a blocked writer always hears).
        if e.consumed - e.last_ack >= window / 4 || e.rbuf.is_empty() {
            e.last_ack = e.consumed;
            let consumed = e.consumed;
            let host = e.host;
            let at = now + self.base_latency(host, peer_host);
            self.push(
                at,
                EventKind::Ack {
                    conn,
                    from: 1 - end,
                    consumed,
                },
            );
        }
        Some(Ok(n))
    }

    pub(crate) fn stream_write(
        &mut self,
        now: Instant,
        conn: ConnId,
        end: usize,
        buf: &[u8],
        waker: &Waker,
    ) -> Option<io::Result<usize>> {
        let window = self.cfg.stream_window as u64;
        let queue_cap = self.cfg.stream_queue.max(1) as u64;
        let Some(c) = self.conns.get_mut(&conn) else {
            return Some(Err(err(
                io::ErrorKind::NotConnected,
                "simnet: stream closed",
            )));
        };
        let e = &mut c.ends[end];
        if let Some(kind) = e.error {
            return Some(Err(io::Error::new(kind, stream_msg(kind))));
        }
        if e.fin_sent {
            return Some(Err(err(
                io::ErrorKind::BrokenPipe,
                "simnet: stream shut down for writing",
            )));
        }
        if buf.is_empty() {
            return Some(Ok(0));
        }
        // TCP keeps little in the host queue (cwnd, TCP small queues): a stream may have
        // `stream_queue` bytes waiting in its uplink, the rest stays in the application.
        let credit = window
            .saturating_sub(e.sent - e.acked)
            .min(queue_cap.saturating_sub(e.queued));
        if credit == 0 {
            e.writer = Some(waker.clone());
            return None;
        }
        let n = buf.len().min(credit as usize).min(MAX_CHUNK);
        e.sent += n as u64;
        self.send_chunk(now, conn, end, buf[..n].to_vec(), false);
        Some(Ok(n))
    }

    pub(crate) fn stream_shutdown(
        &mut self,
        now: Instant,
        conn: ConnId,
        end: usize,
    ) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Err(err(io::ErrorKind::NotConnected, "simnet: stream closed"));
        };
        let e = &mut c.ends[end];
        if let Some(kind) = e.error {
            return Err(io::Error::new(kind, stream_msg(kind)));
        }
        if !e.fin_sent {
            e.fin_sent = true;
            self.send_chunk(now, conn, end, Vec::new(), true);
        }
        Ok(())
    }

    fn send_chunk(&mut self, now: Instant, conn: ConnId, from: usize, data: Vec<u8>, fin: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let (src, dst) = (c.ends[from].host, c.ends[1 - from].host);
        if fin {
            c.ends[from].fin_sent = true;
        }
        let stalled = !c.ends[from].stall.is_empty();
        if stalled || self.blocked(src, dst) {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let e = &mut c.ends[from];
            e.stall.push_back((data, fin));
            e.stall_since.get_or_insert(now);
            if !e.retry_pending {
                e.retry_pending = true;
                self.push(now + STREAM_RTO, EventKind::Retry { conn, from });
            }
            return;
        }
        self.put_chunk(now, conn, from, src, dst, data, fin);
    }

    #[allow(clippy::too_many_arguments)]
    fn put_chunk(
        &mut self,
        now: Instant,
        conn: ConnId,
        from: usize,
        src: HostId,
        dst: HostId,
        data: Vec<u8>,
        fin: bool,
    ) {
        let len = data.len() as u64;
        let s = &mut self.hosts[src].stats;
        s.packets_sent += 1;
        s.bytes_sent += len;
        self.total.packets_sent += 1;
        self.total.bytes_sent += len;
        if self.hosts[src].up_rate.is_some() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.ends[from].queued += len;
            }
        }
        self.transmit(
            now,
            src,
            dst,
            FlowKey::Stream(conn, from),
            Payload::Chunk {
                conn,
                from,
                data,
                fin,
            },
        );
    }

    fn on_retry(&mut self, now: Instant, conn: ConnId, from: usize) {
        let timeout = self.cfg.stream_timeout;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let (src, dst) = (c.ends[from].host, c.ends[1 - from].host);
        c.ends[from].retry_pending = false;
        if c.ends[from].error.is_some() {
            return;
        }
        let since = c.ends[from].stall_since.unwrap_or(now);
        if !self.blocked(src, dst) {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let stall = std::mem::take(&mut c.ends[from].stall);
            c.ends[from].stall_since = None;
            for (data, fin) in stall {
                self.put_chunk(now, conn, from, src, dst, data, fin);
            }
            return;
        }
        if now - since >= timeout {
            // Retransmissions exhausted: both sides give up on the connection.
            self.fail_end(conn, from, io::ErrorKind::TimedOut);
            self.fail_end(conn, 1 - from, io::ErrorKind::TimedOut);
            return;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.ends[from].retry_pending = true;
        }
        self.push(now + STREAM_RTO, EventKind::Retry { conn, from });
    }

    fn on_ack(&mut self, conn: ConnId, from: usize, consumed: u64) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let e = &mut c.ends[from];
        e.acked = e.acked.max(consumed).min(e.sent);
        if let Some(w) = e.writer.take() {
            self.wake.push(w);
        }
    }

    // ---------------------------------------------------------------- driver

    fn run_due(&mut self, now: Instant) {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        while let Some(Reverse(k)) = self.events.peek() {
            if k.at_ns > now_ns {
                break;
            }
            let Some(Reverse(k)) = self.events.pop() else {
                break;
            };
            let Some(kind) = self.slab.get_mut(k.slot as usize).and_then(Option::take) else {
                continue;
            };
            self.free.push(k.slot);
            // Process at the event's own time so the link model is not skewed by the
            // clock's granularity (tokio timers fire on millisecond ticks).
            let t = self.time_of(k.at_ns);
            match kind {
                EventKind::Arrive {
                    src_host,
                    dst_host,
                    payload,
                } => self.on_arrive(t, src_host, dst_host, payload),
                EventKind::Deliver {
                    src_host,
                    dst_host,
                    payload,
                } => self.deliver(src_host, dst_host, payload),
                EventKind::Syn { connect } => self.on_syn(t, connect),
                EventKind::ConnectDone { connect, result } => {
                    self.on_connect_done(t, connect, result)
                }
                EventKind::ConnectTimeout { connect } => {
                    self.finish_connect(connect, Err(io::ErrorKind::TimedOut))
                }
                EventKind::Ack {
                    conn,
                    from,
                    consumed,
                } => self.on_ack(conn, from, consumed),
                EventKind::Reset { conn, end } => {
                    self.fail_end(conn, end, io::ErrorKind::ConnectionReset)
                }
                EventKind::Retry { conn, from } => self.on_retry(t, conn, from),
                EventKind::UplinkFree { host } => self.uplink_next(t, host),
            }
        }
    }
}

fn connect_msg(kind: io::ErrorKind) -> &'static str {
    match kind {
        io::ErrorKind::ConnectionRefused => "simnet: connection refused",
        io::ErrorKind::TimedOut => "simnet: connect timed out",
        io::ErrorKind::NetworkDown => "simnet: host went down",
        _ => "simnet: connect failed",
    }
}

fn stream_msg(kind: io::ErrorKind) -> &'static str {
    match kind {
        io::ErrorKind::ConnectionReset => "simnet: connection reset by peer",
        io::ErrorKind::ConnectionAborted => "simnet: connection aborted (host went down)",
        io::ErrorKind::TimedOut => "simnet: connection timed out",
        _ => "simnet: stream error",
    }
}
