//! Disk storage on a temporary directory: multi-file mapping with pieces spanning files,
//! BEP 47 padding never written, lazy sparse files, unsafe paths refused, full recheck.

use std::sync::Arc;

use magnetfetch::internals::torrent::layout::{FileSpec, Layout, BLOCK_SIZE};
use magnetfetch::internals::torrent::storage::{DiskOptions, Storage, StorageError};
use magnetfetch::internals::torrent::verify::{check_piece, recheck, sha1};

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

/// A link planted below the download directory (at a file or at a directory on the way)
/// is never written through or read; the error names it. The download directory itself
/// may be a link.
#[test]
fn symlinks_below_the_download_dir_are_refused() {
    use std::os::unix::fs::symlink;
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let l = layout();
    let data = content(&l);

    // t/a.bin -> outside/victim: piece 0 is refused, the victim untouched.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("t")).unwrap();
    symlink(&victim, dir.path().join("t/a.bin")).unwrap();
    let s = Storage::disk(l.clone(), dir.path());
    let err = s
        .write_block(0, 0, &data[..BLOCK_SIZE as usize])
        .unwrap_err();
    assert!(matches!(err, StorageError::Symlink { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("t/a.bin") && msg.contains("symbolic link"),
        "{msg}"
    );
    assert!(matches!(s.read_piece(0), Err(StorageError::Symlink { .. })));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let hashes = vec![[0u8; 20]; l.piece_count() as usize];
    assert!(matches!(
        recheck(&Storage::disk(l.clone(), dir.path()), &hashes, None, 1),
        Err(StorageError::Symlink { .. })
    ));

    // t -> outside (a linked directory on the way): nothing is created there.
    let dir = tempfile::tempdir().unwrap();
    symlink(outside.path(), dir.path().join("t")).unwrap();
    let s = Storage::disk(l.clone(), dir.path());
    let err = s
        .write_block(0, 0, &data[..BLOCK_SIZE as usize])
        .unwrap_err();
    assert!(matches!(err, StorageError::Symlink { .. }), "{err}");
    assert!(err
        .to_string()
        .contains(&format!("{}", dir.path().join("t").display())));
    let last = l.piece_count() - 1;
    assert!(matches!(
        s.read_piece(last),
        Err(StorageError::Symlink { .. })
    ));
    let names: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("victim")]);

    // t/sub -> outside (deeper): refused as well.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("t")).unwrap();
    symlink(outside.path(), dir.path().join("t/sub")).unwrap();
    let s = Storage::disk(l.clone(), dir.path());
    let err = s
        .write_block(1, 0, &data[32_768..32_768 + BLOCK_SIZE as usize])
        .unwrap_err();
    assert!(matches!(err, StorageError::Symlink { .. }), "{err}");
    assert!(!outside.path().join("b.bin").exists());

    // The download directory itself may be a link: the user chose it.
    let real = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("dl");
    symlink(real.path(), &root).unwrap();
    let s = Storage::disk(l.clone(), &root);
    write_all(&s, &l, &data);
    assert_eq!(
        std::fs::read(real.path().join("t/a.bin")).unwrap(),
        &data[..20_000]
    );
    assert_eq!(s.read_piece(0).unwrap(), &data[..32_768]);
}

/// Something other than a regular file at a file's path (a FIFO would block a read
/// forever) is refused, not opened.
#[test]
fn non_regular_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("t")).unwrap();
    let fifo = std::ffi::CString::new(dir.path().join("t/a.bin").to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let l = layout();
    let s = Storage::disk(l.clone(), dir.path());
    assert!(matches!(
        s.read_piece(0),
        Err(StorageError::NotAFile { .. })
    ));
    assert!(matches!(
        s.write_block(0, 0, &[1u8; 100]),
        Err(StorageError::NotAFile { .. })
    ));
}

