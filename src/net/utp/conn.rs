//! One uTP connection as a pure state machine (BEP 29): no sockets, no clock of its own.
//! The caller feeds it packets ([`Conn::on_packet`]), bytes to send ([`Conn::write`]) and
//! the time ([`Conn::on_timer`] at [`Conn::deadline`]); it answers with datagrams to send
//! ([`Conn::take_out`]) and bytes to read ([`Conn::read`]).
//!
//! - Handshake: the initiator sends SYN (connection id = its receive id, sequence 1); the
//!   responder answers STATE with a random sequence number it has not consumed yet.
//! - Reliability: cumulative ACK plus selective ACK both ways; a packet is retransmitted
//!   on three duplicate ACKs or when three later packets are selectively acknowledged
//!   (fast retransmit), else when the retransmission timer fires (doubling each time; the
//!   connection gives up after [`Config::max_timeouts`] in a row).
//! - Receive side: in-order delivery with a reorder buffer, both bounded by the receive
//!   buffer, which is also the window we advertise.
//! - Congestion: [`Ledbat`] (target delay 100 ms), capped by the peer's advertised window.
//! - Path MTU (RFC 4821's packetization-layer discovery, as libtorrent and libutp do it):
//!   packets are cut to the largest datagram known to arrive, starting from
//!   [`Config::mtu_floor`]. Now and then one DATA packet is padded up to a probe size,
//!   halfway to [`Config::mtu_ceiling`] (binary search); acknowledged on its first send, the
//!   size is proven and packets grow; lost, the ceiling comes down, and the packet goes
//!   again unpadded, so a lost probe costs one retransmission and no congestion cut.
//! - End: FIN after the last byte written; RESET either way closes at once.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::ledbat::Ledbat;
use super::packet::{encode, encode_padded, seq_lt, Header, Packet, Type, HEADER_LEN};

/// Tunables of a connection.
#[derive(Clone, Debug)]
pub struct Config {
    /// Datagram bytes (uTP header included) assumed to cross any path: the IPv6 minimum
    /// MTU (1280) less the IPv6 and UDP headers. Packets start at this size.
    pub mtu_floor: usize,
    /// Largest datagram probed for: an Ethernet MTU (1500) less IP and UDP headers (1472
    /// for IPv4, 1452 for IPv6).
    pub mtu_ceiling: usize,
    /// Bytes received and not yet read (in order or not): also our advertised window.
    pub recv_buf: usize,
    /// Bytes written and not yet sent.
    pub send_buf: usize,
    /// Largest congestion window.
    pub max_cwnd: usize,
    /// LEDBAT's target queuing delay.
    pub target_delay: Duration,
    /// Most the congestion window grows per round trip (bytes).
    pub max_cwnd_gain: usize,
    /// Out-of-order packets kept at most.
    pub reorder_max: usize,
    /// Retransmission timeouts in a row before the connection is given up.
    pub max_timeouts: u32,
    /// The same for the SYN.
    pub syn_retries: u32,
    /// The first retransmission timeout, before any RTT sample.
    pub initial_rto: Duration,
    /// The smallest retransmission timeout.
    pub min_rto: Duration,
    /// An idle connection sends an ACK this often (keeps NAT mappings open).
    pub keepalive: Duration,
    /// Nothing received for this long: the peer is gone.
    pub idle_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mtu_floor: 1280 - 48,
            mtu_ceiling: 1500 - 48,
            recv_buf: 1 << 20,
            send_buf: 1 << 20,
            max_cwnd: 1 << 20,
            target_delay: Duration::from_millis(100),
            max_cwnd_gain: 3000,
            reorder_max: 1024,
            max_timeouts: 6,
            syn_retries: 3,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(500),
            keepalive: Duration::from_secs(29),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Where the connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// We sent SYN and wait for the answer.
    SynSent,
    /// We answered a SYN and wait for the initiator's first packet (half open).
    SynRecv,
    Connected,
    Closed(CloseReason),
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both FINs sent and acknowledged (or received).
    Done,
    /// A RESET, sent or received.
    Reset,
    /// Retransmissions or the idle timer gave up.
    TimedOut,
}

/// A packet sent and not acknowledged yet.
#[derive(Debug)]
struct Sent {
    seq: u16,
    ty: Type,
    payload: Vec<u8>,
    sent_at: Instant,
    sends: u32,
    /// Selectively acknowledged: in the peer's reorder buffer.
    sacked: bool,
    /// Deemed lost: waits to be sent again (not counted in flight).
    lost: bool,
    /// Already retransmitted by fast retransmit since the last timeout.
    fast_resent: bool,
    /// Sent padded to this datagram size as a path MTU probe (first send only).
    probe: Option<usize>,
}

/// Room kept in every datagram for the largest selective ACK we send (2 + 32 bytes), so a
/// retransmission carrying one still fits the size its payload was cut for.
const SACK_ROOM: usize = 34;
/// Probing stops once the floor is this close to the ceiling.
const MTU_CLOSE_ENOUGH: usize = 16;
/// A path's MTU can change: the search starts over this long after it settled.
const MTU_REPROBE: Duration = Duration::from_secs(600);

/// Path MTU discovery state (datagram bytes, uTP header included).
#[derive(Debug)]
struct PathMtu {
    /// The largest size known to arrive: packets are cut to it.
    floor: usize,
    /// Sizes above this were lost as probes.
    ceiling: usize,
    /// The probe in flight: sequence number and datagram size.
    probe: Option<(u16, usize)>,
    /// No new probe before this (set once the search has settled).
    idle_until: Option<Instant>,
}

impl PathMtu {
    /// The size to probe next, if a probe is due.
    fn next_probe(&self, now: Instant) -> Option<usize> {
        if self.probe.is_some()
            || self.ceiling < self.floor + MTU_CLOSE_ENOUGH
            || self.idle_until.is_some_and(|t| now < t)
        {
            return None;
        }
        Some((self.floor + self.ceiling).div_ceil(2))
    }
}

