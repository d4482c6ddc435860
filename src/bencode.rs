//! Bencode (BEP 3): the crate's one bencode reader and writer, used by every format and
//! protocol that speaks it (`.torrent` files, BEP 5 KRPC, BEP 9/10/11 extension messages, HTTP
//! tracker replies), plus typed (de)serialisation through `serde_bencode`.
//!
//! Why one reader: every byte it sees is hostile, and the guarantees that keep us safe (depth
//! limit, length checked before allocation, integer range) are easy to get subtly wrong. With
//! one scanner they are written, tested and fuzzed in one place; what differs between callers
//! is only a [`Limits`] profile (how deep, how many items, whether integers must be canonical),
//! and those profiles live here side by side too.
//!
//! Why a scanner when serde can decode everything? Because the info-hash (BEP 3, BEP 9) is the
//! SHA-1 of the info dictionary *exactly as it was written*. A decoded and re-encoded dict can
//! differ (unsorted keys, keys we do not model), and then its hash names another torrent. The
//! scanner walks the input without copying and returns the byte span of a top-level key's
//! value, so callers hash the original bytes.
//!
//! The scanner is the gatekeeper for untrusted input:
//! - nesting is limited to the profile's depth, never more than [`MAX_DEPTH`] (serde_bencode
//!   recurses without a limit, so every [`from_bytes`] call validates first and cannot overflow
//!   the stack; [`Value`] decoding is validated first as well);
//! - the number of values in one document can be bounded ([`Limits::PEER`]);
//! - a byte string's claimed length is checked against the bytes that remain before anything
//!   is allocated or sliced;
//! - integers must fit `i64`; with [`Limits::FILE`] they must also be canonical (`i0e`, no
//!   leading zeros, no `-0`). The network profiles accept leading zeros and `-0`, as the
//!   protocol codecs always did: other clients' sloppiness there is harmless to us;
//! - dict keys must be byte strings. Key order is *not* enforced anywhere: real torrents, KRPC
//!   messages and tracker replies in the wild have unsorted keys, and hashing the original
//!   bytes makes order irrelevant to us. A duplicated key keeps its first value.
//!
//! [`Value`] is a small owned tree for code that inspects arbitrary bencode; [`Value::encode`]
//! writes canonical bencode (sorted keys) and [`Writer`] writes a document piece by piece.
//! BEP 9 `data` messages are a dict followed by raw piece bytes: [`Value::decode_prefix`]
//! returns where the dict ends.

use std::collections::BTreeMap;
use std::ops::Range;

/// Maximum nesting of lists/dicts accepted anywhere (a ceiling on every [`Limits`] profile).
pub const MAX_DEPTH: usize = 64;

/// What a document may contain beyond being well-formed: one profile per kind of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists/dicts; values above [`MAX_DEPTH`] act as [`MAX_DEPTH`].
    pub max_depth: usize,
    /// Most values in one document (every int, string, list, dict and dict key counts).
    pub max_items: usize,
    /// Reject integers (and string lengths) with leading zeros, and `-0` (BEP 3 canonical form).
    pub canonical_ints: bool,
}

impl Limits {
    /// `.torrent` files, resume data, anything hashed or stored: canonical, deep enough for
    /// any real torrent, no item bound (the caller bounds the file size).
    pub const FILE: Limits = Limits {
        max_depth: MAX_DEPTH,
        max_items: usize::MAX,
        canonical_ints: true,
    };
    /// BEP 10 handshakes, BEP 9 ut_metadata and BEP 11 ut_pex dicts: flat messages, so a
    /// shallow depth (16 leaves room for unknown keys) and at most 4096 values.
    pub const PEER: Limits = Limits {
        max_depth: 16,
        max_items: 4096,
        canonical_ints: false,
    };
    /// BEP 5 KRPC datagrams: KRPC needs 3 levels, anything past 16 is abuse; the datagram
    /// size bounds the item count.
    pub const KRPC: Limits = Limits {
        max_depth: 16,
        max_items: usize::MAX,
        canonical_ints: false,
    };
    /// HTTP tracker announce/scrape replies (BEP 3, BEP 23, BEP 48): real replies nest at most
    /// 3 levels; a full scrape can hold many entries (the HTTP body limit bounds it).
    pub const TRACKER: Limits = Limits {
        max_depth: 32,
        max_items: usize::MAX,
        canonical_ints: false,
    };
}

