#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Admission (docs/protocol.md §2) and the log's form and secrecy.

* Per-client-IP token bucket shared by /v1/server and /v1/client (429),
  /healthz exempt, refill, one bucket per address; addresses whose bucket
  is full again are forgotten (pyrelayd_client_addresses).  /healthz and
  /metrics are always answered, even while relays report to the parent.
* `max connections` (503) and `max connections per ip` (the connection is
  closed at accept, unanswered), counted from accept (a socket still
  sending its head counts) until the connection is gone; a relay killed
  with SIGKILL releases its connections' slots.
* Slowloris: ~2000 connections from ~2000 addresses trickling a partial head
  are dropped at `handshake timeout` without a byte of response, while healthy
  clients connect and work with normal latency.
* Log lines: each event named by the issue appears as `event=NAME k=v ...`,
  and no token, payload, device name or header value reaches the log, even
  with -v.

Linux routes all of 127.0.0.0/8 to lo, so a client bound to 127.0.0.X before
connect() is a distinct client IP for the daemon.
"""

import asyncio
import json
import os
import re
import resource
import select
import signal
import socket
import threading
import time
import unittest

import websockets.exceptions

import harness

NO_RATE_LIMIT = "rate limit burst 100000 refill 100ms"


# --------------------------------------------------------------------------
# helpers

def connect_from(d, src=None, timeout=10):
    """A TCP connection to the daemon's listener from source address src."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if src is not None:
            s.bind((src, 0))
        s.settimeout(timeout)
        s.connect(("127.0.0.1", d.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        s.close()
        raise
    return s


def upgrade(d, path, sid, src=None, headers=None, keep=False):
    """Send a valid upgrade request (binary on /v1/server, phone on
    /v1/client) from src.  Returns (status, sock): with keep and a 101 the
    socket stays open (a live connection; the caller closes it), otherwise
    it is closed and sock is None."""
    s = connect_from(d, src)
    try:
        s.sendall(harness.upgrade_request(d.port, path, headers=headers,
                                          sid=sid))
        status, _ = harness.read_head(s)
    except BaseException:
        s.close()
        raise
    if keep and status == 101:
        return status, s
    s.close()
    return status, None


def status_of(d, path, sid, src=None, headers=None):
    return upgrade(d, path, sid, src, headers)[0]


def unanswered(d, path, sid, src):
    """An upgrade from src that the parent closes at accept, as it does
    past `max connections per ip`: the bytes it got back (none)."""
    s = connect_from(d, src)
    try:
        try:
            s.sendall(harness.upgrade_request(d.port, path, sid=sid))
        except (BrokenPipeError, ConnectionResetError):
            return b""
        return harness.recv_until_close(s)
    finally:
        s.close()


async def admit(factory, timeout=5, what="an upgrade"):
    """await factory() until it is not refused (bounded): with 503, or
    closed at accept by the per-address cap.  The slot a closed connection
    held is released by the parent asynchronously, after the process that
    held it has noticed the close.  Returns (ws, attempts)."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        try:
            return await factory(), attempts
        except (websockets.exceptions.InvalidStatusCode,
                websockets.exceptions.InvalidMessage) as e:
            if getattr(e, "status_code", 503) != 503:
                raise
            if time.monotonic() >= deadline:
                raise AssertionError("%s still refused after %gs "
                                     "(%d attempts)" % (what, timeout,
                                                        attempts))
        await asyncio.sleep(0.05)


async def close_notice(b, code):
    """The binary's next message is a close notice with that code."""
    msg = json.loads(await harness.recv(b))
    assert set(msg) == {"conn_id", "close_code"} and \
        msg["close_code"] == code, "binary received %r" % msg
    return msg["conn_id"]


async def refused(factory):
    """The HTTP status a websockets connect was refused with (fails when it
    is accepted)."""
    try:
        ws = await factory()
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    await ws.close()
    raise AssertionError("upgrade accepted, expected a refusal")


def src_kw(addr):
    """websockets.connect keyword binding the client to a source address."""
    return {"local_addr": (addr, 0)}


def gauge(d, name):
    """The value of one unlabelled series on /metrics."""
    status, _, body = harness.http_get(d.metrics_port, "/metrics")
    assert status == 200, status
    m = re.search(r"(?m)^%s (\d+)$" % re.escape(name), body.decode())
    assert m, "no %s on /metrics" % name
    return int(m.group(1))


def raise_nofile():
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit (the
    daemon started afterwards inherits it).  Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 65536)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------
# rate limit

class RateLimit(unittest.TestCase):
    def test_burst_shared_by_both_endpoints(self):
        with harness.Daemon("rate limit burst 3 refill 60s") as d:
            async def main():
                # 2 binaries + 1 phone spend the 3 tokens of 127.0.0.1
                b1 = await harness.binary(d, "rl-a")
                b2 = await harness.binary(d, "rl-b")
                p = await harness.phone(d, "rl-a")
                await harness.assert_exchange(b1, p, "rl-a")
                # the 4th upgrade of either kind: 429
                self.assertEqual(status_of(d, "/v1/server", "rl-c"), 429)
                self.assertEqual(status_of(d, "/v1/client", "rl-a"), 429)
                self.assertEqual(await refused(
                    lambda: harness.phone(d, "rl-b")), 429)
                # /healthz is exempt, with an empty bucket
                for _ in range(5):
                    self.assertEqual(d.healthz()["connected_phones"], 1)
                # the admitted ones still work
                await harness.assert_exchange(b1, p, "rl-a", n=2)
                # other addresses have buckets of their own
                for src in ("127.0.0.2", "127.0.0.3"):
                    st, s = upgrade(d, "/v1/client", "rl-b", src, keep=True)
                    self.assertEqual(st, 101, src)
                    s.close()
                    self.assertEqual(status_of(d, "/v1/server", "rl-%s" % src,
                                               src), 101, src)
                    self.assertEqual(status_of(d, "/v1/client", "rl-none",
                                               src), 101, src)
                    self.assertEqual(status_of(d, "/v1/client", "rl-a", src),
                                     429, src)
                    self.assertEqual(status_of(d, "/v1/server", "rl-d", src),
                                     429, src)
                # and spending them left 127.0.0.1's bucket as it was
                self.assertEqual(status_of(d, "/v1/client", "rl-a"), 429)
                self.assertEqual(status_of(d, "/v1/client", "rl-a",
                                           "127.0.0.4"), 101)
                await harness.close_all(p, b1, b2)
            harness.run(main())
            # the 8 429s above, in lines of their number, one a second at
            # most; the first at once, with its endpoint and address
            d.wait_refused("rate_limited", 8)
            self.assertRegex(d.log_text(), r"(?m)event=rate_limited "
                             r"refused=1 endpoint=server ip=127\.0\.0\.1/32$")

    def test_refill(self):
        with harness.Daemon("rate limit burst 2 refill 500ms") as d:
            # phones for a server-id without a binary: 101, then 4404
            self.assertEqual(status_of(d, "/v1/client", "rf-none"), 101)
            self.assertEqual(status_of(d, "/v1/server", "rf-a"), 101)
            self.assertEqual(status_of(d, "/v1/client", "rf-none"), 429)
            # the parent's answer to HEAD: the same head, and no body
            heads = {}
            for method in ("GET", "HEAD"):
                raw = harness.raw_request(d.port, harness.upgrade_request(
                    d.port, "/v1/client", method=method, sid="rf-none"))
                heads[method] = raw.partition(b"\r\n\r\n")
            self.assertEqual(heads["HEAD"][0], heads["GET"][0])
            self.assertRegex(heads["GET"][0], rb"\AHTTP/1.1 429 ")
            self.assertEqual(heads["HEAD"][2], b"")
            self.assertNotEqual(heads["GET"][2], b"")
            for _ in range(3):
                self.assertEqual(harness.http_get(d.port, "/healthz")[0], 200)
            # one refill period later (the wait is the subject): one token
            time.sleep(0.55)
            self.assertEqual(status_of(d, "/v1/client", "rf-none"), 101)
            # ... and only one (the next is due 500 ms after the last)
            self.assertEqual(status_of(d, "/v1/server", "rf-b"), 429)
            time.sleep(0.55)
            self.assertEqual(status_of(d, "/v1/server", "rf-b"), 101)

    def test_idle_buckets_swept(self):
        """A flood of distinct addresses leaves no state behind once their
        buckets are full again (pyrelayd_client_addresses counts the
        parent's per-address records)."""
        n = 300
        with harness.Daemon("rate limit burst 2 refill 1s") as d:
            for i in range(n):
                src = "127.0.%d.%d" % (20 + i // 250, 1 + i % 250)
                # a header-gate 400 spends a token (the limit comes first)
                self.assertEqual(status_of(d, "/v1/client", "sw", src,
                                           {"X-Pyrycode-Token": None}), 400)
            # spent buckets are kept (a 2nd token is still there to take)
            self.assertGreaterEqual(gauge(d, "pyrelayd_client_addresses"), n)
            # full again after 1 s, then forgotten by the periodic sweep
            harness.poll_until(
                lambda: gauge(d, "pyrelayd_client_addresses") <= 2, 10,
                "idle client addresses to be swept", interval=0.2)

    def test_healthz_answered_while_relays_report(self):
        """/healthz and /metrics are answered, every time, while binaries
        come and go (their relays report to the parent meanwhile).  A
        request is never left without a response."""
        with harness.Daemon(NO_RATE_LIMIT) as d:
            stop = threading.Event()
            errors = []

            def churn(k):
                i = 0
                try:
                    while not stop.is_set():
                        st = status_of(d, "/v1/server",
                                       "ch-%d-%d" % (k, i % 4))
                        assert st == 101, st
                        i += 1
                except BaseException as e:
                    errors.append(e)
            threads = [threading.Thread(target=churn, args=(k,), daemon=True)
                       for k in range(2)]
            for t in threads:
                t.start()
            bad = []
            n = 0
            try:
                end = time.monotonic() + 2
                while time.monotonic() < end and len(bad) < 3:
                    port, path = ((d.port, "/healthz") if n % 2 == 0 else
                                  (d.metrics_port, "/metrics"))
                    n += 1
                    t = time.monotonic()
                    try:
                        st = harness.http_get(port, path, timeout=5)[0]
                    except AssertionError as e:
                        st = str(e)
                    if st != 200:
                        bad.append((path, st, round(time.monotonic() - t, 2)))
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=10)
            if errors:
                raise errors[0]
            self.assertEqual(bad, [], "of %d requests" % n)


# --------------------------------------------------------------------------
# connection caps

class ConnectionCaps(unittest.TestCase):
    def test_max_connections(self):
        # every client from an address of its own: the global cap is what
        # refuses, with 503 at the upgrade (the per-address cap, at most
        # the global one, closes at accept: AddressCap, test_hostile.py)
        conf = "max connections 5\nhandshake timeout 20s\n" + NO_RATE_LIMIT
        addrs = iter("127.0.1.%d" % i for i in range(1, 200))

        def fresh():
            return next(addrs)
        with harness.Daemon(conf) as d:
            async def main():
                b = await harness.binary(d, "mc", **src_kw(fresh()))
                p1 = await harness.phone(d, "mc", **src_kw(fresh()))
                p2 = await harness.phone(d, "mc", **src_kw(fresh()))
                await harness.assert_exchange(b, p1, "mc")
                # 3 live; two sockets that sent nothing count from accept
                s1 = connect_from(d, fresh())
                s2 = connect_from(d, fresh())
                self.assertEqual(status_of(d, "/v1/client", "mc", fresh()),
                                 503)
                self.assertEqual(status_of(d, "/v1/server", "mc-x",
                                           fresh()), 503)
                # one of them leaves: its slot comes back
                s1.close()
                p3, n = await admit(
                    lambda: harness.phone(d, "mc", **src_kw(fresh())),
                    what="a phone after an idle socket left")
                self.assertEqual(status_of(d, "/v1/server", "mc-x",
                                           fresh()), 503)
                s2.close()
                p4, n = await admit(
                    lambda: harness.phone(d, "mc", **src_kw(fresh())),
                    what="a phone after an idle socket left")
                # b p1 p2 p3 p4: full
                self.assertEqual(status_of(d, "/v1/client", "mc", fresh()),
                                 503)
                self.assertEqual(status_of(d, "/v1/server", "mc-y",
                                           fresh()), 503)
                self.assertEqual(await refused(
                    lambda: harness.phone(d, "mc", **src_kw(fresh()))), 503)
                # /healthz is not subject to the cap
                self.assertEqual(d.healthz()["connected_phones"], 4)
                # a WebSocket connection closes: its slot comes back
                await p4.close()
                await close_notice(b, 1000)
                p5, n = await admit(
                    lambda: harness.phone(d, "mc", **src_kw(fresh())),
                    what="a phone after a phone left")
                await harness.assert_exchange(b, p5, "mc", n=5)
                self.assertEqual(status_of(d, "/v1/client", "mc", fresh()),
                                 503)
                await harness.close_all(p1, p2, p3, p5, b)
            harness.run(main())
            self.assertRegex(d.log_text(), r"event=conn_cap_reached\b")

    def test_max_connections_per_ip(self):
        conf = "max connections per ip 3\nhandshake timeout 20s\n" + \
            NO_RATE_LIMIT
        with harness.Daemon(conf) as d:
            async def main():
                a = src_kw("127.0.0.2")
                b = await harness.binary(d, "pi", **a)
                p1 = await harness.phone(d, "pi", **a)
                p2 = await harness.phone(d, "pi", **a)
                # 127.0.0.2 is full, for both endpoints: its next
                # connections are closed at accept, unanswered
                self.assertEqual(unanswered(d, "/v1/client", "pi",
                                            "127.0.0.2"), b"")
                self.assertEqual(unanswered(d, "/v1/server", "pi-2",
                                            "127.0.0.2"), b"")
                # 127.0.0.3 and 127.0.0.1 still get in
                p3 = await harness.phone(d, "pi", **src_kw("127.0.0.3"))
                await harness.assert_exchange(b, p3, "pi")
                p4 = await harness.phone(d, "pi")
                await harness.assert_exchange(b, p4, "pi", n=2)
                # idle sockets count per address from accept
                idle = [connect_from(d, "127.0.0.4") for _ in range(3)]
                self.assertEqual(unanswered(d, "/v1/client", "pi",
                                            "127.0.0.4"), b"")
                self.assertEqual(status_of(d, "/v1/client", "pi-none",
                                           "127.0.0.5"), 101)
                for s in idle:
                    s.close()
                # 127.0.0.2: one leaves, one more gets in
                await p2.close()
                await close_notice(b, 1000)
                p5, n = await admit(lambda: harness.phone(d, "pi", **a),
                                    what="a phone from 127.0.0.2")
                await harness.assert_exchange(b, p5, "pi", n=3)
                self.assertEqual(unanswered(d, "/v1/client", "pi",
                                            "127.0.0.2"), b"")
                await harness.close_all(p1, p3, p4, p5, b)
                return n
            n = harness.run(main())
            # the four above, and p5's attempts before the slot came back
            self.assertEqual(d.metrics()[
                "pyrelayd_address_cap_refusals_total"], 4 + n - 1)

    def test_answered_connection_does_not_hold_its_slot(self):
        # With one connection per address, a client that reads its answer
        # (a 400, a 404, /healthz) and connects again at once must get in
        # every time: the front gives the slot back before it writes the
        # answer, and the parent reads that before it refuses anyone.
        conf = "max connections per ip 1\n" + NO_RATE_LIMIT
        with harness.Daemon(conf) as d:
            src = "127.0.0.6"
            got = []
            for i in range(60):
                s = connect_from(d, src)
                try:
                    if i % 3 == 0:
                        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    elif i % 3 == 1:
                        s.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
                    else:
                        s.sendall(harness.upgrade_request(
                            d.port, "/v1/client", sid="slot",
                            headers={"X-Pyrycode-Token": None}))
                    got.append(harness.read_head(s)[0])
                finally:
                    s.close()
            self.assertEqual(got, [200, 404, 400] * 20)
            self.assertEqual(d.metrics().get(
                "pyrelayd_address_cap_refusals_total", 0), 0)

    def test_crashed_relay_releases_its_slots(self):
        conf = "max connections 4\n" + NO_RATE_LIMIT
        with harness.Daemon(conf) as d:
            async def main():
                b = await harness.binary(d, "crash")
                phones = [await harness.phone(d, "crash") for _ in range(3)]
                for i, p in enumerate(phones):
                    await harness.assert_exchange(b, p, "crash", n=i)
                # from elsewhere: 127.0.0.1 is at its own cap too (4)
                self.assertEqual(status_of(d, "/v1/server", "crash-x",
                                           "127.0.0.2"), 503)
                pid = d.wait_relays(1)["crash"]
                os.kill(pid, signal.SIGKILL)
                # the connections lived in the relay: they end with it
                for ws in [b] + phones:
                    await harness.expect_close(ws, 1006, timeout=10)
                # the parent reaps it and releases the 4 slots
                b2, n = await admit(lambda: harness.binary(d, "crash-2"),
                                    timeout=10, what="a binary after the "
                                    "relay was killed")
                new = []
                for i in range(3):
                    p, n = await admit(lambda: harness.phone(d, "crash-2"),
                                       what="phone %d after the kill" % i)
                    new.append(p)
                for i, p in enumerate(new):
                    await harness.assert_exchange(b2, p, "crash-2", n=i)
                # released once, not twice: the cap still holds at 4
                self.assertEqual(status_of(d, "/v1/client", "crash-2",
                                           "127.0.0.2"), 503)
                self.assertEqual(status_of(d, "/v1/server", "crash",
                                           "127.0.0.3"), 503)
                await harness.close_all(b2, *new)
            harness.run(main())
            self.assertRegex(d.log_text(),
                             r"event=relay_exited .*signal=9")


# --------------------------------------------------------------------------
# slowloris

class Slowloris(unittest.TestCase):
    TIMEOUT = 2.0
    HEAD = b"GET /v1/server HTTP/1.1\r\n"
    TRICKLE = 4          # bytes sent, one every INTERVAL
    INTERVAL = 0.5

    def test_slow_heads_dropped_healthy_clients_unaffected(self):
        nofile = raise_nofile()
        count = min(2000, nofile - 300)
        if count < 200:
            self.skipTest("RLIMIT_NOFILE hard limit %d is too low" % nofile)
        addrs = ["127.0.%d.%d" % (a, b) for a in range(1, 9)
                 for b in range(1, 251)]
        conf = "handshake timeout 2s\n" + NO_RATE_LIMIT
        with harness.Daemon(conf) as d:
            socks = [None] * count
            t_conn = [0.0] * count
            errors = []
            connected = threading.Event()

            def drive():
                """Connect all, each sending one byte of HEAD every
                INTERVAL from its connect (the last well before the
                timeout, so the daemon has read everything we sent)."""
                due = []  # (time, index, byte number)
                try:
                    for i in range(count):
                        s = connect_from(d, addrs[i % len(addrs)], 10)
                        t_conn[i] = time.monotonic()
                        s.setblocking(False)
                        socks[i] = s
                        due.append((t_conn[i], i, 0))
                        if i % 100 == 0:
                            due = self._trickle(due, socks)
                    connected.set()
                    while due:
                        due = self._trickle(due, socks)
                        if due:
                            time.sleep(max(0, min(t for t, _, _ in due) -
                                           time.monotonic()))
                except BaseException as e:  # reported by the main thread
                    errors.append(e)
                    connected.set()

            driver = threading.Thread(target=drive, daemon=True)
            t0 = time.monotonic()
            driver.start()
            lat = []

            async def healthy(n):
                t = time.monotonic()
                b = await harness.binary(d, "sl-%d" % n)
                lat.append(("binary", time.monotonic() - t))
                t = time.monotonic()
                p = await harness.phone(d, "sl-%d" % n)
                lat.append(("phone", time.monotonic() - t))
                await harness.assert_exchange(b, p, "sl-%d" % n,
                                              timeout=5)
                t = time.monotonic()
                harness.http_get(d.port, "/healthz", timeout=5)
                lat.append(("healthz", time.monotonic() - t))
                await harness.close_all(p, b)

            async def main():
                # healthy clients all along: while the flood connects, and
                # after, until the first slow socket is due to be dropped
                n = 0
                while not connected.is_set() or \
                        time.monotonic() < t_conn[0] + self.TIMEOUT - 0.3:
                    await healthy(n)
                    n += 1
                    await asyncio.sleep(0.05)
                return n
            rounds = harness.run(main())
            driver.join(timeout=20)
            if errors:
                raise errors[0]
            self.assertFalse(driver.is_alive())
            t_flood = t_conn[-1] - t0
            worst = max(lat, key=lambda x: x[1])
            self.assertLess(worst[1], 1.0, "slowest healthy %s handshake "
                            "%.3fs (%d rounds)" % (worst[0], worst[1], rounds))
            self.assertGreaterEqual(rounds, 2)
            # every slow socket: EOF without a byte, ~2 s after its accept
            closed = self._wait_closed(socks, t_conn, deadline=t_conn[-1] +
                                       self.TIMEOUT + 5)
            late = [(i, closed[i][0] - t_conn[i]) for i in range(count)
                    if closed[i] is None or
                    closed[i][0] - t_conn[i] > self.TIMEOUT + 1.5]
            early = [(i, closed[i][0] - t_conn[i]) for i in range(count)
                     if closed[i] and closed[i][0] - t_conn[i] <
                     self.TIMEOUT - 0.2]
            data = [(i, closed[i][1]) for i in range(count)
                    if closed[i] and closed[i][1]]
            for s in socks:
                s.close()
            self.assertEqual(data, [], "slow sockets received bytes")
            self.assertEqual(late, [], "slow sockets not dropped in time "
                             "(%d of %d)" % (len(late), count))
            self.assertEqual(early, [], "slow sockets dropped before the "
                             "handshake timeout (%d of %d)"
                             % (len(early), count))
            # healthy again afterwards, and the daemon never ran out of fds
            harness.run(healthy(10000))
            # the addresses of the flood (full buckets) left no state behind
            harness.poll_until(
                lambda: gauge(d, "pyrelayd_client_addresses") <= 2, 10,
                "the flood's client addresses to be forgotten", interval=0.2)
            log = d.log_text()
            self.assertNotRegex(log, r"event=accept_paused|abnormal=1|"
                                r"Too many open files")
            self.assertLess(t_flood, 60)

    def _trickle(self, due, socks):
        now = time.monotonic()
        later = []
        for t, i, k in due:
            if t > now:
                later.append((t, i, k))
                continue
            try:
                socks[i].send(self.HEAD[k:k + 1])
            except OSError:
                pass  # the daemon dropped it early: the close check reports it
            if k + 1 < self.TRICKLE:
                later.append((t + self.INTERVAL, i, k + 1))
        return later

    def _wait_closed(self, socks, t_conn, deadline):
        """index -> (close time, bytes received before EOF) or None."""
        out = [None] * len(socks)
        got = [b""] * len(socks)
        poller = select.poll()
        by_fd = {}
        for i, s in enumerate(socks):
            poller.register(s.fileno(), select.POLLIN | select.POLLHUP |
                            select.POLLERR)
            by_fd[s.fileno()] = i
        left = len(socks)
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
            for fd, ev in poller.poll(min(wait, 0.5) * 1000):
                i = by_fd[fd]
                try:
                    chunk = socks[i].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:  # a reset
                    chunk = b""
                if chunk:
                    got[i] += chunk
                    continue
                out[i] = (time.monotonic(), got[i])
                poller.unregister(fd)
                left -= 1
        return out


# --------------------------------------------------------------------------
# the log

EVENTS = ["server_claimed", "server_id_conflict", "server_id_takeover",
          "server_released", "grace_expired", "phone_registered",
          "phone_register_no_server", "phone_register_at_cap",
          "phone_unregistered", "rate_limited", "conn_cap_reached",
          "address_cap_reached", "relay_exited"]

KV = r'[A-Za-z_][A-Za-z0-9_.]*=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)'
EVENT_LINE = re.compile(r"^\S+\[\d+\]: event=([a-z_]+)((?: %s)*)$" % KV)

TOKEN = "tok-SECRET-7f3a"
DEVICE = "dev-SECRET-91"
HEADER = {"X-Custom-SECRET": "hdr-SECRET-55"}
PAYLOAD = "payload-SECRET-a1"


class Log(unittest.TestCase):
    def test_events_key_value_and_no_secrets(self):
        conf = ("phones per server 1\nconflict probe 500ms\ngrace 500ms\n"
                "max connections per ip 8\nrate limit burst 20 refill 60s")
        d = harness.Daemon(conf)
        d.args = ["-d", "-v", "-f", d.conf_path]
        with d:
            async def main():
                def phone(sid, **kw):
                    return harness.phone(d, sid, token=TOKEN, device=DEVICE,
                                         extra_headers=HEADER, **kw)
                b = await harness.binary(d, "ls-a", extra_headers=HEADER)
                d.wait_log(r"event=server_claimed server_id=ls-a")
                p = await phone("ls-a")
                d.wait_log(r"event=phone_registered server_id=ls-a")
                # payloads both ways
                await p.send(json.dumps({"m": PAYLOAD}))
                env = json.loads(await harness.recv(b))
                self.assertEqual(env["frame"], {"m": PAYLOAD})
                cid = env["conn_id"]
                await b.send(json.dumps({"conn_id": cid, "frame": PAYLOAD}))
                self.assertEqual(await harness.recv(p), '"%s"' % PAYLOAD)
                # malformed envelopes and an unknown conn id carrying markers
                mark = d.log_mark()
                bad = ["not json payload-SECRET-m1",
                       json.dumps({"conn_id": 12,
                                   "frame": "payload-SECRET-m2"}),
                       json.dumps(["payload-SECRET-m3"]),
                       json.dumps({"conn_id": "client-ls-a-SECRET00",
                                   "frame": "payload-SECRET-m4"}),
                       json.dumps({"conn_id": cid, "frame": 1,
                                   "close_code": "SECRET-m5"}),
                       json.dumps({"push_wake": {"platform": "fcm",
                                                 "token": "fcm-SECRET-m6"}})]
                for m in bad:
                    await b.send(m)
                await b.send(json.dumps({"conn_id": cid, "frame": "after"}))
                self.assertEqual(await harness.recv(p), '"after"')
                # phones over the cap and for no server
                p2 = await phone("ls-a")
                await harness.expect_close(p2, 4429)
                d.wait_log(r"event=phone_register_at_cap server_id=ls-a")
                p3 = await phone("ls-none")
                await harness.expect_close(p3, 4404)
                d.wait_log(r"event=phone_register_no_server server_id=ls-none")
                # invalid JSON from the phone
                await p.send("{not json payload-SECRET-b2")
                await harness.expect_close(p, 1007)
                note = json.loads(await harness.recv(b))
                self.assertEqual(note, {"conn_id": cid, "close_code": 1001})
                d.wait_log(r"event=phone_unregistered server_id=ls-a")
                # a conflict the incumbent wins (it answers the ping) ...
                b2 = await harness.binary(d, "ls-a", extra_headers=HEADER)
                await harness.expect_close(b2, 4409)
                d.wait_log(r"event=server_id_conflict server_id=ls-a")
                # ... and one it loses (a raw binary never answers)
                raw = harness.RawWS.connect(d.port, harness.upgrade_request(
                    d.port, "/v1/server", sid="ls-t", headers=HEADER))
                self.assertEqual(raw.status, 101)
                d.wait_log(r"event=server_claimed server_id=ls-t")
                bt = await harness.binary(d, "ls-t", extra_headers=HEADER)
                d.wait_log(r"event=server_id_takeover server_id=ls-t")
                raw.close()
                # release, grace expiry, the relay's exit (debug)
                await harness.close_all(b, bt)
                d.wait_log(r"event=server_released server_id=ls-a")
                d.wait_log(r"event=grace_expired server_id=ls-a")
                d.wait_log(r"event=relay_exited .*server_id=ls-a\b")
                # rate limit, from an address of its own (header-gate 400s
                # spend tokens too: the limit comes first)
                src = "127.0.0.9"
                sts = [status_of(d, "/v1/client", "ls-rl", src,
                                 {"X-Pyrycode-Token": None, "User-Agent":
                                  "ua-SECRET-u1", **HEADER})
                       for _ in range(21)]
                self.assertEqual(sts, [400] * 20 + [429])
                d.wait_log(r"event=rate_limited\b")
                # connection cap per ip, at accept
                src = "127.0.0.10"
                idle = [connect_from(d, src) for _ in range(8)]
                self.assertEqual(unanswered(d, "/v1/client", "ls-a", src),
                                 b"")
                d.wait_log(r"event=address_cap_reached\b")
                # and the global one, at the upgrade (lowered by SIGHUP)
                d.extra_conf = conf.replace("max connections per ip 8",
                                            "max connections 3")
                d.write_conf()
                mark = d.log_mark()
                d.signal(signal.SIGHUP)
                d.wait_log(r"\bevent=reload_done\b", 10, mark)
                self.assertEqual(status_of(d, "/v1/client", "ls-a",
                                           "127.0.0.11"), 503)
                d.wait_log(r"event=conn_cap_reached\b")
                for s in idle:
                    s.close()
            harness.run(main())
        lines = d.log_lines()
        text = "\n".join(lines)
        leaks = [ln for ln in lines if re.search(r"(?i)secret", ln)]
        self.assertEqual(leaks, [], "client-chosen secrets in the log")
        for ev in EVENTS:
            evl = [ln for ln in lines if re.search(r"\bevent=%s( |$)" % ev,
                                                    ln)]
            self.assertTrue(evl, "no event=%s line in the log:\n%s"
                            % (ev, text[-3000:]))
        # every line the daemon writes, debug ones included (-v), is an
        # event in key=value form
        bad = [ln for ln in lines if not EVENT_LINE.match(ln)]
        self.assertEqual(bad, [], "log lines not in key=value form")


if __name__ == "__main__":
    harness.main()
