#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""PROXY protocol listeners (`listen on ... proxy-protocol`): v1 and v2
headers are required first, their source address is the client for the
rate limit, a LOCAL header keeps the socket's address, and a missing or
malformed header closes the connection with nothing written."""

import asyncio
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import unittest

import harness

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, sport=40000):
    fam = "TCP6" if ":" in src else "TCP4"
    dst = "::1" if fam == "TCP6" else "127.0.0.1"
    return ("PROXY %s %s %s %d 443\r\n" % (fam, src, dst, sport)).encode()


def v2(src=None, sport=40000, local=False):
    if local:
        return V2_SIG + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    if ":" in src:
        addrs = socket.inet_pton(socket.AF_INET6, src) + \
            socket.inet_pton(socket.AF_INET6, "::1") + \
            struct.pack("!HH", sport, 443)
        fam = 0x21
    else:
        addrs = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + \
            struct.pack("!HH", sport, 443)
        fam = 0x11
    tlv = bytes([0x04, 0x00, 0x02, 0xab, 0xcd])    # a NOOP TLV, skipped
    return V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(addrs) + len(tlv)) \
        + addrs + tlv


def upgrade(sid, path="/v1/server"):
    key = harness.ws_key()
    hdr = ("GET %s HTTP/1.1\r\nHost: relay.test\r\nConnection: Upgrade\r\n"
           "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: %s\r\nX-Pyrycode-Server: %s\r\n"
           "X-Pyrycode-Version: 1\r\nX-Pyrycode-Token: t\r\n"
           "User-Agent: test\r\n\r\n" % (path, key, sid))
    return hdr.encode()


def exchange(port, data, timeout=5):
    """Sends data on a new connection; returns everything the daemon sends
    until it closes or the status line and headers are in."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in out and time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                # closed with our bytes unread: a reset, still nothing written
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def status(resp):
    if not resp:
        return None
    return int(resp.split(b" ", 2)[1])


class Proxy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pport = harness.free_port()
        cls.d = harness.Daemon(
            "listen on 127.0.0.1 port %d proxy-protocol\n"
            "rate limit burst 2 refill 60s\nhandshake timeout 1s\n" % cls.pport)
        cls.d.start()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_v1_and_v2_carry_the_client_for_the_rate_limit(self):
        # a, its bucket (an IPv4 address, an IPv6 /64), and another address
        for name, make, a, bucket, b in (
                ("v1", v1, "203.0.113.7", "203.0.113.7/32", "203.0.113.8"),
                ("v2", v2, "2001:db8::7", "2001:db8::/64", "198.51.100.9")):
            with self.subTest(version=name):
                # two upgrades from carried address a pass, the third is 429
                for i in range(2):
                    r = exchange(self.pport, make(a) + upgrade("px-%s-%d" % (name, i)))
                    self.assertEqual(status(r), 101, r)
                mark = self.d.log_mark()
                r = exchange(self.pport, make(a) + upgrade("px-%s-x" % name))
                self.assertEqual(status(r), 429, r)
                # and the log names the carried address, not the socket's
                self.d.wait_log(r"event=rate_limited refused=1 "
                                r"endpoint=server ip=%s$" % re.escape(bucket),
                                since=mark)
                # another carried address has its own bucket
                r = exchange(self.pport, make(b) + upgrade("px-%s-y" % name))
                self.assertEqual(status(r), 101, r)

    def test_local_header_keeps_the_socket_address(self):
        r = exchange(self.pport, v2(local=True) + b"GET /healthz HTTP/1.1\r\n"
                     b"Host: x\r\n\r\n")
        self.assertEqual(status(r), 200, r)
        r = exchange(self.pport, b"PROXY UNKNOWN\r\nGET /healthz HTTP/1.1\r\n"
                     b"Host: x\r\n\r\n")
        self.assertEqual(status(r), 200, r)

    def test_missing_or_malformed_header_closes_silently(self):
        for what, data in (
                ("no header", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
                ("bad v1", b"PROXY TCP4 1.2.3 127.0.0.1 1 2\r\n"),
                ("v1 port", b"PROXY TCP4 1.2.3.4 127.0.0.1 65536 2\r\n"),
                ("v2 version", V2_SIG + b"\x11\x11\x00\x0c" + bytes(12)),
                ("v2 udp", V2_SIG + b"\x21\x12\x00\x0c" + bytes(12))):
            with self.subTest(what=what):
                self.assertEqual(exchange(self.pport, data), b"")

    def test_header_within_the_handshake_timeout(self):
        s = socket.create_connection(("127.0.0.1", self.pport), timeout=5)
        try:
            s.sendall(b"PROXY TCP4 ")
            t0 = time.monotonic()
            self.assertEqual(s.recv(100), b"")     # closed, nothing written
            self.assertLess(time.monotonic() - t0, 3.0)
        finally:
            s.close()

    def test_plain_listener_takes_no_header(self):
        r = exchange(self.d.port, v1("203.0.113.1") + b"GET /healthz HTTP/1.1\r\n"
                     b"Host: x\r\n\r\n")
        self.assertEqual(status(r), 400, r)

    def test_websocket_session_through_the_header(self):
        async def main():
            s = socket.create_connection(("127.0.0.1", self.pport))
            s.sendall(v1("192.0.2.50"))
            b = await harness._connect_ws(
                "ws://127.0.0.1:%d/v1/server" % self.pport,
                {"X-Pyrycode-Server": "px-ws", "X-Pyrycode-Version": "1",
                 "User-Agent": "t"}, None, {"sock": s})
            s2 = socket.create_connection(("127.0.0.1", self.pport))
            s2.sendall(v2("192.0.2.51"))
            p = await harness._connect_ws(
                "ws://127.0.0.1:%d/v1/client" % self.pport,
                {"X-Pyrycode-Server": "px-ws", "X-Pyrycode-Token": "t",
                 "User-Agent": "t"}, None, {"sock": s2})
            await harness.assert_exchange(b, p, "px-ws")
            await harness.close_all(b, p)
        harness.run(main())


@unittest.skipUnless(shutil.which("openssl"), "needs the openssl command")
class ProxyTls(unittest.TestCase):
    def test_tls_handshake_follows_the_header(self):
        tmp = tempfile.mkdtemp(prefix="pyrelayd-pxtls-")
        try:
            key, crt = os.path.join(tmp, "k.pem"), os.path.join(tmp, "c.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                            "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-keyout", key, "-out", crt, "-days", "1",
                            "-subj", "/CN=relay.test",
                            "-addext", "subjectAltName=DNS:relay.test"],
                           check=True, capture_output=True)
            os.chmod(key, 0o600)
            port = harness.free_port()
            conf = ("listen on 127.0.0.1 port %d tls proxy-protocol\n"
                    'tls certificate "%s" key "%s"\n' % (port, crt, key))
            with harness.Daemon(conf) as d:
                ctx = ssl.create_default_context(cafile=crt)
                raw = socket.create_connection(("127.0.0.1", port), timeout=5)
                raw.sendall(v2("198.51.100.77"))
                s = ctx.wrap_socket(raw, server_hostname="relay.test")
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay.test\r\n\r\n")
                out = b""
                while b"}" not in out:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    out += chunk
                s.close()
                self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    harness.main()
