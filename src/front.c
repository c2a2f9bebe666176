/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * A front process (docs/architecture.md): reads the HTTP request head of each
 * connection the parent hands it, with hard size and time limits, answers
 * /healthz and the HTTP errors itself, and hands a valid /v1 request and its
 * fd back to the parent.  It also writes the verdicts the parent decides
 * without a relay (429, 503, 4404).
 */
#include "config.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "front.h"
#include "http.h"
#include "http_response.h"
#include "msg.h"
#include "proc.h"
#include "proto.h"
#include "proxy.h"
#include "push.h"
#include "pyrelayd.h"
#include "tls.h"
#include "valid.h"
#include "ws.h"

#define FRONT_MAXFDS		65536
#define LINGER_MS		2000	/* drain the peer after our answer */
#define RESP_SMALL		1024	/* every answer but /metrics */
#define RESP_METRICS		16384

enum fconn_state {
	FC_PROXY,		/* PROXY protocol header */
	FC_TLS,			/* TLS handshake */
	FC_HEAD,		/* reading the request head */
	FC_PARENT,		/* waiting for the parent's answer */
	FC_WRITE,		/* writing our answer */
	FC_LINGER,		/* answer sent, SHUT_WR done, draining until EOF */
};

struct fconn {
	TAILQ_ENTRY(fconn)	 entry;
	uint64_t		 id;
	int			 fd;
	enum fconn_state	 state;
	struct msg_conn_new	 meta;
	struct event		*ev_read;
	struct event		*ev_write;
	struct event		*ev_timer;
	unsigned char		*buf;		/* the request head so far */
	size_t			 len, cap;
	struct http_parser	 hp;		/* how far buf is parsed */
	char			*resp;
	size_t			 resp_len, resp_off;
	enum front_outcome	 outcome;
	int			 released;	/* CONN_CLOSED sent: no longer counted */
	int			 head_only;	/* a HEAD request: no body */
	SSL			*ssl;		/* TLS listeners */
	int			 want_write;	/* SSL needs the socket writable */
	unsigned char		 proxy[PROXY_V2_MAX];	/* PROXY header so far */
	size_t			 proxy_len;
};
TAILQ_HEAD(fconn_list, fconn);

struct front {
	struct event_base	*base;
	struct msg_chan		 chan;
	struct event		*ev_chan_write;
	struct limits		 lim;
	struct fconn_list	 conns;
	int			 stopping;
	int			 finishing;	/* MSG_FINISH: no new work, exit when done */
	SSL_CTX			*tls_ctx;	/* NULL until the parent sends MSG_TLS */
	int			 tls_warned;
	int			 pumps;
};

static struct front	*front;

static void	front_conn_read(evutil_socket_t, short, void *);
static void	front_conn_write(evutil_socket_t, short, void *);
static void	front_conn_timer(evutil_socket_t, short, void *);
static void	front_finish_check(struct front *);

static void
front_chan_flush(struct front *f)
{
	int	rv;

	if ((rv = msg_flush(&f->chan)) == -1)
		fatalx("front: parent channel: %s", f->chan.errstr);
	if (rv == 0)
		event_add(f->ev_chan_write, NULL);
}

static void
front_set_timer(struct fconn *fc, int64_t deadline_ms)
{
	struct timeval	tv = ms_timeval(deadline_ms - now_ms());

	evtimer_add(fc->ev_timer, &tv);
}

static struct fconn *
front_conn_new(struct front *f, int fd, uint64_t id)
{
	struct fconn	*fc;

	fc = xcalloc(1, sizeof(*fc));
	fc->fd = fd;
	fc->id = id;
	fc->ev_read = event_new(f->base, fd, EV_READ | EV_PERSIST, front_conn_read, fc);
	fc->ev_write = event_new(f->base, fd, EV_WRITE | EV_PERSIST, front_conn_write, fc);
	fc->ev_timer = evtimer_new(f->base, front_conn_timer, fc);
	fc->outcome = FRONT_CLIENT_GONE;
	/* pyrelayd.conf(5): a reload's limit applies to later connections */
	http_parser_init(&fc->hp, f->lim.max_header_size);
	if (fc->ev_read == NULL || fc->ev_write == NULL || fc->ev_timer == NULL)
		fatalx("front: event_new");
	TAILQ_INSERT_TAIL(&f->conns, fc, entry);
	return fc;
}

/*
 * Tells the parent the connection no longer counts against the caps
 * (CONN_CLOSED), once: when it is closed, or as soon as its final answer
 * is decided, before the first byte of it is written.  A client that has
 * read its answer and connects again is then never refused at accept by
 * the count of the connection it just finished (the parent reads the
 * fronts' channels before it refuses one: parent_accept).
 */
static void
front_conn_release(struct fconn *fc)
{
	struct front		*f = front;
	struct msg_conn_closed	 mc;

	if (fc->released)
		return;
	fc->released = 1;
	memset(&mc, 0, sizeof(mc));
	mc.outcome = fc->outcome;
	msg_compose(&f->chan, MSG_CONN_CLOSED, fc->id, &mc, sizeof(mc), -1);
	front_chan_flush(f);
}

/* Forgets a connection; closed says whether the parent must count it gone. */
static void
front_conn_free(struct fconn *fc, int closed)
{
	struct front		*f = front;

	TAILQ_REMOVE(&f->conns, fc, entry);
	event_free(fc->ev_read);
	event_free(fc->ev_write);
	event_free(fc->ev_timer);
	if (closed) {
		close(fc->fd);
		front_conn_release(fc);
	}
	if (fc->ssl != NULL)
		SSL_free(fc->ssl);
	free(fc->buf);
	free(fc->resp);
	free(fc);
	front_finish_check(f);
}

