/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The TLS pump (docs/architecture.md "TLS"): when the kernel cannot take the
 * TLS session over, the front keeps it and the relay gets one end of a
 * socketpair.  This file moves the bytes between the TLS connection and the
 * other end, with bounded buffers in each direction, and passes half-closes
 * and errors through: the relay sees what a plain TCP peer would show.
 * Once the relay is done with the connection (it closed or shut its end),
 * the client has PUMP_CLOSE_MS to take what is left and answer our
 * close_notify; a client that stays silent is dropped then, so no pump
 * (two descriptors and 32 KiB) outlives its relay for long.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "front.h"
#include "pyrelayd.h"

#define PUMP_BUF	16384	/* one TLS record's worth each way */
#define PUMP_CLOSE_MS	5000	/* docs/tls.md: the end after the relay's */

struct pump {
	SSL		*ssl;
	int		 tcp;		/* the client, TLS */
	int		 pair;		/* our end of the socketpair, plaintext */
	struct event	*ev_tcp;	/* EV_READ|EV_WRITE as needed */
	struct event	*ev_pair;
	struct event	*ev_close;	/* PUMP_CLOSE_MS after the relay's end */
	unsigned char	 up[PUMP_BUF];	/* client -> relay */
	size_t		 up_off, up_len;
	unsigned char	 down[PUMP_BUF];	/* relay -> client */
	size_t		 down_off, down_len;
	int		 tcp_eof;	/* close_notify or EOF from the client */
	int		 pair_eof;	/* the relay shut its side */
	int		 relay_done;	/* ... or closed it, seen or not: ev_close runs */
	int		 up_shut;	/* SHUT_WR done on pair */
	int		 down_shut;	/* close_notify + SHUT_WR done on tcp */
	int		 ssl_want_write;	/* an SSL call needs the socket writable */
	short		 tcp_events, pair_events;
};

static void	pump_step(struct pump *);

static void
pump_free(struct pump *pu)
{
	event_free(pu->ev_tcp);
	event_free(pu->ev_pair);
	event_free(pu->ev_close);
	SSL_free(pu->ssl);
	close(pu->tcp);
	close(pu->pair);
	front_pump_count(-1);
	free(pu);
}

/* The relay has written its last byte: the client's time to finish starts. */
static void
pump_relay_done(struct pump *pu)
{
	struct timeval	tv = { PUMP_CLOSE_MS / 1000, PUMP_CLOSE_MS % 1000 * 1000 };

	if (pu->relay_done)
		return;
	pu->relay_done = 1;
	evtimer_add(pu->ev_close, &tv);
}

static void
pump_event(evutil_socket_t fd, short ev, void *arg)
{
	struct pump	*pu = arg;

	/*
	 * The relay closed while our buffer toward a client that does not
	 * read is full: its EOF would wait behind the bytes, for ever.
	 */
	if (fd == pu->pair && (ev & EV_CLOSED))
		pump_relay_done(pu);
	pump_step(pu);
}

static void
pump_close_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct pump	*pu = arg;

	log_debug("event=tls_pump_close_timeout up_shut=%d down_shut=%d "
	    "unsent=%zu", pu->up_shut, pu->down_shut,
	    pu->down_len - pu->down_off);
	pump_free(pu);
}

/* Points ev at what fd should wake us for, when that changed. */
static void
pump_rearm(struct pump *pu, struct event *ev, int fd, short want, short *cur)
{
	if (want == *cur)
		return;
	event_del(ev);
	event_assign(ev, event_get_base(ev), fd, want | EV_PERSIST, pump_event, pu);
	if (want)
		event_add(ev, NULL);
	*cur = want;
}

static void
pump_arm(struct pump *pu)
{
	short	tcp = 0, pair = 0;

	if (!pu->tcp_eof && pu->up_len < sizeof(pu->up))
		tcp |= EV_READ;
	if (pu->ssl_want_write)
		tcp |= EV_WRITE;
	if (!pu->pair_eof && pu->down_len < sizeof(pu->down))
		pair |= EV_READ;
	/* once seen, a closed end would wake us for ever (level-triggered) */
	if (!pu->relay_done)
		pair |= EV_CLOSED;
	if (pu->up_len > pu->up_off)
		pair |= EV_WRITE;
	pump_rearm(pu, pu->ev_tcp, pu->tcp, tcp, &pu->tcp_events);
	pump_rearm(pu, pu->ev_pair, pu->pair, pair, &pu->pair_events);
}

