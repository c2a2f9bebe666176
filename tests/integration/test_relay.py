#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Black-box tests of docs/protocol.md §2-§5 and §8, part 1: the HTTP surface of
/v1/server and /v1/client, server-id claims, conflicts and takeovers, phone
registration, the grace window, liveness and the close handshake.

The data path, backpressure and the flood test are in test_relay_flow.py,
which imports the helpers below.

Every daemon here runs with short timers; each test class starts one daemon
for its configuration and every test uses its own server-ids.  The rate limit
is raised because every test connects from 127.0.0.1.
"""

import asyncio
import functools
import itertools
import json
import os
import re
import select
import socket
import struct
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import harness  # noqa: E402

websockets = harness.PYTHON_WS
ConnectionClosed = websockets.exceptions.ConnectionClosed

# Every test connects from 127.0.0.1: the per-IP rate limit (docs/protocol.md §2
# step 2) must not be what a test observes.
BASE_CONF = "rate limit burst 1000 refill 100ms\n"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

R_NO_SERVER = "no server with that id"
R_CAP = "too many phones for server-id"
R_CLAIMED = "server-id already claimed"
R_HEARTBEAT = "heartbeat timeout"
R_NO_RECONNECT = "binary did not reconnect"
R_BACKLOG = "phone backlog full"
R_UNAVAILABLE = "binary unavailable"
R_BAD_JSON = "invalid JSON"
R_BAD_UTF8 = "invalid UTF-8"
R_TOO_BIG = "message too big"
R_BAD_CODE = "invalid close code"

_sid_seq = itertools.count(1)


def new_sid(tag):
    """A fresh server-id ([A-Za-z0-9._-], short so envelopes stay small)."""
    return "%s-%d-%s" % (tag, next(_sid_seq), os.urandom(2).hex())


def env(cid, frame):
    """The envelope a binary gets for a phone frame (docs/protocol.md §4)."""
    return '{"conn_id":"%s","frame":%s}' % (cid, frame)


def notice(cid, code):
    """The close notice a binary receives (docs/protocol.md §4)."""
    return '{"conn_id":"%s","close_code":%d}' % (cid, code)


def conn_id_re(sid):
    return r"client-%s-[0-9a-f]{8}" % re.escape(sid)


# --------------------------------------------------------------------------
# raw WebSocket helpers (harness.RawWS is blocking: async code runs its
# reads in a thread so that the websockets clients of the same test keep
# answering the relay's pings meanwhile)

def raw_connect(port, request, rcvbuf=None, timeout=10):
    """harness.RawWS.connect, but SO_RCVBUF can be set before connect(2)
    (a small receive window makes a phone that never reads stall the relay's
    writes quickly)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        s.sendall(request)
        deadline = time.monotonic() + timeout
        buf = b""
        while b"\r\n\r\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no response head in %gs: %r"
                                     % (timeout, buf[:300]))
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError("closed before a response head: %r"
                                     % buf[:300])
            buf += chunk
        status, headers, rest = harness.parse_head(buf)
        return harness.RawWS(s, status, headers, rest)
    except BaseException:
        s.close()
        raise


def close_payload(code, reason=b""):
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


def parse_close(payload):
    """(code, reason) of a close frame payload; (None, '') when empty."""
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8")


def raw_until_close(raw, timeout=10, answer_pings=False):
    """Read frames until the relay's close frame (bounded).  Returns
    (data_frames, code, reason, pings) where data_frames is a list of
    (fin, opcode, payload) read before it."""
    deadline = time.monotonic() + timeout
    frames, pings = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no close frame within %gs (%d frames, %d "
                                 "pings)" % (timeout, len(frames), pings))
        try:
            fin, op, payload = raw.read_frame(left)
        except (EOFError, ConnectionResetError) as e:
            raise AssertionError("connection ended without a close frame "
                                 "(%d frames, %d pings before): %r"
                                 % (len(frames), pings, e))
        except AssertionError:
            if time.monotonic() >= deadline:
                raise AssertionError("no close frame within %gs (%d frames, "
                                     "%d pings)" % (timeout, len(frames),
                                                    pings))
            raise
        if op == OP_PING:
            pings += 1
            if answer_pings:
                raw.send(harness.ws_frame(OP_PONG, payload))
            continue
        if op == OP_CLOSE:
            code, reason = parse_close(payload)
            return frames, code, reason, pings
        frames.append((fin, op, payload))


