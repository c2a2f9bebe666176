/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The relay's side of its channel to the parent (docs/messages.md): set-up
 * and the event loop (relay_main), the parent's messages, the state and
 * counter increments it reports, the retire handshake, and the operator's
 * commands (pyrelayctl show and kick, SIGTERM).  The connections and
 * every decision of protocol.md §3-§5 are in relay.c.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/mman.h>
#include <sys/queue.h>

#include <malloc.h>
#include <event2/event.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http.h"
#include "msg.h"
#include "msgq.h"
#include "proto.h"
#include "pyrelayd.h"
#include "relay.h"
#include "relay_int.h"
#include "sandbox.h"

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

static void	 relay_ctl_show(struct relay *, uint64_t);
static void	 relay_kick(struct relay *);
static void	 relay_assign(struct relay *, const struct msg_assign *);

static const struct msg_rule relay_rules[] = {
	{ MSG_SETUP, sizeof(struct msg_setup), MSG_FD_NONE, "SETUP", MSG_SETUP_MIN },
	{ MSG_LIMITS, sizeof(struct msg_limits), MSG_FD_NONE, "LIMITS", 0 },
	{ MSG_CONN_ATTACH, sizeof(struct msg_conn_upgrade), MSG_FD_REQUIRED, "CONN_ATTACH",
	    CONN_UPGRADE_MIN },
	{ MSG_RETIRE_OK, sizeof(struct msg_empty), MSG_FD_NONE, "RETIRE_OK", 0 },
	{ MSG_VERBOSE, sizeof(struct msg_verbose), MSG_FD_NONE, "VERBOSE", 0 },
	{ MSG_CTL_SHOW, sizeof(struct msg_empty), MSG_FD_NONE, "CTL_SHOW", 0 },
	{ MSG_CTL_KICK, sizeof(struct msg_empty), MSG_FD_NONE, "CTL_KICK", 0 },
	{ MSG_ASSIGN, sizeof(struct msg_assign), MSG_FD_NONE, "ASSIGN", 0 },
	{ MSG_COUNTERS_REQ, sizeof(struct msg_empty), MSG_FD_NONE,
	    "COUNTERS_REQ", 0 },
};

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
	tv.tv_sec = wait / 1000;
	tv.tv_usec = (wait % 1000) * 1000;
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
	/*
	 * An answer to COUNTERS_REQ does not start a new second: the parent
	 * asks again only relays that sent on their own lately (proto.h).
	 */
	if (id == 0)
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
relay_dispatch(evutil_socket_t fd, short ev, void *arg)
{
	struct relay	*r = arg;
	struct msg	*m;
	int		 rv;

	if (ev & EV_WRITE)
		relay_chan_flush(r);
	if (!(ev & EV_READ))
		return;
	m = &chanbuf;
	for (;;) {
		rv = msg_recv(&r->chan, m);
		if (rv == 0)
			break;
		if (rv == -1) {
			/* the parent is gone: nothing left to serve for */
			log_debug("event=parent_gone server_id=%s", r->sid);
			exit(0);
		}
		if (rv == -2)
			fatalx("relay %s: bad message from parent: %s", r->sid,
			    r->chan.errstr);
		switch (m->hdr.type) {
		case MSG_LIMITS:
			memcpy(&r->lim, m->body, sizeof(r->lim));
			break;
		case MSG_ASSIGN:
			relay_assign(r, (struct msg_assign *)m->body);
			break;
		case MSG_CONN_ATTACH:
			if (r->sid[0] == '\0')
				fatalx("relay: CONN_ATTACH before ASSIGN");
			relay_attach(r, m);
			break;
		case MSG_RETIRE_OK:
			r->retired = 1;
			relay_check_exit(r);
			break;
		case MSG_VERBOSE:
			log_setverbose(((struct msg_verbose *)m->body)->verbose);
			break;
		case MSG_CTL_SHOW:
			relay_ctl_show(r, m->hdr.id);
			break;
		case MSG_CTL_KICK:
			relay_kick(r);
			break;
		case MSG_COUNTERS_REQ:
			relay_counters_send(r, 1);
			break;
		default:
			if (m->fd != -1)
				close(m->fd);
			break;
		}
	}
}

