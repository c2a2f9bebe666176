#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""TLS listeners (docs/protocol.md §2, docs/architecture.md "TLS",
pyrelayd.conf(5) `listen on ... tls`, `tls certificate`, `tls ktls`, `domain`).

A test CA and server certificates (ECDSA P-256 and RSA 2048, SAN
DNS:relay.test) are made with the openssl command at the start of the
module and removed at its end.  Covered: wss round trips for both key
types, the SNI and Host checks (unrecognized_name alert, 421 with an empty
body), plaintext to the TLS port, TLS 1.1 refused, ALPN, the socketpair
pump (counters in `show summary`, half-closes with close_notify, 5 MB each
way, 50 concurrent phones, the 5 s it gives a client after the relay's end:
silent clients after 4404 and 4429, a phone that stops reading), kernel TLS (skipped when the kernel has no TLS
ULP), certificate reload on SIGHUP, a key readable by others refused at
start and at reload.  It prints the wss and plain ws message rates it
measures on stderr (information, not an assertion)."""

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import warnings

import harness

DOMAIN = "relay.test"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
# generous limits: this module opens many connections from one address
RATE = "rate limit burst 10000 refill 100ms"

# --------------------------------------------------------------------------
# certificates, made with the openssl command


def openssl(*args, cwd=None):
    p = subprocess.run([OPENSSL] + list(args), cwd=cwd, capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), p.stderr))
    return p.stdout


def _keygen(path, keytype):
    if keytype == "rsa":
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt",
                "rsa_keygen_bits:2048", "-out", path)
    else:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-out", path)
    os.chmod(path, 0o600)


def make_ca(dirname, name="ca", cn="pyrelayd test CA"):
    """A self-signed CA: (cert path, key path)."""
    key = os.path.join(dirname, name + ".key")
    crt = os.path.join(dirname, name + ".pem")
    _keygen(key, "ec")
    openssl("req", "-x509", "-new", "-key", key, "-out", crt, "-days", "3",
            "-subj", "/CN=" + cn,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return crt, key


def make_cert(dirname, name, ca, keytype="ec", cn=DOMAIN, serial=None,
              san="DNS:" + DOMAIN, ip_san=None):
    """A server certificate signed by ca (cert, key): returns
    (chain path, key path, serial as int).  The key file has mode 0600."""
    key = os.path.join(dirname, name + ".key")
    csr = os.path.join(dirname, name + ".csr")
    crt = os.path.join(dirname, name + ".pem")
    ext = os.path.join(dirname, name + ".ext")
    serial = serial if serial is not None else \
        int.from_bytes(os.urandom(8), "big") | 1
    _keygen(key, keytype)
    sans = san + (",IP:" + ip_san if ip_san else "")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature%s\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid\n"
                "subjectAltName=%s\n"
                % (",keyEncipherment" if keytype == "rsa" else "", sans))
    openssl("req", "-new", "-key", key, "-out", csr, "-subj", "/CN=" + cn)
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1],
            "-set_serial", str(serial), "-days", "3", "-out", crt,
            "-extfile", ext)
    os.unlink(csr)
    os.unlink(ext)
    return crt, key, serial


_certdir = None
CA = None
CERTS = {}  # name -> (chain, key, serial)


def setUpModule():
    global _certdir, CA
    if shutil.which("openssl") is None and not os.path.exists(OPENSSL):
        raise unittest.SkipTest("no openssl command")
    _certdir = tempfile.mkdtemp(prefix="pyrelayd-tls-")
    os.chmod(_certdir, 0o755)
    CA = make_ca(_certdir)
    CERTS["ec"] = make_cert(_certdir, "ec", CA, "ec")
    CERTS["rsa"] = make_cert(_certdir, "rsa", CA, "rsa")
    CERTS["A"] = make_cert(_certdir, "certA", CA, "ec", cn="relay.test A",
                           serial=0xA1A1)
    CERTS["B"] = make_cert(_certdir, "certB", CA, "ec", cn="relay.test B",
                           serial=0xB2B2)


def tearDownModule():
    if _certdir:
        shutil.rmtree(_certdir, ignore_errors=True)


def copy_cert(name, dirname):
    """Copies a certificate and its key into dirname as chain.pem and
    key.pem (atomically replacing them; the key keeps mode 0600)."""
    chain, key, _ = CERTS[name]
    for src, dst, mode in ((chain, "chain.pem", 0o644),
                           (key, "key.pem", 0o600)):
        tmp = os.path.join(dirname, "." + dst + ".tmp")
        shutil.copyfile(src, tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, os.path.join(dirname, dst))


# --------------------------------------------------------------------------
# the daemon with a TLS listener


class TLSDaemon(harness.Daemon):
    """harness.Daemon plus `listen on 127.0.0.1 port <tls_port> tls`,
    `domain`, `tls certificate` and, with ktls=False, `tls ktls no`."""

    def __init__(self, cert="ec", extra_conf="", domain=DOMAIN, ktls=None,
                 chain=None, key=None, **kw):
        self.tls_port = harness.free_port()
        if cert is not None:
            chain, key = CERTS[cert][0], CERTS[cert][1]
        self.chain, self.key = chain, key
        self.domain = domain
        self.ktls = ktls
        self.tls_extra = extra_conf
        super().__init__("", **kw)

    def conf_text(self):
        # a port taken since it was picked (start() retries on EADDRINUSE)
        if getattr(self, "proc", None) is None:
            while (self.tls_port in (self.port, self.metrics_port) or
                   not harness.port_is_free(self.tls_port)):
                self.tls_port = harness.free_port()
        lines = ["listen on 127.0.0.1 port %d tls" % self.tls_port,
                 'tls certificate "%s" key "%s"' % (self.chain, self.key),
                 RATE]
        if self.domain:
            lines.append('domain "%s"' % self.domain)
        if self.ktls is not None:
            lines.append("tls ktls %s" % ("yes" if self.ktls else "no"))
        if self.tls_extra:
            lines.append(self.tls_extra.rstrip("\n"))
        self.extra_conf = "\n".join(lines)
        return super().conf_text()


class WSS:
    """What harness.binary/phone need of a daemon (url) for its TLS
    listener: wss://<host>:<tls port>, so the Host header names host."""

    def __init__(self, d, host=DOMAIN):
        self.d = d
        self.host = host

    def url(self, path):
        return "wss://%s:%d%s" % (self.host, self.d.tls_port, path)


