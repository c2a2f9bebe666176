#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Attacks on one relay process, against the real daemon: each asserts the
bound that stops it, while a well-behaved binary and phone on another
server-id keep exchanging.

Newcomers per server-id (pyrelayd(8) CAPACITY): while the
incumbent binary does not answer the conflict probe's ping, at most 4
newcomer binaries wait for the probe, each holding what it sends; the
next one is refused 4409 at once, so that one server-id cannot make its
relay hold more than 4 such queues.
"""

import asyncio
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import harness  # noqa: E402
from test_relay import (  # noqa: E402
    DaemonCase, atest, in_thread, new_sid, OP_PING, R_CLAIMED)

NEWCOMERS_MAX = 4  # src/relay_core.h RELAY_NEWCOMERS_MAX

REJECT_409 = ('pyrycode_relay_ws_upgrade_attempts_total{endpoint="server",'
              'outcome="reject_409"}')

# The probe outlasts every wait of the test: a newcomer refused within a
# few seconds was refused at once, not at the probe's end.
PROBE_S = 120


class NewcomerFloodTest(DaemonCase):
    CONF = "conflict probe %ds\n" % PROBE_S

    @atest(timeout=90)
    async def test_newcomers_past_four_get_4409_at_once(self, c):
        # the well-behaved pair, on a server-id of its own
        good = new_sid("good")
        gb = await c.binary(good)
        gp = await c.phone(good)
        await harness.assert_exchange(gb, gp, good)

        # the attacker: an incumbent that never answers a ping
        sid = new_sid("flood")
        inc = await c.raw_binary(sid)
        mark = self.d.log_mark()
        before = self.d.metrics().get(REJECT_409, 0)

        waiting = []
        for i in range(NEWCOMERS_MAX):
            waiting.append(await c.binary(sid))  # its 101 came: it waits
            await harness.assert_exchange(gb, gp, good)
        # the probe began with the first newcomer: the incumbent is pinged
        fin, op, payload = await in_thread(inc.read_frame, 10)
        self.assertEqual(op, OP_PING)

        conflict = (r"event=server_id_conflict server_id=%s newcomers=%d\b"
                    % (re.escape(sid), NEWCOMERS_MAX))
        for i in range(2):
            since = self.d.log_mark()
            extra = await c.binary(sid)
            # refused at once: well before the probe could end
            got = await harness.expect_close(extra, 4409, R_CLAIMED,
                                             timeout=10)
            self.assertEqual(got, [])
            # its line, read before the lines are counted below
            self.d.wait_log(conflict, since=since)
            await harness.assert_exchange(gb, gp, good)

        # the four still wait: open, answering their pings, not refused
        for w in waiting:
            await asyncio.wait_for(await w.ping(), 10)
            self.assertFalse(w.closed)
        lines = self.d.log_lines()[mark:]
        refused = [ln for ln in lines if re.search(conflict, ln)]
        self.assertEqual(len(refused), 2, "\n".join(lines[-20:]))
        self.assertFalse([ln for ln in lines if "takeover" in ln and sid in ln],
                         "the probe ended during the test")
        # counted as the 4409 they are (docs/protocol.md §2)
        self.assertEqual(self.d.metrics().get(REJECT_409, 0) - before, 2)

        # the well-behaved pair never noticed
        await harness.assert_exchange(gb, gp, good, n=3)
        inc.close()


if __name__ == "__main__":
    harness.main()
