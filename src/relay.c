/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The relay process: one per live server-id (architecture.md).  It owns the
 * server-id's binary and its phones and takes every decision of
 * protocol.md §3-§5 in one single-threaded event loop.  Its side of the
 * channel to the parent (set-up, the parent's messages, reports, counters,
 * the retire handshake) is in relay_chan.c.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/param.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http.h"
#include "json.h"
#include "msg.h"
#include "proto.h"
#include "pyrelayd.h"
#include "relay_int.h"
#include "ws.h"
#include "msgq.h"

#define READ_CHUNK	65536

static unsigned char	 readbuf[READ_CHUNK] RELAY_LARGE_BSS;
_Static_assert(PREREAD_MAX <= READ_CHUNK, "a preread fits the read buffer");

static void	 relay_conn_read(evutil_socket_t, short, void *);
static void	 relay_conn_write(evutil_socket_t, short, void *);
static void	 relay_conn_timer(evutil_socket_t, short, void *);
static void	 relay_conn_schedule(struct conn *);
static void	 relay_conn_drop(struct conn *, const char *);
static void	 relay_conn_close(struct conn *, uint16_t, const char *);
static void	 relay_phone_gone(struct conn *, int);
static void	 relay_binary_gone(struct conn *);
static void	 relay_mark_dirty(struct conn *);
static void	 relay_start_grace(struct relay *);
static void	 relay_probe_start(struct relay *);
static void	 relay_conn_closing(struct conn *, int);
static void	 relay_release_held(struct conn *);
static void	 relay_newcomer_owns(struct relay *, struct conn *);

static const char *
role_name(enum conn_role role)
{
	switch (role) {
	case CR_BINARY:
		return "binary";
	case CR_NEWCOMER:
		return "newcomer";
	case CR_PHONE:
		return "phone";
	case CR_REJECTED:
		return "rejected";
	case CR_OLD_BINARY:
		return "old_binary";
	}
	return "?";
}

static void
relay_mark_dirty(struct conn *c)
{
	struct relay	*r = c->r;

	if (c->state == CS_DEAD || c->on_dirty)
		return;
	c->on_dirty = 1;
	TAILQ_INSERT_TAIL(&r->dirty, c, dirty);
	event_active(r->ev_flush, EV_WRITE, 0);
}

/* Starts reading a connection again if nothing holds it back. */
static void
relay_conn_resume(struct conn *c)
{
	if (c->state == CS_DEAD || !c->read_paused)
		return;
	c->read_paused = 0;
	event_add(c->ev_read, NULL);
}

static void
relay_conn_pause(struct conn *c)
{
	if (c->state == CS_DEAD || c->read_paused)
		return;
	c->read_paused = 1;
	event_del(c->ev_read);
}

/*
 * protocol.md §4: stop reading phones while the binary's output is over
 * budget, or during a conflict probe while its queue is over the grace
 * queue's size.
 */
static void
relay_check_backpressure(struct relay *r)
{
	struct conn	*c;
	int		 over;

	over = r->binary != NULL && (ws_cost(&r->binary->ws) > r->lim.outbox ||
	    (r->probing && r->gq.bytes > r->lim.grace_queue));
	if (over == r->phones_paused)
		return;
	r->phones_paused = over;
	TAILQ_FOREACH(c, &r->conns, entry) {
		if (c->role != CR_PHONE || c->state != CS_OPEN)
			continue;
		if (over)
			relay_conn_pause(c);
		else
			relay_conn_resume(c);
	}
}

/* The oldest binary still waiting for a conflict probe, or NULL. */
static struct conn *
relay_first_newcomer(struct relay *r)
{
	struct conn	*n;

	TAILQ_FOREACH(n, &r->conns, entry)
		if (n->role == CR_NEWCOMER && n->state == CS_OPEN)
			return n;
	return NULL;
}

static struct conn *
relay_find_phone(struct relay *r, const char *conn_id, size_t len)
{
	struct conn	*c;

	TAILQ_FOREACH(c, &r->conns, entry) {
		if (c->role == CR_PHONE && !c->unregistered &&
		    c->conn_id_len == len && memcmp(c->conn_id, conn_id, len) == 0)
			return c;
	}
	return NULL;
}

/* Appends an envelope to the grace queue; -1 when it would overflow. */
static int
relay_gq_push(struct relay *r, const void *a, size_t alen, const void *b,
    size_t blen, const void *c, size_t clen, int force)
{
	if (!force && r->gq.bytes + alen + blen + clen > r->lim.grace_queue)
		return -1;
	return msgq_push(&r->gq, a, alen, b, blen, c, clen);
}

