#!/usr/bin/python3
"""The one python3-libtorrent helper: the roles of benches/run.py and the modes of the
integration tests (run with /usr/bin/python3, loopback only).

    lt_helper.py nodes --ips IP,IP --ports P,P          DHT-only sessions (bootstrap nodes)
    lt_helper.py seed  --ip IP --port P --file F --piece N --bootstrap IP:P,...
    lt_helper.py get   --ip IP --port P --magnet M --dir D --bootstrap IP:P,... [--timeout S]

Every role prints JSON lines on stdout. `nodes` and `seed` print one line when ready and then
run until stdin reaches EOF (the runner holds the pipe, so they die with it). `get` prints
{"event":"start"} once the session exists, {"event":"metadata"} when the info dict is in,
{"event":"done",...} when every piece is verified, then exits (0 complete, 1 otherwise).
The runner timestamps those lines itself; the clock values printed here are for reference.

    lt_helper.py MODE ARGS...                           a test mode (TEST_MODES below)

The test modes are the libtorrent peers of tests/ (started through tests/support/lt.rs); each
documents its arguments and what it prints.
"""
import argparse, json, os, sys, time

T0 = time.time()
# `infohash` checks a .torrent without libtorrent, so it must run where libtorrent is missing.
if sys.argv[1:2] != ["infohash"]:
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



# ---------------------------------------------------------------------------------------------
# Test modes: the libtorrent (and other independent) peers of the integration tests under tests/,
# run as `/usr/bin/python3 -W ignore benches/lt_helper.py MODE ARGS...` (see tests/support/lt.rs).
# Each mode reads its arguments from sys.argv[1:] (the mode name removed) and prints on stdout
# what its test parses.
# ---------------------------------------------------------------------------------------------

def swarm_settings(iface, boot):
    """DHT-only loopback settings shared by swarm-seed and dht-fetch."""
    return {
        "listen_interfaces": f"{iface}:6881", "outgoing_interfaces": iface,
        "enable_dht": True, "dht_bootstrap_nodes": boot,
        "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False, "dht_announce_interval": 2,
        "dht_aggressive_lookups": True, "allow_multiple_connections_per_ip": True,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "alert_mask": 0,
    }

def t_dht_fetch():
    """Fetches MAGNET through the DHT only (bootstrapped from BOOT) into DIR; prints done, the peers it saw and the file's sha256.
    Args: IFACE BOOT MAGNET DIR."""
    import libtorrent as lt, sys, json, os, time, hashlib
    settings = swarm_settings
    iface, boot, magnet, d = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    s = lt.session(settings(iface, boot))
    p = lt.parse_magnet_uri(magnet); p.save_path = d
    h = s.add_torrent(p)
    end = time.time() + 60
    while time.time() < end and not h.status().is_seeding:
        time.sleep(0.05)
    ok = h.status().is_seeding
    out = {"done": ok, "peers": [str(x.ip) for x in h.get_peer_info()]}
    if ok:
        fs = h.torrent_file().files()
        out["sha256"] = hashlib.sha256(open(os.path.join(d, fs.file_path(0)), "rb").read()).hexdigest()
    print(json.dumps(out), flush=True)

