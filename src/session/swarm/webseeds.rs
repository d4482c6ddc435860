//! Web seeds (BEP 19), the driver's half: the HTTP fetches. Which web seed fetches which
//! blocks, and when one is backed off or given up, is the core's decision
//! ([`super::core`]'s `web` module); here an [`Action::Fetch`](super::core::Action) turns
//! contiguous runs of its blocks into HTTP range requests (split across files per BEP 19)
//! on a keep-alive connection of that seed, and the bytes go back to the core.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::core::FETCH_BYTES;
use crate::metainfo::Metainfo;
use crate::net::Net;
use crate::torrent::BlockRef;
use crate::webseed::{self, WebSeedError, WebSeedFetcher};

/// Web seeds used at most per torrent (the list is hostile input).
const MAX_SEEDS: usize = 16;
/// Per-request timeout.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A finished fetch.
pub struct WsDone {
    pub seed: usize,
    pub fetcher: WebSeedFetcher,
    pub blocks: Vec<BlockRef>,
    pub result: Result<Vec<u8>, WebSeedError>,
}

/// The web seeds' fetches in flight and their idle keep-alive connections.
pub struct WebSeeds {
    setup: Option<Arc<WebSeedSetup>>,
    /// Idle keep-alive connections, per seed (in the order of `setup.urls`).
    idle: Vec<Vec<WebSeedFetcher>>,
    net: Net,
    /// Requests go out from this IP (the session's bind address), like tracker announces.
    bind_ip: Option<std::net::IpAddr>,
    pub(super) tasks: JoinSet<WsDone>,
}

impl WebSeeds {
    pub fn new(
        setup: Option<Arc<WebSeedSetup>>,
        net: Net,
        bind_ip: Option<std::net::IpAddr>,
    ) -> Self {
        let n = setup.as_ref().map_or(0, |s| s.urls.len());
        WebSeeds {
            setup,
            idle: (0..n).map(|_| Vec::new()).collect(),
            net,
            bind_ip,
            tasks: JoinSet::new(),
        }
    }

    /// The web seeds' URLs (the core numbers them in this order).
    pub(super) fn urls(&self) -> &[String] {
        self.setup.as_ref().map_or(&[], |s| &s.urls)
    }

    /// A connection of seed `seed` that may fetch again.
    pub(super) fn keep(&mut self, seed: usize, fetcher: WebSeedFetcher) {
        if let Some(idle) = self.idle.get_mut(seed) {
            idle.push(fetcher);
        }
    }

    /// Starts fetching `blocks` (sorted) from seed `seed`, on an idle connection of it or a
    /// new one.
    pub(super) fn fetch(&mut self, seed: usize, blocks: Vec<BlockRef>) {
        let (Some(setup), Some(idle)) = (self.setup.clone(), self.idle.get_mut(seed)) else {
            return;
        };
        let mut fetcher = idle.pop().unwrap_or_else(|| {
            WebSeedFetcher::new(self.net.clone(), FETCH_TIMEOUT).with_bind_ip(self.bind_ip)
        });
        let url = setup.urls[seed].clone();
        self.tasks.spawn(async move {
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
            WsDone {
                seed,
                fetcher,
                blocks,
                result: result.map(|_| data),
            }
        });
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