/* Reclaim: the queued envelopes go to the new binary first, in order. */
static void
relay_gq_flush(struct relay *r)
{
	const unsigned char	*msg;
	size_t			 off = 0, len;

	while (msgq_next(&r->gq, &off, &msg, &len))
		ws_send_text(&r->binary->ws, msg, len, NULL, 0, NULL, 0);
	msgq_clear(&r->gq);
	relay_mark_dirty(r->binary);
}

/*
 * Sends the binary (or the grace queue) one envelope made of three pieces.
 * During a conflict probe it goes to the grace queue too: the incumbent
 * may be gone without a word (a binary back on a new connection is the
 * usual newcomer), and whichever binary holds the server-id when the
 * probe ends gets it, in order (relay_gq_to_binary); past the grace
 * queue's size the phones are not read until then, as when the binary's
 * outbox is full.
 * Returns -1 when the grace queue is full (in a grace period only).
 */
static int
relay_to_binary(struct relay *r, const void *a, size_t alen, const void *b,
    size_t blen, const void *c, size_t clen, int force)
{
	if (r->binary == NULL)
		return relay_gq_push(r, a, alen, b, blen, c, clen, force);
	if (r->probing)
		/* a binary is there: past the bound the phones wait (TCP) */
		relay_gq_push(r, a, alen, b, blen, c, clen, 1);
	else {
		ws_send_text(&r->binary->ws, a, alen, b, blen, c, clen);
		relay_mark_dirty(r->binary);
	}
	relay_check_backpressure(r);
	return 0;
}

/* The server-id has a binary again, or still: it gets what was queued. */
static void
relay_gq_to_binary(struct relay *r)
{
	if (r->binary == NULL || r->probing || r->gq.len == 0)
		return;
	relay_gq_flush(r);
	relay_check_backpressure(r);
}

/* protocol.md §4 "Close notice": exactly once, unless a directive closed it. */
static void
relay_close_notice(struct conn *c, int code)
{
	struct relay	*r = c->r;
	char		 head[32 + CONN_ID_MAX], tail[32];
	int		 hl, tl;

	if (c->notice_done)
		return;
	c->notice_done = 1;
	if (r->retiring)
		return;
	hl = snprintf(head, sizeof(head), "{\"conn_id\":\"%s\",", c->conn_id);
	tl = snprintf(tail, sizeof(tail), "\"close_code\":%d}", code);
	/* notices are small and owed: they may exceed the grace queue bound */
	relay_to_binary(r, head, hl, tail, tl, NULL, 0, 1);
}

/* A phone leaves the registry: counts, notice, title. */
static void
relay_phone_gone(struct conn *c, int notice_code)
{
	struct relay	*r = c->r;

	if (c->unregistered)
		return;
	c->unregistered = 1;
	r->nphones--;
	if (notice_code != 0)
		relay_close_notice(c, notice_code);
	log_info("event=phone_unregistered server_id=%s conn_id=%s code=%d",
	    r->sid, c->conn_id, notice_code);
	relay_report(r);
	relay_check_exit(r);
}

/* Every open connection starts its close with 1001 and the reason. */
void
relay_close_all(struct relay *r, const char *reason)
{
	struct conn	*c, *next;

	TAILQ_FOREACH_SAFE(c, &r->conns, entry, next) {
		c->notice_done = 1;
		if (c->state == CS_OPEN)
			relay_conn_close(c, 1001, reason);
	}
}

void
relay_grace_expired(evutil_socket_t fd, short ev, void *arg)
{
	struct relay	*r = arg;
	struct conn	*c, *next;

	log_info("event=grace_expired server_id=%s phones=%d", r->sid, r->nphones);
	COUNT(r, grace_expiries);
	r->in_grace = 0;
	TAILQ_FOREACH_SAFE(c, &r->conns, entry, next) {
		if (c->role == CR_PHONE && !c->unregistered) {
			c->notice_done = 1;
			relay_conn_close(c, 1011, "binary did not reconnect");
		}
	}
	msgq_clear(&r->gq);
	relay_retire(r);
	relay_report(r);
	relay_check_exit(r);
}

static void
relay_start_grace(struct relay *r)
{
	struct timeval	tv;

	if (r->retiring)
		return;
	r->in_grace = 1;
	log_info("event=server_released server_id=%s phones=%d grace_ms=%lld",
	    r->sid, r->nphones, (long long)r->lim.grace_ms);
	relay_report(r);
	tv.tv_sec = r->lim.grace_ms / 1000;
	tv.tv_usec = (r->lim.grace_ms % 1000) * 1000;
	evtimer_add(r->ev_grace, &tv);
}

