/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * A relay's event loop (relay_loop.h): epoll, a binary heap of timers,
 * the end-of-turn hook, and SIGTERM taken in epoll_pwait.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "pyrelayd.h"
#include "relay_alloc.h"
#include "relay_loop.h"

/*
 * Set by the handler, which runs only inside epoll_pwait.  Thread-local:
 * in the thread's block, a page every relay writes anyway (its canary,
 * errno), where a static would dirty a page of .bss of its own.
 */
static __thread volatile sig_atomic_t	rloop_term;

static void
rloop_on_sigterm(int sig)
{
	rloop_term = 1;
}

int
rloop_init(struct rloop *l, void (*turn_end)(struct rloop *),
    void (*sigterm)(struct rloop *))
{
	struct sigaction	sa;
	sigset_t		term, old;
	int			sig;

	memset(l, 0, sizeof(*l));
	l->turn_end = turn_end;
	l->sigterm = sigterm;
	if ((l->epfd = epoll_create1(EPOLL_CLOEXEC)) == -1)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = sigterm != NULL ? rloop_on_sigterm : SIG_IGN;
	sigemptyset(&sa.sa_mask);
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	/* blocked first: from here on it arrives only while the loop waits */
	if (sigprocmask(SIG_BLOCK, &term, &old) == -1 ||
	    sigaction(SIGTERM, &sa, NULL) == -1) {
		close(l->epfd);
		l->epfd = -1;
		return -1;
	}
	/* the kernel's mask: bit n - 1 for signal n */
	for (sig = 1; sig <= 64; sig++)
		if (sig != SIGTERM && sigismember(&old, sig) == 1)
			l->waitmask |= (uint64_t)1 << (sig - 1);
	return 0;
}

int
rloop_watch(struct rloop *l, struct rl_watch *w, uint32_t events)
{
	struct epoll_event	ev;
	int			op;

	if (events == w->events)
		return 0;
	if (events == 0)
		op = EPOLL_CTL_DEL;
	else if (w->events == 0)
		op = EPOLL_CTL_ADD;
	else
		op = EPOLL_CTL_MOD;
	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.ptr = w;
	if (epoll_ctl(l->epfd, op, w->fd, &ev) == -1)
		return -1;
	w->events = events;
	return 0;
}

void
rloop_forget(struct rloop *l, struct rl_watch *w)
{
	int	i;

	/* out of the set now: another process may hold the same file open */
	if (w->events != 0)
		(void)rloop_watch(l, w, 0);
	for (i = l->ev_next; i < l->ev_n; i++)
		if (l->evs[i].data.ptr == w)
			l->evs[i].data.ptr = NULL;
}

/* --- the timers' heap, by deadline ------------------------------------ */

static void
heap_set(struct rloop *l, size_t i, struct rl_timer *t)
{
	l->heap[i] = t;
	t->slot = (uint32_t)i + 1;
}

static void
heap_up(struct rloop *l, size_t i)
{
	struct rl_timer	*t = l->heap[i];
	size_t		 parent;

	while (i > 0) {
		parent = (i - 1) / 2;
		if (l->heap[parent]->at <= t->at)
			break;
		heap_set(l, i, l->heap[parent]);
		i = parent;
	}
	heap_set(l, i, t);
}

static void
heap_down(struct rloop *l, size_t i)
{
	struct rl_timer	*t = l->heap[i];
	size_t		 child;

	for (;;) {
		child = 2 * i + 1;
		if (child >= l->nheap)
			break;
		if (child + 1 < l->nheap &&
		    l->heap[child + 1]->at < l->heap[child]->at)
			child++;
		if (t->at <= l->heap[child]->at)
			break;
		heap_set(l, i, l->heap[child]);
		i = child;
	}
	heap_set(l, i, t);
}

void
rloop_timer_stop(struct rloop *l, struct rl_timer *t)
{
	size_t		 i;
	struct rl_timer	*last;

	if (t->slot == 0)
		return;
	i = t->slot - 1;
	t->slot = 0;
	last = l->heap[--l->nheap];
	if (last == t)
		return;
	heap_set(l, i, last);
	if (i > 0 && l->heap[(i - 1) / 2]->at > last->at)
		heap_up(l, i);
	else
		heap_down(l, i);
}

void
rloop_timer_at(struct rloop *l, struct rl_timer *t, int64_t at)
{
	struct rl_timer	**heap;
	uint32_t	  cap;

	t->turn = l->turn;
	if (t->slot != 0) {
		/* moved: up or down from where it is */
		t->at = at;
		heap_up(l, t->slot - 1);
		heap_down(l, t->slot - 1);
		return;
	}
	if (l->nheap == l->heapcap) {
		cap = l->heapcap == 0 ? 8 : l->heapcap * 2;
		if ((heap = ra_realloc(l->heap, cap * sizeof(*heap))) == NULL)
			fatal("relay: timers");
		l->heap = heap;
		l->heapcap = cap;
	}
	t->at = at;
	l->heap[l->nheap++] = t;
	heap_up(l, l->nheap - 1);
}

/* --- the loop ----------------------------------------------------------- */

/* How long the wait may last: until the nearest timer, or for ever. */
static int
rloop_timeout(struct rloop *l)
{
	int64_t	left;

	if (l->nheap == 0)
		return -1;
	if ((left = l->heap[0]->at - now_ms()) <= 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int)left;
}

/* The timers due, each once; one armed in this turn waits for the next. */
static void
rloop_timers(struct rloop *l)
{
	struct rl_timer	*t;
	int64_t		 now;

	if (l->nheap == 0)
		return;
	now = now_ms();
	while (l->nheap > 0 && (t = l->heap[0])->at <= now &&
	    t->turn != l->turn) {
		rloop_timer_stop(l, t);
		t->cb(t);
	}
}

int
rloop_run(struct rloop *l)
{
	struct rl_watch	*w;
	uint32_t	 revents;
	int		 n;

	while (!l->done) {
		l->turn++;
		/* a turn end asked for before the loop ran: no wait */
		n = (int)syscall(SYS_epoll_pwait, l->epfd, l->evs, RLOOP_EVENTS,
		    l->wake ? 0 : rloop_timeout(l), &l->waitmask,
		    sizeof(l->waitmask));
		if (n == -1) {
			if (errno != EINTR)
				return -1;
			n = 0;
		}
		if (rloop_term) {
			rloop_term = 0;
			if (l->sigterm != NULL)
				l->sigterm(l);
		}
		l->ev_n = n;
		for (l->ev_next = 0; l->ev_next < l->ev_n; ) {
			w = l->evs[l->ev_next].data.ptr;
			revents = l->evs[l->ev_next++].events;
			if (w != NULL)
				w->cb(w, revents);
		}
		l->ev_n = 0;
		rloop_timers(l);
		while (l->wake) {
			l->wake = 0;
			l->turn_end(l);
		}
	}
	return 0;
}
