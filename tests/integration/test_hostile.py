# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""A stranger cannot take pyrelayd down (issue 14): each attack against the
real daemon on loopback, with the bound it must hit asserted, and a
well-behaved binary and phone from another address working beside it.

* RelayCap: distinct server-ids claimed past `max relays`: 503 before the
  upgrade, never more relay processes than the cap (pooled ones counted),
  the refusals counted and logged once a second with their number, the cap
  in pyrelayctl; SIGHUP moves it.
* AddressCap: idle connections from one address past `max connections per
  ip` are closed at accept, so they cannot fill `max connections`: another
  address still gets its 101.  IPv6 addresses share one bucket per /64
  (test_addr_bucket.c has the key; on the wire ::1 is one address, so
  ProxyClients carries distinct IPv6 clients in PROXY headers).
* RefusalLogs: a flood of 429s (rate limit) or 503s (connection caps)
  from one address is logged at most once a second, with the number
  refused and the address.
* ParentCost: /healthz and /metrics do not make the parent read every
  relay's channel (its recvmsg calls, counted by strace, do not grow with
  the relays).  The CPU figures are in the report, not asserted.
* UserGroup, AcmeSymlinks: a `user` whose group is 0 is refused at start;
  no symbolic link under `acme webroot` is followed.

The fake workers (a worker the parent cannot trust) are in
test_hostile_workers.py.
"""

import asyncio
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import harness
from test_acme import AcmeDaemon, challenge_dir
from test_proxy import upgrade as proxy_upgrade, v2 as proxy_v2

NO_RATE_LIMIT = "rate limit burst 100000 refill 100ms"
CHALLENGE = "/.well-known/acme-challenge/"
PYRELAYCTL = os.environ.get("PYRELAYCTL") or os.path.join(
    os.path.dirname(harness.PYRELAYD), "pyrelayctl")


def connect_from(d, src, port=None, family=socket.AF_INET, dst="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((src, 0))
        s.settimeout(10)
        s.connect((dst, port or d.port))
    except BaseException:
        s.close()
        raise
    return s


def claim(d, sid, src, path="/v1/server"):
    """A raw upgrade for sid from src: (status, socket); the socket of a
    101 stays open (the caller closes it), any other is closed."""
    s = connect_from(d, src)
    try:
        s.sendall(harness.upgrade_request(d.port, path, sid=sid))
        status, _ = harness.read_head(s)
    except BaseException:
        s.close()
        raise
    if status != 101:
        s.close()
        return status, None
    return status, s


def src_kw(addr):
    return {"local_addr": (addr, 0)}


async def good_pair(d, sid, src="127.0.0.2"):
    """A binary and a phone from src that exchange one message each way."""
    b = await harness.binary(d, sid, **src_kw(src))
    p = await harness.phone(d, sid, **src_kw(src))
    await harness.assert_exchange(b, p, sid)
    return b, p


def relay_processes(d):
    """The daemon's children that are relays: all but fronts, the spawner
    and the zygote, zombies and relays still starting included.  The
    zygote is known by its pid (a relay carries its title for a moment
    after the fork), or by its command line while it starts."""
    zygotes = {int(m.group(1)) for m in (
        re.search(r"\bevent=zygote_ready pid=(\d+)", line)
        for line in d.log_lines()) if m}
    return [pid for pid, cmd in d.children()
            if pid not in zygotes and
            not re.match(r"pyrelayd(: | -P )(front|spawner)\b", cmd) and
            not re.match(r"pyrelayd -P zygote\b", cmd)]


def reload_with(d, extra_conf):
    """SIGHUP with extra_conf in place of the daemon's; returns once done."""
    d.extra_conf = extra_conf
    d.write_conf()
    mark = d.log_mark()
    d.signal(signal.SIGHUP)
    d.wait_log(r"\bevent=reload_done\b", 10, mark)


def control(d, *args):
    r = subprocess.run([PYRELAYCTL, "-s", d.control_path] + list(args),
                       capture_output=True, timeout=20)
    return r.returncode, r.stdout.decode(errors="replace")


