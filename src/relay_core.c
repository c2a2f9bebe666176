/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The decisions of one relay process (docs/protocol.md §3-§4), for its one
 * server-id: relay_core.h says what goes in and out, docs/relay-core.md
 * how the relay's files sit around it.  Nothing here reads a clock, a
 * socket or a timer: time is asked of ops->now, and every effect is an
 * action through ops.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/param.h>
#include <sys/queue.h>

#include <stdio.h>
#include <string.h>

#include "json.h"
#include "msgq.h"
#include "pyrelayd.h"
#include "relay_core.h"
#include "ws.h"

static void	core_close(struct relay_core *, struct relay_peer *, uint16_t,
		    const char *);
static void	core_newcomer_owns(struct relay_core *, struct relay_peer *);

void
relay_core_init(struct relay_core *core, const struct relay_core_ops *ops,
    const struct limits *lim)
{
	memset(core, 0, sizeof(*core));
	core->ops = ops;
	core->lim = lim;
	core->push_tokens = PUSH_BURST;
	TAILQ_INIT(&core->peers);
}

/*
 * docs/protocol.md §4: stop reading phones while the binary's output is over
 * budget, or during a conflict probe while its queue is over the grace
 * queue's size.
 */
static void
core_check_backpressure(struct relay_core *core)
{
	struct relay_peer	*p;
	int			 over;

	over = core->binary != NULL &&
	    (core->ops->cost(core, core->binary) > core->lim->outbox ||
	    (core->probing && core->gq.bytes > core->lim->grace_queue));
	if (over == core->phones_paused)
		return;
	core->phones_paused = over;
	TAILQ_FOREACH(p, &core->peers, entry) {
		if (p->role != RELAY_PHONE || !p->open)
			continue;
		if (over)
			core->ops->pause(core, p);
		else
			core->ops->resume(core, p);
	}
}

/* The oldest binary still waiting for a conflict probe, or NULL. */
static struct relay_peer *
core_first_newcomer(struct relay_core *core)
{
	struct relay_peer	*p;

	TAILQ_FOREACH(p, &core->peers, entry)
		if (p->role == RELAY_NEWCOMER && p->open)
			return p;
	return NULL;
}

static int
core_newcomers(struct relay_core *core)
{
	struct relay_peer	*p;
	int			 n = 0;

	TAILQ_FOREACH(p, &core->peers, entry)
		if (p->role == RELAY_NEWCOMER && p->open)
			n++;
	return n;
}

/*
 * The cache slot of a conn_id: its last two bytes, which are in the
 * random part of every conn_id the relay makes ("client-<sid>-<hex>").
 */
static unsigned int
core_hint_slot(const char *conn_id, size_t len)
{
	const unsigned char	*b = (const unsigned char *)conn_id;

	if (len < 2)
		return 0;
	return (b[len - 1] ^ (b[len - 2] << 3)) & (RELAY_PHONE_HINTS - 1);
}

static int
core_is_phone(const struct relay_peer *p, const char *conn_id, size_t len)
{
	return p->role == RELAY_PHONE && p->open && p->conn_id_len == len &&
	    memcmp(p->conn_id, conn_id, len) == 0;
}

/*
 * Each envelope names a phone: the cache answers most without the walk
 * over every connection (a pointer chase through as many allocations),
 * and what it holds is checked like what the walk finds.
 */
static struct relay_peer *
core_find_phone(struct relay_core *core, const char *conn_id, size_t len)
{
	struct relay_peer	*p;
	unsigned int		 slot = core_hint_slot(conn_id, len);

	if ((p = core->phone_hint[slot]) != NULL &&
	    core_is_phone(p, conn_id, len))
		return p;
	TAILQ_FOREACH(p, &core->peers, entry) {
		if (core_is_phone(p, conn_id, len)) {
			core->phone_hint[slot] = p;
			return p;
		}
	}
	return NULL;
}

/* Appends an envelope to the grace queue; -1 when it would overflow. */
static int
core_gq_push(struct relay_core *core, const void *a, size_t alen,
    const void *b, size_t blen, const void *c, size_t clen, int force)
{
	if (!force && core->gq.bytes + alen + blen + clen > core->lim->grace_queue)
		return -1;
	return msgq_push(&core->gq, a, alen, b, blen, c, clen);
}

