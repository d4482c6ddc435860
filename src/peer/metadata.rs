//! Metadata exchange, `ut_metadata` (BEP 9): fetch the info dictionary from peers in 16 KiB
//! pieces, knowing only its SHA-1 (the info-hash) from a magnet link.
//!
//! - [`MetadataMsg`]: the message codec (`request` / `data` / `reject`; a `data` message is a
//!   bencoded dict immediately followed by the raw piece bytes).
//! - [`MetadataFetch`]: a pure state machine for the fetching side. It adopts a
//!   `metadata_size` (at most [`MAX_METADATA_SIZE`]), hands *different* pieces to different
//!   peers, reassigns a piece a peer fails to deliver in time, assembles, verifies SHA-1
//!   against the info-hash. On a mismatch everything is discarded; if one peer sent it all,
//!   that peer is banned; if several did, nobody can be blamed yet, so every later attempt
//!   takes all pieces from a single peer (non-suspects first) until the liar is pinned down
//!   and banned. Data for pieces not asked of that peer is ignored. Received pieces are kept
//!   as separate buffers, so nothing of a claimed size is allocated before bytes arrive.
//! - [`serve_request`]: the serving side, answering from raw info bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use sha1::{Digest, Sha1};
use tokio::time::Instant;

use super::PeerError;
use crate::bencode::{Limits, Value, Writer};
use crate::id::{Id20, InfoHash};

/// Metadata piece size (BEP 9).
pub const METADATA_PIECE: usize = 16 * 1024;
/// Largest info dictionary we accept. Real ones are KiB to a few MiB.
pub const MAX_METADATA_SIZE: u64 = 64 * 1024 * 1024;

const MSG_REQUEST: i64 = 0;
const MSG_DATA: i64 = 1;
const MSG_REJECT: i64 = 2;

/// A ut_metadata message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMsg {
    Request {
        piece: u32,
    },
    Data {
        piece: u32,
        total_size: Option<u64>,
        data: Bytes,
    },
    Reject {
        piece: u32,
    },
}

/// Why a metadata message or peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("peer is banned for sending corrupt metadata")]
    Banned,
    #[error("peer did not announce metadata_size")]
    NoSize,
    #[error("metadata_size {0} is zero or above the 64 MiB limit")]
    BadSize(u64),
    #[error("total_size {theirs} disagrees with metadata_size {ours}")]
    SizeMismatch { ours: u64, theirs: u64 },
    #[error("metadata piece {0} out of range")]
    BadPiece(u32),
    #[error("metadata piece {piece} has {len} bytes, expected {expected}")]
    BadPieceLength {
        piece: u32,
        len: usize,
        expected: usize,
    },
    #[error("too many peers in this metadata fetch")]
    TooManyPeers,
    #[error("unknown ut_metadata msg_type {0}")]
    BadType(i64),
}

impl MetadataMsg {
    /// Decodes the payload of an extended message addressed to our ut_metadata id. `Data`
    /// payloads are sliced out of `payload` without copying.
    pub fn decode(payload: &Bytes) -> Result<Self, PeerError> {
        let (v, used) = Value::decode_prefix(payload, Limits::PEER)?;
        let int = |k: &str| v.get(k).and_then(Value::as_int);
        let t = int("msg_type").ok_or(PeerError::BadExtension("ut_metadata without msg_type"))?;
        let piece = int("piece")
            .and_then(|p| u32::try_from(p).ok())
            .ok_or(PeerError::BadExtension("ut_metadata without valid piece"))?;
        match t {
            MSG_REQUEST => Ok(MetadataMsg::Request { piece }),
            MSG_REJECT => Ok(MetadataMsg::Reject { piece }),
            MSG_DATA => {
                let data = payload.slice(used..);
                if data.len() > METADATA_PIECE {
                    return Err(MetadataError::BadPieceLength {
                        piece,
                        len: data.len(),
                        expected: METADATA_PIECE,
                    }
                    .into());
                }
                let total_size = int("total_size").and_then(|n| u64::try_from(n).ok());
                Ok(MetadataMsg::Data {
                    piece,
                    total_size,
                    data,
                })
            }
            other => Err(MetadataError::BadType(other).into()),
        }
    }

