/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The parent (supervisor, docs/architecture.md): opens the listeners, starts the
 * fronts, accepts connections, applies admission (rate limit, caps), keeps
 * the map server-id -> relay process, and routes connections to relays.
 * It reads only typed messages from its own workers and treats each as
 * hostile: a bad one kills the worker, never the parent.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
/* libbsd leaves __unused undefined on glibc; the tree macros need it */
#ifndef __unused
#define __unused __attribute__((__unused__))
#endif
#include <sys/tree.h>
#include <sys/wait.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <linux/openat2.h>

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "msg.h"
#include "parent.h"
#include "proc.h"
#include "proto.h"
#include "pyrelayd.h"
#include "sandbox.h"
#include "tls.h"

#define ACCEPT_BATCH		64	/* accepts per listener wakeup */
#define ACCEPT_PAUSE_MS		1000	/* after EMFILE/ENFILE */
#define DRAIN_DEADLINE_MS	10000	/* docs/protocol.md §7 */
#define ACME_CHALLENGE_DIR	".well-known/acme-challenge/"	/* below the webroot */

static struct parent	*P;

struct parent *
parent_instance(void)
{
	return P;
}

int
conn_cmp(struct conn_rec *a, struct conn_rec *b)
{
	return a->id < b->id ? -1 : a->id > b->id;
}
RB_GENERATE(conn_tree, conn_rec, entry, conn_cmp)

int
relay_cmp(struct worker *a, struct worker *b)
{
	return strcmp(a->sid, b->sid);
}
RB_GENERATE(relay_map, worker, map, relay_cmp)

int
pid_cmp(struct worker *a, struct worker *b)
{
	return a->pid < b->pid ? -1 : a->pid > b->pid;
}
RB_GENERATE(worker_pids, worker, bypid, pid_cmp)

static void	parent_route(struct parent *, struct conn_rec *,
		    struct msg_conn_upgrade *, int);

/* ---- connection accounting ------------------------------------------- */

void
conn_set_owner(struct conn_rec *c, struct worker *w)
{
	if (c->owner != NULL)
		TAILQ_REMOVE(&c->owner->conns, c, owned);
	c->owner = w;
	if (w != NULL)
		TAILQ_INSERT_TAIL(&w->conns, c, owned);
}

void
conn_release(struct parent *p, struct conn_rec *c)
{
	conn_set_owner(c, NULL);
	RB_REMOVE(conn_tree, &p->conns, c);
	p->live--;
	admit_ip_release(p, c->ip);
	free(c);
}

/*
 * A connection whose fd was lost on its way between two processes, because
 * the receiver had no descriptor free (RLIMIT_NOFILE): the kernel closed
 * it, so the client sees its connection end.  Only that connection is
 * dropped; the channel and the other connections go on.
 */
static void
conn_lost(struct parent *p, struct conn_rec *c, const char *where)
{
	p->conns_lost++;
	log_warnx("event=connection_lost conn=%llu receiver=%s "
	    "limit=RLIMIT_NOFILE", (unsigned long long)c->id, where);
	conn_release(p, c);
}

/* ---- workers ------------------------------------------------------------ */

void
parent_worker_flush(struct worker *w)
{
	const char	*why;
	int		 rv;

	if (w->dead)
		return;
	if ((rv = msg_flush(&w->chan)) == -1) {
		log_warnx("event=worker_channel_error role=%s pid=%d error=\"%s\"",
		    proc_role_name(w->role), (int)w->pid, w->chan.errstr);
		return;
	}
	if (rv == 1)
		return;
	/* a worker that stopped reading does not grow the parent: it goes */
	if ((why = parent_check_outq(w)) != NULL) {
		parent_worker_kill(P, w, why);
		return;
	}
	event_add(w->ev_write, NULL);
}

void
parent_worker_log_kill(const struct worker *w)
{
	log_warnx("event=worker_killed role=%s pid=%d server_id=%s reason=\"%s\"",
	    proc_role_name(w->role), (int)w->pid, w->sid[0] ? w->sid : "-",
	    w->killed_why);
}

/* A worker broke the rules or lost its channel: kill it; reaping does the rest. */
void
parent_worker_kill(struct parent *p, struct worker *w, const char *why)
{
	if (w->dead)
		return;
	/* a worker started but not yet named: its kill is logged with its pid */
	strlcpy(w->killed_why, why, sizeof(w->killed_why));
	if (w->pid > 0)
		parent_worker_log_kill(w);
	w->dead = 1;
	w->killed = 1;
	parent_worker_signal(w, SIGKILL);
	parent_relay_unwatch(p, w);
	parent_ctl_relay_gone(p, w);
	event_del(w->ev_read);
	event_del(w->ev_write);
	if (w->in_map) {
		RB_REMOVE(relay_map, &p->relays, w);
		w->in_map = 0;
	}
}

/*
 * Reads the certificate and key (as root) and queues them for one front;
 * the parent keeps no copy (docs/architecture.md "TLS").
 */
int
parent_send_tls(struct parent *p, struct worker *w, char *err, size_t errlen)
{
	struct msg_tls	*mt;
	int		 rv = 0;

	mt = xmalloc(sizeof(*mt));
	if (tls_load_files(p->conf->tls_cert, p->conf->tls_key, mt, err,
	    errlen) == -1)
		rv = -1;
	else if (w == NULL) {
		SSL_CTX	*ctx;

		/* a check only: the key must match the chain, as a front will see */
		if ((ctx = tls_ctx_new(mt, "", err, errlen)) == NULL)
			rv = -1;
		SSL_CTX_free(ctx);
	} else {
		msg_compose(&w->chan, MSG_TLS, 0, mt, sizeof(*mt), -1);
		parent_worker_flush(w);
	}
	freezero(mt, sizeof(*mt));
	return rv;
}

