#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""The relay pool (docs/pool.md, `relay pool N` in pyrelayd.conf(5)): the
parent keeps N relays started, sandboxed and idle; a claim for a new
server-id takes one (MSG_ASSIGN) and the pool refills; each relay still
serves one server-id for its whole life.

Needs root (the relays must drop to `user "nobody"` and chroot, as in
test_process.py); exits 77 otherwise."""

import asyncio
import os
import re
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import test_process  # noqa: E402  (assert_sandboxed, nobody)

RATE = "rate limit burst 10000 refill 100ms"
SLOW = 3 if harness.sanitizer_build() else 1
POOLED = re.compile(r"pyrelayd: pooled relay\b")


def pooled_pids(d):
    """Pids of the daemon's children titled as pooled relays (zombies,
    which keep no title, are left out)."""
    return sorted(pid for pid, cmd in d.children()
                  if POOLED.match(cmd) and harness.proc_state(pid) != "Z")


def wait_pool(d, n, timeout=15, exclude=()):
    """Wait until the metrics say n pooled relays are ready (sandboxed and
    waiting) and n children carry the pooled title, none of them in
    exclude; returns their pids.  Bounded /proc and /metrics polling: a
    relay's start gives no event a test can wait on."""
    got = []

    def check():
        pids = pooled_pids(d)
        got[:] = pids
        return (len(pids) == n and not set(pids) & set(exclude) and
                d.metrics()["pyrelayd_relays_pooled"] == n)
    try:
        harness.poll_until(check, timeout * SLOW, "%d pooled relays" % n,
                           interval=0.05)
    except AssertionError:
        raise AssertionError("expected %d pooled relays (not %s), have %s; "
                             "metrics say %d" % (
                                 n, sorted(exclude), got,
                                 d.metrics()["pyrelayd_relays_pooled"]))
    return list(got)


def run_queue_count(pid):
    """Timeslices pid has run (/proc/PID/schedstat, third field): it grows
    by at least one every time the process wakes up."""
    data = harness._read("/proc/%d/schedstat" % pid, "r")
    return int(data.split()[2])


