#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Black-box tests of docs/protocol.md §4 and §8, part 2: the data path in both
directions, close directives and close notices, frame-level errors,
backpressure, the write and message timeouts and a 16-phone flood with a
memory bound.

Helpers and the daemon-per-class base come from test_relay.py.
"""

import asyncio
import json
import os
import re
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import harness  # noqa: E402
from test_relay import (  # noqa: E402
    MAIN_CONF, ConnectionClosed, DaemonCase, atest, close_payload,
    conn_id_re, env, in_thread, new_sid, notice, raw_drain, raw_until_close,
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
    R_BACKLOG, R_BAD_CODE, R_BAD_JSON, R_BAD_UTF8, R_TOO_BIG)

MESSAGE_SIZE = 1024  # MAIN_CONF: message size 1K


def drop_log_re(sid):
    """A log line for a dropped envelope of sid (key=value, docs/protocol.md
    §4 "dropped and logged")."""
    s = re.escape(sid)
    return (r"(?i)drop\S*\s.*\bserver_id=%s(\s|$)|\bserver_id=%s\s.*drop"
            % (s, s))


def loopback_hex(port):
    """127.0.0.1:port as /proc/net/tcp writes it (address in host order)."""
    addr = struct.unpack("=I", socket.inet_aton("127.0.0.1"))[0]
    return "%08X:%04X" % (addr, port)


def tcp_send_queue(local_port, remote_port):
    """Bytes the kernel holds unacknowledged in the send queue of the
    loopback socket local_port -> remote_port (the relay's side of a
    phone's connection), or None when that socket does not exist."""
    want = (loopback_hex(local_port), loopback_hex(remote_port))
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if (parts[1], parts[2]) == want and parts[3] == "01":
                return int(parts[4].split(":")[0], 16)
    return None


def tcp_recv_queue(local_port, remote_port):
    """Bytes waiting to be read by the loopback socket local_port ->
    remote_port, or None when that socket does not exist."""
    want = (loopback_hex(local_port), loopback_hex(remote_port))
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if (parts[1], parts[2]) == want and parts[3] == "01":
                return int(parts[4].split(":")[1], 16)
    return None


# ==========================================================================
# docs/protocol.md §4: phone -> binary

class PhoneToBinaryTest(DaemonCase):
    CONF = MAIN_CONF  # phones per server 2, message size 1K

    async def pair(self, c, tag):
        sid = new_sid(tag)
        b = await c.binary(sid)
        p = await c.phone(sid)
        cid = await self.hello(b, p, sid)
        return sid, b, p, cid

    @atest()
    async def test_phone_json_compacted_in_envelope(self, c):
        sid, b, p, cid = await self.pair(c, "cp")
        same = object()
        cases = [
            ('{ "a" : [ 1 , 2 , { "b" : "x y" } ] ,\r\n\t"c" : "s p a c e" }',
             '{"a":[1,2,{"b":"x y"}],"c":"s p a c e"}'),
            ('  "just a string"  ', '"just a string"'),
            (' 42 ', '42'),
            ('\n-1.50e+10\n', '-1.50e+10'),
            ('null', same), (' true', 'true'), ('false ', 'false'),
            ('[ ]', '[]'), ('{ }', '{}'), ('[ [ ] , { } ]', '[[],{}]'),
            # string contents, escapes and <>& are kept exactly (§9)
            ('"esc \\" \\\\ \\/ \\u00e9 \\n <>&"', same),
            ('"\u00e9 \u00fc \u65e5\u672c \U0001f600"', same),
            ('{"k" : "tab\\tin", "s" : " lead and trail ", "n" : 0.5E-3}',
             '{"k":"tab\\tin","s":" lead and trail ","n":0.5E-3}'),
            ('{"": "", " ": [ "" ]}', '{"":""," ":[""]}'),
        ]
        for sent, frame in cases:
            with self.subTest(sent=sent):
                await p.send(sent)
                await self.expect_msg(b, env(cid, sent if frame is same
                                             else frame))

    @atest()
    async def test_phone_binary_opcode_json_accepted(self, c):
        sid, b, p, cid = await self.pair(c, "bo")
        await p.send(b'{"k" : [1, 2]}')
        await self.expect_msg(b, env(cid, '{"k":[1,2]}'))
        await p.send(' "\u00e9" '.encode())
        await self.expect_msg(b, env(cid, '"\u00e9"'))

    @atest()
    async def test_fragmented_messages_reassembled(self, c):
        sid, b, p, cid = await self.pair(c, "fr")
        # websockets sends an iterable as one fragmented message
        await p.send(['{"a":', ' [1, ', '2]', '}'])
        await self.expect_msg(b, env(cid, '{"a":[1,2]}'))
        await p.send([b'[1,', b' 2]'])
        await self.expect_msg(b, env(cid, '[1,2]'))
        # and a fragmented envelope from the binary
        await b.send(['{"conn_id":"', cid, '","frame":', '"fr ag"}'])
        await self.expect_msg(p, '"fr ag"')
        # a ping between fragments is answered and the message completes
        raw = await c.raw_phone(sid)
        rcid = await self.hello(b, raw, sid)
        raw.send(harness.ws_frame(OP_TEXT, '{"f":', fin=False) +
                 harness.ws_frame(OP_PING, b"mid") +
                 harness.ws_frame(OP_CONT, ' "rag"}'))
        self.assertEqual(await in_thread(raw.read_frame, 5),
                         (True, OP_PONG, b"mid"))
        await self.expect_msg(b, env(rcid, '{"f":"rag"}'))

    @atest()
    async def test_relay_sends_single_text_frames(self, c):
        sid = new_sid("tf")
        b = await c.raw_binary(sid)
        p = await c.raw_phone(sid)
        # a fragmented binary-opcode message from the phone ...
        p.send(harness.ws_frame(OP_BINARY, b'{"x": ', fin=False) +
               harness.ws_frame(OP_CONT, b'[1]}'))
        fin, op, payload = await in_thread(b.read_frame, 5)
        self.assertEqual((fin, op), (True, OP_TEXT))
        m = re.fullmatch(r'\{"conn_id":"(%s)","frame":\{"x":\[1\]\}\}'
                         % conn_id_re(sid), payload.decode())
        self.assertTrue(m, payload)
        cid = m.group(1)
        # ... and a fragmented binary-opcode envelope from the binary arrive
        # as one unfragmented text frame each
        b.send(harness.ws_frame(OP_BINARY, ('{"conn_id":"%s",' % cid).encode(),
                                fin=False) +
               harness.ws_frame(OP_CONT, b'"frame":[ 1,2 ]}'))
        self.assertEqual(await in_thread(p.read_frame, 5),
                         (True, OP_TEXT, b"[ 1,2 ]"))
        # so does the close notice
        p.send(harness.ws_frame(OP_CLOSE, close_payload(4001)))
        self.assertEqual(await in_thread(b.read_frame, 5),
                         (True, OP_TEXT, notice(cid, 4001).encode()))

    @atest()
    async def test_invalid_json_1007(self, c):
        sid = new_sid("ij")
        b = await c.binary(sid)
        w = await c.phone(sid)   # witness: its messages prove nothing else came
        cw = await self.hello(b, w, sid, '"witness"')
        bad = ['', ' ', '{', '}', '{"a":1} x', '1 2', "{'a':1}", 'NaN',
               'Infinity', '[1,]', '{"a":1,}', '"\x01"', '{"a" 1}', 'tru',
               '01', '+1', '.5', '1.', '-', '"\\x"', '"\\u12"', '"open',
               '[1 2]', '{"a"}', '{1:2}', '{"a":1}}', '[', b'{bad',
               b'\x00']
        for i, text in enumerate(bad):
            with self.subTest(text=text):
                p = await c.phone(sid)
                cid = await self.hello(b, p, sid, '"p%d"' % i)
                await p.send(text)
                try:
                    await p.send('"after %d"' % i)
                except ConnectionClosed:
                    pass
                got = await harness.expect_close(p, 1007, R_BAD_JSON,
                                                 timeout=5)
                self.assertEqual(got, [])
                await self.expect_msg(b, notice(cid, 1001))
                await w.send('"w%d"' % i)
                await self.expect_msg(b, env(cw, '"w%d"' % i))

    @atest()
    async def test_invalid_utf8_1007(self, c):
        sid = new_sid("iu")
        b = await c.binary(sid)
        bad = [
            harness.ws_frame(OP_TEXT, b'"\xff"'),
            harness.ws_frame(OP_TEXT, b'"\xc0\xaf"'),          # overlong
            harness.ws_frame(OP_TEXT, b'"\xed\xa0\x80"'),      # surrogate
            harness.ws_frame(OP_TEXT, b'"\xf4\x90\x80\x80"'),  # > U+10FFFF
            harness.ws_frame(OP_TEXT, b'"\xe2\x82'),           # truncated
            harness.ws_frame(OP_TEXT, b'"\xc3', fin=False) +   # split, bad
            harness.ws_frame(OP_CONT, b'x"'),
        ]
        for i, frame in enumerate(bad):
            with self.subTest(i=i):
                p = await c.raw_phone(sid)
                cid = await self.hello(b, p, sid, '"p%d"' % i)
                p.send(frame)
                frames, code, reason, _ = await in_thread(raw_until_close,
                                                          p, 5)
                self.assertEqual((frames, code, reason),
                                 ([], 1007, R_BAD_UTF8))
                p.close()
                await self.expect_msg(b, notice(cid, 1001))
        # a binary's text frames are checked too
        raw = await c.raw_binary(new_sid("iu"))
        raw.send(harness.ws_frame(OP_TEXT, b'{"conn_id":"\xff","frame":1}'))
        frames, code, reason, _ = await in_thread(raw_until_close, raw, 5)
        self.assertEqual((frames, code, reason), ([], 1007, R_BAD_UTF8))

    @atest()
    async def test_utf8_split_across_fragments_accepted(self, c):
        sid = new_sid("us")
        b = await c.binary(sid)
        p = await c.raw_phone(sid)
        p.send(harness.ws_frame(OP_TEXT, b'"\xc3', fin=False) +
               harness.ws_frame(OP_CONT, b'\xa9 \xf0\x9f', fin=False) +
               harness.ws_frame(OP_CONT, b'\x98\x80"'))
        msg = await harness.recv(b, 5)
        m = re.fullmatch(r'\{"conn_id":"(%s)","frame":"\u00e9 \U0001f600"\}'
                         % conn_id_re(sid), msg)
        self.assertTrue(m, msg)

    @atest()
    async def test_message_over_limit_1009(self, c):
        sid = new_sid("tb")
        b = await c.binary(sid)
        w = await c.phone(sid)
        cw = await self.hello(b, w, sid, '"witness"')
        exact = '"%s"' % ("a" * (MESSAGE_SIZE - 2))
        await w.send(exact)                                 # at the limit
        await self.expect_msg(b, env(cw, exact))
        for i, msg in enumerate([
                '"%s"' % ("b" * (MESSAGE_SIZE - 1)),             # 1025 bytes
                ['"' + "c" * 599, "c" * 599 + '"']]):            # 1200 in 2
            with self.subTest(i=i):
                p = await c.phone(sid)
                cid = await self.hello(b, p, sid, '"p%d"' % i)
                await p.send(msg)
                got = await harness.expect_close(p, 1009, R_TOO_BIG,
                                                 timeout=5)
                self.assertEqual(got, [])
                await self.expect_msg(b, notice(cid, 1001))
        await w.send('"w"')
        await self.expect_msg(b, env(cw, '"w"'))
        # the binary: an envelope of exactly 1024 bytes passes, 1025 not
        head = '{"conn_id":"%s","frame":"' % cw
        fit = head + "z" * (MESSAGE_SIZE - len(head) - 2) + '"}'
        self.assertEqual(len(fit), MESSAGE_SIZE)
        await b.send(fit)
        await self.expect_msg(w, fit[len(head) - 1:-1])
        await b.send(head + "z" * (MESSAGE_SIZE - len(head) - 1) + '"}')
        await harness.expect_close(b, 1009, R_TOO_BIG, timeout=5)

    @atest()
    async def test_close_notice_phone_code(self, c):
        sid = new_sid("cn")
        b = await c.binary(sid)
        w = await c.phone(sid)
        cw = await self.hello(b, w, sid, '"witness"')
        for i, code in enumerate((4001, 1000, 3000)):
            with self.subTest(code=code):
                p = await c.phone(sid)
                cid = await self.hello(b, p, sid, '"p%d"' % i)
                await p.close(code, "reason is not forwarded")
                self.assertEqual(p.close_code, code)   # the relay's echo
                await self.expect_msg(b, notice(cid, code))
                # exactly once: the witness's message comes next
                await w.send('"w%d"' % i)
                await self.expect_msg(b, env(cw, '"w%d"' % i))

    @atest()
    async def test_close_notice_tcp_drop_1001(self, c):
        sid = new_sid("cd")
        b = await c.binary(sid)
        w = await c.phone(sid)
        cw = await self.hello(b, w, sid, '"witness"')
        p = await c.phone(sid)
        cid = await self.hello(b, p, sid, '"p"')
        p.transport.abort()
        await self.expect_msg(b, notice(cid, 1001))
        await w.send('"w"')
        await self.expect_msg(b, env(cw, '"w"'))

    @atest()
    async def test_protocol_violations_1002(self, c):
        sid = new_sid("pv")
        b = await c.binary(sid)
        rsv1 = bytearray(harness.ws_frame(OP_TEXT, '"x"'))
        rsv1[0] |= 0x40
        cases = [
            ("unmasked text frame", harness.ws_frame(OP_TEXT, '"x"',
                                                     mask=False)),
            ("reserved opcode 3", harness.ws_frame(0x3, '"x"')),
            ("reserved control opcode 0xB", harness.ws_frame(0xB, b"")),
            ("RSV1 without extension", bytes(rsv1)),
            ("continuation without a start", harness.ws_frame(OP_CONT,
                                                              '"x"')),
            ("126-byte ping", harness.ws_frame(OP_PING, b"p" * 126)),
            ("fragmented ping", harness.ws_frame(OP_PING, b"p", fin=False)),
            ("new message inside a fragmented one",
             harness.ws_frame(OP_TEXT, '"a', fin=False) +
             harness.ws_frame(OP_TEXT, 'b"')),
            ("1-byte close payload", harness.ws_frame(OP_CLOSE, b"\x03")),
            ("close code 1005 on the wire",
             harness.ws_frame(OP_CLOSE, close_payload(1005))),
        ]
        for i, (what, data) in enumerate(cases):
            with self.subTest(what=what):
                p = await c.raw_phone(sid)
                cid = await self.hello(b, p, sid, '"p%d"' % i)
                p.send(data)
                frames, code, reason, _ = await in_thread(raw_until_close,
                                                          p, 5)
                self.assertEqual((frames, code), ([], 1002))
                self.assertLessEqual(len(reason.encode()), 123)
                self.assertNotIn('"x"', reason)
                p.close()
                await self.expect_msg(b, notice(cid, 1001))


# ==========================================================================
# docs/protocol.md §4: binary -> phone

class BinaryToPhoneTest(DaemonCase):
    CONF = MAIN_CONF

    async def setup_pair(self, c, tag):
        """binary, witness phone W; returns (sid, b, w, cw)."""
        sid = new_sid(tag)
        b = await c.binary(sid)
        w = await c.phone(sid)
        cw = await self.hello(b, w, sid, '"witness"')
        return sid, b, w, cw

    async def nothing_else(self, b, w, cw, tag="w"):
        """The binary got nothing it was not expecting: the witness phone's
        next message is the next thing it receives."""
        await w.send('"%s"' % tag)
        await self.expect_msg(b, env(cw, '"%s"' % tag))

    @atest()
    async def test_frame_value_delivered_verbatim(self, c):
        sid, b, p, cid = await self.setup_pair(c, "vb")
        cases = [
            ('{"conn_id":"%s","frame":"hello world"}' % cid, '"hello world"'),
            ('{"conn_id":"%s","frame":{ "a" : 1 ,  "b" : [ 1 , 2 ] }}' % cid,
             '{ "a" : 1 ,  "b" : [ 1 , 2 ] }'),
            # key order, whitespace around the value, unknown keys
            ('{ "frame" :  [1,  2]  ,\n "conn_id" : "%s" , "x": {"y": [1]} }'
             % cid, '[1,  2]'),
            ('{"conn_id":"%s","frame":"\\u00e9 <>& \\"q\\" \u00e9"}' % cid,
             '"\\u00e9 <>& \\"q\\" \u00e9"'),
            ('{"conn_id":"%s","frame":12.50e1}' % cid, '12.50e1'),
            ('{"conn_id":"%s","frame":true}' % cid, 'true'),
            ('{"conn_id":"%s","frame":[ ],"close_code":0}' % cid, '[ ]'),
        ]
        for sent, frame in cases:
            with self.subTest(sent=sent):
                await b.send(sent)
                await self.expect_msg(p, frame)

    @atest()
    async def test_close_directive_frame_then_code(self, c):
        sid, b, w, cw = await self.setup_pair(c, "cx")
        p = await c.phone(sid)
        cid = await self.hello(b, p, sid, '"p"')
        await b.send('{"conn_id":"%s","frame":{"bye":1},"close_code":4000}'
                     % cid)
        got = await harness.expect_close(p, 4000, "", timeout=5)
        self.assertEqual(got, ['{"bye":1}'])
        # later envelopes to that conn id are dropped (and logged)
        mark = self.d.log_mark()
        await b.send(env(cid, '"late"'))
        await self.wait_log(drop_log_re(sid), mark, 5)
        # no close notice; the binary stays connected
        await self.nothing_else(b, w, cw)
        self.assertFalse(b.closed)

    @atest()
    async def test_close_directive_without_frame(self, c):
        sid, b, w, cw = await self.setup_pair(c, "cn")
        for i, tmpl in enumerate([
                '{"conn_id":"%s","frame":null,"close_code":4001}',
                '{"conn_id":"%s","close_code":4002}']):
            with self.subTest(tmpl=tmpl):
                p = await c.phone(sid)
                cid = await self.hello(b, p, sid, '"p%d"' % i)
                await b.send(tmpl % cid)
                got = await harness.expect_close(p, 4001 + i, "", timeout=5)
                self.assertEqual(got, [])   # no frame delivered
        await self.nothing_else(b, w, cw)

    @atest()
    async def test_close_directive_unsendable_codes_1011(self, c):
        sid, b, w, cw = await self.setup_pair(c, "cu")
        for i, code in enumerate((999, 1004, 1005, 1006, 1015, 1016, 2000,
                                  2999, 5000, 65535)):
            with self.subTest(code=code):
                p = await c.phone(sid)
                cid = await self.hello(b, p, sid, '"p%d"' % i)
                await b.send('{"conn_id":"%s","frame":"f%d","close_code":%d}'
                             % (cid, i, code))
                got = await harness.expect_close(p, 1011, R_BAD_CODE,
                                                 timeout=5)
                self.assertEqual(got, ['"f%d"' % i])
        # still a directive: no close notices
        await self.nothing_else(b, w, cw)

    @atest()
    async def test_close_directive_sendable_codes(self, c):
        sid, b, w, cw = await self.setup_pair(c, "cs")
        for i, code in enumerate((1000, 1001, 1003, 1008, 1014, 3000, 4999)):
            with self.subTest(code=code):
                p = await c.phone(sid)
                cid = await self.hello(b, p, sid, '"p%d"' % i)
                await b.send('{"conn_id":"%s","close_code":%d}' % (cid, code))
                got = await harness.expect_close(p, code, "", timeout=5)
                self.assertEqual(got, [])
        await self.nothing_else(b, w, cw)

    @atest()
    async def test_close_code_zero_means_no_close(self, c):
        sid, b, p, cid = await self.setup_pair(c, "cz")
        await b.send('{"conn_id":"%s","frame":"z","close_code":0}' % cid)
        await self.expect_msg(p, '"z"')
        await b.send(env(cid, '"still open"'))
        await self.expect_msg(p, '"still open"')
        await p.send('"reply"')
        await self.expect_msg(b, env(cid, '"reply"'))
        self.assertFalse(p.closed)

    @atest()
    async def test_malformed_envelopes_dropped(self, c):
        sid, b, p, cid = await self.setup_pair(c, "mf")
        # a phone of another server-id
        sid2 = new_sid("mf")
        b2 = await c.binary(sid2)
        p2 = await c.phone(sid2)
        cid2 = await self.hello(b2, p2, sid2, '"other"')
        unknown = cid[:-8] + "%08x" % (int(cid[-8:], 16) ^ 0xffffffff)
        cases = [
            ("not JSON", 'not json'),
            ("truncated", '{"conn_id":"%s","frame":"bad"' % cid),
            ("trailing garbage", '{"conn_id":"%s","frame":"bad"} x' % cid),
            ("bad frame JSON", '{"conn_id":"%s","frame":[1,}' % cid),
            ("array", '[{"conn_id":"%s","frame":"bad"}]' % cid),
            ("string", '"%s"' % cid),
            ("conn_id number", '{"conn_id":5,"frame":"bad"}'),
            ("conn_id null", '{"conn_id":null,"frame":"bad"}'),
            ("conn_id array", '{"conn_id":["%s"],"frame":"bad"}' % cid),
            ("no conn_id", '{"frame":"bad"}'),
            ("close_code 1.5",
             '{"conn_id":"%s","frame":"bad","close_code":1.5}' % cid),
            ("close_code 4000.0",
             '{"conn_id":"%s","frame":"bad","close_code":4000.0}' % cid),
            ("close_code 4e3",
             '{"conn_id":"%s","frame":"bad","close_code":4e3}' % cid),
            ("close_code string",
             '{"conn_id":"%s","frame":"bad","close_code":"4000"}' % cid),
            ("close_code -1",
             '{"conn_id":"%s","frame":"bad","close_code":-1}' % cid),
            ("close_code 65536",
             '{"conn_id":"%s","frame":"bad","close_code":65536}' % cid),
            ("close_code true",
             '{"conn_id":"%s","frame":"bad","close_code":true}' % cid),
            ("no frame, no close_code", '{"conn_id":"%s"}' % cid),
            # a null frame is no frame (docs/protocol.md §11)
            ("frame null, no close_code",
             '{"conn_id":"%s","frame":null}' % cid),
            ("frame null, close_code 0",
             '{"conn_id":"%s","frame":null,"close_code":0}' % cid),
            ("unknown conn id", '{"conn_id":"%s","frame":"bad"}' % unknown),
            ("another server-id's phone",
             '{"conn_id":"%s","frame":"bad"}' % cid2),
        ]
        for i, (what, text) in enumerate(cases):
            with self.subTest(what=what):
                mark = self.d.log_mark()
                await b.send(text)
                # still connected, and the malformed one reached no phone:
                # the next frame p receives is the next valid envelope
                await b.send(env(cid, '"ok %d"' % i))
                await self.expect_msg(p, '"ok %d"' % i)
                await self.wait_log(drop_log_re(sid), mark, 5)
        await b2.send(env(cid2, '"own"'))
        await self.expect_msg(p2, '"own"')
        self.assertFalse(b.closed or p.closed)
        await self.nothing_else(b, p, cid)


# ==========================================================================
# docs/protocol.md §4 backpressure

class BackpressureTest(DaemonCase):
    # the write timeout stays at its default (10 s): a close within a few
    # seconds can only come from the outbox bound
    CONF = "outbox 64K\n"

    @atest(timeout=120)
    async def test_stalled_phone_closed_siblings_unaffected(self, c):
        sid = new_sid("bp")
        b = await c.binary(sid)
        sib = []
        for i in range(2):
            p = await c.phone(sid)
            sib.append((p, await self.hello(b, p, sid, '"s%d"' % i)))
        stalled = await c.raw_phone(sid, rcvbuf=4096)   # never reads again
        cs = await self.hello(b, stalled, sid, '"stalled"')

        chunk = '"%s"' % ("x" * 32768)
        big = env(cs, chunk)
        rounds = 260                      # 260 x 32 KiB = 8.1 MiB
        lat = [[] for _ in sib]

        async def read_sibling(k):
            p, _ = sib[k]
            for _ in range(rounds):
                msg = await harness.recv(p, 20)
                d = json.loads(msg)
                lat[k].append((d["seq"], time.monotonic() - d["t"]))

        readers = [asyncio.create_task(read_sibling(k))
                   for k in range(len(sib))]
        try:
            for seq in range(rounds):
                await b.send(big)
                for p, cid in sib:
                    await b.send(json.dumps({"conn_id": cid, "frame": {
                        "seq": seq, "t": time.monotonic()}}))
            await asyncio.wait_for(asyncio.gather(*readers), 30)
        finally:
            for t in readers:
                t.cancel()
        for k in range(len(sib)):
            self.assertEqual([s for s, _ in lat[k]], list(range(rounds)))
            # a relay that waited on the stalled phone would hold them for
            # the 10 s write timeout
            worst = max(t for _, t in lat[k])
            self.assertLess(worst, 2.0, "sibling %d waited %.2fs" % (k, worst))
        # the relay closed the stalled phone: the binary is told ...
        await self.expect_msg(b, notice(cs, 1001), timeout=10)
        # ... and the phone, once it reads, finds whole copies of the frame
        # and then the close frame
        closes, ndata, how = await in_thread(
            lambda: raw_drain(stalled, 20, stop_at_close=True,
                              expect_payload=chunk.encode()))
        self.assertEqual(closes, [(1011, R_BACKLOG)])
        self.assertLess(ndata, rounds)
        stalled.send(harness.ws_frame(OP_CLOSE, close_payload(1011)))
        await in_thread(raw_drain, stalled, 5)
        self.assertFalse(b.closed)
        for p, _ in sib:
            self.assertFalse(p.closed)


class BinaryBackpressureTest(DaemonCase):
    # docs/protocol.md §4: past the outbox toward the binary, the relay stops
    # reading that server-id's phones until it drains; nothing is dropped
    # (the binary reads nothing for as long as the stall takes to set up:
    # a sanitizer build under load took more than the default write
    # timeout of 10 s, which then dropped it)
    CONF = "outbox 64K\nheartbeat 60s timeout 60s\nwrite timeout 120s\n"
    PHONES = 4
    PER_PHONE = 4000          # x ~900 bytes: 14 MiB offered while stalled
    RSS_BOUND_KB = 24 * 1024

    @atest(timeout=120)
    async def test_phones_paused_while_binary_backs_up(self, c):
        sid = new_sid("bb")
        b = await c.raw_binary(sid, rcvbuf=4096)    # reads nothing for now
        phones = [await c.phone(sid) for _ in range(self.PHONES)]
        pad = "y" * 850

        async def send_all(k):
            for i in range(self.PER_PHONE):
                await phones[k].send('{"k":%d,"i":%d,"p":"%s"}' % (k, i, pad))
        senders = [asyncio.create_task(send_all(k))
                   for k in range(self.PHONES)]
        relay = self.d.relay_pids()[sid]
        # the relay stops reading: what the phones sent waits in the
        # kernel's receive queues of the relay's side of their sockets,
        # and those queues do not drain.  How full they get depends on the
        # windows TCP gave them (62 KiB untuned, more once autotuned, much
        # less when the host is short of TCP memory, as in a loaded CI
        # run: 10 KiB), so a queue holding a message or more is the sign.
        # How soon depends on the machine: first the relay fills the
        # kernel's send buffer toward the binary, then its outbox.
        ports = [p.transport.get_extra_info("sockname")[1] for p in phones]
        peak = 0
        deadline = time.monotonic() + 60
        while True:
            await asyncio.sleep(0.1)
            peak = max(peak, int(harness.proc_status(relay)["VmRSS"].split()[0]))
            first = [tcp_recv_queue(self.d.port, port) for port in ports]
            if all(q is not None and q >= 1024 for q in first):
                await asyncio.sleep(0.5)
                after = [tcp_recv_queue(self.d.port, port) for port in ports]
                if all(a is not None and a >= q
                       for a, q in zip(after, first)):
                    break
            if time.monotonic() > deadline:
                self.fail("the relay still reads its phones after 60 s: "
                          "receive queues %r" % first)
        self.assertLess(peak, self.RSS_BOUND_KB,
                        "relay RSS %d KiB: it kept reading phones" % peak)

        # the binary reads now: every message arrives, in order per phone
        def read_all():
            seen = [0] * self.PHONES
            total = self.PHONES * self.PER_PHONE
            for _ in range(total):
                fin, op, payload = b.read_frame(timeout=30)
                self.assertEqual(op, OP_TEXT)
                d = json.loads(payload)
                self.assertRegex(d["conn_id"], conn_id_re(sid))
                k, i = d["frame"]["k"], d["frame"]["i"]
                self.assertEqual(i, seen[k], "phone %d out of order" % k)
                seen[k] += 1
            return seen
        seen = await in_thread(read_all)
        self.assertEqual(seen, [self.PER_PHONE] * self.PHONES)
        await asyncio.wait_for(asyncio.gather(*senders), 30)
        for p in phones:
            self.assertFalse(p.closed)


def push_wake(token, platform="fcm"):
    return json.dumps({"push_wake": {"platform": platform, "token": token}})


class PushWithoutCredentialsTest(DaemonCase):
    """docs/protocol.md §6 without `push fcm credentials`: push requests are
    dropped before anything else is looked at, the first of a server-id
    logged (no token, no reason past no_credentials: the binary's requests
    are legitimate, only unanswerable), the binary unaffected, and no push
    series in /metrics.  Sending, the bucket and every outcome are in
    test_push.py."""

    async def relay_logged(self, b, sid, since):
        """Returns once every line the relay of sid logged for what b sent
        so far has been read: b's next message, an envelope without
        conn_id, is logged by the same process after them."""
        await b.send('{"not_an":"envelope"}')
        await self.wait_log(r'event=envelope_dropped server_id=%s '
                            r'reason="no conn_id"' % re.escape(sid), since)

    @atest()
    async def test_dropped_first_logged(self, c):
        sid = new_sid("pushnc")
        b = await c.binary(sid)
        p = await c.phone(sid)
        await self.hello(b, p, sid)
        mark = self.d.log_mark()
        await b.send(push_wake("tok-SECRET-2"))
        await b.send(push_wake("tok-SECRET-3", platform="apns"))
        await b.send(json.dumps({"push_wake": {"platform": "fcm"}}))
        await b.send(json.dumps({"push_wake": "fcm"}))
        await b.send(push_wake("x" * 600))
        await b.send(json.dumps({"conn_id": None, "push_wake": {}}))
        await self.relay_logged(b, sid, mark)
        lines = [ln for ln in self.d.log_lines()[mark:]
                 if "event=push_" in ln]
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"event=push_dropped server_id=%s "
                         r"reason=no_credentials$" % re.escape(sid))
        # the binary is unaffected and told nothing
        await self.hello(b, p, sid, '"still"')
        self.assertNotIn("SECRET", self.d.log_text())
        self.assertFalse([k for k in self.d.metrics() if "push" in k])