/*
 * The server-id has a binary again, or still (reclaim, the end of a
 * probe): it gets what was queued first, in order.
 */
static void
core_gq_to_binary(struct relay_core *core)
{
	const unsigned char	*msg;
	size_t			 off = 0, len;

	if (core->binary == NULL || core->probing || core->gq.len == 0)
		return;
	while (msgq_next(&core->gq, &off, &msg, &len))
		core->ops->send(core, core->binary, msg, len, NULL, 0, NULL, 0);
	msgq_clear(&core->gq);
	core_check_backpressure(core);
}

/*
 * Sends the binary (or the grace queue) one envelope made of three pieces.
 * During a conflict probe it goes to the grace queue too: the incumbent
 * may be gone without a word (a binary back on a new connection is the
 * usual newcomer), and whichever binary holds the server-id when the
 * probe ends gets it, in order (core_gq_to_binary); past the grace
 * queue's size the phones are not read until then, as when the binary's
 * outbox is full.
 * Returns -1 when the grace queue is full (in a grace period only).
 */
static int
core_to_binary(struct relay_core *core, const void *a, size_t alen,
    const void *b, size_t blen, const void *c, size_t clen, int force)
{
	if (core->binary == NULL)
		return core_gq_push(core, a, alen, b, blen, c, clen, force);
	if (core->probing)
		/* a binary is there: past the bound the phones wait (TCP) */
		core_gq_push(core, a, alen, b, blen, c, clen, 1);
	else
		core->ops->send(core, core->binary, a, alen, b, blen, c, clen);
	core_check_backpressure(core);
	return 0;
}

/* docs/protocol.md §4 "Close notice": exactly once, unless a directive closed it. */
static void
core_close_notice(struct relay_core *core, struct relay_peer *p, int code)
{
	char	head[32 + CONN_ID_MAX], tail[32];
	int	hl, tl;

	if (p->notice_done)
		return;
	p->notice_done = 1;
	if (core->retiring)
		return;
	hl = snprintf(head, sizeof(head), "{\"conn_id\":\"%s\",", p->conn_id);
	tl = snprintf(tail, sizeof(tail), "\"close_code\":%d}", code);
	/* notices are small and owed: they may exceed the grace queue bound */
	core_to_binary(core, head, hl, tail, tl, NULL, 0, 1);
}

/* A phone leaves the registry: counts, notice. */
static void
core_phone_gone(struct relay_core *core, struct relay_peer *p, int notice_code)
{
	core->nphones--;
	if (notice_code != 0)
		core_close_notice(core, p, notice_code);
	log_info("event=phone_unregistered server_id=%s conn_id=%s code=%d",
	    core->sid, p->conn_id, notice_code);
	core->ops->report(core);
}

static void
core_start_grace(struct relay_core *core)
{
	if (core->retiring)
		return;
	core->in_grace = 1;
	log_info("event=server_released server_id=%s phones=%d grace_ms=%lld",
	    core->sid, core->nphones, (long long)core->lim->grace_ms);
	core->ops->report(core);
	core->ops->timer_start(core, RELAY_TIMER_GRACE, core->lim->grace_ms);
}

/* The binary holding the server-id is going away (any reason). */
static void
core_binary_gone(struct relay_core *core, struct relay_peer *b)
{
	struct relay_peer	*p, *n;

	if (core->binary != b)
		return;
	b->role = RELAY_OLD_BINARY;
	core->binary = NULL;
	core->phones_paused = 0;
	TAILQ_FOREACH(p, &core->peers, entry)
		if (p->role == RELAY_PHONE && p->open)
			core->ops->resume(core, p);
	if (core->probing) {
		core->probing = 0;
		core->ops->timer_stop(core, RELAY_TIMER_PROBE);
		/* a newcomer is waiting: it takes over at once */
		if ((n = core_first_newcomer(core)) != NULL) {
			n->role = RELAY_BINARY;
			core->binary = n;
			log_info("event=server_claimed server_id=%s "
			    "how=after_incumbent_left", core->sid);
			core_newcomer_owns(core, n);
			return;
		}
	}
	core_start_grace(core);
}

/*
 * The peer's close began (our close frame is queued, or the peer's
 * arrived, or the I/O layer's liveness rules closed it): it leaves the
 * registry now, with notice_code owed to the binary for a phone.
 */