/// Why a byte sequence is not acceptable bencode. Positions are byte offsets in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BencodeError {
    #[error("bencode: unexpected end of input at byte {0}")]
    UnexpectedEof(usize),
    #[error("bencode: unexpected byte 0x{byte:02x} at byte {pos}")]
    UnexpectedByte { byte: u8, pos: usize },
    #[error("bencode: invalid or non-canonical integer at byte {0}")]
    BadInteger(usize),
    #[error("bencode: byte string at byte {pos} claims {len} bytes but only {remaining} remain")]
    LengthTooLong {
        pos: usize,
        len: u64,
        remaining: usize,
    },
    #[error("bencode: nesting too deep at byte {0}")]
    TooDeep(usize),
    #[error("bencode: too many values (limit reached at byte {0})")]
    TooMany(usize),
    #[error("bencode: dictionary key at byte {0} is not a byte string")]
    KeyNotString(usize),
    #[error("bencode: {0} bytes of trailing data after the value")]
    TrailingData(usize),
    #[error("bencode: expected a dictionary at the top level")]
    NotADict,
    #[error("bencode: {0}")]
    Serde(String),
}

/// Returns the end offset (exclusive) of the single value starting at `start`, under
/// [`Limits::FILE`].
pub fn value_end(buf: &[u8], start: usize) -> Result<usize, BencodeError> {
    value_end_with(buf, start, Limits::FILE)
}

/// Returns the end offset (exclusive) of the single value starting at `start`, checking it
/// against `limits`.
///
/// Iterative (explicit stack) so that depth is bounded by the limits rather than by the
/// thread's stack size.
pub fn value_end_with(buf: &[u8], start: usize, limits: Limits) -> Result<usize, BencodeError> {
    let max_depth = limits.max_depth.min(MAX_DEPTH);
    // Each open container: true = dict (keys and values alternate), false = list.
    // For dicts we also track whether the next item is a key.
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let mut items = 0usize;
    let mut pos = start;
    loop {
        // Inside a container: either its end, or the next item.
        if let Some(&(is_dict, expect_key)) = stack.last() {
            let b = *buf.get(pos).ok_or(BencodeError::UnexpectedEof(pos))?;
            if b == b'e' {
                if is_dict && !expect_key {
                    // A key without its value.
                    return Err(BencodeError::UnexpectedByte { byte: b, pos });
                }
                stack.pop();
                pos += 1;
                if stack.is_empty() {
                    return Ok(pos);
                }
                mark_item_done(&mut stack);
                continue;
            }
            if is_dict && expect_key && !b.is_ascii_digit() {
                return Err(BencodeError::KeyNotString(pos));
            }
        }
        // Keys pass through here too, so they count as items.
        items += 1;
        if items > limits.max_items {
            return Err(BencodeError::TooMany(pos));
        }
        let b = *buf.get(pos).ok_or(BencodeError::UnexpectedEof(pos))?;
        match b {
            b'i' => {
                let (_, end) = parse_int(buf, pos, limits.canonical_ints)?;
                pos = end;
            }
            b'0'..=b'9' => {
                let (_, end) = parse_bytes(buf, pos, limits.canonical_ints)?;
                pos = end;
            }
            b'l' | b'd' => {
                if stack.len() >= max_depth {
                    return Err(BencodeError::TooDeep(pos));
                }
                stack.push((b == b'd', true));
                pos += 1;
                continue;
            }
            _ => return Err(BencodeError::UnexpectedByte { byte: b, pos }),
        }
        if stack.is_empty() {
            return Ok(pos);
        }
        mark_item_done(&mut stack);
    }
}

fn mark_item_done(stack: &mut [(bool, bool)]) {
    if let Some(top) = stack.last_mut() {
        if top.0 {
            top.1 = !top.1;
        }
    }
}

