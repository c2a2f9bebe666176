#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""pyrelayctl(8) and the control socket: every command against a running
daemon driven by real binaries and phones (show summary / servers / server,
reload, log verbose|brief, kick server), the socket's mode and owner,
clients that send nothing, several clients at once, and pyrelayctl's own
handling of commands and answers (against a stand-in socket).

The pyrelayctl binary is $PYRELAYCTL (make check sets it), else the one
next to $PYRELAYD."""

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import harness

PYRELAYCTL = os.environ.get("PYRELAYCTL") or os.path.join(
    os.path.dirname(harness.PYRELAYD), "pyrelayctl")

USAGE = "usage: pyrelayctl [-s socket] command [argument ...]"
SUMMARY_KEYS = ["version", "uptime_seconds", "connections", "binaries",
                "phones", "relays", "fronts", "ktls"]
SERVERS_HEADER = "# server_id pid binary phones age_seconds"
SERVER_KEYS = ["server_id", "pid", "binary", "phones", "age_seconds"]
PHONES_HEADER = "# conn_id device age_seconds bytes_in bytes_out"
KICKED = "kicked by operator"
CTL_IDLE_TIMEOUT = 5.0  # CTL_TIMEOUT_MS in control.h
NO_SUCH = "pyrelayctl: no such server-id\n"
RELOAD_FAILED = ("pyrelayctl: configuration has errors, keeping the "
                 "running one")

# (retiring: a relay on its way out, briefly)
SERVERS_ROW = re.compile(r"([A-Za-z0-9._-]{1,64}) ([0-9]+) "
                         r"(connected|grace|probe|retiring) ([0-9]+) "
                         r"([0-9]+)")
# a device name: printable ASCII but " and \, or \" \\ \xNN
PHONE_ROW = re.compile(r'(client-[A-Za-z0-9._-]{1,64}-[0-9a-f]{8}) '
                       r'"((?:[ !#-\[\]-~]|\\\\|\\"|\\x[0-9a-fA-F]{2})*)" '
                       r'([0-9]+) ([0-9]+) ([0-9]+)')

_n = 0


def sid(prefix="ctl"):
    global _n
    _n += 1
    return "%s-%d-%s" % (prefix, _n, os.urandom(4).hex())


def require_ctl():
    if os.path.isfile(PYRELAYCTL) and os.access(PYRELAYCTL, os.X_OK):
        return
    if os.environ.get("PYRELAYCTL"):
        print("PYRELAYCTL=%s is not an executable file" % PYRELAYCTL,
              file=sys.stderr)
        sys.exit(1)
    print("SKIP: no pyrelayctl at %s (set PYRELAYCTL)" % PYRELAYCTL,
          file=sys.stderr)
    sys.exit(harness.SKIP)


def run_ctl(sock, *args, timeout=40, preexec_fn=None):
    """Runs pyrelayctl -s sock args to completion: CompletedProcess with
    stdout and stderr decoded as latin-1 (byte for byte)."""
    argv = [PYRELAYCTL] + (["-s", sock] if sock is not None else []) + \
        list(args)
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout, preexec_fn=preexec_fn)
    return subprocess.CompletedProcess(p.args, p.returncode,
                                       p.stdout.decode("latin-1"),
                                       p.stderr.decode("latin-1"))


def unescape(raw):
    """The bytes of a device name as show server writes it (quotes
    removed)."""
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            if raw[i + 1] == "x":
                out.append(int(raw[i + 2:i + 4], 16))
                i += 4
                continue
            out.append(ord(raw[i + 1]))
            i += 2
            continue
        out.append(ord(c))
        i += 1
    return bytes(out)


def parse_summary(test, out):
    test.assertTrue(out.endswith("\n"), repr(out))
    pairs = []
    for line in out.splitlines():
        m = re.fullmatch(r"([a-z_]+) (\S+)", line)
        test.assertTrue(m, "bad summary line %r in %r" % (line, out))
        pairs.append((m.group(1), m.group(2)))
    keys = [k for k, _ in pairs]
    test.assertEqual(len(set(keys)), len(keys), out)
    # these keys, in this order; others may come between and after
    test.assertEqual([k for k in keys if k in SUMMARY_KEYS], SUMMARY_KEYS,
                     out)
    v = dict(pairs)
    for k, val in pairs:
        if re.fullmatch(r"[0-9]+", val):
            v[k] = int(val)
    for k in SUMMARY_KEYS:
        if k not in ("version", "ktls"):
            test.assertIsInstance(v[k], int, "%s in %r" % (k, out))
    return v


def parse_servers(test, out):
    """{sid: (pid, state, phones, age)}, checking the format and order."""
    test.assertTrue(out.endswith("\n"), repr(out))
    lines = out.splitlines()
    test.assertEqual(lines[0], SERVERS_HEADER)
    rows = []
    for line in lines[1:]:
        m = SERVERS_ROW.fullmatch(line)
        test.assertTrue(m, "bad servers line %r in %r" % (line, out))
        rows.append((m.group(1), int(m.group(2)), m.group(3),
                     int(m.group(4)), int(m.group(5))))
    sids = [r[0] for r in rows]
    test.assertEqual(sids, sorted(sids), "servers not sorted: %r" % out)
    test.assertEqual(len(set(sids)), len(sids), out)
    return {r[0]: r[1:] for r in rows}


def parse_server(test, out):
    """(info, phones): info maps the SERVER_KEYS to values (numbers as
    int); phones maps conn id -> (device bytes, device as written, age,
    bytes in, bytes out)."""
    test.assertTrue(out.endswith("\n"), repr(out))
    lines = out.splitlines()
    test.assertGreaterEqual(len(lines), 6, out)
    info = {}
    for key, line in zip(SERVER_KEYS, lines[:5]):
        m = re.fullmatch(r"([a-z_]+) (\S+)", line)
        test.assertTrue(m, "bad line %r in %r" % (line, out))
        test.assertEqual(m.group(1), key, out)
        info[key] = m.group(2)
    for key in ("pid", "phones", "age_seconds"):
        test.assertRegex(info[key], r"^[0-9]+$", out)
        info[key] = int(info[key])
    test.assertIn(info["binary"], ("connected", "grace", "probe",
                                   "retiring"), out)
    test.assertEqual(lines[5], PHONES_HEADER, out)
    phones = {}
    for line in lines[6:]:
        m = PHONE_ROW.fullmatch(line)
        test.assertTrue(m, "bad phone line %r in %r" % (line, out))
        phones[m.group(1)] = (unescape(m.group(2)), m.group(2),
                              int(m.group(3)), int(m.group(4)),
                              int(m.group(5)))
    test.assertEqual(len(phones), len(lines) - 6, "conn id twice: %r" % out)
    test.assertEqual(info["phones"], len(phones), out)
    return info, phones


def unix_connect(path, timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def read_to_eof(s, timeout):
    """(bytes, seconds) until the peer closes; AssertionError at the
    deadline."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    out = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("control connection still open after %gs; "
                                 "got %r" % (timeout, out[:200]))
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return out, time.monotonic() - t0
        out += chunk


