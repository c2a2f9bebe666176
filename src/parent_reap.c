/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The end of the parent's workers, and the moment each one's pid becomes
 * known.  Workers are started without the parent waiting (docs/pool.md):
 * the spawner or the zygote answers with the pid later, so a worker may
 * live, send messages, even die and be reaped, before the parent knows
 * its pid.  Signals for a worker whose pid is not known yet are held
 * (never kill(0, ...), which would reach the parent's own group), and a
 * child reaped before its pid was known is kept until the answer names
 * it.  Every pid an answer names must be the parent's child.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/wait.h>

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "parent.h"
#include "proc.h"
#include "pyrelayd.h"

#define RESPAWN_MIN_MS		100	/* first restart of a dead front */
#define RESPAWN_MAX_MS		10000	/* backoff ceiling for a front that keeps dying */
#define RESPAWN_STABLE_MS	5000	/* a front that lived this long resets the backoff */

/*
 * Sends sig to w, or, while w's pid is not known, when it is: the
 * strongest asked for wins (SIGKILL over SIGTERM).
 */
void
parent_worker_signal(struct worker *w, int sig)
{
	if (w->pid > 0) {
		kill(w->pid, sig);
		return;
	}
	if (w->kill_sig != SIGKILL)
		w->kill_sig = sig;
}

/* The worker is gone for good: its connections, its places, its memory. */
void
parent_worker_free(struct parent *p, struct worker *w)
{
	struct conn_rec	*c;

	/* a crashed worker's connections are gone with it: release their slots */
	while ((c = TAILQ_FIRST(&w->conns)) != NULL)
		conn_release(p, c);
	if (w->role == ROLE_RELAY) {
		parent_relay_counts(p, w, 0, 0);
		p->nrelays--;
	}
	if (w->in_map)
		RB_REMOVE(relay_map, &p->relays, w);
	if (w->pooled) {
		/*
		 * One that failed to start (never said HELLO; a relay, which
		 * says none, exited non-zero or was never forked): do not spin
		 */
		int	ready = w->hello && !w->start_failed;

		pool_remove(p, w);
		/* and no refill sooner, whatever asks for one (pool_schedule) */
		if (!ready)
			p->pool_retry_at = now_ms() + POOL_RETRY_MS;
		pool_schedule(p, ready ? 0 : POOL_RETRY_MS);
	} else if (w->role == ROLE_RELAY)
		/* room under max relays again: a pool held below its size refills */
		pool_schedule(p, 0);
	parent_relay_unwatch(p, w);
	parent_ctl_relay_gone(p, w);
	parent_stand_in_gone(p, w);
	if (p->last_front == w)
		p->last_front = NULL;
	parent_metrics_front_gone(p, w);
	parent_metrics_relay_done(p, w);
	parent_metrics_relay_gone(p, w);
	if (w->starting)
		parent_start_forget(p, w);
	if (w->role == ROLE_ZYGOTE)
		parent_zygote_gone(p, w);
	if (w->pid > 0)
		RB_REMOVE(worker_pids, &p->pids, w);
	TAILQ_REMOVE(&p->workers, w, entry);
	event_free(w->ev_read);
	event_free(w->ev_write);
	msg_chan_clear(&w->chan);
	free(w);
}

void
parent_respawn_fronts(evutil_socket_t fd, short ev, void *arg)
{
	struct parent	*p = arg;
	int		 i;

	if (p->stopping)
		return;
	for (i = 0; i < p->nfronts; i++) {
		if (p->fronts[i] != NULL)
			continue;
		if ((p->fronts[i] = parent_spawn(p, ROLE_FRONT, NULL)) == NULL) {
			struct timeval	tv = ms_timeval(1000);

			evtimer_add(p->ev_respawn, &tv);
			return;
		}
		p->fronts[i]->front_slot = i;
		log_info("event=front_started slot=%d", i);
	}
}

/* A front is gone: its slot is started again, later while fronts die young. */
static void
parent_front_lost(struct parent *p, struct worker *w)
{
	struct timeval	tv;
	int		i;

	for (i = 0; i < p->nfronts; i++)
		if (p->fronts[i] == w)
			p->fronts[i] = NULL;
	if (now_ms() - w->started_ms >= RESPAWN_STABLE_MS)
		p->respawn_ms = RESPAWN_MIN_MS;
	else if (p->respawn_ms < RESPAWN_MAX_MS)
		p->respawn_ms = p->respawn_ms ? p->respawn_ms * 2 : RESPAWN_MIN_MS;
	if (p->stopping || evtimer_pending(p->ev_respawn, NULL))
		return;
	if (p->respawn_ms > RESPAWN_MAX_MS)
		p->respawn_ms = RESPAWN_MAX_MS;
	tv = ms_timeval(p->respawn_ms);
	evtimer_add(p->ev_respawn, &tv);
}

void
parent_check_stopped(struct parent *p)
{
	if (p->stopping && TAILQ_EMPTY(&p->workers)) {
		/* the spawner exits when its channel closes (1 s at most) */
		if (p->spawner_pid != 0) {
			int	i;

			parent_spawner_close(p);
			for (i = 0; i < 100 &&
			    waitpid(p->spawner_pid, NULL, WNOHANG) == 0; i++)
				usleep(10000);
			if (i == 100) {
				kill(p->spawner_pid, SIGKILL);
				waitpid(p->spawner_pid, NULL, 0);
			}
		}
		parent_ctl_close(p);
		log_info("event=stopped");
		exit(0);
	}
}

/* How worker w (its pid known) ended: logged, counted, and it is freed. */
static void
parent_reaped(struct parent *p, struct worker *w, int status)
{
	char	how[64];
	pid_t	pid = w->pid;

	if (WIFSIGNALED(status))
		snprintf(how, sizeof(how), "signal=%d", WTERMSIG(status));
	else
		snprintf(how, sizeof(how), "status=%d", WEXITSTATUS(status));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		w->start_failed = 1;
	if (w->role == ROLE_RELAY && !w->pooled && !w->pool_stopped) {
		if (w->killed)
			p->relay_exits[EXIT_KILLED]++;
		else if (WIFSIGNALED(status))
			p->relay_exits[EXIT_SIGNALED]++;
		else if (WEXITSTATUS(status) != 0)
			p->relay_exits[EXIT_FAILED]++;
		else
			p->relay_exits[EXIT_RETIRED]++;
	}
	/*
	 * A relay that exits 0 after RETIRE_OK (or at shutdown), a zygote
	 * that exits 0 once renewed, a push process retired or a front
	 * replaced by an upgrade, are normal.
	 */
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
	    (w->role == ROLE_RELAY || w->retired || w->finishing ||
	    w->replaced || p->stopping ||
	    (w->role == ROLE_ZYGOTE && w->retiring)))
		log_info("event=%s_exited pid=%d server_id=%s %s%s",
		    proc_role_name(w->role), (int)pid, w->sid[0] ? w->sid : "-",
		    how, w->pooled || w->pool_stopped ? " pooled=1" : "");
	else
		log_warnx("event=%s_exited pid=%d server_id=%s %s%s abnormal=1",
		    proc_role_name(w->role), (int)pid, w->sid[0] ? w->sid : "-",
		    how, w->pooled || w->pool_stopped ? " pooled=1" : "");
	/* a front replaced by an upgrade is not started again */
	if (w->role == ROLE_FRONT && !w->finishing && !w->replaced)
		parent_front_lost(p, w);
	if (w->role == ROLE_PUSH)
		parent_push_exited(p, w);
	/* a zygote's last answers: the pids of the relays it forked */
	if (w->role == ROLE_ZYGOTE && !w->dead)
		parent_worker_drain(p, w);
	parent_worker_free(p, w);
}

