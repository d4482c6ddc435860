//! The core's decisions, driven by hand: no sockets, no tasks, no simulated network.

use super::*;

#[test]
fn both_ends_keep_the_same_duplicate() {
    let (a, b) = (crate::id::Id20([1; 20]), crate::id::Id20([2; 20]));
    // a dialled b and b dialled a. At a, "outgoing" is a->b; at b, it is b->a.
    // Whichever arrived second at each end, both keep a->b (a's id is smaller).
    // Is the connection an end keeps the one it dialled, given which came first?
    let keeps_outgoing = |ours, theirs, first_outgoing: bool| {
        let new_kept = keep_new_duplicate(ours, theirs, !first_outgoing, first_outgoing);
        new_kept != first_outgoing
    };
    for first_outgoing in [true, false] {
        assert!(
            keeps_outgoing(&a, &b, first_outgoing),
            "a keeps what it dialled"
        );
        assert!(
            !keeps_outgoing(&b, &a, first_outgoing),
            "b keeps what a dialled"
        );
    }
    // Two connections in the same direction (dialled twice): the old one stays.
    assert!(!keep_new_duplicate(&a, &b, true, true));
    assert!(!keep_new_duplicate(&a, &b, false, false));
}

use std::collections::BTreeSet;

use rand::SeedableRng;

use crate::torrent::choker::ChokerConfig;
use crate::torrent::PickerConfig;

const BLOCK: u32 = crate::torrent::BLOCK_SIZE;

/// Records the core's actions; sends to `deaf` peers fail (their queue is full).
#[derive(Default)]
struct Rec {
    acts: Vec<Action>,
    deaf: BTreeSet<PeerKey>,
}

impl Io for Rec {
    fn act(&mut self, a: Action) -> bool {
        let ok = !matches!(&a, Action::Send(k, _) if self.deaf.contains(k));
        self.acts.push(a);
        ok
    }
}

impl Rec {
    /// Requests sent to `key` since the last call (taken out of the record).
    fn requests(&mut self, key: PeerKey) -> Vec<BlockRef> {
        let mut out = Vec::new();
        for a in &self.acts {
            if let Action::Send(k, PeerCmd::Send(ms)) = a {
                if *k == key {
                    out.extend(ms.iter().filter_map(|m| match m {
                        Message::Request(b) => Some(to_block(*b)),
                        _ => None,
                    }));
                }
            }
        }
        self.acts.retain(|a| !matches!(a, Action::Send(k, PeerCmd::Send(ms)) if *k == key && ms.iter().any(|m| matches!(m, Message::Request(_)))));
        out
    }

    fn sent(&self, key: PeerKey, want: &Message) -> bool {
        self.acts.iter().any(|a| matches!(a, Action::Send(k, PeerCmd::Send(ms)) if *k == key && ms.iter().any(|m| format!("{m:?}") == format!("{want:?}"))))
    }

    fn checks(&mut self) -> Vec<(u32, PieceBlocks, bool)> {
        let mut out = Vec::new();
        for a in std::mem::take(&mut self.acts) {
            match a {
                Action::Check {
                    piece,
                    blocks,
                    want_digests,
                } => out.push((piece, blocks, want_digests)),
                a => self.acts.push(a),
            }
        }
        out
    }
}

fn core(pieces: u64, piece_len: u64) -> SwarmCore {
    let layout = Arc::new(Layout::single("f", pieces * piece_len, piece_len).unwrap());
    let now = Instant::now();
    let picker = Picker::new(
        &layout,
        PickerConfig::default(),
        rand::rngs::StdRng::seed_from_u64(1),
    );
    let choker = Choker::new(
        ChokerConfig::default(),
        rand::rngs::StdRng::seed_from_u64(2),
    );
    SwarmCore::new(
        layout,
        crate::id::Id20([0; 20]),
        picker,
        choker,
        TokenBucket::unlimited(now),
        now,
    )
}

fn limits(max_peers: usize, incoming_slack: usize, max_half_open: usize) -> Limits {
    Limits {
        max_peers,
        incoming_slack,
        max_half_open,
        max_candidates: 100,
        private: false,
    }
}

fn core_with(pieces: u64, piece_len: u64, limits: Limits) -> SwarmCore {
    core(pieces, piece_len).with_connections(
        limits,
        Arc::new(OwnAddrs::default()),
        rand::rngs::StdRng::seed_from_u64(3),
    )
}

/// Peer `k` at 10.0.0.(k+1):6881, which we dialled.
fn add(core: &mut SwarmCore, k: u64, now: Instant) -> PeerKey {
    let addr: SocketAddr = format!("10.0.0.{}:6881", k + 1).parse().unwrap();
    add_at(core, k, addr, crate::id::Id20([k as u8 + 1; 20]), true, now)
}

fn add_at(
    core: &mut SwarmCore,
    k: u64,
    addr: SocketAddr,
    id: PeerId,
    outgoing: bool,
    now: Instant,
) -> PeerKey {
    let key = PeerKey(k);
    let n = core.layout.piece_count();
    let peer = Peer::new(
        addr,
        id,
        Transport::Tcp,
        outgoing,
        Arc::new(PeerCounters::default()),
        n,
        now,
    );
    core.add_peer(key, peer, None);
    key
}

/// The dials asked for since the last call (taken out of the record), in order.
fn connects(io: &mut Rec) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    io.acts.retain(|a| match a {
        Action::Connect(a) => {
            out.push(*a);
            false
        }
        _ => true,
    });
    out
}

/// The piece's true contents: every byte is its piece index.
fn data(r: BlockRef, corrupt: bool) -> Bytes {
    let b = if corrupt { 0xee } else { r.piece as u8 };
    Bytes::from(vec![b; r.len as usize])
}