/* Returns 0 to go on, -1 when the TLS side failed. */
static int
pump_ssl_result(struct pump *pu, int r)
{
	switch (SSL_get_error(pu->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return 0;
	case SSL_ERROR_WANT_WRITE:
		pu->ssl_want_write = 1;
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		pu->tcp_eof = 1;
		return 0;
	default:
		ERR_clear_error();
		return -1;
	}
}

static void
pump_step(struct pump *pu)
{
	ssize_t	n;
	int	r, progress;

	pu->ssl_want_write = 0;
	do {
		progress = 0;
		/* a drained buffer starts over, so a full one never stays full */
		if (pu->up_off == pu->up_len)
			pu->up_off = pu->up_len = 0;
		if (pu->down_off == pu->down_len)
			pu->down_off = pu->down_len = 0;
		/* client -> relay */
		if (!pu->tcp_eof && pu->up_len < sizeof(pu->up)) {
			r = SSL_read(pu->ssl, pu->up + pu->up_len,
			    sizeof(pu->up) - pu->up_len);
			if (r > 0) {
				pu->up_len += r;
				progress = 1;
			} else if (pump_ssl_result(pu, r) == -1) {
				pump_free(pu);
				return;
			}
		}
		if (pu->up_len > pu->up_off) {
			n = send(pu->pair, pu->up + pu->up_off, pu->up_len - pu->up_off,
			    MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0) {
				pu->up_off += n;
				progress = 1;
			} else if (n == -1 && errno != EAGAIN && errno != EINTR) {
				pump_free(pu);
				return;
			}
		}
		/* relay -> client */
		if (!pu->pair_eof && pu->down_len < sizeof(pu->down)) {
			n = recv(pu->pair, pu->down + pu->down_len,
			    sizeof(pu->down) - pu->down_len, MSG_DONTWAIT);
			if (n > 0) {
				pu->down_len += n;
				progress = 1;
			} else if (n == 0) {
				pu->pair_eof = 1;
				pump_relay_done(pu);
			} else if (errno != EAGAIN && errno != EINTR) {
				pump_free(pu);
				return;
			}
		}
		if (pu->down_len > pu->down_off && !pu->down_shut) {
			r = SSL_write(pu->ssl, pu->down + pu->down_off,
			    pu->down_len - pu->down_off);
			if (r > 0) {
				pu->down_off += r;
				progress = 1;
			} else if (pump_ssl_result(pu, r) == -1) {
				pump_free(pu);
				return;
			}
		}
	} while (progress);

	/* half-closes travel on once everything before them has */
	if (pu->tcp_eof && pu->up_off == pu->up_len && !pu->up_shut) {
		pu->up_shut = 1;
		shutdown(pu->pair, SHUT_WR);
	}
	if (pu->pair_eof && pu->down_off == pu->down_len && !pu->down_shut) {
		pu->down_shut = 1;
		SSL_shutdown(pu->ssl);
		ERR_clear_error();
		shutdown(pu->tcp, SHUT_WR);
	}
	if (pu->up_shut && pu->down_shut) {
		pump_free(pu);
		return;
	}
	pump_arm(pu);
}

void
front_pump_start(struct event_base *base, SSL *ssl, int tcp, int pair)
{
	struct pump	*pu;

	pu = xcalloc(1, sizeof(*pu));
	pu->ssl = ssl;
	pu->tcp = tcp;
	pu->pair = pair;
	pu->ev_tcp = event_new(base, tcp, EV_READ | EV_PERSIST, pump_event, pu);
	pu->ev_pair = event_new(base, pair, EV_READ | EV_PERSIST, pump_event, pu);
	pu->ev_close = evtimer_new(base, pump_close_timeout, pu);
	if (pu->ev_tcp == NULL || pu->ev_pair == NULL || pu->ev_close == NULL)
		fatalx("front: event_new");
	front_pump_count(1);
	/* OpenSSL may hold bytes it read past the head already */
	pump_step(pu);
}
