//! Interop for the torrent formats (BEP 3, 47, 52): torrents made by `magnetfetch create`
//! load in libtorrent with the same info-hash and pass libtorrent's own hash check against
//! the data; torrents made by libtorrent (v1-only and hybrid v1+v2 with padding files) and by
//! `mktorrent` give, in `magnetfetch info --json`, the info-hash their makers compute.

use crate::support::{assert_cli_error, lt_json, magnetfetch, require_or_skip};
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn info_json(torrent: &Path) -> serde_json::Value {
    let out = magnetfetch(&["info", s(torrent), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Deterministic, non-repeating content so that every piece hash differs.
fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("dir/nested")).unwrap();
    std::fs::write(root.join("big.bin"), content(300_000, 1)).unwrap();
    std::fs::write(root.join(".dotfile"), content(1000, 2)).unwrap();
    std::fs::write(root.join("dir/nested/small"), content(17, 3)).unwrap();
    std::fs::write(root.join("dir/empty"), b"").unwrap();
    std::fs::write(root.join("dir/mid.dat"), content(70_000, 4)).unwrap();
}

fn lt_check(torrent: &Path, save_path: &Path) -> (String, u64, u64) {
    let out = lt_json("formats-check", &[s(torrent), s(save_path)]);
    let mut lines = out.lines();
    let ih = lines.next().unwrap().trim().to_string();
    let counts: Vec<u64> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    (ih, counts[0], counts[1])
}

#[test]
fn created_torrents_load_and_verify_in_libtorrent() {
    if !require_or_skip("libtorrent") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_parent = dir.path().join("data");
    let tree = data_parent.join("tree");
    make_tree(&tree);
    let single = data_parent.join("single.bin");
    std::fs::write(&single, content(123_457, 9)).unwrap();

    for (src, pl) in [(&tree, "16384"), (&single, "32768")] {
        let t = dir.path().join("made.torrent");
        let out = magnetfetch(&[
            "create",
            s(src),
            "-o",
            s(&t),
            "--piece-length",
            pl,
            "--tracker",
            "http://127.0.0.1:9/announce",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = info_json(&t)["infohash"].as_str().unwrap().to_string();
        let (lt_hash, have, total) = lt_check(&t, &data_parent);
        assert_eq!(lt_hash, ours, "libtorrent computes the same info-hash");
        assert!(total > 1);
        assert_eq!(
            have, total,
            "libtorrent verified every piece against the data"
        );
    }

    // Negative control: corrupt one byte and libtorrent must find exactly one bad piece, so
    // the check above really compared hashes.
    let t = dir.path().join("tree.torrent");
    let out = magnetfetch(&["create", s(&tree), "-o", s(&t), "--piece-length", "16384"]);
    assert!(out.status.success());
    let mut big = std::fs::read(tree.join("big.bin")).unwrap();
    big[100_000] ^= 0xff;
    std::fs::write(tree.join("big.bin"), big).unwrap();
    let (_, have, total) = lt_check(&t, &data_parent);
    assert_eq!(have + 1, total);
}

#[test]
fn libtorrent_made_torrents_give_the_same_info_hash() {
    if !require_or_skip("libtorrent") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    for mode in ["v1", "hybrid"] {
        let t = dir.path().join(format!("{mode}.torrent"));
        let out = lt_json("formats-make", &[s(&tree), s(&t), mode]);
        let mut lines = out.lines();
        let lt_hash = lines.next().unwrap().trim().to_string();
        let nums: Vec<u64> = lines
            .next()
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        let v = info_json(&t);
        assert_eq!(v["infohash"], lt_hash.as_str(), "{mode}");
        assert_eq!(v["pieces"], nums[0], "{mode}");
        assert_eq!(v["total_size"], nums[1], "{mode}");
        assert_eq!(v["name"], "tree");
        assert_eq!(v["piece_length"], 16384);
        assert_eq!(
            v["trackers"],
            serde_json::json!(["http://127.0.0.1:9/announce", "udp://127.0.0.1:10"])
        );
        assert_eq!(
            v["web_seeds"],
            serde_json::json!(["http://127.0.0.1:11/ws/"])
        );
        // Real (non-padding) files, as libtorrent laid them out.
        let real: u64 = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f.get("pad").is_none())
            .map(|f| f["length"].as_u64().unwrap())
            .sum();
        assert_eq!(real, 300_000 + 1000 + 17 + 70_000, "{mode}");
        if mode == "hybrid" {
            // Hybrid torrents align files to pieces with BEP 47 padding files.
            assert!(v["files"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f.get("pad").is_some()));
        }
    }
    // v2-only: a clear refusal.
    let t = dir.path().join("v2.torrent");
    lt_json("formats-make", &[s(&tree), s(&t), "v2"]);
    let line = assert_cli_error(&magnetfetch(&["info", s(&t)]));
    assert!(
        line.contains("v2-only torrents are not yet supported"),
        "{line}"
    );
}

#[test]
fn mktorrent_made_torrents_give_the_same_info_hash() {
    if !require_or_skip("mktorrent") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree);
    let single = dir.path().join("single.bin");
    std::fs::write(&single, content(99_999, 5)).unwrap();
    for (src, name) in [(&tree, "tree"), (&single, "single.bin")] {
        let t = dir.path().join(format!("{name}.torrent"));
        let out = std::process::Command::new("mktorrent")
            .args([
                "-a",
                "http://127.0.0.1:9/announce",
                "-w",
                "http://127.0.0.1:11/ws",
                "-l",
                "15",
                "-c",
                "made by mktorrent",
            ])
            .arg("-o")
            .arg(&t)
            .arg(src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mktorrent: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expect = lt_json("infohash", &[s(&t)]).trim().to_string();
        assert_eq!(expect.len(), 40);
        let v = info_json(&t);
        assert_eq!(v["infohash"], expect.as_str(), "{name}");
        assert_eq!(v["name"], name);
        assert_eq!(v["piece_length"], 32768);
        assert_eq!(v["comment"], "made by mktorrent");
        assert_eq!(
            v["trackers"],
            serde_json::json!(["http://127.0.0.1:9/announce"])
        );
        assert_eq!(
            v["web_seeds"],
            serde_json::json!(["http://127.0.0.1:11/ws"])
        );
        // And our magnet command carries that same hash.
        let out = magnetfetch(&["magnet", s(&t)]);
        assert!(String::from_utf8_lossy(&out.stdout).contains(&expect));
    }
}