/* The binary holding the server-id is going away (any reason). */
static void
relay_binary_gone(struct conn *c)
{
	struct relay	*r = c->r;

	if (r->binary != c)
		return;
	c->role = CR_OLD_BINARY;
	r->binary = NULL;
	r->phones_paused = 0;
	{
		struct conn	*p;

		TAILQ_FOREACH(p, &r->conns, entry)
			if (p->role == CR_PHONE && p->state == CS_OPEN)
				relay_conn_resume(p);
	}
	if (r->probing) {
		/* a newcomer is waiting: it takes over at once */
		struct conn	*n;

		if ((n = relay_first_newcomer(r)) != NULL) {
			r->probing = 0;
			evtimer_del(r->ev_probe);
			n->role = CR_BINARY;
			r->binary = n;
			log_info("event=server_claimed server_id=%s how=after_incumbent_left",
			    r->sid);
			relay_newcomer_owns(r, n);
			return;
		}
		r->probing = 0;
		evtimer_del(r->ev_probe);
	}
	relay_start_grace(r);
}

/* Frees connections whose fd is gone, then flushes output. */
void
relay_flush(evutil_socket_t fd, short ev, void *arg)
{
	struct relay	*r = arg;
	struct conn	*c;

	/* a first increment: counted before the frame that it counts is sent */
	if (r->cnt_dirty && !evtimer_pending(r->ev_counters, NULL))
		relay_counters_send(r, 0);
	while ((c = TAILQ_FIRST(&r->dirty)) != NULL) {
		TAILQ_REMOVE(&r->dirty, c, dirty);
		c->on_dirty = 0;
		if (c->state == CS_DEAD)
			continue;
		relay_conn_write(c->fd, EV_WRITE, c);
	}
}

static void
relay_conn_free(struct conn *c)
{
	struct relay		*r = c->r;
	struct msg_conn_closed	 mc;

	TAILQ_REMOVE(&r->conns, c, entry);
	if (c->on_dirty)
		TAILQ_REMOVE(&r->dirty, c, dirty);
	event_free(c->ev_read);
	event_free(c->ev_write);
	event_free(c->ev_timer);
	ws_free(&c->ws);
	msgq_clear(&c->held);
	if (c->fd != -1)
		close(c->fd);
	memset(&mc, 0, sizeof(mc));
	mc.kind = c->role == CR_PHONE ? CONN_PHONE : CONN_BINARY;
	msg_compose(&r->chan, MSG_CONN_CLOSED, c->id, &mc, sizeof(mc), -1);
	relay_chan_flush(r);
	free(c);
}

/* Closes the TCP connection now; no close handshake. */
static void
relay_conn_drop(struct conn *c, const char *why)
{
	struct relay	*r = c->r;

	if (c->state == CS_DEAD)
		return;
	log_debug("event=conn_dropped server_id=%s role=%s conn_id=%s "
	    "reason=\"%s\"", r->sid, role_name(c->role),
	    c->conn_id[0] ? c->conn_id : "-", why);
	c->state = CS_DEAD;
	if (c->role == CR_PHONE)
		relay_phone_gone(c, 1001);
	else if (c->role == CR_BINARY)
		relay_binary_gone(c);
	relay_conn_free(c);
	relay_check_exit(r);
}

/*
 * An open connection enters its close handshake (our close frame is queued,
 * or the peer's arrived): it leaves the registry now, with notice_code
 * owed to the binary for a phone, and has the close timeout to finish.
 */
static void
relay_conn_closing(struct conn *c, int notice_code)
{
	if (c->state != CS_OPEN)
		return;
	c->state = CS_CLOSING;
	c->close_deadline_ms = now_ms() + c->r->lim.close_timeout_ms;
	if (c->role == CR_PHONE)
		relay_phone_gone(c, notice_code);
	else if (c->role == CR_BINARY)
		relay_binary_gone(c);
}

/* Starts our side of the close handshake (protocol.md §5: 5 s for the peer's close). */
static void
relay_conn_close(struct conn *c, uint16_t code, const char *reason)
{
	if (c->state != CS_OPEN)
		return;
	ws_send_close(&c->ws, code, reason);
	relay_conn_closing(c, 1001);
	/* keep reading: the peer's close frame ends the handshake */
	relay_conn_resume(c);
	relay_mark_dirty(c);
	relay_conn_schedule(c);
}