class WriteTimeoutTest(DaemonCase):
    # outbox at its default (4 MiB): the stalled phone is never over it here
    CONF = "write timeout 500ms\n"

    @atest(timeout=120)
    async def test_write_timeout_drops_stalled_phone(self, c):
        sid = new_sid("wt")
        b = await c.binary(sid)
        stalled = await c.raw_phone(sid, rcvbuf=4096)   # never reads again
        cs = await self.hello(b, stalled, sid, '"stalled"')
        lport = stalled.sock.getsockname()[1]
        self.assertIsNotNone(tcp_send_queue(self.d.port, lport),
                             "relay socket not found in /proc/net/tcp")

        # Fill the kernel's send queue of the relay's socket: send 64 KiB
        # frames until that queue stops growing while at least 512 KiB more
        # were sent than it holds (the rest waits in the relay's outbox).
        # After each frame a ping round trip on the binary's connection
        # makes sure the relay has handled it (it reads the binary in order)
        # before the queue is looked at.
        frame = '"%s"' % ("x" * 65000)
        big = env(cs, frame)
        sent = stable = 0
        last = -1
        while sent < 16 << 20:
            await b.send(big)
            sent += len(frame) + 4
            await asyncio.wait_for(await b.ping(), 10)
            q = tcp_send_queue(self.d.port, lport)
            if q is None:
                break       # already dropped: the notice below must follow
            stable = stable + 1 if q <= last and sent - q >= 512 << 10 else 0
            last = max(last, q)
            if stable >= 2:
                break
        else:
            self.fail("the relay's send queue kept growing up to 16 MiB")
        t_full = time.monotonic()

        # the binary keeps sending (slowly: a few KiB, far below the outbox)
        got = None
        for i in range(100):                       # at most ~5 s
            await b.send(env(cs, '"tick %d"' % i))
            try:
                got = await asyncio.wait_for(b.recv(), 0.05)
                break
            except asyncio.TimeoutError:
                continue
        self.assertEqual(got, notice(cs, 1001))
        took = time.monotonic() - t_full
        self.assertLess(took, 5.0, "dropped after %.1fs, not ~0.5 s" % took)
        # dropped, not closed for the outbox
        closes, ndata, how = await in_thread(raw_drain, stalled, 20)
        self.assertNotIn((1011, R_BACKLOG), closes)
        self.assertFalse(b.closed)


