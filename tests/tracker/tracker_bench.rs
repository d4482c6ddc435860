//! Benchmarks, not tests (ignored by default).
//!
//! `udp_announce_throughput`: UDP announce responses per second of our tracker
//! (`magnetfetch tracker`, the release binary) and of opentracker, driven by the same load
//! generator. Both servers run as processes pinned to core 1 (`taskset -c 1`); pin the load
//! generator (this test process) to core 0. The two are measured alternately, `ROUNDS` times
//! each, and the medians compared:
//! `taskset -c 0 cargo test --release --test tracker tracker_bench::udp -- --ignored --nocapture`.
//!
//! `http_announce_throughput`: HTTP announces per second of our tracker, from
//! [`HTTP_CONNS`] connections that ask for keep-alive (and reconnect whenever the server
//! closes, as ours does after every reply). With `MAGNETFETCH_BENCH_BEFORE=path/to/binary`
//! that other build of magnetfetch is measured alternately with this one (same pinning):
//! `MAGNETFETCH_BENCH_BEFORE=./mf-before taskset -c 0 cargo test --release --test tracker tracker_bench::http -- --ignored --nocapture`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use magnetfetch::internals::http::head::parse_response_head;
use magnetfetch::internals::id::Id20;
use magnetfetch::internals::net::Net;
use magnetfetch::internals::tracker::{http_proto, udp_proto};
use magnetfetch::internals::tracker::{AnnounceRequest, Event};

use crate::support::free_port;

const SOCKETS: usize = 8;
const WINDOW: usize = 32;
const HASHES: u32 = 1000;
const SECS: u64 = 5;
const ROUNDS: usize = 5;
const BIN: &str = env!("CARGO_BIN_EXE_magnetfetch");

fn hash(i: u32) -> Id20 {
    let mut b = [0x11u8; 20];
    b[..4].copy_from_slice(&i.to_be_bytes());
    Id20(b)
}