def raw_next_data(raw, timeout=10, answer_pings=True):
    """The next frame that is not a ping (pings are answered)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no data frame within %gs" % timeout)
        fin, op, payload = raw.read_frame(left)
        if op != OP_PING:
            return fin, op, payload
        if answer_pings:
            raw.send(harness.ws_frame(OP_PONG, payload))


def raw_drain(raw, timeout=10, stop_at_close=False, expect_payload=None):
    """Read everything until the relay ends the TCP connection (bounded),
    or with stop_at_close until its close frame.  Returns (closes,
    data_frames, how): closes is a list of (code, reason), how is 'eof',
    'reset' or 'close'.  expect_payload: every data frame must be a final
    text frame with exactly these bytes."""
    deadline = time.monotonic() + timeout
    closes, ndata = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("connection still open after %gs (%d data "
                                 "frames read)" % (timeout, ndata))
        try:
            fin, op, payload = raw.read_frame(left)
        except EOFError:
            return closes, ndata, "eof"
        except ConnectionResetError:
            return closes, ndata, "reset"
        except AssertionError:
            if time.monotonic() >= deadline:
                raise AssertionError("connection still open after %gs (%d "
                                     "data frames read)" % (timeout, ndata))
            raise
        if op == OP_CLOSE:
            closes.append(parse_close(payload))
            if stop_at_close:
                return closes, ndata, "close"
        elif op != OP_PING:
            ndata += 1
            if expect_payload is not None:
                assert (fin, op, payload) == (True, OP_TEXT, expect_payload), \
                    "data frame %d: fin=%r op=%r %r..." % (ndata, fin, op,
                                                           payload[:40])


def raw_wait_end(raw, timeout):
    """Seconds until the relay ends the TCP connection; frames that still
    arrive are discarded.  AssertionError if it stays open past timeout."""
    t0 = time.monotonic()
    raw_drain(raw, timeout)
    return time.monotonic() - t0


def raw_observe(raw, seconds, answer_pings=True):
    """Read for `seconds` (the period under observation), answering pings.
    Returns (pings, other_frames); fails on a close frame or the end of the
    connection."""
    end = time.monotonic() + seconds
    pings, frames = 0, []
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return pings, frames
        if not raw.buf:
            r, _, _ = select.select([raw.sock], [], [], left)
            if not r:
                return pings, frames
        fin, op, payload = raw.read_frame(5)
        if op == OP_PING:
            pings += 1
            if answer_pings:
                raw.send(harness.ws_frame(OP_PONG, payload))
        elif op == OP_CLOSE:
            raise AssertionError("relay closed the connection: %r"
                                 % (parse_close(payload),))
        else:
            frames.append((fin, op, payload))


async def in_thread(fn, *args):
    return await asyncio.to_thread(fn, *args)


# --------------------------------------------------------------------------
# per-test client bookkeeping

class Clients:
    """Opens the connections of one test and closes them at its end."""

    def __init__(self, d):
        self.d = d
        self.ws = []
        self.raws = []

    async def binary(self, sid, **kw):
        w = await harness.binary(self.d, sid, **kw)
        self.ws.append(w)
        return w

    async def phone(self, sid, **kw):
        w = await harness.phone(self.d, sid, **kw)
        self.ws.append(w)
        return w

    async def raw(self, path, sid=None, headers=None, rcvbuf=None,
                  status=101):
        req = harness.upgrade_request(self.d.port, path, headers,
                                      sid=sid or new_sid("raw"))
        r = await in_thread(raw_connect, self.d.port, req, rcvbuf)
        self.raws.append(r)
        assert r.status == status, "status %d, expected %d (%r)" % (
            r.status, status, r.headers)
        return r

    async def raw_binary(self, sid, **kw):
        return await self.raw("/v1/server", sid, **kw)

    async def raw_phone(self, sid, **kw):
        return await self.raw("/v1/client", sid, **kw)

    async def aclose(self):
        for r in self.raws:
            r.close()
        live = [w for w in self.ws if not w.closed]
        if not live:
            return
        try:
            await asyncio.wait_for(asyncio.gather(
                *(w.close() for w in live), return_exceptions=True), 3)
        except asyncio.TimeoutError:
            for w in live:
                w.transport.abort()


def atest(timeout=60):
    """Turn `async def test_x(self, c)` into a unittest method; c is a
    Clients whose connections are closed when the test ends."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(self):
            async def body():
                c = Clients(self.d)
                try:
                    await fn(self, c)
                finally:
                    await c.aclose()
            self.arun(body(), timeout)
        return wrapper
    return deco


