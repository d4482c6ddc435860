//! The `.torrent` model (BEP 3) with its common extensions, and torrent creation.
//!
//! - BEP 3: `info` (`name`, `piece length`, `pieces`, `length` or `files`), `announce`;
//!   the v1 info-hash is the SHA-1 of the info dict's *original* bytes, found with
//!   [`crate::bencode::dict_entries`] (never of a re-encoding).
//! - BEP 12: `announce-list` tiers. BEP 19: `url-list` web seeds (string or list).
//! - BEP 27: `private` flag. BEP 47: file `attr` (`p` padding, `x` executable, `h` hidden,
//!   `l` symlink).
//! - BEP 52 (v2): recognised only. Hybrid torrents (v1 `pieces` plus v2 `file tree`) are used
//!   as v1; v2-only torrents are rejected with a clear error.
//! - BEP 9: [`Info::from_bytes`] / [`Metainfo::from_info_bytes`] validate an info dict
//!   received from peers exactly like one read from a file.
//!
//! Everything here is hostile-input safe: every path component is checked (no absolute path,
//! `..`, `.`, empty component, NUL, `/` or `\`), so a torrent can never name a file outside its
//! directory; the piece count must match the total length; sizes are bounded by the limits
//! below before anything is allocated.

mod create;

pub use create::{create, create_with_progress, CreateOptions};

use sha1::{Digest, Sha1};
use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::bencode::{self, BencodeError, Value};
use crate::id::InfoHash;

/// Largest piece length accepted (256 MiB): a piece is held in memory while it is verified.
pub const MAX_PIECE_LENGTH: u64 = 256 << 20;
/// Largest raw info dict accepted (a peer announces `metadata_size`; this bounds it too).
pub const MAX_INFO_SIZE: usize = 64 << 20;
/// Largest number of files in one torrent; the layout (`torrent::layout::MAX_FILES`) uses
/// the same limit. Memory per file is bounded too: see docs/architecture.md.
pub const MAX_FILES: usize = 1 << 20;
/// Deepest path (components per file).
pub const MAX_PATH_DEPTH: usize = 256;
/// Largest total size (2^50 bytes = 1 PiB): keeps offset arithmetic far from overflow.
pub const MAX_TOTAL_LENGTH: u64 = 1 << 50;

/// Why a torrent (or an info dict) was rejected. Messages name the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    #[error("not a valid torrent: {0}")]
    Bencode(#[from] BencodeError),
    #[error("not a valid torrent: top level is not a dictionary")]
    NotADict,
    #[error("not a valid torrent: missing 'info' dictionary")]
    NoInfo,
    #[error("v2-only torrents are not yet supported")]
    V2Only,
    #[error("not a valid torrent: missing or invalid '{0}'")]
    Field(&'static str),
    #[error("invalid file path in torrent: {0}")]
    BadPath(String),
    #[error("not a valid torrent: piece length {0} is out of range (1..={MAX_PIECE_LENGTH})")]
    BadPieceLength(u64),
    #[error("not a valid torrent: 'pieces' length {0} is not a multiple of 20")]
    BadPiecesLength(usize),
    #[error("not a valid torrent: {got} piece hashes but {expected} pieces of data")]
    PieceCountMismatch { expected: u64, got: usize },
    #[error("not a valid torrent: torrent has no data (total length 0)")]
    Empty,
    #[error("not a valid torrent: too large ({0})")]
    TooLarge(&'static str),
}

/// One file of the torrent, in order. `offset` is where it starts in the concatenated data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components below the torrent's directory; for a single-file torrent, `[name]`.
    pub path: Vec<String>,
    pub length: u64,
    /// Byte offset of the file's first byte in the torrent's data stream.
    pub offset: u64,
    /// BEP 47 padding file: never written to disk, its bytes are zeros.
    pub pad: bool,
    pub executable: bool,
    pub hidden: bool,
    /// BEP 47 `l`: a symlink (its target is not followed or created by us).
    pub symlink: bool,
}

impl FileEntry {
    /// The path as a `/`-joined string.
    pub fn path_string(&self) -> String {
        self.path.join("/")
    }
}

/// A contiguous byte range inside one file (see [`Info::slices`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSlice {
    /// Index into [`Info::files`].
    pub file_index: usize,
    /// Offset inside that file.
    pub offset: u64,
    pub len: u64,
}

