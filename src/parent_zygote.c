/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The relay zygote, seen from the parent (docs/pool.md, "The zygote"): it
 * is started through the spawner like a front, gets the relay's SETUP and
 * forks every relay.  A request (MSG_FORK) carries the new relay's end of
 * its channel; the parent keeps the other end, queues the relay's
 * messages on it at once, and learns the pid from the answer (SPAWNED,
 * in order), without waiting for it.  After `relay zygote renew` relays
 * or that much time, a freshly exec'd zygote takes over once it is
 * ready, and the old one exits when it has answered everything.  A
 * zygote that dies is replaced: at once, or a second later when it died
 * before its HELLO, so that one that cannot start does not spin.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "msg.h"
#include "parent.h"
#include "proc.h"
#include "proto.h"
#include "pyrelayd.h"

#define ZYGOTE_RETRY_MS		1000	/* after a zygote that could not start */

static void	parent_zygote_arm(struct parent *, int64_t);

/* Starts a zygote; NULL (and a retry later) when it cannot. */
static struct worker *
parent_zygote_start(struct parent *p)
{
	struct worker	*z;

	if ((z = parent_spawn(p, ROLE_ZYGOTE, NULL)) == NULL) {
		p->zygote_retry = now_ms() + ZYGOTE_RETRY_MS;
		parent_zygote_arm(p, ZYGOTE_RETRY_MS);
	}
	return z;
}

/* A fresh zygote to take over from the current one, once it is ready. */
static void
parent_zygote_renew(struct parent *p)
{
	if (p->stopping || p->zygote_next != NULL || p->zygote == NULL ||
	    !p->zygote->ready || now_ms() < p->zygote_retry)
		return;
	log_info("event=zygote_renew pid=%d relays=%u age_s=%lld",
	    (int)p->zygote->pid, p->zygote->nforked,
	    (long long)(now_ms() - p->zygote->started_ms) / 1000);
	p->zygote_next = parent_zygote_start(p);
}

/*
 * The zygote a relay is asked of: the current one (it may still be
 * starting: requests wait in its channel), else a new one, unless the
 * last could not start a moment ago.
 */
struct worker *
parent_zygote_for_fork(struct parent *p)
{
	if (p->zygote != NULL && p->zygote->dead)
		p->zygote = NULL;
	if (p->zygote == NULL && p->zygote_next != NULL &&
	    !p->zygote_next->dead) {
		p->zygote = p->zygote_next;
		p->zygote_next = NULL;
	}
	if (p->zygote == NULL && !p->stopping && now_ms() >= p->zygote_retry)
		p->zygote = parent_zygote_start(p);
	return p->zygote;
}

/* Asks zygote z for relay r on fd, r's end of its channel (consumed). */
void
parent_zygote_fork(struct parent *p, struct worker *z, struct worker *r,
    int fd)
{
	struct msg_empty	e = { 0 };
	int			renew;

	r->start_seq = ++z->fork_seq;
	msg_defer(&z->chan, MSG_FORK, r->start_seq, &e, sizeof(e), fd);
	parent_start_wait(p, r, z);
	z->nforked++;
	renew = z == p->zygote && z->nforked >= p->conf->zygote_renew_relays;
	/*
	 * A pool refill sends its FORKs together, when it has asked them all;
	 * a zygote about to be renewed gets what it was asked at once.
	 */
	if (!p->zygote_hold || z != p->zygote || renew)
		parent_worker_flush(z);
	if (renew)
		parent_zygote_renew(p);
}

/* A zygote renewed: it gets EOF once it has answered, and exits. */
static void
parent_zygote_close(struct parent *p, struct worker *z)
{
	if (z->dead)
		return;
	z->dead = 1;
	event_del(z->ev_read);
	event_del(z->ev_write);
	msg_chan_clear(&z->chan);
}

