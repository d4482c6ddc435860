#!/usr/bin/env python3
"""Streaming while downloading: time to first byte and to a mid-file seek, magnetfetch's
daemon against `rqbit server`, from the same rate-limited seeder on loopback.

    python3 benches/stream_ttfb.py [--bin target/release/magnetfetch] [--rqbit rqbit]
                                   [--runs 3] [--rate 1M] [--secs 120] [--kbps 1500]
                                   [--play 3] [--no-rqbit]

A video (ffmpeg test pattern with noise, so the bit rate holds, MP4 with its index at the end, as most downloads are) is
seeded by `magnetfetch seed --max-up-rate RATE`; for each run and client (alternating) a
fresh daemon with a fresh state directory is started, the magnet (with the seeder as its
only peer, no DHT) is added over HTTP, and then, as a player does:

  ttfb   time from the add request to the first body byte of `GET .../stream/0`
         (`Range: bytes=0-`), magnet resolution included;
  seek   the player reads from byte 0 for PLAY seconds (so the seeder's one-second burst
         is spent and the pipelines are full of what it plays), then a `Range: bytes=MID-`
         request (MID = half the file): time to its first body byte;
  probe  time for `ffprobe` to read the duration (it reads the head, then seeks to the
         `moov` index at the end), started after the seek.

Prints one line per run and a table of medians (Markdown) for docs/benchmarks.md.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

SEED_IP = "127.0.0.181"
MF_IP = "127.0.0.182"
RQ_IP = "127.0.0.183"


def free_port(ip):
    import socket
    s = socket.socket()
    s.bind((ip, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def first_byte(host, port, path, range_from, limit=120.0):
    """Seconds to the first body byte of a GET with `Range: bytes=range_from-`, and the
    status; the connection is closed after that byte (a player seeking away does so)."""
    t0 = time.monotonic()
    c = http.client.HTTPConnection(host, port, timeout=limit)
    c.request("GET", path, headers={"Range": f"bytes={range_from}-"})
    r = c.getresponse()
    b = r.read(1)
    dt = time.monotonic() - t0
    c.close()
    if r.status not in (200, 206) or len(b) != 1:
        raise RuntimeError(f"GET {path} range {range_from}: status {r.status}, {len(b)} bytes")
    return dt


def play(host, port, path, secs, limit=120.0):
    """A player: `GET path` from byte 0, reads for `secs` after the first body byte.
    Returns (seconds to the first byte, bytes read)."""
    t0 = time.monotonic()
    c = http.client.HTTPConnection(host, port, timeout=limit)
    c.request("GET", path, headers={"Range": "bytes=0-"})
    r = c.getresponse()
    b = r.read(1)
    ttfb = time.monotonic() - t0
    if r.status not in (200, 206) or len(b) != 1:
        raise RuntimeError(f"GET {path}: status {r.status}, {len(b)} bytes")
    n, end = 1, time.monotonic() + secs
    while time.monotonic() < end:
        chunk = r.read1(64 << 10) if hasattr(r, "read1") else r.read(64 << 10)
        if not chunk:
            break
        n += len(chunk)
    c.close()
    return ttfb, n


def wait_line(proc, pattern, limit=30.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(pattern, line)
        if m:
            return m
    raise RuntimeError(f"no line matching {pattern!r}")


class Magnetfetch:
    name = "magnetfetch daemon"

    def __init__(self, binary, work):
        self.binary, self.work = binary, work

    def start(self):
        port = free_port(MF_IP)
        out = tempfile.mkdtemp(dir=self.work)
        state = tempfile.mkdtemp(dir=self.work)
        self.proc = subprocess.Popen(
            [self.binary, "daemon", "--http", f"{MF_IP}:{port}", "--no-dht", "--no-lsd",
             "--no-port-mapping", "--bind", f"{MF_IP}:0", "-o", out, "--state-dir", state],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        wait_line(self.proc, r"^api: http://")
        self.host, self.port = MF_IP, port

    def add(self, magnet, peer):
        body = f"{magnet}&x.pe={peer}".encode()
        req = urllib.request.Request(f"http://{self.host}:{self.port}/torrents", data=body,
                                     method="POST")
        j = json.load(urllib.request.urlopen(req, timeout=30))
        return f"/torrents/{j['id']}/stream/0"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Rqbit:
    name = "rqbit server"

    def __init__(self, binary, work):
        self.binary, self.work = binary, work

    def start(self):
        port = free_port(RQ_IP)
        out = tempfile.mkdtemp(dir=self.work)
        self.cfg = tempfile.mkdtemp(dir=self.work)
        env = dict(os.environ, XDG_CACHE_HOME=self.cfg, XDG_CONFIG_HOME=self.cfg,
                   XDG_DATA_HOME=self.cfg, RUST_LOG="warn")
        self.proc = subprocess.Popen(
            [self.binary, "--disable-dht", "--disable-upnp-port-forward", "--http-api-listen-addr",
             f"{RQ_IP}:{port}", "--listen-port", str(free_port(RQ_IP)), "server", "start",
             "--disable-persistence", out],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        self.host, self.port = RQ_IP, port
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                urllib.request.urlopen(f"http://{RQ_IP}:{port}/", timeout=1)
                return
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("rqbit server did not come up")

    def add(self, magnet, peer):
        url = f"http://{self.host}:{self.port}/torrents?overwrite=true&initial_peers={peer}"
        req = urllib.request.Request(url, data=magnet.encode(), method="POST")
        j = json.load(urllib.request.urlopen(req, timeout=60))
        tid = j.get("id", j.get("details", {}).get("id"))
        return f"/torrents/{tid}/stream/0"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/magnetfetch")
    ap.add_argument("--rqbit", default=shutil.which("rqbit") or "rqbit")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", default="1M")
    ap.add_argument("--secs", type=int, default=120)
    ap.add_argument("--kbps", type=int, default=1500)
    ap.add_argument("--piece-length", default="256K")
    ap.add_argument("--play", type=float, default=3.0)
    ap.add_argument("--no-rqbit", action="store_true")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="mf-stream-bench-")
    try:
        video = os.path.join(work, "clip.mp4")
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                        f"testsrc=duration={a.secs}:size=640x360:rate=25", "-vf", "noise=alls=30:allf=t",
                        "-c:v", "mpeg4",
                        "-b:v", f"{a.kbps}k", "-y", video], check=True)
        size = os.path.getsize(video)
        seed_port = free_port(SEED_IP)
        seeder = subprocess.Popen(
            [a.bin, "seed", video, "--no-dht", "--no-lsd", "--no-port-mapping", "--bind",
             f"{SEED_IP}:{seed_port}", "--piece-length", a.piece_length, "--max-up-rate",
             a.rate, "--state-dir", os.path.join(work, "seed-state"), "-q"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        magnet = seeder.stdout.readline().strip()
        assert magnet.startswith("magnet:?"), magnet
        peer = f"{SEED_IP}:{seed_port}"
        clients = [Magnetfetch(a.bin, work)]
        if not a.no_rqbit:
            clients.append(Rqbit(a.rqbit, work))
        print(f"video {size} bytes, {a.secs} s; seeder {peer} at {a.rate}/s, pieces "
              f"{a.piece_length}", flush=True)
        results = {c.name: [] for c in clients}
        for run in range(a.runs):
            for c in clients:
                c.start()
                try:
                    t0 = time.monotonic()
                    path = c.add(magnet, peer)
                    added = time.monotonic() - t0
                    first, played = play(c.host, c.port, path, a.play)
                    ttfb = added + first
                    seek = first_byte(c.host, c.port, path, size // 2)
                    t1 = time.monotonic()
                    out = subprocess.run(
                        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                         "csv=p=0", f"http://{c.host}:{c.port}{path}"],
                        capture_output=True, text=True, timeout=300)
                    probe = time.monotonic() - t1
                    dur = float(out.stdout.strip() or "nan")
                finally:
                    c.stop()
                results[c.name].append((ttfb, seek, probe))
                # The seeder's rate limit lets a burst of one second through after idling:
                # every run starts with the same full bucket.
                time.sleep(1.5)
                print(f"run {run + 1} {c.name}: ttfb {ttfb:.3f} s, played {played} bytes, "
                      f"seek {seek:.3f} s, "
                      f"ffprobe {probe:.3f} s (duration {dur:.1f} s)", flush=True)
        seeder.kill()
        print()
        print("| client | first byte s (runs) | median | mid-file seek s (runs) | median "
              "| ffprobe duration s (runs) | median |")
        print("|---|---|---:|---|---:|---|---:|")
        for name, rs in results.items():
            cols = []
            for i in range(3):
                v = [r[i] for r in rs]
                cols.append(", ".join(f"{x:.2f}" for x in v))
                cols.append(f"{statistics.median(v):.2f}")
            print(f"| {name} | " + " | ".join(cols) + " |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