/// The info dictionary (v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    pub piece_length: u64,
    pub pieces: Vec<[u8; 20]>,
    pub files: Vec<FileEntry>,
    /// True when the dict had `files` (data lives in a directory called `name`).
    pub multi_file: bool,
    pub private: bool,
    /// `meta version` 2 plus `file tree` were present (BEP 52 hybrid); v1 view used.
    pub hybrid: bool,
}

impl Info {
    /// Sum of all file lengths (padding included). O(1): the last file's end offset, since
    /// offsets are cumulative (callers such as piece pickers call this per piece).
    pub fn total_length(&self) -> u64 {
        self.files.last().map_or(0, |f| f.offset + f.length)
    }

    pub fn piece_count(&self) -> usize {
        self.pieces.len()
    }

    /// Length of piece `index` (the last one may be short); 0 if out of range.
    pub fn piece_len(&self, index: usize) -> u64 {
        let count = self.pieces.len();
        if index >= count {
            return 0;
        }
        if index + 1 < count {
            self.piece_length
        } else {
            // Saturating: `Info` fields are public, so a hand-built value may be inconsistent;
            // that must give a wrong length, not a panic.
            self.total_length()
                .saturating_sub(self.piece_length.saturating_mul(count as u64 - 1))
        }
    }

    /// The parts of files that hold the torrent bytes `start..start + len`, in order.
    /// Zero-length files never appear; padding files do (check [`FileEntry::pad`]: they are
    /// not stored, their bytes are zeros). Bytes past the end of the data are ignored.
    pub fn slices(&self, start: u64, len: u64) -> Vec<FileSlice> {
        let end = start.saturating_add(len).min(self.total_length());
        let mut out = Vec::new();
        // First file ending after `start` (offsets are sorted, so binary search).
        let first = self.files.partition_point(|f| f.offset + f.length <= start);
        let mut pos = start;
        for (i, f) in self.files.iter().enumerate().skip(first) {
            if pos >= end {
                break;
            }
            let f_end = f.offset + f.length;
            if f.length == 0 || f_end <= pos {
                continue;
            }
            let take = f_end.min(end) - pos;
            out.push(FileSlice {
                file_index: i,
                offset: pos - f.offset,
                len: take,
            });
            pos += take;
        }
        out
    }

    /// [`Info::slices`] for piece `index` (empty if out of range).
    pub fn piece_slices(&self, index: usize) -> Vec<FileSlice> {
        let start = (index as u64).saturating_mul(self.piece_length);
        self.slices(start, self.piece_len(index))
    }

    /// Where a file goes relative to the download directory: `name` for a single file,
    /// `name/a/b` for a multi-file torrent. Components are validated, so this never escapes.
    pub fn relative_path(&self, file: &FileEntry) -> PathBuf {
        let mut p = PathBuf::new();
        if self.multi_file {
            p.push(&self.name);
        }
        for c in &file.path {
            p.push(c);
        }
        p
    }

    /// Parses and validates a raw info dict (as found in a .torrent, or received via BEP 9).
    ///
    /// Memory: the small fields are decoded as [`Value`]s, but the `files` list is walked one
    /// file dict at a time and BEP 52's `file tree` is only noted, never built as a tree, so
    /// parsing costs the resulting [`Info`] plus one file's dict, not a `Value` per file
    /// (see docs/architecture.md, "Memory per file").
    pub fn from_bytes(raw_info: &[u8]) -> Result<Info, MetainfoError> {
        if raw_info.len() > MAX_INFO_SIZE {
            return Err(MetainfoError::TooLarge("info dictionary"));
        }
        let entries = match bencode::dict_entries(raw_info) {
            Err(BencodeError::NotADict) => return Err(MetainfoError::Field("info")),
            r => r?,
        };
        let mut d: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        let mut files_raw: Option<&[u8]> = None;
        let mut file_tree = false;
        for (k, span) in entries {
            // First occurrence wins, as in `bencode::Value` decoding.
            match k {
                b"files" => {
                    files_raw.get_or_insert(&raw_info[span]);
                }
                b"file tree" => file_tree = true,
                _ if d.contains_key(k) => {}
                _ => {
                    d.insert(k.to_vec(), Value::decode(&raw_info[span])?);
                }
            }
        }
        Info::from_parts(&d, files_raw, file_tree)
    }

