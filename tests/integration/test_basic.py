#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Command line, configuration check, HTTP front (docs/protocol.md §2, §10),
upgrade, pipelining, handshake timeout and signals (§7)."""

import asyncio
import json
import os
import pwd
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import RawWS, raw_request, parse_head, upgrade_request  # noqa

# Every test below makes many /v1 requests from 127.0.0.1; the default
# per-IP bucket (burst 20) would answer 429 to most of them.
RATE = "rate limit burst 10000 refill 100ms"

VERSION = None


def version():
    global VERSION
    if VERSION is None:
        r = harness.run_pyrelayd(["-V"])
        m = re.fullmatch(r"pyrelayd (\S+)\n", r.stdout)
        assert r.returncode == 0 and m, "-V: rc=%d out=%r err=%r" % (
            r.returncode, r.stdout, r.stderr)
        VERSION = m.group(1)
    return VERSION


def sid():
    return str(uuid.uuid4())


def write_tmp(text):
    fd, path = tempfile.mkstemp(prefix="pyrelayd-conf-", suffix=".conf")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return path


# ---------------------------------------------------------------------------

class CommandLine(unittest.TestCase):
    """-V, -n, -nv, -f (docs/protocol.md §10)."""

    def test_version(self):
        r = harness.run_pyrelayd(["-V"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"\Apyrelayd [0-9A-Za-z.+~-]+\n\Z")

    def test_missing_config_file_is_an_error(self):
        # only the *default* path may be missing; an explicit -f must exist
        path = "/nonexistent/x.conf"
        for args in (["-d", "-f", path], ["-n", "-f", path]):
            with self.subTest(args=args):
                r = harness.run_pyrelayd(args)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn(path, r.stderr)

    def good_conf(self, port, d, extra=""):
        """A valid configuration; d: a directory for its paths."""
        text = ("listen on 127.0.0.1 port %d\n"
                "metrics on 127.0.0.1 port %d\n"
                "workers 2\n"
                'control socket "%s/ctl.sock"\n'
                "grace 7s\n" % (port, harness.free_port(), d))
        if harness.is_root():
            empty = os.path.join(d, "empty")
            os.mkdir(empty, 0o755)
            text += 'user "nobody"\nchroot "%s"\n' % empty
        return text + extra

    def test_check_good_file_opens_no_socket(self):
        d = tempfile.mkdtemp(prefix="pyrelayd-n-")
        os.chmod(d, 0o755)
        try:
            ctl = os.path.join(d, "ctl.sock")
            # hold the listen port: a daemon that tried to bind would fail
            with socket.socket() as held:
                held.bind(("127.0.0.1", 0))
                held.listen(1)
                port = held.getsockname()[1]
                conf = os.path.join(d, "good.conf")
                with open(conf, "w") as f:
                    f.write(self.good_conf(port, d))
                os.chmod(conf, 0o644)
                r = harness.run_pyrelayd(["-n", "-f", conf])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertFalse(os.path.exists(ctl),
                                 "-n created the control socket")
                if harness.is_root():
                    # -n needs no root
                    r = harness.run_pyrelayd(["-n", "-f", conf],
                                             user="nobody")
                    self.assertEqual(r.returncode, 0,
                                     "-n as nobody: " + r.stderr)
                if shutil.which("strace"):
                    trace = os.path.join(d, "trace")
                    # LeakSanitizer cannot run under ptrace (ASan builds)
                    env = dict(os.environ)
                    env["ASAN_OPTIONS"] = ":".join(filter(None, [
                        env.get("ASAN_OPTIONS"), "detect_leaks=0"]))
                    r = subprocess.run(
                        ["strace", "-f", "-qq", "-o", trace,
                         "-e", "trace=bind,listen,connect",
                         harness.PYRELAYD, "-n", "-f", conf],
                        stdin=subprocess.DEVNULL, capture_output=True,
                        text=True, timeout=30, env=env)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    with open(trace) as f:
                        calls = [ln for ln in f
                                 if re.search(r"\b(bind|listen)\(", ln)
                                 or re.search(r"connect\(.*AF_INET", ln)]
                    self.assertEqual(calls, [], "-n touched sockets")
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_check_bad_file_reports_every_error_as_file_line(self):
        text = ("listen on 127.0.0.1 port %d\n"
                "no such keyword here\n"
                "workers 2\n"
                "grace banana\n" % harness.free_port())
        path = write_tmp(text)
        try:
            r = harness.run_pyrelayd(["-n", "-f", path])
            self.assertEqual(r.returncode, 1, r.stderr)
            # every error is reported, each as file:line: message
            self.assertRegex(r.stderr, r"%s:2: \S" % re.escape(path))
            self.assertRegex(r.stderr, r"%s:4: \S" % re.escape(path))
        finally:
            os.unlink(path)

    def test_start_with_bad_file_exits_1(self):
        port = harness.free_port()
        path = write_tmp("listen on 127.0.0.1 port %d\nworkers two\n" % port)
        try:
            r = harness.run_pyrelayd(["-d", "-f", path])
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertRegex(r.stderr, r"%s:2: \S" % re.escape(path))
            self.assertNotIn("event=ready", r.stderr)
        finally:
            os.unlink(path)

    def test_check_verbose_prints_config(self):
        d = tempfile.mkdtemp(prefix="pyrelayd-nv-")
        os.chmod(d, 0o755)
        try:
            port = harness.free_port()
            conf = os.path.join(d, "c.conf")
            with open(conf, "w") as f:
                f.write(self.good_conf(port, d, "phones per server 7\n"))
            r = harness.run_pyrelayd(["-nv", "-f", conf])
            self.assertEqual(r.returncode, 0, r.stderr)
            out = r.stdout + r.stderr
            self.assertRegex(out, r"(?m)^\s*listen on 127\.0\.0\.1 port %d\b"
                             % port)
            self.assertRegex(out, r"(?m)^\s*metrics on 127\.0\.0\.1 port \d+")
            self.assertRegex(out, r"(?m)^\s*phones per server 7\s*$")
            self.assertRegex(out, r"(?m)^\s*grace (7s|7000ms)\s*$")
            # keywords left at their defaults are printed too
            self.assertRegex(out, r"(?m)^\s*max connections 10000\s*$")
        finally:
            shutil.rmtree(d, ignore_errors=True)


class BuiltinDefaults(unittest.TestCase):
    """No -f and no /etc/pyrelayd.conf: 127.0.0.1:8080, metrics :9090."""

    def precondition(self):
        if os.path.exists("/etc/pyrelayd.conf"):
            return ("/etc/pyrelayd.conf exists; built-in defaults apply only "
                    "when the default file is missing")
        for port in (8080, 9090):
            if not harness.port_is_free(port):
                return "port %d is in use on 127.0.0.1" % port
        if os.path.exists("/run/pyrelayd.sock"):
            return "/run/pyrelayd.sock exists (another pyrelayd?)"
        if harness.is_root():
            try:
                pwd.getpwnam("_pyrelayd")
            except KeyError:
                return ("as root the defaults drop to user _pyrelayd, which "
                        "does not exist here (make run / make install "
                        "set it up)")
            if not os.path.isdir("/var/lib/pyrelayd/empty"):
                return "default chroot /var/lib/pyrelayd/empty is missing"
        elif not os.access("/run", os.W_OK):
            return ("the default control socket /run/pyrelayd.sock cannot be "
                    "created by uid %d" % os.geteuid())
        return None

    def test_no_f_uses_builtin_defaults(self):
        why = self.precondition()
        if why:
            self.skipTest(why)
        d = harness.Daemon(args=["-d"], port=8080, metrics_port=9090)
        with d:
            h = d.healthz()
            self.assertEqual(h["status"], "ok")
            status, _, body = harness.http_get(9090, "/metrics")
            self.assertEqual(status, 200)
            self.assertIn(b"pyrycode_relay_connected_binaries", body)
            # 127.0.0.1 only, not every address
            with socket.socket() as s:
                s.settimeout(5)
                self.assertNotEqual(s.connect_ex(("127.0.0.2", 8080)), 0,
                                    "listening beyond 127.0.0.1")


# ---------------------------------------------------------------------------

class Front(unittest.TestCase):
    """One daemon for the HTTP surface tests."""

    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon(extra_conf=RATE)
        try:
            cls.d.start()
        except BaseException:
            cls.d.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        assert rc == 0, "pyrelayd exited %r on SIGTERM" % rc

    def setUp(self):
        self.assertTrue(self.d.alive(), "daemon died:\n" +
                        self.d.log_text()[-3000:])

    def request(self, data):
        status, headers, body = parse_head(raw_request(self.d.port, data))
        return status, headers, body

    # -- /healthz

    def test_healthz_exact_shape(self):
        status, h, body = harness.http_get(self.d.port, "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(h.get("content-type"),
                         "application/json; charset=utf-8")
        self.assertEqual(h.get("cache-control"), "no-store")
        if "content-length" in h:
            self.assertEqual(int(h["content-length"]), len(body))
        text = body.decode()
        self.assertRegex(
            text, r'\A\{"status":"ok","version":"%s","connected_binaries":'
            r'\d+,"connected_phones":\d+,"uptime_seconds":\d+\}\Z'
            % re.escape(version()))
        keys = [k for k, _ in json.loads(text, object_pairs_hook=list)]
        self.assertEqual(keys, ["status", "version", "connected_binaries",
                                "connected_phones", "uptime_seconds"])
        self.assertLess(json.loads(text)["uptime_seconds"], 3600)

    def test_healthz_any_method_and_query(self):
        for method, path in (("POST", "/healthz"), ("PUT", "/healthz"),
                             ("GET", "/healthz?probe=1")):
            with self.subTest(method=method, path=path):
                status, h, body = harness.http_get(self.d.port, path,
                                                   method=method)
                self.assertEqual(status, 200)
                self.assertEqual(json.loads(body)["status"], "ok")

    def test_head_gets_the_head_without_a_body(self):
        # RFC 9110 9.3.2: the head GET would get, Content-Length included
        # (what a GET gets; for an upgrade, what any other method gets)
        for ref, path, extra, status in (
                ("GET", "/healthz", {}, 200),
                ("GET", "/nowhere", {}, 404),
                ("POST", "/v1/server", {"Connection": "Upgrade",
                                "Upgrade": "websocket",
                                "Sec-WebSocket-Version": "13",
                                "Sec-WebSocket-Key": harness.ws_key(),
                                "X-Pyrycode-Server": sid(),
                                "X-Pyrycode-Version": "1"}, 405)):
            with self.subTest(path=path):
                hdrs = "".join("%s: %s\r\n" % kv for kv in extra.items())
                heads = {}
                for method in (ref, "HEAD"):
                    raw = raw_request(self.d.port, (
                        "%s %s HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n"
                        "%s\r\n" % (method, path, hdrs)).encode())
                    head, sep, body = raw.partition(b"\r\n\r\n")
                    self.assertEqual(sep, b"\r\n\r\n", raw)
                    heads[method] = (head, body)
                get_head, get_body = heads[ref]
                head_head, head_body = heads["HEAD"]
                st, h, _ = parse_head(head_head + b"\r\n\r\n")
                self.assertEqual(st, status)
                self.assertEqual(head_body, b"")
                self.assertGreater(len(get_body), 0)
                self.assertEqual(int(h["content-length"]), len(get_body))
                if path != "/healthz":   # its uptime may tick between
                    self.assertEqual(head_head, get_head)

    # -- 404

    def test_other_paths_404(self):
        for path in ("/", "/v1", "/v1/", "/v1/server/", "/v1/serverx",
                     "/v2/server", "/healthz/", "/metrics", "/V1/server"):
            with self.subTest(path=path):
                status, _, _ = self.request(upgrade_request(
                    self.d.port, path, sid=sid()))
                self.assertEqual(status, 404)
                status, _, _ = harness.http_get(self.d.port, path)
                self.assertEqual(status, 404)

    # -- header gate (400) and its place in the order of checks

    def test_header_gate_400(self):
        srv, cli = "/v1/server", "/v1/client"
        cases = [
            (srv, {"X-Pyrycode-Server": None}),
            (srv, {"X-Pyrycode-Server": ""}),
            (srv, {"X-Pyrycode-Version": None}),
            (srv, {"X-Pyrycode-Version": ""}),
            (srv, {"User-Agent": None}),
            (srv, {"User-Agent": ""}),
            (srv, {"X-Pyrycode-Server": "a/b"}),
            (srv, {"X-Pyrycode-Server": "a b"}),
            (srv, {"X-Pyrycode-Server": "x" * 65}),
            (srv, {"X-Pyrycode-Server": "caf\xe9"}),
            (cli, {"X-Pyrycode-Server": None}),
            (cli, {"X-Pyrycode-Token": None}),
            (cli, {"X-Pyrycode-Token": ""}),
            (cli, {"User-Agent": None}),
            (cli, {"X-Pyrycode-Server": "a:b"}),
            # the gate comes before the handshake checks (426, 405, 400)
            (srv, {"X-Pyrycode-Server": None, "Upgrade": None,
                   "Connection": None}),
            (cli, {"X-Pyrycode-Token": None, "Connection": "keep-alive"}),
        ]
        for path, hdrs in cases:
            with self.subTest(path=path, headers=hdrs):
                status, _, _ = self.request(upgrade_request(
                    self.d.port, path, hdrs, sid=sid()))
                self.assertEqual(status, 400)
        for method, version in (("POST", "HTTP/1.1"), ("GET", "HTTP/1.0")):
            with self.subTest(method=method, version=version):
                status, _, _ = self.request(upgrade_request(
                    self.d.port, srv, {"User-Agent": None}, method=method,
                    version=version, sid=sid()))
                self.assertEqual(status, 400)

    def test_server_id_of_64_bytes_is_accepted(self):
        s = ("A-z.0_9" * 10)[:63] + "Z"
        self.assertEqual(len(s), 64)
        ws = RawWS.connect(self.d.port, upgrade_request(
            self.d.port, "/v1/server", sid=s))
        try:
            self.assertEqual(ws.status, 101)
        finally:
            ws.close()

    # -- handshake checks: 426, 405, 400 in this order

    def test_426_not_http11_or_no_upgrade(self):
        cases = [
            ({}, "HTTP/1.0"),
            ({"Upgrade": None}, "HTTP/1.1"),
            ({"Connection": None}, "HTTP/1.1"),
            ({"Connection": "keep-alive"}, "HTTP/1.1"),
            ({"Upgrade": "h2c"}, "HTTP/1.1"),
            # 426 comes before 405 and before the version/key checks
            ({"Upgrade": None, "Sec-WebSocket-Version": "8"}, "HTTP/1.1"),
        ]
        for path in ("/v1/server", "/v1/client"):
            for hdrs, version in cases:
                with self.subTest(path=path, headers=hdrs, version=version):
                    status, h, _ = self.request(upgrade_request(
                        self.d.port, path, hdrs, version=version, sid=sid()))
                    self.assertEqual(status, 426)
                    self.assertEqual(h.get("upgrade", "").lower(),
                                     "websocket")
                    self.assertEqual(h.get("connection", "").lower(),
                                     "upgrade")
        with self.subTest("POST without upgrade headers is 426, not 405"):
            status, _, _ = self.request(upgrade_request(
                self.d.port, "/v1/server", {"Upgrade": None}, method="POST",
                sid=sid()))
            self.assertEqual(status, 426)

    def test_405_only_after_upgrade_headers(self):
        for path in ("/v1/server", "/v1/client"):
            for method in ("POST", "PUT", "HEAD"):
                with self.subTest(path=path, method=method):
                    status, _, _ = self.request(upgrade_request(
                        self.d.port, path, method=method, sid=sid()))
                    self.assertEqual(status, 405)
            with self.subTest("method before version", path=path):
                status, _, _ = self.request(upgrade_request(
                    self.d.port, path, {"Sec-WebSocket-Version": "8"},
                    method="POST", sid=sid()))
                self.assertEqual(status, 405)

    def test_400_websocket_version_and_key(self):
        bad_version = [{"Sec-WebSocket-Version": "8"},
                       {"Sec-WebSocket-Version": None},
                       # version comes before the key
                       {"Sec-WebSocket-Version": "12",
                        "Sec-WebSocket-Key": None}]
        bad_key = [{"Sec-WebSocket-Key": None},
                   {"Sec-WebSocket-Key": "c2hvcnQ="},       # 5 bytes
                   {"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAA"},  # 15 bytes
                   {"Sec-WebSocket-Key": "!!!!!!!!!!!!!!!!!!!!!!=="},
                   {"Sec-WebSocket-Key": [harness.ws_key(),
                                          harness.ws_key()]}]
        for path in ("/v1/server", "/v1/client"):
            for hdrs in bad_version:
                with self.subTest(path=path, headers=hdrs):
                    status, h, _ = self.request(upgrade_request(
                        self.d.port, path, hdrs, sid=sid()))
                    self.assertEqual(status, 400)
                    self.assertEqual(h.get("sec-websocket-version"), "13")
            for hdrs in bad_key:
                with self.subTest(path=path, headers=hdrs):
                    status, _, _ = self.request(upgrade_request(
                        self.d.port, path, hdrs, sid=sid()))
                    self.assertEqual(status, 400)

    # -- 431

    def head_of_size(self, path, size):
        """A GET for path padded with a filler header to exactly size
        bytes, final empty line included."""
        start = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: t\r\n"
                 "Connection: close\r\nX-Fill: " % path)
        fill = size - len(start) - len("\r\n\r\n")
        self.assertGreater(fill, 0)
        data = (start + "a" * fill + "\r\n\r\n").encode()
        self.assertEqual(len(data), size)
        return data

    def test_431_head_over_8k(self):
        status, _, _ = self.request(self.head_of_size("/healthz", 8192))
        self.assertEqual(status, 200, "a head of exactly 8 KiB is allowed")
        status, _, _ = self.request(self.head_of_size("/healthz", 8193))
        self.assertEqual(status, 431)
        big = upgrade_request(self.d.port, "/v1/server",
                              {"X-Fill": "b" * 20000}, sid=sid())
        status, _, _ = self.request(big)
        self.assertEqual(status, 431)
        # many small headers count too
        many = upgrade_request(
            self.d.port, "/v1/client",
            {"X-F%d" % i: "c" * 40 for i in range(300)}, sid=sid())
        status, _, _ = self.request(many)
        self.assertEqual(status, 431)

    # -- valid upgrades

    def test_101_headers(self):
        key = harness.ws_key()
        for extra in ({}, {"Connection": "keep-alive, Upgrade",
                           "Upgrade": "WebSocket"}):
            with self.subTest(headers=extra):
                hdrs = {"Sec-WebSocket-Key": key,
                        "Sec-WebSocket-Protocol": "chat, superchat",
                        "Sec-WebSocket-Extensions":
                            "permessage-deflate; client_max_window_bits"}
                hdrs.update(extra)
                ws = RawWS.connect(self.d.port, upgrade_request(
                    self.d.port, "/v1/server?x=1", hdrs, sid=sid()))
                try:
                    self.assertEqual(ws.status, 101)
                    self.assertEqual(ws.headers.get("upgrade", "").lower(),
                                     "websocket")
                    self.assertEqual(ws.headers.get("connection",
                                                    "").lower(), "upgrade")
                    self.assertEqual(ws.headers.get("sec-websocket-accept"),
                                     harness.ws_accept(key))
                    self.assertNotIn("sec-websocket-protocol", ws.headers)
                    self.assertNotIn("sec-websocket-extensions", ws.headers)
                finally:
                    ws.close()

    def test_binary_upgrade_answers_pings(self):
        async def main():
            b = await harness.binary(self.d, sid())
            self.assertEqual(b.extensions, [])  # deflate was offered
            for i in range(3):
                pong = await b.ping(b"ping-%d" % i)
                # websockets checks the pong echoes this ping's payload
                await asyncio.wait_for(pong, 5)
            self.assertFalse(b.closed)
            await b.close()
            self.assertEqual(b.close_code, 1000)
        harness.run(main())

    def test_phone_for_unknown_server_gets_4404(self):
        async def main():
            p = await harness.phone(self.d, "no-such-" + sid())
            await harness.expect_close(p, 4404, "no server with that id")
        harness.run(main())
        # and on the wire: 101, then one close frame 4404 + reason
        ws = RawWS.connect(self.d.port, upgrade_request(
            self.d.port, "/v1/client", sid="nobody-" + sid()))
        try:
            self.assertEqual(ws.status, 101)
            fin, op, payload = ws.read_frame()
            self.assertEqual((fin, op), (True, 8))
            self.assertEqual(payload, struct.pack("!H", 4404) +
                             b"no server with that id")
        finally:
            ws.close()

    # -- pipelined bytes after the head

    def test_pipelined_ping_after_binary_head(self):
        req = upgrade_request(self.d.port, "/v1/server", sid=sid())
        ws = RawWS.connect(self.d.port,
                           req + harness.ws_frame(0x9, b"pipelined-ping"))
        try:
            self.assertEqual(ws.status, 101)
            fin, op, payload = ws.read_frame()
            self.assertEqual((fin, op, payload),
                             (True, 0xA, b"pipelined-ping"))
            # the stream stays in sync after it
            ws.send(harness.ws_frame(0x9, b"second"))
            self.assertEqual(ws.read_frame(), (True, 0xA, b"second"))
        finally:
            ws.close()

    def test_pipelined_message_after_phone_head(self):
        s = sid()

        async def main():
            b = await harness.binary(self.d, s)
            req = upgrade_request(self.d.port, "/v1/client", sid=s)
            data = req + harness.ws_frame(0x1, b'{"n": 1}') + \
                harness.ws_frame(0x1, b'[2]')
            ws = await asyncio.to_thread(RawWS.connect, self.d.port, data)
            try:
                self.assertEqual(ws.status, 101)
                m1 = await harness.recv(b)
                m2 = await harness.recv(b)
                self.assertRegex(m1, r'\A\{"conn_id":"client-%s-[0-9a-f]{8}",'
                                 r'"frame":\{"n":1\}\}\Z' % re.escape(s))
                self.assertRegex(m2, r'\A\{"conn_id":"client-%s-[0-9a-f]{8}",'
                                 r'"frame":\[2\]\}\Z' % re.escape(s))
            finally:
                ws.close()
            await b.close()
        harness.run(main())


class HealthzCounts(unittest.TestCase):
    """connected_binaries excludes binaries in grace; phones all count."""

    def test_healthz_counts(self):
        s = sid()
        d = harness.Daemon(extra_conf=RATE)

        def counts():
            h = d.healthz()
            return h["connected_binaries"], h["connected_phones"]

        def wait_counts(want):
            # the relay reports counts to the parent asynchronously and no
            # event tells us when the parent has them: bounded polling
            last = []

            def ok():
                last[:] = [counts()]
                return last[0] == want
            try:
                harness.poll_until(ok, 10, "healthz counts")
            except AssertionError:
                raise AssertionError("healthz counts %r, expected %r"
                                     % (last[0], want))

        async def main():
            b = await harness.binary(d, s)
            p1 = await harness.phone(d, s)
            p2 = await harness.phone(d, s)
            await harness.assert_exchange(b, p1, s)
            await asyncio.to_thread(wait_counts, (1, 2))
            # a binary in its grace window is not counted, its phones are
            await b.close()
            await asyncio.to_thread(wait_counts, (0, 2))
            await harness.close_all(p1, p2)
            await asyncio.to_thread(wait_counts, (0, 0))
        with d:
            self.assertEqual(counts(), (0, 0))
            harness.run(main())


class HandshakeTimeout(unittest.TestCase):
    """The head must be complete within `handshake timeout` of accept."""

    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon(extra_conf=RATE + "\nhandshake timeout 500ms")
        try:
            cls.d.start()
        except BaseException:
            cls.d.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        assert rc == 0, "pyrelayd exited %r on SIGTERM" % rc

    def closed_after(self, sock, limit):
        """Seconds until the server closes sock; fails if it writes a byte
        or keeps it open past limit."""
        t0 = time.monotonic()
        sock.settimeout(limit)
        try:
            data = sock.recv(4096)
        except socket.timeout:
            self.fail("still open after %gs" % limit)
        except ConnectionResetError:
            data = b""
        self.assertEqual(data, b"", "server wrote before closing")
        return time.monotonic() - t0

    def test_half_head_is_closed_silently(self):
        for partial in (b"", b"GET /v1/server HTTP/1.1\r\nHost: x\r\n",
                        b"GET /healthz HTTP/1.1\r\n"):
            with self.subTest(sent=partial):
                t0 = time.monotonic()
                with socket.create_connection(("127.0.0.1", self.d.port),
                                              timeout=5) as s:
                    s.sendall(partial)
                    self.closed_after(s, 5)
                    took = time.monotonic() - t0
                # not before the timeout (some slack for clock granularity)
                self.assertGreaterEqual(took, 0.45)
                self.assertLess(took, 3.0)

    def test_deadline_is_total_not_idle(self):
        # a byte every 100 ms never completes the head: the 500 ms
        # deadline counts from accept, not from the last byte
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.d.port),
                                      timeout=5) as s:
            closed = False
            for i in range(40):  # at most ~4 s
                # the 100 ms pacing is the subject of the test; select
                # also notices the close at once
                r, _, _ = select.select([s], [], [], 0.1)
                if r:
                    try:
                        data = s.recv(4096)
                    except ConnectionResetError:
                        data = b""
                    self.assertEqual(data, b"", "server wrote a response")
                    closed = True
                    break
                try:
                    s.send(b"GET /v1/server HTTP/1.1\r\nX-Slow: "[i:i + 1]
                           or b"a")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
            took = time.monotonic() - t0
        self.assertTrue(closed, "a trickling head kept the connection open")
        self.assertGreaterEqual(took, 0.45)
        self.assertLess(took, 2.5)

    def test_complete_head_in_time_is_served(self):
        status, _, body = harness.http_get(self.d.port, "/healthz")
        self.assertEqual(status, 200)


class Signals(unittest.TestCase):

    def test_sighup_with_broken_config_keeps_serving(self):
        d = harness.Daemon(extra_conf=RATE)
        with d:
            s = sid()

            async def main():
                b = await harness.binary(d, s)
                p = await harness.phone(d, s)
                await harness.assert_exchange(b, p, s, 1)
                good = d.conf_text()
                bad_line = good.count("\n") + 1
                d.write_conf(good + "this is no keyword\n")
                mark = d.log_mark()
                d.signal(signal.SIGHUP)
                await asyncio.to_thread(
                    d.wait_log, r"%s:%d: " % (re.escape(d.conf_path),
                                              bad_line), 10, mark)
                self.assertTrue(d.alive())
                # live connections untouched
                await asyncio.wait_for(await b.ping(b"x"), 5)
                await harness.assert_exchange(b, p, s, 2)
                # and new ones are served
                p2 = await harness.phone(d, s)
                await harness.assert_exchange(b, p2, s, 3)
                s2 = sid()
                b2 = await harness.binary(d, s2)
                p3 = await harness.phone(d, s2)
                await harness.assert_exchange(b2, p3, s2, 4)
                await harness.close_all(b, p, p2, b2, p3)
            harness.run(main())
            self.assertEqual(d.healthz()["status"], "ok")
            # the errors are log events in key=value form like every line
            # (the message quotes keywords: "unknown keyword 'this'")
            kv = r'[A-Za-z_][A-Za-z0-9_.]*=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)'
            line = re.compile(r"^\S+\[\d+\]: event=[a-z_]+(?: %s)*$" % kv)
            errs = [ln for ln in d.log_lines() if "event=config_error" in ln
                    or "event=reload" in ln]
            self.assertTrue(errs)
            for ln in errs:
                self.assertRegex(ln, line)

    def stop_with(self, sig):
        d = harness.Daemon(extra_conf=RATE)
        try:
            d.start()
            s = sid()

            async def main():
                b = await harness.binary(d, s)
                p = await harness.phone(d, s)
                await harness.assert_exchange(b, p, s)
                kids = harness.descendants_of(d.pid)
                self.assertGreaterEqual(len(kids), 3)  # 2 fronts + relay
                d.signal(sig)
                await harness.expect_close(b, 1001, "shutting down")
                await harness.expect_close(p, 1001, "shutting down")
                return kids
            kids = harness.run(main())
            rc = d.wait_exit(10)
            self.assertEqual(rc, 0)
            left = [(p, harness.proc_state(p), harness.proc_cmdline(p))
                    for p, st in kids.items() if harness.same_process(p, st)]
            self.assertEqual(left, [], "children left behind")
        finally:
            d.stop()

    def test_sigterm_exits_0_leaving_no_child(self):
        self.stop_with(signal.SIGTERM)

    def test_sigint_exits_0_leaving_no_child(self):
        self.stop_with(signal.SIGINT)


if __name__ == "__main__":
    harness.main()