class DaemonCase(unittest.TestCase):
    """One daemon per class, configured with BASE_CONF + CONF."""

    CONF = ""
    d = None

    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon(extra_conf=BASE_CONF + cls.CONF)
        try:
            cls.d.start()
        except BaseException:
            cls.d.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        d, cls.d = cls.d, None
        rc = d.stop()
        if rc != 0:
            raise AssertionError("pyrelayd exited %r on SIGTERM\n%s"
                                 % (rc, d.log_text()[-4000:]))

    def setUp(self):
        self.mark = self.d.log_mark()

    def arun(self, coro, timeout=60):
        try:
            return harness.run(coro, timeout)
        except BaseException:
            lines = self.d.log_lines()[self.mark:]
            sys.stderr.write("\n--- pyrelayd log during %s (last 40 of %d "
                             "lines) ---\n%s\n" % (self.id(), len(lines),
                                                   "\n".join(lines[-40:])))
            raise

    # -- assertions shared by the tests

    async def expect_msg(self, ws, expected, timeout=10):
        """The next message on ws is the text frame `expected` exactly."""
        msg = await harness.recv(ws, timeout)
        self.assertIsInstance(msg, str, "relay sent a binary frame")
        self.assertEqual(msg, expected)
        return msg

    async def expect_env(self, b, sid, frame):
        """The next message on b is the envelope of `frame` from some phone
        of sid; returns that phone's conn id."""
        msg = await harness.recv(b, 10)
        self.assertIsInstance(msg, str, "relay sent a binary frame")
        m = re.fullmatch(r'\{"conn_id":"(%s)","frame":%s\}'
                         % (conn_id_re(sid), re.escape(frame)), msg)
        self.assertTrue(m, "binary received %r, expected the envelope of %r"
                        % (msg, frame))
        return m.group(1)

    async def hello(self, b, p, sid, text='"hello"'):
        """p (websockets client or RawWS) sends text; the binary receives
        its envelope; returns p's conn id."""
        if isinstance(p, harness.RawWS):
            p.send(harness.ws_frame(OP_TEXT, text))
        else:
            await p.send(text)
        return await self.expect_env(b, sid, text)

    async def wait_log(self, regex, since, timeout=10):
        return await in_thread(self.d.wait_log, regex, timeout, since)

    async def silent_binary_and_phone(self, c, sid):
        """A raw binary for sid that reads but never answers a ping, and a
        phone whose first frame it received; returns (binary, phone, the
        phone's conn id)."""
        inc = await c.raw_binary(sid)
        p = await c.phone(sid)
        await p.send('{"m":1}')
        fin, op, payload = await in_thread(inc.read_frame, 10)
        self.assertEqual(op, OP_TEXT)
        m = re.fullmatch(r'\{"conn_id":"(%s)","frame":\{"m":1\}\}'
                         % conn_id_re(sid), payload.decode())
        self.assertTrue(m, payload)
        return inc, p, m.group(1)


MAIN_CONF = """\
phones per server 2
message size 1K
conflict probe 300ms
"""


# ==========================================================================
# docs/protocol.md §2: the HTTP surface

