# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""A worker the parent cannot trust (issue 14): a fake front or relay
(tests/fake_worker.c) speaks msg.c's protocol in the real one's place and
lies, one way per case.  Each time the parent kills it (or the kernel does,
for a system call its seccomp program refuses), logs why, stays up, serves
a good binary and phone, and its descriptor count comes back to what it
was before the fake started.

The daemon runs from copies of pyrelayd and pyrelayd-relay in a directory
of its own; a test replaces one of them with a script that runs the fake
once and puts the real one back (docs/messages.md, "Fake workers in the
tests"): nothing in the daemon serves tests.
"""

import os
import re
import signal
import socket
import time
import subprocess
import unittest

import harness

PYRELAYCTL = os.environ.get("PYRELAYCTL") or os.path.join(
    os.path.dirname(harness.PYRELAYD), "pyrelayctl")
CONF = ("relay pool 0\nrate limit burst 100000 refill 100ms\n"
        "handshake timeout 30s\n")


def fds(d):
    return len(harness.open_fds(d.pid))


def raw_claim(d, sid, src="127.0.0.3"):
    """A binary's upgrade whose answer is not awaited (a fake relay never
    writes one); the socket."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", d.port))
    s.sendall(harness.upgrade_request(d.port, "/v1/server", sid=sid))
    return s


def still_serving(tc, d, before, case):
    """After a fake's end: the parent is up, back to `before` descriptors,
    and a good binary and phone from 127.0.0.2 exchange messages."""
    tc.assertTrue(d.alive(), "the parent died")
    harness.poll_until(lambda: fds(d) == before, 10,
                       "the parent's descriptors back to %d (%d)"
                       % (before, fds(d)))
    kw = {"local_addr": ("127.0.0.2", 0)}

    async def good_pair():
        sid = "good-after-" + case
        b = await harness.binary(d, sid, **kw)
        p = await harness.phone(d, sid, **kw)
        await harness.assert_exchange(b, p, sid)
        await harness.close_all(b, p)
    harness.run(good_pair())


class Case:
    """What one fake did and how its end shows in the log."""

    def __init__(self, tc, d, role, case, mark):
        self.tc, self.d, self.role, self.case = tc, d, role, case
        m = d.wait_log(r"fake_worker\[(\d+)\]: case=%s ready" % case, 15,
                       mark)
        self.pid = int(m.group(1))
        self.mark = mark

    def killed_because(self, reason):
        """The parent killed it, logging reason; returns the log line."""
        m = self.d.wait_log(r"\bevent=worker_killed role=%s pid=%d "
                            r'server_id=\S+ reason="([^"]*)"'
                            % (self.role, self.pid), 15, self.mark)
        self.tc.assertRegex(m.group(1), reason)
        self.exited(r"signal=9\b")
        return m.group(0)

    def exited(self, how):
        m = self.d.wait_log(r"\bevent=%s_exited pid=%d .*" % (self.role,
                                                              self.pid),
                            15, self.mark)
        self.tc.assertRegex(m.group(0), how)


def fake_zygote(d, case):
    """The zygote is killed and its replacement is fake_worker case; once
    that fake has said HELLO, returns the log mark from before, and the
    fake's pid."""
    # the daemon's first zygote may still be starting
    d.wait_log(r"\bevent=zygote_ready pid=\d+", 15)
    old = harness.poll_until(d.zygote_pid, 15, "a zygote to replace")
    d.fake_next("pyrelayd-relay", case)
    mark = d.log_mark()
    os.kill(old, signal.SIGKILL)
    m = d.wait_log(r"\bevent=zygote_ready pid=(?!%d\b)(\d+)" % old, 15,
                   mark)
    return mark, int(m.group(1))


def fake_zygote_gone(d, pid, mark):
    """The fake zygote has exited and a real one is ready after it."""
    d.wait_log(r"\bevent=zygote_exited pid=%d " % pid, 30, mark)
    d.wait_log(r"\bevent=zygote_ready pid=(?!%d\b)\d+" % pid, 30, mark)