static void
relay_deliver(struct relay *r, const struct envelope *env)
{
	struct conn	*p;
	int		 code;

	if (env->conn_id_too_long ||
	    (p = relay_find_phone(r, env->conn_id, env->conn_id_len)) == NULL ||
	    p->state != CS_OPEN) {
		log_info("event=envelope_dropped server_id=%s reason=unknown_conn_id",
		    r->sid);
		return;
	}
	if ((!env->has_frame || env->frame_is_null) &&
	    (!env->has_close_code || env->close_code == 0)) {
		/* "frame":null with no close is no frame (docs/protocol-notes.md) */
		log_info("event=envelope_dropped server_id=%s reason=\"null frame\"",
		    r->sid);
		return;
	}
	if (env->has_frame && !env->frame_is_null) {
		if (ws_cost(&p->ws) + env->frame_len + WS_MSG_OVERHEAD >
		    r->lim.outbox) {
			log_info("event=phone_backlog_full server_id=%s conn_id=%s",
			    r->sid, p->conn_id);
			relay_conn_close(p, 1011, "phone backlog full");
			return;
		}
		ws_send_text(&p->ws, env->frame, env->frame_len, NULL, 0, NULL, 0);
		p->bytes_out += env->frame_len;
		COUNT(r, frames_b2p);
		relay_mark_dirty(p);
	}
	if (env->has_close_code && env->close_code != 0) {
		/* a directive: no close notice follows (protocol.md §4) */
		p->notice_done = 1;
		code = env->close_code;
		if (ws_code_sendable(code))
			relay_conn_close(p, code, NULL);
		else
			relay_conn_close(p, 1011, "invalid close code");
	}
}

/*
 * A push wake request (protocol.md §6), checked in this order: push off
 * (no credentials: the first of this server-id is logged), structure
 * (each malformed one is logged, like any malformed envelope, and uses no
 * token), then the server-id's bucket: PUSH_BURST tokens, one back every
 * PUSH_REFILL_MS; over it only the first of a run is logged, so that a
 * binary cannot flood the log.  An admitted wake goes to the parent, which
 * applies the relay-wide cap and hands it to the push process; the binary
 * is never told what became of it.
 */
static void
relay_push_wake(struct relay *r, const struct envelope *env)
{
	struct msg_push_wake	 pw;
	const char		*bad;
	int64_t			 now = now_ms(), n;

	if (!r->lim.fcm_configured) {
		if (!r->push_off_logged)
			log_info("event=push_dropped server_id=%s "
			    "reason=no_credentials", r->sid);
		r->push_off_logged = 1;
		return;
	}
	memset(&pw, 0, sizeof(pw));
	bad = push_wake_parse(env->push_wake, env->push_wake_len, pw.token,
	    sizeof(pw.token));
	if (bad != NULL) {
		log_info("event=push_dropped server_id=%s reason=\"%s\"",
		    r->sid, bad);
		return;
	}
	if (r->push_tokens < PUSH_BURST &&
	    (n = (now - r->push_ms) / PUSH_REFILL_MS) > 0) {
		r->push_tokens = MIN(PUSH_BURST, r->push_tokens + n);
		r->push_ms += n * PUSH_REFILL_MS;
	}
	if (r->push_tokens == 0) {
		if (r->push_limited++ == 0)
			log_info("event=push_rate_limited server_id=%s "
			    "burst=%d refill_ms=%d", r->sid, PUSH_BURST,
			    PUSH_REFILL_MS);
		return;
	}
	if (r->push_tokens-- == PUSH_BURST)
		r->push_ms = now;	/* the refill counts from here */
	log_debug("event=push_wake_admitted server_id=%s rate_limited=%u",
	    r->sid, r->push_limited);
	r->push_limited = 0;
	msg_compose(&r->chan, MSG_PUSH_WAKE, 0, &pw, sizeof(pw), -1);
	relay_chan_flush(r);
}

static void
relay_binary_message(struct conn *c, const unsigned char *buf, size_t len)
{
	struct relay		*r = c->r;
	struct envelope		 env;
	enum envelope_result	 res;

	if ((res = envelope_parse(buf, len, &env)) != ENVELOPE_OK) {
		log_info("event=envelope_dropped server_id=%s reason=\"%s\"",
		    r->sid, envelope_strerror(res));
		return;
	}
	if (!env.has_conn_id) {
		relay_push_wake(r, &env);
		return;
	}
	relay_deliver(r, &env);
}

static void
relay_phone_message(struct conn *c, unsigned char *buf, size_t len)
{
	struct relay	*r = c->r;
	ssize_t		 n;

	/* compacted where it lies (the read buffer or the reassembly buffer) */
	if ((n = json_compact(buf, len, buf)) < 0) {
		relay_conn_close(c, 1007, "invalid JSON");
		return;
	}
	/* the phone's envelope head is the same for each of its messages */
	if (c->envhead_len == 0)
		c->envhead_len = snprintf(c->envhead, sizeof(c->envhead),
		    "{\"conn_id\":\"%s\",\"frame\":", c->conn_id);
	if (relay_to_binary(r, c->envhead, c->envhead_len, buf, n, "}", 1, 0) == 0)
		COUNT(r, frames_p2b);
	else {
		log_info("event=grace_queue_full server_id=%s conn_id=%s",
		    r->sid, c->conn_id);
		relay_conn_close(c, 1013, "binary unavailable");
	}
}

