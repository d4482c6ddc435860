//! What a peer refused at our connection limit still gets before we close: our bitfield
//! (BEP 3 / BEP 6 `have all`), our extended handshake (BEP 10), one `ut_pex` message with
//! some of our peers (BEP 11) and the info dictionary if it asks for it at once (BEP 9).
//!
//! Why: in a flash crowd everyone first finds the same seed (DHT, tracker), and the seed
//! is full after `max_peers` + slack connections. A bare refusal leaves the others with
//! nothing until their next DHT round: no metadata, no other address. The courtesy costs a
//! few hundred bytes and one short-lived task (bounded by [`MAX_CONCURRENT`] and
//! [`GRACE`]) and turns every refusal into a list of peers that are getting the data, plus
//! the metadata that lets the newcomer join them. The refused peer also learns that we are
//! a seed (if we are), so it may retry us later when our slots free up.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::time::Instant;

use crate::peer::extension::{ExtHandshake, UT_METADATA, UT_METADATA_ID, UT_PEX};
use crate::peer::metadata::{serve_request, MetadataMsg};
use crate::peer::{Message, PeerConn, PeerError};
use crate::torrent::Bitfield;

/// Courtesy connections at once; beyond it a refused peer is simply closed.
pub const MAX_CONCURRENT: usize = 128;
/// A refused peer is closed this long after the extended handshakes at the latest.
pub const GRACE: Duration = Duration::from_secs(2);
/// Metadata pieces (16 KiB each) served to one refused peer at most: a typical info
/// dictionary is a few pieces; a huge one is finished from peers that admit it.
pub const MAX_METADATA_PIECES: u32 = 16;
/// Time allowed for the extended handshake exchange itself.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Courtesy connections running, counted so that at most [`MAX_CONCURRENT`] run at once.
/// The swarm's core takes a slot when it refuses a peer with a courtesy; the courtesy task
/// holds it and gives it back when it ends (the slot is dropped).
#[derive(Clone, Debug, Default)]
pub struct CourtesySlots(Arc<AtomicUsize>);

/// One running courtesy's slot (see [`CourtesySlots`]).
#[derive(Debug)]
pub struct CourtesySlot(Arc<AtomicUsize>);

impl CourtesySlots {
    /// A slot, unless `max` courtesies are running.
    pub fn try_take(&self, max: usize) -> Option<CourtesySlot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| CourtesySlot(self.0.clone()))
    }

    /// Courtesies running.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

impl Drop for CourtesySlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the swarm hands to a courtesy task.
pub struct Courtesy {
    /// The raw info dictionary (served over ut_metadata).
    pub info: Bytes,
    /// Our pieces (a seed says `have all`, so the refused peer knows it is one).
    pub have: Bitfield,
    /// Our listen port for the extended handshake.
    pub our_port: Option<u16>,
    /// An encoded `ut_pex` message, `None` for private torrents or no contacts.
    pub pex: Option<Vec<u8>>,
}

/// Up to `max` contacts chosen at random (refused peers must not all be sent to the same
/// few), never one on the refused peer's own IP. Deterministic for a given RNG state.
pub fn pick_contacts(
    contacts: &std::collections::BTreeMap<SocketAddr, u8>,
    exclude: IpAddr,
    max: usize,
    rng: &mut impl Rng,
) -> Vec<(SocketAddr, u8)> {
    let mut all: Vec<(SocketAddr, u8)> = contacts
        .iter()
        .filter(|(a, _)| a.ip() != exclude)
        .map(|(a, f)| (*a, *f))
        .collect();
    all.shuffle(rng);
    all.truncate(max);
    all
}

/// Runs the courtesy on an incoming connection (handshake done), then closes it. The
/// slot bounds how many run at once; it is given back when this ends.
pub async fn refuse(conn: PeerConn, ctx: Courtesy, slot: CourtesySlot) {
    let addr = conn.addr;
    if let Err(e) = run(conn, &ctx).await {
        tracing::trace!(%addr, %e, "courtesy connection ended");
    }
    drop(slot);
}