/*
 * The front for a connection: in turn, but a plain connection goes to the
 * front the last one went to while that front has not answered it yet
 * (and fewer than FRONT_STICKY_MAX): it is awake, or woken already, so
 * this one costs it no wake-up of its own, where taking turns woke each
 * front once a connection (docs/architecture.md, a connection's step 1).  A TLS
 * handshake costs a front a millisecond: those take turns.
 */
#define FRONT_STICKY_MAX	8

static struct worker *
parent_pick_front(struct parent *p, int sticky)
{
	int	i;
	struct worker *w, *r;

	w = p->last_front;
	if (sticky && w != NULL && !w->dead && w->hello && w->front_slot != -1 &&
	    w->unheard > 0 && w->unheard < FRONT_STICKY_MAX)
		return w;
	for (i = 0; i < p->nfronts; i++) {
		w = p->fronts[(p->next_front + i) % p->nfronts];
		if (w != NULL && !w->dead) {
			p->next_front = (p->next_front + i + 1) % p->nfronts;
			/* after an upgrade, until its fronts are up: the old ones */
			if (!w->hello && (r = parent_stand_in(p)) != NULL)
				return r;
			p->last_front = w;
			return w;
		}
	}
	return NULL;
}

/* Hands an fd to a front to write an answer decided here (docs/architecture.md). */
static void
parent_verdict(struct parent *p, struct conn_rec *c, int fd, int kind, int code,
    const struct msg_conn_upgrade *up)
{
	struct msg_conn_verdict	 v;
	struct worker		*w;

	if ((w = parent_pick_front(p, 0)) == NULL) {
		close(fd);
		conn_release(p, c);
		return;
	}
	memset(&v, 0, sizeof(v));
	v.kind = kind;
	v.code = code;
	v.ws_version_hdr = up->ws_version_hdr;
	v.head_only = up->head_only != 0;
	strlcpy(v.ws_accept, up->ws_accept, sizeof(v.ws_accept));
	conn_set_owner(c, w);
	msg_compose(&w->chan, MSG_CONN_VERDICT, c->id, &v, sizeof(v), fd);
	parent_worker_flush(w);
}

struct worker *
parent_find_relay(struct parent *p, const char *sid)
{
	struct worker	key;

	strlcpy(key.sid, sid, sizeof(key.sid));
	return RB_FIND(relay_map, &p->relays, &key);
}

/* Sends a connection to the relay that owns its server-id. */
static void
parent_route(struct parent *p, struct conn_rec *c, struct msg_conn_upgrade *up,
    int fd)
{
	struct worker	*r;
	int		 pooled, status;

	if ((r = parent_find_relay(p, up->server_id)) == NULL) {
		if (up->kind == CONN_PHONE) {
			/* docs/protocol.md §3: decided where no relay exists */
			log_info("event=phone_register_no_server server_id=%s",
			    up->server_id);
			p->cnt.upgrades[EP_CLIENT][OUT_REJECT_404]++;
			p->cnt.register_failures[REG_NO_SERVER]++;
			parent_verdict(p, c, fd, VERDICT_WS_CLOSE, 4404, up);
			return;
		}
		/* a new server-id here: not while draining (docs/scaling.md) */
		if ((status = admit_claim(p, up->server_id)) != 0) {
			parent_verdict(p, c, fd, VERDICT_HTTP, status, up);
			return;
		}
		/* a pooled relay if there is one, else one forked now */
		pooled = 1;
		if ((r = pool_take(p, up->server_id)) == NULL) {
			pooled = 0;
			/* max relays: 503 before the upgrade, no relay started */
			if (!admit_relay(p, 1) ||
			    (r = parent_spawn(p, ROLE_RELAY,
			    up->server_id)) == NULL) {
				parent_verdict(p, c, fd, VERDICT_HTTP, 503, up);
				return;
			}
			parent_relay_assign(p, r, up->server_id);
		}
		r->in_map = 1;
		p->relays_started++;
		RB_INSERT(relay_map, &p->relays, r);
		/* a relay being forked logs it with its pid (parent_reap.c) */
		if (r->pid > 0)
			log_debug("event=relay_started server_id=%s pid=%d "
			    "pooled=%d", up->server_id, (int)r->pid, pooled);
	}
	conn_set_owner(c, r);
	msg_compose(&r->chan, MSG_CONN_ATTACH, c->id, up, CONN_UPGRADE_LEN(up),
	    fd);
	parent_worker_flush(r);
}

/*
 * The connection a worker's message names (hdr.id), if that worker holds
 * it; else it names one it does not hold, which kills it (fd closed).
 */
static struct conn_rec *
conn_held(struct parent *p, struct worker *w, struct msg *m)
{
	struct conn_rec	 key, *c;

	key.id = m->hdr.id;
	if ((c = RB_FIND(conn_tree, &p->conns, &key)) != NULL && c->owner == w)
		return c;
	if (m->fd != -1)
		close(m->fd);
	parent_worker_kill(p, w, "a message for a connection it does not hold");
	return NULL;
}

/*
 * A front parsed a /v1 request (its body passed msg_conn_upgrade_check):
 * admission, then routing (docs/protocol.md §2).
 */