def raw_exchange(path, data, timeout=10):
    with unix_connect(path, timeout) as s:
        s.sendall(data)
        return read_to_eof(s, timeout)[0]


class CtlCase(unittest.TestCase):
    """Helpers shared by the daemon tests."""

    def ctl(self, d, *args):
        return run_ctl(d.control_path, *args)

    def ctl_ok(self, d, *args):
        """stdout of a command that must succeed."""
        r = self.ctl(d, *args)
        self.assertEqual((r.returncode, r.stderr), (0, ""),
                         "pyrelayctl %s: %r" % (" ".join(args), r))
        return r.stdout

    def ctl_err(self, d, *args):
        """stderr of a command that must fail (exit 1, nothing on
        stdout)."""
        r = self.ctl(d, *args)
        self.assertEqual((r.returncode, r.stdout), (1, ""),
                         "pyrelayctl %s: %r" % (" ".join(args), r))
        return r.stderr

    async def actl_ok(self, d, *args):
        return await asyncio.to_thread(self.ctl_ok, d, *args)

    async def actl_err(self, d, *args):
        return await asyncio.to_thread(self.ctl_err, d, *args)

    def summary(self, d):
        return parse_summary(self, self.ctl_ok(d, "show", "summary"))

    def servers(self, d):
        return parse_servers(self, self.ctl_ok(d, "show", "servers"))

    def server(self, d, s):
        return parse_server(self, self.ctl_ok(d, "show", "server", s))

    async def aservers(self, d):
        return await asyncio.to_thread(self.servers, d)

    async def aserver(self, d, s):
        return await asyncio.to_thread(self.server, d, s)

    async def await_until(self, pred, timeout, what):
        """Bounded polling of pred (run in a thread) for a state the
        daemon reaches after a client-visible event (a close, an exit)."""
        return await asyncio.to_thread(harness.poll_until, pred, timeout,
                                       what, 0.05)


# ---------------------------------------------------------------------------
# the read-only commands

