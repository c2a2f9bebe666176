#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Interoperability (docs/protocol.md §4): a phone and a binary written with a
different WebSocket stack than the other tests (Debian's python3-autobahn,
its asyncio client) exchange 10,000 messages each way through pyrelayd, and
none is lost, duplicated, reordered or altered.

Phone -> binary: 10,000 JSON texts with insignificant whitespace (inside and
around the value), escapes that the relay keeps as written, raw non-ASCII
(multi-byte and astral), nested values, top-level non-objects, some sent as
binary messages and some fragmented (fragment boundaries inside UTF-8
sequences); the binary must receive exactly
{"conn_id":"client-<sid>-<8hex>","frame":<the text without whitespace>}, in
order, byte for byte, in single unfragmented text frames.

Binary -> phone: 10,000 envelopes (keys in either order, unknown keys,
"close_code":0, whitespace, some binary or fragmented); the phone must
receive each frame value's exact bytes, in order.

Sends are windowed (at most WINDOW unacknowledged per direction), the whole
exchange is bounded by TIMEOUT seconds, and the rate of each direction is
printed on stderr.  Exits 77 (skip) when python3-autobahn is missing.
Set PYRELAYD_TEST_SEED to replay a run's inputs.
"""

import asyncio
import os
import random
import re
import sys
import time
import unittest

import harness

try:
    import autobahn
    from autobahn.asyncio.websocket import (WebSocketClientFactory,
                                            WebSocketClientProtocol)
except ImportError as e:
    print("SKIP: python3-autobahn is not importable (%s); "
          "apt-get install python3-autobahn" % e, file=sys.stderr)
    sys.exit(harness.SKIP)

N = 10000        # messages per direction
WINDOW = 200     # sent but not yet received, per direction
TIMEOUT = 120    # seconds for the whole exchange
UA = "pyrelayd-interop/1 AutobahnPython/%s" % autobahn.__version__

# --------------------------------------------------------------------------
# JSON texts as token lists: the compact form is the tokens joined with
# nothing, an input is the tokens joined with random insignificant
# whitespace.  Strings and numbers are tokens written the way the relay must
# keep them (escapes and number spellings as written).

WS = [" ", "\t", "\n", "\r", "\r\n", "  ", " \t\n\r "]

STRING_PIECES = [
    "plain", "a b  c", " ", "{[,:]}", " , ", "é", "ß", "中文字",
    "\U0001F600", "\U00010348", "\u2028\u2029", "\uffff", "<tag a='1'>&amp;",
    "\x7f", "Ω≈ç√", "עברית", "\u0301",
    '\\"', "\\\\", "\\/", "\\b\\f\\n\\r\\t", "\\u00e9", "\\u00E9",
    "\\ud83d\\ude00", "\\u0000", "\\u003c\\u003E\\u0026", '\\" } ',
    "\\\\\\\"", "\\u2028",
]

NUMBERS = [
    "0", "-0", "7", "-45", "3.14", "1e5", "1E+5", "-2.5e-3", "0.0",
    "12345678901234567890123", "1.0000000000000001", "-0.0e0", "100",
]

PAD_CHARS = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
             "   é中\U0001F680<>&")


def ws(rng):
    return "" if rng.random() < 0.5 else rng.choice(WS)


def string_token(rng, maxpieces=4):
    """A JSON string token: pieces of raw text and escapes, possibly
    ending with an escaped backslash."""
    return '"%s"' % "".join(rng.choice(STRING_PIECES)
                            for _ in range(rng.randint(0, maxpieces)))


def pad_token(rng, n):
    return '"%s"' % "".join(rng.choice(PAD_CHARS) for _ in range(n))


def value_tokens(rng, out, depth=0):
    r = rng.random()
    if depth >= 3 or r < 0.45:
        r2 = rng.random()
        if r2 < 0.45:
            out.append(string_token(rng))
        elif r2 < 0.85:
            out.append(rng.choice(NUMBERS))
        else:
            out.append(rng.choice(["true", "false", "null"]))
    elif r < 0.75:
        out.append("{")
        for k in range(rng.randint(0, 4)):
            if k:
                out.append(",")
            out.append(string_token(rng, 2))
            out.append(":")
            value_tokens(rng, out, depth + 1)
        out.append("}")
    else:
        out.append("[")
        for k in range(rng.randint(0, 4)):
            if k:
                out.append(",")
            value_tokens(rng, out, depth + 1)
        out.append("]")
    return out


def message_tokens(rng, i, key, literals=("true", "false", "null")):
    """The tokens of message i: mostly {"<key>":i,"pad":"...","v":...},
    every 250th a top-level array, string, number or literal."""
    k = i % 250
    if k == 7:
        return ["[", str(i), ","] + value_tokens(rng, []) + ["]"]
    if k == 8:
        return ['"%s-%d \\"quoted\\" é"' % (key, i)]
    if k == 9:
        return ["%d.5e-3" % i]
    if k == 10:
        return [rng.choice(literals)]
    if i % 1000 == 500:
        n = rng.randint(70000, 100000)       # 64-bit length on the wire
    elif i % 100 == 50:
        n = rng.randint(200, 20000)          # 16-bit length
    else:
        n = rng.randint(0, 300)
    toks = ["{", '"%s"' % key, ":", str(i), ",", '"pad"', ":",
            pad_token(rng, n)]
    if rng.random() < 0.7:
        toks += [",", '"v"', ":"] + value_tokens(rng, [])
    return toks + ["}"]


def spaced(rng, toks):
    """The tokens joined with random insignificant whitespace between them
    (none before the first or after the last)."""
    parts = [toks[0]]
    for t in toks[1:]:
        parts.append(ws(rng))
        parts.append(t)
    return "".join(parts)


def send_mode(rng, i, data):
    """(isBinary, fragmentSize or None) for message i."""
    is_binary = i % 13 == 5
    frag = None
    if i % 17 == 3 and len(data) > 1:
        frag = max(1, len(data) // rng.randint(2, 7))
    return is_binary, frag


def phone_inputs(rng):
    """[(payload bytes, isBinary, fragmentSize, compact frame bytes)]."""
    out = []
    for i in range(N):
        toks = message_tokens(rng, i, "seq")
        text = ws(rng) + spaced(rng, toks) + ws(rng)
        data = text.encode()
        out.append((data,) + send_mode(rng, i, data) +
                   ("".join(toks).encode(),))
    return out


def binary_inputs(rng, cid):
    """[(envelope bytes, isBinary, fragmentSize, frame bytes)]: the phone
    must receive the frame value's exact bytes, its inner whitespace
    included.  A top-level null frame is "no frame" (the envelope is
    dropped, as by the Go relay), so none is sent."""
    out = []
    for i in range(N):
        frame = spaced(rng, message_tokens(rng, i, "back", ("true", "false")))
        members = [('"conn_id"', '"%s"' % cid), ('"frame"', frame)]
        if rng.random() < 0.2:
            members.append(('"x-note"', spaced(rng, value_tokens(rng, []))))
        if rng.random() < 0.1:
            members.append(('"close_code"', "0"))
        rng.shuffle(members)
        body = ("," + ws(rng)).join(
            "%s%s:%s%s%s" % (k, ws(rng), ws(rng), v, ws(rng))
            for k, v in members)
        env = "%s{%s%s}%s" % (ws(rng), ws(rng), body, ws(rng))
        data = env.encode()
        out.append((data,) + send_mode(rng, i, data) + (frame.encode(),))
    return out


# --------------------------------------------------------------------------
# autobahn clients

class Failed(Exception):
    pass


class Peer(WebSocketClientProtocol):
    """One side.  Incoming messages go to self.on_message (set by the
    test); every relay message must be a single unfragmented text frame."""

    name = "?"
    on_message = None

    def onConnect(self, response):
        self.response = response

    def onOpen(self):
        self.frames = 0
        self.closed = self.factory.loop.create_future()
        self.factory.opened.set_result(self)

    def onMessageBegin(self, isBinary):
        super().onMessageBegin(isBinary)
        self.frames = 0

    def onMessageFrameBegin(self, length):
        super().onMessageFrameBegin(length)
        self.frames += 1

    def onMessage(self, payload, isBinary):
        if isBinary or self.frames != 1:
            self.factory.run.fail(
                "%s received a %s message in %d frame(s); the relay sends "
                "single unfragmented text frames"
                % (self.name, "binary" if isBinary else "text", self.frames))
            return
        if self.on_message is None:
            self.factory.run.fail("%s: unexpected message %r"
                                  % (self.name, payload[:200]))
            return
        self.on_message(payload)

    def onClose(self, wasClean, code, reason):
        if not self.factory.opened.done():
            self.factory.opened.set_exception(Failed(
                "%s: handshake failed (%s %r)" % (self.name, code, reason)))
            return
        if not self.closed.done():
            self.closed.set_result((code, reason))
        if not self.factory.run.closing:
            self.factory.run.fail("%s connection closed: %s %r (clean=%s)"
                                  % (self.name, code, reason, wasClean))


class Run:
    """Shared failure state: the first failure wakes every waiter."""

    def __init__(self):
        self.error = None
        self.closing = False
        self.wake = asyncio.Event()
        self.deadline = time.monotonic() + TIMEOUT

    def fail(self, msg):
        if self.error is None:
            self.error = msg
        self.wake.set()

    def check(self):
        if self.error is not None:
            raise AssertionError(self.error)

    async def wait(self, event, what):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out (%ds overall) waiting for %s"
                                 % (TIMEOUT, what))
        w = asyncio.ensure_future(self.wake.wait())
        e = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait([w, e], timeout=left,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            w.cancel()
            e.cancel()
        self.check()
        if not event.is_set():
            raise AssertionError("timed out (%ds overall) waiting for %s"
                                 % (TIMEOUT, what))


async def connect(run, d, path, name, headers):
    loop = asyncio.get_running_loop()
    f = WebSocketClientFactory(d.url(path), useragent=UA, headers=headers,
                               loop=loop)
    f.setProtocolOptions(openHandshakeTimeout=10, closeHandshakeTimeout=5,
                         autoPingInterval=0, maxMessagePayloadSize=0,
                         maxFramePayloadSize=0)
    f.protocol = type(name, (Peer,), {"name": name})
    f.run = run
    f.opened = loop.create_future()
    await asyncio.wait_for(loop.create_connection(f, "127.0.0.1", d.port),
                           10)
    p = await asyncio.wait_for(f.opened, 15)
    assert p.response.extensions == [], p.response.extensions
    assert not p.response.protocol, p.response.protocol
    return p


class Stream:
    """Checks one direction: the i-th message must equal expected[i]."""

    def __init__(self, run, name, expected):
        self.run = run
        self.name = name
        self.expected = expected
        self.index = {}
        self.received = 0
        self.progress = asyncio.Event()
        self.done = asyncio.Event()

    def _where(self, got):
        """Which expected message got is, for a useful failure."""
        if not self.index:
            self.index = {e: k for k, e in enumerate(self.expected)}
        return self.index.get(got)

    def check(self, got):
        i = self.received
        if i >= len(self.expected):
            self.run.fail("%s: message %d beyond the %d sent: %r"
                          % (self.name, i, len(self.expected), got[:200]))
            return
        want = self.expected[i]
        if got != want:
            j = self._where(got)
            if j is None:
                what = "an altered message"
            elif j > i:
                what = "message %d: %d lost or reordered before it" % (j, j - i)
            else:
                what = "message %d again (duplicate or reordered)" % j
            self.run.fail("%s: message %d: got %s\n  got:  %r\n  want: %r"
                          % (self.name, i, what, got[:300], want[:300]))
            return
        self.received += 1
        self.progress.set()
        if self.received == len(self.expected):
            self.done.set()


async def pump(run, peer, inputs, stream):
    """Send inputs from peer, at most WINDOW ahead of what stream has
    received; returns when stream has received all of them."""
    for sent, (data, is_binary, frag, _) in enumerate(inputs):
        while sent - stream.received >= WINDOW:
            stream.progress.clear()
            await run.wait(stream.progress, "%s: %d of %d received, window "
                           "full" % (stream.name, stream.received, N))
        run.check()
        peer.sendMessage(data, isBinary=is_binary, fragmentSize=frag)
    while not stream.done.is_set():
        await run.wait(stream.done, "%s: %d of %d received"
                       % (stream.name, stream.received, N))


def rate(what, n, nbytes, secs):
    sys.stderr.write("interop: %s: %d messages, %.1f MB in %.3f s = "
                     "%.0f messages/s (%.1f MB/s)\n"
                     % (what, n, nbytes / 1e6, secs, n / secs,
                        nbytes / 1e6 / secs))
    sys.stderr.flush()


class Interop(unittest.TestCase):
    def test_autobahn_10000_messages_each_way(self):
        seed = int(os.environ.get("PYRELAYD_TEST_SEED") or
                   random.SystemRandom().randrange(1 << 32))
        sys.stderr.write("interop: autobahn %s, seed %d (PYRELAYD_TEST_SEED"
                         " to replay)\n" % (autobahn.__version__, seed))
        rng = random.Random(seed)
        p2b = phone_inputs(rng)
        sid = "interop.%08x-Srv_1" % rng.getrandbits(32)

        with harness.Daemon() as d:
            async def main():
                run = Run()
                b = await connect(run, d, "/v1/server", "binary", {
                    "X-Pyrycode-Server": sid, "X-Pyrycode-Version": "1"})
                p = await connect(run, d, "/v1/client", "phone", {
                    "X-Pyrycode-Server": sid, "X-Pyrycode-Token": "t0k-1nterop",
                    "X-Pyrycode-Device-Name": "autobahn phone"})

                # the conn id, from the first envelope
                first = asyncio.Event()
                cid = []

                def first_env(payload):
                    m = re.fullmatch(rb'\{"conn_id":"(client-%s-[0-9a-f]{8})"'
                                     rb',"frame":(.*)\}' % re.escape(sid.encode()),
                                     payload, re.S)
                    if not m:
                        run.fail("binary: first envelope %r" % payload[:300])
                        return
                    cid.append(m.group(1).decode())
                    first.set()
                    exp = b'{"conn_id":"%s","frame":' % m.group(1)
                    s.expected = [exp + c + b"}" for *_, c in p2b]
                    s.check(payload)
                    b.on_message = s.check

                # phone -> binary
                s = Stream(run, "binary", None)
                b.on_message = first_env
                t0 = time.monotonic()
                data, is_binary, frag, _ = p2b[0]
                p.sendMessage(data, isBinary=is_binary, fragmentSize=frag)
                await run.wait(first, "the first envelope")
                await pump(run, p, p2b[1:], _Offset(s, 1))
                t1 = time.monotonic()
                rate("phone->binary", N, sum(len(e) for e in s.expected),
                     t1 - t0)

                # binary -> phone
                b2p = binary_inputs(rng, cid[0])
                s2 = Stream(run, "phone", [f for *_, f in b2p])
                p.on_message = s2.check
                t0 = time.monotonic()
                await pump(run, b, b2p, s2)
                t1 = time.monotonic()
                rate("binary->phone", N, sum(len(f) for f in s2.expected),
                     t1 - t0)

                # the relay's counters agree
                await self._forwarded(d, N)

                # the phone leaves: exactly one close notice
                notices = []
                b.on_message = notices.append
                run.closing = True
                p.sendClose(1000)
                code, _ = await asyncio.wait_for(p.closed, 10)
                self.assertEqual(code, 1000)
                t = time.monotonic() + 10
                while not notices and time.monotonic() < t:
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.3)
                self.assertEqual(notices, [b'{"conn_id":"%s","close_code":1000}'
                                           % cid[0].encode()])
                self.assertIsNone(run.error, run.error)
                b.sendClose(1000)
                code, _ = await asyncio.wait_for(b.closed, 10)
                self.assertEqual(code, 1000)

            harness.run(main(), timeout=TIMEOUT + 30)

    async def _forwarded(self, d, n):
        # a scrape counts every frame already delivered (pyrelayd(8))
        m = d.metrics()
        self.assertEqual((m[harness.FRAMES_P2B], m[harness.FRAMES_B2P]),
                         (n, n))


class _Offset:
    """A Stream as seen by pump() for inputs starting at index `off`."""

    def __init__(self, stream, off):
        self.s = stream
        self.off = off

    def __getattr__(self, k):
        return getattr(self.s, k)

    @property
    def received(self):
        return self.s.received - self.off


if __name__ == "__main__":
    harness.main()
