//! Piece storage: where verified (and in-flight) blocks live.
//!
//! The torrent is one byte stream (BEP 3) cut into pieces; [`Layout`] maps a block onto file
//! segments and [`Storage`] reads/writes those segments. Two back ends:
//! - **Disk**: files under the download directory. Files are created lazily on their first
//!   write, sized with `set_len` (sparse on filesystems that support it), parent
//!   directories created as needed. Every path is rebuilt from validated components and
//!   re-checked here (no `..`, separators, empty or drive components), and no symbolic
//!   link below the download directory is ever followed ([`open_beneath`]: one `openat`
//!   per component with `O_NOFOLLOW`, so a link swapped in between two checks cannot
//!   redirect us either), so nothing outside the download directory is ever touched —
//!   not even read. The download directory itself may be a link: the user chose it.
//!   With a file selection ([`DiskOptions::selected`]) only selected files are created:
//!   the bytes of unselected files that share a piece with a selected file (the boundary
//!   pieces, which must be downloaded whole to be verified) go to one hidden *parts file*
//!   in the download directory ([`parts_file_name`]), where they are read back for
//!   verification, rechecks and seeding. See docs/architecture.md ("File selection").
//!   Open handles sit in a small LRU cache and
//!   I/O is positional (`pread`/`pwrite`), so several blocking threads can share one
//!   `Storage`.
//! - **Memory**: for simulations. `sparse` keeps written bytes per file; `generated` holds
//!   deterministic pseudo-random content ([`generate`]) and only remembers which blocks
//!   were written and which did not match, so a thousand simulated leechers need almost no
//!   RAM while corrupt blocks still fail their piece's SHA-1.
//!
//! Writes to disk start their writeback steadily as they go ([`writeback`]), so the kernel
//! never stalls one write behind a gigabyte of dirty pages. A storage can carry a disk
//! model with a write-rate limit ([`WriteRate`], [`Storage::with_write_rate`]) for tests
//! and benchmarks of a disk slower than the network.
//!
//! BEP 47 padding files are never written; reading them yields zeros. BEP 47 `x` files get
//! execute permission (where they have read permission) when opened for writing. All methods are
//! blocking: call them from `tokio::task::spawn_blocking` (see [`super::verify`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

use super::bitfield::Bitfield;
use super::layout::{check_path, Layout, PathError, Segment, BLOCK_SIZE};

mod write_rate;
mod writeback;
pub use write_rate::WriteRate;
pub use writeback::WRITEBACK_CHUNK;

/// Open file handles kept per torrent.
pub const HANDLE_CACHE: usize = 32;

/// Storage failures, with the file involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("disk full while writing {}", path.display())]
    DiskFull { path: PathBuf },
    #[error("permission denied for {}", path.display())]
    PermissionDenied { path: PathBuf },
    #[error("{} does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("I/O error on {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("range out of bounds: piece {piece}, offset {offset}, length {len}")]
    OutOfRange { piece: u32, offset: u32, len: u32 },
    #[error("unsafe file path: {0}")]
    UnsafePath(#[from] PathError),
    #[error("{} is a symbolic link; refusing to write through it or read it", path.display())]
    Symlink { path: PathBuf },
    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("storage is read-only")]
    ReadOnly,
    #[error("{got} piece hashes for {expected} pieces")]
    HashCount { got: usize, expected: u32 },
}

impl StorageError {
    fn from_io(path: &Path, e: io::Error) -> Self {
        let path = path.to_path_buf();
        // ENOSPC / EDQUOT: say "disk full" rather than a raw errno.
        if e.kind() == io::ErrorKind::StorageFull
            || e.kind() == io::ErrorKind::QuotaExceeded
            || e.raw_os_error() == Some(28)
        {
            return StorageError::DiskFull { path };
        }
        match e.kind() {
            io::ErrorKind::PermissionDenied => StorageError::PermissionDenied { path },
            io::ErrorKind::NotFound => StorageError::Missing { path },
            _ => StorageError::Io { path, source: e },
        }
    }

    /// Is this "the data is simply not there" (piece not verified) rather than a failure?
    pub fn is_missing(&self) -> bool {
        matches!(self, StorageError::Missing { .. })
    }
}

/// Block storage of one torrent. `Send + Sync`: share it in an `Arc`.
pub struct Storage {
    layout: Arc<Layout>,
    backend: Backend,
    /// A modelled slow disk (tests, benchmarks); `None`: as fast as the back end.
    write_rate: Option<Arc<WriteRate>>,
}