/*
 * The parent sent a connection whose fd we could not receive (at our
 * RLIMIT_NOFILE): the kernel closed it; the parent forgets it.
 */
static void
front_fd_lost(struct front *f, uint64_t id)
{
	struct msg_conn_closed	mc;

	memset(&mc, 0, sizeof(mc));
	mc.fd_lost = 1;
	msg_compose(&f->chan, MSG_CONN_CLOSED, id, &mc, sizeof(mc), -1);
	front_chan_flush(f);
}

void
front_pump_count(int delta)
{
	front->pumps += delta;
	if (front->stopping && front->pumps == 0)
		event_base_loopexit(front->base, NULL);
	front_finish_check(front);
}

#define FIO_AGAIN	(-1)
#define FIO_ERROR	(-2)

/* Reads from the client, through TLS when the listener has it. */
static ssize_t
fio_recv(struct fconn *fc, void *buf, size_t len)
{
	ssize_t	n;
	int	r;

	if (fc->ssl == NULL) {
		n = recv(fc->fd, buf, len, MSG_DONTWAIT);
		if (n >= 0)
			return n;
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ?
		    FIO_AGAIN : FIO_ERROR;
	}
	if ((r = SSL_read(fc->ssl, buf, len)) > 0)
		return r;
	switch (SSL_get_error(fc->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return FIO_AGAIN;
	case SSL_ERROR_WANT_WRITE:
		fc->want_write = 1;
		event_add(fc->ev_write, NULL);
		return FIO_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	default:
		ERR_clear_error();
		return FIO_ERROR;
	}
}

static ssize_t
fio_send(struct fconn *fc, const void *buf, size_t len)
{
	ssize_t	n;
	int	r;

	if (fc->ssl == NULL) {
		n = send(fc->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0)
			return n;
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ?
		    FIO_AGAIN : FIO_ERROR;
	}
	if ((r = SSL_write(fc->ssl, buf, len)) > 0)
		return r;
	switch (SSL_get_error(fc->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		event_add(fc->ev_read, NULL);
		return FIO_AGAIN;
	case SSL_ERROR_WANT_WRITE:
		return FIO_AGAIN;
	default:
		ERR_clear_error();
		return FIO_ERROR;
	}
}

/* Sends the prepared answer, then lingers until the peer closes. */
static void
front_conn_respond(struct fconn *fc)
{
	char	*end;

	/* RFC 9110 9.3.2: HEAD gets the head that GET would, and no body */
	if (fc->head_only && fc->resp_len > 0 &&
	    (end = memmem(fc->resp, fc->resp_len, "\r\n\r\n", 4)) != NULL)
		fc->resp_len = end + 4 - fc->resp;
	fc->state = FC_WRITE;
	fc->resp_off = 0;
	event_del(fc->ev_read);
	/* its answer is decided: it is the front's alone until LINGER_MS */
	front_conn_release(fc);
	front_set_timer(fc, now_ms() + LINGER_MS);
	front_conn_write(fc->fd, EV_WRITE, fc);
}

static char *
front_resp_buf(struct fconn *fc, size_t size)
{
	free(fc->resp);
	fc->resp = xmalloc(size);
	return fc->resp;
}

static void
front_http_error(struct fconn *fc, int status, int ws_version_hdr)
{
	int	n;

	if (fc->outcome == FRONT_CLIENT_GONE)
		fc->outcome = FRONT_HTTP_ERROR;
	n = http_error_response(front_resp_buf(fc, RESP_SMALL), RESP_SMALL,
	    status, ws_version_hdr);
	if (n < 0)
		fatalx("front: response %d does not fit", status);
	fc->resp_len = n;
	front_conn_respond(fc);
}

static void
front_conn_write(evutil_socket_t fd, short ev, void *arg)
{
	struct fconn	*fc = arg;
	ssize_t		 n;

	if (fc->state == FC_TLS || fc->state == FC_HEAD) {
		/* the TLS layer wanted to write while reading */
		fc->want_write = 0;
		event_del(fc->ev_write);
		front_conn_read(fd, EV_READ, fc);
		return;
	}
	if (fc->state != FC_WRITE)
		return;
	while (fc->resp_off < fc->resp_len) {
		n = fio_send(fc, fc->resp + fc->resp_off, fc->resp_len - fc->resp_off);
		if (n == FIO_AGAIN) {
			event_add(fc->ev_write, NULL);
			return;
		}
		if (n == FIO_ERROR) {
			front_conn_free(fc, 1);
			return;
		}
		fc->resp_off += n;
	}
	event_del(fc->ev_write);
	if (fc->ssl != NULL) {
		/* close_notify; the client's answer is drained below */
		SSL_shutdown(fc->ssl);
		ERR_clear_error();
	}
	/*
	 * Half-close and read until EOF: closing with unread input would send
	 * a RST that can destroy the answer before the client reads it.
	 */
	shutdown(fc->fd, SHUT_WR);
	fc->state = FC_LINGER;
	event_add(fc->ev_read, NULL);
}

/*
 * Whether a 400 came from the Sec-WebSocket-Version check, which adds the
 * "Sec-WebSocket-Version: 13" header: the same request with a good version
 * and key would pass every other check.
 */
static int
front_version_rejected(const struct http_request *req, int status)
{
	struct http_request	fixed;

	if (status != 400 || req->ws_version_13)
		return 0;
	fixed = *req;
	fixed.ws_version_13 = 1;
	fixed.ws_key_valid = 1;
	return http_upgrade_status(&fixed) == 0;
}

/* Whether a 400 came from the header gate (docs/protocol.md §2 step 4). */
static int
front_gate_rejected(const struct http_request *req, int status)
{
	struct http_request	fixed;

	if (status != 400)
		return 0;
	/* with every WebSocket check passing, the gate alone decides */
	fixed = *req;
	fixed.version_major = 1;
	fixed.version_minor = 1;
	fixed.conn_upgrade = 1;
	fixed.upgrade_websocket = 1;
	fixed.method_get = 1;
	fixed.ws_version_13 = 1;
	fixed.ws_key_valid = 1;
	return http_upgrade_status(&fixed) == 400;
}

/*
 * docs/architecture.md "TLS": with kernel TLS in both directions the relay gets
 * the socket itself and the front leaves the data path; otherwise the relay
 * gets one end of a socketpair and the front pumps.
 */
static void
front_tls_handoff(struct front *f, struct fconn *fc, struct msg_conn_upgrade *up)
{
	int	sv[2], r;

	if (!f->lim.ktls_off && tls_ktls_both(fc->ssl)) {
		/* what OpenSSL decrypted already travels with the fd */
		while (SSL_pending(fc->ssl) > 0 && up->preread_len < PREREAD_MAX) {
			r = SSL_read(fc->ssl, up->preread + up->preread_len,
			    PREREAD_MAX - up->preread_len);
			if (r <= 0)
				break;
			up->preread_len += r;
		}
		if (SSL_pending(fc->ssl) == 0) {
			up->tls_mode = TLS_MODE_KTLS;
			log_debug("event=tls_handoff conn=%llu mode=ktls",
			    (unsigned long long)fc->id);
			msg_compose(&f->chan, MSG_CONN_UPGRADE, fc->id, up,
			    CONN_UPGRADE_LEN(up), fc->fd);
			/* no close_notify: the session lives on in the kernel */
			SSL_free(fc->ssl);
			fc->ssl = NULL;
			return;
		}
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	    sv) == -1) {
		log_warn("event=tls_handoff_failed step=socketpair");
		SSL_free(fc->ssl);
		fc->ssl = NULL;
		close(fc->fd);
		return;
	}
	up->tls_mode = TLS_MODE_PUMP;
	msg_compose(&f->chan, MSG_CONN_UPGRADE, fc->id, up, CONN_UPGRADE_LEN(up),
	    sv[1]);
	front_pump_start(f->base, fc->ssl, fc->fd, sv[0]);
	fc->ssl = NULL;
}

static void
front_upgrade(struct front *f, struct fconn *fc, const struct http_request *req)
{
	struct msg_conn_upgrade	*up;
	size_t			 extra;

	up = xcalloc(1, sizeof(*up));
	up->peer = fc->meta.peer;
	up->accepted_ms = fc->meta.accepted_ms;
	up->kind = req->path == HTTP_PATH_SERVER ? CONN_BINARY : CONN_PHONE;
	up->status = http_upgrade_status(req);
	up->ws_version_hdr = front_version_rejected(req, up->status);
	up->head_only = req->method_head;
	up->header_gate = front_gate_rejected(req, up->status);
	up->listen_flags = fc->meta.listen_flags;
	if (req->server_id_valid)
		strlcpy(up->server_id, req->server_id, sizeof(up->server_id));
	strlcpy(up->device_name, req->device_name, sizeof(up->device_name));
	if (req->ws_key_valid)
		strlcpy(up->ws_accept, req->ws_accept, sizeof(up->ws_accept));
	/* docs/protocol.md §2: pipelined bytes are the WebSocket stream's */
	extra = fc->len - req->head_len;
	if (extra > PREREAD_MAX)
		extra = PREREAD_MAX;	/* cannot happen: buf is at most that big */
	memcpy(up->preread, fc->buf + req->head_len, extra);
	up->preread_len = extra;
	/*
	 * Out of epoll before the fd leaves: once our copy is closed, a
	 * registration of the socket (alive in the relay) could no longer
	 * be removed, and every byte for the relay would wake this front.
	 */
	event_del(fc->ev_read);
	event_del(fc->ev_write);
	evtimer_del(fc->ev_timer);
	if (fc->ssl != NULL)
		front_tls_handoff(f, fc, up);
	else
		msg_compose(&f->chan, MSG_CONN_UPGRADE, fc->id, up,
		    CONN_UPGRADE_LEN(up), fc->fd);
	front_chan_flush(f);
	free(up);
	/* the fd belongs to the channel (or the pump) now */
	front_conn_free(fc, 0);
}

/* Answers that need the parent (counts, a challenge file) wait for it. */
static void
front_ask_parent(struct front *f, struct fconn *fc, uint32_t type,
    const void *body, size_t len)
{
	fc->state = FC_PARENT;
	event_del(fc->ev_read);
	front_set_timer(fc, now_ms() + LINGER_MS);
	msg_compose(&f->chan, type, fc->id, body, len, -1);
	front_chan_flush(f);
}

/*
 * An agent check (docs/scaling.md) sends nothing we need: its answer,
 * the drain state, is asked of the parent at once, and nothing is read.
 */
static void
front_agent_ask(struct front *f, struct fconn *fc)
{
	struct msg_empty	e = { 0 };

	front_ask_parent(f, fc, MSG_HEALTH_REQ, &e, sizeof(e));
}

static void
front_head_done(struct front *f, struct fconn *fc, const struct http_request *req)
{
	struct msg_empty	e = { 0 };
	int			metrics = fc->meta.listen_flags & LISTEN_METRICS;

	evtimer_del(fc->ev_timer);
	fc->head_only = req->method_head;
	/* docs/protocol.md §2 step 1: on TLS listeners the Host must be the domain */
	if ((fc->meta.listen_flags & LISTEN_TLS) && f->lim.domain[0] != '\0' &&
	    (req->host_count != 1 || !tls_host_matches(req->host, f->lim.domain))) {
		front_http_error(fc, 421, 0);
		return;
	}
	if (fc->meta.listen_flags & LISTEN_ACME) {
		struct msg_acme_req	ar;

		/* HTTP-01 challenges and 404: the parent reads the file */
		if (req->path != HTTP_PATH_ACME ||
		    !acme_token_valid(req->acme_token)) {
			front_http_error(fc, 404, 0);
			return;
		}
		memset(&ar, 0, sizeof(ar));
		strlcpy(ar.token, req->acme_token, sizeof(ar.token));
		front_ask_parent(f, fc, MSG_ACME_REQ, &ar, sizeof(ar));
		return;
	}
	if (metrics) {
		/* the metrics listener serves nothing else */
		if (req->path != HTTP_PATH_METRICS) {
			front_http_error(fc, 404, 0);
			return;
		}
		front_ask_parent(f, fc, MSG_METRICS_REQ, &e, sizeof(e));
		return;
	}
	switch (req->path) {
	case HTTP_PATH_HEALTHZ:
		front_ask_parent(f, fc, MSG_HEALTH_REQ, &e, sizeof(e));
		break;
	case HTTP_PATH_SERVER:
	case HTTP_PATH_CLIENT:
		front_upgrade(f, fc, req);
		break;
	default:
		front_http_error(fc, 404, 0);
		break;
	}
}

/*
 * How many bytes may be read without reading past the PROXY header: the
 * rest of the connection (a TLS handshake, the request head) must stay in
 * the socket for whoever reads it next.
 */
static size_t
front_proxy_want(const unsigned char *b, size_t have)
{
	size_t	total;

	if (have == 0 || b[0] == 'P')
		return 1;		/* v1 ends at CRLF: byte by byte */
	if (have < 16)
		return 16 - have;	/* v2: the fixed part holds the length */
	total = 16 + (((size_t)b[14] << 8) | b[15]);
	return total > have ? total - have : 1;
}

/*
 * Reads the PROXY header (the listener requires one before anything else).
 * Returns 1 when it is complete, 0 to wait, -1 when the connection is gone:
 * a malformed or missing header closes it with nothing written.
 */
static int
front_proxy_read(struct fconn *fc)
{
	struct proxy_info	pi;
	size_t			want;
	ssize_t			n;

	for (;;) {
		want = front_proxy_want(fc->proxy, fc->proxy_len);
		if (want > sizeof(fc->proxy) - fc->proxy_len)
			want = sizeof(fc->proxy) - fc->proxy_len;
		n = recv(fc->fd, fc->proxy + fc->proxy_len, want, MSG_DONTWAIT);
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == EINTR))
			return 0;
		if (n <= 0) {
			front_conn_free(fc, 1);
			return -1;
		}
		fc->proxy_len += n;
		switch (proxy_parse(fc->proxy, fc->proxy_len, &pi)) {
		case PROXY_INCOMPLETE:
			continue;
		case PROXY_BAD:
			log_debug("event=proxy_header_bad conn=%llu",
			    (unsigned long long)fc->id);
			fc->outcome = FRONT_HTTP_ERROR;
			front_conn_free(fc, 1);
			return -1;
		case PROXY_OK:
			/* the carried source is the client from now on */
			if (!pi.local)
				memcpy(&fc->meta.peer, &pi.src, sizeof(pi.src));
			return 1;
		}
	}
}