/*
 * A child reaped before its starter's answer named it (a relay can run,
 * and die, before the zygote's answer is read): kept until then.  Only
 * while answers are awaited, and the oldest goes when it is full.
 */
static void
parent_reaped_early(struct parent *p, pid_t pid, int status)
{
	if (p->nstarting == 0)
		return;
	if (p->nreaped_early == REAPED_EARLY_MAX) {
		memmove(&p->reaped_early[0], &p->reaped_early[1],
		    (REAPED_EARLY_MAX - 1) * sizeof(p->reaped_early[0]));
		p->nreaped_early--;
	}
	p->reaped_early[p->nreaped_early].pid = pid;
	p->reaped_early[p->nreaped_early].status = status;
	p->nreaped_early++;
}

/*
 * The spawner or the zygote says w's pid (checked: above 0).  It must be
 * a child of the parent (CLONE_PARENT) that no other worker is: else -1,
 * and the caller treats the one that said it as lying.  Signals held for
 * w go now; a w already reaped ends here.
 */
int
parent_worker_started(struct parent *p, struct worker *w, pid_t pid)
{
	struct worker	 key;
	siginfo_t	 si;
	int		 i, status, early = -1;

	key.pid = pid;
	if (pid <= 0 || RB_FIND(worker_pids, &p->pids, &key) != NULL)
		return -1;
	for (i = 0; i < p->nreaped_early; i++)
		if (p->reaped_early[i].pid == pid)
			early = i;
	memset(&si, 0, sizeof(si));
	if (early == -1 && waitid(P_PID, pid, &si, WEXITED | WNOHANG |
	    WNOWAIT) == -1)
		return -1;
	parent_start_forget(p, w);
	w->pid = pid;
	RB_INSERT(worker_pids, &p->pids, w);
	if (w->role == ROLE_RELAY && w->in_map)
		log_debug("event=relay_started server_id=%s pid=%d pooled=0",
		    w->sid, (int)pid);
	/* killed before it was named (parent_worker_kill): said now */
	if (w->killed)
		parent_worker_log_kill(w);
	if (early != -1) {
		status = p->reaped_early[early].status;
		memmove(&p->reaped_early[early], &p->reaped_early[early + 1],
		    (p->nreaped_early - early - 1) *
		    sizeof(p->reaped_early[0]));
		p->nreaped_early--;
		parent_reaped(p, w, status);
		parent_check_stopped(p);
		return 0;
	}
	if (w->kill_sig != 0)
		kill(pid, w->kill_sig);
	parent_worker_announce(p, w);
	return 0;
}