/// The state machine of one connection.
#[derive(Debug)]
pub struct Conn {
    cfg: Config,
    epoch: Instant,
    state: State,
    send_id: u16,
    recv_id: u16,
    /// The next sequence number we send.
    seq_nr: u16,
    /// The last sequence number received in order.
    ack_nr: u16,
    last_ack_recv: Option<u16>,
    dup_acks: u32,
    send_buf: VecDeque<u8>,
    flight: VecDeque<Sent>,
    /// Payload bytes of `flight` neither selectively acknowledged nor deemed lost.
    flight_bytes: usize,
    /// A packet of `flight` may be marked lost (waiting to be sent again).
    maybe_lost: bool,
    cc: Ledbat,
    mtu: PathMtu,
    peer_wnd: usize,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    rto_at: Option<Instant>,
    timeouts: u32,
    fin_wanted: bool,
    fin_sent: bool,
    fin_acked: bool,
    recv_buf: VecDeque<u8>,
    reorder: HashMap<u16, (Type, Vec<u8>)>,
    reorder_bytes: usize,
    /// The peer's FIN, once seen (in order or not).
    eof_seq: Option<u16>,
    /// The peer's FIN was delivered in order: reads end once `recv_buf` is empty.
    fin_received: bool,
    reply_micro: u32,
    need_ack: bool,
    last_adv: usize,
    last_recv: Instant,
    last_send: Instant,
    out: Vec<Vec<u8>>,
}

impl Conn {
    fn new(
        cfg: Config,
        epoch: Instant,
        now: Instant,
        state: State,
        send_id: u16,
        recv_id: u16,
    ) -> Conn {
        let floor = cfg.mtu_floor.max(HEADER_LEN + SACK_ROOM + 1);
        let mss = floor - HEADER_LEN - SACK_ROOM;
        let ceiling = cfg.mtu_ceiling.max(floor);
        let cc = Ledbat::new(
            4 * mss,
            mss,
            cfg.max_cwnd.max(mss),
            cfg.target_delay,
            cfg.max_cwnd_gain,
        );
        Conn {
            rto: cfg.initial_rto,
            cfg,
            epoch,
            state,
            send_id,
            recv_id,
            seq_nr: 1,
            ack_nr: 0,
            last_ack_recv: None,
            dup_acks: 0,
            send_buf: VecDeque::new(),
            flight: VecDeque::new(),
            flight_bytes: 0,
            maybe_lost: false,
            cc,
            mtu: PathMtu {
                floor,
                ceiling,
                probe: None,
                idle_until: None,
            },
            peer_wnd: mss,
            srtt: None,
            rttvar: Duration::ZERO,
            rto_at: None,
            timeouts: 0,
            fin_wanted: false,
            fin_sent: false,
            fin_acked: false,
            recv_buf: VecDeque::new(),
            reorder: HashMap::new(),
            reorder_bytes: 0,
            eof_seq: None,
            fin_received: false,
            reply_micro: 0,
            need_ack: false,
            last_adv: 0,
            last_recv: now,
            last_send: now,
            out: Vec::new(),
        }
    }

    /// Opens a connection: queues the SYN. `recv_id` is the id the peer will address us by.
    pub fn connect(cfg: Config, epoch: Instant, now: Instant, recv_id: u16) -> Conn {
        let mut c = Conn::new(
            cfg,
            epoch,
            now,
            State::SynSent,
            recv_id.wrapping_add(1),
            recv_id,
        );
        c.send_new(Type::Syn, Vec::new(), now);
        c
    }

    /// Answers a SYN: queues the STATE. `our_seq` is our first sequence number (random).
    pub fn accept(cfg: Config, epoch: Instant, now: Instant, syn: &Header, our_seq: u16) -> Conn {
        let mut c = Conn::new(
            cfg,
            epoch,
            now,
            State::SynRecv,
            syn.conn_id,
            syn.conn_id.wrapping_add(1),
        );
        c.seq_nr = our_seq;
        c.ack_nr = syn.seq;
        c.peer_wnd = syn.wnd as usize;
        c.reply_micro = c.delay_to(syn.ts, now);
        c.need_ack = true;
        c.transmit(now);
        c
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The id packets from the peer carry.
    #[cfg(test)]
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// The current congestion window (bytes).
    pub fn cwnd(&self) -> usize {
        self.cc.cwnd()
    }

    /// The smoothed round-trip time, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    fn micros(&self, now: Instant) -> u32 {
        // Never 0: a zero timestamp means "no sample" to the peer.
        (now.saturating_duration_since(self.epoch).as_micros() as u32).max(1)
    }

    fn delay_to(&self, their_ts: u32, now: Instant) -> u32 {
        if their_ts == 0 {
            0
        } else {
            self.micros(now).wrapping_sub(their_ts)
        }
    }

    /// Free room in the receive buffer: the window we advertise.
    fn room(&self) -> usize {
        self.cfg
            .recv_buf
            .saturating_sub(self.recv_buf.len() + self.reorder_bytes)
    }

    /// Bytes the application may still write now.
    pub fn write_room(&self) -> usize {
        self.cfg.send_buf.saturating_sub(self.send_buf.len())
    }

    /// Whether a read would return data or the end of the stream.
    pub fn readable(&self) -> bool {
        !self.recv_buf.is_empty() || self.fin_received || self.is_closed()
    }

    /// Queues bytes to send; returns how many were taken (0 when the buffer is full, or
    /// after [`Conn::shutdown`] or the end).
    pub fn write(&mut self, data: &[u8]) -> usize {
        if self.fin_wanted || self.is_closed() {
            return 0;
        }
        let n = data.len().min(self.write_room());
        self.send_buf.extend(&data[..n]);
        n
    }

