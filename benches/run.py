#!/usr/bin/python3
"""magnetfetch side by side with other BitTorrent clients, on loopback, with one command:

    /usr/bin/python3 benches/run.py [--quick] [--size 64M|1G] [--runs N] [--write] [--no-build]

It first runs `cargo build --release` (plus the simnet bench example and the hashing bench
test binary), then:

1. Swarm benchmark, trackerless, 127.0.0.200-127.0.0.250 only:
   - three python3-libtorrent DHT nodes (bootstrap nodes) on 127.0.0.200-202;
   - a python3-libtorrent seeder (127.0.0.210), warmed up with one untimed libtorrent
     download (a fresh libtorrent seeder serves its first peer slowly);
   - the same magnet link downloaded by `target/release/magnetfetch fetch` (127.0.0.220),
     by a python3-libtorrent downloader (127.0.0.221) and by `rqbit download` (127.0.0.222,
     only if `rqbit` is on PATH), round robin, each `--runs` times, every one starting from
     the magnet link alone (DHT lookup -> metadata -> pieces), fresh process, fresh state,
     fresh download directory;
   - then the same with `magnetfetch seed` (127.0.0.211) as the seeder.
   Per run: time to metadata and to completion (from process spawn, timestamped by this
   runner when the client signals them), throughput after metadata, user+sys CPU and peak
   RSS of the downloader from the kernel (wait4 rusage of the child), the seeder's CPU during
   the run (/proc/PID/stat), and the SHA-1 of the downloaded file against the source.
2. Micro-benchmarks: SHA-1 throughput of our hasher (tests/session/torrent_picker_bench.rs
   `sha1_throughput`, and `magnetfetch create` on the payload) vs `openssl speed -evp sha1`;
   simnet datagrams/s (simnet/examples/bench.rs); DHT lookups on simnet (`magnetfetch sim`).

Prints a markdown report (medians, ratio magnetfetch / other); `--write` puts it into
docs/benchmarks.md between the bench-runner markers. Temp files live in /tmp/mf-bench-runner;
every child runs in its own process group and is killed on exit, error or Ctrl-C.
"""
import argparse, atexit, datetime, hashlib, json, os, platform, re, shutil, signal, socket
import statistics, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MF = os.path.join(ROOT, "target", "release", "magnetfetch")
LT_HELPER = os.path.join(HERE, "lt_helper.py")
PY = "/usr/bin/python3"  # the system python has python3-libtorrent; the pyenv one does not
WORK = "/tmp/mf-bench-runner"
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
BEGIN, END = "<!-- bench-runner:begin -->", "<!-- bench-runner:end -->"

NODE_IPS = ["127.0.0.200", "127.0.0.201", "127.0.0.202"]
LT_SEED_IP, MF_SEED_IP = "127.0.0.210", "127.0.0.211"
WARM_IP = "127.0.0.230"
CLIENT_IPS = {"magnetfetch": "127.0.0.220", "libtorrent": "127.0.0.221", "rqbit": "127.0.0.222"}
PIECE = 256 * 1024

# ----------------------------------------------------------------------------- processes

CHILDREN = []  # Popen objects, each the leader of its own process group