class MessageTimeoutTest(DaemonCase):
    """docs/protocol.md §4 and §11: a message whose frames started arriving
    must complete within 30 s (not configurable), else the connection is
    dropped; bytes of the same message trickling in do not extend it, and
    a phone beside it is served throughout."""
    CONF = MAIN_CONF  # phones per server 2, message size 1K

    @atest(timeout=120)
    async def test_unfinished_message_dropped_after_30s(self, c):
        sid = new_sid("mt")
        b = await c.binary(sid)
        slow = await c.raw_phone(sid)
        cs = await self.hello(b, slow, sid, '"slow"')
        good = await c.phone(sid)
        cg = await self.hello(b, good, sid, '"good 0"')

        # a text message of 100 bytes, of which the header and 10 go now
        frame = harness.ws_frame(OP_TEXT, '"%s"' % ("x" * 98))
        sent = len(frame) - 100 + 10
        slow.send(frame[:sent])
        t0 = time.monotonic()
        got_notice = None
        i = 0
        # one byte more every 5 s, and a round of the good phone every
        # 0.5 s, until the binary hears that the slow one is gone
        while got_notice is None:
            now = time.monotonic()
            self.assertLess(now - t0, 45, "not dropped within 45 s")
            if now - t0 >= 5 * (sent - (len(frame) - 90)) and \
                    sent < len(frame) - 1:
                slow.send(frame[sent:sent + 1])
                sent += 1
            i += 1
            await good.send('"good %d"' % i)
            for _ in range(2):
                msg = await harness.recv(b, 10)
                if msg == notice(cs, 1001):
                    got_notice = time.monotonic() - t0
                    continue
                self.assertEqual(msg, env(cg, '"good %d"' % i))
                break
            await asyncio.sleep(0.5)
        self.assertGreaterEqual(got_notice, 29.0)
        self.assertLess(got_notice, 40.0)
        self.assertGreater(sent, len(frame) - 90 + 4,
                           "the trickle did not keep going")
        # dropped: TCP ends, with no close frame (it would not be read)
        closes, ndata, how = await in_thread(raw_drain, slow, 10)
        self.assertEqual((closes, ndata), ([], 0))
        self.assertIn(how, ("eof", "reset"))
        # the good phone was served throughout, and still is
        await good.send('"after"')
        await self.expect_msg(b, env(cg, '"after"'))


