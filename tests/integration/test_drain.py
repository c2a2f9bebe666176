#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Drain mode on one daemon (docs/scaling.md), without a balancer:
`pyrelayctl drain` and `undrain` switch what /healthz, `show summary` and
the `agent on` listener report; a draining daemon refuses a binary for a
server-id it does not hold (503, logged), and keeps serving everything of
the server-ids it holds: phones arriving later, binaries reclaiming within
the grace.  The agent listener holds no connection past its answer, even
from clients that never read, send or close, while others keep working.
test_scale_out.py runs the same features behind HAProxy."""

import os
import re
import signal
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import websockets.exceptions  # noqa: E402

PYRELAYCTL = os.environ.get("PYRELAYCTL") or os.path.join(
    os.path.dirname(harness.PYRELAYD), "pyrelayctl")
# docs/protocol.md §2, with the status a draining host reports (§11)
HEALTHZ = (r'\{"status":"%s","version":"[^"]+","connected_binaries":\d+,'
           r'"connected_phones":\d+,"uptime_seconds":\d+\}')
ATTACKERS = 64


class Drain(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.agent_port = harness.free_port()
        cls.d = harness.Daemon("agent on 127.0.0.1 port %d\ngrace 1s\n"
                               % cls.agent_port)
        cls.d.start()

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def tearDown(self):
        self.ctl("undrain")

    def ctl(self, *args):
        r = subprocess.run([PYRELAYCTL, "-s", self.d.control_path] +
                           list(args), capture_output=True, text=True,
                           timeout=30)
        self.assertEqual((r.returncode, r.stderr), (0, ""), args)
        return r.stdout

    def summary(self):
        return dict(line.split(" ", 1) for line in
                    self.ctl("show summary").splitlines())

    def healthz_text(self):
        status, _, body = harness.http_get(self.d.port, "/healthz")
        self.assertEqual(status, 200)
        return body.decode()

    def agent(self, send=b""):
        """What the agent listener answers, read until it closes."""
        with socket.create_connection(("127.0.0.1", self.agent_port),
                                      timeout=5) as s:
            if send:
                s.sendall(send)
            return harness.recv_until_close(s, 5)

    def assertReports(self, draining):
        self.assertRegex(self.healthz_text(), r"\A%s\Z" % (
            HEALTHZ % ("draining" if draining else "ok")))
        self.assertEqual(self.agent(), b"0%\n" if draining else b"100%\n")
        self.assertEqual(self.summary()["draining"],
                         "yes" if draining else "no")

    def test_reports_follow_the_drain(self):
        d = self.d
        self.assertReports(False)
        mark = d.log_mark()
        self.assertEqual(self.ctl("drain"), "")
        d.wait_log(r"\bevent=drain binaries=0 phones=0$", since=mark)
        self.assertReports(True)
        # HAProxy may send an agent-send string: it changes nothing
        self.assertEqual(self.agent(b"backend/relay1\n"), b"0%\n")
        # again: no change, no second log line
        self.assertEqual(self.ctl("drain"), "")
        # a reload keeps it: the drain is the operator's, not the file's
        mark2 = d.log_mark()
        d.signal(signal.SIGHUP)
        d.wait_log(r"\bevent=reload_done\b", since=mark2)
        self.assertReports(True)
        self.assertEqual(len(re.findall(r"event=drain ", "\n".join(
            d.log_lines()[mark:]))), 1)
        mark = d.log_mark()
        self.assertEqual(self.ctl("undrain"), "")
        d.wait_log(r"\bevent=undrain binaries=0 phones=0$", since=mark)
        self.assertReports(False)

    def test_draining_daemon_keeps_its_server_ids(self):
        d = self.d

        async def main():
            b = await harness.binary(d, "dr-kept")
            p = await harness.phone(d, "dr-kept")
            self.ctl("drain")
            mark = d.log_mark()
            # a server-id it does not hold: refused before the upgrade
            with self.assertRaises(
                    websockets.exceptions.InvalidStatusCode) as cm:
                await harness.binary(d, "dr-new")
            self.assertEqual(cm.exception.status_code, 503)
            d.wait_log(r"\bevent=drain_refused refused=1 server_id=dr-new$",
                       since=mark)
            # a phone for a server-id nobody holds: 4404 as always
            q = await harness.phone(d, "dr-none")
            await harness.expect_close(q, 4404)
            # one it holds: a phone arriving later, and its binary
            # reclaiming within the grace, keeping the phones
            p2 = await harness.phone(d, "dr-kept")
            await harness.assert_exchange(b, p2, "dr-kept")
            await b.close()
            b = await harness.binary(d, "dr-kept")
            await harness.assert_exchange(b, p, "dr-kept", n=2)
            await harness.assert_exchange(b, p2, "dr-kept", n=3)
            # once everything of it is gone, it is a new server-id here
            await harness.close_all(b, p, p2)
            d.wait_log(r"\bevent=relay_exited pid=\d+ server_id=dr-kept\b",
                       since=mark)
            with self.assertRaises(
                    websockets.exceptions.InvalidStatusCode) as cm:
                await harness.binary(d, "dr-kept")
            self.assertEqual(cm.exception.status_code, 503)
            # undrained, it takes new server-ids again
            self.ctl("undrain")
            b = await harness.binary(d, "dr-new")
            p = await harness.phone(d, "dr-new")
            await harness.assert_exchange(b, p, "dr-new")
            await harness.close_all(b, p)
        harness.run(main())

    def test_agent_listener_holds_nothing(self):
        """Clients of the agent port that never read, send or close: each
        gets its line and the daemon lets go of it on its own, while a
        binary and a phone keep working."""
        d = self.d
        base = int(self.summary()["connections"])
        socks = []
        try:
            for _ in range(ATTACKERS):
                s = socket.create_connection(("127.0.0.1", self.agent_port),
                                             timeout=5)
                socks.append(s)

            harness.run(harness.exchange_once(d, "dr-agent"))
            # the daemon's count of live connections comes back down while
            # every attacker socket is still open on our side
            harness.poll_until(
                lambda: int(self.summary()["connections"]) <= base, 10,
                "the agent connections to be let go", interval=0.1)
            for s in socks:
                self.assertEqual(harness.recv_until_close(s, 5), b"100%\n")
        finally:
            for s in socks:
                s.close()


if __name__ == "__main__":
    harness.main()
