//! A small, bounded bencode reader/writer private to the tracker module (BEP 3 encoding).
//!
//! Trackers only need to read small dictionaries (announce/scrape replies, query values,
//! `.torrent` headers) and write a few. Keeping this local means the tracker does not depend
//! on the formats module while it is being written; the span scanner gives the raw bytes of a
//! value so the info-hash is the SHA-1 of exactly what the file contained.

use std::collections::BTreeMap;

/// Nesting deeper than this is rejected: real tracker replies nest at most 3 levels.
pub const MAX_DEPTH: usize = 32;

/// A decoded bencode value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

/// Why some bytes are not valid bencode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BencError {
    #[error("bencode: unexpected end of input at byte {0}")]
    Eof(usize),
    #[error("bencode: unexpected byte at {0}")]
    Syntax(usize),
    #[error("bencode: nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("bencode: integer out of range at byte {0}")]
    IntRange(usize),
    #[error("bencode: trailing bytes after value")]
    Trailing,
}

impl Value {
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
    /// Looks up a key in a dictionary value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict().and_then(|d| d.get(key.as_bytes()))
    }
    /// Text of a byte-string value, lossily decoded (used for human messages).
    pub fn as_text(&self) -> Option<String> {
        self.as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// Decodes exactly one value filling the whole input.
pub fn decode(buf: &[u8]) -> Result<Value, BencError> {
    let (v, end) = decode_at(buf, 0, 0)?;
    if end != buf.len() {
        return Err(BencError::Trailing);
    }
    Ok(v)
}

/// Decodes one value starting at `pos`, returning it and the position after it.
/// Allocation is bounded by the input length: a string's claimed length is checked against
/// the remaining bytes before it is copied.
pub fn decode_at(buf: &[u8], pos: usize, depth: usize) -> Result<(Value, usize), BencError> {
    if depth > MAX_DEPTH {
        return Err(BencError::TooDeep);
    }
    match buf.get(pos) {
        None => Err(BencError::Eof(pos)),
        Some(b'i') => {
            let (i, end) = parse_int(buf, pos + 1, b'e')?;
            Ok((Value::Int(i), end))
        }
        Some(b'l') => {
            let mut p = pos + 1;
            let mut items = Vec::new();
            loop {
                match buf.get(p) {
                    None => return Err(BencError::Eof(p)),
                    Some(b'e') => return Ok((Value::List(items), p + 1)),
                    Some(_) => {
                        let (v, np) = decode_at(buf, p, depth + 1)?;
                        items.push(v);
                        p = np;
                    }
                }
            }
        }
        Some(b'd') => {
            let mut p = pos + 1;
            let mut map = BTreeMap::new();
            loop {
                match buf.get(p) {
                    None => return Err(BencError::Eof(p)),
                    Some(b'e') => return Ok((Value::Dict(map), p + 1)),
                    Some(_) => {
                        let (k, np) = parse_bytes(buf, p)?;
                        let (v, np) = decode_at(buf, np, depth + 1)?;
                        map.insert(k.to_vec(), v);
                        p = np;
                    }
                }
            }
        }
        Some(b'0'..=b'9') => {
            let (b, end) = parse_bytes(buf, pos)?;
            Ok((Value::Bytes(b.to_vec()), end))
        }
        Some(_) => Err(BencError::Syntax(pos)),
    }
}

/// Returns the end position of the value starting at `pos` without building it.
pub fn skip(buf: &[u8], pos: usize, depth: usize) -> Result<usize, BencError> {
    if depth > MAX_DEPTH {
        return Err(BencError::TooDeep);
    }
    match buf.get(pos) {
        None => Err(BencError::Eof(pos)),
        Some(b'i') => parse_int(buf, pos + 1, b'e').map(|(_, e)| e),
        Some(b'l') | Some(b'd') => {
            let is_dict = buf.get(pos) == Some(&b'd');
            let mut p = pos + 1;
            loop {
                match buf.get(p) {
                    None => return Err(BencError::Eof(p)),
                    Some(b'e') => return Ok(p + 1),
                    Some(_) => {
                        if is_dict {
                            p = parse_bytes(buf, p)?.1;
                        }
                        p = skip(buf, p, depth + 1)?;
                    }
                }
            }
        }
        Some(b'0'..=b'9') => parse_bytes(buf, pos).map(|(_, e)| e),
        Some(_) => Err(BencError::Syntax(pos)),
    }
}

/// Finds the raw byte span of `key`'s value in the top-level dictionary of `buf`.
pub fn dict_value_span(buf: &[u8], key: &[u8]) -> Result<Option<(usize, usize)>, BencError> {
    if buf.first() != Some(&b'd') {
        return Err(BencError::Syntax(0));
    }
    let mut p = 1;
    loop {
        match buf.get(p) {
            None => return Err(BencError::Eof(p)),
            Some(b'e') => return Ok(None),
            Some(_) => {
                let (k, vstart) = parse_bytes(buf, p)?;
                let vend = skip(buf, vstart, 1)?;
                if k == key {
                    return Ok(Some((vstart, vend)));
                }
                p = vend;
            }
        }
    }
}

fn parse_int(buf: &[u8], start: usize, term: u8) -> Result<(i64, usize), BencError> {
    let mut p = start;
    let neg = buf.get(p) == Some(&b'-');
    if neg {
        p += 1;
    }
    let digits_start = p;
    let mut v: i64 = 0;
    loop {
        match buf.get(p) {
            None => return Err(BencError::Eof(p)),
            Some(&c) if c == term => break,
            Some(&c @ b'0'..=b'9') => {
                v = v
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(i64::from(c - b'0')))
                    .ok_or(BencError::IntRange(start))?;
                p += 1;
            }
            Some(_) => return Err(BencError::Syntax(p)),
        }
    }
    if p == digits_start {
        return Err(BencError::Syntax(p));
    }
    Ok((if neg { -v } else { v }, p + 1))
}