/*
 * A newcomer's messages wait for the conflict probe (protocol.md §3): it
 * may be the server-id's own binary back on a new connection, and what it
 * says is delivered if it takes over, in order, before anything later.
 * Past the grace queue's size, reading stops until then (TCP holds the
 * rest); before, it goes on, so that a newcomer that leaves is seen to.
 */
static void
relay_hold(struct conn *c, const unsigned char *buf, size_t len)
{
	if (msgq_push(&c->held, buf, len, NULL, 0, NULL, 0) == -1)
		fatalx("relay %s: holding a newcomer's message", c->r->sid);
	if (c->held.len > c->r->lim.grace_queue)
		relay_conn_pause(c);
}

/* The newcomer owns the server-id now: what it said is delivered. */
static void
relay_release_held(struct conn *c)
{
	struct msgq		 held = c->held;
	const unsigned char	*msg;
	size_t			 off = 0, len;

	memset(&c->held, 0, sizeof(c->held));
	while (c->r->binary == c && msgq_next(&held, &off, &msg, &len))
		relay_binary_message(c, msg, len);
	msgq_clear(&held);
	relay_conn_resume(c);
}

static void
relay_ws_message(void *arg, int binary, unsigned char *buf, size_t len)
{
	struct conn	*c = arg;

	c->msg_started_ms = 0;
	c->bytes_in += len;
	if (c->state != CS_OPEN)
		return;
	switch (c->role) {
	case CR_BINARY:
		relay_binary_message(c, buf, len);
		break;
	case CR_PHONE:
		relay_phone_message(c, buf, len);
		break;
	case CR_NEWCOMER:
		relay_hold(c, buf, len);
		break;
	default:
		/* rejected peers and an old binary say nothing */
		break;
	}
}

static void
relay_ws_message_start(void *arg)
{
	struct conn	*c = arg;

	c->msg_started_ms = now_ms();
}

static void
relay_ws_pong(void *arg)
{
	struct conn	*c = arg;

	c->pong_deadline_ms = 0;
	c->last_pong_ms = now_ms();
	if (c->role == CR_BINARY && c->r->probing) {
		struct relay	*r = c->r;
		struct conn	*n;

		/* the incumbent is alive: every newcomer loses (protocol.md §3) */
		r->probing = 0;
		evtimer_del(r->ev_probe);
		TAILQ_FOREACH(n, &r->conns, entry) {
			if (n->role == CR_NEWCOMER && n->state == CS_OPEN) {
				n->role = CR_REJECTED;
				/* what it sent meanwhile goes nowhere */
				msgq_clear(&n->held);
				log_info("event=server_id_conflict server_id=%s",
				    r->sid);
				COUNT(r, upgrades[EP_SERVER][OUT_REJECT_409]);
				COUNT(r, register_failures[REG_SERVER_IN_USE]);
				relay_conn_close(n, 4409, "server-id already claimed");
			}
		}
		relay_report(r);
		relay_counters_flush(r);
		relay_gq_to_binary(r);
	}
}

static void
relay_ws_close(void *arg, uint16_t code)
{
	struct conn	*c = arg;

	/* the peer started the close: its code is the notice's */
	relay_conn_closing(c, code);
	relay_mark_dirty(c);
}

static const struct ws_handler relay_ws_handler = {
	.message = relay_ws_message,
	.pong = relay_ws_pong,
	.close = relay_ws_close,
	.message_start = relay_ws_message_start,
};

static void
relay_conn_read(evutil_socket_t fd, short ev, void *arg)
{
	struct conn	*c = arg;
	ssize_t		 n;
	int		 code;

	n = recv(fd, readbuf, sizeof(readbuf), MSG_DONTWAIT);
	if (n == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		relay_conn_drop(c, "read error");
		return;
	}
	if (n == 0) {
		relay_conn_drop(c, "eof");
		return;
	}
	if ((code = ws_feed(&c->ws, readbuf, n, &relay_ws_handler, c)) != 0) {
		/* ws queued the close (1002/1007/1009); the conn is closing */
		relay_conn_closing(c, 1001);
	}
	if (c->state == CS_DEAD)
		return;
	/* write only what the read queued (a pong, a close) or a closing conn */
	if (ws_pending(&c->ws) > 0 || c->state != CS_OPEN)
		relay_mark_dirty(c);
	relay_conn_schedule(c);
}