    /// Reads received bytes in order; 0 at the end of the stream (or with nothing yet).
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.recv_buf.len());
        copy_front(&self.recv_buf, &mut out[..n]);
        self.recv_buf.drain(..n);
        // A window that had closed opens again: tell the sender now, not with our next
        // packet (there may be none).
        let half = self.cfg.recv_buf / 2;
        if n > 0 && self.last_adv < half && self.room() >= half && !self.is_closed() {
            self.need_ack = true;
        }
        n
    }

    /// Ends our direction: a FIN follows the last byte written.
    pub fn shutdown(&mut self) {
        self.fin_wanted = true;
    }

    /// Aborts: queues a RESET and closes.
    pub fn reset(&mut self, now: Instant) {
        if !self.is_closed() {
            let h = self.header(Type::Reset, self.seq_nr, now);
            self.out.push(Vec::new());
            if let Some(o) = self.out.last_mut() {
                encode(&h, None, &[], o);
            }
            self.close(CloseReason::Reset);
        }
    }

    /// Both directions ended cleanly, or the connection is closed otherwise.
    pub fn finished(&self) -> bool {
        self.is_closed() || (self.fin_acked && self.fin_received)
    }

    /// Whether an ACK is owed (e.g. a window update after a read).
    pub fn wants_ack(&self) -> bool {
        self.need_ack
    }

    /// Whether the peer's FIN arrived in order: after the buffered bytes, the stream ends.
    pub fn fin_received(&self) -> bool {
        self.fin_received
    }

    /// Whether [`Conn::shutdown`] was called.
    pub fn fin_wanted(&self) -> bool {
        self.fin_wanted
    }

    fn close(&mut self, why: CloseReason) {
        self.state = State::Closed(why);
        self.rto_at = None;
        self.send_buf = VecDeque::new();
        self.flight = VecDeque::new();
        self.reorder = HashMap::new();
        self.reorder_bytes = 0;
    }

    /// The datagrams queued since the last call.
    pub fn take_out(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.out)
    }

    /// When [`Conn::on_timer`] should run next.
    pub fn deadline(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let idle = self.last_recv + self.cfg.idle_timeout;
        let mut d = self.rto_at.map_or(idle, |t| t.min(idle));
        if self.state == State::Connected {
            d = d.min(self.last_send + self.cfg.keepalive);
        }
        Some(d)
    }

    fn header(&self, ty: Type, seq: u16, now: Instant) -> Header {
        Header {
            ty,
            conn_id: if ty == Type::Syn {
                self.recv_id
            } else {
                self.send_id
            },
            ts: self.micros(now),
            ts_diff: self.reply_micro,
            wnd: self.room().min(u32::MAX as usize) as u32,
            seq,
            ack: self.ack_nr,
        }
    }

    /// The selective ACK bitmask for the reorder buffer (bit 0 = `ack_nr + 2`).
    fn sack(&self) -> Option<Vec<u8>> {
        if self.reorder.is_empty() {
            return None;
        }
        let base = self.ack_nr.wrapping_add(2);
        let far = self
            .reorder
            .keys()
            .map(|s| s.wrapping_sub(base) as usize)
            .max()
            .unwrap_or(0);
        // Multiples of 4 bytes (as BEP 29 and libtorrent expect), at most 32 bytes.
        let len = (far / 32 + 1).min(8) * 4;
        let mut m = vec![0u8; len];
        for i in 0..len * 8 {
            if self.reorder.contains_key(&base.wrapping_add(i as u16)) {
                m[i / 8] |= 1 << (i % 8);
            }
        }
        Some(m)
    }

    fn emit(&mut self, ty: Type, seq: u16, payload: &[u8], now: Instant) {
        self.emit_padded(ty, seq, payload, 0, now);
    }

    /// Sends one packet, padded up to `size` bytes when it is shorter; returns its size.
    fn emit_padded(
        &mut self,
        ty: Type,
        seq: u16,
        payload: &[u8],
        size: usize,
        now: Instant,
    ) -> usize {
        let h = self.header(ty, seq, now);
        let sack = if ty == Type::Syn { None } else { self.sack() };
        let plain = HEADER_LEN + sack.as_ref().map_or(0, |s| s.len() + 2) + payload.len();
        let mut v = Vec::new();
        encode_padded(
            &h,
            sack.as_deref(),
            size.saturating_sub(plain),
            payload,
            &mut v,
        );
        let len = v.len();
        self.out.push(v);
        self.need_ack = false;
        self.last_adv = h.wnd as usize;
        self.last_send = now;
        len
    }

    /// Payload bytes per packet: what fits the path MTU known so far.
    fn max_payload(&self) -> usize {
        self.mtu.floor - HEADER_LEN - SACK_ROOM
    }

    /// The datagram size path MTU discovery has settled on (or reached so far).
    pub fn packet_size(&self) -> usize {
        self.mtu.floor
    }

    /// A probe of `size` bytes arrived: packets may be that large.
    fn probe_arrived(&mut self, size: usize, now: Instant) {
        self.mtu.floor = self.mtu.floor.max(size);
        self.mtu.ceiling = self.mtu.ceiling.max(self.mtu.floor);
        self.mtu.probe = None;
        self.mtu_settle(now);
    }

    /// The probe in flight was lost: sizes from it up do not cross the path (or it met
    /// plain loss, and the search goes on below it until the next round).
    fn probe_lost(&mut self, seq: u16, now: Instant) {
        if let Some((s, size)) = self.mtu.probe {
            if s == seq {
                self.mtu.ceiling = (size - 1).max(self.mtu.floor);
                self.mtu.probe = None;
                self.mtu_settle(now);
            }
        }
    }

    fn mtu_settle(&mut self, now: Instant) {
        if self.mtu.ceiling < self.mtu.floor + MTU_CLOSE_ENOUGH {
            self.mtu.idle_until = Some(now + MTU_REPROBE);
        }
    }

    /// Sends a packet that consumes a sequence number and keeps it for retransmission; a
    /// full-sized DATA packet is padded as a path MTU probe when one is due.
    fn send_new(&mut self, ty: Type, payload: Vec<u8>, now: Instant) {
        let seq = self.seq_nr;
        self.seq_nr = seq.wrapping_add(1);
        if self.mtu.idle_until.is_some_and(|t| now >= t) {
            // Paths change: search again from the configured ceiling.
            self.mtu.idle_until = None;
            self.mtu.ceiling = self.cfg.mtu_ceiling.max(self.mtu.floor);
        }
        let probe = match ty {
            Type::Data if payload.len() == self.max_payload() => self.mtu.next_probe(now),
            _ => None,
        };
        let size = self.emit_padded(ty, seq, &payload, probe.unwrap_or(0), now);
        let probe = probe.filter(|_| size > self.mtu.floor).map(|_| size);
        if let Some(size) = probe {
            self.mtu.probe = Some((seq, size));
        }
        self.flight_bytes += payload.len();
        self.flight.push_back(Sent {
            seq,
            ty,
            payload,
            sent_at: now,
            sends: 1,
            sacked: false,
            lost: false,
            fast_resent: false,
            probe,
        });
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rto);
        }
    }

    fn window(&self) -> usize {
        self.cc.cwnd().min(self.peer_wnd)
    }

    /// Sends what the windows allow: retransmissions first, then new data, the FIN, and an
    /// ACK if one is owed.
    pub fn transmit(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if self.state == State::Connected {
            let win = self.window();
            // Scanning the whole flight (hundreds of packets) on every call was most of the
            // sender's CPU: it runs only when something was marked lost since the last scan.
            let mut left_lost = false;
            let scan = if self.maybe_lost {
                self.flight.len()
            } else {
                0
            };
            for i in 0..scan {
                let (lost, len) = (self.flight[i].lost, self.flight[i].payload.len());
                if !lost {
                    continue;
                }
                // Always one packet, even into a closed window (a probe), else by window.
                if self.flight_bytes > 0 && self.flight_bytes + len > win {
                    left_lost = true;
                    break;
                }
                let (ty, seq) = (self.flight[i].ty, self.flight[i].seq);
                let payload = std::mem::take(&mut self.flight[i].payload);
                self.emit(ty, seq, &payload, now);
                let s = &mut self.flight[i];
                s.payload = payload;
                s.lost = false;
                s.sends += 1;
                s.sent_at = now;
                self.flight_bytes += len;
            }
            self.maybe_lost = left_lost;
            // Sequence numbers in flight stay well inside half the space.
            while !self.send_buf.is_empty() && self.flight.len() < 0x4000 {
                let len = self.send_buf.len().min(self.max_payload());
                if self.flight_bytes > 0 && self.flight_bytes + len > self.window() {
                    break;
                }
                let mut payload = vec![0u8; len];
                copy_front(&self.send_buf, &mut payload);
                self.send_buf.drain(..len);
                self.send_new(Type::Data, payload, now);
            }
            if self.fin_wanted && !self.fin_sent && self.send_buf.is_empty() {
                self.fin_sent = true;
                self.send_new(Type::Fin, Vec::new(), now);
            }
        }
        if self.need_ack && self.state != State::SynSent {
            self.emit(Type::State, self.seq_nr, &[], now);
        }
        if !self.flight.is_empty() && self.rto_at.is_none() {
            self.rto_at = Some(now + self.rto);
        }
    }

    /// Handles one packet addressed to this connection (the caller routed it by address
    /// and connection id). Call [`Conn::transmit`] after a batch.
    pub fn on_packet(&mut self, p: &Packet<'_>, now: Instant) {
        if self.is_closed() {
            return;
        }
        let h = p.header;
        self.last_recv = now;
        // The peer is alive: retransmission give-up counts only silence.
        self.timeouts = 0;
        match h.ty {
            Type::Reset => {
                self.close(CloseReason::Reset);
                return;
            }
            Type::Syn => {
                // Our STATE was lost: the initiator sends its SYN again.
                if self.state == State::SynRecv {
                    self.need_ack = true;
                }
                return;
            }
            _ => {}
        }
        self.reply_micro = self.delay_to(h.ts, now);
        match self.state {
            State::SynSent => {
                // The responder's first packet (STATE, or DATA when the STATE was lost)
                // must acknowledge our SYN (sequence 1).
                if h.ack != 1 {
                    return;
                }
                self.ack_nr = h.seq.wrapping_sub(1);
                self.state = State::Connected;
            }
            State::SynRecv => self.state = State::Connected,
            _ => {}
        }
        self.peer_wnd = h.wnd as usize;
        let pure = h.ty == Type::State;
        self.on_ack(h.ack, p.sack, h.ts_diff, pure, now);
        if matches!(h.ty, Type::Data | Type::Fin) {
            self.on_data(h.seq, h.ty, p.payload);
        }
    }

    fn rtt_sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let d = s.abs_diff(r);
                self.rttvar = self.rttvar * 3 / 4 + d / 4;
                self.srtt = Some(s * 7 / 8 + r / 8);
            }
        }
        let s = self.srtt.unwrap_or(r);
        self.rto = (s + self.rttvar * 4).max(self.cfg.min_rto);
    }

    fn on_ack(&mut self, ack: u16, sack: Option<&[u8]>, delay: u32, pure: bool, now: Instant) {
        // An ACK for something never sent is garbage.
        if !seq_lt(ack, self.seq_nr) {
            return;
        }
        let mut acked = 0usize;
        let mut sample = None;
        let mut progress = false;
        while let Some(f) = self.flight.front() {
            if seq_lt(ack, f.seq) {
                break;
            }
            let Some(f) = self.flight.pop_front() else {
                break;
            };
            progress = true;
            if !f.sacked {
                acked += f.payload.len();
                if !f.lost {
                    self.flight_bytes -= f.payload.len();
                }
            }
            if f.sends == 1 {
                sample = Some(now.saturating_duration_since(f.sent_at));
                if let Some(size) = f.probe {
                    self.probe_arrived(size, now);
                }
            }
            match f.ty {
                Type::Fin => self.fin_acked = true,
                Type::Syn => {}
                _ => {}
            }
        }
        let mut loss = false;
        let mut lost_probes = Vec::new();
        if let (Some(mask), Some(front)) = (sack, self.flight.front().map(|f| f.seq)) {
            let base = ack.wrapping_add(2);
            let mut sacked_after = 0usize;
            let mut last_sacked = None;
            let mut arrived_probe = None;
            for i in (0..mask.len() * 8).rev() {
                if mask[i / 8] & (1 << (i % 8)) == 0 {
                    continue;
                }
                let idx = base.wrapping_add(i as u16).wrapping_sub(front) as usize;
                if last_sacked.is_none() {
                    last_sacked = Some(idx);
                }
                let Some(f) = self.flight.get_mut(idx) else {
                    continue;
                };
                if !f.sacked {
                    f.sacked = true;
                    acked += f.payload.len();
                    if !f.lost {
                        self.flight_bytes -= f.payload.len();
                    }
                    // The peer has it: nothing to send again.
                    f.lost = false;
                    if f.sends == 1 {
                        sample = Some(now.saturating_duration_since(f.sent_at));
                        if let Some(size) = f.probe {
                            arrived_probe = Some(size);
                        }
                    }
                }
            }
            // A packet with three selectively acknowledged packets after it is lost.
            if let Some(last) = last_sacked {
                for idx in (0..=last.min(self.flight.len().saturating_sub(1))).rev() {
                    let f = &mut self.flight[idx];
                    if f.sacked {
                        sacked_after += 1;
                        continue;
                    }
                    if sacked_after >= 3 && !f.lost && !f.fast_resent {
                        f.lost = true;
                        self.maybe_lost = true;
                        f.fast_resent = true;
                        self.flight_bytes -= f.payload.len();
                        // A lost probe says the path MTU is smaller, not that it is congested.
                        match (f.probe, f.sends) {
                            (Some(_), 1) => lost_probes.push(f.seq),
                            _ => loss = true,
                        }
                    }
                }
            }
            if let Some(size) = arrived_probe {
                self.probe_arrived(size, now);
            }
        }
        // Three duplicate ACKs: the packet after the ACK is lost.
        if !progress && pure && self.last_ack_recv == Some(ack) && !self.flight.is_empty() {
            self.dup_acks += 1;
            if self.dup_acks >= 3 {
                if let Some(f) = self.flight.front_mut() {
                    if !f.lost && !f.fast_resent && !f.sacked {
                        f.lost = true;
                        self.maybe_lost = true;
                        f.fast_resent = true;
                        self.flight_bytes -= f.payload.len();
                        match (f.probe, f.sends) {
                            (Some(_), 1) => lost_probes.push(f.seq),
                            _ => loss = true,
                        }
                    }
                }
            }
        } else if progress {
            self.dup_acks = 0;
        }
        self.last_ack_recv = Some(ack);
        for seq in lost_probes {
            self.probe_lost(seq, now);
        }
        if let Some(r) = sample {
            self.rtt_sample(r);
        }
        if progress {
            self.rto_at = (!self.flight.is_empty()).then(|| now + self.rto);
        }
        if acked > 0 {
            self.cc.on_ack(acked, delay, now);
        }
        if loss {
            let rtt = self.srtt.unwrap_or(self.cfg.min_rto);
            self.cc.on_loss(now, rtt);
        }
        if self.fin_acked && self.fin_received {
            self.close(CloseReason::Done);
        }
    }

    fn on_data(&mut self, seq: u16, ty: Type, payload: &[u8]) {
        self.need_ack = true;
        if ty == Type::Fin {
            match self.eof_seq {
                Some(e) if e != seq => return,
                _ => self.eof_seq = Some(seq),
            }
        }
        if self.eof_seq.is_some_and(|e| seq_lt(e, seq)) {
            return;
        }
        let next = self.ack_nr.wrapping_add(1);
        let d = seq.wrapping_sub(next) as usize;
        if d >= 0x8000 {
            return; // a duplicate of something delivered: the ACK tells the sender
        }
        if d == 0 {
            if payload.len() > self.room() {
                return;
            }
            self.deliver(seq, ty, payload);
            while let Some((ty, p)) = self.reorder.remove(&self.ack_nr.wrapping_add(1)) {
                self.reorder_bytes -= p.len();
                let seq = self.ack_nr.wrapping_add(1);
                self.deliver(seq, ty, &p);
            }
        } else if d <= self.cfg.reorder_max
            && self.reorder.len() < self.cfg.reorder_max
            && payload.len() <= self.room()
            && !self.reorder.contains_key(&seq)
        {
            self.reorder_bytes += payload.len();
            self.reorder.insert(seq, (ty, payload.to_vec()));
        }
    }

    fn deliver(&mut self, seq: u16, ty: Type, payload: &[u8]) {
        self.ack_nr = seq;
        self.recv_buf.extend(payload);
        if ty == Type::Fin {
            self.fin_received = true;
            if self.fin_acked {
                self.close(CloseReason::Done);
            }
        }
    }

    /// Runs the timers: retransmission (with backoff and give-up), keepalive, idle.
    pub fn on_timer(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if now >= self.last_recv + self.cfg.idle_timeout {
            self.close(CloseReason::TimedOut);
            return;
        }
        if self.rto_at.is_some_and(|t| now >= t) {
            self.timeouts += 1;
            let limit = if self.state == State::SynSent {
                self.cfg.syn_retries
            } else {
                self.cfg.max_timeouts
            };
            if self.timeouts > limit {
                self.close(CloseReason::TimedOut);
                return;
            }
            self.rto = (self.rto * 2).min(Duration::from_secs(60));
            self.cc.on_timeout();
            let mut lost_probe = None;
            for f in self.flight.iter_mut() {
                if !f.sacked && !f.lost {
                    f.lost = true;
                    self.maybe_lost = true;
                    self.flight_bytes -= f.payload.len();
                    if f.probe.is_some() && f.sends == 1 {
                        lost_probe = Some(f.seq);
                    }
                }
                f.fast_resent = false;
            }
            if let Some(seq) = lost_probe {
                self.probe_lost(seq, now);
            }
            self.rto_at = Some(now + self.rto);
            if self.state == State::SynSent {
                // Not connected yet: `transmit` sends no data, so the SYN goes from here.
                if let Some(f) = self.flight.front_mut() {
                    f.lost = false;
                    f.sends += 1;
                    f.sent_at = now;
                }
                let seq = self.flight.front().map_or(1, |f| f.seq);
                self.emit(Type::Syn, seq, &[], now);
            }
        }
        if self.state == State::Connected && now >= self.last_send + self.cfg.keepalive {
            self.need_ack = true;
        }
        self.transmit(now);
    }
}