    /// Encodes the extended-message payload (without the BEP 10 envelope).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.dict();
        match self {
            MetadataMsg::Request { piece } => {
                w.kv_int("msg_type", MSG_REQUEST)
                    .kv_int("piece", i64::from(*piece));
            }
            MetadataMsg::Reject { piece } => {
                w.kv_int("msg_type", MSG_REJECT)
                    .kv_int("piece", i64::from(*piece));
            }
            MetadataMsg::Data {
                piece, total_size, ..
            } => {
                w.kv_int("msg_type", MSG_DATA)
                    .kv_int("piece", i64::from(*piece));
                if let Some(t) = total_size {
                    w.kv_int("total_size", *t as i64);
                }
            }
        }
        w.end();
        if let MetadataMsg::Data { data, .. } = self {
            w.out.extend_from_slice(data);
        }
        w.out
    }
}

/// Number of 16 KiB pieces for `size` bytes.
pub fn num_pieces(size: u64) -> u32 {
    size.div_ceil(METADATA_PIECE as u64) as u32
}

/// Expected length of metadata piece `piece` of `size` bytes (the last may be short).
pub fn piece_len(size: u64, piece: u32) -> usize {
    let start = u64::from(piece) * METADATA_PIECE as u64;
    size.saturating_sub(start).min(METADATA_PIECE as u64) as usize
}

/// Serving side: the answer to a request for `piece` given the raw info dictionary.
pub fn serve_request(info: &Bytes, piece: u32) -> MetadataMsg {
    let size = info.len() as u64;
    if piece >= num_pieces(size) {
        return MetadataMsg::Reject { piece };
    }
    let start = piece as usize * METADATA_PIECE;
    let end = start + piece_len(size, piece);
    MetadataMsg::Data {
        piece,
        total_size: Some(size),
        data: info.slice(start..end),
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Missing,
    Requested { peer: SocketAddr, at: Instant },
    Have { data: Bytes, from: SocketAddr },
}

#[derive(Debug, Clone)]
struct PeerSlot {
    size: u64,
    /// False once the peer rejected or failed to answer in time: we stop asking it.
    usable: bool,
    /// Pieces asked of this peer in the current attempt: data for any other piece is
    /// unsolicited and ignored, so a peer can't slip garbage into pieces others serve.
    asked: BTreeSet<u32>,
}

/// What a delivered piece led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still missing pieces.
    Progress,
    /// Verified: the raw info dictionary, SHA-1 equal to the info-hash.
    Done(Vec<u8>),
    /// Assembled metadata failed verification and was discarded. `contributors` (sorted)
    /// sent pieces of it; `banned` are those proven guilty (the sole source of a failed
    /// attempt). The fetch continues with the others.
    Corrupt {
        contributors: Vec<SocketAddr>,
        banned: Vec<SocketAddr>,
    },
}

/// The fetching state machine (pure; time is passed in).
#[derive(Debug)]
pub struct MetadataFetch {
    info_hash: InfoHash,
    piece_timeout: Duration,
    size: Option<u64>,
    slots: Vec<Slot>,
    peers: BTreeMap<SocketAddr, PeerSlot>,
    banned: BTreeSet<SocketAddr>,
    /// Upper bound on peers tracked (each costs little; the driver bounds connections too).
    max_peers: usize,
    /// After an attempt mixing several peers failed, we can't tell who lied; from then on
    /// every attempt takes all pieces from one peer, so a failure proves that peer guilty.
    single_source: bool,
    /// The peer of the current single-source attempt.
    source: Option<SocketAddr>,
    /// Contributors to a failed mixed attempt: tried as single sources only after others.
    suspects: BTreeSet<SocketAddr>,
}

impl MetadataFetch {
    pub fn new(info_hash: InfoHash, piece_timeout: Duration) -> Self {
        MetadataFetch {
            info_hash,
            piece_timeout,
            size: None,
            slots: Vec::new(),
            peers: BTreeMap::new(),
            banned: BTreeSet::new(),
            max_peers: 1024,
            single_source: false,
            source: None,
            suspects: BTreeSet::new(),
        }
    }

    /// The adopted metadata size, once known.
    pub fn metadata_size(&self) -> Option<u64> {
        self.size
    }

    pub fn is_banned(&self, addr: &SocketAddr) -> bool {
        self.banned.contains(addr)
    }

    /// Peers banned for corrupt metadata, sorted.
    pub fn banned(&self) -> Vec<SocketAddr> {
        self.banned.iter().copied().collect()
    }