/// Drives `target` from one thread (current-thread runtime) and returns responses/s.
fn load(target: SocketAddr) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let count = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(SECS);
        for s in 0..SOCKETS {
            let count = count.clone();
            tasks.push(tokio::spawn(async move {
                let sock = Net::Tokio
                    .bind_udp("127.0.0.1:0".parse().unwrap())
                    .await
                    .unwrap();
                let mut buf = [0u8; 2048];
                sock.send_to(&udp_proto::encode_connect(s as u32), target)
                    .await
                    .unwrap();
                let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                let conn = udp_proto::parse_connect_response(&buf[..n], s as u32).unwrap();
                let mut i: u32 = s as u32 * 7919;
                while tokio::time::Instant::now() < deadline {
                    for _ in 0..WINDOW {
                        i = i.wrapping_add(1);
                        let req = AnnounceRequest {
                            info_hash: hash(i % HASHES),
                            peer_id: Id20([s as u8; 20]),
                            port: 1024 + (i % 50_000) as u16,
                            uploaded: 0,
                            downloaded: 0,
                            left: u64::from(i % 3),
                            event: Event::None,
                            numwant: Some(50),
                            key: i,
                            tracker_id: None,
                        };
                        let _ = sock
                            .send_to(&udp_proto::encode_announce(conn, i, &req), target)
                            .await;
                    }
                    let mut got = 0;
                    while got < WINDOW {
                        match tokio::time::timeout(
                            Duration::from_millis(50),
                            sock.recv_from(&mut buf),
                        )
                        .await
                        {
                            Ok(Ok((n, _))) if n >= 20 && buf[3] == 1 => {
                                got += 1;
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    })
}

/// HTTP connections open at once (spread over four source addresses: the server allows 32
/// per address).
const HTTP_CONNS: usize = 32;

/// Drives the HTTP tracker at `target` from one thread and returns successful announces/s.
fn http_load(target: SocketAddr) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let count = Arc::new(AtomicU64::new(0));
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(SECS);
        let mut tasks = Vec::new();
        for c in 0..HTTP_CONNS {
            let count = count.clone();
            tasks.push(tokio::spawn(async move {
                let src = std::net::IpAddr::from([127, 0, 0, 10 + (c % 4) as u8]);
                let mut conn = None;
                let mut buf = Vec::with_capacity(4096);
                let mut tmp = [0u8; 4096];
                let mut i: u32 = c as u32 * 7919;
                'requests: while tokio::time::Instant::now() < deadline {
                    i = i.wrapping_add(1);
                    let req = AnnounceRequest {
                        info_hash: hash(i % HASHES),
                        peer_id: Id20([c as u8; 20]),
                        port: 1024 + (i % 50_000) as u16,
                        uploaded: 0,
                        downloaded: 0,
                        left: u64::from(i % 3),
                        event: Event::None,
                        numwant: Some(50),
                        key: i,
                        tracker_id: None,
                    };
                    let head = format!(
                        "GET {} HTTP/1.1\r\nHost: {target}\r\nConnection: keep-alive\r\n\r\n",
                        http_proto::announce_url("/announce", &req)
                    );
                    let mut s = match conn.take() {
                        Some(s) => s,
                        None => match Net::Tokio.connect_from(Some(src), target).await {
                            Ok(s) => s,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                continue;
                            }
                        },
                    };
                    if s.write_all(head.as_bytes()).await.is_err() {
                        continue;
                    }
                    buf.clear();
                    let (h, n) = loop {
                        match parse_response_head(&buf) {
                            Ok(Some(x)) => break x,
                            Ok(None) => {}
                            Err(_) => continue 'requests,
                        }
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => continue 'requests,
                            Ok(k) => buf.extend_from_slice(&tmp[..k]),
                        }
                    };
                    let len: usize = h
                        .header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < n + len {
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => continue 'requests,
                            Ok(k) => buf.extend_from_slice(&tmp[..k]),
                        }
                    }
                    if h.status == 200 && buf[n..].starts_with(b"d8:complete") {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    if h.keep_alive() {
                        conn = Some(s);
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    })
}

/// Runs `cmd` pinned to core 1 when `taskset` exists (the server side of the benchmark).
fn pinned(cmd: &str) -> Command {
    if Path::new("/usr/bin/taskset").exists() {
        let mut c = Command::new("/usr/bin/taskset");
        c.args(["-c", "1", cmd]);
        c
    } else {
        Command::new(cmd)
    }
}

/// A TCP port that was free a moment ago (the HTTP announce server binds it).
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a server (after `wait` for it to bind), measures it, stops it; responses/s and the
/// server's CPU seconds (user+sys) during the run.
fn measure(cmd: Command, port: u16) -> (f64, f64) {
    measure_with(cmd, port, load)
}

fn measure_with(mut cmd: Command, port: u16, load: fn(SocketAddr) -> f64) -> (f64, f64) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tracker");
    std::thread::sleep(Duration::from_millis(700));
    let cpu0 = cpu_secs(child.id());
    let rate = load(SocketAddr::from(([127, 0, 0, 1], port)));
    let cpu = cpu_secs(child.id()) - cpu0;
    let _ = child.kill();
    let _ = child.wait();
    (rate, cpu)
}

/// user+sys CPU seconds of a process (`/proc/PID/stat` fields 14 and 15, at 100 ticks/s).
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After the ")": field 3 is index 0, so utime (14) is 11 and stime (15) is 12.
    (t(11) + t(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: run explicitly with --release -- --ignored --nocapture"]
fn udp_announce_throughput() {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let list: String = (0..HASHES).map(|i| hash(i).to_hex() + "\n").collect();
    std::fs::write(dir.path().join("white"), list).unwrap();
    let have_ot = Command::new("opentracker")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !have_ot {
        println!("opentracker: not installed, measuring ours only");
    }
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    // Rates, and responses per second of server CPU (user+sys): when the load generator
    // cannot saturate the server's core, the second is the per-core comparison.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut ours_cpu, mut theirs_cpu) = (Vec::new(), Vec::new());
    let per_cpu = |r: f64, cpu: f64| r * SECS as f64 / cpu.max(0.01);
    for round in 0..ROUNDS {
        let port = free_port();
        let mut c = pinned(BIN);
        c.args(["tracker", "--udp", &format!("127.0.0.1:{port}")])
            .args(["--per-ip-rate", "0", "--allow-list"])
            .arg(dir.path().join("white"));
        let (r, cpu) = measure(c, port);
        println!(
            "round {round}: magnetfetch tracker {r:>8.0} /s  (server CPU {cpu:.2} s, {:.0} per CPU-s)",
            per_cpu(r, cpu)
        );
        ours.push(r);
        ours_cpu.push(per_cpu(r, cpu));
        if have_ot {
            let port = free_port();
            let mut c = pinned("opentracker");
            c.args(["-i", "127.0.0.1", "-p", &port.to_string()])
                .args(["-P", &port.to_string()])
                .args(["-d", dir.path().to_str().unwrap(), "-w", "/white"]);
            let (r, cpu) = measure(c, port);
            println!(
                "round {round}: opentracker         {r:>8.0} /s  (server CPU {cpu:.2} s, {:.0} per CPU-s)",
                per_cpu(r, cpu)
            );
            theirs.push(r);
            theirs_cpu.push(per_cpu(r, cpu));
        }
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let (m, mc) = (median(ours), median(ours_cpu));
    println!(
        "median magnetfetch tracker: {m:.0} UDP announce responses/s, {mc:.0} per server CPU-s"
    );
    if have_ot {
        let (t, tc) = (median(theirs), median(theirs_cpu));
        println!(
            "median opentracker:         {t:.0} UDP announce responses/s, {tc:.0} per server CPU-s"
        );
        println!(
            "ratio magnetfetch/opentracker: {:.2} (rate), {:.2} (per server CPU-s)",
            m / t,
            mc / tc
        );
    }
    println!("load average before: {}", load_before.trim());
    println!("load average after:  {}", load_after.trim());
}

#[test]
#[ignore = "benchmark: run explicitly with --release -- --ignored --nocapture"]
fn http_announce_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let list: String = (0..HASHES).map(|i| hash(i).to_hex() + "\n").collect();
    std::fs::write(dir.path().join("white"), list).unwrap();
    let before = std::env::var("MAGNETFETCH_BENCH_BEFORE").ok();
    let mut bins = vec![("this build", BIN.to_string())];
    if let Some(b) = &before {
        bins.insert(0, ("before", b.clone()));
    }
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut rates = vec![Vec::new(); bins.len()];
    let mut per_cpu = vec![Vec::new(); bins.len()];
    for round in 0..ROUNDS {
        for (k, (label, bin)) in bins.iter().enumerate() {
            let port = free_tcp_port();
            let mut c = pinned(bin);
            c.args(["tracker", "--http", &format!("127.0.0.1:{port}")])
                .args(["--per-ip-rate", "0", "--allow-list"])
                .arg(dir.path().join("white"));
            let (r, cpu) = measure_with(c, port, http_load);
            let pc = r * SECS as f64 / cpu.max(0.01);
            println!(
                "round {round}: {label:<10} {r:>8.0} HTTP announces/s  (server CPU {cpu:.2} s, {pc:.0} per CPU-s)"
            );
            rates[k].push(r);
            per_cpu[k].push(pc);
        }
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    // When the one-thread load generator cannot saturate the server's core, announces per
    // server CPU-second is the comparison that holds.
    let medians: Vec<f64> = rates.into_iter().map(median).collect();
    let medians_cpu: Vec<f64> = per_cpu.into_iter().map(median).collect();
    for (((label, _), m), mc) in bins.iter().zip(&medians).zip(&medians_cpu) {
        println!("median {label:<10} {m:.0} HTTP announces/s, {mc:.0} per server CPU-s");
    }
    if medians.len() == 2 {
        println!(
            "ratio this build/before: {:.2} (rate), {:.2} (per server CPU-s)",
            medians[1] / medians[0],
            medians_cpu[1] / medians_cpu[0]
        );
    }
    println!("load average before: {}", load_before.trim());
    println!("load average after:  {}", load_after.trim());
}
