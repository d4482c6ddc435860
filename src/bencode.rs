//! Bencode (BEP 3): typed (de)serialisation through `serde_bencode`, plus a small zero-copy
//! scanner over raw bytes.
//!
//! Why a scanner when serde can decode everything? Because the info-hash (BEP 3, BEP 9) is the
//! SHA-1 of the info dictionary *exactly as it was written*. A decoded and re-encoded dict can
//! differ (unsorted keys, keys we do not model), and then its hash names another torrent. The
//! scanner walks the input without copying and returns the byte span of a top-level key's
//! value, so callers hash the original bytes.
//!
//! The scanner is also the gatekeeper for untrusted input:
//! - nesting is limited to [`MAX_DEPTH`] (serde_bencode recurses without a limit, so every
//!   [`from_bytes`] call validates first and cannot overflow the stack);
//! - a byte string's claimed length is checked against the bytes that remain before anything
//!   is allocated or sliced;
//! - integers must be canonical (`i0e`, no leading zeros, no `-0`, no empty `ie`) and fit `i64`;
//! - dict keys must be byte strings. Key order is *not* enforced: real torrents in the wild
//!   have unsorted keys, and hashing the original bytes makes order irrelevant to us.
//!
//! [`Value`] is a small owned tree for code that wants to inspect arbitrary bencode with precise
//! error messages (the metainfo parser uses it), and [`Value::encode`] writes canonical
//! bencode (sorted keys).

use std::collections::BTreeMap;
use std::ops::Range;

/// Maximum nesting of lists/dicts accepted anywhere.
pub const MAX_DEPTH: usize = 64;

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
    #[error("bencode: nesting deeper than {MAX_DEPTH} at byte {0}")]
    TooDeep(usize),
    #[error("bencode: dictionary key at byte {0} is not a byte string")]
    KeyNotString(usize),
    #[error("bencode: {0} bytes of trailing data after the value")]
    TrailingData(usize),
    #[error("bencode: expected a dictionary at the top level")]
    NotADict,
    #[error("bencode: {0}")]
    Serde(String),
}