fn piece(r: BlockRef) -> Message {
    Message::Piece {
        index: r.piece,
        begin: r.offset,
        data: data(r, false),
    }
}

#[test]
fn interest_follows_have_and_bitfield() {
    let now = Instant::now();
    let mut c = core(4, u64::from(BLOCK));
    let k = add(&mut c, 0, now);
    let mut io = Rec::default();
    // Nothing we could want: no `interested`.
    c.on_message(k, Message::HaveNone, now, &mut io).unwrap();
    assert!(!c.peers[&k].am_interested && io.acts.is_empty());
    // One piece: interested.
    c.on_message(k, Message::Have(2), now, &mut io).unwrap();
    assert!(c.peers[&k].am_interested);
    assert!(io.sent(k, &Message::Interested));
    // A repeated `have` changes nothing.
    io.acts.clear();
    c.on_message(k, Message::Have(2), now, &mut io).unwrap();
    assert!(io.acts.is_empty());
    // Out of range: the peer is dropped by the caller.
    assert!(c.on_message(k, Message::Have(4), now, &mut io).is_err());
    // A bitfield of nothing takes the interest away.
    c.on_message(k, Message::Bitfield(Bytes::from_static(&[0])), now, &mut io)
        .unwrap();
    assert!(!c.peers[&k].am_interested);
    assert!(io.sent(k, &Message::NotInterested));
    // Bad bitfield (wrong length): an error.
    assert!(c
        .on_message(
            k,
            Message::Bitfield(Bytes::from_static(&[0, 0])),
            now,
            &mut io
        )
        .is_err());
}

#[test]
fn requests_fill_the_pipeline_and_only_requested_blocks_count() {
    let now = Instant::now();
    // 4 pieces of 8 blocks: more than one pipeline's worth.
    let mut c = core(4, 8 * u64::from(BLOCK));
    let k = add(&mut c, 0, now);
    let other = add(&mut c, 1, now);
    let mut io = Rec::default();
    c.on_message(k, Message::HaveAll, now, &mut io).unwrap();
    // Choked: interested, but no requests yet.
    assert!(io.requests(k).is_empty());
    c.on_message(k, Message::Unchoke, now, &mut io).unwrap();
    let asked = io.requests(k);
    // The pipeline's floor is 8 blocks (the slow start grows it later).
    assert_eq!(asked.len(), 8);
    assert_eq!(c.picker.outstanding(k), 8);
    // A block nobody asked for: not kept, no check, the download counter still counts it.
    let stray = BlockRef {
        piece: 3,
        offset: 7 * BLOCK,
        len: BLOCK,
    };
    let stray = if asked.contains(&stray) {
        BlockRef { piece: 0, ..stray }
    } else {
        stray
    };
    assert!(!asked.contains(&stray));
    c.on_message(other, piece(stray), now, &mut io).unwrap();
    assert!(c.buffers.is_empty());
    assert_eq!(c.downloaded, u64::from(BLOCK));
    // Delivering one of the requests keeps it, and tops up only new blocks (the pipeline's
    // slow start may have grown).
    c.on_message(k, piece(asked[0]), now, &mut io).unwrap();
    assert_eq!(
        c.buffers
            .values()
            .map(|b| b.slices().count())
            .sum::<usize>(),
        1
    );
    let mut all = asked.clone();
    let topped = io.requests(k);
    assert!(topped.iter().all(|r| !all.contains(r)));
    all.extend(topped);
    // A batch of the rest tops up once, at its end: one request command.
    let rest: Vec<Message> = all[1..].iter().map(|r| piece(*r)).collect();
    io.acts.clear();
    c.on_batch(k, rest, now, &mut io);
    let commands = io
        .acts
        .iter()
        .filter(|a| matches!(a, Action::Send(x, PeerCmd::Send(ms)) if *x == k && matches!(ms[0], Message::Request(_))))
        .count();
    assert_eq!(commands, 1);
    let again = io.requests(k);
    assert!(!again.is_empty());
    assert!(again.iter().all(|r| !all.contains(r)));
    assert_eq!(c.picker.outstanding(k), again.len());
    // Whole pieces went to their check, every block in place.
    let checks = io.checks();
    assert!(!checks.is_empty());
    assert!(checks.iter().all(|(_, b, _)| b.is_complete()));
    // A peer that stops reading its commands is dropped at the next request.
    io.deaf.insert(k);
    let more: Vec<Message> = again.iter().map(|r| piece(*r)).collect();
    c.on_batch(k, more, now, &mut io);
    assert!(!c.peers.contains_key(&k));
    assert!(io
        .acts
        .iter()
        .any(|a| matches!(a, Action::Dropped(key) if *key == k)));
}

