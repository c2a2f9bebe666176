/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "http_feed.h"

/* A copy of buf[0..len) in a block of exactly len bytes (1 when empty). */
static char *
feed_copy(const char *buf, size_t len)
{
	char	*p;

	if ((p = malloc(len > 0 ? len : 1)) == NULL)
		abort();
	if (len > 0)
		memcpy(p, buf, len);
	return p;
}

int
http_feed(const char *buf, size_t len, size_t max, const size_t *ends,
    size_t nends, struct http_request *req)
{
	struct http_parser	 hp;
	enum http_parse_result	 r = HTTP_INCOMPLETE;
	char			*cur;
	size_t			 i, n;

	http_parser_init(&hp, max);
	for (i = 0; i <= nends && r == HTTP_INCOMPLETE; i++) {
		n = i < nends ? ends[i] : len;
		if (n > len)
			n = len;
		cur = feed_copy(buf, n);
		r = http_parse_more(&hp, cur, n);
		free(cur);
	}
	memcpy(req, &hp.req, sizeof(*req));
	/* a decided head stays decided, whatever follows it */
	cur = feed_copy(buf, len);
	if (http_parse_more(&hp, cur, len) != r ||
	    memcmp(req, &hp.req, sizeof(*req)) != 0)
		r = HTTP_FEED_DISAGREE;
	free(cur);
	return r;
}

size_t
http_feed_split(uint32_t seed, size_t len, size_t maxread, size_t *ends,
    size_t cap)
{
	uint32_t	x = seed | 1;
	size_t		n = 0, at = 0;

	if (maxread == 0)
		maxread = 1;
	while (n < cap) {
		/* xorshift32 (Marsaglia 2003) */
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		at += 1 + x % maxread;
		if (at >= len)
			break;
		ends[n++] = at;
	}
	return n;
}