class Sampler(threading.Thread):
    """Samples f() every few milliseconds until stopped; keeps the most."""

    def __init__(self, f):
        super().__init__(daemon=True)
        self.f = f
        self.most = 0
        self.samples = 0
        self.counted = threading.Condition()
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.most = max(self.most, self.f())
            with self.counted:
                self.samples += 1
                self.counted.notify_all()
            self.halt.wait(0.005)

    def sample_from_now(self, timeout=20):
        """Waits for a sample begun after this call; its number (None: no
        sample in time, the sampler stopped watching)."""
        with self.counted:
            n = self.samples + 1
            if self.counted.wait_for(lambda: self.samples > n, timeout):
                return self.samples
        return None

    def stop(self):
        self.halt.set()
        self.join(10)
        return self.most


class RelayCap(unittest.TestCase):
    CAP = 20
    POOL = 4
    FLOOD = 40

    def test_distinct_server_ids_past_the_cap(self):
        conf = "max relays %d\nrelay pool %d\n%s\n" % (self.CAP, self.POOL,
                                                       NO_RATE_LIMIT)
        with harness.Daemon(conf) as d:
            harness.poll_until(
                lambda: d.metrics()["pyrelayd_relays_pooled"] == self.POOL,
                20, "the pool")
            m = d.metrics()
            self.assertEqual(m["pyrelayd_relay_processes_max"], self.CAP)
            self.assertEqual(m["pyrelayd_relay_cap_refusals_total"], 0)
            sampler = Sampler(lambda: len(relay_processes(d)))
            sampler.start()
            held = []
            # it watches from before the first claim ...
            first = sampler.sample_from_now()
            self.assertIsNotNone(first, "no sample before the claims")

            async def main():
                b, p = await good_pair(d, "good-one")
                mark = d.log_mark()
                statuses = []
                # one attacker address, a new server-id each time
                for i in range(self.FLOOD):
                    st, s = await asyncio.to_thread(claim, d, "flood-%d" % i,
                                                    "127.0.0.3")
                    statuses.append(st)
                    if s is not None:
                        held.append(s)
                    if i == self.FLOOD // 2:
                        await harness.assert_exchange(b, p, "good-one", n=2)
                # ... to after the flood's last one
                last = await asyncio.to_thread(sampler.sample_from_now)
                self.assertIsNotNone(last, "no sample after the flood")
                self.assertGreater(last, first)
                # the good server-id took one relay; the flood the rest
                self.assertEqual(statuses.count(101), self.CAP - 1, statuses)
                self.assertEqual(statuses.count(503),
                                 self.FLOOD - (self.CAP - 1), statuses)
                self.assertEqual(statuses[:self.CAP - 1],
                                 [101] * (self.CAP - 1))
                await harness.assert_exchange(b, p, "good-one", n=3)
                # a phone needs no new relay: it still gets in
                p2 = await harness.phone(d, "flood-0", **src_kw("127.0.0.4"))
                await harness.close_all(p2)
                m = d.metrics()
                refusals = self.FLOOD - (self.CAP - 1)
                self.assertEqual(m["pyrelayd_relay_cap_refusals_total"],
                                 refusals)
                self.assertEqual(m["pyrelayd_relay_processes_all"], self.CAP)
                self.assertEqual(m["pyrelayd_relay_processes"], self.CAP)
                self.assertEqual(m["pyrelayd_relays_pooled"], 0)
                # at most one line a second (the flood took a few)
                lines = d.wait_refused("relay_cap_reached", refusals,
                                       since=mark)
                self.assertLessEqual(len(lines), 2 + int(
                    time.monotonic() - t0), lines)
                self.assertRegex(d.log_text(), r"event=relay_cap_reached "
                                 r"refused=\d+ max_relays=%d "
                                 r"relay_processes=%d" % (self.CAP, self.CAP))
                rc, out = control(d, "show", "summary")
                self.assertEqual(rc, 0, out)
                self.assertIn("\nrelay_processes %d\n" % self.CAP, out)
                self.assertIn("\nmax_relays %d\n" % self.CAP, out)
                self.assertLessEqual(sampler.most, self.CAP)

                # SIGHUP: a higher cap lets claims in at once (the pool
                # fills up to it too) ...
                await asyncio.to_thread(reload_with, d, conf.replace(
                    "max relays %d" % self.CAP, "max relays %d"
                    % (self.CAP + 2)))
                st, s = await asyncio.to_thread(claim, d, "after-raise",
                                                "127.0.0.3")
                self.assertEqual(st, 101)
                held.append(s)
                # ... a lower one stops idle pooled relays only, and
                # refuses the next claim
                serving = d.metrics()["pyrelayd_relay_processes"]
                await asyncio.to_thread(reload_with, d, conf.replace(
                    "max relays %d" % self.CAP, "max relays 5"))
                st, s = await asyncio.to_thread(claim, d, "after-lower",
                                                "127.0.0.3")
                self.assertEqual(st, 503)
                self.assertEqual(d.metrics()["pyrelayd_relays_pooled"], 0)
                self.assertEqual(serving, self.CAP + 1)
                # the idle pooled relays go; those serving stay
                await asyncio.to_thread(
                    harness.poll_until, lambda: len(relay_processes(d)) ==
                    serving, 10, "idle pooled relays stopped")
                m = d.metrics()
                self.assertEqual(m["pyrelayd_relay_processes"], serving)
                self.assertEqual(m["pyrelayd_relay_processes_all"], serving)
                await harness.assert_exchange(b, p, "good-one", n=4)
                self.assertEqual(d.metrics()[
                    "pyrelayd_relay_processes_max"], 5)
                await harness.close_all(b, p)

            t0 = time.monotonic()
            try:
                harness.run(main(), timeout=120)
            finally:
                most = sampler.stop()
                for s in held:
                    s.close()
            # then the cap was CAP + 2 for a while
            self.assertLessEqual(most, self.CAP + 2)
            self.assertTrue(d.alive())


