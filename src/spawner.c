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
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proc.h"
#include "proto.h"
#include "pyrelayd.h"
#include "spawn.h"

extern char **environ;

/*
 * Starts the worker a SPAWN asks for (its body passed msg_spawn_check: a
 * path, then argc NUL-terminated arguments) and answers SPAWNED.
 */
static void
spawner_spawn(void *arg, struct msg *m)
{
	struct msg_chan		*chan = arg;
	struct msg_spawn	*sp = (struct msg_spawn *)m->body;
	struct msg_spawned	 rep;
	char			*path, *argv[SPAWN_ARGC_MAX + 1];
	size_t			 off;
	uint32_t		 i;

	path = sp->args;
	off = strlen(path) + 1;
	for (i = 0; i < sp->argc; i++) {
		argv[i] = sp->args + off;
		off += strlen(argv[i]) + 1;
	}
	argv[sp->argc] = NULL;
	memset(&rep, 0, sizeof(rep));
	rep.pid = -1;
	if (m->fd_lost)
		rep.error = EMFILE;
	else if ((rep.pid = spawn_process(path, argv, environ, m->fd,
	    CLONE_PARENT, (int)sp->opts)) == -1)
		rep.error = errno;
	if (m->fd != -1)
		close(m->fd);
	msg_compose(chan, MSG_SPAWNED, m->hdr.id, &rep, sizeof(rep), -1);
	proc_flush_wait(chan);
}

/* What the spawner takes from the parent (docs/messages.md). */
static const struct msg_rule spawner_rows[] = {
	MSG_RULE(SPAWN, MSG_FD_REQUIRED, spawner_spawn),
};
const struct msg_rules spawner_from_parent =
    MSG_RULES(ROLE_PARENT, ROLE_SPAWNER, spawner_rows);

void
spawner_main(void)
{
	static struct msg	 m;
	struct msg_chan		 chan;

	proc_start(&chan, &spawner_from_parent);
	setproctitle("spawner");
	msg_hello(&chan, ROLE_SPAWNER);
	proc_flush_wait(&chan);
	proc_serve(&chan, &m, &chan);
}
