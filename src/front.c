/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * A front process (architecture.md): reads the HTTP request head of each
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

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "front.h"
#include "http.h"
#include "msg.h"
#include "proto.h"
#include "pyrelayd.h"
#include "sandbox.h"
#include "ws.h"

#define FRONT_MAXFDS		65536
#define LINGER_MS		2000	/* drain the peer after our answer */
#define RESP_MAX		1024

enum fconn_state {
	FC_HEAD,		/* reading the request head */
	FC_HEALTH,		/* waiting for the parent's counts */
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
	unsigned char		*buf;
	size_t			 len, cap;
	char			 resp[RESP_MAX];
	size_t			 resp_len, resp_off;
};
TAILQ_HEAD(fconn_list, fconn);

struct front {
	struct event_base	*base;
	struct msg_chan		 chan;
	struct event		*ev_chan;
	struct event		*ev_chan_write;
	struct event		*ev_sigterm;
	struct limits		 lim;
	struct fconn_list	 conns;
	int			 stopping;
};

static struct front	*front;

static void	front_conn_read(evutil_socket_t, short, void *);
static void	front_conn_write(evutil_socket_t, short, void *);
static void	front_conn_timer(evutil_socket_t, short, void *);

static const struct msg_rule front_rules[] = {
	{ MSG_SETUP, sizeof(struct msg_setup), MSG_FD_NONE, "SETUP" },
	{ MSG_LIMITS, sizeof(struct msg_limits), MSG_FD_NONE, "LIMITS" },
	{ MSG_CONN_NEW, sizeof(struct msg_conn_new), MSG_FD_REQUIRED, "CONN_NEW" },
	{ MSG_CONN_VERDICT, sizeof(struct msg_conn_verdict), MSG_FD_REQUIRED, "CONN_VERDICT" },
	{ MSG_HEALTH, sizeof(struct msg_health), MSG_FD_NONE, "HEALTH" },
};

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
	struct timeval	tv;
	int64_t		t = deadline_ms - now_ms();

	if (t < 0)
		t = 0;
	tv.tv_sec = t / 1000;
	tv.tv_usec = (t % 1000) * 1000;
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
	if (fc->ev_read == NULL || fc->ev_write == NULL || fc->ev_timer == NULL)
		fatalx("front: event_new");
	TAILQ_INSERT_TAIL(&f->conns, fc, entry);
	return fc;
}

/* Forgets a connection; closed says whether the parent must count it gone. */
static void
front_conn_free(struct fconn *fc, int closed)
{
	struct front		*f = front;
	struct msg_conn_closed	 mc;

	TAILQ_REMOVE(&f->conns, fc, entry);
	event_free(fc->ev_read);
	event_free(fc->ev_write);
	event_free(fc->ev_timer);
	if (closed) {
		close(fc->fd);
		memset(&mc, 0, sizeof(mc));
		msg_compose(&f->chan, MSG_CONN_CLOSED, fc->id, &mc, sizeof(mc), -1);
		front_chan_flush(f);
	}
	free(fc->buf);
	free(fc);
}

/* Sends the prepared answer, then lingers until the peer closes. */
static void
front_conn_respond(struct fconn *fc)
{
	fc->state = FC_WRITE;
	fc->resp_off = 0;
	event_del(fc->ev_read);
	front_set_timer(fc, now_ms() + LINGER_MS);
	front_conn_write(fc->fd, EV_WRITE, fc);
}

static void
front_http_error(struct fconn *fc, int status, int ws_version_hdr)
{
	int	n;

	n = http_error_response(fc->resp, sizeof(fc->resp), status, ws_version_hdr);
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

	if (fc->state != FC_WRITE)
		return;
	while (fc->resp_off < fc->resp_len) {
		n = send(fc->fd, fc->resp + fc->resp_off, fc->resp_len - fc->resp_off,
		    MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				event_add(fc->ev_write, NULL);
				return;
			}
			if (errno == EINTR)
				continue;
			front_conn_free(fc, 1);
			return;
		}
		fc->resp_off += n;
	}
	event_del(fc->ev_write);
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
	up->listen_flags = fc->meta.listen_flags;
	if (req->server_id_valid)
		strlcpy(up->server_id, req->server_id, sizeof(up->server_id));
	strlcpy(up->device_name, req->device_name, sizeof(up->device_name));
	if (req->ws_key_valid)
		strlcpy(up->ws_accept, req->ws_accept, sizeof(up->ws_accept));
	/* protocol.md §2: pipelined bytes belong to the WebSocket stream */
	extra = fc->len - req->head_len;
	if (extra > PREREAD_MAX)
		extra = PREREAD_MAX;	/* cannot happen: buf is at most that big */
	memcpy(up->preread, fc->buf + req->head_len, extra);
	up->preread_len = extra;
	msg_compose(&f->chan, MSG_CONN_UPGRADE, fc->id, up, sizeof(*up), fc->fd);
	front_chan_flush(f);
	free(up);
	/* the fd belongs to the channel now */
	front_conn_free(fc, 0);
}

