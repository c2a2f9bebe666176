/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The parent's side of push wakes (docs/push.md): it starts the push
 * process with the service-account key it reads as root, takes the wakes
 * relays admitted, applies the relay-wide cap of PUSH_IN_FLIGHT_MAX sends
 * in flight, hands them to the push process and counts their outcomes.
 * A push process is replaced without losing a wake (the new one takes new
 * wakes once it is sandboxed, the old one finishes what it holds) after a
 * reload, every PUSH_RENEW_MS (its addresses are resolved again) and when
 * it cannot reach an endpoint; one that dies is restarted, and the wakes
 * that arrive meanwhile are dropped and counted.  An upgrade carries the
 * push processes and their wakes over to the next image, which replaces
 * them in the same way (parent_push_save, parent_push_adopt).
 */
#include "config.h"

#include <sys/types.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "msg.h"
#include "parent.h"
#include "proto.h"
#include "push.h"
#include "pyrelayd.h"
#include "upgrade_state.h"

#define PUSH_RESTART_MS		100		/* first restart after a death */
#define PUSH_RESTART_MAX_MS	30000		/* for one that keeps dying */
#define PUSH_STABLE_MS		10000		/* lived this long: not failing */
#define PUSH_RENEW_MS		(3600 * 1000)	/* addresses resolved again */
#define PUSH_REFRESH_MIN_MS	60000		/* between two asked-for ones */
#define PUSH_REPLACE_RETRY_MS	60000		/* a replacement that failed */

struct push_inflight {
	uint64_t	 id;			/* 0: a free slot */
	struct worker	*w;			/* the push process holding it */
	char		 sid[SERVER_ID_MAX + 1];
	char		 hash[PUSH_HASH_LEN + 1];
	int64_t		 started_ms;
};

struct parent_push {
	struct worker		*cur;		/* sandboxed: new wakes go to it */
	struct worker		*next;		/* starting, to replace cur */
	int			 again;		/* settings changed while starting */
	struct push_inflight	 wakes[PUSH_IN_FLIGHT_MAX];
	int			 nwakes;
	uint64_t		 seq;
	uint64_t		 outcomes[PUSH_OUTCOME_MAX];
	int			 drop_logged;	/* since the last admitted wake */
	int64_t			 backoff_ms;
	int64_t			 started_ms;	/* the last start */
	struct event		*ev_start;
	struct event		*ev_renew;
};

/* the parent, for the handlers of its tables (msg_handle passes the worker) */
static struct parent	*P;

static void	push_start(struct parent *);

static int
push_configured(const struct parent *p)
{
	return p->conf->fcm_credentials[0] != '\0';
}

static void
push_timer(struct event *ev, int64_t ms)
{
	struct timeval	tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(ev, &tv);
}

static void
push_start_cb(evutil_socket_t fd, short ev, void *arg)
{
	push_start(arg);
}

/*
 * A start that failed, or a process that died: again after the backoff.
 * While a push process still serves, a replacement that failed is tried
 * again later instead; nothing is dropped meanwhile.
 */
static void
push_retry(struct parent *p, int64_t lived_ms)
{
	struct parent_push	*pp = p->push;

	if (pp->cur != NULL && !pp->cur->dead) {
		if (p->stopping || !push_configured(p))
			return;
		log_warnx("event=push_replace_failed pid=%d action=keep "
		    "retry_ms=%d", (int)pp->cur->pid, PUSH_REPLACE_RETRY_MS);
		push_timer(pp->ev_renew, PUSH_REPLACE_RETRY_MS);
		return;
	}
	if (lived_ms >= PUSH_STABLE_MS || pp->backoff_ms == 0)
		pp->backoff_ms = PUSH_RESTART_MS;
	else if ((pp->backoff_ms *= 2) > PUSH_RESTART_MAX_MS)
		pp->backoff_ms = PUSH_RESTART_MAX_MS;
	if (p->stopping || !push_configured(p))
		return;
	log_warnx("event=push_restarting in_ms=%lld note=\"wakes are dropped "
	    "meanwhile\"", (long long)pp->backoff_ms);
	push_timer(pp->ev_start, pp->backoff_ms);
}