void
relay_core_closing(struct relay_core *core, struct relay_peer *p,
    int notice_code)
{
	if (!p->open)
		return;
	p->open = 0;
	if (p->role == RELAY_PHONE)
		core_phone_gone(core, p, notice_code);
	else if (p->role == RELAY_BINARY)
		core_binary_gone(core, p);
}

/* Closes the peer with code and reason (docs/protocol.md §8); its notice is 1001. */
static void
core_close(struct relay_core *core, struct relay_peer *p, uint16_t code,
    const char *reason)
{
	if (!p->open)
		return;
	core->ops->close(core, p, code, reason);
	relay_core_closing(core, p, 1001);
}

/*
 * Gives the server-id up (docs/architecture.md "The retire handshake", step 1):
 * no grace any more, and no close notice is owed to a binary.
 */
static void
core_retire(struct relay_core *core)
{
	if (core->retiring)
		return;
	core->retiring = 1;
	core->in_grace = 0;
	core->ops->timer_stop(core, RELAY_TIMER_GRACE);
	core->ops->retire(core);
}

static void
core_grace_expired(struct relay_core *core)
{
	struct relay_peer	*p, *next;

	log_info("event=grace_expired server_id=%s phones=%d", core->sid,
	    core->nphones);
	core->ops->count(core, RELAY_COUNT_GRACE_EXPIRY);
	core->in_grace = 0;
	TAILQ_FOREACH_SAFE(p, &core->peers, entry, next) {
		if (p->role == RELAY_PHONE && p->open) {
			p->notice_done = 1;
			core_close(core, p, 1011, "binary did not reconnect");
		}
	}
	msgq_clear(&core->gq);
	core_retire(core);
	core->ops->report(core);
}

void
relay_core_leave(struct relay_core *core, const char *reason)
{
	struct relay_peer	*p, *next;

	core_retire(core);
	TAILQ_FOREACH_SAFE(p, &core->peers, entry, next) {
		p->notice_done = 1;
		core_close(core, p, 1001, reason);
	}
	msgq_clear(&core->gq);
}

static void
core_deliver(struct relay_core *core, const struct envelope *env)
{
	struct relay_peer	*p;
	int			 code;

	if (env->conn_id_too_long || (p = core_find_phone(core, env->conn_id,
	    env->conn_id_len)) == NULL) {
		log_info("event=envelope_dropped server_id=%s reason=unknown_conn_id",
		    core->sid);
		return;
	}
	if ((!env->has_frame || env->frame_is_null) &&
	    (!env->has_close_code || env->close_code == 0)) {
		/* "frame":null with no close is no frame (docs/protocol.md §11) */
		log_info("event=envelope_dropped server_id=%s reason=\"null frame\"",
		    core->sid);
		return;
	}
	if (env->has_frame && !env->frame_is_null) {
		if (core->ops->cost(core, p) + env->frame_len + WS_MSG_OVERHEAD >
		    core->lim->outbox) {
			log_info("event=phone_backlog_full server_id=%s conn_id=%s",
			    core->sid, p->conn_id);
			core_close(core, p, 1011, "phone backlog full");
			return;
		}
		core->ops->send(core, p, env->frame, env->frame_len, NULL, 0,
		    NULL, 0);
		core->ops->count(core, RELAY_COUNT_FRAME_B2P);
	}
	if (env->has_close_code && env->close_code != 0) {
		/* a directive: no close notice follows (docs/protocol.md §4) */
		p->notice_done = 1;
		code = env->close_code;
		if (ws_code_sendable(code))
			core_close(core, p, code, NULL);
		else
			core_close(core, p, 1011, "invalid close code");
	}
}

/*
 * A push wake request (docs/protocol.md §6), checked in this order: push
 * off (no credentials: the first of this server-id is logged, the rest
 * are not: the binary's requests are legitimate, only unanswerable),
 * structure (each malformed one is logged, like any malformed envelope,
 * and uses no token), then the server-id's bucket: PUSH_BURST tokens, one
 * back every PUSH_REFILL_MS; over it only the first of a run is logged,
 * so that a binary cannot flood the log.  An admitted wake goes to the
 * parent (ops->push_wake), which applies the relay-wide cap and hands it
 * to the push process; the binary is never told what became of it.
 */
