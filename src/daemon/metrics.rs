//! `GET /metrics`: the daemon in the Prometheus text exposition format (version 0.0.4):
//! `# HELP`/`# TYPE` per family, counters named `_total`, sizes in `_bytes`. Pure: renders
//! what the daemon and its DHT node report.

use std::collections::BTreeMap;
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

/// Connected peers over every torrent, by where their address came from and by transport.
#[derive(Clone, Debug, Default)]
pub struct PeerCounts {
    pub by_source: BTreeMap<&'static str, u64>,
    pub by_transport: BTreeMap<&'static str, u64>,
    pub encrypted: u64,
}

/// Counters summed over the torrents (each counts since the torrent last started, as the
/// per-torrent byte counters do; a removed torrent's counts leave the sum).
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub hash_failures: u64,
    pub bans: u64,
    /// Bytes of verified pieces written.
    pub disk_written: u64,
    /// Payload bytes sent to peers (each was read from disk to be sent).
    pub uploaded: u64,
    /// Bytes HTTP streams read from disk.
    pub stream_read: u64,
    pub announces_ok: u64,
    pub announces_failed: u64,
    /// Peer addresses received, by source.
    pub addresses: BTreeMap<&'static str, u64>,
}

/// Sources and transports always listed (0 when none), so a graph has every series.
const SOURCES: [&str; 7] = ["dht", "tracker", "pex", "lsd", "incoming", "given", "other"];
const TRANSPORTS: [&str; 3] = ["tcp", "utp", "quic"];

fn head(out: &mut String, name: &str, ty: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {ty}");
}

/// One sample without labels, with its `# HELP` and `# TYPE`.
fn single(out: &mut String, name: &str, ty: &str, help: &str, v: u64) {
    head(out, name, ty, help);
    let _ = writeln!(out, "{name} {v}");
}

/// One family with one label, every key of `keys` listed (0 when absent from `values`).
fn labelled(
    out: &mut String,
    (name, ty, help): (&str, &str, &str),
    label: &str,
    keys: &[&str],
    values: &BTreeMap<&'static str, u64>,
) {
    head(out, name, ty, help);
    for k in keys {
        let v = values.get(k).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
    }
}

/// The daemon-wide families: peers, trackers, hashing, disk, streams.
pub fn render_totals(out: &mut String, t: &Totals, peers: &PeerCounts, readers: u64) {
    labelled(
        out,
        (
            "magnetfetch_peers_by_source",
            "gauge",
            "Connected peers by where their address came from first.",
        ),
        "source",
        &SOURCES,
        &peers.by_source,
    );
    labelled(
        out,
        (
            "magnetfetch_peers_by_transport",
            "gauge",
            "Connected peers by transport.",
        ),
        "transport",
        &TRANSPORTS,
        &peers.by_transport,
    );
    single(
        out,
        "magnetfetch_peers_encrypted",
        "gauge",
        "Connected peers whose stream is RC4-enciphered (MSE/PE).",
        peers.encrypted,
    );
    labelled(
        out,
        (
            "magnetfetch_peer_addresses_total",
            "counter",
            "Peer addresses received, by source.",
        ),
        "source",
        &SOURCES[..5],
        &t.addresses,
    );
    let mut announces = BTreeMap::new();
    announces.insert("ok", t.announces_ok);
    announces.insert("error", t.announces_failed);
    labelled(
        out,
        (
            "magnetfetch_tracker_announces_total",
            "counter",
            "Tracker announces, by outcome.",
        ),
        "status",
        &["ok", "error"],
        &announces,
    );
    single(
        out,
        "magnetfetch_hash_failures_total",
        "counter",
        "Pieces that failed their hash check.",
        t.hash_failures,
    );
    single(
        out,
        "magnetfetch_bans_total",
        "counter",
        "Peers banned for sending corrupt data.",
        t.bans,
    );
    single(
        out,
        "magnetfetch_disk_write_bytes_total",
        "counter",
        "Bytes of verified pieces written to disk.",
        t.disk_written,
    );
    single(
        out,
        "magnetfetch_disk_read_bytes_total",
        "counter",
        "Bytes read from disk to serve peers and HTTP streams.",
        t.uploaded + t.stream_read,
    );
    single(
        out,
        "magnetfetch_stream_read_bytes_total",
        "counter",
        "Bytes HTTP streams read from disk.",
        t.stream_read,
    );
    single(
        out,
        "magnetfetch_stream_readers",
        "gauge",
        "HTTP streams reading a torrent's file now.",
        readers,
    );
}

/// The whole `/metrics` page.
pub fn render(
    torrents: &[TorrentView],
    dht: Option<&DhtStats>,
    totals: &Totals,
    peers: &PeerCounts,
) -> String {
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
    render_totals(&mut out, totals, peers, sum(|t| t.stream_readers as u64));
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
        let counters: [(&str, &str, u64); 6] = [
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
            (
                "magnetfetch_dht_queries_dropped_total",
                "KRPC queries received and dropped (rate limits, malformed).",
                d.queries_dropped,
            ),
            (
                "magnetfetch_dht_lookups_total",
                "Lookups (get_peers) finished.",
                d.lookups_done,
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
        let mut totals = Totals {
            bans: 1,
            uploaded: 10,
            stream_read: 5,
            ..Totals::default()
        };
        totals.addresses.insert("dht", 4);
        let mut peers = PeerCounts::default();
        peers.by_source.insert("pex", 2);
        peers.by_transport.insert("utp", 2);
        let page = render(&ts, None, &totals, &peers);
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
        for line in [
            "magnetfetch_peers_by_source{source=\"pex\"} 2",
            "magnetfetch_peers_by_source{source=\"dht\"} 0",
            "magnetfetch_peers_by_transport{transport=\"utp\"} 2",
            "magnetfetch_peer_addresses_total{source=\"dht\"} 4",
            "magnetfetch_tracker_announces_total{status=\"error\"} 0",
            "magnetfetch_bans_total 1",
            "magnetfetch_disk_read_bytes_total 15",
            "magnetfetch_stream_readers 0",
        ] {
            assert!(page.contains(&format!("{line}\n")), "{line} in {page}");
        }
    }
}
