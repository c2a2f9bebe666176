/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * A relay's queue of whole messages, in order: the grace queue (phones'
 * envelopes waiting for a binary) and a newcomer's held messages (waiting
 * for the conflict probe).  One buffer of [uint32 length][bytes] records,
 * grown by doubling; nothing is allocated until the first message.
 */
#ifndef MSGQ_H
#define MSGQ_H

#include <stddef.h>

struct msgq {
	unsigned char	*buf;
	size_t		 len;		/* bytes used, length prefixes included */
	size_t		 cap;
	size_t		 bytes;		/* message bytes alone */
};

/*
 * Appends one message made of up to three pieces (a zero length skips
 * one).  Returns -1, the queue unchanged, when memory runs out.
 */
int	msgq_push(struct msgq *, const void *, size_t, const void *, size_t,
	    const void *, size_t);

/*
 * The message at *off (start at 0), which then moves past it; 0 at the
 * end of the queue.
 */
int	msgq_next(const struct msgq *, size_t *off, const unsigned char **,
	    size_t *);

/* Frees everything: the queue is empty, as new. */
void	msgq_clear(struct msgq *);

#endif