#[test]
fn corrupt_sender_is_banned_after_two_strikes_and_honest_one_kept() {
    let now = Instant::now();
    // Two blocks a piece, so pieces are shared between the two senders.
    let mut c = core(16, 2 * u64::from(BLOCK));
    let bad = add(&mut c, 0, now);
    let good = add(&mut c, 1, now);
    let mut io = Rec::default();
    for k in [bad, good] {
        c.on_message(k, Message::HaveAll, now, &mut io).unwrap();
    }
    c.on_message(bad, Message::Unchoke, now, &mut io).unwrap();
    let hash = |p: u32| {
        let mut b = PieceBlocks::new(2 * BLOCK, BLOCK);
        for o in [0, BLOCK] {
            let r = BlockRef {
                piece: p,
                offset: o,
                len: BLOCK,
            };
            b.insert(o, data(r, false));
        }
        b.sha1()
    };
    // The corrupt peer sends the first block of each piece it was asked for, then chokes
    // us: its other requests go to the honest peer, which completes those pieces.
    for r in io.requests(bad) {
        if r.offset == 0 {
            let m = Message::Piece {
                index: r.piece,
                begin: r.offset,
                data: data(r, true),
            };
            c.on_message(bad, m, now, &mut io).unwrap();
        }
    }
    c.on_message(bad, Message::Choke, now, &mut io).unwrap();
    c.on_message(good, Message::Unchoke, now, &mut io).unwrap();
    let mut verified = 0;
    for _ in 0..100 {
        if !c.peers.contains_key(&bad) {
            break;
        }
        let ms: Vec<Message> = io.requests(good).into_iter().map(piece).collect();
        c.on_batch(good, ms, now, &mut io);
        // Failed pieces had two senders: no strike until a good copy shows whose blocks
        // differed (smart ban).
        for (p, blocks, want) in io.checks() {
            let ok = blocks.sha1() == hash(p);
            let digests = (want || !ok).then(|| blocks.block_digests());
            verified += usize::from(ok);
            c.on_checked(p, ok, digests.as_deref(), now, &mut io);
        }
    }
    assert!(!c.peers.contains_key(&bad), "the corrupt sender is banned");
    assert!(c.peers.contains_key(&good), "the honest one stays");
    assert_eq!(c.bans, 1);
    assert!(c.failed_pieces >= 2);
    // Its address (also its dialable one: we dialled it) is banned, the honest one not:
    // never a candidate again, never admitted.
    let (bad_addr, good_addr): (SocketAddr, SocketAddr) = (
        "10.0.0.1:6881".parse().unwrap(),
        "10.0.0.2:6881".parse().unwrap(),
    );
    assert!(c.banned.contains(&bad_addr) && !c.banned.contains(&good_addr));
    assert_eq!(c.banned.len(), 1);
    c.add_candidate(bad_addr, true, now);
    assert_eq!(c.known_peers(), 0);
    assert!(matches!(
        c.on_incoming(bad_addr, now, &mut io),
        Incoming::Close(admit::Refusal::Banned)
    ));
    // Verified pieces were announced to the peers left, and reported.
    assert!(verified > 0);
    assert!(io.acts.iter().any(|a| matches!(a, Action::Verified(_))));
}

#[test]
fn choking_round_unchokes_the_best_uploaders() {
    let now = Instant::now();
    let mut c = core(64, u64::from(BLOCK));
    let mut io = Rec::default();
    let keys: Vec<PeerKey> = (0..8).map(|k| add(&mut c, k, now)).collect();
    for &k in &keys {
        c.on_message(k, Message::HaveAll, now, &mut io).unwrap();
    }
    // Peer i sent us i blocks: 7, 6, 5, 4 are the best uploaders.
    for &k in &keys {
        let p = c.peers.get_mut(&k).unwrap();
        p.down.record(now, k.0 * u64::from(BLOCK));
    }
    for &k in &keys {
        c.on_message(k, Message::Interested, now, &mut io).unwrap();
    }
    io.acts.clear();
    let before: BTreeSet<PeerKey> = c
        .peers
        .iter()
        .filter(|(_, p)| !p.am_choking)
        .map(|(k, _)| *k)
        .collect();
    // Within a second of the unchokes so far (later, they would count as wasted slots).
    let later = now + Duration::from_millis(500);
    c.choker.force_round();
    c.run_choker(later, &mut io);
    let unchoked: BTreeSet<PeerKey> = c
        .peers
        .iter()
        .filter(|(_, p)| !p.am_choking)
        .map(|(k, _)| *k)
        .collect();
    for k in 4..8 {
        assert!(unchoked.contains(&PeerKey(k)), "uploader {k} unchoked");
    }
    // Four regular slots and one optimistic.
    assert_eq!(unchoked.len(), 5);
    // Each change went to its peer as a command.
    for k in unchoked.difference(&before) {
        assert!(io
            .acts
            .iter()
            .any(|a| matches!(a, Action::Send(x, PeerCmd::Unchoke) if x == k)));
    }
    for k in before.difference(&unchoked) {
        assert!(io
            .acts
            .iter()
            .any(|a| matches!(a, Action::Send(x, PeerCmd::Choke) if x == k)));
    }
}

#[test]
fn duplicate_connections_keep_one_per_peer() {
    let now = Instant::now();
    let mut c = core(4, u64::from(BLOCK));
    let mut io = Rec::default();
    let k = add(&mut c, 0, now);
    let id = c.peers[&k].peer_id;
    let addr = c.peers[&k].addr;
    // Our id (all zeros) is smaller: the connection we dialled is the one kept. The old
    // one is outgoing too: a second dial of the same peer is closed.
    let other_port = SocketAddr::new(addr.ip(), 7000);
    assert!(c.duplicate(&id, other_port, true, now, &mut io).is_err());
    assert!(c.peers.contains_key(&k) && io.acts.is_empty());
    // Same id from another IP: not a duplicate (an id alone could be forged).
    let elsewhere: SocketAddr = "10.9.9.9:6881".parse().unwrap();
    assert_eq!(c.duplicate(&id, elsewhere, false, now, &mut io), Ok(None));
    // Seen from the other end (their id is smaller): our old outgoing connection gives way
    // to their incoming one, and its address goes with the one kept.
    let mut theirs = core(4, u64::from(BLOCK));
    theirs.our_id = crate::id::Id20([9; 20]);
    // We dialled the peer (a candidate), then it dialled us.
    theirs.on_addr(addr, now, &mut io);
    assert_eq!(connects(&mut io), vec![addr]);
    theirs.on_dialled(addr, Dialled::Connected, now);
    let k = add(&mut theirs, 0, now);
    let id = theirs.peers[&k].peer_id;
    let kept = theirs.duplicate(&id, other_port, false, now, &mut io);
    assert_eq!(kept, Ok(Some(addr)));
    assert!(!theirs.peers.contains_key(&k));
    assert!(io
        .acts
        .iter()
        .any(|a| matches!(a, Action::Dropped(key) if *key == k)));
    // Its address stays "connected": not dialled again while the kept connection lives...
    let later = now + crate::session::cands::SEED_RETRY * 10;
    theirs.connect_more(later, &mut io);
    assert!(connects(&mut io).is_empty());
    // ...which frees it when it closes (it carries the address as its `alt_dial`).
    let kept_key = add_at(&mut theirs, 1, other_port, id, false, now);
    theirs.peers.get_mut(&kept_key).unwrap().alt_dial = Some(addr);
    theirs.on_closed(kept_key, "closed", later, &mut io);
    theirs.connect_more(later + crate::session::cands::PEER_RETRY, &mut io);
    assert_eq!(connects(&mut io), vec![addr]);
}