/// Parses `i<digits>e` at `pos`; returns the value and the end offset.
fn parse_int(buf: &[u8], pos: usize, canonical: bool) -> Result<(i64, usize), BencodeError> {
    let rest = buf.get(pos + 1..).ok_or(BencodeError::UnexpectedEof(pos))?;
    let len = rest
        .iter()
        .position(|&c| c == b'e')
        .ok_or(BencodeError::UnexpectedEof(buf.len()))?;
    let digits = &rest[..len];
    let (neg, mag) = match digits.split_first() {
        Some((b'-', m)) => (true, m),
        _ => (false, digits),
    };
    let well_formed = !mag.is_empty() && mag.iter().all(u8::is_ascii_digit);
    let canonical_form = (mag.len() == 1 || !mag.starts_with(b"0")) && !(neg && mag == b"0");
    if !well_formed || (canonical && !canonical_form) {
        return Err(BencodeError::BadInteger(pos));
    }
    // ASCII digits are valid UTF-8; parse overflow is an error too. Leading zeros (lenient
    // profiles only) parse fine however many there are.
    let s = std::str::from_utf8(digits).map_err(|_| BencodeError::BadInteger(pos))?;
    let v: i64 = s.parse().map_err(|_| BencodeError::BadInteger(pos))?;
    Ok((v, pos + 1 + len + 1))
}

/// Parses `<len>:<bytes>` at `pos`; returns the payload range and the end offset. The claimed
/// length is compared with what remains before anything is sliced.
fn parse_bytes(
    buf: &[u8],
    pos: usize,
    canonical: bool,
) -> Result<(Range<usize>, usize), BencodeError> {
    let rest = buf.get(pos..).unwrap_or_default();
    let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    match rest.get(n) {
        None => return Err(BencodeError::UnexpectedEof(buf.len())),
        Some(b':') if n > 0 => {}
        Some(_) => return Err(BencodeError::BadInteger(pos)),
    }
    let digits = &rest[..n];
    if canonical && digits.len() > 1 && digits[0] == b'0' {
        return Err(BencodeError::BadInteger(pos));
    }
    let s = std::str::from_utf8(digits).map_err(|_| BencodeError::BadInteger(pos))?;
    // More than u64 can hold is malformed, not merely too long.
    let len: u64 = s.parse().map_err(|_| BencodeError::BadInteger(pos))?;
    let start = pos + n + 1;
    let remaining = buf.len() - start;
    if len > remaining as u64 {
        return Err(BencodeError::LengthTooLong {
            pos,
            len,
            remaining,
        });
    }
    let end = start + len as usize;
    Ok((start..end, end))
}

/// Checks that `buf` is exactly one well-formed bencode value under [`Limits::FILE`].
pub fn validate(buf: &[u8]) -> Result<(), BencodeError> {
    validate_with(buf, Limits::FILE)
}

/// Checks that `buf` is exactly one well-formed bencode value under `limits`.
pub fn validate_with(buf: &[u8], limits: Limits) -> Result<(), BencodeError> {
    let end = value_end_with(buf, 0, limits)?;
    if end != buf.len() {
        return Err(BencodeError::TrailingData(buf.len() - end));
    }
    Ok(())
}

/// A dict entry: the key, and the span of its value in the buffer.
pub type DictEntry<'a> = (&'a [u8], Range<usize>);

/// The entries of the dict that is exactly `buf` (validated under [`Limits::FILE`] first),
/// as (key, span of the value) in document order, duplicates included. Lets a caller decode
/// only the values it wants, or walk a large one piece by piece, instead of building the
/// whole [`Value`] tree (a `.torrent` with a million files costs ~1 KiB per file as a tree).
pub fn dict_entries(buf: &[u8]) -> Result<Vec<DictEntry<'_>>, BencodeError> {
    validate(buf)?;
    if buf.first() != Some(&b'd') {
        return Err(BencodeError::NotADict);
    }
    let mut out = Vec::new();
    let mut pos = 1;
    while buf.get(pos) != Some(&b'e') {
        let (k, after_key) = parse_bytes(buf, pos, true)?;
        let after_val = value_end(buf, after_key)?;
        out.push((&buf[k], after_key..after_val));
        pos = after_val;
    }
    Ok(out)
}

