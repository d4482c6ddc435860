//! How a torrent's pieces map onto its files (BEP 3 "info dictionary" layout).
//!
//! BEP 3 concatenates all files of a torrent, in order, into one byte stream which is cut
//! into pieces of `piece length` bytes (the last one shorter). A piece or a block may
//! therefore span several files; this module turns `(piece, offset, len)` into the list of
//! file segments it covers. Peers exchange 16 KiB blocks (the de-facto request size, BEP 3
//! "request" message), the last block of the last piece being short.
//!
//! BEP 47 padding files (`attr` containing `p`) are part of the stream but never written:
//! their bytes are zeros by definition. Zero-length files occupy no bytes and never appear in
//! a segment list.
//!
//! File path components come from the untrusted info dictionary, so [`Layout::new`] checks
//! every one of them (no `..`, no separators, no empty or absolute components) and rejects
//! layouts where two files would land on the same path.
//!
//! Memory: a torrent's file table is untrusted and can list a million files, so the layout
//! keeps per file 16 bytes plus its path components (4 bytes each plus their text) in one
//! string arena, and a common first component (the torrent's name) once; see
//! docs/architecture.md ("Memory per file").

use std::ops::Range;

/// Size of a request block (BEP 3 practice: every client requests 16 KiB).
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// Largest piece length we accept (bounds per-piece buffers; real torrents use ≤ 16 MiB).
pub const MAX_PIECE_LENGTH: u64 = 64 * 1024 * 1024;

/// Largest number of files we accept in a layout (bounds per-file tables): the same limit
/// as for parsing a torrent.
pub use crate::metainfo::MAX_FILES;

/// Largest number of path components for one file.
pub const MAX_PATH_DEPTH: usize = 64;

/// One file of the torrent, in info-dictionary order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// Path components below the download directory (for a multi-file torrent, the
    /// torrent name is the first component).
    pub path: Vec<String>,
    pub length: u64,
    /// BEP 47 padding file: zeros, never written to disk.
    pub pad: bool,
}

/// What a [`Layout`] keeps of one file (16 bytes; the path is in the layout's arena, see
/// [`Layout::path`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutFile {
    pub length: u64,
    /// BEP 47 padding file: zeros, never written to disk.
    pub pad: bool,
    /// Index of the file's first own component in the layout's component table.
    first: u32,
}

/// A contiguous run of bytes inside one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index into [`Layout::files`].
    pub file: usize,
    /// Byte offset inside that file.
    pub file_offset: u64,
    pub len: u64,
}

/// Why a layout (or a path component) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("piece length {0} is not in 1..={MAX_PIECE_LENGTH}")]
    BadPieceLength(u64),
    #[error("torrent has no files")]
    NoFiles,
    #[error("torrent has {0} files, more than the limit of {MAX_FILES}")]
    TooManyFiles(usize),
    #[error("total length is zero")]
    Empty,
    #[error("total length overflows")]
    Overflow,
    #[error("torrent has more than 2^32-1 pieces")]
    TooManyPieces,
    #[error("file {index}: bad path: {reason}")]
    BadPath { index: usize, reason: PathError },
    #[error("file {index}: path collides with another file")]
    DuplicatePath { index: usize },
}

/// Why a single path component is unsafe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("no path components")]
    NoComponents,
    #[error("more than {MAX_PATH_DEPTH} components")]
    TooDeep,
    #[error("empty component")]
    EmptyComponent,
    #[error("component {0:?} is a relative reference")]
    DotComponent(String),
    #[error("component {0:?} contains a path separator or NUL")]
    Separator(String),
    #[error("component {0:?} looks like a drive or absolute path")]
    Absolute(String),
}

/// Checks one path component from untrusted input. Storage re-checks with this before
/// touching the disk, so a bug elsewhere cannot escape the download directory.
pub fn check_component(c: &str) -> Result<(), PathError> {
    if c.is_empty() {
        return Err(PathError::EmptyComponent);
    }
    if c == "." || c == ".." {
        return Err(PathError::DotComponent(c.to_string()));
    }
    if c.contains(['/', '\\', '\0']) {
        return Err(PathError::Separator(c.to_string()));
    }
    // "C:" style prefixes would make `Path::join` replace the base on Windows.
    let b = c.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        return Err(PathError::Absolute(c.to_string()));
    }
    Ok(())
}

/// Checks a whole file path (all components).
pub fn check_path<S: AsRef<str>>(path: &[S]) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::NoComponents);
    }
    if path.len() > MAX_PATH_DEPTH {
        return Err(PathError::TooDeep);
    }
    path.iter().try_for_each(|c| check_component(c.as_ref()))
}