enum Backend {
    Disk(DiskStore),
    Sparse(Mutex<BTreeMap<usize, Vec<u8>>>),
    Generated(GenStore),
}

struct DiskStore {
    root: PathBuf,
    /// Per file: create and write it? Empty: every file.
    selected: Vec<bool>,
    /// Where unselected files' bytes of boundary pieces go (only with a selection).
    parts: Option<Parts>,
    /// Per file: BEP 47 executable (empty: none).
    executable: Vec<bool>,
    /// Keys are file indexes, and [`PARTS`] for the parts file.
    cache: Mutex<LruCache<usize, Handle>>,
    dirty: Mutex<BTreeSet<usize>>,
    writeback: writeback::Writeback,
}

/// Cache / dirty-set key of the parts file (no file index is this large).
const PARTS: usize = usize::MAX;

/// The parts file: a piece that touches two or more files (with data, padding aside) has
/// a slot of `piece length` bytes, numbered by the piece's rank among such pieces, and
/// bytes of unselected files sit in the slot at their offset inside the piece. The slots
/// depend on the layout only, not on the selection, so a parts file stays valid when a
/// later run selects other files. At most one slot per file, so the file is at most
/// `files × piece length` bytes, and sparse: only the bytes written take disk space.
struct Parts {
    /// One component: the name in the download directory.
    rel: [String; 1],
    /// Pieces with a slot, ascending.
    slots: Vec<u32>,
}

/// Settings of the disk back end beyond the layout ([`Storage::disk_with`]).
#[derive(Clone, Debug, Default)]
pub struct DiskOptions {
    /// Per file (layout order): download it? Empty, or all true: every file, no parts file.
    /// Missing entries count as selected.
    pub selected: Vec<bool>,
    /// Name of the parts file in the download directory (see [`parts_file_name`]); used
    /// only when some file is unselected.
    pub parts_name: String,
    /// Per file: BEP 47 `attr` has `x`. Such files get execute permission wherever they
    /// have read permission when opened for writing. Empty: none.
    pub executable: Vec<bool>,
}

/// Name of the parts file of a torrent: hidden (leading dot) and named by info-hash, so
/// two torrents in one directory never share one.
pub fn parts_file_name(info_hash: &crate::id::InfoHash) -> String {
    format!(".magnetfetch-{}.parts", info_hash.to_hex())
}

/// Where a segment's bytes live on disk.
enum Place {
    /// In file `key` (a file index, or [`PARTS`]) at this offset.
    At(usize, u64),
    /// Nowhere: padding (zeros).
    Pad,
}

#[derive(Clone)]
struct Handle {
    file: Arc<File>,
    writable: bool,
}

struct GenStore {
    seed: u64,
    blocks_per_piece: u64,
    /// Written blocks (global block index).
    written: Mutex<Bitfield>,
    /// Written blocks whose bytes differed from the generated content.
    bad: Mutex<BTreeSet<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent in a way that
    // matters more than stopping; keep going with the inner value.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Storage {
    /// Files under `root` (the download directory).
    pub fn disk(layout: Arc<Layout>, root: impl Into<PathBuf>) -> Self {
        Self::disk_with(layout, root, DiskOptions::default())
    }

    /// Files under `root`, with a file selection (see [`DiskOptions`]).
    pub fn disk_with(layout: Arc<Layout>, root: impl Into<PathBuf>, opts: DiskOptions) -> Self {
        let cap = NonZeroUsize::new(HANDLE_CACHE).unwrap_or(NonZeroUsize::MIN);
        let partial = opts.selected.iter().any(|s| !s);
        let parts = partial.then(|| Parts {
            rel: [opts.parts_name],
            slots: shared_pieces(&layout),
        });
        Storage {
            backend: Backend::Disk(DiskStore {
                root: root.into(),
                selected: if partial { opts.selected } else { Vec::new() },
                parts,
                executable: if opts.executable.contains(&true) {
                    opts.executable
                } else {
                    Vec::new()
                },
                cache: Mutex::new(LruCache::new(cap)),
                dirty: Mutex::new(BTreeSet::new()),
                writeback: writeback::Writeback::default(),
            }),
            layout,
            write_rate: None,
        }
    }

    /// In memory, keeping the bytes written (tests, small simulations).
    pub fn memory(layout: Arc<Layout>) -> Self {
        Storage {
            layout,
            backend: Backend::Sparse(Mutex::new(BTreeMap::new())),
            write_rate: None,
        }
    }