fn parse_bytes(buf: &[u8], pos: usize) -> Result<(&[u8], usize), BencError> {
    if !matches!(buf.get(pos), Some(b'0'..=b'9')) {
        return Err(BencError::Syntax(pos));
    }
    let (len, p) = parse_int(buf, pos, b':')?;
    let len = usize::try_from(len).map_err(|_| BencError::IntRange(pos))?;
    let end = p.checked_add(len).ok_or(BencError::IntRange(pos))?;
    let s = buf.get(p..end).ok_or(BencError::Eof(buf.len()))?;
    Ok((s, end))
}

/// Incremental bencode writer; dictionary keys must be written in sorted order by the caller.
#[derive(Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { out: Vec::new() }
    }
    pub fn int(&mut self, i: i64) -> &mut Self {
        self.out.push(b'i');
        self.out.extend_from_slice(i.to_string().as_bytes());
        self.out.push(b'e');
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b.len().to_string().as_bytes());
        self.out.push(b':');
        self.out.extend_from_slice(b);
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
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_nested_and_spans() {
        let b = b"d4:infod4:name1:xe3:numi-12ee";
        let v = decode(b).unwrap();
        assert_eq!(v.get("num").and_then(Value::as_int), Some(-12));
        assert_eq!(
            v.get("info")
                .and_then(|i| i.get("name"))
                .and_then(Value::as_text),
            Some("x".into())
        );
        let (s, e) = dict_value_span(b, b"info").unwrap().unwrap();
        assert_eq!(&b[s..e], b"d4:name1:xe");
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            &b"i"[..],
            b"ie",
            b"i-e",
            b"5:abc",
            b"99999999999999999999:",
            b"d3:abc",
            b"x",
            b"l",
            b"i1ee",
            b"i99999999999999999999e",
        ] {
            assert!(decode(bad).is_err(), "{:?}", bad);
        }
        let deep = "l".repeat(100) + &"e".repeat(100);
        assert_eq!(decode(deep.as_bytes()), Err(BencError::TooDeep));
    }

    #[test]
    fn writer_round_trip() {
        let mut w = Writer::new();
        w.dict()
            .bytes(b"a")
            .int(1)
            .bytes(b"b")
            .list()
            .bytes(b"xy")
            .end()
            .end();
        let v = decode(&w.finish()).unwrap();
        assert_eq!(v.get("a").and_then(Value::as_int), Some(1));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode(&data);
            let _ = dict_value_span(&data, b"info");
        }
    }
}
