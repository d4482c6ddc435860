//! The swarm's candidate peers (pure: no sockets, no clock of its own): addresses heard of
//! from every source (DHT, trackers, PEX, incoming peers' listen ports), their dial state,
//! retry times, and whether they are known seeds (BEP 11 `added.f` 0x02, or the peer told
//! us itself with `have all` / a full bitfield before it closed).
//!
//! Known seeds have their own queue: the swarm dials them first and even at its peer limit
//! (see the swarm core's `dial` module), because a seed is the one peer that has every piece.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

/// A peer that closed us is dialled again after this long.
pub const PEER_RETRY: Duration = Duration::from_secs(10);
/// ... and a seed sooner: it is the one peer that has every piece, and a full one frees
/// slots as its leechers complete (they drop it then).
pub const SEED_RETRY: Duration = Duration::from_secs(5);
/// Connect failures in a row after which an address is forgotten.
pub const MAX_FAILS: u32 = 5;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Idle,
    Connecting,
    Connected,
}

#[derive(Clone, Copy, Debug)]
struct Cand {
    state: State,
    fails: u32,
    next_try: Instant,
    seed: bool,
}

/// Candidate addresses, at most `max` of them.
#[derive(Debug)]
pub struct Candidates {
    map: BTreeMap<SocketAddr, Cand>,
    /// Idle candidates in dialling order. An address may sit in both queues (it became a
    /// known seed while queued); its state decides, so it is dialled once.
    queue: VecDeque<SocketAddr>,
    seed_queue: VecDeque<SocketAddr>,
    max: usize,
}

impl Candidates {
    pub fn new(max: usize) -> Self {
        Candidates {
            map: BTreeMap::new(),
            queue: VecDeque::new(),
            seed_queue: VecDeque::new(),
            max,
        }
    }

    /// Addresses known.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Known to be a seed.
    #[cfg(test)]
    pub fn is_seed(&self, a: &SocketAddr) -> bool {
        self.map.get(a).is_some_and(|c| c.seed)
    }

    fn push(&mut self, a: SocketAddr, seed: bool) {
        if seed {
            self.seed_queue.push_back(a);
        } else {
            self.queue.push_back(a);
        }
    }

    /// An address heard of (`seed`: flagged as a seed). A known idle address newly flagged
    /// as a seed moves to the seed queue. Beyond `max` addresses new ones are ignored.
    pub fn add(&mut self, a: SocketAddr, seed: bool, now: Instant) {
        if let Some(c) = self.map.get_mut(&a) {
            if seed && !c.seed {
                c.seed = true;
                if c.state == State::Idle {
                    self.seed_queue.push_back(a);
                }
            }
            return;
        }
        if self.map.len() >= self.max {
            return;
        }
        self.map.insert(
            a,
            Cand {
                state: State::Idle,
                fails: 0,
                next_try: now,
                seed,
            },
        );
        self.push(a, seed);
    }

