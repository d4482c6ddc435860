//! `GET /metrics`: the daemon in the Prometheus text exposition format (version 0.0.4):
//! `# HELP`/`# TYPE` per family, counters named `_total`, sizes in `_bytes`. Pure: renders
//! what the daemon and its DHT node report.

use std::fmt::Write;

use super::{State, TorrentView};
use crate::dht::node::DhtStats;

/// Families about every torrent, by `(name, type, help, value)`.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TorrentView) -> u64,
);

const PER_TORRENT: [Family; 9] = [
    (
        "magnetfetch_torrent_verified_bytes",
        "gauge",
        "Bytes in verified pieces.",
        |t| t.downloaded,
    ),
    (
        "magnetfetch_torrent_size_bytes",
        "gauge",
        "Size of the torrent (0 until the metadata is known).",
        |t| t.total_size,
    ),
    (
        "magnetfetch_torrent_received_bytes_total",
        "counter",
        "Payload bytes received since the torrent last started.",
        |t| t.received,
    ),
    (
        "magnetfetch_torrent_sent_bytes_total",
        "counter",
        "Payload bytes sent since the torrent last started.",
        |t| t.uploaded,
    ),
    (
        "magnetfetch_torrent_download_rate_bytes",
        "gauge",
        "Payload bytes received per second, recently.",
        |t| t.down_rate,
    ),
    (
        "magnetfetch_torrent_upload_rate_bytes",
        "gauge",
        "Payload bytes sent per second, recently.",
        |t| t.up_rate,
    ),
    (
        "magnetfetch_torrent_peers",
        "gauge",
        "Connected peers.",
        |t| t.peers as u64,
    ),
    (
        "magnetfetch_torrent_seeds",
        "gauge",
        "Connected peers that have every piece.",
        |t| t.seeds as u64,
    ),
    (
        "magnetfetch_torrent_stream_readers",
        "gauge",
        "HTTP streams reading the torrent's files now.",
        |t| t.stream_readers as u64,
    ),
];

fn head(out: &mut String, name: &str, ty: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {ty}");
}

/// The whole `/metrics` page.
pub fn render(torrents: &[TorrentView], dht: Option<&DhtStats>) -> String {
    let mut out = String::new();
    head(
        &mut out,
        "magnetfetch_torrents",
        "gauge",
        "Torrents by state.",
    );
    for s in State::ALL {
        let n = torrents.iter().filter(|t| t.state == s).count();
        let _ = writeln!(out, "magnetfetch_torrents{{state=\"{}\"}} {n}", s.as_str());
    }
    for (name, ty, help, value) in PER_TORRENT {
        head(&mut out, name, ty, help);
        for t in torrents {
            // Labels are an integer and 40 hex digits: nothing to escape.
            let _ = writeln!(
                out,
                "{name}{{id=\"{}\",infohash=\"{}\"}} {}",
                t.id,
                t.infohash,
                value(t)
            );
        }
    }
    let sum = |f: fn(&TorrentView) -> u64| torrents.iter().map(f).sum::<u64>();
    head(
        &mut out,
        "magnetfetch_received_bytes_total",
        "counter",
        "Payload bytes received by every torrent since it last started.",
    );
    let _ = writeln!(
        out,
        "magnetfetch_received_bytes_total {}",
        sum(|t| t.received)
    );
    head(
        &mut out,
        "magnetfetch_sent_bytes_total",
        "counter",
        "Payload bytes sent by every torrent since it last started.",
    );
    let _ = writeln!(out, "magnetfetch_sent_bytes_total {}", sum(|t| t.uploaded));
    head(
        &mut out,
        "magnetfetch_peers",
        "gauge",
        "Connected peers over every torrent.",
    );
    let _ = writeln!(out, "magnetfetch_peers {}", sum(|t| t.peers as u64));
    if let Some(d) = dht {
        head(
            &mut out,
            "magnetfetch_dht_nodes",
            "gauge",
            "Nodes in the DHT routing tables (BEP 5, 32).",
        );
        let _ = writeln!(
            out,
            "magnetfetch_dht_nodes{{family=\"ipv4\"}} {}",
            d.table_v4
        );
        let _ = writeln!(
            out,
            "magnetfetch_dht_nodes{{family=\"ipv6\"}} {}",
            d.table_v6
        );
        let counters: [(&str, &str, u64); 4] = [
            (
                "magnetfetch_dht_queries_sent_total",
                "KRPC queries sent.",
                d.queries_sent,
            ),
            (
                "magnetfetch_dht_responses_total",
                "KRPC responses received to our queries.",
                d.responses,
            ),
            (
                "magnetfetch_dht_timeouts_total",
                "KRPC queries that timed out.",
                d.timeouts,
            ),
            (
                "magnetfetch_dht_queries_received_total",
                "KRPC queries received.",
                d.queries_received,
            ),
        ];
        for (name, help, v) in counters {
            head(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
        head(
            &mut out,
            "magnetfetch_dht_peers_stored",
            "gauge",
            "Peers stored for other nodes' announces.",
        );
        let _ = writeln!(out, "magnetfetch_dht_peers_stored {}", d.peers_stored);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u64, state: State, verified: u64) -> TorrentView {
        TorrentView {
            id,
            infohash: format!("{id:040x}"),
            name: Some("x".into()),
            state,
            progress: 0.5,
            downloaded: verified,
            total_size: 2 * verified,
            received: verified + 7,
            uploaded: 3,
            down_rate: 10,
            up_rate: 1,
            peers: 2,
            seeds: 1,
            known_peers: 5,
            eta: None,
            peers_tried: 0,
            metadata_pieces: 0,
            metadata_pieces_total: 0,
            output: "/tmp".into(),
            added: 0,
            error: None,
            stream_readers: 0,
            paused_because: None,
            queue_position: 0,
            settings: Default::default(),
        }
    }

    #[test]
    fn every_sample_belongs_to_a_declared_family_and_sums_add_up() {
        let ts = [
            view(1, State::Downloading, 100),
            view(2, State::Seeding, 50),
        ];
        let page = render(&ts, None);
        let mut declared = std::collections::HashSet::new();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                declared.insert(it.next().unwrap().to_string());
                let ty = it.next().unwrap();
                assert!(ty == "gauge" || ty == "counter", "{line}");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(declared.contains(name), "sample before its TYPE: {line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        for (name, ty, _, _) in PER_TORRENT {
            assert_eq!(name.ends_with("_total"), ty == "counter", "{name}");
        }
        assert!(page.contains("magnetfetch_torrents{state=\"downloading\"} 1\n"));
        assert!(page.contains("magnetfetch_torrents{state=\"error\"} 0\n"));
        assert!(
            page.contains("magnetfetch_received_bytes_total 164\n"),
            "{page}"
        );
        assert!(page.contains(&format!(
            "magnetfetch_torrent_verified_bytes{{id=\"2\",infohash=\"{:040x}\"}} 50\n",
            2
        )));
        assert!(!page.contains("magnetfetch_dht_nodes"));
    }
}
