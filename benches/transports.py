#!/usr/bin/python3
"""One magnetfetch seeder, one magnetfetch downloader, over loopback: uTP against TCP, and
MSE/PE (RC4) against plaintext, in the same run, round robin:

    cargo build --release
    /usr/bin/python3 benches/transports.py [--size 1G] [--runs 3] [--bin target/release/magnetfetch]

Modes (downloader flags; the seeder runs `--transport auto --encryption prefer`, so it
answers each the way the downloader asks):
  utp      --transport utp --encryption off
  tcp      --transport tcp --encryption off
  tcp+rc4  --transport tcp --encryption require

Each download is a fresh process into a fresh directory, given the magnet link and the
seeder's address (`--peer`, `--no-dht`), run under `/usr/bin/time -f '%e %U %S %M'`: wall
seconds (process start, metadata and the final fsync included), user and sys CPU seconds,
peak RSS KiB. The seeder's user+sys CPU during each download comes from /proc/PID/stat.
Every download is compared with the source (SHA-1) and `transport_bytes` must show all
payload on the chosen transport. Prints per-run rows, medians and the ratios.
Addresses: 127.0.0.160 (seeder, port 17160) and 127.0.0.161 (downloader).
"""
import argparse, hashlib, json, os, shutil, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = "/tmp/mf-bench-transports"
SEED, GET = "127.0.0.160:17160", "127.0.0.161:17161"
MODES = {
    "utp": ["--transport", "utp", "--encryption", "off"],
    "tcp": ["--transport", "tcp", "--encryption", "off"],
    "tcp+rc4": ["--transport", "tcp", "--encryption", "require"],
}
TICK = os.sysconf("SC_CLK_TCK")


def size_arg(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s)


def cpu_of(pid):
    """user+sys seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def sha1(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "magnetfetch"))
    ap.add_argument("--modes", default=",".join(MODES))
    a = ap.parse_args()
    modes = a.modes.split(",")
    size = size_arg(a.size)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    src = os.path.join(WORK, "payload.bin")
    with open(src, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 24)
            f.write(os.urandom(n))
            left -= n
    want = sha1(src)
    seeder = subprocess.Popen(
        [a.bin, "seed", src, "--bind", SEED, "--no-dht", "-q", "--state-dir",
         os.path.join(WORK, "seed-state")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        magnet = seeder.stdout.readline().strip()
        assert magnet.startswith("magnet:"), magnet
        rows = []
        for run in range(1, a.runs + 1):
            for mode in modes:
                dl, st = os.path.join(WORK, "dl"), os.path.join(WORK, "st")
                shutil.rmtree(dl, ignore_errors=True)
                shutil.rmtree(st, ignore_errors=True)
                argv = ["/usr/bin/time", "-f", "%e %U %S %M", a.bin, magnet, "--bind", GET,
                        "--no-dht", "--peer", SEED, "-o", dl, "--state-dir", st, "--json",
                        ] + MODES[mode]
                c0 = cpu_of(seeder.pid)
                p = subprocess.run(argv, capture_output=True, text=True, timeout=900)
                seed_cpu = cpu_of(seeder.pid) - c0
                wall, user, sys_, rss = p.stderr.strip().splitlines()[-1].split()
                out = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
                tb = next((o["transport_bytes"] for o in reversed(out) if "transport_bytes" in o), {})
                ok = p.returncode == 0 and sha1(os.path.join(dl, "payload.bin")) == want
                on = {"utp": "utp"}.get(mode, "tcp")
                ok = ok and tb.get(on, 0) >= size and sum(tb.values()) == tb.get(on, 0)
                row = dict(run=run, mode=mode, ok=ok, wall=float(wall), user=float(user),
                           sys=float(sys_), rss_mib=int(rss) / 1024, seeder_cpu=seed_cpu,
                           transport_bytes=tb)
                if not ok:
                    row["exit"] = p.returncode
                    row["stderr"] = p.stderr.strip().splitlines()[-3:]
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        os.killpg(seeder.pid, 9)
        seeder.wait()
    print()
    print(f"{a.size} over loopback, {a.runs} runs each, round robin; medians:")
    print()
    print("| mode | ok | wall s (runs) | median wall s | MB/s | downloader user+sys s | "
          "seeder user+sys s | peak RSS MiB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    med = {}
    for mode in modes:
        rs = [r for r in rows if r["mode"] == mode and r["ok"]]
        if not rs:
            print(f"| {mode} | 0/{a.runs} | | | | | | |")
            continue
        w = statistics.median(r["wall"] for r in rs)
        cpu = statistics.median(r["user"] + r["sys"] for r in rs)
        scpu = statistics.median(r["seeder_cpu"] for r in rs)
        rss = statistics.median(r["rss_mib"] for r in rs)
        med[mode] = (w, cpu, scpu)
        walls = ", ".join(f"{r['wall']:.2f}" for r in rs)
        print(f"| {mode} | {len(rs)}/{a.runs} | {walls} | {w:.2f} | {size / w / 1e6:.0f} | "
              f"{cpu:.2f} | {scpu:.2f} | {rss:.0f} |")
    print()
    if "utp" in med and "tcp" in med:
        u, t = med["utp"], med["tcp"]
        print(f"uTP throughput / TCP throughput (median walls): {t[0] / u[0]:.2f}; "
              f"downloader CPU uTP / TCP: {u[1] / t[1]:.2f}; seeder CPU uTP / TCP: {u[2] / t[2]:.2f}")
    if "tcp+rc4" in med and "tcp" in med:
        e, t = med["tcp+rc4"], med["tcp"]
        gib = size / (1 << 30)
        print(f"MSE/RC4 against plaintext: wall {e[0] / t[0]:.2f}x; extra CPU per GiB: "
              f"downloader {(e[1] - t[1]) / gib:.2f} s, seeder {(e[2] - t[2]) / gib:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
