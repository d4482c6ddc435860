//! Web seeds (BEP 19) inside the swarm actor: each web seed is a virtual peer that has every
//! piece. The picker hands it blocks like any peer (under a reserved [`PeerKey`]); a fetch
//! task turns contiguous runs of those blocks into HTTP range requests (split across files
//! per BEP 19) on keep-alive connections, with [`MAX_IN_FLIGHT`] fetches at once per seed;
//! the bytes come back as ordinary blocks, so pieces are verified exactly like peer pieces.
//!
//! A web seed that errors is backed off (5 s doubling) and given up after [`MAX_FAILS`]
//! errors in a row; one that contributed to [`MAX_BAD_PIECES`] pieces failing their hash is
//! dropped at once (a mirror with a different file is not going to get better).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Swarm;
use crate::metainfo::Metainfo;
use crate::net::Net;
use crate::torrent::{Bitfield, BlockRef, PeerKey};
use crate::webseed::{self, WebSeedError, WebSeedFetcher};

/// Concurrent fetches per web seed (each on its own keep-alive connection).
const MAX_IN_FLIGHT: usize = 2;
/// Errors in a row before a web seed is given up.
const MAX_FAILS: u32 = 5;
/// Pieces failing their hash with this seed's data before it is dropped.
const MAX_BAD_PIECES: u32 = 2;
/// Web seeds used at most per torrent (the list is hostile input).
const MAX_SEEDS: usize = 16;
/// Per-request timeout.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes asked per fetch at most (blocks picked per fetch = this / block size).
const FETCH_BYTES: u64 = 1 << 20;

/// The web seeds of a torrent and the geometry needed to map pieces to files.
#[derive(Debug)]
pub struct WebSeedSetup {
    pub urls: Vec<String>,
    pub layout: crate::torrent::Layout,
}

impl WebSeedSetup {
    /// `None` when there are no usable (http/https) URLs.
    pub fn new(meta: &Metainfo, urls: Vec<String>) -> Option<Arc<WebSeedSetup>> {
        let mut seen = BTreeSet::new();
        let urls: Vec<String> = urls
            .into_iter()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .filter(|u| seen.insert(u.clone()))
            .take(MAX_SEEDS)
            .collect();
        if urls.is_empty() {
            return None;
        }
        let layout = webseed::layout_of(meta).ok()?;
        Some(Arc::new(WebSeedSetup { urls, layout }))
    }
}

struct Seed {
    url: String,
    key: PeerKey,
    in_flight: usize,
    fails: u32,
    bad_pieces: u32,
    next_try: Instant,
    dead: bool,
    /// Idle keep-alive connections.
    fetchers: Vec<WebSeedFetcher>,
    /// Pieces this seed sent blocks of that are not verified yet.
    pieces: BTreeSet<u32>,
}

/// A finished fetch.
pub struct WsDone {
    seed: usize,
    fetcher: WebSeedFetcher,
    blocks: Vec<BlockRef>,
    result: Result<Vec<u8>, WebSeedError>,
}

pub struct WebSeeds {
    setup: Option<Arc<WebSeedSetup>>,
    seeds: Vec<Seed>,
    net: Net,
    /// Requests go out from this IP (the session's bind address), like tracker announces.
    bind_ip: Option<std::net::IpAddr>,
    pub(super) tasks: JoinSet<WsDone>,
    all: Option<Bitfield>,
}