/// Spans of the items of the list that is exactly `buf` (validated under [`Limits::FILE`]
/// first), one at a time: `None` when `buf` is not a list.
pub fn list_items(
    buf: &[u8],
) -> Result<Option<impl Iterator<Item = Range<usize>> + '_>, BencodeError> {
    validate(buf)?;
    if buf.first() != Some(&b'l') {
        return Ok(None);
    }
    let mut pos = 1;
    Ok(Some(std::iter::from_fn(move || {
        if buf.get(pos) == Some(&b'e') {
            return None;
        }
        // Validated above, so this cannot fail; stop rather than panic if it did.
        let end = value_end(buf, pos).ok()?;
        let r = pos..end;
        pos = end;
        Some(r)
    })))
}

/// Deserialises a typed value with serde_bencode after validating with the scanner (depth
/// limit, length checks, canonical integers, no trailing data).
pub fn from_bytes<T: serde::de::DeserializeOwned>(buf: &[u8]) -> Result<T, BencodeError> {
    validate(buf)?;
    serde_bencode::from_bytes(buf).map_err(|e| BencodeError::Serde(e.to_string()))
}

/// Serialises a typed value with serde_bencode (dict keys come out sorted).
pub fn to_bytes<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, BencodeError> {
    serde_bencode::to_bytes(value).map_err(|e| BencodeError::Serde(e.to_string()))
}

