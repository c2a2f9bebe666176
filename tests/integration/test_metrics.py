#!/usr/bin/python3
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
"""/metrics (docs/protocol.md §2): every series present from start at 0, exact
counts after claims, registrations and rejections, summed across relay
processes (including ones that have exited), and no client-chosen value in
any label."""

import asyncio
import json
import os
import re
import signal
import unittest

import harness

P2B, B2P = harness.FRAMES_P2B, harness.FRAMES_B2P
SERIES = [
    "pyrycode_relay_connected_binaries",
    "pyrycode_relay_connected_phones",
    P2B,
    B2P,
    "pyrycode_relay_grace_expiries_total",
] + [
    'pyrycode_relay_ws_upgrade_attempts_total{endpoint="%s",outcome="%s"}'
    % (e, o)
    for e in ("server", "client")
    for o in ("accept", "reject_headers", "reject_409", "reject_404",
              "reject_429", "reject_rate_limit")
] + [
    'pyrycode_relay_register_failures_total{kind="%s"}' % k
    for k in ("no_server", "server_in_use", "phones_at_cap", "ratelimit")
]


def scrape(d):
    status, headers, body = harness.http_get(d.metrics_port, "/metrics")
    assert status == 200, status
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), \
        headers
    values = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = int(value)
    return values, body.decode()


def upgrades(v, endpoint, outcome):
    return v['pyrycode_relay_ws_upgrade_attempts_total'
             '{endpoint="%s",outcome="%s"}' % (endpoint, outcome)]


