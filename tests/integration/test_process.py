#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Process model (docs/architecture.md): privilege separation and sandbox of
every worker, crashes of relays and fronts, one relay per server-id, relay
retirement, and the retire race (a reclaim at the grace deadline).

Needs root (the daemon must start as root to drop to `user "nobody"` and
chroot its workers); exits 77 otherwise."""

import asyncio
import ctypes
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import push_fake  # noqa: E402

# many /v1 requests from 127.0.0.1: lift the per-IP bucket (burst 20)
RATE = "rate limit burst 10000 refill 100ms"

# sanitizer builds start and exit processes several times slower
SLOW = 3 if harness.sanitizer_build() else 1

nobody = harness.nobody
ids = harness.status_ids
assert_sandboxed = harness.assert_sandboxed


class Sandbox(unittest.TestCase):

    def test_workers_sandboxed_parent_not(self):
        if harness.sanitizer_build():
            sys.stderr.write("note: sanitizer build, which skips the chroot: "
                             "/proc/PID/root is not checked\n")
        with harness.Daemon(extra_conf=RATE) as d:
            async def main():
                b1 = await harness.binary(d, "sandbox-a")
                b2 = await harness.binary(d, "sandbox-b")
                p = await harness.phone(d, "sandbox-a")
                await harness.assert_exchange(b1, p, "sandbox-a")
                relays = await asyncio.to_thread(d.wait_relays, 2)
                fronts = await asyncio.to_thread(d.wait_fronts, 2)
                for pid in fronts:
                    assert_sandboxed(self, d, pid, "front %d" % pid)
                for sid, pid in relays.items():
                    assert_sandboxed(self, d, pid, "relay %s" % sid)
                await harness.close_all(b1, b2, p)
            harness.run(main())
            st = harness.proc_status(d.pid)
            self.assertEqual(ids(st, "Uid")[:2], [0, 0], "parent Uid")
            self.assertEqual(st.get("Seccomp"), "0", "parent Seccomp")
            self.assertEqual(os.readlink("/proc/%d/root" % d.pid), "/")


class Spawner(unittest.TestCase):
    """Workers are started by the spawner (docs/pool.md) and are the
    parent's children; a lost spawner is replaced at the next start."""

    def test_spawner_starts_workers_and_can_be_lost(self):
        # no pool: nothing is being started while its fds are listed
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 0") as d:
            # the parent is ready before the spawner it started has
            # titled itself: its title is a /proc field, polled.  One
            # alone: a process the spawner has just forked bears its
            # title until its exec (the zygote, started after `ready`)
            spawners = harness.poll_until(
                lambda: (lambda s: s if len(s) == 1 else None)(
                    [pid for pid, cmd in d.children()
                     if re.match(r"pyrelayd: spawner\b", cmd)]),
                10, "the spawner's title, on one process")
            # it holds nothing but stdio and its channel, once it is not
            # starting anything (after `ready`, it starts the zygote, and
            # holds the new process's channel end until that start is
            # done); a descriptor it kept would keep failing this
            harness.poll_until(
                lambda: harness.open_fds(spawners[0]) == {0, 1, 2, 3}, 10,
                "the spawner holding fds 0-3 only")

            async def main():
                b = await harness.binary(d, "spawned-a")
                p = await harness.phone(d, "spawned-a")
                await harness.assert_exchange(b, p, "spawned-a")
                # the relay it started is the parent's child
                relays = await asyncio.to_thread(d.wait_relays, 1)
                self.assertEqual(harness.proc_stat(relays["spawned-a"])[1],
                                 d.pid)
                mark = d.log_mark()
                os.kill(spawners[0], signal.SIGKILL)
                await asyncio.to_thread(
                    d.wait_log, r"\bevent=spawner_exited pid=%d "
                    r"action=restart$" % spawners[0], 10, mark)
                # relays still start; a new spawner replaces the lost one
                b2 = await harness.binary(d, "spawned-b")
                p2 = await harness.phone(d, "spawned-b")
                await harness.assert_exchange(b2, p2, "spawned-b")
                m = await asyncio.to_thread(
                    d.wait_log, r"\bevent=spawner_restarted pid=(\d+)$",
                    10, mark)
                new = int(m.group(1))
                self.assertNotEqual(new, spawners[0])
                # the parent's child; until its exec it has the parent's
                # title, then "pyrelayd -P spawner", then its own
                self.assertEqual(harness.proc_stat(new)[1], d.pid)
                # started late, it still holds nothing but stdio and its
                # channel, while the parent holds many more; once it has
                # its title, that is (a sanitizer runtime opens files of
                # its own while it starts)
                await asyncio.to_thread(
                    harness.poll_until,
                    lambda: re.match(r"pyrelayd: spawner\b",
                                     harness.proc_cmdline(new)), 10,
                    "the new spawner's title")
                await asyncio.to_thread(
                    harness.poll_until,
                    lambda: harness.open_fds(new) == {0, 1, 2, 3}, 10,
                    "the new spawner holding fds 0-3 only")
                # and the first server-id was not disturbed
                await harness.assert_exchange(b, p, "spawned-a")
                await harness.close_all(b, p, b2, p2)
            harness.run(main(), timeout=120)


def push_key_limbs(key_path):
    """The low 24 bytes of the service-account key's first prime as
    OpenSSL keeps a BIGNUM in memory (64-bit limbs, least significant
    first: the number's bytes backwards), from `openssl pkey -text`."""
    out = subprocess.run(["openssl", "pkey", "-in", key_path, "-noout",
                          "-text"], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"^prime1:\n((?:\s+[0-9a-f:]+\n)+)", out, re.M)
    big_endian = bytes.fromhex(re.sub(r"[\s:]", "", m.group(1)))
    return big_endian[::-1][:24]