static void
relay_conn_write(evutil_socket_t fd, short ev, void *arg)
{
	struct conn	*c = arg;
	struct relay	*r = c->r;
	ssize_t		 n;

	if (c->state == CS_DEAD)
		return;
	if (ws_pending(&c->ws) > 0) {
		if ((n = ws_write(&c->ws, c->fd)) == -1) {
			relay_conn_drop(c, "write error");
			return;
		}
		if (n > 0)
			c->progress_ms = now_ms();
	}
	if (ws_pending(&c->ws) > 0) {
		if (!c->write_armed) {
			c->write_armed = 1;
			if (c->progress_ms == 0)
				c->progress_ms = now_ms();
			event_add(c->ev_write, NULL);
		}
	} else {
		if (c->write_armed) {
			c->write_armed = 0;
			event_del(c->ev_write);
		}
		c->progress_ms = 0;
		/* both close frames exchanged: the connection is over */
		if (c->state == CS_CLOSING && c->ws.close_rcvd && c->ws.close_sent) {
			shutdown(c->fd, SHUT_WR);
			relay_conn_drop(c, "closed");
			return;
		}
		/*
		 * RFC 6455 §7.1.7: after a protocol failure (1002/1007/1009) the
		 * stream is not read any more; half-close once our close frame
		 * is out and drop at the peer's EOF (or the close deadline).
		 */
		if (c->state == CS_CLOSING && c->ws.failed && !c->wr_shut) {
			c->wr_shut = 1;
			shutdown(c->fd, SHUT_WR);
		}
	}
	if (c == r->binary)
		relay_check_backpressure(r);
	relay_conn_schedule(c);
}

/* Arms the connection's timer for its nearest deadline. */
static void
relay_conn_schedule(struct conn *c)
{
	struct relay	*r = c->r;
	int64_t		 next = INT64_MAX, t;
	struct timeval	 tv;

	if (c->state == CS_DEAD)
		return;
	if (c->state == CS_OPEN)
		next = c->next_ping_ms;
	if (c->pong_deadline_ms && c->pong_deadline_ms < next)
		next = c->pong_deadline_ms;
	if (c->state == CS_CLOSING && c->close_deadline_ms < next)
		next = c->close_deadline_ms;
	if (c->progress_ms && (t = c->progress_ms + r->lim.write_timeout_ms) < next)
		next = t;
	if (c->msg_started_ms &&
	    (t = c->msg_started_ms + r->lim.message_timeout_ms) < next)
		next = t;
	/* most calls find the deadline unchanged: leave the timer as it is */
	if (next == c->timer_at && evtimer_pending(c->ev_timer, NULL))
		return;
	c->timer_at = next;
	t = next - now_ms();
	if (t < 0)
		t = 0;
	tv.tv_sec = t / 1000;
	tv.tv_usec = (t % 1000) * 1000;
	evtimer_add(c->ev_timer, &tv);
}

static void
relay_conn_timer(evutil_socket_t fd, short ev, void *arg)
{
	struct conn	*c = arg;
	struct relay	*r = c->r;
	int64_t		 now = now_ms();

	if (c->progress_ms && now >= c->progress_ms + r->lim.write_timeout_ms) {
		relay_conn_drop(c, "write timeout");
		return;
	}
	if (c->msg_started_ms &&
	    now >= c->msg_started_ms + r->lim.message_timeout_ms) {
		relay_conn_drop(c, "message timeout");
		return;
	}
	if (c->state == CS_CLOSING && now >= c->close_deadline_ms) {
		relay_conn_drop(c, "close timeout");
		return;
	}
	if (c->pong_deadline_ms && now >= c->pong_deadline_ms) {
		c->pong_deadline_ms = 0;
		if (c->state == CS_OPEN)
			relay_conn_close(c, 1011, "heartbeat timeout");
		else
			relay_conn_drop(c, "heartbeat timeout");
		return;
	}
	if (c->state == CS_OPEN && now >= c->next_ping_ms) {
		ws_send_ping(&c->ws);
		if (c->pong_deadline_ms == 0)
			c->pong_deadline_ms = now + r->lim.heartbeat_timeout_ms;
		c->next_ping_ms = now + r->lim.heartbeat_ms;
		relay_mark_dirty(c);
	}
	relay_conn_schedule(c);
}