class Metrics(unittest.TestCase):
    def test_every_series_present_from_start_at_zero(self):
        with harness.Daemon() as d:
            v, _ = scrape(d)
            for s in SERIES:
                self.assertIn(s, v)
                self.assertEqual(v[s], 0, s)
            # the metrics listener serves nothing else, the main one no /metrics
            self.assertEqual(harness.http_get(d.metrics_port, "/healthz")[0], 404)
            self.assertEqual(harness.http_get(d.port, "/metrics")[0], 404)

    def test_counts_after_claims_and_rejections(self):
        conf = "phones per server 1\nconflict probe 300ms\n" \
               "rate limit burst 10000 refill 100ms\ngrace 300ms"
        with harness.Daemon(conf) as d:
            async def main():
                b = await harness.binary(d, "m-sid-1")
                p = await harness.phone(d, "m-sid-1")
                await p.send('{"a": 1}')
                env = json.loads(await harness.recv(b))
                await b.send(json.dumps({"conn_id": env["conn_id"],
                                         "frame": [1]}))
                self.assertEqual(await harness.recv(p), "[1]")
                # 4429, 4404, 4409 and a header-gate 400
                p2 = await harness.phone(d, "m-sid-1")
                await harness.expect_close(p2, 4429)
                p3 = await harness.phone(d, "m-sid-none")
                await harness.expect_close(p3, 4404)
                b2 = await harness.binary(d, "m-sid-1")
                await harness.expect_close(b2, 4409)
                st, _, _ = harness.http_get(
                    d.port, "/v1/server", headers={
                        "X-Pyrycode-Server": "m-sid-2", "User-Agent": "t",
                        "Connection": "Upgrade", "Upgrade": "websocket",
                        "Sec-WebSocket-Version": "13",
                        "Sec-WebSocket-Key": harness.ws_key()})
                self.assertEqual(st, 400)
                v, text = scrape(d)
                self.assertEqual(v["pyrycode_relay_connected_binaries"], 1)
                self.assertEqual(v["pyrycode_relay_connected_phones"], 1)
                self.assertEqual(upgrades(v, "server", "accept"), 1)
                self.assertEqual(upgrades(v, "client", "accept"), 1)
                self.assertEqual(upgrades(v, "client", "reject_429"), 1)
                self.assertEqual(upgrades(v, "client", "reject_404"), 1)
                self.assertEqual(upgrades(v, "server", "reject_409"), 1)
                self.assertEqual(upgrades(v, "server", "reject_headers"), 1)
                self.assertEqual(v['pyrycode_relay_register_failures_total'
                                   '{kind="phones_at_cap"}'], 1)
                self.assertEqual(v['pyrycode_relay_register_failures_total'
                                   '{kind="no_server"}'], 1)
                self.assertEqual(v['pyrycode_relay_register_failures_total'
                                   '{kind="server_in_use"}'], 1)
                # no label carries a server-id or any client value
                self.assertNotIn("m-sid", text)
                self.assertNotIn("127.0.0.1", text)
                # the relay exits after its grace: its counts stay
                await p.close()
                await b.close()
                d.wait_no_relays(timeout=10)
                # the parent counts the exit when it reaps the relay, which
                # a client cannot see happen: poll /metrics with a deadline
                harness.poll_until(
                    lambda: scrape(d)[0]['pyrelayd_relay_process_exits_total'
                                         '{cause="retired"}'] == 1,
                    10, "the relay's exit to be counted")
                v, _ = scrape(d)
                self.assertEqual(v["pyrycode_relay_grace_expiries_total"], 1)
                self.assertEqual(v[P2B], 1)
                self.assertEqual(v[B2P], 1)
                self.assertEqual(upgrades(v, "server", "accept"), 1)
                self.assertEqual(v['pyrelayd_relay_process_exits_total'
                                   '{cause="retired"}'], 1)
                self.assertEqual(v["pyrycode_relay_connected_binaries"], 0)
            harness.run(main())

    def test_frames_counted_when_seen(self):
        # a scrape made as soon as a client has a frame counts it, and
        # every frame before it, while the relays are running
        with harness.Daemon() as d:
            async def main():
                pairs = []
                for sid in ("fc-a", "fc-b"):
                    b = await harness.binary(d, sid)
                    p = await harness.phone(d, sid)
                    pairs.append((b, p))
                sent_p2b = sent_b2p = 0
                for rnd in range(1, 4):
                    for b, p in pairs:
                        for i in range(rnd):
                            await p.send('{"n": %d}' % i)
                            env = json.loads(await harness.recv(b))
                            sent_p2b += 1
                        await b.send(json.dumps({"conn_id": env["conn_id"],
                                                 "frame": {"r": rnd}}))
                        self.assertEqual(json.loads(await harness.recv(p)),
                                         {"r": rnd})
                        sent_b2p += 1
                    v, _ = scrape(d)
                    self.assertEqual(v[P2B], sent_p2b, "round %d" % rnd)
                    self.assertEqual(v[B2P], sent_b2p, "round %d" % rnd)
                # counted while the relays run, not when they exit
                self.assertTrue({"fc-a", "fc-b"} <= set(d.relay_pids()),
                                d.relay_pids())
                for b, p in pairs:
                    await p.close()
                    await b.close()
            harness.run(main())

    def test_stopped_relay_does_not_hold_a_scrape(self):
        # a relay that cannot answer delays /metrics by a bounded wait, and
        # what it had not counted then is counted by a later scrape
        with harness.Daemon() as d:
            async def main():
                b = await harness.binary(d, "st-a")
                p = await harness.phone(d, "st-a")
                # the first frame's increment may be held (relay_chan.c:
                # one send a second, the claim's came just before)
                await p.send('{"n": 0}')
                await harness.recv(b)
                pid = d.relay_pids()["st-a"]
                os.kill(pid, signal.SIGSTOP)
                try:
                    harness.poll_until(
                        lambda: harness.proc_state(pid) == "T", 10,
                        "the relay stopped")
                    # a frame the stopped relay cannot have read
                    await p.send('{"n": 1}')
                    # answered (http_get gives up after 10 s) without
                    # the relay, which may be asked and never answers:
                    # the frame it has not read is not counted
                    v, _ = scrape(d)
                    self.assertLessEqual(v[P2B], 1)
                finally:
                    os.kill(pid, signal.SIGCONT)
                await harness.recv(b)
                harness.poll_until(lambda: scrape(d)[0][P2B] == 2, 20,
                                   "the second frame to be counted")
                await p.close()
                await b.close()
            harness.run(main())

    def test_rate_limit_counted(self):
        with harness.Daemon("rate limit burst 2 refill 60s") as d:
            async def main():
                for i in range(2):
                    b = await harness.binary(d, "rl-%d" % i)
                    await b.close()
                st, _, _ = harness.http_get(d.port, "/v1/server", headers={
                    "X-Pyrycode-Server": "rl-3", "X-Pyrycode-Version": "1",
                    "User-Agent": "t", "Connection": "Upgrade",
                    "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": harness.ws_key()})
                self.assertEqual(st, 429)
                # /healthz is exempt
                self.assertEqual(harness.http_get(d.port, "/healthz")[0], 200)
                v, _ = scrape(d)
                self.assertEqual(upgrades(v, "server", "reject_rate_limit"), 1)
                self.assertEqual(v['pyrycode_relay_register_failures_total'
                                   '{kind="ratelimit"}'], 1)
            harness.run(main())


if __name__ == "__main__":
    harness.main()
