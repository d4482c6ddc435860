#!/usr/bin/python3
"""python3-libtorrent roles for benches/run.py (run with /usr/bin/python3, loopback only).

    lt_helper.py nodes --ips IP,IP --ports P,P          DHT-only sessions (bootstrap nodes)
    lt_helper.py seed  --ip IP --port P --file F --piece N --bootstrap IP:P,...
    lt_helper.py get   --ip IP --port P --magnet M --dir D --bootstrap IP:P,... [--timeout S]

Every role prints JSON lines on stdout. `nodes` and `seed` print one line when ready and then
run until stdin reaches EOF (the runner holds the pipe, so they die with it). `get` prints
{"event":"start"} once the session exists, {"event":"metadata"} when the info dict is in,
{"event":"done",...} when every piece is verified, then exits (0 complete, 1 otherwise).
The runner timestamps those lines itself; the clock values printed here are for reference.
"""
import argparse, json, os, sys, time

T0 = time.time()
import libtorrent as lt  # noqa: E402  (import cost is part of what the runner measures)


# How often the downloader asks libtorrent for its status (each call is a round trip to the
# session thread). BENCH_LT_POLL overrides it for experiments.
POLL = float(os.environ.get("BENCH_LT_POLL", "0.005"))


def out(obj):
    print(json.dumps(obj), flush=True)


def settings(ip, port, bootstrap):
    # Same loopback configuration as /work/shared/tools/swarm.py: many nodes share 127.0.0.0/24,
    # so the DHT's anti-Sybil IP restrictions are off; uTP off so every client speaks TCP.
    return {
        "listen_interfaces": f"{ip}:{port}",
        "outgoing_interfaces": ip,
        "enable_dht": True, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "dht_bootstrap_nodes": bootstrap,
        "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "dht_announce_interval": 5,
        "dht_aggressive_lookups": True,
        "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "alert_mask": 0,
        # Unchoke every interested peer at once. With the default 8 slots and 15 s unchoke
        # rounds, a seeder that still counts a just-finished downloader's connection makes
        # the next downloader wait up to a full round (seen as 15 s stalls after metadata).
        "unchoke_slots_limit": -1,
        # libtorrent <-> libtorrent connections on this loaded loopback sometimes close
        # mid-transfer; with the default 60 s minimum reconnect time the only seeder is then
        # not retried for a minute and a 1 GiB download "stalls" (seen: no TCP connection left,
        # file stuck at 428 MB, 215 s timeout). 1 s makes libtorrent retry like the others do.
        "min_reconnect_time": 1,
    }


def wait_dht(s, limit=5.0):
    """A torrent added before the DHT has any node only announces (looks up peers) at the
    next announce interval, seconds later: wait for the first DHT nodes, as any long-running
    libtorrent client would have them; the caller then announces at once."""
    deadline = time.time() + limit
    while s.status().dht_nodes == 0 and time.time() < deadline:
        time.sleep(0.005)


def wait_stdin_eof():
    try:
        sys.stdin.read()
    except Exception:
        pass


def nodes(a):
    ips, ports = a.ips.split(","), [int(p) for p in a.ports.split(",")]
    addrs = [f"{ip}:{p}" for ip, p in zip(ips, ports)]
    sessions = []
    for i, (ip, p) in enumerate(zip(ips, ports)):
        sessions.append(lt.session(settings(ip, p, ",".join(addrs[:i]))))
    # Let every node learn every other one.
    for s in sessions:
        s.apply_settings({"dht_bootstrap_nodes": ",".join(addrs)})
    out({"event": "ready", "nodes": addrs, "libtorrent": lt.__version__})
    wait_stdin_eof()


def seed(a):
    path = os.path.abspath(a.file)
    fs = lt.file_storage()
    lt.add_files(fs, path)
    ct = lt.create_torrent(fs, a.piece)
    lt.set_piece_hashes(ct, os.path.dirname(path))
    ti = lt.torrent_info(ct.generate())
    s = lt.session(settings(a.ip, a.port, a.bootstrap))
    wait_dht(s)
    # No seed_mode: the file is checked up front so no download pays for lazy hashing.
    h = s.add_torrent({"ti": ti, "save_path": os.path.dirname(path)})
    while not h.status().is_seeding:
        time.sleep(0.02)
    # Announce now rather than at the next interval, so the swarm is findable at once.
    h.force_dht_announce()
    ih = str(ti.info_hashes().v1)
    out({"event": "ready", "magnet": f"magnet:?xt=urn:btih:{ih}&dn={os.path.basename(path)}",
         "info_hash": ih, "listen": f"{a.ip}:{s.listen_port()}"})
    wait_stdin_eof()


def get(a):
    s = lt.session(settings(a.ip, a.port, a.bootstrap))
    wait_dht(s)
    p = lt.parse_magnet_uri(a.magnet)
    p.save_path = a.dir
    # Not auto-managed: otherwise the torrent waits for the next auto-manage tick (~1 s)
    # before it even starts its DHT lookup; a fair comparison starts at once.
    p.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    t1 = time.time()
    h = s.add_torrent(p)
    h.force_dht_announce()
    out({"event": "start", "import_s": round(t1 - T0, 3)})
    meta = None
    deadline = t1 + a.timeout
    while time.time() < deadline:
        st = h.status()
        if meta is None and st.has_metadata:
            meta = time.time() - t1
            out({"event": "metadata", "since_add_s": round(meta, 3)})
        if st.is_seeding:
            break
        time.sleep(POLL)
    st = h.status()
    done = bool(st.is_seeding)
    name = h.torrent_file().name() if st.has_metadata else None
    out({"event": "done" if done else "timeout", "since_add_s": round(time.time() - t1, 3),
         "name": name, "downloaded": st.total_payload_download})
    # libtorrent 2 declares pieces verified while their blocks may still sit in its store
    # buffer: flush to the files before leaving, else the runner's hash check can fail.
    if done:
        s.apply_settings({"alert_mask": lt.alert.category_t.storage_notification})
        h.flush_cache()
        end = time.time() + 30
        while time.time() < end and not any(isinstance(x, lt.cache_flushed_alert) for x in s.pop_alerts()):
            s.wait_for_alert(100)
    # Then leave without the orderly session teardown (DHT shutdown can take seconds).
    sys.stdout.flush()
    os._exit(0 if done else 1)


ap = argparse.ArgumentParser()
sub = ap.add_subparsers(dest="cmd", required=True)
n = sub.add_parser("nodes"); n.add_argument("--ips", required=True); n.add_argument("--ports", required=True)
s = sub.add_parser("seed"); s.add_argument("--ip", required=True); s.add_argument("--port", type=int, required=True)
s.add_argument("--file", required=True); s.add_argument("--piece", type=int, default=256 * 1024)
s.add_argument("--bootstrap", required=True)
g = sub.add_parser("get"); g.add_argument("--ip", required=True); g.add_argument("--port", type=int, required=True)
g.add_argument("--magnet", required=True); g.add_argument("--dir", required=True)
g.add_argument("--bootstrap", required=True); g.add_argument("--timeout", type=float, default=300)
a = ap.parse_args()
{"nodes": nodes, "seed": seed, "get": get}[a.cmd](a)
