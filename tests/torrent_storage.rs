//! Disk storage on a temporary directory: multi-file mapping with pieces spanning files,
//! BEP 47 padding never written, lazy sparse files, unsafe paths refused, full recheck.

use std::sync::Arc;

use magnetfetch::torrent::layout::{FileSpec, Layout, BLOCK_SIZE};
use magnetfetch::torrent::storage::{Storage, StorageError};
use magnetfetch::torrent::verify::{check_piece, recheck, sha1};

fn spec(path: &[&str], length: u64, pad: bool) -> FileSpec {
    FileSpec {
        path: path.iter().map(|s| s.to_string()).collect(),
        length,
        pad,
    }
}

/// 3 pieces of 32 KiB: a (20000) | pad (12768) | b (40000) | empty | c (25000).
fn layout() -> Arc<Layout> {
    Arc::new(
        Layout::new(
            2 * BLOCK_SIZE as u64,
            vec![
                spec(&["t", "a.bin"], 20_000, false),
                spec(&["t", ".pad", "12768"], 12_768, true),
                spec(&["t", "sub", "b.bin"], 40_000, false),
                spec(&["t", "empty"], 0, false),
                spec(&["t", "c.bin"], 25_000, false),
            ],
        )
        .unwrap(),
    )
}

/// The full torrent content (zeros in the padding file).
fn content(l: &Layout) -> Vec<u8> {
    let mut v: Vec<u8> = (0..l.total_length())
        .map(|i| (i * 7 % 253) as u8 + 1)
        .collect();
    v[20_000..32_768].fill(0);
    v
}

fn write_all(s: &Storage, l: &Layout, data: &[u8]) {
    for p in 0..l.piece_count() {
        for b in 0..l.block_count(p) {
            let off = p as u64 * l.piece_length() + b as u64 * BLOCK_SIZE as u64;
            let len = l.block_len(p, b) as u64;
            s.write_block(p, b * BLOCK_SIZE, &data[off as usize..(off + len) as usize])
                .unwrap();
        }
    }
}

#[test]
fn multi_file_round_trip_and_padding_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout();
    let s = Storage::disk(l.clone(), dir.path());
    // Nothing is created before the first write.
    assert!(!dir.path().join("t").exists());
    let data = content(&l);
    write_all(&s, &l, &data);
    s.flush().unwrap();

    let t = dir.path().join("t");
    assert_eq!(std::fs::read(t.join("a.bin")).unwrap(), &data[..20_000]);
    assert_eq!(
        std::fs::read(t.join("sub/b.bin")).unwrap(),
        &data[32_768..72_768]
    );
    assert_eq!(std::fs::read(t.join("c.bin")).unwrap(), &data[72_768..]);
    assert!(!t.join(".pad").exists(), "padding file written");
    // A zero-length file is never touched by block writes.
    assert!(!t.join("empty").exists());

    for p in 0..l.piece_count() {
        let r = l.piece_range(p);
        assert_eq!(
            s.read_piece(p).unwrap(),
            &data[r.start as usize..r.end as usize]
        );
    }
    // A block spanning b.bin and c.bin (piece 2 starts at 65536; b ends at 72768).
    let blk = s.read_block(2, 0, BLOCK_SIZE).unwrap();
    assert_eq!(blk, &data[65_536..65_536 + BLOCK_SIZE as usize]);

    // Recheck from scratch on a fresh Storage (no cached handles).
    let hashes: Vec<[u8; 20]> = (0..l.piece_count())
        .map(|p| {
            let r = l.piece_range(p);
            sha1(&data[r.start as usize..r.end as usize])
        })
        .collect();
    let fresh = Storage::disk(l.clone(), dir.path());
    let ok = recheck(&fresh, &hashes, None, 2).unwrap();
    assert!(ok.is_full());
    // Corrupt one byte of c.bin: only the last piece fails.
    let mut c = std::fs::read(t.join("c.bin")).unwrap();
    c[100] ^= 0xff;
    std::fs::write(t.join("c.bin"), c).unwrap();
    let ok = recheck(&fresh, &hashes, None, 2).unwrap();
    assert_eq!(ok.iter_set().collect::<Vec<_>>(), vec![0, 1]);
    // Missing file: its pieces are simply not verified.
    std::fs::remove_file(t.join("a.bin")).unwrap();
    let fresh = Storage::disk(l.clone(), dir.path());
    assert!(!check_piece(&fresh, 0, &hashes[0]).unwrap());
    assert!(matches!(
        fresh.read_piece(0),
        Err(StorageError::Missing { .. })
    ));
}

#[test]
fn files_are_sparse_and_lazily_created() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout();
    let s = Storage::disk(l.clone(), dir.path());
    // Write only the last block of the last piece: c.bin gets its full length.
    let last = l.piece_count() - 1;
    let nb = l.block_count(last) - 1;
    let len = l.block_len(last, nb) as usize;
    s.write_block(last, nb * BLOCK_SIZE, &vec![9u8; len])
        .unwrap();
    let c = dir.path().join("t/c.bin");
    assert_eq!(std::fs::metadata(&c).unwrap().len(), 25_000);
    assert!(!dir.path().join("t/a.bin").exists());
    // Out-of-range writes are refused before touching anything.
    assert!(matches!(
        s.write_block(last, 0, &vec![0u8; 70_000]),
        Err(StorageError::OutOfRange { .. })
    ));
}

#[test]
fn unsafe_paths_are_refused() {
    for bad in [
        vec!["..", "x"],
        vec!["t", "a/../../x"],
        vec!["/etc", "passwd"],
        vec!["t", ""],
    ] {
        let r = Layout::new(16_384, vec![spec(&bad, 10, false)]);
        assert!(r.is_err(), "{bad:?} accepted");
    }
}
