//! Memory per file of a hostile file table: a small .torrent (or an info
//! dictionary from a peer, BEP 9) listing many empty files must not make parsing and the
//! layout cost more than the bound stated in docs/architecture.md ("Memory per file").
//! A counting global allocator measures the peak of live heap bytes.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use magnetfetch::internals::metainfo::{Metainfo, MetainfoError, MAX_FILES};
use magnetfetch::internals::torrent::Layout;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: AllocLayout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: AllocLayout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bound stated in docs/architecture.md: per file (the parsed `Info` plus the layout).
const BYTES_PER_FILE: usize = 256;
/// ... plus this many copies of the metadata (the `Metainfo` keeps the raw info dict).
const METADATA_COPIES: usize = 2;

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("{}:", b.len()).as_bytes());
    out.extend_from_slice(b);
}

/// A .torrent with `n` empty files `dir/fNNNNNNN` and one 1-byte file.
fn torrent(n: usize) -> Vec<u8> {
    let mut t = b"d4:infod5:filesl".to_vec();
    for i in 0..n {
        t.extend_from_slice(b"d6:lengthi0e4:pathl");
        put(&mut t, b"dir");
        put(&mut t, format!("f{i:07}").as_bytes());
        t.extend_from_slice(b"ee");
    }
    t.extend_from_slice(b"d6:lengthi1e4:pathl");
    put(&mut t, b"data");
    t.extend_from_slice(b"ee");
    t.extend_from_slice(b"e4:name4:many12:piece lengthi16384e6:pieces");
    put(&mut t, &[7u8; 20]);
    t.extend_from_slice(b"ee");
    t
}

/// Parses like `magnetfetch` does before a download and builds the layout like the session
/// (the torrent's name once, paths borrowed). Returns (peak bytes above the start, files).
fn parse_and_lay_out(t: &[u8]) -> Result<(usize, usize), MetainfoError> {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let m = Metainfo::from_bytes(t)?;
    let info = &m.info;
    let mut b = Layout::builder(info.piece_length, Some(info.name.as_str())).unwrap();
    for f in &info.files {
        b.push(f.path.iter().map(String::as_str), f.length, f.pad);
    }
    let layout = b.build().unwrap();
    assert_eq!(layout.files().len(), info.files.len());
    assert_eq!(
        layout.path(3).collect::<Vec<_>>(),
        vec!["many", "dir", "f0000003"]
    );
    let n = info.files.len();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    drop((layout, m));
    Ok((peak, n))
}

#[test]
fn many_empty_files_stay_within_the_stated_bound_per_file() {
    // 200k files: a 7 MB torrent. Before the fix this cost ~2 KiB per file.
    let n = 200_000;
    let t = torrent(n);
    let (peak, files) = parse_and_lay_out(&t).unwrap();
    assert_eq!(files, n + 1);
    let bound = files * BYTES_PER_FILE + METADATA_COPIES * t.len();
    eprintln!(
        "{files} files, torrent {} bytes: peak {peak} bytes ({} per file), bound {bound}",
        t.len(),
        peak / files
    );
    assert!(peak <= bound, "peak {peak} > bound {bound}");

    // Past the shared limit: refused with a clear error, after only scanning the list
    // (no per-file table is built).
    let t = torrent(MAX_FILES);
    let err = parse_and_lay_out(&t).unwrap_err();
    assert_eq!(err, MetainfoError::TooLarge("number of files"));
    assert!(err.to_string().contains("number of files"), "{err}");
    let peak = PEAK.load(Ordering::Relaxed);
    assert!(
        peak <= LIVE.load(Ordering::Relaxed) + 2 * t.len(),
        "refusal cost {peak} bytes"
    );
}