class HttpSurfaceTest(DaemonCase):
    CONF = MAIN_CONF

    def answer(self, path, headers=None, method="GET", version="HTTP/1.1",
               sid=None):
        """Send one upgrade request whose answer is not a 101; returns
        (status, headers) of the relay's response (it must then close)."""
        req = harness.upgrade_request(self.d.port, path, headers, method,
                                      version, sid or new_sid("h"))
        resp = harness.raw_request(self.d.port, req, timeout=10)
        status, h, _ = harness.parse_head(resp)
        return status, h

    def assert_upgrades(self, path, headers=None, sid=None):
        """Control: the same request with the header in place gets a 101."""
        req = harness.upgrade_request(self.d.port, path, headers,
                                      sid=sid or new_sid("h"))
        r = raw_connect(self.d.port, req)
        try:
            self.assertEqual(r.status, 101, r.headers)
        finally:
            r.close()

    def check_gate(self, path, name):
        self.assert_upgrades(path)
        for value in (None, "", "  "):
            with self.subTest(header=name, value=value):
                status, _ = self.answer(path, {name: value})
                self.assertEqual(status, 400)

    # -- header gate (step 4), one test per header per endpoint

    def test_server_without_server_id_400(self):
        self.check_gate("/v1/server", "X-Pyrycode-Server")

    def test_server_without_version_400(self):
        self.check_gate("/v1/server", "X-Pyrycode-Version")

    def test_server_without_user_agent_400(self):
        self.check_gate("/v1/server", "User-Agent")

    def test_client_without_server_id_400(self):
        self.check_gate("/v1/client", "X-Pyrycode-Server")

    def test_client_without_token_400(self):
        self.check_gate("/v1/client", "X-Pyrycode-Token")

    def test_client_without_user_agent_400(self):
        self.check_gate("/v1/client", "User-Agent")

    def test_client_device_name_optional(self):
        self.assert_upgrades("/v1/client", {"X-Pyrycode-Device-Name": None})
        self.assert_upgrades("/v1/client",
                             {"X-Pyrycode-Device-Name": "Pixel 8"})

    def test_header_gate_comes_before_handshake_checks(self):
        # step 4 before step 5: a request failing both gets the 400
        status, _ = self.answer("/v1/server", {"X-Pyrycode-Server": None,
                                               "Upgrade": None,
                                               "Connection": None})
        self.assertEqual(status, 400)
        status, _ = self.answer("/v1/client", {"X-Pyrycode-Token": None},
                                method="POST")
        self.assertEqual(status, 400)

    def test_server_id_bad_charset_400(self):
        bad = ["a/b", "a b", "a$b", "a:b", "a+b", "a%2Fb", "a,b", "a;b",
               "a*b", "\u00fc".encode().decode("latin-1"), "a\tb"]
        for path in ("/v1/server", "/v1/client"):
            for sid in bad:
                with self.subTest(path=path, sid=sid):
                    status, _ = self.answer(path, sid=sid)
                    self.assertEqual(status, 400)
            # every allowed character class at once upgrades
            self.assert_upgrades(path, sid="Az09._-" + new_sid("c"))

    def test_server_id_65_bytes_400(self):
        for path in ("/v1/server", "/v1/client"):
            with self.subTest(path=path):
                status, _ = self.answer(path, sid="a" * 65)
                self.assertEqual(status, 400)
                # 64 bytes is the longest valid id
                sid64 = (new_sid("l") + "x" * 64)[:64]
                self.assert_upgrades(path, sid=sid64)

    # -- handshake (step 5)

    def test_not_an_upgrade_426(self):
        cases = [
            ({"Upgrade": None, "Connection": None}, "HTTP/1.1"),
            ({"Connection": "keep-alive"}, "HTTP/1.1"),
            ({"Upgrade": None}, "HTTP/1.1"),
            ({"Upgrade": "h2c"}, "HTTP/1.1"),
            ({}, "HTTP/1.0"),
        ]
        for path in ("/v1/server", "/v1/client"):
            for headers, version in cases:
                with self.subTest(path=path, headers=headers,
                                  version=version):
                    status, h = self.answer(path, headers, version=version)
                    self.assertEqual(status, 426)
                    self.assertEqual(h.get("upgrade", "").lower(),
                                     "websocket")
                    self.assertIn("upgrade", [t.strip().lower() for t in
                                              h.get("connection",
                                                    "").split(",")])

    def test_connection_token_list_and_case_accepted(self):
        self.assert_upgrades("/v1/server", {"Connection": "keep-alive, Upgrade",
                                            "Upgrade": "WebSocket"})

    def test_method_not_get_405(self):
        for path in ("/v1/server", "/v1/client"):
            for method in ("POST", "PUT", "HEAD"):
                with self.subTest(path=path, method=method):
                    status, _ = self.answer(path, method=method)
                    self.assertEqual(status, 405)

    def test_version_not_13_400_with_version_header(self):
        for path in ("/v1/server", "/v1/client"):
            for version in ("12", "8", None):
                with self.subTest(path=path, version=version):
                    status, h = self.answer(
                        path, {"Sec-WebSocket-Version": version})
                    self.assertEqual(status, 400)
                    self.assertEqual(h.get("sec-websocket-version"), "13")

    def test_two_keys_400(self):
        for path in ("/v1/server", "/v1/client"):
            with self.subTest(path=path):
                status, _ = self.answer(path, {"Sec-WebSocket-Key": [
                    harness.ws_key(), harness.ws_key()]})
                self.assertEqual(status, 400)

    def test_bad_or_missing_key_400(self):
        import base64
        keys = [None, "", "not base64!", base64.b64encode(b"x" * 15).decode(),
                base64.b64encode(b"x" * 17).decode()]
        for key in keys:
            with self.subTest(key=key):
                status, _ = self.answer("/v1/server",
                                        {"Sec-WebSocket-Key": key})
                self.assertEqual(status, 400)

    def check_101(self, path, sid):
        key = harness.ws_key()
        req = harness.upgrade_request(self.d.port, path, {
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Protocol": "chat, pyry",
            "Sec-WebSocket-Extensions":
                "permessage-deflate; client_max_window_bits, x-webkit-deflate-frame",
        }, sid=sid)
        r = raw_connect(self.d.port, req)
        self.assertEqual(r.status, 101, r.headers)
        self.assertEqual(r.headers.get("sec-websocket-accept"),
                         harness.ws_accept(key))
        self.assertNotIn("sec-websocket-protocol", r.headers)
        self.assertNotIn("sec-websocket-extensions", r.headers)
        self.assertEqual(r.headers.get("upgrade", "").lower(), "websocket")
        self.assertIn("upgrade", r.headers.get("connection", "").lower())
        return r

    def test_101_accept_without_subprotocol_or_extension(self):
        sid = new_sid("ok")
        b = self.check_101("/v1/server", sid)
        try:
            p = self.check_101("/v1/client", sid)
            try:
                # no extension in force: frames carry no RSV bits and the
                # phone's plain JSON arrives as is
                p.send(harness.ws_frame(OP_TEXT, '{"x":1}'))
                fin, op, payload = b.read_frame(10)
                self.assertTrue(fin)
                self.assertEqual(op, OP_TEXT)
                self.assertRegex(payload.decode(), r'^\{"conn_id":"%s",'
                                 r'"frame":\{"x":1\}\}$' % conn_id_re(sid))
            finally:
                p.close()
        finally:
            b.close()

    def test_other_paths_404(self):
        for path in ("/", "/v1", "/v1/server/", "/v1/serverx", "/V1/server",
                     "/v1/clients", "/metrics", "/v2/client"):
            with self.subTest(path=path):
                status, _ = self.answer(path)
                self.assertEqual(status, 404)

    def test_query_string_ignored(self):
        self.assert_upgrades("/v1/server?x=1&y=%2F")
        status, _ = self.answer("/v1/server?x=1", {"User-Agent": None})
        self.assertEqual(status, 400)


# ==========================================================================
# docs/protocol.md §3: claim, conflict, takeover