/* pyrelayctl show server: one message per registered phone, then the end. */
static void
relay_ctl_show(struct relay *r, uint64_t req)
{
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
relay_kick(struct relay *r)
{
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

static void
relay_ignore(evutil_socket_t sig, short ev, void *arg)
{
}

/*
 * A pooled relay (docs/pool.md) gets its one server-id.  Until then it had
 * no timer and no connection: it only waited on its channel.
 */
static void
relay_assign(struct relay *r, const struct msg_assign *a)
{
	if (r->sid[0] != '\0')
		fatalx("relay %s: a second ASSIGN", r->sid);
	if (memchr(a->server_id, '\0', sizeof(a->server_id)) == NULL ||
	    !server_id_valid(a->server_id, strlen(a->server_id)))
		fatalx("relay: bad ASSIGN");
	strlcpy(r->sid, a->server_id, sizeof(r->sid));
	r->sidlen = strlen(r->sid);
	r->lim = a->lim;
	relay_title(r);
	log_debug("event=relay_ready server_id=%s pooled=1", r->sid);
}

void
relay_main(int fd)
{
	struct relay		*r;
	struct msg		*m;
	struct msg_setup	*setup;

	r = relay = xcalloc(1, sizeof(*r));
	r->push_tokens = PUSH_BURST;
	TAILQ_INIT(&r->conns);
	TAILQ_INIT(&r->dirty);
	msg_chan_init(&r->chan, fd, relay_rules, sizeof(relay_rules) / sizeof(relay_rules[0]));

	/* the first messages: HELLO then SETUP, before anything else */
	m = &chanbuf;
	setup = msg_wait(&r->chan, m, MSG_SETUP, "relay");
	/* an empty server-id: a pooled relay, waiting for MSG_ASSIGN */
	if (setup->server_id[SERVER_ID_MAX] != '\0' ||
	    setup->chroot[sizeof(setup->chroot) - 1] != '\0' ||
	    (setup->server_id[0] != '\0' &&
	    !server_id_valid(setup->server_id, strlen(setup->server_id))))
		fatalx("relay: bad SETUP");
	strlcpy(r->sid, setup->server_id, sizeof(r->sid));
	r->sidlen = strlen(r->sid);
	r->lim = setup->lim;
	log_setverbose(setup->verbose);

	/*
	 * EVENT_* environment variables choose nothing here (reading them
	 * costs four id syscalls per lookup), and there is one thread.
	 */
	{
		struct event_config	*cfg;

		if ((cfg = event_config_new()) == NULL ||
		    event_config_set_flag(cfg, EVENT_BASE_FLAG_IGNORE_ENV |
		    EVENT_BASE_FLAG_NOLOCK) == -1 ||
		    (r->base = event_base_new_with_config(cfg)) == NULL)
			fatalx("relay: event_base_new");
		event_config_free(cfg);
	}
	r->ev_chan = event_new(r->base, fd, EV_READ | EV_PERSIST, relay_dispatch, r);
	r->ev_flush = event_new(r->base, -1, 0, relay_flush, r);
	r->ev_grace = evtimer_new(r->base, relay_grace_expired, r);
	r->ev_probe = evtimer_new(r->base, relay_probe_expired, r);
	r->ev_sigterm = evsignal_new(r->base, SIGTERM, relay_shutdown, r);
	r->ev_sigint = evsignal_new(r->base, SIGINT, relay_ignore, r);
	r->ev_sighup = evsignal_new(r->base, SIGHUP, relay_ignore, r);
	r->ev_counters = evtimer_new(r->base, relay_counters_tick, r);
	if (r->ev_chan == NULL || r->ev_flush == NULL || r->ev_grace == NULL ||
	    r->ev_probe == NULL || r->ev_sigterm == NULL || r->ev_counters == NULL)
		fatalx("relay: event_new");
	event_priority_set(r->ev_flush, 0);
	event_add(r->ev_chan, NULL);
	event_add(r->ev_sigterm, NULL);
	event_add(r->ev_sigint, NULL);
	event_add(r->ev_sighup, NULL);
	signal(SIGPIPE, SIG_IGN);

	sandbox_enter(ROLE_RELAY, setup, m->hdr.len, RELAY_MAXFDS);
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
	msg_hello(&r->chan, ROLE_RELAY);
	relay_chan_flush(r);

	/* messages that arrived with SETUP are read by the loop */
	event_active(r->ev_chan, EV_READ, 0);
	event_base_dispatch(r->base);
	/* what this relay counted outlives it (protocol.md §2 counters) */
	relay_counters_flush(r);
	exit(0);
}