/*
 * The key and settings for a push process, read now: the key as root,
 * the CA bundle opened here and passed as the message's fd.
 */
static int
push_config(struct parent *p, struct msg_push_config *mc, int *cafd)
{
	struct push_key	*key;
	const char	*ca;
	char		 err[PATH_MAX + 256];
	int		 rv = -1;

	key = xmalloc(sizeof(*key));
	ca = p->conf->push_ca[0] != '\0' ? p->conf->push_ca : PUSH_DEFAULT_CA;
	if (push_key_load(p->conf->fcm_credentials, key, err,
	    sizeof(err)) == -1)
		log_warnx("event=push_config_error reason=\"%s\"", err);
	else if ((*cafd = open(ca, O_RDONLY | O_CLOEXEC)) == -1)
		log_warn("event=push_config_error file=\"%s\"", ca);
	else {
		memset(mc, 0, sizeof(*mc));
		strlcpy(mc->client_email, key->client_email,
		    sizeof(mc->client_email));
		strlcpy(mc->token_uri, key->token_uri, sizeof(mc->token_uri));
		strlcpy(mc->endpoint, p->conf->fcm_endpoint[0] != '\0' ?
		    p->conf->fcm_endpoint : PUSH_DEFAULT_ENDPOINT,
		    sizeof(mc->endpoint));
		strlcpy(mc->project, p->conf->fcm_project[0] != '\0' ?
		    p->conf->fcm_project : key->project_id,
		    sizeof(mc->project));
		memcpy(mc->key, key->pem, key->pem_len);
		mc->key_len = key->pem_len;
		rv = 0;
	}
	freezero(key, sizeof(*key));
	return rv;
}

/* Starts a push process; it takes over from the current one at its HELLO. */
static void
push_start(struct parent *p)
{
	struct parent_push	*pp = p->push;
	struct msg_push_config	*mc;
	struct worker		*w;
	int			 cafd = -1;

	evtimer_del(pp->ev_start);
	if (p->stopping || !push_configured(p))
		return;
	if (pp->next != NULL) {
		pp->again = 1;
		return;
	}
	pp->again = 0;
	pp->started_ms = now_ms();
	mc = xmalloc(sizeof(*mc));
	if (push_config(p, mc, &cafd) == -1) {
		freezero(mc, sizeof(*mc));
		push_retry(p, 0);
		return;
	}
	if ((w = parent_spawn(p, ROLE_PUSH, NULL)) == NULL) {
		close(cafd);
		freezero(mc, sizeof(*mc));
		push_retry(p, 0);
		return;
	}
	msg_compose(&w->chan, MSG_PUSH_CONFIG, 0, mc, sizeof(*mc), cafd);
	freezero(mc, sizeof(*mc));
	parent_worker_flush(w);
	pp->next = w;
	log_debug("event=push_starting pid=%d", (int)w->pid);
}

static void
push_renew(evutil_socket_t fd, short ev, void *arg)
{
	log_debug("event=push_renew");
	push_start(arg);
}

void
parent_push_init(struct parent *p)
{
	struct parent_push	*pp;

	P = p;
	pp = p->push = xcalloc(1, sizeof(*pp));
	if ((pp->ev_start = evtimer_new(p->base, push_start_cb, p)) == NULL ||
	    (pp->ev_renew = evtimer_new(p->base, push_renew, p)) == NULL)
		fatalx("parent: evtimer_new");
}

void
parent_push_settings(struct config *running, const struct config *nc)
{
	strlcpy(running->fcm_credentials, nc->fcm_credentials,
	    sizeof(running->fcm_credentials));
	strlcpy(running->fcm_project, nc->fcm_project,
	    sizeof(running->fcm_project));
	strlcpy(running->fcm_endpoint, nc->fcm_endpoint,
	    sizeof(running->fcm_endpoint));
	strlcpy(running->push_ca, nc->push_ca, sizeof(running->push_ca));
	running->fcm_line = nc->fcm_line;
	running->push_ca_line = nc->push_ca_line;
}

