# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Upgrading pyrelayd without dropping a connection (issue 17,
docs/upgrade.md).

The daemon runs from copies of pyrelayd and pyrelayd-relay in a directory
of its own.  200 server-ids, each a binary and two phones, exchange
numbered messages in both directions all along (Load).  The test installs
tests/pyrelayd-next and tests/pyrelayd-relay-next over the copies, as
`make install` would (a new file renamed over the old path), and runs
`pyrelayctl upgrade`: the same parent process executes the program now at
its path, which reports another version and speaks the next message
version, and takes over the relays, which speak the version before.  Then
each way an upgrade can fail, each of which must change nothing; then 20
upgrades in a row; then every message must have arrived exactly once, in
order, and no client may have been closed.

While each upgrade runs, a thread opens a new connection every few
milliseconds and asks /healthz: each must be answered, and the longest
wait is printed (connections arriving during the exec wait in the listen
queue).

UpgradePushDrain runs a daemon with push configured (test_push.py's fake
of Google's endpoints) and an agent listener: push wakes in flight when
the exec comes are answered by the old push process and counted by the
new parent, which starts a push process of the new program; the way back
keeps the push process it had; a drained host stays drained, with the
same agent listener, and the refusals of the second the exec falls in
are logged once.  UpgradeTLSPump: a front pumping a TLS session when it
is replaced.
"""

import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import websockets
import websockets.exceptions

import harness

BUILD = os.path.dirname(harness.PYRELAYD)
RELAY = os.path.join(BUILD, "pyrelayd-relay")
NEXT = os.environ.get("PYRELAYD_NEXT") or os.path.join(
    BUILD, "tests", "pyrelayd-next")
RELAY_NEXT = os.environ.get("PYRELAYD_RELAY_NEXT") or os.path.join(
    BUILD, "tests", "pyrelayd-relay-next")
PYRELAYCTL = os.environ.get("PYRELAYCTL") or os.path.join(BUILD,
                                                           "pyrelayctl")

SIDS = 200
WINDOW = 4          # messages a phone may have unanswered
INTERVAL = 0.5      # seconds between a phone's messages
POOL = 4
CONF = ("relay pool %d\nrate limit burst 100000 refill 100ms\n"
        "max connections per ip 100000\ngrace 1s\n" % POOL)


def ctl(d, *args, timeout=40):
    """pyrelayctl ARGS against daemon d, its output captured."""
    return subprocess.run([PYRELAYCTL, "-s", d.control_path] + list(args),
                          capture_output=True, text=True, timeout=timeout)


def version_of(exe):
    out = subprocess.run([exe, "-V"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    return out.split()[1]


def install(src, dst):
    """As make install: a new file, renamed over the old path."""
    tmp = dst + ".new"
    shutil.copy2(src, tmp)
    os.chmod(tmp, 0o755)
    os.rename(tmp, dst)


def exe_inode(pid):
    return os.stat("/proc/%d/exe" % pid).st_ino


class Load:
    """SIDS server-ids, each a binary and two phones, in one asyncio loop
    of a thread of its own.  Each phone sends {"p":i,"n":k}, k = 1, 2, ...,
    every INTERVAL seconds while fewer than WINDOW are unanswered; the
    binary answers each through its conn_id with {"m":j}, j = 1, 2, ...
    for that phone.  Every receiver checks that its stream goes 1, 2, 3 ...
    with nothing missing, repeated or out of order; a client that sees its
    connection end is recorded in closes."""

    class Session:
        def __init__(self, sid):
            self.sid = sid
            self.b = None
            self.phones = [None, None]
            self.sent_n = [0, 0]    # phone i sent up to n
            self.got_n = [0, 0]     # the binary got from phone i up to n
            self.sent_m = [0, 0]    # the binary answered phone i up to m
            self.got_m = [0, 0]     # phone i got up to m

    def __init__(self, d, n, prefix):
        self.d = d
        self.sessions = [self.Session("%s-%03d" % (prefix, i))
                         for i in range(n)]
        self.errors = []
        self.closes = []
        self.running = True
        self.stopping = False
        self.tasks = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever,
                                       daemon=True)
        self.thread.start()

    def call(self, coro, timeout):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(
            timeout)

    def totals(self):
        return (sum(sum(s.got_n) for s in self.sessions),
                sum(sum(s.got_m) for s in self.sessions))

    async def _connect(self, s):
        s.b = await harness.binary(self.d, s.sid)
        for i in range(2):
            s.phones[i] = await harness.phone(self.d, s.sid,
                                              device="phone-%d" % i)
        self.tasks.append(asyncio.ensure_future(self._binary(s)))
        for i in range(2):
            self.tasks.append(asyncio.ensure_future(self._phone_reader(s, i)))
            self.tasks.append(asyncio.ensure_future(self._phone_sender(s, i)))

    async def _start(self):
        for k in range(0, len(self.sessions), 10):
            await asyncio.gather(*(self._connect(s)
                                   for s in self.sessions[k:k + 10]))

    def start(self):
        self.call(self._start(), 120)

    def _closed(self, s, who, e):
        if not self.stopping:
            self.closes.append((s.sid, who, e.code, e.reason))

    async def _binary(self, s):
        try:
            while True:
                env = json.loads(await s.b.recv())
                cid, frame = env["conn_id"], env["frame"]
                i, n = frame["p"], frame["n"]
                if n != s.got_n[i] + 1:
                    self.errors.append("%s: the binary got n=%d from phone "
                                       "%d after %d" % (s.sid, n, i,
                                                        s.got_n[i]))
                s.got_n[i] = n
                s.sent_m[i] += 1
                await s.b.send(json.dumps({"conn_id": cid,
                                           "frame": {"m": s.sent_m[i]}}))
        except websockets.exceptions.ConnectionClosed as e:
            self._closed(s, "binary", e)

    async def _phone_reader(self, s, i):
        try:
            while True:
                m = json.loads(await s.phones[i].recv())["m"]
                if m != s.got_m[i] + 1:
                    self.errors.append("%s: phone %d got m=%d after %d"
                                       % (s.sid, i, m, s.got_m[i]))
                s.got_m[i] = m
        except websockets.exceptions.ConnectionClosed as e:
            self._closed(s, "phone-%d" % i, e)

    async def _phone_sender(self, s, i):
        await asyncio.sleep(random.random() * INTERVAL)
        try:
            while self.running:
                if s.sent_n[i] - s.got_m[i] < WINDOW:
                    s.sent_n[i] += 1
                    await s.phones[i].send(json.dumps({"p": i,
                                                       "n": s.sent_n[i]}))
                await asyncio.sleep(INTERVAL)
        except websockets.exceptions.ConnectionClosed as e:
            self._closed(s, "phone-%d sending" % i, e)

    def wait_progress(self, more, timeout=30):
        """Wait until both directions moved on by `more` messages."""
        n0, m0 = self.totals()
        harness.poll_until(lambda: min(self.totals()[0] - n0,
                                       self.totals()[1] - m0) >= more,
                           timeout, "%d more messages each way" % more,
                           interval=0.05)

    def drain(self, timeout=30):
        """Stop sending; wait until every message sent has arrived."""
        self.running = False

        def done():
            return all(s.got_n[i] == s.sent_n[i] and
                       s.got_m[i] == s.sent_m[i]
                       for s in self.sessions for i in range(2))
        harness.poll_until(done, timeout, "every message to arrive",
                           interval=0.05)

    async def _close(self):
        for t in self.tasks:
            t.cancel()
        conns = [c for s in self.sessions for c in [s.b] + s.phones
                 if c is not None]
        await harness.close_all(*conns)

    def close(self):
        self.stopping = True
        self.running = False
        try:
            self.call(self._close(), 60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


class Prober:
    """While running: a new connection every few milliseconds asking
    /healthz; records how long each took to be answered."""

    def __init__(self, port):
        self.port = port
        self.times = []
        self.failures = []
        self.on = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.on:
            t0 = time.monotonic()
            try:
                status, _, _ = harness.http_get(self.port, "/healthz")
                if status != 200:
                    self.failures.append("status %d" % status)
            except (OSError, AssertionError) as e:
                self.failures.append(repr(e))
            self.times.append(time.monotonic() - t0)
            time.sleep(0.005)

    def stop(self):
        self.on = False
        self.thread.join(30)
        return max(self.times) if self.times else 0.0


def tcp_listener_inode(port):
    """The inode of the socket listening on 127.0.0.1:port."""
    want = "0100007F:%04X" % port
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return fields[9]
    raise AssertionError("nothing listens on 127.0.0.1:%d" % port)


def install_closing(exe, fd):
    """Installs at exe a wrapper that starts NEXT with fd closed: a new
    image that misses a descriptor the state names.  Returns the path of
    the program it starts, for the caller to remove."""
    real = exe + ".real"
    install(NEXT, real)
    with open(exe + ".wrap", "w") as f:
        f.write("#!/bin/bash\nexec %d<&-\nexec '%s' \"$@\"\n" % (fd, real))
    os.chmod(exe + ".wrap", 0o755)
    os.rename(exe + ".wrap", exe)
    return real


def unix_listener_fd(pid, path):
    """The fd number under which pid holds the listening Unix socket
    bound to path."""
    inode = None
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[-1] == path and \
                    fields[3] == "00010000":
                inode = fields[6]
    assert inode is not None, "nothing listens on %s" % path
    for n in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, n)) == \
                    "socket:[%s]" % inode:
                return int(n)
        except FileNotFoundError:
            continue
    raise AssertionError("pid %d holds no fd of socket %s" % (pid, inode))


class Upgrade(unittest.TestCase):
    """One daemon and one load for the whole sequence; the tests run in
    the order of their names."""

    longest = []        # the longest accept delay of each upgrade (s)
    claims = 0

    @classmethod
    def setUpClass(cls):
        for exe in (NEXT, RELAY_NEXT):
            if not os.access(exe, os.X_OK):
                raise AssertionError("%s is missing (make check builds it)"
                                     % exe)
        cls.bindir = tempfile.mkdtemp(prefix="pyrelayd-bin-")
        os.chmod(cls.bindir, 0o755)
        cls.exe = os.path.join(cls.bindir, "pyrelayd")
        cls.relay = os.path.join(cls.bindir, "pyrelayd-relay")
        install(harness.PYRELAYD, cls.exe)
        install(RELAY, cls.relay)
        cls.old_version = version_of(harness.PYRELAYD)
        cls.new_version = version_of(NEXT)
        assert cls.old_version != cls.new_version
        cls.old_relay_ino = os.stat(cls.relay).st_ino
        cls.d = harness.Daemon(CONF, exe=cls.exe)
        cls.d.start()
        cls.pid = cls.d.pid
        cls.load = Load(cls.d, SIDS, "up")
        cls.load.start()
        cls.load.wait_progress(SIDS)

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.load.running or not cls.load.stopping:
                cls.load.close()
        finally:
            rc = cls.d.stop()
            shutil.rmtree(cls.bindir, ignore_errors=True)
        assert rc == 0, "pyrelayd exited %r" % rc
        if cls.longest:
            sys.stderr.write("longest accept delay during an upgrade: "
                             "%.1f ms (of %d upgrades: %s)\n"
                             % (max(cls.longest) * 1000, len(cls.longest),
                                " ".join("%.0f" % (t * 1000)
                                         for t in cls.longest)))

    # -- helpers

    def load_relays(self):
        """The load's server-ids -> relay pid (others come and go)."""
        return {k: v for k, v in self.servers().items()
                if k.startswith("up-")}

    def servers(self):
        """server-id -> relay pid, from pyrelayctl show servers."""
        r = ctl(self.d, "show", "servers")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = {}
        for line in r.stdout.splitlines():
            if not line.startswith("#"):
                sid, pid = line.split()[:2]
                out[sid] = int(pid)
        return out

    def counters(self):
        return {k: v for k, v in self.d.metrics().items()
                if k.split("{")[0].endswith("_total")}

    def assert_not_lower(self, before, after):
        for k, v in before.items():
            self.assertIn(k, after)
            self.assertGreaterEqual(after[k], v, "%s went back" % k)

    def assert_no_harm(self):
        self.assertEqual(self.load.errors, [])
        self.assertEqual(self.load.closes, [])
        self.assertTrue(self.d.alive(), "the parent died")
        self.assertEqual(self.d.pid, self.pid)

    def fronts(self):
        """(serving fronts, finishing fronts), by title."""
        kids = self.d.children()
        return ([p for p, c in kids if re.match(r"pyrelayd: front$", c)],
                [p for p, c in kids if "front (finishing)" in c])

    def zygotes(self):
        """The relay zygotes running, by title."""
        return [p for p, c in self.d.children()
                if re.match(r"pyrelayd: zygote\b", c) and
                harness.proc_state(p) not in (None, "Z")]

    def settled(self):
        """The replaced fronts are gone, the pool is full again, the only
        relays are the load's, one zygote runs, and every child that
        exited is reaped (its channel closed in the parent), so that the
        parent's descriptors are at rest."""
        def check():
            serving, finishing = self.fronts()
            kids = self.d.children()
            pooled = [p for p, c in kids
                      if c.startswith("pyrelayd: pooled relay")]
            relays = [p for p, c in kids if c.startswith("pyrelayd: relay ")]
            exited = [p for p, c in kids
                      if harness.proc_state(p) in (None, "Z")]
            return (len(serving) == self.d.workers and not finishing and
                    len(pooled) == POOL and len(relays) == SIDS and
                    len(self.zygotes()) == 1 and not exited)
        harness.poll_until(check, 30, "the fronts replaced, the pool full, "
                           "the load's relays alone and every exit reaped")

    def upgrade(self, via_signal=False):
        """One upgrade that must succeed; returns pyrelayctl's output."""
        mark = self.d.log_mark()
        prober = Prober(self.d.port)
        try:
            if via_signal:
                os.kill(self.pid, signal.SIGUSR2)
                self.d.wait_log(r"\bevent=upgraded\b", 30, mark)
                out = ""
            else:
                r = ctl(self.d, "upgrade")
                self.assertEqual(r.returncode, 0, r.stderr + "\n" +
                                 "\n".join(self.d.log_lines()[mark:]))
                out = r.stdout
            # connections made after it are served too
            probes = len(prober.times)
            harness.poll_until(lambda: len(prober.times) >= probes + 3, 10,
                               "three probes after the upgrade")
        finally:
            longest = prober.stop()
        self.assertEqual(prober.failures, [])
        self.longest.append(longest)
        return out

    def refused(self, reason):
        """One upgrade that must fail with reason: pyrelayctl says so and
        exits 1, one log line says why, and nothing changed."""
        relays = self.load_relays()
        fronts = self.fronts()[0]
        before = self.counters()
        mark = self.d.log_mark()
        r = ctl(self.d, "upgrade")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertRegex(r.stderr, "upgrade failed: .*" + reason)
        self.d.wait_log(r'\bevent=upgrade_failed reason="[^"]*%s' % reason,
                        10, mark)
        failed = [line for line in self.d.log_lines()[mark:]
                  if "event=upgrade_failed" in line]
        self.assertEqual(len(failed), 1, failed)
        self.assertNotIn("event=upgraded", "\n".join(
            self.d.log_lines()[mark:]))
        self.assert_no_harm()
        self.assertEqual(self.load_relays(), relays)
        self.assertEqual(self.fronts()[0], fronts)
        self.assertEqual(self.d.healthz()["version"], self.new_version)
        self.assert_not_lower(before, self.counters())
        Upgrade.claims += 1
        self.claim("after-refusal-%d" % Upgrade.claims)
        self.load.wait_progress(SIDS)
        return r

    def claim(self, sid):
        """A new server-id's binary and phone exchange; its relay's pid."""
        async def pair():
            b = await harness.binary(self.d, sid)
            p = await harness.phone(self.d, sid)
            await harness.assert_exchange(b, p, sid)
            return b, p
        b, p = harness.run(pair())
        pid = self.servers()[sid]
        harness.run(harness.close_all(b, p))
        return pid

    # -- the sequence

    def test_1_upgrade(self):
        d = self.d
        relays = self.load_relays()
        self.assertEqual(len(relays), SIDS)
        for pid in relays.values():
            self.assertEqual(exe_inode(pid), self.old_relay_ino)
        self.assertEqual(d.healthz()["version"], self.old_version)
        before = self.counters()
        old_fronts = self.fronts()[0]
        old_zygote = self.zygotes()
        self.assertEqual(len(old_zygote), 1, d.children())
        # a handshake in an old front when the exec comes: half a head,
        # accepted (a /healthz asked after it was answered), the rest after
        req = harness.upgrade_request(d.port, "/v1/server", sid="half-head")
        half = harness._connect(d.port, 10)
        half.sendall(req[:40])
        self.assertEqual(harness.http_get(d.port, "/healthz")[0], 200)

        install(NEXT, self.exe)
        install(RELAY_NEXT, self.relay)
        out = self.upgrade()
        self.assertIn("version %s\n" % self.new_version, out)
        self.assertIn("previous_version %s\n" % self.old_version, out)

        self.assert_no_harm()
        self.assertEqual(exe_inode(self.pid), os.stat(self.exe).st_ino)
        self.assertEqual(d.healthz()["version"], self.new_version)
        # the old front finishes it; the new parent routes its CONN_UPGRADE
        half.sendall(req[40:])
        self.assertEqual(harness.read_head(half)[0], 101)
        self.assertIn("half-head", self.servers())
        half.close()
        # the relays, of the message version before, are the same
        # processes and go on serving under the new parent
        self.assertEqual(self.load_relays(), relays)
        self.load.wait_progress(2 * SIDS)
        self.assert_no_harm()
        self.assert_not_lower(before, self.counters())
        r = ctl(self.d, "show", "server", next(iter(relays)))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.count('"phone-'), 2, r.stdout)
        # the fronts are new; the old ones finish and exit
        self.settled()
        self.assertFalse(set(self.fronts()[0]) & set(old_fronts))
        # new claims, and the pool, get relays of the new build
        new_ino = os.stat(self.relay).st_ino
        for k in range(POOL + 2):
            self.assertEqual(exe_inode(self.claim("new-%d" % k)), new_ino)
        for pid, cmd in d.children():
            if cmd.startswith("pyrelayd: pooled relay"):
                self.assertEqual(exe_inode(pid), new_ino)
        # the relay zygote is replaced, as the spawner is: the old one
        # exits with its channel, the new image's is of the new build
        harness.poll_until(lambda: len(self.zygotes()) == 1 and
                           self.zygotes() != old_zygote, 30,
                           "the old zygote gone, a new one")
        self.assertEqual(exe_inode(self.zygotes()[0]), new_ino)
        self.assert_no_harm()

    def test_2_missing_program(self):
        os.rename(self.exe, self.exe + ".away")
        try:
            self.refused(r"cannot execute %s: No such file or directory"
                         % re.escape(self.exe))
        finally:
            os.rename(self.exe + ".away", self.exe)

    def test_3_not_executable(self):
        os.chmod(self.exe, 0o644)
        try:
            self.refused(r"cannot execute %s: Permission denied"
                         % re.escape(self.exe))
        finally:
            os.chmod(self.exe, 0o755)

    def test_4_configuration_with_errors(self):
        good = self.d.conf_text()
        self.d.write_conf(good + "no such keyword\n")
        try:
            r = self.refused(r"refused the configuration: %s:\d+: "
                             % re.escape(self.d.conf_path))
            self.assertRegex(r.stderr, r"%s:\d+: " %
                             re.escape(self.d.conf_path))
        finally:
            self.d.write_conf(good)

    def test_5_version_not_served(self):
        # the program before this one speaks a message version one lower:
        # it cannot serve the fronts and relays of the next one, so its
        # image refuses the state and goes back, through the descriptor
        # on the program that ran (its file on disk was just replaced)
        install(harness.PYRELAYD, self.exe)
        try:
            self.refused(r"speaks message version \d+; this program serves "
                         r"\d+ to \d+")
            self.assertTrue(os.readlink("/proc/%d/exe" % self.pid)
                            .endswith(" (deleted)"))
        finally:
            install(NEXT, self.exe)

    def test_6_descriptor_missing(self):
        # the new program starts with the control socket closed
        fd = unix_listener_fd(self.pid, self.d.control_path)
        real = install_closing(self.exe, fd)
        mark = self.d.log_mark()
        try:
            self.refused(r"the control socket \(fd %d\): not open" % fd)
            # the way back opened it again
            self.d.wait_log(r'\bevent=upgrade_lost what="the control '
                            r'socket"', 10, mark)
            self.assertEqual(ctl(self.d, "show", "summary").returncode, 0)
        finally:
            install(NEXT, self.exe)
            os.unlink(real)

    def test_7_twenty_upgrades(self):
        self.settled()
        fds = len(harness.open_fds(self.pid))
        rss = int(harness.proc_status(self.pid)["VmRSS"].split()[0])
        relays = self.load_relays()
        before = self.counters()
        for k in range(20):
            self.upgrade(via_signal=k % 2 == 1)
            self.assert_no_harm()
        self.load.wait_progress(SIDS)
        self.settled()
        self.assertEqual(self.load_relays(), relays)
        self.assert_not_lower(before, self.counters())
        harness.poll_until(lambda: len(harness.open_fds(self.pid)) == fds,
                           10, "the parent's descriptors back to %d" % fds)
        after = int(harness.proc_status(self.pid)["VmRSS"].split()[0])
        sys.stderr.write("parent: %d descriptors before and after 20 "
                         "upgrades; VmRSS %d kB before, %d kB after\n"
                         % (fds, rss, after))
        self.assertLessEqual(after, rss * 1.25 + 1024)

    def test_8_every_message_once_in_order(self):
        self.load.drain()
        self.assert_no_harm()
        n, m = self.load.totals()
        sys.stderr.write("%d messages phone -> binary, %d binary -> phone, "
                         "each once and in order\n" % (n, m))
        self.assertGreater(min(n, m), 20 * SIDS)
        self.load.close()
        self.assertEqual(self.load.closes, [])