def t_swarm_seed():
    """Seeds a fresh 3 MiB file in DIR, announced through the DHT (bootstrapped from BOOT); prints its magnet and sha256.
    Args: IFACE BOOT DIR."""
    import libtorrent as lt, sys, json, os, time, hashlib
    settings = swarm_settings
    iface, boot, d = sys.argv[1], sys.argv[2], sys.argv[3]
    path = os.path.join(d, "lt.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(3 * 1024 * 1024 + 4321))
    fs = lt.file_storage(); lt.add_files(fs, path)
    t = lt.create_torrent(fs, 64 * 1024)
    lt.set_piece_hashes(t, d)
    ti = lt.torrent_info(t.generate())
    s = lt.session(settings(iface, boot))
    s.add_torrent({"ti": ti, "save_path": d, "flags": lt.torrent_flags.seed_mode})
    ih = str(ti.info_hashes().v1)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    print(json.dumps({"magnet": f"magnet:?xt=urn:btih:{ih}&dn=lt.bin", "sha256": sha}), flush=True)
    time.sleep(120)

def t_tracker_seed():
    """Seeds TORRENT's data from DIR on IP (port 0), announcing to every tracker; prints "seeding PORT".
    Args: TORRENT DIR IP."""
    import libtorrent as lt, sys, time
    ti = lt.torrent_info(sys.argv[1])
    s = lt.session({'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False,
                    'enable_natpmp': False, 'listen_interfaces': sys.argv[3] + ':0',
                    'announce_to_all_tiers': True, 'announce_to_all_trackers': True,
                    'alert_mask': lt.alert.category_t.tracker_notification | lt.alert.category_t.error_notification})
    h = s.add_torrent({'ti': ti, 'save_path': sys.argv[2]})
    h.force_recheck()
    printed = False
    deadline = time.time() + 90
    while time.time() < deadline:
        if not printed and h.status().is_seeding:
            h.force_reannounce()
            print('seeding', s.listen_port(), flush=True)
            printed = True
        for a in s.pop_alerts():
            sys.stderr.write('lt seeder: %s\n' % a.message())
        time.sleep(0.1)

def t_tracker_leech():
    """Downloads TORRENT into DIR through its trackers; prints ok or fail.
    Args: TORRENT DIR."""
    import libtorrent as lt, sys, time
    ti = lt.torrent_info(sys.argv[1])
    s = lt.session({'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False,
                    'enable_natpmp': False, 'listen_interfaces': '127.0.0.1:0',
                    'alert_mask': lt.alert.category_t.tracker_notification | lt.alert.category_t.error_notification})
    h = s.add_torrent({'ti': ti, 'save_path': sys.argv[2]})
    deadline = time.time() + 40
    while time.time() < deadline and not h.status().is_seeding:
        for a in s.pop_alerts():
            sys.stderr.write('lt leecher: %s\n' % a.message())
        time.sleep(0.1)
    st = h.status()
    sys.stderr.write('lt leecher: peers=%d progress=%.2f\n' % (st.num_peers, st.progress))
    print('ok' if st.is_seeding else 'fail', flush=True)

def t_tracker_announce_seed():
    """Seeds a fresh file in DIR announcing only to URL; prints "INFOHASH PORT".
    Args: DIR URL."""
    import libtorrent as lt, sys, os, time
    d, url = sys.argv[1], sys.argv[2]
    p = os.path.join(d, 'payload.bin')
    with open(p, 'wb') as f:
        f.write(os.urandom(65536 + 1234))
    fs = lt.file_storage()
    lt.add_files(fs, p)
    t = lt.create_torrent(fs, 16384)
    t.add_tracker(url)
    lt.set_piece_hashes(t, d)
    ti = lt.torrent_info(t.generate())
    s = lt.session({'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False,
                    'enable_natpmp': False, 'listen_interfaces': '127.0.0.1:0',
                    'alert_mask': lt.alert.category_t.tracker_notification | lt.alert.category_t.error_notification})
    h = s.add_torrent({'ti': ti, 'save_path': d})
    h.force_recheck()
    deadline = time.time() + 60
    printed = False
    while time.time() < deadline:
        st = h.status()
        if not printed and st.is_seeding:
            print(str(ti.info_hashes().v1), s.listen_port(), flush=True)
            h.force_reannounce()
            printed = True
        for a in s.pop_alerts():
            sys.stderr.write('lt: %s\n' % a.message())
        time.sleep(0.1)

def t_tracker_swarm():
    """A libtorrent seeder and leecher that find each other only through the tracker at URL; prints "INFOHASH ok|fail".
    Args: DIR URL."""
    import libtorrent as lt, sys, os, time
    d, url = sys.argv[1], sys.argv[2]
    sd, ld = os.path.join(d, 's'), os.path.join(d, 'l')
    os.makedirs(sd); os.makedirs(ld)
    p = os.path.join(sd, 'payload.bin')
    data = os.urandom(300000)
    with open(p, 'wb') as f:
        f.write(data)
    fs = lt.file_storage()
    lt.add_files(fs, p)
    t = lt.create_torrent(fs, 16384)
    t.add_tracker(url)
    lt.set_piece_hashes(t, sd)
    ti = lt.torrent_info(t.generate())
    def sess():
        return lt.session({'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False,
                           'enable_natpmp': False, 'listen_interfaces': '127.0.0.1:0',
                           'alert_mask': lt.alert.category_t.tracker_notification | lt.alert.category_t.error_notification | lt.alert.category_t.peer_notification | lt.alert.category_t.connect_notification})
    s1, s2 = sess(), sess()
    seed = s1.add_torrent({'ti': ti, 'save_path': sd})
    seed.force_recheck()
    while not seed.status().is_seeding:
        time.sleep(0.05)
    seed.force_reannounce()
    leech = s2.add_torrent({'ti': lt.torrent_info(ti), 'save_path': ld})
    deadline = time.time() + 40
    while time.time() < deadline and not leech.status().is_seeding:
        time.sleep(0.1)
    st = leech.status()
    sys.stderr.write('leecher: peers=%d list_peers=%d state=%s progress=%.2f\n' % (st.num_peers, st.list_peers, st.state, st.progress))
    for a in s2.pop_alerts() + s1.pop_alerts():
        sys.stderr.write('lt: %s\n' % a.message())
    ok = leech.status().is_seeding and open(os.path.join(ld, 'payload.bin'), 'rb').read() == data
    print(str(ti.info_hashes().v1), 'ok' if ok else 'fail', flush=True)
    time.sleep(1)

def t_dht_seed():
    """Three libtorrent DHT nodes on BASE.10-12 and a seeder on BASE.2; prints the nodes, the seeder and the info-hash.
    Args: BASE (e.g. 127.0.4)."""
    import json, os, sys, tempfile, time
    import libtorrent as lt
    base = sys.argv[1]
    def settings(iface, port, bootstrap=""):
        return {"listen_interfaces": f"{iface}:{port}", "enable_dht": True, "enable_lsd": False,
            "enable_upnp": False, "enable_natpmp": False, "dht_bootstrap_nodes": bootstrap,
            "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
            "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
            "dht_prefer_verified_node_ids": False, "allow_multiple_connections_per_ip": True,
            "outgoing_interfaces": iface, "dht_announce_interval": 5, "dht_aggressive_lookups": True,
            "enable_outgoing_utp": False, "enable_incoming_utp": False}
    d = tempfile.mkdtemp(prefix="mf-interop-")
    path = os.path.join(d, "payload.bin")
    with open(path, "wb") as f: f.write(os.urandom(256 * 1024))
    fs = lt.file_storage(); lt.add_files(fs, path)
    t = lt.create_torrent(fs, 16384); lt.set_piece_hashes(t, d)
    info = lt.torrent_info(t.generate())
    nodes = []
    sessions = []
    for i in range(3):
        ip = f"{base}.{10 + i}"
        sessions.append(lt.session(settings(ip, 6881)))
        nodes.append(f"{ip}:6881")
    for s in sessions:
        s.apply_settings({"dht_bootstrap_nodes": ",".join(nodes)})
    seeder = lt.session(settings(f"{base}.2", 6881, ",".join(nodes)))
    seeder.add_torrent({"ti": info, "save_path": d})
    print(json.dumps({"bootstrap": nodes, "seeder": f"{base}.2:6881",
                      "infohash": str(info.info_hash())}), flush=True)
    time.sleep(120)

def find_peer(lt, s, ih, expect, timeout):
    """Asks the DHT for `ih` every second until a reply lists `expect` (prints FOUND, exit 0)
    or `timeout` seconds pass (prints NOT FOUND, exit 1). Shared by dht-find and dht6-find."""
    import sys, time
    h = lt.sha1_hash(bytes.fromhex(ih))
    end = time.time() + timeout
    last = 0
    while time.time() < end:
        if time.time() - last > 1.0:
            s.dht_get_peers(h); last = time.time()
        s.wait_for_alert(200)
        for a in s.pop_alerts():
            if isinstance(a, lt.dht_get_peers_reply_alert):
                peers = [f"{ip}:{port}" for ip, port in a.peers()]
                print("reply", peers, file=sys.stderr, flush=True)
                if expect in peers:
                    print("FOUND", flush=True); sys.exit(0)
    print("NOT FOUND", flush=True); sys.exit(1)

def t_dht_find():
    """Looks up IH through the DHT from IFACE until EXPECT is among the peers; prints FOUND or NOT FOUND.
    Args: IFACE BOOTSTRAP IH EXPECT TIMEOUT."""
    import sys, time
    import libtorrent as lt
    iface, bootstrap, ih, expect, timeout = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
    s = lt.session({"listen_interfaces": f"{iface}:6881", "enable_dht": True, "enable_lsd": False,
        "enable_upnp": False, "enable_natpmp": False, "dht_bootstrap_nodes": bootstrap,
        "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False, "outgoing_interfaces": iface,
        "alert_mask": lt.alert.category_t.all_categories})
    find_peer(lt, s, ih, expect, timeout)

def t_dht_swarm():
    """N libtorrent DHT nodes on 127.0.0.81.. each announcing a random info-hash; prints them.
    Args: N."""
    import json, os, sys, tempfile, time
    import libtorrent as lt
    n = int(sys.argv[1])
    def settings(iface, bootstrap):
        return {"listen_interfaces": f"{iface}:6881", "enable_dht": True, "enable_lsd": False,
            "enable_upnp": False, "enable_natpmp": False, "dht_bootstrap_nodes": bootstrap,
            "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
            "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
            "dht_prefer_verified_node_ids": False, "outgoing_interfaces": iface,
            "dht_announce_interval": 5, "enable_outgoing_utp": False, "enable_incoming_utp": False}
    root = "127.0.0.81:6881"
    sessions = [lt.session(settings(f"127.0.0.{81 + i}", root)) for i in range(n)]
    time.sleep(6)
    hashes = []
    for i, s in enumerate(sessions):
        ih = os.urandom(20)
        # (this binding's dht_announce cannot be called: its flags type is not exported)
        p = lt.parse_magnet_uri(f"magnet:?xt=urn:btih:{ih.hex()}")
        p.save_path = tempfile.mkdtemp(prefix="mf-dht-bench-")
        s.add_torrent(p)
        hashes.append([ih.hex(), f"127.0.0.{81 + i}:6881"])
    time.sleep(8)
    print(json.dumps({"bootstrap": root, "hashes": hashes}), flush=True)
    time.sleep(120)

def t_dht6_seed():
    """A libtorrent seeder whose DHT listens on LISTEN, bootstrapped from BOOT (IPv6 too); prints the info-hash.
    Args: LISTEN BOOT."""
    import json, os, sys, tempfile, time
    import libtorrent as lt
    listen, boot = sys.argv[1], sys.argv[2]
    d = tempfile.mkdtemp(prefix="mf-v6-interop-")
    path = os.path.join(d, "payload.bin")
    with open(path, "wb") as f: f.write(os.urandom(64 * 1024))
    fs = lt.file_storage(); lt.add_files(fs, path)
    t = lt.create_torrent(fs, 16384); lt.set_piece_hashes(t, d)
    info = lt.torrent_info(t.generate())
    s = lt.session({"listen_interfaces": listen, "enable_dht": True,
        "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "dht_bootstrap_nodes": boot,
        "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False, "dht_announce_interval": 5,
        "dht_aggressive_lookups": True, "enable_outgoing_utp": False,
        "enable_incoming_utp": False})
    for n in boot.split(","):
        host, port = n.rsplit(":", 1)
        try:
            s.add_dht_node((host.strip("[]"), int(port)))
        except Exception as e:
            print("add_dht_node:", e, file=sys.stderr)
    s.add_torrent({"ti": info, "save_path": d})
    print(json.dumps({"infohash": str(info.info_hash())}), flush=True)
    time.sleep(120)

def t_dht6_find():
    """Looks up IH through the IPv6 DHT from [::1]:PORT until EXPECT is among the peers; prints FOUND or NOT FOUND.
    Args: ROOT_PORT PORT IH EXPECT TIMEOUT."""
    import sys, time
    import libtorrent as lt
    root_port, port, ih, expect, timeout = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
    s = lt.session({"listen_interfaces": f"[::1]:{port}", "enable_dht": True, "enable_lsd": False,
        "enable_upnp": False, "enable_natpmp": False, "dht_bootstrap_nodes": f"[::1]:{root_port}",
        "dht_restrict_routing_ips": False, "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False, "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "alert_mask": lt.alert.category_t.all_categories})
    try:
        s.add_dht_node(("::1", root_port))
    except Exception as e:
        print("add_dht_node:", e, file=sys.stderr)
    find_peer(lt, s, ih, expect, timeout)

def t_download():
    """Peer wire without DHT: `seed IP PATH [ENC]` seeds PATH, `leech IP IH PEER DIR [ENC]`
    downloads from PEER. ENC `forced`: MSE/PE with RC4 only, both ways (out_enc_policy and
    in_enc_policy forced, allowed_enc_level rc4); `forced-plaintext`: MSE required but the
    stream plaintext after it (allowed_enc_level plaintext); default: libtorrent's defaults.
    ENC may end in `:utp`: TCP off, uTP (BEP 29) on, so every byte goes over uTP.
    Prints JSON lines."""
    import json, os, sys, tempfile, time
    import libtorrent as lt

    enc = sys.argv[6] if sys.argv[1] == 'leech' and len(sys.argv) > 6 else \
        sys.argv[4] if sys.argv[1] == 'seed' and len(sys.argv) > 4 else 'default'
    enc, _, transport = enc.partition(':')

    def session(ip):
        # Loopback settings known to work (see shared/tools/swarm.py); uTP must stay off so
        # libtorrent speaks TCP to us.
        settings = {
            'listen_interfaces': ip + ':0',
            'outgoing_interfaces': ip,
            'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
            'enable_outgoing_utp': False, 'enable_incoming_utp': False,
            'allow_multiple_connections_per_ip': True,
            'alert_mask': 0,
        }
        # enc_policy: 0 forced, 1 enabled, 2 disabled; enc_level: 1 plaintext, 2 rc4, 3 both.
        if enc == 'forced':
            settings.update({'out_enc_policy': 0, 'in_enc_policy': 0, 'allowed_enc_level': 2})
        elif enc == 'forced-plaintext':
            # MSE handshake required, plaintext stream after it (header obfuscation only).
            settings.update({'out_enc_policy': 0, 'in_enc_policy': 0, 'allowed_enc_level': 1})
        if transport == 'utp':
            settings.update({'enable_outgoing_tcp': False, 'enable_incoming_tcp': False,
                             'enable_outgoing_utp': True, 'enable_incoming_utp': True})
        return lt.session(settings)

    def seed(ip, path):
        d = os.path.dirname(path)
        fs = lt.file_storage()
        lt.add_files(fs, path)
        ct = lt.create_torrent(fs, 64 * 1024)
        lt.set_piece_hashes(ct, d)
        ti = lt.torrent_info(ct.generate())
        s = session(ip)
        h = s.add_torrent({'ti': ti, 'save_path': d, 'flags': lt.torrent_flags.seed_mode})
        t0 = time.time()
        while not h.status().is_seeding and time.time() - t0 < 20:
            time.sleep(0.02)
        print(json.dumps({'port': s.listen_port(), 'info_hash': str(ti.info_hashes().v1),
                          'seeding': h.status().is_seeding}), flush=True)
        sys.stdin.read()

    def leech(ip, ih, peer, d):
        s = session(ip)
        atp = lt.parse_magnet_uri('magnet:?xt=urn:btih:' + ih)
        atp.save_path = d
        h = s.add_torrent(atp)
        host, port = peer.rsplit(':', 1)
        h.connect_peer((host, int(port)))
        t0 = time.time()
        while time.time() - t0 < 20:
            st = h.status()
            if st.is_seeding:
                fs = h.torrent_file().files()
                print(json.dumps({'ok': True, 'secs': time.time() - t0,
                                  'file': os.path.join(d, fs.file_path(0))}), flush=True)
                return
            # Re-offer our address in case the first connect raced our listener.
            if st.num_peers == 0 and int(time.time() - t0) % 2 == 1:
                h.connect_peer((host, int(port)))
            time.sleep(0.02)
        st = h.status()
        print(json.dumps({'ok': False, 'state': str(st.state), 'done': st.total_done,
                          'peers': st.num_peers}), flush=True)

    if __name__ == '__main__':
        if sys.argv[1] == 'seed':
            seed(sys.argv[2], sys.argv[3])
        else:
            leech(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])