class AddressCap(unittest.TestCase):
    IDLE = 320

    def test_idle_connections_from_one_address(self):
        # measured on 092703e: the binary from 127.0.0.2 got 503
        conf = ("max connections 300\nmax connections per ip 100\n"
                "handshake timeout 60s\n" + NO_RATE_LIMIT)
        with harness.Daemon(conf) as d:
            mark = d.log_mark()
            idle = []
            try:
                for _ in range(self.IDLE):
                    idle.append(connect_from(d, "127.0.0.3"))
                # the parent closes those past the cap at once, unanswered
                closed = self.wait_closed(idle, self.IDLE - 100)
                self.assertEqual(len(closed), self.IDLE - 100)
                for s in closed:
                    self.assertEqual(harness.recv_until_close(s, 5), b"")

                async def main():
                    b, p = await good_pair(d, "beside-idle")
                    await harness.close_all(b, p)
                harness.run(main())
                m = d.metrics()
                self.assertEqual(m["pyrelayd_address_cap_refusals_total"],
                                 self.IDLE - 100)
                d.wait_refused("address_cap_reached", self.IDLE - 100,
                               since=mark)
                self.assertRegex(d.log_text(),
                                 r"event=address_cap_reached refused=\d+ "
                                 r"max_connections_per_ip=100 "
                                 r"last=127\.0\.0\.3/32")
                # the 100 kept are still open, and nothing was written
                still = [s for s in idle if s not in closed]
                r, _, _ = select.select(still, [], [], 0.2)
                self.assertEqual(r, [])
                # the cap counts them: one more from there is closed too
                extra = connect_from(d, "127.0.0.3")
                self.assertEqual(harness.recv_until_close(extra, 5), b"")
                extra.close()
                # one leaves: its slot comes back (99 and the scrape's own)
                still[0].close()
                harness.poll_until(
                    lambda: d.metrics()["pyrelayd_connections"] == 100, 10,
                    "the closed connection released")
                again = connect_from(d, "127.0.0.3")
                idle.append(again)
                r, _, _ = select.select([again], [], [], 0.5)
                self.assertEqual(r, [])
            finally:
                for s in idle:
                    s.close()

    @staticmethod
    def wait_closed(socks, n, timeout=20):
        """The sockets the daemon closed, once n of them are (bounded)."""
        closed = set()
        deadline = time.monotonic() + timeout
        while len(closed) < n and time.monotonic() < deadline:
            r, _, _ = select.select([s for s in socks if s not in closed],
                                    [], [], 0.5)
            closed.update(r)
        # and no more of them after a moment
        r, _, _ = select.select([s for s in socks if s not in closed], [],
                                [], 0.3)
        closed.update(r)
        return [s for s in socks if s in closed]

    def test_ipv6_bucket(self):
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
        except OSError as e:
            self.skipTest("no IPv6 loopback: %s" % e)
        port6 = harness.free_port()
        conf = ("listen on ::1 port %d\nmax connections per ip 5\n"
                "handshake timeout 60s\n%s" % (port6, NO_RATE_LIMIT))
        with harness.Daemon(conf) as d:
            mark = d.log_mark()
            socks = [connect_from(d, "::1", port6, socket.AF_INET6, "::1")
                     for _ in range(8)]
            try:
                closed = AddressCap.wait_closed(socks, 3)
                self.assertEqual(len(closed), 3)
                d.wait_refused("address_cap_reached", 3, since=mark)
                # logged as its /64
                self.assertRegex(d.log_text(), r"event=address_cap_reached "
                                 r"refused=\d+ max_connections_per_ip=5 "
                                 r"last=::/64")

                async def main():
                    b, p = await good_pair(d, "beside-v6")
                    await harness.close_all(b, p)
                harness.run(main())
            finally:
                for s in socks:
                    s.close()


