/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The parent starting its workers: through the spawner (docs/pool.md), or
 * from the parent itself while there is none, with a minimal environment
 * and the setup message each worker waits for; and the pool of relays
 * started ahead of claims, filled a few at a time and resized on reload.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "msg.h"
#include "parent.h"
#include "proc.h"
#include "proto.h"
#include "pyrelayd.h"
#include "spawn.h"

#define SPAWNER_WAIT_MS		5000	/* for the spawner's answer */
#define SPAWNER_RETRY_MS	1000	/* between two spawner starts */

/* Logs the limit that stopped a worker from starting (errno is the cause). */
static void
parent_spawn_failed(enum proc_role role, const char *sid)
{
	int	err = errno;

	log_warnx("event=spawn_failed role=%s server_id=%s limit=%s error=\"%s\"",
	    proc_role_name(role), sid != NULL ? sid : "-",
	    limit_name(err), strerror(err));
	errno = err;
}

static void
parent_send_setup(struct parent *p, struct worker *w)
{
	struct msg_setup	*s;

	s = xcalloc(1, sizeof(*s));
	s->role = w->role;
	s->verbose = p->opts.verbose;
	s->root = p->root;
	s->uid = p->uid;
	s->gid = p->gid;
	strlcpy(s->chroot, p->conf->chroot, sizeof(s->chroot));
	strlcpy(s->server_id, w->sid, sizeof(s->server_id));
	s->lim = p->conf->lim;
	s->filter = *p->filters[w->role];
	msg_hello(&w->chan, ROLE_PARENT);
	msg_compose(&w->chan, MSG_SETUP, 0, s, MSG_SETUP_LEN(s), -1);
	free(s);
	parent_worker_flush(w);
	if (w->role == ROLE_FRONT && p->tls) {
		char	err[512], q[512];

		if (parent_send_tls(p, w, err, sizeof(err)) == -1)
			log_warnx("event=tls_error reason=\"%s\"",
			    log_quotable(err, q, sizeof(q)));
	}
}

extern char **environ;

/*
 * A worker's environment: only what a library in it reads.  Nothing else
 * the operator's shell or service manager exported (tokens, paths) crosses
 * into a process that talks to the network (docs/architecture.md: workers
 * inherit no secret).
 */
static int
worker_env_wanted(const char *kv)
{
	static const char *const prefixes[] = {
		"TZ=",			/* glibc: syslog's timestamps */
		"OPENSSL_",		/* the fronts' OpenSSL configuration */
		"ASAN_OPTIONS=", "UBSAN_OPTIONS=", "LSAN_OPTIONS=",
	};
	size_t	i;

	for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(kv, prefixes[i], strlen(prefixes[i])) == 0)
			return 1;
	return 0;
}

/*
 * setproctitle() writes the title over the argument and environment
 * strings, which the kernel placed end to end: a worker's few arguments
 * and small environment leave too little room for "relay <server-id>
 * (binary, 16 phones)".  One variable of blanks makes that room.
 */
#define WORKER_TITLE_ROOM	128

static char **
worker_env(void)
{
	static char	**env;
	static char	  room[sizeof("PYRELAYD_TITLE=") + WORKER_TITLE_ROOM];
	size_t		  i, n = 0;

	if (env != NULL)
		return env;
	for (i = 0; environ[i] != NULL; i++)
		;
	env = xcalloc(i + 2, sizeof(*env));
	for (i = 0; environ[i] != NULL; i++)
		if (worker_env_wanted(environ[i]))
			env[n++] = xstrdup(environ[i]);
	memset(room, ' ', sizeof(room) - 1);
	memcpy(room, "PYRELAYD_TITLE=", strlen("PYRELAYD_TITLE="));
	env[n++] = room;
	env[n] = NULL;
	return env;
}

/* The spawner's answer to the request the parent waits for. */
struct spawn_wait {
	uint64_t	seq;		/* the request's */
	int		answered;
	int		in_order;	/* it answers that request */
	pid_t		pid;
	int		error;
};

/* SPAWNED (checked: msg_spawned_check, a pid or an errno) */
static void
parent_spawned(void *arg, struct msg *m)
{
	struct spawn_wait	*sw = arg;
	struct msg_spawned	*rep = (struct msg_spawned *)m->body;

	sw->answered = 1;
	sw->in_order = m->hdr.id == sw->seq;
	sw->pid = rep->pid;
	sw->error = rep->error;
}

/* What the parent takes from the spawner, read in parent_spawn_via_spawner. */
static const struct msg_rule spawner_rows[] = {
	MSG_RULE(SPAWNED, MSG_FD_NONE, parent_spawned),
};
const struct msg_rules parent_from_spawner =
    MSG_RULES(ROLE_SPAWNER, ROLE_PARENT, spawner_rows);

