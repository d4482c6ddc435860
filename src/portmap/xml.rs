//! A bounded reader for the little XML a UPnP IGD sends: the device description (UPnP
//! Device Architecture 1.1, section 2) and SOAP 1.1 replies and faults. It is not a general
//! XML parser: it yields elements' local names (namespace prefixes dropped) and their text,
//! decodes the five predefined entities and numeric references, skips comments, processing
//! instructions and DOCTYPE, and keeps CDATA as text. Input comes from any host on the LAN,
//! so the document size and nesting depth are bounded and malformed input is an error,
//! never a panic.

/// Documents larger than this are refused (a description is a few KiB).
pub const MAX_DOC: usize = 64 * 1024;
/// Elements nested deeper than this are refused.
pub const MAX_DEPTH: usize = 32;
/// One text node longer than this is refused (URLs, addresses, error descriptions).
pub const MAX_TEXT: usize = 2048;

#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// An element opens (its local name); `<a/>` gives `Start` then `End`.
    Start(&'a str),
    End(&'a str),
    /// Text inside the innermost open element, entities decoded, trimmed.
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("XML document larger than {MAX_DOC} bytes")]
    TooLarge,
    #[error("XML nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("XML text longer than {MAX_TEXT} bytes")]
    TextTooLong,
    #[error("malformed XML: {0}")]
    Malformed(&'static str),
}

/// The local part of a qualified name: `s:Envelope` → `Envelope`.
fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Decodes `&amp;`-style entities and `&#NN;` / `&#xNN;` references.
pub fn unescape(s: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(';')
            .filter(|&e| e <= 10)
            .ok_or(XmlError::Malformed("unterminated entity"))?;
        let ent = &after[..end];
        let c = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let n = if let Some(h) = ent.strip_prefix("#x").or(ent.strip_prefix("#X")) {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = ent.strip_prefix('#') {
                    d.parse().ok()
                } else {
                    None
                };
                n.and_then(char::from_u32)
                    .ok_or(XmlError::Malformed("unknown entity"))?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every element start, end and non-empty text of `doc`, in order; checks nesting.
pub fn events(doc: &[u8]) -> Result<Vec<Event<'_>>, XmlError> {
    if doc.len() > MAX_DOC {
        return Err(XmlError::TooLarge);
    }
    let doc = std::str::from_utf8(doc).map_err(|_| XmlError::Malformed("not UTF-8"))?;
    let mut out = Vec::new();
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = doc;
    let mut text = String::new();
    let flush = |text: &mut String, out: &mut Vec<Event>, open: bool| -> Result<(), XmlError> {
        let t = text.trim();
        if !t.is_empty() && open {
            if t.len() > MAX_TEXT {
                return Err(XmlError::TextTooLong);
            }
            out.push(Event::Text(t.to_string()));
        }
        text.clear();
        Ok(())
    };
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if !rest.trim().is_empty() {
                return Err(XmlError::Malformed("text after the root element"));
            }
            break;
        };
        if lt > 0 {
            if text.len() + lt > MAX_TEXT + 64 {
                return Err(XmlError::TextTooLong);
            }
            text.push_str(&unescape(&rest[..lt])?);
        }
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<!--") {
            let e = r
                .find("-->")
                .ok_or(XmlError::Malformed("unterminated comment"))?;
            rest = &r[e + 3..];
        } else if let Some(r) = rest.strip_prefix("<![CDATA[") {
            let e = r
                .find("]]>")
                .ok_or(XmlError::Malformed("unterminated CDATA"))?;
            if text.len() + e > MAX_TEXT + 64 {
                return Err(XmlError::TextTooLong);
            }
            text.push_str(&r[..e]);
            rest = &r[e + 3..];
        } else if let Some(r) = rest.strip_prefix("<?") {
            let e = r.find("?>").ok_or(XmlError::Malformed("unterminated <?"))?;
            rest = &r[e + 2..];
        } else if let Some(r) = rest.strip_prefix("<!") {
            let e = r.find('>').ok_or(XmlError::Malformed("unterminated <!"))?;
            rest = &r[e + 1..];
        } else {
            let e = rest
                .find('>')
                .ok_or(XmlError::Malformed("unterminated tag"))?;
            let tag = &rest[1..e];
            rest = &rest[e + 1..];
            flush(&mut text, &mut out, !stack.is_empty())?;
            if let Some(name) = tag.strip_prefix('/') {
                let name = local(name.trim());
                match stack.pop() {
                    Some(open) if open == name => out.push(Event::End(name)),
                    _ => return Err(XmlError::Malformed("mismatched end tag")),
                }
                if stack.is_empty() {
                    // Only whitespace, comments and PIs may follow the root element.
                    let tail = rest.trim();
                    if !tail.is_empty() && !tail.starts_with("<!--") && !tail.starts_with("<?") {
                        return Err(XmlError::Malformed("content after the root element"));
                    }
                }
            } else {
                let self_closing = tag.ends_with('/');
                let tag = tag.trim_end_matches('/');
                let name = tag.split(|c: char| c.is_whitespace()).next().unwrap_or("");
                if name.is_empty() {
                    return Err(XmlError::Malformed("empty tag name"));
                }
                let name = local(name);
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                out.push(Event::Start(name));
                if self_closing {
                    out.push(Event::End(name));
                } else {
                    stack.push(name);
                }
            }
        }
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed("unclosed element"));
    }
    Ok(out)
}

/// The text of the first element named `name` (local name) anywhere in `doc`; `Some("")`
/// when it is empty.
pub fn first_text(doc: &[u8], name: &str) -> Result<Option<String>, XmlError> {
    let ev = events(doc)?;
    for (i, e) in ev.iter().enumerate() {
        if *e == Event::Start(name) {
            return Ok(Some(match ev.get(i + 1) {
                Some(Event::Text(t)) => t.clone(),
                _ => String::new(),
            }));
        }
    }
    Ok(None)
}

/// Escapes text for an element's content or an attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_text_and_entities() {
        let doc = br#"<?xml version="1.0"?><!-- c --><s:Envelope xmlns:s="x"><s:Body>
            <u:R xmlns:u="y"><A>1 &amp; 2 &#x41;&#66;</A><B/><C><![CDATA[<raw>]]></C></u:R>
            </s:Body></s:Envelope>
"#;
        let ev = events(doc).unwrap();
        assert_eq!(ev[0], Event::Start("Envelope"));
        assert!(ev.contains(&Event::Text("1 & 2 AB".into())));
        assert_eq!(first_text(doc, "B").unwrap(), Some(String::new()));
        assert_eq!(first_text(doc, "C").unwrap(), Some("<raw>".into()));
        assert_eq!(first_text(doc, "Z").unwrap(), None);
        assert_eq!(unescape(&escape("<a&'\">")).unwrap(), "<a&'\">");
    }

    #[test]
    fn malformed_and_oversized_documents_are_errors() {
        for bad in [
            &b"<a><b></a></b>"[..],
            b"<a>",
            b"<a></a><b></b>",
            b"<a>&bogus;</a>",
            b"<a>&#xFFFFFFFF;</a>",
            b"<a",
            b"<!-- ",
            b"<></>",
            b"\xff",
        ] {
            assert!(events(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(events(deep.as_bytes()), Err(XmlError::TooDeep));
        let long = format!("<a>{}</a>", "x".repeat(MAX_TEXT + 1));
        assert_eq!(events(long.as_bytes()), Err(XmlError::TextTooLong));
        assert_eq!(events(&vec![b' '; MAX_DOC + 1]), Err(XmlError::TooLarge));
    }
}
