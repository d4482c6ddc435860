#!/usr/bin/python3
"""Loopback transfer benchmark: magnetfetch vs libtorrent (python3-libtorrent), 127.0.0.x only.

    cargo build --release --examples && /usr/bin/python3 benches/loopback.py [--size 1G] [--runs 3]

Scenarios (each download is a fresh process into a fresh directory under --dir):
  mf->mf  : examples/loopback_seed seeds, examples/loopback_get downloads (bare info-hash +
            the seeder's address; metadata over BEP 9, then pieces).
  lt->mf  : a libtorrent seeder; magnetfetch (loopback_get) downloads it.
  lt->lt  : the same libtorrent seeder; a fresh libtorrent session downloads it.
  lt->mf and lt->lt alternate, run after run, against the same seeder.

Per run: time from adding the magnet to completion as measured by the downloader itself
(process start-up excluded), and the OS's own accounting of the downloader process via
wait4(2): user+sys CPU seconds and peak RSS. Prints a markdown table of medians.
"""
import argparse, filecmp, json, os, shutil, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EX = os.path.join(ROOT, "target", "release", "examples")

LT = r'''
import json, os, sys, time
import libtorrent as lt
def session(ip):
    # Loopback settings from shared/tools/swarm.py; uTP off so both speak plain TCP.
    return lt.session({
        "listen_interfaces": ip + ":0", "outgoing_interfaces": ip,
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True, "alert_mask": 0,
    })
if sys.argv[1] == "seed":
    ip, path, piece = sys.argv[2], sys.argv[3], int(sys.argv[4])
    fs = lt.file_storage(); lt.add_files(fs, path)
    ct = lt.create_torrent(fs, piece); lt.set_piece_hashes(ct, os.path.dirname(path))
    ti = lt.torrent_info(ct.generate())
    s = session(ip)
    # No seed_mode: libtorrent checks the file up front, so no run pays for lazy hashing.
    h = s.add_torrent({"ti": ti, "save_path": os.path.dirname(path)})
    while not h.status().is_seeding: time.sleep(0.05)
    print(json.dumps({"port": s.listen_port(), "info_hash": str(ti.info_hashes().v1)}), flush=True)
    sys.stdin.read()
else:
    ip, ih, peer, d = sys.argv[2:6]
    s = session(ip)
    p = lt.parse_magnet_uri("magnet:?xt=urn:btih:" + ih); p.save_path = d
    host, port = peer.rsplit(":", 1)
    t0 = time.time(); h = s.add_torrent(p); h.connect_peer((host, int(port)))
    meta = None
    while time.time() - t0 < 600:
        st = h.status()
        if meta is None and st.has_metadata: meta = time.time() - t0
        if st.is_seeding: break
        time.sleep(0.01)
    st = h.status()
    print(json.dumps({"metadata_ms": int((meta or 0) * 1000), "total_ms": int((time.time() - t0) * 1000),
                      "bytes": st.total_payload_download, "complete": st.is_seeding}), flush=True)
'''

def parse_size(s):
    m = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * m[s[-1]] if s[-1] in m else int(s)

def run_measured(argv):
    """Runs argv to completion; returns (json of its last stdout line, cpu_s, maxrss_kib)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    lines = out.decode().strip().splitlines()
    if p.returncode != 0 or not lines:
        raise SystemExit(f"{argv[0]} failed ({p.returncode}): {out!r}")
    return json.loads(lines[-1]), ru.ru_utime + ru.ru_stime, ru.ru_maxrss

def proc_cpu(pid):
    """user+sys CPU seconds of a running process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def start_server(argv):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    line = p.stdout.readline()
    if not line:
        raise SystemExit(f"{argv} did not start")
    return p, json.loads(line)

