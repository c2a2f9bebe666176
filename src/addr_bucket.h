/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The admission bucket a client address falls in (pyrelayd.conf(5),
 * "rate limit" and "max connections per ip"): an IPv4 address on its own
 * (/32), an IPv6 address with the rest of its /64, which one subscriber
 * usually holds whole, and an IPv4-mapped IPv6 address as the IPv4
 * address it is.
 */
#ifndef ADDR_BUCKET_H
#define ADDR_BUCKET_H

#include <sys/types.h>
#include <sys/socket.h>

#include <stddef.h>

#define ADDR_BUCKET_V6_PREFIX	64	/* bits of an IPv6 address that count */

struct addr_bucket {
	int		family;		/* AF_INET, AF_INET6, or 0 for another */
	unsigned char	addr[16];	/* the prefix; every bit past it is 0 */
};

/* The bucket of ss (the whole key is written, padding included). */
void	addr_bucket_of(const struct sockaddr_storage *ss, struct addr_bucket *);
int	addr_bucket_cmp(const struct addr_bucket *, const struct addr_bucket *);
/* "192.0.2.7/32", "2001:db8:1:2::/64", for logs; returns buf. */
const char *addr_bucket_str(const struct addr_bucket *, char *buf, size_t);

#endif