def proc_limit(pid, name):
    """(soft, hard) of /proc/PID/limits' row name, as text."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith(name):
                fields = line[len(name):].split()
                return fields[0], fields[1]
    raise AssertionError("no %s in /proc/%d/limits" % (name, pid))


def fd_targets(pid):
    """What each of pid's descriptors is ("socket:[inode]", a path)."""
    out = set()
    for n in harness.open_fds(pid):
        try:
            out.add(os.readlink("/proc/%d/fd/%d" % (pid, n)))
        except FileNotFoundError:
            pass
    return out


def proc_pgrp(pid):
    """The process group of pid (/proc/PID/stat, field 5)."""
    data = harness._read("/proc/%d/stat" % pid)
    return int(data.rpartition(b")")[2].split()[2])


def wait_zygote(d, timeout=15):
    """The zygote the parent last said ready (harness zygote_pid), once
    it has its title."""
    d.wait_log(r"\bevent=zygote_ready pid=\d+", timeout * SLOW)
    pid = harness.poll_until(d.zygote_pid, timeout * SLOW, "a zygote")
    harness.poll_until(lambda: re.match(r"pyrelayd: zygote\b",
                                        harness.proc_cmdline(pid)),
                       timeout * SLOW, "the zygote's title")
    return pid


_PTRACE_GETREGS, _PTRACE_DETACH = 12, 17
_PTRACE_SEIZE, _PTRACE_INTERRUPT = 0x4206, 0x4207
_WALL = 0x40000000
# struct user_regs_struct (x86_64): 27 unsigned longs, fs_base the 22nd
_X86_64_REGS, _X86_64_FS_BASE = 27, 21