def client_ctx(cafile=None, alpn=None, check_hostname=True):
    ctx = ssl.create_default_context(cafile=cafile or CA[0])
    ctx.check_hostname = check_hostname
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def wss_kw(d, sni=DOMAIN, ctx=None):
    """websockets.connect arguments: TCP to 127.0.0.1:<tls port>, TLS with
    SNI sni ('' for none) trusting the test CA."""
    if ctx is None:
        ctx = client_ctx(check_hostname=bool(sni))
    return dict(ssl=ctx, host="127.0.0.1", port=d.tls_port,
                server_hostname=sni)


async def wss_binary(d, sid, **kw):
    opts = wss_kw(d)
    opts.update(kw)
    return await harness.binary(WSS(d), sid, **opts)


async def wss_phone(d, sid, **kw):
    opts = wss_kw(d)
    opts.update(kw)
    return await harness.phone(WSS(d), sid, **opts)


def control(d, command, timeout=10):
    """The control socket's whole answer to one command."""
    return harness.unix_command(d.control_path, command, timeout)


def summary(d):
    text = control(d, "show summary")
    lines = text.splitlines()
    assert lines and lines[0] == "ok", text
    out = {}
    for line in lines[1:]:
        k, _, v = line.partition(" ")
        out[k] = int(v) if v.isdigit() else v
    return out


# --------------------------------------------------------------------------
# a byte-level TLS client (memory BIOs: close_notify and SHUT_WR on demand)