/* Tells a push process to finish the wakes it holds and exit. */
static void
push_retire(struct worker *w)
{
	struct msg_empty	e = { 0 };

	if (w == NULL || w->dead || w->retired)
		return;
	w->retired = 1;
	msg_compose(&w->chan, MSG_PUSH_RETIRE, 0, &e, sizeof(e), -1);
	parent_worker_flush(w);
}

void
parent_push_reload(struct parent *p)
{
	struct parent_push	*pp = p->push;

	if (push_configured(p)) {
		/* the key and the settings are read again for a new one */
		pp->backoff_ms = 0;
		push_start(p);
		return;
	}
	/* push is off now: what is in flight still completes */
	push_retire(pp->cur);
	pp->cur = NULL;
	pp->again = 0;
	evtimer_del(pp->ev_start);
	evtimer_del(pp->ev_renew);
	if (pp->next != NULL)
		push_retire(pp->next);
	pp->next = NULL;
}

/*
 * At a start, the first push process.  After an upgrade (docs/upgrade.md)
 * the push processes of the image before were adopted with the wakes they
 * hold: as after a reload, one started from the program now installed
 * takes the wakes once it is sandboxed, and the adopted one finishes what
 * it holds, then exits.  The way back keeps the adopted ones as they were.
 */
void
parent_push_start(struct parent *p)
{
	struct parent_push	*pp = p->push;

	switch (parent_upgrade_mode()) {
	case UPGRADE_IN:
		parent_push_reload(p);
		break;
	case UPGRADE_BACK:
		if (pp->cur != NULL && !pp->cur->dead)
			push_timer(pp->ev_renew, PUSH_RENEW_MS);
		else if (pp->cur == NULL && pp->next == NULL)
			push_start(p);
		/* else a dead one's reaping starts the next */
		break;
	default:
		push_start(p);
	}
}

/* The new push process is sandboxed: it takes the wakes from now on. */
void
parent_push_ready(struct parent *p, struct worker *w)
{
	struct parent_push	*pp = p->push;

	if (w != pp->next) {
		/*
		 * Replaced or turned off while it started: it may have passed
		 * over a RETIRE sent before its set-up ended, so again.
		 */
		w->retired = 0;
		push_retire(w);
		return;
	}
	pp->next = NULL;
	push_retire(pp->cur);
	pp->cur = w;
	log_info("event=push_ready pid=%d", (int)w->pid);
	push_timer(pp->ev_renew, PUSH_RENEW_MS);
	if (pp->again)
		push_start(p);
}

static void
push_wake_line(const struct push_inflight *f, const char *error)
{
	log_info("event=push_wake_send_failed server_id=%s token=%s "
	    "duration_ms=%lld outcome=send_failed error=\"%s\"", f->sid,
	    f->hash, (long long)(now_ms() - f->started_ms), error);
}

void
parent_push_exited(struct parent *p, struct worker *w)
{
	struct parent_push	*pp = p->push;
	int			 i;

	/* the wakes it held: each gets its one line, as a failed send */
	for (i = 0; i < PUSH_IN_FLIGHT_MAX; i++) {
		if (pp->wakes[i].id == 0 || pp->wakes[i].w != w)
			continue;
		push_wake_line(&pp->wakes[i], "push process exited");
		pp->outcomes[PUSH_SEND_FAILED]++;
		memset(&pp->wakes[i], 0, sizeof(pp->wakes[i]));
		pp->nwakes--;
	}
	if (w == pp->next) {
		pp->next = NULL;
		if (pp->again)
			push_start(p);
		else
			push_retry(p, 0);
	} else if (w == pp->cur) {
		pp->cur = NULL;
		evtimer_del(pp->ev_renew);
		if (pp->next == NULL)
			push_retry(p, now_ms() - w->started_ms);
	}
}

