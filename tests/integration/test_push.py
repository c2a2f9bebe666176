#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""Push wakes (docs/protocol.md §6, docs/push.md) end to end: a binary's
push_wake goes from its relay through the parent to the push process,
which gets an OAuth2 access token from the key's token_uri with an RS256
JWT-bearer grant and sends the FCM HTTP v1 message, both to a local fake
of Google's endpoints over HTTPS (push_fake.py: a test CA made here,
trusted through `push ca`; the fake checks the JWT's signature with the
key's public half, its claims, and each send's exact body and bearer).

Every outcome is driven here: delivered, the access token reused and
fetched again after a 401, a failed token fetch, UNREGISTERED, a 500, a
reply that never comes (10 s), a redirect, a 1 MiB reply, 40 wakes against
a held fake (32 in flight, 8 dropped and counted), the per-server-id
bucket, a binary gone before its send completes, the push process killed
and restarted, a reload, SIGTERM with sends in flight, and keys refused by
-n.  No FCM token, key or access token may reach the log.
"""

import asyncio
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import harness  # noqa: E402
import push_fake  # noqa: E402
from test_relay import DaemonCase, atest, in_thread, new_sid  # noqa: E402

TMP = None
PKI = None
FAKE = None

METRIC = 'pyrycode_relay_push_wakes_total{outcome="%s"}'
OUTCOMES = ("sent", "unregistered", "send_failed", "token_fetch_failed",
            "dropped")


def setUpModule():
    global TMP, PKI, FAKE
    TMP = tempfile.mkdtemp(prefix="pyrelayd-push-")
    os.chmod(TMP, 0o755)
    PKI = push_fake.Pki(TMP)
    FAKE = push_fake.FakeGoogle(PKI)


def tearDownModule():
    FAKE.close()
    shutil.rmtree(TMP, ignore_errors=True)


def token(kind):
    """A distinctive FCM token: kind-<random> (the fake's behaviour)."""
    return "%s-%s" % (kind, secrets.token_hex(10))


def wake(tok, **envelope):
    envelope["push_wake"] = {"platform": "fcm", "token": tok}
    return json.dumps(envelope)


def token_hash(tok):
    return hashlib.sha256(tok.encode()).hexdigest()[:8]


def sent_re(sid, tok):
    return (r"\bevent=push_wake_sent server_id=%s token=%s duration_ms=(\d+) "
            r"message_id=(\S+)$" % (re.escape(sid), token_hash(tok)))


def failed_re(sid, tok, outcome="send_failed"):
    return (r"\bevent=push_wake_send_failed server_id=%s token=%s "
            r"duration_ms=(\d+) outcome=%s (?:status=(\d+) error_status=(\S+) "
            r"error_code=(\S+) )?error=\"([^\"]*)\"$"
            % (re.escape(sid), token_hash(tok), outcome))


def push_conf(key):
    return ('push fcm credentials "%s"\npush fcm endpoint "%s"\n'
            'push ca "%s"\n' % (key, FAKE.endpoint, PKI.ca_pem))


def push_pid(d):
    pids = [pid for pid, cmd in d.children()
            if re.match(r"pyrelayd: push\b", cmd)]
    assert len(pids) == 1, d.children()
    return pids[0]


def secrets_of_the_fake():
    """What must never be logged: FCM tokens, access tokens, assertions
    (and their signatures), the private key's lines, the client email."""
    with FAKE.cond:
        out = [s["token"] for s in FAKE.sends if s["token"]]
        out += list(FAKE.issued)
        for g in FAKE.grants:
            if g.get("assertion"):
                out += [g["assertion"], g["assertion"].split(".")[-1]]
    out += [ln for ln in PKI.sa_pem.splitlines() if len(ln) > 40]
    out.append(push_fake.EMAIL)
    return out


class PushCase(DaemonCase):
    """A daemon whose push process talks to the module's fake."""

    EXTRA = "grace 0s\n"

    @classmethod
    def setUpClass(cls):
        cls.key = PKI.write_key_file(os.path.join(TMP, cls.__name__ + ".json"),
                                     FAKE.token_uri)
        cls.CONF = push_conf(cls.key) + cls.EXTRA
        super().setUpClass()
        # `ready` is the listeners'; wakes before this one would be dropped
        cls.d.wait_log(r"\bevent=push_ready pid=\d+$")

    def setUp(self):
        super().setUp()
        self.m0 = self.d.metrics()

    def tearDown(self):
        text = self.d.log_text()
        for s in secrets_of_the_fake():
            self.assertNotIn(s, text, "a secret reached the log")
        with FAKE.cond:
            self.assertEqual(FAKE.errors, [])

    def delta(self, outcome):
        return self.d.metrics()[METRIC % outcome] - self.m0[METRIC % outcome]

    async def line(self, regex, timeout=15):
        return await self.wait_log(regex, self.mark, timeout)

    async def fake(self, pred, what, timeout=15):
        return await in_thread(FAKE.wait_for, pred, timeout, what)

    async def one_wake(self, c, kind, outcome="send_failed", timeout=15):
        """A binary's wake with a token of this kind; the match of its
        failed line (duration, status, error status, error code, error)."""
        sid = new_sid(kind)
        b = await c.binary(sid)
        tok = token(kind)
        await b.send(wake(tok))
        return tok, await self.line(failed_re(sid, tok, outcome), timeout)


class PushTest(PushCase):

    @atest()
    async def test_delivered(self, c):
        sid = new_sid("one")
        b = await c.binary(sid)
        p = await c.phone(sid)
        await self.hello(b, p, sid)
        tok = token("ok")
        await b.send(wake(tok))
        m = await self.line(sent_re(sid, tok))
        sends = FAKE.sends_for(tok)
        self.assertEqual(len(sends), 1)
        self.assertEqual(sends[0]["body"], (
            '{"message":{"token":"%s","android":{"priority":"HIGH"}}}'
            % tok).encode())
        self.assertEqual(sends[0]["status"], 200)
        with FAKE.cond:
            self.assertTrue(FAKE.issued.get(sends[0]["bearer"]),
                            "sent with a bearer the fake did not issue")
            # every grant so far verified: signature and claims
            self.assertTrue(FAKE.grants and all(g["ok"] for g in FAKE.grants))
        self.assertRegex(m.group(2), r"^projects/pyrelayd-test/messages/\d+$")
        # the binary is told nothing: its next message is the phone's
        await self.hello(b, p, sid, '"after"')
        self.assertEqual(self.delta("sent"), 1)

    @atest()
    async def test_empty_or_null_conn_id(self, c):
        sid = new_sid("cid")
        b = await c.binary(sid)
        t1, t2 = token("ok"), token("ok")
        await b.send(wake(t1, conn_id=""))
        await b.send(wake(t2, conn_id=None, frame="ignored"))
        await self.line(sent_re(sid, t1))
        await self.line(sent_re(sid, t2))

    @atest()
    async def test_token_reused_then_fetched_again_after_401(self, c):
        sid = new_sid("reuse")
        b = await c.binary(sid)
        toks = [token("ok") for _ in range(3)]
        for t in toks:
            await b.send(wake(t))
            await self.line(sent_re(sid, t))
        with FAKE.cond:
            grants = len(FAKE.grants)
        sends = [FAKE.sends_for(t)[-1] for t in toks]
        # one access token, one keep-alive connection for the three
        self.assertEqual(len({s["bearer"] for s in sends}), 1, sends)
        self.assertEqual(len({s["port"] for s in sends}), 1, sends)

        FAKE.revoke()
        t4 = token("ok")
        await b.send(wake(t4))
        await self.line(sent_re(sid, t4))
        again = FAKE.sends_for(t4)
        self.assertEqual([s["status"] for s in again], [401, 200])
        self.assertEqual(again[0]["bearer"], sends[0]["bearer"])
        self.assertNotEqual(again[1]["bearer"], sends[0]["bearer"])
        with FAKE.cond:
            self.assertEqual(len(FAKE.grants), grants + 1)
            self.assertEqual(FAKE.grants[-1]["access_token"],
                             again[1]["bearer"])
        self.assertEqual(self.delta("sent"), 4)
        self.assertEqual(self.delta("send_failed"), 0)

    @atest()
    async def test_token_fetch_failed(self, c):
        sid = new_sid("tff")
        b = await c.binary(sid)
        FAKE.revoke()
        FAKE.token_status = 500
        try:
            tok = token("ok")
            await b.send(wake(tok))
            m = await self.line(failed_re(sid, tok, "token_fetch_failed"))
            self.assertEqual(m.group(5), "token endpoint: HTTP 500")
            await self.line(r"\bevent=push_token_fetch_failed duration_ms=\d+ "
                            r"error=\"token endpoint: HTTP 500\"$")
        finally:
            FAKE.token_status = 200
        # the next wake fetches again, and goes
        tok = token("ok")
        await b.send(wake(tok))
        await self.line(sent_re(sid, tok))
        self.assertEqual(self.delta("token_fetch_failed"), 1)
        self.assertEqual(self.delta("sent"), 1)

    @atest()
    async def test_unregistered(self, c):
        _, m = await self.one_wake(c, "unreg", "unregistered")
        self.assertEqual(m.group(2, 3, 4, 5),
                         ("404", "NOT_FOUND", "UNREGISTERED", "HTTP 404"))
        self.assertEqual(self.delta("unregistered"), 1)
        self.assertEqual(self.delta("send_failed"), 0)

    @atest()
    async def test_server_error(self, c):
        _, m = await self.one_wake(c, "fail500")
        self.assertEqual(m.group(2, 3, 4, 5), ("500", "INTERNAL", "-",
                                               "HTTP 500"))
        self.assertEqual(self.delta("send_failed"), 1)

    @atest()
    async def test_redirect_is_a_failure(self, c):
        tok, m = await self.one_wake(c, "redirect")
        self.assertEqual(m.group(2, 5), ("302",
                                         "redirect (HTTP 302), not followed"))
        # not followed: the fake saw that one request and nothing else
        self.assertEqual(len(FAKE.sends_for(tok)), 1)
        self.assertEqual(self.delta("send_failed"), 1)

    @atest()
    async def test_reply_over_4_kib_is_not_read(self, c):
        pid = push_pid(self.d)
        hwm0 = int(harness.proc_status(pid)["VmHWM"].split()[0])
        for kind in ("big", "bigchunk"):
            _, m = await self.one_wake(c, kind)
            self.assertEqual(m.group(2, 5), ("0",
                                             "reply larger than 4096 bytes"))
        # 1 MiB twice, and the push process's peak memory barely moved
        # (AddressSanitizer's allocator keeps more: a looser bound there)
        hwm = int(harness.proc_status(pid)["VmHWM"].split()[0])
        self.assertLess(hwm - hwm0, 4096 if harness.sanitizer_build() else 512,
                        "VmHWM %d -> %d KiB" % (hwm0, hwm))
        self.assertEqual(self.delta("send_failed"), 2)

    @atest(timeout=90)
    async def test_slow_cases_together(self, c):
        """The 10 s cases run side by side."""
        await asyncio.gather(self.reply_never_comes(c),
                             self.bucket_per_server_id(c))

    async def reply_never_comes(self, c):
        t0 = time.monotonic()
        tok, m = await self.one_wake(c, "hang", timeout=25)
        took = time.monotonic() - t0
        self.assertEqual(m.group(2, 5), ("0", "timeout: no reply within 10 s"))
        # (libevent's timers count from the loop's cached time: a few ms)
        self.assertGreaterEqual(int(m.group(1)), 9900)
        self.assertLess(took, 12.5, "gave up after %.1f s" % took)
        # the request was sent: the reply is what never came
        self.assertEqual(len(FAKE.sends_for(tok)), 1)

    async def bucket_per_server_id(self, c):
        sid, other = new_sid("bucket"), new_sid("bucketo")
        b = await c.binary(sid)
        toks = [token("ok") for _ in range(10)]
        for t in toks:
            await b.send(wake(t))
        for t in toks[:6]:
            await self.line(sent_re(sid, t))
        await self.line(r"\bevent=push_rate_limited server_id=%s burst=6 "
                        r"refill_ms=10000$" % re.escape(sid))
        # another server-id has its own six
        ob = await c.binary(other)
        otoks = [token("ok") for _ in range(6)]
        for t in otoks:
            await ob.send(wake(t))
        for t in otoks:
            await self.line(sent_re(other, t))
        # one comes back 10 s after the first was taken: one request a
        # second, each waited for up to a second at the fake
        late = []
        got = None
        for _ in range(20):
            late.append(token("ok"))
            await b.send(wake(late[-1]))
            try:
                got = await self.fake(
                    lambda: [t for t in late if FAKE.sends_for(t)],
                    "a late wake", 1.0)
                break
            except AssertionError:
                pass
        self.assertIsNotNone(got, "no wake let through in 20 s")
        self.assertEqual(len(got), 1, got)
        await self.line(sent_re(sid, got[0]))
        # those over the burst never reached FCM
        for t in toks[6:] + [t for t in late if t != got[0]]:
            self.assertEqual(FAKE.sends_for(t), [])

    @atest(timeout=90)
    async def test_32_in_flight_the_rest_dropped(self, c):
        # a well-behaved server-id beside the flood
        calm = new_sid("calm")
        cb = await c.binary(calm)
        cp = await c.phone(calm)
        await self.hello(cb, cp, calm)
        sids = [new_sid("cap%d" % i) for i in range(7)]
        toks = {}
        binaries = [await c.binary(s) for s in sids]
        for i in range(40):
            sid = sids[i // 6]
            toks[token("slow-cap")] = sid
        for t, sid in toks.items():
            await binaries[sids.index(sid)].send(wake(t))
        m = await self.line(r"\bevent=push_wake_dropped server_id=(\S+) "
                            r"token=(\w+) reason=in_flight in_flight=32$")
        await in_thread(harness.poll_until, lambda: self.delta("dropped") == 8,
                        10, "8 wakes dropped")
        # the fake holds what reached it; the relay still relays
        held = await self.fake(lambda: FAKE.held("cap"), "held requests")
        self.assertLessEqual(len(held), 4)
        await self.hello(cb, cp, calm, '"during"')
        FAKE.release("cap")
        await self.fake(lambda: len([t for t in toks if any(
            s["status"] == 200 for s in FAKE.sends_for(t))]) == 32,
            "32 sends answered")
        for t, sid in toks.items():
            if FAKE.sends_for(t):
                await self.line(sent_re(sid, t))
        # the dropped ones never reached FCM; the first was logged
        dropped = [t for t in toks if not FAKE.sends_for(t)]
        self.assertEqual(len(dropped), 8)
        self.assertIn(m.group(2), [token_hash(t) for t in dropped])
        self.assertEqual(self.delta("sent"), 32)
        self.assertEqual(self.delta("dropped"), 8)
        await self.hello(cb, cp, calm, '"after"')

    @atest()
    async def test_binary_gone_before_the_send_completes(self, c):
        sid = new_sid("gone")
        b = await c.binary(sid)
        tok = token("slow-gone")
        await b.send(wake(tok))
        await self.fake(lambda: FAKE.held("gone"), "the held request")
        await b.close()
        # grace 0: its relay exits with it
        await in_thread(harness.poll_until,
                        lambda: sid not in self.d.relay_pids(), 10,
                        "the relay of %s to exit" % sid)
        FAKE.release("gone")
        await self.line(sent_re(sid, tok))
        self.assertEqual(self.delta("sent"), 1)

    def test_push_process_sandboxed(self):
        if not harness.is_root():
            self.skipTest("the sandbox is entered only as root")
        harness.assert_sandboxed(self, self.d, push_pid(self.d), "push")

    @atest(timeout=90)
    async def test_killed_push_process_is_restarted(self, c):
        sid = new_sid("kill")
        b = await c.binary(sid)
        tok = token("slow-kill")
        await b.send(wake(tok))
        await self.fake(lambda: FAKE.held("kill"), "the held request")
        pid = push_pid(self.d)
        # its restarts fail until the key is readable by root alone again
        os.chmod(self.key, 0o640)
        try:
            os.kill(pid, signal.SIGKILL)
            # what it held gets its line from the parent
            m = await self.line(
                r"\bevent=push_wake_send_failed server_id=%s token=%s "
                r"duration_ms=\d+ outcome=send_failed "
                r"error=\"push process exited\"$"
                % (re.escape(sid), token_hash(tok)))
            self.assertTrue(m)
            await self.line(r"\bevent=push_config_error reason=\"push fcm "
                            r"credentials .*must not be readable")
            # meanwhile wakes are dropped and counted
            t2 = token("ok")
            await b.send(wake(t2))
            await self.line(r"\bevent=push_wake_dropped server_id=%s token=%s "
                            r"reason=no_push_process in_flight=0$"
                            % (re.escape(sid), token_hash(t2)))
        finally:
            os.chmod(self.key, 0o600)
            FAKE.release("kill")
        m = await self.line(r"\bevent=push_ready pid=(\d+)$", 40)
        self.assertNotEqual(int(m.group(1)), pid)
        t3 = token("ok")
        await b.send(wake(t3))
        await self.line(sent_re(sid, t3))
        self.assertEqual(self.delta("dropped"), 1)
        self.assertEqual(self.delta("send_failed"), 1)
        self.assertEqual(self.delta("sent"), 1)

    @atest()
    async def test_reload_starts_a_new_push_process(self, c):
        sid = new_sid("hup")
        b = await c.binary(sid)
        old = push_pid(self.d)
        with FAKE.cond:
            grants = len(FAKE.grants)
        self.d.signal(signal.SIGHUP)
        m = await self.line(r"\bevent=push_ready pid=(\d+)$")
        new = int(m.group(1))
        self.assertNotEqual(new, old)
        # the old one leaves once it holds nothing, normally
        await self.line(r"\bevent=push_exited pid=%d server_id=- status=0$"
                        % old)
        tok = token("ok")
        await b.send(wake(tok))
        await self.line(sent_re(sid, tok))
        # the new process read the key again and fetched its own token
        with FAKE.cond:
            self.assertEqual(len(FAKE.grants), grants + 1)


    @atest()
    async def test_failed_replacement_keeps_the_running_one(self, c):
        sid = new_sid("keep")
        b = await c.binary(sid)
        old = push_pid(self.d)
        # a reload whose push process cannot resolve its endpoint's name
        self.d.write_conf(self.d.conf_text().replace(
            FAKE.endpoint, "https://push.invalid"))
        try:
            self.d.signal(signal.SIGHUP)
            await self.line(r"\bevent=push_resolve_failed "
                            r"error=\"push\.invalid: ")
            await self.line(r"\bevent=push_replace_failed pid=%d action=keep "
                            r"retry_ms=60000$" % old)
            # the running one still sends, and nothing is dropped
            tok = token("ok")
            await b.send(wake(tok))
            await self.line(sent_re(sid, tok))
            self.assertEqual(push_pid(self.d), old)
            self.assertEqual(self.delta("dropped"), 0)
        finally:
            self.d.write_conf()
            self.d.signal(signal.SIGHUP)
        m = await self.line(r"\bevent=push_ready pid=(\d+)$")
        self.assertNotEqual(int(m.group(1)), old)


class PushShutdownTest(unittest.TestCase):

    def test_sigterm_cancels_sends_in_flight(self):
        key = PKI.write_key_file(os.path.join(TMP, "term.json"),
                                 FAKE.token_uri)
        d = harness.Daemon(extra_conf=push_conf(key) + "relay pool 0\n",
                           workers=1)
        d.start()
        try:
            d.wait_log(r"\bevent=push_ready pid=\d+$")
            # the series are there from the start, at 0
            m = d.metrics()
            self.assertEqual({o: m.get(METRIC % o) for o in OUTCOMES},
                             {o: 0 for o in OUTCOMES})
            sid = new_sid("term")
            toks = [token("slow-term") for _ in range(3)]

            async def main():
                b = await harness.binary(d, sid)
                for t in toks:
                    await b.send(wake(t))
                await in_thread(FAKE.wait_for,
                                lambda: len(FAKE.held("term")) == 3, 15,
                                "3 held requests")
                mark = d.log_mark()
                t0 = time.monotonic()
                d.signal(signal.SIGTERM)
                for t in toks:
                    m = await in_thread(d.wait_log, failed_re(sid, t), 10,
                                        mark)
                    self.assertEqual(m.group(5), "cancelled: shutting down")
                # at once, not at the end of the calls' 10 s
                self.assertLess(time.monotonic() - t0, 3)
                await b.close()
            harness.run(main(), 60)
            self.assertEqual(d.wait_exit(15), 0)
            text = d.log_text()
            for s in secrets_of_the_fake():
                self.assertNotIn(s, text)
        finally:
            FAKE.release("term")
            d.stop()


NOT_VERIFIED = r"TLS: certificate not verified: "


class PushVerifyTest(unittest.TestCase):
    """Certificates and host names are always verified, and an endpoint
    that cannot be reached fails its wakes, each with its reason."""

    def one_wake(self, token_uri, endpoint, ca, outcome, error):
        """A daemon for these endpoints and CA bundle; one wake, which
        fails as outcome with error (a regex); returns the daemon's log."""
        key = PKI.write_key_file(os.path.join(TMP, "verify.json"), token_uri)
        d = harness.Daemon(extra_conf='push fcm credentials "%s"\n'
                           'push fcm endpoint "%s"\npush ca "%s"\n'
                           'relay pool 0\n' % (key, endpoint, ca), workers=1)
        d.start()
        try:
            d.wait_log(r"\bevent=push_ready pid=\d+$")
            sid = new_sid("verify")
            tok = token("ok")

            async def main():
                b = await harness.binary(d, sid)
                await b.send(wake(tok))
                await in_thread(d.wait_log, r"\bevent=push_wake_send_failed "
                                r"server_id=%s token=%s duration_ms=\d+ "
                                r"outcome=%s status=0 error_status=- "
                                r"error_code=- error=\"%s\"$" % (
                                    re.escape(sid), token_hash(tok), outcome,
                                    error), 15)
                await b.close()
            harness.run(main(), 60)
            self.assertEqual(FAKE.sends_for(tok), [])
            return d.log_text()
        finally:
            d.stop()

    def test_name_not_in_the_certificate(self):
        # the CA is trusted; the certificate names fcm.example only
        other = push_fake.FakeGoogle(PKI, cert=PKI.server_cert(
            "wrongname", "DNS:fcm.example"))
        try:
            self.one_wake(FAKE.token_uri, other.endpoint, PKI.ca_pem,
                          "send_failed", NOT_VERIFIED + "IP address mismatch")
            self.one_wake("https://localhost:%d/token" % other.port,
                          FAKE.endpoint, PKI.ca_pem, "token_fetch_failed",
                          "token endpoint: " + NOT_VERIFIED +
                          "hostname mismatch")
            with other.cond:
                self.assertEqual((other.sends, other.grants), ([], []))
        finally:
            other.close()

    def test_untrusted_certificate(self):
        other = push_fake.Pki(tempfile.mkdtemp(dir=TMP))
        with FAKE.cond:
            grants = len(FAKE.grants)
        self.one_wake(FAKE.token_uri, FAKE.endpoint, other.ca_pem,
                      "token_fetch_failed", "token endpoint: " + NOT_VERIFIED +
                      "unable to get local issuer certificate")
        with FAKE.cond:
            self.assertEqual(len(FAKE.grants), grants)

    def test_unreachable(self):
        log = self.one_wake(FAKE.token_uri, "https://127.0.0.1:%d"
                            % harness.free_port(), PKI.ca_pem, "send_failed",
                            "connection failed")
        # its one address failed: it asks for a new push process
        self.assertRegex(log, r"\bevent=push_unreachable "
                         r"error=\"connection failed\" action=refresh")


class KeyRefusedTest(unittest.TestCase):
    """`push fcm credentials` names a key the parent refuses, at start and
    with -n, with the file and line of the statement."""

    def conf(self, key):
        path = os.path.join(TMP, "refused.conf")
        with open(path, "w") as f:
            f.write("listen on 127.0.0.1 port %d\n\n%s"
                    % (harness.free_port(), push_conf(key)))
        os.chmod(path, 0o644)
        return path

    def check(self, key, why):
        conf = self.conf(key)
        r = harness.run_pyrelayd(["-n", "-f", conf])
        want = '%s:3: push fcm credentials "%s": %s' % (conf, key, why)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(want, r.stderr)

    def test_refused_by_n(self):
        ec = os.path.join(TMP, "ec.key")
        push_fake.run_openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
                              "ec_paramgen_curve:prime256v1", "-out", ec)
        with open(ec) as f:
            ec_pem = f.read()
        uri = FAKE.token_uri
        self.check(PKI.write_key_file(os.path.join(TMP, "g.json"), uri,
                                      mode=0o640),
                   "must not be readable by group or others (chmod 600)")
        self.check(PKI.write_key_file(os.path.join(TMP, "o.json"), uri,
                                      mode=0o604),
                   "must not be readable by group or others (chmod 600)")
        self.check(PKI.write_key_file(os.path.join(TMP, "u.json"), uri,
                                      type="authorized_user"),
                   'not a service-account key ("type" is not '
                   '"service_account")')
        self.check(PKI.write_key_file(os.path.join(TMP, "ec.json"), uri,
                                      private_key=ec_pem),
                   "private_key is not an RSA key (EC)")
        good = PKI.write_key_file(os.path.join(TMP, "good.json"), uri)
        r = harness.run_pyrelayd(["-n", "-f", self.conf(good)])
        self.assertEqual((r.returncode, r.stderr), (0, "configuration OK\n"))

    def test_refused_at_start(self):
        key = PKI.write_key_file(os.path.join(TMP, "start.json"),
                                 FAKE.token_uri, type="user")
        d = harness.Daemon(extra_conf=push_conf(key))
        try:
            with self.assertRaises(RuntimeError) as e:
                d.start()
            self.assertIn('push fcm credentials "%s": not a service-account '
                          'key' % key, str(e.exception))
        finally:
            d.stop()


if __name__ == "__main__":
    harness.main()
