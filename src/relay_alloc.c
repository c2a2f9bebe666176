/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * A relay's small objects: its state, its connections, its loop's timer
 * heap, the WebSocket codec's buffers, its queues (docs/relay-executable.md,
 * "The relay's pages").  Every relay is a fork of the zygote, and each
 * page a relay writes is a page of its own: glibc's malloc would write
 * its state in .data (main_arena, across two pages), its per-thread cache
 * and chunk headers on pages the zygote filled, and the relay's objects
 * on whichever pages its free lists pick.  Here they go into one arena in
 * .lbss, one after the other, in blocks of a few sizes that are reused
 * when freed: an idle relay's objects fill one page (with a binary and a
 * phone, the allocator's state and the process title), and nothing else of
 * the allocator's is written.  Blocks over RA_MAX bytes (a message being
 * reassembled, a full outbox), and any once the arena is full, are
 * glibc's.
 */
#include "config.h"

#include <sys/types.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay_alloc.h"
#include "relay_io.h"

#define RA_ARENA	(256 * 1024)
#define RA_HDR		16		/* keeps blocks 16-byte aligned */
#define RA_MAX		(4096 - RA_HDR)

/*
 * Block sizes, header included: steps of a half, so little is lost, and
 * 896 for a relay's struct conn (880 bytes on LP64): in 1024-byte blocks,
 * with the relay's own 1536, a binary and a phone took an idle relay's
 * objects onto a second page.
 */
static const unsigned short	ra_size[] = {
	32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 896, 1024, 1536, 2048,
	3072, 4096
};
#define RA_CLASSES	(sizeof(ra_size) / sizeof(ra_size[0]))

struct ra_free {
	struct ra_free	*next;
};

/*
 * The allocator's state first, on a page boundary: it shares its page
 * with the first blocks.
 */
static struct {
	size_t		 used;			/* bump offset into blocks */
	struct ra_free	*freel[RA_CLASSES];
	unsigned char	 blocks[RA_ARENA] __attribute__((__aligned__(16)));
} ra __attribute__((__aligned__(4096))) RELAY_LARGE_BSS;

static int
ra_class(size_t n)
{
	size_t	c;

	for (c = 0; c < RA_CLASSES; c++)
		if (n + RA_HDR <= ra_size[c])
			return (int)c;
	return -1;
}

static int
ra_mine(const void *p)
{
	return (const unsigned char *)p >= ra.blocks &&
	    (const unsigned char *)p < ra.blocks + sizeof(ra.blocks);
}

void *
ra_malloc(size_t n)
{
	unsigned char	*b;
	size_t		 size;
	int		 c;

	if (n == 0)
		n = 1;
	if ((c = ra_class(n)) == -1)
		return malloc(n);
	if (ra.freel[c] != NULL) {
		b = (unsigned char *)ra.freel[c];
		ra.freel[c] = ra.freel[c]->next;
		return b;
	}
	size = ra_size[c];
	if (size > sizeof(ra.blocks) - ra.used)
		return malloc(n);
	b = ra.blocks + ra.used;
	ra.used += size;
	b[0] = (unsigned char)c;
	return b + RA_HDR;
}

void *
ra_reserve(size_t n)
{
	unsigned char	*b;

	n = (n + 15) & ~(size_t)15;
	if (n > sizeof(ra.blocks) - ra.used)
		return NULL;
	b = ra.blocks + ra.used;
	ra.used += n;
	return b;
}

void *
ra_calloc(size_t nmemb, size_t size)
{
	void	*p;

	if (size != 0 && nmemb > SIZE_MAX / size)
		return NULL;
	/* a freed block holds old bytes */
	if ((p = ra_malloc(nmemb * size)) != NULL)
		memset(p, 0, nmemb * size);
	return p;
}

void
ra_free(void *p)
{
	struct ra_free	*f;
	unsigned char	*b;

	if (p == NULL)
		return;
	if (!ra_mine(p)) {
		free(p);
		return;
	}
	b = (unsigned char *)p - RA_HDR;
	f = p;
	f->next = ra.freel[b[0]];
	ra.freel[b[0]] = f;
}

void *
ra_realloc(void *p, size_t n)
{
	void	*q;
	size_t	 have;

	if (p == NULL)
		return ra_malloc(n);
	if (!ra_mine(p))
		return realloc(p, n);
	have = ra_size[((unsigned char *)p - RA_HDR)[0]] - RA_HDR;
	if (n <= have)
		return p;
	if ((q = ra_malloc(n)) == NULL)
		return NULL;
	memcpy(q, p, have);
	ra_free(p);
	return q;
}
