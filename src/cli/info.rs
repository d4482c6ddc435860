//! `magnetfetch info (FILE.torrent | MAGNET) [--json]`: show a torrent's or a magnet's
//! contents. The `--json` shape is a contract: `infohash` (40 lowercase hex), `name`,
//! `total_size`, `piece_length`, `pieces` (count), `files` (`[{path, length}]`, path
//! `/`-joined below the torrent's directory), `trackers`, `web_seeds`, and more.

use std::io::Read;
use std::path::Path;

use serde_json::json;

use super::progress::sanitize as safe;
use super::{print_out, CliError, CliResult};
use crate::magnet::Magnet;
use crate::metainfo::{Metainfo, MAX_TORRENT_SIZE};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A .torrent file or a magnet link
    #[arg(value_name = "FILE.torrent|MAGNET")]
    pub input: String,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// Reads and parses a .torrent file, refusing oversized files before reading them.
pub fn read_torrent(path: &Path) -> Result<Metainfo, CliError> {
    let buf = read_torrent_bytes(path)?;
    Metainfo::from_bytes(&buf).map_err(|e| CliError::msg(format!("{}: {e}", path.display())))
}

/// A .torrent file's bytes, bounded by the largest torrent accepted (not parsed).
pub fn read_torrent_bytes(path: &Path) -> Result<Vec<u8>, CliError> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::msg(format!("cannot read {shown}: {e}")))?;
    let mut buf = Vec::new();
    file.take(MAX_TORRENT_SIZE as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CliError::msg(format!("cannot read {shown}: {e}")))?;
    if buf.len() > MAX_TORRENT_SIZE {
        return Err(CliError::msg(format!(
            "{shown}: file is too large to be a torrent"
        )));
    }
    Ok(buf)
}

pub fn run(args: Args) -> CliResult {
    let is_magnet = args
        .input
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("magnet:"));
    let text = if is_magnet {
        let m = Magnet::parse(&args.input)?;
        if args.json {
            magnet_json(&m)
        } else {
            magnet_text(&m)
        }
    } else {
        let m = read_torrent(Path::new(&args.input))?;
        if args.json {
            torrent_json(&m)
        } else {
            torrent_text(&m)
        }
    };
    print_out(&text)
}

fn torrent_json(m: &Metainfo) -> String {
    let files: Vec<_> = m
        .info
        .files
        .iter()
        .map(|f| {
            let mut o = json!({ "path": f.path_string(), "length": f.length });
            if f.pad {
                o["pad"] = json!(true);
            }
            o
        })
        .collect();
    let v = json!({
        "kind": "torrent",
        "infohash": m.info_hash.to_hex(),
        "name": m.info.name,
        "total_size": m.info.total_length(),
        "piece_length": m.info.piece_length,
        "pieces": m.info.piece_count(),
        "files": files,
        "multi_file": m.info.multi_file,
        "private": m.info.private,
        "trackers": m.trackers(),
        "announce_list": m.announce_list,
        "web_seeds": m.url_list,
        "comment": m.comment,
        "created_by": m.created_by,
        "creation_date": m.creation_date,
        "magnet": m.magnet().to_uri(),
    });
    format!("{v}\n")
}

fn magnet_json(m: &Magnet) -> String {
    let so = m.select_only.as_ref().map(|rs| {
        rs.iter()
            .map(|r| json!([r.start(), r.end()]))
            .collect::<Vec<_>>()
    });
    let v = json!({
        "kind": "magnet",
        "infohash": m.info_hash.to_hex(),
        "name": m.display_name,
        "trackers": m.trackers,
        "web_seeds": m.web_seeds,
        "peers": m.peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "select_only": so,
        "magnet": m.to_uri(),
        // Same shape as a torrent's object; these are unknown until the metadata arrives.
        "total_size": null,
        "piece_length": null,
        "pieces": null,
        "files": null,
    });
    format!("{v}\n")
}

/// `1.5 GiB (1610612736 bytes)`.
fn size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {} ({n} bytes)", UNITS[u])
    }
}

fn torrent_text(m: &Metainfo) -> String {
    use std::fmt::Write;
    let i = &m.info;
    let mut s = String::new();
    let _ = writeln!(s, "name:          {}", safe(&i.name));
    let _ = writeln!(s, "info-hash:     {}", m.info_hash);
    let _ = writeln!(s, "total size:    {}", size(i.total_length()));
    let _ = writeln!(
        s,
        "pieces:        {} x {}",
        i.piece_count(),
        size(i.piece_length)
    );
    let _ = writeln!(s, "private:       {}", if i.private { "yes" } else { "no" });
    if i.hybrid {
        let _ = writeln!(s, "format:        hybrid v1+v2 (using v1)");
    }
    if let Some(c) = &m.comment {
        let _ = writeln!(s, "comment:       {}", safe(c));
    }
    if let Some(c) = &m.created_by {
        let _ = writeln!(s, "created by:    {}", safe(c));
    }
    if let Some(d) = m.creation_date {
        let _ = writeln!(s, "creation date: {} (unix time {d})", iso8601(d));
    }
    if m.announce_list.is_empty() {
        for t in m.trackers() {
            let _ = writeln!(s, "tracker:       {}", safe(&t));
        }
    } else {
        for (n, tier) in m.announce_list.iter().enumerate() {
            for t in tier {
                let _ = writeln!(s, "tracker:       [tier {}] {}", n + 1, safe(t));
            }
        }
    }
    for w in &m.url_list {
        let _ = writeln!(s, "web seed:      {}", safe(w));
    }
    // The index is what `--only` and a magnet's `so=` take (BEP 53): padding files count.
    let _ = writeln!(s, "files ({}):", i.files.len());
    let _ = writeln!(s, "  {:>5}  {:>14}  path", "index", "bytes");
    for (n, f) in i.files.iter().enumerate() {
        let pad = if f.pad { "  (padding)" } else { "" };
        let _ = writeln!(
            s,
            "  {n:>5}  {:>14}  {}{pad}",
            f.length,
            safe(&f.path_string())
        );
    }
    s
}

/// A unix time as ISO 8601 in UTC, e.g. `2026-12-03T08:12:21Z` (proleptic Gregorian
/// calendar; days to civil date after Howard Hinnant's public-domain algorithm).
pub fn iso8601(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn magnet_text(m: &Magnet) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "name:          {}",
        safe(m.display_name.as_deref().unwrap_or("(none)"))
    );
    let _ = writeln!(s, "info-hash:     {}", m.info_hash);
    for t in &m.trackers {
        let _ = writeln!(s, "tracker:       {}", safe(t));
    }
    for w in &m.web_seeds {
        let _ = writeln!(s, "web seed:      {}", safe(w));
    }
    for p in &m.peers {
        let _ = writeln!(s, "peer:          {p}");
    }
    if let Some(sel) = &m.select_only {
        let _ = writeln!(
            s,
            "select only:   files {}",
            crate::magnet::format_selection(sel)
        );
    }
    let _ = writeln!(
        s,
        "(size and files are known once the metadata is fetched from peers)"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_796_285_541), "2026-12-03T08:12:21Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn magnet_text_escapes_control_characters() {
        let m = Magnet::parse(&format!(
            "magnet:?xt=urn:btih:{}&dn=%1b%5b2J%1b]0;owned%07x",
            "ab".repeat(20)
        ))
        .unwrap();
        let t = magnet_text(&m);
        assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
        assert!(t.contains("\\u{1b}[2J"), "{t}");
    }
}