class FakeRelays(unittest.TestCase):
    """One daemon; each case fakes the relay of the next claim: its zygote
    is replaced by a fake one that forks a fake relay for it, then
    exits."""

    @classmethod
    def setUpClass(cls):
        cls.d = harness.FakeableDaemon(CONF + "max header size 16K\n")
        cls.d.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        assert rc == 0, "pyrelayd exited %r" % rc

    def run_case(self, case, reason=None, exited=None, during=None):
        d = self.d
        before = fds(d)
        mark, zygote = fake_zygote(d, case)
        sid = "evil-" + case
        binary = raw_claim(d, sid)
        try:
            c = Case(self, d, "relay", case, mark)
            if during is not None:
                during(c, sid)
            if reason is not None:
                c.killed_because(reason)
            else:
                c.exited(exited)
            # its clients are closed with it
            harness.recv_until_close(binary, 10)
        finally:
            binary.close()
        # its zygote forked it, and exits: a real one serves what follows
        fake_zygote_gone(d, zygote, mark)
        still_serving(self, d, before, case)
        return c

    def test_state_with_impossible_counts(self):
        self.run_case("relay-state-bad",
                      r"^type \d+ \(RELAY_STATE\): counts out of range$")

    def test_pack_that_holds_a_hello(self):
        # a relay's batch may come as one packet (msg.h MSG_PACK), which
        # holds messages the relay could send alone: never a HELLO
        self.run_case("relay-pack-hello",
                      r"^pack: type 1 in a pack$")

    def test_killed_before_its_pid_is_known(self):
        # its zygote stops before SPAWNED: the parent deals with the
        # relay's lie first, and logs the kill under the pid once it has
        # it (not pid=0), and kills it then
        out = {}

        def hold_spawned(c, sid):
            m = self.d.wait_log(r"fake_worker\[(\d+)\]: case=relay-state-"
                                r"unnamed stops before SPAWNED", 15, c.mark)
            zygote = int(m.group(1))
            try:
                harness.poll_until(
                    lambda: harness.proc_state(zygote) == "T", 15,
                    "the fake zygote stopped")
                # answered once the parent has dropped the relay: killed
                r = subprocess.run([PYRELAYCTL, "-s", self.d.control_path,
                                    "show", "server", sid],
                                   capture_output=True, timeout=20)
                out["rc"] = r.returncode
                # not signalled yet: the parent has no pid to signal
                self.assertNotIn(harness.proc_state(c.pid), (None, "Z"))
                self.assertNotRegex(
                    "\n".join(self.d.log_lines()[c.mark:]),
                    r"\bevent=worker_killed role=relay pid=0\b")
            finally:
                os.kill(zygote, signal.SIGCONT)
        self.run_case("relay-state-unnamed",
                      r"^type \d+ \(RELAY_STATE\): counts out of range$",
                      during=hold_spawned)
        self.assertNotEqual(out["rc"], 0)

    def test_closed_for_a_connection_it_does_not_hold(self):
        self.run_case("relay-closed-foreign",
                      r"^a message for a connection it does not hold$")

    def test_reroute_with_a_foreign_server_id(self):
        self.run_case("relay-reroute-foreign", r"^bad CONN_REROUTE$")

    def test_reroute_with_a_pipe_for_a_connection(self):
        self.run_case("relay-reroute-pipe",
                      r"^connection fd is not a socket$")

    def test_ctl_phone_with_an_escape(self):
        out = {}

        def show(c, sid):
            r = subprocess.run([PYRELAYCTL, "-s", self.d.control_path,
                                "show", "server", sid], capture_output=True,
                               timeout=20)
            out["text"] = r.stdout + r.stderr
            out["rc"] = r.returncode
        self.run_case("relay-ctl-esc", r"^bad CTL_PHONE$", during=show)
        # nothing the relay made up reaches the operator's terminal
        self.assertNotIn(b"\x1b", out["text"])
        self.assertNotIn(b"\x07", out["text"])
        self.assertNotEqual(out["rc"], 0)
        self.assertIn(b"the relay process exited", out["text"])

    def test_setsockopt_outside_the_relays_list(self):
        c = self.run_case("relay-setsockopt", exited=r"\bsignal=31\b")
        # it got as far as the option relays use
        self.d.wait_log(r"fake_worker\[%d\]: .*TCP_NODELAY allowed" % c.pid,
                        5, c.mark)
        self.assertNotRegex(self.d.log_text(), r"fake_worker\[%d\]: .*"
                            r"SO_RCVBUF allowed" % c.pid)

    def test_relay_that_stops_reading(self):
        phones = []
        rss = {}

        def flood(c, sid):
            self.d.wait_log(r"fake_worker\[%d\]: .*stops reading" % c.pid,
                            5, c.mark)
            rss["before"] = vm_rss(self.d.pid)
            # phones whose heads carry 8 KiB of early bytes: each is a
            # CONN_ATTACH of that size the parent must hold for the relay
            head = harness.upgrade_request(
                self.d.port, "/v1/client", sid=sid,
                headers={"X-Pad": "p" * 8000})
            early = b"\x81\x80" + b"\0" * 4  # a masked empty text frame
            for i in range(250):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                phones.append(s)
                s.bind(("127.0.0.%d" % (10 + i % 10), 0))
                s.settimeout(10)
                s.connect(("127.0.0.1", self.d.port))
                s.sendall(head + early * 1400)
                if killed(self.d, c):
                    break
            rss["during"] = vm_rss(self.d.pid)
        try:
            c = self.run_case("relay-stop-reading",
                              r"^stopped reading its channel: \d+ bytes "
                              r"queued, 1048576 at most$", during=flood)
            line = c.killed_because(r"stopped reading")
            queued = int(re.search(r"(\d+) bytes queued", line).group(1))
            # the queue stopped at the bound (plus the message that
            # crossed it), not at what the phones sent
            self.assertLessEqual(queued, 1048576 + 17 * 1024)
            self.assertLess(rss["during"] - rss["before"], 16 * 1024)
            # every phone it held was closed with it
            for s in phones:
                harness.recv_until_close(s, 10)
        finally:
            for s in phones:
                s.close()


