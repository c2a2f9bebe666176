#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Several pyrelayd behind HAProxy (docs/scaling.md): three daemons on
their own loopback addresses, one HAProxy started from
etc/haproxy.cfg.example (addresses, ports, paths and the log target
substituted, nothing else), and 300 server-ids, each a binary and two
phones that connect through HAProxy over TLS from an address of their own
and reconnect as real clients do.  In order:

1. every phone reaches its own binary, and the server-ids are spread over
   the three hosts (the spread is printed);
2. one host is killed (SIGKILL of its parent and every worker): the
   clients of its server-ids are closed and are served again through
   HAProxy within RECONNECT_BOUND (the times are printed); no other client
   sees anything;
3. the host comes back: every server-id stays whole on one host, also
   when its phones and binaries reconnect after the return, although the
   hash now points the moved ones back to the returned host; new
   server-ids reach it again;
4. one host is drained (pyrelayctl drain): it gets no new server-id; its
   own keep working, a phone arriving later for one of them included;
   its binaries that reconnect stay; a binary whose server-id is gone from
   it is served by another host, and once its clients leave it holds
   nothing; undrained, it gets new server-ids again;
5. the client's address reaches pyrelayd through the PROXY header: one
   address past `max connections per ip` is refused and logged with that
   address while the others keep working;
6. HAProxy reloads (the stick table goes to the new process through the
   local peer): phones of server-ids that moved still find their binary.