class Summary(CtlCase):
    """A fresh daemon each: nothing else may happen in it meanwhile."""

    def test_summary_matches_healthz(self):
        with harness.Daemon(workers=2) as d:
            self.summary_matches_healthz(d)

    def summary_matches_healthz(self, d):
        v = self.summary(d)
        h = d.healthz()
        self.assertEqual(v["version"], h["version"])
        self.assertLessEqual(abs(v["uptime_seconds"] - h["uptime_seconds"]),
                             2)
        self.assertEqual((v["connections"], v["binaries"], v["phones"],
                          v["relays"]), (0, 0, 0, 0))
        self.assertEqual(v["fronts"], 2)
        self.assertEqual(v["fronts"], len(d.wait_fronts(2)))
        self.assertRegex(v["ktls"], r"^[a-z_]+$")
        s1, s2, s3 = sid("sum"), sid("sum"), sid("sum")

        async def main():
            b1 = await harness.binary(d, s1)
            b2 = await harness.binary(d, s2)
            b3 = await harness.binary(d, s3)
            ps = [await harness.phone(d, s1) for _ in range(2)]
            ps.append(await harness.phone(d, s2))
            ps.append(await harness.phone(d, s3))
            await harness.assert_exchange(b1, ps[0], s1)
            # s3's binary leaves: its relay lingers in grace with its phone
            await b3.close()
            await self.await_until(
                lambda: self.servers(d).get(s3, (0, ""))[1] == "grace", 10,
                "%s in grace" % s3)

            def settled():
                v = self.summary(d)
                h = d.healthz()
                return (v["binaries"], v["phones"]) == \
                    (h["connected_binaries"], h["connected_phones"]) and \
                    v["connections"] == 6 and v
            v = await self.await_until(settled, 10, "summary == healthz")
            self.assertEqual((v["binaries"], v["phones"]), (2, 4))
            self.assertEqual(v["relays"], 3)
            self.assertEqual(v["relays"], len(d.relay_pids()))
            self.assertEqual(v["fronts"], 2)
            await harness.close_all(b1, b2, *ps)
        harness.run(main())

    def test_bad_command_never_reaches_daemon(self):
        with harness.Daemon() as d:
            self.bad_command_never_reaches_daemon(d)

    def bad_command_never_reaches_daemon(self, d):
        """(Client.test_bad_commands_are_not_sent proves it on a stand-in
        socket; here the daemon's log must show no trace of them.)"""
        d.wait_fronts()
        mark = d.log_mark()
        for args in (("bogus",), ("show",), ("show", "server"),
                     ("kick", "server", "a/b"), ("reload", "now"),
                     ("show", "server", "x" * 65)):
            r = self.ctl(d, *args)
            self.assertEqual(r.returncode, 1, r)
            self.assertEqual(r.stdout, "")
            self.assertIn(USAGE, r.stderr)
        # a good command after them: what they would have logged came first
        self.summary(d)
        time.sleep(0.3)
        for line in d.log_lines()[mark:]:
            self.assertNotRegex(line, r"bogus|a/b|reload now|x{65}|unknown "
                                r"command|server-id expected|invalid "
                                r"server-id|too many arguments")
        self.assertTrue(d.alive())


