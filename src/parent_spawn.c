/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The parent starting its workers: fronts and the relay zygote through the
 * spawner (docs/pool.md), or from the parent itself while there is none,
 * with a minimal environment and the SETUP each of them waits for; relays
 * through the zygote (parent_zygote.c).  The parent never waits for a
 * start: a worker exists, with its channel and the messages queued for
 * it, from the request on, and its pid comes with the answer
 * (parent_reap.c).
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

/* A front's or the zygote's: HELLO, SETUP (and a front's certificate). */
static void
parent_send_setup(struct parent *p, struct worker *w)
{
	struct msg_setup	*s;

	s = xcalloc(1, sizeof(*s));
	/* the zygote gets the relay's SETUP: every relay starts from it */
	s->role = w->role == ROLE_ZYGOTE ? ROLE_RELAY : w->role;
	s->verbose = p->opts.verbose;
	s->root = p->root;
	s->uid = p->uid;
	s->gid = p->gid;
	strlcpy(s->chroot, p->conf->chroot, sizeof(s->chroot));
	s->lim = p->conf->lim;
	s->filter = *p->filters[s->role];
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

/* Forgets the spawner's channel: nothing more is asked of it. */
void
parent_spawner_close(struct parent *p)
{
	if (p->ev_spawner_read != NULL) {
		event_free(p->ev_spawner_read);
		event_free(p->ev_spawner_write);
		p->ev_spawner_read = p->ev_spawner_write = NULL;
	}
	msg_chan_clear(&p->spawner);
}

/*
 * The spawner failed the parent (a broken channel, an answer out of order
 * or naming a process that is not the parent's child): it is killed, and
 * the starts it had not answered fail.  Until it is reaped and a new one
 * started, workers start from the parent itself.
 */
static void
parent_spawner_lost(struct parent *p, const char *why)
{
	struct worker	*w;

	log_warnx("event=spawner_failed pid=%d reason=\"%s\" action=restart",
	    (int)p->spawner_pid, why);
	kill(p->spawner_pid, SIGKILL);
	/* its fd becomes -1: reaping still knows its pid, nothing is sent */
	parent_spawner_close(p);
	while ((w = TAILQ_FIRST(&p->spawns)) != NULL)
		parent_worker_start_failed(p, w, EAGAIN);
}

/* SPAWNED (checked: msg_spawned_check, a pid or an errno), oldest first */
static void
parent_spawned(void *arg, struct msg *m)
{
	struct parent		*p = arg;
	struct msg_spawned	*rep = (struct msg_spawned *)m->body;
	struct worker		*w;

	if ((w = TAILQ_FIRST(&p->spawns)) == NULL || w->start_seq != m->hdr.id) {
		parent_spawner_lost(p, "answer out of order");
		return;
	}
	if (rep->pid == -1)
		parent_worker_start_failed(p, w, rep->error);
	else if (parent_worker_started(p, w, rep->pid) == -1)
		parent_spawner_lost(p, "a pid that is not the parent's new child");
}

/* What the parent takes from the spawner (docs/messages.md). */
static const struct msg_rule spawner_rows[] = {
	MSG_RULE(SPAWNED, MSG_FD_NONE, parent_spawned),
};
const struct msg_rules parent_from_spawner =
    MSG_RULES(ROLE_SPAWNER, ROLE_PARENT, spawner_rows);

static void
parent_spawner_read(evutil_socket_t fd, short ev, void *arg)
{
	static struct msg	*m;
	struct parent		*p = arg;
	int			 rv, n;

	if (m == NULL)
		m = xmalloc(sizeof(*m));
	for (n = 0; n < 256 && p->spawner.fd != -1; n++) {
		if ((rv = msg_recv(&p->spawner, m)) == 0)
			return;
		if (rv < 0) {
			parent_spawner_lost(p, p->spawner.errstr);
			return;
		}
		/* its HELLO is passed over */
		msg_handle(m, p);
	}
}

static void
parent_spawner_flush(struct parent *p)
{
	int	rv;

	if ((rv = msg_flush(&p->spawner)) == -1)
		parent_spawner_lost(p, p->spawner.errstr);
	else if (rv == 0)
		event_add(p->ev_spawner_write, NULL);
	else
		event_del(p->ev_spawner_write);
}

static void
parent_spawner_write(evutil_socket_t fd, short ev, void *arg)
{
	parent_spawner_flush(arg);
}

/*
 * Asks the spawner to start path with argv on fd (its fd 3); fd is handed
 * over.  w waits in p->spawns for the answer, in order.  -1 with errno
 * when the request cannot even be made.
 */
static int
parent_spawn_via_spawner(struct parent *p, struct worker *w, const char *path,
    char **argv, int fd, int opts)
{
	struct msg_spawn	 sp;
	size_t			 n, len = 0;
	int			 i;

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
	sp.opts = (uint32_t)opts;
	w->start_seq = ++p->spawn_seq;
	msg_compose(&p->spawner, MSG_SPAWN, w->start_seq, &sp,
	    offsetof(struct msg_spawn, args) + len, fd);
	parent_start_wait(p, w, NULL);
	parent_spawner_flush(p);
	return 0;
}

/*
 * Starts path with argv on fd (its fd 3), with opts (SPAWN_*): through
 * the spawner when there is one, without waiting; else here, waiting for
 * the child's exec (only while there is no spawner).  fd is consumed.  0,
 * or -1 with errno.
 */
static int
parent_start_process(struct parent *p, struct worker *w, const char *path,
    char **argv, int fd, int opts)
{
	pid_t	pid;
	int	saved;

	if (p->spawner_pid != 0 && p->spawner.fd != -1)
		return parent_spawn_via_spawner(p, w, path, argv, fd, opts);
	pid = spawn_process(path, argv, worker_env(), fd, 0, opts);
	saved = errno;
	close(fd);
	errno = saved;
	if (pid == -1)
		return -1;
	w->pid = pid;
	RB_INSERT(worker_pids, &p->pids, w);
	return 0;
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
	pid = spawn_process(p->self, argv, worker_env(), sv[1], 0, 0);
	close(sv[1]);
	if (pid == -1) {
		log_warn("event=spawner_failed step=start action=direct");
		close(sv[0]);
		return;
	}
	p->spawner_pid = pid;
	msg_chan_init(&p->spawner, sv[0], &parent_from_spawner);
	p->ev_spawner_read = event_new(p->base, sv[0], EV_READ | EV_PERSIST,
	    parent_spawner_read, p);
	p->ev_spawner_write = event_new(p->base, sv[0], EV_WRITE | EV_PERSIST,
	    parent_spawner_write, p);
	if (p->ev_spawner_read == NULL || p->ev_spawner_write == NULL)
		fatalx("parent: event_new");
	event_add(p->ev_spawner_read, NULL);
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

/* The spawner was reaped. */
void
parent_spawner_exited(struct parent *p)
{
	if (!p->stopping)
		log_warnx("event=spawner_exited pid=%d action=restart",
		    (int)p->spawner_pid);
	/* what it answered before it went */
	if (p->spawner.fd != -1)
		parent_spawner_read(p->spawner.fd, EV_READ, p);
	if (p->spawner.fd != -1)
		parent_spawner_lost(p, "exited");
	p->spawner_pid = 0;
	parent_restart_spawner(-1, 0, p);
}

/* w's start was asked of its starter (the spawner, or zygote z). */
void
parent_start_wait(struct parent *p, struct worker *w, struct worker *z)
{
	w->starting = 1;
	w->starter = z;
	TAILQ_INSERT_TAIL(z != NULL ? &z->forks : &p->spawns, w, start_entry);
	p->nstarting++;
}

/* w's start is answered, or w is gone: its starter waits no more for it. */
void
parent_start_forget(struct parent *p, struct worker *w)
{
	if (!w->starting)
		return;
	TAILQ_REMOVE(w->starter != NULL ? &w->starter->forks : &p->spawns, w,
	    start_entry);
	w->starting = 0;
	w->starter = NULL;
	p->nstarting--;
}

/*
 * Before an upgrade's exec: the answers the spawner and the zygotes owe
 * are read, waiting SETTLE_WAIT_MS at most, so that every worker the
 * state carries has its pid.  Nothing new is asked meanwhile, so the
 * wait ends; a start still unanswered then is not carried, and its
 * worker exits when its channel closes with the exec.
 */
#define SETTLE_WAIT_MS		1000
#define SETTLE_FDS		16

void
parent_starts_settle(struct parent *p)
{
	struct pollfd	 pfd[SETTLE_FDS];
	struct worker	*who[SETTLE_FDS], *w;
	int64_t		 left, end = now_ms() + SETTLE_WAIT_MS;
	int		 n, i;

	while (p->nstarting > 0 && (left = end - now_ms()) > 0) {
		n = 0;
		if (!TAILQ_EMPTY(&p->spawns) && p->spawner.fd != -1) {
			parent_spawner_flush(p);
			who[n] = NULL;
			pfd[n].fd = p->spawner.fd;
			pfd[n++].events = POLLIN |
			    (TAILQ_EMPTY(&p->spawner.outq) ? 0 : POLLOUT);
		}
		TAILQ_FOREACH(w, &p->workers, entry) {
			if (w->role != ROLE_ZYGOTE || w->dead ||
			    TAILQ_EMPTY(&w->forks) || n == SETTLE_FDS)
				continue;
			parent_worker_flush(w);
			who[n] = w;
			pfd[n].fd = w->chan.fd;
			pfd[n++].events = POLLIN |
			    (TAILQ_EMPTY(&w->chan.outq) ? 0 : POLLOUT);
		}
		if (n == 0 || poll(pfd, n, (int)left) <= 0)
			break;
		/* one at a time: a read may end a zygote, and the list */
		for (i = 0; i < n && pfd[i].revents == 0; i++)
			;
		if (i == n)
			continue;
		if (who[i] == NULL)
			parent_spawner_read(pfd[i].fd, EV_READ, p);
		else
			parent_worker_read(pfd[i].fd, EV_READ, who[i]);
	}
	if (p->nstarting > 0)
		log_warnx("event=upgrade_starts_unanswered count=%u",
		    (unsigned)p->nstarting);
}

/*
 * What the parent takes from a worker, by its role and the message
 * version of its HELLO (docs/upgrade.md, "Versions"): a version the
 * parent serves whose messages differ from its own keeps its table here,
 * for as long as workers of that version may live.  None differs yet
 * (the zygote's table is new, but no zygote crosses an upgrade).
 */
const struct msg_rules *
parent_worker_rules(enum proc_role role, uint32_t version)
{
	return role == ROLE_FRONT ? &parent_from_front :
	    role == ROLE_PUSH ? &parent_from_push :
	    role == ROLE_ZYGOTE ? &parent_from_zygote : &parent_from_relay;
}

struct worker *
parent_worker_new(struct parent *p, enum proc_role role, pid_t pid, int fd,
    const char *sid, int fresh)
{
	struct worker	*w;

	w = xcalloc(1, sizeof(*w));
	w->role = role;
	w->pid = pid;
	w->front_slot = -1;
	if (role == ROLE_RELAY)
		p->nrelays++;
	/* reaping finds it by pid; a worker still starting, once it has one */
	if (pid > 0)
		RB_INSERT(worker_pids, &p->pids, w);
	w->started_ms = now_ms();
	TAILQ_INIT(&w->conns);
	TAILQ_INIT(&w->forks);
	if (sid != NULL)
		strlcpy(w->sid, sid, sizeof(w->sid));
	if (fd == -1) {
		/* one the image before had lost: only its end is left to see */
		w->dead = 1;
		w->chan.fd = -1;
		TAILQ_INIT(&w->chan.outq);
	} else if (fresh)
		/* our end of a new socketpair: non-blocking, close-on-exec */
		msg_chan_ready(&w->chan, fd, parent_worker_rules(role,
		    msg_version));
	else
		/* an adopted one, which crossed the exec: flags made sure */
		msg_chan_init(&w->chan, fd, parent_worker_rules(role,
		    msg_version));
	/* a relay's and the zygote's batches come packed (msg.h MSG_PACK) */
	w->chan.pack_in = 1;
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

/*
 * Starts a front, the push process, the relay zygote or a relay (forked
 * by the zygote with no server-id; sid, for the log, is the one the
 * caller will assign it, NULL for the pool).  The worker is there at
 * once, its pid may come later; NULL when it cannot be started.
 */
struct worker *
parent_spawn(struct parent *p, enum proc_role role, const char *sid)
{
	struct worker	*w, *z = NULL;
	int		 sv[2];
	char		*argv[6];
	int		 argc = 0;

	/* a relay needs a zygote, started if there is none (and may be) */
	if (role == ROLE_RELAY && (z = parent_zygote_for_fork(p)) == NULL) {
		errno = EAGAIN;
		parent_spawn_failed(role, sid);
		return NULL;
	}
	/*
	 * Non-blocking from the start, both ends: ours and a relay's (the
	 * zygote's fork) are taken as they come (msg_chan_ready), with no
	 * fcntl; an exec'd worker makes its own so (msg_chan_init).
	 */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0, sv) == -1) {
		parent_spawn_failed(role, sid);
		return NULL;
	}
	w = parent_worker_new(p, role, 0, sv[0], NULL, 1);
	if (role == ROLE_RELAY) {
		/*
		 * No HELLO either way: the zygote's stands for its relay, the
		 * same program (relay_forked), which speaks our version (a
		 * zygote takes only our HELLO, and its own may not have come
		 * yet: FORKs wait in its channel).  The relay is ready once
		 * the zygote names it (parent_worker_announce); one that
		 * fails its start exits non-zero (parent_reaped).
		 */
		msg_hello_known(&w->chan, msg_version, ROLE_RELAY, 0);
		w->hello = 1;
		parent_zygote_fork(p, z, w, sv[1]);
		return w;
	}
	/* argv[0] names the titles ps(1) shows: "pyrelayd: front" */
	argv[argc++] = "pyrelayd";
	argv[argc++] = "-P";
	argv[argc++] = (char *)proc_role_name(role);
	if (p->opts.foreground)
		argv[argc++] = "-d";
	argv[argc] = NULL;
	/* the zygote's relays copy its page tables: no heap far from its image */
	if (parent_start_process(p, w, role == ROLE_ZYGOTE ? p->relay_exe :
	    p->self, argv, sv[1], role == ROLE_ZYGOTE ? SPAWN_NO_BRK : 0) == -1) {
		parent_spawn_failed(role, sid);
		parent_relay_unwatch(p, w);
		TAILQ_REMOVE(&p->workers, w, entry);
		event_free(w->ev_read);
		event_free(w->ev_write);
		msg_chan_clear(&w->chan);
		free(w);
		return NULL;
	}
	parent_send_setup(p, w);
	return w;
}

/*
 * A worker's HELLO, and its pid: both are needed, in either order (a
 * worker may say HELLO before its starter's answer is read).  It is set
 * up and sandboxed, its start is over.  A pooled relay is ready to be
 * given a server-id and the next may start; the daemon is ready once
 * every front is.
 */
void
parent_worker_announce(struct parent *p, struct worker *w)
{
	if (!w->hello || w->pid <= 0 || w->ready)
		return;
	w->ready = 1;
	if (w->pooled) {
		p->npool_ready++;
		log_debug("event=relay_pooled pid=%d", (int)w->pid);
		/* the next one may start */
		pool_schedule(p, 0);
	}
	if (w->role == ROLE_PUSH)
		parent_push_ready(p, w);
	if (w->role == ROLE_ZYGOTE)
		parent_zygote_ready(p, w);
	if (w->role != ROLE_FRONT)
		return;
	log_info("event=front_ready pid=%d", (int)w->pid);
	parent_fronts_ready(p);
}

void
parent_worker_ready(struct parent *p, struct worker *w)
{
	/* one adopted before its HELLO may speak the version before ours */
	w->chan.rules = parent_worker_rules(w->role, w->chan.peer.version);
	w->hello = 1;
	parent_worker_announce(p, w);
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
		if (p->fronts[i] == NULL || !p->fronts[i]->ready)
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