static void
parent_upgrade(void *arg, struct msg *m)
{
	struct parent		*p = P;
	struct worker		*w = arg;
	struct msg_conn_upgrade	*up = (struct msg_conn_upgrade *)m->body;
	struct conn_rec		*c;
	const char		*why;
	int			 status;

	if ((c = conn_held(p, w, m)) == NULL)
		return;
	/* still the front's: released when it is reaped */
	if ((why = parent_check_conn(c, up, m)) != NULL) {
		if (m->fd != -1)
			close(m->fd);
		parent_worker_kill(p, w, why);
		return;
	}
	conn_set_owner(c, NULL);
	p->front_outcomes[FRONT_UPGRADE]++;
	if (m->fd_lost) {
		conn_lost(p, c, "parent");
		return;
	}
	/*
	 * Behind a PROXY listener the client is the address the header
	 * carried (the front parsed it); only such listeners may change it.
	 */
	if (c->listen_flags & LISTEN_PROXY)
		c->ip = admit_rekey(p, c->ip, &up->peer);
	p->tls_handoffs[up->tls_mode]++;
	if ((status = admit_upgrade(p, c->ip, up->kind)) != 0) {
		parent_verdict(p, c, m->fd, VERDICT_HTTP, status, up);
		return;
	}
	if (up->status != 0) {
		if (up->header_gate)
			p->cnt.upgrades[up->kind == CONN_BINARY ?
			    EP_SERVER : EP_CLIENT][OUT_REJECT_HEADERS]++;
		parent_verdict(p, c, m->fd, VERDICT_HTTP, up->status, up);
		return;
	}
	parent_route(p, c, up, m->fd);
}

static void parent_dispatch(struct parent *, struct worker *);
static void parent_dispatch_loop(struct parent *, struct worker *, struct msg *);

/*
 * Every relay's channel is also in an epoll set of its own, which tells
 * which relays have sent something not yet read, in one system call
 * whatever their number: what /healthz, /metrics and pyrelayctl read
 * before they answer (docs/messages.md, "Flows").
 */
void
parent_relay_watch(struct parent *p, struct worker *w)
{
	struct epoll_event	ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.ptr = w;
	if (epoll_ctl(p->relay_ep, EPOLL_CTL_ADD, w->chan.fd, &ev) == -1)
		fatal("parent: epoll_ctl add");
	w->watched = 1;
}

void
parent_relay_unwatch(struct parent *p, struct worker *w)
{
	if (!w->watched)
		return;
	/* before its fd closes, and before the worker's memory goes */
	if (epoll_ctl(p->relay_ep, EPOLL_CTL_DEL, w->chan.fd, NULL) == -1)
		log_warn("event=epoll_ctl_failed op=del pid=%d", (int)w->pid);
	w->watched = 0;
}

/*
 * A relay reports its counts before it writes the 101 a client could react
 * to, and the push process a wake's outcome before its log line.  So
 * reading, when a request arrives, every relay (and push process) that
 * has sent something not yet read makes the counts exact at every moment
 * a client can observe; idle relays cost nothing.  In rounds, as one read
 * takes at most 256 messages of a relay; a few at most, so that relays
 * that never stop sending cannot hold an answer back (it then counts what
 * they had sent when the last round began).
 */
void
parent_drain_relays(struct parent *p)
{
	struct epoll_event	 ev[RELAY_DRAIN_BATCH];
	int			 i, n, round;

	for (round = 0; round < RELAY_DRAIN_ROUNDS; round++) {
		if ((n = epoll_wait(p->relay_ep, ev, RELAY_DRAIN_BATCH, 0)) <= 0)
			return;
		for (i = 0; i < n; i++)
			parent_dispatch(p, ev[i].data.ptr);
	}
}

/*
 * Reads what every front and every relay with something unread has sent
 * (the fronts an upgrade replaced are watched with the relays).
 */
static void
parent_drain_workers(struct parent *p)
{
	int	i;

	for (i = 0; i < p->nfronts; i++)
		if (p->fronts[i] != NULL && !p->fronts[i]->dead)
			parent_dispatch(p, p->fronts[i]);
	parent_drain_relays(p);
}

/*
 * <acme webroot>/.well-known/acme-challenge/<token>, opened so that no
 * symbolic link below the webroot is followed, not only the last one
 * (O_NOFOLLOW): whoever may write there (an ACME client's directories)
 * cannot make the parent, as root, serve a file from elsewhere.  The
 * webroot itself is the operator's path.  -1 with errno when it cannot.
 */
