#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Resource limits (pyrelayd(8), CAPACITY): the parent raises its
RLIMIT_NOFILE soft limit to the hard one at start and logs the figures;
when a relay cannot start for lack of descriptors, the log names the limit
that ran out, the binary gets a 503 at once, the other server-ids keep
working, and claims work again once clients leave.

The daemon is started under a small hard limit (prlimit(1)), so that the
parent runs out after a few dozen relays (about one descriptor each)."""

import os
import re
import resource
import shutil
import socket
import subprocess
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


class LostInHandOver(unittest.TestCase):
    """A connection handed to the parent while it has no descriptor free
    (RLIMIT_NOFILE) is lost alone: its client sees the connection close,
    the log and /metrics say so, and the front that handed it over keeps
    serving the other connections it holds."""

    def test_parent_out_of_descriptors(self):
        # no pool: the parent's descriptors stay as they are
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 0") as d:
            base_fds = harness.open_fds(d.pid)
            accepted = d.metrics()["pyrelayd_connections_accepted_total"]
            reqs, socks = [], []
            for i in range(4):
                req = harness.upgrade_request(d.port, "/v1/server",
                                              sid="lost-%d" % i)
                s = socket.create_connection(("127.0.0.1", d.port),
                                             timeout=10)
                # the head without its final CRLF: the front waits
                s.sendall(req[:-2])
                reqs.append(req)
                socks.append(s)
            try:
                # the fronts are dealt connections in turn: the first and
                # the third are held by the same front
                harness.poll_until(
                    lambda: d.metrics()["pyrelayd_connections_accepted_total"]
                    >= accepted + 1 + 4, 10, "4 connections accepted")
                harness.poll_until(
                    lambda: harness.open_fds(d.pid) == base_fds, 10,
                    "the parent handed them to the fronts")
                fronts = sorted(d.front_pids())
                # the lowest free descriptor becomes the limit: no new one
                lowest = min(set(range(len(base_fds) + 1)) - base_fds)
                soft, hard = resource.prlimit(d.pid, resource.RLIMIT_NOFILE)
                mark = d.log_mark()
                resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (lowest, hard))
                try:
                    socks[0].sendall(b"\r\n")
                    d.wait_log(r"\bevent=connection_lost conn=\d+ "
                               r"receiver=parent limit=RLIMIT_NOFILE$",
                               since=mark)
                    # its client sees the connection end, with no answer
                    self.assertEqual(harness.recv_until_close(socks[0]), b"")
                finally:
                    resource.prlimit(d.pid, resource.RLIMIT_NOFILE,
                                     (soft, hard))
                # the others, held by both fronts, are served
                for i in range(1, 4):
                    socks[i].sendall(b"\r\n")
                    status, _ = harness.read_head(socks[i])
                    self.assertEqual(status, 101, "client %d" % i)
                self.assertEqual(sorted(d.front_pids()), fronts)
                self.assertNotRegex(d.log_text(), r"event=worker_killed")
                self.assertEqual(
                    d.metrics()["pyrelayd_connections_lost_total"], 1)
            finally:
                for s in socks:
                    s.close()

    def test_relay_out_of_descriptors(self):
        with harness.Daemon(extra_conf=RATE) as d:
            sid = "lost-relay"

            async def main():
                b = await harness.binary(d, sid)
                relay = d.relay_pids()[sid]
                mark = d.log_mark()
                with fd_starved(relay):
                    # a phone's connection reaches the relay and is lost
                    out = harness.raw_request(d.port, harness.upgrade_request(
                        d.port, "/v1/client", sid=sid))
                    self.assertEqual(out, b"")
                    d.wait_log(r"\bevent=connection_lost conn=\d+ "
                               r"receiver=relay limit=RLIMIT_NOFILE$",
                               since=mark)
                # the same relay goes on serving its binary and new phones
                self.assertEqual(d.relay_pids().get(sid), relay)
                p = await harness.phone(d, sid)
                await harness.assert_exchange(b, p, sid)
                await harness.close_all(b, p)
            harness.run(main())
            self.assertEqual(d.metrics()["pyrelayd_connections_lost_total"], 1)

    def test_front_out_of_descriptors(self):
        with harness.Daemon(extra_conf=RATE, workers=1) as d:
            front = d.front_pids()[0]
            mark = d.log_mark()
            with fd_starved(front):
                out = harness.raw_request(d.port, harness.upgrade_request(
                    d.port, "/v1/server", sid="lost-front"))
                self.assertEqual(out, b"")
                d.wait_log(r"\bevent=connection_lost conn=\d+ "
                           r"receiver=front limit=RLIMIT_NOFILE$", since=mark)
            # the same front serves the next connection
            self.assertEqual(d.front_pids(), [front])

            harness.run(harness.exchange_once(d, "lost-front"))
            self.assertEqual(d.metrics()["pyrelayd_connections_lost_total"], 1)


class fd_starved:
    """Within the block, process pid can open no descriptor: its
    RLIMIT_NOFILE soft limit is its lowest free descriptor number."""

    def __init__(self, pid):
        self.pid = pid

    def __enter__(self):
        fds = harness.open_fds(self.pid)
        lowest = min(set(range(len(fds) + 1)) - fds)
        self.soft, self.hard = prlimit_nofile(self.pid)
        prlimit_nofile(self.pid, (lowest, self.hard))
        return self

    def __exit__(self, *exc):
        prlimit_nofile(self.pid, (self.soft, self.hard))


def prlimit_nofile(pid, limits=None):
    """prlimit(2) on RLIMIT_NOFILE of pid; returns (soft, hard) as it was.
    A worker runs as the configured user: without CAP_SYS_RESOURCE (some
    containers drop it) only a process of the same user and group may
    change its limits, so the call is made from one."""
    st = harness.proc_status(pid)
    uid, gid = int(st["Uid"].split()[0]), int(st["Gid"].split()[0])
    args = () if limits is None else (limits,)
    if uid == os.getuid() and gid == os.getgid():
        return resource.prlimit(pid, resource.RLIMIT_NOFILE, *args)
    out = subprocess.run(
        ["/usr/bin/python3", "-c",
         "import resource, sys\n"
         "a = tuple(int(x) for x in sys.argv[2:])\n"
         "print(*resource.prlimit(int(sys.argv[1]), resource.RLIMIT_NOFILE,"
         " *((a,) if a else ())))",
         str(pid)] + [str(x) for x in (limits or ())],
        user=uid, group=gid, extra_groups=[], check=True, timeout=10,
        capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1])


if __name__ == "__main__":
    harness.main()