def spawn(argv, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    CHILDREN.append(p)
    return p


def kill_group(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reap(p):
    """Kills p's process group and collects it (if nobody waited for it yet)."""
    kill_group(p)
    try:
        p.wait(timeout=5)
    except Exception:
        pass
    if p in CHILDREN:
        CHILDREN.remove(p)


def cleanup():
    for p in list(CHILDREN):
        kill_group(p, signal.SIGTERM)
    deadline = time.time() + 2
    for p in list(CHILDREN):
        try:
            p.wait(timeout=max(0.05, deadline - time.time()))
        except Exception:
            pass
        kill_group(p)
    CHILDREN.clear()


def on_signal(sig, _frame):
    cleanup()
    sys.stderr.write(f"\ninterrupted (signal {sig}); child processes killed\n")
    os._exit(130)


def free_port(ip):
    """A port free for both TCP and UDP on ip (the clients use one port for both)."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind((ip, 0))
            port = t.getsockname()[1]
            u.bind((ip, port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise SystemExit(f"no free port on {ip}")


def wait4(pid):
    """os.wait4 that polls, so the main thread keeps running Python code and handles Ctrl-C
    at once (a blocking wait4 may not see a signal delivered to a reader thread)."""
    while True:
        got, status, ru = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return got, status, ru
        time.sleep(0.005)


def log(msg):
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def cpu_of(pid):
    """user+sys seconds of a live process (all its threads) from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def start_server(argv, what, timeout, parse):
    """Starts a long-lived child and waits for its ready line (parse(line) -> value or None)."""
    p = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    box, errs = [], []

    def rd():
        for line in p.stdout:
            v = parse(line.strip())
            if v is not None and not box:
                box.append(v)
    threading.Thread(target=rd, daemon=True).start()
    threading.Thread(target=lambda: errs.extend(p.stderr), daemon=True).start()
    deadline = time.time() + timeout
    while not box and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)
    if not box:
        reap(p)
        raise RuntimeError(f"{what} did not become ready within {timeout} s: {''.join(errs)[-800:]}")
    return p, box[0]


def json_line(line):
    try:
        return json.loads(line)
    except ValueError:
        return None


# ----------------------------------------------------------------------------- clients

def sha1_file(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


class Client:
    name = ""

    def __init__(self, ip=None):
        self.ip = ip or CLIENT_IPS[self.name]

    def argv(self, magnet, ddir, sdir, bootstrap, port):
        raise NotImplementedError

    def env(self, sdir):
        return None

    def on_stdout(self, line, mark):
        pass

    def on_stderr(self, line, mark):
        pass

    def poll_file(self):
        return False


class Magnetfetch(Client):
    name = "magnetfetch"

    def argv(self, magnet, ddir, sdir, bootstrap, port):
        return [MF, "fetch", magnet, "-o", ddir, "--bind", f"{self.ip}:{port}",
                "--bootstrap", ",".join(bootstrap), "--state-dir", sdir, "--json"]

    def on_stdout(self, line, mark):
        j = json_line(line)
        if not j:
            return
        if j.get("event") == "phase" and j.get("phase") in ("checking", "downloading", "seeding", "done"):
            mark("metadata")
        elif j.get("event") == "done":
            mark("metadata")
            mark("done", j)


class Libtorrent(Client):
    name = "libtorrent"

    def argv(self, magnet, ddir, sdir, bootstrap, port):
        return [PY, "-W", "ignore", LT_HELPER, "get", "--ip", self.ip, "--port", str(port),
                "--magnet", magnet, "--dir", ddir, "--bootstrap", ",".join(bootstrap), "--timeout", "3600"]

    def on_stdout(self, line, mark):
        j = json_line(line)
        if not j:
            return
        if j.get("event") == "start":
            mark("start")  # python + libtorrent import and DHT bootstrap done
        elif j.get("event") == "metadata":
            mark("metadata")
        elif j.get("event") == "done":
            mark("metadata")
            mark("done", j)


class Rqbit(Client):
    name = "rqbit"

    def __init__(self, path):
        super().__init__()
        self.path = path

    def argv(self, magnet, ddir, sdir, bootstrap, port):
        # uTP is off by default in rqbit (TCP only), like the other two here.
        return [self.path, "-v", "info", "--disable-dht-persistence",
                "--dht-bootstrap-addrs", ",".join(bootstrap), "--ipv4-only",
                "--listen-ip", self.ip, "--listen-port", str(port),
                "--disable-upnp-port-forward", "--disable-lsd", "--disable-trackers",
                "download", "-o", ddir, "-e", "--disable-http-api", magnet]

    def env(self, sdir):
        # Keep any config/cache rqbit writes inside this run's state directory.
        e = dict(os.environ)
        e.update({"HOME": sdir, "XDG_CACHE_HOME": sdir, "XDG_DATA_HOME": sdir,
                  "XDG_CONFIG_HOME": sdir, "NO_COLOR": "1"})
        return e

    def on_stderr(self, line, mark):
        if "All downloads completed" in line:
            mark("metadata")
            mark("done", {})

    on_stdout = on_stderr  # its log may go to either stream

    def poll_file(self):
        # rqbit prints no machine-readable metadata event: the moment its output file
        # appears (it creates files when the torrent is initialised from the metadata).
        return True


def run_download(client, magnet, name, src_sha1, size, seeder_pid, bootstrap, port, n, timeout):
    tag = f"{client.name}-{n}"
    ddir = os.path.join(WORK, "dl", tag)
    sdir = os.path.join(WORK, "state", tag)
    for d in (ddir, sdir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    marks, extra, lock, tail = {}, {}, threading.Lock(), []
    argv = client.argv(magnet, ddir, sdir, bootstrap, port)
    seed_cpu0 = cpu_of(seeder_pid)
    t0 = time.monotonic()
    p = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=client.env(sdir))

    def mark(what, info=None):
        with lock:
            if what not in marks:
                marks[what] = time.monotonic() - t0
                if info:
                    extra[what] = info

    def rd(stream, fn):
        for line in stream:
            fn(line.strip(), mark)
            tail.append(line)
            if len(tail) > 40:
                del tail[0]
    ts = [threading.Thread(target=rd, args=(p.stdout, client.on_stdout), daemon=True),
          threading.Thread(target=rd, args=(p.stderr, client.on_stderr), daemon=True)]
    for t in ts:
        t.start()
    stop_poll = threading.Event()
    if client.poll_file():
        target = os.path.join(ddir, name)

        def poll():
            while not stop_poll.is_set() and "metadata" not in marks:
                if os.path.exists(target):
                    mark("metadata")
                    return
                time.sleep(0.002)
        threading.Thread(target=poll, daemon=True).start()
    timer = threading.Timer(timeout, kill_group, args=(p,))
    timer.start()
    _, status, ru = wait4(p.pid)  # the kernel's accounting of the downloader
    t_exit = time.monotonic() - t0
    timer.cancel()
    stop_poll.set()
    for t in ts:
        t.join(timeout=2)
    code = os.waitstatus_to_exitcode(status)
    p.returncode = code
    if p in CHILDREN:
        CHILDREN.remove(p)
    kill_group(p)  # anything it left behind
    seed_cpu = cpu_of(seeder_pid) - seed_cpu0
    got = os.path.join(ddir, name)
    why = None
    if t_exit >= timeout:
        why = f"timeout ({timeout:.0f} s)"
    elif code != 0 or "done" not in marks:
        why = f"exit {code}, events seen {sorted(marks)}"
    elif not os.path.exists(got) or os.path.getsize(got) != size:
        why = "output file missing or of the wrong size"
    elif sha1_file(got) != src_sha1:
        why = "downloaded data differs from the source (SHA-1)"
    ok = why is None
    shutil.rmtree(ddir, ignore_errors=True)
    shutil.rmtree(sdir, ignore_errors=True)
    r = {"client": client.name, "run": n, "ok": ok, "exit": code, "exit_s": t_exit,
         "meta_s": marks.get("metadata"), "done_s": marks.get("done"), "start_s": marks.get("start"),
         "cpu_s": ru.ru_utime + ru.ru_stime, "rss_mib": ru.ru_maxrss / 1024, "seeder_cpu_s": seed_cpu}
    if ok and r["done_s"] and r["meta_s"] is not None and r["done_s"] > r["meta_s"]:
        r["mbps"] = size / (r["done_s"] - r["meta_s"]) / 1e6
    if not ok:
        r["why"] = why
        r["tail"] = "".join(tail[-8:])[-1200:]
    return r


def fmt_run(r):
    f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
    s = (f"{r['client']:<11} run {r['run']}: {'ok ' if r['ok'] else 'FAIL'} meta {f(r['meta_s'])} s, "
         f"done {f(r['done_s'])} s, exit {f(r['exit_s'])} s, {f(r.get('mbps'), 0)} MB/s, "
         f"CPU {f(r['cpu_s'])} s, RSS {f(r['rss_mib'], 0)} MiB, seeder CPU {f(r['seeder_cpu_s'])} s")
    if not r["ok"]:
        s += f"\n    {r.get('why')}\n    " + r.get("tail", "").replace("\n", "\n    ")
    return s


# ----------------------------------------------------------------------------- swarm phases

def phase(seeder_name, seeder_proc, magnet, name, src_sha1, size, bootstrap, clients, ports, runs,
          timeout, warm_timeout):
    # A fresh libtorrent seeder serves its first libtorrent downloads very slowly (reproduced:
    # the first two 256 MiB downloads stalled for 50 s, the next two took 2.4 s and 2.7 s),
    # so warm up with up to three untimed downloads, until one completes at >= 20 MB/s.
    for attempt in range(3):
        log(f"{seeder_name} seeder: warm-up download {attempt + 1} (untimed)")
        w = run_download(Libtorrent(WARM_IP), magnet, name, src_sha1, size, seeder_proc.pid, bootstrap,
                         free_port(WARM_IP), "warmup", min(warm_timeout, max(30.0, size / 20e6)))
        log("  warm-up: " + fmt_run(w))
        if w["ok"]:
            break
    if not w["ok"]:
        # Not fatal: the timed runs still show what each client gets from this seeder, and
        # the report lists the failed warm-up.
        log(f"  warm-up download from the {seeder_name} seeder did not complete; measuring anyway")
    rows = {c.name: [] for c in clients}
    rows["_warmup"] = w
    for n in range(runs):
        k = n % len(clients)
        for c in clients[k:] + clients[:k]:  # rotate who goes first
            r = run_download(c, magnet, name, src_sha1, size, seeder_proc.pid, bootstrap,
                             ports[c.name], n, timeout)
            log(f"  {seeder_name} -> " + fmt_run(r))
            rows[c.name].append(r)
    return rows


def swarm(a, size, clients):
    src_dir = os.path.join(WORK, "src")
    os.makedirs(src_dir, exist_ok=True)
    tag = a.size_label
    # Two names for the same bytes, so the two seeders' torrents have different info-hashes
    # and a downloader never finds the other (stopped) seeder's announce in the DHT.
    lt_file, mf_file = os.path.join(src_dir, f"lt-{tag}.bin"), os.path.join(src_dir, f"mf-{tag}.bin")
    if not os.path.exists(lt_file) or os.path.getsize(lt_file) != size:
        log(f"making a {tag} random payload in {src_dir}")
        with open(lt_file + ".tmp", "wb") as f:
            left = size
            while left:
                k = min(left, 4 << 20)
                f.write(os.urandom(k))
                left -= k
        os.replace(lt_file + ".tmp", lt_file)
    if not os.path.exists(mf_file) or not os.path.samefile(lt_file, mf_file):
        if os.path.exists(mf_file):
            os.remove(mf_file)
        os.link(lt_file, mf_file)
    src_sha1 = sha1_file(lt_file)
    ports = {c.name: free_port(CLIENT_IPS[c.name]) for c in clients}
    node_ports = [free_port(ip) for ip in NODE_IPS]
    bootstrap = [f"{ip}:{p}" for ip, p in zip(NODE_IPS, node_ports)]
    log(f"DHT bootstrap nodes (libtorrent): {', '.join(bootstrap)}")
    nodes, _ = start_server([PY, "-W", "ignore", LT_HELPER, "nodes", "--ips", ",".join(NODE_IPS),
                             "--ports", ",".join(map(str, node_ports))], "DHT nodes", 30, json_line)
    results = {}
    try:
        time.sleep(1)  # let the nodes ping each other once
        # libtorrent seeder
        log("libtorrent seeder: hashing and checking")
        t = time.monotonic()
        seeder, info = start_server([PY, "-W", "ignore", LT_HELPER, "seed", "--ip", LT_SEED_IP,
                                     "--port", str(free_port(LT_SEED_IP)), "--file", lt_file,
                                     "--piece", str(PIECE), "--bootstrap", ",".join(bootstrap)],
                                    "libtorrent seeder", a.timeout, json_line)
        results["seed_ready"] = {"libtorrent": time.monotonic() - t}
        try:
            results["libtorrent"] = phase("libtorrent", seeder, info["magnet"], os.path.basename(lt_file),
                                          src_sha1, size, bootstrap, clients, ports, a.runs, a.timeout,
                                          a.timeout)
        finally:
            reap(seeder)
        # magnetfetch seeder: the first stdout line is the magnet link
        log("magnetfetch seeder: hashing")
        sdir = os.path.join(WORK, "state", "mf-seeder")
        shutil.rmtree(sdir, ignore_errors=True)
        t = time.monotonic()
        seeder, magnet = start_server([MF, "seed", mf_file, "--bind", f"{MF_SEED_IP}:{free_port(MF_SEED_IP)}",
                                       "--bootstrap", ",".join(bootstrap), "--state-dir", sdir,
                                       "--piece-length", str(PIECE), "--quiet"],
                                      "magnetfetch seeder", a.timeout,
                                      lambda l: l if l.startswith("magnet:") else None)
        results["seed_ready"]["magnetfetch"] = time.monotonic() - t
        try:
            results["magnetfetch"] = phase("magnetfetch", seeder, magnet, os.path.basename(mf_file),
                                           src_sha1, size, bootstrap, clients, ports, a.runs, a.timeout,
                                           a.timeout)
        finally:
            reap(seeder)
    finally:
        reap(nodes)
    return results


# ----------------------------------------------------------------------------- micro-benchmarks

def measured(argv, timeout, cwd=ROOT):
    """Runs argv; returns (stdout+stderr text, wall s, user+sys s, peak RSS MiB)."""
    t0 = time.monotonic()
    # Output to a file, not a pipe: the main thread then only ever waits in the polling wait4.
    with open(os.path.join(WORK, "measured.out"), "w+") as f:
        p = spawn(argv, stdout=f, stderr=subprocess.STDOUT, cwd=cwd)
        timer = threading.Timer(timeout, kill_group, args=(p,))
        timer.start()
        _, status, ru = wait4(p.pid)
        timer.cancel()
        f.seek(0)
        out = f.read()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p in CHILDREN:
        CHILDREN.remove(p)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): {out[-600:]}")
    return out, time.monotonic() - t0, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def micro(a, size, sha1_bin):
    res = []  # (what, command, result)
    secs = "1" if a.quick else "3"
    try:
        out, _, _, _ = measured(["openssl", "speed", "-evp", "sha1", "-bytes", "1048576", "-seconds", secs], 60)
        m = re.search(r"^sha1\s.*?([\d.]+)k\s*$", out, re.M)
        rate = float(m.group(1)) * 1000 / 1e9 if m else None
        res.append(("SHA-1, openssl (one core, 1 MiB blocks, per CPU-second)",
                    f"openssl speed -evp sha1 -bytes 1048576 -seconds {secs}",
                    f"{rate:.2f} GB/s" if rate else "unparsed: " + out[-200:]))
    except Exception as e:
        res.append(("SHA-1, openssl", "openssl speed -evp sha1", f"failed: {e}"))
    if sha1_bin:
        try:
            out, wall, cpu, _ = measured([sha1_bin, "--ignored", "--exact", "torrent_picker_bench::sha1_throughput", "--nocapture",
                                          "--test-threads", "1"], 120)
            m = re.search(r"sha1: (\d+) MiB in ([\d.]+) s", out)
            mib = int(m.group(1)) if m else 256
            inner = float(m.group(2)) if m else wall
            res.append(("SHA-1, magnetfetch `torrent::verify::sha1` (one thread, 64 x 4 MiB)",
                        "cargo test --release --test session -- --ignored --exact torrent_picker_bench::sha1_throughput",
                        f"{mib * 1048576 / cpu / 1e9:.2f} GB/s per CPU-second ({mib} MiB in {cpu:.2f} s "
                        f"user+sys of the whole test process), {mib * 1048576 / inner / 1e9:.2f} GB/s wall"))
        except Exception as e:
            res.append(("SHA-1, magnetfetch sha1_throughput", "cargo test ... sha1_throughput", f"failed: {e}"))
    src = os.path.join(WORK, "src", f"lt-{a.size_label}.bin")
    if os.path.exists(src):
        try:
            subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=False)  # page cache
            tor = os.path.join(WORK, "create.torrent")
            _, wall, cpu, rss = measured([MF, "create", src, "-o", tor, "--piece-length", str(PIECE)], 300)
            os.remove(tor)
            res.append((f"`magnetfetch create` on the {a.size_label} payload (all cores, page cache warm)",
                        f"target/release/magnetfetch create FILE -o X.torrent --piece-length {PIECE}",
                        f"{size / wall / 1e9:.2f} GB/s wall, {size / cpu / 1e9:.2f} GB/s per CPU-second "
                        f"({wall:.2f} s wall, {cpu:.2f} s CPU, {rss:.0f} MiB RSS)"))
        except Exception as e:
            res.append(("`magnetfetch create`", "magnetfetch create", f"failed: {e}"))
    simnet_bin = os.path.join(ROOT, "target", "release", "examples", "bench")
    if os.path.exists(simnet_bin):
        try:
            out, wall, cpu, rss = measured([simnet_bin], 300)
            for pat, what in ((r"64 pairs: (\d+) datagrams.*?: ([\d.]+)/s wall, ([\d.]+)/s CPU",
                               "simnet datagrams delivered, 64 sender/receiver pairs"),
                              (r"10k hosts random: (\d+) datagrams.*?: ([\d.]+)/s wall, ([\d.]+)/s CPU",
                               "simnet datagrams delivered, 10,000 hosts to random peers")):
                m = re.search(pat, out)
                res.append((what, "cargo run --release -p simnet --example bench",
                            f"{float(m.group(2)) / 1e6:.2f} M/s wall, {float(m.group(3)) / 1e6:.2f} M/s CPU "
                            f"({int(m.group(1)):,} datagrams)" if m else "unparsed"))
        except Exception as e:
            res.append(("simnet bench", "cargo run --release -p simnet --example bench", f"failed: {e}"))
    leechers = 10 if a.quick else 50
    cmd = [MF, "sim", "--nodes", "1000", "--seeders", "1", "--leechers", str(leechers), "--size", "4MiB",
           "--seed", "1", "--json"]
    try:
        out, wall, cpu, rss = measured(cmd, 300)
        j = json.loads(out.strip().splitlines()[-1])
        md = j.get("metadata_s") or {}
        res.append((f"DHT lookup on simnet: 1,000 DHT nodes, {leechers} leechers' first lookups (medians)",
                    "magnetfetch " + " ".join(cmd[1:]),
                    f"{j.get('lookup_messages_median')} queries, {j.get('lookup_rounds_median')} rounds, "
                    f"{j.get('lookup_time_s_median')} s simulated (25 ms one-way links); metadata median "
                    f"{md.get('median')} s simulated; {j.get('leechers_completed')}/{j.get('leechers')} "
                    f"completed; {wall:.1f} s wall, {cpu:.1f} s CPU, {rss:.0f} MiB RSS"))
    except Exception as e:
        res.append(("DHT lookup on simnet", "magnetfetch sim", f"failed: {e}"))
    return res


