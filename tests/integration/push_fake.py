# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""A local fake of Google's OAuth2 token endpoint and of FCM HTTP v1, over
HTTPS (Python's http.server and ssl), for test_push.py and bench/push-bench.

    pki = Pki(tmpdir)                    # test CA, server certificate, RSA key
    fake = FakeGoogle(pki)               # serves 127.0.0.1:fake.port
                    # (cert=pki.server_cert(name, san): another certificate)
    pki.write_key_file(path, token_uri=fake.token_uri)   # service account
    ... push fcm credentials path, push fcm endpoint fake.endpoint,
        push ca pki.ca_pem ...
    fake.close()

The token endpoint (/token) checks the JWT-bearer grant: the RS256
signature with the key's public half (`openssl dgst -verify`), the header
and the claims (iss, scope, aud, iat, exp = iat + 3600); it answers a fresh
access token.  FCM (/v1/projects/<project>/messages:send) checks the bearer
(401 for one it did not issue or that was revoked) and the exact body, and
answers by the FCM token's prefix:

    unreg-     404 NOT_FOUND with FcmError UNREGISTERED
    fail500-   500 INTERNAL
    hang-      no reply (until close())
    redirect-  302 to another path
    big-       200 with a 1 MiB body (Content-Length)
    bigchunk-  200 with a 1 MiB chunked body
    slow-G-    200 once release(G) is called (or after `slow_s` seconds)
    anything   200 {"name": "projects/<project>/messages/<n>"}

Every request is recorded (FakeGoogle.sends, .grants) with the client's
port, so tests can tell connections apart; wait_for(pred) waits on a
condition variable, never by polling.  Problems the fake finds (a bad
signature, a wrong body) are appended to FakeGoogle.errors.
"""

import base64
import http.server
import json
import os
import secrets
import socket
import socketserver
import ssl
import subprocess
import threading
import time
import urllib.parse

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
EMAIL = "relay-test@pyrelayd-test.iam.gserviceaccount.com"
PROJECT = "pyrelayd-test"
OPENSSL = "openssl"


def run_openssl(*args, stdin=None):
    r = subprocess.run([OPENSSL] + list(args), input=stdin,
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args),
                                               r.stderr.decode(errors="replace")))
    return r.stdout


class Pki:
    """A test CA, a server certificate for localhost and 127.0.0.1, and an
    RSA service-account key, made with the openssl command line."""

    def __init__(self, tmpdir):
        self.dir = tmpdir
        p = lambda n: os.path.join(tmpdir, n)   # noqa: E731
        self.ca_key, self.ca_pem = p("ca.key"), p("ca.pem")
        self.srv_key, self.srv_pem = p("srv.key"), p("srv.pem")
        self.sa_key, self.sa_pub = p("sa.key"), p("sa.pub")
        run_openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                    self.ca_key, "-out", self.ca_pem, "-days", "2", "-subj",
                    "/CN=pyrelayd test CA")
        self.server_cert("srv", "DNS:localhost,IP:127.0.0.1")
        run_openssl("genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", self.sa_key)
        run_openssl("pkey", "-in", self.sa_key, "-pubout", "-out", self.sa_pub)
        with open(self.sa_key) as f:
            self.sa_pem = f.read()

    def server_cert(self, name, san):
        """A server certificate for the names in san, signed by the CA:
        <name>.pem and <name>.key in the directory; returns their paths."""
        p = lambda n: os.path.join(self.dir, n)   # noqa: E731
        run_openssl("req", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                    p(name + ".key"), "-out", p(name + ".csr"), "-subj",
                    "/CN=pyrelayd test server")
        with open(p(name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                    "extendedKeyUsage=serverAuth\n" % san)
        run_openssl("x509", "-req", "-in", p(name + ".csr"), "-CA",
                    self.ca_pem, "-CAkey", self.ca_key, "-CAcreateserial",
                    "-out", p(name + ".pem"), "-days", "2", "-extfile",
                    p(name + ".ext"))
        return p(name + ".pem"), p(name + ".key")

    def key_json(self, token_uri, **override):
        doc = {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": self.sa_pem,
            "client_email": EMAIL,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        }
        doc.update(override)
        return {k: v for k, v in doc.items() if v is not None}

    def write_key_file(self, path, token_uri, mode=0o600, **override):
        with open(path, "w") as f:
            json.dump(self.key_json(token_uri, **override), f, indent=2)
        os.chmod(path, mode)
        return path


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # a client that hangs up (the relay abandoning a reply) is normal
        pass

    def get_request(self):
        # the TLS handshake happens in the handler's thread, not here
        sock, addr = self.socket.accept()
        # a reply's head and body go in two writes: no Nagle wait between
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.ctx.wrap_socket(sock, server_side=True,
                                    do_handshake_on_connect=False), addr


class FakeGoogle:

    def __init__(self, pki, slow_s=30.0, cert=None):
        self.pki = pki
        self.slow_s = slow_s
        self.cond = threading.Condition()
        self.grants = []     # dicts: port, claims, ok
        self.sends = []      # dicts: port, bearer, body, token, status
        self.errors = []
        self.issued = {}     # access token -> valid
        self.token_status = 200    # what /token answers; 400 to fail
        self.expires_in = 3599
        self.closing = threading.Event()
        self.gates = {}      # group -> Event, for slow-<group>- tokens
        self.connections = set()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*(cert or (pki.srv_pem, pki.srv_key)))
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60

            def log_message(self, *args):
                pass

            def do_POST(self):
                fake._post(self)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.ctx = ctx
        self.port = self.server.server_address[1]
        self.token_uri = "https://localhost:%d/token" % self.port
        self.endpoint = "https://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    # -- control

    def gate(self, group):
        with self.cond:
            return self.gates.setdefault(group, threading.Event())

    def release(self, group):
        """Lets the slow-<group>- requests answer, held or to come."""
        self.gate(group).set()

    def held(self, group):
        """The slow-<group>- requests received and not answered."""
        return [s for s in self.sends if s["status"] is None and
                (s["token"] or "").startswith("slow-%s-" % group)]

    def revoke(self):
        """Every access token issued so far is refused from now on (401)."""
        with self.cond:
            for t in self.issued:
                self.issued[t] = False

    def wait_for(self, pred, timeout=15, what="the fake's state"):
        """Waits (condition variable) until pred() holds; returns its value."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out after %gs waiting for %s"
                                         % (timeout, what))
                self.cond.wait(left)

    def sends_for(self, token):
        with self.cond:
            return [s for s in self.sends if s["token"] == token]

    def close(self):
        self.closing.set()
        with self.cond:
            for g in self.gates.values():
                g.set()
        self.server.shutdown()
        self.server.server_close()

    # -- serving

    def _reply(self, h, status, body=b"", ctype="application/json",
               headers=()):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()

    def _post(self, h):
        port = h.client_address[1]
        length = int(h.headers.get("Content-Length", "0"))
        body = h.rfile.read(length)
        with self.cond:
            self.connections.add(port)
        if h.path == "/token":
            self._token(h, port, body)
        elif h.path == "/v1/projects/%s/messages:send" % PROJECT:
            self._send(h, port, body)
        else:
            with self.cond:
                self.errors.append("POST to unexpected path %r" % h.path)
                self.cond.notify_all()
            self._reply(h, 404, b'{"error":{"code":404}}')

    def _check_jwt(self, assertion):
        """The claims of a valid grant, or raises ValueError."""
        parts = assertion.split(".")
        if len(parts) != 3:
            raise ValueError("JWT has %d parts" % len(parts))
        header = json.loads(b64url_decode(parts[0]))
        if header != {"alg": "RS256", "typ": "JWT"}:
            raise ValueError("JWT header %r" % header)
        claims = json.loads(b64url_decode(parts[1]))
        d = os.path.join(self.pki.dir, "jwt-%s" % secrets.token_hex(4))
        with open(d + ".data", "wb") as f:
            f.write((parts[0] + "." + parts[1]).encode())
        with open(d + ".sig", "wb") as f:
            f.write(b64url_decode(parts[2]))
        r = subprocess.run([OPENSSL, "dgst", "-sha256", "-verify",
                            self.pki.sa_pub, "-signature", d + ".sig",
                            d + ".data"], capture_output=True, timeout=30)
        os.unlink(d + ".data")
        os.unlink(d + ".sig")
        if r.returncode != 0 or b"Verified OK" not in r.stdout:
            raise ValueError("JWT signature does not verify: %r" % r.stdout)
        now = time.time()
        want = {"iss": EMAIL, "scope": SCOPE, "aud": self.token_uri}
        for k, v in want.items():
            if claims.get(k) != v:
                raise ValueError("claim %s is %r, want %r"
                                 % (k, claims.get(k), v))
        if not isinstance(claims.get("iat"), int) or \
                abs(claims["iat"] - now) > 60:
            raise ValueError("iat %r, now %d" % (claims.get("iat"), now))
        if claims.get("exp") != claims["iat"] + 3600:
            raise ValueError("exp %r, iat %r" % (claims.get("exp"),
                                                 claims["iat"]))
        if set(claims) != {"iss", "scope", "aud", "iat", "exp"}:
            raise ValueError("claims %r" % sorted(claims))
        return claims

    def _token(self, h, port, body):
        form = urllib.parse.parse_qs(body.decode(), strict_parsing=True)
        rec = {"port": port, "ok": False, "assertion": None}
        try:
            if h.headers.get("Content-Type") != \
                    "application/x-www-form-urlencoded":
                raise ValueError("content type %r"
                                 % h.headers.get("Content-Type"))
            if form.get("grant_type") != \
                    ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
                raise ValueError("grant_type %r" % form.get("grant_type"))
            if len(form.get("assertion", [])) != 1 or len(form) != 2:
                raise ValueError("form %r" % sorted(form))
            rec["assertion"] = form["assertion"][0]
            rec["claims"] = self._check_jwt(form["assertion"][0])
            rec["ok"] = True
        except ValueError as e:
            with self.cond:
                self.errors.append("token request: %s" % e)
        status = self.token_status if rec["ok"] else 400
        token = "ya29.fake-%s" % secrets.token_urlsafe(24)
        with self.cond:
            rec["status"] = status
            if status == 200:
                self.issued[token] = True
                rec["access_token"] = token
            self.grants.append(rec)
            self.cond.notify_all()
        if status == 200:
            self._reply(h, 200, json.dumps({
                "access_token": token, "expires_in": self.expires_in,
                "token_type": "Bearer"}).encode())
        else:
            self._reply(h, status, b'{"error":"invalid_grant",'
                        b'"error_description":"refused by the fake"}')

    def _send(self, h, port, body):
        auth = h.headers.get("Authorization", "")
        bearer = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        try:
            doc = json.loads(body)
            token = doc["message"]["token"]
        except (ValueError, KeyError, TypeError):
            token = None
        rec = {"port": port, "bearer": bearer, "body": body, "token": token,
               "ctype": h.headers.get("Content-Type"), "status": None,
               "time": time.monotonic()}
        with self.cond:
            want = json.dumps({"message": {"token": token, "android": {
                "priority": "HIGH"}}}, separators=(",", ":"),
                ensure_ascii=False).encode()
            if token is None or body != want:
                self.errors.append("send body %r, want %r" % (body, want))
            if rec["ctype"] != "application/json":
                self.errors.append("send content type %r" % rec["ctype"])
            valid = self.issued.get(bearer, False)
            self.sends.append(rec)
            self.cond.notify_all()
        if not valid:
            rec["status"] = 401
            self._reply(h, 401, b'{"error":{"code":401,"message":"Request '
                        b'had invalid authentication credentials.",'
                        b'"status":"UNAUTHENTICATED"}}')
            return
        token = token or ""
        if token.startswith("hang-"):
            rec["status"] = "hang"
            self.closing.wait(60)
            return
        if token.startswith("slow-"):
            self.gate(token.split("-")[1]).wait(self.slow_s)
        if token.startswith("unreg-"):
            rec["status"] = 404
            self._reply(h, 404, json.dumps({"error": {
                "code": 404, "message": "Requested entity was not found.",
                "status": "NOT_FOUND", "details": [{
                    "@type": "type.googleapis.com/google.firebase.fcm.v1."
                             "FcmError",
                    "errorCode": "UNREGISTERED"}]}}).encode())
        elif token.startswith("fail500-"):
            rec["status"] = 500
            self._reply(h, 500, b'{"error":{"code":500,"message":"Internal '
                        b'error encountered.","status":"INTERNAL"}}')
        elif token.startswith("redirect-"):
            rec["status"] = 302
            self._reply(h, 302, b"", headers=[(
                "Location", "https://127.0.0.1:%d/elsewhere" % self.port)])
        elif token.startswith("big-"):
            rec["status"] = 200
            self._reply(h, 200, b" " * (1 << 20))
        elif token.startswith("bigchunk-"):
            rec["status"] = 200
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            chunk = b" " * 65536
            for _ in range(16):
                h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        else:
            with self.cond:
                n = len(self.sends)
            rec["status"] = 200
            self._reply(h, 200, json.dumps({
                "name": "projects/%s/messages/%d" % (PROJECT, 1000 + n)
            }).encode())
        with self.cond:
            self.cond.notify_all()
