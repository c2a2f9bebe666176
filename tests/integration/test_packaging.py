#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Packaging (docs/packaging.md): the systemd unit and the sysvinit script
that `make` writes into the build tree's etc/.

SystemdUnit: `systemd-analyze verify` must accept etc/pyrelayd.service
without a single warning (it exits 0 on most of them, so its output is
what counts), and the unit must keep what the daemon relies on: -n before
the start, -d in the foreground, HUP for a reload, the capability set.
Skipped, with the reason, where there is no systemd-analyze.

RcScript: etc/rc.d/pyrelayd driven as an administrator would, on a
temporary configuration on free loopback ports, with its settings taken
from the file named by $PYRELAYD_DEFAULTS (never /etc): start, /healthz,
status, reload (a changed limit takes effect; a bad file is refused and the
daemon keeps running), restart, stop (every process of that instance
exits), upgrade (the same pid, its clients kept; refused with a bad file),
and a start with a bad file fails and leaves nothing behind.
As root the daemon drops to `nobody` in a temporary chroot, as harness.py
sets up; as an ordinary user it runs unprivileged."""

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

BUILDDIR = os.path.dirname(os.path.abspath(harness.PYRELAYD))
UNIT = os.path.join(BUILDDIR, "etc", "pyrelayd.service")
RC = os.path.join(BUILDDIR, "etc", "rc.d", "pyrelayd")

PYRELAYCTL = os.environ.get("PYRELAYCTL") or os.path.join(BUILDDIR,
                                                           "pyrelayctl")

# sanitizer builds start and stop processes several times slower
SLOW = 3 if harness.sanitizer_build() else 1

# What the parent needs as root, and nothing else (docs/packaging.md).
CAPS = {"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_SETUID",
        "CAP_SETGID", "CAP_KILL"}


def unit_settings(text):
    """{key: [values in order]} of the [Service] section."""
    out = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def known_capabilities():
    """CAP_* names from the kernel headers, or None without them."""
    try:
        with open("/usr/include/linux/capability.h") as f:
            text = f.read()
    except OSError:
        return None
    return set(re.findall(r"^#define\s+(CAP_[A-Z_]+)\s+\d+\s*$", text, re.M))


class SystemdUnit(unittest.TestCase):

    def setUp(self):
        self.assertTrue(os.path.isfile(UNIT), "%s: run make first" % UNIT)
        with open(UNIT) as f:
            self.text = f.read()
        self.svc = unit_settings(self.text)

    def test_no_placeholder_left(self):
        self.assertIsNone(re.search(r"@[A-Za-z_]+@", self.text))

    def test_starts_checked_in_foreground(self):
        exe = self.svc["ExecStart"][0].split()
        self.assertTrue(exe[0].endswith("/sbin/pyrelayd"), exe)
        self.assertIn("-d", exe, "systemd needs the foreground process")
        self.assertEqual(self.svc["Type"], ["exec"])
        pre = self.svc["ExecStartPre"][0].split()
        self.assertEqual(pre[0], exe[0])
        self.assertIn("-n", pre)
        # the same options for the check as for the start
        self.assertEqual([a for a in pre if a != "-n"],
                         [a for a in exe if a != "-d"])

    def test_reload_checks_then_sends_hup(self):
        reload = self.svc["ExecReload"]
        self.assertEqual(len(reload), 2, reload)
        self.assertIn("-n", reload[0].split())
        self.assertEqual(reload[1].split()[1:], ["-HUP", "$MAINPID"])

    def test_stop_lets_the_parent_drain(self):
        self.assertEqual(self.svc["KillMode"], ["mixed"])
        m = re.fullmatch(r"(\d+)s?", self.svc["TimeoutStopSec"][0])
        self.assertIsNotNone(m)
        self.assertGreater(int(m.group(1)), 10, "SIGTERM drains for 10 s")

    def test_only_the_capabilities_the_parent_needs(self):
        caps = set(" ".join(self.svc["CapabilityBoundingSet"]).split())
        self.assertEqual(caps, CAPS)
        known = known_capabilities()
        if known:
            self.assertLessEqual(caps, known, "unknown capability names")
        self.assertEqual(self.svc["NoNewPrivileges"], ["yes"])
        self.assertNotIn("AmbientCapabilities", self.svc)
        self.assertNotIn("User", self.svc, "the parent starts as root")

    def test_syscall_filter_lets_workers_sandbox_themselves(self):
        calls = " ".join(self.svc.get("SystemCallFilter", [])).split()
        if calls:
            self.assertFalse(calls[0].startswith("~"), "an allow-list")
            for needed in ("chroot", "seccomp"):
                self.assertIn(needed, calls)

    def test_default_control_socket_writable(self):
        self.assertEqual(self.svc["ProtectSystem"], ["strict"])
        rw = " ".join(self.svc.get("ReadWritePaths", [])).split()
        self.assertIn("/run", rw, "the control socket is /run/pyrelayd.sock")

    def test_systemd_analyze_verify(self):
        tool = shutil.which("systemd-analyze")
        if tool is None:
            self.skipTest("systemd-analyze not installed (apt-get install "
                          "systemd): the unit file was not verified")
        # The unit names the installed program; verify it against the one
        # just built, which verify wants to find executable.
        exe = self.svc["ExecStart"][0].split()[0]
        tmp = tempfile.mkdtemp(prefix="pyrelayd-unit-")
        try:
            path = os.path.join(tmp, "pyrelayd.service")
            with open(path, "w") as f:
                f.write(self.text.replace(exe + " ", harness.PYRELAYD + " "))
            r = subprocess.run([tool, "verify", "--man=no", path],
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=60)
            out = r.stdout.decode("utf-8", "replace")
            sys.stderr.write("systemd-analyze verify: exit %d, output:\n%s\n"
                             % (r.returncode, out or "(none)"))
            self.assertEqual(r.returncode, 0, out)
            self.assertEqual(out.strip(), "", "verify warned")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def http_status(port, headers=None, timeout=5):
    return harness.http_get(port, "/healthz", headers, timeout=timeout)[0]


class RcScript(unittest.TestCase):

    def setUp(self):
        self.assertTrue(os.path.isfile(RC), "%s: run make first" % RC)
        if not shutil.which("start-stop-daemon"):
            self.skipTest("no start-stop-daemon (Debian's dpkg has it)")
        self.d = harness.Daemon(workers=2)
        self.pidfile = os.path.join(self.d.tmpdir, "pyrelayd.pid")
        self.defaults = os.path.join(self.d.tmpdir, "default")
        with open(self.defaults, "w") as f:
            f.write('DAEMON="%s"\nPYRELAYCTL="%s"\nDAEMON_OPTS="-f %s"\n'
                    'PIDFILE="%s"\n' % (harness.PYRELAYD, PYRELAYCTL,
                                         self.d.conf_path, self.pidfile))
        self.seen = set()  # every pid of the instance seen while it ran

    def tearDown(self):
        # whatever the test left running: stop it, then kill what is left
        if os.path.exists(self.d.control_path):
            try:
                self.rc("stop", timeout=30)
            except subprocess.TimeoutExpired:
                pass
        pids = set(self.seen)
        pid = self.read_pid()
        if pid:
            pids.add(pid)
            pids.update(harness.descendants_of(pid))
        for p in pids:
            if harness.proc_comm(p) == "pyrelayd":
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        harness.reap_strays(kill=True)
        self.d._cleanup_dirs()

    def test_script_is_sh_with_installed_paths(self):
        with open(RC) as f:
            text = f.read()
        self.assertTrue(text.startswith("#!/bin/sh\n"))
        self.assertIsNone(re.search(r"@[A-Za-z_]+@", text))
        self.assertIn("### BEGIN INIT INFO", text)
        r = subprocess.run(["/bin/sh", "-n", RC], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=10)
        self.assertEqual(r.returncode, 0, r.stdout)

    def rc(self, action, timeout=60):
        env = dict(os.environ, PYRELAYD_DEFAULTS=self.defaults)
        r = subprocess.run(["/bin/sh", RC, action], env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout * SLOW)
        out = r.stdout.decode("utf-8", "replace")
        sys.stderr.write("$ %s %s -> %d\n%s" % (RC, action, r.returncode,
                                                out))
        return r.returncode, out

    def read_pid(self):
        try:
            with open(self.pidfile) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def instance(self):
        """The parent's pid and those of all its descendants."""
        pid = self.read_pid()
        self.assertIsNotNone(pid, "no pid in %s" % self.pidfile)
        pids = {pid} | set(harness.descendants_of(pid))
        self.seen |= pids
        return pid, pids

    def wait_healthy(self):
        def ok():
            try:
                return http_status(self.d.port, timeout=2) == 200
            except (OSError, AssertionError):
                return False
        harness.poll_until(ok, 15 * SLOW, "/healthz to answer 200")

    def assert_all_gone(self, pids):
        def gone():
            harness.reap_strays()
            return all(harness.proc_state(p) in (None, "Z") for p in pids)
        harness.poll_until(gone, 5, "every process of the instance to exit")

    def start(self):
        code, out = self.rc("start")
        self.assertEqual(code, 0, out)
        pid, _ = self.instance()
        self.assertEqual(harness.proc_comm(pid), "pyrelayd")
        # the parent: it holds the listener, its children are the workers
        self.assertNotIn(harness.proc_comm(harness.proc_stat(pid)[1]),
                         ("pyrelayd",), "pid file names a worker")
        self.wait_healthy()
        return pid

    def test_start_status_reload_restart_stop(self):
        code, out = self.rc("status")
        self.assertEqual(code, 3, "not running yet: " + out)

        pid = self.start()
        _, pids = self.instance()
        self.assertGreaterEqual(len(pids), 3, "parent and 2 fronts")
        code, out = self.rc("status")
        self.assertEqual(code, 0, out)
        self.assertIn("running", out)
        self.assertIn(str(pid), out)

        # start again: nothing to do, the same daemon
        code, out = self.rc("start")
        self.assertEqual(code, 0, out)
        self.assertEqual(self.read_pid(), pid)

        # reload: a head of 3000 bytes is fine under the default 8K ...
        fill = {"X-Fill": "a" * 3000}
        self.assertEqual(http_status(self.d.port, fill), 200)
        with open(self.d.conf_path, "a") as f:
            f.write("max header size 2K\n")
        code, out = self.rc("reload")
        self.assertEqual(code, 0, out)
        # ... and over the 2K the reloaded file sets
        harness.poll_until(lambda: http_status(self.d.port, fill) == 431,
                           10 * SLOW, "the reloaded limit (431)")
        self.assertEqual(self.read_pid(), pid, "a reload keeps the daemon")

        # a bad file: reload fails with file:line, the daemon runs on
        with open(self.d.conf_path, "a") as f:
            f.write("no such keyword\n")
        code, out = self.rc("reload")
        self.assertNotEqual(code, 0, out)
        self.assertIn(self.d.conf_path + ":", out)
        code, out = self.rc("restart")
        self.assertNotEqual(code, 0, "restart with a bad file: " + out)
        self.assertEqual(harness.proc_state(pid) not in (None, "Z"), True,
                         "a refused reload or restart stopped the daemon")
        self.assertEqual(http_status(self.d.port, fill), 431)
        self.d.write_conf()

        # restart: a new parent, the old instance gone entirely
        _, old = self.instance()
        code, out = self.rc("restart")
        self.assertEqual(code, 0, out)
        self.assert_all_gone(old)
        pid2, _ = self.instance()
        self.assertNotEqual(pid2, pid)
        self.wait_healthy()
        self.assertEqual(http_status(self.d.port, fill), 200,
                         "the restart read the file again")

        # a pid file lost (/run cleaned): found again on the control socket
        os.unlink(self.pidfile)
        code, out = self.rc("status")
        self.assertEqual(code, 0, out)
        self.assertEqual(self.read_pid(), pid2)

        # stop, with a binary and a phone on a relay process: they are
        # closed with 1001 and every process of the instance exits
        async def stop_live():
            b = await harness.binary(self.d, "pkg-stop")
            p = await harness.phone(self.d, "pkg-stop")
            await harness.assert_exchange(b, p, "pkg-stop")
            _, pids = self.instance()
            self.assertGreaterEqual(len(pids), 4, "parent, fronts, relay")
            t0 = time.monotonic()
            code, out = await asyncio.to_thread(self.rc, "stop")
            sys.stderr.write("stop took %.2fs\n" % (time.monotonic() - t0))
            self.assertEqual(code, 0, out)
            await harness.expect_close(p, 1001)
            await harness.expect_close(b, 1001)
            return pids
        pids = harness.run(stop_live())
        self.assert_all_gone(pids)
        self.assertFalse(os.path.exists(self.pidfile))
        self.assertFalse(os.path.exists(self.d.control_path),
                         "a clean stop removes the control socket")
        self.assertTrue(harness.port_is_free(self.d.port))
        code, out = self.rc("status")
        self.assertEqual(code, 3, out)
        # stop again: nothing to do
        code, out = self.rc("stop")
        self.assertEqual(code, 0, out)

    def test_upgrade_keeps_the_daemon_and_its_clients(self):
        """upgrade: the parent executes the program again (as after make
        install), daemonized and logging to syslog; the pid and the
        clients stay.  With a bad file it is refused, saying where, and
        the daemon runs on."""
        pid = self.start()
        conf = self.d.conf_path

        async def live():
            b = await harness.binary(self.d, "pkg-upgrade")
            p = await harness.phone(self.d, "pkg-upgrade")
            await harness.assert_exchange(b, p, "pkg-upgrade", n=1)
            code, out = await asyncio.to_thread(self.rc, "upgrade")
            self.assertEqual(code, 0, out)
            self.assertEqual(self.read_pid(), pid)
            await harness.assert_exchange(b, p, "pkg-upgrade", n=2)
            with open(conf, "a") as f:
                f.write("no such keyword\n")
            code, out = await asyncio.to_thread(self.rc, "upgrade")
            self.assertNotEqual(code, 0, out)
            self.assertIn(conf + ":", out)
            await harness.assert_exchange(b, p, "pkg-upgrade", n=3)
            await harness.close_all(b, p)
        harness.run(live())
        self.d.write_conf()
        self.assertEqual(self.read_pid(), pid)
        self.wait_healthy()

    def test_start_with_bad_file_fails_and_leaves_nothing(self):
        with open(self.d.conf_path, "a") as f:
            f.write("grace forever\n")
        code, out = self.rc("start")
        self.assertNotEqual(code, 0, out)
        self.assertIn(self.d.conf_path + ":", out)
        self.assertIsNone(self.read_pid())
        self.assertTrue(harness.port_is_free(self.d.port))

    def test_start_on_a_busy_port_fails(self):
        with harness.socket.socket() as s:
            s.setsockopt(harness.socket.SOL_SOCKET,
                         harness.socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.d.port))
            s.listen(1)
            code, out = self.rc("start")
            self.assertNotEqual(code, 0, out)
            self.assertIsNone(self.read_pid())
        code, out = self.rc("status")
        self.assertEqual(code, 3, out)


def main():
    """Like harness.main(), but a module with a skipped test exits 77, with
    the reasons, instead of passing: a unit nobody verified is no pass."""
    harness.require_daemon()
    result = unittest.main(verbosity=2, exit=False).result
    if not result.wasSuccessful():
        sys.exit(1)
    for test, why in result.skipped:
        print("SKIP: %s: %s" % (test.id(), why), file=sys.stderr)
    sys.exit(harness.SKIP if result.skipped else 0)


if __name__ == "__main__":
    main()