#[test]
fn incoming_peers_at_the_limit_evict_only_useless_old_peers() {
    let now = Instant::now();
    let mut c = core_with(4, u64::from(BLOCK), limits(2, 0, 8));
    let mut io = Rec::default();
    let newcomer: SocketAddr = "10.1.0.1:6881".parse().unwrap();
    // Below the limit: admitted, nobody dropped.
    assert!(matches!(
        c.on_incoming(newcomer, now, &mut io),
        Incoming::Admit
    ));
    assert!(io.acts.is_empty());
    let old = add(&mut c, 0, now);
    let useful = add(&mut c, 1, now);
    c.on_message(useful, Message::Have(1), now, &mut io)
        .unwrap();
    assert!(c.peers[&useful].am_interested);
    // At the limit, newcomers are never evicted: refused (with a courtesy).
    let soon = now + Duration::from_secs(5);
    assert!(matches!(
        c.on_incoming(newcomer, soon, &mut io),
        Incoming::Courtesy { .. }
    ));
    assert_eq!(c.peers.len(), 2);
    // Later, the old peer neither side wants goes; the one we want stays.
    let later = now + crate::session::idle::EVICT_MIN_AGE;
    assert!(matches!(
        c.on_incoming(newcomer, later, &mut io),
        Incoming::Admit
    ));
    assert!(!c.peers.contains_key(&old) && c.peers.contains_key(&useful));
    // One eviction per interval: the next incoming peer is refused.
    add(&mut c, 2, now);
    assert!(!matches!(
        c.on_incoming(newcomer, later, &mut io),
        Incoming::Admit
    ));
}

#[test]
fn requests_wait_while_the_disk_is_behind() {
    let now = Instant::now();
    // 8 pieces of one block; at most one piece may wait for hashing and writing.
    let mut c = core(8, u64::from(BLOCK)).with_max_unwritten(u64::from(BLOCK));
    let k = add(&mut c, 0, now);
    let mut io = Rec::default();
    c.on_message(k, Message::HaveAll, now, &mut io).unwrap();
    c.on_message(k, Message::Unchoke, now, &mut io).unwrap();
    let asked = io.requests(k);
    assert!(asked.len() >= 2, "{asked:?}");
    // The first piece arrives and goes to the disk: the bound is reached.
    c.on_message(k, piece(asked[0]), now, &mut io).unwrap();
    let checks = io.checks();
    assert_eq!(checks.len(), 1);
    // Blocks already requested are still taken while the disk is behind...
    c.on_message(k, piece(asked[1]), now, &mut io).unwrap();
    assert_eq!(io.checks().len(), 1, "a complete piece is still checked");
    // ...but once the peer has nothing outstanding, nothing new is requested: release the
    // requests (a choke) and unchoke again.
    c.on_message(k, Message::Choke, now, &mut io).unwrap();
    c.on_message(k, Message::Unchoke, now, &mut io).unwrap();
    assert!(
        io.requests(k).is_empty(),
        "no requests while 2 pieces wait for the disk"
    );
    // The first check comes back: one piece still waits, the bound still holds.
    c.on_checked(asked[0].piece, true, None, now, &mut io);
    assert!(io.requests(k).is_empty());
    // The second comes back: under the bound, requests resume at once.
    c.on_checked(asked[1].piece, true, None, now, &mut io);
    let again = io.requests(k);
    assert!(
        !again.is_empty(),
        "requests resume when the disk catches up"
    );
    let done = [asked[0].piece, asked[1].piece];
    assert!(again.iter().all(|r| !done.contains(&r.piece)), "{again:?}");
}

// ---- dialling --------------------------------------------------------------------------

fn cand(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 2, 0, i], 6881))
}

