//! Percent-encoding (RFC 3986 §2.1) for URLs, tracker queries (BEP 3: raw 20-byte hashes go
//! into the query string), magnet links and request paths. One encoder, one decoder.

/// Appends `bytes` percent-encoded to `out`, keeping only RFC 3986 unreserved characters.
pub fn encode_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// Percent-encodes raw bytes, keeping only RFC 3986 unreserved characters.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    encode_into(&mut s, bytes);
    s
}

/// Decodes `%XX` escapes, and `+` as a space when `plus_is_space` (form-encoded query
/// strings; a `+` in a path is a `+`). An invalid escape is an error rather than guessed at.
pub fn decode(s: &[u8], plus_is_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hi = hexval(*s.get(i + 1)?)?;
                let lo = hexval(*s.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        assert_eq!(encode(b"a b/~\xff"), "a%20b%2F~%FF");
        assert_eq!(decode(b"a%20b+c%2f", true).unwrap(), b"a b c/");
        assert_eq!(decode(b"a+b", false).unwrap(), b"a+b");
        for bad in [&b"%"[..], b"%4", b"%zz", b"a%g0", b"%\xc3\xa9"] {
            assert_eq!(decode(bad, false), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let e = encode(&data);
            proptest::prop_assert!(e.bytes().all(|c| c.is_ascii_graphic()));
            proptest::prop_assert_eq!(decode(e.as_bytes(), true).unwrap(), data.clone());
            proptest::prop_assert_eq!(decode(e.as_bytes(), false).unwrap(), data);
        }
    }
}
