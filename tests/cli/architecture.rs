//! The dependency direction written in docs/architecture.md ("Dependency direction") is the
//! one in the code: every `crate::room` path outside test code is an edge of that block,
//! and every edge of the block is used. A new edge (say `peer` reaching into `session`)
//! fails here until the document and the design agree with it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Edges = BTreeMap<String, BTreeSet<String>>;

/// The rooms and their edges from the ```text block after "### Dependency direction".
fn documented() -> Edges {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
            .expect("docs/architecture.md");
    let section = doc
        .split("### Dependency direction")
        .nth(1)
        .expect("a Dependency direction section");
    let block = section
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a text block in the section");
    let mut edges = Edges::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let (room, deps) = line.split_once("->").expect("`room -> deps` lines");
        let deps = deps.split_whitespace().map(str::to_string).collect();
        assert!(
            edges.insert(room.trim().to_string(), deps).is_none(),
            "room listed twice: {line}"
        );
    }
    edges
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `crate::X` paths (also `use crate::{X, Y::z}`) of non-test code, per top-level room.
fn in_code(rooms: &BTreeSet<String>) -> Edges {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut edges = Edges::new();
    for room in rooms {
        let mut files = Vec::new();
        let dir = src.join(room);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        let file = src.join(format!("{room}.rs"));
        if file.is_file() {
            files.push(file);
        }
        assert!(!files.is_empty(), "room {room} has no source in src/");
        let deps = edges.entry(room.clone()).or_default();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            // Unit tests sit at the end of a file in a `#[cfg(test)] mod`; they may reach
            // anywhere. (A single test-only item elsewhere does not end the scan.)
            let end = text
                .match_indices("#[cfg(test)]")
                .map(|(i, m)| i + m.len())
                .find(|&i| text[i..].trim_start().starts_with("mod "))
                .unwrap_or(text.len());
            let code = &text[..end];
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or("");
                    group
                        .split(',')
                        .map(|p| p.trim().split("::").next().unwrap_or("").trim())
                        .collect()
                } else {
                    vec![rest
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or("")]
                };
                for n in names {
                    if n != room && rooms.contains(n) {
                        deps.insert(n.to_string());
                    }
                }
            }
        }
    }
    edges
}

#[test]
fn code_dependencies_match_the_documented_direction() {
    let doc = documented();
    let rooms: BTreeSet<String> = doc.keys().cloned().collect();
    // Every top-level module of the library is a room of the document.
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l
                .strip_prefix("pub(crate) ")
                .or_else(|| l.strip_prefix("pub "))
                .unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .filter(|m| m != "internals")
        .collect();
    assert_eq!(
        declared, rooms,
        "src/lib.rs modules vs the documented rooms"
    );
    // The rooms are private: the embedding API is what lib.rs re-exports, and the test
    // surface (`internals`) exists only with its feature.
    for l in lib.lines().map(str::trim) {
        assert!(
            !(l.starts_with("pub mod ") || l.starts_with("pub(crate) mod "))
                || l == "pub mod internals;",
            "a room is declared public in src/lib.rs: {l}"
        );
    }
    assert!(
        lib.contains("#[cfg(feature = \"internals\")]\n#[doc(hidden)]\npub mod internals;"),
        "src/lib.rs: `internals` must be compiled only with its feature"
    );
    let code = in_code(&rooms);
    assert_eq!(
        code, doc,
        "dependencies in src/ (left) vs docs/architecture.md (right)"
    );
    // One way: no cycles (a room may only use rooms listed before it).
    let order: Vec<&String> = {
        let doc_text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"),
        )
        .unwrap();
        let block = doc_text.split("### Dependency direction").nth(1).unwrap();
        let block = block
            .split("```text\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let names: Vec<String> = block
            .lines()
            .filter_map(|l| l.split_once("->").map(|(r, _)| r.trim().to_string()))
            .collect();
        names.iter().map(|n| rooms.get(n).unwrap()).collect()
    };
    for (i, room) in order.iter().enumerate() {
        for dep in &doc[*room] {
            let j = order
                .iter()
                .position(|r| *r == dep)
                .expect("dependency is a room");
            assert!(
                j < i,
                "{room} -> {dep}: a room may only use rooms listed above it"
            );
        }
    }
}