#[test]
fn dials_go_to_seeds_first_within_the_half_open_and_peer_limits() {
    let now = Instant::now();
    // 4 peers wanted, 2 more for seeds and incoming peers, 3 dials at once.
    let mut c = core_with(4, u64::from(BLOCK), limits(4, 2, 3));
    let mut io = Rec::default();
    for i in 1..=6 {
        c.add_candidate(cand(i), false, now);
    }
    // A PEX message flags two seeds: they are dialled first, then the queue in order.
    let pex = vec![
        (cand(20), crate::peer::pex::FLAG_SEED),
        (cand(21), crate::peer::pex::FLAG_SEED),
    ];
    assert!(c.on_pex(pex, now, &mut io));
    assert_eq!(connects(&mut io), vec![cand(20), cand(21), cand(1)]);
    // The half-open limit holds until a dial ends.
    c.on_addr(cand(7), now, &mut io);
    assert!(connects(&mut io).is_empty());
    for (k, a) in [cand(20), cand(21), cand(1)].into_iter().enumerate() {
        c.on_dialled(a, Dialled::Connected, now);
        add_at(
            &mut c,
            k as u64,
            a,
            crate::id::Id20([k as u8 + 1; 20]),
            true,
            now,
        );
    }
    c.connect_more(now, &mut io);
    // 3 connected: one more reaches `max_peers`.
    assert_eq!(connects(&mut io), vec![cand(2)]);
    c.on_dialled(cand(2), Dialled::Connected, now);
    add_at(&mut c, 3, cand(2), crate::id::Id20([4; 20]), true, now);
    c.connect_more(now, &mut io);
    assert!(connects(&mut io).is_empty(), "at max_peers");
    // A seed learned now is still dialled (up to max_peers + slack)...
    c.on_pex(vec![(cand(22), crate::peer::pex::FLAG_SEED)], now, &mut io);
    assert_eq!(connects(&mut io), vec![cand(22)]);
    c.on_dialled(cand(22), Dialled::Connected, now);
    add_at(&mut c, 4, cand(22), crate::id::Id20([5; 20]), true, now);
    c.on_pex(vec![(cand(23), crate::peer::pex::FLAG_SEED)], now, &mut io);
    assert_eq!(connects(&mut io), vec![cand(23)]);
    c.on_dialled(cand(23), Dialled::Connected, now);
    add_at(&mut c, 5, cand(23), crate::id::Id20([6; 20]), true, now);
    // ...but not past it.
    c.on_pex(vec![(cand(24), crate::peer::pex::FLAG_SEED)], now, &mut io);
    assert!(connects(&mut io).is_empty(), "at the hard limit");
    // A private torrent takes no PEX.
    let mut private = core_with(
        4,
        u64::from(BLOCK),
        Limits {
            private: true,
            ..limits(4, 2, 3)
        },
    );
    assert!(!private.on_pex(vec![(cand(1), 0)], now, &mut io));
    assert_eq!(private.known_peers(), 0);
    assert!(connects(&mut io).is_empty());
}

#[test]
fn a_seed_dials_leechers_up_to_half_the_limit_and_never_seeds() {
    let now = Instant::now();
    let mut c = core_with(1, u64::from(BLOCK), limits(4, 2, 8));
    c.picker.on_piece_verified(0, None);
    assert!(c.complete());
    let mut io = Rec::default();
    c.on_pex(vec![(cand(20), crate::peer::pex::FLAG_SEED)], now, &mut io);
    for i in 1..=5 {
        c.on_addr(cand(i), now, &mut io);
    }
    assert_eq!(connects(&mut io), vec![cand(1), cand(2)]);
}

#[test]
fn failed_dials_back_off_and_our_own_address_is_never_dialled() {
    let now = Instant::now();
    let own = Arc::new(OwnAddrs::new(vec![cand(99)], Vec::new()));
    let mut c = core(4, u64::from(BLOCK)).with_connections(
        limits(4, 0, 4),
        own.clone(),
        rand::rngs::StdRng::seed_from_u64(3),
    );
    let mut io = Rec::default();
    // Never candidates: our listen address, port 0, an unspecified IP.
    c.on_addr(cand(99), now, &mut io);
    c.on_addr(SocketAddr::from(([10, 2, 0, 1], 0)), now, &mut io);
    c.on_addr(SocketAddr::from(([0, 0, 0, 0], 6881)), now, &mut io);
    assert_eq!(c.known_peers(), 0);
    c.on_addr(cand(1), now, &mut io);
    c.on_addr(cand(2), now, &mut io);
    assert_eq!(connects(&mut io), vec![cand(1), cand(2)]);
    // cand(1) fails: retried after 5 s, not before. cand(2) is us behind a NAT.
    c.on_dialled(cand(1), Dialled::Failed, now);
    c.on_dialled(cand(2), Dialled::Ourselves, now);
    assert!(own.is_own(cand(2)));
    c.connect_more(now + Duration::from_secs(4), &mut io);
    assert!(connects(&mut io).is_empty());
    c.on_addr(cand(2), now, &mut io);
    assert_eq!(c.known_peers(), 1, "our own address is forgotten for good");
    c.connect_more(now + Duration::from_secs(5), &mut io);
    assert_eq!(connects(&mut io), vec![cand(1)]);
    // A dial whose task was lost frees its half-open slot.
    let mut c = core_with(4, u64::from(BLOCK), limits(4, 0, 1));
    c.on_addr(cand(1), now, &mut io);
    c.on_addr(cand(2), now, &mut io);
    assert_eq!(connects(&mut io), vec![cand(1)]);
    c.on_dial_lost();
    c.connect_more(now, &mut io);
    assert_eq!(connects(&mut io), vec![cand(2)]);
}

#[test]
fn a_closed_peer_is_dialled_again_later_a_seed_sooner() {
    let now = Instant::now();
    let mut c = core_with(1, u64::from(BLOCK), limits(4, 0, 4));
    let mut io = Rec::default();
    c.on_addr(cand(1), now, &mut io);
    c.on_addr(cand(2), now, &mut io);
    assert_eq!(connects(&mut io), vec![cand(1), cand(2)]);
    let mut keys = Vec::new();
    for (k, a) in [cand(1), cand(2)].into_iter().enumerate() {
        c.on_dialled(a, Dialled::Connected, now);
        keys.push(add_at(
            &mut c,
            k as u64,
            a,
            crate::id::Id20([k as u8 + 1; 20]),
            true,
            now,
        ));
    }
    // The second one is a seed.
    c.on_message(keys[1], Message::HaveAll, now, &mut io)
        .unwrap();
    io.acts.clear();
    for k in &keys {
        c.on_closed(*k, "closed", now, &mut io);
        assert!(io
            .acts
            .iter()
            .any(|a| matches!(a, Action::Dropped(x) if x == k)));
    }
    c.connect_more(now + crate::session::cands::SEED_RETRY, &mut io);
    assert_eq!(connects(&mut io), vec![cand(2)]);
    c.connect_more(now + crate::session::cands::PEER_RETRY, &mut io);
    assert_eq!(connects(&mut io), vec![cand(1)]);
}

