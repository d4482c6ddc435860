//! BEP 14's rate limits, both ways. Pure: time comes in as `now`.
//!
//! - Sending ([`Schedule`]): each torrent is announced when added, then every
//!   [`REANNOUNCE`] (BEP 14: every 5 minutes), never more than once per [`MIN_INTERVAL`] (1
//!   minute, BEP 14's bound against multicast storms). Hearing a peer we did not know
//!   ([`Newcomers`]) announce one of our torrents brings our next announce forward to the
//!   earliest the minute allows, so a newcomer learns us within a minute instead of five;
//!   peers we know, announcing on their own schedule, do not (else every announce would
//!   answer another, and all would announce every minute). Overall, at most
//!   [`MAX_PACKETS_PER_MINUTE`] datagrams a minute however many torrents there are (the
//!   rest wait; several info-hashes share a datagram).
//! - Receiving ([`PeerBudget`]): announces come from any host on the LAN, untrusted. At most
//!   [`MAX_PEERS_PER_MINUTE`] peers are learned a minute in all, and the same peer for the
//!   same torrent once a minute at most.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::id::InfoHash;

pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
pub const REANNOUNCE: Duration = Duration::from_secs(5 * 60);
pub const MAX_PACKETS_PER_MINUTE: usize = 10;
/// Info-hashes per datagram: 26 fit in 1400 bytes with the longest header; fewer keeps a
/// margin for other clients' parsers.
pub const HASHES_PER_PACKET: usize = 20;
pub const MAX_PEERS_PER_MINUTE: usize = 60;
/// (peer, torrent) pairs remembered for the once-a-minute rule at most.
const MAX_RECENT: usize = 1024;
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
struct Entry {
    next: Instant,
    last: Option<Instant>,
}

/// When to announce which torrent.
#[derive(Debug, Default)]
pub struct Schedule {
    torrents: BTreeMap<InfoHash, Entry>,
    /// When the datagrams of the last minute went out (at most MAX_PACKETS_PER_MINUTE).
    sent: VecDeque<Instant>,
}

impl Schedule {
    /// A torrent to announce from now on; its first announce is due at once.
    pub fn add(&mut self, ih: InfoHash, now: Instant) {
        self.torrents.entry(ih).or_insert(Entry {
            next: now,
            last: None,
        });
    }

    pub fn remove(&mut self, ih: &InfoHash) {
        self.torrents.remove(ih);
    }

    /// Someone else announced `ih`: ours goes out as soon as the minute allows.
    pub fn heard(&mut self, ih: &InfoHash, now: Instant) {
        if let Some(e) = self.torrents.get_mut(ih) {
            let earliest = e.last.map_or(now, |l| (l + MIN_INTERVAL).max(now));
            e.next = e.next.min(earliest);
        }
    }

    /// The torrents to announce in one datagram now (at most [`HASHES_PER_PACKET`], the
    /// longest waiting first), marked as sent; empty when none is due or the datagrams of
    /// the last minute used up the budget. Call again until empty.
    pub fn due(&mut self, now: Instant) -> Vec<InfoHash> {
        self.expire(now);
        if self.sent.len() >= MAX_PACKETS_PER_MINUTE {
            return Vec::new();
        }
        let mut due: Vec<(Instant, InfoHash)> = self
            .torrents
            .iter()
            .filter(|(_, e)| e.next <= now)
            .map(|(ih, e)| (e.next, *ih))
            .collect();
        due.sort();
        due.truncate(HASHES_PER_PACKET);
        if due.is_empty() {
            return Vec::new();
        }
        self.sent.push_back(now);
        due.into_iter()
            .map(|(_, ih)| {
                if let Some(e) = self.torrents.get_mut(&ih) {
                    e.last = Some(now);
                    e.next = now + REANNOUNCE;
                }
                ih
            })
            .collect()
    }

