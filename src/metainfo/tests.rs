use super::create::{auto_piece_length, CreateError};
use super::*;
use crate::bencode::put_bytes;
use std::collections::BTreeMap;

fn bytes(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

/// A valid multi-file info dict as a Value, to be mutated by each rejection test.
fn multi_info() -> BTreeMap<Vec<u8>, Value> {
    let mut d = BTreeMap::new();
    d.insert(b"name".to_vec(), bytes("dir"));
    d.insert(b"piece length".to_vec(), Value::Int(16384));
    // 20000 bytes -> 2 pieces
    d.insert(b"pieces".to_vec(), Value::Bytes(vec![7u8; 40]));
    d.insert(
        b"files".to_vec(),
        Value::List(vec![file(&["a", "b.txt"], 10000), file(&["c"], 10000)]),
    );
    d
}

fn file(path: &[&str], len: i64) -> Value {
    let mut f = BTreeMap::new();
    f.insert(b"length".to_vec(), Value::Int(len));
    f.insert(
        b"path".to_vec(),
        Value::List(path.iter().map(|c| bytes(c)).collect()),
    );
    Value::Dict(f)
}

fn torrent_with_info(info: &[u8]) -> Vec<u8> {
    let mut t = b"d8:announce14:http://t/annce".to_vec();
    put_bytes(&mut t, b"info");
    t.extend_from_slice(info);
    t.push(b'e');
    t
}

#[test]
fn parses_multi_file_and_hashes_original_bytes() {
    let info = Value::Dict(multi_info()).encode();
    let m = Metainfo::from_bytes(&torrent_with_info(&info)).unwrap();
    assert_eq!(m.info_hash, InfoHash::new(Sha1::digest(&info).into()));
    assert_eq!(m.info.name, "dir");
    assert!(m.info.multi_file);
    assert_eq!(m.info.total_length(), 20000);
    assert_eq!(m.info.piece_count(), 2);
    assert_eq!(m.info.piece_len(0), 16384);
    assert_eq!(m.info.piece_len(1), 20000 - 16384);
    assert_eq!(m.info.piece_len(2), 0);
    assert_eq!(m.info.files[1].offset, 10000);
    assert_eq!(m.info.files[0].path_string(), "a/b.txt");
    assert_eq!(
        m.info.relative_path(&m.info.files[0]),
        PathBuf::from("dir/a/b.txt")
    );
    assert_eq!(m.announce.as_deref(), Some("http://t/annce"));
    assert_eq!(m.trackers(), vec!["http://t/annce"]);
    // to_bytes keeps the info bytes verbatim, so it parses back to the same torrent.
    assert_eq!(Metainfo::from_bytes(&m.to_bytes()).unwrap(), m);
}

#[test]
fn piece_to_file_slices() {
    let mut d = multi_info();
    // 10000 + 0 + 6384 + 3616 = 20000 bytes; pieces of 16384: [0,16384) and [16384,20000).
    d.insert(
        b"files".to_vec(),
        Value::List(vec![
            file(&["a"], 10000),
            file(&["empty"], 0),
            file(&["b"], 6384),
            file(&["c"], 3616),
        ]),
    );
    let info = Info::from_bytes(&Value::Dict(d).encode()).unwrap();
    let sl = |file_index, offset, len| FileSlice {
        file_index,
        offset,
        len,
    };
    assert_eq!(info.piece_slices(0), vec![sl(0, 0, 10000), sl(2, 0, 6384)]);
    assert_eq!(info.piece_slices(1), vec![sl(3, 0, 3616)]);
    assert_eq!(info.piece_slices(2), vec![]);
    assert_eq!(info.slices(9999, 2), vec![sl(0, 9999, 1), sl(2, 0, 1)]);
    assert_eq!(info.slices(19_999, 100), vec![sl(3, 3615, 1)]);
    assert_eq!(info.slices(20_000, 1), vec![]);
    assert_eq!(info.slices(5, 0), vec![]);
}

#[test]
fn unsorted_info_keys_keep_their_hash() {
    // Keys out of order: a re-encoding would sort them and change the hash.
    let info = b"d6:pieces20:aaaaaaaaaaaaaaaaaaaa4:name1:x12:piece lengthi16384e6:lengthi5ee";
    let m = Metainfo::from_bytes(&torrent_with_info(info)).unwrap();
    assert_eq!(m.info_hash, InfoHash::new(Sha1::digest(info).into()));
    assert_eq!(m.raw_info, info.to_vec());
    assert_ne!(m.info.to_bytes(), info.to_vec());
    assert!(!m.info.multi_file);
    assert_eq!(m.info.relative_path(&m.info.files[0]), PathBuf::from("x"));
}

#[test]
fn outer_fields() {
    let info = Value::Dict(multi_info()).encode();
    let mut t = b"d".to_vec();
    for (k, v) in [
        ("announce", bytes("http://a")),
        (
            "announce-list",
            Value::List(vec![
                Value::List(vec![bytes("http://a"), bytes("udp://b:1")]),
                Value::List(vec![]),
                Value::Int(3),
                Value::List(vec![bytes("http://c"), Value::Int(1)]),
            ]),
        ),
        ("comment", bytes("hi")),
        ("created by", bytes("me")),
        ("creation date", Value::Int(1700000000)),
    ] {
        put_bytes(&mut t, k.as_bytes());
        v.encode_into(&mut t);
    }
    put_bytes(&mut t, b"info");
    t.extend_from_slice(&info);
    put_bytes(&mut t, b"url-list");
    bytes("http://ws/file").encode_into(&mut t);
    t.extend_from_slice(b"e\n");
    let m = Metainfo::from_bytes(&t).unwrap();
    assert_eq!(
        m.announce_list,
        vec![
            vec!["http://a".to_string(), "udp://b:1".into()],
            vec!["http://c".into()]
        ]
    );
    assert_eq!(m.trackers(), vec!["http://a", "udp://b:1", "http://c"]);
    assert_eq!(m.url_list, vec!["http://ws/file"]);
    assert_eq!(m.comment.as_deref(), Some("hi"));
    assert_eq!(m.created_by.as_deref(), Some("me"));
    assert_eq!(m.creation_date, Some(1700000000));
    let mag = m.magnet();
    assert_eq!(mag.info_hash, m.info_hash);
    assert_eq!(mag.display_name.as_deref(), Some("dir"));
    assert_eq!(mag.web_seeds, vec!["http://ws/file"]);
    assert_eq!(Metainfo::from_bytes(&m.to_bytes()).unwrap(), m);
}

#[test]
fn padding_and_attributes() {
    let mut d = multi_info();
    let mut pad = BTreeMap::new();
    pad.insert(b"length".to_vec(), Value::Int(10000));
    pad.insert(
        b"path".to_vec(),
        Value::List(vec![bytes(".pad"), bytes("10000")]),
    );
    pad.insert(b"attr".to_vec(), bytes("p"));
    let mut exe = BTreeMap::new();
    exe.insert(b"length".to_vec(), Value::Int(10000));
    exe.insert(b"path".to_vec(), Value::List(vec![bytes("run")]));
    exe.insert(b"attr".to_vec(), bytes("xh"));
    d.insert(
        b"files".to_vec(),
        Value::List(vec![Value::Dict(pad), Value::Dict(exe)]),
    );
    let info = Info::from_bytes(&Value::Dict(d).encode()).unwrap();
    assert!(info.files[0].pad && !info.files[0].executable);
    assert!(!info.files[1].pad && info.files[1].executable && info.files[1].hidden);
    // Our canonical encoding keeps the attributes.
    assert_eq!(Info::from_bytes(&info.to_bytes()).unwrap(), info);
}

fn reject(d: BTreeMap<Vec<u8>, Value>) -> MetainfoError {
    let raw = Value::Dict(d).encode();
    let e = Info::from_bytes(&raw).unwrap_err();
    // Via a whole .torrent the error is the same.
    assert_eq!(
        Metainfo::from_bytes(&torrent_with_info(&raw)).unwrap_err(),
        e
    );
    e
}

fn reject_path(path: &[&str]) -> String {
    let mut d = multi_info();
    d.insert(b"files".to_vec(), Value::List(vec![file(path, 20000)]));
    match reject(d) {
        MetainfoError::BadPath(s) => s,
        e => panic!("expected BadPath for {path:?}, got {e}"),
    }
}

#[test]
fn rejects_unsafe_paths() {
    assert!(reject_path(&["..", "etc", "passwd"]).contains("'..'"));
    assert!(reject_path(&["a", "..", "b"]).contains("'..'"));
    assert!(reject_path(&["/etc/passwd"]).contains("absolute"));
    assert!(reject_path(&["\\windows"]).contains("absolute"));
    assert!(reject_path(&["a", "", "b"]).contains("empty path component"));
    assert!(reject_path(&["a\0b"]).contains("NUL"));
    assert!(reject_path(&["a/b"]).contains("separator"));
    assert!(reject_path(&["a\\b"]).contains("separator"));
    assert!(reject_path(&["."]).contains("'.'"));
    assert!(reject_path(&["C:", "x"]).contains("drive"));
    assert!(reject_path(&[]).contains("empty path"));
    let deep: Vec<&str> = vec!["d"; MAX_PATH_DEPTH + 1];
    assert!(reject_path(&deep).contains("deeper"));
    // The message names the whole path.
    let msg = MetainfoError::BadPath(reject_path(&["x", ".."])).to_string();
    assert!(
        msg.starts_with("invalid file path in torrent: file 0 \"x/..\""),
        "{msg}"
    );
}

#[test]
fn rejects_unsafe_names() {
    for bad in ["..", "", "a/b", "/abs", "a\0"] {
        let mut d = multi_info();
        d.insert(b"name".to_vec(), bytes(bad));
        assert!(matches!(reject(d), MetainfoError::BadPath(_)), "{bad:?}");
    }
}

#[test]
fn rejects_bad_fields() {
    let mut d = multi_info();
    d.remove(b"name".as_slice());
    assert_eq!(reject(d), MetainfoError::Field("name"));

    let mut d = multi_info();
    d.insert(b"piece length".to_vec(), Value::Int(0));
    assert_eq!(reject(d), MetainfoError::BadPieceLength(0));
    let mut d = multi_info();
    d.insert(b"piece length".to_vec(), Value::Int(-5));
    assert!(matches!(reject(d), MetainfoError::BadPieceLength(_)));
    let mut d = multi_info();
    d.insert(b"piece length".to_vec(), Value::Int(1 << 40));
    assert!(matches!(reject(d), MetainfoError::BadPieceLength(_)));

    let mut d = multi_info();
    d.insert(b"pieces".to_vec(), Value::Bytes(vec![0; 39]));
    assert_eq!(reject(d), MetainfoError::BadPiecesLength(39));
    let mut d = multi_info();
    d.insert(b"pieces".to_vec(), Value::Bytes(vec![0; 60]));
    assert_eq!(
        reject(d),
        MetainfoError::PieceCountMismatch {
            expected: 2,
            got: 3
        }
    );
    let mut d = multi_info();
    d.insert(b"pieces".to_vec(), Value::Bytes(vec![0; 20]));
    assert_eq!(
        reject(d),
        MetainfoError::PieceCountMismatch {
            expected: 2,
            got: 1
        }
    );

    let mut d = multi_info();
    d.insert(b"files".to_vec(), Value::List(vec![file(&["a"], -1)]));
    assert_eq!(reject(d), MetainfoError::Field("files.length"));
    let mut d = multi_info();
    d.insert(b"files".to_vec(), Value::List(vec![]));
    assert_eq!(reject(d), MetainfoError::Field("files"));
    let mut d = multi_info();
    d.insert(
        b"files".to_vec(),
        Value::List(vec![file(&["a"], 1 << 62), file(&["b"], 1 << 62)]),
    );
    assert!(matches!(reject(d), MetainfoError::TooLarge(_)));
    let mut d = multi_info();
    d.insert(b"length".to_vec(), Value::Int(5));
    assert!(matches!(reject(d), MetainfoError::Field(_)));
    let mut d = multi_info();
    d.remove(b"files".as_slice());
    assert!(matches!(reject(d), MetainfoError::Field(_)));
    let mut d = multi_info();
    d.insert(b"files".to_vec(), Value::List(vec![file(&["a"], 0)]));
    d.insert(b"pieces".to_vec(), Value::Bytes(vec![]));
    assert_eq!(reject(d), MetainfoError::Empty);
}

#[test]
fn v2_only_rejected_hybrid_accepted() {
    let mut d = multi_info();
    d.remove(b"pieces".as_slice());
    d.remove(b"files".as_slice());
    d.insert(b"meta version".to_vec(), Value::Int(2));
    d.insert(b"file tree".to_vec(), Value::Dict(BTreeMap::new()));
    let e = reject(d);
    assert_eq!(e, MetainfoError::V2Only);
    assert_eq!(e.to_string(), "v2-only torrents are not yet supported");

    let mut d = multi_info();
    d.insert(b"meta version".to_vec(), Value::Int(2));
    d.insert(b"file tree".to_vec(), Value::Dict(BTreeMap::new()));
    let info = Info::from_bytes(&Value::Dict(d).encode()).unwrap();
    assert!(info.hybrid);
    assert_eq!(info.piece_count(), 2);
}

#[test]
fn rejects_bad_torrent_files() {
    assert!(matches!(
        Metainfo::from_bytes(b""),
        Err(MetainfoError::Bencode(_))
    ));
    assert!(matches!(
        Metainfo::from_bytes(b"hello"),
        Err(MetainfoError::Bencode(_))
    ));
    assert_eq!(Metainfo::from_bytes(b"li1ee"), Err(MetainfoError::NotADict));
    assert_eq!(
        Metainfo::from_bytes(b"d1:ai1ee"),
        Err(MetainfoError::NoInfo)
    );
    assert_eq!(
        Metainfo::from_bytes(b"d4:infoi1ee"),
        Err(MetainfoError::NoInfo)
    );
    let info = Value::Dict(multi_info()).encode();
    let mut t = torrent_with_info(&info);
    t.extend_from_slice(b"garbage");
    assert!(matches!(
        Metainfo::from_bytes(&t),
        Err(MetainfoError::Bencode(BencodeError::TrailingData(_)))
    ));
    let t = torrent_with_info(&info);
    assert!(matches!(
        Metainfo::from_bytes(&t[..t.len() - 3]),
        Err(MetainfoError::Bencode(_))
    ));
}

#[test]
fn from_info_bytes_matches_torrent() {
    let info = Value::Dict(multi_info()).encode();
    let a = Metainfo::from_info_bytes(&info).unwrap();
    let b = Metainfo::from_bytes(&torrent_with_info(&info)).unwrap();
    assert_eq!(a.info_hash, b.info_hash);
    assert_eq!(a.info, b.info);
    assert!(Metainfo::from_info_bytes(b"i1e").is_err());
    assert!(Metainfo::from_info_bytes(&vec![b'l'; MAX_INFO_SIZE + 1]).is_err());
}

// ---- creation ----

fn naive_pieces(data: &[u8], pl: usize) -> Vec<[u8; 20]> {
    data.chunks(pl).map(|c| Sha1::digest(c).into()).collect()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

#[test]
fn creates_multi_file_sorted_with_hidden_and_no_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("b.bin", pattern(40000, 1)),
        ("a-c", pattern(5, 2)),
        (".hidden", pattern(17000, 3)),
        ("sub/deeper/z", pattern(0, 4)),
        ("sub/x", pattern(33333, 5)),
        ("a/b", pattern(16384, 6)),
    ];
    for (p, d) in &files {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, d).unwrap();
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(root.join("b.bin"), root.join("link")).unwrap();
    // Expected order: component-wise byte order.
    let order = [".hidden", "a/b", "a-c", "b.bin", "sub/deeper/z", "sub/x"];
    let mut concat = Vec::new();
    for o in order {
        concat.extend_from_slice(&files.iter().find(|f| f.0 == o).unwrap().1);
    }
    for threads in [1, 2, 3, 7] {
        let opts = CreateOptions {
            piece_length: Some(16384),
            threads,
            trackers: vec!["http://t1/a".into(), "udp://t2:1".into()],
            web_seeds: vec!["http://ws/".into()],
            private: true,
            comment: Some("c".into()),
            ..Default::default()
        };
        let m = create(&root, &opts).unwrap();
        let paths: Vec<String> = m.info.files.iter().map(|f| f.path_string()).collect();
        assert_eq!(paths, order);
        assert_eq!(m.info.name, "data");
        assert!(m.info.private && m.info.multi_file);
        assert_eq!(
            m.info.pieces,
            naive_pieces(&concat, 16384),
            "threads={threads}"
        );
        assert_eq!(m.announce.as_deref(), Some("http://t1/a"));
        assert_eq!(m.announce_list.len(), 2);
        // Parsing our own output gives the same thing back.
        let back = Metainfo::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(back, m);
    }
}