// ---- refusals --------------------------------------------------------------------------

#[test]
fn refused_peers_get_a_courtesy_while_slots_last() {
    let now = Instant::now();
    let mut c = core_with(4, u64::from(BLOCK), limits(2, 0, 4));
    let mut io = Rec::default();
    add(&mut c, 0, now);
    // Another peer on the refused peer's IP: never told to it.
    let refused: SocketAddr = "10.0.0.9:7000".parse().unwrap();
    add_at(
        &mut c,
        1,
        "10.0.0.9:6881".parse().unwrap(),
        crate::id::Id20([7; 20]),
        true,
        now,
    );
    let mut slots = Vec::new();
    for _ in 0..crate::session::courtesy::MAX_CONCURRENT {
        match c.on_incoming(refused, now, &mut io) {
            Incoming::Courtesy { slot, pex } => {
                assert_eq!(
                    pex,
                    vec![(
                        "10.0.0.1:6881".parse().unwrap(),
                        crate::peer::pex::FLAG_REACHABLE
                    )]
                );
                slots.push(slot);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(c.peers.len(), 2, "nobody evicted");
    // Every slot taken: closed without a word, until one courtesy ends.
    assert!(matches!(
        c.on_incoming(refused, now, &mut io),
        Incoming::Close(admit::Refusal::NoCourtesySlot)
    ));
    slots.pop();
    assert!(matches!(
        c.on_incoming(refused, now, &mut io),
        Incoming::Courtesy { .. }
    ));
    // A private torrent tells no contacts.
    let mut private = core_with(
        4,
        u64::from(BLOCK),
        Limits {
            private: true,
            ..limits(1, 0, 4)
        },
    );
    add(&mut private, 0, now);
    assert!(matches!(
        private.on_incoming(refused, now, &mut io),
        Incoming::Courtesy { pex, .. } if pex.is_empty()
    ));
}

#[test]
fn handed_connections_are_kept_only_when_they_may_be_peers() {
    let now = Instant::now();
    let a: SocketAddr = "10.0.0.5:6881".parse().unwrap();
    let mut c = core_with(2, u64::from(BLOCK), limits(1, 1, 4));
    assert_eq!(c.admit_handed(a, true, now), Ok(()));
    // A handed outgoing connection's address is connected: not dialled when heard of.
    let mut io = Rec::default();
    c.on_addr(a, now, &mut io);
    assert!(connects(&mut io).is_empty());
    add(&mut c, 0, now);
    add(&mut c, 1, now);
    assert_eq!(c.admit_handed(a, false, now), Err(admit::Refusal::Full));
    let mut private = core_with(
        2,
        u64::from(BLOCK),
        Limits {
            private: true,
            ..limits(1, 1, 4)
        },
    );
    assert_eq!(
        private.admit_handed(a, false, now),
        Err(admit::Refusal::Private)
    );
    let mut have = core_with(2, u64::from(BLOCK), limits(1, 1, 4));
    have.picker.on_piece_verified(1, None);
    assert_eq!(
        have.admit_handed(a, true, now),
        Err(admit::Refusal::HavePieces)
    );
    let mut banned = core_with(2, u64::from(BLOCK), limits(1, 1, 4));
    banned.banned.insert(a);
    assert_eq!(
        banned.admit_handed(a, true, now),
        Err(admit::Refusal::Banned)
    );
}

// ---- web seeds -------------------------------------------------------------------------

/// The fetches asked for since the last call (taken out of the record).
fn fetches(io: &mut Rec) -> Vec<(usize, Vec<BlockRef>)> {
    let mut out = Vec::new();
    for a in std::mem::take(&mut io.acts) {
        match a {
            Action::Fetch { seed, blocks } => out.push((seed, blocks)),
            a => io.acts.push(a),
        }
    }
    out
}

/// The bytes a web seed sends for `blocks` (in order).
fn web_data(blocks: &[BlockRef], corrupt: bool) -> Bytes {
    let mut v = Vec::new();
    for r in blocks {
        v.extend_from_slice(&data(*r, corrupt));
    }
    Bytes::from(v)
}

fn urls(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("http://mirror{i}/f")).collect()
}

/// `pieces` pieces of 4 blocks to fetch from `seeds` web seeds. One more piece is verified
/// already, so the picker's cap on first pieces does not apply.
fn web_core(pieces: u64, seeds: usize, now: Instant) -> SwarmCore {
    let mut c = core(pieces + 1, 4 * u64::from(BLOCK)).with_web_seeds(&urls(seeds), now);
    c.picker.on_piece_verified(pieces as u32, None);
    c
}

#[test]
fn web_seeds_fetch_two_runs_at_once_and_their_blocks_take_the_peer_path() {
    let now = Instant::now();
    // 48 pieces of 4 blocks: three fetches' worth (64 blocks each).
    let mut c = web_core(48, 1, now);
    let mut io = Rec::default();
    c.web_fill(now, &mut io);
    let f = fetches(&mut io);
    assert_eq!(f.len(), web::MAX_IN_FLIGHT);
    let per_fetch = (web::FETCH_BYTES / u64::from(BLOCK)) as usize;
    let mut seen = BTreeSet::new();
    for (seed, blocks) in &f {
        assert_eq!(*seed, 0);
        assert_eq!(blocks.len(), per_fetch);
        assert!(blocks.windows(2).all(|w| w[0] < w[1]), "sorted");
        assert!(blocks.iter().all(|b| seen.insert(*b)), "asked once");
    }
    // Busy: nothing more until a fetch ends.
    c.web_fill(now, &mut io);
    assert!(fetches(&mut io).is_empty());
    // The first fetch delivers: its pieces go to their check, the seed may fetch again.
    let (seed, blocks) = f[0].clone();
    let data = web_data(&blocks, false);
    assert!(c.on_web_fetched(seed, blocks.clone(), Ok(data), now, &mut io));
    let checks = io.checks();
    assert_eq!(checks.len(), per_fetch / 4);
    for (p, b, _) in &checks {
        assert!(b.is_complete(), "piece {p}");
        c.on_checked(*p, true, None, now, &mut io);
    }
    assert_eq!(c.downloaded, web::FETCH_BYTES);
    c.web_fill(now, &mut io);
    let next = fetches(&mut io);
    assert_eq!(next.len(), 1);
    assert!(next[0].1.iter().all(|b| !seen.contains(b)));
    assert_eq!(c.web_seeds_alive(), 1);
}

#[test]
fn web_seed_errors_back_off_release_the_blocks_and_give_up() {
    let now = Instant::now();
    let mut c = web_core(8, 1, now);
    let key = PeerKey(u64::MAX);
    let mut io = Rec::default();
    let mut t = now;
    for fail in 1..=web::MAX_FAILS {
        c.web_fill(t, &mut io);
        let f = fetches(&mut io);
        assert_eq!(f.len(), 1, "fail {fail}: all 32 blocks in one fetch");
        assert_eq!(c.picker.outstanding(key), 32);
        let err = "connection refused";
        assert!(!c.on_web_fetched(0, f[0].1.clone(), Err(&err), t, &mut io));
        // The blocks go back to the picker for anyone to fetch.
        assert_eq!(c.picker.outstanding(key), 0);
        if fail == web::MAX_FAILS {
            break;
        }
        // Backed off 5 s, doubling.
        let wait = Duration::from_secs(5 << (fail - 1));
        c.web_fill(t + wait - Duration::from_millis(1), &mut io);
        assert!(fetches(&mut io).is_empty(), "fail {fail}: backed off");
        t += wait;
    }
    assert_eq!(c.web_seeds_alive(), 0, "given up");
    c.web_fill(t + Duration::from_secs(3600), &mut io);
    assert!(fetches(&mut io).is_empty());
}

#[test]
fn web_seed_with_bad_data_is_struck_then_dropped() {
    let now = Instant::now();
    // 8 pieces of 4 blocks fit in one fetch.
    let mut c = web_core(8, 1, now);
    let mut io = Rec::default();
    c.web_fill(now, &mut io);
    let f = fetches(&mut io);
    assert_eq!(f.len(), 1);
    let blocks = f[0].1.clone();
    assert!(c.on_web_fetched(0, blocks.clone(), Ok(web_data(&blocks, true)), now, &mut io));
    let checks = io.checks();
    assert_eq!(checks.len(), 8);
    // First bad piece: a strike, backed off 5 s; its blocks are wanted again.
    let (p0, ..) = checks[0];
    c.on_checked(p0, false, None, now, &mut io);
    assert_eq!(c.web_seeds_alive(), 1);
    c.web_fill(now + Duration::from_millis(4999), &mut io);
    assert!(fetches(&mut io).is_empty(), "backed off");
    let later = now + Duration::from_secs(5);
    c.web_fill(later, &mut io);
    let again = fetches(&mut io);
    assert_eq!(again.len(), 1);
    assert!(again[0].1.iter().all(|b| b.piece == p0));
    // Second bad piece: dropped, for good; what it was fetching goes back to the picker.
    let (p1, ..) = checks[1];
    c.on_checked(p1, false, None, later, &mut io);
    assert_eq!(c.web_seeds_alive(), 0);
    assert_eq!(c.picker.outstanding(PeerKey(u64::MAX)), 0);
    c.web_fill(later + Duration::from_secs(60), &mut io);
    assert!(fetches(&mut io).is_empty());
    // The fetch that was still running: its bytes are not taken.
    let before = c.downloaded;
    let late = again[0].1.clone();
    assert!(!c.on_web_fetched(0, late.clone(), Ok(web_data(&late, false)), later, &mut io));
    assert_eq!(c.downloaded, before);
    assert!(io.checks().is_empty());
}

// ---- holepunching (BEP 55) ----------------------------------------------------------

/// The ut_holepunch messages sent since the last call, by peer (taken out of the record).
fn holepunches(io: &mut Rec) -> Vec<(PeerKey, crate::peer::holepunch::HolepunchMsg)> {
    let mut out = Vec::new();
    io.acts.retain(|a| match a {
        Action::Send(k, PeerCmd::Holepunch(m)) => {
            out.push((*k, *m));
            false
        }
        _ => true,
    });
    out
}

fn ext(holepunch: bool, listen_port: Option<u16>) -> PeerExt {
    PeerExt {
        holepunch,
        listen_port,
        ..PeerExt::default()
    }
}

#[test]
fn relay_introduces_connected_peers_and_names_every_refusal() {
    use crate::peer::holepunch::{HolepunchError as E, HolepunchMsg as H};
    let now = Instant::now();
    let mut c = core_with(4, 4 * BLOCK as u64, limits(50, 10, 8)).with_holepunch(true);
    let mut io = Rec::default();
    // a and b connected to us (incoming, listen port 6881), c is an old client.
    let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
    let a = add_at(
        &mut c,
        1,
        sa("10.0.0.2:50001"),
        crate::id::Id20([2; 20]),
        false,
        now,
    );
    let b = add_at(
        &mut c,
        2,
        sa("10.0.0.3:50002"),
        crate::id::Id20([3; 20]),
        false,
        now,
    );
    let old = add_at(
        &mut c,
        3,
        sa("10.0.0.4:6881"),
        crate::id::Id20([4; 20]),
        true,
        now,
    );
    c.on_ext(a, ext(true, Some(6881)), now);
    c.on_ext(b, ext(true, Some(6881)), now);
    c.on_ext(old, ext(false, None), now);

    // Success: connect to both, each with the other's listen address.
    c.on_holepunch(a, H::Rendezvous(sa("10.0.0.3:6881")), now, &mut io);
    assert_eq!(
        holepunches(&mut io),
        vec![
            (b, H::Connect(sa("10.0.0.2:6881"))),
            (a, H::Connect(sa("10.0.0.3:6881"))),
        ]
    );
    // The refusals, each echoing the rendezvous address.
    for (t, e) in [
        ("10.0.0.9:6881", E::NotConnected),
        ("10.0.0.4:6881", E::NoSupport),
        ("10.0.0.2:6881", E::NotConnected), // itself
        ("0.0.0.0:6881", E::NoSuchPeer),
    ] {
        c.on_holepunch(a, H::Rendezvous(sa(t)), now, &mut io);
        assert_eq!(holepunches(&mut io), vec![(a, H::Error(sa(t), e))], "{t}");
    }
    c.own.learn(sa("10.0.0.1:6881"));
    c.on_holepunch(a, H::Rendezvous(sa("10.0.0.1:6881")), now, &mut io);
    assert_eq!(
        holepunches(&mut io),
        vec![(a, H::Error(sa("10.0.0.1:6881"), E::NoSelf))]
    );
    // A peer that did not announce ut_holepunch is ignored (BEP 55).
    c.on_holepunch(old, H::Rendezvous(sa("10.0.0.3:6881")), now, &mut io);
    assert!(holepunches(&mut io).is_empty());
    // Rate limit: at most MAX_RELAYED per minute per peer (7 used above), then silence.
    for _ in 0..40 {
        c.on_holepunch(b, H::Rendezvous(sa("10.0.0.9:1")), now, &mut io);
    }
    assert_eq!(holepunches(&mut io).len(), punch::MAX_RELAYED as usize);
    let later = now + Duration::from_secs(61);
    c.on_holepunch(b, H::Rendezvous(sa("10.0.0.9:1")), later, &mut io);
    assert_eq!(holepunches(&mut io).len(), 1, "a new window");
    // Without a uTP socket we are no relay and no end.
    let mut off = core_with(4, 4 * BLOCK as u64, limits(50, 10, 8));
    let k = add_at(
        &mut off,
        1,
        sa("10.0.0.2:1"),
        crate::id::Id20([2; 20]),
        true,
        now,
    );
    off.on_ext(k, ext(true, None), now);
    off.on_holepunch(k, H::Rendezvous(sa("10.0.0.3:6881")), now, &mut io);
    off.on_holepunch(k, H::Connect(sa("10.0.0.3:6881")), now, &mut io);
    assert!(io.acts.is_empty(), "{:?}", io.acts);
}

#[test]
fn a_failed_dial_to_a_pex_contact_asks_its_source_then_punches_and_counts_once() {
    use crate::peer::holepunch::{HolepunchError as E, HolepunchMsg as H};
    use crate::peer::pex::{FLAG_HOLEPUNCH, FLAG_UTP};
    let now = Instant::now();
    let mut c = core_with(4, 4 * BLOCK as u64, limits(50, 10, 8)).with_holepunch(true);
    let mut io = Rec::default();
    let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
    let relay = add(&mut c, 0, now);
    c.on_ext(relay, ext(true, None), now);
    let target = sa("10.0.0.7:6881");
    let plain = sa("10.0.0.8:6881");
    let pex = vec![(target, FLAG_HOLEPUNCH | FLAG_UTP), (plain, 0)];
    c.learn_relays(relay, &pex);
    assert!(c.on_pex(pex, now, &mut io));
    assert_eq!(connects(&mut io).len(), 2);
    // Both direct dials fail: only the holepunch-capable one is asked for.
    c.on_dialled(target, Dialled::Failed, now);
    c.rendezvous_after_failure(target, now, &mut io);
    c.on_dialled(plain, Dialled::Failed, now);
    c.rendezvous_after_failure(plain, now, &mut io);
    assert_eq!(holepunches(&mut io), vec![(relay, H::Rendezvous(target))]);
    // Not again within a minute.
    c.rendezvous_after_failure(target, now + Duration::from_secs(5), &mut io);
    assert!(holepunches(&mut io).is_empty());
    // The relay's connect: we dial over uTP, once.
    c.on_holepunch(relay, H::Connect(target), now, &mut io);
    c.on_holepunch(relay, H::Connect(target), now, &mut io);
    let punches: Vec<_> = io
        .acts
        .iter()
        .filter(|a| matches!(a, Action::Punch(x) if *x == target))
        .collect();
    assert_eq!(punches.len(), 1);
    // The connection (ours or theirs, whichever came first) counts once.
    c.on_punch_dialled(target, true);
    add_at(&mut c, 5, target, crate::id::Id20([9; 20]), true, now);
    add_at(&mut c, 6, target, crate::id::Id20([9; 20]), false, now);
    assert_eq!(c.punch_stats().punched, 1);
    // Already connected: a connect for it is ignored.
    io.acts.clear();
    c.on_holepunch(relay, H::Connect(target), now, &mut io);
    assert!(io.acts.is_empty());
    // A refusal is counted by code.
    let other = sa("10.0.0.9:6881");
    c.learn_relays(relay, &[(other, FLAG_HOLEPUNCH)]);
    c.rendezvous_after_failure(other, now, &mut io);
    c.on_holepunch(relay, H::Error(other, E::NotConnected), now, &mut io);
    assert_eq!(c.punch_stats().failed(), 1);
    assert_eq!(c.punch_stats().errors.get(&E::NotConnected), Some(&1));
}