/* Conflict (protocol.md §3): ping the incumbent, wait for its pong. */
static void
relay_probe_start(struct relay *r)
{
	struct timeval	tv;
	struct conn	*b = r->binary;

	r->probing = 1;
	r->probe_started_ms = now_ms();
	ws_send_ping(&b->ws);
	if (b->pong_deadline_ms == 0)
		b->pong_deadline_ms = r->probe_started_ms + r->lim.heartbeat_timeout_ms;
	relay_mark_dirty(b);
	tv.tv_sec = r->lim.conflict_probe_ms / 1000;
	tv.tv_usec = (r->lim.conflict_probe_ms % 1000) * 1000;
	evtimer_add(r->ev_probe, &tv);
	relay_report(r);
}

/* No pong within the probe: takeover. */
void
relay_probe_expired(evutil_socket_t fd, short ev, void *arg)
{
	struct relay	*r = arg;
	struct conn	*old = r->binary, *n;

	r->probing = 0;
	if ((n = relay_first_newcomer(r)) == NULL || old == NULL) {
		/* the newcomers left: the incumbent keeps it, and its queue */
		relay_report(r);
		relay_gq_to_binary(r);
		return;
	}
	log_info("event=server_id_takeover server_id=%s", r->sid);
	/* switch first, so that the old binary's end starts no grace */
	old->role = CR_OLD_BINARY;
	n->role = CR_BINARY;
	r->binary = n;
	relay_conn_close(old, 1011, "heartbeat timeout");
	relay_newcomer_owns(r, n);
}

/*
 * A newcomer holds the server-id now (takeover, or the incumbent left):
 * it gets what the phones said during the probe, the phones get what it
 * said, and any other newcomer probes it in turn.
 */
static void
relay_newcomer_owns(struct relay *r, struct conn *n)
{
	COUNT(r, upgrades[EP_SERVER][OUT_ACCEPT]);
	relay_report(r);
	relay_gq_to_binary(r);
	relay_release_held(n);
	if (relay_first_newcomer(r) != NULL)
		relay_probe_start(r);
}

static struct conn *
relay_conn_new(struct relay *r, int fd, uint64_t id)
{
	struct conn	*c;
	int		 one = 1;

	c = xcalloc(1, sizeof(*c));
	c->r = r;
	c->fd = fd;
	c->id = id;
	c->created_ms = now_ms();
	c->next_ping_ms = c->created_ms + r->lim.heartbeat_ms;
	if (ws_init(&c->ws, r->lim.message_size) == -1)
		fatalx("relay %s: ws_init", r->sid);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->ev_read = event_new(r->base, fd, EV_READ | EV_PERSIST, relay_conn_read, c);
	c->ev_write = event_new(r->base, fd, EV_WRITE | EV_PERSIST, relay_conn_write, c);
	c->ev_timer = evtimer_new(r->base, relay_conn_timer, c);
	if (c->ev_read == NULL || c->ev_write == NULL || c->ev_timer == NULL)
		fatalx("relay %s: event_new", r->sid);
	TAILQ_INSERT_TAIL(&r->conns, c, entry);
	return c;
}

/* Writes the 101 and feeds what the front read past the head. */
static void
relay_conn_start(struct conn *c, const struct msg_conn_upgrade *up)
{
	char	resp[256];
	int	n;

	n = http_switching_response(resp, sizeof(resp), up->ws_accept);
	if (n < 0)
		fatalx("relay: 101 does not fit");
	ws_send_raw(&c->ws, resp, n);
	relay_mark_dirty(c);
	event_add(c->ev_read, NULL);
	relay_conn_schedule(c);
	if (up->preread_len > 0) {
		/* ws_feed unmasks in place: feed a copy, in the read buffer */
		memcpy(readbuf, up->preread, up->preread_len);
		if (ws_feed(&c->ws, readbuf, up->preread_len,
		    &relay_ws_handler, c) != 0)
			relay_conn_closing(c, 1001);
	}
}

static void
relay_reject(struct relay *r, int fd, const struct msg_conn_upgrade *up,
    uint64_t id, uint16_t code, const char *reason)
{
	struct conn	*c;

	c = relay_conn_new(r, fd, id);
	c->role = CR_REJECTED;
	c->notice_done = 1;
	relay_conn_start(c, up);
	relay_conn_close(c, code, reason);
}

static void	relay_attach_one(struct relay *, struct msg *);

/* Every decision on a new connection is counted before its client sees it. */
void
relay_attach(struct relay *r, struct msg *m)
{
	relay_attach_one(r, m);
	relay_counters_flush(r);
}

/*
 * A connection whose fd we could not receive (at our RLIMIT_NOFILE): the
 * kernel closed it, the parent forgets it.  A binary lost on its way to a
 * relay that has none leaves the server-id in its grace, as if it had
 * connected and dropped at once.
 */