static void
front_head_done(struct front *f, struct fconn *fc, const struct http_request *req)
{
	struct msg_empty	e = { 0 };
	int			metrics = fc->meta.listen_flags & LISTEN_METRICS;

	evtimer_del(fc->ev_timer);
	if (metrics) {
		/* the metrics listener serves nothing else */
		front_http_error(fc, 404, 0);
		return;
	}
	switch (req->path) {
	case HTTP_PATH_HEALTHZ:
		fc->state = FC_HEALTH;
		event_del(fc->ev_read);
		front_set_timer(fc, now_ms() + LINGER_MS);
		msg_compose(&f->chan, MSG_HEALTH_REQ, fc->id, &e, sizeof(e), -1);
		front_chan_flush(f);
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

static void
front_conn_read(evutil_socket_t fd, short ev, void *arg)
{
	struct fconn		*fc = arg;
	struct front		*f = front;
	struct http_request	 req;
	unsigned char		 drain[4096];
	size_t			 want, ncap;
	ssize_t			 n;

	if (fc->state == FC_LINGER) {
		n = recv(fd, drain, sizeof(drain), MSG_DONTWAIT);
		if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
			front_conn_free(fc, 1);
		return;
	}
	if (fc->state != FC_HEAD)
		return;
	/* grow the buffer up to one byte over the limit, so 431 can be told */
	want = f->lim.max_header_size + 1;
	if (fc->len == fc->cap) {
		ncap = fc->cap ? fc->cap * 2 : 1024;
		if (ncap > want)
			ncap = want;
		if (ncap <= fc->cap) {
			front_http_error(fc, 431, 0);
			return;
		}
		fc->buf = xreallocarray(fc->buf, 1, ncap);
		fc->cap = ncap;
	}
	n = recv(fd, fc->buf + fc->len, fc->cap - fc->len, MSG_DONTWAIT);
	if (n == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		front_conn_free(fc, 1);
		return;
	}
	if (n == 0) {
		front_conn_free(fc, 1);
		return;
	}
	fc->len += n;
	switch (http_parse_head((const char *)fc->buf, fc->len,
	    f->lim.max_header_size, &req)) {
	case HTTP_INCOMPLETE:
		break;
	case HTTP_COMPLETE:
		front_head_done(f, fc, &req);
		break;
	case HTTP_BAD:
		front_http_error(fc, 400, 0);
		break;
	case HTTP_TOO_LARGE:
		front_http_error(fc, 431, 0);
		break;
	}
}

static void
front_conn_timer(evutil_socket_t fd, short ev, void *arg)
{
	struct fconn	*fc = arg;

	/* protocol.md §2: an incomplete head is closed without a response */
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

static void
front_health(struct front *f, struct msg *m)
{
	struct msg_health	*h = (struct msg_health *)m->body;
	struct fconn		*fc;
	char			 body[256];
	int			 blen, n;

	if ((fc = front_find(f, m->hdr.id)) == NULL || fc->state != FC_HEALTH)
		return;
	blen = snprintf(body, sizeof(body),
	    "{\"status\":\"ok\",\"version\":\"%s\",\"connected_binaries\":%llu,"
	    "\"connected_phones\":%llu,\"uptime_seconds\":%llu}",
	    PACKAGE_VERSION, (unsigned long long)h->binaries,
	    (unsigned long long)h->phones, (unsigned long long)h->uptime_s);
	n = http_ok_response(fc->resp, sizeof(fc->resp),
	    "application/json; charset=utf-8", body, blen);
	if (n < 0)
		fatalx("front: healthz does not fit");
	fc->resp_len = n;
	front_conn_respond(fc);
}

static void
front_verdict(struct front *f, struct msg *m)
{
	struct msg_conn_verdict	*v = (struct msg_conn_verdict *)m->body;
	struct fconn		*fc;
	int			 n;
	size_t			 cl;

	if (v->ws_accept[WS_ACCEPT_LEN] != '\0')
		fatalx("front: bad verdict from parent");
	fc = front_conn_new(f, m->fd, m->hdr.id);
	if (v->kind == VERDICT_WS_CLOSE) {
		/* protocol.md §2: decisions after the upgrade are close codes after the 101 */
		n = http_switching_response(fc->resp, sizeof(fc->resp), v->ws_accept);
		if (n < 0)
			fatalx("front: 101 does not fit");
		cl = ws_close_frame((unsigned char *)fc->resp + n,
		    sizeof(fc->resp) - n, v->code,
		    v->code == 4404 ? "no server with that id" : "");
		fc->resp_len = n + cl;
		front_conn_respond(fc);
		return;
	}
	front_http_error(fc, v->code, v->ws_version_hdr);
}

static void
front_dispatch(evutil_socket_t fd, short ev, void *arg)
{
	struct front	*f = arg;
	struct msg	*m;
	struct fconn	*fc;
	int		 rv;

	m = xmalloc(sizeof(*m));
	for (;;) {
		rv = msg_recv(&f->chan, m);
		if (rv == 0)
			break;
		if (rv == -1) {
			log_debug("front: parent channel closed");
			exit(0);
		}
		if (rv == -2)
			fatalx("front: bad message from parent: %s", f->chan.errstr);
		switch (m->hdr.type) {
		case MSG_LIMITS:
			memcpy(&f->lim, m->body, sizeof(f->lim));
			break;
		case MSG_CONN_NEW:
			fc = front_conn_new(f, m->fd, m->hdr.id);
			memcpy(&fc->meta, m->body, sizeof(fc->meta));
			fc->state = FC_HEAD;
			event_add(fc->ev_read, NULL);
			front_set_timer(fc, fc->meta.accepted_ms +
			    f->lim.handshake_timeout_ms);
			break;
		case MSG_CONN_VERDICT:
			front_verdict(f, m);
			break;
		case MSG_HEALTH:
			front_health(f, m);
			break;
		default:
			if (m->fd != -1)
				close(m->fd);
			break;
		}
	}
	free(m);
}

static void
front_chan_writable(evutil_socket_t fd, short ev, void *arg)
{
	struct front	*f = arg;
	int		 rv;

	if ((rv = msg_flush(&f->chan)) == -1)
		fatalx("front: parent channel: %s", f->chan.errstr);
	if (rv == 1)
		event_del(f->ev_chan_write);
}

static void
front_sigterm(evutil_socket_t sig, short ev, void *arg)
{
	struct front	*f = arg;

	/* connections still reading a head are dropped; nothing is upgraded here */
	event_base_loopexit(f->base, NULL);
}

void
front_main(int fd)
{
	struct front		*f;
	struct msg		*m;
	struct msg_setup	*setup = NULL;
	int			 rv;

	f = front = xcalloc(1, sizeof(*f));
	TAILQ_INIT(&f->conns);
	msg_chan_init(&f->chan, fd, front_rules, sizeof(front_rules) / sizeof(front_rules[0]));
	msg_hello(&f->chan, ROLE_FRONT);
	m = xmalloc(sizeof(*m));
	while (setup == NULL) {
		if (msg_flush(&f->chan) == -1)
			fatalx("front: parent channel: %s", f->chan.errstr);
		rv = msg_recv(&f->chan, m);
		if (rv == 0) {
			fd_set	rfds;

			FD_ZERO(&rfds);
			FD_SET(fd, &rfds);
			select(fd + 1, &rfds, NULL, NULL, NULL);
			continue;
		}
		if (rv < 0)
			fatalx("front: setup from parent: %s",
			    f->chan.errstr ? f->chan.errstr : "closed");
		if (m->hdr.type == MSG_SETUP)
			setup = (struct msg_setup *)m->body;
	}
	if (setup->chroot[sizeof(setup->chroot) - 1] != '\0')
		fatalx("front: bad SETUP");
	f->lim = setup->lim;
	log_setverbose(setup->verbose);
	setproctitle("front");

	if ((f->base = event_base_new()) == NULL)
		fatalx("front: event_base_new");
	f->ev_chan = event_new(f->base, fd, EV_READ | EV_PERSIST, front_dispatch, f);
	f->ev_chan_write = event_new(f->base, fd, EV_WRITE | EV_PERSIST,
	    front_chan_writable, f);
	f->ev_sigterm = evsignal_new(f->base, SIGTERM, front_sigterm, f);
	if (f->ev_chan == NULL || f->ev_chan_write == NULL || f->ev_sigterm == NULL)
		fatalx("front: event_new");
	event_add(f->ev_chan, NULL);
	event_add(f->ev_sigterm, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);

	{
		struct rlimit	rl;
		rlim_t		maxfds = FRONT_MAXFDS;
		char		accept[WS_ACCEPT_LEN + 1];

		/*
		 * OpenSSL reads its configuration file on first use; do that
		 * use now, while opening files is still allowed.
		 */
		http_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, accept);

		/* the operator's hard limit (systemd LimitNOFILE=, ulimit) rules */
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
		    rl.rlim_max != RLIM_INFINITY && rl.rlim_max < maxfds)
			maxfds = rl.rlim_max;
		sandbox_enter(ROLE_FRONT, setup, maxfds);
	}
	free(m);
	event_active(f->ev_chan, EV_READ, 0);
	event_base_dispatch(f->base);
	exit(0);
}
