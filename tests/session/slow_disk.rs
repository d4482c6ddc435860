//! A disk a hundred times slower than the network, on simnet's paused clock: the
//! downloader's bytes waiting for the disk stay within `SwarmConfig::max_unwritten` (plus
//! the pieces that blocks already read when the gate closed complete: at most two, one
//! socket read's worth) the whole time, and the file arrives intact.
//!
//! The seeder's host sends at 1 GB/s; the downloader's storage writes at 10 MB/s
//! (`SwarmConfig::disk_write_rate`, a modelled disk in virtual time). The gauge
//! (`session::backlog::DiskBacklog`) is sampled every simulated millisecond and its exact
//! peak is checked too. Over TCP and over QUIC (whose stream credit is the backpressure).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use magnetfetch::internals::dial::{DialConfig, TransportMode};
use magnetfetch::internals::session::backlog::DiskBacklog;
use magnetfetch::internals::session::{AddTorrent, Source, StorageSpec};
use magnetfetch::internals::sim::{make_metainfo, Scenario};
use magnetfetch::internals::torrent::layout::{FileSpec, Layout};
use magnetfetch::internals::torrent::storage::generate;

const NET_RATE: u64 = 1_000_000_000;
const DISK_RATE: u64 = 10_000_000;
const BOUND: u64 = 2 << 20;

async fn session(
    net: &simnet::Network,
    i: u8,
    mode: TransportMode,
) -> magnetfetch::internals::session::Session {
    let ip = IpAddr::from([10, 0, 0, i]);
    let h = net
        .add_host_with(
            simnet::HostConfig::new(ip)
                .latency(Duration::from_millis(1))
                .rate(NET_RATE),
        )
        .unwrap();
    let transport = DialConfig {
        mode,
        ..Default::default()
    };
    // Distinct rng seeds: distinct peer ids.
    crate::support::sim_session_on(h, SocketAddr::new(ip, 6881), u64::from(i), transport).await
}

async fn slow_disk_download(mode: TransportMode) {
    let net = simnet::Network::new(3);
    let sc = Scenario {
        size: 24 << 20,
        piece_length: 256 << 10,
        ..Scenario::default()
    };
    let meta = make_metainfo(&sc).unwrap();
    let seeder = session(&net, 1, mode).await;
    let _seeding = seeder.add(crate::support::sim_seeding(&meta, sc.seed));
    let leecher = session(&net, 2, mode).await;
    let dir = tempfile::tempdir().unwrap();
    let mut add = AddTorrent::new(
        Source::Metainfo(meta.clone()),
        StorageSpec::Disk(dir.path().to_path_buf()),
    );
    add.peers = vec![seeder.listen_addr().unwrap()];
    add.swarm.blocking_io = false;
    add.swarm.max_unwritten = BOUND;
    add.swarm.disk_write_rate = Some(DISK_RATE);
    let gauge = Arc::new(DiskBacklog::default());
    add.swarm.disk_backlog = Some(gauge.clone());

    // Sample the gauge every simulated millisecond while the download runs.
    let sampled = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn({
        let (gauge, sampled, samples) = (gauge.clone(), sampled.clone(), samples.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            loop {
                tick.tick().await;
                sampled.fetch_max(gauge.bytes(), Ordering::Relaxed);
                samples.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let t0 = tokio::time::Instant::now();
    let out = leecher.add(add).wait().await.expect("download failed");
    let took = t0.elapsed();
    sampler.abort();

    assert!(out.summary.complete, "{:?}", out.summary);
    assert_eq!(out.summary.failed_pieces, 0);
    // The disk was the bottleneck: 24 MiB at 10 MB/s is 2.5 s (the network alone: 25 ms).
    let disk_secs = sc.size as f64 / DISK_RATE as f64;
    assert!(took.as_secs_f64() >= disk_secs, "{took:?}");
    assert!(took.as_secs_f64() < disk_secs * 1.5, "{took:?}");
    let (peak, max_sampled) = (gauge.peak(), sampled.load(Ordering::Relaxed));
    eprintln!(
        "{mode:?}: {took:?}, bytes waiting for the disk: peak {peak}, max sampled {max_sampled} \
         ({} samples), bound {BOUND}",
        samples.load(Ordering::Relaxed)
    );
    // The bound held at every sample and at every change of the gauge. Readers stop at the
    // bound, so it can be passed only by pieces that blocks already read complete: one
    // socket read (at most 256 KiB) completes at most two pieces.
    let slack = 2 * sc.piece_length;
    assert!(samples.load(Ordering::Relaxed) > 2000);
    assert!(
        max_sampled <= BOUND + slack,
        "sampled {max_sampled} > {BOUND} + {slack}"
    );
    assert!(peak <= BOUND + slack, "peak {peak} > {BOUND} + {slack}");
    // ...and was reached: the disk really was behind.
    assert!(peak + sc.piece_length >= BOUND, "peak {peak}");
    assert_eq!(gauge.bytes(), 0, "everything was written");

    // Every byte on disk is the seeder's.
    let layout = Layout::new(
        sc.piece_length,
        vec![FileSpec {
            path: vec!["sim.bin".into()],
            length: sc.size,
            pad: false,
        }],
    )
    .unwrap();
    let got = std::fs::read(dir.path().join("sim.bin")).unwrap();
    assert_eq!(got.len() as u64, sc.size);
    let mut want = vec![0u8; sc.piece_length as usize];
    for (i, chunk) in got.chunks(sc.piece_length as usize).enumerate() {
        generate(sc.seed, &layout, i as u32, 0, &mut want[..chunk.len()]);
        assert!(chunk == &want[..chunk.len()], "piece {i} differs");
    }
}

#[tokio::test(start_paused = true)]
async fn slow_disk_bounds_buffered_bytes_over_tcp() {
    slow_disk_download(TransportMode::Tcp).await;
}

#[tokio::test(start_paused = true)]
async fn slow_disk_bounds_buffered_bytes_over_quic() {
    slow_disk_download(TransportMode::Quic).await;
}
