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
#include "proto.h"
#include "pyrelayd.h"
#include "sandbox.h"
#include "spawn.h"

#define SPAWNER_WAIT_MS		5000	/* for the spawner's answer */
#define SPAWNER_RETRY_MS	1000	/* between two spawner starts */

static const struct msg_rule front_to_parent[] = {
	{ MSG_CONN_UPGRADE, sizeof(struct msg_conn_upgrade), MSG_FD_REQUIRED, "CONN_UPGRADE",
	    CONN_UPGRADE_MIN },
	{ MSG_CONN_CLOSED, sizeof(struct msg_conn_closed), MSG_FD_NONE, "CONN_CLOSED", 0 },
	{ MSG_HEALTH_REQ, sizeof(struct msg_empty), MSG_FD_NONE, "HEALTH_REQ", 0 },
	{ MSG_METRICS_REQ, sizeof(struct msg_empty), MSG_FD_NONE, "METRICS_REQ", 0 },
	{ MSG_ACME_REQ, sizeof(struct msg_acme_req), MSG_FD_NONE, "ACME_REQ", 0 },
};

static const struct msg_rule relay_to_parent[] = {
	{ MSG_CONN_REROUTE, sizeof(struct msg_conn_upgrade), MSG_FD_REQUIRED, "CONN_REROUTE",
	    CONN_UPGRADE_MIN },
	{ MSG_CONN_CLOSED, sizeof(struct msg_conn_closed), MSG_FD_NONE, "CONN_CLOSED", 0 },
	{ MSG_RELAY_STATE, sizeof(struct msg_relay_state), MSG_FD_NONE, "RELAY_STATE", 0 },
	{ MSG_RETIRE, sizeof(struct msg_empty), MSG_FD_NONE, "RETIRE", 0 },
	{ MSG_RELAY_COUNTERS, sizeof(struct relay_counters), MSG_FD_NONE, "RELAY_COUNTERS", 0 },
	{ MSG_CTL_PHONE, sizeof(struct msg_ctl_phone), MSG_FD_NONE, "CTL_PHONE", 0 },
	{ MSG_PUSH_WAKE, sizeof(struct msg_push_wake), MSG_FD_NONE, "PUSH_WAKE", 0 },
};

static const struct msg_rule push_to_parent[] = {
	{ MSG_PUSH_DONE, sizeof(struct msg_push_done), MSG_FD_NONE, "PUSH_DONE", 0 },
	{ MSG_PUSH_REFRESH, sizeof(struct msg_empty), MSG_FD_NONE, "PUSH_REFRESH", 0 },
};