/// The piece ↔ file geometry of one torrent. Immutable once built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    piece_length: u64,
    total_length: u64,
    piece_count: u32,
    files: Vec<LayoutFile>,
    /// Start offset of each file in the concatenated stream.
    starts: Vec<u64>,
    /// A first component shared by every file (a multi-file torrent's name), stored once.
    prefix: Option<String>,
    /// Every file's own components, concatenated.
    arena: String,
    /// End offset in `arena` of each component; file `i` owns components
    /// `files[i].first..files[i + 1].first`.
    comp_ends: Vec<u32>,
}

/// Builds a [`Layout`] one file at a time without an owned path per file (see
/// [`Layout::builder`]).
pub struct LayoutBuilder {
    layout: Layout,
    error: Option<LayoutError>,
}

impl LayoutBuilder {
    /// Adds a file: its components below the prefix, length, BEP 47 padding flag.
    pub fn push<'a>(
        &mut self,
        path: impl IntoIterator<Item = &'a str>,
        length: u64,
        pad: bool,
    ) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        let l = &mut self.layout;
        let index = l.files.len();
        if index >= MAX_FILES {
            self.error = Some(LayoutError::TooManyFiles(index + 1));
            return self;
        }
        let first = l.comp_ends.len();
        let mut depth = usize::from(l.prefix.is_some());
        let bad = |reason| LayoutError::BadPath { index, reason };
        for c in path {
            depth += 1;
            if let Err(reason) = check_component(c) {
                self.error = Some(bad(reason));
                return self;
            }
            if depth > MAX_PATH_DEPTH {
                self.error = Some(bad(PathError::TooDeep));
                return self;
            }
            l.arena.push_str(c);
            match u32::try_from(l.arena.len()) {
                Ok(end) => l.comp_ends.push(end),
                Err(_) => {
                    self.error = Some(LayoutError::Overflow);
                    return self;
                }
            }
        }
        // At least one own component: the prefix alone is a directory, not a file.
        if l.comp_ends.len() == first {
            self.error = Some(bad(PathError::NoComponents));
            return self;
        }
        // comp_ends.len() ≤ arena bytes ≤ u32::MAX, checked just above.
        l.files.push(LayoutFile {
            length,
            pad,
            first: first as u32,
        });
        self
    }

    /// Validates and finishes the layout.
    pub fn build(mut self) -> Result<Layout, LayoutError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let l = &mut self.layout;
        if l.files.is_empty() {
            return Err(LayoutError::NoFiles);
        }
        l.files.shrink_to_fit();
        l.arena.shrink_to_fit();
        l.comp_ends.shrink_to_fit();
        let mut starts = Vec::with_capacity(l.files.len());
        let mut total: u64 = 0;
        for f in &l.files {
            starts.push(total);
            total = total.checked_add(f.length).ok_or(LayoutError::Overflow)?;
        }
        l.starts = starts;
        l.check_collisions()?;
        if total == 0 {
            return Err(LayoutError::Empty);
        }
        let count = total.div_ceil(l.piece_length);
        l.piece_count = u32::try_from(count).map_err(|_| LayoutError::TooManyPieces)?;
        l.total_length = total;
        Ok(self.layout)
    }
}

impl Layout {
    /// Builds and validates a layout.
    pub fn new(piece_length: u64, files: Vec<FileSpec>) -> Result<Self, LayoutError> {
        if files.len() > MAX_FILES {
            return Err(LayoutError::TooManyFiles(files.len()));
        }
        let mut b = Self::builder(piece_length, None)?;
        for f in &files {
            b.push(f.path.iter().map(String::as_str), f.length, f.pad);
        }
        b.build()
    }

    /// A builder for a layout whose every path starts with `prefix` (a multi-file
    /// torrent's name), which is then stored once rather than once per file.
    pub fn builder(piece_length: u64, prefix: Option<&str>) -> Result<LayoutBuilder, LayoutError> {
        if piece_length == 0 || piece_length > MAX_PIECE_LENGTH {
            return Err(LayoutError::BadPieceLength(piece_length));
        }
        if let Some(p) = prefix {
            check_component(p).map_err(|reason| LayoutError::BadPath { index: 0, reason })?;
        }
        Ok(LayoutBuilder {
            layout: Layout {
                piece_length,
                total_length: 0,
                piece_count: 0,
                files: Vec::new(),
                starts: Vec::new(),
                prefix: prefix.map(str::to_string),
                arena: String::new(),
                comp_ends: Vec::new(),
            },
            error: None,
        })
    }

