/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "msgq.h"
#include "relay_alloc.h"

/*
 * A queue starts in a block of a connection's size in the relay's arena
 * (relay_alloc.c), and doubles from there.  A relay queues for a binary
 * that is gone (relay_core.c): the block its connection left is free for
 * it.  At 4096 bytes a queue began over the arena's largest block, and
 * glibc's malloc, which a relay runs without brk (SPAWN_NO_BRK), mapped a
 * megabyte for it.
 */
#define MSGQ_MIN	(896 - 16)

int
msgq_push(struct msgq *q, const void *a, size_t alen, const void *b,
    size_t blen, const void *c, size_t clen)
{
	size_t		 n = alen + blen + clen, need, ncap;
	uint32_t	 len32 = n;
	unsigned char	*p;

	if (n > UINT32_MAX)
		return -1;
	need = q->len + sizeof(len32) + n;
	if (need > q->cap) {
		ncap = q->cap ? q->cap : MSGQ_MIN;
		while (ncap < need)
			ncap *= 2;
		if ((p = ra_realloc(q->buf, ncap)) == NULL)
			return -1;
		q->buf = p;
		q->cap = ncap;
	}
	p = q->buf + q->len;
	memcpy(p, &len32, sizeof(len32));
	p += sizeof(len32);
	if (alen)
		memcpy(p, a, alen);
	if (blen)
		memcpy(p + alen, b, blen);
	if (clen)
		memcpy(p + alen + blen, c, clen);
	q->len = need;
	q->bytes += n;
	return 0;
}

int
msgq_next(const struct msgq *q, size_t *off, const unsigned char **msg,
    size_t *len)
{
	uint32_t	len32;

	if (*off >= q->len)
		return 0;
	memcpy(&len32, q->buf + *off, sizeof(len32));
	*msg = q->buf + *off + sizeof(len32);
	*len = len32;
	*off += sizeof(len32) + len32;
	return 1;
}

void
msgq_clear(struct msgq *q)
{
	ra_free(q->buf);
	q->buf = NULL;
	q->len = q->cap = q->bytes = 0;
}
