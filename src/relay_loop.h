/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * A relay's event loop (docs/relay-executable.md, "A loop of its own"):
 * epoll for a handful of fds, a heap of timers on now_ms()'s clock, an
 * end-of-turn hook, and SIGTERM taken only while the loop waits.  A relay
 * is forked from the zygote and has no libevent event: libevent writes a
 * global of its own on every event_add, on a page of .bss that every relay
 * would then copy.  Everything here lives in the relay's own memory: the
 * loop's state in the caller's object, each watch and timer in the
 * object it serves, the heap in the relay's arena (ra_realloc).
 */
#ifndef RELAY_LOOP_H
#define RELAY_LOOP_H

#include <sys/epoll.h>

#include <stddef.h>
#include <stdint.h>

/*
 * Epoll events taken per wait: a relay has 18 connections at most for long
 * (a binary and 16 phones), and what a wait leaves the next one takes.
 */
#define RLOOP_EVENTS	16

struct rloop;

/* An fd in the loop's epoll set (level-triggered). */
struct rl_watch {
	int		 fd;
	uint32_t	 events;	/* EPOLLIN | EPOLLOUT asked; 0: not in the set */
	void		(*cb)(struct rl_watch *, uint32_t revents);
};

/* A deadline: cb runs once when now_ms() reaches at. */
struct rl_timer {
	int64_t		 at;
	uint32_t	 slot;		/* 1 + its index in the heap; 0: not pending */
	uint32_t	 turn;		/* the turn it was armed in */
	void		(*cb)(struct rl_timer *);
};

/*
 * Its state is small, as it is in every relay's first page of objects
 * (relay_alloc.c): the mask the wait takes is the kernel's 64 bits, not
 * glibc's 128-byte sigset_t.
 */
struct rloop {
	int			 epfd;
	uint32_t		 turn;
	struct rl_timer		**heap;
	uint32_t		 nheap, heapcap;
	int			 done;
	int			 wake;		/* turn_end asked for */
	void			(*turn_end)(struct rloop *);
	uint64_t		 waitmask;	/* the mask while waiting: SIGTERM open */
	void			(*sigterm)(struct rloop *);
	/* the events of this turn, not yet handled */
	struct epoll_event	 evs[RLOOP_EVENTS];
	int			 ev_next, ev_n;
};

/*
 * The loop, its epoll instance made (-1 and errno if not).  From here on
 * SIGTERM is blocked but while the loop waits, where it ends the wait and
 * sigterm runs (may be NULL: ignored).  turn_end runs at the end of each
 * turn it was asked for (rloop_wake), after the turn's events and timers.
 */
int	rloop_init(struct rloop *, void (*turn_end)(struct rloop *),
	    void (*sigterm)(struct rloop *));
/*
 * What the loop watches on w->fd: EPOLLIN, EPOLLOUT, both, or 0 for
 * nothing (the fd leaves the set).  Nothing asked of the kernel when
 * nothing changes.  -1 and errno when epoll refuses.
 */
int	rloop_watch(struct rloop *, struct rl_watch *, uint32_t events);
/*
 * The watch is going away (its fd about to be closed): out of the set,
 * and any of this turn's events for it dropped.
 */
void	rloop_forget(struct rloop *, struct rl_watch *);
/* Arms t for at (ms, now_ms()'s clock), or moves it there. */
void	rloop_timer_at(struct rloop *, struct rl_timer *, int64_t at);
void	rloop_timer_stop(struct rloop *, struct rl_timer *);
static inline int
rloop_timer_pending(const struct rl_timer *t)
{
	return t->slot != 0;
}
/* turn_end runs at the end of this turn. */
static inline void
rloop_wake(struct rloop *l)
{
	l->wake = 1;
}
/* The loop returns at the end of this turn. */
static inline void
rloop_exit(struct rloop *l)
{
	l->done = 1;
}
/*
 * Runs the loop until rloop_exit: each turn waits for the fds and the
 * nearest timer, runs the ready watches, then the timers due (one armed in
 * this turn waits for the next), then turn_end while asked for.
 * 0 when it was asked to end, -1 and errno when epoll failed.
 */
int	rloop_run(struct rloop *);

#endif