/*
 * One read of a plain head, and what follows from it: FRONT_HEAD_WAIT when
 * the connection waits for more of it (fc lives on, its read event is
 * wanted), FRONT_HEAD_DONE when fc went to the parent, was answered or was
 * freed (fc must not be touched).
 */
enum front_head_step { FRONT_HEAD_WAIT, FRONT_HEAD_DONE };

static enum front_head_step
front_head_step(struct front *f, struct fconn *fc)
{
	size_t			 want, ncap;
	ssize_t			 n;

	/* grow the buffer up to one byte over the limit, so 431 can be told */
	want = fc->hp.max + 1;
	if (fc->len == fc->cap) {
		ncap = fc->cap ? fc->cap * 2 : 1024;
		if (ncap > want)
			ncap = want;
		if (ncap <= fc->cap) {
			front_http_error(fc, 431, 0);
			return FRONT_HEAD_DONE;
		}
		fc->buf = xreallocarray(fc->buf, 1, ncap);
		fc->cap = ncap;
	}
	n = fio_recv(fc, fc->buf + fc->len, fc->cap - fc->len);
	if (n == FIO_AGAIN)
		return FRONT_HEAD_WAIT;
	if (n == FIO_ERROR || n == 0) {
		front_conn_free(fc, 1);
		return FRONT_HEAD_DONE;
	}
	fc->len += n;
	/* goes on where the last read stopped: linear however it is split */
	switch (http_parse_more(&fc->hp, (const char *)fc->buf, fc->len)) {
	case HTTP_INCOMPLETE:
		/* TLS may hold decrypted bytes the socket no longer signals */
		if (fc->ssl != NULL && SSL_pending(fc->ssl) > 0)
			event_active(fc->ev_read, EV_READ, 0);
		return FRONT_HEAD_WAIT;
	case HTTP_COMPLETE:
		front_head_done(f, fc, &fc->hp.req);
		break;
	case HTTP_BAD:
		front_http_error(fc, 400, 0);
		break;
	case HTTP_TOO_LARGE:
		front_http_error(fc, 431, 0);
		break;
	}
	return FRONT_HEAD_DONE;
}