    /// (pieces received, pieces total); total 0 while the size is unknown.
    pub fn progress(&self) -> (usize, usize) {
        let have = self
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Have { .. }))
            .count();
        (have, self.slots.len())
    }

    /// Registers a connected peer with the `metadata_size` from its extended handshake.
    pub fn add_peer(
        &mut self,
        addr: SocketAddr,
        claimed: Option<u64>,
    ) -> Result<(), MetadataError> {
        if self.banned.contains(&addr) {
            return Err(MetadataError::Banned);
        }
        let size = claimed.ok_or(MetadataError::NoSize)?;
        if size == 0 || size > MAX_METADATA_SIZE {
            return Err(MetadataError::BadSize(size));
        }
        if self.peers.len() >= self.max_peers && !self.peers.contains_key(&addr) {
            return Err(MetadataError::TooManyPeers);
        }
        self.peers.insert(
            addr,
            PeerSlot {
                size,
                usable: true,
                asked: BTreeSet::new(),
            },
        );
        if self.size.is_none() {
            self.adopt_size();
        }
        Ok(())
    }

    /// A peer disconnected: what it was asked for goes back to the pool.
    pub fn remove_peer(&mut self, addr: &SocketAddr) {
        self.peers.remove(addr);
        self.mark_unusable(addr);
    }

    /// The single source gave up: drop what it sent so attempts never mix sources.
    fn drop_source(&mut self, addr: &SocketAddr) {
        if self.source != Some(*addr) {
            return;
        }
        self.source = None;
        for s in &mut self.slots {
            if matches!(s, Slot::Have { from, .. } if from == addr) {
                *s = Slot::Missing;
            }
        }
    }

    /// Chooses the next single source: a usable non-suspect first, else a usable suspect
    /// (in address order, for determinism).
    fn pick_source(&self) -> Option<SocketAddr> {
        let size = self.size?;
        let usable = |(a, p): (&SocketAddr, &PeerSlot)| (p.usable && p.size == size).then_some(*a);
        let mut it = self.peers.iter().filter_map(usable);
        let first = it.clone().find(|a| !self.suspects.contains(a));
        first.or_else(|| it.next())
    }

    /// Picks the size most non-banned peers agree on (ties: the smaller), so one liar who
    /// arrived first cannot hold the fetch hostage after its metadata fails to verify.
    fn adopt_size(&mut self) {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for p in self.peers.values() {
            *votes.entry(p.size).or_default() += 1;
        }
        let best = votes
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(s, _)| *s);
        self.size = best;
        for p in self.peers.values_mut() {
            p.asked.clear();
        }
        self.slots = match best {
            Some(s) => vec![Slot::Missing; num_pieces(s) as usize],
            None => Vec::new(),
        };
    }

    fn outstanding(&self, addr: &SocketAddr) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Requested { peer, .. } if peer == addr))
            .count()
    }

    /// The next piece to request from `addr`, if any; marks it requested at `now`. Call
    /// repeatedly until `None`. Pieces are spread: each peer gets at most its share of the
    /// pieces (at least 1, at most 8 in flight).
    pub fn next_request(&mut self, addr: SocketAddr, now: Instant) -> Option<u32> {
        let size = self.size?;
        let p = self.peers.get(&addr)?;
        if !p.usable || p.size != size {
            return None;
        }
        let cap = if self.single_source {
            if self.source.is_none() {
                self.source = self.pick_source();
            }
            if self.source != Some(addr) {
                return None;
            }
            8
        } else {
            let eligible = self
                .peers
                .values()
                .filter(|p| p.usable && p.size == size)
                .count()
                .max(1);
            self.slots.len().div_ceil(eligible).clamp(1, 8)
        };
        if self.outstanding(&addr) >= cap {
            return None;
        }
        let i = self.slots.iter().position(|s| matches!(s, Slot::Missing))?;
        self.slots[i] = Slot::Requested {
            peer: addr,
            at: now,
        };
        if let Some(p) = self.peers.get_mut(&addr) {
            p.asked.insert(i as u32);
        }
        Some(i as u32)
    }

    /// A peer answered with piece data. `Err` means the peer broke the protocol (drop it).
    pub fn on_data(
        &mut self,
        addr: SocketAddr,
        piece: u32,
        total_size: Option<u64>,
        data: Bytes,
    ) -> Result<Outcome, MetadataError> {
        if self.banned.contains(&addr) {
            return Err(MetadataError::Banned);
        }
        let Some(size) = self.size else {
            return Ok(Outcome::Progress);
        };
        let asked = match self.peers.get(&addr) {
            Some(p) if p.size == size => {
                p.asked.contains(&piece) && (!self.single_source || self.source == Some(addr))
            }
            // Unknown peer, or one that announced another size: not part of this attempt.
            _ => return Ok(Outcome::Progress),
        };
        if let Some(t) = total_size {
            if t != size {
                return Err(MetadataError::SizeMismatch {
                    ours: size,
                    theirs: t,
                });
            }
        }
        let Some(slot) = self.slots.get_mut(piece as usize) else {
            return Err(MetadataError::BadPiece(piece));
        };
        let expected = piece_len(size, piece);
        if data.len() != expected {
            return Err(MetadataError::BadPieceLength {
                piece,
                len: data.len(),
                expected,
            });
        }
        if !asked || matches!(slot, Slot::Have { .. }) {
            // Unsolicited, or a duplicate (late answer after reassignment).
            return Ok(Outcome::Progress);
        }
        *slot = Slot::Have { data, from: addr };
        if self.slots.iter().all(|s| matches!(s, Slot::Have { .. })) {
            return Ok(self.finish());
        }
        Ok(Outcome::Progress)
    }

    fn finish(&mut self) -> Outcome {
        let mut info = Vec::with_capacity(self.size.unwrap_or(0) as usize);
        let mut from = BTreeSet::new();
        for s in &self.slots {
            if let Slot::Have { data, from: f } = s {
                info.extend_from_slice(data);
                from.insert(*f);
            }
        }
        let digest: [u8; 20] = Sha1::digest(&info).into();
        if Id20(digest) == self.info_hash {
            return Outcome::Done(info);
        }
        let contributors: Vec<SocketAddr> = from.into_iter().collect();
        let banned = if contributors.len() == 1 {
            // One source: it alone sent the bad metadata.
            for a in &contributors {
                self.banned.insert(*a);
                self.peers.remove(a);
                self.suspects.remove(a);
            }
            contributors.clone()
        } else {
            self.suspects.extend(contributors.iter().copied());
            Vec::new()
        };
        self.single_source = true;
        self.source = None;
        self.adopt_size();
        Outcome::Corrupt {
            contributors,
            banned,
        }
    }

    /// The peer refused a piece: it won't serve us (e.g. it lacks the metadata); stop asking
    /// it. Returns true so the caller can drop the connection.
    pub fn on_reject(&mut self, addr: SocketAddr, piece: u32) -> bool {
        if let Some(s) = self.slots.get_mut(piece as usize) {
            if matches!(s, Slot::Requested { peer, .. } if *peer == addr) {
                *s = Slot::Missing;
            }
        }
        self.mark_unusable(&addr);
        true
    }

    fn mark_unusable(&mut self, addr: &SocketAddr) {
        if let Some(p) = self.peers.get_mut(addr) {
            p.usable = false;
        }
        self.drop_source(addr);
        for s in &mut self.slots {
            if matches!(s, Slot::Requested { peer, .. } if peer == addr) {
                *s = Slot::Missing;
            }
        }
    }

    /// Returns pieces whose request is older than the timeout to the pool and returns the
    /// peers that failed to answer (sorted); they get no further requests.
    pub fn poll_timeouts(&mut self, now: Instant) -> Vec<SocketAddr> {
        let mut slow = BTreeSet::new();
        for s in &self.slots {
            if let Slot::Requested { peer, at } = s {
                if now.saturating_duration_since(*at) >= self.piece_timeout {
                    slow.insert(*peer);
                }
            }
        }
        for a in &slow {
            self.mark_unusable(a);
        }
        slow.into_iter().collect()
    }

    /// When the oldest outstanding request times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::Requested { at, .. } => Some(*at + self.piece_timeout),
                _ => None,
            })
            .min()
    }

    /// Peers that can still be asked (usable, agreeing on the size), sorted.
    pub fn usable_peers(&self) -> Vec<SocketAddr> {
        self.peers
            .iter()
            .filter(|(_, p)| p.usable && Some(p.size) == self.size)
            .map(|(a, _)| *a)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n], 6881))
    }

    fn info(len: usize) -> (Bytes, InfoHash) {
        let v: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let h: [u8; 20] = Sha1::digest(&v).into();
        (Bytes::from(v), Id20(h))
    }

    fn deliver(f: &mut MetadataFetch, info: &Bytes, peer: SocketAddr, piece: u32) -> Outcome {
        match serve_request(info, piece) {
            MetadataMsg::Data {
                piece,
                total_size,
                data,
            } => f.on_data(peer, piece, total_size, data).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn codec_round_trip_and_bep9_bytes() {
        let r = MetadataMsg::Request { piece: 0 };
        assert_eq!(r.encode(), b"d8:msg_typei0e5:piecei0ee");
        let d = MetadataMsg::Data {
            piece: 1,
            total_size: Some(20000),
            data: Bytes::from_static(b"xyz"),
        };
        let enc = Bytes::from(d.encode());
        assert!(enc.ends_with(b"10:total_sizei20000eexyz"));
        assert_eq!(MetadataMsg::decode(&enc).unwrap(), d);
        for m in [r, MetadataMsg::Reject { piece: 3 }] {
            assert_eq!(MetadataMsg::decode(&Bytes::from(m.encode())).unwrap(), m);
        }
        assert!(MetadataMsg::decode(&Bytes::from_static(b"d8:msg_typei7e5:piecei0ee")).is_err());
        assert!(MetadataMsg::decode(&Bytes::from_static(b"d5:piecei-1e8:msg_typei0ee")).is_err());
        let mut huge = b"d8:msg_typei1e5:piecei0ee".to_vec();
        huge.extend(vec![0u8; METADATA_PIECE + 1]);
        assert!(MetadataMsg::decode(&Bytes::from(huge)).is_err());
    }

    #[test]
    fn server_answers_and_rejects() {
        let (inf, _) = info(40000);
        match serve_request(&inf, 2) {
            MetadataMsg::Data {
                data, total_size, ..
            } => {
                assert_eq!(data.len(), 40000 - 2 * METADATA_PIECE);
                assert_eq!(total_size, Some(40000));
            }
            m => panic!("{m:?}"),
        }
        assert_eq!(serve_request(&inf, 3), MetadataMsg::Reject { piece: 3 });
    }

    #[test]
    fn parallel_pieces_from_different_peers_then_verify() {
        let (inf, ih) = info(3 * METADATA_PIECE + 100);
        let now = Instant::now();
        let mut f = MetadataFetch::new(ih, Duration::from_secs(5));
        for n in 1..=4 {
            f.add_peer(addr(n), Some(inf.len() as u64)).unwrap();
        }
        let mut asked = Vec::new();
        for n in 1..=4 {
            asked.push(f.next_request(addr(n), now));
            assert_eq!(f.next_request(addr(n), now), None, "one piece each");
        }
        assert_eq!(asked, vec![Some(0), Some(1), Some(2), Some(3)]);
        for (i, n) in (1..=4).enumerate() {
            let out = deliver(&mut f, &inf, addr(n), i as u32);
            if i < 3 {
                assert_eq!(out, Outcome::Progress);
            } else {
                assert_eq!(out, Outcome::Done(inf.to_vec()));
            }
        }
    }

    #[test]
    fn corrupt_metadata_bans_contributors_and_restarts() {
        let (inf, ih) = info(2 * METADATA_PIECE);
        let mut bad = inf.to_vec();
        bad[5] ^= 1;
        let bad = Bytes::from(bad);
        let now = Instant::now();
        let mut f = MetadataFetch::new(ih, Duration::from_secs(5));
        f.add_peer(addr(1), Some(inf.len() as u64)).unwrap();
        f.add_peer(addr(2), Some(inf.len() as u64)).unwrap();
        f.add_peer(addr(3), Some(inf.len() as u64)).unwrap();
        assert_eq!(f.next_request(addr(1), now), Some(0));
        assert_eq!(f.next_request(addr(2), now), Some(1));
        assert_eq!(deliver(&mut f, &bad, addr(1), 0), Outcome::Progress);
        // Mixed attempt: nobody is proven guilty yet.
        assert_eq!(
            deliver(&mut f, &inf, addr(2), 1),
            Outcome::Corrupt {
                contributors: vec![addr(1), addr(2)],
                banned: vec![]
            }
        );
        assert_eq!(f.progress(), (0, 2));
        // Single-source retries: suspects 1 and 2 come after 3; drop 3 to force suspect 1.
        f.remove_peer(&addr(3));
        assert_eq!(f.next_request(addr(2), now), None, "1 is the source");
        assert_eq!(f.next_request(addr(1), now), Some(0));
        assert_eq!(f.next_request(addr(1), now), Some(1));
        assert_eq!(deliver(&mut f, &bad, addr(1), 0), Outcome::Progress);
        assert_eq!(
            deliver(&mut f, &bad, addr(1), 1),
            Outcome::Corrupt {
                contributors: vec![addr(1)],
                banned: vec![addr(1)]
            }
        );
        assert!(f.is_banned(&addr(1)));
        assert_eq!(f.add_peer(addr(1), Some(1)), Err(MetadataError::Banned));
        f.add_peer(addr(3), Some(inf.len() as u64)).unwrap();
        assert_eq!(
            f.next_request(addr(2), now),
            None,
            "non-suspect 3 goes first"
        );
        assert_eq!(f.next_request(addr(3), now), Some(0));
        assert_eq!(f.next_request(addr(3), now), Some(1));
        assert_eq!(deliver(&mut f, &inf, addr(3), 0), Outcome::Progress);
        assert_eq!(
            deliver(&mut f, &inf, addr(3), 1),
            Outcome::Done(inf.to_vec())
        );
    }

    #[test]
    fn timeout_reassigns_to_another_peer() {
        let (inf, ih) = info(100);
        let t0 = Instant::now();
        let mut f = MetadataFetch::new(ih, Duration::from_secs(2));
        f.add_peer(addr(1), Some(100)).unwrap();
        f.add_peer(addr(2), Some(100)).unwrap();
        assert_eq!(f.next_request(addr(1), t0), Some(0));
        assert_eq!(f.next_request(addr(2), t0), None);
        assert_eq!(f.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert!(f.poll_timeouts(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(f.poll_timeouts(t0 + Duration::from_secs(2)), vec![addr(1)]);
        assert_eq!(
            f.next_request(addr(1), t0),
            None,
            "slow peer not asked again"
        );
        assert_eq!(f.next_request(addr(2), t0), Some(0));
        assert_eq!(
            deliver(&mut f, &inf, addr(2), 0),
            Outcome::Done(inf.to_vec())
        );
    }

    #[test]
    fn unsolicited_data_is_ignored() {
        let (inf, ih) = info(2 * METADATA_PIECE);
        let now = Instant::now();
        let mut f = MetadataFetch::new(ih, Duration::from_secs(5));
        f.add_peer(addr(1), Some(inf.len() as u64)).unwrap();
        f.add_peer(addr(2), Some(inf.len() as u64)).unwrap();
        assert_eq!(f.next_request(addr(1), now), Some(0));
        // Peer 2 was asked nothing: its (garbage) piece 1 must not be taken.
        let junk = Bytes::from(vec![0u8; METADATA_PIECE]);
        assert_eq!(f.on_data(addr(2), 1, None, junk), Ok(Outcome::Progress));
        assert_eq!(f.progress(), (0, 2));
        assert_eq!(deliver(&mut f, &inf, addr(1), 0), Outcome::Progress);
        assert_eq!(f.next_request(addr(2), now), Some(1));
        assert_eq!(
            deliver(&mut f, &inf, addr(2), 1),
            Outcome::Done(inf.to_vec())
        );
    }

    #[test]
    fn bounds_and_hostile_sizes() {
        let (_, ih) = info(10);
        let mut f = MetadataFetch::new(ih, Duration::from_secs(2));
        assert_eq!(f.add_peer(addr(1), None), Err(MetadataError::NoSize));
        assert_eq!(f.add_peer(addr(1), Some(0)), Err(MetadataError::BadSize(0)));
        assert!(f.add_peer(addr(1), Some(MAX_METADATA_SIZE + 1)).is_err());
        f.add_peer(addr(1), Some(MAX_METADATA_SIZE)).unwrap();
        assert_eq!(
            f.progress(),
            (0, 4096),
            "no bytes allocated for a claim, only slots"
        );
        let now = Instant::now();
        assert_eq!(f.next_request(addr(1), now), Some(0));
        // Wrong length, wrong total, wrong piece: protocol errors.
        assert!(f
            .on_data(addr(1), 0, None, Bytes::from_static(b"x"))
            .is_err());
        assert!(f
            .on_data(addr(1), 0, Some(5), Bytes::from(vec![0; METADATA_PIECE]))
            .is_err());
        assert!(f.on_data(addr(1), 9999, None, Bytes::new()).is_err());
        // A peer disagreeing on the size is kept aside, its data ignored.
        f.add_peer(addr(2), Some(500)).unwrap();
        assert_eq!(f.next_request(addr(2), now), None);
        assert_eq!(
            f.on_data(addr(2), 0, None, Bytes::from(vec![0; 500])),
            Ok(Outcome::Progress)
        );
        assert!(f.on_reject(addr(1), 0));
        assert_eq!(f.next_request(addr(1), now), None);
    }
}
