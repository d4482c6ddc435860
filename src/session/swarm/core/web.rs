//! Web seeds' schedule and strikes (BEP 19): each web seed is a virtual peer that has every
//! piece. The picker hands it blocks like any peer (under a reserved [`PeerKey`]); up to
//! [`MAX_IN_FLIGHT`] fetches run at once per seed ([`Action::Fetch`], carried out by the
//! driver over HTTP); the bytes come back as ordinary blocks, so pieces are verified
//! exactly like peer pieces.
//!
//! A web seed that errors is backed off (5 s doubling) and given up after [`MAX_FAILS`]
//! errors in a row; one that contributed to [`MAX_BAD_PIECES`] pieces failing their hash is
//! dropped at once (a mirror with a different file is not going to get better).

use std::collections::BTreeSet;
use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{Action, Io, SwarmCore};
use crate::torrent::{Bitfield, BlockRef, PeerKey};

/// Concurrent fetches per web seed (each on its own keep-alive connection).
pub(crate) const MAX_IN_FLIGHT: usize = 2;
/// Errors in a row before a web seed is given up.
pub(crate) const MAX_FAILS: u32 = 5;
/// Pieces failing their hash with this seed's data before it is dropped.
pub(crate) const MAX_BAD_PIECES: u32 = 2;
/// Bytes asked per fetch at most (blocks picked per fetch = this / block size).
pub(crate) const FETCH_BYTES: u64 = 1 << 20;

/// One web seed's schedule.
#[derive(Debug)]
struct Seed {
    /// For the log only.
    url: String,
    /// The picker's name for it.
    key: PeerKey,
    in_flight: usize,
    /// Errors in a row.
    fails: u32,
    bad_pieces: u32,
    next_try: Instant,
    dead: bool,
    /// Pieces this seed sent blocks of that are not verified yet.
    pieces: BTreeSet<u32>,
}

/// The web seeds of a torrent, in the order of their URLs (a seed's number is its index).
#[derive(Debug, Default)]
pub(super) struct WebSeeds {
    seeds: Vec<Seed>,
    /// What every web seed has: every piece.
    all: Option<Bitfield>,
}

impl SwarmCore {
    /// The torrent's web seeds, numbered in this order, all due now.
    pub(in crate::session::swarm) fn with_web_seeds(
        mut self,
        urls: &[String],
        now: Instant,
    ) -> Self {
        self.web.seeds = urls
            .iter()
            .enumerate()
            .map(|(i, u)| Seed {
                url: u.clone(),
                // Far above any real peer key (those count up from 0).
                key: PeerKey(u64::MAX - i as u64),
                in_flight: 0,
                fails: 0,
                bad_pieces: 0,
                next_try: now,
                dead: false,
                pieces: BTreeSet::new(),
            })
            .collect();
        self
    }

    /// Web seeds not given up.
    pub(in crate::session::swarm) fn web_seeds_alive(&self) -> u64 {
        self.web.seeds.iter().filter(|s| !s.dead).count() as u64
    }

    /// Gives every idle web seed blocks to fetch: while a seed is alive, due and below
    /// [`MAX_IN_FLIGHT`], one [`Action::Fetch`] of up to [`FETCH_BYTES`] that the picker
    /// chose for it.
    pub(in crate::session::swarm) fn web_fill(&mut self, now: Instant, io: &mut impl Io) {
        if self.web.seeds.is_empty() || self.complete() {
            return;
        }
        let n = self.layout.piece_count();
        let all = self
            .web
            .all
            .get_or_insert_with(|| Bitfield::full(n))
            .clone();
        let want = (FETCH_BYTES / u64::from(crate::torrent::BLOCK_SIZE)).max(1) as usize;
        for (i, s) in self.web.seeds.iter_mut().enumerate() {
            while !s.dead && s.in_flight < MAX_IN_FLIGHT && s.next_try <= now {
                let mut blocks = Vec::new();
                self.picker.pick_blocks(s.key, &all, want, &mut blocks);
                if blocks.is_empty() {
                    break;
                }
                s.in_flight += 1;
                blocks.sort();
                io.act(Action::Fetch { seed: i, blocks });
            }
        }
    }

    /// A fetch of web seed `seed` ended: `data` is the blocks' bytes in order, or the
    /// error. The blocks take the peer path (kept if still wanted, checked when a piece is
    /// complete); an error backs the seed off (or gives it up) and releases the blocks to
    /// others. True: the fetch delivered, and the driver keeps its connection for the next
    /// fetch, then calls [`Self::web_fill`].
    pub(in crate::session::swarm) fn on_web_fetched(
        &mut self,
        seed: usize,
        blocks: Vec<BlockRef>,
        data: Result<Bytes, &dyn Display>,
        now: Instant,
        io: &mut impl Io,
    ) -> bool {
        let Some(s) = self.web.seeds.get_mut(seed) else {
            return false;
        };
        s.in_flight = s.in_flight.saturating_sub(1);
        let key = s.key;
        if s.dead {
            // Dropped for bad data while this fetch ran: its bytes are not wanted.
            for r in blocks {
                self.picker.on_reject(key, r);
            }
            return false;
        }
        let data = match data {
            Ok(data) => {
                s.fails = 0;
                data
            }
            Err(e) => {
                s.fails += 1;
                if s.fails >= MAX_FAILS {
                    tracing::warn!(url = %s.url, %e, "web seed given up");
                    s.dead = true;
                } else {
                    tracing::info!(url = %s.url, %e, "web seed error; backing off");
                    s.next_try = now + Duration::from_secs(5u64 << (s.fails - 1).min(4));
                }
                // Only this fetch's blocks go back (another fetch of the seed may be running).
                for r in blocks {
                    self.picker.on_reject(key, r);
                }
                self.request_everywhere(now, io);
                return false;
            }
        };
        // The blocks are slices of the fetched bytes (no copy), and take the peer path.
        let mut at = 0usize;
        for r in blocks {
            let len = r.len as usize;
            if at + len > data.len() {
                // Short data (cannot happen with a length-checked fetch): release the rest.
                self.picker.on_reject(key, r);
                continue;
            }
            let chunk = data.slice(at..at + len);
            at += len;
            if self.on_web_block(key, r, chunk, now, io) {
                // Checked later (its result comes back through the driver): the seed is on
                // record by then, for a strike if the piece fails.
                if let Some(s) = self.web.seeds.get_mut(seed) {
                    s.pieces.insert(r.piece);
                }
            }
        }
        true
    }

    /// A piece was checked: web seeds that sent part of it are off the hook, or get a
    /// strike when it failed (backed off 5 s; dropped at [`MAX_BAD_PIECES`]).
    pub(super) fn web_on_checked(&mut self, piece: u32, ok: bool, now: Instant) {
        for s in self.web.seeds.iter_mut() {
            if !s.pieces.remove(&piece) || ok {
                continue;
            }
            s.bad_pieces += 1;
            if s.bad_pieces >= MAX_BAD_PIECES && !s.dead {
                tracing::warn!(url = %s.url, "web seed dropped: sent data that fails the hash");
                s.dead = true;
                self.picker.on_peer_disconnected(s.key);
            } else {
                s.next_try = now + Duration::from_secs(5);
            }
        }
    }
}