async fn run(mut conn: PeerConn, ctx: &Courtesy) -> Result<(), PeerError> {
    let fast = conn.remote.reserved.fast();
    let first = if fast && ctx.have.is_full() {
        Some(Message::HaveAll)
    } else if fast && ctx.have.none() {
        Some(Message::HaveNone)
    } else if ctx.have.none() {
        None
    } else {
        Some(Message::Bitfield(Bytes::copy_from_slice(
            ctx.have.as_bytes(),
        )))
    };
    if let Some(m) = first {
        conn.send(&m).await?;
    }
    if !conn.extensions() {
        return Ok(());
    }
    // A bad bitfield (BEP 3) ends the courtesy as it arrives, like on any other connection.
    conn.set_piece_count(ctx.have.len())?;
    let mut ours = ExtHandshake::ours(
        ctx.our_port,
        Some(ctx.info.len() as u64),
        Some(conn.addr.ip()),
    );
    if ctx.pex.is_none() {
        ours.m.remove(UT_PEX);
    }
    let theirs = conn
        .exchange_ext_handshake(&ours, HANDSHAKE_TIMEOUT)
        .await?;
    if let (Some(pex), Some(id)) = (&ctx.pex, theirs.id_of(UT_PEX)) {
        conn.writer.send_extended(id, pex).await?;
    }
    let Some(meta_id) = theirs.id_of(UT_METADATA) else {
        return Ok(());
    };
    let pieces = crate::peer::metadata::num_pieces(ctx.info.len() as u64).min(MAX_METADATA_PIECES);
    let mut served = 0u32;
    let deadline = Instant::now() + GRACE;
    // Serve the metadata it asks for within the grace period, at most as many requests as
    // there are pieces (bounded); a peer that has it asks nothing and is closed at the
    // deadline.
    while served < pieces {
        let m = match tokio::time::timeout_at(deadline, conn.recv()).await {
            Err(_) => return Ok(()),
            Ok(m) => m?,
        };
        if let Message::Extended {
            id: UT_METADATA_ID,
            payload,
        } = m
        {
            if let MetadataMsg::Request { piece } = MetadataMsg::decode(&payload)? {
                conn.writer
                    .send_extended(meta_id, &serve_request(&ctx.info, piece).encode())
                    .await?;
                served += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    #[test]
    fn slots_are_bounded_and_given_back_when_dropped() {
        let slots = CourtesySlots::default();
        let a = slots.try_take(2).unwrap();
        let b = slots.try_take(2).unwrap();
        assert!(slots.try_take(2).is_none());
        assert_eq!(slots.running(), 2);
        drop(a);
        let c = slots.try_take(2).unwrap();
        assert!(slots.try_take(2).is_none());
        drop((b, c));
        assert_eq!(slots.running(), 0);
    }

    #[test]
    fn contacts_are_bounded_random_and_exclude_the_refused_ip() {
        let contacts: BTreeMap<SocketAddr, u8> = (1..=120u8)
            .map(|i| (SocketAddr::from(([10, 0, 0, i], 6881)), i % 3))
            .collect();
        let refused: IpAddr = [10, 0, 0, 7].into();
        let mut rng = StdRng::seed_from_u64(1);
        let a = pick_contacts(&contacts, refused, 50, &mut rng);
        assert_eq!(a.len(), 50);
        assert!(a.iter().all(|(s, _)| s.ip() != refused));
        // Flags travel with their address.
        assert!(a.iter().all(|(s, f)| contacts.get(s) == Some(f)));
        // Not simply the 50 lowest addresses (every refused peer would get the same ones).
        let lowest: Vec<SocketAddr> = contacts.keys().copied().take(50).collect();
        let mut got: Vec<SocketAddr> = a.iter().map(|(s, _)| *s).collect();
        got.sort();
        assert_ne!(got, lowest);
        // Another draw differs; the same seed gives the same draw.
        let b = pick_contacts(&contacts, refused, 50, &mut rng);
        assert_ne!(a, b);
        let again = pick_contacts(&contacts, refused, 50, &mut StdRng::seed_from_u64(1));
        assert_eq!(a, again);
        // Fewer contacts than asked: all of them.
        let few: BTreeMap<SocketAddr, u8> = contacts.into_iter().take(3).collect();
        assert_eq!(pick_contacts(&few, refused, 50, &mut rng).len(), 3);
    }
}