static void
front_conn_read(evutil_socket_t fd, short ev, void *arg)
{
	struct fconn		*fc = arg;
	struct front		*f = front;
	unsigned char		 drain[4096];
	ssize_t			 n;

	if (fc->state == FC_LINGER) {
		/* raw bytes: after our close_notify nothing is decrypted */
		n = recv(fd, drain, sizeof(drain), MSG_DONTWAIT);
		if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
			front_conn_free(fc, 1);
		return;
	}
	if (fc->state == FC_WRITE) {
		/* the TLS layer wanted to read while writing */
		front_conn_write(fd, EV_WRITE, fc);
		return;
	}
	if (fc->state == FC_PROXY) {
		if (front_proxy_read(fc) != 1)
			return;
		fc->state = fc->ssl != NULL ? FC_TLS : FC_HEAD;
	}
	if (fc->state == FC_TLS) {
		int	r = SSL_accept(fc->ssl);

		if (r != 1) {
			switch (SSL_get_error(fc->ssl, r)) {
			case SSL_ERROR_WANT_READ:
				return;
			case SSL_ERROR_WANT_WRITE:
				fc->want_write = 1;
				event_add(fc->ev_write, NULL);
				return;
			default:
				/* plaintext on a TLS port, wrong SNI, old versions */
				log_debug("event=tls_handshake_failed reason=\"%s\"",
				    ERR_reason_error_string(ERR_peek_error()) ?
				    ERR_reason_error_string(ERR_peek_error()) : "eof");
				ERR_clear_error();
				fc->outcome = FRONT_HTTP_ERROR;
				front_conn_free(fc, 1);
				return;
			}
		}
		fc->state = FC_HEAD;
	}
	if (fc->state == FC_HEAD)
		(void)front_head_step(f, fc);
}