class ClaimTest(DaemonCase):
    CONF = MAIN_CONF

    @atest()
    async def test_claim_free_server_id(self, c):
        sid = new_sid("cl")
        b = await c.binary(sid)
        p = await c.phone(sid)
        await harness.assert_exchange(b, p, sid)

    @atest()
    async def test_conflict_live_incumbent_4409(self, c):
        sid = new_sid("cf")
        inc = await c.binary(sid)
        p = await c.phone(sid)
        cid = await self.hello(inc, p, sid)
        # websockets answers the relay's probe ping on its own
        newcomer = await c.binary(sid)  # the 101 arrived
        try:
            # the loser's envelopes go nowhere
            await newcomer.send(env(cid, '"from the loser"'))
        except ConnectionClosed:
            pass
        # what the phone says during the probe reaches the incumbent
        await p.send('{"during":"probe"}')
        await self.expect_msg(inc, env(cid, '{"during":"probe"}'))
        got = await harness.expect_close(newcomer, 4409, R_CLAIMED, timeout=5)
        self.assertEqual(got, [])
        # the incumbent and its phone are unaffected
        await p.send('{"after":"conflict"}')
        await self.expect_msg(inc, env(cid, '{"after":"conflict"}'))
        await inc.send(json.dumps({"conn_id": cid, "frame": "still here"}))
        await self.expect_msg(p, '"still here"')
        self.assertFalse(inc.closed or p.closed)

    @atest()
    async def test_takeover_silent_incumbent(self, c):
        sid = new_sid("to")
        inc, p, cid = await self.silent_binary_and_phone(c, sid)

        newcomer = await c.binary(sid)
        # the binary back on a new connection answers at once: held during
        # the probe, delivered in order when it takes over; and what the
        # phone says meanwhile waits for whoever holds the id then, here
        # the newcomer, not the silent incumbent
        for i in range(3):
            await newcomer.send(env(cid, '"early %d"' % i))
            await p.send('{"during":%d}' % i)
        frames, code, reason, pings = await in_thread(raw_until_close, inc, 5)
        self.assertEqual((code, reason), (1011, R_HEARTBEAT))
        self.assertGreaterEqual(pings, 1, "the relay never probed")
        self.assertEqual(frames, [])
        for i in range(3):
            await self.expect_msg(p, '"early %d"' % i)
        for i in range(3):
            await self.expect_msg(newcomer, env(cid, '{"during":%d}' % i))
        # the newcomer owns the server-id; the phone stayed attached
        await p.send('{"m":2}')
        await self.expect_msg(newcomer, env(cid, '{"m":2}'))
        await newcomer.send(json.dumps({"conn_id": cid, "frame": {"to": 2}}))
        await self.expect_msg(p, '{"to": 2}')
        self.assertFalse(p.closed or newcomer.closed)

    @atest()
    async def test_newcomer_heard_once_it_owns(self, c):
        sid = new_sid("tl")
        inc, p, cid = await self.silent_binary_and_phone(c, sid)
        newcomer = await c.binary(sid)
        await newcomer.send(env(cid, '"said while waiting"'))
        # its pong comes after the relay has read (and held) the message
        await asyncio.wait_for(await newcomer.ping(), 5)
        # the incumbent leaves, or the probe (300 ms) ends: it owns the id
        inc.close()
        await self.expect_msg(p, '"said while waiting"')
        await p.send('"to the new one"')
        await self.expect_msg(newcomer, env(cid, '"to the new one"'))

    @atest()
    async def test_takeover_incumbent_that_never_reads(self, c):
        sid = new_sid("tn")
        inc = await c.raw_binary(sid)  # never reads after the 101
        p = await c.phone(sid)
        mark = self.d.log_mark()
        newcomer = await c.binary(sid)
        # no client-visible event marks the end of the probe here: the log's
        # takeover line does
        await self.wait_log(r"\bserver_id=%s\b.*takeover|takeover.*"
                            r"\bserver_id=%s\b" % (re.escape(sid),
                                                   re.escape(sid)), mark, 10)
        await p.send('"after takeover"')
        cid = await self.expect_env(newcomer, sid, '"after takeover"')
        await newcomer.send(env(cid, '"back"'))
        await self.expect_msg(p, '"back"')
        self.assertFalse(p.closed or newcomer.closed)
        inc.close()


# ==========================================================================
# docs/protocol.md §3 "Phone registration", §4 conn ids