    /// When [`Schedule::due`] next has something (None: no torrent).
    pub fn next_wake(&mut self, now: Instant) -> Option<Instant> {
        self.expire(now);
        let next = self.torrents.values().map(|e| e.next).min()?;
        if self.sent.len() >= MAX_PACKETS_PER_MINUTE {
            let freed = self.sent.front().map_or(now, |t| *t + WINDOW);
            return Some(next.max(freed));
        }
        Some(next)
    }

    fn expire(&mut self, now: Instant) {
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.sent.pop_front();
        }
    }
}

/// Which (peer, torrent) announces are news: not heard in the last [`FORGET_AFTER`] (two
/// announce periods, so a peer announcing every 5 minutes stays known).
#[derive(Debug, Default)]
pub struct Newcomers {
    seen: BTreeMap<(SocketAddr, InfoHash), Instant>,
}

pub const FORGET_AFTER: Duration = Duration::from_secs(2 * 5 * 60);

impl Newcomers {
    /// Is this the first announce of `ih` by `peer` lately? Remembers it either way; past
    /// [`MAX_RECENT`] pairs (a flood), nobody is news.
    pub fn is_new(&mut self, peer: SocketAddr, ih: InfoHash, now: Instant) -> bool {
        let fresh = |t: &Instant| now.saturating_duration_since(*t) < FORGET_AFTER;
        if let Some(t) = self.seen.get_mut(&(peer, ih)) {
            let new = !fresh(t);
            *t = now;
            return new;
        }
        if self.seen.len() >= MAX_RECENT {
            self.seen.retain(|_, t| fresh(t));
            if self.seen.len() >= MAX_RECENT {
                return false;
            }
        }
        self.seen.insert((peer, ih), now);
        true
    }
}

/// How many peers announces may teach us.
#[derive(Debug, Default)]
pub struct PeerBudget {
    /// When each peer of the last minute was learned.
    learned: VecDeque<Instant>,
    /// (peer, torrent) → when it was last passed on.
    recent: BTreeMap<(SocketAddr, InfoHash), Instant>,
}

impl PeerBudget {
    /// May `peer` be passed on as a peer of `ih` now? Counts it if so.
    pub fn admit(&mut self, peer: SocketAddr, ih: InfoHash, now: Instant) -> bool {
        while self
            .learned
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.learned.pop_front();
        }
        if self.learned.len() >= MAX_PEERS_PER_MINUTE {
            return false;
        }
        if let Some(t) = self.recent.get(&(peer, ih)) {
            if now.saturating_duration_since(*t) < WINDOW {
                return false;
            }
        }
        if self.recent.len() >= MAX_RECENT {
            self.recent
                .retain(|_, t| now.saturating_duration_since(*t) < WINDOW);
            if self.recent.len() >= MAX_RECENT {
                return false;
            }
        }
        self.recent.insert((peer, ih), now);
        self.learned.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ih(n: u8) -> InfoHash {
        InfoHash::new([n; 20])
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_torrent_is_announced_at_once_then_every_five_minutes() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert_eq!(s.next_wake(t0), None);
        s.add(ih(1), t0);
        assert_eq!(s.next_wake(t0), Some(t0));
        assert_eq!(s.due(t0), vec![ih(1)]);
        assert!(s.due(t0).is_empty());
        assert_eq!(s.next_wake(t0), Some(t0 + REANNOUNCE));
        assert!(s.due(t0 + REANNOUNCE - secs(1)).is_empty());
        assert_eq!(s.due(t0 + REANNOUNCE), vec![ih(1)]);
        s.remove(&ih(1));
        assert_eq!(s.next_wake(t0 + REANNOUNCE), None);
    }