    /// In memory, content = [`generate`]`(seed)`. `complete` = every block present (a
    /// seeder); otherwise blocks read as zeros until written.
    pub fn generated(layout: Arc<Layout>, seed: u64, complete: bool) -> Self {
        let bpp = layout.piece_length().div_ceil(BLOCK_SIZE as u64);
        let nblocks = (layout.piece_count() as u64 * bpp).min(u32::MAX as u64) as u32;
        let written = if complete {
            Bitfield::full(nblocks)
        } else {
            Bitfield::new(nblocks)
        };
        Storage {
            layout,
            backend: Backend::Generated(GenStore {
                seed,
                blocks_per_piece: bpp,
                written: Mutex::new(written),
                bad: Mutex::new(BTreeSet::new()),
            }),
            write_rate: None,
        }
    }

    /// The same storage on a disk that writes `bytes_per_sec` at most (`None`: unlimited).
    /// Writes still happen at once; the writer waits until [`WriteRate::finish_at`] (see
    /// `session::swarm`), holding the piece in memory meanwhile, as with a real slow disk.
    pub fn with_write_rate(mut self, bytes_per_sec: Option<u64>) -> Self {
        self.write_rate = bytes_per_sec.map(|r| Arc::new(WriteRate::new(r)));
        self
    }