/*
 * The spawner failed the parent: until it is reaped and a new one started
 * (parent_start_process), workers start here.  The start that found out
 * fails with EAGAIN (its fd went to the spawner).
 */
static void
parent_spawner_lost(struct parent *p, const char *why)
{
	log_warnx("event=spawner_failed pid=%d reason=\"%s\" action=restart",
	    (int)p->spawner_pid, why);
	kill(p->spawner_pid, SIGKILL);
	/* its fd becomes -1: reaping still knows its pid, nothing is sent */
	msg_chan_clear(&p->spawner);
	errno = EAGAIN;
}

/*
 * Starts a worker through the spawner: one request, one answer, in order
 * (the parent waits, as it did for its own clone()).  fd is handed over.
 */
static pid_t
parent_spawn_via_spawner(struct parent *p, const char *path, char **argv,
    int fd)
{
	static struct msg	 m;
	struct msg_spawn	 sp;
	struct spawn_wait	 sw;
	const char		*why;
	int64_t			 deadline = now_ms() + SPAWNER_WAIT_MS;
	size_t			 n, len = 0;
	int			 i, rv;

	memset(&sp, 0, offsetof(struct msg_spawn, args));
	for (i = -1; i < 0 || argv[i] != NULL; i++) {
		n = strlen(i < 0 ? path : argv[i]) + 1;
		if (len + n > sizeof(sp.args) || i >= SPAWN_ARGC_MAX) {
			close(fd);
			errno = E2BIG;
			return -1;
		}
		memcpy(sp.args + len, i < 0 ? path : argv[i], n);
		len += n;
	}
	sp.argc = i;
	sp.len = len;
	memset(&sw, 0, sizeof(sw));
	sw.seq = ++p->spawn_seq;
	msg_compose(&p->spawner, MSG_SPAWN, sw.seq, &sp,
	    offsetof(struct msg_spawn, args) + len, fd);
	while ((rv = msg_flush(&p->spawner)) == 0)
		if (fd_wait(p->spawner.fd, POLLOUT, deadline) <= 0)
			break;
	if (rv != 1) {
		why = rv == -1 ? p->spawner.errstr : "no room for a request";
		goto lost;
	}
	for (;;) {
		if ((rv = msg_recv(&p->spawner, &m)) == 0) {
			if (fd_wait(p->spawner.fd, POLLIN, deadline) > 0)
				continue;
			why = "no answer";
			goto lost;
		}
		if (rv < 0) {
			why = p->spawner.errstr;
			goto lost;
		}
		/* its HELLO is passed over */
		msg_handle(&m, &sw);
		if (!sw.answered)
			continue;
		if (!sw.in_order) {
			why = "answer out of order";
			goto lost;
		}
		if (sw.pid == -1)
			errno = sw.error;
		return sw.pid;
	}
 lost:
	parent_spawner_lost(p, why);
	return -1;
}

/*
 * Starts path with argv on fd (its fd 3), through the spawner when there
 * is one.  fd is consumed.  Returns the pid, or -1 with errno.
 */
static pid_t
parent_start_process(struct parent *p, const char *path, char **argv, int fd)
{
	pid_t	pid;
	int	saved;

	if (p->spawner_pid != 0 && p->spawner.fd != -1)
		return parent_spawn_via_spawner(p, path, argv, fd);
	pid = spawn_process(path, argv, worker_env(), fd, 0);
	saved = errno;
	close(fd);
	errno = saved;
	return pid;
}

/*
 * The spawner, started after the fronts (the parent starts those itself),
 * and again after an upgrade.  Without one (it could not start), workers
 * start from the parent.
 */
void
parent_start_spawner(struct parent *p)
{
	char	*argv[5];
	int	 sv[2], argc = 0;
	pid_t	 pid;

	p->spawner.fd = -1;
	p->spawner_retry = now_ms() + SPAWNER_RETRY_MS;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
		log_warn("event=spawner_failed step=socketpair action=direct");
		return;
	}
	argv[argc++] = "pyrelayd";
	argv[argc++] = "-P";
	argv[argc++] = (char *)proc_role_name(ROLE_SPAWNER);
	if (p->opts.foreground)
		argv[argc++] = "-d";
	argv[argc] = NULL;
	pid = spawn_process(p->self, argv, worker_env(), sv[1], 0);
	close(sv[1]);
	if (pid == -1) {
		log_warn("event=spawner_failed step=start action=direct");
		close(sv[0]);
		return;
	}
	p->spawner_pid = pid;
	msg_chan_init(&p->spawner, sv[0], &parent_from_spawner);
	msg_hello(&p->spawner, ROLE_PARENT);
	log_debug("event=spawner_started pid=%d", (int)pid);
}

