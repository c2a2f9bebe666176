/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The spawner: started by the parent first, with nothing open but stdio and
 * its channel, it starts every worker the parent asks for.  clone() copies
 * the caller's descriptor table and the child closes every entry before
 * execve, so a start from the parent, which holds one channel per relay,
 * costs more with every live relay (1.09 ms with 100 open fds, 1.85 ms
 * with 10,000, the parent waiting throughout); from here it costs the same
 * at any number.  CLONE_PARENT makes each worker the parent's child, so the
 * parent reaps it as before.  The spawner reads only the parent's requests
 * (typed messages, msg.c), never network input; it runs with the parent's
 * privileges because a worker starts as root to enter its chroot
 * (docs/pool.md).
 */
#include "config.h"

#include <sys/types.h>

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include "pyrelayd.h"
#include "spawn.h"

extern char **environ;

static const struct msg_rule spawner_rules[] = {
	{ MSG_SPAWN, sizeof(struct msg_spawn), MSG_FD_REQUIRED, "SPAWN",
	    offsetof(struct msg_spawn, args) + 1 },
};

/* Sends what is queued, waiting for room; exits when the parent is gone. */
static void
spawner_flush(struct msg_chan *chan)
{
	int	rv;

	while ((rv = msg_flush(chan)) == 0)
		if (fd_wait(chan->fd, POLLOUT, -1) == -1)
			fatal("spawner: poll");
	if (rv == -1)
		exit(0);
}

/* argv from the request, or -1 when it is malformed */
static int
spawner_args(struct msg_spawn *sp, size_t blen, char **path, char **argv)
{
	size_t		len, off = 0, n;
	uint32_t	i;

	len = blen - offsetof(struct msg_spawn, args);
	if (sp->len != len || len == 0 || sp->args[len - 1] != '\0' ||
	    sp->argc == 0 || sp->argc > SPAWN_ARGC_MAX)
		return -1;
	/* the path, then argc arguments, and nothing after them */
	for (i = 0; i <= sp->argc; i++) {
		if (off >= len)
			return -1;
		n = strlen(sp->args + off);
		if (i == 0)
			*path = sp->args + off;
		else
			argv[i - 1] = sp->args + off;
		off += n + 1;
	}
	if (off != len || (*path)[0] != '/')
		return -1;
	argv[sp->argc] = NULL;
	return 0;
}

void
spawner_main(int fd)
{
	static struct msg	 m;
	struct msg_chan		 chan;
	struct msg_spawned	 rep;
	char			*path, *argv[SPAWN_ARGC_MAX + 1];
	int			 rv;

	msg_chan_init(&chan, fd, spawner_rules,
	    sizeof(spawner_rules) / sizeof(spawner_rules[0]));
	setproctitle("spawner");
	/* the parent handles these; the terminal's ^C is for it alone */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	msg_hello(&chan, ROLE_SPAWNER);
	spawner_flush(&chan);
	for (;;) {
		if ((rv = msg_recv(&chan, &m)) == 0) {
			if (fd_wait(fd, POLLIN, -1) == -1)
				fatal("spawner: poll");
			continue;
		}
		/* the parent is gone: so are we */
		if (rv == -1)
			exit(0);
		if (rv == -2)
			fatalx("spawner: bad message from parent: %s",
			    chan.errstr);
		if (m.hdr.type == MSG_HELLO)
			continue;
		memset(&rep, 0, sizeof(rep));
		rep.pid = -1;
		if (m.fd_lost)
			rep.error = EMFILE;
		else if (spawner_args((struct msg_spawn *)m.body, m.hdr.len,
		    &path, argv) == -1)
			fatalx("spawner: bad SPAWN from parent");
		else if ((rep.pid = spawn_process(path, argv, environ, m.fd,
		    CLONE_PARENT)) == -1)
			rep.error = errno;
		if (m.fd != -1)
			close(m.fd);
		msg_compose(&chan, MSG_SPAWNED, m.hdr.id, &rep, sizeof(rep), -1);
		spawner_flush(&chan);
	}
}