    /// The modelled disk's write rate, if any.
    pub fn write_rate(&self) -> Option<&Arc<WriteRate>> {
        self.write_rate.as_ref()
    }

    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    /// The download directory (disk back end only).
    pub fn root(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Disk(d) => Some(&d.root),
            _ => None,
        }
    }

    /// Full path of file `i` (disk back end), re-validated.
    pub fn file_path(&self, i: usize) -> Result<Option<PathBuf>, StorageError> {
        match &self.backend {
            Backend::Disk(d) => Ok(Some(d.path(&self.layout, i)?)),
            _ => Ok(None),
        }
    }

    fn segments(&self, piece: u32, offset: u32, len: u32) -> Result<Vec<Segment>, StorageError> {
        let mut segs = Vec::new();
        if !self.layout.map(piece, offset, len, &mut segs) {
            return Err(StorageError::OutOfRange { piece, offset, len });
        }
        Ok(segs)
    }

    /// Writes one block (any in-bounds range works; padding bytes are skipped).
    pub fn write_block(&self, piece: u32, offset: u32, data: &[u8]) -> Result<(), StorageError> {
        let len = u32::try_from(data.len()).map_err(|_| StorageError::OutOfRange {
            piece,
            offset,
            len: u32::MAX,
        })?;
        let segs = self.segments(piece, offset, len)?;
        if let Backend::Generated(g) = &self.backend {
            return g.write(&self.layout, piece, offset, data);
        }
        let mut pos = 0usize;
        for s in segs {
            let n = s.len as usize;
            let chunk = &data[pos..pos + n];
            let in_piece = offset as u64 + pos as u64;
            pos += n;
            if self.layout.files()[s.file].pad {
                continue;
            }
            match &self.backend {
                Backend::Disk(d) => {
                    if let Place::At(key, off) = d.place(&self.layout, piece, in_piece, &s) {
                        d.write(&self.layout, key, off, chunk)?;
                    }
                }
                Backend::Sparse(m) => {
                    let mut files = lock(m);
                    let flen = self.layout.files()[s.file].length as usize;
                    let buf = files.entry(s.file).or_insert_with(|| vec![0; flen]);
                    let off = s.file_offset as usize;
                    buf[off..off + n].copy_from_slice(chunk);
                }
                Backend::Generated(_) => {}
            }
        }
        Ok(())
    }

    /// Writes a whole piece given as its blocks in order (see
    /// [`super::verify::PieceBlocks`]): one vectored positional write (`pwritev`) per file
    /// the piece touches, so the blocks need not be copied into one buffer first.
    pub fn write_blocks(&self, piece: u32, blocks: &[&[u8]]) -> Result<(), StorageError> {
        let total: usize = blocks.iter().map(|b| b.len()).sum();
        let len = u32::try_from(total).map_err(|_| StorageError::OutOfRange {
            piece,
            offset: 0,
            len: u32::MAX,
        })?;
        let Backend::Disk(d) = &self.backend else {
            // Test backends: no syscalls to save.
            let mut off = 0u32;
            for b in blocks {
                self.write_block(piece, off, b)?;
                off += b.len() as u32;
            }
            return Ok(());
        };
        let segs = self.segments(piece, 0, len)?;
        let mut rest: &[&[u8]] = blocks;
        let mut head: &[u8] = &[];
        let mut in_piece = 0u64;
        for s in segs {
            let seg_start = in_piece;
            in_piece += s.len;
            // Collect exactly `s.len` bytes of parts from the front of the blocks.
            let mut need = s.len as usize;
            let mut parts: Vec<&[u8]> = Vec::with_capacity(rest.len() + 1);
            while need > 0 {
                if head.is_empty() {
                    let Some((first, tail)) = rest.split_first() else {
                        break;
                    };
                    head = first;
                    rest = tail;
                    continue;
                }
                let n = need.min(head.len());
                parts.push(&head[..n]);
                head = &head[n..];
                need -= n;
            }
            if let Place::At(key, off) = d.place(&self.layout, piece, seg_start, &s) {
                d.write_vectored(&self.layout, key, off, &mut parts)?;
            }
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` of `piece` (serving a peer's request, or hashing).
    /// The range is checked against the layout (so at most one piece is allocated);
    /// callers serving peers must also cap `len` (BEP 3 practice: 16 KiB, at most 128 KiB).
    pub fn read_block(&self, piece: u32, offset: u32, len: u32) -> Result<Vec<u8>, StorageError> {
        let mut buf = vec![0u8; len as usize];
        self.read_into(piece, offset, &mut buf)?;
        Ok(buf)
    }

    /// Reads `buf.len()` bytes at `offset` of `piece` into `buf` (no allocation: the upload
    /// path reads straight into its socket buffer). Range checked like [`Storage::read_block`].
    pub fn read_into(&self, piece: u32, offset: u32, buf: &mut [u8]) -> Result<(), StorageError> {
        let len = u32::try_from(buf.len()).map_err(|_| StorageError::OutOfRange {
            piece,
            offset,
            len: u32::MAX,
        })?;
        let segs = self.segments(piece, offset, len)?;
        if let Backend::Generated(g) = &self.backend {
            g.read(&self.layout, piece, offset, buf);
            return Ok(());
        }
        let mut pos = 0usize;
        for s in segs {
            let n = s.len as usize;
            let out = &mut buf[pos..pos + n];
            let in_piece = offset as u64 + pos as u64;
            pos += n;
            if self.layout.files()[s.file].pad {
                out.fill(0);
                continue;
            }
            match &self.backend {
                Backend::Disk(d) => match d.place(&self.layout, piece, in_piece, &s) {
                    Place::At(key, off) => d.read(&self.layout, key, off, out)?,
                    Place::Pad => out.fill(0),
                },
                Backend::Sparse(m) => match lock(m).get(&s.file) {
                    Some(f) => {
                        let off = s.file_offset as usize;
                        out.copy_from_slice(&f[off..off + n]);
                    }
                    None => out.fill(0),
                },
                Backend::Generated(_) => {}
            }
        }
        Ok(())
    }

    /// Reads a whole piece.
    pub fn read_piece(&self, piece: u32) -> Result<Vec<u8>, StorageError> {
        let len = self.layout.piece_len(piece) as u32;
        self.read_block(piece, 0, len)
    }

    /// Makes written data durable (before saving resume state that claims it).
    pub fn flush(&self) -> Result<(), StorageError> {
        if let Backend::Disk(d) = &self.backend {
            let dirty: Vec<usize> = std::mem::take(&mut *lock(&d.dirty)).into_iter().collect();
            for i in dirty {
                let path = d.path(&self.layout, i)?;
                let h = d.open(&self.layout, i, true)?;
                h.sync_data().map_err(|e| StorageError::from_io(&path, e))?;
            }
        }
        Ok(())
    }
}

impl DiskStore {
    /// Where the bytes of segment `s`, `in_piece` bytes into `piece`, live: their file, or
    /// the parts file's slot for the piece when the file is unselected. A piece inside
    /// unselected files only has no slot; the picker never downloads one, and should its
    /// bytes arrive anyway they go to their file as without a selection.
    fn place(&self, layout: &Layout, piece: u32, in_piece: u64, s: &Segment) -> Place {
        if layout.files()[s.file].pad {
            return Place::Pad;
        }
        if self.selected.get(s.file).copied().unwrap_or(true) {
            return Place::At(s.file, s.file_offset);
        }
        match &self.parts {
            Some(p) => match p.slots.binary_search(&piece) {
                Ok(rank) => Place::At(PARTS, rank as u64 * layout.piece_length() + in_piece),
                Err(_) => Place::At(s.file, s.file_offset),
            },
            None => Place::At(s.file, s.file_offset),
        }
    }

    /// Path components below the root and the length to allocate for `key`.
    fn target<'a>(
        &'a self,
        layout: &'a Layout,
        key: usize,
    ) -> Result<(Vec<&'a str>, u64), StorageError> {
        if key == PARTS {
            if let Some(p) = &self.parts {
                check_path(&p.rel)?;
                // Grows as slots are written; reads past its end are zeros.
                return Ok((vec![p.rel[0].as_str()], 0));
            }
        }
        let spec = layout
            .files()
            .get(key)
            .ok_or(StorageError::UnsafePath(PathError::NoComponents))?;
        let rel: Vec<&str> = layout.path(key).collect();
        check_path(&rel)?;
        Ok((rel, spec.length))
    }

    fn path(&self, layout: &Layout, key: usize) -> Result<PathBuf, StorageError> {
        let (rel, _) = self.target(layout, key)?;
        let mut p = self.root.clone();
        for c in rel {
            p.push(c);
        }
        Ok(p)
    }

    fn open(&self, layout: &Layout, i: usize, write: bool) -> Result<Arc<File>, StorageError> {
        let mut cache = lock(&self.cache);
        if let Some(h) = cache.get(&i) {
            if h.writable || !write {
                return Ok(h.file.clone());
            }
        }
        let (rel, want) = self.target(layout, i)?;
        let path = self.path(layout, i)?;
        let file = open_beneath(&self.root, &rel, write)?;
        if write {
            let meta = file
                .metadata()
                .map_err(|e| StorageError::from_io(&path, e))?;
            if self.executable.get(i).copied().unwrap_or(false) {
                // BEP 47 `x`: execute permission wherever there is read permission
                // (0644 -> 0755, 0600 -> 0700), so the umask the file was created with
                // still decides who may run it. Set when the file is first opened for
                // writing (created or resumed); the data is verified piece by piece.
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode();
                let want = mode | ((mode & 0o444) >> 2);
                if want != mode {
                    file.set_permissions(std::fs::Permissions::from_mode(want))
                        .map_err(|e| StorageError::from_io(&path, e))?;
                }
            }
            let have = meta.len();
            if have < want {
                // Sparse allocation; never shrink a longer file we did not create.
                file.set_len(want)
                    .map_err(|e| StorageError::from_io(&path, e))?;
            }
        }
        let file = Arc::new(file);
        cache.put(
            i,
            Handle {
                file: file.clone(),
                writable: write,
            },
        );
        Ok(file)
    }

    fn write(&self, layout: &Layout, i: usize, off: u64, data: &[u8]) -> Result<(), StorageError> {
        let f = self.open(layout, i, true)?;
        f.write_all_at(data, off)
            .map_err(|e| StorageError::from_io(&self.path(layout, i).unwrap_or_default(), e))?;
        lock(&self.dirty).insert(i);
        self.wrote(&f, i, off, data.len() as u64);
        Ok(())
    }

    /// `pwritev` of `parts` at `off`, retried until everything is written.
    fn write_vectored(
        &self,
        layout: &Layout,
        i: usize,
        mut off: u64,
        parts: &mut [&[u8]],
    ) -> Result<(), StorageError> {
        use std::os::fd::AsRawFd;
        let f = self.open(layout, i, true)?;
        let err =
            |e: std::io::Error| StorageError::from_io(&self.path(layout, i).unwrap_or_default(), e);
        let start = off;
        let mut first = 0usize;
        while first < parts.len() {
            if parts[first].is_empty() {
                first += 1;
                continue;
            }
            // IOV_MAX is 1024 on Linux; a piece has far fewer blocks, but stay under it.
            let iov: Vec<libc::iovec> = parts[first..]
                .iter()
                .take(1024)
                .map(|p| libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                })
                .collect();
            let at = libc::off_t::try_from(off)
                .map_err(|_| err(std::io::Error::other("offset too large")))?;
            // SAFETY: every iovec points into a slice borrowed for the whole call (`parts`),
            // with its exact length; pwritev only reads that memory. `f` is an open file.
            let n =
                unsafe { libc::pwritev(f.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, at) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err(e));
            }
            if n == 0 {
                return Err(err(std::io::ErrorKind::WriteZero.into()));
            }
            let mut n = n as usize;
            off += n as u64;
            // Advance past what was written (a short write resumes mid-part).
            while n > 0 && first < parts.len() {
                let p = parts[first];
                if p.len() <= n {
                    n -= p.len();
                    first += 1;
                } else {
                    parts[first] = &p[n..];
                    n = 0;
                }
            }
        }
        lock(&self.dirty).insert(i);
        self.wrote(&f, i, start, off - start);
        Ok(())
    }

    /// Starts writeback behind the write head once enough was written ([`writeback`]).
    fn wrote(&self, f: &File, i: usize, off: u64, len: u64) {
        if let Some((at, n)) = self.writeback.wrote(i, off, len) {
            writeback::start(f, at, n);
        }
    }

    fn read(
        &self,
        layout: &Layout,
        i: usize,
        off: u64,
        out: &mut [u8],
    ) -> Result<(), StorageError> {
        let f = self.open(layout, i, false)?;
        let mut done = 0usize;
        while done < out.len() {
            match f.read_at(&mut out[done..], off + done as u64) {
                // A file shorter than its declared length reads as zeros past its end
                // (the piece then simply fails verification).
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(StorageError::from_io(
                        &self.path(layout, i).unwrap_or_default(),
                        e,
                    ))
                }
            }
        }
        out[done..].fill(0);
        Ok(())
    }
}

/// Pieces that touch two or more files with data (padding aside), ascending: the pieces
/// that can hold bytes of a selected and of an unselected file. At most one per file.
fn shared_pieces(layout: &Layout) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    let mut prev_last: Option<u32> = None;
    for (i, f) in layout.files().iter().enumerate() {
        if f.pad || f.length == 0 {
            continue;
        }
        let r = layout.file_pieces(i);
        if prev_last == Some(r.start) && out.last() != Some(&r.start) {
            out.push(r.start);
        }
        prev_last = r.end.checked_sub(1);
    }
    out
}

/// Opens (`write`: creates, with missing parent directories) the file `rel` below `root`
/// without following a symbolic link anywhere below `root`.
///
/// Why not `create_dir_all` + `open`: both follow links, so a link planted at `root/name`
/// (or at a directory on the way) by an earlier download or another user would make us
/// write through it, outside the download directory. Checking each component with
/// `symlink_metadata` first would leave a window in which the component can be swapped
/// for a link. Instead each directory is opened relative to the previous one's descriptor
/// (`openat` with `O_NOFOLLOW | O_DIRECTORY`, `mkdirat` when missing) and the file itself
/// with `O_NOFOLLOW`, so what we checked is what we use. `root` itself is opened normally
/// (created when writing): it is the directory the user named and may be a link.
/// Anything but a regular file at the end is refused too (a FIFO would block a read
/// forever; it is opened `O_NONBLOCK` and checked before use).
pub fn open_beneath(root: &Path, rel: &[&str], write: bool) -> Result<File, StorageError> {
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::fs::OpenOptionsExt;

    let (name, dirs) = rel
        .split_last()
        .ok_or(StorageError::UnsafePath(PathError::NoComponents))?;
    if write {
        std::fs::create_dir_all(root).map_err(|e| StorageError::from_io(root, e))?;
    }
    let mut dir: std::os::fd::OwnedFd = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(root)
        .map_err(|e| StorageError::from_io(root, e))?
        .into();
    let mut path = root.to_path_buf();
    for c in dirs {
        path.push(c);
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let next = match openat(dir.as_fd(), c, flags, 0) {
            Err(e) if write && e.kind() == io::ErrorKind::NotFound => {
                mkdirat(dir.as_fd(), c)
                    .or_else(|e| {
                        // Created meanwhile by another thread of ours: fine.
                        if e.kind() == io::ErrorKind::AlreadyExists {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|e| StorageError::from_io(&path, e))?;
                openat(dir.as_fd(), c, flags, 0)
            }
            r => r,
        };
        dir = next.map_err(|e| refusal(dir.as_fd(), c, &path, e))?;
    }
    path.push(name);
    let flags = libc::O_NOFOLLOW
        | libc::O_NONBLOCK
        | if write {
            libc::O_RDWR | libc::O_CREAT
        } else {
            libc::O_RDONLY
        };
    let fd = openat(dir.as_fd(), name, flags, 0o666)
        .map_err(|e| refusal(dir.as_fd(), name, &path, e))?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| StorageError::from_io(&path, e))?;
    if !meta.file_type().is_file() {
        return Err(StorageError::NotAFile { path });
    }
    // Regular files ignore O_NONBLOCK, but clear it so the descriptor is plain.
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    unsafe {
        let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

/// The error for a failed `openat` of `name` in `dir`: [`StorageError::Symlink`] when a
/// link is in the way (`O_NOFOLLOW` reports `ELOOP`, or `ENOTDIR` with `O_DIRECTORY`).
fn refusal(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &str,
    path: &Path,
    e: io::Error,
) -> StorageError {
    let maybe_link = matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR));
    if maybe_link && is_symlink_at(dir, name) {
        return StorageError::Symlink {
            path: path.to_path_buf(),
        };
    }
    StorageError::from_io(path, e)
}

fn c_name(name: &str) -> io::Result<std::ffi::CString> {
    // Components were checked (no NUL), so this only fails on a bug elsewhere.
    std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn openat(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &str,
    flags: libc::c_int,
    mode: libc::c_uint,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c = c_name(name)?;
    loop {
        // SAFETY: `c` is a NUL-terminated string alive for the call; `dir` is an open
        // descriptor borrowed for the call. A non-negative result is a new descriptor
        // that nothing else owns.
        let fd =
            unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC, mode) };
        if fd >= 0 {
            return Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn mkdirat(dir: std::os::fd::BorrowedFd<'_>, name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let c = c_name(name)?;
    // SAFETY: as in `openat`.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o777) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn is_symlink_at(dir: std::os::fd::BorrowedFd<'_>, name: &str) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(c) = c_name(name) else { return false };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is written by fstatat before being read (only on success).
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    r == 0 && unsafe { st.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFLNK
}

impl GenStore {
    fn blocks(&self, piece: u32, offset: u32, len: u32) -> std::ops::Range<u64> {
        let base = piece as u64 * self.blocks_per_piece;
        let first = offset as u64 / BLOCK_SIZE as u64;
        let last = (offset as u64 + len as u64).div_ceil(BLOCK_SIZE as u64);
        base + first..base + last
    }

    fn write(
        &self,
        layout: &Layout,
        piece: u32,
        offset: u32,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let mut expect = vec![0u8; data.len()];
        generate(self.seed, layout, piece, offset, &mut expect);
        let good = expect == data;
        let range = self.blocks(piece, offset, data.len() as u32);
        let mut written = lock(&self.written);
        let mut bad = lock(&self.bad);
        for b in range {
            written.set(b as u32);
            if good {
                bad.remove(&b);
            } else {
                bad.insert(b);
            }
        }
        Ok(())
    }

    fn read(&self, layout: &Layout, piece: u32, offset: u32, out: &mut [u8]) {
        generate(self.seed, layout, piece, offset, out);
        let written = lock(&self.written);
        let bad = lock(&self.bad);
        let start = offset as u64;
        for b in self.blocks(piece, offset, out.len() as u32) {
            let bstart = (b - piece as u64 * self.blocks_per_piece) * BLOCK_SIZE as u64;
            let lo = bstart.max(start) - start;
            let hi = ((bstart + BLOCK_SIZE as u64).min(start + out.len() as u64) - start) as usize;
            let chunk = &mut out[lo as usize..hi];
            if !written.get(b as u32) {
                chunk.fill(0);
            } else if bad.contains(&b) {
                // Not the bytes the peer sent, but just as wrong: the hash fails.
                for x in chunk.iter_mut() {
                    *x ^= 0xa5;
                }
            }
        }
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic pseudo-random torrent content for simulations: fills `out` with the bytes
/// at `offset` of `piece` (zeros inside BEP 47 padding files). The same function builds the
/// simulated .torrent's piece hashes and the seeders' data.
pub fn generate(seed: u64, layout: &Layout, piece: u32, offset: u32, out: &mut [u8]) {
    let abs = piece as u64 * layout.piece_length() + offset as u64;
    let key = splitmix64(seed);
    let mut i = 0usize;
    while i < out.len() {
        let pos = abs + i as u64;
        let word = splitmix64(key ^ (pos / 8)).to_le_bytes();
        let from = (pos % 8) as usize;
        let n = (8 - from).min(out.len() - i);
        out[i..i + n].copy_from_slice(&word[from..from + n]);
        i += n;
    }
    if layout.files().iter().any(|f| f.pad) {
        let mut segs = Vec::new();
        if layout.map(piece, offset, out.len() as u32, &mut segs) {
            let mut pos = 0usize;
            for s in segs {
                let n = s.len as usize;
                if layout.files()[s.file].pad {
                    out[pos..pos + n].fill(0);
                }
                pos += n;
            }
        }
    }
}

/// Piece hashes (BEP 3 `pieces`) of the [`generate`]d content, for building the simulated
/// torrent.
pub fn generated_hashes(seed: u64, layout: &Layout) -> Vec<[u8; 20]> {
    let mut buf = Vec::new();
    (0..layout.piece_count())
        .map(|p| {
            buf.resize(layout.piece_len(p) as usize, 0);
            generate(seed, layout, p, 0, &mut buf);
            super::verify::sha1(&buf)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torrent::layout::FileSpec;

    fn layout() -> Arc<Layout> {
        let f = |name: &str, length: u64, pad: bool| FileSpec {
            path: vec!["t".into(), name.into()],
            length,
            pad,
        };
        Arc::new(
            Layout::new(
                2 * BLOCK_SIZE as u64,
                vec![
                    f("a", 20_000, false),
                    f("pad", 12_768, true),
                    f("b", 40_000, false),
                ],
            )
            .unwrap(),
        )
    }

    #[test]
    fn write_blocks_spans_files_skips_padding_and_matches_write_block() {
        // Piece 0 covers file a (20000 B) and padding; piece 1 lies in file b; blocks are
        // split at odd places so parts cross file boundaries.
        let l = layout();
        let src = Storage::generated(l.clone(), 7, true);
        let dir = tempfile::tempdir().unwrap();
        let disk = Storage::disk(l.clone(), dir.path());
        for piece in 0..3u32 {
            let data = src.read_piece(piece).unwrap();
            let cut = data.len().min(5_000);
            let parts: Vec<&[u8]> = vec![&data[..cut], &data[cut..]];
            disk.write_blocks(piece, &parts).unwrap();
            assert_eq!(disk.read_piece(piece).unwrap(), data, "piece {piece}");
        }
        // Padding is never created as a file.
        assert!(!dir.path().join("t").join("pad").exists());
        let a = std::fs::read(dir.path().join("t").join("a")).unwrap();
        assert_eq!(a.len(), 20_000);
        // Too many bytes for the piece: refused, nothing written past it.
        let big = vec![1u8; 2 * BLOCK_SIZE as usize + 1];
        assert!(disk.write_blocks(0, &[&big]).is_err());
    }

    #[test]
    fn generated_store_detects_corrupt_blocks() {
        let l = layout();
        let seeder = Storage::generated(l.clone(), 42, true);
        let leecher = Storage::generated(l.clone(), 42, false);
        let piece0 = seeder.read_piece(0).unwrap();
        let hashes = generated_hashes(42, &l);
        assert_eq!(hashes.len(), 3);
        assert_eq!(hashes[0], crate::torrent::verify::sha1(&piece0));
        // Padding area (bytes 20000..32768) is zeros.
        assert!(piece0[20_000..32_768].iter().all(|&b| b == 0));
        assert!(piece0[..20_000].iter().any(|&b| b != 0));
        assert!(leecher.read_piece(0).unwrap().iter().all(|&b| b == 0));
        let b0 = seeder.read_block(0, 0, BLOCK_SIZE).unwrap();
        let mut bad = seeder.read_block(0, BLOCK_SIZE, BLOCK_SIZE).unwrap();
        bad[7] ^= 1;
        leecher.write_block(0, 0, &b0).unwrap();
        leecher.write_block(0, BLOCK_SIZE, &bad).unwrap();
        assert_ne!(leecher.read_piece(0).unwrap(), piece0);
        let good = seeder.read_block(0, BLOCK_SIZE, BLOCK_SIZE).unwrap();
        leecher.write_block(0, BLOCK_SIZE, &good).unwrap();
        assert_eq!(leecher.read_piece(0).unwrap(), piece0);
    }

    #[test]
    fn sparse_memory_round_trip() {
        let l = layout();
        let s = Storage::memory(l.clone());
        let data: Vec<u8> = (0..l.piece_len(1)).map(|i| (i % 251) as u8).collect();
        s.write_block(1, 0, &data).unwrap();
        assert_eq!(s.read_piece(1).unwrap(), data);
        assert!(matches!(
            s.write_block(2, 0, &vec![0; 10_000]),
            Err(StorageError::OutOfRange { .. })
        ));
    }

    #[test]
    fn io_errors_are_typed_with_the_path() {
        let p = Path::new("/x/y");
        let full = StorageError::from_io(p, io::Error::from_raw_os_error(28));
        assert!(matches!(full, StorageError::DiskFull { .. }));
        assert_eq!(full.to_string(), "disk full while writing /x/y");
        let denied = StorageError::from_io(p, io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(denied.to_string(), "permission denied for /x/y");
        assert!(StorageError::from_io(p, io::Error::from(io::ErrorKind::NotFound)).is_missing());
    }

    #[test]
    fn unwritable_download_dir_gives_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        // The "download directory" is a regular file: nothing can be created below it.
        let root = dir.path().join("not-a-dir");
        std::fs::write(&root, b"x").unwrap();
        let s = Storage::disk(layout(), &root);
        let err = s.write_block(0, 0, &[1u8; 100]).unwrap_err();
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