class RegistrationTest(DaemonCase):
    CONF = MAIN_CONF  # phones per server 2

    @atest()
    async def test_no_server_4404(self, c):
        p = await c.phone(new_sid("none"))
        got = await harness.expect_close(p, 4404, R_NO_SERVER, timeout=5)
        self.assertEqual(got, [])

    @atest()
    async def test_third_phone_4429(self, c):
        sid = new_sid("cap")
        b = await c.binary(sid)
        p1 = await c.phone(sid)
        c1 = await self.hello(b, p1, sid, '"p1"')
        p2 = await c.phone(sid)
        c2 = await self.hello(b, p2, sid, '"p2"')
        p3 = await c.phone(sid)
        got = await harness.expect_close(p3, 4429, R_CAP, timeout=5)
        self.assertEqual(got, [])
        # the registered phones are unaffected and the binary heard nothing
        await p1.send('"p1 again"')
        await self.expect_msg(b, env(c1, '"p1 again"'))
        await p2.send('"p2 again"')
        await self.expect_msg(b, env(c2, '"p2 again"'))

    @atest()
    async def test_phone_registers_after_one_leaves(self, c):
        sid = new_sid("rl")
        b = await c.binary(sid)
        p1 = await c.phone(sid)
        c1 = await self.hello(b, p1, sid, '"p1"')
        p2 = await c.phone(sid)
        await self.hello(b, p2, sid, '"p2"')
        await p1.close()
        await self.expect_msg(b, notice(c1, 1000))
        p3 = await c.phone(sid)
        c3 = await self.hello(b, p3, sid, '"p3"')
        self.assertFalse(p3.closed)
        await b.send(env(c3, '"welcome"'))
        await self.expect_msg(p3, '"welcome"')

    @atest()
    async def test_conn_ids_format_and_distinct(self, c):
        sid = new_sid("Id.x_")
        b = await c.binary(sid)
        seen = []
        for i in range(3):
            p1 = await c.phone(sid)
            p2 = await c.phone(sid)
            c1 = await self.hello(b, p1, sid, '"a%d"' % i)
            c2 = await self.hello(b, p2, sid, '"b%d"' % i)
            for cid in (c1, c2):
                self.assertRegex(cid, r"^client-%s-[0-9a-f]{8}$"
                                 % re.escape(sid))
            self.assertNotEqual(c1, c2)
            seen += [c1, c2]
            await p1.close()
            await self.expect_msg(b, notice(c1, 1000))
            await p2.close()
            await self.expect_msg(b, notice(c2, 1000))
        # from a CSPRNG: six ids of 32 bits do not repeat
        self.assertEqual(len(set(seen)), len(seen), seen)

    @atest()
    async def test_binary_not_told_of_phone_connect(self, c):
        sid = new_sid("nt")
        b = await c.binary(sid)
        p1 = await c.phone(sid)
        p2 = await c.phone(sid)
        # had the relay announced p1 or p2, that would be the first message
        await p2.send('"first"')
        await self.expect_env(b, sid, '"first"')
        await p1.send('"second"')
        await self.expect_env(b, sid, '"second"')


# ==========================================================================
# docs/protocol.md §3 grace, reclaim, expiry

GRACE_S = 1.5
GRACE_CONF = """\
grace 1500ms
grace queue 1K
phones per server 2
"""