/*
 * w will never run: its starter failed it, or is gone.  A front's slot
 * is started again; the connections queued for a relay go with it.
 */
void
parent_worker_start_failed(struct parent *p, struct worker *w, int error)
{
	errno = error;
	w->start_failed = 1;
	log_warnx("event=spawn_failed role=%s server_id=%s limit=%s error=\"%s\"",
	    proc_role_name(w->role), w->sid[0] ? w->sid : "-",
	    limit_name(error), strerror(error));
	if (w->role == ROLE_FRONT)
		parent_front_lost(p, w);
	parent_worker_free(p, w);
	parent_check_stopped(p);
}

void
parent_sigchld(evutil_socket_t sig, short ev, void *arg)
{
	struct parent	*p = arg;
	struct worker	*w, key;
	pid_t		 pid;
	int		 status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid == p->spawner_pid) {
			parent_spawner_exited(p);
			continue;
		}
		if (parent_upgrade_reaped(p, pid, status))
			continue;
		/* by pid in a tree: 20,000 relays exiting is not quadratic */
		key.pid = pid;
		if ((w = RB_FIND(worker_pids, &p->pids, &key)) == NULL)
			parent_reaped_early(p, pid, status);
		else
			parent_reaped(p, w, status);
	}
	parent_check_stopped(p);
}
