/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * libFuzzer harness for the incremental request head parser (src/http.c,
 * http_parse_more): the head fed in reads of random sizes, as a front
 * gets it from the network, must give the same result and the same request
 * as the head parsed at once, and a decided result must stay.  The first
 * four bytes of the input choose the limit and the split; the rest is the
 * head.  Every read is handed a new buffer of exactly its bytes
 * (tests/http_feed.c), so a parser that kept a pointer into an old one, or
 * read past the end, is an AddressSanitizer report.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "http_feed.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const size_t	limits[] = { 0, 1, 24, 512, 8192, HEAD_MAX_LIMIT };

#define ONE_BY_ONE_MAX	512	/* a byte per read costs the square: short heads */

static void
check(int ok)
{
	if (!ok)
		abort();
}

static void
agree(const char *buf, size_t len, size_t max, const size_t *ends,
    size_t nends)
{
	struct http_request	whole, part;
	int			r;

	r = http_parse_head(buf, len, max, &whole);
	check(http_feed(buf, len, max, ends, nends, &part) == r);
	check(memcmp(&whole, &part, sizeof(whole)) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char	*buf;
	size_t		*ends, len, n, i, max;
	uint32_t	 seed;

	if (size < 4)
		return 0;
	seed = (uint32_t)data[0] | (uint32_t)data[1] << 8 |
	    (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24;
	max = limits[seed % (sizeof(limits) / sizeof(limits[0]))];
	buf = (const char *)data + 4;
	len = size - 4;
	if ((ends = calloc(len + 1, sizeof(*ends))) == NULL)
		abort();

	/* reads of 1 to 1 + seed / 8 % 64 bytes, from the seed */
	n = http_feed_split(seed, len, 1 + seed / 8 % 64, ends, len);
	agree(buf, len, max, ends, n);
	/* one read holding everything */
	agree(buf, len, max, ends, 0);
	if (len <= ONE_BY_ONE_MAX) {
		for (i = 0; i < len; i++)
			ends[i] = i + 1;
		agree(buf, len, max, ends, len);
	}
	free(ends);
	return 0;
}