/* Counted, and the first of a run logged: relays may send many at once. */
static void
push_drop(struct parent_push *pp, const char *sid, const char *hash,
    const char *reason)
{
	pp->outcomes[PUSH_DROPPED]++;
	if (!pp->drop_logged)
		log_info("event=push_wake_dropped server_id=%s token=%s "
		    "reason=%s in_flight=%d", sid, hash, reason, pp->nwakes);
	else
		log_debug("event=push_wake_dropped server_id=%s token=%s "
		    "reason=%s in_flight=%d", sid, hash, reason, pp->nwakes);
	pp->drop_logged = 1;
}

/* docs/protocol.md §6, the last check: PUSH_IN_FLIGHT_MAX relay-wide. */
void
parent_push_wake(void *arg, struct msg *m)
{
	struct parent		*p = P;
	struct worker		*r = arg;
	struct parent_push	*pp = p->push;
	struct msg_push_wake	*pw = (struct msg_push_wake *)m->body;
	struct msg_push_send	 ps;
	struct push_inflight	*f;
	char			 hash[PUSH_HASH_LEN + 1];
	int			 i;

	/* a relay's (the table), not a pooled one's, a token (its check) */
	push_token_hash(pw->token, hash);
	if (!push_configured(p)) {
		/* sent before the relay heard of a reload that turned push off */
		log_debug("event=push_wake_dropped server_id=%s token=%s "
		    "reason=no_credentials", r->sid, hash);
		return;
	}
	if (pp->cur == NULL || pp->cur->dead) {
		push_drop(pp, r->sid, hash, "no_push_process");
		return;
	}
	if (pp->nwakes >= PUSH_IN_FLIGHT_MAX) {
		push_drop(pp, r->sid, hash, "in_flight");
		return;
	}
	for (i = 0; pp->wakes[i].id != 0; i++)
		;
	f = &pp->wakes[i];
	f->id = ++pp->seq;
	f->w = pp->cur;
	strlcpy(f->sid, r->sid, sizeof(f->sid));
	strlcpy(f->hash, hash, sizeof(f->hash));
	f->started_ms = now_ms();
	pp->nwakes++;
	pp->drop_logged = 0;
	memset(&ps, 0, sizeof(ps));
	strlcpy(ps.server_id, r->sid, sizeof(ps.server_id));
	strlcpy(ps.token, pw->token, sizeof(ps.token));
	msg_compose(&pp->cur->chan, MSG_PUSH_SEND, f->id, &ps, sizeof(ps), -1);
	parent_worker_flush(pp->cur);
}

/* A wake's outcome (checked: msg_push_done_check), for a wake it holds. */
static void
push_done(void *arg, struct msg *m)
{
	struct parent		*p = P;
	struct worker		*w = arg;
	struct parent_push	*pp = p->push;
	struct msg_push_done	*d = (struct msg_push_done *)m->body;
	int			 i;

	for (i = 0; i < PUSH_IN_FLIGHT_MAX; i++)
		if (pp->wakes[i].id == m->hdr.id && pp->wakes[i].w == w)
			break;
	if (m->hdr.id == 0 || i == PUSH_IN_FLIGHT_MAX) {
		parent_worker_kill(p, w, "PUSH_DONE for no wake it holds");
		return;
	}
	pp->outcomes[d->outcome]++;
	memset(&pp->wakes[i], 0, sizeof(pp->wakes[i]));
	pp->nwakes--;
}

/* It cannot reach an endpoint: a new one resolves the names again. */
static void
push_refresh(void *arg, struct msg *m)
{
	struct parent		*p = P;
	struct worker		*w = arg;
	struct parent_push	*pp = p->push;

	if (w != pp->cur || pp->next != NULL ||
	    now_ms() - pp->started_ms < PUSH_REFRESH_MIN_MS)
		return;
	log_info("event=push_refresh pid=%d reason=unreachable", (int)w->pid);
	push_start(p);
}

/*
 * What the parent takes from a push process (docs/messages.md), each with
 * its handler above; anything else kills it.
 */
