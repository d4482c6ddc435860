//! The `create`, `info` and `magnet` commands through the built binary: the `--json`
//! contract, the magnet output, and the error contract (exit 1 + one `error:` line; usage
//! errors exit 2).

use crate::support::{assert_cli_error, magnetfetch};
use std::path::Path;

fn json(args: &[&str]) -> serde_json::Value {
    let out = magnetfetch(args);
    assert!(
        out.status.success(),
        "{:?}: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("b.bin"), vec![7u8; 50_000]).unwrap();
    std::fs::write(root.join(".hidden"), b"secret").unwrap();
    std::fs::write(root.join("sub/a.txt"), b"hello world\n").unwrap();
}

#[test]
fn create_info_magnet_agree() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tree");
    make_tree(&data);
    let out_t = dir.path().join("tree.torrent");
    let out = magnetfetch(&[
        "create",
        s(&data),
        "-o",
        s(&out_t),
        "--piece-length",
        "16384",
        "--tracker",
        "http://127.0.0.1:1/announce",
        "--tracker",
        "udp://127.0.0.1:2",
        "--web-seed",
        "http://127.0.0.1:3/files/",
        "--private",
        "--comment",
        "a comment",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a terminal: no progress bar, nothing on stderr.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let magnet_line = String::from_utf8(out.stdout).unwrap();
    assert!(
        magnet_line.starts_with("magnet:?xt=urn:btih:"),
        "{magnet_line}"
    );

    let v = json(&["info", s(&out_t), "--json"]);
    let ih = v["infohash"].as_str().unwrap();
    assert_eq!(ih.len(), 40);
    assert!(ih
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert!(magnet_line.contains(ih));
    assert_eq!(v["name"], "tree");
    assert_eq!(v["total_size"], 50_000 + 6 + 12);
    assert_eq!(v["piece_length"], 16384);
    assert_eq!(v["pieces"], 4);
    assert_eq!(v["private"], true);
    assert_eq!(v["comment"], "a comment");
    let files: Vec<(String, u64)> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["length"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        files,
        vec![
            (".hidden".to_string(), 6),
            ("b.bin".into(), 50_000),
            ("sub/a.txt".into(), 12)
        ]
    );
    assert_eq!(
        v["trackers"],
        serde_json::json!(["http://127.0.0.1:1/announce", "udp://127.0.0.1:2"])
    );
    assert_eq!(
        v["web_seeds"],
        serde_json::json!(["http://127.0.0.1:3/files/"])
    );

    // `magnet` prints the same link `create` printed.
    let out = magnetfetch(&["magnet", s(&out_t)]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), magnet_line);
    assert!(magnet_line.contains("&dn=tree&tr=http%3A%2F%2F127.0.0.1%3A1%2Fannounce&tr=udp"));
    assert!(magnet_line.contains("&ws=http%3A%2F%2F127.0.0.1%3A3%2Ffiles%2F"));

    // `info` on that magnet shows what the magnet has.
    let m = json(&["info", magnet_line.trim(), "--json"]);
    assert_eq!(m["infohash"], ih);
    assert_eq!(m["name"], "tree");
    assert_eq!(m["trackers"], v["trackers"]);
    assert_eq!(m["web_seeds"], v["web_seeds"]);

    // Text mode works too.
    let out = magnetfetch(&["info", s(&out_t)]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(ih) && text.contains("sub/a.txt"), "{text}");
}

#[test]
fn create_single_file_auto_piece_length() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("file.iso");
    std::fs::write(&f, vec![1u8; 3_000_000]).unwrap();
    let out_t = dir.path().join("f.torrent");
    let out = magnetfetch(&["create", s(&f), "-o", s(&out_t)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&["info", s(&out_t), "--json"]);
    assert_eq!(v["name"], "file.iso");
    assert_eq!(v["piece_length"], 16384); // 3 MB needs only 184 pieces of the minimum size
    assert_eq!(v["pieces"], 184);
    assert_eq!(
        v["files"],
        serde_json::json!([{"path": "file.iso", "length": 3_000_000}])
    );
    assert_eq!(v["trackers"], serde_json::json!([]));
}

#[test]
fn output_inside_the_tree_is_not_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tree");
    make_tree(&data);
    let out_t = data.join("tree.torrent");
    let first = magnetfetch(&["create", s(&data), "-o", s(&out_t)]);
    assert!(first.status.success());
    let v1 = json(&["info", s(&out_t), "--json"]);
    // The second run finds the first torrent inside the tree and must leave it out.
    let second = magnetfetch(&["create", s(&data), "-o", s(&out_t)]);
    assert!(second.status.success());
    let v2 = json(&["info", s(&out_t), "--json"]);
    assert_eq!(v1["files"], v2["files"]);
    assert_eq!(v1["infohash"], v2["infohash"]);
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn magnet_info_base32_and_extras() {
    let v = json(&[
        "info",
        "magnet:?xt=urn:btih:ZHQVOY7XELZD5GFCTXWN7LRUDOMNKMCW&dn=x%20y&x.pe=127.0.0.1:6881&so=0,2-3&zz=1",
        "--json",
    ]);
    assert_eq!(v["infohash"], "c9e15763f722f23e98a29decdfae341b98d53056");
    assert_eq!(v["name"], "x y");
    assert_eq!(v["peers"], serde_json::json!(["127.0.0.1:6881"]));
    assert_eq!(v["select_only"], serde_json::json!([[0, 0], [2, 3]]));
    assert!(v["total_size"].is_null() && v["files"].is_null());
}

#[test]
fn bad_inputs_exit_1_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let garbage = d.join("garbage.torrent");
    std::fs::write(&garbage, b"this is not bencode").unwrap();
    let v2 = d.join("v2.torrent");
    std::fs::write(
        &v2,
        b"d4:infod9:file treede12:meta versioni2e4:name1:x12:piece lengthi16384eee",
    )
    .unwrap();
    let evil = d.join("evil.torrent");
    std::fs::write(
        &evil,
        b"d4:infod5:filesld6:lengthi3e4:pathl2:..6:passwdeee4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee",
    )
    .unwrap();
    let empty_dir = d.join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let one = d.join("one");
    std::fs::write(&one, b"x").unwrap();
    let out_t = d.join("o.torrent");
    let missing = d.join("missing.torrent");
    let nope = d.join("nope");
    let deep_out = d.join("no/such/dir/o.torrent");

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["info", s(&missing)], "missing.torrent"),
        (vec!["info", s(&garbage), "--json"], "not a valid torrent"),
        (
            vec!["info", s(&v2)],
            "v2-only torrents are not yet supported",
        ),
        (vec!["info", s(&evil)], "invalid file path in torrent"),
        (
            vec!["info", "magnet:?dn=nohash"],
            "magnet link has no btih info-hash",
        ),
        (
            vec!["info", "magnet:?xt=urn:btih:1234"],
            "info-hash must be 40 hex or 32 base32 characters",
        ),
        (vec!["magnet", s(&garbage)], "not a valid torrent"),
        (vec!["magnet", s(d)], "cannot read"),
        (
            vec!["create", s(&empty_dir), "-o", s(&out_t)],
            "empty directory",
        ),
        (vec!["create", s(&nope), "-o", s(&out_t)], "nope"),
        (
            vec!["create", s(&one), "-o", s(&out_t), "--piece-length", "1000"],
            "power of two",
        ),
        (vec!["create", s(&one), "-o", s(&deep_out)], "cannot write"),
    ];
    for (args, expect) in cases {
        let out = magnetfetch(&args);
        let line = assert_cli_error(&out);
        assert!(
            line.contains(expect),
            "{args:?}: {line:?} should mention {expect:?}"
        );
    }
    assert!(!out_t.exists(), "no output written on failure");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["create", "x"],
        vec!["info"],
        vec!["create", "x", "-o", "y", "--piece-length", "abc"],
        vec!["bogus"],
    ] {
        let out = magnetfetch(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