/// Returns the end offset (exclusive) of the single value starting at `start`.
///
/// Iterative (explicit stack) so that depth is bounded by [`MAX_DEPTH`] rather than by the
/// thread's stack size.
pub fn value_end(buf: &[u8], start: usize) -> Result<usize, BencodeError> {
    // Each open container: true = dict (keys and values alternate), false = list.
    // For dicts we also track whether the next item is a key.
    let mut stack: Vec<(bool, bool)> = Vec::new();
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
        let b = *buf.get(pos).ok_or(BencodeError::UnexpectedEof(pos))?;
        match b {
            b'i' => {
                let (_, end) = parse_int(buf, pos)?;
                pos = end;
            }
            b'0'..=b'9' => {
                let (range, end) = parse_bytes(buf, pos)?;
                let _ = range;
                pos = end;
            }
            b'l' | b'd' => {
                if stack.len() >= MAX_DEPTH {
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
fn parse_int(buf: &[u8], pos: usize) -> Result<(i64, usize), BencodeError> {
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
    let canonical = !mag.is_empty()
        && mag.iter().all(u8::is_ascii_digit)
        && (mag.len() == 1 || !mag.starts_with(b"0"))
        && !(neg && mag == b"0");
    if !canonical {
        return Err(BencodeError::BadInteger(pos));
    }
    // ASCII digits are valid UTF-8; parse overflow is an error too.
    let s = std::str::from_utf8(digits).map_err(|_| BencodeError::BadInteger(pos))?;
    let v: i64 = s.parse().map_err(|_| BencodeError::BadInteger(pos))?;
    Ok((v, pos + 1 + len + 1))
}

/// Parses `<len>:<bytes>` at `pos`; returns the payload range and the end offset.
fn parse_bytes(buf: &[u8], pos: usize) -> Result<(Range<usize>, usize), BencodeError> {
    let rest = &buf[pos.min(buf.len())..];
    let colon = rest
        .iter()
        .take(21) // u64 has at most 20 digits
        .position(|&c| c == b':')
        .ok_or(if rest.len() <= 21 {
            BencodeError::UnexpectedEof(buf.len())
        } else {
            BencodeError::BadInteger(pos)
        })?;
    let digits = &rest[..colon];
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return Err(BencodeError::BadInteger(pos));
    }
    let s = std::str::from_utf8(digits).map_err(|_| BencodeError::BadInteger(pos))?;
    let len: u64 = s.parse().map_err(|_| BencodeError::BadInteger(pos))?;
    let start = pos + colon + 1;
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

/// Checks that `buf` is exactly one well-formed bencode value.
pub fn validate(buf: &[u8]) -> Result<(), BencodeError> {
    let end = value_end(buf, 0)?;
    if end != buf.len() {
        return Err(BencodeError::TrailingData(buf.len() - end));
    }
    Ok(())
}

/// Length of the first complete value in `buf`; bytes after it are left to the caller
/// (BEP 9 `ut_metadata` data messages append raw piece bytes after a bencoded dict).
pub fn prefix_len(buf: &[u8]) -> Result<usize, BencodeError> {
    value_end(buf, 0)
}

/// If `buf` starts with a dict, returns the byte span of the value stored under `key` at the
/// top level of that dict (`Ok(None)` if absent). Only the dict itself is scanned; use
/// [`validate`] too if trailing data matters.
pub fn dict_value_span(buf: &[u8], key: &[u8]) -> Result<Option<Range<usize>>, BencodeError> {
    if buf.first() != Some(&b'd') {
        return Err(BencodeError::NotADict);
    }
    // Validate the whole dict first so that a hostile tail cannot hide behind an early match.
    value_end(buf, 0)?;
    let mut pos = 1;
    let mut found = None;
    loop {
        match buf.get(pos) {
            Some(b'e') => return Ok(found),
            Some(_) => {}
            None => return Err(BencodeError::UnexpectedEof(pos)),
        }
        let (k, after_key) = parse_bytes(buf, pos)?;
        let after_val = value_end(buf, after_key)?;
        // First occurrence wins if a key is duplicated (as libtorrent does).
        if found.is_none() && &buf[k] == key {
            found = Some(after_key..after_val);
        }
        pos = after_val;
    }
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
    /// Decodes exactly one value (no trailing data). Validation runs first, so decoding
    /// allocates only what is actually present in `buf` and never recurses past [`MAX_DEPTH`].
    pub fn decode(buf: &[u8]) -> Result<Value, BencodeError> {
        validate(buf)?;
        let (v, _) = Self::decode_at(buf, 0)?;
        Ok(v)
    }

    fn decode_at(buf: &[u8], pos: usize) -> Result<(Value, usize), BencodeError> {
        let b = *buf.get(pos).ok_or(BencodeError::UnexpectedEof(pos))?;
        match b {
            b'i' => {
                let (v, end) = parse_int(buf, pos)?;
                Ok((Value::Int(v), end))
            }
            b'0'..=b'9' => {
                let (r, end) = parse_bytes(buf, pos)?;
                Ok((Value::Bytes(buf[r].to_vec()), end))
            }
            b'l' => {
                let mut items = Vec::new();
                let mut p = pos + 1;
                while buf.get(p) != Some(&b'e') {
                    let (v, end) = Self::decode_at(buf, p)?;
                    items.push(v);
                    p = end;
                }
                Ok((Value::List(items), p + 1))
            }
            b'd' => {
                let mut map = BTreeMap::new();
                let mut p = pos + 1;
                while buf.get(p) != Some(&b'e') {
                    let (k, after_key) = parse_bytes(buf, p)?;
                    let (v, end) = Self::decode_at(buf, after_key)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scans_simple_values() {
        assert_eq!(value_end(b"i42e", 0), Ok(4));
        assert_eq!(value_end(b"4:spam", 0), Ok(6));
        assert_eq!(value_end(b"l4:spami-3ee", 0), Ok(12));
        assert_eq!(value_end(b"d3:cow3:moo4:spam4:eggse", 0), Ok(24));
        assert_eq!(value_end(b"de", 0), Ok(2));
        assert_eq!(value_end(b"0:", 0), Ok(2));
        assert_eq!(prefix_len(b"d1:ai1eeRAWDATA"), Ok(8));
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
    fn span_is_original_bytes() {
        // Unsorted keys inside info: re-encoding would reorder them; the span must not.
        let t = b"d8:announce3:url4:infod4:name1:x2:abi1ee5:zzzzzi0ee";
        let span = dict_value_span(t, b"info").unwrap().unwrap();
        assert_eq!(&t[span], b"d4:name1:x2:abi1ee");
        assert_eq!(dict_value_span(t, b"nope"), Ok(None));
        assert_eq!(dict_value_span(b"le", b"info"), Err(BencodeError::NotADict));
        // Keys nested deeper do not count.
        let nested = b"d1:ad4:infoi1eee";
        assert_eq!(dict_value_span(nested, b"info"), Ok(None));
        // A broken tail is still an error.
        assert!(dict_value_span(b"d4:infoi1e1:x", b"info").is_err());
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
            prop_assert_eq!(Value::decode(&enc).unwrap().encode(), enc);
        }

        #[test]
        fn span_matches_encoding(v in arb_value(), key in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut map = BTreeMap::new();
            map.insert(key.clone(), v.clone());
            map.insert(b"other".to_vec(), Value::Int(1));
            let enc = Value::Dict(map).encode();
            let span = dict_value_span(&enc, &key).unwrap().unwrap();
            prop_assert_eq!(&enc[span], &v.encode()[..]);
        }

        #[test]
        fn scanner_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = validate(&bytes);
            let _ = Value::decode(&bytes);
            let _ = dict_value_span(&bytes, b"info");
        }

        #[test]
        fn truncation_is_always_an_error(v in arb_value(), cut in any::<prop::sample::Index>()) {
            let enc = v.encode();
            let n = cut.index(enc.len());
            prop_assert!(validate(&enc[..n]).is_err());
        }
    }
}
