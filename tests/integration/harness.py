# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Integration test harness: start the real pyrelayd on free loopback ports
with a temporary configuration, read its log, and drive it with real
WebSocket clients (Debian's python3-websockets 10.4, run with /usr/bin/python3)
or raw sockets.

    import harness
    with harness.Daemon(extra_conf="grace 1s") as d:
        async def main():
            b = await harness.binary(d, "sid1")
            p = await harness.phone(d, "sid1")
            await harness.assert_exchange(b, p, "sid1")
        harness.run(main())

The daemon binary is $PYRELAYD (make check sets it); without it, the
pyrelayd at the top of the build tree (two levels up) is used.

Daemon(extra_conf="", workers=2): writes a configuration (listen and
metrics on free 127.0.0.1 ports, `workers`, `control socket` in its tmpdir;
as root also `user "nobody"` and `chroot` to a fresh root-owned 0755
directory) and appends extra_conf.  The parser refuses a keyword given twice,
so extra_conf must not repeat these (use the workers argument).
  start(timeout=15)   waits for `event=ready`; RuntimeError if it exits first
  stop(timeout=15)    SIGTERM, wait, exit code; kills and raises on a hang
  kill()              SIGKILL of the parent and every worker (a host that
                      fails); start() runs it again on the same ports
  with Daemon(...) as d:   start/stop, asserts exit code 0 on a clean exit
  port, metrics_port, pid, tmpdir, conf_path, chroot (None unless root)
  url(path), http_url(path), healthz(), metrics() (/metrics as a dict of
      series -> int), alive(), signal(sig), wait_exit(t)
  log_text(), log_lines(), log_mark(),
  wait_log(regex, timeout=10, since=0): first match among ALL log lines from
      index `since` (0: from the start, so a line logged before the call is
      found; pass since=d.log_mark() taken before the action to see only
      new lines)
  children(), relay_pids(), front_pids(), wait_fronts(n), wait_relays(n)
      (at least n; exact=True for exactly n), wait_no_relays()
  write_conf(text=None), conf_text()  (for SIGHUP tests)
FakeableDaemon(extra_conf="", relay=RELAY, ...): a Daemon run from copies
of pyrelayd and of relay (CRASH_RELAY: tests/pyrelayd-relay-crash) as
pyrelayd-relay; fake_next(which, case) runs tests/fake_worker once instead.
Module functions: http_get, raw_request, recv_until_close, read_head,
parse_head, upgrade_request, unix_command,
RawWS (byte-exact WebSocket client), ws_frame, ws_key, ws_accept; async
binary, phone, expect_close, recv, assert_exchange, exchange_once,
close_all; run; /proc
helpers (proc_status, proc_state, children_of, open_fds, poll_until, ...);
assert_sandboxed(tc, d, pid, what) for a worker's uid, gid, no_new_privs,
seccomp and chroot.

Environment knobs for debugging: PYRELAYD_TEST_ECHO=1 copies the daemon's
log to stderr as it arrives; PYRELAYD_TEST_VERBOSE=1 starts it with -v.
"""

import asyncio
import atexit
import base64
import ctypes
import json
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import websockets
import websockets.exceptions

PYTHON_WS = websockets

HERE = os.path.dirname(os.path.abspath(__file__))
PYRELAYD = os.environ.get("PYRELAYD") or os.path.normpath(
    os.path.join(HERE, "..", "..", "pyrelayd"))

SKIP = 77  # automake's exit status for a skipped test

UA = "pyrelayd-tests/1"

# /metrics' two frame counters (docs/protocol.md §2), as Daemon.metrics() keys
FRAMES_P2B = 'pyrycode_relay_frames_forwarded_total{direction="phone_to_binary"}'
FRAMES_B2P = 'pyrycode_relay_frames_forwarded_total{direction="binary_to_phone"}'

# Orphans of a daemon (children it did not wait for) are re-parented to us
# instead of init, so stop() can see and reap them (PR_SET_CHILD_SUBREAPER).
try:
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
except (OSError, AttributeError):
    pass


def is_root():
    return os.geteuid() == 0


_sanitized = None


def sanitizer_build():
    """The daemon was built with ASan/UBSan (--enable-sanitizers): its
    binary carries their runtime's symbols."""
    global _sanitized
    if _sanitized is None:
        try:
            with open(PYRELAYD, "rb") as f:
                data = f.read()
            _sanitized = b"__asan_init" in data or b"__ubsan_handle" in data
        except OSError:
            _sanitized = False
    return _sanitized


def require_daemon():
    """Exit 77 (skip the whole module) when there is no daemon to test."""
    if not (os.path.isfile(PYRELAYD) and os.access(PYRELAYD, os.X_OK)):
        if os.environ.get("PYRELAYD"):
            # make check set it: a missing binary is a failure, not a skip
            print("PYRELAYD=%s is not an executable file" % PYRELAYD,
                  file=sys.stderr)
            sys.exit(1)
        print("SKIP: no pyrelayd binary at %s (set PYRELAYD)" % PYRELAYD,
              file=sys.stderr)
        sys.exit(SKIP)


def main():
    """unittest.main() for a test module, after require_daemon()."""
    import unittest
    require_daemon()
    unittest.main(verbosity=2)


# --------------------------------------------------------------------------
# /proc helpers

def _read(path, mode="rb"):
    try:
        with open(path, mode) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def proc_stat(pid):
    """(state, ppid, starttime) of pid, or None when it does not exist."""
    data = _read("/proc/%d/stat" % pid)
    if data is None:
        return None
    rest = data.rpartition(b")")[2].split()
    # rest[0] is field 3 (state), rest[1] field 4 (ppid), rest[19] field 22
    return rest[0].decode(), int(rest[1]), int(rest[19])


def proc_comm(pid):
    data = _read("/proc/%d/stat" % pid)
    if data is None:
        return None
    return data[data.find(b"(") + 1:data.rfind(b")")].decode("utf-8",
                                                              "replace")


def proc_state(pid):
    """One-letter state ('R', 'S', 'Z', ...) or None when gone."""
    st = proc_stat(pid)
    return st[0] if st else None


def proc_cmdline(pid):
    """The process title as ps shows it: argv joined by spaces ('' for a
    zombie or a vanished process)."""
    data = _read("/proc/%d/cmdline" % pid)
    if not data:
        return ""
    return " ".join(p.decode("utf-8", "replace")
                    for p in data.split(b"\0") if p)


def proc_status(pid):
    """/proc/PID/status as a dict of str -> str (None when gone)."""
    data = _read("/proc/%d/status" % pid, "r")
    if data is None:
        return None
    out = {}
    for line in data.splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def _all_pids():
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def open_fds(pid):
    """The descriptor numbers process pid has open."""
    return {int(n) for n in os.listdir("/proc/%d/fd" % pid)}


def tcp_nodelay(pid):
    """TCP_NODELAY of each TCP socket process pid holds, as {fd: 0 or 1}.
    Each is taken with pidfd_getfd(2) (root may), read with getsockopt and
    the copy closed: the process is neither stopped nor disturbed."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    out = {}
    pidfd = os.pidfd_open(pid)
    try:
        for n in sorted(open_fds(pid)):
            try:
                if not os.readlink("/proc/%d/fd/%d"
                                   % (pid, n)).startswith("socket:"):
                    continue
            except FileNotFoundError:
                continue
            # SYS_pidfd_getfd: 438 on every architecture
            fd = libc.syscall(ctypes.c_long(438), ctypes.c_int(pidfd),
                              ctypes.c_int(n), ctypes.c_uint(0))
            if fd == -1:
                e = ctypes.get_errno()
                raise OSError(e, "pidfd_getfd(%d, %d): %s"
                              % (pid, n, os.strerror(e)))
            s = socket.socket(fileno=fd)
            try:
                if s.family in (socket.AF_INET, socket.AF_INET6) and \
                        s.type == socket.SOCK_STREAM:
                    out[n] = s.getsockopt(socket.IPPROTO_TCP,
                                          socket.TCP_NODELAY)
            finally:
                s.close()
    finally:
        os.close(pidfd)
    return out


def children_of(ppid):
    """Direct children of ppid as [(pid, cmdline)], zombies included."""
    out = []
    for pid in _all_pids():
        st = proc_stat(pid)
        if st and st[1] == ppid:
            out.append((pid, proc_cmdline(pid)))
    return sorted(out)


def descendants_of(ppid):
    """All descendants as {pid: starttime}."""
    parent = {}
    start = {}
    for pid in _all_pids():
        st = proc_stat(pid)
        if st:
            parent[pid] = st[1]
            start[pid] = st[2]
    out = {}
    todo = [ppid]
    while todo:
        p = todo.pop()
        for pid, pp in parent.items():
            if pp == p and pid not in out:
                out[pid] = start[pid]
                todo.append(pid)
    return out


def same_process(pid, starttime):
    """pid still names the process that had this starttime (no reuse)."""
    st = proc_stat(pid)
    return st is not None and st[2] == starttime


def poll_until(pred, timeout, what, interval=0.02):
    """Bounded polling for a state that has no event we can wait on (the
    exit of a process that is not our child, a /proc field).  Returns pred's
    first true value; raises AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


_nobody = None


def nobody():
    """The passwd entry of the user the test daemons' workers run as."""
    global _nobody
    if _nobody is None:
        _nobody = pwd.getpwnam("nobody")
    return _nobody


def status_ids(status, key):
    """The numbers of a /proc/PID/status line (Uid, Gid, Groups)."""
    return [int(x) for x in status.get(key, "").split()]


def assert_sandboxed(tc, d, pid, what):
    """pid runs as nobody, chrooted to d.chroot, without privileges,
    under a seccomp filter (tc: the TestCase)."""
    st = proc_status(pid)
    tc.assertIsNotNone(st, "%s %d is gone" % (what, pid))
    pw = nobody()
    tc.assertEqual(status_ids(st, "Uid"), [pw.pw_uid] * 4, what + " Uid")
    tc.assertEqual(status_ids(st, "Gid"), [pw.pw_gid] * 4, what + " Gid")
    tc.assertLessEqual(set(status_ids(st, "Groups")), {pw.pw_gid},
                       what + " supplementary groups")
    tc.assertEqual(st.get("NoNewPrivs"), "1", what + " NoNewPrivs")
    tc.assertEqual(st.get("Seccomp"), "2", what + " Seccomp")
    tc.assertEqual(int(st.get("CapEff", "1"), 16), 0, what + " CapEff")
    tc.assertEqual(int(st.get("CapPrm", "1"), 16), 0, what + " CapPrm")
    if sanitizer_build():
        # the sanitizer runtime needs /proc: such builds skip the chroot
        return
    tc.assertEqual(os.readlink("/proc/%d/root" % pid),
                   os.path.realpath(d.chroot), what + " root")


# --------------------------------------------------------------------------
# running the daemon

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n, avoid=()):
    """n distinct free ports, none of them in avoid: each stays bound until
    all are chosen (free_port() twice can return the same port)."""
    socks, ports = [], []
    try:
        for _ in range(n + len(avoid)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in avoid:
                ports.append(port)
            if len(ports) == n:
                return ports
        raise AssertionError("no %d free ports outside %r" % (n, avoid))
    finally:
        for s in socks:
            s.close()


def port_is_free(port):
    """Nothing listens on or holds 127.0.0.1:port (TIME_WAIT ignored, as a
    server with SO_REUSEADDR may bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _drop_to(user):
    pw = pwd.getpwnam(user)

    def preexec():
        os.setgroups([])
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    return preexec


def run_pyrelayd(args, timeout=15, user=None, cwd=None):
    """Run $PYRELAYD with args to completion (for -V, -n ...).  Returns a
    CompletedProcess with text stdout/stderr.  user: run as that user
    (needs root)."""
    with subprocess.Popen([PYRELAYD] + list(args), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, errors="replace", cwd=cwd or "/",
                          preexec_fn=_drop_to(user) if user else None) as p:
        _popen_pids.add(p.pid)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise
        finally:
            _popen_pids.discard(p.pid)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


_running = set()
_popen_pids = set()  # daemon parents we started and Popen will wait for


def reap_strays(kill=False):
    """Reap pyrelayd processes re-parented to us (we are a subreaper):
    workers of a daemon whose parent died without waiting for them.  With
    kill, those still running are SIGKILLed first (bounded wait of 2 s).
    Processes started here through Popen are left to their Popen."""
    name = os.path.basename(PYRELAYD)[:15]

    def strays():
        return [pid for pid, _ in children_of(os.getpid())
                if pid not in _popen_pids and proc_comm(pid) == name]
    if kill:
        for pid in strays():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def reaped():
        left = strays()
        for pid in left:
            if proc_state(pid) == "Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        return not strays() or not kill
    try:
        poll_until(reaped, 2.0, "stray pyrelayd processes to go")
    except AssertionError:
        pass


@atexit.register
def _kill_leftovers():
    for d in list(_running):
        d._kill_all()
        d._cleanup_dirs()
    reap_strays(kill=True)


class Daemon:
    """One pyrelayd under test.  See the module docstring.

    extra_conf: lines appended to the generated configuration.
    workers: `workers N`.
    exe: the pyrelayd to run instead of $PYRELAYD (a copy, say).
    args: command line instead of ["-d", "-f", conf_path] (the config is
    still written; set port/metrics_port to what that command line uses).
    """

    def __init__(self, extra_conf="", workers=2, *, args=None, port=None,
                 metrics_port=None, exe=None):
        self.exe = exe or PYRELAYD
        self.extra_conf = extra_conf
        self.workers = workers
        self.args = args
        fresh = free_ports(2, avoid=(port, metrics_port))
        self.port = port or fresh[0]
        self.metrics_port = metrics_port or fresh[1]
        self.tmpdir = tempfile.mkdtemp(prefix="pyrelayd-test-")
        os.chmod(self.tmpdir, 0o755)  # -n tests read the config as nobody
        self.conf_path = os.path.join(self.tmpdir, "pyrelayd.conf")
        self.control_path = os.path.join(self.tmpdir, "ctl.sock")
        self.chroot = None
        if is_root():
            self.chroot = tempfile.mkdtemp(prefix="pyrelayd-chroot-")
            os.chown(self.chroot, 0, 0)
            os.chmod(self.chroot, 0o755)
        self.proc = None
        self.pid = None
        self.returncode = None
        self.leftover_children = []  # descendants alive when the parent exited
        self._lines = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = None
        self.write_conf()

    # -- configuration

    def conf_text(self):
        lines = [
            "listen on 127.0.0.1 port %d" % self.port,
            "metrics on 127.0.0.1 port %d" % self.metrics_port,
            "workers %d" % self.workers,
            'control socket "%s"' % self.control_path,
        ]
        if self.chroot:
            lines += ['user "nobody"', 'chroot "%s"' % self.chroot]
        text = "\n".join(lines) + "\n"
        if self.extra_conf:
            text += self.extra_conf.rstrip("\n") + "\n"
        return text

    def write_conf(self, text=None):
        """(Re)write the configuration file (text or the generated one)."""
        with open(self.conf_path, "w") as f:
            f.write(self.conf_text() if text is None else text)
        os.chmod(self.conf_path, 0o644)

    # -- start / stop

    def url(self, path):
        return "ws://127.0.0.1:%d%s" % (self.port, path)

    def http_url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def _command(self):
        args = self.args if self.args is not None else \
            ["-d", "-f", self.conf_path]
        if os.environ.get("PYRELAYD_TEST_VERBOSE") and "-v" not in args:
            args = args + ["-v"]
        return [self.exe] + list(args)

    def start(self, timeout=15):
        """Start and wait for `event=ready`.  Raises RuntimeError if the
        daemon exits first or is not ready in time (it is then killed)."""
        if self.proc is not None:
            raise RuntimeError("daemon already started")
        if not os.access(self.exe, os.X_OK):
            raise RuntimeError("no pyrelayd to run at %s (set PYRELAYD)"
                               % self.exe)
        for attempt in range(3):
            self._spawn()
            try:
                self.wait_log(r"\bevent=ready\b", timeout=timeout)
                return self
            except AssertionError as e:
                log = self.log_text()
                self._kill_all()
                self._reset_process()
                # free_port() races with other programs: pick new ports
                if (self.args is None and attempt < 2 and
                        re.search(r"(?i)address already in use|EADDRINUSE",
                                  log)):
                    self.port, self.metrics_port = free_ports(2)
                    self.write_conf()
                    continue
                raise RuntimeError("pyrelayd did not become ready: %s\n"
                                   "--- log ---\n%s" % (e, log[-6000:]))

    def _spawn(self):
        self.proc = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=self.tmpdir, start_new_session=True)
        self.pid = self.proc.pid
        _popen_pids.add(self.pid)
        _running.add(self)
        self._reader = threading.Thread(target=self._read_log,
                                        args=(self.proc, self._lines),
                                        daemon=True)
        self._reader.start()

    def _reset_process(self):
        _running.discard(self)
        if self.pid is not None:
            _popen_pids.discard(self.pid)
        reap_strays()
        self.proc = None
        self.pid = None
        with self._cond:
            self._lines = []
            self._eof = False

    def _read_log(self, proc, lines):
        # lines: this run's list; a restarted run gets a new one
        echo = bool(os.environ.get("PYRELAYD_TEST_ECHO"))
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if echo:
                sys.stderr.write("| %s\n" % line)
            with self._cond:
                lines.append(line)
                self._cond.notify_all()
        proc.stdout.close()
        with self._cond:
            if lines is self._lines:
                self._eof = True
            self._cond.notify_all()

    def kill(self):
        """A host failure: SIGKILL the parent and every worker at once,
        wait for them, forget this run's log.  The configuration and the
        ports stay, so start() brings the same daemon back."""
        self._kill_all()
        self._reset_process()

    def _kill_all(self):
        """SIGKILL the parent and every descendant (by pid)."""
        if self.proc is None:
            return
        kids = descendants_of(self.pid)
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._kill_reap(kids)
        _running.discard(self)

    def _kill_reap(self, kids):
        """SIGKILL those of kids (pid -> starttime) still running and reap
        the ones re-parented to us, waiting for them at most 2 s."""
        for pid, start in kids.items():
            if same_process(pid, start):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        def gone():
            self._reap_orphans(kids)
            return not any(same_process(p, s) for p, s in kids.items())
        try:
            poll_until(gone, 2.0, "killed children to vanish")
        except AssertionError:
            pass  # zombies of a parent that is not us: nothing more to do

    def _reap_orphans(self, kids):
        """Reap those of kids (pid -> starttime, the daemon's descendants)
        that were re-parented to us (subreaper) and have exited.  Only
        these: reaping another child would steal its status from Popen."""
        me = os.getpid()
        for pid, start in kids.items():
            st = proc_stat(pid)
            if st and st[1] == me and st[2] == start and st[0] == "Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=15):
        """Wait for the parent to exit; returns its exit code.  Raises
        AssertionError at the deadline (the daemon is left running)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("pyrelayd pid %d did not exit within %.1fs"
                                 % (self.pid, timeout))

    def stop(self, timeout=15):
        """SIGTERM, wait, return the exit code, remove the temporary
        directories.  If the parent does not exit in time it and its
        children are killed and AssertionError is raised.  Descendants
        still running when the parent has exited are recorded in
        leftover_children, given 2 s to go, then killed (AssertionError)."""
        if self.proc is None:
            self._cleanup_dirs()
            return self.returncode
        try:
            return self._stop(timeout)
        finally:
            self._cleanup_dirs()

    def _stop(self, timeout):
        failure = None
        kids = descendants_of(self.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                failure = ("pyrelayd pid %d ignored SIGTERM for %.1fs; killed"
                           % (self.pid, timeout))
                self._kill_all()
        self.returncode = self.proc.returncode
        left = {p: s for p, s in kids.items() if same_process(p, s)}
        self.leftover_children = [(p, proc_state(p)) for p in left]
        if left and failure is None:
            def gone():
                self._reap_orphans(left)
                return all(not same_process(p, s) or proc_state(p) == "Z"
                           for p, s in left.items())
            try:
                poll_until(gone, 2.0, "children to exit after the parent")
            except AssertionError:
                failure = ("children still running after the parent exited: "
                           "%s" % self.leftover_children)
            self._kill_reap(left)
        _running.discard(self)
        _popen_pids.discard(self.pid)
        reap_strays(kill=True)
        if self._reader is not None:
            # EOF comes once every process holding the pipe is gone
            self._reader.join(timeout=5)
        self.proc = None
        self._cleanup_dirs()
        if failure:
            raise AssertionError(failure + "\n--- log ---\n" +
                                 self.log_text()[-4000:])
        return self.returncode

    def _cleanup_dirs(self):
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        if self.chroot:
            shutil.rmtree(self.chroot, ignore_errors=True)

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self._cleanup_dirs()
            raise
        return self

    def __exit__(self, etype, e, tb):
        if etype is not None:
            sys.stderr.write("--- pyrelayd log (last 60 lines) ---\n%s\n" %
                             "\n".join(self.log_lines()[-60:]))
            try:
                self.stop()
            except AssertionError as e2:
                sys.stderr.write("stop: %s\n" % e2)
            return False
        rc = self.stop()
        if rc != 0:
            raise AssertionError("pyrelayd exited %r on SIGTERM\n--- log ---\n"
                                 "%s" % (rc, self.log_text()[-4000:]))
        return False

    # -- log

    def log_lines(self):
        with self._cond:
            return list(self._lines)

    def log_text(self):
        return "\n".join(self.log_lines())

    def log_mark(self):
        """Index of the next log line, for wait_log(..., since=mark)."""
        with self._cond:
            return len(self._lines)

    def wait_log(self, regex, timeout=10, since=0):
        """Wait until a log line (from line index `since`, 0 = the whole log
        so far) matches regex (re.search); returns the first match.  Woken by
        new lines (condition variable), not by polling.  Raises
        AssertionError at the deadline, or at once when the log has ended."""
        rx = re.compile(regex) if isinstance(regex, str) else regex
        deadline = time.monotonic() + timeout
        i = since
        with self._cond:
            while True:
                while i < len(self._lines):
                    m = rx.search(self._lines[i])
                    i += 1
                    if m:
                        return m
                if self._eof:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            tail = "\n".join(self._lines[-20:])
            why = "log ended" if self._eof else "timed out after %gs" % timeout
        raise AssertionError("no log line matching %r (%s); last lines:\n%s"
                             % (rx.pattern, why, tail))

    def wait_refused(self, event, total, timeout=5, since=0):
        """Wait until the refused= counts of `event` lines add up to total:
        refusals a flood can repeat are logged at most once a second with
        their number (pyrelayd(8), Logging).  Returns the counts.  Woken by
        new lines.  Raises AssertionError when they add up to more, at the
        deadline, or when the log has ended."""
        rx = re.compile(r"\bevent=%s refused=(\d+)\b" % event)
        deadline = time.monotonic() + timeout
        counts, i = [], since
        with self._cond:
            while True:
                for line in self._lines[i:]:
                    m = rx.search(line)
                    if m:
                        counts.append(int(m.group(1)))
                i = len(self._lines)
                left = deadline - time.monotonic()
                if sum(counts) >= total or self._eof or left <= 0:
                    break
                self._cond.wait(left)
        if sum(counts) != total:
            raise AssertionError("event=%s refused= lines add up to %d, not "
                                 "%d: %r" % (event, sum(counts), total,
                                             counts))
        return counts

    # -- processes

    def children(self):
        """Direct children [(pid, cmdline)], zombies included."""
        return children_of(self.pid)

    def relay_pids(self):
        """server-id -> pid, from titles 'pyrelayd: relay <sid> ...'."""
        out = {}
        for pid, cmd in self.children():
            m = re.match(r"pyrelayd: relay (\S+)", cmd)
            if m:
                out[m.group(1)] = pid
        return out

    def zygote_pid(self):
        """The relay zygote the parent last said ready, while it runs; else
        None.  From the log, not from titles: a relay just forked carries
        the zygote's title until it sets its own."""
        for line in reversed(self.log_lines()):
            m = re.search(r"\bevent=zygote_ready pid=(\d+)", line)
            if m:
                pid = int(m.group(1))
                st = proc_stat(pid)
                return pid if st and st[0] != "Z" and st[1] == self.pid \
                    else None
        return None

    def front_pids(self):
        return [pid for pid, cmd in self.children()
                if re.match(r"pyrelayd: front\b", cmd)]

    def wait_fronts(self, n=None, timeout=10):
        """Wait until n (default: workers) children carry the front title;
        returns their pids.  Bounded /proc polling, as for relays."""
        n = self.workers if n is None else n
        got = []

        def check():
            got[:] = self.front_pids()
            return len(got) == n
        try:
            poll_until(check, timeout, "%d fronts" % n)
        except AssertionError:
            raise AssertionError("expected %d fronts, have %s" %
                                 (n, self.children()))
        return list(got)

    def wait_relays(self, n, timeout=10, exact=False):
        """Wait until at least n (exactly n with exact=True) relay children
        exist; returns relay_pids().  Polls /proc every 20 ms with a
        deadline: a relay's start or exit gives no event this process can
        wait on."""
        got = {}

        def check():
            got.clear()
            got.update(self.relay_pids())
            return len(got) == n if exact else len(got) >= n
        try:
            poll_until(check, timeout, "%d relay processes" % n)
        except AssertionError:
            raise AssertionError("expected %s%d relays, have %d: %s"
                                 % ("" if exact else ">= ", n, len(got),
                                    sorted(got)[:10]))
        return dict(got)

    def wait_no_relays(self, timeout=10):
        """Wait until no relay child is left (zombies count as left)."""
        def none():
            return not any(re.match(r"pyrelayd: relay ", cmd) or
                           proc_state(pid) == "Z"
                           for pid, cmd in self.children())
        try:
            poll_until(none, timeout, "no relay processes")
        except AssertionError:
            raise AssertionError("relays still running after %gs: %s"
                                 % (timeout, sorted(self.relay_pids())[:10]))
        return {}

    def healthz(self):
        status, headers, body = http_get(self.port, "/healthz")
        assert status == 200, "healthz answered %d: %r" % (status, body)
        return json.loads(body)

    def metrics(self):
        """/metrics as a dict: series (name and labels) -> int."""
        status, _, body = http_get(self.metrics_port, "/metrics")
        assert status == 200, status
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = int(value)
        return out


# --------------------------------------------------------------------------
# raw HTTP

# The workers' executables a FakeableDaemon may put in place of the real
# ones (docs/messages.md, "Fake workers in the tests"): make check builds
# them under tests/ and names them in the environment.
FAKE_WORKER = os.environ.get("FAKE_WORKER") or os.path.join(
    os.path.dirname(PYRELAYD), "tests", "fake_worker")
RELAY = os.path.join(os.path.dirname(PYRELAYD), "pyrelayd-relay")
CRASH_RELAY = os.environ.get("CRASH_RELAY") or os.path.join(
    os.path.dirname(PYRELAYD), "tests", "pyrelayd-relay-crash")


class FakeableDaemon(Daemon):
    """A Daemon run from copies of the executables in a directory of its
    own: the parent starts `pyrelayd-relay` beside itself.  relay: what is
    copied there (CRASH_RELAY, say; the real one by default).  fake_next()
    replaces one of them for its next start."""

    def __init__(self, extra_conf="", relay=RELAY, **kw):
        self.bindir = tempfile.mkdtemp(prefix="pyrelayd-bin-")
        os.chmod(self.bindir, 0o755)
        exe = os.path.join(self.bindir, "pyrelayd")
        shutil.copy2(PYRELAYD, exe)
        shutil.copy2(relay, os.path.join(self.bindir, "pyrelayd-relay"))
        super().__init__(extra_conf, exe=exe, **kw)

    def fake_next(self, which, case):
        """The next start of `which` (pyrelayd: a front; pyrelayd-relay)
        runs fake_worker case, which first puts the real one back."""
        target = os.path.join(self.bindir, which)
        real = target + ".real"
        script = target + ".fake"
        with open(script, "w") as f:
            f.write("#!/bin/sh\nexec '%s' '%s' '%s' '%s' \"$@\"\n"
                    % (FAKE_WORKER, case, real, target))
        os.chmod(script, 0o755)
        os.rename(target, real)
        os.rename(script, target)

    def _cleanup_dirs(self):
        super()._cleanup_dirs()
        shutil.rmtree(self.bindir, ignore_errors=True)


def parse_head(data):
    """(status, headers_lowercase, rest) from bytes holding a response head;
    raises AssertionError when it is incomplete."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError("incomplete HTTP response: %r" % data[:300])
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3})(?: .*)?$", lines[0])
    if not m:
        raise AssertionError("bad status line: %r" % lines[0])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        v = v.strip()
        headers[k] = headers[k] + ", " + v if k in headers else v
    return int(m.group(1)), headers, rest


def _connect(port, timeout):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def raw_request(port, data, timeout=10):
    """Send bytes on a fresh connection, return everything received until
    the server closes it (a reset after data counts as a close).  Raises
    AssertionError when the server keeps it open past timeout."""
    with _connect(port, timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return recv_until_close(s, timeout)


def unix_command(path, line, timeout=10):
    """The whole answer, as text, of a server on the AF_UNIX stream socket
    path to one command line (pyrelayd's control socket, HAProxy's
    runtime API)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(line.encode() + b"\n")
        return recv_until_close(s, timeout).decode()


def recv_until_close(s, timeout=10):
    """Everything received on socket s until the server closes it (a reset
    counts as a close).  Raises AssertionError when it stays open past
    timeout."""
    deadline = time.monotonic() + timeout
    out = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("connection still open after %gs; got %r"
                                 % (timeout, out[:300]))
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def read_head(s, timeout=10):
    """(status, headers) of the response on s (AssertionError if the server
    closes or stays silent before a complete head)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no response head in %gs: %r"
                                 % (timeout, buf[:300]))
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise AssertionError("closed before a response head: %r"
                                 % buf[:300])
        buf += chunk
    status, headers, _ = parse_head(buf)
    return status, headers


def http_get(port, path, headers=None, method="GET", timeout=10):
    """(status, headers_lowercase, body_bytes) for one request over a raw
    socket.  Reads until Content-Length bytes of body or the close."""
    hdrs = {"Host": "127.0.0.1:%d" % port, "User-Agent": UA,
            "Connection": "close"}
    hdrs.update(headers or {})
    req = "%s %s HTTP/1.1\r\n" % (method, path)
    req += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs.items()
                   if v is not None)
    req += "\r\n"
    deadline = time.monotonic() + timeout
    buf = b""
    with _connect(port, timeout) as s:
        s.sendall(req.encode("latin-1"))
        while True:
            if b"\r\n\r\n" in buf:
                status, h, body = parse_head(buf)
                if "content-length" in h and \
                        len(body) >= int(h["content-length"]):
                    return status, h, body[:int(h["content-length"])]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no complete response in %gs: %r"
                                     % (timeout, buf[:300]))
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                status, h, body = parse_head(buf)
                if "chunked" in h.get("transfer-encoding", "").lower():
                    body = _dechunk(body)
                return status, h, body
            buf += chunk


def _dechunk(body):
    out = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out += body[:n]
        body = body[n + 2:]
    return out


# --------------------------------------------------------------------------
# raw WebSocket

def ws_key():
    return base64.b64encode(os.urandom(16)).decode()


def upgrade_request(port, path, headers=None, method="GET",
                    version="HTTP/1.1", sid="sid"):
    """Bytes of an upgrade request.  Defaults are a valid binary (path
    /v1/server) or phone (/v1/client) request for sid; headers overrides
    them (a value of None removes the header; a list repeats it)."""
    h = {"Host": "127.0.0.1:%d" % port, "Upgrade": "websocket",
         "Connection": "Upgrade", "Sec-WebSocket-Key": ws_key(),
         "Sec-WebSocket-Version": "13", "X-Pyrycode-Server": sid,
         "User-Agent": UA}
    if path.startswith("/v1/client"):
        h["X-Pyrycode-Token"] = "tok"
    else:
        h["X-Pyrycode-Version"] = "1"
    h.update(headers or {})
    out = "%s %s %s\r\n" % (method, path, version)
    for k, v in h.items():
        for one in (v if isinstance(v, list) else [v]):
            if one is not None:
                out += "%s: %s\r\n" % (k, one)
    return (out + "\r\n").encode("latin-1")


def ws_accept(key):
    import hashlib
    return base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    ).decode()


def ws_frame(opcode, payload=b"", mask=True, fin=True):
    """One client frame (masked by default)."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        hdr = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + bytes(c ^ key[i & 3] for i, c in enumerate(payload))


class RawWS:
    """A WebSocket client on a raw socket, for byte-exact tests."""

    def __init__(self, sock, status, headers, rest):
        self.sock = sock
        self.status = status
        self.headers = headers
        self.buf = rest

    @classmethod
    def connect(cls, port, request, timeout=10):
        """Send request bytes (head plus anything pipelined) in one send()
        and read the response head."""
        s = _connect(port, timeout)
        try:
            s.sendall(request)
            deadline = time.monotonic() + timeout
            buf = b""
            while b"\r\n\r\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no response head in %gs: %r"
                                         % (timeout, buf[:300]))
                s.settimeout(left)
                chunk = s.recv(65536)
                if not chunk:
                    raise AssertionError("closed before a response head: %r"
                                         % buf[:300])
                buf += chunk
            status, headers, rest = parse_head(buf)
            return cls(s, status, headers, rest)
        except BaseException:
            s.close()
            raise

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no complete frame in time; have %r"
                                     % self.buf[:100])
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise EOFError("connection closed; have %r" % self.buf[:100])
            self.buf += chunk

    def read_frame(self, timeout=10):
        """(fin, opcode, payload) of the next server frame (unmasked, as
        RFC 6455 requires of a server; a masked one fails)."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frame is masked"
        n = b1 & 0x7f
        off = 2
        if n == 126:
            self._fill(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._fill(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        self._fill(off + n, deadline)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0f, payload

    def close(self):
        self.sock.close()


# --------------------------------------------------------------------------
# WebSocket clients (asyncio)

def _headers(base, extra):
    h = dict(base)
    for k, v in (extra or {}).items():
        for key in [x for x in h if x.lower() == k.lower()]:
            del h[key]
        h[k] = v
    ua = UA
    for key in [x for x in h if x.lower() == "user-agent"]:
        ua = h.pop(key)
    return {k: v for k, v in h.items() if v is not None}, ua


async def _connect_ws(url, headers, extra_headers, kw):
    hdrs, ua = _headers(headers, extra_headers)
    opts = dict(ping_interval=None, max_size=None, open_timeout=10,
                close_timeout=5)
    opts.update(kw)
    return await websockets.connect(url, extra_headers=hdrs,
                                    user_agent_header=ua, **opts)


async def binary(d, sid, extra_headers=None, **kw):
    """A binary on /v1/server claiming sid.  extra_headers override the
    defaults (None removes one, User-Agent included); kw go to
    websockets.connect."""
    return await _connect_ws(
        d.url("/v1/server"),
        {"X-Pyrycode-Server": sid, "X-Pyrycode-Version": "1"},
        extra_headers, kw)


async def phone(d, sid, token="tok", device=None, extra_headers=None, **kw):
    """A phone on /v1/client for sid."""
    h = {"X-Pyrycode-Server": sid, "X-Pyrycode-Token": token}
    if device is not None:
        h["X-Pyrycode-Device-Name"] = device
    return await _connect_ws(d.url("/v1/client"), h, extra_headers, kw)


async def expect_close(ws, code, reason=None, timeout=10):
    """Wait (bounded) for the connection to end; assert its close code (and
    reason).  Messages still arriving are read and returned as a list, so a
    full receive queue cannot hide the close."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("connection not closed within %gs (got %d "
                                 "messages)" % (timeout, len(got)))
        try:
            got.append(await asyncio.wait_for(ws.recv(), left))
        except asyncio.TimeoutError:
            continue
        except websockets.exceptions.ConnectionClosed:
            break
    try:
        await asyncio.wait_for(ws.wait_closed(), max(0.1, deadline -
                                                     time.monotonic()))
    except asyncio.TimeoutError:
        raise AssertionError("connection not closed within %gs" % timeout)
    assert ws.close_code == code, \
        "close code %r (reason %r), expected %r" % (ws.close_code,
                                                    ws.close_reason, code)
    if reason is not None:
        assert ws.close_reason == reason, \
            "close reason %r, expected %r" % (ws.close_reason, reason)
    return got


async def recv(ws, timeout=10):
    """The next message; AssertionError if none arrives in time or the
    connection closes."""
    try:
        return await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError("no message within %gs" % timeout)
    except websockets.exceptions.ConnectionClosed as e:
        raise AssertionError("connection closed (%s %r) while waiting for a "
                             "message" % (e.code, e.reason))


async def _send(ws, msg, who):
    try:
        await ws.send(msg)
    except websockets.exceptions.ConnectionClosed as e:
        raise AssertionError("%s connection closed (%s %r) before sending"
                             % (who, e.code, e.reason))


async def assert_exchange(b, p, sid, n=1, timeout=10):
    """Phone sends {"n":n}; the binary must receive exactly
    {"conn_id":"client-<sid>-<8hex>","frame":{"n":n}}; the binary answers
    through that conn id and the phone must receive the frame verbatim.
    Returns the conn id."""
    await _send(p, '{"n":%d}' % n, "phone")
    msg = await recv(b, timeout)
    assert isinstance(msg, str), "binary got a binary message: %r" % msg
    m = re.fullmatch(r'\{"conn_id":"(client-%s-[0-9a-f]{8})","frame":'
                     r'\{"n":%d\}\}' % (re.escape(sid), n), msg)
    assert m, "binary received %r" % msg
    cid = m.group(1)
    await _send(b, json.dumps({"conn_id": cid, "frame": {"back": n}}),
                "binary")
    got = await recv(p, timeout)
    assert got == '{"back": %d}' % n, "phone received %r" % got
    return cid


async def exchange_once(d, sid):
    """A well-behaved binary and phone for sid: they connect, exchange one
    message both ways (assert_exchange), and leave."""
    b = await binary(d, sid)
    p = await phone(d, sid)
    await assert_exchange(b, p, sid)
    await close_all(b, p)


async def close_all(*conns):
    """Close client connections, ignoring ones already gone (bounded by
    each connection's close_timeout)."""
    await asyncio.gather(*(c.close() for c in conns if c is not None),
                         return_exceptions=True)


def run(coro, timeout=60):
    """asyncio.run with an overall deadline."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())