    /// A single-file layout (convenience for tests and simulations).
    pub fn single(name: &str, length: u64, piece_length: u64) -> Result<Self, LayoutError> {
        let mut b = Self::builder(piece_length, None)?;
        b.push([name], length, false);
        b.build()
    }

    /// Path components of file `i` below the download directory (the prefix first), or
    /// nothing when out of range.
    pub fn path(&self, i: usize) -> impl Iterator<Item = &str> + Clone + '_ {
        let own = match self.files.get(i) {
            Some(f) => {
                let end = self
                    .files
                    .get(i + 1)
                    .map_or(self.comp_ends.len(), |n| n.first as usize);
                f.first as usize..end
            }
            None => 0..0,
        };
        let prefix = self.prefix.as_deref().filter(|_| !own.is_empty());
        prefix.into_iter().chain(own.map(move |k| {
            let from = k.checked_sub(1).map_or(0, |j| self.comp_ends[j] as usize);
            &self.arena[from..self.comp_ends[k] as usize]
        }))
    }

    /// Real (non-padding) files must not collide, and a file must not also be a directory
    /// of another file ("a" and "a/b"). Sorting file indexes by path puts a path right
    /// before every path it is a prefix of (anything between them would share the
    /// prefix), so checking neighbours is enough: 4 bytes per file, no set of paths.
    fn check_collisions(&self) -> Result<(), LayoutError> {
        let mut order: Vec<u32> = (0..self.files.len() as u32)
            .filter(|&i| !self.files[i as usize].pad)
            .collect();
        order.sort_unstable_by(|&a, &b| {
            self.path(a as usize)
                .cmp(self.path(b as usize))
                .then(a.cmp(&b))
        });
        for w in order.windows(2) {
            let (a, b) = (w[0] as usize, w[1] as usize);
            let mut pa = self.path(a);
            let mut pb = self.path(b);
            let prefix = loop {
                match (pa.next(), pb.next()) {
                    (None, _) => break true,
                    (Some(x), Some(y)) if x == y => {}
                    _ => break false,
                }
            };
            if prefix {
                return Err(LayoutError::DuplicatePath { index: a.max(b) });
            }
        }
        Ok(())
    }

    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }
    pub fn total_length(&self) -> u64 {
        self.total_length
    }
    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }
    pub fn files(&self) -> &[LayoutFile] {
        &self.files
    }
    /// Start offset of file `i` in the concatenated stream.
    pub fn file_start(&self, i: usize) -> Option<u64> {
        self.starts.get(i).copied()
    }

    /// Length of piece `i` (0 when out of range).
    pub fn piece_len(&self, i: u32) -> u64 {
        if i >= self.piece_count {
            return 0;
        }
        let start = i as u64 * self.piece_length;
        (self.total_length - start).min(self.piece_length)
    }

    /// Number of 16 KiB blocks in piece `i`.
    pub fn block_count(&self, i: u32) -> u32 {
        // piece_len ≤ MAX_PIECE_LENGTH so this fits in u32.
        self.piece_len(i).div_ceil(BLOCK_SIZE as u64) as u32
    }

    /// Length of block `b` of piece `i` (0 when out of range).
    pub fn block_len(&self, i: u32, b: u32) -> u32 {
        let plen = self.piece_len(i);
        let off = b as u64 * BLOCK_SIZE as u64;
        if off >= plen {
            return 0;
        }
        (plen - off).min(BLOCK_SIZE as u64) as u32
    }

    /// Total number of blocks in the torrent.
    pub fn total_blocks(&self) -> u64 {
        if self.piece_count == 0 {
            return 0;
        }
        let full = (self.piece_count - 1) as u64 * self.block_count(0) as u64;
        full + self.block_count(self.piece_count - 1) as u64
    }

    /// Is `(piece, offset, len)` a valid byte range of the torrent? Checked for every
    /// request and every block received from a peer.
    pub fn check_range(&self, piece: u32, offset: u32, len: u32) -> bool {
        let plen = self.piece_len(piece);
        len > 0 && (offset as u64) + (len as u64) <= plen
    }

    /// Appends to `out` the file segments covering `len` bytes at `offset` inside
    /// `piece`. Zero-length files never appear. Returns false (and appends nothing) when
    /// the range is out of bounds.
    pub fn map(&self, piece: u32, offset: u32, len: u32, out: &mut Vec<Segment>) -> bool {
        if !self.check_range(piece, offset, len) {
            return false;
        }
        let abs = piece as u64 * self.piece_length + offset as u64;
        self.map_abs(abs, len as u64, out);
        true
    }

    /// Maps an absolute byte range of the stream (caller guarantees it is in bounds).
    fn map_abs(&self, mut abs: u64, mut len: u64, out: &mut Vec<Segment>) {
        // Last file whose start ≤ abs; skipping zero-length files below.
        let mut fi = self.starts.partition_point(|&s| s <= abs).saturating_sub(1);
        while len > 0 && fi < self.files.len() {
            let start = self.starts[fi];
            let flen = self.files[fi].length;
            let end = start + flen;
            if abs < end {
                let n = (end - abs).min(len);
                out.push(Segment {
                    file: fi,
                    file_offset: abs - start,
                    len: n,
                });
                abs += n;
                len -= n;
            }
            fi += 1;
        }
    }

    /// Byte range of piece `i` in the concatenated stream.
    pub fn piece_range(&self, i: u32) -> Range<u64> {
        let start = i as u64 * self.piece_length;
        start..start + self.piece_len(i)
    }

    /// Indexes of the files (with bytes) that piece `i` touches, in order.
    pub fn piece_files(&self, i: u32) -> Vec<usize> {
        let mut segs = Vec::new();
        let len = self.piece_len(i);
        if len > 0 {
            self.map_abs(i as u64 * self.piece_length, len, &mut segs);
        }
        segs.into_iter().map(|s| s.file).collect()
    }

    /// Range of pieces that touch file `f` (empty for zero-length files).
    pub fn file_pieces(&self, f: usize) -> Range<u32> {
        let (Some(&start), Some(spec)) = (self.starts.get(f), self.files.get(f)) else {
            return 0..0;
        };
        if spec.length == 0 {
            return 0..0;
        }
        let first = (start / self.piece_length) as u32;
        let last = ((start + spec.length - 1) / self.piece_length) as u32;
        first..last + 1
    }

    /// Bytes of the files selected by `file_prio` (priority > 0; missing entries count as
    /// selected), padding excluded: what a download with that selection fetches for the
    /// user, boundary pieces' bytes of other files aside.
    pub fn selected_length(&self, file_prio: &[u8]) -> u64 {
        self.files
            .iter()
            .enumerate()
            .filter(|(i, f)| !f.pad && file_prio.get(*i).copied().unwrap_or(1) > 0)
            .map(|(_, f)| f.length)
            .sum()
    }

    /// Per-piece priority from per-file priorities (0 = skip): a piece gets the highest
    /// priority of the real files it touches. Padding files never make a piece wanted.
    /// Missing entries in `file_prio` count as 1 (normal).
    pub fn piece_priorities(&self, file_prio: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; self.piece_count as usize];
        for (f, spec) in self.files.iter().enumerate() {
            if spec.pad {
                continue;
            }
            let p = file_prio.get(f).copied().unwrap_or(1);
            for piece in self.file_pieces(f) {
                let slot = &mut out[piece as usize];
                *slot = (*slot).max(p);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, length: u64) -> FileSpec {
        FileSpec {
            path: vec!["t".into(), name.into()],
            length,
            pad: false,
        }
    }

    #[test]
    fn single_file_geometry() {
        let l = Layout::single("a", 100_000, 32768).unwrap();
        assert_eq!(l.piece_count(), 4);
        assert_eq!(l.piece_len(3), 100_000 - 3 * 32768);
        assert_eq!(l.piece_len(4), 0);
        assert_eq!(l.block_count(0), 2);
        assert_eq!(l.block_count(3), 1);
        assert_eq!(l.block_len(3, 0), (100_000 - 3 * 32768) as u32);
        assert_eq!(l.block_len(3, 1), 0);
        assert_eq!(l.total_blocks(), 7);
    }

    #[test]
    fn spanning_pieces_and_empty_files() {
        let l = Layout::new(10, vec![f("a", 7), f("empty", 0), f("b", 8), f("c", 5)]).unwrap();
        assert_eq!(l.piece_count(), 2);
        let mut out = Vec::new();
        assert!(l.map(0, 0, 10, &mut out));
        assert_eq!(
            out,
            vec![
                Segment {
                    file: 0,
                    file_offset: 0,
                    len: 7
                },
                Segment {
                    file: 2,
                    file_offset: 0,
                    len: 3
                },
            ]
        );
        out.clear();
        assert!(l.map(1, 0, 10, &mut out));
        assert_eq!(
            out,
            vec![
                Segment {
                    file: 2,
                    file_offset: 3,
                    len: 5
                },
                Segment {
                    file: 3,
                    file_offset: 0,
                    len: 5
                },
            ]
        );
        out.clear();
        assert!(!l.map(1, 5, 6, &mut out));
        assert!(!l.map(2, 0, 1, &mut out));
        assert!(out.is_empty());
        assert_eq!(l.file_pieces(0), 0..1);
        assert_eq!(l.file_pieces(1), 0..0);
        assert_eq!(l.file_pieces(2), 0..2);
        assert_eq!(l.file_pieces(3), 1..2);
        assert_eq!(l.piece_files(0), vec![0, 2]);
        assert_eq!(l.piece_priorities(&[0, 0, 0, 1]), vec![0, 1]);
        assert_eq!(l.piece_priorities(&[2, 0, 0, 1]), vec![2, 1]);
    }

    #[test]
    fn padding_files_never_make_pieces_wanted() {
        let mut pad = f("pad", 3);
        pad.path = vec![".pad".into(), "3".into()];
        pad.pad = true;
        let l = Layout::new(10, vec![f("a", 7), pad, f("b", 10)]).unwrap();
        assert_eq!(l.piece_priorities(&[1, 1, 0]), vec![1, 0]);
        assert_eq!(l.selected_length(&[1, 1, 0]), 7);
        assert_eq!(l.selected_length(&[]), 17);
    }

    #[test]
    fn builder_keeps_the_prefix_once_and_checks_paths() {
        let mut b = Layout::builder(16, Some("album")).unwrap();
        b.push(["a"], 5, false).push(["sub", "b"], 7, false);
        let l = b.build().unwrap();
        assert_eq!(l.path(0).collect::<Vec<_>>(), vec!["album", "a"]);
        assert_eq!(l.path(1).collect::<Vec<_>>(), vec!["album", "sub", "b"]);
        assert_eq!(l.path(2).count(), 0);
        assert_eq!(l.arena, "asubb");
        // "sub" is a directory of another file: refused, whatever the order.
        let mut b = Layout::builder(16, Some("album")).unwrap();
        b.push(["sub", "b"], 7, false)
            .push(["x"], 1, false)
            .push(["sub"], 1, false);
        assert_eq!(b.build(), Err(LayoutError::DuplicatePath { index: 2 }));
        // The prefix alone is not a file; bad prefixes and components are refused.
        let mut b = Layout::builder(16, Some("album")).unwrap();
        b.push([], 1, false);
        assert!(matches!(
            b.build(),
            Err(LayoutError::BadPath {
                index: 0,
                reason: PathError::NoComponents
            })
        ));
        assert!(Layout::builder(16, Some("..")).is_err());
        let mut b = Layout::builder(16, None).unwrap();
        b.push(["ok"], 1, false).push(["a/b"], 1, false);
        assert!(matches!(
            b.build(),
            Err(LayoutError::BadPath { index: 1, .. })
        ));
    }

    #[test]
    fn rejects_bad_layouts() {
        assert!(matches!(
            Layout::new(0, vec![f("a", 1)]),
            Err(LayoutError::BadPieceLength(0))
        ));
        assert_eq!(Layout::new(16, vec![]), Err(LayoutError::NoFiles));
        assert_eq!(Layout::new(16, vec![f("a", 0)]), Err(LayoutError::Empty));
        assert_eq!(
            Layout::new(16, vec![f("a", u64::MAX), f("b", 2)]),
            Err(LayoutError::Overflow)
        );
        assert_eq!(
            Layout::new(1, vec![f("a", 1 << 33)]),
            Err(LayoutError::TooManyPieces)
        );
        assert_eq!(
            Layout::new(16, vec![f("a", 1), f("a", 2)]),
            Err(LayoutError::DuplicatePath { index: 1 })
        );
        let mut nested = f("a", 1);
        nested.path.push("b".into());
        assert_eq!(
            Layout::new(16, vec![f("a", 1), nested]),
            Err(LayoutError::DuplicatePath { index: 1 })
        );
        for bad in ["..", ".", "", "a/b", "a\\b", "C:", "x\0"] {
            let mut spec = f("ok", 1);
            spec.path[1] = bad.to_string();
            assert!(
                matches!(
                    Layout::new(16, vec![spec]),
                    Err(LayoutError::BadPath { index: 0, .. })
                ),
                "{bad:?} accepted"
            );
        }
    }
}
