/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Unit tests of src/relay_loop.c, a relay's event loop: timers fire once
 * each, in the order of their deadlines, stopped ones never and moved
 * ones at their new deadline; a timer armed while the timers run waits
 * for the next turn; watches run when their fd is ready, and not once
 * they watch nothing; a watch forgotten in a turn gets none of that
 * turn's events; the end of a turn runs when asked, before the loop
 * waits if asked before it ran; SIGTERM is blocked outside the wait and
 * taken in it.  Every loop has a guard timer: a test that would wait for
 * ever fails when it fires.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>

#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "pyrelayd.h"
#include "relay_alloc.h"
#include "relay_loop.h"
#include "unit.h"

#define GUARD_MS	5000
#define NTIMERS		200

static struct rloop	 loop;
static struct rl_timer	 guard;
static int		 guard_fired;

static void
guard_cb(struct rl_timer *t)
{
	guard_fired = 1;
	rloop_exit(&loop);
}

static void
loop_start(void (*turn_end)(struct rloop *), void (*sigterm)(struct rloop *))
{
	CU_ASSERT_EQUAL_FATAL(rloop_init(&loop, turn_end, sigterm), 0);
	guard_fired = 0;
	memset(&guard, 0, sizeof(guard));
	guard.cb = guard_cb;
	rloop_timer_at(&loop, &guard, now_ms() + GUARD_MS);
}

static void
loop_end(void)
{
	sigset_t	term;

	close(loop.epfd);
	ra_free(loop.heap);
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigprocmask(SIG_UNBLOCK, &term, NULL);
	signal(SIGTERM, SIG_DFL);
}

/* --- timers ------------------------------------------------------------- */

struct tt {
	struct rl_timer	 t;
	int		 fired;
	int		 stopped;
};

static struct tt	 tts[NTIMERS];
static int64_t		 fired_at[NTIMERS];
static int		 nfired, nexpected;

static void
tt_cb(struct rl_timer *t)
{
	struct tt	*x = (struct tt *)(void *)t;

	x->fired++;
	fired_at[nfired++] = t->at;
	if (nfired == nexpected)
		rloop_exit(&loop);
}

static void
test_timers_in_order(void)
{
	int64_t	now = now_ms();
	int	i;

	loop_start(NULL, NULL);
	srandom(19);
	memset(tts, 0, sizeof(tts));
	nfired = 0;
	nexpected = NTIMERS;
	/* due already, in no order; then every third stopped, every fifth moved */
	for (i = 0; i < NTIMERS; i++) {
		tts[i].t.cb = tt_cb;
		rloop_timer_at(&loop, &tts[i].t, now - 1 - random() % 1000);
		CU_ASSERT(rloop_timer_pending(&tts[i].t));
	}
	for (i = 0; i < NTIMERS; i += 3) {
		rloop_timer_stop(&loop, &tts[i].t);
		CU_ASSERT(!rloop_timer_pending(&tts[i].t));
		tts[i].stopped = 1;
		nexpected--;
	}
	for (i = 1; i < NTIMERS; i += 5)
		if (!tts[i].stopped)
			rloop_timer_at(&loop, &tts[i].t, now - 1 - random() % 1000);
	CU_ASSERT_EQUAL(rloop_run(&loop), 0);
	CU_ASSERT_FALSE(guard_fired);
	CU_ASSERT_EQUAL(nfired, nexpected);
	for (i = 1; i < nfired; i++)
		CU_ASSERT(fired_at[i - 1] <= fired_at[i]);
	for (i = 0; i < NTIMERS; i++) {
		CU_ASSERT_EQUAL(tts[i].fired, tts[i].stopped ? 0 : 1);
		CU_ASSERT(!rloop_timer_pending(&tts[i].t));
	}
	/* the guard alone is left */
	CU_ASSERT_EQUAL(loop.nheap, 1);
	loop_end();
}

static int	rearms;
static uint64_t	rearm_turns[4];