    fn from_parts(
        d: &BTreeMap<Vec<u8>, Value>,
        files_raw: Option<&[u8]>,
        file_tree: bool,
    ) -> Result<Info, MetainfoError> {
        let get = |k: &str| d.get(k.as_bytes());

        let has_v1 = get("pieces").is_some();
        let is_v2 = get("meta version").and_then(Value::as_int) == Some(2) || file_tree;
        if is_v2 && !has_v1 {
            return Err(MetainfoError::V2Only);
        }

        // `name.utf-8` is a widespread (non-BEP) field that some clients write when `name`
        // is in a legacy encoding; prefer it. Non-UTF-8 bytes are replaced, not trusted.
        let name_bytes = get("name.utf-8")
            .or_else(|| get("name"))
            .and_then(Value::as_bytes)
            .ok_or(MetainfoError::Field("name"))?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        check_component(&name)
            .map_err(|why| MetainfoError::BadPath(format!("name {name:?}: {why}")))?;

        let piece_length = get("piece length")
            .and_then(Value::as_int)
            .ok_or(MetainfoError::Field("piece length"))?;
        if piece_length <= 0 || piece_length as u64 > MAX_PIECE_LENGTH {
            return Err(MetainfoError::BadPieceLength(piece_length.max(0) as u64));
        }
        let piece_length = piece_length as u64;

        let pieces_raw = get("pieces")
            .and_then(Value::as_bytes)
            .ok_or(MetainfoError::Field("pieces"))?;
        if pieces_raw.len() % 20 != 0 {
            return Err(MetainfoError::BadPiecesLength(pieces_raw.len()));
        }
        let pieces: Vec<[u8; 20]> = pieces_raw
            .chunks_exact(20)
            .map(|c| {
                let mut h = [0u8; 20];
                h.copy_from_slice(c);
                h
            })
            .collect();

        let private = get("private").and_then(Value::as_int) == Some(1);

        let mut files = Vec::new();
        let multi_file;
        match (get("length"), files_raw) {
            (Some(len), None) => {
                multi_file = false;
                let length = nonneg(len).ok_or(MetainfoError::Field("length"))?;
                files.push(FileEntry {
                    path: vec![name.clone()],
                    length,
                    offset: 0,
                    pad: false,
                    executable: false,
                    hidden: false,
                    symlink: false,
                });
                apply_attr(files.last_mut(), get("attr"));
            }
            (None, Some(raw)) => {
                multi_file = true;
                let items = || -> Result<_, MetainfoError> {
                    bencode::list_items(raw)?.ok_or(MetainfoError::Field("files"))
                };
                // Counted first so the table is allocated once, at its exact size.
                let count = items()?.count();
                if count == 0 {
                    return Err(MetainfoError::Field("files"));
                }
                if count > MAX_FILES {
                    return Err(MetainfoError::TooLarge("number of files"));
                }
                files.reserve_exact(count);
                let mut offset: u64 = 0;
                for (i, span) in items()?.enumerate() {
                    // One file's dict at a time: a few small allocations, dropped at once.
                    let f = &Value::decode(&raw[span])?;
                    let length = f
                        .get("length")
                        .and_then(nonneg)
                        .ok_or(MetainfoError::Field("files.length"))?;
                    let path = parse_path(f, i)?;
                    let mut entry = FileEntry {
                        path,
                        length,
                        offset,
                        pad: false,
                        executable: false,
                        hidden: false,
                        symlink: false,
                    };
                    apply_attr(Some(&mut entry), f.get("attr"));
                    offset = offset
                        .checked_add(length)
                        .filter(|t| *t <= MAX_TOTAL_LENGTH)
                        .ok_or(MetainfoError::TooLarge("total length"))?;
                    files.push(entry);
                }
            }
            (Some(_), Some(_)) => return Err(MetainfoError::Field("length/files (both present)")),
            (None, None) => return Err(MetainfoError::Field("length or files")),
        }

        let total: u64 = files.iter().map(|f| f.length).sum();
        if total > MAX_TOTAL_LENGTH {
            return Err(MetainfoError::TooLarge("total length"));
        }
        if total == 0 {
            return Err(MetainfoError::Empty);
        }
        let expected = total.div_ceil(piece_length);
        if expected != pieces.len() as u64 {
            return Err(MetainfoError::PieceCountMismatch {
                expected,
                got: pieces.len(),
            });
        }
        Ok(Info {
            name,
            piece_length,
            pieces,
            files,
            multi_file,
            private,
            hybrid: is_v2,
        })
    }