def stack_canary(pid):
    """The stack protector's canary of process pid: glibc keeps it in the
    thread's TCB, at %fs:0x28 on x86_64.  The process is stopped with
    ptrace (PTRACE_SEIZE, then PTRACE_INTERRUPT), its fs base read with
    PTRACE_GETREGS, the eight bytes read through /proc/PID/mem, and it
    is let go: nothing runs inside it.  Root may trace any process."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p,
                            ctypes.c_void_p]

    def ptrace(req, data=None):
        if libc.ptrace(req, pid, None, data) == -1:
            e = ctypes.get_errno()
            raise OSError(e, "ptrace(%d) of %d: %s"
                          % (req, pid, os.strerror(e)))
    ptrace(_PTRACE_SEIZE)
    try:
        ptrace(_PTRACE_INTERRUPT)
        os.waitpid(pid, _WALL)
        regs = (ctypes.c_ulong * _X86_64_REGS)()
        ptrace(_PTRACE_GETREGS, ctypes.addressof(regs))
        with open("/proc/%d/mem" % pid, "rb", buffering=0) as f:
            f.seek(regs[_X86_64_FS_BASE] + 0x28)
            return struct.unpack("<Q", f.read(8))[0]
    finally:
        ptrace(_PTRACE_DETACH)


def own_pages(pid):
    """The writable pages pid has of its own (present, and mapped by no
    other process: /proc/PID/pagemap's bits 63 and 56), as "addr name"."""
    out = []
    with open("/proc/%d/maps" % pid) as f:
        rows = [line.split() for line in f]
    with open("/proc/%d/pagemap" % pid, "rb") as pm:
        for r in rows:
            if r[1][1] != "w":
                continue
            lo, hi = (int(x, 16) for x in r[0].split("-"))
            pm.seek(lo // 4096 * 8)
            raw = pm.read((hi - lo) // 4096 * 8)
            for i, (v,) in enumerate(struct.iter_unpack("<Q", raw)):
                if v >> 63 & 1 and v >> 56 & 1:
                    out.append("%x %s" % (lo + i * 4096,
                                          r[5] if len(r) > 5 else ""))
    return out


async def served_pair(d, sid):
    """A binary and a phone of sid that have exchanged a message."""
    b = await harness.binary(d, sid)
    p = await harness.phone(d, sid)
    await harness.assert_exchange(b, p, sid)
    return b, p


class Zygote(unittest.TestCase):
    """Relays are forked by a zygote that entered the relay sandbox once
    (docs/pool.md, "The zygote"): it is sandboxed like them and holds
    nothing but its channel; a relay is the parent's child, in a process
    group of its own, and cannot fork (RLIMIT_NPROC 0, and a program that
    allows the zygote's clone only: tests/unit/test_sandbox_filter.c); a
    killed zygote is replaced; `relay zygote renew` replaces it on
    schedule."""

    def test_zygote_sandboxed_relays_cannot_fork(self):
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 1") as d:
            zyg = wait_zygote(d)
            zygote_channel = os.readlink("/proc/%d/fd/3" % zyg)
            assert_sandboxed(self, d, zyg, "zygote %d" % zyg)
            self.assertEqual(harness.proc_stat(zyg)[1], d.pid)
            # once the pool is full (while it forks, it holds the relay's
            # channel end too, until the clone is done)
            pooled_relay_pids(d, 1)
            harness.poll_until(lambda: len(harness.open_fds(zyg)) == 4,
                               10 * SLOW, "the zygote at rest")
            # no connection, no secret, no event loop: stdio and its
            # channel (each relay makes its own loop: src/relay_loop.c)
            self.assertEqual(harness.open_fds(zyg), {0, 1, 2, 3})
            self.assertNotEqual(proc_limit(zyg, "Max processes"),
                                ("0", "0"))

            async def main():
                b, p = await served_pair(d, "zygote-a")
                relays = await asyncio.to_thread(d.wait_relays, 1)
                return b, p, relays["zygote-a"]
            b, p, relay = harness.run(main())
            # its lines name it, not the zygote it was forked from (the
            # pid it asks once as it starts: log_newpid), and the
            # zygote's name no line of it
            d.wait_log(r"^relay\[%d\]: event=server_claimed "
                       r"server_id=zygote-a " % relay)
            d.wait_log(r"^relay\[%d\]: event=phone_registered "
                       r"server_id=zygote-a " % relay)
            self.assertNotRegex(d.log_text(), r"(?m)^relay\[%d\]: " % zyg)
            pooled = pooled_relay_pids(d)
            for pid, what in [(relay, "relay")] + [
                    (x, "pooled relay") for x in pooled]:
                what = "%s %d" % (what, pid)
                assert_sandboxed(self, d, pid, what)
                # the parent's child (CLONE_PARENT), as when it was exec'd
                self.assertEqual(harness.proc_stat(pid)[1], d.pid, what)
                # it cannot fork: no process at all for its user (but
                # in sanitizer builds, whose leak check at exit needs a
                # task: docs/sandbox.md)
                if not harness.sanitizer_build():
                    self.assertEqual(proc_limit(pid, "Max processes"),
                                     ("0", "0"), what)
                # its kill(0, SIGABRT) reaches itself only
                self.assertEqual(proc_pgrp(pid), pid, what)
                # the zygote's channel is not among its descriptors
                self.assertNotIn(zygote_channel, fd_targets(pid), what)
                # stdio, then exactly: its loop's epoll instance and
                # sockets (its channel, and its connections' while their
                # clients are there); no pipe and no signalfd (SIGTERM is
                # taken while the loop waits: src/relay_loop.c)
                kinds = sorted(re.sub(r":\[\d+\]$", "", os.readlink(
                    "/proc/%d/fd/%d" % (pid, fd)))
                    for fd in harness.open_fds(pid) - {0, 1, 2})
                self.assertEqual([k for k in kinds if k != "socket"],
                                 ["anon_inode:[eventpoll]"], what)
                self.assertIn("socket", kinds, what)
            self.assertNotEqual(proc_pgrp(zyg), proc_pgrp(d.pid))
            harness.run(harness.close_all(b, p))

    def test_relay_sockets_have_nodelay(self):
        # Nagle is off on the sockets a relay serves (a binary's frames
        # and a phone's are small and must not wait for an ACK), though
        # the relay never sets it: the parent's listener and the front
        # did (parent_listen, front_conn_accepted)
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 0") as d:
            async def main():
                b, p = await served_pair(d, "nodelay-a")
                relays = await asyncio.to_thread(d.wait_relays, 1)
                got = await asyncio.to_thread(harness.tcp_nodelay,
                                              relays["nodelay-a"])
                await harness.close_all(b, p)
                return got
            got = harness.run(main())
            # its binary's socket and its phone's, both with TCP_NODELAY
            self.assertEqual(sorted(got.values()), [1, 1], got)

    def test_each_relay_has_its_own_stack_canary(self):
        if os.uname().machine != "x86_64":
            self.skipTest("reads the canary where x86_64 keeps it")
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 2") as d:
            zyg = wait_zygote(d)
            pids = pooled_relay_pids(d, 2)
            # the TCB's stack guard, %fs:0x28, read from outside
            canaries = {pid: stack_canary(pid) for pid in [zyg] + pids}
            self.assertEqual(len(set(canaries.values())), 3, canaries)
            for pid, c in canaries.items():
                # glibc's shape: a zero low byte, random above it
                self.assertEqual(c & 0xff, 0, pid)
                self.assertNotEqual(c, 0, pid)

    def test_relay_memory_beside_its_image(self):
        # Every relay copies the zygote's page tables: a page of them for
        # each 2 MiB its mappings touch, and more for each GiB and 512
        # GiB.  The zygote starts with brk refused (SPAWN_NO_BRK), so
        # glibc maps its thread block and malloc's blocks beside the
        # image: no [heap] where the kernel would put it, far away
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 1") as d:
            zyg = wait_zygote(d)
            pids = pooled_relay_pids(d, 1)
            for pid, what in [(zyg, "zygote"), (pids[0], "pooled relay")]:
                with open("/proc/%d/maps" % pid) as f:
                    rows = [line.split() for line in f]
                names = [r[5] for r in rows if len(r) > 5]
                self.assertNotIn("[heap]", names, what)
                if harness.sanitizer_build():
                    # their runtime maps its shadow memory far away, and
                    # the zygote leaves [stack] where it is
                    continue
                spans = [tuple(int(x, 16) for x in r[0].split("-"))
                         for r in rows if not (len(r) > 5 and
                                               r[5] == "[vsyscall]")]
                lo = min(s[0] for s in spans)
                hi = max(s[1] for s in spans)
                # the image, its .lbss (stack, arena, vDSO) and glibc's
                # few blocks below it: under 4 MiB in all
                self.assertLess(hi - lo, 4 << 20, "%s: %s" % (
                    what, ["%x-%x" % s for s in spans]))
                # and in few mappings, each of which a relay copies: the
                # vDSO right under the stack is its guard (no page of
                # its own), and glibc's blocks below the image are one
                # mapping, its thread block perhaps another (the holes
                # its frees left are filled: zygote_mm_fill)
                self.assertNotIn("---p", [r[1] for r in rows], what)
                at = [i for i, r in enumerate(rows)
                      if len(r) > 5 and r[5] == "[stack]"]
                self.assertEqual(len(at), 1, what)
                self.assertEqual(rows[at[0] - 1][5:], ["[vdso]"], what)
                image = min(i for i, r in enumerate(rows)
                            if len(r) > 5 and r[5].endswith("pyrelayd-relay"))
                self.assertLessEqual(image, 2, "%s: %d mappings below "
                                     "the image" % (what, image))

    def test_idle_relay_has_three_pages_of_its_own(self):
        # What a server-id costs beyond the kernel's share: the pages its
        # relay has of its own (pagemap's exclusive bit), whether it wrote
        # them or the zygote did after the fork.  A relay whose binary and
        # phone are in and silent has three: its thread block (canary,
        # errno, the log's line: log.c), the hot page of its stack and
        # messages, and the first page of its arena (its objects, its
        # title).  Not libevent's .bss page (relay_loop.c), nor rseq's
        # (zygote_mm.c), nor a second page of objects (relay_alloc.c):
        # docs/relay-executable.md.
        if harness.sanitizer_build():
            self.skipTest("sanitizer runtimes write shadow memory of "
                          "their own")
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 1") as d:
            async def main():
                b = await harness.binary(d, "pages-a")
                p = await harness.phone(d, "pages-a")
                # a second server-id: the zygote forks again after the
                # first relay's fork, and writes what it writes
                b2 = await harness.binary(d, "pages-b")
                relays = await asyncio.to_thread(d.wait_relays, 2)
                for sid in ("pages-a", "pages-b"):
                    pages = own_pages(relays[sid])
                    self.assertLessEqual(len(pages), 3, "%s: %s" % (
                        sid, ", ".join(pages)))
                # in grace, the phone gone: its close notice is queued
                # for the binary's return (relay_core.c) in the block the
                # binary's connection left (msgq.c), not in a megabyte
                # glibc's malloc maps; the close frames read are in the
                # first page of the read buffer (relay_io.c)
                mark = d.log_mark()
                await b.close()
                await p.close()
                await asyncio.to_thread(
                    d.wait_log, r"\bevent=phone_unregistered "
                    r"server_id=pages-a\b", 10, mark)
                with open("/proc/%d/maps" % relays["pages-a"]) as f:
                    after = f.read()
                with open("/proc/%d/maps" % relays["pages-b"]) as f:
                    self.assertEqual(len(after.splitlines()),
                                     len(f.read().splitlines()), after)
                pages = own_pages(relays["pages-a"])
                self.assertLessEqual(len(pages), 4, ", ".join(pages))
                await harness.close_all(b2)
            harness.run(main())

    def test_relay_maps_its_code_in_few_faults(self):
        # A forked relay maps again, fault by fault, what the zygote had
        # mapped (the kernel copies no entry of a file mapping at a fork;
        # each fault maps the 64 KiB around it).  The code it runs is
        # together at the head of its text (src/relay-hot.ld), and the
        # vDSO's data pages come with the fork (zygote_mm.c): a relay that
        # has served a binary and a phone has taken 12 or 13 faults in all
        # (as the windows fall), at most 14 here, where it took 16 to 18
        # with its code where the archives put it
        # (docs/relay-executable.md, "Hot code together").
        if harness.sanitizer_build():
            self.skipTest("sanitizer runtimes map and touch their own")
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 1") as d:
            async def main():
                # the pooled relay, and one forked when the pool was empty
                conns = []
                for sid in ("faults-a", "faults-b"):
                    b = await harness.binary(d, sid)
                    p = await harness.phone(d, sid)
                    await harness.assert_exchange(b, p, sid)
                    conns += [b, p]
                relays = await asyncio.to_thread(d.wait_relays, 2)
                for sid in ("faults-a", "faults-b"):
                    data = harness._read("/proc/%d/stat" % relays[sid])
                    minflt = int(data.rpartition(b")")[2].split()[7])
                    self.assertLessEqual(minflt, 14, sid)
                await harness.close_all(*conns)
            harness.run(main())

    def test_killed_zygote_is_replaced(self):
        with harness.Daemon(extra_conf=RATE + "\nrelay pool 0") as d:
            zyg = wait_zygote(d)

            async def main():
                b, p = await served_pair(d, "zygote-before")
                mark = d.log_mark()
                os.kill(zyg, signal.SIGKILL)
                await asyncio.to_thread(
                    d.wait_log, r"\bevent=zygote_exited pid=%d .*signal=9"
                    % zyg, 10, mark)
                m = await asyncio.to_thread(
                    d.wait_log, r"\bevent=zygote_ready pid=(\d+)", 15 * SLOW,
                    mark)
                new = int(m.group(1))
                self.assertNotEqual(new, zyg)
                # a new server-id gets a relay from the new zygote
                b2, p2 = await served_pair(d, "zygote-after")
                # the relay the old one forked serves on
                await harness.assert_exchange(b, p, "zygote-before", 2)
                self.assertEqual(wait_zygote(d), new)
                assert_sandboxed(self, d, new, "new zygote %d" % new)
                await harness.close_all(b, p, b2, p2)
            harness.run(main(), timeout=60)

    def renewal(self, renew, sids, then=None):
        """A daemon with `relay zygote renew RENEW` and no pool: a pair
        served for each of sids, then the zygote renewed after those
        relays; then(d, old, new, conns) checks the rest."""
        conf = RATE + "\nrelay pool 0\nrelay zygote renew " + renew
        with harness.Daemon(extra_conf=conf) as d:
            zyg = wait_zygote(d)
            mark = d.log_mark()

            async def main():
                conns = []
                for sid in sids:
                    conns += await served_pair(d, sid)
                m = await asyncio.to_thread(
                    d.wait_log, r"\bevent=zygote_renewed pid=(\d+) "
                    r"old_pid=%d relays=%d$" % (zyg, len(sids)), 15 * SLOW,
                    mark)
                if then is not None:
                    await then(d, zyg, int(m.group(1)), mark, conns)
                await harness.close_all(*conns)
            harness.run(main(), timeout=60)

    def test_renewed_after_so_many_relays(self):
        async def then(d, zyg, new, mark, conns):
            # the old one exits once it has answered, as expected
            line = await asyncio.to_thread(
                d.wait_log, r"\bevent=zygote_exited pid=%d .*" % zyg, 15,
                mark)
            self.assertRegex(line.group(0), r"\bstatus=0$")
            self.assertEqual(wait_zygote(d), new)
            conns += await served_pair(d, "renew-3")
            # relays of the old zygote serve on
            await harness.assert_exchange(conns[0], conns[1], "renew-1", 2)
        self.renewal("2 relays", ["renew-1", "renew-2"], then)

    def test_renewed_after_so_long(self):
        self.renewal("1s", ["aged-1"])


def pooled_relay_pids(d, n=None, timeout=15):
    """Pooled relays (titled); n of them, when given, polled for."""
    def pooled():
        return [pid for pid, cmd in d.children()
                if re.match(r"pyrelayd: pooled relay\b", cmd) and
                harness.proc_state(pid) != "Z"]
    if n is not None:
        harness.poll_until(lambda: len(pooled()) == n, timeout * SLOW,
                           "%d pooled relays" % n)
    return pooled()


class WorkerEnvironment(unittest.TestCase):
    """Workers get only the variables a library in them reads (TZ,
    OPENSSL_*, the sanitizers' options): a secret in the daemon's
    environment stays in the parent (pyrelayd(8) ENVIRONMENT).  The push
    service-account key is no variable: the parent reads its file and
    sends it over the push process's channel alone (docs/push.md).

    /proc/PID/environ cannot tell: it shows the memory where the kernel
    put the environment at exec, and every process's title is written
    over it (libbsd's setproctitle), the parent's too.  What a process was
    given lives on in its heap, where setproctitle_init() copied each
    variable so that getenv() still works.  So the test reads each
    process's writable memory through /proc/PID/mem, from outside, as
    root: no debugger, nothing runs inside the process.  The parent must
    hold the secret (the search works), each worker its own title (its
    memory was read), and no worker the secret; the push process must
    hold the key's private prime (as OpenSSL keeps it) and no other
    worker any part of the key, in its PEM text or as that prime."""

    def test_secret_stays_in_the_parent(self):
        name, value = "PYRELAYD_TEST_SECRET", "s3cret-%d" % os.getpid()
        path = os.environ.get("PATH", "")
        tmp = tempfile.mkdtemp(prefix="pyrelayd-env-")
        self.addCleanup(shutil.rmtree, tmp, True)
        os.chmod(tmp, 0o755)
        pki = push_fake.Pki(tmp)
        # push on, with endpoints it resolves at once and never calls
        key = pki.write_key_file(os.path.join(tmp, "sa.json"),
                                 "https://127.0.0.1:9/token")
        conf = ('%s\npush fcm credentials "%s"\npush fcm endpoint '
                '"https://127.0.0.1:9"\npush ca "%s"\n'
                % (RATE, key, pki.ca_pem))
        pem_lines = [ln.encode() for ln in pki.sa_pem.splitlines()
                     if len(ln) > 40]
        prime = push_key_limbs(pki.sa_key)
        os.environ[name] = value
        try:
            d = harness.Daemon(extra_conf=conf)
            d.start()
        finally:
            del os.environ[name]
        try:
            async def main():
                b = await harness.binary(d, "env-a")
                p = await harness.phone(d, "env-a")
                await harness.assert_exchange(b, p, "env-a")
                await asyncio.to_thread(d.wait_relays, 1)
                await asyncio.to_thread(d.wait_fronts, 2)
                await asyncio.to_thread(
                    d.wait_log, r"\bevent=push_ready pid=\d+$", 30)
                secret = value.encode()
                self.assertTrue((await asyncio.to_thread(
                    memory_holds, d.pid, [secret]))[0], "the parent has no "
                    "secret: the search finds nothing")
                workers = [(pid, cmd) for pid, cmd in d.children()
                           if cmd.startswith("pyrelayd: ")]
                # the spawner, the fronts, the zygote, the relay, the
                # pooled relays and the push process
                self.assertGreaterEqual(len(workers), 6, d.children())
                pushes = [pid for pid, cmd in workers
                          if cmd == "pyrelayd: push"]
                self.assertEqual(len(pushes), 1, workers)
                for pid, cmd in workers:
                    # a read that misses the title is tried again (a short
                    # read of /proc/PID/mem); a worker that is gone since
                    # the list was taken (a pooled relay stopped) holds
                    # nothing any more.  A relay the zygote has just
                    # forked carries the zygote's title until it sets its
                    # own, so each read looks for the title the process
                    # has when the read starts, and counts only if the
                    # process still has it when the read ends
                    for attempt in range(3):
                        cmd = harness.proc_cmdline(pid) or cmd
                        found = await asyncio.to_thread(
                            memory_holds, pid, [cmd.encode(), secret,
                                                b"PATH=" + path.encode(),
                                                prime] + pem_lines)
                        if harness.proc_state(pid) in (None, "Z"):
                            break
                        if found[0] and harness.proc_cmdline(pid) == cmd:
                            break
                    self.assertFalse(found[1], "%d (%s) has the secret"
                                     % (pid, cmd))
                    self.assertFalse(path and found[2], "%d (%s) has PATH"
                                     % (pid, cmd))
                    self.assertFalse(any(found[4:]), "%d (%s) has the key's "
                                     "PEM text" % (pid, cmd))
                    if harness.proc_state(pid) in (None, "Z"):
                        continue
                    self.assertTrue(found[0], "%d (%s): its title is not "
                                    "in the memory read (now %r)"
                                    % (pid, cmd, harness.proc_cmdline(pid)))
                    self.assertEqual(found[3], pid in pushes,
                                     "%d (%s): the key's prime" % (pid, cmd))
                # the push process was read, not passed over
                self.assertNotIn(harness.proc_state(pushes[0]), (None, "Z"),
                                 "the push process is gone")
                await harness.close_all(b, p)
            harness.run(main(), timeout=120)
        finally:
            d.stop()


# larger writable mappings are a sanitizer runtime's shadow memory
MEMORY_MAPPING_MAX = 64 << 20


def memory_holds(pid, needles):
    """For each of needles (bytes), whether it is in a writable mapping of
    process pid, read through /proc/PID/mem (root may read any process's).
    A mapping that cannot be read
    (a guard page) is passed over; the caller checks that something it
    knows is there was found."""
    found = [False] * len(needles)
    with open("/proc/%d/maps" % pid) as maps, \
            open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if not fields[1].startswith("rw") or \
                    hi - lo > MEMORY_MAPPING_MAX:
                continue
            data = b""
            try:
                mem.seek(lo)
                # /proc/PID/mem may return less than asked: read on
                while len(data) < hi - lo:
                    chunk = mem.read(hi - lo - len(data))
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                if not data:
                    continue
            for i, n in enumerate(needles):
                found[i] = found[i] or (bool(n) and n in data)
    return found


# tests/pyrelayd-relay-crash (tests/crash_relay.c): the real relay with a
# handler on each of these signals that does one forbidden thing
CRASH_SOCKET = signal.SIGRTMIN + 1   # socket(AF_INET, SOCK_STREAM, 0)
CRASH_ABORT = signal.SIGRTMIN + 2    # abort()
CRASH_TGKILL = signal.SIGRTMIN + 3   # tgkill(parent, parent, SIGABRT)


def exited_by_sigsys(line, pid):
    """The relay_exited line names signal 31 / SIGSYS (its pid aside)."""
    rest = re.sub(r"\bpid=%d\b" % pid, "", line)
    return re.search(r"(?i)SIGSYS|\bsig(nal)?[=: ]*(31|SYS)\b", rest)


def channel_queued(pid):
    """Bytes queued toward worker pid on its channel (its fd 3): a copy of
    that fd taken with pidfd_getfd(2), asked with SIOCINQ (a SOCK_SEQPACKET
    socket answers the sum of its queued packets)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        fd = libc.syscall(438, pidfd, 3, 0)     # SYS_pidfd_getfd
        if fd < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        try:
            buf = bytearray(4)
            import fcntl
            fcntl.ioctl(fd, 0x541B, buf)        # SIOCINQ (FIONREAD)
            return struct.unpack("i", bytes(buf))[0]
        finally:
            os.close(fd)
    finally:
        os.close(pidfd)


class Fronts(unittest.TestCase):
    # parent.c parent_pick_front
    CONN_NEW = 16 + 144     # header and struct msg_conn_new (proto.h)

    def test_plain_connections_go_to_the_front_awake(self):
        # Taking turns woke each front once a connection.  A plain
        # connection goes to the front the last one went to while that
        # front has not answered it: with both fronts stopped, four
        # connections queue on one front's channel, none on the other's.
        with harness.Daemon(extra_conf=RATE) as d:
            fronts = d.wait_fronts(2)
            for f in fronts:
                os.kill(f, signal.SIGSTOP)
            socks = []
            try:
                for _ in range(4):
                    socks.append(socket.create_connection(
                        ("127.0.0.1", d.port), timeout=5))
                queued = harness.poll_until(
                    lambda: (lambda q: q if sum(q) >= 4 * self.CONN_NEW
                             else None)(
                        [channel_queued(f) for f in fronts]),
                    10, "four CONN_NEW queued on the fronts' channels")
                self.assertEqual(sorted(queued), [0, 4 * self.CONN_NEW],
                                 queued)
            finally:
                for f in fronts:
                    os.kill(f, signal.SIGCONT)
                for s in socks:
                    s.close()
            # and they serve as before
            harness.run(harness.exchange_once(d, "fronts-a"))


class Crashes(unittest.TestCase):
    """A relay that does what its sandbox forbids dies of it, alone.  The
    daemon's relays are tests/pyrelayd-relay-crash (harness.FakeableDaemon),
    the real relay plus a handler per CRASH_* signal, sent with kill(2): no
    debugger runs anything in the relay.  A handler whose call returns
    exits with status 70 instead of a signal, which fails these tests."""

    def test_relay_seccomp_violation_kills_only_that_relay(self):
        with harness.FakeableDaemon(RATE, relay=harness.CRASH_RELAY) as d:
            async def main():
                b = await harness.binary(d, "victim")
                p = await harness.phone(d, "victim")
                await harness.assert_exchange(b, p, "victim")
                pid = (await asyncio.to_thread(d.wait_relays, 1))["victim"]
                mark = d.log_mark()
                # make the relay itself call socket(2): not on its allow-list
                os.kill(pid, CRASH_SOCKET)
                m = await asyncio.to_thread(
                    d.wait_log, r"\bevent=relay_exited\b.*\bpid=%d\b.*" % pid,
                    10, mark)
                self.assertTrue(exited_by_sigsys(m.group(0), pid),
                                "exit not logged as SIGSYS: " + m.group(0))
                # its connections lived only in that process: both just drop
                await harness.expect_close(b, 1006)
                await harness.expect_close(p, 1006)
                self.assertTrue(d.alive(), "parent died")
                # another server-id works
                b2 = await harness.binary(d, "bystander")
                p2 = await harness.phone(d, "bystander")
                await harness.assert_exchange(b2, p2, "bystander")
                # and the same server-id can be claimed again
                b3 = await harness.binary(d, "victim")
                p3 = await harness.phone(d, "victim")
                await harness.assert_exchange(b3, p3, "victim")
                relays = d.relay_pids()
                self.assertNotEqual(relays.get("victim"), pid)
                await harness.close_all(b2, p2, b3, p3)
            harness.run(main(), timeout=120)
            self.assertEqual(d.healthz()["status"], "ok")

    def test_relay_abort_reads_as_sigabrt(self):
        # Relays share the zygote's seccomp program, which traps tgkill
        # (SIGSYS to the relay's handler) and allows kill(0, SIGABRT) in
        # the relay's own process group: so abort() (assert, stack
        # protector) still raises SIGABRT on the relay itself, a crash
        # that reads as one.  tgkill towards any other process is SIGSYS.
        with harness.FakeableDaemon(RATE, relay=harness.CRASH_RELAY) as d:
            async def main():
                b = await harness.binary(d, "aborts")
                relays = await asyncio.to_thread(d.wait_relays, 1)
                pid = relays["aborts"]
                mark = d.log_mark()
                os.kill(pid, CRASH_ABORT)
                m = await asyncio.to_thread(
                    d.wait_log, r"\bevent=relay_exited pid=%d .*" % pid,
                    10, mark)
                self.assertRegex(m.group(0), r"\bsignal=6\b")
                await harness.expect_close(b, 1006)
                if harness.sanitizer_build():
                    sys.stderr.write("note: sanitizer build, which allows "
                                     "tgkill at any pid (its runtime needs "
                                     "it: sandbox_filter.c): tgkill at the "
                                     "parent is not checked\n")
                    return
                # tgkill at another pid, the parent's
                b2 = await harness.binary(d, "aborts-too")
                relays = await asyncio.to_thread(d.wait_relays, 1)
                pid = relays["aborts-too"]
                mark = d.log_mark()
                os.kill(pid, CRASH_TGKILL)
                m = await asyncio.to_thread(
                    d.wait_log, r"\bevent=relay_exited pid=%d .*" % pid,
                    10, mark)
                self.assertTrue(exited_by_sigsys(m.group(0), pid), m.group(0))
                self.assertTrue(d.alive(), "parent died")
                await harness.expect_close(b2, 1006)
            harness.run(main(), timeout=120)

    def test_kill9_relay_leaves_other_server_ids_working(self):
        with harness.Daemon(extra_conf=RATE) as d:
            async def main():
                conns = {}
                for sid in ("k-a", "k-b", "k-c"):
                    b = await harness.binary(d, sid)
                    p = await harness.phone(d, sid)
                    await harness.assert_exchange(b, p, sid)
                    conns[sid] = (b, p)
                relays = await asyncio.to_thread(d.wait_relays, 3)
                victim = relays["k-a"]
                mark = d.log_mark()
                os.kill(victim, signal.SIGKILL)
                await asyncio.to_thread(
                    d.wait_log, r"\bevent=relay_exited\b.*\bpid=%d\b" % victim,
                    10, mark)
                await harness.expect_close(conns["k-a"][0], 1006)
                await harness.expect_close(conns["k-a"][1], 1006)
                self.assertTrue(d.alive(), "parent died")
                for n, sid in enumerate(("k-b", "k-c"), 2):
                    b, p = conns[sid]
                    await harness.assert_exchange(b, p, sid, n)
                # the killed relay's server-id is free for a new claim
                b = await harness.binary(d, "k-a")
                p = await harness.phone(d, "k-a")
                await harness.assert_exchange(b, p, "k-a", 5)
                await harness.close_all(b, p, *conns["k-b"], *conns["k-c"])
            harness.run(main())

    def test_kill9_front_is_replaced(self):
        with harness.Daemon(extra_conf=RATE) as d:
            fronts = d.wait_fronts(2)
            victim = fronts[0]
            start = harness.proc_stat(victim)[2]
            mark = d.log_mark()
            os.kill(victim, signal.SIGKILL)

            # the parent logs front_ready when a new front is sandboxed
            m = d.wait_log(r"event=front_ready pid=(\d+)", since=mark)
            new = d.front_pids()
            self.assertEqual(len(new), 2, new)
            self.assertNotIn(victim, new)
            self.assertIn(int(m.group(1)), new)
            self.assertFalse(harness.same_process(victim, start),
                             "killed front not reaped")
            self.assertTrue(d.alive(), "parent died")
            (fresh,) = set(new) - set(fronts)
            assert_sandboxed(self, d, fresh, "new front %d" % fresh)
            # new connections work, enough to go through both fronts
            for i in range(6):
                self.assertEqual(d.healthz()["status"], "ok")

            async def main():
                for i in range(4):
                    sid = "after-front-%d" % i
                    b = await harness.binary(d, sid)
                    p = await harness.phone(d, sid)
                    await harness.assert_exchange(b, p, sid)
                    await harness.close_all(b, p)
            harness.run(main())


class ManyServerIds(unittest.TestCase):

    N = 200

    def test_relay_per_server_id_and_retirement(self):
        sids = ["many-%03d" % i for i in range(self.N)]
        # 200 forks+execs on a loaded machine can take longer than the 5 s
        # the head has by default: that limit is not this test's subject
        conf = RATE + "\ngrace 1s\nhandshake timeout 60s"
        with harness.Daemon(extra_conf=conf) as d:
            async def main():
                bs = await asyncio.gather(*(
                    harness.binary(d, s, open_timeout=30 * SLOW)
                    for s in sids))
                relays = await asyncio.to_thread(d.wait_relays, self.N,
                                                 30 * SLOW)
                self.assertEqual(set(relays), set(sids))
                self.assertEqual(len(set(relays.values())), self.N)
                ps = subprocess.run(
                    ["ps", "-o", "pid=,args=", "--ppid", str(d.pid)],
                    capture_output=True, text=True, timeout=30)
                titles = {}
                for line in ps.stdout.splitlines():
                    pid, _, args = line.strip().partition(" ")
                    titles[int(pid)] = args.strip()
                for s, pid in relays.items():
                    self.assertRegex(titles.get(pid, ""),
                                     r"\Apyrelayd: relay %s(\s|\Z)"
                                     % re.escape(s))
                # every binary is live
                self.assertEqual(sum(b.closed for b in bs), 0)
                await harness.close_all(*bs)
            harness.run(main(), timeout=90 * SLOW)
            # grace 1s, then each relay retires
            d.wait_no_relays(timeout=30 * SLOW)
            # what is left: the two fronts, and relays of the pool (`relay
            # pool`, test_pool.py), idle or still starting (no title yet),
            # none serving a server-id
            kids = d.children()
            fronts = [(pid, cmd) for pid, cmd in kids
                      if re.match(r"pyrelayd: front\b", cmd)]
            self.assertEqual(len(fronts), 2, kids)
            for pid, cmd in fronts:
                self.assertNotEqual(harness.proc_state(pid), "Z")
            for pid, cmd in kids:
                self.assertNotRegex(cmd, r"\Apyrelayd: relay ", kids)


class ReclaimAtGraceDeadline(unittest.TestCase):
    """docs/architecture.md, the retire handshake: a binary that reaches a relay
    retiring at its grace deadline is routed again, never lost."""

    ROUNDS = 50
    GRACE_MS = 300

    def test_reclaim_at_deadline_never_loses_the_binary(self):
        conf = RATE + "\ngrace %dms" % self.GRACE_MS
        with harness.Daemon(extra_conf=conf) as d:
            async def main():
                for i in range(self.ROUNDS):
                    sid = "reclaim-%02d" % i
                    # -25 ms .. +24 ms around the deadline, one ms per round
                    delay = (self.GRACE_MS - 25 + i) / 1000.0
                    b1 = await harness.binary(d, sid)
                    if i % 2:
                        b1.transport.abort()  # TCP gone without a close
                    else:
                        await b1.close()
                    # the delay is the subject of this test, not a wait
                    await asyncio.sleep(delay)
                    b2 = await harness.binary(d, sid)
                    p = await harness.phone(d, sid)
                    try:
                        await harness.assert_exchange(b2, p, sid, i)
                    except AssertionError as e:
                        raise AssertionError(
                            "round %d (reclaim after %d ms): %s; binary "
                            "close %r %r, phone close %r %r"
                            % (i, delay * 1000, e, b2.close_code,
                               b2.close_reason, p.close_code,
                               p.close_reason))
                    self.assertIsNone(b2.close_code, "round %d" % i)
                    await harness.close_all(b2, p)
            harness.run(main(), timeout=60 * SLOW)
            d.wait_no_relays(timeout=20 * SLOW)
            crash = re.search(r".*\bevent=relay_exited\b.*\bsignal=\d+.*",
                              d.log_text())
            self.assertIsNone(crash, crash and crash.group(0))



def ctxt_switches(pid):
    st = harness.proc_status(pid)
    return (int(st["voluntary_ctxt_switches"]) +
            int(st["nonvoluntary_ctxt_switches"]))


class IdleRelays(unittest.TestCase):
    """A relay whose clients are quiet is never woken: no per-second timer
    (at 20,000 server-ids such a tick cost most of a core)."""

    QUIET_S = 2.5   # the heartbeat (30 s) is far off

    def test_idle_relay_is_not_woken(self):
        with harness.Daemon(extra_conf=RATE) as d:
            async def main():
                b = await harness.binary(d, "idle-a")
                p = await harness.phone(d, "idle-a")
                await harness.assert_exchange(b, p, "idle-a")
                pid = (await asyncio.to_thread(d.wait_relays, 1))["idle-a"]

                # /metrics shows the counts (the scrape may ask the relay
                # for them); after that nothing is left for it to send
                await asyncio.to_thread(
                    harness.poll_until,
                    lambda: d.metrics()[harness.FRAMES_B2P] == 1,
                    10 * SLOW, "the counts to arrive")
                # nothing happens in this interval: it is what is measured.
                # A wake-up left over from the exchange or the scrape (a
                # counters request the relay read late, under load) falls
                # in one interval at most; a periodic timer falls in all.
                for _ in range(3):
                    before = ctxt_switches(pid)
                    await asyncio.sleep(self.QUIET_S)
                    after = ctxt_switches(pid)
                    if after == before:
                        break
                self.assertEqual(after, before,
                                 "the idle relay was woken %d times in %.1f s,"
                                 " in each of 3 intervals"
                                 % (after - before, self.QUIET_S))
                # and it still serves
                await harness.assert_exchange(b, p, "idle-a", 2)
                await harness.close_all(b, p)
            harness.run(main())



class RelayStoppedAlone(unittest.TestCase):
    """SIGTERM to one relay (an operator, a service manager): it leaves the
    parent's map before it closes its clients, so its server-id is served
    at once by a new relay, even while the old one still waits for a phone
    that never answers its close."""

    def test_sigterm_to_one_relay(self):
        with harness.Daemon(extra_conf=RATE) as d:
            async def main():
                sid = "alone-a"
                b1 = await harness.binary(d, sid)
                silent = await asyncio.to_thread(
                    harness.RawWS.connect, d.port,
                    harness.upgrade_request(d.port, "/v1/client", sid=sid))
                self.assertEqual(silent.status, 101)
                old = (await asyncio.to_thread(d.wait_relays, 1))[sid]
                started = harness.proc_stat(old)[2]
                os.kill(old, signal.SIGTERM)
                await harness.expect_close(b1, 1001)
                # the silent phone gets its close and never answers it
                fin, op, payload = await asyncio.to_thread(silent.read_frame)
                self.assertEqual(op, 0x8)
                self.assertEqual(payload[:2], b"\x03\xe9")  # 1001
                # the old relay is still there, in its close handshake
                self.assertTrue(harness.same_process(old, started))
                b2 = await harness.binary(d, sid)
                p2 = await harness.phone(d, sid)
                await harness.assert_exchange(b2, p2, sid)
                # another relay carries the title too (the old one still
                # does, and pids say nothing of which is newer: the pool
                # hands out relays in no pid order)
                others = []

                def served_by_another():
                    others[:] = [
                        pid for pid, cmd in d.children()
                        if pid != old and
                        re.match(r"pyrelayd: relay %s\b" % sid, cmd)]
                    return len(others) == 1
                await asyncio.to_thread(harness.poll_until,
                                        served_by_another, 10 * SLOW,
                                        "a new relay for %s" % sid)
                # the old relay ends by itself when the close times out
                await asyncio.to_thread(
                    d.wait_log,
                    r"\bevent=relay_exited pid=%d\b.*\bstatus=0\b" % old,
                    15 * SLOW)
                silent.close()
                await harness.close_all(b2, p2)
            harness.run(main(), timeout=60 * SLOW)
            self.assertNotRegex(d.log_text(), r"\bevent=worker_killed\b")
            self.assertNotRegex(d.log_text(), r"\babnormal=1\b")


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("SKIP: test_process.py needs root (workers drop to user "
              "nobody and chroot)", file=sys.stderr)
        sys.exit(harness.SKIP)
    try:
        nobody()
    except KeyError:
        print("SKIP: no user nobody", file=sys.stderr)
        sys.exit(harness.SKIP)
    harness.main()