    #[test]
    fn hearing_others_brings_ours_forward_but_never_within_a_minute() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.add(ih(1), t0);
        assert_eq!(s.due(t0), vec![ih(1)]);
        // Heard 10 s later: ours at t0 + 60 s, not before.
        s.heard(&ih(1), t0 + secs(10));
        assert_eq!(s.next_wake(t0 + secs(10)), Some(t0 + MIN_INTERVAL));
        assert!(s.due(t0 + secs(59)).is_empty());
        assert_eq!(s.due(t0 + secs(60)), vec![ih(1)]);
        // Heard 3 minutes later: at once. Heard for a torrent we do not have: nothing.
        s.heard(&ih(1), t0 + secs(240));
        s.heard(&ih(2), t0 + secs(240));
        assert_eq!(s.due(t0 + secs(240)), vec![ih(1)]);
        // However often it is heard, at most once a minute.
        for k in 0..59 {
            s.heard(&ih(1), t0 + secs(241 + k));
            assert!(s.due(t0 + secs(241 + k)).is_empty());
        }
        assert_eq!(s.due(t0 + secs(300)), vec![ih(1)]);
    }

    #[test]
    fn many_torrents_share_datagrams_and_the_overall_budget() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        for i in 0..255u8 {
            s.add(ih(i), t0);
        }
        let mut packets = 0;
        loop {
            let d = s.due(t0);
            if d.is_empty() {
                break;
            }
            assert!(d.len() <= HASHES_PER_PACKET);
            packets += 1;
        }
        assert_eq!(packets, MAX_PACKETS_PER_MINUTE);
        // The rest waits for the window to free up.
        assert_eq!(s.next_wake(t0 + secs(1)), Some(t0 + WINDOW));
        let d = s.due(t0 + WINDOW);
        assert_eq!(d.len(), HASHES_PER_PACKET);
        // Over 10 minutes, never more than the budget in any minute.
        let mut sent: Vec<Instant> = Vec::new();
        let mut t = t0 + WINDOW;
        while t < t0 + secs(600) {
            while !s.due(t).is_empty() {
                sent.push(t);
            }
            t += secs(1);
        }
        for (i, a) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|b| **b - *a < WINDOW).count();
            assert!(in_window <= MAX_PACKETS_PER_MINUTE, "{in_window}");
        }
    }

    #[test]
    fn only_newcomers_are_news() {
        let t0 = Instant::now();
        let mut n = Newcomers::default();
        let p = |i: u16| SocketAddr::from(([10, 0, 0, 1], i));
        assert!(n.is_new(p(1), ih(1), t0));
        // Announcing every 5 minutes, it stays known.
        for k in 1..10 {
            assert!(!n.is_new(p(1), ih(1), t0 + REANNOUNCE * k));
        }
        assert!(n.is_new(p(1), ih(2), t0));
        // Gone for longer than two periods: news again.
        assert!(n.is_new(p(1), ih(2), t0 + FORGET_AFTER));
        // A flood: bounded, and then nobody is news.
        let news = (100..5000).filter(|&i| n.is_new(p(i), ih(3), t0)).count();
        assert!(news < MAX_RECENT, "{news}");
        assert!(n.seen.len() <= MAX_RECENT);
        assert!(!n.is_new(p(6000), ih(3), t0));
    }

    #[test]
    fn learned_peers_are_bounded() {
        let t0 = Instant::now();
        let mut b = PeerBudget::default();
        let p = |i: u16| SocketAddr::from(([10, 0, 0, 1], i));
        assert!(b.admit(p(1), ih(1), t0));
        // The same peer for the same torrent: once a minute.
        assert!(!b.admit(p(1), ih(1), t0 + secs(59)));
        assert!(b.admit(p(1), ih(2), t0 + secs(1)));
        assert!(b.admit(p(1), ih(1), t0 + secs(60)));
        // A flood of distinct peers: MAX_PEERS_PER_MINUTE in a minute at most.
        let t1 = t0 + secs(200);
        let n = (100..10_000).filter(|&i| b.admit(p(i), ih(3), t1)).count();
        assert_eq!(n, MAX_PEERS_PER_MINUTE);
        assert!(b.admit(p(5), ih(3), t1 + WINDOW));
        assert!(b.recent.len() <= MAX_RECENT);
    }
}