    /// Up to `n` idle candidates that are due, from the seed queue (`seeds`) or the other
    /// one, in queue order; they are now `connecting`. Those not yet due keep their place.
    pub fn take_due(&mut self, seeds: bool, n: usize, now: Instant) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        let mut deferred = Vec::new();
        let q = if seeds {
            &mut self.seed_queue
        } else {
            &mut self.queue
        };
        while out.len() < n {
            let Some(a) = q.pop_front() else { break };
            let Some(c) = self.map.get_mut(&a) else {
                continue;
            };
            if c.state != State::Idle {
                continue;
            }
            if c.next_try > now {
                deferred.push(a);
                continue;
            }
            c.state = State::Connecting;
            out.push(a);
        }
        // Not-yet-due ones go back in front, in their order.
        for a in deferred.into_iter().rev() {
            q.push_front(a);
        }
        out
    }

    /// Our dial to `a` succeeded.
    pub fn connected(&mut self, a: SocketAddr) {
        if let Some(c) = self.map.get_mut(&a) {
            c.state = State::Connected;
            c.fails = 0;
        }
    }

    /// Our dial to `a` failed: back off 5, 10, 20, 40 s; forget it after [`MAX_FAILS`].
    pub fn failed(&mut self, a: SocketAddr, now: Instant) {
        let Some(c) = self.map.get_mut(&a) else {
            return;
        };
        c.state = State::Idle;
        c.fails += 1;
        if c.fails >= MAX_FAILS {
            self.map.remove(&a);
            return;
        }
        c.next_try = now + Duration::from_secs(5u64 << (c.fails - 1).min(3));
        let seed = c.seed;
        self.push(a, seed);
    }

    /// An incoming peer's listen address: it is connected, don't dial it (a dial already in
    /// flight keeps its own state; its result decides).
    pub fn mark_connected(&mut self, a: SocketAddr, now: Instant) {
        if let Some(c) = self.map.get_mut(&a) {
            if c.state == State::Idle {
                c.state = State::Connected;
                c.fails = 0;
            }
        } else if self.map.len() < self.max {
            self.map.insert(
                a,
                Cand {
                    state: State::Connected,
                    fails: 0,
                    next_try: now,
                    seed: false,
                },
            );
        }
    }

    /// The connection to the peer reachable at `a` ended (`was_seed`: it had every piece):
    /// dial it again later, a seed sooner.
    pub fn closed(&mut self, a: SocketAddr, was_seed: bool, now: Instant) {
        let Some(c) = self.map.get_mut(&a) else {
            return;
        };
        if c.state != State::Connected {
            return;
        }
        c.state = State::Idle;
        c.seed |= was_seed;
        c.next_try = now + if c.seed { SEED_RETRY } else { PEER_RETRY };
        let seed = c.seed;
        self.push(a, seed);
    }

    /// Forgets `a` (banned).
    pub fn remove(&mut self, a: &SocketAddr) {
        self.map.remove(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 6881))
    }

    #[test]
    fn seeds_have_their_own_queue_and_a_pex_flag_upgrades_a_known_address() {
        let t = Instant::now();
        let mut c = Candidates::new(100);
        c.add(a(1), false, t);
        c.add(a(2), false, t);
        c.add(a(3), true, t); // PEX said: seed
        assert_eq!(c.take_due(true, 10, t), vec![a(3)]);
        // a(2) heard again, now flagged as a seed: it moves to the seed queue...
        c.add(a(2), true, t);
        assert!(c.is_seed(&a(2)));
        assert_eq!(c.take_due(true, 10, t), vec![a(2)]);
        // ...and is not dialled a second time from the other queue.
        assert_eq!(c.take_due(false, 10, t), vec![a(1)]);
        assert!(c.take_due(false, 10, t).is_empty());
        // A flag never goes away by hearing the address unflagged.
        c.add(a(2), false, t);
        assert!(c.is_seed(&a(2)));
    }

    #[test]
    fn closed_peers_are_retried_seeds_sooner() {
        let t = Instant::now();
        let mut c = Candidates::new(100);
        c.add(a(1), false, t);
        c.add(a(2), false, t);
        assert_eq!(c.take_due(false, 10, t), vec![a(1), a(2)]);
        c.connected(a(1));
        c.connected(a(2));
        // a(2) had every piece when it closed us (a full seed refusing us, typically).
        c.closed(a(1), false, t);
        c.closed(a(2), true, t);
        assert!(c.is_seed(&a(2)));
        assert!(c.take_due(false, 10, t + SEED_RETRY).is_empty());
        assert_eq!(c.take_due(true, 10, t + SEED_RETRY), vec![a(2)]);
        assert_eq!(c.take_due(false, 10, t + PEER_RETRY), vec![a(1)]);
        // Closing twice (or a peer never dialled) changes nothing.
        c.closed(a(1), false, t);
        assert!(c.take_due(false, 10, t + PEER_RETRY * 2).is_empty());
    }

    #[test]
    fn an_incoming_peers_listen_address_becomes_dialable_when_it_leaves() {
        let t = Instant::now();
        let mut c = Candidates::new(100);
        c.mark_connected(a(5), t);
        c.add(a(5), false, t); // PEX mentions it: already connected, not queued again
        assert!(c.take_due(false, 10, t).is_empty());
        c.closed(a(5), false, t);
        assert_eq!(c.take_due(false, 10, t + PEER_RETRY), vec![a(5)]);
        // A dial in flight is not overridden by the peer also dialling us.
        c.mark_connected(a(5), t);
        c.failed(a(5), t);
        assert_eq!(
            c.take_due(false, 10, t + Duration::from_secs(5)),
            vec![a(5)]
        );
    }

    #[test]
    fn failures_back_off_then_forget_and_not_due_keep_their_place() {
        let t = Instant::now();
        let mut c = Candidates::new(100);
        c.add(a(1), false, t);
        let mut now = t;
        for (i, wait) in [5u64, 10, 20, 40].iter().enumerate() {
            assert_eq!(c.take_due(false, 1, now), vec![a(1)], "round {i}");
            c.failed(a(1), now);
            assert!(c
                .take_due(false, 1, now + Duration::from_secs(wait - 1))
                .is_empty());
            now += Duration::from_secs(*wait);
        }
        assert_eq!(c.take_due(false, 1, now), vec![a(1)]);
        c.failed(a(1), now);
        assert_eq!(c.len(), 0, "forgotten after {MAX_FAILS} failures");
        // Order kept across deferrals; `n` bounds a round.
        c.add(a(2), false, t);
        c.add(a(3), false, t);
        c.add(a(4), false, t);
        assert_eq!(c.take_due(false, 2, t), vec![a(2), a(3)]);
        assert_eq!(c.take_due(false, 2, t), vec![a(4)]);
    }

    #[test]
    fn bounded() {
        let t = Instant::now();
        let mut c = Candidates::new(3);
        for i in 1..=10 {
            c.add(a(i), i % 2 == 0, t);
            c.mark_connected(SocketAddr::from(([10, 0, 1, i], 1)), t);
        }
        assert_eq!(c.len(), 3);
        c.remove(&a(1));
        assert_eq!(c.len(), 2);
    }
}
