/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The relay's side of its channel to the parent (docs/messages.md): set-up
 * (relay_main, on proc.c's start-up), the parent's messages and their
 * table, the state and counter increments it reports, the retire
 * handshake, the push wakes it admitted, and the operator's commands
 * (pyrelayctl show and kick, SIGTERM).  It sits around the
 * connections (relay_io.c), which sit around the decisions of docs/protocol.md
 * §3-§4 (relay_core.c): docs/relay-core.md.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "msg.h"
#include "proc.h"
#include "proto.h"
#include "pyrelayd.h"
#include "relay.h"
#include "relay_alloc.h"
#include "relay_core.h"
#include "relay_io.h"

/* connections closed in one turn, told the parent together (relay_out) */
#define RELAY_CLOSED_MAX	2

struct relay {
	struct relay_io		 io;		/* the connections, the core in it */
	struct msg_chan		 chan;
	struct rl_watch		 chan_watch;	/* chan's fd in the loop */
	struct msg		*m;		/* where the parent's messages land */
	struct limits		 lim;
	int			 retired;	/* RETIRE_OK received */
	int			 shutting_down;
	uint32_t		 reported_binary, reported_phones, reported_probing;
	int			 reported_once;
	struct relay_counters	 cnt;		/* increments not yet sent */
	int			 cnt_dirty;	/* cnt holds increments */
	int64_t			 cnt_sent_ms;	/* the last RELAY_COUNTERS */
	struct rl_timer		 cnt_timer;	/* the increments' second ends */
	/*
	 * What leaves with the next report (relay_out): the state and the
	 * increments are due before the next output to any client, and the
	 * connections closed in this turn at its end.
	 */
	uint8_t			 report_due;
	uint8_t			 nclosed;
	uint8_t			 closed_kind[RELAY_CLOSED_MAX];
	uint64_t		 closed_id[RELAY_CLOSED_MAX];
};

/*
 * A relay's objects fit one arena page (docs/relay-executable.md): the
 * relay in a block of 1536 bytes, its 16-byte header included.
 */
_Static_assert(sizeof(struct relay) <= 1536 - 16,
    "struct relay outgrew its block of the relay allocator");

/* The relay around a core (the core is in its I/O layer). */
#define RELAY_OF(rc)	CONTAINER_OF(RELAY_IO(rc), struct relay, io)

/*
 * Counter increments reach the parent soon, without a message per frame
 * (proto.h RELAY_COUNTERS): the first increment a second or more after the
 * last send goes out at the end of its loop turn, before the frame it
 * counts is written (relay_turn_end), so a client that has seen a frame
 * can scrape it counted; later ones wait for the timer, which ends that
 * second, and a /metrics scrape asks for them sooner (MSG_COUNTERS_REQ).
 * The timer runs only while increments wait: an idle relay is never woken
 * (a per-second tick in every relay cost most of a core at 20,000
 * server-ids).
 */
static void
relay_counters_arm(struct relay *r)
{
	int64_t		wait;

	r->cnt_dirty = 1;
	wait = r->cnt_sent_ms + RELAY_COUNTERS_MS - now_ms();
	if (r->cnt_sent_ms == 0 || wait <= 0) {
		/* relay_turn_end sends it */
		relay_io_wake(&r->io);
		return;
	}
	rloop_timer_at(&r->io.loop, &r->cnt_timer, r->cnt_sent_ms +
	    RELAY_COUNTERS_MS);
}

static void	relay_chan_flush(struct relay *);

/* The increments are on their way (in cnt's copy): a new count starts. */
static void
relay_counters_sent(struct relay *r, uint64_t id)
{
	memset(&r->cnt, 0, sizeof(r->cnt));
	r->cnt_dirty = 0;
	/*
	 * An answer to COUNTERS_REQ does not start a new second: the parent
	 * asks again only relays that sent on their own lately (proto.h).
	 */
	if (id == 0)
		r->cnt_sent_ms = now_ms();
	rloop_timer_stop(&r->io.loop, &r->cnt_timer);
}

/* The increments gathered since the last time, even none, into b. */
static void
relay_counters_add(struct relay *r, struct msg_batch *b, uint64_t id)
{
	msg_batch_add(&r->chan, b, MSG_RELAY_COUNTERS, id, &r->cnt,
	    sizeof(r->cnt), -1);
	relay_counters_sent(r, id);
}

/* Sends the increments gathered since the last time, even none. */
static void
relay_counters_send(struct relay *r, uint64_t id)
{
	struct msg_batch	b;

	msg_batch_init(&b);
	relay_counters_add(r, &b, id);
	msg_batch_send(&r->chan, &b);
	relay_chan_flush(r);
}

static void
relay_counters_flush(struct relay *r)
{
	if (r->cnt_dirty)
		relay_counters_send(r, 0);
}

static void
relay_counters_tick(struct rl_timer *t)
{
	relay_counters_flush(CONTAINER_OF(t, struct relay, cnt_timer));
}

/* The core counts (relay_core.h ops->count): one increment, sent soon. */
static void
relay_count(struct relay_core *core, enum relay_count what)
{
	struct relay_counters	*c = &RELAY_OF(core)->cnt;

	switch (what) {
	case RELAY_COUNT_FRAME_P2B:
		c->frames_p2b++;
		break;
	case RELAY_COUNT_FRAME_B2P:
		c->frames_b2p++;
		break;
	case RELAY_COUNT_GRACE_EXPIRY:
		c->grace_expiries++;
		break;
	case RELAY_COUNT_CLAIM:
		c->upgrades[EP_SERVER][OUT_ACCEPT]++;
		break;
	case RELAY_COUNT_PHONE:
		c->upgrades[EP_CLIENT][OUT_ACCEPT]++;
		break;
	case RELAY_COUNT_NO_SERVER:
		c->upgrades[EP_CLIENT][OUT_REJECT_404]++;
		c->register_failures[REG_NO_SERVER]++;
		break;
	case RELAY_COUNT_IN_USE:
		c->upgrades[EP_SERVER][OUT_REJECT_409]++;
		c->register_failures[REG_SERVER_IN_USE]++;
		break;
	case RELAY_COUNT_AT_CAP:
		c->upgrades[EP_CLIENT][OUT_REJECT_429]++;
		c->register_failures[REG_PHONES_AT_CAP]++;
		break;
	}
	if (!RELAY_OF(core)->cnt_dirty)
		relay_counters_arm(RELAY_OF(core));
}

static void
relay_title(struct relay *r)
{
	const struct relay_core	*core = &r->io.core;

	proc_title("relay %s (%s, %d phone%s)", core->sid,
	    core->binary ? "binary" : (core->retiring ? "retiring" : "grace"),
	    core->nphones, core->nphones == 1 ? "" : "s");
}

static void
relay_chan_flush(struct relay *r)
{
	if (msg_flush(&r->chan) == -1)
		fatalx("relay %s: parent channel: %s", r->io.core.sid,
		    r->chan.errstr);
}

/*
 * What the parent must hear, in one call (msg_batch_send): the counts
 * /healthz reports and the counter increments when a report is due (the
 * state as it stands now, so that changes of one turn make one
 * RELAY_STATE), the first increment of a second, and, at the end of a
 * turn, the connections closed in it.  Called before any output to a
 * client (relay_io.c: writes and closes; turn_end 0), so that no client
 * sees a change the parent has not been told, and at the end of each turn
 * (turn_end 1).  A report once per turn, not per change: a claim cycle
 * took six system calls here and nine messages in the parent, now four
 * and eight (docs/relay-executable.md).
 */
static void
relay_out(struct relay *r, int turn_end)
{
	const struct relay_core	*core = &r->io.core;
	struct msg_relay_report	 rep;
	struct msg_relay_state	*st = &rep.st;
	struct msg_conn_closed	 mc;
	struct msg_batch	 b;
	int			 i, changed = 0, first, cnt;

	first = r->cnt_dirty && !rloop_timer_pending(&r->cnt_timer);
	if (!r->report_due && !first && (!turn_end || r->nclosed == 0))
		return;
	msg_batch_init(&b);
	/* the increments leave with it, so that claims are counted when visible */
	cnt = r->cnt_dirty && (r->report_due || first);
	if (r->report_due) {
		r->report_due = 0;
		memset(st, 0, sizeof(*st));
		st->binary_connected = core->binary != NULL;
		st->phones = core->nphones;
		st->probing = core->probing;
		changed = !r->reported_once ||
		    st->binary_connected != r->reported_binary ||
		    st->phones != r->reported_phones ||
		    st->probing != r->reported_probing;
	}
	if (changed) {
		r->reported_once = 1;
		r->reported_binary = st->binary_connected;
		r->reported_phones = st->phones;
		r->reported_probing = st->probing;
		/* with the increments, one message (proto.h msg_relay_report) */
		if (cnt) {
			memcpy(&rep.cnt, &r->cnt, sizeof(rep.cnt));
			relay_counters_sent(r, 0);
		}
		msg_batch_add(&r->chan, &b, MSG_RELAY_STATE, 0, &rep,
		    cnt ? sizeof(rep) : sizeof(*st), -1);
	} else if (cnt)
		relay_counters_add(r, &b, 0);
	for (i = 0; i < r->nclosed; i++) {
		memset(&mc, 0, sizeof(mc));
		mc.kind = r->closed_kind[i];
		msg_batch_add(&r->chan, &b, MSG_CONN_CLOSED, r->closed_id[i],
		    &mc, sizeof(mc), -1);
	}
	r->nclosed = 0;
	if (b.n == 0)
		return;
	msg_batch_send(&r->chan, &b);
	relay_chan_flush(r);
	if (changed)
		relay_title(r);
}

/*
 * The counts /healthz reports changed (relay_core.h ops->report): they
 * leave before any client can see the change (relay_out).
 */
static void
relay_report(struct relay_core *core)
{
	struct relay	*r = RELAY_OF(core);

	r->report_due = 1;
	relay_io_wake(&r->io);
}

/*
 * docs/architecture.md "The retire handshake", step 1: leave the parent's map
 * (relay_core.h ops->retire, once).  The relay exits only after RETIRE_OK,
 * so that whatever the parent sent before it is handed back
 * (CONN_REROUTE), never lost.
 */
static void
relay_retire(struct relay_core *core)
{
	struct relay		*r = RELAY_OF(core);
	struct msg_empty	 e = { 0 };

	relay_out(r, 1);
	msg_compose(&r->chan, MSG_RETIRE, 0, &e, sizeof(e), -1);
	relay_chan_flush(r);
}

/*
 * A push wake the core admitted (relay_core.h ops->push_wake): the parent
 * applies the relay-wide cap and hands it to the push process.
 */
static void
relay_push_wake(struct relay_core *core, const char *token)
{
	struct relay		*r = RELAY_OF(core);
	struct msg_push_wake	 pw;

	relay_out(r, 1);
	memset(&pw, 0, sizeof(pw));
	strlcpy(pw.token, token, sizeof(pw.token));
	msg_compose(&r->chan, MSG_PUSH_WAKE, 0, &pw, sizeof(pw), -1);
	relay_chan_flush(r);
}

/* A relay exits once it is out of the parent's map and every connection is gone. */
static void
relay_check_exit(struct relay *r)
{
	if (!r->retired)
		return;
	if (!TAILQ_EMPTY(&r->io.core.peers))
		return;
	rloop_exit(&r->io.loop);
}

static const struct relay_core_ops relay_core_ops = {
	.send = relay_io_send,
	.close = relay_io_close,
	.ping = relay_io_ping,
	.pause = relay_io_pause,
	.resume = relay_io_resume,
	.cost = relay_io_cost,
	.timer_start = relay_io_timer_start,
	.timer_stop = relay_io_timer_stop,
	.count = relay_count,
	.report = relay_report,
	.retire = relay_retire,
	.push_wake = relay_push_wake,
	.now = relay_io_now,
};

/*
 * A connection is gone: the parent forgets it at the end of this turn,
 * with the others closed in it (relay_out), and the relay may be done.
 */
static void
relay_conn_closed(struct relay_io *io, uint64_t id, enum relay_role role)
{
	struct relay	*r = RELAY_OF(&io->core);

	if (r->nclosed == RELAY_CLOSED_MAX)
		relay_out(r, 1);
	r->closed_kind[r->nclosed] = role == RELAY_PHONE ? CONN_PHONE :
	    CONN_BINARY;
	r->closed_id[r->nclosed++] = id;
	relay_io_wake(io);
	relay_check_exit(r);
}

/* Output is about to leave, or the loop turn ends (relay_io.h hooks). */
static void
relay_flush(struct relay_io *io, int turn_end)
{
	relay_out(RELAY_OF(&io->core), turn_end);
}

static void	relay_shutdown(struct relay_io *);

static const struct relay_io_hooks relay_io_hooks = {
	.closed = relay_conn_closed,
	.flush = relay_flush,
	.sigterm = relay_shutdown,
};

/*
 * A connection from the parent.  Every decision on it is counted before
 * its client sees it.
 */
static void
relay_attach(void *arg, struct msg *m)
{
	struct relay		*r = arg;
	struct msg_conn_upgrade	*up = (struct msg_conn_upgrade *)m->body;
	struct relay_core	*core = &r->io.core;
	struct msg_conn_closed	 mc;

	if (core->sid[0] == '\0')
		fatalx("relay: CONN_ATTACH before ASSIGN");
	/* the body passed msg_conn_routed_check; whose it is, only we know */
	if (strcmp(up->server_id, core->sid) != 0)
		fatalx("relay %s: CONN_ATTACH for another server-id", core->sid);

	/* what is due goes before, in order */
	relay_out(r, 1);
	if (m->fd_lost) {
		/*
		 * A connection whose fd we could not receive (at our
		 * RLIMIT_NOFILE): the kernel closed it, the parent forgets it.
		 */
		memset(&mc, 0, sizeof(mc));
		mc.kind = up->kind;
		mc.fd_lost = 1;
		msg_compose(&r->chan, MSG_CONN_CLOSED, m->hdr.id, &mc,
		    sizeof(mc), -1);
		relay_chan_flush(r);
		if (up->kind == CONN_BINARY && !r->shutting_down)
			relay_core_binary_lost(core);
	} else if (core->retiring || r->shutting_down) {
		/* docs/architecture.md retire handshake step 3: hand it back unchanged */
		msg_compose(&r->chan, MSG_CONN_REROUTE, m->hdr.id, up,
		    CONN_UPGRADE_LEN(up), m->fd);
		relay_chan_flush(r);
	} else
		relay_io_attach(&r->io, m->fd, m->hdr.id, up);
	/* its outcome is counted before its client sees it */
	relay_report(core);
}

/* pyrelayctl show server: one message per registered phone, then the end. */
static void
relay_ctl_show(void *arg, struct msg *m)
{
	struct relay		*r = arg;
	uint64_t		 req = m->hdr.id;
	struct msg_ctl_phone	 ph;
	struct relay_peer	*p;
	struct conn		*c;
	int64_t			 now = now_ms();

	TAILQ_FOREACH(p, &r->io.core.peers, entry) {
		if (p->role != RELAY_PHONE || !p->open)
			continue;
		c = RELAY_CONN(p);
		memset(&ph, 0, sizeof(ph));
		ph.age_s = (now - c->created_ms) / 1000;
		ph.bytes_in = c->bytes_in;
		ph.bytes_out = c->bytes_out;
		strlcpy(ph.conn_id, p->conn_id, sizeof(ph.conn_id));
		strlcpy(ph.device, p->device, sizeof(ph.device));
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

	log_info("event=server_kicked server_id=%s phones=%d", r->io.core.sid,
	    r->io.core.nphones);
	relay_core_leave(&r->io.core, "kicked by operator");
	relay_report(&r->io.core);
	relay_check_exit(r);
}

static void
relay_shutdown(struct relay_io *io)
{
	struct relay	*r = RELAY_OF(&io->core);

	if (r->shutting_down)
		return;
	r->shutting_down = 1;
	/* a pooled relay has no server-id and no connection: just go */
	if (r->io.core.sid[0] == '\0') {
		rloop_exit(&r->io.loop);
		return;
	}
	/*
	 * Leave the map first: a SIGTERM may reach one relay alone (an
	 * operator, or systemd stopping a process), and the parent keeps
	 * routing its server-id to it until it knows.
	 */
	relay_core_leave(&r->io.core, "shutting down");
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
	struct relay_core	*core = &r->io.core;

	if (core->sid[0] != '\0')
		fatalx("relay %s: a second ASSIGN", core->sid);
	strlcpy(core->sid, a->server_id, sizeof(core->sid));
	r->lim = a->lim;
	relay_title(r);
	log_debug("event=relay_ready server_id=%s pooled=1", core->sid);
}

static void
relay_limits(void *arg, struct msg *m)
{
	struct relay	*r = arg;

	memcpy(&r->lim, m->body, sizeof(r->lim));
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

/*
 * What a relay takes from the parent (docs/messages.md), each with its
 * handler above.  Its SETUP went to the zygote it was forked from.
 */
static const struct msg_rule relay_rows[] = {
	MSG_RULE(LIMITS, MSG_FD_NONE, relay_limits),
	MSG_RULE(CONN_ATTACH, MSG_FD_REQUIRED, relay_attach),
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
 * A message from the parent, to its row's handler: one each time the
 * loop finds the channel readable (level-triggered), which it goes on
 * doing while more wait.
 */
static void
relay_chan_ready(struct rl_watch *w, uint32_t revents)
{
	struct relay	*r = CONTAINER_OF(w, struct relay, chan_watch);

	(void)proc_chan_one(&r->chan, r->m, r);
}

/*
 * Forked, sandboxed (the zygote's sandbox): its state from the zygote's
 * SETUP, its loop, then the loop until the relay is done.  The channel
 * is non-blocking from the parent (parent_spawn), close-on-exec from the
 * zygote's MSG_CMSG_CLOEXEC: nothing to ask the kernel.  No HELLO either
 * way: the zygote's stands for it, the same image on both sides of the
 * fork (docs/messages.md); the parent takes the relay as ready from the
 * zygote's SPAWNED, and what it sends waits in the channel until the
 * relay's loop reads it.
 */
void
relay_forked(int fd, const struct msg_setup *setup,
    const struct msg_hello *parent, struct msg *m)
{
	struct relay		*r;

	if ((r = ra_calloc(1, sizeof(*r))) == NULL)
		fatal("relay: calloc");
	relay_core_init(&r->io.core, &relay_core_ops, &r->lim);
	msg_chan_ready(&r->chan, fd, &relay_from_parent);
	msg_hello_known(&r->chan, parent->version, parent->role, parent->pid);
	/* a report and the turn's CONN_CLOSED: one packet (msg.h MSG_PACK) */
	r->chan.pack_out = 1;
	r->m = m;
	/* an empty server-id: a pooled relay, waiting for MSG_ASSIGN */
	strlcpy(r->io.core.sid, setup->server_id, sizeof(r->io.core.sid));
	r->lim = setup->lim;
	relay_io_init(&r->io, &relay_io_hooks);
	r->cnt_timer.cb = relay_counters_tick;
	r->chan_watch.fd = fd;
	r->chan_watch.cb = relay_chan_ready;
	if (rloop_watch(&r->io.loop, &r->chan_watch, EPOLLIN) == -1)
		fatal("relay: epoll_ctl");

	if (r->io.core.sid[0] != '\0') {
		relay_title(r);
		log_debug("event=relay_ready server_id=%s", r->io.core.sid);
	} else {
		proc_title("pooled relay");
		log_debug("event=relay_pooled");
	}
	/* messages that came before the loop are the channel's readiness */
	if (rloop_run(&r->io.loop) == -1)
		fatal("relay %s: epoll_pwait", r->io.core.sid);
	/* what this relay counted outlives it (docs/protocol.md §2 counters) */
	relay_out(r, 1);
	relay_counters_flush(r);
	exit(0);
}