static void
core_push_wake(struct relay_core *core, const struct envelope *env)
{
	char		 token[PUSH_TOKEN_MAX];
	const char	*bad;
	int64_t		 now, n;

	if (!core->lim->fcm_configured) {
		if (!core->push_off_logged)
			log_info("event=push_dropped server_id=%s "
			    "reason=no_credentials", core->sid);
		core->push_off_logged = 1;
		return;
	}
	bad = push_wake_parse(env->push_wake, env->push_wake_len, token,
	    sizeof(token));
	if (bad != NULL) {
		log_info("event=push_dropped server_id=%s reason=\"%s\"",
		    core->sid, bad);
		return;
	}
	now = core->ops->now(core);
	if (core->push_tokens < PUSH_BURST &&
	    (n = (now - core->push_ms) / PUSH_REFILL_MS) > 0) {
		core->push_tokens = MIN(PUSH_BURST, core->push_tokens + n);
		core->push_ms += n * PUSH_REFILL_MS;
	}
	if (core->push_tokens == 0) {
		if (core->push_limited++ == 0)
			log_info("event=push_rate_limited server_id=%s "
			    "burst=%d refill_ms=%d", core->sid, PUSH_BURST,
			    PUSH_REFILL_MS);
		return;
	}
	if (core->push_tokens-- == PUSH_BURST)
		core->push_ms = now;	/* the refill counts from here */
	log_debug("event=push_wake_admitted server_id=%s rate_limited=%u",
	    core->sid, core->push_limited);
	core->push_limited = 0;
	core->ops->push_wake(core, token);
}

/*
 * The binary's envelope.  With utf8_unchecked, its UTF-8 is known from
 * the parse: any result but ENVELOPE_NOT_JSON read the whole message as
 * valid JSON, which is valid UTF-8; only a message that is not JSON is
 * read again, to tell a 1007 from a dropped envelope.  Returns -1, having
 * done nothing, when it is not UTF-8.
 */
static int
core_binary_message(struct relay_core *core, const unsigned char *buf,
    size_t len, int utf8_unchecked)
{
	struct envelope		 env;
	enum envelope_result	 res;

	res = envelope_parse(buf, len, &env);
	if (res == ENVELOPE_NOT_JSON && utf8_unchecked && !utf8_valid(buf, len))
		return -1;
	if (res != ENVELOPE_OK) {
		log_info("event=envelope_dropped server_id=%s reason=\"%s\"",
		    core->sid, envelope_strerror(res));
		return 0;
	}
	if (!env.has_conn_id)
		core_push_wake(core, &env);
	else
		core_deliver(core, &env);
	return 0;
}

static void
core_phone_message(struct relay_core *core, struct relay_peer *p,
    unsigned char *buf, size_t len)
{
	ssize_t	n;

	/* compacted where it lies (the read buffer or the reassembly buffer) */
	if ((n = json_compact(buf, len, buf)) < 0) {
		core_close(core, p, 1007, "invalid JSON");
		return;
	}
	/* the phone's envelope head is the same for each of its messages */
	if (p->envhead_len == 0)
		p->envhead_len = snprintf(p->envhead, sizeof(p->envhead),
		    "{\"conn_id\":\"%s\",\"frame\":", p->conn_id);
	if (core_to_binary(core, p->envhead, p->envhead_len, buf, n, "}", 1,
	    0) == 0)
		core->ops->count(core, RELAY_COUNT_FRAME_P2B);
	else {
		log_info("event=grace_queue_full server_id=%s conn_id=%s",
		    core->sid, p->conn_id);
		core_close(core, p, 1013, "binary unavailable");
	}
}

/*
 * A newcomer's messages wait for the conflict probe (docs/protocol.md §3): it
 * may be the server-id's own binary back on a new connection, and what it
 * says is delivered if it takes over, in order, before anything later.
 * Past the grace queue's size, reading stops until then (TCP holds the
 * rest); before, it goes on, so that a newcomer that leaves is seen to.
 */
