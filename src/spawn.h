/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#ifndef SPAWN_H
#define SPAWN_H

#include <sys/types.h>

#include "msg.h"

/*
 * Starts path with argv and envp, fd as its fd 3 (fd stays open here; the
 * caller closes it).  flags: more clone(2) flags (CLONE_PARENT from the
 * spawner, so that the worker is the parent's child); opts: SPAWN_*
 * (proto.h).
 * Blocks until the child has exec'd.  Returns its pid, or -1 with errno.
 */
pid_t	spawn_process(const char *path, char **argv, char **envp, int fd,
	    int flags, int opts);
/*
 * The same for a command whose output the caller reads: outfd is its
 * stdout and stderr, and it gets no fd 3 (the upgrade's check of a new
 * program).  A failed execve shows as exit status 127.
 */
pid_t	spawn_command(const char *path, char **argv, char **envp, int outfd);

/* The spawner process (`pyrelayd -P spawner`) on its channel, fd 3. */
void	spawner_main(void) __attribute__((__noreturn__));
/* What the spawner takes from the parent: its table (docs/messages.md). */
extern const struct msg_rules	spawner_from_parent;

#endif