/* Re-arms itself in the past: each time in a later turn, not at once. */
static void
rearm_cb(struct rl_timer *t)
{
	rearm_turns[rearms++] = loop.turn;
	if (rearms < 4)
		rloop_timer_at(&loop, t, now_ms() - 10);
	else
		rloop_exit(&loop);
}

static void
test_timer_rearmed_waits_a_turn(void)
{
	struct rl_timer	t;
	int		i;

	loop_start(NULL, NULL);
	memset(&t, 0, sizeof(t));
	t.cb = rearm_cb;
	rearms = 0;
	rloop_timer_at(&loop, &t, now_ms() - 10);
	CU_ASSERT_EQUAL(rloop_run(&loop), 0);
	CU_ASSERT_FALSE(guard_fired);
	CU_ASSERT_EQUAL(rearms, 4);
	for (i = 1; i < 4; i++)
		CU_ASSERT_EQUAL(rearm_turns[i], rearm_turns[i - 1] + 1);
	loop_end();
}

static void
test_timer_waits_for_its_deadline(void)
{
	int64_t		start;

	loop_start(NULL, NULL);
	memset(tts, 0, sizeof(tts));
	nfired = 0;
	nexpected = 1;
	tts[0].t.cb = tt_cb;
	start = now_ms();
	rloop_timer_at(&loop, &tts[0].t, start + 30);
	CU_ASSERT_EQUAL(rloop_run(&loop), 0);
	CU_ASSERT_FALSE(guard_fired);
	CU_ASSERT_EQUAL(tts[0].fired, 1);
	CU_ASSERT(now_ms() >= start + 30);
	loop_end();
}

/* --- watches ------------------------------------------------------------ */

struct tw {
	struct rl_watch	 w;
	int		 calls;
	uint32_t	 revents;
	struct tw	*other;		/* forgotten by this one's callback */
};

static void
tw_cb(struct rl_watch *w, uint32_t revents)
{
	struct tw	*x = (struct tw *)(void *)w;
	char		 c;

	x->calls++;
	x->revents = revents;
	if (revents & EPOLLIN)
		CU_ASSERT_EQUAL(read(w->fd, &c, 1), 1);
	if (x->other != NULL) {
		rloop_forget(&loop, &x->other->w);
		close(x->other->w.fd);
		x->other->w.fd = -1;
	}
	rloop_exit(&loop);
}

static void
tw_pair(struct tw *x, int *peer)
{
	int	sv[2];

	CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK,
	    0, sv), 0);
	memset(x, 0, sizeof(*x));
	x->w.fd = sv[0];
	x->w.cb = tw_cb;
	*peer = sv[1];
}

static void
test_watch_ready(void)
{
	struct tw	a, b;
	int		pa, pb;

	loop_start(NULL, NULL);
	tw_pair(&a, &pa);
	tw_pair(&b, &pb);
	CU_ASSERT_EQUAL(rloop_watch(&loop, &a.w, EPOLLIN), 0);
	CU_ASSERT_EQUAL(rloop_watch(&loop, &b.w, EPOLLIN), 0);
	/* b watches nothing any more: out of the set */
	CU_ASSERT_EQUAL(rloop_watch(&loop, &b.w, 0), 0);
	CU_ASSERT_EQUAL(b.w.events, 0);
	CU_ASSERT_EQUAL(write(pb, "b", 1), 1);
	CU_ASSERT_EQUAL(write(pa, "a", 1), 1);
	/* both readable at once: were b in the set, this turn would run it */
	CU_ASSERT_EQUAL(rloop_run(&loop), 0);
	CU_ASSERT_FALSE(guard_fired);
	CU_ASSERT_EQUAL(a.calls, 1);
	CU_ASSERT(a.revents & EPOLLIN);
	CU_ASSERT_EQUAL(b.calls, 0);
	/* writable: EPOLLOUT alone */
	CU_ASSERT_EQUAL(rloop_watch(&loop, &a.w, EPOLLOUT), 0);
	loop.done = 0;
	CU_ASSERT_EQUAL(rloop_run(&loop), 0);
	CU_ASSERT_EQUAL(a.calls, 2);
	CU_ASSERT_EQUAL(a.revents & (EPOLLIN | EPOLLOUT), EPOLLOUT);
	close(a.w.fd);
	close(b.w.fd);
	close(pa);
	close(pb);
	loop_end();
}