def t_metadata():
    """Metadata exchange (BEP 9): `seed IP SIZE` seeds a random file, `leech IP IH PEER` fetches only the info dict.
    Prints JSON lines."""
    import json, os, sys, tempfile, time
    import libtorrent as lt

    def session(ip):
        return lt.session({
            'listen_interfaces': ip + ':0',
            'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
            'enable_outgoing_utp': False, 'enable_incoming_utp': False,
            'out_enc_policy': 2, 'in_enc_policy': 1,
            'allow_multiple_connections_per_ip': True,
            'alert_mask': 0,
        })

    def seed(ip, size):
        d = tempfile.mkdtemp()
        p = os.path.join(d, 'file.bin')
        with open(p, 'wb') as f:
            f.write(os.urandom(size))
        fs = lt.file_storage()
        lt.add_files(fs, p)
        ct = lt.create_torrent(fs, 16384)
        lt.set_piece_hashes(ct, d)
        ti = lt.torrent_info(ct.generate())
        s = session(ip)
        h = s.add_torrent({'ti': ti, 'save_path': d})
        t0 = time.time()
        while not h.status().is_seeding and time.time() - t0 < 20:
            time.sleep(0.05)
        print(json.dumps({'port': s.listen_port(), 'info_hash': str(ti.info_hashes().v1),
                          'info': bytes(ti.info_section()).hex(), 'seeding': h.status().is_seeding}), flush=True)
        sys.stdin.read()

    def leech(ip, ih, peer):
        d = tempfile.mkdtemp()
        s = session(ip)
        atp = lt.parse_magnet_uri('magnet:?xt=urn:btih:' + ih)
        atp.save_path = d
        h = s.add_torrent(atp)
        host, port = peer.rsplit(':', 1)
        h.connect_peer((host, int(port)))
        t0 = time.time()
        while time.time() - t0 < 20:
            st = h.status()
            if st.has_metadata:
                print(json.dumps({'ok': True, 'secs': time.time() - t0,
                                  'info': bytes(h.torrent_file().info_section()).hex()}), flush=True)
                return
            time.sleep(0.02)
        print(json.dumps({'ok': False}), flush=True)

    if __name__ == '__main__':
        if sys.argv[1] == 'seed':
            seed(sys.argv[2], int(sys.argv[3]))
        else:
            leech(sys.argv[2], sys.argv[3], sys.argv[4])