static const struct msg_rule push_rows[] = {
	MSG_RULE(PUSH_DONE, MSG_FD_NONE, push_done),
	MSG_RULE(PUSH_REFRESH, MSG_FD_NONE, push_refresh),
};
const struct msg_rules parent_from_push =
    MSG_RULES(ROLE_PUSH, ROLE_PARENT, push_rows);

/* ---- the upgrade (docs/upgrade.md) ---------------------------------------- */

void
parent_push_save_values(const struct parent *p, struct us_push_values *v)
{
	const struct parent_push	*pp = p->push;

	_Static_assert(sizeof(v->outcomes) == sizeof(pp->outcomes),
	    "every outcome");
	memset(v, 0, sizeof(*v));
	v->seq = pp->seq;
	memcpy(v->outcomes, pp->outcomes, sizeof(v->outcomes));
	v->started_ms = pp->started_ms;
	v->backoff_ms = pp->backoff_ms;
	v->again = pp->again;
	v->drop_logged = pp->drop_logged;
}

void
parent_push_adopt_values(struct parent *p, const struct us_push_values *v)
{
	struct parent_push	*pp = p->push;

	pp->seq = v->seq;
	memcpy(pp->outcomes, v->outcomes, sizeof(pp->outcomes));
	pp->started_ms = v->started_ms;
	pp->backoff_ms = v->backoff_ms;
	pp->again = v->again != 0;
	pp->drop_logged = v->drop_logged != 0;
}

/* Push process w's record, index its US_WORKER's: its part, its wakes. */
void
parent_push_save(const struct parent *p, const struct worker *w,
    uint32_t index, struct ustate *us)
{
	const struct parent_push	*pp = p->push;
	struct us_push			*r;
	struct us_push_wake		*uw;
	int				 i;

	_Static_assert(sizeof(uw->hash) > PUSH_HASH_LEN, "the hash fits");
	r = xcalloc(1, sizeof(*r));
	r->worker = index;
	r->part = w == pp->cur ? US_PUSH_CURRENT : w == pp->next ?
	    US_PUSH_NEXT : US_PUSH_RETIRING;
	for (i = 0; i < PUSH_IN_FLIGHT_MAX; i++) {
		if (pp->wakes[i].id == 0 || pp->wakes[i].w != w)
			continue;
		uw = &r->wakes[r->nwakes++];
		uw->id = pp->wakes[i].id;
		uw->started_ms = pp->wakes[i].started_ms;
		strlcpy(uw->sid, pp->wakes[i].sid, sizeof(uw->sid));
		strlcpy(uw->hash, pp->wakes[i].hash, sizeof(uw->hash));
	}
	ustate_add(us, US_PUSH, r, sizeof(*r), NULL, 0);
	free(r);
}

/*
 * Push process w from the state (checked: adopt_read_push), with the
 * wakes it holds, whose PUSH_DONE this image counts.  One that was
 * starting is the next only on the way back: after an upgrade it is of
 * the program before, and is retired once it says HELLO
 * (parent_push_ready), as a new one is started.
 */
void
parent_push_adopt(struct parent *p, struct worker *w, const struct us_push *r,
    int back)
{
	struct parent_push	*pp = p->push;
	struct push_inflight	*f;
	uint32_t		 i;
	int			 j;

	if (r->part == US_PUSH_CURRENT)
		pp->cur = w;
	else if (r->part == US_PUSH_NEXT && back)
		pp->next = w;
	for (i = 0; i < r->nwakes && pp->nwakes < PUSH_IN_FLIGHT_MAX; i++) {
		for (j = 0; pp->wakes[j].id != 0; j++)
			;
		f = &pp->wakes[j];
		f->id = r->wakes[i].id;
		f->w = w;
		f->started_ms = r->wakes[i].started_ms;
		strlcpy(f->sid, r->wakes[i].sid, sizeof(f->sid));
		strlcpy(f->hash, r->wakes[i].hash, sizeof(f->hash));
		pp->nwakes++;
	}
}

void
parent_push_metrics(struct parent *p, struct msg_metrics *mm)
{
	mm->push_configured = push_configured(p);
	memcpy(mm->push_wakes, p->push->outcomes, sizeof(mm->push_wakes));
}
