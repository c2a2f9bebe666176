/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Client address -> admission bucket (addr_bucket.h).  An IPv6 subscriber
 * is routinely given a whole /64 and may send from any of its 2^64
 * addresses, so counting per /128 would give one host as many rate-limit
 * buckets and per-address caps as it likes.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <string.h>

#include "addr_bucket.h"

void
addr_bucket_of(const struct sockaddr_storage *ss, struct addr_bucket *b)
{
	const struct in6_addr	*a6;

	memset(b, 0, sizeof(*b));
	if (ss->ss_family == AF_INET) {
		b->family = AF_INET;
		memcpy(b->addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		a6 = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			/* ::ffff:a.b.c.d is the IPv4 host a.b.c.d */
			b->family = AF_INET;
			memcpy(b->addr, &a6->s6_addr[12], 4);
		} else {
			b->family = AF_INET6;
			memcpy(b->addr, a6->s6_addr, ADDR_BUCKET_V6_PREFIX / 8);
		}
	}
}

int
addr_bucket_cmp(const struct addr_bucket *a, const struct addr_bucket *b)
{
	if (a->family != b->family)
		return a->family < b->family ? -1 : 1;
	return memcmp(a->addr, b->addr, sizeof(a->addr));
}

const char *
addr_bucket_str(const struct addr_bucket *b, char *buf, size_t size)
{
	char	text[INET6_ADDRSTRLEN];

	if ((b->family != AF_INET && b->family != AF_INET6) ||
	    inet_ntop(b->family, b->addr, text, sizeof(text)) == NULL) {
		snprintf(buf, size, "-");
		return buf;
	}
	snprintf(buf, size, "%s/%d", text,
	    b->family == AF_INET ? 32 : ADDR_BUCKET_V6_PREFIX);
	return buf;
}