/// With a selection only selected files are created; bytes of unselected files in
/// boundary pieces live in the hidden parts file, from which the piece is read back
/// (verification, recheck after a restart, seeding). A later run that selects everything
/// finds that piece unverified (its bytes are in the parts file, not the new file) and
/// downloads it again, without error.
#[test]
fn unselected_files_are_not_created_boundary_bytes_go_to_the_parts_file() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout();
    let data = content(&l);
    let opts = DiskOptions {
        // Only sub/b.bin: pieces 1 and 2; piece 2 also holds the start of c.bin.
        selected: vec![false, false, true, true, false],
        parts_name: ".magnetfetch-test.parts".into(),
        ..DiskOptions::default()
    };
    let s = Storage::disk_with(l.clone(), dir.path(), opts.clone());
    for p in [1u32, 2] {
        let r = l.piece_range(p);
        let piece = &data[r.start as usize..r.end as usize];
        let cut = piece.len() / 3;
        s.write_blocks(p, &[&piece[..cut], &piece[cut..]]).unwrap();
        assert_eq!(s.read_piece(p).unwrap(), piece, "piece {p}");
    }
    s.flush().unwrap();
    let t = dir.path().join("t");
    assert_eq!(
        std::fs::read(t.join("sub/b.bin")).unwrap(),
        &data[32_768..72_768]
    );
    assert!(!t.join("a.bin").exists());
    assert!(!t.join("c.bin").exists(), "unselected file created");
    // Everything else in the download directory is hidden: the parts file.
    let visible: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(visible, vec!["t".to_string()]);
    let parts = dir.path().join(".magnetfetch-test.parts");
    // One slot (piece 2) of 32 KiB at most, holding c.bin's first 25000 - ... bytes.
    assert!(std::fs::metadata(&parts).unwrap().len() <= 2 * BLOCK_SIZE as u64);

    // A restart with the same selection: both pieces verify from disk + parts file.
    let hashes: Vec<[u8; 20]> = (0..l.piece_count())
        .map(|p| {
            let r = l.piece_range(p);
            sha1(&data[r.start as usize..r.end as usize])
        })
        .collect();
    let again = Storage::disk_with(l.clone(), dir.path(), opts.clone());
    let ok = recheck(&again, &hashes, None, 2).unwrap();
    assert_eq!(ok.iter_set().collect::<Vec<_>>(), vec![1, 2]);
    // Seeding reads a block that spans b.bin and the parts file.
    assert_eq!(
        again.read_block(2, 0, BLOCK_SIZE).unwrap(),
        &data[65_536..65_536 + BLOCK_SIZE as usize]
    );

    // Selection widened to everything: piece 2 is not found (re-downloaded), no error.
    let all = Storage::disk(l.clone(), dir.path());
    let ok = recheck(&all, &hashes, None, 2).unwrap();
    assert_eq!(ok.iter_set().collect::<Vec<_>>(), vec![1]);
    write_all(&all, &l, &data);
    let ok = recheck(&Storage::disk(l.clone(), dir.path()), &hashes, None, 2).unwrap();
    assert!(ok.is_full());
    assert_eq!(std::fs::read(t.join("c.bin")).unwrap(), &data[72_768..]);
}

/// BEP 47 `x`: an executable file gets execute permission where it has read permission,
/// when created and when an existing file is opened for writing; other files do not.
#[test]
fn executable_files_get_their_execute_bits() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let l = layout();
    let data = content(&l);
    // c.bin exists already, without execute bits (an earlier run, or another client).
    std::fs::create_dir(dir.path().join("t")).unwrap();
    let c = dir.path().join("t/c.bin");
    std::fs::write(&c, b"").unwrap();
    std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o640)).unwrap();
    let opts = DiskOptions {
        executable: vec![true, false, false, false, true],
        ..DiskOptions::default()
    };
    let s = Storage::disk_with(l.clone(), dir.path(), opts);
    write_all(&s, &l, &data);
    let a = mode(&dir.path().join("t/a.bin"));
    assert_ne!(a & 0o100, 0, "a.bin mode {a:o}");
    assert_eq!(a & 0o111, (a & 0o444) >> 2, "a.bin mode {a:o}");
    assert_eq!(mode(&dir.path().join("t/sub/b.bin")) & 0o111, 0);
    assert_eq!(mode(&c), 0o750);
    assert_eq!(std::fs::read(&c).unwrap(), &data[72_768..]);
}