Skipped (exit 77, reason printed) when haproxy is not installed.
HAPROXY=path runs another haproxy; PYRELAYD_TEST_KEEP=1 keeps the
temporary directory (HAProxy's configuration and log) and prints it."""

import asyncio
import hashlib
import json
import os
import random
import resource
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import websockets  # noqa: E402
import websockets.exceptions  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.environ.get("TOP_SRCDIR") or os.path.join(HERE, "..", "..")
EXAMPLE = os.path.join(TOP, "etc", "haproxy.cfg.example")
PYRELAYCTL = os.environ.get("PYRELAYCTL") or os.path.join(
    os.path.dirname(harness.PYRELAYD), "pyrelayctl")


def find_haproxy():
    """$HAPROXY, else the haproxy on PATH or in /usr/sbin."""
    if os.environ.get("HAPROXY"):
        return os.environ["HAPROXY"]
    for cand in (shutil.which("haproxy"), "/usr/sbin/haproxy",
                 "/usr/local/sbin/haproxy"):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


HAPROXY = find_haproxy()

NIDS = 300
# the example's hosts are 10.0.0.11 to 13; here each has a loopback address
HOST_ADDRS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
NAMES = ["relay1", "relay2", "relay3"]
VICTIM = 1          # killed in 2, back in 3
DRAINED = 2         # drained in 4
ATTACKER = "127.0.9.9"
PER_IP = 8          # max connections per ip on every host
RECONNECT_BOUND = 20.0  # seconds from the SIGKILL until all are served again
PHASE_BOUND = 30.0  # any other wait for the clients
HOST_CONF = """\
listen on {addr} port {port} proxy-protocol
agent on {addr} port {agent}
grace 3s
max connections per ip {per_ip}
# reconnects after a failure come in bursts from each client address
rate limit burst 200 refill 100ms
"""


def sid_of(i):
    """A UUID-shaped server-id, the same in every run (so is the spread)."""
    return str(uuid.UUID(bytes=hashlib.sha256(
        b"pyrelayd-scale-out-%d" % i).digest()[:16]))


def addr_of(i):
    """The client address of server-id i's binary and phones."""
    return "127.0.%d.%d" % (1 + i // 200, 1 + i % 200)


# --------------------------------------------------------------------------
# HAProxy from the example

def haproxy_config(tmp, port, peer_port, relay_port, agent_port, cert, sock):
    """etc/haproxy.cfg.example with this test's addresses, ports and paths.
    Every substitution must apply exactly as often as expected, so that a
    change to the example cannot leave a part of it untested unnoticed."""
    with open(EXAMPLE) as f:
        text = f.read()
    subs = [
        (r"(?m)^\tlog /dev/log local0$", "\tlog stdout format raw local0", 1),
        (r"stats socket /run/haproxy/admin\.sock", "stats socket " + sock, 1),
        # two descriptors a connection: within the hard limit of a container
        (r"(?m)^\tmaxconn 100000$", "\tmaxconn 4000", 1),
        (r"bind :::443 v4v6 ssl crt /etc/haproxy/certs/relay\.example\.com\.pem",
         "bind 127.0.0.1:%d ssl crt %s" % (port, cert), 1),
        (r"peer lb1 127\.0\.0\.1:10000", "peer lb1 127.0.0.1:%d" % peer_port, 1),
        (r"agent-port 9091 ", "agent-port %d " % agent_port, 1),
        (r"server (relay\d) 10\.0\.0\.(1\d):8443 ",
         lambda m: "server %s 127.0.0.%s:%d " % (m.group(1), m.group(2),
                                                 relay_port), 3),
    ]
    if not harness.is_root():
        # chroot and the change of user need root; nothing else does
        subs += [(r"(?m)^\t(chroot|user|group) .*\n", "", 3)]
    for rx, rep, count in subs:
        text, n = re.subn(rx, rep, text)
        if n != count:
            raise AssertionError("etc/haproxy.cfg.example: %r matched %d "
                                 "times, expected %d" % (rx, n, count))
    path = os.path.join(tmp, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(text)
    return path


class HAProxy:
    """haproxy -W (master-worker, as Debian's unit runs it) in the
    foreground, its log in a file."""

    def __init__(self, cfg, sock, logpath):
        self.cfg, self.sock, self.logpath = cfg, sock, logpath
        self.proc = None

    def start(self):
        r = subprocess.run([HAPROXY, "-c", "-f", self.cfg],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError("haproxy -c: %s%s" % (r.stdout, r.stderr))
        self.log = open(self.logpath, "wb")
        self.proc = subprocess.Popen(
            [HAPROXY, "-W", "-db", "-f", self.cfg], stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def reload(self):
        """A seamless reload: the master starts a new worker, the old one
        keeps its connections (hard-stop-after)."""
        self.proc.send_signal(signal.SIGUSR2)

    def stop(self):
        """The master and its workers, old ones included, are the process
        group we started (start_new_session): signal the group first, so
        that nothing can leave them running, then wait for the master."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc = None
        self.log.close()

    def log_tail(self, n=40):
        try:
            with open(self.logpath, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def command(self, cmd):
        """One command on the runtime API (the stats socket)."""
        return harness.unix_command(self.sock, cmd, 5)

    def servers(self):
        """{name: (operational state, weight)} from `show servers state`:
        state 0 stopped (down), 2 running (up); weight 0 is a drain."""
        out = {}
        try:
            text = self.command("show servers state pyrelayd")
        except OSError:
            return out
        for line in text.splitlines():
            f = line.split()
            if len(f) > 8 and f[1] == "pyrelayd":
                out[f[3]] = (int(f[5]), int(f[7]))
        return out


# --------------------------------------------------------------------------
# clients that behave like real ones

class Farm:
    """What the clients need: HAProxy's address and the TLS context."""

    def __init__(self, port, cafile):
        self.url = "wss://127.0.0.1:%d" % port
        self.ssl = ssl.create_default_context(cafile=cafile)

    async def connect(self, path, sid, addr, extra):
        headers = {"X-Pyrycode-Server": sid}
        headers.update(extra)
        return await websockets.connect(
            self.url + path, ssl=self.ssl, server_hostname="relay.test",
            local_addr=(addr, 0), extra_headers=headers,
            user_agent_header=harness.UA, ping_interval=None, max_size=None,
            open_timeout=10, close_timeout=2)


CONNECT_ERRORS = (OSError, asyncio.TimeoutError,
                  websockets.exceptions.InvalidHandshake)


class Client:
    """A binary or a phone that keeps itself connected through HAProxy:
    after any close it connects again with a jittered backoff (50 ms
    doubling to 1 s), as the pyry binary and the apps do.  closes records
    (time, close code) of every close it did not ask for; up_at is the
    time it was last served again."""

    def __init__(self, farm, sid, addr):
        self.farm, self.sid, self.addr = farm, sid, addr
        self.ws = None
        self.up = asyncio.Event()
        self.up_at = None
        self.closes = []
        self.attempts = 0      # connection attempts, served or not
        self.refusals = []     # why an attempt was not served
        self.stopping = False
        self.bouncing = False
        self.task = None
        self.errors = []       # what a real client would call a bug
        self.bounces = []      # attempts each bounce() took

    def start(self):
        self.task = asyncio.create_task(self.run())

    async def run(self):
        delay = 0.05
        while not self.stopping:
            self.attempts += 1
            ws = await self.attempt()
            if ws is None:
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 1.0)
                continue
            if self.stopping:
                await ws.close()
                break
            delay = 0.05
            self.ws = ws
            self.up_at = time.monotonic()
            self.up.set()
            await self.serve(ws)
            self.up.clear()
            self.ws = None
            if not self.stopping and not self.bouncing:
                self.closes.append((time.monotonic(), ws.close_code))
            self.bouncing = False

    async def stop(self):
        """Leave for good: close, and connect no more."""
        self.stopping = True
        if self.ws is not None:
            await self.ws.close()
        await self.task

    async def bounce(self):
        """Close and connect again, as after a network change; returns
        once it is served again."""
        ws = self.ws
        assert ws is not None, "%s is not connected" % self
        before = self.attempts
        self.bouncing = True
        self.up.clear()
        await ws.close()
        await asyncio.wait_for(self.up.wait(), PHASE_BOUND)
        self.bounces.append(self.attempts - before)


class Binary(Client):
    """A binary: claims its server-id and answers every phone message with
    {"sid": its server-id, "echo": the message}."""

    def __str__(self):
        return "binary %s" % self.sid

    async def attempt(self):
        try:
            return await self.farm.connect("/v1/server", self.sid, self.addr,
                                           {"X-Pyrycode-Version": "1"})
        except CONNECT_ERRORS as e:
            self.refusals.append(repr(e))
            return None

    async def serve(self, ws):
        try:
            async for msg in ws:
                env = json.loads(msg)
                if "frame" not in env:
                    continue    # a phone's close notice
                cid = env["conn_id"]
                if not cid.startswith("client-%s-" % self.sid):
                    self.errors.append("got %r" % msg)
                    continue
                await ws.send(json.dumps({"conn_id": cid, "frame": {
                    "sid": self.sid, "echo": env["frame"]}}))
        except websockets.exceptions.ConnectionClosed:
            pass


class Phone(Client):
    """A phone: served once a message went to its binary and back.  A
    4404 (no binary there yet) is a refusal: it tries again."""

    n = 0

    def __str__(self):
        return "phone %s" % self.sid

    async def roundtrip(self, ws, timeout=5):
        Phone.n += 1
        n = Phone.n
        await ws.send(json.dumps({"n": n}))
        got = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if got != {"sid": self.sid, "echo": {"n": n}}:
            raise AssertionError("%s got %r" % (self, got))

    async def attempt(self):
        try:
            ws = await self.farm.connect("/v1/client", self.sid, self.addr,
                                         {"X-Pyrycode-Token": "t"})
        except CONNECT_ERRORS as e:
            self.refusals.append(repr(e))
            return None
        try:
            await self.roundtrip(ws)
            return ws
        except websockets.exceptions.ConnectionClosed:
            self.refusals.append("close %s" % ws.close_code)
        except asyncio.TimeoutError:
            self.refusals.append("no answer")
            await ws.close()
        return None

    async def serve(self, ws):
        await ws.wait_closed()

    async def check(self):
        """A message to the binary and back on the live connection."""
        assert self.ws is not None, "%s is not connected" % self
        await self.roundtrip(self.ws)


class ServerId:
    def __init__(self, farm, i):
        self.i = i
        self.sid = sid_of(i)
        self.addr = addr_of(i)
        self.binary = Binary(farm, self.sid, self.addr)
        self.phones = [Phone(farm, self.sid, self.addr) for _ in range(2)]

    def clients(self):
        return [self.binary] + self.phones

    def start_binary(self):
        self.binary.start()

    def start_phones(self):
        for p in self.phones:
            p.start()

    async def served(self, timeout=PHASE_BOUND):
        for c in self.clients():
            await asyncio.wait_for(c.up.wait(), timeout)

    async def stop(self):
        for c in self.phones + [self.binary]:
            await c.stop()

    def closes_since(self, t):
        return [(str(c), code) for c in self.clients()
                for when, code in c.closes if when >= t]


async def gather_bounded(coros, what, timeout=PHASE_BOUND):
    try:
        return await asyncio.wait_for(asyncio.gather(*coros), timeout)
    except asyncio.TimeoutError:
        raise AssertionError("%s: not done within %gs" % (what, timeout))


async def until(pred, timeout, what, interval=0.05):
    """Bounded polling of a state no event announces (HAProxy's view of a
    server, a relay's exit)."""
    deadline = time.monotonic() + timeout
    while True:
        v = await pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %gs waiting for %s"
                                 % (timeout, what))
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------

class ScaleOut(unittest.TestCase):
    def setUp(self):
        # cleanups run last-in first-out, and also when setUp fails
        self.tmp = tempfile.mkdtemp(prefix="pyrelayd-scale-")
        self.addCleanup(self.remove_tmp)
        os.chmod(self.tmp, 0o755)
        cert = os.path.join(self.tmp, "relay.pem")
        key = os.path.join(self.tmp, "key.pem")
        self.cafile = os.path.join(self.tmp, "ca.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", self.cafile, "-days", "1",
                        "-subj", "/CN=relay.test",
                        "-addext", "subjectAltName=DNS:relay.test"],
                       check=True, capture_output=True)
        with open(cert, "w") as out:
            for part in (self.cafile, key):
                with open(part) as f:
                    out.write(f.read())
        self.live = []      # ServerIds whose clients are connected
        self.left = []      # and those whose clients left
        self.homes = {}     # server-id -> host index, as last checked
        self.port, peer_port, self.relay_port, self.agent_port = \
            harness.free_ports(4)
        self.hosts = []
        for addr in HOST_ADDRS:
            self.hosts.append(harness.Daemon(HOST_CONF.format(
                addr=addr, port=self.relay_port, agent=self.agent_port,
                per_ip=PER_IP), workers=1))
        for d in self.hosts:
            self.addCleanup(d.stop)     # also removes a killed one's dirs
            d.start()
        sock = os.path.join(self.tmp, "admin.sock")
        cfg = haproxy_config(self.tmp, self.port, peer_port, self.relay_port,
                             self.agent_port, cert, sock)
        self.haproxy = HAProxy(cfg, sock, os.path.join(self.tmp, "haproxy.log"))
        self.addCleanup(self.haproxy.stop)
        self.haproxy.start()

    def remove_tmp(self):
        if os.environ.get("PYRELAYD_TEST_KEEP"):
            print("kept %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- what the hosts and HAProxy say

    async def ctl(self, d, *args):
        p = await asyncio.create_subprocess_exec(
            PYRELAYCTL, "-s", d.control_path, *args,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(p.communicate(), 30)
        self.assertEqual(p.returncode, 0, err)
        return out.decode()

    async def placement(self):
        """{server-id: [(host index, binary state, phones)]} from
        `pyrelayctl show servers` on every running host."""
        where = {}
        for h, d in enumerate(self.hosts):
            if not d.alive():
                continue
            for line in (await self.ctl(d, "show servers")).splitlines():
                if line.startswith("#"):
                    continue
                sid, _pid, state, phones, _age = line.split()
                where.setdefault(sid, []).append((h, state, int(phones)))
        return where

    async def check_whole(self, ids, phones=2, hosts=None):
        """Each server-id on exactly one host, its binary connected there
        with all its phones; returns {server-id: host index}."""
        where = await self.placement()
        out = {}
        for s in ids:
            rows = where.get(s.sid, [])
            self.assertEqual(len(rows), 1, "%s on %s" % (s.sid, rows))
            h, state, n = rows[0]
            self.assertEqual((state, n), ("connected", phones),
                             "%s on %s" % (s.sid, NAMES[h]))
            if hosts is not None:
                self.assertIn(h, hosts, s.sid)
            out[s.sid] = h
        self.homes.update(out)
        return out

    def table(self):
        """HAProxy's stick table: {server-id: (use, host name)}."""
        try:
            out = self.haproxy.command("show table pyrelayd")
        except OSError:
            return {}
        return {m.group(1): (int(m.group(2)), m.group(3)) for m in
                re.finditer(r"key=(\S+) use=(\d+) .*server_key=(\S+)", out)}

    def table_mismatches(self, ids, use=(1,)):
        table = self.table()
        return [(s.sid, table.get(s.sid), NAMES[self.homes[s.sid]])
                for s in ids if table.get(s.sid) is None or
                table[s.sid][0] not in use or
                table[s.sid][1] != NAMES[self.homes[s.sid]]]

    async def check_table(self, ids):
        """The stick table names, for each server-id, the host that holds
        it, and the entry is held by its binary's connection (use=1:
        tracked, so it cannot expire while the binary is connected)."""
        bad = await asyncio.to_thread(self.table_mismatches, ids)
        self.assertEqual(bad, [], "stick table entries (use, host) that "
                         "do not match where the server-id is")

    async def haproxy_sees(self, name, state, weight=None):
        def ok(v):
            if self.haproxy.proc.poll() is not None:
                raise AssertionError("haproxy exited %d"
                                     % self.haproxy.proc.returncode)
            return v is not None and v[0] == state and \
                (weight is None or v[1] == weight)
        return await until(
            lambda: asyncio.to_thread(
                lambda: ok(self.haproxy.servers().get(name))),
            PHASE_BOUND, "HAProxy to see %s in state %d weight %s"
            % (name, state, weight))

    def spread(self, homes):
        counts = [sum(1 for h in homes.values() if h == i)
                  for i in range(len(NAMES))]
        return counts, " ".join("%s=%d" % (n, c) for n, c in zip(NAMES, counts))

    async def connect_ids(self, ids):
        self.live += ids
        for s in ids:
            s.start_binary()
        try:
            await gather_bounded([s.binary.up.wait() for s in ids],
                                 "binaries served")
            for s in ids:
                s.start_phones()
            await gather_bounded([s.served() for s in ids], "phones served")
        except AssertionError as e:
            late = [(str(c), c.refusals[-2:]) for s in ids
                    for c in s.clients() if c.task and not c.up.is_set()]
            raise AssertionError("%s; %d not served, for instance %s"
                                 % (e, len(late), late[:3]))

    # -- the test

    def test_scale_out(self):
        try:
            harness.run(self.scenario(), timeout=240)
        except BaseException:
            sys.stderr.write("--- haproxy log (last 40 lines) ---\n%s\n"
                             % self.haproxy.log_tail())
            for name, d in zip(NAMES, self.hosts):
                sys.stderr.write("--- %s log (last 30 lines) ---\n%s\n"
                                 % (name, "\n".join(d.log_lines()[-30:])))
            raise

    async def scenario(self):
        t0 = time.monotonic()
        for name in NAMES:
            await self.haproxy_sees(name, 2, 100)
        farm = Farm(self.port, self.cafile)
        self.farm = farm
        try:
            await self.phase1([ServerId(farm, i) for i in range(NIDS)])
            await self.phase2()
            await self.phase3()
            await self.phase4()
            await self.phase5()
            await self.phase6()
            errors = [(str(c), e) for s in self.live + self.left
                      for c in s.clients() for e in c.errors]
            self.assertEqual(errors, [])
        finally:
            await asyncio.gather(*(s.stop() for s in self.live),
                                 return_exceptions=True)
        print("total %.1f s" % (time.monotonic() - t0))

    async def phase1(self, ids):
        """Every phone reaches its own binary; the ids are spread."""
        t = time.monotonic()
        await self.connect_ids(ids)
        print("\n1. %d server-ids, %d clients served through HAProxy in %.1f s"
              % (len(ids), 3 * len(ids), time.monotonic() - t))
        counts, text = self.spread(await self.check_whole(ids))
        await self.check_table(ids)
        print("   spread over the hosts: %s (even: %d each)"
              % (text, len(ids) // 3))
        for c in counts:
            self.assertGreaterEqual(c, len(ids) // 5, text)
        # each phone's round trip reached the binary of its own server-id
        await gather_bounded([p.check() for s in ids for p in s.phones],
                             "round trips")

    async def phase2(self):
        """A host is killed: only its server-ids' clients notice."""
        ids = self.live
        victim = [s for s in ids if self.homes[s.sid] == VICTIM]
        others = [s for s in ids if self.homes[s.sid] != VICTIM]
        t_kill = time.monotonic()
        self.hosts[VICTIM].kill()
        down = asyncio.create_task(self.haproxy_sees(NAMES[VICTIM], 0))
        # every client of the victim's server-ids is closed ...
        async def all_closed():
            return all(c.closes for s in victim for c in s.clients())
        await until(all_closed, 10, "the killed host's clients to be closed")
        # ... and served again through HAProxy
        await gather_bounded([s.served(RECONNECT_BOUND) for s in victim],
                             "reconnects after the failure", RECONNECT_BOUND)
        times = sorted(max(c.up_at for c in s.clients()) - t_kill
                       for s in victim)
        first = min(c.up_at for s in victim for c in s.clients()) - t_kill
        await down
        t_down = time.monotonic() - t_kill
        print("2. %s killed with %d server-ids (%d clients): all served "
              "again within %.3f s of the SIGKILL (first client %.3f s, "
              "server-ids whole: median %.3f s, p90 %.3f s); HAProxy marked "
              "it down after %.3f s"
              % (NAMES[VICTIM], len(victim), 3 * len(victim), times[-1],
                 first, statistics.median(times),
                 times[int(0.9 * len(times))], t_down))
        codes = sorted({code for s in victim for c in s.clients()
                        for _, code in c.closes})
        print("   close codes the clients saw: %s" % codes)
        self.assertLess(times[-1], RECONNECT_BOUND)
        # the others saw nothing, and still work
        await gather_bounded([p.check() for s in others for p in s.phones],
                             "round trips on the other hosts")
        seen = [x for s in others for x in s.closes_since(t_kill)]
        self.assertEqual(seen, [], "clients of the other hosts were closed")
        counts, text = self.spread(await self.check_whole(ids, hosts={0, 2}))
        print("   after the failure: %s" % text)
        self.moved = victim

    async def phase3(self):
        """The host comes back: nothing splits."""
        ids = self.live
        homes = dict(self.homes)
        t = time.monotonic()
        self.hosts[VICTIM].start()
        await self.haproxy_sees(NAMES[VICTIM], 2, 100)
        print("3. %s back, up in HAProxy after %.2f s"
              % (NAMES[VICTIM], time.monotonic() - t))
        # the hash would send the moved server-ids back to the returned
        # host; their phones and binaries reconnect and must not go there
        await gather_bounded([p.bounce() for s in self.moved
                              for p in s.phones], "phones reconnecting")
        half = self.moved[::2]
        await gather_bounded([s.binary.bounce() for s in half],
                             "binaries reconnecting")
        await gather_bounded([p.bounce() for s in half for p in s.phones],
                             "phones reconnecting after their binary")
        sample = [s for s in ids if s not in self.moved][:60]
        await gather_bounded([p.bounce() for s in sample for p in s.phones],
                             "other phones reconnecting")
        again = [c for s in ids for c in s.clients() if c.bounces]
        retried = [(str(c), c.refusals[-3:]) for c in again
                   if c.bounces != [1] * len(c.bounces)]
        self.assertEqual(retried, [], "clients that needed more than one "
                         "attempt after the host came back")
        self.assertEqual(await self.check_whole(ids), homes,
                         "a server-id moved")
        await self.check_table(ids)
        print("   %d clients reconnected after the return, each at its "
              "first attempt, all to their binary's host" % len(again))
        # new server-ids reach the returned host again
        new = [ServerId(self.farm, NIDS + i) for i in range(30)]
        await self.connect_ids(new)
        counts, text = self.spread(await self.check_whole(new))
        print("   30 new server-ids: %s" % text)
        self.assertGreater(counts[VICTIM], 0, text)

    async def phase4(self):
        """A host drains: no new server-ids, its own keep working."""
        d = self.hosts[DRAINED]
        name = NAMES[DRAINED]
        mine = [s for s in self.live if self.homes[s.sid] == DRAINED]
        await self.ctl(d, "drain")
        self.assertEqual(d.healthz()["status"], "draining")
        t = time.monotonic()
        await self.haproxy_sees(name, 2, 0)
        print("4. %s drained (%d server-ids), weight 0 in HAProxy after "
              "%.2f s" % (name, len(mine), time.monotonic() - t))
        new = [ServerId(self.farm, NIDS + 100 + i) for i in range(60)]
        await self.connect_ids(new)
        counts, text = self.spread(await self.check_whole(new, hosts={0, 1}))
        print("   60 new server-ids: %s" % text)
        # its server-ids keep working: a phone arriving later included,
        # and binaries that reconnect stay there
        await gather_bounded([p.check() for s in mine for p in s.phones],
                             "round trips on the drained host")
        late = mine[:30]
        for s in late:
            s.phones.append(Phone(self.farm, s.sid, s.addr))
            s.phones[-1].start()
        await gather_bounded([s.served() for s in late], "late phones")
        await gather_bounded([s.binary.bounce() for s in mine[30:40]],
                             "binaries reconnecting to the drained host")
        await self.check_whole(late, phones=3, hosts={DRAINED})
        await self.check_whole(mine[30:], hosts={DRAINED})
        self.assertEqual([s for s in late if s.phones[-1].attempts != 1], [])
        print("   its %d server-ids kept working; 30 phones arriving later "
              "and 10 binaries reconnecting stayed on it" % len(mine))
        # a binary whose server-id is gone from it goes elsewhere, its
        # phones after it
        gone = mine.pop()
        self.assertGreater(len(mine), 40)
        await gone.stop()
        self.live.remove(gone)
        self.left.append(gone)
        await until(lambda: self.absent(d, gone.sid), PHASE_BOUND,
                    "%s to leave %s" % (gone.sid, name))
        back = ServerId(self.farm, gone.i)
        await self.connect_ids([back])
        h = (await self.check_whole([back], hosts={0, 1}))[back.sid]
        print("   a server-id that left it and came back: served by %s"
              % NAMES[h])
        d.wait_log(r"event=drain_refused refused=\d+ server_id=%s$"
                   % back.sid)
        # once every client has left, it holds nothing
        await gather_bounded([s.stop() for s in mine], "leaving")
        for s in mine:
            self.live.remove(s)
            self.left.append(s)
        await until(lambda: self.empty(d), PHASE_BOUND,
                    "%s to hold no server-id" % name)
        h = d.healthz()
        self.assertEqual((h["status"], h["connected_binaries"],
                          h["connected_phones"]), ("draining", 0, 0))
        print("   once its clients left it held nothing")
        await self.ctl(d, "undrain")
        await self.haproxy_sees(name, 2, 100)
        new = [ServerId(self.farm, NIDS + 200 + i) for i in range(30)]
        await self.connect_ids(new)
        counts, text = self.spread(await self.check_whole(new))
        print("   undrained; 30 new server-ids: %s" % text)
        self.assertGreater(counts[DRAINED], 0, text)

    async def absent(self, d, sid):
        return sid not in await self.placement_of(d)

    async def empty(self, d):
        return not await self.placement_of(d)

    async def placement_of(self, d):
        out = await self.ctl(d, "show servers")
        return [line.split()[0] for line in out.splitlines()
                if not line.startswith("#")]

    async def phase5(self):
        """The client's address, not HAProxy's, meets the per-address cap."""
        target = self.live[0]
        h = self.homes[target.sid]
        d = self.hosts[h]
        mark = d.log_mark()
        attacker = []
        try:
            for _ in range(PER_IP):
                p = Phone(self.farm, target.sid, ATTACKER)
                ws = await p.attempt()
                self.assertIsNotNone(ws, p.refusals)
                attacker.append(ws)
            # one more from that address: refused (503 on its host; HAProxy
            # then tries another host, where the server-id is unknown)
            p = Phone(self.farm, target.sid, ATTACKER)
            self.assertIsNone(await p.attempt())
            m = d.wait_log(r"event=conn_cap_reached refused=\d+ live=\d+ "
                           r"ip_live=%d ip=(\S+)$" % (PER_IP + 1), since=mark)
            self.assertEqual(m.group(1), ATTACKER + "/32")
            # the well-behaved clients of that server-id keep working, and
            # one more of them, from its own address, gets in
            for q in target.phones:
                await q.check()
            extra = Phone(self.farm, target.sid, target.addr)
            ws = await extra.attempt()
            self.assertIsNotNone(ws, extra.refusals)
            await ws.close()
            print("5. %s refused the %dth connection from %s (its log: "
                  "ip=%s) and kept serving the others"
                  % (NAMES[h], PER_IP + 1, ATTACKER, m.group(1)))
        finally:
            await asyncio.gather(*(ws.close() for ws in attacker))

        async def two_phones():
            rows = (await self.placement()).get(target.sid, [])
            return [r[1:] for r in rows] == [("connected", 2)]
        await until(two_phones, PHASE_BOUND, "the attacker's phones to go")
        s = await self.ctl(d, "show summary")
        addrs = int(re.search(r"^addresses (\d+)$", s, re.M).group(1))
        mine = sum(1 for x in self.live if self.homes[x.sid] == h)
        self.assertGreaterEqual(addrs, mine, s)
        print("   %s keeps admission state for %d client addresses" %
              (NAMES[h], addrs))

    async def phase6(self):
        """A reload of HAProxy keeps the stick table (local peer)."""
        self.haproxy.reload()
        # the new worker answers on the runtime API once it runs; its
        # table, learned from the old one, names every host (use=0: the
        # binaries' connections stay with the old worker)
        await until(lambda: asyncio.to_thread(
            lambda: not self.table_mismatches(self.live, use=(0,))),
            PHASE_BOUND, "the new process to learn the stick table")
        moved = [s for s in self.moved if s in self.live]
        await gather_bounded([p.bounce() for s in moved for p in s.phones],
                             "phones after the reload")
        retried = [(str(p), p.refusals[-3:]) for s in moved for p in s.phones
                   if p.bounces[-1] != 1]
        self.assertEqual(retried, [])
        await self.check_whole(self.live)
        print("6. HAProxy reloaded: %d phones of moved server-ids found "
              "their binary at the first attempt" % (2 * len(moved)))



if __name__ == "__main__":
    if HAPROXY is None or not os.access(HAPROXY, os.X_OK):
        print("SKIP: haproxy is not installed (Debian: apt-get install "
              "haproxy; or set HAPROXY)", file=sys.stderr)
        sys.exit(harness.SKIP)
    # about 1,200 client connections at once: raise our soft limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        print("SKIP: RLIMIT_NOFILE hard limit %d, the clients need 2048"
              % hard, file=sys.stderr)
        sys.exit(harness.SKIP)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not shutil.which("openssl"):
        print("SKIP: the openssl command is not installed", file=sys.stderr)
        sys.exit(harness.SKIP)
    harness.main()
