/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The relay pool (docs/pool.md): relays forked ahead of claims, waiting
 * with no server-id; a binary for a new server-id takes one, and the pool
 * is refilled later, never on the claim's path.  Resized on reload.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <signal.h>
#include <string.h>

#include "msg.h"
#include "parent.h"
#include "proto.h"
#include "pyrelayd.h"

void
pool_schedule(struct parent *p, int64_t ms)
{
	struct timeval	tv;

	if (p->stopping || p->npool >= p->conf->relay_pool ||
	    !admit_relay(p, 0))
		return;
	/* after a relay failed its start, none sooner than its retry */
	if (now_ms() + ms < p->pool_retry_at)
		ms = p->pool_retry_at - now_ms();
	/* a refill already set for then or sooner stands */
	if (evtimer_pending(p->ev_pool_fill, NULL) &&
	    p->pool_fill_at <= now_ms() + ms)
		return;
	p->pool_fill_at = now_ms() + ms;
	tv = ms_timeval(ms);
	evtimer_add(p->ev_pool_fill, &tv);
}

/*
 * Asks the zygote for relays up to `relay pool`.  A fork is cheap (about
 * 130 us of CPU, in the zygote: docs/pool.md) and the zygote forks one at
 * a time, so the whole refill is asked at once, every FORK with one
 * sendmmsg (zygote_hold), and the zygote answers them together; the
 * parent never waits for it.
 */
void
pool_fill(evutil_socket_t fd, short ev, void *arg)
{
	struct parent	*p = arg;
	struct worker	*w;

	p->zygote_hold = 1;
	/* pooled relays count against max relays: the pool never passes it */
	while (!p->stopping && p->npool < p->conf->relay_pool &&
	    admit_relay(p, 0)) {
		if ((w = parent_spawn(p, ROLE_RELAY, NULL)) == NULL) {
			pool_schedule(p, POOL_RETRY_MS);
			break;
		}
		w->pooled = 1;
		TAILQ_INSERT_TAIL(&p->pool, w, pool_entry);
		p->npool++;
	}
	p->zygote_hold = 0;
	if (p->zygote != NULL && !p->zygote->dead)
		parent_worker_flush(p->zygote);
}

/* Takes a relay out of the pool (it is no longer counted there). */
void
pool_remove(struct parent *p, struct worker *w)
{
	if (!w->pooled)
		return;
	TAILQ_REMOVE(&p->pool, w, pool_entry);
	w->pooled = 0;
	p->npool--;
	if (w->ready)
		p->npool_ready--;
}

/*
 * A pooled relay for a server-id: one that is ready (sandboxed, waiting)
 * first, else one still starting; NULL when the pool is empty.  The pool
 * is refilled later, never on the claim's path.
 */
struct worker *
pool_take(struct parent *p, const char *sid)
{
	struct worker	*w, *pick = NULL;

	TAILQ_FOREACH(w, &p->pool, pool_entry) {
		if (w->dead)
			continue;
		if (w->ready) {
			pick = w;
			break;
		}
		if (pick == NULL)
			pick = w;
	}
	if (pick == NULL)
		return NULL;
	pool_remove(p, pick);
	parent_relay_assign(p, pick, sid);
	p->assignments++;
	/*
	 * Refilled soon, not at once: a burst of claims has its relays
	 * asked for together (pool_fill), or at once when half are gone.
	 */
	pool_schedule(p, p->npool <= p->conf->relay_pool / 2 ? 0 :
	    POOL_REFILL_MS);
	return pick;
}

/* Gives relay w (forked with no server-id) its server-id, for life. */
void
parent_relay_assign(struct parent *p, struct worker *w, const char *sid)
{
	struct msg_assign	a;

	strlcpy(w->sid, sid, sizeof(w->sid));
	w->started_ms = now_ms();
	memset(&a, 0, sizeof(a));
	strlcpy(a.server_id, sid, sizeof(a.server_id));
	a.lim = p->conf->lim;
	/* it leaves with the CONN_ATTACH that follows (parent_route) */
	msg_defer(&w->chan, MSG_ASSIGN, 0, &a, sizeof(a), -1);
}

/*
 * After a reload: start what is missing, stop what is beyond the size, and
 * idle relays past a lowered `max relays` (a relay serving a server-id is
 * left alone: claims wait until enough of those have retired).
 */
void
pool_resize(struct parent *p)
{
	struct worker	*w;
	uint32_t	 over = 0;

	if (p->nrelays > p->conf->max_relays)
		over = p->nrelays - p->conf->max_relays;
	while ((p->npool > p->conf->relay_pool || over > 0) &&
	    (w = TAILQ_LAST(&p->pool, worker_list)) != NULL) {
		if (over > 0)
			over--;
		pool_stop(p, w);
	}
	pool_schedule(p, 0);
}

void
pool_stop(struct parent *p, struct worker *w)
{
	pool_remove(p, w);
	/* it served no server-id: its exit is not a relay's (pooled=1) */
	w->pool_stopped = 1;
	log_info("event=relay_pool_stop pid=%d", (int)w->pid);
	parent_worker_signal(w, SIGTERM);
}