static void
front_conn_timer(evutil_socket_t fd, short ev, void *arg)
{
	struct fconn	*fc = arg;

	/* docs/protocol.md §2: an incomplete head is closed unanswered */
	if (fc->state == FC_HEAD)
		fc->outcome = FRONT_TIMEOUT;
	front_conn_free(fc, 1);
}

static struct fconn *
front_find(struct front *f, uint64_t id)
{
	struct fconn	*fc;

	TAILQ_FOREACH(fc, &f->conns, entry)
		if (fc->id == id)
			return fc;
	return NULL;
}

/*
 * An `agent on` listener's answer, one line of HAProxy's agent-check
 * words: a weight of 0% takes the host out of load balancing while
 * persistent (stuck) requests still reach it, which is a drain; 100% puts
 * its configured weight back.  Not the words "drain" and "ready": HAProxy
 * makes them clear a maintenance state set on its runtime API as well
 * (docs/scaling.md).
 */
static void
front_agent_answer(struct fconn *fc, int draining)
{
	const char	*line = draining ? "0%\n" : "100%\n";

	fc->resp_len = strlcpy(front_resp_buf(fc, RESP_SMALL), line, RESP_SMALL);
	fc->outcome = FRONT_HEALTHZ;
	front_conn_respond(fc);
}

static void
front_health(void *arg, struct msg *m)
{
	struct front		*f = arg;
	struct msg_health	*h = (struct msg_health *)m->body;
	struct fconn		*fc;
	char			 body[256];
	int			 blen, n;

	if ((fc = front_find(f, m->hdr.id)) == NULL || fc->state != FC_PARENT)
		return;
	if (fc->meta.listen_flags & LISTEN_AGENT) {
		front_agent_answer(fc, h->draining != 0);
		return;
	}
	/* docs/scaling.md: a draining host says so, the keys keep their order */
	blen = snprintf(body, sizeof(body),
	    "{\"status\":\"%s\",\"version\":\"%s\",\"connected_binaries\":%llu,"
	    "\"connected_phones\":%llu,\"uptime_seconds\":%llu}",
	    h->draining ? "draining" : "ok",
	    pyrelayd_version, (unsigned long long)h->binaries,
	    (unsigned long long)h->phones, (unsigned long long)h->uptime_s);
	fc->outcome = FRONT_HEALTHZ;
	n = http_ok_response(front_resp_buf(fc, RESP_SMALL), RESP_SMALL,
	    "application/json; charset=utf-8", body, blen);
	if (n < 0)
		fatalx("front: healthz does not fit");
	fc->resp_len = n;
	front_conn_respond(fc);
}

/* Appends to a text buffer; the caller sized it for everything. */
static void
mprintf(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
	va_list	ap;
	int	n;

	if (*len >= size)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *len, size - *len, fmt, ap);
	va_end(ap);
	if (n > 0)
		*len += (size_t)n < size - *len ? (size_t)n : size - *len;
}