/*
 * A new spawner for one that exited (reaped, or killed after it failed):
 * at once, or a second after the last start, so that one that cannot
 * start or keeps dying costs one attempt a second.  Meanwhile the parent
 * starts workers itself.
 */
void
parent_restart_spawner(evutil_socket_t fd, short ev, void *arg)
{
	struct parent	*p = arg;
	int64_t		 wait;
	struct timeval	 tv;

	if (p->stopping || p->spawner_pid != 0)
		return;
	if ((wait = p->spawner_retry - now_ms()) <= 0) {
		parent_start_spawner(p);
		if (p->spawner_pid != 0) {
			log_info("event=spawner_restarted pid=%d",
			    (int)p->spawner_pid);
			return;
		}
		wait = SPAWNER_RETRY_MS;
	}
	tv = ms_timeval(wait);
	evtimer_add(p->ev_spawner, &tv);
}

/*
 * What the parent takes from a worker, by its role and the message
 * version of its HELLO (docs/upgrade.md, "Versions"): a version the
 * parent serves whose messages differ from its own keeps its table here,
 * for as long as workers of that version may live.  None differs yet.
 */
const struct msg_rules *
parent_worker_rules(enum proc_role role, uint32_t version)
{
	return role == ROLE_FRONT ? &parent_from_front :
	    role == ROLE_PUSH ? &parent_from_push : &parent_from_relay;
}

struct worker *
parent_worker_new(struct parent *p, enum proc_role role, pid_t pid, int fd,
    const char *sid)
{
	struct worker	*w;

	w = xcalloc(1, sizeof(*w));
	w->role = role;
	w->pid = pid;
	w->front_slot = -1;
	if (role == ROLE_RELAY)
		p->nrelays++;
	/* reaping finds it by pid */
	RB_INSERT(worker_pids, &p->pids, w);
	w->started_ms = now_ms();
	TAILQ_INIT(&w->conns);
	if (sid != NULL)
		strlcpy(w->sid, sid, sizeof(w->sid));
	if (fd == -1) {
		/* one the image before had lost: only its end is left to see */
		w->dead = 1;
		w->chan.fd = -1;
		TAILQ_INIT(&w->chan.outq);
	} else
		msg_chan_init(&w->chan, fd, parent_worker_rules(role,
		    msg_version));
	w->ev_read = event_new(p->base, fd, EV_READ | EV_PERSIST,
	    parent_worker_read, w);
	w->ev_write = event_new(p->base, fd, EV_WRITE | EV_PERSIST,
	    parent_worker_write, w);
	if (w->ev_read == NULL || w->ev_write == NULL)
		fatalx("parent: event_new");
	if (fd != -1) {
		event_add(w->ev_read, NULL);
		/* what they say is read before /healthz and /metrics answer */
		if (role == ROLE_RELAY || role == ROLE_PUSH)
			parent_relay_watch(p, w);
	}
	TAILQ_INSERT_TAIL(&p->workers, w, entry);
	return w;
}

struct worker *
parent_spawn(struct parent *p, enum proc_role role, const char *sid)
{
	struct worker	*w;
	int		 sv[2];
	pid_t		 pid;
	char		*argv[6];
	int		 argc = 0;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
		parent_spawn_failed(role, sid);
		return NULL;
	}
	/* argv[0] names the titles ps(1) shows: "pyrelayd: relay ..." */
	argv[argc++] = "pyrelayd";
	if (role != ROLE_RELAY) {
		argv[argc++] = "-P";
		argv[argc++] = (char *)proc_role_name(role);
	}
	if (p->opts.foreground)
		argv[argc++] = "-d";
	argv[argc] = NULL;
	if ((pid = parent_start_process(p, role == ROLE_RELAY ? p->relay_exe :
	    p->self, argv, sv[1])) == -1) {
		parent_spawn_failed(role, sid);
		close(sv[0]);
		return NULL;
	}
	w = parent_worker_new(p, role, pid, sv[0], sid);
	parent_send_setup(p, w);
	return w;
}

/*
 * A worker's HELLO: it is set up and sandboxed, its start is over.  A
 * pooled relay is ready to be given a server-id and the next may start;
 * the daemon is ready once every front is.
 */