class UpgradePushDrain(unittest.TestCase):
    """A daemon with push configured and an agent listener, upgraded in
    place; the tests run in the order of their names."""

    @classmethod
    def setUpClass(cls):
        import test_push
        cls.push = test_push
        test_push.setUpModule()
        cls.bindir = tempfile.mkdtemp(prefix="pyrelayd-bin-")
        os.chmod(cls.bindir, 0o755)
        cls.exe = os.path.join(cls.bindir, "pyrelayd")
        cls.relay = os.path.join(cls.bindir, "pyrelayd-relay")
        install(harness.PYRELAYD, cls.exe)
        install(RELAY, cls.relay)
        key = test_push.PKI.write_key_file(
            os.path.join(test_push.TMP, "upgrade.json"),
            test_push.FAKE.token_uri)
        cls.agent_port = harness.free_port()
        cls.d = harness.Daemon(
            test_push.push_conf(key) + "agent on 127.0.0.1 port %d\n"
            "relay pool 1\nrate limit burst 100000 refill 100ms\n"
            % cls.agent_port, workers=1, exe=cls.exe)
        cls.d.start()
        cls.d.wait_log(r"\bevent=push_ready pid=\d+$")

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.d.stop()
        finally:
            shutil.rmtree(cls.bindir, ignore_errors=True)
            cls.push.tearDownModule()
        assert rc == 0, "pyrelayd exited %r" % rc

    def tearDown(self):
        text = self.d.log_text()
        for s in self.push.secrets_of_the_fake():
            self.assertNotIn(s, text, "a secret reached the log")
        with self.push.FAKE.cond:
            self.assertEqual(self.push.FAKE.errors, [])

    def push_pids(self):
        return [pid for pid, cmd in self.d.children()
                if re.match(r"pyrelayd: push\b", cmd)]

    def delta(self, before, outcome):
        k = self.push.METRIC % outcome
        return self.d.metrics()[k] - before[k]

    def held_wakes(self, b, group, n):
        """n wakes the fake holds until release(group); their tokens."""
        push = self.push
        toks = [push.token("slow-%s" % group) for _ in range(n)]

        async def send():
            for t in toks:
                await b.send(push.wake(t))
            await asyncio.to_thread(push.FAKE.wait_for,
                                    lambda: len(push.FAKE.held(group)) == n,
                                    15, "%d held wakes" % n)
        return toks, send()

    def test_1_wakes_in_flight_cross_the_upgrade(self):
        d, push = self.d, self.push
        sid = "up-push"

        async def main():
            b = await harness.binary(d, sid)
            p = await harness.phone(d, sid)
            await harness.assert_exchange(b, p, sid)
            (old,) = self.push_pids()
            self.assertEqual(exe_inode(old), os.stat(self.exe).st_ino)
            toks, send = self.held_wakes(b, "upg", 3)
            await send
            before = d.metrics()
            mark = d.log_mark()
            install(NEXT, self.exe)
            install(RELAY_NEXT, self.relay)
            r = await asyncio.to_thread(ctl, self.d, "upgrade")
            self.assertEqual(r.returncode, 0, r.stderr)
            # a push process of the new program takes the wakes from now
            m = await asyncio.to_thread(d.wait_log, r"\bevent=push_ready "
                                        r"pid=(\d+)$", 15, mark)
            new = int(m.group(1))
            self.assertNotEqual(new, old)
            self.assertEqual(exe_inode(new), os.stat(self.exe).st_ino)
            tok = push.token("ok")
            await b.send(push.wake(tok))
            await asyncio.to_thread(d.wait_log, push.sent_re(sid, tok), 15,
                                    mark)
            self.assertEqual(push.FAKE.sends_for(tok)[0]["status"], 200)
            # the old one still holds the three; their outcomes count
            # in the new image, and it leaves once they are done
            self.assertIn(harness.proc_state(old), ("S", "R"))
            push.FAKE.release("upg")
            for t in toks:
                await asyncio.to_thread(d.wait_log, push.sent_re(sid, t),
                                        15, mark)
            await asyncio.to_thread(d.wait_log, r"\bevent=push_exited "
                                    r"pid=%d server_id=- status=0$" % old,
                                    15, mark)
            self.assertEqual(self.push_pids(), [new])
            self.assertEqual(self.delta(before, "sent"), 4)
            for o in ("send_failed", "dropped"):
                self.assertEqual(self.delta(before, o), 0, o)
            self.assertNotIn("event=worker_killed",
                             "\n".join(d.log_lines()[mark:]))
            await harness.assert_exchange(b, p, sid, n=2)
            await harness.close_all(b, p)
        harness.run(main(), 90)

    def test_2_way_back_keeps_its_push_process(self):
        d, push = self.d, self.push
        sid = "back-push"

        async def main():
            b = await harness.binary(d, sid)
            (cur,) = self.push_pids()
            toks, send = self.held_wakes(b, "back", 2)
            await send
            before = d.metrics()
            fd = unix_listener_fd(d.pid, d.control_path)
            real = install_closing(self.exe, fd)
            mark = d.log_mark()
            try:
                r = await asyncio.to_thread(ctl, self.d, "upgrade")
            finally:
                install(NEXT, self.exe)
                os.unlink(real)
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn("upgrade failed: the control socket", r.stderr)
            # the same push process, with the wakes it held
            self.assertEqual(self.push_pids(), [cur])
            push.FAKE.release("back")
            for t in toks:
                await asyncio.to_thread(d.wait_log, push.sent_re(sid, t),
                                        15, mark)
            tok = push.token("ok")
            await b.send(push.wake(tok))
            await asyncio.to_thread(d.wait_log, push.sent_re(sid, tok), 15,
                                    mark)
            self.assertEqual(self.delta(before, "sent"), 3)
            self.assertEqual(self.push_pids(), [cur])
            self.assertNotIn("event=push_ready",
                             "\n".join(d.log_lines()[mark:]))
            await b.close()
        harness.run(main(), 90)

    def summary(self):
        r = ctl(self.d, "show", "summary")
        self.assertEqual(r.returncode, 0, r.stderr)
        return dict(line.split(" ", 1) for line in r.stdout.splitlines())

    def agent(self):
        with socket.create_connection(("127.0.0.1", self.agent_port),
                                      timeout=5) as s:
            return harness.recv_until_close(s, 5)

    def assert_drained(self, draining):
        self.assertEqual(self.d.healthz()["status"],
                         "draining" if draining else "ok")
        self.assertEqual(self.agent(), b"0%\n" if draining else b"100%\n")
        self.assertEqual(self.summary()["draining"],
                         "yes" if draining else "no")

    def test_3_drained_stays_drained(self):
        d = self.d
        sid = "kept-while-drained"
        statuses = []
        on = threading.Event()

        def claims():
            # new server-ids all along, every 10 ms: refused (503)
            k = 0
            while on.is_set() and k < 3000:
                k += 1
                req = harness.upgrade_request(d.port, "/v1/server",
                                              sid="drained-%d" % k)
                statuses.append(harness.parse_head(
                    harness.raw_request(d.port, req))[0])
                time.sleep(0.01)

        async def main():
            b = await harness.binary(d, sid)
            p = await harness.phone(d, sid)
            self.assertEqual(ctl(self.d, "drain").returncode, 0)
            self.assert_drained(True)
            agent = tcp_listener_inode(self.agent_port)
            mark = d.log_mark()
            on.set()
            flood = threading.Thread(target=claims, daemon=True)
            flood.start()
            try:
                await asyncio.to_thread(
                    harness.poll_until, lambda: len(statuses) >= 10, 10,
                    "refused claims before the upgrade")
                os.kill(d.pid, signal.SIGUSR2)
                await asyncio.to_thread(d.wait_log, r"\bevent=upgraded\b",
                                        30, mark)
                n = len(statuses)
                await asyncio.to_thread(
                    harness.poll_until, lambda: len(statuses) >= n + 10, 10,
                    "refused claims after the upgrade")
            finally:
                on.clear()
                flood.join(15)
            self.assertEqual(set(statuses), {503})
            # the refusals of the second the exec fell in are logged once
            await asyncio.to_thread(d.wait_refused, "drain_refused",
                                    len(statuses), 5, mark)
            # still drained, on the same agent listener; what it holds is
            # served, a phone arriving now included
            self.assert_drained(True)
            self.assertEqual(tcp_listener_inode(self.agent_port), agent)
            p2 = await harness.phone(d, sid)
            await harness.assert_exchange(b, p, sid)
            await harness.assert_exchange(b, p2, sid, n=2)
            self.assertEqual(ctl(self.d, "undrain").returncode, 0)
            self.assert_drained(False)
            await harness.close_all(b, p, p2)
            await harness.exchange_once(d, "after-undrain")
        harness.run(main(), 90)