def download(kind, ih, peer, base, src, n, seed_pid=None):
    d = os.path.join(base, f"dl-{kind}-{n}")
    shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
    if kind == "mf":
        argv = [os.path.join(EX, "loopback_get"), ih, peer, d, "127.0.0.52"]
    else:
        argv = ["/usr/bin/python3", "-W", "ignore", "-c", LT, "leech", "127.0.0.53", ih, peer, d]
    s0 = proc_cpu(seed_pid) if seed_pid else 0.0
    j, cpu, rss = run_measured(argv)
    seed_cpu = proc_cpu(seed_pid) - s0 if seed_pid else 0.0
    got = os.path.join(d, os.path.basename(src))
    ok = j["complete"] and filecmp.cmp(got, src, shallow=False)
    shutil.rmtree(d, ignore_errors=True)
    if not ok:
        raise SystemExit(f"{kind} download from {peer} incomplete or corrupt: {j}")
    return {"s": j["total_ms"] / 1000, "meta_ms": j["metadata_ms"], "cpu": cpu, "seed_cpu": seed_cpu, "rss_mib": rss / 1024}

def med(rows, k):
    return statistics.median(r[k] for r in rows)

def main():
    global EX
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--piece", type=int, default=256 * 1024)
    ap.add_argument("--dir", default="/tmp/mf-bench")
    ap.add_argument("--only", choices=["mf", "lt"], help="run only mf->mf or only the libtorrent-seeder rows")
    ap.add_argument("--bin-dir", default=None, help="where loopback_seed/loopback_get are (to compare builds)")
    a = ap.parse_args()
    if a.bin_dir:
        EX = a.bin_dir
    size = parse_size(a.size)
    src_dir = os.path.join(a.dir, "src"); os.makedirs(src_dir, exist_ok=True)
    src = os.path.join(src_dir, "payload.bin")
    if not os.path.exists(src) or os.path.getsize(src) != size:
        subprocess.run(f"head -c {size} /dev/urandom > {src}", shell=True, check=True)
    results = {}
    if a.only != "lt":
        seed, j = start_server([os.path.join(EX, "loopback_seed"), src, "127.0.0.51:0", str(a.piece)])
        try:
            rows = []
            for n in range(a.runs):
                r = download("mf", j["info_hash"], j["addr"], a.dir, src, n, seed.pid)
                print(f"mf->mf run {n}: {r}", file=sys.stderr); rows.append(r)
            results["magnetfetch -> magnetfetch"] = rows
        finally:
            seed.kill(); seed.wait()
    if a.only != "mf":
        seed, j = start_server(["/usr/bin/python3", "-W", "ignore", "-c", LT, "seed", "127.0.0.41", src, str(a.piece)])
        peer = f"127.0.0.41:{j['port']}"
        try:
            rows = {"mf": [], "lt": []}
            for n in range(a.runs):
                order = ["mf", "lt"] if n % 2 == 0 else ["lt", "mf"]
                for k in order:
                    r = download(k, j["info_hash"], peer, a.dir, src, n, seed.pid)
                    print(f"lt->{k} run {n}: {r}", file=sys.stderr); rows[k].append(r)
            results["libtorrent -> magnetfetch"] = rows["mf"]
            results["libtorrent -> libtorrent"] = rows["lt"]
        finally:
            seed.kill(); seed.wait()
    mib = size / (1 << 20)
    print(f"\n{a.size} ({size} bytes), piece {a.piece // 1024} KiB, {a.runs} runs, medians:\n")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}\n")
    print("| seeder -> downloader | time s | MB/s | metadata ms | downloader CPU s | seeder CPU s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        s = med(rows, "s")
        print(f"| {name} | {s:.2f} | {size / s / 1e6:.0f} | {med(rows, 'meta_ms'):.0f} | {med(rows, 'cpu'):.2f} | {med(rows, 'seed_cpu'):.2f} | {med(rows, 'rss_mib'):.0f} |")
    if "libtorrent -> magnetfetch" in results:
        m, l = results["libtorrent -> magnetfetch"], results["libtorrent -> libtorrent"]
        print(f"\nratio magnetfetch/libtorrent (same libtorrent seeder): time {med(m, 's') / med(l, 's'):.2f}, "
              f"CPU {med(m, 'cpu') / med(l, 'cpu'):.2f}, peak RSS {med(m, 'rss_mib') / med(l, 'rss_mib'):.2f}")
    del mib

if __name__ == "__main__":
    main()
