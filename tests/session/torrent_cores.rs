//! The engine's pure cores working together without sockets: picker + generated storage +
//! SHA-1 verification + smart ban, with one peer sending corrupt blocks; then resume and
//! recheck on disk through the async (blocking-pool) helpers.

use std::collections::BTreeMap;
use std::sync::Arc;

use magnetfetch::internals::id::InfoHash;
use magnetfetch::internals::torrent::bitfield::Bitfield;
use magnetfetch::internals::torrent::layout::{FileSpec, Layout, BLOCK_SIZE};
use magnetfetch::internals::torrent::picker::{BlockStatus, PeerKey, Picker, PickerConfig};
use magnetfetch::internals::torrent::resume::{file_stamps, resume_path, ResumeState};
use magnetfetch::internals::torrent::storage::{generated_hashes, Storage};
use magnetfetch::internals::torrent::verify::{hash_blocking, recheck_blocking, sha1};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn layout() -> Arc<Layout> {
    let f = |n: &str, length: u64, pad: bool| FileSpec {
        path: vec!["t".into(), n.into()],
        length,
        pad,
    };
    // 64 KiB pieces; a padding file aligns b.bin to a piece boundary (BEP 47).
    Arc::new(
        Layout::new(
            65_536,
            vec![
                f("a.bin", 300_000, false),
                f("pad", 327_680 - 300_000, true),
                f("b.bin", 500_000, false),
            ],
        )
        .unwrap(),
    )
}

#[test]
fn download_with_a_corrupt_peer_bans_only_it_and_completes() {
    let l = layout();
    let seed = 77;
    let hashes = generated_hashes(seed, &l);
    let source = Storage::generated(l.clone(), seed, true);
    let sink = Storage::generated(l.clone(), seed, false);
    let n = l.piece_count();
    let mut picker = Picker::new(&l, PickerConfig::default(), StdRng::seed_from_u64(1));
    let peers: Vec<PeerKey> = (0..5).map(PeerKey).collect();
    let corrupt = PeerKey(3);
    for _ in &peers {
        picker.add_peer_bitfield(&Bitfield::full(n));
    }
    let mut rng = StdRng::seed_from_u64(2);
    let mut banned = Vec::new();
    let mut received: BTreeMap<u32, BTreeMap<u32, [u8; 20]>> = BTreeMap::new();
    let mut rounds = 0;
    while !picker.is_complete() {
        rounds += 1;
        assert!(rounds < 10_000, "no progress");
        let peer = peers[rng.random_range(0..peers.len())];
        if banned.contains(&peer) {
            continue;
        }
        let mut out = Vec::new();
        let want = 4usize.saturating_sub(picker.outstanding(peer));
        picker.pick_blocks(peer, &Bitfield::full(n), want, &mut out);
        let Some(r) = picker.requests_of(peer).first().copied() else {
            continue;
        };
        let mut data = source.read_block(r.piece, r.offset, r.len).unwrap();
        if peer == corrupt {
            data[0] ^= 0x55;
        }
        let o = picker.on_block_received(peer, r);
        if o.status != BlockStatus::Accepted {
            continue;
        }
        sink.write_block(r.piece, r.offset, &data).unwrap();
        received
            .entry(r.piece)
            .or_default()
            .insert(r.offset, sha1(&data));
        if o.piece_complete {
            let digests: Vec<[u8; 20]> = received.remove(&r.piece).unwrap().into_values().collect();
            let piece = sink.read_piece(r.piece).unwrap();
            let newly = if sha1(&piece) == hashes[r.piece as usize] {
                picker.on_piece_verified(r.piece, Some(&digests))
            } else {
                picker.on_piece_failed(r.piece, Some(&digests))
            };
            for p in newly {
                picker.on_peer_disconnected(p);
                picker.remove_peer_bitfield(&Bitfield::full(n));
                banned.push(p);
            }
        }
    }
    assert_eq!(banned, vec![corrupt]);
    for p in 0..n {
        assert_eq!(
            sha1(&sink.read_piece(p).unwrap()),
            hashes[p as usize],
            "piece {p}"
        );
    }
}

#[tokio::test]
async fn resume_then_recheck_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout();
    let seed = 5;
    let hashes = generated_hashes(seed, &l);
    let source = Storage::generated(l.clone(), seed, true);
    let disk = Arc::new(Storage::disk(l.clone(), dir.path().join("dl")));
    // Download pieces 0..3 only, verifying each on the blocking pool.
    let mut have = Bitfield::new(l.piece_count());
    for p in 0..3 {
        let data = source.read_piece(p).unwrap();
        for b in 0..l.block_count(p) {
            let off = (b * BLOCK_SIZE) as usize;
            let len = l.block_len(p, b) as usize;
            disk.write_block(p, b * BLOCK_SIZE, &data[off..off + len])
                .unwrap();
        }
        let (h, _) = hash_blocking(data).await;
        assert_eq!(h, hashes[p as usize]);
        have.set(p);
    }
    disk.flush().unwrap();
    let ih = InfoHash::new([3; 20]);
    let state = ResumeState {
        info_hash: ih,
        have: have.clone(),
        unsynced: None,
        files: file_stamps(&disk),
    };
    let path = resume_path(&dir.path().join("state"), &ih);
    state.save(&path).unwrap();

    // "Restart": everything saved is trusted while files are unchanged.
    let loaded = ResumeState::load(&path, &ih, &l).unwrap().unwrap();
    let plan = loaded.plan(&l, &file_stamps(&disk));
    assert_eq!(plan.trusted, have);
    assert!(plan.recheck.none());

    // Tamper with a.bin behind our back: its pieces must be re-hashed, and the recheck
    // finds the damaged piece.
    let a = dir.path().join("dl/t/a.bin");
    let mut bytes = std::fs::read(&a).unwrap();
    bytes[70_000] ^= 1; // piece 1
    std::fs::write(&a, bytes).unwrap();
    // Make the change visible even on filesystems with coarse mtimes.
    std::fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000))
        .unwrap();
    let plan = loaded.plan(&l, &file_stamps(&disk));
    assert_eq!(plan.recheck.iter_set().collect::<Vec<_>>(), vec![0, 1, 2]);
    let fresh = Arc::new(Storage::disk(l.clone(), dir.path().join("dl")));
    let ok = recheck_blocking(fresh, Arc::new(hashes), Some(plan.recheck))
        .await
        .unwrap();
    assert_eq!(ok.iter_set().collect::<Vec<_>>(), vec![0, 2]);
}
