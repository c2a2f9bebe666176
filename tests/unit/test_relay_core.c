/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * relay_core.c driven by scripted events, with no socket and no event
 * loop: every timeline of docs/protocol.md §3 (claim, conflict, takeover,
 * grace and its queue, reclaim, expiry, registration and the cap), the
 * backpressure rules of §4, close notices and directives, the queues of a
 * conflict probe, the bound on newcomers per server-id, and the checks
 * of push wake requests (§6) before one goes to the parent.
 *
 * The fake layer around the core writes each action down as one line of
 * a transcript ("send B ...", "close P1 4409 ...", "pause P2", "timer
 * grace 30000", "count claim", "state binary=1 phones=2 probing=0",
 * "retire", "push TOKEN"), and each step asserts the exact lines it
 * caused, in order.
 * A phone's conn_id reads <NAME> in the transcript.  Like the real
 * layers, the fake writes down a pause, a resume or a timer stop only when
 * it changes something, and a state only when it differs from the last
 * one reported.
 */
#include "config.h"

#include <CUnit/Basic.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pyrelayd.h"
#include "relay_core.h"
#include "unit.h"
#include "ws.h"

#define PEERS_MAX	32
#define SCRIPT_MAX	65536

struct tpeer {
	struct relay_peer	 peer;		/* first: the core's pointer is ours */
	char			 name[16];
	int			 used;
	int			 gone;
	int			 paused;
	size_t			 cost;		/* queued output, as ws_cost counts it */
};

struct fake {
	struct relay_core	 core;
	struct limits		 lim;
	struct tpeer		 peers[PEERS_MAX];
	char			 script[SCRIPT_MAX];
	size_t			 len;
	int64_t			 now;
	int			 timer_on[RELAY_TIMER_MAX];
	int			 reported, rep_binary, rep_phones, rep_probing;
	FILE			*log;		/* stderr, where the core logs */
	long			 log_mark;
};

static struct fake	 F;

