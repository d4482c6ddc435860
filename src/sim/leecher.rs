//! One honest leecher's life in a simulation: arrive, find peers through the DHT (BEP 5),
//! fetch the metadata (BEP 9), download and verify (BEP 3), then stay, seed or leave as the
//! scenario's churn says.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::dht::node::Dht;
use crate::id::InfoHash;
use crate::magnet::Magnet;
use crate::session::{AddTorrent, Phase, Source, StorageSpec, TorrentHandle, DISCOVER_FIRST_RETRY};

use super::*;

pub(super) struct LeecherCtx {
    pub(super) index: usize,
    pub(super) host: simnet::Host,
    pub(super) ip: IpAddr,
    pub(super) bootstrap: Option<Vec<SocketAddr>>,
    pub(super) magnet: Magnet,
    pub(super) ih: InfoHash,
    pub(super) dht_seed: u64,
    pub(super) session_seed: u64,
    pub(super) arrive: Instant,
    pub(super) deadline: Instant,
    pub(super) content: u64,
    pub(super) sc: Scenario,
    pub(super) slots: ProgressSlots,
    pub(super) arrived: mpsc::UnboundedSender<Arrived>,
    pub(super) end: watch::Receiver<bool>,
}

/// One leecher's life: arrive, download, report, maybe leave (churn), wait for the end.
pub(super) async fn leecher(mut c: LeecherCtx) -> Gone {
    let mut gone = Gone {
        index: c.index,
        peer: None,
        left: None,
    };
    let (host, ip, arrive) = (c.host.clone(), c.ip, c.arrive);
    let (boot, dht_seed, session_seed) = (c.bootstrap.clone(), c.dht_seed, c.session_seed);
    let sc = c.sc.clone();
    let started = async move {
        tokio::time::sleep_until(arrive).await;
        let b = boot.as_deref();
        start_peer(&sc, &host, ip, b, dht_seed, session_seed).await
    };
    let (dht, session) = tokio::select! {
        biased;
        _ = c.end.changed() => return gone,
        r = started => match r {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(index = c.index, %e, "leecher could not start");
                let _ = c.arrived.send(Arrived { index: c.index, arrive: c.arrive, result: LeechResult::default() });
                return gone;
            }
        },
    };
    let mut add = AddTorrent::new(
        Source::Magnet(c.magnet.clone()),
        StorageSpec::Generated {
            seed: c.content,
            complete: false,
        },
    );
    add.swarm.keep_seeding = true;
    add.swarm.blocking_io = false;
    add.swarm.max_peers = c.sc.max_peers;
    add.swarm.max_up_rate = upload_cap(c.sc.up, c.sc.up_cap);
    add.metadata_timeout = c.sc.duration;
    let handle = session.add(add);
    if let Ok(mut s) = c.slots.lock() {
        if let Some(slot) = s.get_mut(c.index) {
            *slot = Some(handle.progress());
        }
    }
    let give_up = match c.sc.leave_after {
        Some(d) => c.deadline.min(c.arrive + d),
        None => c.deadline,
    };
    let r = leech(
        dht.as_ref(),
        &handle,
        c.ih,
        c.arrive,
        give_up,
        c.sc.relookup,
    )
    .await;
    let leave_at = match (r.done.is_some(), c.sc.leave_after_done) {
        (true, Some(d)) => Some(Instant::now() + d),
        (true, None) => None,
        // Gave up before the end of the run: that was a departure (churn).
        (false, _) => {
            (Instant::now() < c.deadline && c.sc.leave_after.is_some()).then(Instant::now)
        }
    };
    let _ = c.arrived.send(Arrived {
        index: c.index,
        arrive: c.arrive,
        result: r,
    });
    if let Some(t) = leave_at {
        tokio::select! {
            biased;
            _ = c.end.changed() => {}
            _ = tokio::time::sleep_until(t) => {
                handle.stop();
                c.host.down();
                gone.left = Some(Instant::now());
            }
        }
    }
    if gone.left.is_none() {
        let _ = c.end.wait_for(|e| *e).await;
    }
    gone.peer = Some(Peer {
        _dht: dht,
        _session: session,
        handle,
        host: c.host,
    });
    gone
}

/// One leecher: looks peers up (re-announcing every `relookup`) until its download is
/// verified complete or the deadline passes.
pub(super) async fn leech(
    dht: Option<&Dht>,
    handle: &TorrentHandle,
    ih: InfoHash,
    t0: Instant,
    deadline: Instant,
    relookup: Duration,
) -> LeechResult {
    let mut res = LeechResult::default();
    let mut prog = handle.progress();
    let tx = handle.peer_sender();
    let mut pending = match dht {
        Some(d) => Some(lookup_into(d, ih, tx.clone()).await),
        None => None,
    };
    let mut next_lookup = Instant::now() + relookup;
    let mut backoff =
        crate::session::RelookupBackoff::new(DISCOVER_FIRST_RETRY, Duration::from_secs(2));
    loop {
        {
            let p = prog.borrow_and_update();
            if res.metadata_ms.is_none() {
                res.metadata_ms = p.metadata_ms;
            }
            if matches!(p.phase, Phase::Seeding | Phase::Done) && p.total > 0 {
                res.done = Some(t0.elapsed());
                return res;
            }
            if p.phase == Phase::Stopped {
                return res;
            }
        }
        tokio::select! {
            biased;
            c = prog.changed() => if c.is_err() { return res; },
            s = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                pending = None;
                if res.first_lookup.is_none() {
                    res.first_lookup = s.ok();
                }
                // Without metadata we may know only a seeder whose connection slots are
                // full: ask again soon (announcing us, so the crowd finds itself), as the
                // session's own DHT loop does.
                let served = {
                    let p = prog.borrow();
                    p.total > 0 && p.peers > 0
                };
                let wait = backoff.next_wait(served, relookup);
                next_lookup = Instant::now() + wait;
            }
            _ = tokio::time::sleep_until(next_lookup), if pending.is_none() && dht.is_some() => {
                if let Some(d) = dht {
                    pending = Some(lookup_into(d, ih, tx.clone()).await);
                }
            }
            _ = tokio::time::sleep_until(deadline) => return res,
        }
    }
}
