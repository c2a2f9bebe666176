/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Between the two halves of an upgrade (docs/upgrade.md): the procedure
 * (parent_upgrade.c: the request, the check of the new program, the exec,
 * the way back) and the state's content (parent_adopt.c: what the parent
 * writes, and how the next image checks it and takes it over).
 */
#ifndef PARENT_UPGRADE_H
#define PARENT_UPGRADE_H

#include "parent.h"
#include "upgrade_state.h"

/* The running image: its state, upgrader = the client that asked (or NULL). */
void	adopt_save(struct parent *, struct ustate *,
	    const struct ctl_client *upgrader);

/*
 * The next image: reads and checks the whole state on fd, before anything
 * is built.  back: it is the way back, by the image that wrote it, which
 * takes what it still can (a lost listener or control socket is opened
 * again, a worker whose channel is gone is killed) rather than refuse.
 * 0, or -1 with *why.
 */
int	adopt_read(int fd, int back, const char **why);
const struct us_parent	*adopt_parent(void);
/* The way back: the configuration that ran, or NULL with *why. */
struct config	*adopt_config(const char **why);
int	adopt_listener(const struct listen_addr *);
int	adopt_control(const char *path);
/*
 * Builds the parent's state from what was read (nothing is sent or
 * signalled yet).  Returns 0 and the client that asked (or NULL), or -1
 * with *why.
 */
int	adopt_build(struct parent *, struct ctl_client **upgrader,
	    const char **why);
/*
 * The point of no return: the adopted fds close-on-exec again, the
 * listeners the configuration dropped closed, the state freed.  Then the
 * first actions: queued messages flushed, the pool's relays of the
 * program before stopped (not on the way back).  The fronts it replaces
 * are told to finish once the new ones are up (parent_fronts_ready).
 */
void	adopt_commit(struct parent *, int back);
/* Before going back: every fd the state names kept across the exec. */
int	adopt_keep_all(void);

#endif
