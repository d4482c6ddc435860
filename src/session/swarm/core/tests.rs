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

fn add(core: &mut SwarmCore, k: u64, now: Instant) -> PeerKey {
    let key = PeerKey(k);
    let addr: SocketAddr = format!("10.0.0.{}:6881", k + 1).parse().unwrap();
    let n = core.layout.piece_count();
    let peer = Peer::new(
        addr,
        crate::id::Id20([k as u8 + 1; 20]),
        Transport::Tcp,
        true,
        Arc::new(PeerCounters::default()),
        n,
        now,
    );
    core.add_peer(key, peer, None);
    key
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
        .any(|a| matches!(a, Action::Dropped { key, .. } if *key == k)));
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
    let banned: Vec<SocketAddr> = io
        .acts
        .iter()
        .filter_map(|a| match a {
            Action::Ban(a) => Some(*a),
            _ => None,
        })
        .collect();
    // Its address and its dialable address (the same here: we dialled it).
    assert!(!banned.is_empty());
    assert!(banned
        .iter()
        .all(|a| *a == "10.0.0.1:6881".parse().unwrap()));
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
    assert!(c.duplicate(&id, other_port, true, &mut io).is_err());
    assert!(c.peers.contains_key(&k) && io.acts.is_empty());
    // Same id from another IP: not a duplicate (an id alone could be forged).
    let elsewhere: SocketAddr = "10.9.9.9:6881".parse().unwrap();
    assert_eq!(c.duplicate(&id, elsewhere, false, &mut io), Ok(None));
    // Seen from the other end (their id is smaller): our old outgoing connection gives way
    // to their incoming one, and its address goes with the one kept.
    let mut theirs = core(4, u64::from(BLOCK));
    theirs.our_id = crate::id::Id20([9; 20]);
    let k = add(&mut theirs, 0, now);
    let id = theirs.peers[&k].peer_id;
    let kept = theirs.duplicate(&id, other_port, false, &mut io);
    assert_eq!(kept, Ok(Some(addr)));
    assert!(!theirs.peers.contains_key(&k));
    // Its address stays "connected": the kept connection frees it when it closes.
    assert!(io
        .acts
        .iter()
        .any(|a| matches!(a, Action::Dropped { key, redial: [None, None], .. } if *key == k)));
}

#[test]
fn incoming_peers_at_the_limit_evict_only_useless_old_peers() {
    let now = Instant::now();
    let mut c = core(4, u64::from(BLOCK));
    let mut io = Rec::default();
    // Below the limit: admitted, nobody dropped.
    assert!(c.admit_incoming(2, now, &mut io));
    let old = add(&mut c, 0, now);
    let useful = add(&mut c, 1, now);
    c.on_message(useful, Message::Have(1), now, &mut io)
        .unwrap();
    assert!(c.peers[&useful].am_interested);
    // At the limit, newcomers are never evicted.
    assert!(!c.admit_incoming(2, now + Duration::from_secs(5), &mut io));
    // Later, the old peer neither side wants goes; the one we want stays.
    let later = now + crate::session::idle::EVICT_MIN_AGE;
    assert!(c.admit_incoming(2, later, &mut io));
    assert!(!c.peers.contains_key(&old) && c.peers.contains_key(&useful));
    // One eviction per interval: the next incoming peer is refused.
    add(&mut c, 2, now);
    assert!(!c.admit_incoming(2, later, &mut io));
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