/* Logs the limit that stopped a worker from starting (errno is the cause). */
static void
parent_spawn_failed(enum proc_role role, const char *sid)
{
	int	err = errno;

	log_warnx("event=spawn_failed role=%s server_id=%s limit=%s error=\"%s\"",
	    sandbox_role_name(role), sid != NULL ? sid : "-",
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
 * into a process that talks to the network (architecture.md: workers
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

static const struct msg_rule spawner_to_parent[] = {
	{ MSG_SPAWNED, sizeof(struct msg_spawned), MSG_FD_NONE, "SPAWNED", 0 },
};

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

/* Waits up to the deadline for fd to be ready for events. */
static int
parent_spawner_poll(int fd, short events, int64_t deadline)
{
	struct pollfd	pfd;
	int64_t		left;
	int		rv;

	for (;;) {
		if ((left = deadline - now_ms()) <= 0)
			return 0;
		pfd.fd = fd;
		pfd.events = events;
		if ((rv = poll(&pfd, 1, (int)left)) != -1 || errno != EINTR)
			return rv;
	}
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
	struct msg_spawned	*rep;
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
	msg_compose(&p->spawner, MSG_SPAWN, ++p->spawn_seq, &sp,
	    offsetof(struct msg_spawn, args) + len, fd);
	while ((rv = msg_flush(&p->spawner)) == 0)
		if (parent_spawner_poll(p->spawner.fd, POLLOUT, deadline) <= 0)
			break;
	if (rv != 1) {
		why = rv == -1 ? p->spawner.errstr : "no room for a request";
		goto lost;
	}
	for (;;) {
		if ((rv = msg_recv(&p->spawner, &m)) == 0) {
			if (parent_spawner_poll(p->spawner.fd, POLLIN,
			    deadline) > 0)
				continue;
			why = "no answer";
			goto lost;
		}
		if (rv < 0) {
			why = p->spawner.errstr;
			goto lost;
		}
		if (m.hdr.type == MSG_HELLO)
			continue;
		rep = (struct msg_spawned *)m.body;
		if (m.hdr.id != p->spawn_seq || (rep->pid == -1) ==
		    (rep->error == 0) || rep->pid == 0 || rep->pid < -1) {
			why = "answer out of order";
			goto lost;
		}
		if (rep->pid == -1)
			errno = rep->error;
		return rep->pid;
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
 * The spawner, started first, while the parent holds few descriptors.
 * Without one (it could not start), workers start from the parent.
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
	argv[argc++] = "spawner";
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
	msg_chan_init(&p->spawner, sv[0], spawner_to_parent,
	    sizeof(spawner_to_parent) / sizeof(spawner_to_parent[0]));
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
	tv.tv_sec = wait / 1000;
	tv.tv_usec = (wait % 1000) * 1000;
	evtimer_add(p->ev_spawner, &tv);
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
		argv[argc++] = role == ROLE_PUSH ? "push" : "front";
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
	w = xcalloc(1, sizeof(*w));
	w->role = role;
	w->pid = pid;
	/* reaping finds it by pid */
	RB_INSERT(worker_pids, &p->pids, w);
	w->started_ms = now_ms();
	TAILQ_INIT(&w->conns);
	if (sid != NULL)
		strlcpy(w->sid, sid, sizeof(w->sid));
	if (role == ROLE_FRONT)
		msg_chan_init(&w->chan, sv[0], front_to_parent,
		    sizeof(front_to_parent) / sizeof(front_to_parent[0]));
	else if (role == ROLE_PUSH)
		msg_chan_init(&w->chan, sv[0], push_to_parent,
		    sizeof(push_to_parent) / sizeof(push_to_parent[0]));
	else
		msg_chan_init(&w->chan, sv[0], relay_to_parent,
		    sizeof(relay_to_parent) / sizeof(relay_to_parent[0]));
	w->ev_read = event_new(p->base, sv[0], EV_READ | EV_PERSIST,
	    parent_worker_read, w);
	w->ev_write = event_new(p->base, sv[0], EV_WRITE | EV_PERSIST,
	    parent_worker_write, w);
	if (w->ev_read == NULL || w->ev_write == NULL)
		fatalx("parent: event_new");
	event_add(w->ev_read, NULL);
	TAILQ_INSERT_TAIL(&p->workers, w, entry);
	parent_send_setup(p, w);
	return w;
}

/* ---- the relay pool (docs/pool.md) ------------------------------------- */

void
pool_schedule(struct parent *p, int64_t ms)
{
	struct timeval	tv;

	if (p->stopping || p->npool >= p->conf->relay_pool ||
	    evtimer_pending(p->ev_pool_fill, NULL))
		return;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
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

	while (!p->stopping && p->npool < p->conf->relay_pool &&
	    p->npool - p->npool_ready < p->pool_starting_max) {
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

/* After a reload: start what is missing, stop what is beyond the size. */
void
pool_resize(struct parent *p)
{
	struct worker	*w;

	while (p->npool > p->conf->relay_pool &&
	    (w = TAILQ_LAST(&p->pool, worker_list)) != NULL) {
		pool_remove(p, w);
		log_info("event=relay_pool_stop pid=%d", (int)w->pid);
		kill(w->pid, SIGTERM);
	}
	pool_schedule(p, 0);
}