class ProxyClients(unittest.TestCase):
    """Behind a PROXY listener the peer is the proxy, which speaks for many
    clients: the per-address cap applies to the carried client, at the
    upgrade (503), with IPv6 clients bucketed per /64."""

    def test_cap_per_carried_64(self):
        pport = harness.free_port()
        conf = ("listen on 127.0.0.1 port %d proxy-protocol\n"
                "max connections per ip 2\nhandshake timeout 60s\n%s"
                % (pport, NO_RATE_LIMIT))
        with harness.Daemon(conf) as d:
            held = []

            def via_proxy(client, sid):
                s = connect_from(d, "127.0.0.1", pport)
                held.append(s)
                s.sendall(proxy_v2(client) + proxy_upgrade(sid))
                return harness.read_head(s)[0]
            try:
                # two clients of one /64 fill its bucket ...
                self.assertEqual(via_proxy("2001:db8:1:2::a", "px-1"), 101)
                self.assertEqual(via_proxy("2001:db8:1:2:ffff::b", "px-2"),
                                 101)
                self.assertEqual(via_proxy("2001:db8:1:2::c", "px-3"), 503)
                # ... not the next /64's, nor an IPv4 client's
                self.assertEqual(via_proxy("2001:db8:1:3::a", "px-4"), 101)
                self.assertEqual(via_proxy("198.51.100.9", "px-5"), 101)
                # the proxy's own address is not capped at accept
                idle = [connect_from(d, "127.0.0.1", pport) for _ in range(4)]
                held.extend(idle)
                r, _, _ = select.select(idle, [], [], 0.3)
                self.assertEqual(r, [])
                self.assertEqual(d.metrics()[
                    "pyrelayd_address_cap_refusals_total"], 0)
            finally:
                for s in held:
                    s.close()