static void
note(const char *fmt, ...)
{
	va_list	ap;
	int	n;

	if (F.len >= sizeof(F.script) - 1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(F.script + F.len, sizeof(F.script) - F.len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	F.len += (size_t)n < sizeof(F.script) - F.len ? (size_t)n :
	    sizeof(F.script) - F.len - 1;
}

static struct tpeer *
T(struct relay_peer *p)
{
	return (struct tpeer *)p;
}

/* The bytes, with each phone's conn_id written <NAME>. */
static void
note_bytes(const unsigned char *buf, size_t len)
{
	size_t	 i, k, idlen;
	int	 hit;

	for (i = 0; i < len; ) {
		hit = 0;
		for (k = 0; k < PEERS_MAX && !hit; k++) {
			idlen = F.peers[k].peer.conn_id_len;
			if (!F.peers[k].used || idlen == 0 || i + idlen > len ||
			    memcmp(buf + i, F.peers[k].peer.conn_id, idlen) != 0)
				continue;
			note("<%s>", F.peers[k].name);
			i += idlen;
			hit = 1;
		}
		if (!hit)
			note("%c", buf[i++]);
	}
}

static void
op_send(struct relay_core *core, struct relay_peer *p, const void *a,
    size_t alen, const void *b, size_t blen, const void *c, size_t clen)
{
	unsigned char	msg[8192];
	size_t		n = alen + blen + clen;

	CU_ASSERT_FATAL(n <= sizeof(msg));
	CU_ASSERT(!T(p)->gone);
	memcpy(msg, a, alen);
	if (blen)
		memcpy(msg + alen, b, blen);
	if (clen)
		memcpy(msg + alen + blen, c, clen);
	note("send %s ", T(p)->name);
	note_bytes(msg, n);
	note("\n");
	T(p)->cost += n + WS_MSG_OVERHEAD;
}

static void
op_close(struct relay_core *core, struct relay_peer *p, uint16_t code,
    const char *reason)
{
	CU_ASSERT(!T(p)->gone);
	note("close %s %u%s%s\n", T(p)->name, code, reason ? " " : "",
	    reason ? reason : "");
}

static void
op_ping(struct relay_core *core, struct relay_peer *p)
{
	note("ping %s\n", T(p)->name);
}

static void
op_pause(struct relay_core *core, struct relay_peer *p)
{
	if (T(p)->paused)
		return;
	T(p)->paused = 1;
	note("pause %s\n", T(p)->name);
}

static void
op_resume(struct relay_core *core, struct relay_peer *p)
{
	if (!T(p)->paused)
		return;
	T(p)->paused = 0;
	note("resume %s\n", T(p)->name);
}

static size_t
op_cost(struct relay_core *core, struct relay_peer *p)
{
	return T(p)->cost;
}

static const char *
timer_name(enum relay_timer t)
{
	return t == RELAY_TIMER_GRACE ? "grace" : "probe";
}

static void
op_timer_start(struct relay_core *core, enum relay_timer t, int64_t ms)
{
	F.timer_on[t] = 1;
	note("timer %s %lld\n", timer_name(t), (long long)ms);
}

static void
op_timer_stop(struct relay_core *core, enum relay_timer t)
{
	if (!F.timer_on[t])
		return;
	F.timer_on[t] = 0;
	note("stop %s\n", timer_name(t));
}

static void
op_count(struct relay_core *core, enum relay_count c)
{
	static const char *const names[] = {
		[RELAY_COUNT_FRAME_P2B] = "p2b",
		[RELAY_COUNT_FRAME_B2P] = "b2p",
		[RELAY_COUNT_GRACE_EXPIRY] = "grace_expiry",
		[RELAY_COUNT_CLAIM] = "claim",
		[RELAY_COUNT_PHONE] = "phone",
		[RELAY_COUNT_NO_SERVER] = "404",
		[RELAY_COUNT_IN_USE] = "409",
		[RELAY_COUNT_AT_CAP] = "429",
	};

	note("count %s\n", names[c]);
}

static void
op_report(struct relay_core *core)
{
	int	b = core->binary != NULL;

	if (F.reported && b == F.rep_binary && core->nphones == F.rep_phones &&
	    core->probing == F.rep_probing)
		return;
	F.reported = 1;
	F.rep_binary = b;
	F.rep_phones = core->nphones;
	F.rep_probing = core->probing;
	note("state binary=%d phones=%d probing=%d\n", b, core->nphones,
	    core->probing);
}

static void
op_retire(struct relay_core *core)
{
	note("retire\n");
}

static void
op_push_wake(struct relay_core *core, const char *token)
{
	note("push %s\n", token);
}

static int64_t
op_now(struct relay_core *core)
{
	return F.now;
}

static const struct relay_core_ops fake_ops = {
	.send = op_send,
	.close = op_close,
	.ping = op_ping,
	.pause = op_pause,
	.resume = op_resume,
	.cost = op_cost,
	.timer_start = op_timer_start,
	.timer_stop = op_timer_stop,
	.count = op_count,
	.report = op_report,
	.retire = op_retire,
	.push_wake = op_push_wake,
	.now = op_now,
};

/* --- the script ------------------------------------------------------- */

/* Protocol.md's defaults, a server-id, and an empty transcript. */
static void
setup(void)
{
	FILE	*log = F.log;

	memset(&F, 0, sizeof(F));
	F.log = log;
	F.lim.grace_ms = 30000;
	F.lim.conflict_probe_ms = 10000;
	F.lim.outbox = 4 << 20;
	F.lim.grace_queue = 1 << 20;
	F.lim.phones_per_server = 16;
	F.lim.message_size = 262144;
	F.now = 1000000;
	relay_core_init(&F.core, &fake_ops, &F.lim);
	strlcpy(F.core.sid, "sid1", sizeof(F.core.sid));
	if (F.log != NULL && fseek(F.log, 0, SEEK_END) == 0)
		F.log_mark = ftell(F.log);
}

/* Every peer still attached leaves, and the queues are freed. */
static void
teardown(void)
{
	int	i;

	for (i = 0; i < PEERS_MAX; i++)
		if (F.peers[i].used && !F.peers[i].gone)
			relay_core_gone(&F.core, &F.peers[i].peer);
	msgq_clear(&F.core.gq);
	CU_ASSERT(TAILQ_EMPTY(&F.core.peers));
}

static struct tpeer *
new_peer(const char *name)
{
	int	i;

	for (i = 0; i < PEERS_MAX; i++)
		if (!F.peers[i].used)
			break;
	CU_ASSERT_FATAL(i < PEERS_MAX);
	F.peers[i].used = 1;
	strlcpy(F.peers[i].name, name, sizeof(F.peers[i].name));
	return &F.peers[i];
}

static struct tpeer *
binary(const char *name)
{
	struct tpeer	*p = new_peer(name);

	relay_core_attach_binary(&F.core, &p->peer);
	return p;
}

static struct tpeer *
phone(const char *name)
{
	struct tpeer	*p = new_peer(name);

	relay_core_attach_phone(&F.core, &p->peer, "dev");
	return p;
}

/*
 * A whole message from p (copied: the core may change it in place),
 * through relay_core_text when its UTF-8 is unchecked: that verdict.
 */
static int
says_how(struct tpeer *p, const char *text, int utf8_unchecked)
{
	unsigned char	buf[8192];
	size_t		len = strlen(text);

	CU_ASSERT_FATAL(len <= sizeof(buf));
	memcpy(buf, text, len);
	if (utf8_unchecked)
		return relay_core_text(&F.core, &p->peer, buf, len);
	relay_core_message(&F.core, &p->peer, buf, len);
	return 0;
}

static void
says(struct tpeer *p, const char *text)
{
	says_how(p, text, 0);
}

/* A text message from p whose UTF-8 is not checked yet: its verdict. */
static int
says_text(struct tpeer *p, const char *text)
{
	return says_how(p, text, 1);
}

/* The binary's envelope for phone p: {"conn_id":"<p>",rest */
static void
envelope(struct tpeer *b, struct tpeer *p, const char *rest)
{
	char	buf[8192];

	snprintf(buf, sizeof(buf), "{\"conn_id\":\"%s\",%s", p->peer.conn_id,
	    rest);
	says(b, buf);
}

static void
pong(struct tpeer *p)
{
	relay_core_pong(&F.core, &p->peer);
}

/* p's close began without the core asking (its close frame: code). */
static void
closing(struct tpeer *p, int code)
{
	relay_core_closing(&F.core, &p->peer, code);
}

static void
gone(struct tpeer *p)
{
	relay_core_gone(&F.core, &p->peer);
	p->gone = 1;
}

/* p's output was written down to `cost` (or grew to it). */
static void
output(struct tpeer *p, size_t cost)
{
	p->cost = cost;
	relay_core_output(&F.core, &p->peer);
}

static void
fire(enum relay_timer t)
{
	CU_ASSERT(F.timer_on[t]);
	F.timer_on[t] = 0;
	relay_core_timer(&F.core, t);
}

/*
 * The transcript since the last check is exactly these lines (NULL ends
 * them); then it starts again empty.
 */
static void
expect_lines(int line, ...)
{
	char		 want[SCRIPT_MAX];
	size_t		 n = 0;
	const char	*s;
	va_list		 ap;

	want[0] = '\0';
	va_start(ap, line);
	while ((s = va_arg(ap, const char *)) != NULL && n < sizeof(want))
		n += snprintf(want + n, sizeof(want) - n, "%s\n", s);
	va_end(ap);
	if (strcmp(want, F.script) != 0)
		fprintf(stdout, "\n  line %d: expected\n%s  got\n%s", line, want,
		    F.script);
	CU_assertImplementation(strcmp(want, F.script) == 0, line,
	    "the actions expected", __FILE__, "", CU_FALSE);
	F.len = 0;
	F.script[0] = '\0';
}
#define EXPECT(...)	expect_lines(__LINE__, __VA_ARGS__, NULL)
#define NOTHING()	expect_lines(__LINE__, NULL)

/* The lines holding `what` the core logged since the test began. */
static int
logged_count(const char *what)
{
	char	line[4096];
	int	n = 0;

	if (F.log == NULL || fseek(F.log, F.log_mark, SEEK_SET) == -1)
		return 0;
	while (fgets(line, sizeof(line), F.log) != NULL)
		n += strstr(line, what) != NULL;
	return n;
}

/* The core logged a line holding `what` since the test began. */
static int
logged(const char *what)
{
	return logged_count(what) > 0;
}

/* B claims the server-id and phones P1..Pn register. */
static struct tpeer *
claimed(int n, struct tpeer **ph)
{
	struct tpeer	*b;
	char		 name[8];
	int		 i;

	b = binary("B");
	for (i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "P%d", i + 1);
		ph[i] = phone(name);
	}
	F.len = 0;
	F.script[0] = '\0';
	return b;
}

/* --- docs/protocol.md §3 ---------------------------------------------------- */

static void
test_claim(void)
{
	struct tpeer	*b, *p, *p2;
	size_t		 i;

	setup();
	b = binary("B");
	EXPECT("count claim", "state binary=1 phones=0 probing=0");
	p = phone("P1");
	EXPECT("count phone", "state binary=1 phones=1 probing=0");
	p2 = phone("P2");
	EXPECT("count phone", "state binary=1 phones=2 probing=0");
	/* client-<server-id>-<8 lowercase hex>, distinct */
	CU_ASSERT_EQUAL(p->peer.conn_id_len, 20);
	CU_ASSERT(strncmp(p->peer.conn_id, "client-sid1-", 12) == 0);
	for (i = 12; i < 20; i++)
		CU_ASSERT(strchr("0123456789abcdef", p->peer.conn_id[i]) != NULL);
	CU_ASSERT(strcmp(p->peer.conn_id, p2->peer.conn_id) != 0);
	/* phone -> binary: compacted, in its envelope */
	says(p, "{ \"a\" : [1, 2] }");
	EXPECT("send B {\"conn_id\":\"<P1>\",\"frame\":{\"a\":[1,2]}}",
	    "count p2b");
	/* binary -> phone: the frame's bytes, verbatim */
	envelope(b, p, "\"frame\":\"hi\"}");
	EXPECT("send P1 \"hi\"", "count b2p");
	envelope(b, p2, "\"frame\": {\"to\": 2}}");
	EXPECT("send P2 {\"to\": 2}", "count b2p");
	teardown();
}

static void
test_conflict_pong_4409(void)
{
	struct tpeer	*ph[1], *b, *n;

	setup();
	b = claimed(1, ph);
	n = binary("N");
	EXPECT("ping B", "timer probe 10000", "state binary=1 phones=1 probing=1");
	/* during the probe: the phone's frame waits, the newcomer's is held */
	says(ph[0], "{\"during\":1}");
	EXPECT("count p2b");
	envelope(n, ph[0], "\"frame\":\"from the newcomer\"}");
	NOTHING();
	/* the incumbent answers: the newcomer loses, its message goes nowhere */
	pong(b);
	EXPECT("stop probe", "count 409",
	    "close N 4409 server-id already claimed",
	    "state binary=1 phones=1 probing=0",
	    "send B {\"conn_id\":\"<P1>\",\"frame\":{\"during\":1}}");
	envelope(n, ph[0], "\"frame\":\"late\"}");
	gone(n);
	NOTHING();
	/* the incumbent and its phone go on */
	says(ph[0], "{\"after\":1}");
	EXPECT("send B {\"conn_id\":\"<P1>\",\"frame\":{\"after\":1}}", "count p2b");
	envelope(b, ph[0], "\"frame\":1}");
	EXPECT("send P1 1", "count b2p");
	/* a pong outside a probe decides nothing */
	pong(b);
	NOTHING();
	teardown();
}

static void
test_takeover(void)
{
	struct tpeer	*ph[1], *b, *n;

	setup();
	b = claimed(1, ph);
	n = binary("N");
	EXPECT("ping B", "timer probe 10000", "state binary=1 phones=1 probing=1");
	envelope(n, ph[0], "\"frame\":\"early 0\"}");
	says(ph[0], "{\"during\":0}");
	envelope(n, ph[0], "\"frame\":\"early 1\"}");
	says(ph[0], "{\"during\":1}");
	EXPECT("count p2b", "count p2b");
	/* no pong: the incumbent is closed, the newcomer owns the id */
	fire(RELAY_TIMER_PROBE);
	EXPECT("close B 1011 heartbeat timeout", "count claim",
	    "state binary=1 phones=1 probing=0",
	    /* what the phone said waits for whoever holds the id: the newcomer */
	    "send N {\"conn_id\":\"<P1>\",\"frame\":{\"during\":0}}",
	    "send N {\"conn_id\":\"<P1>\",\"frame\":{\"during\":1}}",
	    /* and the phone gets what the newcomer said, in order */
	    "send P1 \"early 0\"", "count b2p",
	    "send P1 \"early 1\"", "count b2p");
	/* the phone stayed attached, to the newcomer */
	says(ph[0], "{\"m\":2}");
	EXPECT("send N {\"conn_id\":\"<P1>\",\"frame\":{\"m\":2}}", "count p2b");
	envelope(n, ph[0], "\"frame\":3}");
	EXPECT("send P1 3", "count b2p");
	/* the old binary says nothing any more, and its end starts no grace */
	envelope(b, ph[0], "\"frame\":\"old\"}");
	closing(b, 1000);
	gone(b);
	NOTHING();
	teardown();
}

/* The incumbent leaves during the probe: the newcomer owns it at once. */
static void
test_incumbent_leaves_during_probe(void)
{
	struct tpeer	*ph[1], *b, *n;

	setup();
	b = claimed(1, ph);
	n = binary("N");
	EXPECT("ping B", "timer probe 10000", "state binary=1 phones=1 probing=1");
	envelope(n, ph[0], "\"frame\":\"held\"}");
	says(ph[0], "{\"p\":1}");
	EXPECT("count p2b");
	gone(b);
	EXPECT("stop probe", "count claim", "state binary=1 phones=1 probing=0",
	    "send N {\"conn_id\":\"<P1>\",\"frame\":{\"p\":1}}",
	    "send P1 \"held\"", "count b2p");
	teardown();
}

static void
test_grace_queue_and_reclaim(void)
{
	struct tpeer	*ph[2], *b, *b2, *p3;
	char		 big[256];

	setup();
	F.lim.grace_queue = 300;
	b = claimed(2, ph);
	/* the binary's connection ends: the id is held, the phones stay */
	closing(b, 1000);
	EXPECT("state binary=0 phones=2 probing=0", "timer grace 30000");
	gone(b);
	NOTHING();
	/* new phones register (no 4404) */
	p3 = phone("P3");
	EXPECT("count phone", "state binary=0 phones=3 probing=0");
	/* frames are queued in order, as envelopes */
	says(ph[0], "{\"n\":1}");
	says(ph[1], "{\"n\":2}");
	says(ph[0], "{\"n\":3}");
	EXPECT("count p2b", "count p2b", "count p2b");
	/* a frame that would overflow the queue: 1013, its earlier ones stay */
	memset(big, 'x', sizeof(big));
	big[0] = '"';
	big[200] = '"';
	big[201] = '\0';
	says(ph[1], big);
	EXPECT("close P2 1013 binary unavailable",
	    "state binary=0 phones=2 probing=0");
	CU_ASSERT(logged("event=grace_queue_full server_id=sid1"));
	/* phones that leave add their close notice to the queue, once */
	closing(p3, 4000);
	EXPECT("state binary=0 phones=1 probing=0");
	gone(ph[1]);
	gone(p3);
	NOTHING();
	/* reclaim: the queue first, in order, then live traffic */
	b2 = binary("B2");
	EXPECT("count claim", "stop grace", "state binary=1 phones=1 probing=0",
	    "send B2 {\"conn_id\":\"<P1>\",\"frame\":{\"n\":1}}",
	    "send B2 {\"conn_id\":\"<P2>\",\"frame\":{\"n\":2}}",
	    "send B2 {\"conn_id\":\"<P1>\",\"frame\":{\"n\":3}}",
	    "send B2 {\"conn_id\":\"<P2>\",\"close_code\":1001}",
	    "send B2 {\"conn_id\":\"<P3>\",\"close_code\":4000}");
	CU_ASSERT(logged("how=reclaim"));
	says(ph[0], "{\"n\":4}");
	EXPECT("send B2 {\"conn_id\":\"<P1>\",\"frame\":{\"n\":4}}", "count p2b");
	envelope(b2, ph[0], "\"frame\":5}");
	EXPECT("send P1 5", "count b2p");
	teardown();
}

static void
test_grace_expiry(void)
{
	struct tpeer	*ph[2], *b;

	setup();
	b = claimed(2, ph);
	gone(b);
	EXPECT("state binary=0 phones=2 probing=0", "timer grace 30000");
	says(ph[0], "{\"q\":1}");
	EXPECT("count p2b");
	fire(RELAY_TIMER_GRACE);
	EXPECT("count grace_expiry",
	    "close P1 1011 binary did not reconnect",
	    "state binary=0 phones=1 probing=0",
	    "close P2 1011 binary did not reconnect",
	    "state binary=0 phones=0 probing=0", "retire");
	CU_ASSERT(F.core.retiring);
	CU_ASSERT_EQUAL(F.core.gq.len, 0);
	/* the server-id is free: a later phone gets 4404 */
	phone("P3");
	EXPECT("close P3 4404 no server with that id", "count 404");
	/* the phones' ends owe no notice */
	closing(ph[0], 1000);
	gone(ph[0]);
	gone(ph[1]);
	NOTHING();
	teardown();
}

static void
test_register_no_server_4404(void)
{
	struct tpeer	*p;

	setup();
	p = phone("P1");
	EXPECT("close P1 4404 no server with that id", "count 404");
	CU_ASSERT_EQUAL(F.core.nphones, 0);
	/* a rejected phone says nothing */
	says(p, "{\"x\":1}");
	gone(p);
	NOTHING();
	teardown();
}

static void
test_register_cap_4429(void)
{
	struct tpeer	*ph[2], *b;

	setup();
	F.lim.phones_per_server = 2;
	b = claimed(2, ph);
	phone("P3");
	EXPECT("close P3 4429 too many phones for server-id", "count 429");
	/* one leaves: a place is free */
	closing(ph[0], 1000);
	EXPECT("send B {\"conn_id\":\"<P1>\",\"close_code\":1000}",
	    "state binary=1 phones=1 probing=0");
	phone("P4");
	EXPECT("count phone", "state binary=1 phones=2 probing=0");
	/* phones in a grace period count against the cap */
	gone(b);
	EXPECT("state binary=0 phones=2 probing=0", "timer grace 30000");
	phone("P5");
	EXPECT("close P5 4429 too many phones for server-id", "count 429");
	teardown();
}

static void
test_no_server_wins_over_cap(void)
{
	setup();
	F.lim.phones_per_server = 0;
	phone("P1");
	EXPECT("close P1 4404 no server with that id", "count 404");
	binary("B");
	EXPECT("count claim", "state binary=1 phones=0 probing=0");
	phone("P2");
	EXPECT("close P2 4429 too many phones for server-id", "count 429");
	teardown();
}

/* A binary lost on its way (its fd never came) leaves the id in its grace. */
static void
test_binary_lost(void)
{
	setup();
	relay_core_binary_lost(&F.core);
	EXPECT("state binary=0 phones=0 probing=0", "timer grace 30000");
	relay_core_binary_lost(&F.core);
	NOTHING();
	binary("B");
	EXPECT("count claim", "stop grace", "state binary=1 phones=0 probing=0");
	relay_core_binary_lost(&F.core);
	NOTHING();
	teardown();
}

/* --- docs/protocol.md §4 ---------------------------------------------------- */

static void
test_phone_outbox_cap(void)
{
	struct tpeer	*ph[2], *b;

	setup();
	F.lim.outbox = 1000;
	b = claimed(2, ph);
	/* room for exactly one 10-byte frame: it goes */
	ph[0]->cost = 1000 - WS_MSG_OVERHEAD - 10;
	envelope(b, ph[0], "\"frame\":\"12345678\"}");
	EXPECT("send P1 \"12345678\"", "count b2p");
	/* the next would pass the cap: 1011, and the binary is told */
	envelope(b, ph[0], "\"frame\":1}");
	EXPECT("close P1 1011 phone backlog full",
	    "send B {\"conn_id\":\"<P1>\",\"close_code\":1001}",
	    "state binary=1 phones=1 probing=0");
	/* the other phone is not held up; later envelopes to P1 are dropped */
	envelope(b, ph[1], "\"frame\":1}");
	EXPECT("send P2 1", "count b2p");
	envelope(b, ph[0], "\"frame\":2}");
	NOTHING();
	teardown();
}

static void
test_binary_backpressure(void)
{
	struct tpeer	*ph[2], *b, *p3;

	setup();
	F.lim.outbox = 1000;
	b = claimed(2, ph);
	b->cost = 990;
	/* the frame that crosses the budget is sent; then the phones wait */
	says(ph[0], "{\"a\":1}");
	EXPECT("send B {\"conn_id\":\"<P1>\",\"frame\":{\"a\":1}}",
	    "pause P1", "pause P2", "count p2b");
	/* nothing is dropped: what was read already still goes */
	says(ph[1], "{\"b\":2}");
	EXPECT("send B {\"conn_id\":\"<P2>\",\"frame\":{\"b\":2}}", "count p2b");
	/* a phone that registers meanwhile waits too */
	p3 = phone("P3");
	EXPECT("count phone", "state binary=1 phones=3 probing=0", "pause P3");
	/* written but still over: no change */
	output(b, 1001);
	NOTHING();
	output(b, 1000);
	EXPECT("resume P1", "resume P2", "resume P3");
	/* over again, and the binary leaves: its phones are read again */
	output(b, 5000);
	EXPECT("pause P1", "pause P2", "pause P3");
	gone(b);
	EXPECT("resume P1", "resume P2", "resume P3",
	    "state binary=0 phones=3 probing=0", "timer grace 30000");
	CU_ASSERT(!p3->paused);
	teardown();
}

static void
test_close_notice(void)
{
	struct tpeer	*ph[4];

	setup();
	claimed(4, ph);
	/* the phone started the close: its code */
	closing(ph[0], 4001);
	EXPECT("send B {\"conn_id\":\"<P1>\",\"close_code\":4001}",
	    "state binary=1 phones=3 probing=0");
	/* exactly once */
	closing(ph[0], 4001);
	gone(ph[0]);
	NOTHING();
	/* TCP dropped: 1001 */
	gone(ph[1]);
	EXPECT("send B {\"conn_id\":\"<P2>\",\"close_code\":1001}",
	    "state binary=1 phones=2 probing=0");
	/* the relay closed it (invalid JSON): 1001 */
	says(ph[2], "{\"unterminated\":");
	EXPECT("close P3 1007 invalid JSON",
	    "send B {\"conn_id\":\"<P3>\",\"close_code\":1001}",
	    "state binary=1 phones=1 probing=0");
	gone(ph[2]);
	NOTHING();
	/* the I/O layer closed it (heartbeat): 1001 */
	closing(ph[3], 1001);
	EXPECT("send B {\"conn_id\":\"<P4>\",\"close_code\":1001}",
	    "state binary=1 phones=0 probing=0");
	teardown();
}

/*
 * relay_core_text: the binary's envelope parse stands for the UTF-8
 * check; what is not UTF-8 is refused (-1) before anything is done,
 * from the binary and from a phone alike.
 */
static void
test_text_utf8(void)
{
	struct tpeer	*b, *ph[1];
	char		 env[256];

	setup();
	b = claimed(1, ph);
	snprintf(env, sizeof(env), "{\"conn_id\":\"%s\",\"frame\":\"\xc3\xa9\"}",
	    ph[0]->peer.conn_id);
	CU_ASSERT_EQUAL(says_text(b, env), 0);
	EXPECT("send P1 \"\xc3\xa9\"", "count b2p");
	/* not UTF-8 inside a string, and outside one */
	snprintf(env, sizeof(env), "{\"conn_id\":\"%s\",\"frame\":\"\xc0\xaf\"}",
	    ph[0]->peer.conn_id);
	CU_ASSERT_EQUAL(says_text(b, env), -1);
	CU_ASSERT_EQUAL(says_text(b, "\xff"), -1);
	NOTHING();
	/* not JSON but UTF-8: dropped, as before */
	CU_ASSERT_EQUAL(says_text(b, "{\"conn_id\":"), 0);
	NOTHING();
	/* a phone: not UTF-8 is -1 with no close of the core's own */
	CU_ASSERT_EQUAL(says_text(ph[0], "\"\xed\xa0\x80\""), -1);
	NOTHING();
	CU_ASSERT_EQUAL(says_text(ph[0], "\"\xc3\xa9\""), 0);
	EXPECT("send B {\"conn_id\":\"<P1>\",\"frame\":\"\xc3\xa9\"}",
	    "count p2b");
	teardown();
}

/*
 * Each envelope finds its phone among a full server-id's, the cache of
 * the lookup (phone_hint) notwithstanding: one holding another phone, a
 * phone whose close began, and no slot naming a peer once it is gone.
 */
static void
test_find_phone(void)
{
	struct tpeer	*b, *ph[16];
	char		 frame[32], want[32];
	int		 round, i;

	setup();
	b = claimed(16, ph);
	for (round = 0; round < 2; round++)
		for (i = 0; i < 16; i++) {
			snprintf(frame, sizeof(frame), "\"frame\":%d}", i);
			snprintf(want, sizeof(want), "send P%d %d", i + 1, i);
			envelope(b, ph[i], frame);
			EXPECT(want, "count b2p");
		}
	/* every slot names P2: P1's envelope still reaches P1 */
	for (i = 0; i < RELAY_PHONE_HINTS; i++)
		F.core.phone_hint[i] = &ph[1]->peer;
	envelope(b, ph[0], "\"frame\":\"one\"}");
	EXPECT("send P1 \"one\"", "count b2p");
	/* only the slot of its own conn_id may name a phone: undo the above */
	for (i = 0; i < RELAY_PHONE_HINTS; i++)
		if (F.core.phone_hint[i] == &ph[1]->peer)
			F.core.phone_hint[i] = NULL;
	/* P4 is closing: its envelopes are dropped, cached or not */
	envelope(b, ph[3], "\"frame\":4}");
	EXPECT("send P4 4", "count b2p");
	closing(ph[3], 4000);
	EXPECT("send B {\"conn_id\":\"<P4>\",\"close_code\":4000}",
	    "state binary=1 phones=15 probing=0");
	envelope(b, ph[3], "\"frame\":4}");
	NOTHING();
	gone(ph[3]);
	for (i = 0; i < RELAY_PHONE_HINTS; i++)
		CU_ASSERT(F.core.phone_hint[i] != &ph[3]->peer);
	teardown();
	for (i = 0; i < RELAY_PHONE_HINTS; i++)
		CU_ASSERT(F.core.phone_hint[i] == NULL);
}

static void
test_close_directives(void)
{
	static const int sendable[] = { 1000, 1001, 1003, 1007, 1011, 1014,
	    3000, 4999 };
	static const int unsendable[] = { 999, 1004, 1005, 1006, 1015, 1016,
	    2999, 5000 };
	struct tpeer	*ph[3], *b, *p;
	char		 want[64], env[64];
	size_t		 i;

	setup();
	b = claimed(3, ph);
	/* frame first, then the close with that code and no reason; no notice */
	envelope(b, ph[0], "\"frame\":{\"bye\":1},\"close_code\":4000}");
	EXPECT("send P1 {\"bye\":1}", "count b2p", "close P1 4000",
	    "state binary=1 phones=2 probing=0");
	envelope(b, ph[0], "\"frame\":2}");
	closing(ph[0], 4000);
	gone(ph[0]);
	NOTHING();
	/* no frame, or a null one: the close alone */
	envelope(b, ph[1], "\"close_code\":4001}");
	EXPECT("close P2 4001", "state binary=1 phones=1 probing=0");
	envelope(b, ph[2], "\"frame\":null,\"close_code\":1000}");
	EXPECT("close P3 1000", "state binary=1 phones=0 probing=0");
	/* close_code 0: no close */
	p = phone("Q");
	EXPECT("count phone", "state binary=1 phones=1 probing=0");
	envelope(b, p, "\"frame\":1,\"close_code\":0}");
	EXPECT("send Q 1", "count b2p");
	gone(p);
	EXPECT("send B {\"conn_id\":\"<Q>\",\"close_code\":1001}",
	    "state binary=1 phones=0 probing=0");
	for (i = 0; i < sizeof(sendable) / sizeof(sendable[0]); i++) {
		p = phone("S");
		snprintf(env, sizeof(env), "\"close_code\":%d}", sendable[i]);
		envelope(b, p, env);
		snprintf(want, sizeof(want), "close S %d", sendable[i]);
		EXPECT("count phone", "state binary=1 phones=1 probing=0", want,
		    "state binary=1 phones=0 probing=0");
		gone(p);
	}
	/* codes that cannot be sent: 1011 "invalid close code" */
	for (i = 0; i < sizeof(unsendable) / sizeof(unsendable[0]); i++) {
		p = phone("U");
		snprintf(env, sizeof(env), "\"frame\":\"x\",\"close_code\":%d}",
		    unsendable[i]);
		envelope(b, p, env);
		EXPECT("count phone", "state binary=1 phones=1 probing=0",
		    "send U \"x\"", "count b2p", "close U 1011 invalid close code",
		    "state binary=1 phones=0 probing=0");
		gone(p);
	}
	teardown();
}

static void
test_envelopes_dropped(void)
{
	struct tpeer	*ph[1], *b;

	setup();
	b = claimed(1, ph);
	says(b, "{\"conn_id\":\"client-sid1-00000000\",\"frame\":1}");
	NOTHING();
	CU_ASSERT(logged("reason=unknown_conn_id"));
	says(b, "not json");
	says(b, "[1]");
	envelope(b, ph[0], "\"frame\":null}");
	NOTHING();
	CU_ASSERT(logged("reason=\"null frame\""));
	/* the binary stays, and is heard */
	envelope(b, ph[0], "\"frame\":1}");
	EXPECT("send P1 1", "count b2p");
	teardown();
}

/* A push wake envelope for token t. */
static void
wake(struct tpeer *b, const char *t)
{
	char	buf[1024];

	snprintf(buf, sizeof(buf),
	    "{\"push_wake\":{\"platform\":\"fcm\",\"token\":\"%s\"}}", t);
	says(b, buf);
}

/*
 * Push wake requests (docs/protocol.md §6), push configured: 6 at once go
 * to the parent, then one per 10 s counted from the first taken; over
 * the bucket only the first of a run is logged.
 */
static void
test_push_limit(void)
{
	struct tpeer	*b;
	char		 t[16];
	int		 i;

	setup();
	F.lim.fcm_configured = 1;
	b = binary("B");
	EXPECT("count claim", "state binary=1 phones=0 probing=0");
	for (i = 0; i < PUSH_BURST; i++) {
		snprintf(t, sizeof(t), "t%d", i);
		wake(b, t);
	}
	EXPECT("push t0", "push t1", "push t2", "push t3", "push t4",
	    "push t5");
	CU_ASSERT(!logged("event=push_rate_limited"));
	wake(b, "over1");
	wake(b, "over2");
	NOTHING();
	CU_ASSERT_EQUAL(logged_count("event=push_rate_limited server_id=sid1 "
	    "burst=6 refill_ms=10000"), 1);
	/* one back 10 s after the first was taken, not before */
	F.now += PUSH_REFILL_MS - 1;
	wake(b, "early");
	NOTHING();
	F.now += 1;
	wake(b, "late");
	EXPECT("push late");
	wake(b, "again");
	NOTHING();
	/* a new run of refusals is logged once more */
	CU_ASSERT_EQUAL(logged_count("event=push_rate_limited"), 2);
	/* the binary is told nothing, and keeps its server-id */
	CU_ASSERT(F.core.binary == &b->peer);
	teardown();
}

/*
 * The checks' order: a malformed request is dropped and logged with its
 * reason and takes nothing from the bucket; an envelope whose conn_id
 * names anything is a frame, not a push request; a null or empty conn_id
 * is a push request.
 */
static void
test_push_structure(void)
{
	struct tpeer	*b, *ph[1];

	setup();
	F.lim.fcm_configured = 1;
	b = claimed(1, ph);
	says(b, "{\"push_wake\":{\"platform\":\"apns\",\"token\":\"a\"}}");
	says(b, "{\"push_wake\":{\"platform\":\"fcm\"}}");
	says(b, "{\"push_wake\":\"fcm\"}");
	says(b, "{\"push_wake\":{\"platform\":\"fcm\",\"token\":\"\"}}");
	NOTHING();
	CU_ASSERT(logged("event=push_dropped server_id=sid1 "
	    "reason=\"platform not fcm\""));
	CU_ASSERT(logged("reason=\"no token\""));
	CU_ASSERT(logged("reason=\"not an object\""));
	CU_ASSERT(logged("reason=\"bad token\""));
	says(b, "{\"conn_id\":null,\"push_wake\":{\"platform\":\"fcm\","
	    "\"token\":\"n\"}}");
	says(b, "{\"conn_id\":\"\",\"push_wake\":{\"platform\":\"fcm\","
	    "\"token\":\"e\"}}");
	EXPECT("push n", "push e");
	envelope(b, ph[0], "\"frame\":1,\"push_wake\":{\"platform\":\"fcm\","
	    "\"token\":\"f\"}}");
	EXPECT("send P1 1", "count b2p");
	/* four malformed ones took nothing: four of the six are left */
	wake(b, "w1");
	wake(b, "w2");
	wake(b, "w3");
	wake(b, "w4");
	EXPECT("push w1", "push w2", "push w3", "push w4");
	wake(b, "w5");
	NOTHING();
	teardown();
}

/*
 * Push off (no credentials): every request is dropped before anything
 * else is looked at, the first of the server-id logged; a reload that
 * configures push (LIMITS) lets the next ones through.
 */
static void
test_push_off(void)
{
	struct tpeer	*b;
	int		 i;

	setup();
	b = binary("B");
	EXPECT("count claim", "state binary=1 phones=0 probing=0");
	for (i = 0; i < 2 * PUSH_BURST; i++)
		wake(b, "SECRET");
	says(b, "{\"push_wake\":\"fcm\"}");
	NOTHING();
	CU_ASSERT_EQUAL(logged_count("event=push_"), 1);
	CU_ASSERT_EQUAL(logged_count("event=push_dropped server_id=sid1 "
	    "reason=no_credentials"), 1);
	CU_ASSERT(!logged("SECRET"));
	/* none of the bucket was used */
	F.lim.fcm_configured = 1;
	for (i = 0; i < PUSH_BURST; i++)
		wake(b, "t");
	EXPECT("push t", "push t", "push t", "push t", "push t", "push t");
	teardown();
}

/* --- the conflict probe's queues and its newcomers --------------------- */

static void
test_probe_queues_past_bound(void)
{
	struct tpeer	*ph[2], *b, *n, *n2;
	char		 big[256], env[300], want1[300], want2[300];

	setup();
	F.lim.grace_queue = 200;
	b = claimed(2, ph);
	n = binary("N");
	EXPECT("ping B", "timer probe 10000", "state binary=1 phones=2 probing=1");
	/* 193 envelope bytes: within the bound */
	memset(big, 'y', sizeof(big));
	big[0] = '"';
	big[149] = '"';
	big[150] = '\0';
	says(ph[0], big);
	EXPECT("count p2b");
	/* past it: the phones are not read until the probe ends; none is closed */
	says(ph[1], "{\"x\":1}");
	EXPECT("pause P1", "pause P2", "count p2b");
	/* the newcomer past it: not read either */
	snprintf(env, sizeof(env), "\"frame\":%s}", big);
	envelope(n, ph[0], env);
	NOTHING();
	envelope(n, ph[0], env);
	EXPECT("pause N");
	/* the incumbent answers: it gets the queue, the phones are read again */
	pong(b);
	snprintf(want1, sizeof(want1),
	    "send B {\"conn_id\":\"<P1>\",\"frame\":%s}", big);
	EXPECT("stop probe", "count 409",
	    "close N 4409 server-id already claimed",
	    "state binary=1 phones=2 probing=0", want1,
	    "send B {\"conn_id\":\"<P2>\",\"frame\":{\"x\":1}}",
	    "resume P1", "resume P2");
	/* a second newcomer, held past the bound, takes over: it is read again */
	n2 = binary("N2");
	EXPECT("ping B", "timer probe 10000", "state binary=1 phones=2 probing=1");
	envelope(n2, ph[1], "\"frame\":\"a\"}");
	envelope(n2, ph[1], env);
	envelope(n2, ph[1], "\"frame\":\"b\"}");
	EXPECT("pause N2");
	fire(RELAY_TIMER_PROBE);
	snprintf(want2, sizeof(want2), "send P2 %s", big);
	EXPECT("close B 1011 heartbeat timeout", "count claim",
	    "state binary=1 phones=2 probing=0",
	    "send P2 \"a\"", "count b2p", want2, "count b2p",
	    "send P2 \"b\"", "count b2p", "resume N2");
	teardown();
}

static void
test_newcomers_bounded(void)
{
	struct tpeer	*ph[1], *n[9];
	char		 name[8];
	int		 i;

	setup();
	claimed(1, ph);
	n[0] = binary("N1");
	EXPECT("ping B", "timer probe 10000", "state binary=1 phones=1 probing=1");
	/* up to RELAY_NEWCOMERS_MAX wait for the one probe */
	for (i = 1; i < RELAY_NEWCOMERS_MAX; i++) {
		snprintf(name, sizeof(name), "N%d", i + 1);
		n[i] = binary(name);
	}
	NOTHING();
	/* the next ones get 4409 at once */
	n[4] = binary("N5");
	EXPECT("count 409", "close N5 4409 server-id already claimed");
	n[5] = binary("N6");
	EXPECT("count 409", "close N6 4409 server-id already claimed");
	CU_ASSERT(logged("event=server_id_conflict server_id=sid1 newcomers=4"));
	gone(n[4]);
	gone(n[5]);
	NOTHING();
	/* no pong: the oldest takes over, and the others probe it in turn */
	fire(RELAY_TIMER_PROBE);
	EXPECT("close B 1011 heartbeat timeout", "count claim",
	    "state binary=1 phones=1 probing=0",
	    "ping N1", "timer probe 10000", "state binary=1 phones=1 probing=1");
	/* three wait now: one more may, and one that leaves frees a place */
	n[6] = binary("N7");
	NOTHING();
	n[7] = binary("N8");
	EXPECT("count 409", "close N8 4409 server-id already claimed");
	gone(n[1]);
	n[8] = binary("N9");
	NOTHING();
	/* the new holder answers: every waiting newcomer loses */
	pong(n[0]);
	EXPECT("stop probe",
	    "count 409", "close N3 4409 server-id already claimed",
	    "count 409", "close N4 4409 server-id already claimed",
	    "count 409", "close N7 4409 server-id already claimed",
	    "count 409", "close N9 4409 server-id already claimed",
	    "state binary=1 phones=1 probing=0");
	/* and the phone talks to it */
	says(ph[0], "{}");
	EXPECT("send N1 {\"conn_id\":\"<P1>\",\"frame\":{}}", "count p2b");
	teardown();
}

/* pyrelayctl kick, SIGTERM: retire, everyone closed 1001, no notices. */
static void
test_leave(void)
{
	struct tpeer	*ph[2];

	setup();
	claimed(2, ph);
	relay_core_leave(&F.core, "shutting down");
	EXPECT("retire", "close B 1001 shutting down",
	    "close P1 1001 shutting down", "state binary=0 phones=1 probing=0",
	    "close P2 1001 shutting down", "state binary=0 phones=0 probing=0");
	relay_core_leave(&F.core, "shutting down");
	NOTHING();
	/* in a grace period: the queue goes, the timer stops */
	teardown();
	setup();
	claimed(1, ph);
	gone(&F.peers[0]);
	says(ph[0], "{}");
	EXPECT("state binary=0 phones=1 probing=0", "timer grace 30000",
	    "count p2b");
	relay_core_leave(&F.core, "kicked by operator");
	EXPECT("stop grace", "retire", "close P1 1001 kicked by operator",
	    "state binary=0 phones=0 probing=0");
	CU_ASSERT_EQUAL(F.core.gq.len, 0);
	teardown();
}

static CU_TestInfo relay_core_tests[] = {
	{ "claim, and traffic both ways", test_claim },
	{ "conflict, pong: 4409", test_conflict_pong_4409 },
	{ "conflict, no pong: takeover", test_takeover },
	{ "incumbent leaves during the probe",
	    test_incumbent_leaves_during_probe },
	{ "grace: queue, overflow 1013, notices, reclaim",
	    test_grace_queue_and_reclaim },
	{ "grace expiry", test_grace_expiry },
	{ "registration without a binary: 4404", test_register_no_server_4404 },
	{ "registration over the cap: 4429", test_register_cap_4429 },
	{ "no-server wins over the cap", test_no_server_wins_over_cap },
	{ "binary lost on its way", test_binary_lost },
	{ "phone outbox cap: 1011", test_phone_outbox_cap },
	{ "binary backpressure pauses phones", test_binary_backpressure },
	{ "close notice", test_close_notice },
	{ "close directives", test_close_directives },
	{ "envelopes dropped", test_envelopes_dropped },
	{ "push wake limit", test_push_limit },
	{ "push wake structure", test_push_structure },
	{ "push wake, push off", test_push_off },
	{ "probe queues past their bound", test_probe_queues_past_bound },
	{ "newcomers per server-id bounded", test_newcomers_bounded },
	{ "leave: kick and shutdown", test_leave },
	{ "text: UTF-8 checked by the envelope parse", test_text_utf8 },
	{ "envelopes find their phone (lookup cache)", test_find_phone },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "relay_core", NULL, NULL, NULL, NULL, relay_core_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	char		 path[] = "/tmp/test_relay_core.XXXXXX";
	int		 fd, wfd;

	/*
	 * The core logs to stderr: into a file read back by logged(), through
	 * a descriptor of its own (appending), so that reading moves no
	 * write offset.
	 */
	if ((fd = mkstemp(path)) == -1 ||
	    (wfd = open(path, O_WRONLY | O_APPEND)) == -1 ||
	    dup2(wfd, STDERR_FILENO) == -1 || (F.log = fdopen(fd, "r")) == NULL)
		return 1;
	unlink(path);
	close(wfd);
	log_init(1, 0, "test");
	return unit_run(suites);
}
