#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""ACME HTTP-01 (docs/architecture.md "TLS", pyrelayd.conf(5) `listen on ...
acme`, `acme webroot`).

Challenges: a file under <webroot>/.well-known/acme-challenge/ is served
with its exact bytes; a missing token, a token that is not 1 to 128 of
[A-Za-z0-9_-] ('.', '%2e%2e', '/' included), a symbolic link, a directory
and a file over 4096 bytes are 404, as are /healthz, /v1/* and everything
else on the acme listener.

End to end: Debian's pebble (ACME test server, its DNS answered by
pebble-challtestsrv with 127.0.0.1, HTTP-01 validated on pyrelayd's acme
port) issues a certificate to certbot in webroot mode; certbot's deploy
hook, etc/certbot-deploy-hook, reloads pyrelayd through pyrelayctl; a new
wss handshake then presents the pebble-issued certificate (trusted through
pebble's root) and a binary and a phone talk over it.  Skipped (exit 77)
when pebble, pebble-challtestsrv or certbot are not installed (apt-get
install pebble certbot)."""

import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import harness
import test_tls
from test_tls import TLSDaemon, DOMAIN

TOP = os.environ.get("TOP_SRCDIR") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
HOOK = os.path.join(TOP, "etc", "certbot-deploy-hook")
CHALLENGE = "/.well-known/acme-challenge/"


def which(name):
    return shutil.which(name, path=os.environ.get("PATH", "") +
                        ":/usr/bin:/usr/sbin:/bin:/sbin")


class AcmeDaemon(harness.Daemon):
    """harness.Daemon plus `listen on 127.0.0.1 port <acme_port> acme`
    and `acme webroot`."""

    def __init__(self, webroot, extra_conf="", **kw):
        self.acme_port = harness.free_port()
        self.webroot = webroot
        self.acme_extra = extra_conf
        super().__init__("", **kw)

    def conf_text(self):
        if getattr(self, "proc", None) is None:
            while (self.acme_port in (self.port, self.metrics_port) or
                   not harness.port_is_free(self.acme_port)):
                self.acme_port = harness.free_port()
        self.extra_conf = "listen on 127.0.0.1 port %d acme\n" \
            'acme webroot "%s"\n%s' % (self.acme_port, self.webroot,
                                       self.acme_extra)
        return super().conf_text()


def challenge_dir(webroot):
    d = os.path.join(webroot, ".well-known", "acme-challenge")
    os.makedirs(d, exist_ok=True)
    return d


class Challenges(unittest.TestCase):
    """One daemon, many requests on its acme listener."""

    @classmethod
    def setUpClass(cls):
        cls.webroot = tempfile.mkdtemp(prefix="pyrelayd-acme-")
        os.chmod(cls.webroot, 0o755)
        cls.cdir = challenge_dir(cls.webroot)
        cls.d = AcmeDaemon(cls.webroot)
        try:
            cls.d.start()
        except BaseException:
            shutil.rmtree(cls.webroot, ignore_errors=True)
            cls.d.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.d.stop()
            assert rc == 0, "pyrelayd exited %r\n%s" % (rc, cls.d.log_text())
        finally:
            shutil.rmtree(cls.webroot, ignore_errors=True)

    def put(self, token, data, mode=0o644):
        path = os.path.join(self.cdir, token)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def get(self, path, **kw):
        return harness.http_get(self.d.acme_port, path, **kw)

    def assert404(self, path):
        st, _, body = self.get(path)
        self.assertEqual(st, 404, path)
        return body

    def test_file_served_exactly(self):
        tok = "Xy_9-" + os.urandom(8).hex()
        data = ("%s.%s" % (tok, "thumbprint-abc_DEF-123")).encode()
        self.put(tok, data)
        st, h, body = self.get(CHALLENGE + tok)
        self.assertEqual(st, 200)
        self.assertEqual(body, data)
        self.assertEqual(int(h["content-length"]), len(data))
        # the Host does not matter here (the validation server names the
        # domain, with or without a port)
        st, _, body = self.get(CHALLENGE + tok,
                               headers={"Host": "relay.example.com"})
        self.assertEqual((st, body), (200, data))
        # every byte value, and a file of exactly 4096 bytes
        blob = bytes(range(256)) * 16
        self.put("full", blob)
        st, _, body = self.get(CHALLENGE + "full")
        self.assertEqual((st, body), (200, blob))
        # an empty file, a mode-0600 file (the parent reads it as root)
        self.put("empty", b"")
        self.assertEqual(self.get(CHALLENGE + "empty")[:3:2], (200, b""))
        if harness.is_root():
            self.put("private", b"secret-ok", mode=0o600)
            self.assertEqual(self.get(CHALLENGE + "private")[:3:2],
                             (200, b"secret-ok"))
        # a new file is seen at once, a removed one is gone
        self.put("later", b"1")
        self.assertEqual(self.get(CHALLENGE + "later")[0], 200)
        os.unlink(os.path.join(self.cdir, "later"))
        self.assert404(CHALLENGE + "later")

    def test_token_lengths(self):
        t128 = "a" * 128
        self.put(t128, b"max")
        self.assertEqual(self.get(CHALLENGE + t128)[:3:2], (200, b"max"))
        t129 = "b" * 129
        self.put(t129, b"too long")
        self.assert404(CHALLENGE + t129)
        self.assert404(CHALLENGE)  # empty token

    def test_missing_and_bad_tokens(self):
        self.put("good", b"good")
        self.assert404(CHALLENGE + "missing-token")
        # a file whose name is a bad token still is not served
        self.put("a.b", b"dot")
        for path in (CHALLENGE + "a.b", CHALLENGE + "..",
                     CHALLENGE + ".", CHALLENGE + "%2e%2e",
                     CHALLENGE + "%2E%2E/%2e%2e/etc/passwd",
                     CHALLENGE + "../../../etc/passwd",
                     CHALLENGE + "..%2f..%2fetc%2fpasswd",
                     CHALLENGE + "good/", CHALLENGE + "good/x",
                     CHALLENGE + "x/good", CHALLENGE + "/good",
                     CHALLENGE + "go%6fd", CHALLENGE + "good%00",
                     CHALLENGE + "go%20od", CHALLENGE + "good~",
                     "/.well-known/acme-challenge", "/.well-known/good",
                     "/.well-known/acme-challenge/../acme-challenge/good",
                     "/good", "/"):
            st, _, _ = self.get(path)
            self.assertEqual(st, 404, path)
        # and the good one still is
        self.assertEqual(self.get(CHALLENGE + "good")[0], 200)

    def test_query_string_ignored(self):
        self.put("qtok", b"q")
        self.assertEqual(self.get(CHALLENGE + "qtok?x=1")[:3:2], (200, b"q"))

    def test_symlink_directory_and_large_file_404(self):
        target = self.put("target", b"target")
        os.symlink(target, os.path.join(self.cdir, "link"))
        outside = os.path.join(self.webroot, "outside")
        with open(outside, "wb") as f:
            f.write(b"outside")
        os.symlink(outside, os.path.join(self.cdir, "link2"))
        os.symlink("/etc/passwd", os.path.join(self.cdir, "passwd"))
        os.mkdir(os.path.join(self.cdir, "adir"))
        os.mkfifo(os.path.join(self.cdir, "fifo"))
        self.put("big", b"x" * 4097)
        self.put("huge", b"y" * 100000)
        for tok in ("link", "link2", "passwd", "adir", "fifo", "big",
                    "huge"):
            self.assert404(CHALLENGE + tok)
        self.assertEqual(self.get(CHALLENGE + "target")[0], 200)
        # still answering (a fifo did not block the parent)
        self.assertEqual(self.get(CHALLENGE + "target")[0], 200)

    def test_other_paths_404(self):
        for path in ("/healthz", "/v1/server", "/v1/client", "/metrics",
                     "/index.html"):
            for method in ("GET", "HEAD", "POST"):
                st, _, _ = self.get(path, method=method)
                self.assertEqual(st, 404, (method, path))
        # an upgrade request is no exception
        ws = harness.RawWS.connect(self.d.acme_port, harness.upgrade_request(
            self.d.acme_port, "/v1/server", sid="acme-sid"))
        try:
            self.assertEqual(ws.status, 404)
        finally:
            ws.close()
        # the main listener does not serve challenges
        self.put("main", b"m")
        self.assertEqual(harness.http_get(self.d.port, CHALLENGE + "main")[0],
                         404)
        self.assertEqual(harness.http_get(self.d.port, "/healthz")[0], 200)

    def test_many_requests(self):
        self.put("many", b"many")

        def one(_):
            return self.get(CHALLENGE + "many")[:3:2]
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(16) as ex:
            got = list(ex.map(one, range(64)))
        self.assertEqual(got, [(200, b"many")] * 64)


class NoWebroot(unittest.TestCase):
    def test_acme_listener_without_webroot(self):
        """Without `acme webroot`, every challenge is 404 (or the
        configuration is refused)."""
        d = harness.Daemon("")
        port = harness.free_port()
        d.extra_conf = "listen on 127.0.0.1 port %d acme" % port
        d.write_conf()
        try:
            try:
                d.start()
            except RuntimeError:
                return  # refused: fine too
            self.assertEqual(harness.http_get(
                port, CHALLENGE + "tok")[0], 404)
        finally:
            d.stop()


# --------------------------------------------------------------------------
# end to end with pebble and certbot

PEBBLE = which("pebble")
CHALLTESTSRV = which("pebble-challtestsrv")
CERTBOT = which("certbot")


def pyrelayctl_command(tmp):
    """$PYRELAYCTL, the pyrelayctl next to $PYRELAYD, or (when neither is
    built) a stand-in script speaking the control socket protocol."""
    for cand in (os.environ.get("PYRELAYCTL"),
                 os.path.join(os.path.dirname(harness.PYRELAYD),
                              "pyrelayctl")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    path = os.path.join(tmp, "pyrelayctl-standin")
    with open(path, "w") as f:
        f.write("""#!/usr/bin/python3
# stand-in for pyrelayctl: -s socket command
import socket, sys
args = sys.argv[1:]
sock = "/run/pyrelayd.sock"
if args[:1] == ["-s"]:
    sock, args = args[1], args[2:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
s.connect(sock)
s.sendall((" ".join(args) + "\\n").encode())
out = b""
while True:
    c = s.recv(65536)
    if not c:
        break
    out += c
text = out.decode()
first, _, rest = text.partition("\\n")
if first == "ok":
    sys.stdout.write(rest)
    sys.exit(0)
sys.stderr.write(text)
sys.exit(1)
""")
    os.chmod(path, 0o755)
    return path


def pem_der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def cert_fields(path):
    """Subject, issuer, serial and SAN of a PEM certificate file, as
    ssl.SSLSocket.getpeercert() gives them."""
    return ssl._ssl._test_decode_cert(path)


class Proc:
    """A helper process with its output in a file, stopped by pid."""

    def __init__(self, argv, logpath, env=None, cwd=None):
        self.logpath = logpath
        self.log = open(logpath, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                  stdout=self.log, stderr=subprocess.STDOUT,
                                  env=env, cwd=cwd)

    def text(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.log.close()


def wait_https(url, cafile, timeout, proc):
    ctx = ssl.create_default_context(cafile=cafile)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
                return r.read()
        except (OSError, ssl.SSLError) as e:
            err = e
        if proc.p.poll() is not None:
            raise AssertionError("%s exited (%s):\n%s" % (
                proc.p.args[0], proc.p.returncode, proc.text()[-3000:]))
        if time.monotonic() >= deadline:
            raise AssertionError("%s not answering after %gs: %s\n%s"
                                 % (url, timeout, err, proc.text()[-3000:]))
        time.sleep(0.1)


def wait_port(port, timeout, proc):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            pass
        if proc.p.poll() is not None or time.monotonic() >= deadline:
            raise AssertionError("port %d: %s not listening:\n%s" % (
                port, proc.p.args[0], proc.text()[-3000:]))
        time.sleep(0.05)


@unittest.skipUnless(PEBBLE and CHALLTESTSRV and CERTBOT,
                     "pebble, pebble-challtestsrv or certbot not installed")
class EndToEnd(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pyrelayd-pebble-")
        os.chmod(self.tmp, 0o755)
        self.procs = []
        self.d = None

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop()
        if self.d is not None:
            try:
                self.d.stop()
            except AssertionError as e:
                sys.stderr.write("stop: %s\n" % e)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, name, argv, env=None):
        p = Proc(argv, os.path.join(self.tmp, name + ".log"), env=env,
                 cwd=self.tmp)
        self.procs.append(p)
        return p

    def dump(self):
        out = []
        for p in self.procs:
            out.append("--- %s ---\n%s" % (os.path.basename(p.logpath),
                                           p.text()[-2500:]))
        if self.d is not None:
            out.append("--- pyrelayd ---\n%s" % "\n".join(
                self.d.log_lines()[-40:]))
        return "\n".join(out)

    @staticmethod
    def peer_der(d):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = test_tls.TLSConn(d.tls_port, ctx=ctx)
        try:
            return c.obj.getpeercert(binary_form=True)
        finally:
            c.close()

    def test_certbot_via_pebble_then_wss(self):
        tmp = self.tmp
        # pebble's own HTTPS certificate: a CA of ours (the Debian package
        # ships none), trusted by certbot through REQUESTS_CA_BUNDLE
        wfe_ca = test_tls.make_ca(tmp, "wfe-ca", "pebble WFE test CA")
        wfe_crt, wfe_key, _ = test_tls.make_cert(
            tmp, "wfe", wfe_ca, "ec", cn="localhost", san="DNS:localhost",
            ip_san="127.0.0.1")
        # a placeholder self-signed certificate so that pyrelayd can start
        ph_key = os.path.join(tmp, "placeholder.key")
        ph_crt = os.path.join(tmp, "placeholder.pem")
        test_tls.openssl("req", "-x509", "-new", "-newkey", "ec",
                         "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                         "-keyout", ph_key, "-out", ph_crt, "-days", "1",
                         "-subj", "/CN=placeholder",
                         "-addext", "subjectAltName=DNS:" + DOMAIN)
        os.chmod(ph_key, 0o600)

        webroot = os.path.join(tmp, "acme")
        os.makedirs(webroot)
        os.chmod(webroot, 0o755)
        cb = os.path.join(tmp, "certbot")
        live = os.path.join(cb, "config", "live", DOMAIN)

        d = TLSDaemon(None, chain=ph_crt, key=ph_key)
        # every port of this test, distinct, none of the daemon's
        (acme_port, dns_port, cts_mgmt, pebble_port, pebble_mgmt,
         pebble_tls) = harness.free_ports(
            6, avoid=(d.port, d.metrics_port, d.tls_port))
        d.tls_extra = ("listen on 127.0.0.1 port %d acme\n"
                       'acme webroot "%s"' % (acme_port, webroot))
        d.write_conf()
        self.d = d
        d.start()
        acme_port = int(acme_port)
        # the placeholder is what the TLS listener shows now
        self.assertEqual(self.peer_der(d), pem_der(ph_crt))

        # the DNS: every name is 127.0.0.1, no AAAA; no other challenge
        # servers (pyrelayd answers HTTP-01)
        cts = self.start("challtestsrv", [
            CHALLTESTSRV, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
            "-dns01", "127.0.0.1:%d" % dns_port, "-http01", "",
            "-https01", "", "-tlsalpn01", "",
            "-management", "127.0.0.1:%d" % cts_mgmt])
        wait_port(cts_mgmt, 10, cts)

        cfg = os.path.join(tmp, "pebble.json")
        with open(cfg, "w") as f:
            json.dump({"pebble": {
                "listenAddress": "127.0.0.1:%d" % pebble_port,
                "managementListenAddress": "127.0.0.1:%d" % pebble_mgmt,
                "certificate": wfe_crt, "privateKey": wfe_key,
                "httpPort": acme_port,
                "tlsPort": pebble_tls,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False}}, f)
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1",
                   PEBBLE_WFE_NONCEREJECT="0")
        pebble = self.start("pebble", [
            PEBBLE, "-config", cfg, "-dnsserver",
            "127.0.0.1:%d" % dns_port], env=env)
        directory = "https://127.0.0.1:%d/dir" % pebble_port
        try:
            wait_https(directory, wfe_ca[0], 15, pebble)
            root = wait_https("https://127.0.0.1:%d/roots/0" % pebble_mgmt,
                              wfe_ca[0], 5, pebble).decode()
            inter = wait_https("https://127.0.0.1:%d/intermediates/0"
                               % pebble_mgmt, wfe_ca[0], 5, pebble).decode()
        except AssertionError:
            raise AssertionError(self.dump())
        root_path = os.path.join(tmp, "pebble-root.pem")
        with open(root_path, "w") as f:
            f.write(root)
        inter_path = os.path.join(tmp, "pebble-intermediate.pem")
        with open(inter_path, "w") as f:
            f.write(inter)
        inter_subject = cert_fields(inter_path)["subject"]

        # what the daemon will read at the hook's reload: certbot's live/
        # symlinks, as docs/tls.md configures them
        conf = d.conf_text().replace(
            'tls certificate "%s" key "%s"' % (ph_crt, ph_key),
            'tls certificate "%s/fullchain.pem" key "%s/privkey.pem"'
            % (live, live))
        self.assertIn(live, conf)
        d.write_conf(conf)

        mark = d.log_mark()
        cenv = dict(os.environ, REQUESTS_CA_BUNDLE=wfe_ca[0],
                    PYRELAYCTL=pyrelayctl_command(tmp),
                    PYRELAYD_SOCKET=d.control_path)
        argv = [CERTBOT, "certonly", "--non-interactive", "--agree-tos",
                "--email", "t@relay.test", "--no-eff-email",
                "--server", directory, "--webroot", "-w", webroot,
                "-d", DOMAIN, "--config-dir", os.path.join(cb, "config"),
                "--work-dir", os.path.join(cb, "work"),
                "--logs-dir", os.path.join(cb, "logs"),
                "--deploy-hook", HOOK]
        try:
            r = subprocess.run(argv, env=cenv, capture_output=True,
                               text=True, timeout=90,
                               stdin=subprocess.DEVNULL, cwd=tmp)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("certbot hung: %s\n%s" % (e, self.dump()))
        self.assertEqual(r.returncode, 0, "certbot failed:\n%s\n%s\n%s" % (
            r.stdout[-3000:], r.stderr[-3000:], self.dump()))
        # pebble fetched the challenge from pyrelayd's acme listener
        d.wait_log(r"\bevent=acme_challenge found=1\b", since=mark)
        # the hook ran (its line, in certbot's report of the hook)
        self.assertIn("pyrelayd deploy hook: reloading for %s" % DOMAIN,
                      r.stderr + r.stdout)
        # the hook's reload
        d.wait_log(r"\bevent=reload_done\b", since=mark, timeout=10)
        for p in ("fullchain.pem", "privkey.pem"):
            self.assertTrue(os.path.islink(os.path.join(live, p)))
        leaf = cert_fields(os.path.join(live, "cert.pem"))
        self.assertEqual(leaf["issuer"], inter_subject)

        # new handshakes present the pebble certificate, trusted by
        # pebble's root, with the intermediate from the chain
        ctx = ssl.create_default_context(cafile=root_path)

        def handshake():
            c = test_tls.TLSConn(d.tls_port, ctx=ctx)
            try:
                return c.peercert()
            finally:
                c.close()
        got = []

        def issued():
            try:
                got.append(handshake())
            except ssl.SSLError as e:
                got.append(e)
                return False
            return got[-1]["issuer"] == inter_subject
        try:
            harness.poll_until(issued, 5, "the pebble certificate")
        except AssertionError:
            raise AssertionError("last handshake: %r\n%s"
                                 % (got[-1:], self.dump()))
        for _ in range(4):  # every front has it
            pc = handshake()
            self.assertEqual(pc["issuer"], inter_subject)
            self.assertEqual(pc["serialNumber"], leaf["serialNumber"])
            self.assertIn(("DNS", DOMAIN), pc["subjectAltName"])

        async def main():
            kw = dict(ssl=ctx, host="127.0.0.1", port=d.tls_port,
                      server_hostname=DOMAIN)
            s = "acme-e2e-" + os.urandom(3).hex()
            b = await harness.binary(test_tls.WSS(d), s, **kw)
            p = await harness.phone(test_tls.WSS(d), s, **kw)
            await harness.assert_exchange(b, p, s)
            await harness.close_all(b, p)
        harness.run(main())

        # a second run (certbot renew --force-renewal) goes through the
        # same hook from the renewal configuration
        mark = d.log_mark()
        argv = [CERTBOT, "renew", "--force-renewal", "--non-interactive",
                "--no-random-sleep-on-renew",
                "--config-dir", os.path.join(cb, "config"),
                "--work-dir", os.path.join(cb, "work"),
                "--logs-dir", os.path.join(cb, "logs")]
        r = subprocess.run(argv, env=cenv, capture_output=True, text=True,
                           timeout=90, stdin=subprocess.DEVNULL, cwd=tmp)
        self.assertEqual(r.returncode, 0, "certbot renew failed:\n%s\n%s"
                         % (r.stdout[-3000:], r.stderr[-3000:]))
        d.wait_log(r"\bevent=reload_done\b", since=mark, timeout=10)
        renewed = cert_fields(os.path.join(live, "cert.pem"))
        self.assertNotEqual(renewed["serialNumber"], leaf["serialNumber"])
        harness.poll_until(
            lambda: handshake()["serialNumber"] == renewed["serialNumber"],
            5, "the renewed certificate")
        self.assertEqual(d.stop(), 0, "\n".join(d.log_lines()[-40:]))


class Hook(unittest.TestCase):
    """etc/certbot-deploy-hook on its own: PYRELAYCTL and PYRELAYD_SOCKET
    are honoured, the exit status is pyrelayctl's."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pyrelayd-hook-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def fake_ctl(self, status):
        path = os.path.join(self.tmp, "ctl")
        with open(path, "w") as f:
            f.write('#!/bin/sh\necho "$@" > "%s/args"\nexit %d\n'
                    % (self.tmp, status))
        os.chmod(path, 0o755)
        return path

    def run_hook(self, env):
        e = {"PATH": "/usr/bin:/bin"}
        e.update(env)
        return subprocess.run(["/bin/sh", HOOK], env=e, capture_output=True,
                              text=True, timeout=20)

    def args(self):
        with open(os.path.join(self.tmp, "args")) as f:
            return f.read().split()

    def test_hook_mode(self):
        st = os.stat(HOOK)
        self.assertTrue(st.st_mode & stat.S_IXUSR, oct(st.st_mode))

    def test_socket_override(self):
        r = self.run_hook({"PYRELAYCTL": self.fake_ctl(0),
                           "PYRELAYD_SOCKET": "/tmp/x.sock",
                           "RENEWED_LINEAGE": "/etc/letsencrypt/live/a",
                           "RENEWED_DOMAINS": "a"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.args(), ["-s", "/tmp/x.sock", "reload"])

    def test_default_socket_and_failure(self):
        r = self.run_hook({"PYRELAYCTL": self.fake_ctl(1)})
        self.assertEqual(r.returncode, 1)
        self.assertEqual(self.args(), ["reload"])

    def test_real_reload(self):
        with harness.Daemon() as d:
            ctl = pyrelayctl_command(self.tmp)
            mark = d.log_mark()
            r = self.run_hook({"PYRELAYCTL": ctl,
                               "PYRELAYD_SOCKET": d.control_path})
            self.assertEqual(r.returncode, 0, r.stderr)
            d.wait_log(r"\bevent=reload_done\b", since=mark)
            # a socket nobody listens on: failure
            r = self.run_hook({"PYRELAYCTL": ctl, "PYRELAYD_SOCKET":
                               os.path.join(self.tmp, "none.sock")})
            self.assertNotEqual(r.returncode, 0)


def main():
    """Runs every test; without pebble or certbot the end-to-end test is
    skipped and, when the rest passed, the module exits 77 (skipped) with
    the reason, so that a missing package shows."""
    harness.require_daemon()
    missing = [n for n, p in (("pebble", PEBBLE),
                              ("pebble-challtestsrv", CHALLTESTSRV),
                              ("certbot", CERTBOT)) if not p]
    prog = unittest.main(verbosity=2, exit=False)
    ok = prog.result.wasSuccessful()
    if ok and missing:
        print("SKIP: %s not installed (apt-get install pebble certbot): "
              "the end-to-end ACME test did not run"
              % ", ".join(missing), file=sys.stderr)
        sys.exit(harness.SKIP)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
