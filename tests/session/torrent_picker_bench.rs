//! Picker benchmark (not run by default): a whole download of a 4096-piece torrent from 300
//! peers, driven round-robin, measuring the cost of `pick_blocks` and block receipt.
//!
//! cargo test --release --test session torrent_picker_bench -- --ignored --nocapture

use std::time::Instant;

use magnetfetch::internals::torrent::bitfield::Bitfield;
use magnetfetch::internals::torrent::layout::Layout;
use magnetfetch::internals::torrent::picker::{PeerKey, Picker, PickerConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
#[ignore]
fn picker_whole_download() {
    let pieces = 4096u32;
    let piece_len = 256 * 1024u64;
    let npeers = 300u64;
    let depth = 16usize;
    let l = Layout::single("f", pieces as u64 * piece_len, piece_len).unwrap();
    let mut p = Picker::new(&l, PickerConfig::default(), StdRng::seed_from_u64(1));
    let mut rng = StdRng::seed_from_u64(2);
    let mut has = Vec::new();
    for k in 0..npeers {
        // A few seeds, the rest with 10..90 % of the pieces.
        let density = if k < 5 {
            1.0
        } else {
            rng.random_range(0.1..0.9)
        };
        let mut b = Bitfield::new(pieces);
        for i in 0..pieces {
            if rng.random_bool(density) {
                b.set(i);
            }
        }
        p.add_peer_bitfield(&b);
        has.push(b);
    }
    let t0 = Instant::now();
    let (mut picks, mut picked, mut received) = (0u64, 0u64, 0u64);
    let mut pick_time = std::time::Duration::ZERO;
    let mut endgame_time = std::time::Duration::ZERO;
    let mut endgame_picks = 0u64;
    let mut out = Vec::new();
    while !p.is_complete() {
        for k in 0..npeers {
            let peer = PeerKey(k);
            // Deliver the peer's oldest request, then refill its pipeline.
            if let Some(&r) = p.requests_of(peer).first() {
                let o = p.on_block_received(peer, r);
                received += 1;
                if o.piece_complete {
                    p.on_piece_verified(r.piece, None);
                }
            }
            let want = depth.saturating_sub(p.outstanding(peer));
            if want > 0 {
                out.clear();
                let endgame = p.in_endgame();
                let t = Instant::now();
                picked += p.pick_blocks(peer, &has[k as usize], want, &mut out) as u64;
                let dt = t.elapsed();
                pick_time += dt;
                picks += 1;
                if endgame {
                    endgame_time += dt;
                    endgame_picks += 1;
                }
            }
        }
    }
    let total = t0.elapsed();
    eprintln!(
        "picker bench: {pieces} pieces x {} blocks, {npeers} peers, depth {depth}: \
         total {:.3} s, {picks} pick_blocks calls ({:.2} us each), {picked} blocks picked, \
         {received} blocks received; of which endgame: {endgame_picks} calls ({:.2} us each)",
        l.block_count(0),
        total.as_secs_f64(),
        pick_time.as_secs_f64() * 1e6 / picks as f64,
        endgame_time.as_secs_f64() * 1e6 / endgame_picks.max(1) as f64,
    );
    assert!(p.have().is_full());
}

/// SHA-1 throughput of piece verification (one thread), the ceiling of download speed per
/// core spent hashing.
#[test]
#[ignore]
fn sha1_throughput() {
    let piece = vec![0x5au8; 4 << 20];
    let rounds = 64; // 256 MiB
    let t = Instant::now();
    let mut acc = 0u8;
    for _ in 0..rounds {
        acc ^= magnetfetch::internals::torrent::verify::sha1(&piece)[0];
    }
    let dt = t.elapsed().as_secs_f64();
    eprintln!(
        "sha1: {} MiB in {:.3} s = {:.0} MiB/s (acc {acc})",
        rounds * 4,
        dt,
        (rounds * 4) as f64 / dt
    );
}