static int
acme_open(const char *webroot, const char *token)
{
	struct open_how	how;
	char		rel[sizeof(ACME_CHALLENGE_DIR) + ACME_TOKEN_MAX + 1];
	int		dirfd, fd, saved;

	if (snprintf(rel, sizeof(rel), "%s%s", ACME_CHALLENGE_DIR, token) >=
	    (int)sizeof(rel)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((dirfd = open(webroot, O_PATH | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	memset(&how, 0, sizeof(how));
	how.flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
	how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
	    RESOLVE_NO_MAGICLINKS;
	/* glibc 2.36 has no wrapper (Linux 5.6 has the call) */
	fd = (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
	saved = errno;
	close(dirfd);
	errno = saved;
	return fd;
}

/*
 * ACME HTTP-01 (docs/architecture.md "TLS"): the parent reads
 * <acme webroot>/.well-known/acme-challenge/<token> for a front; the token
 * was checked by the front and is checked again on receipt here
 * (msg_acme_req_check).
 */
static void
parent_acme(void *arg, struct msg *m)
{
	struct parent		*p = P;
	struct worker		*w = arg;
	struct msg_acme_req	*ar = (struct msg_acme_req *)m->body;
	struct msg_acme		*a;
	struct stat		 st;
	ssize_t			 n;
	int			 fd;

	a = xcalloc(1, sizeof(*a));
	if (p->conf->acme_webroot[0] != '\0' &&
	    (fd = acme_open(p->conf->acme_webroot, ar->token)) != -1) {
		if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
		    st.st_size <= (off_t)sizeof(a->data) &&
		    (n = read(fd, a->data, sizeof(a->data))) >= 0) {
			a->found = 1;
			a->len = n;
		}
		close(fd);
	} else if (p->conf->acme_webroot[0] != '\0' && errno != ENOENT)
		log_info("event=acme_open_failed error=\"%s\"", strerror(errno));
	log_info("event=acme_challenge found=%u", a->found);
	msg_compose(&w->chan, MSG_ACME, m->hdr.id, a, sizeof(*a), -1);
	parent_worker_flush(w);
	free(a);
}

void
parent_relay_counts(struct parent *p, struct worker *r, uint32_t b, uint32_t ph)
{
	p->binaries -= r->binaries;
	p->phones -= r->phones;
	r->binaries = b;
	r->phones = ph;
	p->binaries += b;
	p->phones += ph;
}

static void
parent_conn_closed(void *arg, struct msg *m)
{
	struct parent		*p = P;
	struct worker		*w = arg;
	struct msg_conn_closed	*mc = (struct msg_conn_closed *)m->body;
	struct conn_rec		*c;

	if ((c = conn_held(p, w, m)) == NULL)
		return;
	if (mc->fd_lost) {
		conn_lost(p, c, proc_role_name(w->role));
		return;
	}
	if (w->role == ROLE_FRONT)
		p->front_outcomes[mc->outcome]++;
	conn_release(p, c);
}

static void
parent_health_req(void *arg, struct msg *m)
{
	parent_health(P, arg, m);
}

static void
parent_metrics_req(void *arg, struct msg *m)
{
	parent_metrics(P, arg, m);
}

static void
parent_ctl_phone(void *arg, struct msg *m)
{
	parent_ctl_relay_phone(P, arg, m);
}

static void
parent_relay_counters(void *arg, struct msg *m)
{
	struct worker	*w = arg;

	/* hdr.id: 1 answers COUNTERS_REQ, 0 does not */
	if (m->hdr.id > 1) {
		parent_worker_kill(P, w, "bad RELAY_COUNTERS");
		return;
	}
	parent_add_counters(P, (struct relay_counters *)m->body);
	/* an answer to COUNTERS_REQ leaves the relay's schedule as it was */
	if (m->hdr.id == 1)
		parent_metrics_relay_done(P, w);
	else
		parent_metrics_counted(P, w);
}

static void
parent_relay_state(void *arg, struct msg *m)
{
	struct worker		*w = arg;
	struct msg_relay_report	*rep = (struct msg_relay_report *)m->body;
	struct msg_relay_state	*st = &rep->st;

	/* the increments that left with it first, as they were sent before */
	if (m->hdr.len == sizeof(*rep)) {
		parent_add_counters(P, &rep->cnt);
		parent_metrics_counted(P, w);
	}
	w->probing = st->probing;
	parent_relay_counts(P, w, st->binary_connected, st->phones);
}

/* docs/architecture.md "The retire handshake", step 2 */
static void
parent_retire(void *arg, struct msg *m)
{
	struct parent		*p = P;
	struct worker		*w = arg;
	struct msg_empty	 e = { 0 };

	if (w->in_map) {
		RB_REMOVE(relay_map, &p->relays, w);
		w->in_map = 0;
	}
	log_debug("event=relay_retiring server_id=%s pid=%d", w->sid,
	    (int)w->pid);
	msg_compose(&w->chan, MSG_RETIRE_OK, 0, &e, sizeof(e), -1);
	parent_worker_flush(w);
}

/* step 3: a connection a retiring relay hands back is routed again as if new */
static void
parent_reroute(void *arg, struct msg *m)
{
	struct parent		*p = P;
	struct worker		*w = arg;
	struct msg_conn_upgrade	*up = (struct msg_conn_upgrade *)m->body;
	struct conn_rec		*c;
	const char		*why;

	if ((c = conn_held(p, w, m)) == NULL)
		return;
	/* only a retiring relay hands back, and only its own server-id's */
	if (w->in_map || strcmp(up->server_id, w->sid) != 0) {
		close(m->fd);
		parent_worker_kill(p, w, "bad CONN_REROUTE");
		return;
	}
	if ((why = parent_check_conn(c, up, m)) != NULL) {
		if (m->fd != -1)
			close(m->fd);
		parent_worker_kill(p, w, why);
		return;
	}
	if (m->fd_lost) {
		conn_lost(p, c, "parent");
		return;
	}
	/* while stopping, nothing is */
	if (p->stopping) {
		close(m->fd);
		conn_release(p, c);
		return;
	}
	parent_route(p, c, up, m->fd);
}

/*
 * What the parent takes from a front and from a relay (docs/messages.md),
 * each with its handler above; anything else kills the sender.
 */
static const struct msg_rule front_rows[] = {
	MSG_RULE(CONN_UPGRADE, MSG_FD_REQUIRED, parent_upgrade),
	MSG_RULE(CONN_CLOSED, MSG_FD_NONE, parent_conn_closed),
	MSG_RULE(HEALTH_REQ, MSG_FD_NONE, parent_health_req),
	MSG_RULE(METRICS_REQ, MSG_FD_NONE, parent_metrics_req),
	MSG_RULE(ACME_REQ, MSG_FD_NONE, parent_acme),
};
const struct msg_rules parent_from_front =
    MSG_RULES(ROLE_FRONT, ROLE_PARENT, front_rows);

static const struct msg_rule relay_rows[] = {
	MSG_RULE(CONN_REROUTE, MSG_FD_REQUIRED, parent_reroute),
	MSG_RULE(CONN_CLOSED, MSG_FD_NONE, parent_conn_closed),
	MSG_RULE(RELAY_STATE, MSG_FD_NONE, parent_relay_state),
	MSG_RULE(RETIRE, MSG_FD_NONE, parent_retire),
	MSG_RULE(RELAY_COUNTERS, MSG_FD_NONE, parent_relay_counters),
	MSG_RULE(CTL_PHONE, MSG_FD_NONE, parent_ctl_phone),
	MSG_RULE(PUSH_WAKE, MSG_FD_NONE, parent_push_wake),
};
const struct msg_rules parent_from_relay =
    MSG_RULES(ROLE_RELAY, ROLE_PARENT, relay_rows);

static void
parent_dispatch(struct parent *p, struct worker *w)
{
	/*
	 * One buffer per nesting level: answering /healthz or /metrics first
	 * drains every relay through this function, and the request being
	 * answered must survive that.
	 */
	static struct msg	*bufs[2];
	static int		 depth;
	struct msg		*m;

	if (depth >= 2)
		fatalx("parent: dispatch nested too deep");
	if (bufs[depth] == NULL)
		bufs[depth] = xmalloc(sizeof(*bufs[depth]));
	m = bufs[depth];
	depth++;
	parent_dispatch_loop(p, w, m);
	depth--;
}

static void
parent_dispatch_loop(struct parent *p, struct worker *w, struct msg *m)
{
	int	rv, n;

	/*
	 * Bounded, so one busy worker cannot starve the others; a pack is
	 * read to its end (msg_pending), so that none of its messages waits
	 * for the next readiness, which would not come for it.
	 */
	for (n = 0; (n < 256 || msg_pending(&w->chan)) && !w->dead; n++) {
		rv = msg_recv(&w->chan, m);
		if (rv == 0)
			return;
		if (rv == -1) {
			/* the worker exited or crashed: reaping will tell */
			w->dead = 1;
			parent_relay_unwatch(p, w);
			event_del(w->ev_read);
			event_del(w->ev_write);
			if (w->in_map) {
				RB_REMOVE(relay_map, &p->relays, w);
				w->in_map = 0;
			}
			return;
		}
		if (rv == -2) {
			parent_worker_kill(p, w, w->chan.errstr);
			return;
		}
		/* a front that speaks has read its channel up to here, or near */
		w->unheard = 0;
		if (m->hdr.type == MSG_HELLO)
			parent_worker_ready(p, w);
		else if (w->pooled) {
			/* it has no server-id and no connection: nothing to say */
			if (m->fd != -1)
				close(m->fd);
			parent_worker_kill(p, w, "message from a pooled relay");
		} else
			msg_handle(m, w);
	}
}

void
parent_worker_read(evutil_socket_t fd, short ev, void *arg)
{
	parent_dispatch(P, arg);
}

void
parent_worker_drain(struct parent *p, struct worker *w)
{
	int	i;

	/* bounded like every read of a worker: 256 messages a round */
	for (i = 0; i < 64 && !w->dead && w->chan.fd != -1; i++)
		parent_dispatch(p, w);
}

void
parent_worker_write(evutil_socket_t fd, short ev, void *arg)
{
	struct worker	*w = arg;
	int		 rv;

	if ((rv = msg_flush(&w->chan)) != 0)
		event_del(w->ev_write);
	if (rv == -1)
		log_warnx("event=worker_channel_error role=%s pid=%d error=\"%s\"",
		    proc_role_name(w->role), (int)w->pid, w->chan.errstr);
}

/* ---- accepting ------------------------------------------------------------ */

static void
parent_accept_resume(evutil_socket_t fd, short ev, void *arg)
{
	struct parent	*p = arg;
	struct listener	*l;

	if (p->stopping)
		return;
	TAILQ_FOREACH(l, &p->listeners, entry)
		event_add(l->ev, NULL);
}

static void
parent_accept_pause(struct parent *p)
{
	struct listener	*l;
	struct timeval	 tv = ms_timeval(ACCEPT_PAUSE_MS);

	TAILQ_FOREACH(l, &p->listeners, entry)
		event_del(l->ev);
	evtimer_add(p->ev_accept_pause, &tv);
}

static void
parent_accept(evutil_socket_t lfd, short ev, void *arg)
{
	struct listener		*l = arg;
	struct parent		*p = P;
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	struct msg_conn_new	 cn;
	struct conn_rec		*c;
	struct ip_rec		*ip;
	struct worker		*w;
	int			 fd, n;

	for (n = 0; n < ACCEPT_BATCH; n++) {
		sslen = sizeof(ss);
		fd = accept4(lfd, (struct sockaddr *)&ss, &sslen,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EMFILE || errno == ENFILE) {
				/*
				 * Out of descriptors: use the reserve to take
				 * the connection off the queue and close it,
				 * then stop accepting for a while.
				 */
				log_warnx("event=accept_paused limit=%s "
				    "reason=\"%s\"", limit_name(errno),
				    strerror(errno));
				if (p->reserve_fd != -1) {
					close(p->reserve_fd);
					if ((fd = accept(lfd, NULL, NULL)) != -1)
						close(fd);
					p->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
				}
				parent_accept_pause(p);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR && errno != ECONNABORTED)
				log_warn("event=accept_failed");
			return;
		}
		/*
		 * Over its address's cap: closed here, no front sees it.  First
		 * the releases already sent are read (the fronts', and the
		 * relays' that have something unread), so that a client that
		 * finished a connection and opened the next is not refused for
		 * the one it finished.
		 */
		if ((ip = admit_accept(p, &ss, l->la->flags, 0)) == NULL) {
			parent_drain_workers(p);
			ip = admit_accept(p, &ss, l->la->flags, 1);
		}
		if (ip == NULL) {
			close(fd);
			continue;
		}
		if ((w = parent_pick_front(p,
		    !(l->la->flags & LISTEN_TLS))) == NULL) {
			admit_ip_release(p, ip);
			close(fd);
			continue;
		}
		c = xcalloc(1, sizeof(*c));
		c->id = ++p->next_conn_id;
		p->accepted++;
		c->ip = ip;
		c->listen_flags = l->la->flags;
		p->live++;
		RB_INSERT(conn_tree, &p->conns, c);
		conn_set_owner(c, w);
		memset(&cn, 0, sizeof(cn));
		memcpy(&cn.peer, &ss, sslen < sizeof(cn.peer) ? sslen : sizeof(cn.peer));
		cn.accepted_ms = now_ms();
		cn.listen_flags = l->la->flags;
		msg_compose(&w->chan, MSG_CONN_NEW, c->id, &cn, sizeof(cn), fd);
		w->unheard++;
		parent_worker_flush(w);
	}
}

/*
 * A listening socket for la: the one the image before held, after an
 * upgrade (connections waiting in its queue are served), or a new one.
 */
static int
parent_listen(struct listen_addr *la, char *err, size_t errlen)
{
	int		 fd, one = 1;
	char		 name[128];
	const char	*step;

	/*
	 * Nagle off once, here: a connection accept(2) takes from this
	 * socket is born with TCP_NODELAY (Linux copies it from the
	 * listener), and so is the socket a relay serves it on.  Set on the
	 * image before's listener too, whose image may not have.
	 */
	if ((la->fd = parent_upgrade_listener(la)) != -1) {
		setsockopt(la->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		return 0;
	}
	listen_addr_print(la, name, sizeof(name));
	fd = socket(la->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		step = "socket";
		goto fail;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (la->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	step = "bind";
	if (bind(fd, (struct sockaddr *)&la->ss, la->sslen) == -1)
		goto fail;
	step = "listen";
	if (listen(fd, listen_backlog()) == -1)
		goto fail;
	la->fd = fd;
	return 0;
 fail:
	snprintf(err, errlen, "listen on %s: %s: %s", name, step,
	    strerror(errno));
	if (fd != -1)
		close(fd);
	return -1;
}

static void
parent_open_listeners(struct parent *p)
{
	struct listen_addr	*la;
	struct listener		*l;
	struct listen_list	*lists[] = { &p->conf->listeners, &p->conf->metrics,
	    &p->conf->agents };
	size_t			 i;
	char			 err[256];

	for (i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		TAILQ_FOREACH(la, lists[i], entry) {
			if (parent_listen(la, err, sizeof(err)) == -1) {
				parent_start_failed(err);
				continue;	/* the way back does without it */
			}
			l = xcalloc(1, sizeof(*l));
			l->la = la;
			l->ev = event_new(p->base, la->fd, EV_READ | EV_PERSIST,
			    parent_accept, l);
			TAILQ_INSERT_TAIL(&p->listeners, l, entry);
		}
	}
}

/* ---- signals ---------------------------------------------------------------- */

static void
parent_drain_deadline(evutil_socket_t fd, short ev, void *arg)
{
	struct parent	*p = arg;
	struct worker	*w;

	TAILQ_FOREACH(w, &p->workers, entry) {
		log_warnx("event=drain_deadline role=%s pid=%d", proc_role_name(w->role),
		    (int)w->pid);
		parent_worker_signal(w, SIGKILL);
	}
}

static void
parent_stop(evutil_socket_t sig, short ev, void *arg)
{
	struct parent	*p = arg;
	struct listener	*l;
	struct worker	*w;
	struct timeval	 tv = ms_timeval(DRAIN_DEADLINE_MS);

	if (p->stopping)
		return;
	p->stopping = 1;
	log_info("event=stopping signal=%d", (int)sig);
	/* docs/protocol.md §7: stop accepting at once */
	TAILQ_FOREACH(l, &p->listeners, entry) {
		event_del(l->ev);
		close(l->la->fd);
		l->la->fd = -1;
	}
	TAILQ_FOREACH(w, &p->workers, entry)
		parent_worker_signal(w, SIGTERM);
	evtimer_add(p->ev_drain, &tv);
	parent_check_stopped(p);
}

/* A reload's "file:line: message" lines go to the log (and pyrelayctl). */
static struct ctl_client	*reload_ctl;

static void
parent_config_error(const char *msg)
{
	char	q[1024];

	log_warnx("event=config_error message=\"%s\"",
	    log_quotable(msg, q, sizeof(q)));
	if (reload_ctl != NULL)
		parent_ctl_error_line(reload_ctl, msg);
}

int
parent_reload_config(struct parent *p, struct ctl_client *ctl)
{
	struct config		*nc;
	struct worker		*w;
	struct msg_limits	 ml;
	uid_t			 uid;
	gid_t			 gid;
	char			 err[512], q[512];

	log_info("event=reload file=\"%s\"", p->conf->path[0] ? p->conf->path :
	    "(built-in)");
	if (p->conf->path[0] == '\0') {
		log_info("event=reload_done changed=none reason=\"no configuration file\"");
		return 0;
	}
	/* parse first; on error keep the running configuration */
	config_error_hook = parent_config_error;
	reload_ctl = ctl;
	nc = config_parse(p->conf->path, p->opts.macros, p->opts.nmacros);
	if (nc != NULL && config_check_push(nc) == -1) {
		config_free(nc);
		nc = NULL;
	}
	reload_ctl = NULL;
	if (nc == NULL) {
		log_warnx("event=reload_failed file=%s reason=\"configuration has "
		    "errors, keeping the running one\"", p->conf->path);
		return -1;
	}
	if (p->root && sandbox_check(nc, &uid, &gid, err, sizeof(err)) == -1) {
		log_warnx("event=reload_failed reason=\"%s\"",
		    log_quotable(err, q, sizeof(q)));
		if (ctl != NULL)
			parent_ctl_error_line(ctl, err);
		config_free(nc);
		return -1;
	}
	/*
	 * docs/protocol.md §7: SIGHUP reloads certificates without dropping anyone.
	 * They are checked first; a reload with a bad one changes nothing.
	 */
	if (p->tls) {
		char	oldcert[PATH_MAX], oldkey[PATH_MAX];

		strlcpy(oldcert, p->conf->tls_cert, sizeof(oldcert));
		strlcpy(oldkey, p->conf->tls_key, sizeof(oldkey));
		strlcpy(p->conf->tls_cert, nc->tls_cert, sizeof(p->conf->tls_cert));
		strlcpy(p->conf->tls_key, nc->tls_key, sizeof(p->conf->tls_key));
		if (parent_send_tls(p, NULL, err, sizeof(err)) == -1) {
			strlcpy(p->conf->tls_cert, oldcert, sizeof(p->conf->tls_cert));
			strlcpy(p->conf->tls_key, oldkey, sizeof(p->conf->tls_key));
			log_warnx("event=reload_failed reason=\"%s\"",
		    log_quotable(err, q, sizeof(q)));
			if (ctl != NULL)
				parent_ctl_error_line(ctl, err);
			config_free(nc);
			return -1;
		}
	}
	/* limits and timers apply at once; listeners, user and chroot need a restart */
	p->conf->lim = nc->lim;
	p->conf->relay_pool = nc->relay_pool;
	/*
	 * Lowered, it stops no relay that serves a server-id (pool_resize
	 * stops idle pooled ones over it): claims wait until enough retire.
	 */
	p->conf->max_relays = nc->max_relays;
	parent_push_settings(p->conf, nc);
	/* the current zygote is renewed by the new figures from now on */
	p->conf->zygote_renew_relays = nc->zygote_renew_relays;
	p->conf->zygote_renew_ms = nc->zygote_renew_ms;
	config_free(nc);
	if (p->tls) {
		TAILQ_FOREACH(w, &p->workers, entry) {
			if (w->dead || w->role != ROLE_FRONT)
				continue;
			if (parent_send_tls(p, w, err, sizeof(err)) == -1)
				log_warnx("event=tls_error reason=\"%s\"",
			    log_quotable(err, q, sizeof(q)));
		}
	}
	ml.lim = p->conf->lim;
	TAILQ_FOREACH(w, &p->workers, entry) {
		/* the push process uses none: a new one takes the settings; a
		 * zygote's relays get the limits with their server-id */
		if (w->dead || w->role == ROLE_PUSH || w->role == ROLE_ZYGOTE)
			continue;
		msg_compose(&w->chan, MSG_LIMITS, 0, &ml, sizeof(ml), -1);
		parent_worker_flush(w);
	}
	pool_resize(p);
	parent_push_reload(p);
	log_info("event=reload_done");
	return 0;
}

static void
parent_reload(evutil_socket_t sig, short ev, void *arg)
{
	parent_reload_config(arg, NULL);
}

/* pyrelayctl log verbose|brief: this process, every worker, and later ones. */
void
parent_set_verbose(struct parent *p, int verbose)
{
	struct worker		*w;
	struct msg_verbose	 mv;

	p->opts.verbose = verbose;
	log_setverbose(verbose);
	memset(&mv, 0, sizeof(mv));
	mv.verbose = verbose;
	TAILQ_FOREACH(w, &p->workers, entry) {
		if (w->dead)
			continue;
		msg_compose(&w->chan, MSG_VERBOSE, 0, &mv, sizeof(mv), -1);
		parent_worker_flush(w);
	}
	log_info("event=log_level verbose=%d", verbose);
}

static void
parent_resolve_self(struct parent *p)
{
	ssize_t	n;

	char	*slash;

	/* after an upgrade, the path the program before executed */
	if (!parent_upgrade_self(p)) {
		n = readlink("/proc/self/exe", p->self, sizeof(p->self) - 1);
		if (n <= 0)
			fatal("readlink /proc/self/exe");
		p->self[n] = '\0';
	}
	/*
	 * The relay executable: beside this one (a build tree, or sbin and
	 * libexec being one directory), else where make install put it.
	 */
	strlcpy(p->relay_exe, p->self, sizeof(p->relay_exe));
	if ((slash = strrchr(p->relay_exe, '/')) != NULL)
		slash[1] = '\0';
	strlcat(p->relay_exe, "pyrelayd-relay", sizeof(p->relay_exe));
	if (access(p->relay_exe, X_OK) == -1)
		strlcpy(p->relay_exe, LIBEXECDIR "/pyrelayd-relay",
		    sizeof(p->relay_exe));
	if (access(p->relay_exe, X_OK) == -1)
		fatal("relay executable %s", p->relay_exe);
}

void
parent_main(struct config *conf, const struct parent_opts *opts)
{
	struct parent	*p;
	char		 err[PATH_MAX + 512];
	long		 ncpu;
	int		 i;

	p = P = xcalloc(1, sizeof(*p));
	p->conf = conf;
	p->opts = *opts;
	p->started_ms = now_ms();
	p->respawn_ms = 0;	/* parent_reap.c starts from its minimum */
	TAILQ_INIT(&p->listeners);
	TAILQ_INIT(&p->workers);
	RB_INIT(&p->relays);
	TAILQ_INIT(&p->pool);
	TAILQ_INIT(&p->spawns);
	RB_INIT(&p->conns);
	RB_INIT(&p->pids);
	parent_resolve_self(p);
	parent_raise_nofile(p);

	p->root = geteuid() == 0;
	if (parent_upgrade_mode() != UPGRADE_BACK) {
		p->uid = getuid();
		p->gid = getgid();
		if (sandbox_check(conf, &p->uid, &p->gid, err, sizeof(err)) == -1)
			parent_start_failed(err);
	}
	/* compiled once here, loaded by each worker (docs/sandbox.md) */
	for (i = ROLE_FRONT; i < ROLE_MAX; i++) {
		/* the spawner is not sandboxed, the zygote loads the relay's */
		if (i == ROLE_SPAWNER || i == ROLE_ZYGOTE)
			continue;
		p->filters[i] = xcalloc(1, sizeof(*p->filters[i]));
		sandbox_filter_build(i, p->filters[i]);
	}
	{
		struct listen_addr	*la;

		TAILQ_FOREACH(la, &conf->listeners, entry)
			if (la->flags & LISTEN_TLS)
				p->tls = 1;
	}
	/* the certificate files are checked before anything starts */
	if (p->tls && parent_send_tls(p, NULL, err, sizeof(err)) == -1)
		parent_start_failed(err);
	if (TAILQ_EMPTY(&conf->listeners)) {
		snprintf(err, sizeof(err), "%s: no \"listen on\" statement",
		    conf->path[0] ? conf->path : "configuration");
		parent_start_failed(err);
	}

	signal(SIGPIPE, SIG_IGN);
	if ((p->base = event_base_new()) == NULL)
		fatalx("parent: event_base_new");
	if ((p->relay_ep = epoll_create1(EPOLL_CLOEXEC)) == -1)
		fatal("parent: epoll_create1");
	parent_open_listeners(p);
	p->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	TAILQ_INIT(&p->ctl_clients);
	TAILQ_INIT(&p->metrics_reqs);
	TAILQ_INIT(&p->cnt_recent);
	TAILQ_INIT(&p->cnt_asked);
	if (parent_ctl_open(p, err, sizeof(err)) == -1)
		parent_start_failed(err);

	if (!opts->foreground) {
		/* an upgrade's image is the same process, detached already */
		if (parent_upgrade_mode() == UPGRADE_NONE && daemon(1, 0) == -1)
			fatal("daemon");
		log_init(0, opts->verbose, "pyrelayd");
	}
	setproctitle("parent");
	log_info("event=limits nofile=%llu nofile_hard=%llu nofile_was=%llu "
	    "backlog=%d", (unsigned long long)p->nofile,
	    (unsigned long long)p->nofile_max,
	    (unsigned long long)p->nofile_was, listen_backlog());

	p->ev_accept_pause = evtimer_new(p->base, parent_accept_resume, p);
	p->ev_drain = evtimer_new(p->base, parent_drain_deadline, p);
	p->ev_cnt_wait = evtimer_new(p->base, parent_metrics_timeout, p);
	p->ev_respawn = evtimer_new(p->base, parent_respawn_fronts, p);
	p->ev_pool_fill = evtimer_new(p->base, pool_fill, p);
	p->ev_spawner = evtimer_new(p->base, parent_restart_spawner, p);
	admit_init(p);
	p->ev_sigchld = evsignal_new(p->base, SIGCHLD, parent_sigchld, p);
	p->ev_sigterm = evsignal_new(p->base, SIGTERM, parent_stop, p);
	p->ev_sigint = evsignal_new(p->base, SIGINT, parent_stop, p);
	p->ev_sighup = evsignal_new(p->base, SIGHUP, parent_reload, p);
	p->ev_sigusr2 = evsignal_new(p->base, SIGUSR2, parent_upgrade_signal, p);
	event_add(p->ev_sigchld, NULL);
	event_add(p->ev_sigterm, NULL);
	event_add(p->ev_sigint, NULL);
	event_add(p->ev_sighup, NULL);
	event_add(p->ev_sigusr2, NULL);

	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	p->nfronts = conf->workers > 0 ? conf->workers : (ncpu > 0 ? ncpu : 1);
	p->fronts = xcalloc(p->nfronts, sizeof(*p->fronts));
	parent_push_init(p);
	/* after an upgrade: what the image before held (docs/upgrade.md) */
	parent_upgrade_adopt(p);
	/*
	 * The fronts from here, then the spawner: a start through a spawner
	 * that is starting itself waits for its exec, and after an upgrade
	 * the listeners would wait too.
	 */
	for (i = 0; i < p->nfronts; i++) {
		if (p->fronts[i] != NULL)
			continue;	/* kept on the way back of an upgrade */
		if ((p->fronts[i] = parent_spawn(p, ROLE_FRONT, NULL)) == NULL)
			fatalx("parent: cannot start the fronts");
		p->fronts[i]->front_slot = i;
	}
	/* the push process likewise, before the spawner */
	parent_push_start(p);
	parent_start_spawner(p);
	/* the relay zygote, through the spawner: no claim waits for it */
	parent_zygote_init(p);
	parent_fronts_ready(p);
	{
		struct listener	*l;
		char		 name[128];

		TAILQ_FOREACH(l, &p->listeners, entry) {
			event_add(l->ev, NULL);
			listen_addr_print(l->la, name, sizeof(name));
			if (parent_upgrade_mode() == UPGRADE_NONE)
				log_info("event=listening addr=\"%s\"%s", name,
				    l->la->flags & LISTEN_METRICS ? " metrics=1" :
				    l->la->flags & LISTEN_AGENT ? " agent=1" : "");
		}
	}
	parent_upgrade_done(p);
	event_base_dispatch(p->base);
	exit(0);
}