# ==========================================================================
# slow reader, flood

class ThroughputTest(DaemonCase):
    CONF = ""           # outbox 4M, message size 256K, 16 phones

    @atest(timeout=60)
    async def test_slow_reader_gets_everything_in_order(self, c):
        sid = new_sid("sr")
        b = await c.binary(sid)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", self.d.port))
        p = await c.phone(sid, sock=s, max_queue=1)
        cid = await self.hello(b, p, sid)
        n = 300
        frames = ['"%04d%s"' % (k, "x" * 1018) for k in range(n)]
        self.assertEqual(len(frames[0]), 1024)

        async def send_all():
            for f in frames:
                await b.send(env(cid, f))
        sender = asyncio.create_task(send_all())
        try:
            for k in range(n):
                await self.expect_msg(p, frames[k])
                if k % 10 == 9:
                    # the subject: a phone that reads slowly
                    await asyncio.sleep(0.02)
            await asyncio.wait_for(sender, 10)
        finally:
            sender.cancel()
        self.assertFalse(p.closed or b.closed)

    @atest(timeout=90)
    async def test_flood_16_phones_no_loss_bounded_rss(self, c):
        nphones = 16
        seconds = 10.0            # flood duration
        max_total = 400000        # and a bound on the message count
        window = 32               # messages in flight per phone
        rss_limit_kib = 64 * 1024  # the bound: relay VmRSS < 64 MiB
        pad = "x" * 480

        sid = new_sid("fl")
        b = await c.binary(sid)
        phones = []
        for i in range(nphones):
            p = await c.phone(sid)
            phones.append((p, await self.hello(b, p, sid, '"p%d"' % i)))
        relay_pid = self.d.relay_pids().get(sid)
        self.assertIsNotNone(relay_pid, self.d.children())

        sent = [0] * nphones
        got = [0] * nphones
        errors = []
        progress = asyncio.Event()

        def frame(i, seq):
            return '"%02d:%08d:%s"' % (i, seq, pad)

        async def reader(i):
            p, _ = phones[i]
            try:
                while True:
                    msg = await p.recv()
                    if msg != frame(i, got[i]):
                        errors.append("phone %d: expected seq %d, got %r"
                                      % (i, got[i], msg[:20]))
                        return
                    got[i] += 1
                    progress.set()
            except ConnectionClosed as e:
                errors.append("phone %d closed: %s %r" % (i, e.code,
                                                          e.reason))

        def rss_kib():
            st = harness.proc_status(relay_pid)
            self.assertIsNotNone(st, "relay process vanished")
            return int(st["VmRSS"].split()[0])

        readers = [asyncio.create_task(reader(i)) for i in range(nphones)]
        rss = [rss_kib()]
        total = 0
        try:
            t0 = time.monotonic()
            next_sample = t0
            while (time.monotonic() - t0 < seconds and total < max_total
                   and not errors):
                progress.clear()
                moved = False
                for i in range(nphones):
                    if sent[i] - got[i] < window:
                        await b.send('{"conn_id":"%s","frame":%s}'
                                     % (phones[i][1], frame(i, sent[i])))
                        sent[i] += 1
                        total += 1
                        moved = True
                now = time.monotonic()
                if now >= next_sample:     # sampling, not waiting
                    rss.append(rss_kib())
                    next_sample = now + 0.1
                if not moved:
                    try:
                        await asyncio.wait_for(progress.wait(), 10)
                    except asyncio.TimeoutError:
                        self.fail("no phone received anything for 10 s "
                                  "(sent %s, got %s)" % (sent, got))
            elapsed = time.monotonic() - t0
            # everything sent arrives
            deadline = time.monotonic() + 15
            while got != sent and not errors:
                progress.clear()
                if got == sent:
                    break
                left = deadline - time.monotonic()
                self.assertGreater(left, 0, "missing: sent %s got %s"
                                   % (sent, got))
                try:
                    await asyncio.wait_for(progress.wait(), left)
                except asyncio.TimeoutError:
                    pass
            rss.append(rss_kib())
        finally:
            for t in readers:
                t.cancel()
        self.assertEqual(errors, [])
        self.assertEqual(got, sent)
        self.assertGreater(total, 10000, "flood too small to mean anything")
        self.assertGreater(len(rss), 20)
        sys.stderr.write("\nflood: %d messages in %.1fs (%.0f/s), relay "
                         "VmRSS max %d KiB over %d samples\n"
                         % (total, elapsed, total / elapsed, max(rss),
                            len(rss)))
        self.assertLess(max(rss), rss_limit_kib)
        self.assertFalse(b.closed)
        # no close notice or anything else was owed to the binary
        await phones[0][0].send('"end"')
        await self.expect_msg(b, env(phones[0][1], '"end"'))


if __name__ == "__main__":
    harness.main()
