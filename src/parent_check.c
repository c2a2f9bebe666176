/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * What the parent checks in what its workers hand it, beyond the types,
 * lengths and fd presence of the allow-lists (docs/messages.md, "A worker
 * the parent cannot trust"): that a descriptor is the kind of client
 * connection the message says, that a phone's conn id is one a relay can
 * have made, and that a worker keeps reading what the parent sends it.
 * A worker that fails one is killed, never the parent.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "parent.h"
#include "proto.h"
#include "pyrelayd.h"

/*
 * The most the parent holds queued for one worker once the worker's
 * socket buffer (about 200 KiB of packets) is full.  A relay's largest
 * legitimate burst is its SETUP or ASSIGN and then a CONN_ATTACH for each
 * of its server-id's connections arriving at once: with `phones per
 * server` at its most (1024) and a few hundred bytes each, or a few dozen
 * carrying 16 KiB of early bytes, well under 1 MiB.  A front's is the
 * certificate (MSG_TLS, 30 KiB) and a CONN_NEW (about 170 bytes) per
 * connection accepted while it was busy: 4 MiB is some 24,000 of them,
 * more than `max connections` by default.  A worker that lets more pile up
 * has stopped reading.
 */
#define OUTQ_MAX_RELAY		(1024 * 1024)
#define OUTQ_MAX_FRONT		(4 * 1024 * 1024)
/*
 * The push process is sent its SETUP and PUSH_CONFIG (about 10 KiB each)
 * once, and then at most PUSH_IN_FLIGHT_MAX (32) PUSH_SENDs of 600 bytes
 * at a time, since the parent holds the wakes in flight: some 40 KiB in
 * all, which its socket buffer takes whole.  Anything queued past it
 * means it stopped reading.
 */
#define OUTQ_MAX_PUSH		(64 * 1024)

/*
 * A connection a worker hands the parent (CONN_UPGRADE, CONN_REROUTE)
 * against what the parent knows of it: NULL when it is fine, else why
 * not.  Its descriptor must be a client connection, a stream socket:
 * TCP, or for a TLS session the front keeps (TLS_MODE_PUMP) its end of an
 * AF_UNIX socketpair.  Not a pipe, a file, or the worker's own SEQPACKET
 * channel, which a relay or a front would then be handed as a client.
 */
const char *
parent_check_conn(const struct conn_rec *c, const struct msg_conn_upgrade *up,
    const struct msg *m)
{
	socklen_t	len;
	int		type, domain, proto;

	if (up->tls_mode > TLS_MODE_PUMP)
		return "bad tls_mode";
	if ((up->tls_mode != TLS_MODE_NONE) != ((c->listen_flags & LISTEN_TLS) != 0))
		return "tls_mode does not match the listener";
	/* only behind a PROXY listener may the client address change */
	if ((c->listen_flags & LISTEN_PROXY) &&
	    up->peer.ss_family != AF_INET && up->peer.ss_family != AF_INET6)
		return "bad peer address";
	if (m->fd_lost)
		return NULL;
	/*
	 * One system call for a client's connection, on every new one: a
	 * socket whose protocol is TCP is a stream in AF_INET or AF_INET6
	 * (MPTCP says IPPROTO_MPTCP).  Anything else takes the calls below,
	 * which say what it is.
	 */
	len = sizeof(proto);
	if (getsockopt(m->fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == -1)
		return errno == ENOTSOCK ? "connection fd is not a socket" :
		    "connection fd has no protocol";
	if (up->tls_mode != TLS_MODE_PUMP && len == sizeof(proto) &&
	    proto == IPPROTO_TCP)
		return NULL;
	len = sizeof(type);
	if (getsockopt(m->fd, SOL_SOCKET, SO_TYPE, &type, &len) == -1 ||
	    len != sizeof(type) || type != SOCK_STREAM)
		return "connection fd is not a stream socket";
	len = sizeof(domain);
	if (getsockopt(m->fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == -1 ||
	    len != sizeof(domain))
		return "connection fd has no domain";
	if (up->tls_mode == TLS_MODE_PUMP ? domain != AF_UNIX :
	    domain != AF_INET && domain != AF_INET6)
		return "connection fd is not a client socket";
	return NULL;
}

/*
 * A phone's conn id as its relay makes them (protocol.md §4):
 * client-<the relay's server-id>-<8 lowercase hex digits>.  Anything
 * else, an escape sequence for the operator's terminal say, is a lie.
 */
int
parent_check_conn_id(const char *id, const char *sid)
{
	size_t	sidlen = strlen(sid), i;

	if (strncmp(id, "client-", 7) != 0 || strncmp(id + 7, sid, sidlen) != 0 ||
	    id[7 + sidlen] != '-' || strlen(id) != 7 + sidlen + 1 + 8)
		return 0;
	for (i = 7 + sidlen + 1; id[i] != '\0'; i++)
		if (!((id[i] >= '0' && id[i] <= '9') ||
		    (id[i] >= 'a' && id[i] <= 'f')))
			return 0;
	return 1;
}

/*
 * The parent's queue toward w is past the most a worker that reads can
 * leave there: NULL, or why it must go (in a static buffer).
 */
const char *
parent_check_outq(const struct worker *w)
{
	static char	why[96];
	size_t		max;

	max = w->role == ROLE_FRONT ? OUTQ_MAX_FRONT :
	    w->role == ROLE_PUSH ? OUTQ_MAX_PUSH : OUTQ_MAX_RELAY;
	if (w->chan.outq_bytes <= max)
		return NULL;
	snprintf(why, sizeof(why), "stopped reading its channel: %zu bytes "
	    "queued, %zu at most", w->chan.outq_bytes, max);
	return why;
}