static void
relay_fd_lost(struct relay *r, uint64_t id, uint32_t kind)
{
	struct msg_conn_closed	mc;

	memset(&mc, 0, sizeof(mc));
	mc.kind = kind;
	mc.fd_lost = 1;
	msg_compose(&r->chan, MSG_CONN_CLOSED, id, &mc, sizeof(mc), -1);
	relay_chan_flush(r);
	if (kind == CONN_BINARY && r->binary == NULL && !r->in_grace &&
	    !r->retiring && !r->shutting_down)
		relay_start_grace(r);
}

static void
relay_attach_one(struct relay *r, struct msg *m)
{
	struct msg_conn_upgrade	*up = (struct msg_conn_upgrade *)m->body;
	struct conn		*c;
	char			 id[CONN_ID_MAX + 1];
	int			 tries, idlen;
	uint32_t		 rnd;

	if (up->server_id[SERVER_ID_MAX] != '\0' ||
	    up->device_name[DEVICE_NAME_MAX] != '\0' ||
	    up->ws_accept[WS_ACCEPT_LEN] != '\0' ||
	    up->preread_len > PREREAD_MAX || m->hdr.len != CONN_UPGRADE_LEN(up) ||
	    strcmp(up->server_id, r->sid) != 0)
		fatalx("relay %s: bad CONN_ATTACH from parent", r->sid);

	if (m->fd_lost) {
		relay_fd_lost(r, m->hdr.id, up->kind);
		return;
	}
	if (r->retiring || r->shutting_down) {
		/* architecture.md retire handshake step 3: hand it back unchanged */
		msg_compose(&r->chan, MSG_CONN_REROUTE, m->hdr.id, up,
		    CONN_UPGRADE_LEN(up), m->fd);
		relay_chan_flush(r);
		return;
	}

	if (up->kind == CONN_BINARY) {
		c = relay_conn_new(r, m->fd, m->hdr.id);
		if (r->binary == NULL) {
			c->role = CR_BINARY;
			r->binary = c;
			COUNT(r, upgrades[EP_SERVER][OUT_ACCEPT]);
			if (r->in_grace) {
				r->in_grace = 0;
				evtimer_del(r->ev_grace);
				log_info("event=server_claimed server_id=%s how=reclaim "
				    "queued=%zu", r->sid, r->gq.bytes);
			} else
				log_info("event=server_claimed server_id=%s how=claim",
				    r->sid);
			relay_report(r);
			relay_conn_start(c, up);
			if (r->gq.len > 0 && r->binary == c)
				relay_gq_flush(r);
		} else {
			c->role = CR_NEWCOMER;
			relay_conn_start(c, up);
			if (!r->probing)
				relay_probe_start(r);
		}
		return;
	}

	/* a phone (protocol.md §3 "Phone registration") */
	if (r->binary == NULL && !r->in_grace) {
		relay_reject(r, m->fd, up, m->hdr.id, 4404, "no server with that id");
		COUNT(r, upgrades[EP_CLIENT][OUT_REJECT_404]);
		COUNT(r, register_failures[REG_NO_SERVER]);
		log_info("event=phone_register_no_server server_id=%s", r->sid);
		return;
	}
	if ((uint32_t)r->nphones >= r->lim.phones_per_server) {
		relay_reject(r, m->fd, up, m->hdr.id, 4429,
		    "too many phones for server-id");
		COUNT(r, upgrades[EP_CLIENT][OUT_REJECT_429]);
		COUNT(r, register_failures[REG_PHONES_AT_CAP]);
		log_info("event=phone_register_at_cap server_id=%s phones=%d",
		    r->sid, r->nphones);
		return;
	}
	/*
	 * A conn_id no registered phone has, chosen before the new phone
	 * joins the list (it would find itself).  Eight hex digits make a
	 * clash among 16 phones rare; the loop only bounds the retries.
	 */
	for (tries = 0; tries < 100; tries++) {
		xrandom_buf(&rnd, sizeof(rnd));
		idlen = snprintf(id, sizeof(id), "client-%s-%08x", r->sid, rnd);
		if (relay_find_phone(r, id, idlen) == NULL)
			break;
	}
	c = relay_conn_new(r, m->fd, m->hdr.id);
	c->role = CR_PHONE;
	strlcpy(c->device, up->device_name, sizeof(c->device));
	memcpy(c->conn_id, id, idlen + 1);
	c->conn_id_len = idlen;
	r->nphones++;
	COUNT(r, upgrades[EP_CLIENT][OUT_ACCEPT]);
	log_info("event=phone_registered server_id=%s conn_id=%s phones=%d",
	    r->sid, c->conn_id, r->nphones);
	relay_report(r);
	if (r->phones_paused)
		c->read_paused = 1;
	relay_conn_start(c, up);
	if (c->read_paused)
		event_del(c->ev_read);
}