static void
core_hold(struct relay_core *core, struct relay_peer *p,
    const unsigned char *buf, size_t len)
{
	if (msgq_push(&p->held, buf, len, NULL, 0, NULL, 0) == -1)
		fatalx("relay %s: holding a newcomer's message", core->sid);
	if (p->held.len > core->lim->grace_queue)
		core->ops->pause(core, p);
}

void
relay_core_message(struct relay_core *core, struct relay_peer *p,
    unsigned char *buf, size_t len)
{
	if (!p->open)
		return;
	switch (p->role) {
	case RELAY_BINARY:
		core_binary_message(core, buf, len, 0);
		break;
	case RELAY_PHONE:
		core_phone_message(core, p, buf, len);
		break;
	case RELAY_NEWCOMER:
		core_hold(core, p, buf, len);
		break;
	default:
		/* rejected peers and an old binary say nothing */
		break;
	}
}

int
relay_core_text(struct relay_core *core, struct relay_peer *p,
    unsigned char *buf, size_t len)
{
	if (p->open && p->role == RELAY_BINARY)
		return core_binary_message(core, buf, len, 1);
	if (!utf8_valid(buf, len))
		return -1;
	relay_core_message(core, p, buf, len);
	return 0;
}

/* Conflict (docs/protocol.md §3): ping the incumbent, wait for its pong. */
static void
core_probe_start(struct relay_core *core)
{
	core->probing = 1;
	core->ops->ping(core, core->binary);
	core->ops->timer_start(core, RELAY_TIMER_PROBE,
	    core->lim->conflict_probe_ms);
	core->ops->report(core);
}

/*
 * A newcomer holds the server-id now (takeover, or the incumbent left):
 * it gets what the phones said during the probe, the phones get what it
 * said, in order, and any other newcomer probes it in turn.
 */
static void
core_newcomer_owns(struct relay_core *core, struct relay_peer *n)
{
	struct msgq		 held = n->held;
	const unsigned char	*msg;
	size_t			 off = 0, len;

	core->ops->count(core, RELAY_COUNT_CLAIM);
	core->ops->report(core);
	core_gq_to_binary(core);
	memset(&n->held, 0, sizeof(n->held));
	while (core->binary == n && msgq_next(&held, &off, &msg, &len))
		core_binary_message(core, msg, len, 0);
	msgq_clear(&held);
	core->ops->resume(core, n);
	if (core_first_newcomer(core) != NULL)
		core_probe_start(core);
}

void
relay_core_pong(struct relay_core *core, struct relay_peer *b)
{
	struct relay_peer	*n;

	if (b != core->binary || !core->probing)
		return;
	/* the incumbent is alive: every newcomer loses (docs/protocol.md §3) */
	core->probing = 0;
	core->ops->timer_stop(core, RELAY_TIMER_PROBE);
	TAILQ_FOREACH(n, &core->peers, entry) {
		if (n->role == RELAY_NEWCOMER && n->open) {
			n->role = RELAY_REJECTED;
			/* what it sent meanwhile goes nowhere */
			msgq_clear(&n->held);
			log_info("event=server_id_conflict server_id=%s", core->sid);
			core->ops->count(core, RELAY_COUNT_IN_USE);
			core_close(core, n, 4409, "server-id already claimed");
		}
	}
	core->ops->report(core);
	core_gq_to_binary(core);
}

/* No pong within the probe: takeover. */
static void
core_probe_expired(struct relay_core *core)
{
	struct relay_peer	*old = core->binary, *n;

	core->probing = 0;
	if ((n = core_first_newcomer(core)) == NULL || old == NULL) {
		/* the newcomers left: the incumbent keeps it, and its queue */
		core->ops->report(core);
		core_gq_to_binary(core);
		return;
	}
	log_info("event=server_id_takeover server_id=%s", core->sid);
	/* switch first, so that the old binary's end starts no grace */
	old->role = RELAY_OLD_BINARY;
	n->role = RELAY_BINARY;
	core->binary = n;
	core_close(core, old, 1011, "heartbeat timeout");
	core_newcomer_owns(core, n);
}

void
relay_core_timer(struct relay_core *core, enum relay_timer t)
{
	switch (t) {
	case RELAY_TIMER_GRACE:
		core_grace_expired(core);
		break;
	case RELAY_TIMER_PROBE:
		core_probe_expired(core);
		break;
	default:
		break;
	}
}