class RefusalLogs(unittest.TestCase):
    """A flood of refusals cannot flood the log: the 429s of the rate limit
    and the 503s of the connection caps are logged at most once a second
    each, with their number (refused=) and the last client address (ip=),
    while a binary and a phone from another address keep working."""
    FLOOD = 150

    def flood(self, d, attempt, expect):
        """FLOOD attempts (attempt(i) -> status), a good pair exchanging
        beside them; the statuses past the first ones must all be expect.
        Returns how long the flood took."""
        async def main():
            b, p = await good_pair(d, "beside-%d" % expect)
            t0 = time.monotonic()
            statuses = []
            for i in range(self.FLOOD):
                statuses.append(await asyncio.to_thread(attempt, i))
                if i == self.FLOOD // 2:
                    await harness.assert_exchange(b, p, "beside-%d" % expect,
                                                  n=2)
            took = time.monotonic() - t0
            self.assertEqual(statuses[2:], [expect] * (self.FLOOD - 2))
            await harness.assert_exchange(b, p, "beside-%d" % expect, n=3)
            await harness.close_all(b, p)
            return took
        return harness.run(main(), timeout=120)

    def assertLogged(self, d, event, mark, took, first):
        """FLOOD - 2 refusals in lines of their counts, a line a second at
        most (one at once, then one at the end of each second), the first
        line as first says."""
        counts = d.wait_refused(event, self.FLOOD - 2, since=mark)
        self.assertLessEqual(len(counts), 2 + int(took), counts)
        line = d.wait_log(r"\bevent=%s\b.*" % event, since=mark).group(0)
        self.assertRegex(line, first)

    def test_rate_limited(self):
        with harness.Daemon("rate limit burst 2 refill 1440m") as d:
            mark = d.log_mark()

            def phone(i):
                # a phone for no server-id: 101 then 4404, while tokens last
                st, s = claim(d, "rl-none", "127.0.0.3", "/v1/client")
                if s is not None:
                    s.close()
                return st
            took = self.flood(d, phone, 429)
            self.assertLogged(d, "rate_limited", mark, took,
                              r"^event=rate_limited refused=1 "
                              r"endpoint=client ip=127\.0\.0\.3/32$")

    def test_conn_cap_reached(self):
        pport = harness.free_port()
        conf = ("listen on 127.0.0.1 port %d proxy-protocol\n"
                "max connections per ip 2\n%s" % (pport, NO_RATE_LIMIT))
        with harness.Daemon(conf) as d:
            held = []

            def via_proxy(i):
                # binaries of a client carried by a balancer: two are held
                s = connect_from(d, "127.0.0.1", pport)
                s.sendall(proxy_v2("203.0.113.7") + proxy_upgrade(
                    "cc-%d" % i))
                st = harness.read_head(s)[0]
                if st == 101:
                    held.append(s)
                else:
                    s.close()
                return st
            try:
                mark = d.log_mark()
                took = self.flood(d, via_proxy, 503)
                self.assertEqual(len(held), 2)
                self.assertLogged(d, "conn_cap_reached", mark, took,
                                  r"^event=conn_cap_reached refused=1 "
                                  r"live=\d+ ip_live=3 "
                                  r"ip=203\.0\.113\.7/32$")
            finally:
                for s in held:
                    s.close()


def strace_recvmsg(pid, action):
    """Runs action() while strace counts process pid's recvmsg calls (its
    own thread only); returns the count."""
    out = tempfile.NamedTemporaryFile(prefix="pyrelayd-strace-", delete=False)
    out.close()
    st = subprocess.Popen(["strace", "-qq", "-c", "-e", "trace=recvmsg",
                           "-o", out.name, "-p", str(pid)],
                          stderr=subprocess.PIPE)
    try:
        # strace is attached once the traced process shows a tracer
        harness.poll_until(
            lambda: harness.proc_status(pid).get("TracerPid") == str(st.pid),
            10, "strace to attach")
        action()
    finally:
        st.send_signal(signal.SIGINT)
        st.communicate(timeout=20)
    with open(out.name) as f:
        text = f.read()
    os.unlink(out.name)
    m = re.search(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?recvmsg\s*$",
                  text, re.M)
    return int(m.group(1)) if m else 0


class ParentCost(unittest.TestCase):
    """Before (092703e) the parent read every relay's channel for each
    /healthz and each /metrics: R relays, R recvmsg calls a request."""
    RELAYS = 60
    REQUESTS = 40

    def test_healthz_and_metrics_do_not_read_every_relay(self):
        if not shutil.which("strace"):
            self.skipTest("strace is not installed")
        conf = "relay pool 0\n" + NO_RATE_LIMIT
        with harness.Daemon(conf) as d:
            def healthz():
                for _ in range(self.REQUESTS):
                    self.assertEqual(d.healthz()["connected_phones"],
                                     self.RELAYS)

            def metrics():
                for _ in range(self.REQUESTS):
                    self.assertEqual(
                        d.metrics()["pyrycode_relay_connected_binaries"],
                        self.RELAYS)

            async def main():
                conns = []
                for i in range(self.RELAYS):
                    b = await harness.binary(d, "idle-%d" % i)
                    p = await harness.phone(d, "idle-%d" % i)
                    conns += [b, p]
                await harness.assert_exchange(conns[0], conns[1], "idle-0")
                # each request is a few messages from its front, and the
                # EAGAIN that ends a read; reading every relay was RELAYS
                for what, requests in (("/healthz", healthz),
                                       ("/metrics", metrics)):
                    if what == "/metrics":
                        # a scrape asks the relays that sent counts in
                        # the last two periods of RELAY_COUNTERS_MS (1 s)
                        # for what they hold: these all did, at their
                        # claim; no event marks the end of that window
                        await asyncio.sleep(2.3)
                    calls = await asyncio.to_thread(strace_recvmsg, d.pid,
                                                    requests)
                    self.assertLess(calls / self.REQUESTS, 12,
                                    "%s: %d recvmsg calls for %d requests"
                                    % (what, calls, self.REQUESTS))
                    self.assertGreater(calls, 0)
                # still exact: a claim counts in the /healthz that follows
                b = await harness.binary(d, "one-more")
                self.assertEqual(d.healthz()["connected_binaries"],
                                 self.RELAYS + 1)
                await harness.close_all(b, *conns)
            harness.run(main(), timeout=120)