class UpgradeTLSPump(unittest.TestCase):
    """A front that pumps a TLS session (`tls ktls no`) when an upgrade
    replaces it: it keeps pumping, its binary and phone keep exchanging,
    and it exits, normally, once they have closed."""

    @classmethod
    def setUpClass(cls):
        import test_tls
        cls.tls = test_tls
        test_tls.setUpModule()
        cls.d = test_tls.TLSDaemon(ktls=False, workers=1)
        cls.d.start()

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.d.stop()
        finally:
            cls.tls.tearDownModule()
        assert rc == 0, "pyrelayd exited %r" % rc

    def test_pumping_front_finishes_its_sessions(self):
        d, tls = self.d, self.tls
        sid = "tls-pumped"

        async def scenario():
            b = await tls.wss_binary(d, sid)
            p = await tls.wss_phone(d, sid)
            await harness.assert_exchange(b, p, sid, n=1)
            (old,) = d.front_pids()
            mark = d.log_mark()
            r = await asyncio.to_thread(ctl, d, "upgrade")
            self.assertEqual(r.returncode, 0, r.stderr)
            # still pumping, titled so, beside its successor
            harness.poll_until(lambda: "front (finishing)" in
                               harness.proc_cmdline(old), 10,
                               "the old front to finish")
            for n in range(2, 12):
                await harness.assert_exchange(b, p, sid, n=n)
            self.assertNotEqual(harness.proc_state(old), None)
            await harness.close_all(b, p)
            d.wait_log(r"\bevent=front_exited pid=%d server_id=- status=0$"
                       % old, 15, mark)
            # the new front serves TLS
            b = await tls.wss_binary(d, sid + "-2")
            p = await tls.wss_phone(d, sid + "-2")
            await harness.assert_exchange(b, p, sid + "-2")
            await harness.close_all(b, p)
        harness.run(scenario())


if __name__ == "__main__":
    harness.main()
