/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * PROXY protocol header parser (HAProxy's proxy-protocol.txt, versions 1
 * and 2) for listeners configured with "proxy-protocol".  The header must
 * be the very first bytes of the connection; its source address then
 * stands for the client in rate limits, caps and logs.  Pure code: no
 * sockets, no allocation.
 */
#ifndef PROXY_H
#define PROXY_H

#include <sys/types.h>
#include <sys/socket.h>

#include <stddef.h>

#define PROXY_V1_MAX	107	/* v1 header incl. CRLF */
/* bound we accept for v2 (header + addresses + TLVs); longer is PROXY_BAD */
#define PROXY_V2_MAX	(16 + 216)

enum proxy_result {
	PROXY_INCOMPLETE = 0,	/* a valid header may still follow */
	PROXY_OK,		/* header parsed; pi->len is its length */
	PROXY_BAD,		/* no valid header starts this way: close */
};

struct proxy_info {
	int			version;	/* 1 or 2 */
	/* LOCAL / UNKNOWN: no address, use the socket's peer */
	int			local;
	/* AF_INET/AF_INET6 with port */
	struct sockaddr_storage	src;
	socklen_t		srclen;		/* 0 when local */
	/* bytes of the header; the HTTP request starts after them */
	size_t			len;
};

/*
 * Parses the PROXY header at buf[0..len).  Call again with the grown
 * buffer after every read (the parser restarts and keeps no state).
 * PROXY_BAD is returned as soon as the bytes seen can start no valid
 * header, e.g. after the first byte of "GET /".  A v1 header has no more
 * than PROXY_V1_MAX bytes and a v2 header no more than PROXY_V2_MAX, so
 * a buffer of PROXY_V2_MAX bytes is never PROXY_INCOMPLETE.
 * Reads nothing past buf[len - 1]; bytes after the header are not looked
 * at.  *pi is filled on PROXY_OK and zeroed otherwise.
 */
enum proxy_result	proxy_parse(const unsigned char *buf, size_t len,
			    struct proxy_info *pi);

#endif
