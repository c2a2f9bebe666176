#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""A request head trickled a byte at a time (issue 14, protocol.md §2): the
front parses each read from where the last one stopped, so its CPU grows
with the head's length, not with its square, however the head is split.

One client sends a head of N and then of 4N bytes, one byte per TCP segment
(TCP_NODELAY, one send per byte, a pause between them so that the front
reads each on its own), and the test compares the CPU time the fronts spent
(utime + stime from /proc/PID/stat) on each: about 4 times for a parser
linear in the head, 16 for one that starts over after every read.  The
assertion allows 8 times the larger of the N figure and a floor of 0.1 s
(so that a few clock ticks, or a slow sanitizer build, do not decide):
the incremental parser needs about 0.02 s and 0.1 s here, the restarting
one (092703e) 0.11 s and 1.5 s, over 0.88 s.  Meanwhile a binary and a phone
from another address keep exchanging; the trickled heads are /healthz
requests, which must still get their 200."""

import asyncio
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

N = 4000                # 4N stays under the 16K max header size
PACE = 0.0001           # seconds between two bytes
FLOOR = 0.1             # seconds: the smallest N figure the ratio uses
RATIO = 8               # linear: about 4; starting over: about 16
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """utime + stime of the processes, in seconds."""
    total = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])   # fields 14 and 15
    return total / TICK


def healthz_head(size):
    """A /healthz request head of size bytes, made of the shortest header
    lines there are ("a:", no value, bare LF): as many lines as a head can
    hold, which a parser that starts over reads again after every read."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    lines = (size - len(head) - 2 - 3) // 3
    head += b"a:\n" * lines
    # one last line makes up the length: "b:", 0 to 2 bytes of value, LF
    head += b"b:" + b"x" * (size - len(head) - 2 - 3) + b"\n"
    return head + b"\r\n"


def trickle(port, head):
    """Sends head from 127.0.0.3 a byte per segment; returns the status of
    the answer."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.3", 0))
        s.settimeout(30)
        s.connect(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(head)):
            s.send(head[i:i + 1])
            time.sleep(PACE)  # a gap for the front to read this byte alone
        status, _, _ = harness.parse_head(harness.recv_until_close(s, 30))
        return status
    finally:
        s.close()


class TrickledHead(unittest.TestCase):
    def test_front_cpu_linear_in_head(self):
        conf = "max header size 16K\nhandshake timeout 120s"
        with harness.Daemon(extra_conf=conf) as d:
            fronts = d.wait_fronts()

            async def main():
                loop = asyncio.get_running_loop()
                sid = "good-%s" % os.urandom(3).hex()
                src = dict(local_addr=("127.0.0.2", 0))
                b = await harness.binary(d, sid, **src)
                p = await harness.phone(d, sid, **src)
                n = 0
                spent = {}
                for size in (N, 4 * N):
                    head = healthz_head(size)
                    self.assertEqual(len(head), size)
                    c0 = cpu_seconds(fronts)
                    t0 = time.monotonic()
                    sending = loop.run_in_executor(None, trickle, d.port,
                                                   head)
                    # the good pair exchanges for as long as it lasts
                    while not sending.done():
                        n += 1
                        await harness.assert_exchange(b, p, sid, n)
                        await asyncio.wait({sending}, timeout=0.05)
                    self.assertEqual(await sending, 200)
                    spent[size] = cpu_seconds(fronts) - c0
                    print("\nhead of %d bytes, a byte per segment over "
                          "%.1fs: fronts' CPU %.3fs"
                          % (size, time.monotonic() - t0, spent[size]),
                          file=sys.stderr)
                self.assertGreater(n, 2)
                limit = RATIO * max(spent[N], FLOOR)
                self.assertLess(spent[4 * N], limit,
                                "4x the head cost %.3fs of CPU, %.3fs for "
                                "1x: more than %d times (floor %gs)"
                                % (spent[4 * N], spent[N], RATIO, FLOOR))
                await harness.assert_exchange(b, p, sid, n + 1)
                await harness.close_all(b, p)
            harness.run(main(), timeout=120)


if __name__ == "__main__":
    harness.main()
