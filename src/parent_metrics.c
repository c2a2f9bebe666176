/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The parent's answers to a front's /healthz and /metrics requests
 * (docs/messages.md): the counts the parent keeps, and the relays'
 * counters summed.  A scrape first asks the relays that counted lately for
 * what they still hold, and waits a moment for their answers.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"
#include "parent.h"
#include "proto.h"
#include "pyrelayd.h"

/* How long a scrape waits for the relays it asked for their counters. */
#define METRICS_WAIT_MS	250

/* Answers every waiting /metrics request with what is known now. */
static void
parent_metrics_answer(struct parent *p)
{
	struct msg_metrics	*mm;
	struct metrics_req	*q;
	struct worker		*r;

	evtimer_del(p->ev_cnt_wait);
	/* the wait ran out: the late answers count for the next one */
	while ((r = TAILQ_FIRST(&p->cnt_asked)) != NULL) {
		TAILQ_REMOVE(&p->cnt_asked, r, ask_entry);
		r->cnt_asked = 0;
	}
	p->cnt_asking = 0;
	mm = xcalloc(1, sizeof(*mm));
	mm->binaries = p->binaries;
	mm->phones = p->phones;
	mm->uptime_s = (now_ms() - p->started_ms) / 1000;
	mm->connections = p->live;
	mm->accepted = p->accepted;
	mm->addresses = p->nips;
	mm->relays_alive = p->nrelays - p->npool;
	mm->relays_pooled = p->npool_ready;
	mm->assignments = p->assignments;
	mm->conns_lost = p->conns_lost;
	mm->relays_all = p->nrelays;
	mm->max_relays = p->conf->max_relays;
	mm->relay_cap_refusals = p->refused[REFUSED_RELAY_CAP].total;
	mm->address_cap_refusals = p->refused[REFUSED_ADDRESS_CAP].total;
	memcpy(mm->relay_exits, p->relay_exits, sizeof(mm->relay_exits));
	mm->relays_started = p->relays_started;
	memcpy(mm->front_outcomes, p->front_outcomes, sizeof(mm->front_outcomes));
	mm->c = p->cnt;
	parent_push_metrics(p, mm);
	while ((q = TAILQ_FIRST(&p->metrics_reqs)) != NULL) {
		TAILQ_REMOVE(&p->metrics_reqs, q, entry);
		if (!q->front->dead) {
			msg_compose(&q->front->chan, MSG_METRICS, q->id, mm,
			    sizeof(*mm), -1);
			parent_worker_flush(q->front);
		}
		free(q);
	}
	free(mm);
}

void
parent_metrics_flush(struct parent *p)
{
	if (!TAILQ_EMPTY(&p->metrics_reqs))
		parent_metrics_answer(p);
}

void
parent_metrics_timeout(evutil_socket_t fd, short ev, void *arg)
{
	parent_metrics_answer(arg);
}

/* A relay asked for its counters answered, or is gone. */
void
parent_metrics_relay_done(struct parent *p, struct worker *r)
{
	if (!r->cnt_asked)
		return;
	TAILQ_REMOVE(&p->cnt_asked, r, ask_entry);
	r->cnt_asked = 0;
	if (--p->cnt_asking == 0)
		parent_metrics_answer(p);
}

/*
 * A relay sent RELAY_COUNTERS: it moves to the end of cnt_recent, which so
 * stays in the order of cnt_ms, and a scrape finds the relays that counted
 * lately at its end without looking at the others.
 */
void
parent_metrics_counted(struct parent *p, struct worker *r)
{
	r->cnt_ms = now_ms();
	if (r->cnt_listed)
		TAILQ_REMOVE(&p->cnt_recent, r, cnt_entry);
	TAILQ_INSERT_TAIL(&p->cnt_recent, r, cnt_entry);
	r->cnt_listed = 1;
}

void
parent_metrics_relay_gone(struct parent *p, struct worker *r)
{
	if (!r->cnt_listed)
		return;
	TAILQ_REMOVE(&p->cnt_recent, r, cnt_entry);
	r->cnt_listed = 0;
}

/*
 * /metrics: a relay that counted in the last window may still hold
 * increments (proto.h RELAY_COUNTERS), so those relays are asked for them
 * and the answer waits for theirs, METRICS_WAIT_MS at most.  A request
 * made while relays are being asked is answered with that round.
 */
void
parent_metrics(struct parent *p, struct worker *w, struct msg *m)
{
	struct msg_empty	 e = { 0 };
	struct metrics_req	*q;
	struct worker		*r;
	struct timeval		 tv = ms_timeval(METRICS_WAIT_MS);
	int64_t			 now;

	parent_drain_relays(p);
	q = xcalloc(1, sizeof(*q));
	q->front = w;
	q->id = m->hdr.id;
	TAILQ_INSERT_TAIL(&p->metrics_reqs, q, entry);
	if (p->cnt_asking > 0)
		return;
	now = now_ms();
	/* from the newest back: relays quiet for longer hold nothing */
	TAILQ_FOREACH_REVERSE(r, &p->cnt_recent, worker_list, cnt_entry) {
		if (now - r->cnt_ms > 2 * RELAY_COUNTERS_MS)
			break;
		if (r->dead)
			continue;
		msg_compose(&r->chan, MSG_COUNTERS_REQ, 0, &e, sizeof(e), -1);
		parent_worker_flush(r);
		r->cnt_asked = 1;
		TAILQ_INSERT_TAIL(&p->cnt_asked, r, ask_entry);
		p->cnt_asking++;
	}
	if (p->cnt_asking == 0)
		parent_metrics_answer(p);
	else
		evtimer_add(p->ev_cnt_wait, &tv);
}

/* A front is gone: its waiting requests with it. */
void
parent_metrics_front_gone(struct parent *p, struct worker *w)
{
	struct metrics_req	*q, *next;

	TAILQ_FOREACH_SAFE(q, &p->metrics_reqs, entry, next) {
		if (q->front != w)
			continue;
		TAILQ_REMOVE(&p->metrics_reqs, q, entry);
		free(q);
	}
}

/* Adds a relay's increments; absurd values mark a lying relay. */
void
parent_add_counters(struct parent *p, const struct relay_counters *d)
{
	const uint64_t	*src = (const uint64_t *)d;
	uint64_t	*dst = (uint64_t *)&p->cnt;
	size_t		 i, n = sizeof(*d) / sizeof(uint64_t);

	for (i = 0; i < n; i++)
		dst[i] += src[i];
}

void
parent_health(struct parent *p, struct worker *w, struct msg *m)
{
	struct msg_health	 h;

	parent_drain_relays(p);
	memset(&h, 0, sizeof(h));
	h.binaries = p->binaries;
	h.phones = p->phones;
	h.uptime_s = (now_ms() - p->started_ms) / 1000;
	h.draining = p->draining != 0;
	msg_compose(&w->chan, MSG_HEALTH, m->hdr.id, &h, sizeof(h), -1);
	parent_worker_flush(w);
}