/* SPAWNED from a zygote (checked: a pid or an errno), oldest request first. */
static void
parent_zygote_forked(void *arg, struct msg *m)
{
	struct parent		*p = parent_instance();
	struct worker		*z = arg, *r;
	struct msg_spawned	*rep = (struct msg_spawned *)m->body;

	if ((r = TAILQ_FIRST(&z->forks)) == NULL || r->start_seq != m->hdr.id) {
		parent_worker_kill(p, z, "answer out of order");
		return;
	}
	if (rep->pid == -1)
		parent_worker_start_failed(p, r, rep->error);
	else if (parent_worker_started(p, r, rep->pid) == -1) {
		parent_worker_kill(p, z, "a pid that is not the parent's new "
		    "child");
		parent_worker_start_failed(p, r, ESRCH);
		return;
	}
	if (z->retiring && TAILQ_EMPTY(&z->forks))
		parent_zygote_close(p, z);
}

/* What the parent takes from the zygote (docs/messages.md). */
static const struct msg_rule zygote_rows[] = {
	MSG_RULE(SPAWNED, MSG_FD_NONE, parent_zygote_forked),
};
const struct msg_rules parent_from_zygote =
    MSG_RULES(ROLE_ZYGOTE, ROLE_PARENT, zygote_rows);

/* The zygote's HELLO: sandboxed, forking; a renewal takes over now. */
void
parent_zygote_ready(struct parent *p, struct worker *z)
{
	struct worker	*old = NULL;

	log_info("event=zygote_ready pid=%d", (int)z->pid);
	if (z == p->zygote_next) {
		old = p->zygote;
		p->zygote = z;
		p->zygote_next = NULL;
	}
	if (z != p->zygote)
		return;
	parent_zygote_arm(p, p->conf->zygote_renew_ms);
	if (old == NULL)
		return;
	p->zygote_renewals++;
	log_info("event=zygote_renewed pid=%d old_pid=%d relays=%u", (int)z->pid,
	    (int)old->pid, old->nforked);
	old->retiring = 1;
	if (TAILQ_EMPTY(&old->forks))
		parent_zygote_close(p, old);
}

/*
 * A zygote is gone (parent_worker_free): the relays it had not answered
 * will never run.  The current one is replaced, a second later if it died
 * young.
 */
void
parent_zygote_gone(struct parent *p, struct worker *z)
{
	struct worker	*r;
	int		 current = z == p->zygote;

	if (z == p->zygote)
		p->zygote = NULL;
	if (z == p->zygote_next)
		p->zygote_next = NULL;
	while ((r = TAILQ_FIRST(&z->forks)) != NULL)
		parent_worker_start_failed(p, r, ESRCH);
	if (z->retiring || p->stopping)
		return;
	/* one that cannot start costs an attempt a second */
	if (!z->hello)
		p->zygote_retry = now_ms() + ZYGOTE_RETRY_MS;
	if (current)
		parent_zygote_arm(p, p->zygote_retry - now_ms());
}

/*
 * The zygote's timer: a zygote where there is none (after a death, or a
 * start that failed), or a renewal when the current one is old and has
 * forked since it started.
 */
static void
parent_zygote_tick(evutil_socket_t fd, short ev, void *arg)
{
	struct parent	*p = arg;
	struct worker	*z;

	if (p->stopping)
		return;
	if ((z = p->zygote) == NULL || z->dead) {
		if (parent_zygote_for_fork(p) != NULL)
			pool_schedule(p, 0);
		return;
	}
	if (now_ms() - z->started_ms < p->conf->zygote_renew_ms) {
		parent_zygote_arm(p, z->started_ms + p->conf->zygote_renew_ms -
		    now_ms());
		return;
	}
	if (z->nforked > 0)
		parent_zygote_renew(p);
	else
		parent_zygote_arm(p, p->conf->zygote_renew_ms);
}

static void
parent_zygote_arm(struct parent *p, int64_t ms)
{
	struct timeval	tv;

	if (p->ev_zygote == NULL)
		p->ev_zygote = evtimer_new(p->base, parent_zygote_tick, p);
	if (p->ev_zygote == NULL)
		fatalx("parent: evtimer_new");
	tv = ms_timeval(ms);
	evtimer_add(p->ev_zygote, &tv);
}

/* At start, after the fronts: the first zygote, so that no claim waits for it. */
void
parent_zygote_init(struct parent *p)
{
	(void)parent_zygote_for_fork(p);
}
