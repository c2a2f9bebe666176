/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The relay's side of its channel to the parent (docs/messages.md): set-up
 * (relay_main, on proc.c's start-up), the parent's messages and their
 * table, the state and counter increments it reports, the retire
 * handshake, and the operator's commands (pyrelayctl show and kick,
 * SIGTERM).  The connections and
 * every decision of protocol.md §3-§5 are in relay.c.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/mman.h>
#include <sys/queue.h>

#include <malloc.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "msg.h"
#include "msgq.h"
#include "proc.h"
#include "proto.h"
#include "pyrelayd.h"
#include "relay.h"
#include "relay_int.h"

#define RELAY_MAXFDS	1024	/* 16 phones + binary + newcomers + slack */

static struct relay	*relay;
/*
 * Messages from the parent land here, not in a 32 KiB block taken from the
 * heap and given back for every batch: only the pages a message reaches
 * are ever touched (a CONN_ATTACH ends at its preread), and the heap
 * keeps only long-lived objects.
 */
static struct msg	 chanbuf RELAY_LARGE_BSS;

/* Gives the kernel back the whole pages of [p, p + len) (their contents are dead). */
static void
relay_release_pages(void *p, size_t len)
{
	uintptr_t	 pg = (uintptr_t)getpagesize();
	uintptr_t	 a = ((uintptr_t)p + pg - 1) & ~(pg - 1);
	uintptr_t	 b = ((uintptr_t)p + len) & ~(pg - 1);

	if (b > a)
		madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Counter increments: see COUNT in relay_int.h. */
void
relay_counters_arm(struct relay *r)
{
	struct timeval	tv;
	int64_t		wait;

	r->cnt_dirty = 1;
	wait = r->cnt_sent_ms + RELAY_COUNTERS_MS - now_ms();
	if (r->cnt_sent_ms == 0 || wait <= 0) {
		/* relay_flush sends it */
		event_active(r->ev_flush, EV_WRITE, 0);
		return;
	}
	tv = ms_timeval(wait);
	evtimer_add(r->ev_counters, &tv);
}

/* Sends the increments gathered since the last time, even none. */
void
relay_counters_send(struct relay *r, uint64_t id)
{
	msg_compose(&r->chan, MSG_RELAY_COUNTERS, id, &r->cnt, sizeof(r->cnt),
	    -1);
	if (msg_flush(&r->chan) == -1)
		fatalx("relay %s: parent channel: %s", r->sid, r->chan.errstr);
	memset(&r->cnt, 0, sizeof(r->cnt));
	r->cnt_dirty = 0;
	r->cnt_sent_ms = now_ms();
	evtimer_del(r->ev_counters);
}

void
relay_counters_flush(struct relay *r)
{
	if (r->cnt_dirty)
		relay_counters_send(r, 0);
}

static void
relay_counters_tick(evutil_socket_t fd, short ev, void *arg)
{
	relay_counters_flush(arg);
}

static void
relay_title(struct relay *r)
{
	setproctitle("relay %s (%s, %d phone%s)", r->sid,
	    r->binary ? "binary" : (r->retiring ? "retiring" : "grace"),
	    r->nphones, r->nphones == 1 ? "" : "s");
}

void
relay_chan_flush(struct relay *r)
{
	if (msg_flush(&r->chan) == -1)
		fatalx("relay %s: parent channel: %s", r->sid, r->chan.errstr);
}

/* Tells the parent the counts /healthz reports, before any client can see them. */
void
relay_report(struct relay *r)
{
	struct msg_relay_state	st;

	/* counters first, so that claims are counted when they are visible */
	relay_counters_flush(r);
	memset(&st, 0, sizeof(st));
	st.binary_connected = r->binary != NULL;
	st.phones = r->nphones;
	st.probing = r->probing;
	if (r->reported_once && st.binary_connected == r->reported_binary &&
	    st.phones == r->reported_phones && st.probing == r->reported_probing)
		return;
	r->reported_once = 1;
	r->reported_binary = st.binary_connected;
	r->reported_phones = st.phones;
	r->reported_probing = st.probing;
	msg_compose(&r->chan, MSG_RELAY_STATE, 0, &st, sizeof(st), -1);
	relay_chan_flush(r);
	relay_title(r);
}

/*
 * architecture.md "The retire handshake", step 1: leave the parent's map.
 * Sent once; the relay exits only after RETIRE_OK, so that whatever the
 * parent sent before it is handed back (CONN_REROUTE), never lost.
 */
void
relay_retire(struct relay *r)
{
	struct msg_empty	e = { 0 };

	if (r->retiring)
		return;
	r->retiring = 1;
	r->in_grace = 0;
	evtimer_del(r->ev_grace);
	msg_compose(&r->chan, MSG_RETIRE, 0, &e, sizeof(e), -1);
	relay_chan_flush(r);
}

/* A relay exits once it is out of the parent's map and every connection is gone. */
void
relay_check_exit(struct relay *r)
{
	if (!r->retired)
		return;
	if (!TAILQ_EMPTY(&r->conns))
		return;
	event_base_loopexit(r->base, NULL);
}

static void
relay_limits(void *arg, struct msg *m)
{
	struct relay	*r = arg;

	memcpy(&r->lim, m->body, sizeof(r->lim));
}

static void
relay_conn_attach(void *arg, struct msg *m)
{
	struct relay	*r = arg;

	if (r->sid[0] == '\0')
		fatalx("relay: CONN_ATTACH before ASSIGN");
	relay_attach(r, m);
}

static void
relay_retire_ok(void *arg, struct msg *m)
{
	struct relay	*r = arg;

	r->retired = 1;
	relay_check_exit(r);
}

static void
relay_counters_req(void *arg, struct msg *m)
{
	relay_counters_send(arg, 1);
}

/* pyrelayctl show server: one message per registered phone, then the end. */
static void
relay_ctl_show(void *arg, struct msg *m)
{
	struct relay		*r = arg;
	uint64_t		 req = m->hdr.id;
	struct msg_ctl_phone	 ph;
	struct conn		*c;
	int64_t			 now = now_ms();

	TAILQ_FOREACH(c, &r->conns, entry) {
		if (c->role != CR_PHONE || c->unregistered)
			continue;
		memset(&ph, 0, sizeof(ph));
		ph.age_s = (now - c->created_ms) / 1000;
		ph.bytes_in = c->bytes_in;
		ph.bytes_out = c->bytes_out;
		strlcpy(ph.conn_id, c->conn_id, sizeof(ph.conn_id));
		strlcpy(ph.device, c->device, sizeof(ph.device));
		msg_compose(&r->chan, MSG_CTL_PHONE, req, &ph, sizeof(ph), -1);
	}
	memset(&ph, 0, sizeof(ph));
	ph.last = 1;
	msg_compose(&r->chan, MSG_CTL_PHONE, req, &ph, sizeof(ph), -1);
	relay_chan_flush(r);
}

/* pyrelayctl kick server: everyone out with 1001, then retire. */
static void
relay_kick(void *arg, struct msg *m)
{
	struct relay	*r = arg;

	log_info("event=server_kicked server_id=%s phones=%d", r->sid, r->nphones);
	relay_retire(r);
	relay_close_all(r, "kicked by operator");
	msgq_clear(&r->gq);
	relay_report(r);
	relay_check_exit(r);
}

static void
relay_shutdown(evutil_socket_t sig, short ev, void *arg)
{
	struct relay	*r = arg;

	if (r->shutting_down)
		return;
	r->shutting_down = 1;
	/* a pooled relay has no server-id and no connection: just go */
	if (r->sid[0] == '\0') {
		event_base_loopexit(r->base, NULL);
		return;
	}
	/*
	 * Leave the map first: a SIGTERM may reach one relay alone (an
	 * operator, or systemd stopping a process), and the parent keeps
	 * routing its server-id to it until it knows.
	 */
	relay_retire(r);
	relay_close_all(r, "shutting down");
	msgq_clear(&r->gq);
	relay_check_exit(r);
}

/*
 * A pooled relay (docs/pool.md) gets its one server-id.  Until then it had
 * no timer and no connection: it only waited on its channel.
 */
static void
relay_assign(void *arg, struct msg *m)
{
	struct relay		*r = arg;
	const struct msg_assign	*a = (const struct msg_assign *)m->body;

	if (r->sid[0] != '\0')
		fatalx("relay %s: a second ASSIGN", r->sid);
	strlcpy(r->sid, a->server_id, sizeof(r->sid));
	r->sidlen = strlen(r->sid);
	r->lim = a->lim;
	relay_title(r);
	log_debug("event=relay_ready server_id=%s pooled=1", r->sid);
}

/*
 * What a relay takes from the parent (docs/messages.md), each with its
 * handler above; SETUP only once, at start (proc_worker_run).
 */
static const struct msg_rule relay_rows[] = {
	MSG_RULE(SETUP, MSG_FD_NONE, NULL),
	MSG_RULE(LIMITS, MSG_FD_NONE, relay_limits),
	MSG_RULE(CONN_ATTACH, MSG_FD_REQUIRED, relay_conn_attach),
	MSG_RULE(RETIRE_OK, MSG_FD_NONE, relay_retire_ok),
	MSG_RULE(VERBOSE, MSG_FD_NONE, proc_verbose),
	MSG_RULE(CTL_SHOW, MSG_FD_NONE, relay_ctl_show),
	MSG_RULE(CTL_KICK, MSG_FD_NONE, relay_kick),
	MSG_RULE(ASSIGN, MSG_FD_NONE, relay_assign),
	MSG_RULE(COUNTERS_REQ, MSG_FD_NONE, relay_counters_req),
};
const struct msg_rules relay_from_parent =
    MSG_RULES(ROLE_PARENT, ROLE_RELAY, relay_rows);

/*
 * SETUP is in: the relay's state and events.  Nothing here depends on
 * the process having just been exec'd.
 */
static void
relay_setup(struct proc_worker *pw, const struct msg_setup *setup)
{
	struct relay	*r = pw->arg;

	r->base = pw->base;
	/* an empty server-id: a pooled relay, waiting for MSG_ASSIGN */
	strlcpy(r->sid, setup->server_id, sizeof(r->sid));
	r->sidlen = strlen(r->sid);
	r->lim = setup->lim;
	r->ev_flush = event_new(r->base, -1, 0, relay_flush, r);
	r->ev_grace = evtimer_new(r->base, relay_grace_expired, r);
	r->ev_probe = evtimer_new(r->base, relay_probe_expired, r);
	r->ev_counters = evtimer_new(r->base, relay_counters_tick, r);
	if (r->ev_flush == NULL || r->ev_grace == NULL ||
	    r->ev_probe == NULL || r->ev_counters == NULL)
		fatalx("relay: event_new");
	event_priority_set(r->ev_flush, 0);
}

/* Sandboxed: give back what set-up used, and say who we are. */
static void
relay_ready(struct proc_worker *pw)
{
	struct relay	*r = pw->arg;

	/*
	 * Hand back what set-up allocated and freed (not the data path), and
	 * the pages SETUP (it carries the seccomp program) dirtied in chanbuf.
	 */
	malloc_trim(0);
	relay_release_pages(&chanbuf, sizeof(chanbuf));
	if (r->sid[0] != '\0') {
		relay_title(r);
		log_debug("event=relay_ready server_id=%s", r->sid);
	} else {
		setproctitle("pooled relay");
		log_debug("event=relay_pooled");
	}
}

void
relay_main(void)
{
	struct proc_worker	pw;

	relay = xcalloc(1, sizeof(*relay));
	relay->push_tokens = PUSH_BURST;
	TAILQ_INIT(&relay->conns);
	TAILQ_INIT(&relay->dirty);
	memset(&pw, 0, sizeof(pw));
	pw.role = ROLE_RELAY;
	pw.rules = &relay_from_parent;
	pw.chan = &relay->chan;
	pw.m = &chanbuf;
	pw.arg = relay;
	pw.maxfds = RELAY_MAXFDS;
	pw.setup = relay_setup;
	pw.ready = relay_ready;
	pw.sigterm = relay_shutdown;
	proc_worker_run(&pw);
	/* what this relay counted outlives it (protocol.md §2 counters) */
	relay_counters_flush(relay);
	exit(0);
}