void
relay_core_attach_binary(struct relay_core *core, struct relay_peer *p)
{
	TAILQ_INSERT_TAIL(&core->peers, p, entry);
	p->open = 1;
	if (core->binary == NULL) {
		p->role = RELAY_BINARY;
		core->binary = p;
		core->ops->count(core, RELAY_COUNT_CLAIM);
		if (core->in_grace) {
			core->in_grace = 0;
			core->ops->timer_stop(core, RELAY_TIMER_GRACE);
			log_info("event=server_claimed server_id=%s how=reclaim "
			    "queued=%zu", core->sid, core->gq.bytes);
		} else
			log_info("event=server_claimed server_id=%s how=claim",
			    core->sid);
		core->ops->report(core);
		core_gq_to_binary(core);
		return;
	}
	if (core_newcomers(core) >= RELAY_NEWCOMERS_MAX) {
		/* enough are waiting: one server-id holds at most this many queues */
		p->role = RELAY_REJECTED;
		log_info("event=server_id_conflict server_id=%s newcomers=%d",
		    core->sid, RELAY_NEWCOMERS_MAX);
		core->ops->count(core, RELAY_COUNT_IN_USE);
		core_close(core, p, 4409, "server-id already claimed");
		return;
	}
	p->role = RELAY_NEWCOMER;
	if (!core->probing)
		core_probe_start(core);
}

/* docs/protocol.md §3 "Phone registration" */
void
relay_core_attach_phone(struct relay_core *core, struct relay_peer *p,
    const char *device)
{
	char		id[CONN_ID_MAX + 1];
	int		tries, idlen;
	uint32_t	rnd;

	TAILQ_INSERT_TAIL(&core->peers, p, entry);
	p->open = 1;
	p->role = RELAY_REJECTED;
	if (core->binary == NULL && !core->in_grace) {
		core_close(core, p, 4404, "no server with that id");
		core->ops->count(core, RELAY_COUNT_NO_SERVER);
		log_info("event=phone_register_no_server server_id=%s", core->sid);
		return;
	}
	if ((uint32_t)core->nphones >= core->lim->phones_per_server) {
		core_close(core, p, 4429, "too many phones for server-id");
		core->ops->count(core, RELAY_COUNT_AT_CAP);
		log_info("event=phone_register_at_cap server_id=%s phones=%d",
		    core->sid, core->nphones);
		return;
	}
	/*
	 * A conn_id no registered phone has, chosen before the new phone
	 * joins the registry (it would find itself).  Eight hex digits make
	 * a clash among 16 phones rare; the loop only bounds the retries.
	 */
	for (tries = 0; tries < 100; tries++) {
		xrandom_buf(&rnd, sizeof(rnd));
		idlen = snprintf(id, sizeof(id), "client-%s-%08x", core->sid, rnd);
		if (core_find_phone(core, id, idlen) == NULL)
			break;
	}
	p->role = RELAY_PHONE;
	strlcpy(p->device, device, sizeof(p->device));
	memcpy(p->conn_id, id, idlen + 1);
	p->conn_id_len = idlen;
	core->nphones++;
	core->ops->count(core, RELAY_COUNT_PHONE);
	log_info("event=phone_registered server_id=%s conn_id=%s phones=%d",
	    core->sid, p->conn_id, core->nphones);
	core->ops->report(core);
	if (core->phones_paused)
		core->ops->pause(core, p);
}

void
relay_core_gone(struct relay_core *core, struct relay_peer *p)
{
	unsigned int	slot = core_hint_slot(p->conn_id, p->conn_id_len);

	/* its memory goes with it: the cache may not name it any more */
	if (core->phone_hint[slot] == p)
		core->phone_hint[slot] = NULL;
	relay_core_closing(core, p, 1001);
	msgq_clear(&p->held);
	TAILQ_REMOVE(&core->peers, p, entry);
}

void
relay_core_output(struct relay_core *core, struct relay_peer *p)
{
	if (p == core->binary)
		core_check_backpressure(core);
}

/*
 * A binary lost on its way to a relay that has none leaves the server-id
 * in its grace, as if it had connected and dropped at once.
 */
void
relay_core_binary_lost(struct relay_core *core)
{
	if (core->binary == NULL && !core->in_grace && !core->retiring)
		core_start_grace(core);
}