def t_lsd():
    """Local Service Discovery (BEP 14), no DHT, no tracker, no peer given:
    `seed IP PATH` seeds PATH (a v1 torrent) with LSD on, announcing every 2 s, and prints
    {"port","info_hash","seeding"}, then (on stderr) one {"event":"lsd_peer","peer":IP:PORT} line per peer LSD told it
    of, until stdin reaches EOF; `leech IP IH DIR TIMEOUT` fetches the magnet IH with LSD on,
    then prints {"ok":...,"lsd_peers":[...],"secs":...}. Prints JSON lines."""
    import json, os, re, sys, time
    import libtorrent as lt

    def session(ip, interval=300):
        return lt.session({
            'listen_interfaces': ip + ':0', 'outgoing_interfaces': ip,
            'enable_dht': False, 'enable_lsd': True, 'enable_upnp': False, 'enable_natpmp': False,
            'enable_outgoing_utp': False, 'enable_incoming_utp': False,
            'allow_multiple_connections_per_ip': True,
            'local_service_announce_interval': interval,
            'alert_mask': lt.alert.category_t.peer_notification | lt.alert.category_t.status_notification,
        })

    def lsd_peers(s):
        found = []
        for a in s.pop_alerts():
            # The bindings have no lsd_peer_alert class: the alert is known by its name.
            if a.what() == 'lsd_peer':
                # "NAME peer [ IP:PORT client: ... ]: received peer from local service discovery"
                m = re.search(r'peer \[ (\S+) ', a.message())
                found.append(m.group(1) if m else a.message())
        return found

    def seed(ip, path):
        import threading
        d = os.path.dirname(path)
        fs = lt.file_storage()
        lt.add_files(fs, path)
        ct = lt.create_torrent(fs, 64 * 1024, flags=lt.create_torrent.v1_only)
        lt.set_piece_hashes(ct, d)
        ti = lt.torrent_info(ct.generate())
        # Announces every 2 s (default 5 min): a client started after the seed hears it soon.
        s = session(ip, 2)
        h = s.add_torrent({'ti': ti, 'save_path': d})
        t0 = time.time()
        while not h.status().is_seeding and time.time() - t0 < 20:
            time.sleep(0.02)
        print(json.dumps({'port': s.listen_port(), 'info_hash': str(ti.info_hashes().v1),
                          'seeding': h.status().is_seeding}), flush=True)
        eof = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), eof.set()), daemon=True).start()
        while not eof.is_set():
            for p in lsd_peers(s):
                # On stderr: a test reads one stdout line and may close the pipe after it.
                print(json.dumps({'event': 'lsd_peer', 'peer': p}), file=sys.stderr, flush=True)
            time.sleep(0.05)

    def leech(ip, ih, d, timeout):
        s = session(ip)
        atp = lt.parse_magnet_uri('magnet:?xt=urn:btih:' + ih)
        atp.save_path = d
        h = s.add_torrent(atp)
        t0 = time.time()
        found = []
        while time.time() - t0 < timeout:
            found += lsd_peers(s)
            if h.status().is_seeding:
                print(json.dumps({'ok': True, 'secs': time.time() - t0, 'lsd_peers': found}), flush=True)
                return
            time.sleep(0.05)
        st = h.status()
        print(json.dumps({'ok': False, 'lsd_peers': found, 'state': str(st.state),
                          'peers': st.num_peers, 'done': st.total_done}), flush=True)

    if __name__ == '__main__':
        if sys.argv[1] == 'seed':
            seed(sys.argv[2], sys.argv[3])
        else:
            leech(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))