class FakeZygotes(unittest.TestCase):
    """One daemon; each case replaces the zygote by one that answers the
    next claim's MSG_FORK wrong: the parent kills it, signals no process
    it did not start, and a real zygote serves the next claims."""

    @classmethod
    def setUpClass(cls):
        cls.d = harness.FakeableDaemon(CONF)
        cls.d.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        assert rc == 0, "pyrelayd exited %r" % rc

    def run_case(self, case, reason):
        d = self.d
        before = fds(d)
        mark, zygote = fake_zygote(d, case)
        c = Case(self, d, "zygote", case, mark)
        binary = raw_claim(d, "evil-" + case)
        try:
            c.killed_because(reason)
            # the relay it was asked for never ran: its binary is closed
            harness.recv_until_close(binary, 10)
        finally:
            binary.close()
        self.assertTrue(d.alive(), "the parent died")
        fake_zygote_gone(d, zygote, mark)
        still_serving(self, d, before, case)

    def test_pid_that_is_not_the_parents_child(self):
        # pid 1 (init): were it believed, the parent would signal it
        self.run_case("zygote-pid-foreign",
                      r"^a pid that is not the parent's new child$")

    def test_answer_to_a_request_never_made(self):
        self.run_case("zygote-out-of-order", r"^answer out of order$")

    def test_relays_that_cannot_start_are_not_forked_in_a_loop(self):
        # Every relay this zygote forks exits 127 at once.  A relay says
        # no HELLO, so the parent takes a pooled one that exits non-zero
        # as a failed start and asks for the next 1 s later (parent_reap.c
        # start_failed); asking at once, it forked one a millisecond
        # (10,002 in 3 s), and when a relay the zygote had just named
        # asked for the next at once, up to 46.  A daemon of its own
        # whose first zygote is the fake, so that its pool of 2 is filled
        # through it from the start: 2 a second (5 in 3 s), at most 12.
        failed = (r"\bevent=relay_exited pid=\d+ server_id=- status=127 "
                  r".*pooled=1")
        d = harness.FakeableDaemon(CONF.replace("relay pool 0",
                                                "relay pool 2"))
        d.fake_next("pyrelayd-relay", "zygote-relays-fail")
        with d:
            m = d.wait_log(r"fake_worker\[(\d+)\]: "
                           r"case=zygote-relays-fail ready", 15)
            zygote = int(m.group(1))
            d.wait_log(failed, 10)
            first = d.log_mark()
            # the window the rate is counted over: no event marks its end
            time.sleep(3)
            n = sum(1 for line in d.log_lines()[first:]
                    if re.search(failed, line))
            self.assertLessEqual(n, 12, "%d failed starts in 3 s" % n)
            os.kill(zygote, signal.SIGKILL)
            fake_zygote_gone(d, zygote, 0)
            still_serving(self, d, fds(d), "zygote-relays-fail")

    def test_upgrade_with_a_fork_unanswered(self):
        # the upgrade waits 1 s for the answer, then carries neither the
        # zygote nor the relay it never started; the new image serves
        d = self.d
        mark, zygote = fake_zygote(d, "zygote-silent")
        binary = raw_claim(d, "unanswered")
        try:
            d.wait_log(r"fake_worker\[%d\]: case=zygote-silent got FORK"
                       % zygote, 10, mark)
            exec_mark = d.log_mark()
            r = subprocess.run([PYRELAYCTL, "-s", d.control_path,
                                "upgrade"], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            d.wait_log(r"\bevent=upgrade_starts_unanswered count=1$", 10,
                       mark)
            d.wait_log(r"\bevent=upgraded\b", 10, mark)
            # the relay it was asked for never ran: its binary is closed
            harness.recv_until_close(binary, 10)
        finally:
            binary.close()
        self.assertTrue(d.alive(), "the parent died")
        # the fake exits with its channel, reaped by the new image
        harness.poll_until(lambda: harness.proc_state(zygote) is None, 10,
                           "the fake zygote gone")
        # the new image's own zygote forks the next claim's relay
        d.wait_log(r"\bevent=zygote_ready pid=(?!%d\b)\d+" % zygote, 30,
                   exec_mark)

        async def good_pair():
            b = await harness.binary(d, "after-unanswered")
            p = await harness.phone(d, "after-unanswered")
            await harness.assert_exchange(b, p, "after-unanswered")
            await harness.close_all(b, p)
        harness.run(good_pair())


def killed(d, c):
    return re.search(r"\bevent=worker_killed role=relay pid=%d\b" % c.pid,
                     "\n".join(d.log_lines()[c.mark:]))


def vm_rss(pid):
    """VmRSS of pid in KiB."""
    return int(harness.proc_status(pid)["VmRSS"].split()[0])


class FakeFronts(unittest.TestCase):
    """A daemon per case: a front is killed and its replacement is fake."""

    def run_case(self, case, reason=None, exited=None, connect=False):
        with harness.FakeableDaemon(CONF) as d:
            fronts = d.wait_fronts(2)
            before = fds(d)
            d.fake_next("pyrelayd", case)
            mark = d.log_mark()
            os.kill(fronts[0], signal.SIGKILL)
            c = Case(self, d, "front", case, mark)
            if connect:
                # /healthz requests until one reaches the fake (round
                # robin): a real front answers it, the fake hands the
                # connection on wrong and is killed with it unanswered
                for _ in range(4):
                    if harness.raw_request(d.port, b"GET /healthz HTTP/1.1"
                                           b"\r\nHost: x\r\n\r\n") == b"":
                        break
                else:
                    self.fail("no connection reached the fake front")
            if reason is not None:
                c.killed_because(reason)
            else:
                c.exited(exited)
            # a real front again in its place
            d.wait_log(r"\bevent=front_ready pid=(?!%d\b)\d+" % c.pid, 20,
                       mark)
            d.wait_fronts(2, timeout=20)
            still_serving(self, d, before, case)
            return c

    def test_upgrade_for_a_connection_it_does_not_hold(self):
        self.run_case("front-upgrade-foreign",
                      r"^a message for a connection it does not hold$")

    def test_closed_for_a_connection_it_does_not_hold(self):
        self.run_case("front-closed-foreign",
                      r"^a message for a connection it does not hold$")

    def test_upgrade_with_a_pipe(self):
        self.run_case("front-upgrade-pipe",
                      r"^connection fd is not a socket$", connect=True)

    def test_upgrade_with_its_own_channel(self):
        self.run_case("front-upgrade-channel",
                      r"^connection fd is not a stream socket$",
                      connect=True)

    def test_setsockopt_outside_the_fronts_list(self):
        self.run_case("front-setsockopt", exited=r"\bsignal=31\b")


if __name__ == "__main__":
    harness.main()