/* Prometheus text 0.0.4, every series of docs/protocol.md §2 from start. */
static void
front_metrics(void *arg, struct msg *m)
{
	static const char *const eps[EP_MAX] = { "server", "client" };
	static const char *const outs[OUT_MAX] = { "accept", "reject_headers",
	    "reject_409", "reject_404", "reject_429", "reject_rate_limit" };
	static const char *const regs[REG_MAX] = { "no_server", "server_in_use",
	    "phones_at_cap", "ratelimit" };
	static const char *const exits[EXIT_CAUSE_MAX] = { "retired", "failed",
	    "signaled", "killed" };
	static const char *const fouts[FRONT_OUTCOME_MAX] = { "healthz",
	    "metrics", "http_error", "timeout", "client_gone", "verdict",
	    "upgrade", "acme" };
	struct front		*f = arg;
	struct msg_metrics	*mm = (struct msg_metrics *)m->body;
	struct fconn		*fc;
	char			*body;
	size_t			 len = 0, sz = RESP_METRICS - 512;
	int			 i, j, n;

	if ((fc = front_find(f, m->hdr.id)) == NULL || fc->state != FC_PARENT)
		return;
	body = xmalloc(sz);
	mprintf(body, sz, &len,
	    "# HELP pyrycode_relay_connected_binaries Binaries connected now.\n"
	    "# TYPE pyrycode_relay_connected_binaries gauge\n"
	    "pyrycode_relay_connected_binaries %llu\n"
	    "# HELP pyrycode_relay_connected_phones Registered phones.\n"
	    "# TYPE pyrycode_relay_connected_phones gauge\n"
	    "pyrycode_relay_connected_phones %llu\n",
	    (unsigned long long)mm->binaries, (unsigned long long)mm->phones);
	mprintf(body, sz, &len,
	    "# HELP pyrycode_relay_frames_forwarded_total Messages relayed.\n"
	    "# TYPE pyrycode_relay_frames_forwarded_total counter\n"
	    "pyrycode_relay_frames_forwarded_total{direction=\"phone_to_binary\"} %llu\n"
	    "pyrycode_relay_frames_forwarded_total{direction=\"binary_to_phone\"} %llu\n"
	    "# HELP pyrycode_relay_grace_expiries_total Grace periods that ran out.\n"
	    "# TYPE pyrycode_relay_grace_expiries_total counter\n"
	    "pyrycode_relay_grace_expiries_total %llu\n",
	    (unsigned long long)mm->c.frames_p2b,
	    (unsigned long long)mm->c.frames_b2p,
	    (unsigned long long)mm->c.grace_expiries);
	mprintf(body, sz, &len,
	    "# HELP pyrycode_relay_ws_upgrade_attempts_total WebSocket upgrades by outcome.\n"
	    "# TYPE pyrycode_relay_ws_upgrade_attempts_total counter\n");
	for (i = 0; i < EP_MAX; i++)
		for (j = 0; j < OUT_MAX; j++)
			mprintf(body, sz, &len, "pyrycode_relay_ws_upgrade_attempts_total"
			    "{endpoint=\"%s\",outcome=\"%s\"} %llu\n", eps[i], outs[j],
			    (unsigned long long)mm->c.upgrades[i][j]);
	mprintf(body, sz, &len,
	    "# HELP pyrycode_relay_register_failures_total Failed claims and registrations.\n"
	    "# TYPE pyrycode_relay_register_failures_total counter\n");
	for (i = 0; i < REG_MAX; i++)
		mprintf(body, sz, &len, "pyrycode_relay_register_failures_total"
		    "{kind=\"%s\"} %llu\n", regs[i],
		    (unsigned long long)mm->c.register_failures[i]);
	mprintf(body, sz, &len,
	    "# HELP pyrelayd_relay_processes Relay processes serving a server-id.\n"
	    "# TYPE pyrelayd_relay_processes gauge\n"
	    "pyrelayd_relay_processes %llu\n"
	    "# HELP pyrelayd_relay_processes_started_total Relays given a server-id.\n"
	    "# TYPE pyrelayd_relay_processes_started_total counter\n"
	    "pyrelayd_relay_processes_started_total %llu\n"
	    "# HELP pyrelayd_relays_pooled Relays started and sandboxed, waiting for a server-id.\n"
	    "# TYPE pyrelayd_relays_pooled gauge\n"
	    "pyrelayd_relays_pooled %llu\n"
	    "# HELP pyrelayd_relay_assignments_total Pooled relays given a server-id.\n"
	    "# TYPE pyrelayd_relay_assignments_total counter\n"
	    "pyrelayd_relay_assignments_total %llu\n"
	    "# HELP pyrelayd_relay_processes_all Relay processes of every kind: serving, in grace, retiring, pooled, starting.\n"
	    "# TYPE pyrelayd_relay_processes_all gauge\n"
	    "pyrelayd_relay_processes_all %llu\n"
	    "# HELP pyrelayd_relay_processes_max The most relay processes there may be (max relays).\n"
	    "# TYPE pyrelayd_relay_processes_max gauge\n"
	    "pyrelayd_relay_processes_max %llu\n"
	    "# HELP pyrelayd_relay_cap_refusals_total Claims refused with 503: max relays relay processes exist.\n"
	    "# TYPE pyrelayd_relay_cap_refusals_total counter\n"
	    "pyrelayd_relay_cap_refusals_total %llu\n"
	    "# HELP pyrelayd_relay_process_exits_total Relay process exits by cause.\n"
	    "# TYPE pyrelayd_relay_process_exits_total counter\n",
	    (unsigned long long)mm->relays_alive,
	    (unsigned long long)mm->relays_started,
	    (unsigned long long)mm->relays_pooled,
	    (unsigned long long)mm->assignments,
	    (unsigned long long)mm->relays_all,
	    (unsigned long long)mm->max_relays,
	    (unsigned long long)mm->relay_cap_refusals);
	for (i = 0; i < EXIT_CAUSE_MAX; i++)
		mprintf(body, sz, &len, "pyrelayd_relay_process_exits_total"
		    "{cause=\"%s\"} %llu\n", exits[i],
		    (unsigned long long)mm->relay_exits[i]);
	mprintf(body, sz, &len,
	    "# HELP pyrelayd_front_handshakes_total Connections a front finished, by outcome.\n"
	    "# TYPE pyrelayd_front_handshakes_total counter\n");
	for (i = 0; i < FRONT_OUTCOME_MAX; i++)
		mprintf(body, sz, &len, "pyrelayd_front_handshakes_total"
		    "{outcome=\"%s\"} %llu\n", fouts[i],
		    (unsigned long long)mm->front_outcomes[i]);
	mprintf(body, sz, &len,
	    "# HELP pyrelayd_connections Connections open now, in any process.\n"
	    "# TYPE pyrelayd_connections gauge\n"
	    "pyrelayd_connections %llu\n"
	    "# HELP pyrelayd_connections_accepted_total Connections accepted.\n"
	    "# TYPE pyrelayd_connections_accepted_total counter\n"
	    "pyrelayd_connections_accepted_total %llu\n"
	    "# HELP pyrelayd_connections_lost_total Connections dropped in a hand-over between processes: the receiver had no descriptor free (RLIMIT_NOFILE).\n"
	    "# TYPE pyrelayd_connections_lost_total counter\n"
	    "pyrelayd_connections_lost_total %llu\n"
	    "# HELP pyrelayd_address_cap_refusals_total Connections closed at accept: their address held max connections per ip.\n"
	    "# TYPE pyrelayd_address_cap_refusals_total counter\n"
	    "pyrelayd_address_cap_refusals_total %llu\n"
	    "# HELP pyrelayd_client_addresses Client addresses with admission state.\n"
	    "# TYPE pyrelayd_client_addresses gauge\n"
	    "pyrelayd_client_addresses %llu\n"
	    "# HELP pyrelayd_uptime_seconds Seconds since start.\n"
	    "# TYPE pyrelayd_uptime_seconds gauge\n"
	    "pyrelayd_uptime_seconds %llu\n",
	    (unsigned long long)mm->connections,
	    (unsigned long long)mm->accepted,
	    (unsigned long long)mm->conns_lost,
	    (unsigned long long)mm->address_cap_refusals,
	    (unsigned long long)mm->addresses,
	    (unsigned long long)mm->uptime_s);
	/* docs/protocol.md §6: from start, at 0, when push is configured */
	if (mm->push_configured) {
		mprintf(body, sz, &len,
		    "# HELP pyrycode_relay_push_wakes_total Push wakes admitted "
		    "by the relay, by outcome.\n"
		    "# TYPE pyrycode_relay_push_wakes_total counter\n");
		for (i = 0; i < PUSH_OUTCOME_MAX; i++)
			mprintf(body, sz, &len, "pyrycode_relay_push_wakes_total"
			    "{outcome=\"%s\"} %llu\n", push_outcome_name(i),
			    (unsigned long long)mm->push_wakes[i]);
	}
	fc->outcome = FRONT_METRICS;
	n = http_ok_response(front_resp_buf(fc, RESP_METRICS), RESP_METRICS,
	    "text/plain; version=0.0.4; charset=utf-8", body, len);
	free(body);
	if (n < 0)
		fatalx("front: metrics do not fit");
	fc->resp_len = n;
	front_conn_respond(fc);
}