def t_formats_check():
    """Loads TORRENT and hash-checks SAVE_PATH; prints the v1 info-hash, then "have total" pieces.
    Args: TORRENT SAVE_PATH."""
    import sys, time, libtorrent as lt
    torrent, save_path = sys.argv[1], sys.argv[2]
    ti = lt.torrent_info(torrent)
    print(str(ti.info_hashes().v1))
    ses = lt.session({'listen_interfaces': '127.0.0.1:0', 'enable_dht': False, 'enable_lsd': False,
                      'enable_upnp': False, 'enable_natpmp': False,
                      'alert_mask': lt.alert.category_t.status_notification | lt.alert.category_t.error_notification})
    h = ses.add_torrent({'ti': ti, 'save_path': save_path})
    deadline = time.time() + 30
    checked = False
    while time.time() < deadline and not checked:
        ses.wait_for_alert(200)
        for a in ses.pop_alerts():
            if isinstance(a, lt.torrent_checked_alert):
                checked = True
    if not checked:
        sys.exit('libtorrent never finished checking')
    st = h.status()
    print(st.num_pieces, ti.num_pieces())

def t_formats_make():
    """Makes a v1, hybrid or v2 torrent of SRC at OUT; prints its v1 info-hash (or -), pieces and size.
    Args: SRC OUT v1|hybrid|v2."""
    import sys, os, libtorrent as lt
    src, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    flags = {'v1': lt.create_torrent.v1_only, 'hybrid': 0, 'v2': lt.create_torrent.v2_only}[mode]
    fs = lt.file_storage()
    lt.add_files(fs, src)
    t = lt.create_torrent(fs, 16384, flags=flags)
    t.add_tracker('http://127.0.0.1:9/announce', 0)
    t.add_tracker('udp://127.0.0.1:10', 1)
    t.add_url_seed('http://127.0.0.1:11/ws/')
    lt.set_piece_hashes(t, os.path.dirname(src))
    buf = lt.bencode(t.generate())
    open(out, 'wb').write(buf)
    ti = lt.torrent_info(out)
    print(str(ti.info_hashes().v1) if mode != 'v2' else '-')
    print(ti.num_pieces(), ti.total_size())