# ----------------------------------------------------------------------------- report

def med(rows, k):
    v = [r[k] for r in rows if r["ok"] and r.get(k) is not None]
    return statistics.median(v) if v else None


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return ""


def machine(rqbit_path):
    cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read())
    mem = re.search(r"MemTotal:\s*(\d+)", open("/proc/meminfo").read())
    lt_ver = sh(f"{PY} -c 'import libtorrent; print(libtorrent.__version__)'")
    return {
        "cpu": cpu.group(1) if cpu else "?", "cores": os.cpu_count(),
        "ram": f"{int(mem.group(1)) / 1048576:.1f} GiB" if mem else "?",
        "kernel": platform.release(),
        "sha_ni": "yes" if "sha_ni" in open("/proc/cpuinfo").read() else "no",
        "magnetfetch": sh(f"{MF} --version") + f" (git {sh(f'git -C {ROOT} rev-parse --short HEAD')}"
                       + (", uncommitted changes" if sh(f"git -C {ROOT} status --porcelain -- src simnet") else "") + ")",
        "libtorrent": f"python3-libtorrent {lt_ver}",
        "rqbit": sh(f"{rqbit_path} --version") if rqbit_path else "not found on PATH (rows skipped)",
        "openssl": sh("openssl version"),
    }


def report(a, size, swarm_res, micro_res, mach, load, started, elapsed, cmdline):
    L = []
    L.append(f"Generated by `{cmdline}` on {started} UTC ({elapsed:.0f} s after the build).")
    L.append("")
    L.append(f"Machine: {mach['cpu']}, {mach['cores']} cores (SHA-NI: {mach['sha_ni']}), {mach['ram']} RAM, "
             f"Linux {mach['kernel']}. Load average (1 min) before / after the run: "
             f"{load[0]:.2f} / {load[1]:.2f}"
             + (" — the machine was busy, so absolute numbers are noisy; the side-by-side rows ran "
                "interleaved under the same load." if max(load) > 1.5 else "."))
    L.append(f"Clients: {mach['magnetfetch']}; {mach['libtorrent']}; rqbit: {mach['rqbit']}; {mach['openssl']}.")
    L.append("")
    if swarm_res:
        L.append(f"### Swarm on loopback: {a.size_label} file, {PIECE // 1024} KiB pieces, medians of {a.runs} runs")
        L.append("")
        L.append("Trackerless: 3 libtorrent DHT bootstrap nodes, one seeder, each download a fresh process "
                 "given only the magnet link and the bootstrap nodes (DHT lookup → BEP 9 metadata → "
                 "pieces over TCP; uTP off), clients interleaved run by run, every file SHA-1-checked. "
                 "Times from process spawn; *MB/s* = size / (completion − metadata); CPU (user+sys) and "
                 "peak RSS of the downloader process from `wait4(2)`; *seeder CPU* = the seeder "
                 "process's user+sys during that download (`/proc/PID/stat`).")
        L.append("")
        L.append("| seeder | downloader | ok | metadata s | complete s | MB/s | CPU s | peak RSS MiB | seeder CPU s (serving it) |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        f = lambda v, d=2: "—" if v is None else f"{v:.{d}f}"
        ratios = []
        for seeder in ("libtorrent", "magnetfetch"):
            rows = swarm_res.get(seeder)
            if not rows:
                continue
            for cname, rs in rows.items():
                if cname.startswith("_"):
                    continue
                okn = sum(r["ok"] for r in rs)
                L.append(f"| {seeder} | {cname} | {okn}/{len(rs)} | {f(med(rs, 'meta_s'))} | {f(med(rs, 'done_s'))} | "
                         f"{f(med(rs, 'mbps'), 0)} | {f(med(rs, 'cpu_s'))} | {f(med(rs, 'rss_mib'), 0)} | "
                         f"{f(med(rs, 'seeder_cpu_s'))} |")
            mfr = rows.get("magnetfetch")
            for cname, rs in rows.items():
                if cname == "magnetfetch" or cname.startswith("_") or not mfr:
                    continue
                rr = {}
                for k in ("meta_s", "done_s", "mbps", "cpu_s", "rss_mib", "seeder_cpu_s"):
                    x, y = med(mfr, k), med(rs, k)
                    rr[k] = x / y if x is not None and y else None
                ratios.append((seeder, cname, rr))
        L.append("")
        if ratios:
            L.append("Ratio magnetfetch / other downloader, same seeder (below 1 = magnetfetch needs less; "
                     "for MB/s above 1 = magnetfetch faster):")
            L.append("")
            L.append("| seeder | magnetfetch / | metadata | complete | MB/s | CPU | peak RSS | seeder CPU |")
            L.append("|---|---|---:|---:|---:|---:|---:|---:|")
            for seeder, cname, rr in ratios:
                L.append(f"| {seeder} | {cname} | " + " | ".join(
                    f(rr[k]) for k in ("meta_s", "done_s", "mbps", "cpu_s", "rss_mib", "seeder_cpu_s")) + " |")
            L.append("")
            # A mechanical summary (10 % margin either way); the interpretation is hand-written
            # below the generated block.
            names = {"meta_s": "time to metadata", "done_s": "time to completion", "mbps": "throughput",
                     "cpu_s": "downloader CPU", "rss_mib": "peak RSS", "seeder_cpu_s": "seeder CPU"}
            win, lose = [], []
            for seeder, cname, rr in ratios:
                for k, v in rr.items():
                    if v is None:
                        continue
                    better = v > 1.1 if k == "mbps" else v < 1 / 1.1
                    worse = v < 1 / 1.1 if k == "mbps" else v > 1.1
                    (win if better else lose if worse else []).append(
                        f"{names[k]} vs {cname} from the {seeder} seeder ({v:.2f})")
            L.append("Mechanical reading of the ratios (10 % margin): magnetfetch is better on "
                     + ("; ".join(win) or "nothing") + ". It is worse on " + ("; ".join(lose) or "nothing")
                     + ". Everything else is within 10 %.")
            L.append("")
        sr = swarm_res.get("seed_ready", {})
        if sr:
            warm = {k: (swarm_res.get(k) or {}).get("_warmup") for k in sr}
            for k, w in warm.items():
                if w and not w["ok"]:
                    L.append(f"**The warm-up download from the {k} seeder failed: {w.get('why')}** "
                             f"(metadata after {f(w['meta_s'])} s; RSS {w['rss_mib']:.0f} MiB at the end).")
                    L.append("")
            L.append("Seeder start-up: spawn → magnet link ready (hashing included): "
                     + ", ".join(f"{k} {v:.2f} s" for k, v in sr.items())
                     + " (libtorrent: `create_torrent` + a full check; magnetfetch: `seed` hashes once). "
                     "Then the untimed warm-up download (a libtorrent downloader) got the metadata after "
                     + ", ".join(f"{f(w['meta_s'])} s from the {k} seeder" for k, w in warm.items() if w)
                     + ": how soon a just-started seeder is findable through the DHT.")
            L.append("")
        lt_start = [r["start_s"] for s_ in ("libtorrent", "magnetfetch")
                    for r in (swarm_res.get(s_) or {}).get("libtorrent", []) if r.get("start_s") is not None]
        if lt_start:
            L.append(f"The libtorrent downloader is a small Python script (`benches/lt_helper.py`): its times include "
                     f"~{statistics.median(lt_start):.2f} s (median) of Python start-up, `import libtorrent` and the "
                     "first DHT contact before the magnet is added; its RSS includes the interpreter "
                     "(~10 MiB) and libtorrent 2's memory-mapped file pages.")
            L.append("")
        fails = [r for s in ("libtorrent", "magnetfetch") for k, rs in (swarm_res.get(s) or {}).items()
                 if not k.startswith("_") for r in rs if not r["ok"]]
        if fails:
            L.append("Failed runs (excluded from the medians): " + "; ".join(
                f"{r['client']} run {r['run']}: {r.get('why')}" for r in fails))
            L.append("")
    if micro_res:
        L.append("### Micro-benchmarks")
        L.append("")
        L.append("| what | command | result |")
        L.append("|---|---|---|")
        for what, cmd, result in micro_res:
            L.append(f"| {what} | `{cmd}` | {result} |")
        L.append("")
    return "\n".join(L)


def write_doc(block):
    text = open(DOC).read()
    gen = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text and END in text:
        i, j = text.index(BEGIN), text.index(END) + len(END)
        text = text[:i] + gen + text[j:]
    else:
        sec = ("## Side by side with other clients (generated)\n\n"
               "One command: `/usr/bin/python3 benches/run.py [--quick] --write` (how it measures: the "
               "docstring of `benches/run.py`). Everything between the markers below is written by "
               "`--write`; rerun it rather than editing by hand.\n\n"
               f"{gen}\n\n")
        k = text.find("\n## ")
        text = text + "\n" + sec if k < 0 else text[:k + 1] + sec + text[k + 1:]
    with open(DOC + ".tmp", "w") as f:
        f.write(text)
    os.replace(DOC + ".tmp", DOC)


# ----------------------------------------------------------------------------- main

def build(quick):
    log("cargo build --release (magnetfetch, simnet bench example, hashing bench test)")
    subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-p", "simnet", "--example", "bench"], cwd=ROOT, check=True)
    out = subprocess.run(["cargo", "test", "--release", "--test", "session", "--no-run",
                          "--message-format=json"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        j = json_line(line)
        if j and j.get("reason") == "compiler-artifact" and j.get("executable") \
                and j.get("target", {}).get("name") == "session":
            return j["executable"]
    return None


def find_sha1_bin():
    d = os.path.join(ROOT, "target", "release", "deps")
    c = [os.path.join(d, x) for x in os.listdir(d) if x.startswith("session-")
         and os.access(os.path.join(d, x), os.X_OK) and "." not in x] if os.path.isdir(d) else []
    return max(c, key=os.path.getmtime) if c else None


def parse_size(s):
    m = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * m[s[-1].upper()] if s[-1].upper() in m else int(s)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 MiB, 3 runs, short micro-benchmarks (< 2 min after the build)")
    ap.add_argument("--size", help="payload size, e.g. 64M or 1G (default 1G, or 64M with --quick)")
    ap.add_argument("--runs", type=int, help="downloads per client and seeder (default 3)")
    ap.add_argument("--timeout", type=float, help="seconds per download before it counts as failed")
    ap.add_argument("--write", action="store_true", help="write the report into docs/benchmarks.md")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build (binaries must exist)")
    ap.add_argument("--skip-swarm", action="store_true")
    ap.add_argument("--skip-micro", action="store_true")
    ap.add_argument("--no-rqbit", action="store_true", help="ignore rqbit even if it is on PATH")
    a = ap.parse_args()
    a.size_label = (a.size or ("64M" if a.quick else "1G")).upper()
    size = parse_size(a.size_label)
    a.runs = a.runs or 3
    # A download slower than 5 MB/s (or 30 s / 120 s at least) counts as failed.
    a.timeout = a.timeout or max(30.0 if a.quick else 120.0, size / 5e6)
    cmdline = "/usr/bin/python3 benches/run.py " + " ".join(sys.argv[1:])
    atexit.register(cleanup)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    if not os.path.exists(PY) or subprocess.run([PY, "-c", "import libtorrent"], capture_output=True).returncode:
        raise SystemExit(f"{PY} with python3-libtorrent is required (apt install python3-libtorrent)")
    sha1_bin = None
    if not a.no_build:
        sha1_bin = build(a.quick)
    sha1_bin = sha1_bin or find_sha1_bin()
    if not os.path.exists(MF):
        raise SystemExit(f"{MF} missing: run without --no-build")
    os.makedirs(WORK, exist_ok=True)
    rqbit = None if a.no_rqbit else shutil.which("rqbit")
    clients = [Magnetfetch(), Libtorrent()] + ([Rqbit(rqbit)] if rqbit else [])
    log("clients: " + ", ".join(c.name for c in clients) + ("" if rqbit else " (rqbit not found on PATH)"))
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    swarm_res = micro_res = None
    try:
        if not a.skip_swarm:
            swarm_res = swarm(a, size, clients)
        if not a.skip_micro:
            log("micro-benchmarks")
            micro_res = micro(a, size, sha1_bin)
    finally:
        cleanup()
    elapsed = time.monotonic() - t0
    load = (load0, os.getloadavg()[0])
    block = report(a, size, swarm_res, micro_res, machine(rqbit), load, started, elapsed, cmdline)
    print(block)
    with open(os.path.join(WORK, "last-report.md"), "w") as f:
        f.write(block + "\n")
    with open(os.path.join(WORK, "last-runs.json"), "w") as f:
        json.dump({"swarm": swarm_res, "micro": micro_res}, f, indent=1, default=str)
    if a.write:
        write_doc(block)
        log(f"wrote the generated block into {DOC}")
    log(f"done in {elapsed:.0f} s (raw runs: {WORK}/last-runs.json)")


if __name__ == "__main__":
    main()