    /// Canonical bencoding of this info dict (sorted keys). Used for torrents we create;
    /// for parsed torrents keep [`Metainfo::raw_info`], whose hash is the info-hash.
    pub fn to_bytes(&self) -> Vec<u8> {
        use std::collections::BTreeMap;
        let s = |x: &str| Value::Bytes(x.as_bytes().to_vec());
        let attr = |f: &FileEntry| {
            let mut a = String::new();
            if f.pad {
                a.push('p');
            }
            if f.executable {
                a.push('x');
            }
            if f.hidden {
                a.push('h');
            }
            if f.symlink {
                a.push('l');
            }
            a
        };
        let mut d: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        d.insert(b"name".to_vec(), s(&self.name));
        d.insert(
            b"piece length".to_vec(),
            Value::Int(self.piece_length as i64),
        );
        d.insert(b"pieces".to_vec(), Value::Bytes(self.pieces.concat()));
        if self.private {
            d.insert(b"private".to_vec(), Value::Int(1));
        }
        if self.multi_file {
            let files = self
                .files
                .iter()
                .map(|f| {
                    let mut fd = BTreeMap::new();
                    fd.insert(b"length".to_vec(), Value::Int(f.length as i64));
                    fd.insert(
                        b"path".to_vec(),
                        Value::List(f.path.iter().map(|c| s(c)).collect()),
                    );
                    let a = attr(f);
                    if !a.is_empty() {
                        fd.insert(b"attr".to_vec(), s(&a));
                    }
                    Value::Dict(fd)
                })
                .collect();
            d.insert(b"files".to_vec(), Value::List(files));
        } else if let Some(f) = self.files.first() {
            d.insert(b"length".to_vec(), Value::Int(f.length as i64));
            let a = attr(f);
            if !a.is_empty() {
                d.insert(b"attr".to_vec(), s(&a));
            }
        }
        Value::Dict(d).encode()
    }
}

fn nonneg(v: &Value) -> Option<u64> {
    v.as_int().filter(|n| *n >= 0).map(|n| n as u64)
}

fn apply_attr(entry: Option<&mut FileEntry>, attr: Option<&Value>) {
    let (Some(e), Some(a)) = (entry, attr.and_then(Value::as_bytes)) else {
        return;
    };
    e.pad = a.contains(&b'p');
    e.executable = a.contains(&b'x');
    e.hidden = a.contains(&b'h');
    e.symlink = a.contains(&b'l');
}