static void
test_watch_forgotten_in_its_turn(void)
{
	struct tw	a, b;
	int		pa, pb;

	loop_start(NULL, NULL);
	tw_pair(&a, &pa);
	tw_pair(&b, &pb);
	a.other = &b;
	b.other = &a;
	CU_ASSERT_EQUAL(rloop_watch(&loop, &a.w, EPOLLIN), 0);
	CU_ASSERT_EQUAL(rloop_watch(&loop, &b.w, EPOLLIN), 0);
	CU_ASSERT_EQUAL(write(pa, "a", 1), 1);
	CU_ASSERT_EQUAL(write(pb, "b", 1), 1);
	/* one turn, both ready: the first to run forgets the other */
	CU_ASSERT_EQUAL(rloop_run(&loop), 0);
	CU_ASSERT_FALSE(guard_fired);
	CU_ASSERT_EQUAL(a.calls + b.calls, 1);
	if (a.w.fd != -1)
		close(a.w.fd);
	if (b.w.fd != -1)
		close(b.w.fd);
	close(pa);
	close(pb);
	loop_end();
}

/* --- the end of a turn, SIGTERM ----------------------------------------- */

static int	turn_ends;

static void
turn_end_cb(struct rloop *l)
{
	if (++turn_ends == 1)
		rloop_wake(l);		/* asked again: runs again, same turn */
	else
		rloop_exit(l);
}

static void
test_turn_end_before_the_wait(void)
{
	loop_start(turn_end_cb, NULL);
	turn_ends = 0;
	/* asked for before the loop ran: no wait for the guard */
	rloop_wake(&loop);
	CU_ASSERT_EQUAL(rloop_run(&loop), 0);
	CU_ASSERT_FALSE(guard_fired);
	CU_ASSERT_EQUAL(turn_ends, 2);
	CU_ASSERT_EQUAL(loop.turn, 1);
	loop_end();
}

static int	sigterms;

static void
sigterm_cb(struct rloop *l)
{
	sigterms++;
	rloop_exit(l);
}

static void
test_sigterm_in_the_wait(void)
{
	sigset_t	now;

	loop_start(NULL, sigterm_cb);
	sigterms = 0;
	/* blocked outside the wait: pending, not handled */
	CU_ASSERT_EQUAL(sigprocmask(SIG_BLOCK, NULL, &now), 0);
	CU_ASSERT(sigismember(&now, SIGTERM));
	CU_ASSERT_EQUAL(raise(SIGTERM), 0);
	CU_ASSERT_EQUAL(sigterms, 0);
	CU_ASSERT_EQUAL(rloop_run(&loop), 0);
	CU_ASSERT_FALSE(guard_fired);
	CU_ASSERT_EQUAL(sigterms, 1);
	loop_end();
}

static CU_TestInfo relay_loop_tests[] = {
	{ "timers in deadline order, stopped ones never", test_timers_in_order },
	{ "a timer re-armed as timers run waits a turn",
	    test_timer_rearmed_waits_a_turn },
	{ "a timer waits for its deadline", test_timer_waits_for_its_deadline },
	{ "watches run when ready, not once they watch nothing",
	    test_watch_ready },
	{ "a watch forgotten in its turn gets none of its events",
	    test_watch_forgotten_in_its_turn },
	{ "the end of a turn, asked before the loop ran",
	    test_turn_end_before_the_wait },
	{ "SIGTERM blocked, then taken in the wait", test_sigterm_in_the_wait },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "relay_loop", NULL, NULL, NULL, NULL, relay_loop_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	return unit_run(suites);
}