class GraceTest(DaemonCase):
    CONF = GRACE_CONF

    async def sync(self, p):
        """Returns when the relay has processed everything p sent before:
        it answers p's ping only after reading the frames ahead of it."""
        await asyncio.wait_for(await p.ping(), 5)

    @atest()
    async def test_probe_queue_past_its_bound_pauses_phones(self, c):
        # during a conflict probe (10 s here) the phones' frames wait for
        # whoever holds the server-id when it ends; past the grace queue's
        # size (1K) the relay stops reading the phones instead of closing
        # them, and nothing is lost
        sid = new_sid("pq")
        inc, p, cid = await self.silent_binary_and_phone(c, sid)
        newcomer = await c.binary(sid)
        def p2b():
            return self.d.metrics()[harness.FRAMES_P2B]
        before = await in_thread(p2b)
        frames = ['{"n":%d,"pad":"%s"}' % (i, "x" * 300) for i in range(8)]
        for f in frames:
            await p.send(f)
        # some are queued: the relay read them during the probe
        await in_thread(harness.poll_until,
                        lambda: p2b() >= before + 2, 10,
                        "frames queued during the probe")
        # the incumbent leaves: the newcomer holds the id and gets them all
        inc.close()
        for f in frames:
            await self.expect_msg(newcomer, env(cid, f))
        self.assertFalse(p.closed)
        await p.send('"after"')
        await self.expect_msg(newcomer, env(cid, '"after"'))

    @atest()
    async def test_reclaim_delivers_grace_queue_in_order(self, c):
        sid = new_sid("gr")
        b1 = await c.binary(sid)
        pa = await c.phone(sid)
        ca = await self.hello(b1, pa, sid, '"A"')
        pb = await c.phone(sid)
        cb = await self.hello(b1, pb, sid, '"B"')
        t0 = time.monotonic()
        await b1.close()                     # grace starts
        await pa.send('{ "a" : 1 }')
        await pa.send('"a 2"')
        await self.sync(pa)
        await pb.send('[1, 2]')
        await pb.close(4001)                 # leaves during the grace
        self.assertEqual(pb.close_code, 4001)
        await pa.send('3')
        await self.sync(pa)
        pc = await c.phone(sid)              # registers during the grace
        await pc.send('"c"')
        await self.sync(pc)
        b2 = await c.binary(sid)             # reclaim: no 4409
        self.assertLess(time.monotonic() - t0, GRACE_S,
                        "test too slow for the grace window")
        await self.expect_msg(b2, env(ca, '{"a":1}'))
        await self.expect_msg(b2, env(ca, '"a 2"'))
        await self.expect_msg(b2, env(cb, '[1,2]'))
        await self.expect_msg(b2, notice(cb, 4001))
        await self.expect_msg(b2, env(ca, '3'))
        cc = await self.expect_env(b2, sid, '"c"')
        self.assertNotIn(cc, (ca, cb))
        # then live traffic, both ways
        await pa.send('"live"')
        await self.expect_msg(b2, env(ca, '"live"'))
        await b2.send(env(ca, '"to A"'))
        await self.expect_msg(pa, '"to A"')   # nothing reached A meanwhile
        await b2.send(env(cc, '"to C"'))
        await self.expect_msg(pc, '"to C"')
        self.assertFalse(pa.closed or pc.closed or b2.closed)

    @atest()
    async def test_grace_phones_count_against_cap(self, c):
        sid = new_sid("gc")
        b1 = await c.binary(sid)
        pa = await c.phone(sid)
        ca = await self.hello(b1, pa, sid, '"A"')
        await b1.close()
        pb = await c.phone(sid)              # no 4404 during the grace
        await pb.send('"from B"')
        await self.sync(pb)
        pc = await c.phone(sid)
        await harness.expect_close(pc, 4429, R_CAP, timeout=5)
        b2 = await c.binary(sid)
        cb = await self.expect_env(b2, sid, '"from B"')
        self.assertNotEqual(cb, ca)
        await pa.send('"A live"')
        await self.expect_msg(b2, env(ca, '"A live"'))

    @atest()
    async def test_grace_after_binary_tcp_drop(self, c):
        sid = new_sid("gd")
        b1 = await c.binary(sid)
        pa = await c.phone(sid)
        ca = await self.hello(b1, pa, sid, '"A"')
        mark = self.d.log_mark()
        b1.transport.abort()                 # "for any reason"
        # frames sent before the relay saw the reset would go to the dead
        # binary; its log line says the server-id is now held
        await self.wait_log(r"\bevent=server_released server_id=%s\b"
                            % re.escape(sid), mark, 5)
        await pa.send('"queued"')
        await self.sync(pa)
        b2 = await c.binary(sid)
        await self.expect_msg(b2, env(ca, '"queued"'))
        await b2.send(env(ca, '"back"'))
        await self.expect_msg(pa, '"back"')

    @atest()
    async def test_grace_queue_overflow_1013(self, c):
        sid = new_sid("gq")
        b1 = await c.binary(sid)
        pa = await c.phone(sid)
        ca = await self.hello(b1, pa, sid, '"A"')
        pb = await c.phone(sid)
        cb = await self.hello(b1, pb, sid, '"B"')
        small = ['"%d%s"' % (i, "x" * 199) for i in range(3)]
        big = '"%s"' % ("y" * 400)
        queued = sum(len(env(ca, f)) for f in small)
        # the queue is 1K of envelope bytes: the three fit, the fourth not
        self.assertLess(queued, 1024 - 150)
        self.assertGreater(queued + len(env(ca, big)), 1024 + 150)
        await b1.close()
        for f in small:
            await pa.send(f)
        await pa.send(big)
        got = await harness.expect_close(pa, 1013, R_UNAVAILABLE, timeout=5)
        self.assertEqual(got, [])
        self.assertFalse(pb.closed)
        b2 = await c.binary(sid)
        for f in small:
            await self.expect_msg(b2, env(ca, f))
        await self.expect_msg(b2, notice(ca, 1001))
        await pb.send('"B after"')
        await self.expect_msg(b2, env(cb, '"B after"'))

    @atest()
    async def test_grace_expiry(self, c):
        sid = new_sid("gx")
        b1 = await c.binary(sid)
        pa = await c.phone(sid)
        await self.hello(b1, pa, sid, '"A"')
        pb = await c.phone(sid)
        await self.hello(b1, pb, sid, '"B"')
        t0 = time.monotonic()
        await b1.close()
        await pa.send('"stale"')             # queued, then lost with the grace
        got_a = await harness.expect_close(pa, 1011, R_NO_RECONNECT,
                                           timeout=GRACE_S + 4)
        got_b = await harness.expect_close(pb, 1011, R_NO_RECONNECT,
                                           timeout=2)
        elapsed = time.monotonic() - t0
        self.assertEqual((got_a, got_b), ([], []))
        # held for the grace (1.5 s), not dropped at once
        self.assertGreaterEqual(elapsed, GRACE_S - 0.3)
        # the server-id is free: phones get 4404 ...
        p = await c.phone(sid)
        await harness.expect_close(p, 4404, R_NO_SERVER, timeout=5)
        # ... and a binary claims it fresh, with nothing from before
        b2 = await c.binary(sid)
        pc = await c.phone(sid)
        await pc.send('"fresh"')
        await self.expect_env(b2, sid, '"fresh"')
        self.assertFalse(b2.closed)