void
parent_worker_ready(struct parent *p, struct worker *w)
{
	/* one adopted before its HELLO may speak the version before ours */
	w->chan.rules = parent_worker_rules(w->role, w->chan.peer.version);
	if (w->pooled && !w->hello) {
		p->npool_ready++;
		log_debug("event=relay_pooled pid=%d", (int)w->pid);
		/* the next one may start */
		pool_schedule(p, 0);
	}
	w->hello = 1;
	if (w->role == ROLE_PUSH)
		parent_push_ready(p, w);
	if (w->role != ROLE_FRONT)
		return;
	log_info("event=front_ready pid=%d", (int)w->pid);
	parent_fronts_ready(p);
}

void
parent_fronts_ready(struct parent *p)
{
	struct msg_empty	 e = { 0 };
	struct worker		*w;
	int			 i;

	if (p->ready)
		return;
	for (i = 0; i < p->nfronts; i++)
		if (p->fronts[i] == NULL || !p->fronts[i]->hello)
			return;
	p->ready = 1;
	log_info("event=ready workers=%d pid=%d", p->nfronts, (int)getpid());
	/* the fronts an upgrade replaced finish what they hold, then exit */
	for (i = 0; i < p->nstand_ins; i++) {
		w = p->stand_ins[i];
		w->replaced = 0;
		w->finishing = 1;
		msg_compose(&w->chan, MSG_FINISH, 0, &e, sizeof(e), -1);
		parent_worker_flush(w);
	}
	free(p->stand_ins);
	p->stand_ins = NULL;
	p->nstand_ins = 0;
	parent_upgrade_ready(p);
	/* the pool fills once the fronts are up */
	pool_schedule(p, 0);
}

struct worker *
parent_stand_in(struct parent *p)
{
	struct worker	*w;
	int		 i;

	for (i = 0; i < p->nstand_ins; i++) {
		p->next_stand_in = (p->next_stand_in + 1) % p->nstand_ins;
		w = p->stand_ins[p->next_stand_in];
		if (!w->dead)
			return w;
	}
	return NULL;
}

/* A replaced front died (or was killed) before the new ones were up. */
void
parent_stand_in_gone(struct parent *p, struct worker *w)
{
	int	i;

	for (i = 0; i < p->nstand_ins; i++)
		if (p->stand_ins[i] == w) {
			p->stand_ins[i] = p->stand_ins[--p->nstand_ins];
			p->next_stand_in = 0;
			return;
		}
}

/* ---- the relay pool (docs/pool.md) ------------------------------------- */

void
pool_schedule(struct parent *p, int64_t ms)
{
	struct timeval	tv;

	if (p->stopping || p->npool >= p->conf->relay_pool ||
	    !admit_relay(p, 0) || evtimer_pending(p->ev_pool_fill, NULL))
		return;
	tv = ms_timeval(ms);
	evtimer_add(p->ev_pool_fill, &tv);
}

/*
 * Starts pooled relays up to `relay pool`, at most pool_starting_max (half
 * the CPUs, at least 1) at a time, the next when one says HELLO: refilling
 * never takes more than half the machine from the relays serving clients,
 * and a flood of claims cannot make it fork faster than relays start.
 */
void
pool_fill(evutil_socket_t fd, short ev, void *arg)
{
	struct parent	*p = arg;
	struct worker	*w;

	/* pooled relays count against max relays: the pool never passes it */
	while (!p->stopping && p->npool < p->conf->relay_pool &&
	    p->npool - p->npool_ready < p->pool_starting_max &&
	    admit_relay(p, 0)) {
		if ((w = parent_spawn(p, ROLE_RELAY, NULL)) == NULL) {
			pool_schedule(p, POOL_RETRY_MS);
			return;
		}
		w->pooled = 1;
		TAILQ_INSERT_TAIL(&p->pool, w, pool_entry);
		p->npool++;
	}
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
	if (w->hello)
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
	struct worker		*w, *pick = NULL;
	struct msg_assign	 a;

	TAILQ_FOREACH(w, &p->pool, pool_entry) {
		if (w->dead)
			continue;
		if (w->hello) {
			pick = w;
			break;
		}
		if (pick == NULL)
			pick = w;
	}
	if (pick == NULL)
		return NULL;
	pool_remove(p, pick);
	strlcpy(pick->sid, sid, sizeof(pick->sid));
	pick->started_ms = now_ms();
	memset(&a, 0, sizeof(a));
	strlcpy(a.server_id, sid, sizeof(a.server_id));
	a.lim = p->conf->lim;
	msg_compose(&pick->chan, MSG_ASSIGN, 0, &a, sizeof(a), -1);
	p->assignments++;
	pool_schedule(p, 0);
	return pick;
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
	kill(w->pid, SIGTERM);
}