def t_infohash():
    """The SHA-1 of a .torrent's info dict, by a bencode walker independent of ours and of libtorrent.
    Args: TORRENT."""
    import sys, hashlib
    b = open(sys.argv[1], 'rb').read()
    def end(i):
        c = b[i:i+1]
        if c == b'i': return b.index(b'e', i) + 1
        if c in (b'l', b'd'):
            i += 1
            while b[i:i+1] != b'e': i = end(i)
            return i + 1
        colon = b.index(b':', i)
        return colon + 1 + int(b[i:colon])
    assert b[0:1] == b'd'
    i = 1
    while b[i:i+1] != b'e':
        kend = end(i); key = b[b.index(b':', i)+1:kend]; vend = end(kend)
        if key == b'info': print(hashlib.sha1(b[kend:vend]).hexdigest())
        i = vend

TEST_MODES = {
    "dht-fetch": t_dht_fetch,
    "swarm-seed": t_swarm_seed,
    "tracker-seed": t_tracker_seed,
    "tracker-leech": t_tracker_leech,
    "tracker-announce-seed": t_tracker_announce_seed,
    "tracker-swarm": t_tracker_swarm,
    "dht-seed": t_dht_seed,
    "dht-find": t_dht_find,
    "dht-swarm": t_dht_swarm,
    "dht6-seed": t_dht6_seed,
    "dht6-find": t_dht6_find,
    "download": t_download,
    "metadata": t_metadata,
    "lsd": t_lsd,
    "formats-check": t_formats_check,
    "formats-make": t_formats_make,
    "infohash": t_infohash,
}


if sys.argv[1:2] and sys.argv[1] in TEST_MODES:
    mode = TEST_MODES[sys.argv.pop(1)]
    mode()
    sys.exit(0)

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
