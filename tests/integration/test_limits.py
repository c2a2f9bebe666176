#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Resource limits (pyrelayd(8), CAPACITY): the parent raises its
RLIMIT_NOFILE soft limit to the hard one at start and logs the figures;
when a relay cannot start for lack of descriptors, the log names the limit
that ran out, the binary gets a 503 at once, the other server-ids keep
working, and claims work again once clients leave.

The daemon is started under a small hard limit (prlimit(1)), so that the
parent runs out after a few dozen relays (about one descriptor each)."""

import asyncio
import os
import re
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import websockets  # noqa: E402

SOFT, HARD = 32, 64
KV = r'[A-Za-z_][A-Za-z0-9_.]*=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)'
EVENT_LINE = re.compile(r"^\S+\[\d+\]: event=([a-z_]+)((?: %s)*)$" % KV)
RATE = "rate limit burst 10000 refill 100ms"
PRLIMIT = shutil.which("prlimit")


class LimitedDaemon(harness.Daemon):
    """A Daemon started under RLIMIT_NOFILE SOFT:HARD (prlimit execs it,
    so its pid is the daemon's)."""

    def _command(self):
        return [PRLIMIT, "--nofile=%d:%d" % (SOFT, HARD), "--"] + \
            super()._command()


def nofile_limits(pid):
    """(soft, hard) RLIMIT_NOFILE of a process, from /proc/PID/limits."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no Max open files line for pid %d" % pid)


@unittest.skipIf(PRLIMIT is None, "prlimit(1) not installed")
class Limits(unittest.TestCase):
    def test_soft_limit_raised_to_hard(self):
        with LimitedDaemon() as d:
            self.assertEqual(nofile_limits(d.pid), (HARD, HARD))
            d.wait_log(r"\bevent=limits nofile=%d nofile_hard=%d "
                       r"nofile_was=%d backlog=\d+$" % (HARD, HARD, SOFT))

    def test_relay_spawn_out_of_descriptors(self):
        with LimitedDaemon(extra_conf=RATE + "\ngrace 1s") as d:
            async def main():
                bins, failed = [], None
                # about one descriptor per relay in the parent: the limit
                # is reached well within HARD attempts
                for i in range(HARD):
                    sid = "lim-%d" % i
                    t0 = time.monotonic()
                    try:
                        bins.append(await harness.binary(d, sid))
                    except websockets.exceptions.InvalidStatusCode as e:
                        # a clear answer, at once: not a hang
                        self.assertEqual(e.status_code, 503)
                        self.assertLess(time.monotonic() - t0, 5)
                        failed = sid
                        break
                self.assertIsNotNone(failed, "no relay spawn failed under "
                                     "RLIMIT_NOFILE %d" % HARD)
                self.assertGreater(len(bins), 2)
                d.wait_log(r"\bevent=spawn_failed role=relay server_id=%s "
                           r"limit=RLIMIT_NOFILE error=\"[^\"]+\"$"
                           % re.escape(failed))
                # the server-ids that have a relay keep working
                for i in (0, len(bins) - 1):
                    p = await harness.phone(d, "lim-%d" % i)
                    await harness.assert_exchange(bins[i], p, "lim-%d" % i)
                    await harness.close_all(p)
                # clients leave; their relays retire after the grace
                mark = d.log_mark()
                await harness.close_all(*bins[:4])
                for i in range(4):
                    d.wait_log(r"\bevent=relay_exited\b.* server_id=lim-%d "
                               % i, since=mark)
                # descriptors are back: the refused server-id is claimed
                b = await harness.binary(d, failed)
                p = await harness.phone(d, failed)
                await harness.assert_exchange(b, p, failed)
                await harness.close_all(b, p, *bins[4:])
            harness.run(main())
        # the new lines too are events in key=value form
        bad = [ln for ln in d.log_lines() if not EVENT_LINE.match(ln)]
        self.assertEqual(bad, [], "log lines not in key=value form")


if __name__ == "__main__":
    harness.main()