class Pool(unittest.TestCase):

    def test_pooled_relays_sandboxed_idle_before_any_claim(self):
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 3") as d:
            pids = wait_pool(d, 3)
            for pid in pids:
                test_process.assert_sandboxed(self, d, pid,
                                              "pooled relay %d" % pid)
            # none serves a server-id yet
            self.assertEqual(d.relay_pids(), {})
            m = d.metrics()
            self.assertEqual(m["pyrelayd_relay_processes"], 0)
            self.assertEqual(m["pyrelayd_relay_assignments_total"], 0)
            # no timer while waiting: a relay with its one-second counter
            # timer would run at least once in these 1.5 s (the duration
            # is this check's subject, there is no event to wait for)
            before = {pid: run_queue_count(pid) for pid in pids}
            time.sleep(1.5)
            for pid in pids:
                self.assertEqual(run_queue_count(pid), before[pid],
                                 "pooled relay %d woke up while idle" % pid)
            self.assertEqual(pooled_pids(d), pids)

    def test_claim_is_served_by_a_pooled_relay_and_the_pool_refills(self):
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 3") as d:
            first = wait_pool(d, 3)

            async def main():
                conns = []
                for i, sid in enumerate(("pool-a", "pool-b", "pool-c")):
                    b = await harness.binary(d, sid)
                    p = await harness.phone(d, sid)
                    await harness.assert_exchange(b, p, sid, i + 1)
                    conns += [b, p]
                return conns
            conns = harness.run(main())
            relays = d.relay_pids()
            self.assertEqual(set(relays), {"pool-a", "pool-b", "pool-c"})
            # each claim took a relay that was pooled before it
            for sid, pid in relays.items():
                self.assertIn(pid, first, "%s served by pid %d, not one of "
                              "the pooled %s" % (sid, pid, first))
            self.assertEqual(len(set(relays.values())), 3)
            # the pool is full again, with fresh processes
            again = wait_pool(d, 3, exclude=first)
            for pid in again:
                test_process.assert_sandboxed(self, d, pid,
                                              "refilled relay %d" % pid)
            m = d.metrics()
            self.assertEqual(m["pyrelayd_relay_assignments_total"], 3)
            self.assertEqual(m["pyrelayd_relay_processes"], 3)
            self.assertEqual(m["pyrelayd_relay_processes_started_total"], 3)
            harness.run(harness.close_all(*conns))

    def test_pool_zero_starts_relays_on_demand(self):
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 0") as d:
            self.assertEqual(pooled_pids(d), [])

            async def main():
                b = await harness.binary(d, "nopool")
                p = await harness.phone(d, "nopool")
                await harness.assert_exchange(b, p, "nopool")
                return b, p
            b, p = harness.run(main())
            pid = d.relay_pids()["nopool"]
            test_process.assert_sandboxed(self, d, pid, "relay %d" % pid)
            m = d.metrics()
            self.assertEqual(m["pyrelayd_relays_pooled"], 0)
            self.assertEqual(m["pyrelayd_relay_assignments_total"], 0)
            self.assertEqual(m["pyrelayd_relay_processes_started_total"], 1)
            self.assertEqual(pooled_pids(d), [])
            harness.run(harness.close_all(b, p))

    def test_two_server_ids_never_share_a_relay(self):
        # grace 200ms: a retired server-id's relay must not serve the next
        conf = RATE + "\nrelay pool 2\ngrace 200ms"
        with harness.Daemon(extra_conf=conf) as d:
            wait_pool(d, 2)
            owner = {}

            async def main():
                for i in range(6):
                    sid = "share-%d" % i
                    b = await harness.binary(d, sid)
                    p = await harness.phone(d, sid)
                    await harness.assert_exchange(b, p, sid)
                    pid = d.relay_pids()[sid]
                    self.assertNotIn(pid, owner.values(),
                                     "pid %d served %s and %s" % (
                                         pid, sid, [s for s, q in
                                                    owner.items()
                                                    if q == pid]))
                    owner[sid] = pid
                    if i % 2:
                        # let this one retire before the next claim
                        await harness.close_all(b, p)
                        await asyncio.to_thread(
                            d.wait_log, r"\bevent=relay_exited pid=%d "
                            r"server_id=%s status=0" % (pid, sid), 10 * SLOW)
                    else:
                        await harness.close_all(b, p)
            harness.run(main(), timeout=60 * SLOW)
            self.assertEqual(len(set(owner.values())), 6)

    def test_sigterm_stops_pooled_relays(self):
        d = harness.Daemon(extra_conf=RATE + "\nrelay pool 4")
        with d:
            pids = wait_pool(d, 4)
            starts = {pid: harness.proc_stat(pid)[2] for pid in pids}
            mark = d.log_mark()
        # __exit__ sent SIGTERM and asserted exit status 0
        self.assertEqual(d.returncode, 0)
        for pid in pids:
            self.assertFalse(harness.same_process(pid, starts[pid]),
                             "pooled relay %d still running" % pid)
            d.wait_log(r"\bevent=relay_exited pid=%d server_id=- status=0 "
                       r"pooled=1\b" % pid, 1, mark)

    def test_dead_pooled_relay_is_replaced_and_claims_work(self):
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 2") as d:
            pids = wait_pool(d, 2)
            victim = pids[0]
            mark = d.log_mark()
            os.kill(victim, signal.SIGKILL)
            d.wait_log(r"\bevent=relay_exited pid=%d server_id=- signal=9 "
                       r"pooled=1 abnormal=1" % victim, 10, mark)
            again = wait_pool(d, 2, exclude=[victim])
            self.assertIn(pids[1], again)

            async def main():
                b = await harness.binary(d, "after-kill")
                p = await harness.phone(d, "after-kill")
                await harness.assert_exchange(b, p, "after-kill")
                return b, p
            b, p = harness.run(main())
            self.assertIn(d.relay_pids()["after-kill"], again)
            self.assertTrue(d.alive())
            # a pooled relay's death is not a relay exit of a server-id
            m = d.metrics()
            self.assertEqual(sum(v for k, v in m.items() if k.startswith(
                "pyrelayd_relay_process_exits_total")), 0)
            harness.run(harness.close_all(b, p))

    def test_reload_resizes_the_pool(self):
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 2") as d:
            two = wait_pool(d, 2)
            d.extra_conf = RATE + "\nrelay pool 5"
            d.write_conf()
            mark = d.log_mark()
            d.signal(signal.SIGHUP)
            d.wait_log(r"\bevent=reload_done\b", 10, mark)
            five = wait_pool(d, 5)
            self.assertTrue(set(two) <= set(five), (two, five))
            d.extra_conf = RATE + "\nrelay pool 1"
            d.write_conf()
            mark = d.log_mark()
            d.signal(signal.SIGHUP)
            d.wait_log(r"\bevent=reload_done\b", 10, mark)
            one = wait_pool(d, 1)
            self.assertTrue(set(one) <= set(five), (one, five))
            for pid in set(five) - set(one):
                d.wait_log(r"\bevent=relay_pool_stop pid=%d\b" % pid, 10,
                           mark)
                d.wait_log(r"\bevent=relay_exited pid=%d server_id=- "
                           r"status=0\b" % pid, 10, mark)


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("SKIP: test_pool.py needs root (relays drop to user nobody "
              "and chroot)", file=sys.stderr)
        sys.exit(harness.SKIP)
    try:
        test_process.nobody()
    except KeyError:
        print("SKIP: no user nobody", file=sys.stderr)
        sys.exit(harness.SKIP)
    harness.main()