static void
front_verdict(void *arg, struct msg *m)
{
	struct front		*f = arg;
	struct msg_conn_verdict	*v = (struct msg_conn_verdict *)m->body;
	struct fconn		*fc;
	int			 n;
	size_t			 cl;

	if (m->fd_lost) {
		front_fd_lost(f, m->hdr.id);
		return;
	}
	fc = front_conn_new(f, m->fd, m->hdr.id);
	fc->outcome = FRONT_VERDICT;
	fc->head_only = v->head_only != 0;
	if (v->kind == VERDICT_WS_CLOSE) {
		/* docs/protocol.md §2: decisions after the upgrade are close codes after the 101 */
		n = http_switching_response(front_resp_buf(fc, RESP_SMALL),
		    RESP_SMALL, v->ws_accept);
		if (n < 0)
			fatalx("front: 101 does not fit");
		cl = ws_close_frame((unsigned char *)fc->resp + n,
		    RESP_SMALL - n, v->code,
		    v->code == 4404 ? "no server with that id" : "");
		fc->resp_len = n + cl;
		front_conn_respond(fc);
		return;
	}
	front_http_error(fc, v->code, v->ws_version_hdr);
}

static void
front_acme(void *arg, struct msg *m)
{
	struct front	*f = arg;
	struct msg_acme	*a = (struct msg_acme *)m->body;
	struct fconn	*fc;
	int		 n;

	if ((fc = front_find(f, m->hdr.id)) == NULL || fc->state != FC_PARENT)
		return;
	if (!a->found) {
		front_http_error(fc, 404, 0);
		return;
	}
	fc->outcome = FRONT_ACME;
	n = http_ok_response(front_resp_buf(fc, RESP_METRICS), RESP_METRICS,
	    "text/plain", a->data, a->len);
	if (n < 0)
		fatalx("front: acme answer does not fit");
	fc->resp_len = n;
	front_conn_respond(fc);
}

/* New certificate and key: new handshakes use them, live ones keep theirs. */
static void
front_tls_material(void *arg, struct msg *m)
{
	struct front	*f = arg;
	struct msg_tls	*mt = (struct msg_tls *)m->body;
	SSL_CTX		*ctx;
	char		 err[512], q[512];

	ctx = tls_ctx_new(mt, f->lim.domain, err, sizeof(err));
	explicit_bzero(mt, sizeof(*mt));
	if (ctx == NULL) {
		log_warnx("event=tls_error reason=\"%s\" keeping=%s",
		    log_quotable(err, q, sizeof(q)),
		    f->tls_ctx ? "previous" : "none");
		return;
	}
	/* the SSLs of live connections hold references to the old one */
	SSL_CTX_free(f->tls_ctx);
	f->tls_ctx = ctx;
	log_debug("event=tls_certificate_loaded");
}

static void
front_limits(void *arg, struct msg *m)
{
	struct front	*f = arg;

	memcpy(&f->lim, m->body, sizeof(f->lim));
}