/// Copies the first `out.len()` bytes of `q` into `out`, slice by slice (a byte iterator
/// over a `VecDeque` cost more CPU than the rest of the packet's path on loopback).
fn copy_front(q: &VecDeque<u8>, out: &mut [u8]) {
    let (a, b) = q.as_slices();
    let k = out.len().min(a.len());
    out[..k].copy_from_slice(&a[..k]);
    let rest = out.len() - k;
    out[k..].copy_from_slice(&b[..rest]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// One direction of a simulated path: fixed delay, random extra delay (reordering) and
    /// random loss, or a filter that drops chosen datagrams.
    struct Link {
        delay: Duration,
        jitter_ms: u64,
        loss_permille: u32,
        rng: rand::rngs::StdRng,
        q: Vec<(Instant, Vec<u8>)>,
        sent: usize,
        drop_nth: Vec<usize>,
        dead: bool,
        /// Datagrams longer than this vanish (a path MTU black hole).
        mtu: usize,
        largest: usize,
    }

    impl Link {
        fn new(delay_ms: u64, seed: u64) -> Link {
            Link {
                delay: Duration::from_millis(delay_ms),
                jitter_ms: 0,
                loss_permille: 0,
                rng: rand::rngs::StdRng::seed_from_u64(seed),
                q: Vec::new(),
                sent: 0,
                drop_nth: Vec::new(),
                dead: false,
                mtu: usize::MAX,
                largest: 0,
            }
        }

        fn push(&mut self, now: Instant, d: Vec<u8>) {
            self.sent += 1;
            if d.len() > self.mtu {
                return;
            }
            self.largest = self.largest.max(d.len());
            if self.dead
                || self.drop_nth.contains(&self.sent)
                || self.rng.random_range(0..1000) < self.loss_permille
            {
                return;
            }
            let j = if self.jitter_ms > 0 {
                self.rng.random_range(0..self.jitter_ms)
            } else {
                0
            };
            self.q
                .push((now + self.delay + Duration::from_millis(j), d));
        }

        fn due(&mut self, now: Instant) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            let mut i = 0;
            // Arrival order, ties in send order.
            self.q.sort_by_key(|(t, _)| *t);
            while i < self.q.len() {
                if self.q[i].0 <= now {
                    out.push(self.q.remove(i).1);
                } else {
                    i += 1;
                }
            }
            out
        }
    }

    struct World {
        t0: Instant,
        now: Instant,
        a: Conn,
        b: Conn,
        ab: Link,
        ba: Link,
    }

    fn cfg() -> Config {
        Config::default()
    }

    impl World {
        fn new(ab: Link, ba: Link) -> World {
            World::with_cfg(ab, ba, cfg())
        }

        fn with_cfg(mut ab: Link, ba: Link, c: Config) -> World {
            let t0 = Instant::now();
            let mut a = Conn::connect(c.clone(), t0, t0, 1000);
            let syn = a.take_out();
            assert_eq!(syn.len(), 1);
            let p = Packet::parse(&syn[0]).unwrap();
            assert_eq!(p.header.ty, Type::Syn);
            assert_eq!(p.header.conn_id, 1000);
            let b = Conn::accept(c, t0, t0, &p.header, 40000);
            assert_eq!(b.state(), State::SynRecv);
            // The SYN is "delivered" already; the STATE travels back through `ba`.
            ab.sent += 1;
            let mut w = World {
                t0,
                now: t0,
                a,
                b,
                ab,
                ba,
            };
            w.flush();
            w
        }

        fn flush(&mut self) {
            for d in self.a.take_out() {
                self.ab.push(self.now, d);
            }
            for d in self.b.take_out() {
                self.ba.push(self.now, d);
            }
        }

        /// Advances 1 ms: deliveries, timers, transmissions.
        fn tick(&mut self) {
            self.now += Duration::from_millis(1);
            for d in self.ab.due(self.now) {
                let p = Packet::parse(&d).unwrap();
                let id = if p.header.ty == Type::Syn {
                    p.header.conn_id.wrapping_add(1)
                } else {
                    p.header.conn_id
                };
                assert_eq!(id, self.b.recv_id());
                self.b.on_packet(&p, self.now);
            }
            for d in self.ba.due(self.now) {
                let p = Packet::parse(&d).unwrap();
                assert_eq!(p.header.conn_id, self.a.recv_id());
                self.a.on_packet(&p, self.now);
            }
            for c in [&mut self.a, &mut self.b] {
                if c.deadline().is_some_and(|d| d <= self.now) {
                    c.on_timer(self.now);
                }
                c.transmit(self.now);
            }
            self.flush();
        }

        fn elapsed(&self) -> Duration {
            self.now - self.t0
        }
    }

    fn pattern(n: usize, salt: u8) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8 ^ salt).collect()
    }

    /// Moves `len` bytes each way, both ends writing and reading as they can; returns when
    /// both have read everything (then both shut down and finish).
    fn exchange(w: &mut World, len: usize, limit: Duration) {
        let (da, db) = (pattern(len, 1), pattern(len, 2));
        let (mut wa, mut wb) = (0, 0);
        let (mut ra, mut rb) = (Vec::new(), Vec::new());
        let mut buf = vec![0u8; 64 * 1024];
        while ra.len() < len || rb.len() < len {
            assert!(
                w.elapsed() < limit,
                "stuck: a read {} b read {}",
                ra.len(),
                rb.len()
            );
            if w.a.state() == State::Connected {
                wa += w.a.write(&da[wa..]);
            }
            if w.b.state() == State::Connected {
                wb += w.b.write(&db[wb..]);
            }
            let n = w.a.read(&mut buf);
            ra.extend_from_slice(&buf[..n]);
            let n = w.b.read(&mut buf);
            rb.extend_from_slice(&buf[..n]);
            w.tick();
        }
        assert!(ra == db && rb == da, "bytes differ");
        w.a.shutdown();
        w.b.shutdown();
        while !(w.a.finished() && w.b.finished()) {
            assert!(
                w.elapsed() < limit + Duration::from_secs(30),
                "no clean close"
            );
            w.tick();
        }
        assert_eq!(w.a.read(&mut buf), 0);
        assert!(w.a.readable() && w.b.readable(), "end of stream readable");
    }

    #[test]
    fn handshake_bulk_both_ways_and_fin() {
        let mut w = World::new(Link::new(10, 1), Link::new(10, 2));
        exchange(&mut w, 300_000, Duration::from_secs(10));
        assert_eq!(w.a.state(), State::Closed(CloseReason::Done));
        assert_eq!(w.b.state(), State::Closed(CloseReason::Done));
        let rtt = w.a.rtt().unwrap();
        // The SYN "arrived" at once (10 ms samples), data takes 20 ms.
        assert!(
            rtt >= Duration::from_millis(10) && rtt < Duration::from_millis(40),
            "{rtt:?}"
        );
    }

    #[test]
    fn lossy_reordering_link_delivers_in_order() {
        for seed in 0..4 {
            let mut ab = Link::new(15, seed);
            ab.loss_permille = 50;
            ab.jitter_ms = 20;
            let mut ba = Link::new(15, seed + 100);
            ba.loss_permille = 50;
            ba.jitter_ms = 20;
            let mut w = World::new(ab, ba);
            exchange(&mut w, 200_000, Duration::from_secs(120));
        }
    }

    #[test]
    fn megabytes_both_ways_over_lossy_links_while_probing_the_mtu() {
        for seed in 0..6 {
            let mut ab = Link::new(20, seed);
            ab.loss_permille = 20;
            let mut ba = Link::new(20, seed + 100);
            ba.loss_permille = 20;
            let c = Config {
                mtu_ceiling: 1472,
                ..cfg()
            };
            let mut w = World::with_cfg(ab, ba, c);
            exchange(&mut w, 2 << 20, Duration::from_secs(120));
        }
    }

    #[test]
    fn lost_syn_and_lost_state_are_retried() {
        let mut ab = Link::new(5, 1);
        ab.drop_nth = vec![2]; // the first DATA after the handshake
        let mut ba = Link::new(5, 2);
        ba.drop_nth = vec![1]; // the STATE answering the SYN
        let mut w = World::new(ab, ba);
        exchange(&mut w, 10_000, Duration::from_secs(20));
    }

    #[test]
    fn single_loss_is_repaired_without_a_timeout() {
        let mut ab = Link::new(10, 1);
        ab.drop_nth = vec![6];
        let mut w = World::new(ab, Link::new(10, 2));
        let data = pattern(100_000, 3);
        let (mut wr, mut got) = (0, Vec::new());
        let mut buf = vec![0u8; 65536];
        let mut saw_sack = false;
        while got.len() < data.len() {
            assert!(w.elapsed() < Duration::from_secs(5));
            if w.a.state() == State::Connected {
                wr += w.a.write(&data[wr..]);
            }
            let n = w.b.read(&mut buf);
            got.extend_from_slice(&buf[..n]);
            w.tick();
            saw_sack |=
                w.ba.q
                    .iter()
                    .any(|(_, d)| Packet::parse(d).unwrap().sack.is_some());
        }
        assert_eq!(got, data);
        assert!(saw_sack, "the receiver sent a selective ACK");
        // A timeout alone would take the 1 s initial RTO.
        assert!(
            w.elapsed() < Duration::from_millis(500),
            "{:?}",
            w.elapsed()
        );
    }

    /// Sends `len` bytes a -> b, returns when b has read them all.
    fn one_way(w: &mut World, len: usize, limit: Duration) {
        let data = pattern(len, 5);
        let (mut wr, mut got) = (0, Vec::new());
        let mut buf = vec![0u8; 65536];
        while got.len() < data.len() {
            assert!(w.elapsed() < limit, "stuck at {} of {len}", got.len());
            if w.a.state() == State::Connected {
                wr += w.a.write(&data[wr..]);
            }
            let n = w.b.read(&mut buf);
            got.extend_from_slice(&buf[..n]);
            w.tick();
        }
        assert!(got == data, "bytes differ");
    }

    #[test]
    fn path_mtu_search_finds_the_largest_size_that_arrives() {
        // A clean Ethernet-sized path: up to the ceiling.
        let mut w = World::new(Link::new(10, 1), Link::new(10, 2));
        assert_eq!(w.a.packet_size(), cfg().mtu_floor);
        one_way(&mut w, 2 << 20, Duration::from_secs(10));
        let c = cfg().mtu_ceiling;
        assert!(w.a.packet_size() + MTU_CLOSE_ENOUGH > c && w.a.packet_size() <= c);
        assert!(w.ab.largest <= c);
        // A tunnel that drops datagrams over 1300 bytes without a word: the search settles
        // just under it, and every lost probe's data arrives anyway.
        for limit in [1240, 1300, 1400] {
            let mut ab = Link::new(10, 3);
            ab.mtu = limit;
            let mut w = World::new(ab, Link::new(10, 4));
            let t0 = w.now;
            one_way(&mut w, 2 << 20, Duration::from_secs(20));
            let size = w.a.packet_size();
            assert!(
                size <= limit && size + MTU_CLOSE_ENOUGH > limit,
                "{size} for {limit}"
            );
            // Lost probes are not congestion: no timeout, and the transfer is not slowed
            // to a crawl (2 MiB at a 20 ms RTT).
            assert!(w.now - t0 < Duration::from_secs(5), "{:?}", w.now - t0);
            // The search has settled: no probe for a while.
            assert!(w.a.mtu.next_probe(w.now).is_none());
        }
        // Random loss on top: still converges under the limit and delivers.
        let mut ab = Link::new(15, 5);
        ab.mtu = 1350;
        ab.loss_permille = 20;
        let mut w = World::new(ab, Link::new(15, 6));
        one_way(&mut w, 1 << 20, Duration::from_secs(60));
        assert!(w.a.packet_size() <= 1350);
    }

    #[test]
    fn dead_peer_gives_up_after_backoff() {
        let mut w = World::new(Link::new(10, 1), Link::new(10, 2));
        for _ in 0..100 {
            w.tick();
        }
        assert_eq!(w.a.state(), State::Connected);
        w.ab.dead = true;
        w.ba.dead = true;
        w.a.write(&[1; 5000]);
        let start = w.now;
        while !w.a.is_closed() {
            w.tick();
            assert!(w.elapsed() < Duration::from_secs(600));
        }
        assert_eq!(w.a.state(), State::Closed(CloseReason::TimedOut));
        // 0.5 + 1 + 2 + ... s: doubling, not a fixed interval.
        let took = w.now - start;
        assert!(took > Duration::from_secs(30), "{took:?}");
        assert!(w.a.deadline().is_none());

        // A SYN nobody answers.
        let t0 = Instant::now();
        let mut c = Conn::connect(cfg(), t0, t0, 7);
        let mut now = t0;
        let mut syns = c.take_out().len();
        while !c.is_closed() {
            now = c.deadline().unwrap();
            c.on_timer(now);
            syns += c.take_out().len();
        }
        assert_eq!(syns, 4);
        assert_eq!(now - t0, Duration::from_secs(1 + 2 + 4 + 8));
    }

    #[test]
    fn reset_closes_the_peer() {
        let mut w = World::new(Link::new(5, 1), Link::new(5, 2));
        for _ in 0..50 {
            w.tick();
        }
        w.a.write(b"hello");
        for _ in 0..50 {
            w.tick();
        }
        w.b.reset(w.now);
        assert_eq!(w.b.state(), State::Closed(CloseReason::Reset));
        for _ in 0..50 {
            w.tick();
        }
        assert_eq!(w.a.state(), State::Closed(CloseReason::Reset));
        assert_eq!(w.a.write(b"more"), 0);
    }

    #[test]
    fn idle_connection_sends_keepalives() {
        let mut w = World::new(Link::new(5, 1), Link::new(5, 2));
        // The initiator's first packet completes the responder's handshake.
        w.a.write(b"x");
        for _ in 0..100 {
            w.tick();
        }
        let sent = (w.ab.sent, w.ba.sent);
        for _ in 0..31_000 {
            w.tick();
        }
        assert!(w.ab.sent > sent.0 && w.ba.sent > sent.1);
        assert_eq!(w.a.state(), State::Connected);
        assert_eq!(w.b.state(), State::Connected);
    }

    #[test]
    fn receive_window_bounds_what_the_sender_pushes() {
        let c = Config {
            recv_buf: 64 * 1024,
            ..cfg()
        };
        let mut w = World::with_cfg(Link::new(5, 1), Link::new(5, 2), c);
        let data = pattern(1 << 20, 9);
        let mut wr = 0;
        for _ in 0..3000 {
            wr += w.a.write(&data[wr..]);
            w.tick();
        }
        // The receiver never read: it holds at most its buffer, the sender stopped.
        assert!(w.b.recv_buf.len() + w.b.reorder_bytes <= 64 * 1024);
        assert!(w.a.flight_bytes <= w.a.max_payload());
        assert_eq!(w.a.state(), State::Connected);
        // Reading opens the window again and everything arrives.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < data.len() {
            assert!(w.elapsed() < Duration::from_secs(60));
            wr += w.a.write(&data[wr..]);
            let n = w.b.read(&mut buf);
            got.extend_from_slice(&buf[..n]);
            w.tick();
        }
        assert!(got == data);
    }

    #[test]
    fn garbage_acks_are_ignored() {
        let mut w = World::new(Link::new(5, 1), Link::new(5, 2));
        for _ in 0..20 {
            w.tick();
        }
        let h = Header {
            ty: Type::State,
            conn_id: w.a.recv_id(),
            ts: 0,
            ts_diff: 0,
            wnd: 0,
            seq: 0,
            ack: w.a.seq_nr.wrapping_add(100),
        };
        let mut v = Vec::new();
        encode(&h, Some(&[0xFF; 32]), b"", &mut v);
        w.a.on_packet(&Packet::parse(&v).unwrap(), w.now);
        assert_eq!(w.a.state(), State::Connected);
        exchange(&mut w, 20_000, Duration::from_secs(20));
    }
}