#[test]
fn creates_single_file_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("one.dat");
    let data = pattern(100_001, 9);
    std::fs::write(&p, &data).unwrap();
    let last = std::sync::Mutex::new(0u64);
    let m = create_with_progress(&p, &CreateOptions::default(), &|d, t| {
        assert_eq!(t, 100_001);
        let mut l = last.lock().unwrap();
        *l = (*l).max(d);
    })
    .unwrap();
    assert_eq!(*last.lock().unwrap(), 100_001);
    assert!(!m.info.multi_file);
    assert_eq!(m.info.name, "one.dat");
    assert_eq!(m.info.piece_length, 16384);
    assert_eq!(m.info.pieces, naive_pieces(&data, 16384));
    assert_eq!(m.info.files[0].path, vec!["one.dat"]);
}

#[test]
fn create_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(
        create(&empty, &CreateOptions::default()),
        Err(CreateError::NoFiles(_))
    ));
    let zero = dir.path().join("zero");
    std::fs::write(&zero, b"").unwrap();
    assert!(matches!(
        create(&zero, &CreateOptions::default()),
        Err(CreateError::Empty(_))
    ));
    let missing = dir.path().join("missing");
    let e = create(&missing, &CreateOptions::default()).unwrap_err();
    assert!(matches!(e, CreateError::Io { .. }));
    assert!(e.to_string().contains("missing"));
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    for pl in [0, 1000, 8192, 1 << 29] {
        let opts = CreateOptions {
            piece_length: Some(pl),
            ..Default::default()
        };
        assert!(matches!(
            create(&dir.path().join("f"), &opts),
            Err(CreateError::BadPieceLength(_))
        ));
    }
}

