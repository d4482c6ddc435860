//! A tiny, bounded bencode reader/writer for the small dictionaries of the extension protocol
//! (BEP 10 handshake, BEP 9 ut_metadata, BEP 11 ut_pex).
//!
//! Why not serde_bencode: BEP 9 `data` messages are a bencoded dict *followed by raw bytes*, so
//! we need to know exactly where the dict ends; and we want hard bounds (nesting depth, item
//! count) on hostile input. Values borrow from the input: no copies of byte strings.

use std::collections::BTreeMap;

/// Maximum nesting of lists/dicts. Extension messages are flat; 16 leaves room for unknown keys.
pub const MAX_DEPTH: usize = 16;
/// Maximum number of values in one document (every int, string, list and dict counts).
pub const MAX_ITEMS: usize = 4096;

/// A decoded value borrowing from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    Dict(BTreeMap<&'a [u8], Value<'a>>),
}

/// Why a bencoded document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BencError {
    #[error("bencode: unexpected end of input")]
    Eof,
    #[error("bencode: invalid syntax at byte {0}")]
    Syntax(usize),
    #[error("bencode: nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("bencode: more than {MAX_ITEMS} values")]
    TooMany,
    #[error("bencode: integer out of range at byte {0}")]
    IntRange(usize),
}

impl<'a> Value<'a> {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_dict(&self) -> Option<&BTreeMap<&'a [u8], Value<'a>>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
    /// Looks up `key` if this is a dict.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.as_dict().and_then(|d| d.get(key.as_bytes()))
    }
}

/// Parses one value from the start of `input`; returns it and the number of bytes consumed
/// (trailing bytes are the caller's business, e.g. BEP 9 piece data).
pub fn parse_prefix(input: &[u8]) -> Result<(Value<'_>, usize), BencError> {
    let mut p = Parser {
        input,
        pos: 0,
        items: 0,
    };
    let v = p.value(0)?;
    Ok((v, p.pos))
}

/// Parses a value that must span all of `input`.
pub fn parse_exact(input: &[u8]) -> Result<Value<'_>, BencError> {
    let (v, n) = parse_prefix(input)?;
    if n != input.len() {
        return Err(BencError::Syntax(n));
    }
    Ok(v)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    items: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Result<u8, BencError> {
        self.input.get(self.pos).copied().ok_or(BencError::Eof)
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, BencError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(BencError::TooMany);
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                Ok(Value::Int(self.int_until(b'e')?))
            }
            b'0'..=b'9' => self.bytes().map(Value::Bytes),
            b'l' => {
                if depth >= MAX_DEPTH {
                    return Err(BencError::TooDeep);
                }
                self.pos += 1;
                let mut list = Vec::new();
                while self.peek()? != b'e' {
                    list.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(list))
            }
            b'd' => {
                if depth >= MAX_DEPTH {
                    return Err(BencError::TooDeep);
                }
                self.pos += 1;
                let mut dict = BTreeMap::new();
                while self.peek()? != b'e' {
                    if !self.peek()?.is_ascii_digit() {
                        return Err(BencError::Syntax(self.pos));
                    }
                    self.items += 1;
                    let k = self.bytes()?;
                    let v = self.value(depth + 1)?;
                    // Lenient on key order (some clients don't sort); last duplicate wins.
                    dict.insert(k, v);
                }
                self.pos += 1;
                Ok(Value::Dict(dict))
            }
            _ => Err(BencError::Syntax(self.pos)),
        }
    }

    /// Reads a decimal integer terminated by `end`, consuming the terminator.
    fn int_until(&mut self, end: u8) -> Result<i64, BencError> {
        let start = self.pos;
        let mut neg = false;
        if self.peek()? == b'-' {
            neg = true;
            self.pos += 1;
        }
        let digits_start = self.pos;
        let mut n: i64 = 0;
        loop {
            let c = self.peek()?;
            if c == end {
                break;
            }
            if !c.is_ascii_digit() {
                return Err(BencError::Syntax(self.pos));
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(i64::from(c - b'0')))
                .ok_or(BencError::IntRange(start))?;
            self.pos += 1;
        }
        if self.pos == digits_start {
            return Err(BencError::Syntax(self.pos));
        }
        self.pos += 1; // terminator
        Ok(if neg { -n } else { n })
    }

    fn bytes(&mut self) -> Result<&'a [u8], BencError> {
        let at = self.pos;
        let len = self.int_until(b':')?;
        let len = usize::try_from(len).map_err(|_| BencError::Syntax(at))?;
        // Checked against what we actually hold: a claimed length never allocates anything.
        let end = self.pos.checked_add(len).ok_or(BencError::Eof)?;
        let s = self.input.get(self.pos..end).ok_or(BencError::Eof)?;
        self.pos = end;
        Ok(s)
    }
}

/// Minimal bencode writer. Callers must add dict keys in sorted order (BEP 3 canonical form).
#[derive(Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn int(&mut self, n: i64) -> &mut Self {
        self.out.push(b'i');
        self.out.extend_from_slice(n.to_string().as_bytes());
        self.out.push(b'e');
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b.len().to_string().as_bytes());
        self.out.push(b':');
        self.out.extend_from_slice(b);
        self
    }
    pub fn dict_start(&mut self) -> &mut Self {
        self.out.push(b'd');
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_and_reports_consumed() {
        let (v, n) = parse_prefix(b"d1:ai-3e1:bl3:xyzi0eee!!").unwrap();
        assert_eq!(n, 22);
        assert_eq!(v.get("a").and_then(|v| v.as_int()), Some(-3));
        match v.get("b") {
            Some(Value::List(l)) => assert_eq!(l[0].as_bytes(), Some(&b"xyz"[..])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_hostile() {
        assert_eq!(parse_prefix(b"4294967296:x").unwrap_err(), BencError::Eof);
        assert!(parse_prefix(b"i99999999999999999999e").is_err());
        assert!(parse_prefix(b"ie").is_err());
        assert!(parse_prefix(b"i-e").is_err());
        assert!(parse_prefix(b"di1ei2ee").is_err());
        let deep = "l".repeat(100) + &"e".repeat(100);
        assert_eq!(
            parse_prefix(deep.as_bytes()).unwrap_err(),
            BencError::TooDeep
        );
        let many = format!("l{}e", "i0e".repeat(MAX_ITEMS + 1));
        assert_eq!(
            parse_prefix(many.as_bytes()).unwrap_err(),
            BencError::TooMany
        );
        assert!(parse_exact(b"i1ex").is_err());
    }

    #[test]
    fn writer_round_trip() {
        let mut w = Writer::new();
        w.dict_start().kv_int("a", 5).kv_bytes("b", b"hi").end();
        assert_eq!(w.out, b"d1:ai5e1:b2:hie");
        assert!(parse_exact(&w.out).is_ok());
    }
}