/// An owned bencode value. Dicts are `BTreeMap`s, so encoding is canonical (sorted keys) and
/// iteration order is deterministic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl Value {
    /// Decodes exactly one value (no trailing data) under [`Limits::FILE`].
    pub fn decode(buf: &[u8]) -> Result<Value, BencodeError> {
        Self::decode_exact(buf, Limits::FILE)
    }

    /// Decodes exactly one value (no trailing data) under `limits`. Validation runs first, so
    /// decoding allocates only what is actually present in `buf` and never recurses past the
    /// depth limit.
    pub fn decode_exact(buf: &[u8], limits: Limits) -> Result<Value, BencodeError> {
        validate_with(buf, limits)?;
        let (v, _) = Self::decode_at(buf, 0, limits.canonical_ints)?;
        Ok(v)
    }

    /// Decodes the value at the start of `buf` under `limits` and returns it with the number
    /// of bytes it used; what follows is the caller's business (BEP 9 `data` messages carry
    /// raw piece bytes after the dict; KRPC ignores trailing bytes).
    pub fn decode_prefix(buf: &[u8], limits: Limits) -> Result<(Value, usize), BencodeError> {
        value_end_with(buf, 0, limits)?;
        Self::decode_at(buf, 0, limits.canonical_ints)
    }

    /// Builds the value at `pos`; only called on input the scanner has accepted, so the
    /// recursion is bounded by the depth limit.
    fn decode_at(buf: &[u8], pos: usize, canonical: bool) -> Result<(Value, usize), BencodeError> {
        let b = *buf.get(pos).ok_or(BencodeError::UnexpectedEof(pos))?;
        match b {
            b'i' => {
                let (v, end) = parse_int(buf, pos, canonical)?;
                Ok((Value::Int(v), end))
            }
            b'0'..=b'9' => {
                let (r, end) = parse_bytes(buf, pos, canonical)?;
                Ok((Value::Bytes(buf[r].to_vec()), end))
            }
            b'l' => {
                let mut items = Vec::new();
                let mut p = pos + 1;
                while buf.get(p) != Some(&b'e') {
                    let (v, end) = Self::decode_at(buf, p, canonical)?;
                    items.push(v);
                    p = end;
                }
                Ok((Value::List(items), p + 1))
            }
            b'd' => {
                let mut map = BTreeMap::new();
                let mut p = pos + 1;
                while buf.get(p) != Some(&b'e') {
                    let (k, after_key) = parse_bytes(buf, p, canonical)?;
                    let (v, end) = Self::decode_at(buf, after_key, canonical)?;
                    // First occurrence wins: a later duplicate key cannot replace a value already read.
                    map.entry(buf[k].to_vec()).or_insert(v);
                    p = end;
                }
                Ok((Value::Dict(map), p + 1))
            }
            _ => Err(BencodeError::UnexpectedByte { byte: b, pos }),
        }
    }

    /// Canonical encoding (sorted dict keys).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical encoding of `self` to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => put_int(out, *i),
            Value::Bytes(b) => put_bytes(out, b),
            Value::List(items) => {
                out.push(b'l');
                for v in items {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Value::Dict(map) => {
                out.push(b'd');
                for (k, v) in map {
                    put_bytes(out, k);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
    /// Looks up `key` if this is a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict().and_then(|d| d.get(key.as_bytes()))
    }
    /// Shorthand for a string value (lossless only if it is UTF-8).
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
    /// Text of a byte-string value, lossily decoded (for human-readable messages such as a
    /// tracker's `failure reason`, which need not be UTF-8).
    pub fn as_text(&self) -> Option<String> {
        self.as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// Appends `i<n>e`.
pub fn put_int(out: &mut Vec<u8>, n: i64) {
    out.push(b'i');
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b'e');
}

/// Appends `<len>:<bytes>`.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// Incremental bencode writer for messages built field by field (no intermediate [`Value`]).
/// Callers write dict keys in sorted order (BEP 3 canonical form) and close every
/// [`dict`](Writer::dict) and [`list`](Writer::list) with [`end`](Writer::end).
#[derive(Debug, Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn int(&mut self, n: i64) -> &mut Self {
        put_int(&mut self.out, n);
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        put_bytes(&mut self.out, b);
        self
    }
    pub fn dict(&mut self) -> &mut Self {
        self.out.push(b'd');
        self
    }
    pub fn list(&mut self) -> &mut Self {
        self.out.push(b'l');
        self
    }
    pub fn end(&mut self) -> &mut Self {
        self.out.push(b'e');
        self
    }
    /// `key` then an int value.
    pub fn kv_int(&mut self, k: &str, n: i64) -> &mut Self {
        self.bytes(k.as_bytes()).int(n)
    }
    /// `key` then a string value.
    pub fn kv_bytes(&mut self, k: &str, b: &[u8]) -> &mut Self {
        self.bytes(k.as_bytes()).bytes(b)
    }
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dict_entries_and_list_items_give_spans_without_a_tree() {
        let buf = b"d1:ai1e5:filesld1:xi2eeli3eee1:ai9ee";
        let e = dict_entries(buf).unwrap();
        let keys: Vec<&[u8]> = e.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![&b"a"[..], b"files", b"a"]);
        let files = &buf[e[1].1.clone()];
        let items: Vec<_> = list_items(files).unwrap().unwrap().collect();
        assert_eq!(items.len(), 2);
        assert_eq!(&files[items[0].clone()], b"d1:xi2ee");
        assert_eq!(&files[items[1].clone()], b"li3ee");
        assert!(list_items(b"i1e").unwrap().is_none());
        assert_eq!(dict_entries(b"li1ee"), Err(BencodeError::NotADict));
        assert!(dict_entries(b"d1:a").is_err());
        assert!(list_items(b"l1:ae trailing").is_err());
    }
    use proptest::prelude::*;

    #[test]
    fn scans_simple_values() {
        assert_eq!(value_end(b"i42e", 0), Ok(4));
        assert_eq!(value_end(b"4:spam", 0), Ok(6));
        assert_eq!(value_end(b"l4:spami-3ee", 0), Ok(12));
        assert_eq!(value_end(b"d3:cow3:moo4:spam4:eggse", 0), Ok(24));
        assert_eq!(value_end(b"de", 0), Ok(2));
        assert_eq!(value_end(b"0:", 0), Ok(2));
        assert_eq!(value_end(b"d1:ai1eeRAWDATA", 0), Ok(8));
    }

    #[test]
    fn rejects_non_canonical_integers() {
        for bad in [
            &b"i03e"[..],
            b"i-0e",
            b"ie",
            b"i-e",
            b"i1x2e",
            b"i+1e",
            b"i99999999999999999999e",
        ] {
            assert!(
                matches!(value_end(bad, 0), Err(BencodeError::BadInteger(_))),
                "{bad:?}"
            );
        }
        assert_eq!(Value::decode(b"i0e"), Ok(Value::Int(0)));
        assert_eq!(Value::decode(b"i-7e"), Ok(Value::Int(-7)));
    }

    #[test]
    fn rejects_bad_lengths_without_allocating() {
        assert!(matches!(
            value_end(b"99999999999:x", 0),
            Err(BencodeError::LengthTooLong { .. })
        ));
        assert!(matches!(
            value_end(b"5:abc", 0),
            Err(BencodeError::LengthTooLong { .. })
        ));
        assert!(value_end(b"05:abcde", 0).is_err());
        assert!(value_end(b"18446744073709551616:", 0).is_err());
        assert!(value_end(b"123456789012345678901234567890:", 0).is_err());
    }

    #[test]
    fn rejects_structural_errors() {
        assert!(matches!(
            value_end(b"l", 0),
            Err(BencodeError::UnexpectedEof(_))
        ));
        assert!(matches!(
            value_end(b"di1ei2ee", 0),
            Err(BencodeError::KeyNotString(1))
        ));
        assert!(value_end(b"d1:ae", 0).is_err()); // key without value
        assert!(matches!(
            value_end(b"x", 0),
            Err(BencodeError::UnexpectedByte { .. })
        ));
        assert!(matches!(
            validate(b"i1ei2e"),
            Err(BencodeError::TrailingData(3))
        ));
        assert!(value_end(b"", 0).is_err());
    }

    #[test]
    fn depth_limit() {
        let ok = format!("{}{}", "l".repeat(MAX_DEPTH), "e".repeat(MAX_DEPTH));
        assert!(validate(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "l".repeat(MAX_DEPTH + 1), "e".repeat(MAX_DEPTH + 1));
        assert!(matches!(
            validate(deep.as_bytes()),
            Err(BencodeError::TooDeep(_))
        ));
        // serde path is protected too (serde_bencode itself would recurse without limit).
        let very_deep = "l".repeat(1_000_000);
        assert!(from_bytes::<Vec<i64>>(very_deep.as_bytes()).is_err());
    }

    #[test]
    fn serde_glue() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct T {
            a: i64,
            #[serde(with = "serde_bytes")]
            b: Vec<u8>,
        }
        let t = T {
            a: 5,
            b: vec![0, 255],
        };
        let enc = to_bytes(&t).unwrap();
        assert_eq!(enc, b"d1:ai5e1:b2:\x00\xffe");
        assert_eq!(from_bytes::<T>(&enc).unwrap(), t);
        assert!(from_bytes::<T>(b"d1:ai5ee").is_err());
    }

    // ---- Profiles: what each kind of caller accepts and rejects. ----

    const NETWORK: [Limits; 3] = [Limits::PEER, Limits::KRPC, Limits::TRACKER];

    #[test]
    fn network_profiles_accept_non_canonical_integers_files_do_not() {
        // The protocol codecs have always taken these from other clients; files never.
        for (doc, want) in [
            (&b"i03e"[..], Value::Int(3)),
            (b"i-0e", Value::Int(0)),
            (b"i-007e", Value::Int(-7)),
            (b"i000000000000000000000000001e", Value::Int(1)),
            (b"05:abcde", Value::Bytes(b"abcde".to_vec())),
        ] {
            for l in NETWORK {
                assert_eq!(Value::decode_exact(doc, l).as_ref(), Ok(&want), "{doc:?}");
            }
            assert!(
                matches!(Value::decode(doc), Err(BencodeError::BadInteger(_))),
                "{doc:?}"
            );
        }
        // Malformed is malformed everywhere.
        for l in NETWORK.into_iter().chain([Limits::FILE]) {
            for bad in [
                &b"ie"[..],
                b"i-e",
                b"i+1e",
                b"i1x2e",
                b"i--1e",
                b"i99999999999999999999e",
                b"-1:a",
                b":",
            ] {
                assert!(Value::decode_exact(bad, l).is_err(), "{bad:?} {l:?}");
            }
        }
    }

    #[test]
    fn every_profile_accepts_unsorted_keys_first_duplicate_wins() {
        for l in NETWORK.into_iter().chain([Limits::FILE]) {
            let v = Value::decode_exact(b"d1:bi2e1:ai1e1:bi3ee", l).unwrap();
            assert_eq!(v.get("a").and_then(Value::as_int), Some(1));
            assert_eq!(v.get("b").and_then(Value::as_int), Some(2));
        }
    }

    #[test]
    fn profile_depth_limits() {
        for (l, max) in [
            (Limits::FILE, MAX_DEPTH),
            (Limits::PEER, 16),
            (Limits::KRPC, 16),
            (Limits::TRACKER, 32),
        ] {
            let ok = format!("{}{}", "l".repeat(max), "e".repeat(max));
            assert!(Value::decode_exact(ok.as_bytes(), l).is_ok(), "{l:?}");
            let deep = format!("{}{}", "l".repeat(max + 1), "e".repeat(max + 1));
            assert!(
                matches!(
                    Value::decode_exact(deep.as_bytes(), l),
                    Err(BencodeError::TooDeep(_))
                ),
                "{l:?}"
            );
            // Unterminated deep input fails on depth, not by walking (or recursing) further.
            let open = "d1:a".repeat(100_000);
            assert!(matches!(
                Value::decode_prefix(open.as_bytes(), l),
                Err(BencodeError::TooDeep(_))
            ));
        }
        // A profile cannot raise the ceiling (decoding recurses, so the ceiling guards the stack).
        let reckless = Limits {
            max_depth: usize::MAX,
            ..Limits::FILE
        };
        let deep = "l".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            Value::decode_prefix(deep.as_bytes(), reckless),
            Err(BencodeError::TooDeep(_))
        ));
    }

    #[test]
    fn peer_profile_bounds_item_count() {
        // From the old peer reader: every int, string, list, dict and key counts.
        let at_limit = format!("l{}e", "i0e".repeat(Limits::PEER.max_items - 1));
        assert!(Value::decode_exact(at_limit.as_bytes(), Limits::PEER).is_ok());
        let many = format!("l{}e", "i0e".repeat(Limits::PEER.max_items));
        assert!(matches!(
            Value::decode_exact(many.as_bytes(), Limits::PEER),
            Err(BencodeError::TooMany(_))
        ));
        // Keys count: 2048 one-key dicts inside a list is 1 + 2048 * 3 items.
        let keyed = format!("l{}e", "d0:i0ee".repeat(2048));
        assert!(matches!(
            Value::decode_exact(keyed.as_bytes(), Limits::PEER),
            Err(BencodeError::TooMany(_))
        ));
        // The other profiles have no item bound (their input size bounds it).
        assert!(Value::decode_exact(many.as_bytes(), Limits::KRPC).is_ok());
        assert!(Value::decode(many.as_bytes()).is_ok());
    }

    #[test]
    fn prefix_decode_reports_consumed_bytes() {
        // BEP 9 data message: dict, then raw piece bytes.
        let (v, n) = Value::decode_prefix(b"d1:ai-3e1:bl3:xyzi0eee!!", Limits::PEER).unwrap();
        assert_eq!(n, 22);
        assert_eq!(v.get("a").and_then(Value::as_int), Some(-3));
        match v.get("b") {
            Some(Value::List(l)) => assert_eq!(l[0].as_bytes(), Some(&b"xyz"[..])),
            other => panic!("{other:?}"),
        }
        let (_, n) = Value::decode_prefix(b"d8:msg_typei1e5:piecei0eeRAW", Limits::PEER).unwrap();
        assert_eq!(n, 25);
        assert_eq!(value_end(b"d1:ai1eeRAWDATA", 0), Ok(8));
        // Exact decoding refuses the same trailing bytes.
        assert_eq!(
            Value::decode_exact(b"i1ex", Limits::PEER),
            Err(BencodeError::TrailingData(1))
        );
        // A truncated prefix is an error, not a shorter value.
        assert!(Value::decode_prefix(b"d1:ai-3e1:bl3:xyz", Limits::PEER).is_err());
        assert!(Value::decode_prefix(b"", Limits::KRPC).is_err());
    }

    #[test]
    fn hostile_lengths_in_every_profile() {
        for l in NETWORK.into_iter().chain([Limits::FILE]) {
            // Claimed lengths far beyond the input are refused before anything is allocated.
            assert!(matches!(
                Value::decode_prefix(b"4294967296:x", l),
                Err(BencodeError::LengthTooLong { .. })
            ));
            assert!(matches!(
                Value::decode_prefix(b"99999999999:abc", l),
                Err(BencodeError::LengthTooLong { .. })
            ));
            assert!(Value::decode_prefix(b"18446744073709551616:abc", l).is_err());
            assert!(Value::decode_prefix(b"99999999999999999999:", l).is_err());
            assert!(Value::decode_exact(b"5:abc", l).is_err());
            assert!(Value::decode_exact(b"d3:abc", l).is_err());
            assert!(Value::decode_exact(b"di1ei2ee", l).is_err());
            assert!(Value::decode_exact(b"i1ee", l).is_err());
            assert!(Value::decode_exact(b"l", l).is_err());
            assert!(Value::decode_exact(b"i", l).is_err());
            assert!(Value::decode_exact(b"x", l).is_err());
        }
    }

    #[test]
    fn nested_decode_and_text() {
        let b = b"d4:infod4:name1:xe3:numi-12ee";
        let v = Value::decode_exact(b, Limits::TRACKER).unwrap();
        assert_eq!(v.get("num").and_then(Value::as_int), Some(-12));
        assert_eq!(
            v.get("info")
                .and_then(|i| i.get("name"))
                .and_then(Value::as_text),
            Some("x".into())
        );
        assert_eq!(
            Value::Bytes(b"caf\xc3".to_vec()).as_text().as_deref(),
            Some("caf\u{fffd}")
        );
        assert_eq!(Value::Bytes(b"caf\xc3".to_vec()).as_str(), None);
    }

    #[test]
    fn writer_round_trip() {
        let mut w = Writer::new();
        w.dict().kv_int("a", 5).kv_bytes("b", b"hi").end();
        assert_eq!(w.out, b"d1:ai5e1:b2:hie");
        assert!(Value::decode(&w.out).is_ok());

        let mut w = Writer::new();
        w.dict()
            .bytes(b"a")
            .int(1)
            .bytes(b"b")
            .list()
            .bytes(b"xy")
            .int(-3)
            .end()
            .end();
        let out = w.finish();
        assert_eq!(out, b"d1:ai1e1:bl2:xyi-3eee");
        let v = Value::decode(&out).unwrap();
        assert_eq!(v.get("a").and_then(Value::as_int), Some(1));
        // Writer and Value::encode agree byte for byte.
        assert_eq!(v.encode(), out);
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..8),
                    inner,
                    0..8
                )
                .prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn value_round_trip(v in arb_value()) {
            let enc = v.encode();
            prop_assert_eq!(value_end(&enc, 0), Ok(enc.len()));
            prop_assert_eq!(Value::decode(&enc).unwrap(), v.clone());
            prop_assert_eq!(Value::decode(&enc).unwrap().encode(), enc.clone());
            // Canonical output is read identically by every profile that can hold it
            // (arb_value nests at most 6 levels).
            for l in NETWORK {
                prop_assert_eq!(Value::decode_prefix(&enc, l), Ok((v.clone(), enc.len())));
            }
        }

        #[test]
        fn scanner_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = validate(&bytes);
            let _ = Value::decode(&bytes);
            for l in NETWORK {
                let _ = Value::decode_exact(&bytes, l);
                if let Ok((_, n)) = Value::decode_prefix(&bytes, l) {
                    prop_assert!(n <= bytes.len());
                }
            }
        }

        #[test]
        fn truncation_is_always_an_error(v in arb_value(), cut in any::<prop::sample::Index>()) {
            let enc = v.encode();
            let n = cut.index(enc.len());
            prop_assert!(validate(&enc[..n]).is_err());
            for l in NETWORK {
                prop_assert!(Value::decode_prefix(&enc[..n], l).is_err());
            }
        }
    }
}