#[test]
fn auto_piece_length_targets_1000_to_2000_pieces() {
    assert_eq!(auto_piece_length(1), 16 << 10);
    assert_eq!(auto_piece_length(1 << 30), 1 << 20);
    for total in [100u64 << 20, 1 << 30, 3 << 30, 7_777_777_777] {
        let pl = auto_piece_length(total);
        let n = total.div_ceil(pl);
        assert!(
            pl.is_power_of_two() && (1000..=2000).contains(&n),
            "{total}: {pl} {n}"
        );
    }
    assert_eq!(auto_piece_length(1 << 50), 16 << 20);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn arb_component() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 ._\u{e9}-]{1,12}".prop_filter("not . or ..", |c| c != "." && c != "..")
    }

    fn arb_info() -> impl Strategy<Value = Info> {
        (
            arb_component(),
            prop::sample::select(vec![1u64, 7, 16384, 1 << 20]),
            proptest::collection::vec(
                (
                    proptest::collection::vec(arb_component(), 1..4),
                    0u64..100_000,
                    any::<[bool; 3]>(),
                ),
                1..6,
            ),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_filter_map("needs data", |(name, pl, raw_files, multi, private)| {
                let raw_files = if multi {
                    raw_files
                } else {
                    raw_files.into_iter().take(1).collect()
                };
                let mut offset = 0;
                let files: Vec<FileEntry> = raw_files
                    .into_iter()
                    .map(|(path, length, [pad, x, h])| {
                        let e = FileEntry {
                            path: if multi { path } else { vec![name.clone()] },
                            length,
                            offset,
                            pad: pad && multi,
                            executable: x && multi,
                            hidden: h && multi,
                            symlink: false,
                        };
                        offset += length;
                        e
                    })
                    .collect();
                if offset == 0 || offset / pl > 50_000 {
                    return None;
                }
                let pieces = (0..offset.div_ceil(pl)).map(|i| [i as u8; 20]).collect();
                Some(Info {
                    name,
                    piece_length: pl,
                    pieces,
                    files,
                    multi_file: multi,
                    private,
                    hybrid: false,
                })
            })
    }

    proptest! {
        #[test]
        fn info_round_trip(info in arb_info()) {
            // Piece-to-file mapping covers every piece exactly, inside file bounds.
            for i in 0..info.piece_count().min(64) {
                let sl = info.piece_slices(i);
                prop_assert_eq!(sl.iter().map(|x| x.len).sum::<u64>(), info.piece_len(i));
                for x in &sl {
                    prop_assert!(x.offset + x.len <= info.files[x.file_index].length);
                }
            }
            let raw = info.to_bytes();
            let back = Info::from_bytes(&raw).unwrap();
            prop_assert_eq!(&back, &info);
            let m = Metainfo::from_info(info);
            prop_assert_eq!(Metainfo::from_bytes(&m.to_bytes()).unwrap(), m);
        }

        #[test]
        fn hostile_info_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Info::from_bytes(&bytes);
            let _ = Metainfo::from_bytes(&bytes);
        }

        #[test]
        fn mutated_torrent_never_panics(info in arb_info(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut t = Metainfo::from_info(info).to_bytes();
            let i = at.index(t.len());
            t[i] = byte;
            if let Ok(m) = Metainfo::from_bytes(&t) {
                // Whatever parses is still internally consistent.
                prop_assert_eq!(m.info.total_length().div_ceil(m.info.piece_length), m.info.piece_count() as u64);
                for f in &m.info.files {
                    for c in &f.path {
                        prop_assert!(check_component(c).is_ok());
                    }
                }
            }
        }
    }
}
