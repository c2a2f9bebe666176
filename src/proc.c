/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The start-up every process the parent starts shares (proc.h): written
 * once, so that a role differs from another only by what it brings.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/stat.h>

#include <event2/event.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "msg.h"
#include "proc.h"
#include "proto.h"
#include "pyrelayd.h"
#include "sandbox.h"

/* no pointers: a relay would relocate them, on a page of its own */
static const char role_names[][8] = {
	[ROLE_PARENT] = "parent",
	[ROLE_FRONT] = "front",
	[ROLE_RELAY] = "relay",
	[ROLE_SPAWNER] = "spawner",
	[ROLE_PUSH] = "push",
	[ROLE_ZYGOTE] = "zygote",
};

const char *
proc_role_name(enum proc_role role)
{
	if ((size_t)role >= sizeof(role_names) / sizeof(role_names[0]))
		return "unknown";
	return role_names[role];
}

int
proc_role_from_name(const char *name)
{
	size_t	i;

	for (i = 0; i < sizeof(role_names) / sizeof(role_names[0]); i++)
		if (strcmp(name, role_names[i]) == 0)
			return (int)i;
	return -1;
}

int
proc_has_channel(void)
{
	struct stat	st;

	return fstat(WORKER_FD, &st) == 0 && S_ISSOCK(st.st_mode);
}

void
proc_start(struct msg_chan *chan, const struct msg_rules *rules)
{
	msg_chan_init(chan, WORKER_FD, rules);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	/* the parent's upgrade: a signal to the whole group must not kill workers */
	signal(SIGUSR2, SIG_IGN);
}

void
proc_flush_wait(struct msg_chan *chan)
{
	int	rv;

	while ((rv = msg_flush(chan)) == 0)
		if (fd_wait(chan->fd, POLLOUT, -1) == -1)
			fatal("%s: poll", proc_role_name(chan->rules->to));
	/* the parent is gone: so are we */
	if (rv == -1)
		exit(0);
}

void
proc_serve(struct msg_chan *chan, struct msg *m, void *arg)
{
	const char	*name = proc_role_name(chan->rules->to);
	int		 rv;

	for (;;) {
		if ((rv = msg_recv(chan, m)) == 0) {
			if (fd_wait(chan->fd, POLLIN, -1) == -1)
				fatal("%s: poll", name);
			continue;
		}
		/* the parent is gone, or done with us: so are we */
		if (rv == -1)
			exit(0);
		if (rv == -2)
			fatalx("%s: bad message from parent: %s", name,
			    chan->errstr);
		msg_handle(m, arg);
	}
}

/* The title's own memory, when the zygote moved it (zygote_mm.c). */
static char	*title_buf;
static size_t	 title_max;

void
proc_title_buffer(char *buf, size_t len)
{
	title_buf = buf;
	title_max = len;
}

void
proc_title(const char *fmt, ...)
{
	static const char	 prefix[] = "pyrelayd: ";
	char			 t[PROC_TITLE_MAX];
	va_list			 ap;

	va_start(ap, fmt);
	/* formatted in place: a relay's stack stays in its one page */
	if (title_buf != NULL && title_max > sizeof(prefix)) {
		memcpy(title_buf, prefix, sizeof(prefix) - 1);
		(void)vsnprintf(title_buf + sizeof(prefix) - 1,
		    title_max - (sizeof(prefix) - 1), fmt, ap);
	} else {
		(void)vsnprintf(t, sizeof(t), fmt, ap);
		setproctitle("%s", t);
	}
	va_end(ap);
}

void
proc_verbose(void *arg, struct msg *m)
{
	log_setverbose(((struct msg_verbose *)m->body)->verbose);
}

int
proc_chan_one(struct msg_chan *chan, struct msg *m, void *arg)
{
	int	rv;

	if ((rv = msg_recv(chan, m)) == 0)
		return 0;
	if (rv == -1) {
		/* the parent is gone: nothing left to serve for */
		log_debug("event=parent_gone");
		exit(0);
	}
	if (rv == -2)
		fatalx("%s: bad message from parent: %s",
		    proc_role_name(chan->rules->to), chan->errstr);
	msg_handle(m, arg);
	return 1;
}

void
proc_chan_drain(struct msg_chan *chan, struct msg *m, void *arg)
{
	while (proc_chan_one(chan, m, arg))
		;
}

/* The parent's messages, each to its row's handler. */
static void
proc_chan_read(evutil_socket_t fd, short ev, void *arg)
{
	struct proc_worker	*pw = arg;

	proc_chan_drain(pw->chan, pw->m, pw->arg);
}

struct event_base *
proc_event_base(const char *name)
{
	struct event_config	*cfg;
	struct event_base	*base;

	if ((cfg = event_config_new()) == NULL ||
	    event_config_set_flag(cfg, EVENT_BASE_FLAG_IGNORE_ENV |
	    EVENT_BASE_FLAG_NOLOCK) == -1 ||
	    (base = event_base_new_with_config(cfg)) == NULL)
		fatalx("%s: event_base_new", name);
	event_config_free(cfg);
	return base;
}

/* The event base, the channel's read event and SIGTERM's. */
static void
proc_worker_base(struct proc_worker *pw)
{
	const char	*name = proc_role_name(pw->role);

	pw->base = proc_event_base(name);
	pw->ev_chan = event_new(pw->base, pw->chan->fd, EV_READ | EV_PERSIST,
	    proc_chan_read, pw);
	pw->ev_sigterm = evsignal_new(pw->base, SIGTERM, pw->sigterm, pw->arg);
	if (pw->ev_chan == NULL || pw->ev_sigterm == NULL)
		fatalx("%s: event_new", name);
	event_add(pw->ev_chan, NULL);
	event_add(pw->ev_sigterm, NULL);
}

/* Set up and sandboxed: HELLO, then the loop until it ends. */
static void
proc_worker_loop(struct proc_worker *pw)
{
	/* our HELLO says we are ready: set up and sandboxed */
	msg_hello(pw->chan, pw->role);
	if (msg_flush(pw->chan) == -1)
		fatalx("%s: parent channel: %s", proc_role_name(pw->role),
		    pw->chan->errstr);
	/* messages that arrived before the loop began are read by it */
	event_active(pw->ev_chan, EV_READ, 0);
	event_base_dispatch(pw->base);
}

void
proc_worker_run(struct proc_worker *pw)
{
	struct msg_setup	*setup;

	proc_start(pw->chan, pw->rules);
	/* the first messages: HELLO then SETUP (checked: msg_setup_check) */
	setup = msg_wait(pw->chan, pw->m, MSG_SETUP, proc_role_name(pw->role));
	log_setverbose(setup->verbose);
	proc_worker_base(pw);
	pw->setup(pw, setup);
	sandbox_enter(pw->role, setup, pw->maxfds);
	proc_worker_loop(pw);
}