class UserGroup(unittest.TestCase):
    def test_user_of_group_0_refused(self):
        if not harness.is_root():
            self.skipTest("needs root (a start that changes user)")
        if not shutil.which("unshare"):
            self.skipTest("unshare is not installed")
        tmp = tempfile.mkdtemp(prefix="pyrelayd-gid0-")
        try:
            # /etc/passwd with one more user, of group root, seen by the
            # daemon alone (a private mount namespace)
            passwd = os.path.join(tmp, "passwd")
            with open("/etc/passwd") as f:
                text = f.read()
            with open(passwd, "w") as f:
                f.write(text.rstrip("\n") + "\npyrelayd-gid0:x:64999:0::"
                        "/nonexistent:/usr/sbin/nologin\n")
            chroot = os.path.join(tmp, "empty")
            os.mkdir(chroot, 0o755)
            conf = os.path.join(tmp, "pyrelayd.conf")
            with open(conf, "w") as f:
                f.write('listen on 127.0.0.1 port %d\nuser "pyrelayd-gid0"\n'
                        'chroot "%s"\ncontrol socket "%s/ctl.sock"\n'
                        % (harness.free_port(), chroot, tmp))
            r = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "/bin/sh",
                 "-c", 'mount --bind "$1" /etc/passwd && exec "$2" -d -f "$3"',
                 "sh", passwd, harness.PYRELAYD, conf],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=20,
                text=True)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn('user "pyrelayd-gid0": its group must not be '
                          'gid 0', r.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class AcmeSymlinks(unittest.TestCase):
    def test_no_symlink_below_the_webroot(self):
        webroot = tempfile.mkdtemp(prefix="pyrelayd-acme-")
        outside = tempfile.mkdtemp(prefix="pyrelayd-outside-")
        os.chmod(webroot, 0o755)
        try:
            cdir = challenge_dir(webroot)
            with open(os.path.join(cdir, "real"), "w") as f:
                f.write("real.thumbprint")
            # a directory elsewhere that an attacker would have served
            odir = challenge_dir(outside)
            with open(os.path.join(odir, "secret"), "w") as f:
                f.write("secret.file")
            with AcmeDaemon(webroot) as d:
                def get(tok):
                    return harness.http_get(d.acme_port, CHALLENGE + tok)[:3:2]
                self.assertEqual(get("real"), (200, b"real.thumbprint"))
                # the last component (O_NOFOLLOW did that already)
                os.symlink(os.path.join(odir, "secret"),
                           os.path.join(cdir, "secret"))
                self.assertEqual(get("secret")[0], 404)
                os.unlink(os.path.join(cdir, "secret"))
                # acme-challenge itself a link
                wk = os.path.join(webroot, ".well-known")
                os.rename(cdir, cdir + ".real")
                os.symlink(odir, cdir)
                self.assertEqual(get("secret")[0], 404)
                # even one that stays below the webroot
                os.unlink(cdir)
                os.symlink(cdir + ".real", cdir)
                self.assertEqual(get("real")[0], 404)
                os.unlink(cdir)
                os.rename(cdir + ".real", cdir)
                # .well-known a link
                os.rename(wk, wk + ".real")
                os.symlink(os.path.join(outside, ".well-known"), wk)
                self.assertEqual(get("secret")[0], 404)
                os.unlink(wk)
                os.rename(wk + ".real", wk)
                self.assertEqual(get("real"), (200, b"real.thumbprint"))
                self.assertTrue(d.alive())
        finally:
            shutil.rmtree(webroot, ignore_errors=True)
            shutil.rmtree(outside, ignore_errors=True)


if __name__ == "__main__":
    harness.main()
