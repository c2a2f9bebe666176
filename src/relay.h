/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#ifndef RELAY_H
#define RELAY_H

#include "msg.h"
#include "proto.h"

#define RELAY_MAXFDS	1024	/* 16 phones + binary + newcomers + slack */

/*
 * The relay zygote (relay_zygote.c): pyrelayd-relay on its channel to the
 * parent (fd 3), forking a relay for each MSG_FORK; never returns.
 */
void	zygote_main(void) __attribute__((__noreturn__));
/* What the zygote takes from the parent: its table (docs/messages.md). */
extern const struct msg_rules	zygote_from_parent;

/*
 * A relay, just forked by the zygote (relay_chan.c): its channel to the
 * parent is fd, setup the zygote's SETUP without the program, parent
 * the parent's HELLO to the zygote (which stands for the relay's
 * channel: no HELLO either way on it), m where the parent's messages
 * land (the zygote's buffer: only the pages a message reaches are
 * touched, the first shared with the stack's top, zygote_mm.c).  Never
 * returns.
 */
void	relay_forked(int fd, const struct msg_setup *setup,
	    const struct msg_hello *parent, struct msg *m)
	    __attribute__((__noreturn__));
/* What a relay takes from the parent: its table (docs/messages.md). */
extern const struct msg_rules	relay_from_parent;

#endif