# ==========================================================================
# docs/protocol.md §5 liveness

HB_PERIOD = 0.3
HB_CONF = "heartbeat 300ms timeout 300ms\n"


class LivenessTest(DaemonCase):
    CONF = HB_CONF

    @atest()
    async def test_websockets_clients_survive_heartbeats(self, c):
        sid = new_sid("hb")
        b = await c.binary(sid)
        p = await c.phone(sid)
        await harness.assert_exchange(b, p, sid, 1)
        # the subject: more than three heartbeat periods pass while the
        # clients answer the relay's pings (websockets does that by itself)
        await asyncio.sleep(4 * HB_PERIOD)
        self.assertFalse(b.closed or p.closed,
                         (b.close_code, b.close_reason, p.close_code,
                          p.close_reason))
        await harness.assert_exchange(b, p, sid, 2)

    @atest()
    async def test_relay_pings_and_pong_keeps_raw_client(self, c):
        sid = new_sid("hp")
        raw = await c.raw_binary(sid)
        pings, frames = await in_thread(raw_observe, raw, 4 * HB_PERIOD)
        self.assertGreaterEqual(pings, 3)
        self.assertEqual(frames, [])
        p = await c.phone(sid)
        await p.send('"alive"')
        fin, op, payload = await in_thread(raw_next_data, raw, 5)
        self.assertEqual(op, OP_TEXT)
        self.assertRegex(payload.decode(), r'^\{"conn_id":"%s","frame":'
                         r'"alive"\}$' % conn_id_re(sid))

    @atest()
    async def test_silent_binary_closed_heartbeat_timeout(self, c):
        sid = new_sid("hs")
        raw = await c.raw_binary(sid)
        t0 = time.monotonic()
        frames, code, reason, pings = await in_thread(raw_until_close, raw, 5)
        self.assertEqual((code, reason), (1011, R_HEARTBEAT))
        self.assertGreaterEqual(pings, 1)
        self.assertEqual(frames, [])
        self.assertLess(time.monotonic() - t0, 3)

    @atest()
    async def test_silent_phone_closed_heartbeat_timeout(self, c):
        sid = new_sid("hq")
        b = await c.binary(sid)
        raw = await c.raw_phone(sid)
        cid = await self.hello(b, raw, sid)
        frames, code, reason, pings = await in_thread(raw_until_close, raw, 5)
        self.assertEqual((code, reason), (1011, R_HEARTBEAT))
        self.assertGreaterEqual(pings, 1)
        self.assertEqual(frames, [])
        await self.expect_msg(b, notice(cid, 1001))
        self.assertFalse(b.closed)


# ==========================================================================
# docs/protocol.md §5: pongs and the close handshake

class CloseHandshakeTest(DaemonCase):
    CONF = MAIN_CONF

    @atest()
    async def test_relay_answers_pings(self, c):
        sid = new_sid("pg")
        raw = await c.raw_binary(sid)
        for payload in (b"", b"ping-1", bytes(range(125))):
            raw.send(harness.ws_frame(OP_PING, payload))
            fin, op, got = await in_thread(raw.read_frame, 5)
            self.assertEqual((fin, op, got), (True, OP_PONG, payload))
        # and websockets' own ping is answered (matched by payload)
        b = await c.binary(new_sid("pg"))
        await asyncio.wait_for(await b.ping(b"abcd"), 5)

    @atest()
    async def test_client_close_echoed_then_connection_ends(self, c):
        sid = new_sid("ch")
        b = await c.binary(sid)
        p = await c.raw_phone(sid)
        cid = await self.hello(b, p, sid)
        p.send(harness.ws_frame(OP_CLOSE, close_payload(1000, "bye")))
        frames, code, reason, _ = await in_thread(raw_until_close, p, 5)
        self.assertEqual((frames, code), ([], 1000))
        await in_thread(raw_wait_end, p, 5)
        p.close()
        await self.expect_msg(b, notice(cid, 1000))
        # the binary's own close handshake
        raw = await c.raw_binary(new_sid("ch"))
        raw.send(harness.ws_frame(OP_CLOSE, close_payload(1000)))
        frames, code, reason, _ = await in_thread(raw_until_close, raw, 5)
        self.assertEqual((frames, code), ([], 1000))
        await in_thread(raw_wait_end, raw, 5)
        # websockets agrees it was a clean close
        w = await c.binary(new_sid("ch"))
        await asyncio.wait_for(w.close(1000), 6)
        self.assertEqual(w.close_code, 1000)

    @atest()
    async def test_relay_drops_tcp_when_peer_never_closes(self, c):
        # after its close frame the relay waits at most 5 s for the peer's
        raw = await c.raw_phone(new_sid("none"))
        frames, code, reason, _ = await in_thread(raw_until_close, raw, 5)
        self.assertEqual((frames, code, reason), ([], 4404, R_NO_SERVER))
        took = await in_thread(raw_wait_end, raw, 5 + 3)
        self.assertLessEqual(took, 5 + 3)


if __name__ == "__main__":
    harness.main()