/* A connection the parent accepted: its head is ours to read. */
static void
front_conn_accepted(void *arg, struct msg *m)
{
	struct front	*f = arg;
	struct fconn	*fc;
	int		 one = 1;

	if (m->fd_lost) {
		front_fd_lost(f, m->hdr.id);
		return;
	}
	fc = front_conn_new(f, m->fd, m->hdr.id);
	memcpy(&fc->meta, m->body, sizeof(fc->meta));
	fc->state = FC_HEAD;
	/*
	 * TLS 1.2 ends the handshake with two records in two writes: Nagle
	 * would hold the second for the client's delayed ACK (40 ms).  The
	 * parent's listener has it set (parent_listen), but not for a
	 * connection that waited in the queue of an older image's listener
	 * across an upgrade: set here for every one, and so for the relay
	 * that serves it, which sets it no more.
	 */
	setsockopt(fc->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (fc->meta.listen_flags & LISTEN_TLS) {
		if (f->tls_ctx == NULL ||
		    (fc->ssl = SSL_new(f->tls_ctx)) == NULL ||
		    SSL_set_fd(fc->ssl, fc->fd) != 1) {
			if (!f->tls_warned++)
				log_warnx("event=tls_no_certificate "
				    "action=close");
			front_conn_free(fc, 1);
			return;
		}
		fc->state = FC_TLS;
	}
	if (fc->meta.listen_flags & LISTEN_PROXY)
		fc->state = FC_PROXY;
	if (fc->meta.listen_flags & LISTEN_AGENT) {
		front_agent_ask(f, fc);
		return;
	}
	front_set_timer(fc, fc->meta.accepted_ms + f->lim.handshake_timeout_ms);
	/*
	 * A client sends its head with its connection: by the time the
	 * parent has passed it here, the head is mostly in the socket.
	 * Read it at once, and watch the socket only if more is to come
	 * (three system calls less per connection: epoll_ctl twice, and
	 * epoll_wait).
	 */
	if (fc->state == FC_HEAD &&
	    front_head_step(f, fc) == FRONT_HEAD_DONE)
		return;
	event_add(fc->ev_read, NULL);
}

/*
 * A front the parent replaced (docs/upgrade.md) exits once the handshakes
 * it held are done, its TLS pumps have ended, and what it owes the parent
 * (a CONN_UPGRADE and its socket, say) has left its queue.
 */
static void
front_finish_check(struct front *f)
{
	if (f->finishing && TAILQ_EMPTY(&f->conns) && f->pumps == 0 &&
	    f->chan.outq_len == 0)
		event_base_loopexit(f->base, NULL);
}

/* MSG_FINISH: the parent sends this front nothing new from now on. */
static void
front_finish(void *arg, struct msg *m)
{
	struct front	*f = arg;

	f->finishing = 1;
	setproctitle("front (finishing)");
	log_debug("event=front_finishing connections=%s pumps=%d",
	    TAILQ_EMPTY(&f->conns) ? "none" : "some", f->pumps);
	front_finish_check(f);
}

/*
 * What a front takes from the parent (docs/messages.md), each with its
 * handler above; SETUP only once, at start (proc_worker_run).
 */
static const struct msg_rule front_rows[] = {
	MSG_RULE(SETUP, MSG_FD_NONE, NULL),
	MSG_RULE(LIMITS, MSG_FD_NONE, front_limits),
	MSG_RULE(CONN_NEW, MSG_FD_REQUIRED, front_conn_accepted),
	MSG_RULE(CONN_VERDICT, MSG_FD_REQUIRED, front_verdict),
	MSG_RULE(HEALTH, MSG_FD_NONE, front_health),
	MSG_RULE(METRICS, MSG_FD_NONE, front_metrics),
	MSG_RULE(VERBOSE, MSG_FD_NONE, proc_verbose),
	MSG_RULE(TLS, MSG_FD_NONE, front_tls_material),
	MSG_RULE(ACME, MSG_FD_NONE, front_acme),
	MSG_RULE(FINISH, MSG_FD_NONE, front_finish),
};
const struct msg_rules front_from_parent =
    MSG_RULES(ROLE_PARENT, ROLE_FRONT, front_rows);

static void
front_chan_writable(evutil_socket_t fd, short ev, void *arg)
{
	struct front	*f = arg;
	int		 rv;

	if ((rv = msg_flush(&f->chan)) == -1)
		fatalx("front: parent channel: %s", f->chan.errstr);
	if (rv == 1) {
		event_del(f->ev_chan_write);
		front_finish_check(f);
	}
}


/*
 * SIGTERM: connections still in their head are dropped; a front that pumps
 * TLS sessions stays until the relays' "shutting down" closes have gone
 * through them (the parent's drain deadline bounds the wait).
 */
static void
front_sigterm(evutil_socket_t sig, short ev, void *arg)
{
	struct front	*f = arg;
	struct fconn	*fc, *next;

	f->stopping = 1;
	TAILQ_FOREACH_SAFE(fc, &f->conns, entry, next)
		front_conn_free(fc, 1);
	if (f->pumps == 0)
		event_base_loopexit(f->base, NULL);
}

/* SETUP is in: the front's state and events, before the sandbox. */
static void
front_setup(struct proc_worker *pw, const struct msg_setup *setup)
{
	struct front	*f = pw->arg;
	struct rlimit	 rl;
	char		 accept[WS_ACCEPT_LEN + 1];

	f->base = pw->base;
	f->lim = setup->lim;
	setproctitle("front");
	f->ev_chan_write = event_new(f->base, f->chan.fd, EV_WRITE | EV_PERSIST,
	    front_chan_writable, f);
	if (f->ev_chan_write == NULL)
		fatalx("front: event_new");
	/*
	 * OpenSSL reads its configuration file on first use; do that use
	 * now, while opening files is still allowed.
	 */
	http_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, accept);
	tls_preload();
	/* the operator's hard limit (systemd LimitNOFILE=, ulimit) rules */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_max != RLIM_INFINITY && rl.rlim_max < pw->maxfds)
		pw->maxfds = rl.rlim_max;
}

void
front_main(void)
{
	struct proc_worker	pw;

	front = xcalloc(1, sizeof(*front));
	TAILQ_INIT(&front->conns);
	memset(&pw, 0, sizeof(pw));
	pw.role = ROLE_FRONT;
	pw.rules = &front_from_parent;
	pw.chan = &front->chan;
	pw.m = xmalloc(sizeof(*pw.m));
	pw.arg = front;
	pw.maxfds = FRONT_MAXFDS;
	pw.setup = front_setup;
	pw.sigterm = front_sigterm;
	proc_worker_run(&pw);
	exit(0);
}