fn parse_path(f: &Value, index: usize) -> Result<Vec<String>, MetainfoError> {
    let list = f
        .get("path.utf-8")
        .or_else(|| f.get("path"))
        .and_then(Value::as_list)
        .ok_or(MetainfoError::Field("files.path"))?;
    if list.is_empty() {
        return Err(MetainfoError::BadPath(format!("file {index}: empty path")));
    }
    if list.len() > MAX_PATH_DEPTH {
        return Err(MetainfoError::BadPath(format!(
            "file {index}: path deeper than {MAX_PATH_DEPTH}"
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        let bytes = c.as_bytes().ok_or(MetainfoError::Field("files.path"))?;
        let comp = String::from_utf8_lossy(bytes).into_owned();
        check_component(&comp).map_err(|why| {
            let shown: Vec<String> = list
                .iter()
                .map(|c| String::from_utf8_lossy(c.as_bytes().unwrap_or_default()).into_owned())
                .collect();
            MetainfoError::BadPath(format!("file {index} {:?}: {why}", shown.join("/")))
        })?;
        out.push(comp);
    }
    Ok(out)
}

/// Checks one path component; returns why it is unsafe.
pub fn check_component(c: &str) -> Result<(), &'static str> {
    if c.is_empty() {
        return Err("empty path component");
    }
    if c == ".." {
        return Err("'..' is not allowed");
    }
    if c == "." {
        return Err("'.' is not allowed");
    }
    if c.contains('\0') {
        return Err("NUL byte in path");
    }
    if c.starts_with('/') || c.starts_with('\\') {
        return Err("absolute path is not allowed");
    }
    if c.contains('/') || c.contains('\\') {
        return Err("path separator inside a component");
    }
    // "C:" would make a Windows path absolute/drive-relative.
    if c.len() >= 2 && c.as_bytes()[1] == b':' && c.as_bytes()[0].is_ascii_alphabetic() {
        return Err("drive letter is not allowed");
    }
    Ok(())
}

/// A whole torrent: the info dict plus the outer fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    pub info: Info,
    /// SHA-1 of `raw_info`.
    pub info_hash: InfoHash,
    /// The info dict's exact bytes.
    pub raw_info: Vec<u8>,
    pub announce: Option<String>,
    /// BEP 12 tiers (empty tiers and non-string entries dropped).
    pub announce_list: Vec<Vec<String>>,
    /// BEP 19 web seeds.
    pub url_list: Vec<String>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
}

/// Largest .torrent file accepted.
pub const MAX_TORRENT_SIZE: usize = MAX_INFO_SIZE + (4 << 20);

impl Metainfo {
    /// Parses a .torrent file.
    pub fn from_bytes(buf: &[u8]) -> Result<Metainfo, MetainfoError> {
        if buf.len() > MAX_TORRENT_SIZE {
            return Err(MetainfoError::TooLarge("torrent file"));
        }
        // Tolerate trailing whitespace (hand-edited or transferred files), nothing else.
        let trimmed_len = buf.len()
            - buf
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
        let buf = &buf[..trimmed_len];
        if buf.first() != Some(&b'd') {
            // Still report bencode errors (e.g. empty file) precisely.
            bencode::validate(buf)?;
            return Err(MetainfoError::NotADict);
        }
        // The outer fields are decoded; `info` is not built as a tree (see Info::from_bytes).
        let mut outer: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        let mut span = None;
        for (k, r) in bencode::dict_entries(buf)? {
            if k == b"info" {
                span.get_or_insert(r);
            } else if !outer.contains_key(k) {
                outer.insert(k.to_vec(), Value::decode(&buf[r])?);
            }
        }
        let top = Value::Dict(outer);
        let raw_info = &buf[span.ok_or(MetainfoError::NoInfo)?];
        if raw_info.first() != Some(&b'd') {
            return Err(MetainfoError::NoInfo);
        }
        let mut m = Metainfo::from_info_bytes(raw_info)?;

        let text = |k: &str| {
            top.get(k)
                .map(|v| String::from_utf8_lossy(v.as_bytes().unwrap_or_default()).into_owned())
        };
        m.announce = top
            .get("announce")
            .and_then(Value::as_str)
            .map(str::to_string)
            .filter(|s| !s.is_empty());
        if let Some(tiers) = top.get("announce-list").and_then(Value::as_list) {
            for tier in tiers {
                let urls: Vec<String> = tier
                    .as_list()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|u| u.as_str())
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
                    .collect();
                if !urls.is_empty() {
                    m.announce_list.push(urls);
                }
            }
        }
        m.url_list = match top.get("url-list") {
            Some(Value::Bytes(b)) => std::str::from_utf8(b)
                .ok()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .into_iter()
                .collect(),
            Some(Value::List(l)) => l
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        m.comment = text("comment.utf-8").or_else(|| text("comment"));
        m.created_by = text("created by");
        m.creation_date = top.get("creation date").and_then(Value::as_int);
        Ok(m)
    }

    /// Builds a metainfo from a bare info dict (BEP 9 metadata from peers). Outer fields
    /// are empty; the caller adds trackers from the magnet link.
    pub fn from_info_bytes(raw_info: &[u8]) -> Result<Metainfo, MetainfoError> {
        let info = Info::from_bytes(raw_info)?;
        let info_hash = InfoHash::new(Sha1::digest(raw_info).into());
        Ok(Metainfo {
            info,
            info_hash,
            raw_info: raw_info.to_vec(),
            announce: None,
            announce_list: Vec::new(),
            url_list: Vec::new(),
            comment: None,
            created_by: None,
            creation_date: None,
        })
    }

    /// Builds a metainfo from an `Info` we made, encoding it canonically.
    pub fn from_info(info: Info) -> Metainfo {
        let raw_info = info.to_bytes();
        let info_hash = InfoHash::new(Sha1::digest(&raw_info).into());
        Metainfo {
            info,
            info_hash,
            raw_info,
            announce: None,
            announce_list: Vec::new(),
            url_list: Vec::new(),
            comment: None,
            created_by: None,
            creation_date: None,
        }
    }

    /// Writes a .torrent: outer keys in sorted order, the info dict copied verbatim.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw_info.len() + 256);
        out.push(b'd');
        if let Some(a) = &self.announce {
            bencode::put_bytes(&mut out, b"announce");
            bencode::put_bytes(&mut out, a.as_bytes());
        }
        if !self.announce_list.is_empty() {
            bencode::put_bytes(&mut out, b"announce-list");
            let v = Value::List(
                self.announce_list
                    .iter()
                    .map(|t| {
                        Value::List(
                            t.iter()
                                .map(|u| Value::Bytes(u.as_bytes().to_vec()))
                                .collect(),
                        )
                    })
                    .collect(),
            );
            v.encode_into(&mut out);
        }
        if let Some(c) = &self.comment {
            bencode::put_bytes(&mut out, b"comment");
            bencode::put_bytes(&mut out, c.as_bytes());
        }
        if let Some(c) = &self.created_by {
            bencode::put_bytes(&mut out, b"created by");
            bencode::put_bytes(&mut out, c.as_bytes());
        }
        if let Some(d) = self.creation_date {
            bencode::put_bytes(&mut out, b"creation date");
            bencode::put_int(&mut out, d);
        }
        bencode::put_bytes(&mut out, b"info");
        out.extend_from_slice(&self.raw_info);
        if !self.url_list.is_empty() {
            bencode::put_bytes(&mut out, b"url-list");
            Value::List(
                self.url_list
                    .iter()
                    .map(|u| Value::Bytes(u.as_bytes().to_vec()))
                    .collect(),
            )
            .encode_into(&mut out);
        }
        out.push(b'e');
        out
    }

    /// All tracker URLs, tiers flattened in order, duplicates removed; `announce` is used
    /// only when there is no `announce-list` (BEP 12).
    pub fn trackers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let all = if self.announce_list.is_empty() {
            self.announce.iter().cloned().collect::<Vec<_>>()
        } else {
            self.announce_list.iter().flatten().cloned().collect()
        };
        for t in all {
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    /// The magnet link for this torrent: xt, dn, tr..., ws... .
    pub fn magnet(&self) -> crate::magnet::Magnet {
        let mut m = crate::magnet::Magnet::new(self.info_hash);
        m.display_name = Some(self.info.name.clone());
        m.trackers = self.trackers();
        m.web_seeds = self.url_list.clone();
        m
    }
}

#[cfg(test)]
mod tests;