impl WebSeeds {
    pub fn new(
        setup: Option<Arc<WebSeedSetup>>,
        net: Net,
        bind_ip: Option<std::net::IpAddr>,
    ) -> Self {
        let now = Instant::now();
        let seeds = setup
            .as_ref()
            .map(|s| {
                s.urls
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
                        fetchers: Vec::new(),
                        pieces: BTreeSet::new(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        WebSeeds {
            setup,
            seeds,
            net,
            bind_ip,
            tasks: JoinSet::new(),
            all: None,
        }
    }

    fn alive(&self) -> u64 {
        self.seeds.iter().filter(|s| !s.dead).count() as u64
    }
}

/// Contiguous runs of blocks: (first block, total length, blocks).
fn runs(mut blocks: Vec<BlockRef>, piece_length: u64) -> Vec<(u64, u64, Vec<BlockRef>)> {
    blocks.sort();
    let mut out: Vec<(u64, u64, Vec<BlockRef>)> = Vec::new();
    for b in blocks {
        let start = u64::from(b.piece) * piece_length + u64::from(b.offset);
        match out.last_mut() {
            Some((s, l, v)) if *s + *l == start && *l + u64::from(b.len) <= FETCH_BYTES => {
                *l += u64::from(b.len);
                v.push(b);
            }
            _ => out.push((start, u64::from(b.len), vec![b])),
        }
    }
    out
}

impl Swarm {
    /// Gives every idle web seed blocks to fetch.
    pub(super) fn ws_fill(&mut self, now: Instant) {
        let Some(setup) = self.ws.setup.clone() else {
            return;
        };
        if let Some(c) = &self.p.cfg.sources {
            c.webseed.store(self.ws.alive(), Ordering::Relaxed);
        }
        if self.complete() {
            return;
        }
        let n = self.p.layout.piece_count();
        let all = self.ws.all.get_or_insert_with(|| Bitfield::full(n)).clone();
        let want = (FETCH_BYTES / u64::from(crate::torrent::BLOCK_SIZE)).max(1) as usize;
        for i in 0..self.ws.seeds.len() {
            loop {
                let s = &self.ws.seeds[i];
                if s.dead || s.in_flight >= MAX_IN_FLIGHT || s.next_try > now {
                    break;
                }
                let key = s.key;
                let mut blocks = Vec::new();
                self.core.picker.pick_blocks(key, &all, want, &mut blocks);
                if blocks.is_empty() {
                    break;
                }
                let s = &mut self.ws.seeds[i];
                s.in_flight += 1;
                let mut fetcher = s.fetchers.pop().unwrap_or_else(|| {
                    WebSeedFetcher::new(self.ws.net.clone(), FETCH_TIMEOUT)
                        .with_bind_ip(self.ws.bind_ip)
                });
                let url = s.url.clone();
                let setup = setup.clone();
                self.ws.tasks.spawn(async move {
                    let mut data = Vec::new();
                    let mut result = Ok(());
                    for (start, len, _) in runs(blocks.clone(), setup.layout.piece_length()) {
                        let r = match webseed::byte_ranges(&url, &setup.layout, start, len) {
                            Ok(ranges) => fetcher.fetch_piece(&ranges).await,
                            Err(e) => Err(e),
                        };
                        match r {
                            Ok(d) => data.extend_from_slice(&d),
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        }
                    }
                    blocks.sort();
                    WsDone {
                        seed: i,
                        fetcher,
                        blocks,
                        result: result.map(|_| data),
                    }
                });
            }
        }
    }

    pub(super) fn on_ws_done(&mut self, d: WsDone) {
        let now = Instant::now();
        let Some(s) = self.ws.seeds.get_mut(d.seed) else {
            return;
        };
        s.in_flight = s.in_flight.saturating_sub(1);
        let key = s.key;
        if s.dead {
            // Dropped for bad data while this fetch ran: its bytes are not wanted.
            for r in d.blocks {
                self.core.picker.on_reject(key, r);
            }
            return;
        }
        let data = match d.result {
            Ok(data) => {
                s.fails = 0;
                s.fetchers.push(d.fetcher);
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
                for r in d.blocks {
                    self.core.picker.on_reject(key, r);
                }
                self.with_core(|c, io| c.request_everywhere(now, io));
                return;
            }
        };
        // The blocks are slices of the fetched bytes (no copy), and take the peer path.
        let data = bytes::Bytes::from(data);
        let mut at = 0usize;
        for r in d.blocks {
            let len = r.len as usize;
            if at + len > data.len() {
                // Short data (cannot happen with a length-checked fetch): release the rest.
                self.core.picker.on_reject(key, r);
                continue;
            }
            let chunk = data.slice(at..at + len);
            at += len;
            if self.with_core(|c, io| c.on_web_block(key, r, chunk, now, io)) {
                // Checked later (its result comes back through the actor's loop): the
                // seed is on record by then, for a strike if the piece fails.
                if let Some(s) = self.ws.seeds.get_mut(d.seed) {
                    s.pieces.insert(r.piece);
                }
            }
        }
        self.ws_fill(now);
    }

    /// A piece was checked: web seeds that sent part of a bad piece get a strike.
    pub(super) fn ws_on_checked(&mut self, piece: u32, ok: bool) {
        let mut dropped = Vec::new();
        for (i, s) in self.ws.seeds.iter_mut().enumerate() {
            if !s.pieces.remove(&piece) || ok {
                continue;
            }
            s.bad_pieces += 1;
            if s.bad_pieces >= MAX_BAD_PIECES && !s.dead {
                tracing::warn!(url = %s.url, "web seed dropped: sent data that fails the hash");
                s.dead = true;
                dropped.push(i);
            } else {
                s.next_try = Instant::now() + Duration::from_secs(5);
            }
        }
        for i in dropped {
            let key = self.ws.seeds[i].key;
            self.core.picker.on_peer_disconnected(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_join_contiguous_blocks_across_pieces() {
        let b = |piece, offset, len| BlockRef { piece, offset, len };
        let r = runs(
            vec![b(1, 0, 16), b(0, 16, 16), b(0, 0, 16), b(3, 0, 16)],
            32,
        );
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].0, r[0].1, r[0].2.len()), (0, 48, 3));
        assert_eq!((r[1].0, r[1].1), (96, 16));
    }
}
