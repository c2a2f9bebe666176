/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The start every process the parent starts makes (docs/build.md, "One
 * start-up"): its channel on WORKER_FD with its table of the parent's
 * messages, the signals the parent handles for it ignored; and for a
 * worker (front, push): SETUP, its event base, SIGTERM, the sandbox,
 * HELLO, the loop.  The role brings its state and events (setup) and its
 * handlers (its table).  A relay, forked from the zygote, has a loop of
 * its own (relay_loop.h) and reads the parent with proc_chan_one.
 */
#ifndef PROC_H
#define PROC_H

#include <sys/types.h>
#include <sys/resource.h>

#include <event2/event.h>

#include "msg.h"
#include "proto.h"
#include "pyrelayd.h"

#define WORKER_FD	3	/* a child's channel to the parent (spawn.c) */

/* "parent", "front", "relay", "spawner", "push", "zygote" */
const char	*proc_role_name(enum proc_role);
/* The role of a name proc_role_name gives, or -1. */
int		 proc_role_from_name(const char *);
/* 1 when WORKER_FD is a socket: the parent started this process. */
int		 proc_has_channel(void);

/*
 * The channel on WORKER_FD with the table of what the parent may send;
 * SIGPIPE ignored, and SIGINT, SIGHUP and SIGUSR2, which the parent
 * handles for all (the terminal's ^C reaches every process of its group,
 * `systemctl kill` every process of the unit).
 */
void	proc_start(struct msg_chan *, const struct msg_rules *);

/*
 * For the processes that wait for the parent without an event loop (the
 * spawner, the zygote): sends what chan has queued, waiting for room;
 * and handles the parent's messages one by one, for ever.  The parent
 * gone ends the process with 0, a message the table refuses is fatal.
 */
void	proc_flush_wait(struct msg_chan *);
void	proc_serve(struct msg_chan *, struct msg *, void *arg)
	    __attribute__((__noreturn__));
/*
 * The parent's messages chan has now, each to its row's handler with
 * arg, until none is left: a worker's loop calls it when the channel is
 * readable.  As proc_serve, the parent gone exits 0, a refused message is
 * fatal.
 */
void	proc_chan_drain(struct msg_chan *, struct msg *, void *arg);
/*
 * One of them: 1 when a message was handled, 0 when none was there.  A
 * level-triggered loop calls it once per readiness, and so asks the
 * kernel nothing more when one message came (proc_chan_drain's last
 * read finds none: a system call for nothing).
 */
int	proc_chan_one(struct msg_chan *, struct msg *, void *arg);

/*
 * The process title ps(1) shows, "pyrelayd: " and fmt: libbsd's
 * setproctitle over the argument strings, or, once the zygote moved the
 * title to memory of its own (zygote_mm.c), there: its relays keep it.
 */
#define PROC_TITLE_MAX	192
void	proc_title(const char *fmt, ...)
	    __attribute__((__format__(__printf__, 1, 2)));
void	proc_title_buffer(char *buf, size_t len);

/* MSG_VERBOSE's handler in every worker's table: the log's verbosity. */
void	proc_verbose(void *arg, struct msg *);

struct proc_worker {
	enum proc_role		 role;
	const struct msg_rules	*rules;	/* the parent's messages it takes */
	struct msg_chan		*chan;	/* the role's, set up on WORKER_FD */
	struct msg		*m;	/* every message lands here */
	void			*arg;	/* the role's state, for handlers */
	rlim_t			 maxfds;	/* RLIMIT_NOFILE, sandboxed */
	/*
	 * SETUP is in, the base made: the role takes its state from SETUP
	 * and makes its events (it may lower maxfds).
	 */
	void			(*setup)(struct proc_worker *,
				    const struct msg_setup *);
	event_callback_fn	 sigterm;
	/* made by proc_worker_run */
	struct event_base	*base;
	struct event		*ev_chan;
	struct event		*ev_sigterm;
};

/*
 * Runs a worker: proc_start, SETUP (msg_wait), the event base (EVENT_*
 * variables ignored: no worker's environment carries them, and reading
 * them costs syscalls; one thread, no locks), SIGTERM, setup, the sandbox
 * (sandbox.c), HELLO, then the loop, which hands each message to
 * its row's handler with arg.  Returns when the loop ends; the parent
 * gone (EOF) exits 0, a message its table refuses is fatal.
 */
void	proc_worker_run(struct proc_worker *);
/*
 * A worker's event base: no EVENT_* variable read (none is in a worker's
 * environment, and reading them costs syscalls), no locks (one thread).
 */
struct event_base	*proc_event_base(const char *name);

#endif