class Show(CtlCase):

    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon(workers=2)
        cls.d.start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        assert rc == 0, "pyrelayd exited %r" % rc

    def test_socket_mode_and_owner(self):
        st = os.stat(self.d.control_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.filemode(st.st_mode), "srw-------")
        euid = int(harness.proc_status(self.d.pid)["Uid"].split()[1])
        self.assertEqual(st.st_uid, euid)
        if not harness.is_root():
            return
        self.assertEqual(st.st_uid, 0)
        # another user cannot use it: the mode, not the directory, stops it
        self.assertEqual(os.stat(self.d.tmpdir).st_mode & 0o005, 0o005)
        code = ("import socket, sys\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "try:\n"
                "    s.connect(sys.argv[1])\n"
                "except PermissionError:\n"
                "    sys.exit(3)\n")
        p = subprocess.run(["/usr/bin/python3", "-c", code,
                            self.d.control_path], timeout=20,
                           preexec_fn=harness._drop_to("nobody"),
                           capture_output=True, cwd="/")
        self.assertEqual(p.returncode, 3, "nobody could connect: %r" % (p,))

    def test_servers(self):
        d = self.d
        names = [sid("srv-b"), sid("srv-a"), sid("srv-c"), "0-" + sid("srv")]

        async def main():
            out = await self.actl_ok(d, "show", "servers")
            self.assertTrue(out.startswith(SERVERS_HEADER + "\n"))
            bins, phones = {}, []
            for i, s in enumerate(names):
                bins[s] = await harness.binary(d, s)
                for _ in range(i):
                    phones.append(await harness.phone(d, s))
            await harness.assert_exchange(bins[names[1]], phones[0],
                                          names[1])
            rows = await self.aservers(d)
            pids = d.relay_pids()
            for i, s in enumerate(names):
                self.assertIn(s, rows)
                pid, state, nphones, age = rows[s]
                self.assertEqual(pid, pids[s], s)
                self.assertEqual(state, "connected", s)
                self.assertEqual(nphones, i, s)
                self.assertLessEqual(age, 5, s)
            # ages grow
            await asyncio.sleep(1.2)
            rows = await self.aservers(d)
            for s in names:
                self.assertGreaterEqual(rows[s][3], 1, s)
            # a binary that leaves: grace, phones still counted
            await bins[names[2]].close()
            await self.await_until(
                lambda: self.servers(d)[names[2]][1] == "grace", 10,
                "grace in show servers")
            rows = await self.aservers(d)
            self.assertEqual(rows[names[2]][:3], (pids[names[2]], "grace", 2))
            self.assertEqual(rows[names[0]][1], "connected")
            # a phone that leaves
            await phones[0].close()
            await self.await_until(
                lambda: self.servers(d)[names[1]][2] == 0, 10,
                "the phone count to drop")
            await harness.close_all(*bins.values(), *phones)
        harness.run(main())

    def test_server_phones(self):
        d = self.d
        s = sid("one")
        devices = [
            ('Pixel "8" \u00e9', b'Pixel "8" \xc3\xa9',
             r'Pixel \"8\" \xc3\xa9'),
            ("back\\slash\ttab", b"back\\slash\ttab", r"back\\slash\x09tab"),
            (None, b"", ""),
            ("x" * 200, b"x" * 128, "x" * 128),
            ("iPhone", b"iPhone", "iPhone"),
        ]

        async def main():
            b = await harness.binary(d, s)
            info, phones = await self.aserver(d, s)
            self.assertEqual(info["server_id"], s)
            self.assertEqual(info["pid"], d.relay_pids()[s])
            self.assertEqual(info["binary"], "connected")
            self.assertEqual(info["phones"], 0)
            self.assertEqual(phones, {})
            ps, cids = [], []
            for i, (dev, _, _) in enumerate(devices):
                p = await harness.phone(d, s, device=dev)
                ps.append(p)
                cids.append(await harness.assert_exchange(b, p, s, i))
            info, phones = await self.aserver(d, s)
            self.assertEqual(info["phones"], len(devices))
            self.assertEqual(sorted(phones), sorted(cids))
            for cid, (_, want, want_raw) in zip(cids, devices):
                got, raw, age, bin_, bout = phones[cid]
                self.assertEqual(got, want, cid)
                self.assertEqual(raw.lower(), want_raw.lower(), cid)
                self.assertLessEqual(age, 5)
                # the exchange went through: bytes both ways
                self.assertGreater(bin_, 0, cid)
                self.assertGreater(bout, 0, cid)
            # the \xNN escapes carry exactly two hex digits each
            self.assertRegex(phones[cids[0]][1], r'\\"8\\" \\x(?i:c3)\\x(?i:a9)$')
            # traffic on one phone: its counts grow by at least the payload
            before = phones[cids[4]]
            big = json.dumps({"pad": "p" * 3000})
            await ps[4].send(big)
            env = json.loads(await harness.recv(b))
            self.assertEqual(env["conn_id"], cids[4])
            reply = {"pad": "q" * 5000}
            await b.send(json.dumps({"conn_id": cids[4], "frame": reply}))
            self.assertEqual(json.loads(await harness.recv(ps[4])), reply)
            info, phones = await self.aserver(d, s)
            after = phones[cids[4]]
            self.assertGreaterEqual(after[3] - before[3], len(big))
            self.assertGreaterEqual(after[4] - before[4], 5000)
            # ages grow
            await asyncio.sleep(1.2)
            info, phones = await self.aserver(d, s)
            self.assertGreaterEqual(info["age_seconds"], 1)
            for cid in cids:
                self.assertGreaterEqual(phones[cid][2], 1)
            # a phone that leaves is no longer listed
            await ps[1].close()
            await self.await_until(
                lambda: cids[1] not in self.server(d, s)[1], 10,
                "the closed phone to go from show server")
            # grace: the binary is gone, the phones stay
            await b.close()
            await self.await_until(
                lambda: self.server(d, s)[0]["binary"] == "grace", 10,
                "show server to say grace")
            info, phones = await self.aserver(d, s)
            self.assertEqual(info["phones"], len(devices) - 1)
            await harness.close_all(*ps)
        harness.run(main())

    def test_unknown_server_id(self):
        d = self.d
        for args in (("show", "server", "no-such-sid"),
                     ("kick", "server", "no-such-sid"),
                     ("show", "server", "x" * 64)):
            self.assertEqual(self.ctl_err(d, *args), NO_SUCH)
        # a phone for a server-id nobody claimed made no relay either
        s = sid("nobody")

        async def main():
            p = await harness.phone(d, s)
            await harness.expect_close(p, 4404)
        harness.run(main())
        self.assertEqual(self.ctl_err(d, "show", "server", s), NO_SUCH)
        self.assertNotIn(s, self.servers(d))

    def test_daemon_checks_commands_too(self):
        """A client other than pyrelayctl gets errors, not a crash."""
        d = self.d
        for line in (b"bogus\n", b"show server a/b\n", b"\n",
                     b"show summary now\n", b"kick server\n",
                     b"show\x01summary\n"):
            out = raw_exchange(d.control_path, line)
            self.assertRegex(out, rb"^error: [^\n]+\n", line)
        out = raw_exchange(d.control_path, b"show summary\r\n")
        self.assertTrue(out.startswith(b"ok\nversion "), out)
        # a line longer than CTL_LINE_MAX: an error or a close, promptly
        with unix_connect(d.control_path) as s:
            try:
                s.sendall(b"show summary" + b" " * 400 + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            out, took = read_to_eof(s, 10)
        self.assertTrue(out == b"" or out.startswith(b"error: "), out)
        self.assertTrue(d.alive())
        self.summary(d)

    def test_idle_client_is_dropped(self):
        d = self.d
        idle = unix_connect(d.control_path)
        partial = unix_connect(d.control_path)
        partial.sendall(b"show summ")
        t0 = time.monotonic()
        try:
            # the daemon answers others meanwhile, at once
            for _ in range(3):
                t = time.monotonic()
                self.summary(d)
                self.assertLess(time.monotonic() - t, 2.0)
            # a slow client that completes its line in time is served
            with unix_connect(d.control_path) as slow:
                time.sleep(1.0)
                slow.sendall(b"show summary\n")
                out, _ = read_to_eof(slow, 10)
            self.assertTrue(out.startswith(b"ok\nversion "), out)
            for s in (idle, partial):
                out, _ = read_to_eof(s, CTL_IDLE_TIMEOUT + 5)
                self.assertTrue(out == b"" or out.startswith(b"error: "),
                                out)
            self.assertLess(time.monotonic() - t0, CTL_IDLE_TIMEOUT + 3)
        finally:
            idle.close()
            partial.close()
        self.assertTrue(d.alive())
        self.assertEqual(d.healthz()["status"], "ok")
        self.summary(d)

    def test_concurrent_clients(self):
        d = self.d
        s = sid("conc")

        async def main():
            b = await harness.binary(d, s)
            p = await harness.phone(d, s, device="conc")
            await harness.assert_exchange(b, p, s)

            def burst():
                cmds = [("show", "summary"), ("show", "servers"),
                        ("show", "server", s)] * 8
                procs = [subprocess.Popen(
                    [PYRELAYCTL, "-s", d.control_path] + list(c),
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE) for c in cmds]
                outs = []
                for c, pr in zip(cmds, procs):
                    out, err = pr.communicate(timeout=40)
                    outs.append((c, pr.returncode, out.decode("latin-1"),
                                 err.decode("latin-1")))
                return outs
            for c, rc, out, err in await asyncio.to_thread(burst):
                self.assertEqual((rc, err), (0, ""), c)
                if c[1] == "summary":
                    self.assertGreaterEqual(parse_summary(self, out)["phones"],
                                            1)
                elif c[1] == "servers":
                    self.assertIn(s, parse_servers(self, out))
                else:
                    self.assertEqual(parse_server(self, out)[0]["phones"], 1)

            # raw clients connected together, answered in any order
            def raw():
                socks = [unix_connect(d.control_path) for _ in range(12)]
                try:
                    for i, c in reversed(list(enumerate(socks))):
                        c.sendall(b"show server %s\n" % s.encode()
                                  if i % 2 else b"show summary\n")
                    return [read_to_eof(c, 10)[0] for c in socks]
                finally:
                    for c in socks:
                        c.close()
            for i, out in enumerate(await asyncio.to_thread(raw)):
                want = (b"ok\nserver_id %s\n" % s.encode()) if i % 2 \
                    else b"ok\nversion "
                self.assertTrue(out.startswith(want), out)
            await harness.close_all(b, p)
        harness.run(main())


# ---------------------------------------------------------------------------
# commands that change the daemon: a daemon each

class Probe(CtlCase):

    def test_probe_state(self):
        with harness.Daemon("conflict probe 3s") as d:
            s = sid("probe")
            # a binary on a raw socket never answers the relay's ping
            old = harness.RawWS.connect(
                d.port, harness.upgrade_request(d.port, "/v1/server", sid=s))
            try:
                self.assertEqual(old.status, 101)

                async def main():
                    rows = await self.aservers(d)
                    self.assertEqual(rows[s][1], "connected")
                    pid = rows[s][0]
                    new = await harness.binary(d, s)
                    await self.await_until(
                        lambda: self.servers(d)[s][1] == "probe", 2.5,
                        "probe in show servers")
                    # the probe ends in a takeover: connected again
                    await self.await_until(
                        lambda: self.servers(d)[s][1] == "connected", 10,
                        "connected after the takeover")
                    self.assertEqual(self.servers(d)[s][0], pid)
                    info, _ = await self.aserver(d, s)
                    self.assertEqual(info["binary"], "connected")
                    p = await harness.phone(d, s)
                    await harness.assert_exchange(new, p, s)
                    await harness.close_all(new, p)
                harness.run(main())
            finally:
                old.close()


class Reload(CtlCase):

    def test_reload(self):
        with harness.Daemon("phones per server 1") as d:
            s1, s2, s3 = sid("rl"), sid("rl"), sid("rl")

            async def main():
                b = await harness.binary(d, s1)
                p1 = await harness.phone(d, s1)
                await harness.assert_exchange(b, p1, s1, 1)
                p2 = await harness.phone(d, s1)
                await harness.expect_close(p2, 4429)
                # a good file: the new limit applies to new phones
                d.extra_conf = "phones per server 2"
                d.write_conf()
                mark = d.log_mark()
                self.assertEqual(await self.actl_ok(d, "reload"), "")
                await asyncio.to_thread(d.wait_log, r"event=reload_done", 10,
                                        mark)
                p2 = await harness.phone(d, s1)
                await harness.assert_exchange(b, p2, s1, 2)
                p3 = await harness.phone(d, s1)
                await harness.expect_close(p3, 4429)
                b2 = await harness.binary(d, s2)
                q = [await harness.phone(d, s2) for _ in range(2)]
                for i, p in enumerate(q):
                    await harness.assert_exchange(b2, p, s2, i)
                q3 = await harness.phone(d, s2)
                await harness.expect_close(q3, 4429)
                # a broken file: an error, exit 1, the running one kept
                good = d.conf_text()
                bad_line = good.count("\n") + 1
                d.write_conf(good.replace("phones per server 2",
                                          "phones per server 1") +
                             "this is no keyword\n")
                r = await asyncio.to_thread(self.ctl, d, "reload")
                self.assertEqual((r.returncode, r.stdout), (1, ""), r)
                lines = r.stderr.splitlines()
                self.assertEqual(lines[0], RELOAD_FAILED, r.stderr)
                self.assertTrue(any(
                    l.startswith("%s:%d: " % (d.conf_path, bad_line))
                    for l in lines[1:]), r.stderr)
                self.assertTrue(d.alive())
                # everything still served, the limit still 2
                await harness.assert_exchange(b, p1, s1, 3)
                await harness.assert_exchange(b2, q[1], s2, 4)
                b3 = await harness.binary(d, s3)
                r3 = [await harness.phone(d, s3) for _ in range(2)]
                for i, p in enumerate(r3):
                    await harness.assert_exchange(b3, p, s3, 5 + i)
                r4 = await harness.phone(d, s3)
                await harness.expect_close(r4, 4429)
                await self.await_until(
                    lambda: self.summary(d)["phones"] == 6, 10,
                    "6 phones in the summary")
                await harness.close_all(b, p1, p2, b2, *q, b3, *r3)
            harness.run(main())
            self.assertEqual(d.healthz()["status"], "ok")


class LogLevel(CtlCase):

    def test_log_verbose_and_brief(self):
        preset = bool(os.environ.get("PYRELAYD_TEST_VERBOSE"))
        with harness.Daemon() as d:
            sa, sb, sc = sid("la"), sid("lb"), sid("lc")
            debug = r"event=relay_started server_id=%s pid=[0-9]+"

            async def no_debug_line(s, check):
                """s's relay start logged no debug line: a later line of
                the parent (a 4404 it logs) is the horizon."""
                mark = d.log_mark()
                b = await harness.binary(d, s)
                marker = sid("marker")
                p = await harness.phone(d, marker)
                await harness.expect_close(p, 4404)
                await asyncio.to_thread(d.wait_log, re.escape(marker), 10,
                                        mark)
                if check:
                    self.assertFalse(
                        [l for l in d.log_lines()[mark:]
                         if re.search(debug % re.escape(s), l)],
                        "a debug line while brief")
                return b

            async def main():
                # with PYRELAYD_TEST_VERBOSE the daemon starts verbose
                ba = await no_debug_line(sa, not preset)
                self.assertEqual(await self.actl_ok(d, "log", "verbose"), "")
                mark = d.log_mark()
                bb = await harness.binary(d, sb)
                await asyncio.to_thread(d.wait_log, debug % re.escape(sb), 10,
                                        mark)
                # relays started from now on log debug lines too
                await asyncio.to_thread(d.wait_log, r"event=relay_ready server_id=%s"
                                        % re.escape(sb), 10, mark)
                self.assertEqual(await self.actl_ok(d, "log", "brief"), "")
                bc = await no_debug_line(sc, True)
                await harness.close_all(ba, bb, bc)
            harness.run(main())


class Kick(CtlCase):

    def test_kick_server(self):
        with harness.Daemon() as d:
            s, other = sid("kick"), sid("keep")

            async def main():
                b = await harness.binary(d, s)
                p1 = await harness.phone(d, s, device="one")
                p2 = await harness.phone(d, s)
                await harness.assert_exchange(b, p1, s, 1)
                await harness.assert_exchange(b, p2, s, 2)
                ob = await harness.binary(d, other)
                op = await harness.phone(d, other)
                await harness.assert_exchange(ob, op, other, 3)
                pid = d.wait_relays(2)[s]
                self.assertEqual(await self.actl_ok(d, "kick", "server", s),
                                 "")
                for ws in (b, p1, p2):
                    await harness.expect_close(ws, 1001, KICKED)
                # the relay exits and the server-id is free
                await self.await_until(
                    lambda: harness.proc_state(pid) in (None, "Z") and
                    s not in d.relay_pids(), 10, "the kicked relay to exit")
                await self.await_until(lambda: s not in self.servers(d), 10,
                                       "show servers to drop it")
                self.assertEqual(await self.actl_err(d, "show", "server", s),
                                 NO_SUCH)
                self.assertEqual(await self.actl_err(d, "kick", "server", s),
                                 NO_SUCH)
                p3 = await harness.phone(d, s)
                await harness.expect_close(p3, 4404)
                # a binary claims it fresh, with a new relay
                b2 = await harness.binary(d, s)
                p4 = await harness.phone(d, s)
                await harness.assert_exchange(b2, p4, s, 4)
                new_pid = d.relay_pids()[s]
                self.assertNotEqual(new_pid, pid)
                self.assertEqual(self.servers(d)[s][:3],
                                 (new_pid, "connected", 1))
                # the other server-id did not notice
                await harness.assert_exchange(ob, op, other, 5)
                self.assertEqual(self.servers(d)[other][1:3],
                                 ("connected", 1))
                await harness.close_all(b2, p4, ob, op)
            harness.run(main())

    def test_kick_server_in_grace(self):
        with harness.Daemon() as d:
            s = sid("kgrace")

            async def main():
                b = await harness.binary(d, s)
                p = await harness.phone(d, s)
                await harness.assert_exchange(b, p, s)
                pid = d.relay_pids()[s]
                await b.close()
                await self.await_until(
                    lambda: self.servers(d)[s][1] == "grace", 10, "grace")
                self.assertEqual(await self.actl_ok(d, "kick", "server", s),
                                 "")
                await harness.expect_close(p, 1001, KICKED)
                await self.await_until(
                    lambda: harness.proc_state(pid) in (None, "Z") and
                    s not in self.servers(d), 10, "the relay to exit")
                p2 = await harness.phone(d, s)
                await harness.expect_close(p2, 4404)
                await self.await_until(
                    lambda: d.healthz()["connected_phones"] == 0 and
                    self.summary(d)["phones"] == 0, 10, "no phones")
            harness.run(main())


# ---------------------------------------------------------------------------
# pyrelayctl against a stand-in socket: the client's side of the protocol

class StandIn:
    """A listening AF_UNIX socket that answers each connection with a
    canned answer (sent in the given pieces) and records what it read."""

    def __init__(self, pieces=(b"ok\n",), delay=0.0, read=True):
        self.dir = tempfile.mkdtemp(prefix="pyrelayctl-test-")
        self.path = os.path.join(self.dir, "ctl.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.pieces = pieces
        self.delay = delay
        self.read = read
        self.received = []
        self.thread = None

    def serve_one(self):
        def run():
            self.sock.settimeout(20)
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                return
            with c:
                if not self.read:
                    return
                c.settimeout(10)
                got = b""
                try:
                    while not got.endswith(b"\n"):
                        chunk = c.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                    self.received.append(got)
                    for piece in self.pieces:
                        time.sleep(self.delay)
                        c.sendall(piece)
                except OSError:
                    pass  # pyrelayctl gave up first
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def accepted_nothing(self):
        self.sock.setblocking(False)
        try:
            c, _ = self.sock.accept()
        except BlockingIOError:
            return True
        c.close()
        return False

    def close(self):
        if self.thread is not None:
            self.thread.join(20)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Client(unittest.TestCase):

    def answer(self, pieces, *args, delay=0.0):
        st = StandIn(pieces, delay).serve_one()
        try:
            r = run_ctl(st.path, *args)
        finally:
            st.close()
        return r, st.received

    def test_bad_commands_are_not_sent(self):
        st = StandIn()
        try:
            cases = [
                ([], None),
                ([""], "empty command"),
                (["  "], "empty command"),
                (["bogus"], "unknown command"),
                (["show"], "unknown command"),
                (["show", "everything"], "unknown command"),
                (["SHOW", "SUMMARY"], "unknown command"),
                (["show\x01summary"], "unknown command"),
                (["reload", "\n"], "unknown command"),
                (["reload\nreload"], "unknown command"),
                (["show", "server"], "server-id expected"),
                (["kick", "server"], "server-id expected"),
                (["show", "server", "a/b"], "invalid server-id"),
                (["kick", "server", "x" * 65], "invalid server-id"),
                (["kick", "server", "caf\u00e9"], "invalid server-id"),
                (["reload", "now"], "too many arguments"),
                (["show", "server", "a", "b"], "too many arguments"),
                (["log", "verbose", "x"], "too many arguments"),
                (["kick", "server", "x" * 300], "command too long"),
                (["-x", "reload"], None),
            ]
            for args, why in cases:
                r = run_ctl(st.path, *args)
                self.assertEqual(r.returncode, 1, (args, r))
                self.assertEqual(r.stdout, "", args)
                lines = r.stderr.splitlines()
                self.assertEqual(lines[-1], USAGE, (args, r.stderr))
                if why is not None:
                    self.assertEqual(lines, ["pyrelayctl: " + why, USAGE],
                                     args)
            # no -s and a bad command: the default socket is not tried either
            r = run_ctl(None, "bogus")
            self.assertEqual(r.stderr, "pyrelayctl: unknown command\n%s\n"
                             % USAGE)
            self.assertTrue(st.accepted_nothing(), "a bad command was sent")
        finally:
            st.close()

    def test_line_sent(self):
        for args, line in (
                (["show", "summary"], b"show summary\n"),
                (["show", "servers"], b"show servers\n"),
                (["show", "server", "a.b_c-1"], b"show server a.b_c-1\n"),
                (["reload"], b"reload\n"),
                (["log", "verbose"], b"log verbose\n"),
                (["log", "brief"], b"log brief\n"),
                (["kick", "server", "x" * 64], b"kick server " +
                 b"x" * 64 + b"\n"),
                # options end at the command: a server-id may start with -
                (["kick", "server", "-abc"], b"kick server -abc\n"),
                (["--", "show", "server", "-s"], b"show server -s\n"),
                (["show summary"], b"show summary\n")):
            r, got = self.answer([b"ok\n"], *args)
            self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""),
                             args)
            self.assertEqual(got, [line], args)

    def test_ok_answers(self):
        body = b"version 0.1.0\nuptime_seconds 3\n"
        r, _ = self.answer([b"ok\n" + body], "show", "summary")
        self.assertEqual((r.returncode, r.stdout, r.stderr),
                         (0, body.decode(), ""))
        # in pieces, the first line split
        r, _ = self.answer([b"o", b"k", b"\nversion", b" 0.1.0\n"], "show",
                           "summary", delay=0.05)
        self.assertEqual((r.returncode, r.stdout, r.stderr),
                         (0, "version 0.1.0\n", ""))
        # "ok" and the close, no newline
        r, _ = self.answer([b"ok"], "reload")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""))
        # a long answer passes through intact
        big = b"".join(b"client-s-%08x \"d\\x%02x\" 1 2 3\n" % (i, i & 0xff)
                       for i in range(60000))
        r, _ = self.answer([b"ok\n", big[:100000], big[100000:]], "show",
                           "server", "s")
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stdout.encode("latin-1"), big)

    def test_error_answers(self):
        r, _ = self.answer([b"error: no such server-id\n"], "show", "server",
                           "s")
        self.assertEqual((r.returncode, r.stdout, r.stderr),
                         (1, "", NO_SUCH))
        r, _ = self.answer([b"error: configuration has errors, keeping the "
                            b"running one\n/etc/x.conf:3: syntax error\n"
                            b"/etc/x.conf:9: unknown keyword\n"], "reload")
        self.assertEqual((r.returncode, r.stdout), (1, ""))
        self.assertEqual(r.stderr, RELOAD_FAILED + "\n/etc/x.conf:3: syntax "
                         "error\n/etc/x.conf:9: unknown keyword\n")
        # no newline before the close
        r, _ = self.answer([b"error: boom"], "reload")
        self.assertEqual((r.returncode, r.stdout, r.stderr),
                         (1, "", "pyrelayctl: boom\n"))
        # control bytes of the message are not written to a terminal
        r, _ = self.answer([b"error: a\x1b[2Jb\n"], "reload")
        self.assertEqual(r.returncode, 1)
        self.assertNotIn("\x1b", r.stderr)
        self.assertTrue(r.stderr.startswith("pyrelayctl: a"), r.stderr)

    def test_bad_answers(self):
        bad = "pyrelayctl: bad answer from pyrelayd\n"
        for pieces in ([], [b"\n"], [b"hello\n"], [b"OK\n"], [b"ok \n"],
                       [b"okay\nversion 1\n"], [b"error:x\n"], [b"error\n"],
                       [b"x" * 5000 + b"\n"], [b"ok\r\n"]):
            r, _ = self.answer(pieces, "show", "summary")
            self.assertEqual((r.returncode, r.stdout, r.stderr),
                             (1, "", bad), pieces)

    def test_connect_errors(self):
        d = tempfile.mkdtemp(prefix="pyrelayctl-test-")
        try:
            path = os.path.join(d, "none.sock")
            r = run_ctl(path, "show", "summary")
            self.assertEqual((r.returncode, r.stdout, r.stderr),
                             (1, "", "pyrelayctl: %s: No such file or "
                              "directory\n" % path))
            # a socket file nobody listens on
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            s.close()
            r = run_ctl(path, "reload")
            self.assertEqual((r.returncode, r.stdout, r.stderr),
                             (1, "", "pyrelayctl: %s: Connection refused\n"
                              % path))
            long_path = "/" + "x" * 200
            r = run_ctl(long_path, "reload")
            self.assertEqual(r.returncode, 1)
            self.assertTrue(r.stderr.startswith("pyrelayctl: %s: "
                                                % long_path), r.stderr)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def test_daemon_closes_early(self):
        """The daemon goes away before it answers: an error, no
        SIGPIPE."""
        for read in (True, False):
            for _ in range(5):
                st = StandIn(pieces=(), read=read)
                try:
                    st.serve_one()
                    r = run_ctl(st.path, "show", "servers")
                finally:
                    st.close()
                self.assertEqual(r.returncode, 1, r)
                self.assertEqual(r.stdout, "")
                self.assertTrue(r.stderr.startswith("pyrelayctl: "), r)


if __name__ == "__main__":
    require_ctl()
    harness.main()