class TLSConn:
    """source: the client's address (127.0.0.x); rcvbuf: SO_RCVBUF, set
    before the connect so that the window stays that small."""

    def __init__(self, port, ctx=None, sni=DOMAIN, timeout=10, source=None,
                 rcvbuf=None):
        if ctx is None:
            ctx = client_ctx(check_hostname=bool(sni))
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                     rcvbuf)
            if source:
                self.sock.bind((source, 0))
            self.sock.settimeout(timeout)
            self.sock.connect(("127.0.0.1", port))
        except BaseException:
            self.sock.close()
            raise
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out,
                                server_hostname=sni or None)
        self.raw = b""       # every byte the server sent, as received
        self.tcp_eof = False
        self.buf = b""       # plaintext read but not consumed
        try:
            self._io(self.obj.do_handshake)
        except BaseException:
            self.sock.close()
            raise

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _fill(self, deadline):
        if self.tcp_eof:
            raise EOFError("TCP closed")
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("TLS peer silent for %gs" % self.timeout)
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.tcp_eof = True
            self.inc.write_eof()
        else:
            self.raw += chunk
            self.inc.write(chunk)

    def _io(self, fn, *args, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                r = fn(*args)
                self._flush()
                return r
            except ssl.SSLWantReadError:
                self._flush()
                self._fill(deadline)

    def peercert(self):
        return self.obj.getpeercert()

    def sendall(self, data):
        while data:
            n = self._io(self.obj.write, data)
            data = data[n:]

    def recv(self, timeout=None):
        """Plaintext bytes; b'' at a clean close (close_notify).  A TCP
        end without close_notify raises ssl.SSLEOFError."""
        try:
            return self._io(self.obj.read, 65536, timeout=timeout)
        except ssl.SSLZeroReturnError:
            return b""

    def close_notify(self):
        """Sends close_notify and shuts the TCP write side; reading goes
        on."""
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._flush()
        self.sock.shutdown(socket.SHUT_WR)

    def read_until_close(self, timeout=None):
        out = b""
        while True:
            chunk = self.recv(timeout=timeout)
            if not chunk:
                return out
            out += chunk

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.recv()
            if not chunk:
                raise AssertionError("closed before a head: %r" % self.buf)
            self.buf += chunk
        status, headers, rest = harness.parse_head(self.buf)
        self.buf = rest
        return status, headers

    def read_frame(self):
        """(opcode, payload) of the next server frame."""
        def need(n):
            while len(self.buf) < n:
                chunk = self.recv()
                if not chunk:
                    raise EOFError("closed in a frame: %r" % self.buf[:50])
                self.buf += chunk
        need(2)
        op, n = self.buf[0] & 0x0f, self.buf[1] & 0x7f
        off = 2
        if n == 126:
            need(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            need(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        need(off + n)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return op, payload

    def close(self):
        self.sock.close()


def tls_http(port, path="/healthz", host=DOMAIN, sni=DOMAIN, headers=None,
             method="GET"):
    """(status, headers, body) of one request on a new TLS connection,
    read to the server's close."""
    h = {"Host": host, "User-Agent": harness.UA, "Connection": "close"}
    h.update(headers or {})
    req = "%s %s HTTP/1.1\r\n" % (method, path) + "".join(
        "%s: %s\r\n" % (k, v) for k, v in h.items() if v is not None)
    c = TLSConn(port, sni=sni)
    try:
        c.sendall((req + "\r\n").encode("latin-1"))
        data = c.read_until_close()
    finally:
        c.close()
    status, hdrs, body = harness.parse_head(data)
    return status, hdrs, body


def upgrade_head(d, path, sid, host=DOMAIN):
    return harness.upgrade_request(d.tls_port, path, sid=sid,
                                   headers={"Host": host})


# --------------------------------------------------------------------------

_n = 0


def sid(prefix="tls"):
    global _n
    _n += 1
    return "%s-%d-%s" % (prefix, _n, os.urandom(3).hex())


def kernel_has_ktls():
    """(True, '') when the kernel offers the TLS ULP, else (False, why).
    Loading the module is tried once (modprobe tls)."""
    def ulps():
        try:
            with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
                return f.read().split()
        except OSError:
            return []
    if "tls" in ulps():
        return True, ""
    modprobe = shutil.which("modprobe") or "/sbin/modprobe"
    if os.path.exists(modprobe):
        try:
            subprocess.run([modprobe, "tls"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
    if "tls" in ulps():
        return True, ""
    return False, ("kernel has no TLS ULP (/proc/sys/net/ipv4/"
                   "tcp_available_ulp: %r; modprobe tls failed or absent)"
                   % " ".join(ulps()))


class RoundTrip(unittest.TestCase):
    def _round_trip(self, cert):
        with TLSDaemon(cert) as d:
            async def main():
                s = sid(cert)
                b = await wss_binary(d, s)
                p = await wss_phone(d, s)
                # the certificate of this key type, verified by the CA
                ssl_obj = b.transport.get_extra_info("ssl_object")
                der = ssl_obj.getpeercert(binary_form=True)
                with open(CERTS[cert][0]) as f:
                    self.assertEqual(der, ssl.PEM_cert_to_DER_cert(f.read()))
                for i in range(1, 4):
                    await harness.assert_exchange(b, p, s, n=i)
                # binary-started close of the phone travels back through
                # the pump (close frame, close_notify, TCP end) promptly
                t0 = time.monotonic()
                env = {"conn_id": None, "frame": "bye", "close_code": 4000}
                await p.send('{"last":1}')
                env["conn_id"] = json.loads(await harness.recv(b))["conn_id"]
                await b.send(json.dumps(env))
                got = await harness.expect_close(p, 4000)
                self.assertEqual(got, ['"bye"'])
                self.assertLess(time.monotonic() - t0, 4.0)
                await harness.close_all(b)
            harness.run(main())

    def test_wss_ecdsa(self):
        self._round_trip("ec")

    def test_wss_rsa(self):
        self._round_trip("rsa")

    def test_plain_listener_still_plain(self):
        with TLSDaemon("ec") as d:
            async def main():
                s = sid()
                # plain binary, wss phone: same relay
                b = await harness.binary(d, s)
                p = await wss_phone(d, s)
                await harness.assert_exchange(b, p, s)
                await harness.close_all(b, p)
            harness.run(main())
            # no Host check on the plain listener
            self.assertEqual(harness.http_get(d.port, "/healthz",
                             headers={"Host": "other.test"})[0], 200)


class NamesAndProtocols(unittest.TestCase):
    """SNI, Host, plaintext, protocol versions, ALPN: one daemon."""

    @classmethod
    def setUpClass(cls):
        cls.d = TLSDaemon("ec")
        try:
            cls.d.start()
        except BaseException:
            cls.d.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        assert rc == 0, "pyrelayd exited %r\n%s" % (rc, cls.d.log_text())

    def test_wrong_sni_refused_at_handshake(self):
        ctx = client_ctx(check_hostname=False)
        with self.assertRaises(ssl.SSLError) as cm:
            c = TLSConn(self.d.tls_port, ctx=ctx, sni="other.test")
            c.close()
        self.assertIn("UNRECOGNIZED_NAME", str(cm.exception).upper())
        # a raw look: the server's bytes are TLS records ending in an alert,
        # nothing that reads as HTTP
        ctx2 = client_ctx(check_hostname=False)
        with socket.create_connection(("127.0.0.1", self.d.tls_port),
                                      10) as s:
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = ctx2.wrap_bio(inc, out, server_hostname="other.test")
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
            s.sendall(out.read())
            raw = b""
            s.settimeout(10)
            while True:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                raw += chunk
        self.assertTrue(raw, "no alert at all")
        self.assertEqual(raw[0], 0x15, "expected an alert record: %r"
                         % raw[:20])
        # alert: level fatal (2), description unrecognized_name (112)
        self.assertEqual(raw[5:7], b"\x02\x70", raw[:10])
        self.assertNotIn(b"HTTP/", raw)

    def test_sni_case_insensitive(self):
        c = TLSConn(self.d.tls_port, ctx=client_ctx(check_hostname=False),
                    sni="Relay.TEST")
        c.close()

    def test_no_sni_right_host_works(self):
        async def main():
            s = sid("nosni")
            b = await wss_binary(self.d, s, **wss_kw(self.d, sni=""))
            p = await wss_phone(self.d, s, **wss_kw(self.d, sni=""))
            await harness.assert_exchange(b, p, s)
            await harness.close_all(b, p)
        harness.run(main())
        st, _, body = tls_http(self.d.tls_port, sni="")
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(body)["status"], "ok")
        # no SNI does not skip the Host check
        st, h, body = tls_http(self.d.tls_port, sni="", host="other.test")
        self.assertEqual((st, body), (421, b""))

    def test_wrong_host_421_empty(self):
        for path in ("/healthz", "/v1/server", "/v1/client", "/nope"):
            for host in ("other.test", "other.test:%d" % self.d.tls_port,
                         "127.0.0.1", "relay.test.evil", "xrelay.test"):
                c = TLSConn(self.d.tls_port)
                try:
                    if path.startswith("/v1/"):
                        c.sendall(upgrade_head(self.d, path, sid("h"), host))
                    else:
                        c.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n"
                                   "User-Agent: t\r\n\r\n"
                                   % (path, host)).encode())
                    st, h = c.read_head()
                    self.assertEqual(st, 421, (path, host))
                    self.assertEqual(h.get("content-length", "0"), "0",
                                     (path, host, h))
                    self.assertEqual(c.read_until_close(), b"",
                                     (path, host))
                    self.assertEqual(c.buf, b"", (path, host))
                finally:
                    c.close()
        # no Host at all, and two of them
        st, _, body = tls_http(self.d.tls_port, host=None)
        self.assertEqual((st, body), (421, b""))
        st, _, body = tls_http(self.d.tls_port,
                               headers={"host": "relay.test"})
        self.assertIn(st, (400, 421))  # Host twice
        self.assertEqual(body, b"")

    def test_absolute_form_authority_is_the_host(self):
        # RFC 9112 3.2.2: accepted, and its authority checked, not Host
        for target, host, want in (
                ("https://relay.test/healthz", "other.test", 200),
                ("https://Relay.Test:%d/healthz?x" % self.d.tls_port,
                 None, 200),
                ("https://other.test/healthz", "relay.test", 421),
                ("http://relay.test/nope", "relay.test", 404)):
            c = TLSConn(self.d.tls_port)
            try:
                c.sendall(("GET %s HTTP/1.1\r\n%sUser-Agent: t\r\n\r\n"
                           % (target, "Host: %s\r\n" % host if host else "")
                           ).encode())
                st, _ = c.read_head()
                self.assertEqual(st, want, target)
            finally:
                c.close()

    def test_host_port_and_case_accepted(self):
        for host in ("RELAY.TEST", "Relay.Test:%d" % self.d.tls_port,
                     "relay.test:443", "relay.test"):
            st, _, body = tls_http(self.d.tls_port, host=host)
            self.assertEqual(st, 200, host)
            self.assertEqual(json.loads(body)["status"], "ok")
        # an upgrade with such a Host: 101, then a real exchange
        s = sid("case")

        async def main():
            b = await wss_binary(self.d, s)
            c = TLSConn(self.d.tls_port)
            try:
                c.sendall(upgrade_head(self.d, "/v1/client", s,
                                       "ReLaY.TeSt:%d" % self.d.tls_port))
                st, h = c.read_head()
                self.assertEqual(st, 101)
                c.sendall(harness.ws_frame(1, '{"x":1}'))
                env = json.loads(await harness.recv(b))
                self.assertEqual(env["frame"], {"x": 1})
                await b.send(json.dumps({"conn_id": env["conn_id"],
                                         "frame": [2]}))
                loop = asyncio.get_running_loop()
                op, payload = await loop.run_in_executor(None, c.read_frame)
                self.assertEqual((op, payload), (1, b"[2]"))
            finally:
                c.close()
            await b.close()
        harness.run(main())

    def test_plaintext_to_tls_port_closed_without_response(self):
        out = harness.raw_request(
            self.d.tls_port, b"GET /healthz HTTP/1.1\r\nHost: relay.test\r\n"
            b"User-Agent: t\r\n\r\n", timeout=8)
        self.assertNotIn(b"HTTP/", out)
        # whatever came is a TLS alert record at most
        self.assertTrue(out == b"" or out[0] == 0x15, out[:20])

    def test_tls11_refused(self):
        # the client is allowed TLS 1.1 (security level 0), so a failure is
        # the server's protocol_version alert, not a local refusal
        base = [OPENSSL, "s_client", "-connect",
                "127.0.0.1:%d" % self.d.tls_port, "-servername", DOMAIN,
                "-CAfile", CA[0], "-cipher", "DEFAULT@SECLEVEL=0"]
        bad = subprocess.run(base + ["-tls1_1"], capture_output=True,
                             text=True, timeout=20, stdin=subprocess.DEVNULL)
        self.assertNotEqual(bad.returncode, 0, bad.stdout)
        self.assertRegex(bad.stderr + bad.stdout,
                         r"(?i)alert protocol version|protocol_version|"
                         r"unsupported protocol")
        good = subprocess.run(base + ["-tls1_2"], capture_output=True,
                              text=True, timeout=20,
                              stdin=subprocess.DEVNULL)
        self.assertEqual(good.returncode, 0, good.stderr)
        self.assertIn("TLSv1.2", good.stdout)
        # the same from Python
        ctx = client_ctx()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT@SECLEVEL=0")
        with self.assertRaises(ssl.SSLError) as cm:
            TLSConn(self.d.tls_port, ctx=ctx).close()
        self.assertIn("PROTOCOL_VERSION", str(cm.exception).upper())
        # TLS 1.2 and 1.3 both work
        for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = client_ctx()
            ctx.minimum_version = ctx.maximum_version = v
            c = TLSConn(self.d.tls_port, ctx=ctx)
            self.assertEqual(c.obj.version(), {
                ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[v])
            c.close()

    def test_alpn_http11(self):
        c = TLSConn(self.d.tls_port,
                    ctx=client_ctx(alpn=["h2", "http/1.1"]))
        try:
            self.assertEqual(c.obj.selected_alpn_protocol(), "http/1.1")
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay.test\r\n"
                      b"Connection: close\r\n\r\n")
            st, _ = c.read_head()
            self.assertEqual(st, 200)
        finally:
            c.close()
        # h2 alone: never selected
        try:
            c = TLSConn(self.d.tls_port, ctx=client_ctx(alpn=["h2"]))
        except ssl.SSLError as e:
            self.assertIn("NO_APPLICATION_PROTOCOL", str(e).upper())
        else:
            self.assertIsNone(c.obj.selected_alpn_protocol())
            c.close()


class Pump(unittest.TestCase):
    def test_ktls_no_counts_pump(self):
        with TLSDaemon("ec", ktls=False) as d:
            v = summary(d)
            self.assertEqual(v["ktls"], "unknown")
            self.assertEqual(v["tls_handoffs_pump"], 0)
            self.assertEqual(v["tls_handoffs_ktls"], 0)

            async def main():
                s = sid("pump")
                b = await wss_binary(d, s)
                p = await wss_phone(d, s)
                await harness.assert_exchange(b, p, s)
                # a plain phone is no TLS hand-off
                p2 = await harness.phone(d, s)
                await harness.assert_exchange(b, p2, s, n=2)
                v = summary(d)
                self.assertEqual(v["tls_handoffs_pump"], 2)
                self.assertEqual(v["tls_handoffs_ktls"], 0)
                self.assertEqual(v["ktls"], "unavailable")
                await harness.close_all(b, p, p2)
            harness.run(main())
        # a plain-only daemon: unused
        with harness.Daemon() as d:
            self.assertEqual(summary(d)["ktls"], "unused")

    def test_kernel_tls(self):
        # With the kernel's TLS (the tls module loaded), the front hands
        # the session to the relay's socket: "active", kTLS hand-offs.
        # Without it (no module, as on many guests), the same daemon with
        # the default `tls ktls yes` finds out at the first hand-off and
        # pumps instead: "unavailable", pump hand-offs, and the clients
        # see no difference.  Either way the exchange below is checked;
        # which of the two this machine showed is printed
        ok, why = kernel_has_ktls()
        print("\nkernel TLS: %s" % ("available" if ok else why),
              file=sys.stderr)
        with TLSDaemon("ec") as d:
            async def main():
                s = sid("ktls")
                # OpenSSL 3.0 (bookworm) sets up kernel TLS for receiving
                # only with TLS 1.2; a TLS 1.3 connection gets it for
                # sending alone and takes the pump
                ctx = client_ctx()
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
                b = await wss_binary(d, s, **wss_kw(d, ctx=ctx))
                p = await wss_phone(d, s, **wss_kw(d, ctx=ctx))
                await harness.assert_exchange(b, p, s)
                # large enough to need many records each way
                big = "k" * 200000
                await p.send(json.dumps(big))
                env = json.loads(await harness.recv(b))
                self.assertEqual(env["frame"], big)
                await b.send(json.dumps({"conn_id": env["conn_id"],
                                         "frame": big}))
                self.assertEqual(json.loads(await harness.recv(p)), big)
                # Nagle off on the relay's sockets, which it does not
                # set: kTLS keeps the socket the front set it on; a pump
                # leaves the relay an AF_UNIX end, no TCP socket at all
                relays = await asyncio.to_thread(d.wait_relays, 1)
                nodelay = await asyncio.to_thread(harness.tcp_nodelay,
                                                  relays[s])
                self.assertEqual(sorted(nodelay.values()),
                                 [1, 1] if ok else [], nodelay)
                v = summary(d)
                if ok:
                    self.assertEqual(v["ktls"], "active", v)
                    self.assertGreaterEqual(v["tls_handoffs_ktls"], 2, v)
                else:
                    self.assertEqual(v["ktls"], "unavailable", v)
                    self.assertEqual(v["tls_handoffs_ktls"], 0, v)
                    self.assertGreaterEqual(v["tls_handoffs_pump"], 2, v)
                await harness.close_all(b, p)
            harness.run(main())

    def test_half_close_through_pump(self):
        with TLSDaemon("ec", ktls=False) as d:
            async def main():
                loop = asyncio.get_running_loop()
                s = sid("hc")
                b = await wss_binary(d, s)

                def phone_then_close(close_frame):
                    c = TLSConn(d.tls_port)
                    c.sendall(upgrade_head(d, "/v1/client", s))
                    st, _ = c.read_head()
                    assert st == 101, st
                    data = harness.ws_frame(1, '{"hc":%d}' % close_frame)
                    if close_frame:
                        data += harness.ws_frame(8, struct.pack("!H", 1000))
                    # data, close_notify and SHUT_WR back to back
                    c.sendall(data)
                    c.close_notify()
                    return c
                # 1. message, close frame, close_notify, FIN: the message
                # and the close arrive; the relay's close frame comes back
                # and the pump ends the session with close_notify
                c = await loop.run_in_executor(None, phone_then_close, 1)
                env = json.loads(await harness.recv(b))
                self.assertEqual(env["frame"], {"hc": 1})
                note = json.loads(await harness.recv(b))
                self.assertEqual(note, {"conn_id": env["conn_id"],
                                        "close_code": 1000})
                op, payload = await loop.run_in_executor(None, c.read_frame)
                self.assertEqual(op, 8)
                self.assertEqual(struct.unpack("!H", payload[:2])[0], 1000)
                rest = await loop.run_in_executor(None, c.read_until_close)
                self.assertEqual(rest, b"")
                self.assertEqual(c.buf, b"")
                c.close()
                # 2. message then close_notify and FIN: nothing is lost, the
                # binary hears of a dropped phone (1001)
                c = await loop.run_in_executor(None, phone_then_close, 0)
                env = json.loads(await harness.recv(b))
                self.assertEqual(env["frame"], {"hc": 0})
                note = json.loads(await harness.recv(b))
                self.assertEqual(note, {"conn_id": env["conn_id"],
                                        "close_code": 1001})

                def drain():
                    try:
                        return c.read_until_close()
                    except ssl.SSLEOFError:
                        return None  # TCP end without close_notify
                    except EOFError:
                        return None
                await loop.run_in_executor(None, drain)
                c.close()
                await harness.assert_exchange(b, await wss_phone(d, s), s)
                await b.close()
            harness.run(main())

    def test_large_transfers_through_pump(self):
        conf = "message size 8M\noutbox 64M"
        with TLSDaemon("ec", ktls=False, extra_conf=conf) as d:
            async def main():
                s = sid("big")
                b = await wss_binary(d, s)
                p = await wss_phone(d, s)
                # one 5 MB message each way
                big = os.urandom(5 * 1024 * 1024 // 2).hex()
                digest = hashlib.sha256(big.encode()).hexdigest()
                await p.send(json.dumps(big))
                env = json.loads(await harness.recv(b, 15))
                self.assertIn("frame", env, "5 MB phone message lost: %r"
                              % env)
                self.assertEqual(hashlib.sha256(
                    env["frame"].encode()).hexdigest(), digest)
                cid = env["conn_id"]
                await b.send(json.dumps({"conn_id": cid, "frame": big}))
                got = json.loads(await harness.recv(p, 15))
                self.assertEqual(hashlib.sha256(got.encode()).hexdigest(),
                                 digest)
                # 5 MB in 64 KiB messages, both ways at once
                chunk = 64 * 1024
                blob = os.urandom(5 * 1024 * 1024)
                parts = [blob[i:i + chunk].hex()
                         for i in range(0, len(blob), chunk)]

                async def up():
                    for i, part in enumerate(parts):
                        await p.send(json.dumps([i, part]))

                async def down():
                    for i, part in enumerate(parts):
                        await b.send(json.dumps({"conn_id": cid,
                                                 "frame": [i, part]}))

                async def collect(ws, unwrap):
                    out = []
                    while len(out) < len(parts):
                        out.append(unwrap(json.loads(
                            await harness.recv(ws, 15))))
                    return out
                _, _, at_b, at_p = await asyncio.gather(
                    up(), down(), collect(b, lambda e: e["frame"]),
                    collect(p, lambda f: f))
                for got in (at_b, at_p):
                    self.assertEqual([i for i, _ in got],
                                     list(range(len(parts))))
                    self.assertEqual(bytes.fromhex("".join(x for _, x in got)),
                                     blob)
                await harness.close_all(b, p)
            harness.run(main(), timeout=90)

    def test_fifty_concurrent_phones(self):
        with TLSDaemon("ec", ktls=False,
                       extra_conf="phones per server 64") as d:
            async def main():
                s = sid("many")
                b = await wss_binary(d, s)
                phones = await asyncio.gather(*(wss_phone(d, s)
                                                for _ in range(50)))
                for i, p in enumerate(phones):
                    await p.send('{"i":%d}' % i)
                cids = {}
                for _ in range(50):
                    env = json.loads(await harness.recv(b))
                    cids[env["frame"]["i"]] = env["conn_id"]
                self.assertEqual(sorted(cids), list(range(50)))
                self.assertEqual(len(set(cids.values())), 50)
                for i, cid in cids.items():
                    await b.send(json.dumps({"conn_id": cid,
                                             "frame": {"to": i}}))
                got = await asyncio.gather(*(harness.recv(p)
                                             for p in phones))
                self.assertEqual([json.loads(g)["to"] for g in got],
                                 list(range(50)))
                v = summary(d)
                self.assertEqual(v["phones"], 50)
                self.assertEqual(v["tls_handoffs_pump"], 51)
                await harness.close_all(b, *phones)
            harness.run(main())


class PumpBound(unittest.TestCase):
    """docs/tls.md: once the relay is done with a pumped connection, the
    client has 5 s (front_tls.c PUMP_CLOSE_MS) to take the rest and answer
    the close_notify, then the front drops it.  Clients that never read nor
    answer must not keep the front's descriptors, while a binary and a phone
    from another address go on exchanging."""
    SILENT = 6          # of each kind
    BOUND = 5           # seconds after the relay's end closes
    CLOSE_TIMEOUT = 5   # the relay's wait for a close frame (not settable)
    SRC = dict(local_addr=("127.0.0.2", 0))

    async def good_pair(self, d):
        """A binary and a phone from 127.0.0.2, and their server-id, after
        one exchange."""
        good = sid("good")
        b = await wss_binary(d, good, **self.SRC)
        p = await wss_phone(d, good, **self.SRC)
        await harness.assert_exchange(b, p, good, 1)
        return b, p, good

    @staticmethod
    def front_fds(fronts):
        return sum(len(harness.open_fds(pid)) for pid in fronts)

    async def back_to_base(self, fronts, base, limit, b, p, good, n):
        """Polls the fronts' descriptor count (/proc has no event to wait
        on) until it is back at base, for at most limit seconds, the good
        pair exchanging meanwhile; asserts it got there.  Returns the last
        exchange's number."""
        t0 = time.monotonic()
        for _ in range(int(limit / 0.05) + 1):
            if self.front_fds(fronts) <= base or \
                    time.monotonic() - t0 > limit:
                break
            n += 1
            await harness.assert_exchange(b, p, good, n)
            await asyncio.sleep(0.05)
        now = self.front_fds(fronts)
        print("\nfront fds: %d at the start, %d after %.1fs"
              % (base, now, time.monotonic() - t0), file=sys.stderr)
        self.assertEqual(now, base, "the fronts keep %d descriptors after "
                         "%gs" % (now - base, limit))
        n += 1
        await harness.assert_exchange(b, p, good, n)
        return n

    def test_silent_clients_after_4404_and_4429_release_fds(self):
        with TLSDaemon("ec", ktls=False,
                       extra_conf="phones per server 1") as d:
            fronts = d.wait_fronts()

            def silent(to_sid):
                c = TLSConn(d.tls_port, source="127.0.0.3")
                c.sendall(upgrade_head(d, "/v1/client", to_sid))
                return c  # and never read from or written to again

            async def main():
                loop = asyncio.get_running_loop()
                b, p, good = await self.good_pair(d)
                base = self.front_fds(fronts)

                # 4404: no binary for the sid; 4429: the good phone is the
                # one phone the server-id may have
                conns = []
                for to in [sid("nobody")] * self.SILENT + \
                        [good] * self.SILENT:
                    conns.append(await loop.run_in_executor(None, silent,
                                                            to))
                # each pump holds the client's socket and its socketpair end
                want = base + 2 * len(conns)
                harness.poll_until(lambda: self.front_fds(fronts) >= want,
                                   10, "front fds >= %d" % want)
                # the relay drops a 4429 after its close timeout, then the
                # pump's bound runs
                await self.back_to_base(fronts, base, self.CLOSE_TIMEOUT +
                                        self.BOUND + 5, b, p, good, 1)

                # what the clients were sent: the 101, the close code, then
                # close_notify and the end of the connection
                def outcome(c):
                    st, _ = c.read_head()
                    op, payload = c.read_frame()
                    code = struct.unpack("!H", payload[:2])[0]
                    rest = c.read_until_close(timeout=5)
                    c.close()
                    return st, op, code, rest
                got = [await loop.run_in_executor(None, outcome, c)
                       for c in conns]
                self.assertEqual(got, [(101, 8, 4404, b"")] * self.SILENT +
                                 [(101, 8, 4429, b"")] * self.SILENT)
                await harness.close_all(b, p)
            harness.run(main(), timeout=90)

    def test_phone_that_stops_reading(self):
        # The relay drops a phone whose backlog is full while the pump's
        # buffer toward it is full too: the relay's EOF sits behind bytes
        # the pump cannot pass on, and the pump must still see the end.
        with TLSDaemon("ec", ktls=False,
                       extra_conf="outbox 64K\nwrite timeout 1s") as d:
            fronts = d.wait_fronts()

            async def main():
                loop = asyncio.get_running_loop()
                b, p, good = await self.good_pair(d)
                base = self.front_fds(fronts)

                def stalled():
                    c = TLSConn(d.tls_port, source="127.0.0.3", rcvbuf=4096)
                    c.sendall(upgrade_head(d, "/v1/client", good))
                    st, _ = c.read_head()
                    assert st == 101, st
                    c.sendall(harness.ws_frame(1, '{"stall":1}'))
                    return c  # never read again
                c = await loop.run_in_executor(None, stalled)
                env = json.loads(await harness.recv(b))
                self.assertEqual(env["frame"], {"stall": 1})
                cid = env["conn_id"]
                # far more than the client's window, the pump's buffer and
                # the phone's outbox hold; the relay closes the phone
                chunk = json.dumps({"conn_id": cid, "frame": "x" * 60000})
                notice = None
                for _ in range(200):
                    await b.send(chunk)
                    try:
                        notice = json.loads(await asyncio.wait_for(
                            b.recv(), 0.01))
                        break
                    except asyncio.TimeoutError:
                        pass
                if notice is None:
                    notice = json.loads(await harness.recv(b))
                self.assertEqual(notice.get("conn_id"), cid, notice)
                self.assertIn("close_code", notice)
                # the pump is still there (it has 5 s from the relay's end)
                self.assertGreaterEqual(self.front_fds(fronts), base + 2)
                await self.back_to_base(fronts, base, self.CLOSE_TIMEOUT +
                                        self.BOUND + 5, b, p, good, 1)
                c.close()
                await harness.close_all(b, p)
            harness.run(main(), timeout=90)


class Reload(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="pyrelayd-tls-reload-")
        os.chmod(self.dir, 0o755)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def _peer(self, d):
        c = TLSConn(d.tls_port)
        try:
            return c.peercert()
        finally:
            c.close()

    def test_sighup_new_certificate_live_connections_stay(self):
        copy_cert("A", self.dir)
        chain, key = (os.path.join(self.dir, n)
                      for n in ("chain.pem", "key.pem"))
        with TLSDaemon(None, chain=chain, key=key) as d:
            pc = self._peer(d)
            self.assertEqual(int(pc["serialNumber"], 16), CERTS["A"][2])
            self.assertIn((("commonName", "relay.test A"),), pc["subject"])

            async def main():
                s = sid("reload")
                b = await wss_binary(d, s)
                p = await wss_phone(d, s)
                await harness.assert_exchange(b, p, s, n=1)
                copy_cert("B", self.dir)
                mark = d.log_mark()
                d.signal(signal.SIGHUP)
                d.wait_log(r"\bevent=reload_done\b", since=mark)
                self.assertFalse(any("reload_failed" in line or
                                     "tls_error" in line
                                     for line in d.log_lines()[mark:]))
                # the fronts apply it when their message arrives: poll a
                # few handshakes
                seen = []

                def new_cert():
                    seen.append(int(self._peer(d)["serialNumber"], 16))
                    return seen[-1] == CERTS["B"][2]
                await asyncio.get_running_loop().run_in_executor(
                    None, harness.poll_until, new_cert, 5, "certificate B")
                # every front has it: several more handshakes, all B
                for _ in range(6):
                    pc = await asyncio.get_running_loop().run_in_executor(
                        None, self._peer, d)
                    self.assertEqual(int(pc["serialNumber"], 16),
                                     CERTS["B"][2])
                    self.assertIn((("commonName", "relay.test B"),),
                                  pc["subject"])
                # the connection made with A still works, both ways
                old = b.transport.get_extra_info("ssl_object")
                self.assertEqual(int(old.getpeercert()["serialNumber"], 16),
                                 CERTS["A"][2])
                await harness.assert_exchange(b, p, s, n=2)
                # and new connections with B meet it
                p2 = await wss_phone(d, s)
                await harness.assert_exchange(b, p2, s, n=3)
                await harness.close_all(b, p, p2)
            harness.run(main())

    def test_reload_with_open_key_keeps_certificate(self):
        copy_cert("A", self.dir)
        chain, key = (os.path.join(self.dir, n)
                      for n in ("chain.pem", "key.pem"))
        with TLSDaemon(None, chain=chain, key=key) as d:
            copy_cert("B", self.dir)
            os.chmod(key, 0o644)
            answer = control(d, "reload")
            self.assertTrue(answer.startswith("error:"), answer)
            self.assertIn(key, answer)
            for _ in range(4):
                self.assertEqual(int(self._peer(d)["serialNumber"], 16),
                                 CERTS["A"][2])
            self.assertEqual(tls_http(d.tls_port)[0], 200)

    def test_start_with_open_key_fails(self):
        copy_cert("A", self.dir)
        chain, key = (os.path.join(self.dir, n)
                      for n in ("chain.pem", "key.pem"))
        for mode in (0o644, 0o640, 0o604):
            os.chmod(key, mode)
            d = TLSDaemon(None, chain=chain, key=key)
            try:
                r = harness.run_pyrelayd(["-d", "-f", d.conf_path])
            finally:
                d.stop()
            self.assertEqual(r.returncode, 1, (oct(mode), r.stderr))
            self.assertIn("tls certificate key", r.stderr)
            self.assertIn(key, r.stderr)

    def test_key_not_matching_the_certificate(self):
        # the parent checks the pair as a front would: at start ...
        chain = CERTS["A"][0]
        key = os.path.join(self.dir, "other.key")
        shutil.copyfile(CERTS["B"][1], key)
        os.chmod(key, 0o600)
        d = TLSDaemon(None, chain=chain, key=key)
        try:
            r = harness.run_pyrelayd(["-d", "-f", d.conf_path])
        finally:
            d.stop()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("does not match", r.stderr)
        # ... and before a reload, which then changes nothing
        copy_cert("A", self.dir)
        chain, key = (os.path.join(self.dir, n)
                      for n in ("chain.pem", "key.pem"))
        with TLSDaemon(None, chain=chain, key=key) as d:
            shutil.copyfile(CERTS["B"][1], key + ".tmp")
            os.chmod(key + ".tmp", 0o600)
            os.replace(key + ".tmp", key)
            answer = control(d, "reload")
            self.assertTrue(answer.startswith("error:"), answer)
            self.assertIn("does not match", answer)
            self.assertEqual(int(self._peer(d)["serialNumber"], 16),
                             CERTS["A"][2])
            self.assertEqual(tls_http(d.tls_port)[0], 200)


class Shutdown(unittest.TestCase):
    def test_sigterm_closes_pumped_clients_1001(self):
        # docs/protocol.md §7 via the pump: the front stays until the relay's
        # close has gone through it
        d = TLSDaemon("ec", ktls=False)
        d.start()
        try:
            async def main():
                s = sid("term")
                b = await wss_binary(d, s)
                p = await wss_phone(d, s)
                await harness.assert_exchange(b, p, s)
                d.signal(signal.SIGTERM)
                await harness.expect_close(b, 1001, "shutting down")
                await harness.expect_close(p, 1001, "shutting down")
            harness.run(main())
            self.assertEqual(d.wait_exit(15), 0)
        finally:
            d.stop()


class Throughput(unittest.TestCase):
    """Messages per second through plain ws and wss (the pump here):
    printed for the record, not asserted."""
    N = 5000

    def test_measure(self):
        conf = "outbox 64M"
        with TLSDaemon("ec", extra_conf=conf) as d:
            async def one_way(sender, receiver, make, n):
                msgs = [make(i) for i in range(n)]

                async def send():
                    for m in msgs:
                        await sender.send(m)

                async def receive():
                    for _ in range(n):
                        await harness.recv(receiver, 10)
                t0 = time.monotonic()
                await asyncio.gather(send(), receive())
                return n / (time.monotonic() - t0)

            async def measure(tls):
                s = sid("tp")
                if tls:
                    b = await wss_binary(d, s)
                    p = await wss_phone(d, s)
                else:
                    b = await harness.binary(d, s)
                    p = await harness.phone(d, s)
                cid = await harness.assert_exchange(b, p, s)
                payload = "x" * 1022  # 1 KiB with its quotes
                up = await one_way(p, b, lambda i: '"%s"' % payload, self.N)
                env_pre = '{"conn_id":"%s","frame":"' % cid
                down = await one_way(b, p, lambda i: env_pre + payload + '"}',
                                     self.N)
                await harness.close_all(b, p)
                return up, down

            async def main():
                # alternate, twice each, and keep the best of each: the
                # first runs pay for warming up
                best = {}
                for tls in (False, True, False, True):
                    up, down = await measure(tls)
                    o = best.get(tls, (0, 0))
                    best[tls] = (max(o[0], up), max(o[1], down))
                return best[False], best[True]
            (pu, pd), (tu, td) = harness.run(main(), timeout=120)
            print("\nTHROUGHPUT (N=%d messages of 1 KiB each way, python "
                  "websockets clients, best of 2, %s%d CPUs):\n"
                  "  plain ws: phone->binary %.0f msg/s, binary->phone "
                  "%.0f msg/s\n"
                  "  wss     : phone->binary %.0f msg/s, binary->phone "
                  "%.0f msg/s (ktls %s)"
                  % (self.N, "sanitizers, " if harness.sanitizer_build()
                     else "", os.cpu_count(), pu, pd, tu, td,
                     summary(d)["ktls"]), file=sys.stderr)


if __name__ == "__main__":
    if shutil.which("openssl") is None and not os.path.exists(OPENSSL):
        print("SKIP: no openssl command (apt-get install openssl)",
              file=sys.stderr)
        sys.exit(harness.SKIP)
    harness.main()
