/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The push process's HTTPS client (docs/push.md): POSTs over libevent's
 * evhttp on OpenSSL bufferevents, certificates and host names always
 * verified, HTTP/1.1 keep-alive connections reused, each call bounded in
 * time (PUSH_CALL_MS) and in what is read of its reply (PUSH_REPLY_MAX).
 */
#ifndef PUSH_HTTP_H
#define PUSH_HTTP_H

#include <stddef.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "push.h"

#define PUSH_CALL_MS		10000		/* a call, from its request on */
#define PUSH_REPLY_MAX		4096		/* bytes of headers, and of body */
#define PUSH_CONNS_MAX		4		/* per endpoint */
#define PUSH_SPREAD_MS		100		/* a call waits this long for a busy one */
#define PUSH_IDLE_MS		60000		/* an unused connection is closed */
#define PUSH_ADDRS_MAX		8		/* addresses kept per host name */

struct push_host;
struct push_call;

struct push_reply {
	int			 status;	/* HTTP status; 0: no reply */
	const char		*error;		/* why there is none */
	int			 unreachable;	/* no address could be reached */
	const unsigned char	*body;		/* at most PUSH_REPLY_MAX bytes */
	size_t			 len;
};
typedef void	(*push_reply_cb)(const struct push_reply *, void *arg);

/*
 * An endpoint, its name resolved now (getaddrinfo, before the sandbox:
 * the sandbox has no files and no DNS).  NULL with err set when the name
 * has no address.
 */
struct push_host *push_host_new(struct event_base *, SSL_CTX *,
		    const struct push_url *, int maxconns, char *err,
		    size_t errlen);
/*
 * POSTs body to path; bearer (or NULL) goes into Authorization;
 * content_type must outlive the call (a string constant).  cb is called
 * once, later, from the event loop, unless the call is cancelled.
 */
struct push_call *push_post(struct push_host *, const char *path,
		    const char *bearer, const char *content_type,
		    const char *body, size_t len, push_reply_cb cb, void *arg);
/* Abandons a call (its connection is closed); cb is not called. */
void		 push_call_cancel(struct push_call *);
/* The client context every connection verifies with, CAs from ca (PEM). */
SSL_CTX		*push_ssl_ctx(const unsigned char *ca, size_t len, char *err,
		    size_t errlen);

#endif
